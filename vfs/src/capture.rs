//! WAL capture: follow SQLite's writes to the WAL file and, at each commit frame, produce the
//! transaction: the last image of every page it wrote and the database size after it.
//!
//! SQLite writes the 32-byte WAL header at offset 0 (also when it restarts the WAL after a
//! checkpoint), then each frame as a 24-byte frame header followed by the page. Frames after
//! the last commit frame are scratch: a transaction that spills may overwrite its own frames in
//! place, and a rollback just lets the next transaction overwrite them. So this module keeps
//! the frames written since the last commit, slot by slot, and only looks at them when the page
//! of a commit frame (non-zero "database size after commit") is written.
//!
//! One more pattern: when a transaction overwrote some of its own frames, SQLite recomputes the
//! checksum chain after writing the commit frame (`walRewriteChecksums`), rewriting the 24-byte
//! headers — same page numbers and sizes, new checksums — of frames of the transaction that
//! just committed. Those writes change no page and are accepted as such.

use crate::error::VfsError;

/// Size of the WAL header.
pub const WAL_HEADER_LEN: u64 = 32;
/// Size of a WAL frame header.
pub const FRAME_HEADER_LEN: u64 = 24;

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    pgno: u32,
    commit: u32,
    has_data: bool,
}

/// What a write to the WAL meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalEvent {
    /// Nothing to act on yet.
    None,
    /// The WAL header was written. `restart` is true when committed frames preceded it (the WAL
    /// restarted after a complete checkpoint).
    Header {
        /// Whether frames had been committed before this header.
        restart: bool,
    },
    /// A transaction committed; read it with [`WalCapture::pages`], then call
    /// [`WalCapture::end_commit`].
    Commit {
        /// Database size in pages after the commit.
        db_pages: u32,
    },
}

/// Follows one database's WAL.
#[derive(Debug, Default)]
pub struct WalCapture {
    page_size: u32,
    /// Frame index (0-based) of the first frame of the open transaction.
    txn_start: u64,
    /// Slots of frames written since the last commit (index = frame - txn_start).
    slots: Vec<Slot>,
    /// Page images of those slots.
    arena: Vec<u8>,
    /// Index of the commit frame's slot while a commit is being read.
    commit_slot: Option<usize>,
    /// Frames of the last committed transaction, whose headers SQLite may rewrite.
    last_committed: std::ops::Range<u64>,
    /// Scratch for ordering pages (reused: no allocation per commit).
    order: Vec<(u32, u32)>,
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn bad(msg: String) -> VfsError {
    VfsError::BadRecord(format!("unexpected WAL write: {msg}"))
}

impl WalCapture {
    /// A capture that has seen no WAL yet.
    pub fn new() -> WalCapture {
        WalCapture::default()
    }

    /// Page size from the WAL header (0 before one was written).
    pub fn page_size(&self) -> u32 {
        self.page_size
    }

    /// Frames committed in the current WAL generation.
    pub fn committed_frames(&self) -> u64 {
        self.txn_start
    }

    /// The WAL was truncated or deleted: the next write starts a new WAL.
    pub fn reset(&mut self) {
        self.txn_start = 0;
        self.slots.clear();
        self.commit_slot = None;
        self.last_committed = 0..0;
    }

