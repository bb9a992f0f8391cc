//! Timestamps: microseconds since the Unix epoch, printed as RFC 3339 (UTC) and parsed back
//! (with any UTC offset), on the `jiff` crate.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in microseconds since the Unix epoch.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// `2026-11-27T07:18:31.123456Z`.
pub fn format_us(us: u64) -> String {
    match jiff::Timestamp::from_microsecond(us as i64) {
        Ok(t) => format!("{t:.6}"),
        Err(_) => format!("{us} µs"),
    }
}

/// Parse an RFC 3339 time (`2026-11-27T07:18:31Z`, `2026-11-27T08:18:31.5+01:00`) into
/// microseconds since the Unix epoch; `None` if it is not one or is before 1970.
pub fn parse_rfc3339(s: &str) -> Option<u64> {
    let t: jiff::Timestamp = s.parse().ok()?;
    u64::try_from(t.as_microsecond()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for us in [
            0u64,
            1,
            951_782_400_123_456,
            1_795_000_000_000_000,
            now_us(),
        ] {
            assert_eq!(parse_rfc3339(&format_us(us)), Some(us), "{}", format_us(us));
        }
        assert_eq!(format_us(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            parse_rfc3339("2026-11-27T08:00:00+01:00"),
            parse_rfc3339("2026-11-27T07:00:00Z")
        );
        assert_eq!(
            parse_rfc3339("2000-02-29T00:00:00.5Z"),
            Some(951_782_400_500_000)
        );
        for bad in [
            "",
            "2026-13-01T00:00:00Z",
            "2026-11-27 07:00",
            "x",
            "1960-01-01T00:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }
}
