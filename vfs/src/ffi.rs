//! The `extern "C"` boundary: the `sqlite3_vfs` and `sqlite3_io_methods` callbacks SQLite calls.
//! Every callback runs inside `catch_unwind` (a panic becomes `SQLITE_IOERR`, never unwinds into
//! C) and maps typed errors to SQLite result codes. This is the crate's only `unsafe` code; each
//! block states why it is sound.
//!
//! Which files are ours: the main database file (`SQLITE_OPEN_MAIN_DB`) and its WAL go through
//! the fs layer; rollback journals are refused (pagelog is WAL-only); every other file (temp
//! databases, statement and sub-journals, transient files) is opened by the default VFS
//! directly in the memory SQLite gave us, so SQLite calls the default VFS's methods for it.

#![allow(unsafe_code)]

use std::cell::RefCell;
use std::ffi::{CStr, c_char, c_int, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use pagelog_log::fs::{FileRef, OpenOptions, parent_dir};
use rusqlite::ffi;

use crate::database::Database;
use crate::error::VfsError;
use crate::locks;
use crate::{VfsInner, set_last_commit};

thread_local! {
    static LAST_ERROR: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// The message of the last error the VFS reported to SQLite on this thread.
pub fn last_error() -> Option<String> {
    LAST_ERROR.with(|e| e.borrow().clone())
}

fn record_error(msg: String) {
    tracing::warn!(error = %msg, "pagelog VFS error");
    let c = std::ffi::CString::new(msg.replace('\0', " ")).unwrap_or_default();
    // SAFETY: sqlite3_log is thread-safe; the format string and argument are valid C strings.
    unsafe { ffi::sqlite3_log(ffi::SQLITE_IOERR, c"%s".as_ptr(), c.as_ptr()) };
    LAST_ERROR.with(|e| *e.borrow_mut() = Some(msg));
}

static NEXT_HANDLE: AtomicU64 = AtomicU64::new(1);

/// SQLite's WAL read-mark locks, `WAL_READ_LOCK(0..5)`: slots 3 to 7 of the WAL-index locks.
const WAL_READ_LOCKS: std::ops::Range<usize> = 3..8;

/// Why a connection retired by [`Database::retire_connections`] may not write.
fn retired_message(db: &Database) -> String {
    format!(
        "{}: this connection outlived the pagelog Database it belongs to (closed or dropped), \
         so it can no longer write; open the database again and use a new connection",
        db.path().display()
    )
}

/// The default (OS) VFS, used for temp files and time/randomness.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DefaultVfs(pub *mut ffi::sqlite3_vfs);

// SAFETY: the default VFS is a process-global struct that SQLite never frees or mutates after
// registration, and its methods are thread-safe by SQLite's contract.
unsafe impl Send for DefaultVfs {}
// SAFETY: as above.
unsafe impl Sync for DefaultVfs {}

/// What SQLite's `sqlite3_file` points at for files the pagelog VFS handles itself.
#[repr(C)]
struct PlFile {
    base: ffi::sqlite3_file,
    state: *mut FileState,
}

enum FileState {
    Main(MainHandle),
    Wal(WalHandle),
}

struct MainHandle {
    db: Arc<Database>,
    vfs: &'static VfsInner,
    id: u64,
    shm_mapped: bool,
    /// The database's epoch when this connection opened: once it has moved on
    /// ([`Database::retire_connections`]), the connection may not begin a write transaction.
    epoch: u64,
}

struct WalHandle {
    db: Arc<Database>,
    file: FileRef,
}

/// Size SQLite must allocate per file: ours, or the default VFS's for delegated files.
pub(crate) fn os_file_size(default: *mut ffi::sqlite3_vfs) -> c_int {
    // SAFETY: `default` is the non-null default VFS returned by sqlite3_vfs_find.
    let theirs = unsafe { (*default).szOsFile };
    theirs.max(std::mem::size_of::<PlFile>() as c_int)
}

fn guard(f: impl FnOnce() -> c_int) -> c_int {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(rc) => rc,
        Err(_) => {
            record_error("internal panic in the pagelog VFS (caught at the FFI boundary)".into());
            ffi::SQLITE_IOERR
        }
    }
}

fn vfs_inner(vfs: *mut ffi::sqlite3_vfs) -> &'static VfsInner {
    // SAFETY: pAppData is set at registration to a leaked `&'static VfsInner` and never changed.
    unsafe { &*((*vfs).pAppData as *const VfsInner) }
}

