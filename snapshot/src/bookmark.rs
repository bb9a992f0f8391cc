//! Bookmarks: an opaque, printable token for a point in a database's history — a timeline and
//! an LSN — that sorts as a plain string in history order within a timeline (and by timeline
//! first), parses back, and names a restore target.
//!
//! Text form: `{timeline:08x}-{lsn:016x}`, lowercase hex, 25 characters, e.g.
//! `00000001-00000000000004d2`.

use std::fmt;
use std::str::FromStr;

use pagelog_log::Lsn;

/// A point in a database's history: the state right after `lsn` on `timeline`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bookmark {
    /// Timeline.
    pub timeline: u64,
    /// LSN.
    pub lsn: Lsn,
}

/// A string that is not a bookmark.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid bookmark {0:?}: expected TTTTTTTT-LLLLLLLLLLLLLLLL (hex timeline and LSN)")]
pub struct BadBookmark(pub String);

impl Bookmark {
    /// A bookmark.
    pub fn new(timeline: u64, lsn: Lsn) -> Bookmark {
        Bookmark { timeline, lsn }
    }
}

impl fmt::Display for Bookmark {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}-{:016x}", self.timeline, self.lsn)
    }
}

impl FromStr for Bookmark {
    type Err = BadBookmark;

    fn from_str(s: &str) -> Result<Bookmark, BadBookmark> {
        let bad = || BadBookmark(s.chars().take(64).collect());
        let (t, l) = s.split_once('-').ok_or_else(bad)?;
        let hex = |x: &str, n: usize| {
            if x.len() == n
                && x.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                u64::from_str_radix(x, 16).ok()
            } else {
                None
            }
        };
        let timeline = hex(t, 8).ok_or_else(bad)?;
        let lsn = hex(l, 16).ok_or_else(bad)?;
        Ok(Bookmark { timeline, lsn })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_order() {
        let b = Bookmark::new(1, 1234);
        assert_eq!(b.to_string(), "00000001-00000000000004d2");
        assert_eq!(b.to_string().parse::<Bookmark>().unwrap(), b);
        let mut pairs = [
            (1u64, 9u64),
            (1, 10),
            (1, 255),
            (2, 1),
            (1, 1 << 40),
            (300, 0),
        ];
        pairs.sort();
        let strs: Vec<String> = pairs
            .iter()
            .map(|(t, l)| Bookmark::new(*t, *l).to_string())
            .collect();
        let mut sorted = strs.clone();
        sorted.sort();
        assert_eq!(strs, sorted, "string order is history order");
        for bad in [
            "",
            "1-2",
            "00000001_00000000000004d2",
            "0000000g-00000000000004d2",
            "00000001-00000000000004D2",
            "00000001-00000000000004d2x",
        ] {
            assert!(bad.parse::<Bookmark>().is_err(), "{bad}");
        }
    }
}
