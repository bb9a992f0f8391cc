//! Byte layout of segment headers and record headers (see `log/FORMAT.md`), with encoding and
//! validation. Nothing here does I/O.

use crate::Lsn;

/// Magic at the start of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"PGLOGSEG";
/// Segment format version written by this crate.
pub const SEGMENT_VERSION: u32 = 1;
/// Size of the segment header; the first record starts right after it.
pub const SEGMENT_HEADER_LEN: usize = 64;
/// Magic at the start of every record header.
pub const RECORD_MAGIC: [u8; 4] = *b"PLR1";
/// Size of a record header.
pub const RECORD_HEADER_LEN: usize = 40;
/// Largest payload a record may carry (1 GiB); anything larger is refused on append and treated
/// as corruption on read.
pub const MAX_PAYLOAD: usize = 1 << 30;
/// Largest LSN a segment may start at (2^63). LSN 0 means "none" and no segment starts there;
/// the cap is far beyond any real log and leaves room for every record a segment can hold, so
/// LSN arithmetic on what recovery reads can never overflow.
pub const MAX_FIRST_LSN: Lsn = 1 << 63;

/// The decoded header of a segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Identifies the database the log belongs to.
    pub database_id: u128,
    /// Timeline (incremented when history forks, e.g. after a restore).
    pub timeline: u64,
    /// LSN of the first record in this segment.
    pub first_lsn: Lsn,
    /// When the segment was started (microseconds since the Unix epoch).
    pub created_us: u64,
}

/// Why a segment header was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderProblem {
    /// Fewer than [`SEGMENT_HEADER_LEN`] bytes.
    Short,
    /// The magic is not [`SEGMENT_MAGIC`].
    BadMagic,
    /// The checksum does not match.
    BadChecksum,
    /// A version this crate cannot read.
    UnsupportedVersion(u32),
    /// A first LSN of 0 or above [`MAX_FIRST_LSN`].
    BadFirstLsn(Lsn),
    /// A valid header whose first LSN (given) is not the one the file's name says.
    NameMismatch(Lsn),
}

/// Little-endian u16 at `at` (the caller checked the length).
pub fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
/// Little-endian u32 at `at` (the caller checked the length).
pub fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
/// Little-endian u64 at `at` (the caller checked the length).
pub fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

impl SegmentHeader {
    /// Encode to the on-disk bytes.
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut b = [0u8; SEGMENT_HEADER_LEN];
        b[0..8].copy_from_slice(&SEGMENT_MAGIC);
        b[8..12].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&(SEGMENT_HEADER_LEN as u32).to_le_bytes());
        b[16..32].copy_from_slice(&self.database_id.to_le_bytes());
        b[32..40].copy_from_slice(&self.timeline.to_le_bytes());
        b[40..48].copy_from_slice(&self.first_lsn.to_le_bytes());
        b[48..56].copy_from_slice(&self.created_us.to_le_bytes());
        let crc = crc32fast::hash(&b[0..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decode and validate.
    pub fn decode(b: &[u8]) -> Result<SegmentHeader, HeaderProblem> {
        if b.len() < SEGMENT_HEADER_LEN {
            return Err(HeaderProblem::Short);
        }
        if b[0..8] != SEGMENT_MAGIC {
            return Err(HeaderProblem::BadMagic);
        }
        if crc32fast::hash(&b[0..60]) != u32_at(b, 60) {
            return Err(HeaderProblem::BadChecksum);
        }
        let version = u32_at(b, 8);
        if version != SEGMENT_VERSION || u32_at(b, 12) as usize != SEGMENT_HEADER_LEN {
            return Err(HeaderProblem::UnsupportedVersion(version));
        }
        let first_lsn = u64_at(b, 40);
        if first_lsn == 0 || first_lsn > MAX_FIRST_LSN {
            return Err(HeaderProblem::BadFirstLsn(first_lsn));
        }
        let mut id = [0u8; 16];
        id.copy_from_slice(&b[16..32]);
        Ok(SegmentHeader {
            database_id: u128::from_le_bytes(id),
            timeline: u64_at(b, 32),
            first_lsn,
            created_us: u64_at(b, 48),
        })
    }
}

/// The decoded header of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    /// Payload length in bytes.
    pub len: u32,
    /// Caller-defined record kind (opaque to the log).
    pub kind: u16,
    /// Log sequence number.
    pub lsn: Lsn,
    /// Commit timestamp, microseconds since the Unix epoch.
    pub timestamp_us: u64,
    /// The log's durable LSN when this record was written: every record up to it had been
    /// synced before this one reached the file. Recovery uses it to tell a torn, never-synced
    /// tail from corruption of synced data.
    pub synced_hint: Lsn,
    /// CRC32 stored in the header.
    pub crc: u32,
}