fn c_path(z: *const c_char) -> Option<PathBuf> {
    if z.is_null() {
        return None;
    }
    // SAFETY: SQLite passes NUL-terminated strings that live for the duration of the call.
    let s = unsafe { CStr::from_ptr(z) };
    Some(PathBuf::from(s.to_string_lossy().into_owned()))
}

fn state<'a>(p: *mut ffi::sqlite3_file) -> Option<&'a mut FileState> {
    // SAFETY: our methods are only installed on files whose memory we initialised as a PlFile
    // with a valid `state` box (set in x_open before pMethods); SQLite serialises calls on one
    // file handle.
    unsafe {
        let f = p as *mut PlFile;
        (*f).state.as_mut()
    }
}

fn io_code(e: &std::io::Error, default: c_int) -> c_int {
    match e.kind() {
        // A used-up quota is as full as a full disk to this writer.
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => ffi::SQLITE_FULL,
        _ => default,
    }
}

fn vfs_code(e: &VfsError, default: c_int) -> c_int {
    match e {
        VfsError::Io { source, .. } => io_code(source, default),
        VfsError::Log(pagelog_log::LogError::NoSpace { .. }) => ffi::SQLITE_FULL,
        // SQLITE_FULL, not SQLITE_TOOBIG: see the crate docs (a refused commit-frame write is
        // a failed commit SQLite rolls back and recovers from).
        VfsError::TxnTooLarge { .. } => ffi::SQLITE_FULL,
        _ => default,
    }
}

// ---------------------------------------------------------------------------------------------
// sqlite3_vfs methods
// ---------------------------------------------------------------------------------------------

pub(crate) unsafe extern "C" fn x_open(
    vfs: *mut ffi::sqlite3_vfs,
    z_name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    guard(|| {
        let inner = vfs_inner(vfs);
        // SAFETY: `file` points at szOsFile bytes SQLite allocated for this handle.
        unsafe { (*file).pMethods = std::ptr::null() };
        let path = c_path(z_name);
        let main = flags & ffi::SQLITE_OPEN_MAIN_DB != 0;
        let wal = flags & ffi::SQLITE_OPEN_WAL != 0;
        if flags & ffi::SQLITE_OPEN_MAIN_JOURNAL != 0 {
            record_error(
                VfsError::NotWal(format!(
                    "refusing to open rollback journal {}",
                    path.as_deref().unwrap_or(Path::new("?")).display()
                ))
                .to_string(),
            );
            return ffi::SQLITE_CANTOPEN;
        }
        let (Some(path), true) = (path, main || wal) else {
            // Temp and transient files: the default VFS, in place.
            let default = inner.default_vfs.0;
            // SAFETY: the default VFS outlives the process; `file` has at least its szOsFile
            // bytes (see os_file_size); arguments are passed through unchanged.
            return unsafe {
                match (*default).xOpen {
                    Some(open) => open(default, z_name, file, flags, out_flags),
                    None => ffi::SQLITE_CANTOPEN,
                }
            };
        };
        let st = if main {
            match inner.database(&path) {
                Ok(db) => FileState::Main(MainHandle {
                    epoch: db.epoch(),
                    db,
                    vfs: inner,
                    id: NEXT_HANDLE.fetch_add(1, Ordering::Relaxed),
                    shm_mapped: false,
                }),
                Err(e) => {
                    let code = vfs_code(&e, ffi::SQLITE_CANTOPEN);
                    record_error(e.to_string());
                    return code;
                }
            }
        } else {
            let Some(db) = inner.database_for_wal(&path) else {
                record_error(format!("WAL {} opened before its database", path.display()));
                return ffi::SQLITE_CANTOPEN;
            };
            // No directory sync: the WAL is never relied on for durability (recovery discards
            // it), so its directory entry need not be durable either.
            match db.fs().open(&path, OpenOptions::create()) {
                Ok(f) => FileState::Wal(WalHandle { db, file: f }),
                Err(e) => {
                    record_error(format!("opening WAL {}: {e}", path.display()));
                    return ffi::SQLITE_CANTOPEN;
                }
            }
        };
        let boxed = Box::into_raw(Box::new(st));
        // SAFETY: `file` has room for a PlFile (os_file_size); we initialise it fully and only
        // then install our methods, so SQLite never sees a half-built handle.
        unsafe {
            let f = file as *mut PlFile;
            std::ptr::addr_of_mut!((*f).state).write(boxed);
            (*file).pMethods = &IO_METHODS;
            if !out_flags.is_null() {
                *out_flags = flags;
            }
        }
        ffi::SQLITE_OK
    })
}