    /// Account for a write of `data` at `offset` in the WAL file.
    pub fn on_write(&mut self, offset: u64, data: &[u8]) -> Result<WalEvent, VfsError> {
        if offset == 0 {
            if data.len() < WAL_HEADER_LEN as usize {
                return Err(bad(format!("{} bytes at offset 0", data.len())));
            }
            let page_size = match be32(data, 8) {
                1 => 65536,
                n => n,
            };
            if !crate::record::valid_page_size(page_size) {
                return Err(bad(format!("WAL header with page size {page_size}")));
            }
            let restart = self.txn_start > 0;
            self.page_size = page_size;
            self.reset();
            return Ok(WalEvent::Header { restart });
        }
        if self.page_size == 0 {
            return Err(bad(format!(
                "frame write at {offset} before any WAL header"
            )));
        }
        let ps = self.page_size as u64;
        let frame_size = FRAME_HEADER_LEN + ps;
        if offset < WAL_HEADER_LEN {
            return Err(bad(format!("write inside the WAL header at {offset}")));
        }
        let rel = offset - WAL_HEADER_LEN;
        let frame = rel / frame_size;
        let within = rel % frame_size;
        let len = data.len() as u64;
        if frame < self.txn_start {
            if within == 0 && len == FRAME_HEADER_LEN && self.last_committed.contains(&frame) {
                // Checksum rewrite of a frame header of the transaction just committed.
                return Ok(WalEvent::None);
            }
            return Err(bad(format!(
                "write to frame {frame}, which was already committed"
            )));
        }
        let slot = (frame - self.txn_start) as usize;
        if self.slots.len() <= slot {
            self.slots.resize(slot + 1, Slot::default());
        }
        let (header, page): (Option<&[u8]>, Option<&[u8]>) = match (within, len) {
            (0, FRAME_HEADER_LEN) => (Some(data), None),
            (0, n) if n == frame_size => (
                Some(&data[..FRAME_HEADER_LEN as usize]),
                Some(&data[FRAME_HEADER_LEN as usize..]),
            ),
            (FRAME_HEADER_LEN, n) if n == ps => (None, Some(data)),
            _ => {
                return Err(bad(format!(
                    "{len} bytes at offset {offset} do not align with frames of {frame_size} bytes"
                )));
            }
        };
        if let Some(h) = header {
            self.slots[slot].pgno = be32(h, 0);
            self.slots[slot].commit = be32(h, 4);
        }
        if let Some(p) = page {
            let start = slot * ps as usize;
            if self.arena.len() < start + ps as usize {
                self.arena.resize(start + ps as usize, 0);
            }
            self.arena[start..start + ps as usize].copy_from_slice(p);
            self.slots[slot].has_data = true;
            let s = self.slots[slot];
            if s.pgno == 0 {
                return Err(bad(format!(
                    "page of frame {frame} written before its header"
                )));
            }
            if s.commit != 0 {
                self.commit_slot = Some(slot);
                return Ok(WalEvent::Commit { db_pages: s.commit });
            }
        }
        Ok(WalEvent::None)
    }

    /// The committed transaction's pages: the last image of each page, ascending page number.
    /// Only meaningful right after [`WalEvent::Commit`].
    pub fn pages(&mut self) -> impl Iterator<Item = (u32, &[u8])> + '_ {
        self.order.clear();
        if let Some(last) = self.commit_slot {
            for (i, s) in self.slots[..=last].iter().enumerate() {
                if s.has_data {
                    self.order.push((s.pgno, i as u32));
                }
            }
        }
        // Sort by page, then slot; keep the last slot of each page.
        self.order.sort_unstable();
        let order = &mut self.order;
        let mut w = 0;
        for r in 0..order.len() {
            if r + 1 < order.len() && order[r + 1].0 == order[r].0 {
                continue;
            }
            order[w] = order[r];
            w += 1;
        }
        order.truncate(w);
        let ps = self.page_size as usize;
        let arena = &self.arena;
        self.order
            .iter()
            .map(move |&(pgno, slot)| (pgno, &arena[slot as usize * ps..(slot as usize + 1) * ps]))
    }

    /// Frames of the committed transaction (only meaningful right after
    /// [`WalEvent::Commit`]): a cheap upper bound of the pages [`WalCapture::pages`] yields.
    pub fn frames(&self) -> usize {
        self.commit_slot.map_or(0, |last| last + 1)
    }

    /// The commit just reported was refused (SQLite's write of the commit frame failed, so
    /// its WAL index does not hold the transaction and the next transaction overwrites its
    /// frames): forget the transaction's frames; the next frame starts a new transaction at
    /// the same place.
    pub fn abandon_commit(&mut self) {
        self.commit_slot = None;
        self.slots.clear();
        if self.arena.len() > 64 << 20 {
            self.arena = Vec::new();
        }
    }