/// The CRC32 of a record's payload alone, computed before the record's header is known (see
/// [`RecordHeader::encode_with`]).
#[derive(Clone)]
pub struct PayloadCrc {
    crc: crc32fast::Hasher,
    len: u32,
}

impl PayloadCrc {
    /// Hash `payload`, which must be at most [`MAX_PAYLOAD`] bytes long (the length is stored
    /// in 32 bits).
    pub fn of(payload: &[u8]) -> PayloadCrc {
        let mut crc = crc32fast::Hasher::new();
        crc.update(payload);
        PayloadCrc {
            crc,
            len: payload.len() as u32,
        }
    }
}

impl std::fmt::Debug for PayloadCrc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PayloadCrc")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl RecordHeader {
    /// Encode a header for `payload` (computes the CRC).
    pub fn encode(
        lsn: Lsn,
        timestamp_us: u64,
        synced_hint: Lsn,
        kind: u16,
        payload: &[u8],
    ) -> [u8; RECORD_HEADER_LEN] {
        Self::encode_with(
            lsn,
            timestamp_us,
            synced_hint,
            kind,
            &PayloadCrc::of(payload),
        )
    }

    /// Encode a header for a payload whose CRC was computed beforehand ([`PayloadCrc::of`]):
    /// the costly part of encoding a big record needs no lock, only the fields known once its
    /// LSN is assigned are hashed here, and the two are combined (cheap, logarithmic in the
    /// payload's length). Gives the same bytes as [`RecordHeader::encode`].
    pub fn encode_with(
        lsn: Lsn,
        timestamp_us: u64,
        synced_hint: Lsn,
        kind: u16,
        payload: &PayloadCrc,
    ) -> [u8; RECORD_HEADER_LEN] {
        let mut b = [0u8; RECORD_HEADER_LEN];
        b[0..4].copy_from_slice(&RECORD_MAGIC);
        b[8..12].copy_from_slice(&payload.len.to_le_bytes());
        b[12..14].copy_from_slice(&kind.to_le_bytes());
        // 14..16: flags, zero in version 1.
        b[16..24].copy_from_slice(&lsn.to_le_bytes());
        b[24..32].copy_from_slice(&timestamp_us.to_le_bytes());
        b[32..40].copy_from_slice(&synced_hint.to_le_bytes());
        let mut h = crc32fast::Hasher::new();
        h.update(&b[8..RECORD_HEADER_LEN]);
        h.combine(&payload.crc);
        b[4..8].copy_from_slice(&h.finalize().to_le_bytes());
        b
    }

    /// Decode a header without checking its CRC (that needs the payload). Returns None when the
    /// bytes cannot be a record header (short, wrong magic, non-zero flags, absurd length).
    pub fn decode(b: &[u8]) -> Option<RecordHeader> {
        if b.len() < RECORD_HEADER_LEN || b[0..4] != RECORD_MAGIC || u16_at(b, 14) != 0 {
            return None;
        }
        let len = u32_at(b, 8);
        if len as usize > MAX_PAYLOAD {
            return None;
        }
        Some(RecordHeader {
            len,
            kind: u16_at(b, 12),
            lsn: u64_at(b, 16),
            timestamp_us: u64_at(b, 24),
            synced_hint: u64_at(b, 32),
            crc: u32_at(b, 4),
        })
    }

    /// Whether `payload` matches this header's CRC. `header_bytes` are the raw header bytes.
    pub fn check(header_bytes: &[u8], payload: &[u8]) -> bool {
        if header_bytes.len() < RECORD_HEADER_LEN {
            return false;
        }
        let mut h = crc32fast::Hasher::new();
        h.update(&header_bytes[8..RECORD_HEADER_LEN]);
        h.update(payload);
        h.finalize() == u32_at(header_bytes, 4)
    }

    /// Total bytes the record occupies in a segment.
    pub fn total_len(&self) -> u64 {
        RECORD_HEADER_LEN as u64 + self.len as u64
    }
}