pub(crate) unsafe extern "C" fn x_delete(
    vfs: *mut ffi::sqlite3_vfs,
    z_name: *const c_char,
    sync_dir: c_int,
) -> c_int {
    guard(|| {
        let inner = vfs_inner(vfs);
        let Some(path) = c_path(z_name) else {
            return ffi::SQLITE_IOERR_DELETE;
        };
        if let Some(db) = inner.database_for_wal(&path) {
            if let Err(e) = db.on_wal_reset() {
                record_error(e.to_string());
                return ffi::SQLITE_IOERR_DELETE;
            }
            let fs = db.fs();
            return match fs.remove(&path) {
                Ok(()) => {
                    if sync_dir != 0
                        && let Err(e) = fs.sync_dir(&parent_dir(&path))
                    {
                        record_error(format!("syncing directory of {}: {e}", path.display()));
                        return ffi::SQLITE_IOERR_DIR_FSYNC;
                    }
                    ffi::SQLITE_OK
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    ffi::SQLITE_IOERR_DELETE_NOENT
                }
                Err(e) => {
                    record_error(format!("deleting {}: {e}", path.display()));
                    ffi::SQLITE_IOERR_DELETE
                }
            };
        }
        let default = inner.default_vfs.0;
        // SAFETY: delegate to the default VFS with the caller's arguments.
        unsafe {
            match (*default).xDelete {
                Some(del) => del(default, z_name, sync_dir),
                None => ffi::SQLITE_IOERR_DELETE,
            }
        }
    })
}

pub(crate) unsafe extern "C" fn x_access(
    vfs: *mut ffi::sqlite3_vfs,
    z_name: *const c_char,
    flags: c_int,
    res_out: *mut c_int,
) -> c_int {
    guard(|| {
        let inner = vfs_inner(vfs);
        let Some(path) = c_path(z_name) else {
            return ffi::SQLITE_IOERR_ACCESS;
        };
        if let Some((db, suffix)) = inner.database_for_sibling(&path) {
            let exists = match suffix {
                // Rollback journals and shm files never exist for a pagelog database: the
                // WAL-index lives in memory, and no hot journal may be "rolled back".
                "-journal" | "-shm" => false,
                _ => match db.fs().exists(&path) {
                    Ok(e) => e,
                    Err(e) => {
                        record_error(format!("probing {}: {e}", path.display()));
                        return ffi::SQLITE_IOERR_ACCESS;
                    }
                },
            };
            // SAFETY: res_out is a valid out-pointer for the duration of the call.
            unsafe { *res_out = exists as c_int };
            return ffi::SQLITE_OK;
        }
        let default = inner.default_vfs.0;
        // SAFETY: delegate to the default VFS with the caller's arguments.
        unsafe {
            match (*default).xAccess {
                Some(access) => access(default, z_name, flags, res_out),
                None => ffi::SQLITE_IOERR_ACCESS,
            }
        }
    })
}

