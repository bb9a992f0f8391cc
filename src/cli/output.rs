//! Output: a buffered stdout writer that stops quietly when the reader goes away, JSON
//! printing, and the formatting shared by the human reports (sizes, times, checksums).

use std::io::{BufWriter, StdoutLock, Write};

use super::exit::CliError;

/// Buffered stdout. A closed pipe (`| head`) ends the command quietly.
pub struct Out {
    w: BufWriter<StdoutLock<'static>>,
}

impl Out {
    /// Lock stdout.
    pub fn new() -> Out {
        Out {
            w: BufWriter::new(std::io::stdout().lock()),
        }
    }

    /// Write one line.
    pub fn line(&mut self, s: impl AsRef<str>) -> Result<(), CliError> {
        self.w
            .write_all(s.as_ref().as_bytes())
            .and_then(|_| self.w.write_all(b"\n"))
            .map_err(CliError::stdout)
    }

    /// Write a JSON value, pretty-printed, as one document.
    pub fn json(&mut self, v: &serde_json::Value) -> Result<(), CliError> {
        serde_json::to_writer_pretty(&mut self.w, v)
            .map_err(std::io::Error::from)
            .and_then(|_| self.w.write_all(b"\n"))
            .map_err(CliError::stdout)
    }

    /// Flush what was written.
    pub fn flush(&mut self) -> Result<(), CliError> {
        self.w.flush().map_err(CliError::stdout)
    }
}

impl Drop for Out {
    fn drop(&mut self) {
        let _ = self.w.flush();
    }
}

/// `1.5 MiB`, `812 B`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = UNITS[0];
    for u in &UNITS[1..] {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    format!("{v:.1} {unit}")
}

/// A commit time as RFC 3339 (UTC), or `unknown` for 0.
pub fn time(us: u64) -> String {
    if us == 0 {
        "unknown".to_string()
    } else {
        pagelog_snapshot::time::format_us(us)
    }
}

/// A commit time for JSON: the RFC 3339 string, or null for 0.
pub fn json_time(us: u64) -> serde_json::Value {
    if us == 0 {
        serde_json::Value::Null
    } else {
        serde_json::Value::String(pagelog_snapshot::time::format_us(us))
    }
}

/// A whole-database checksum, as the library prints it (16 hex digits).
pub fn checksum(c: u64) -> String {
    format!("{c:016x}")
}

/// A database id, as the library prints it (32 hex digits).
pub fn database_id(id: u128) -> String {
    format!("{id:032x}")
}

/// `1 page`, `2 pages`, `3 batches`: a count and a regular English noun.
pub fn count(n: impl Into<u64>, noun: &str) -> String {
    let n = n.into();
    if n == 1 {
        format!("1 {noun}")
    } else if noun.ends_with("ch") || noun.ends_with('s') || noun.ends_with('x') {
        format!("{n} {noun}es")
    } else {
        format!("{n} {noun}s")
    }
}

/// `12.3 MiB/s` for `n` bytes in `secs` seconds.
pub fn rate(n: u64, secs: f64) -> String {
    if secs <= 0.0 {
        return "-".to_string();
    }
    format!("{}/s", bytes((n as f64 / secs) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 << 20), "3.0 MiB");
        assert_eq!(bytes(5 << 30), "5.0 GiB");
        assert_eq!(time(0), "unknown");
        assert_eq!(time(1_000_000), "1970-01-01T00:00:01.000000Z");
        assert_eq!(json_time(0), serde_json::Value::Null);
        assert_eq!(checksum(0xab), "00000000000000ab");
        assert_eq!(database_id(1).len(), 32);
        assert_eq!(rate(2048, 2.0), "1.0 KiB/s");
        assert_eq!(rate(1, 0.0), "-");
        assert_eq!(count(1u32, "page"), "1 page");
        assert_eq!(count(0u64, "page"), "0 pages");
        assert_eq!(count(2u64, "batch"), "2 batches");
    }
}