    /// Done with the commit: the next frame starts a new transaction.
    pub fn end_commit(&mut self) {
        if let Some(last) = self.commit_slot.take() {
            self.last_committed = self.txn_start..self.txn_start + last as u64 + 1;
            self.txn_start += last as u64 + 1;
            self.slots.clear();
            // Do not hold on to the memory of a huge transaction.
            if self.arena.len() > 64 << 20 {
                self.arena = Vec::new();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PS: usize = 512;

    fn header() -> Vec<u8> {
        let mut h = vec![0u8; 32];
        h[8..12].copy_from_slice(&(PS as u32).to_be_bytes());
        h
    }

    fn frame_header(pgno: u32, commit: u32) -> Vec<u8> {
        let mut h = vec![0u8; 24];
        h[0..4].copy_from_slice(&pgno.to_be_bytes());
        h[4..8].copy_from_slice(&commit.to_be_bytes());
        h
    }

    fn off(frame: u64) -> u64 {
        32 + frame * (24 + PS as u64)
    }

    fn write_frame(c: &mut WalCapture, frame: u64, pgno: u32, commit: u32, fill: u8) -> WalEvent {
        assert_eq!(
            c.on_write(off(frame), &frame_header(pgno, commit)).unwrap(),
            WalEvent::None
        );
        c.on_write(off(frame) + 24, &[fill; PS]).unwrap()
    }

    #[test]
    fn spilled_overwritten_and_rolled_back_frames() {
        let mut c = WalCapture::new();
        assert_eq!(
            c.on_write(0, &header()).unwrap(),
            WalEvent::Header { restart: false }
        );
        // Txn 1: pages 1, 2, then page 1 again in a new frame; commit on page 3.
        write_frame(&mut c, 0, 1, 0, 0xa1);
        write_frame(&mut c, 1, 2, 0, 0xa2);
        write_frame(&mut c, 2, 1, 0, 0xb1);
        assert_eq!(
            write_frame(&mut c, 3, 3, 3, 0xa3),
            WalEvent::Commit { db_pages: 3 }
        );
        let pages: Vec<_> = c.pages().map(|(p, d)| (p, d[0])).collect();
        assert_eq!(pages, vec![(1, 0xb1), (2, 0xa2), (3, 0xa3)]);
        c.end_commit();
        // Txn 2 spills page 5 into frame 4, is rolled back; txn 3 reuses frames 4, 5 and
        // overwrites frame 4 in place before committing.
        write_frame(&mut c, 4, 5, 0, 0xee);
        write_frame(&mut c, 4, 2, 0, 0xc2);
        write_frame(&mut c, 4, 2, 0, 0xd2);
        assert_eq!(
            write_frame(&mut c, 5, 1, 3, 0xc1),
            WalEvent::Commit { db_pages: 3 }
        );
        let pages: Vec<_> = c.pages().map(|(p, d)| (p, d[0])).collect();
        assert_eq!(pages, vec![(1, 0xc1), (2, 0xd2)]);
        c.end_commit();
        // The headers of the transaction just committed may be rewritten (checksums), its
        // pages and older frames may not.
        assert_eq!(
            c.on_write(off(4), &frame_header(2, 0)).unwrap(),
            WalEvent::None
        );
        assert!(c.on_write(off(4) + 24, &[0u8; PS]).is_err());
        assert!(c.on_write(off(1), &frame_header(1, 0)).is_err());
        // Restart after checkpoint.
        assert_eq!(
            c.on_write(0, &header()).unwrap(),
            WalEvent::Header { restart: true }
        );
        assert_eq!(
            write_frame(&mut c, 0, 1, 1, 0x11),
            WalEvent::Commit { db_pages: 1 }
        );
    }

    #[test]
    fn whole_frame_in_one_write_and_misaligned_writes() {
        let mut c = WalCapture::new();
        assert!(
            c.on_write(off(0), &frame_header(1, 1)).is_err(),
            "no header yet"
        );
        c.on_write(0, &header()).unwrap();
        let mut f = frame_header(4, 4);
        f.extend_from_slice(&[7u8; PS]);
        assert_eq!(
            c.on_write(off(0), &f).unwrap(),
            WalEvent::Commit { db_pages: 4 }
        );
        assert_eq!(c.pages().count(), 1);
        c.end_commit();
        assert!(c.on_write(off(1) + 3, &[0u8; 10]).is_err());
    }
}