pub(crate) unsafe extern "C" fn x_full_pathname(
    _vfs: *mut ffi::sqlite3_vfs,
    z_name: *const c_char,
    n_out: c_int,
    z_out: *mut c_char,
) -> c_int {
    guard(|| {
        let Some(path) = c_path(z_name) else {
            return ffi::SQLITE_CANTOPEN;
        };
        let full = match std::path::absolute(&path) {
            Ok(p) => pagelog_log::fs::normalize(&p),
            Err(_) => return ffi::SQLITE_CANTOPEN,
        };
        let s = full.to_string_lossy();
        let bytes = s.as_bytes();
        if bytes.len() + 1 > n_out as usize {
            return ffi::SQLITE_CANTOPEN;
        }
        // SAFETY: z_out has n_out bytes; we write len + 1 <= n_out bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), z_out as *mut u8, bytes.len());
            *z_out.add(bytes.len()) = 0;
        }
        ffi::SQLITE_OK
    })
}

macro_rules! delegate {
    ($name:ident, $field:ident, ($($arg:ident : $ty:ty),*), $ret:ty, $fallback:expr) => {
        pub(crate) unsafe extern "C" fn $name(vfs: *mut ffi::sqlite3_vfs, $($arg: $ty),*) -> $ret {
            let default = vfs_inner(vfs).default_vfs.0;
            // SAFETY: the default VFS is valid for the life of the process; arguments are
            // passed through unchanged.
            unsafe {
                match (*default).$field {
                    Some(f) => f(default, $($arg),*),
                    None => $fallback,
                }
            }
        }
    };
}

delegate!(x_randomness, xRandomness, (n: c_int, out: *mut c_char), c_int, 0);
delegate!(x_sleep, xSleep, (micros: c_int), c_int, 0);
delegate!(x_current_time, xCurrentTime, (out: *mut f64), c_int, ffi::SQLITE_ERROR);
delegate!(x_get_last_error, xGetLastError, (n: c_int, out: *mut c_char), c_int, 0);
delegate!(x_current_time_int64, xCurrentTimeInt64, (out: *mut ffi::sqlite3_int64), c_int, ffi::SQLITE_ERROR);
delegate!(x_dl_open, xDlOpen, (name: *const c_char), *mut c_void, std::ptr::null_mut());
delegate!(x_dl_error, xDlError, (n: c_int, out: *mut c_char), (), ());
delegate!(x_dl_close, xDlClose, (h: *mut c_void), (), ());