/// File name of the segment whose first record is `first_lsn`: zero-padded so names sort by LSN.
pub fn segment_file_name(first_lsn: Lsn) -> String {
    format!("{first_lsn:020}.seg")
}

/// The first LSN encoded in a segment file name, if it is one.
pub fn parse_segment_file_name(name: &str) -> Option<Lsn> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_header_round_trips_and_detects_damage() {
        let h = SegmentHeader {
            database_id: 0x1234_5678_9abc_def0_0fed_cba9_8765_4321,
            timeline: 7,
            first_lsn: 42,
            created_us: 1_700_000_000_000_000,
        };
        let b = h.encode();
        assert_eq!(SegmentHeader::decode(&b), Ok(h));
        for i in 0..SEGMENT_HEADER_LEN {
            let mut d = b;
            d[i] ^= 0x40;
            assert!(
                SegmentHeader::decode(&d).is_err(),
                "flip at byte {i} undetected"
            );
        }
        assert_eq!(SegmentHeader::decode(&b[..10]), Err(HeaderProblem::Short));
        for first_lsn in [0, MAX_FIRST_LSN + 1, u64::MAX] {
            let bad = SegmentHeader { first_lsn, ..h }.encode();
            assert_eq!(
                SegmentHeader::decode(&bad),
                Err(HeaderProblem::BadFirstLsn(first_lsn))
            );
        }
        let top = SegmentHeader {
            first_lsn: MAX_FIRST_LSN,
            ..h
        };
        assert_eq!(SegmentHeader::decode(&top.encode()), Ok(top));
    }

    #[test]
    fn record_header_round_trips_and_crc_covers_everything_but_magic() {
        let payload = b"some payload bytes";
        let b = RecordHeader::encode(9, 123, 8, 2, payload);
        let h = RecordHeader::decode(&b).unwrap();
        assert_eq!(
            (h.len, h.lsn, h.timestamp_us, h.synced_hint, h.kind),
            (18, 9, 123, 8, 2)
        );
        assert!(RecordHeader::check(&b, payload));
        assert!(!RecordHeader::check(&b, b"some payload bytez"));
        for i in 8..RECORD_HEADER_LEN {
            let mut d = b;
            d[i] ^= 1;
            let ok = RecordHeader::decode(&d).is_some_and(|_| RecordHeader::check(&d, payload));
            assert!(!ok, "flip at header byte {i} undetected");
        }
    }

    #[test]
    fn a_header_from_a_precomputed_payload_crc_is_the_same() {
        for len in [0usize, 1, 7, 40, 4096, 65_537, 1 << 20] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 31 + len) as u8).collect();
            let whole = RecordHeader::encode(77, 5, 76, 3, &payload);
            let split = RecordHeader::encode_with(77, 5, 76, 3, &PayloadCrc::of(&payload));
            assert_eq!(whole, split, "payload of {len} bytes");
            assert!(RecordHeader::check(&split, &payload));
        }
    }

    #[test]
    fn segment_names_sort_by_lsn() {
        assert_eq!(segment_file_name(5), "00000000000000000005.seg");
        assert_eq!(
            parse_segment_file_name(&segment_file_name(u64::MAX)),
            Some(u64::MAX)
        );
        assert_eq!(parse_segment_file_name("5.seg"), None);
        assert_eq!(parse_segment_file_name("0000000000000000000x.seg"), None);
        assert!(segment_file_name(9) < segment_file_name(10));
    }
}