pub(crate) unsafe extern "C" fn x_dl_sym(
    vfs: *mut ffi::sqlite3_vfs,
    h: *mut c_void,
    sym: *const c_char,
) -> Option<unsafe extern "C" fn(*mut ffi::sqlite3_vfs, *mut c_void, *const c_char)> {
    let default = vfs_inner(vfs).default_vfs.0;
    // SAFETY: as for `delegate!`.
    unsafe {
        match (*default).xDlSym {
            Some(f) => f(default, h, sym),
            None => None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// sqlite3_io_methods for the main database file and the WAL
// ---------------------------------------------------------------------------------------------

static IO_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 2,
    xClose: Some(io_close),
    xRead: Some(io_read),
    xWrite: Some(io_write),
    xTruncate: Some(io_truncate),
    xSync: Some(io_sync),
    xFileSize: Some(io_file_size),
    xLock: Some(io_lock),
    xUnlock: Some(io_unlock),
    xCheckReservedLock: Some(io_check_reserved),
    xFileControl: Some(io_file_control),
    xSectorSize: Some(io_sector_size),
    xDeviceCharacteristics: Some(io_device_characteristics),
    xShmMap: Some(io_shm_map),
    xShmLock: Some(io_shm_lock),
    xShmBarrier: Some(io_shm_barrier),
    xShmUnmap: Some(io_shm_unmap),
    xFetch: None,
    xUnfetch: None,
};

unsafe extern "C" fn io_close(file: *mut ffi::sqlite3_file) -> c_int {
    guard(|| {
        // SAFETY: our methods are installed only on PlFile memory; we take back the box we made
        // in x_open exactly once (SQLite calls xClose once) and clear the pointer.
        let st = unsafe {
            let f = file as *mut PlFile;
            let b = (*f).state;
            (*f).state = std::ptr::null_mut();
            if b.is_null() {
                None
            } else {
                Some(Box::from_raw(b))
            }
        };
        if let Some(st) = st
            && let FileState::Main(h) = *st
        {
            h.db.locks.lock().unlock(h.id, locks::NONE);
            h.db.shm.lock().locks.release_all(h.id);
            h.vfs.release(h.db);
        }
        ffi::SQLITE_OK
    })
}

fn read_into(file: &FileRef, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        let n = file.read_at(&mut buf[done..], offset + done as u64)?;
        if n == 0 {
            break;
        }
        done += n;
    }
    Ok(done)
}

unsafe extern "C" fn io_read(
    file: *mut ffi::sqlite3_file,
    buf: *mut c_void,
    amt: c_int,
    offset: ffi::sqlite3_int64,
) -> c_int {
    guard(|| {
        let Some(st) = state(file) else {
            return ffi::SQLITE_IOERR_READ;
        };
        // SAFETY: SQLite passes a buffer of `amt` writable bytes.
        let out = unsafe { std::slice::from_raw_parts_mut(buf as *mut u8, amt as usize) };
        let f = match st {
            FileState::Main(h) => h.db.file(),
            FileState::Wal(w) => &w.file,
        };
        match read_into(f, out, offset as u64) {
            Ok(n) if n == out.len() => ffi::SQLITE_OK,
            Ok(n) => {
                out[n..].fill(0);
                ffi::SQLITE_IOERR_SHORT_READ
            }
            Err(e) => {
                record_error(format!("read failed: {e}"));
                ffi::SQLITE_IOERR_READ
            }
        }
    })
}

unsafe extern "C" fn io_write(
    file: *mut ffi::sqlite3_file,
    buf: *const c_void,
    amt: c_int,
    offset: ffi::sqlite3_int64,
) -> c_int {
    guard(|| {
        let Some(st) = state(file) else {
            return ffi::SQLITE_IOERR_WRITE;
        };
        // SAFETY: SQLite passes `amt` readable bytes.
        let data = unsafe { std::slice::from_raw_parts(buf as *const u8, amt as usize) };
        let offset = offset as u64;
        match st {
            FileState::Main(h) => match h.db.write_db(data, offset) {
                Ok(()) => ffi::SQLITE_OK,
                Err(e) => {
                    record_error(e.to_string());
                    vfs_code(&e, ffi::SQLITE_IOERR_WRITE)
                }
            },
            FileState::Wal(w) => {
                if let Err(e) = w.file.write_all_at(data, offset) {
                    record_error(format!("writing {}: {e}", w.db.wal_path().display()));
                    return io_code(&e, ffi::SQLITE_IOERR_WRITE);
                }
                match w.db.on_wal_write(offset, data) {
                    Ok(Some(lsn)) => {
                        set_last_commit(&w.db, lsn);
                        ffi::SQLITE_OK
                    }
                    Ok(None) => ffi::SQLITE_OK,
                    Err(e) => {
                        record_error(e.to_string());
                        vfs_code(&e, ffi::SQLITE_IOERR_WRITE)
                    }
                }
            }
        }
    })
}

unsafe extern "C" fn io_truncate(file: *mut ffi::sqlite3_file, size: ffi::sqlite3_int64) -> c_int {
    guard(|| {
        let Some(st) = state(file) else {
            return ffi::SQLITE_IOERR_TRUNCATE;
        };
        let res = match st {
            FileState::Main(h) => h.db.truncate_db(size as u64).map_err(|e| e.to_string()),
            FileState::Wal(w) => {
                let r = if size == 0 {
                    w.db.on_wal_reset().map_err(|e| e.to_string())
                } else {
                    Ok(())
                };
                r.and_then(|_| w.file.set_len(size as u64).map_err(|e| e.to_string()))
            }
        };
        match res {
            Ok(()) => ffi::SQLITE_OK,
            Err(e) => {
                record_error(e);
                ffi::SQLITE_IOERR_TRUNCATE
            }
        }
    })
}

unsafe extern "C" fn io_sync(file: *mut ffi::sqlite3_file, _flags: c_int) -> c_int {
    guard(|| {
        let Some(st) = state(file) else {
            return ffi::SQLITE_IOERR_FSYNC;
        };
        match st {
            // The log is the durability point: the WAL is never synced (a WAL that loses
            // frames in a crash is discarded and rebuilt from the log on open).
            FileState::Wal(_) => ffi::SQLITE_OK,
            FileState::Main(h) => match h.db.sync_db_file() {
                Ok(()) => ffi::SQLITE_OK,
                Err(e) => {
                    record_error(e.to_string());
                    ffi::SQLITE_IOERR_FSYNC
                }
            },
        }
    })
}

unsafe extern "C" fn io_file_size(
    file: *mut ffi::sqlite3_file,
    out: *mut ffi::sqlite3_int64,
) -> c_int {
    guard(|| {
        let Some(st) = state(file) else {
            return ffi::SQLITE_IOERR_FSTAT;
        };
        let f = match st {
            FileState::Main(h) => h.db.file(),
            FileState::Wal(w) => &w.file,
        };
        match f.len() {
            Ok(n) => {
                // SAFETY: `out` is a valid out-pointer for the call.
                unsafe { *out = n as ffi::sqlite3_int64 };
                ffi::SQLITE_OK
            }
            Err(e) => {
                record_error(format!("stat failed: {e}"));
                ffi::SQLITE_IOERR_FSTAT
            }
        }
    })
}

unsafe extern "C" fn io_lock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    guard(|| match state(file) {
        Some(FileState::Main(h)) => {
            if h.db.locks.lock().lock(h.id, level) {
                ffi::SQLITE_OK
            } else {
                ffi::SQLITE_BUSY
            }
        }
        _ => ffi::SQLITE_OK,
    })
}

unsafe extern "C" fn io_unlock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    guard(|| {
        if let Some(FileState::Main(h)) = state(file) {
            h.db.locks.lock().unlock(h.id, level);
        }
        ffi::SQLITE_OK
    })
}

unsafe extern "C" fn io_check_reserved(file: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    guard(|| {
        let reserved = match state(file) {
            Some(FileState::Main(h)) => h.db.locks.lock().reserved(),
            _ => false,
        };
        // SAFETY: `out` is a valid out-pointer for the call.
        unsafe { *out = reserved as c_int };
        ffi::SQLITE_OK
    })
}

/// File-control opcode: write the LSN of the last transaction into the `u64` argument.
pub const FCNTL_LAST_LSN: c_int = 0x5047_4c01;

unsafe extern "C" fn io_file_control(
    file: *mut ffi::sqlite3_file,
    op: c_int,
    arg: *mut c_void,
) -> c_int {
    guard(|| {
        let Some(FileState::Main(h)) = state(file) else {
            return ffi::SQLITE_NOTFOUND;
        };
        match op {
            ffi::SQLITE_FCNTL_PRAGMA => {
                // SAFETY: for SQLITE_FCNTL_PRAGMA, arg is a char*[3]: error out, name, value.
                let (name, value) = unsafe {
                    let a = arg as *mut *mut c_char;
                    (c_path(*a.add(1)), c_path(*a.add(2)))
                };
                let (Some(name), Some(value)) = (name, value) else {
                    return ffi::SQLITE_NOTFOUND;
                };
                let name = name.to_string_lossy().to_ascii_lowercase();
                let value = value.to_string_lossy().to_ascii_lowercase();
                let refused = if name == "journal_mode" && value != "wal" {
                    Some(VfsError::NotWal(format!(
                        "journal_mode={value} refused for {}; a pagelog database stays in WAL mode",
                        h.db.path().display()
                    )))
                } else if name == "locking_mode" && value == "exclusive" {
                    // In exclusive locking mode SQLite skips the WAL-index locks, among them
                    // the checkpoint lock a snapshot holds while it copies the main file.
                    Some(VfsError::Config(format!(
                        "locking_mode=exclusive refused for {}: a pagelog database needs SQLite's \
                         WAL-index locks (snapshots hold the checkpoint lock while copying)",
                        h.db.path().display()
                    )))
                } else {
                    None
                };
                if let Some(e) = refused {
                    let msg = e.to_string();
                    let c = std::ffi::CString::new(msg.clone()).unwrap_or_default();
                    // SAFETY: SQLite frees aArg[0] with sqlite3_free; sqlite3_mprintf allocates
                    // it with SQLite's allocator.
                    unsafe {
                        let a = arg as *mut *mut c_char;
                        *a = ffi::sqlite3_mprintf(c"%s".as_ptr(), c.as_ptr());
                    }
                    record_error(msg);
                    return ffi::SQLITE_ERROR;
                }
                ffi::SQLITE_NOTFOUND
            }
            FCNTL_LAST_LSN => {
                // SAFETY: callers of this private opcode pass a pointer to a u64.
                unsafe { *(arg as *mut u64) = h.db.last_lsn() };
                ffi::SQLITE_OK
            }
            _ => ffi::SQLITE_NOTFOUND,
        }
    })
}

unsafe extern "C" fn io_sector_size(_file: *mut ffi::sqlite3_file) -> c_int {
    4096
}

unsafe extern "C" fn io_device_characteristics(_file: *mut ffi::sqlite3_file) -> c_int {
    // Writes never damage bytes outside their range; SQLite then does not pad WAL frames to
    // sector boundaries.
    ffi::SQLITE_IOCAP_POWERSAFE_OVERWRITE
}

unsafe extern "C" fn io_shm_map(
    file: *mut ffi::sqlite3_file,
    region: c_int,
    size: c_int,
    extend: c_int,
    out: *mut *mut c_void,
) -> c_int {
    guard(|| {
        let Some(FileState::Main(h)) = state(file) else {
            return ffi::SQLITE_IOERR_SHMMAP;
        };
        h.shm_mapped = true;
        let mut shm = h.db.shm.lock();
        let region = region as usize;
        if shm.regions.len() <= region {
            if extend == 0 {
                // SAFETY: `out` is a valid out-pointer for the call.
                unsafe { *out = std::ptr::null_mut() };
                return ffi::SQLITE_OK;
            }
            let words = (size as usize).div_ceil(8);
            while shm.regions.len() <= region {
                shm.regions.push(vec![0u64; words].into_boxed_slice());
            }
        }
        // The boxed slice never moves or shrinks while the Database lives, and every handle
        // that mapped it holds an Arc<Database>: the pointer stays valid until xShmUnmap/close.
        let ptr = shm.regions[region].as_mut_ptr() as *mut c_void;
        // SAFETY: `out` is a valid out-pointer for the call.
        unsafe { *out = ptr };
        ffi::SQLITE_OK
    })
}

unsafe extern "C" fn io_shm_lock(
    file: *mut ffi::sqlite3_file,
    offset: c_int,
    n: c_int,
    flags: c_int,
) -> c_int {
    guard(|| {
        let Some(FileState::Main(h)) = state(file) else {
            return ffi::SQLITE_IOERR_SHMLOCK;
        };
        let (start, end) = (offset as usize, (offset + n) as usize);
        if end > locks::SHM_NLOCK {
            return ffi::SQLITE_IOERR_SHMLOCK;
        }
        let mut shm = h.db.shm.lock();
        // A connection that outlived its owner may not begin a write transaction: refused
        // before anything is written, the statement fails with "attempt to write a readonly
        // database". SQLite begins one by taking slot 0 (the WAL write lock) exclusively while
        // it holds a read lock (slots 3..8: a write transaction always starts inside a read
        // transaction). It also takes slot 0 without a read lock, to rebuild the WAL-index or
        // for a blocking checkpoint; those add no transaction and are let through, so that
        // such a connection can always read.
        if start == 0
            && flags & ffi::SQLITE_SHM_LOCK != 0
            && flags & ffi::SQLITE_SHM_EXCLUSIVE != 0
            && h.epoch != h.db.epoch()
            && shm.locks.holds_shared(h.id, WAL_READ_LOCKS)
        {
            drop(shm);
            record_error(retired_message(&h.db));
            return ffi::SQLITE_READONLY;
        }
        let ok = if flags & ffi::SQLITE_SHM_UNLOCK != 0 {
            shm.locks.unlock(h.id, start..end);
            true
        } else if flags & ffi::SQLITE_SHM_EXCLUSIVE != 0 {
            shm.locks.lock_exclusive(h.id, start..end)
        } else {
            shm.locks.lock_shared(h.id, start..end)
        };
        if ok { ffi::SQLITE_OK } else { ffi::SQLITE_BUSY }
    })
}

unsafe extern "C" fn io_shm_barrier(_file: *mut ffi::sqlite3_file) {
    std::sync::atomic::fence(Ordering::SeqCst);
}

unsafe extern "C" fn io_shm_unmap(file: *mut ffi::sqlite3_file, _delete: c_int) -> c_int {
    guard(|| {
        if let Some(FileState::Main(h)) = state(file) {
            h.shm_mapped = false;
            h.db.shm.lock().locks.release_all(h.id);
            // Regions stay allocated while the Database lives: other connections may map them.
        }
        ffi::SQLITE_OK
    })
}

/// Build the `sqlite3_vfs` struct for registration.
pub(crate) fn make_vfs(
    name: *const c_char,
    app: *const VfsInner,
    default: DefaultVfs,
) -> ffi::sqlite3_vfs {
    let default = default.0;
    // SAFETY: `default` is the non-null default VFS.
    let mx_path = unsafe { (*default).mxPathname }.max(1024);
    ffi::sqlite3_vfs {
        iVersion: 2,
        szOsFile: os_file_size(default),
        mxPathname: mx_path,
        pNext: std::ptr::null_mut(),
        zName: name,
        pAppData: app as *mut c_void,
        xOpen: Some(x_open),
        xDelete: Some(x_delete),
        xAccess: Some(x_access),
        xFullPathname: Some(x_full_pathname),
        xDlOpen: Some(x_dl_open),
        xDlError: Some(x_dl_error),
        xDlSym: Some(x_dl_sym),
        xDlClose: Some(x_dl_close),
        xRandomness: Some(x_randomness),
        xSleep: Some(x_sleep),
        xCurrentTime: Some(x_current_time),
        xGetLastError: Some(x_get_last_error),
        xCurrentTimeInt64: Some(x_current_time_int64),
        xSetSystemCall: None,
        xGetSystemCall: None,
        xNextSystemCall: None,
    }
}

/// Register a VFS struct with SQLite (not as the default).
pub(crate) fn register(vfs: &'static mut ffi::sqlite3_vfs) -> c_int {
    // SAFETY: the struct is leaked ('static) so it outlives every connection that may use it.
    unsafe { ffi::sqlite3_vfs_register(vfs, 0) }
}

/// The default (OS) VFS.
pub(crate) fn default_vfs() -> Option<DefaultVfs> {
    // SAFETY: sqlite3_vfs_find(NULL) returns the default VFS (or null), and initialises SQLite.
    let p = unsafe { ffi::sqlite3_vfs_find(std::ptr::null()) };
    (!p.is_null()).then_some(DefaultVfs(p))
}

/// Whether a VFS of this name is registered.
pub(crate) fn vfs_exists(name: &std::ffi::CStr) -> bool {
    // SAFETY: `name` is a valid C string.
    !unsafe { ffi::sqlite3_vfs_find(name.as_ptr()) }.is_null()
}

/// Ask a connection's main database file for the LSN of its last transaction.
pub(crate) fn connection_last_lsn(conn: &rusqlite::Connection) -> Option<u64> {
    let mut lsn: u64 = 0;
    // SAFETY: `conn.handle()` is a valid open sqlite3*; the "main" schema name is a valid C
    // string; FCNTL_LAST_LSN is handled by our xFileControl, which writes one u64 into `lsn`.
    // Other VFSes return SQLITE_NOTFOUND and leave `lsn` untouched.
    let rc = unsafe {
        ffi::sqlite3_file_control(
            conn.handle(),
            c"main".as_ptr(),
            FCNTL_LAST_LSN,
            &mut lsn as *mut u64 as *mut c_void,
        )
    };
    (rc == ffi::SQLITE_OK).then_some(lsn)
}
