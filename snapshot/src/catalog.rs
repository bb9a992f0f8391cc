//! What a store holds, from a listing: per timeline, its claim, its log batches and its
//! complete snapshots, and the LSN range they make restorable. Only the last batch of a
//! timeline is read (its header, by a ranged GET) to learn where the history ends.

use std::collections::BTreeMap;

use pagelog_log::Lsn;

use crate::error::{Result, SnapshotError};
use crate::fetch::get_decoded;
use crate::format::{
    BATCH_HEADER_LEN, BatchHeader, KeyKind, Manifest, TimelineInfo, parse_key, timeline_dir,
    timeline_key,
};
use crate::store::{ObjectMeta, ObjectStore};

/// A log batch as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchEntry {
    /// Key.
    pub key: String,
    /// First LSN (from the key).
    pub first_lsn: Lsn,
    /// Stored size.
    pub size: u64,
}

/// A snapshot as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotEntry {
    /// Snapshot LSN.
    pub lsn: Lsn,
    /// Manifest key (`None`: parts without a manifest — an interrupted upload, not usable).
    pub manifest_key: Option<String>,
    /// Part objects listed.
    pub parts: Vec<ObjectMeta>,
    /// Stored bytes (parts and manifest).
    pub size: u64,
}

impl SnapshotEntry {
    /// Whether the manifest exists (the snapshot is usable).
    pub fn is_complete(&self) -> bool {
        self.manifest_key.is_some()
    }
}

/// One timeline's objects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TimelineCatalog {
    /// Timeline number.
    pub timeline: u64,
    /// Whether the claim object exists.
    pub claimed: bool,
    /// Log batches by first LSN.
    pub batches: Vec<BatchEntry>,
    /// Snapshots by LSN (complete or not).
    pub snapshots: Vec<SnapshotEntry>,
    /// Stored bytes of everything listed under the timeline.
    pub bytes: u64,
}

impl TimelineCatalog {
    /// Complete snapshots.
    pub fn complete_snapshots(&self) -> impl Iterator<Item = &SnapshotEntry> {
        self.snapshots.iter().filter(|s| s.is_complete())
    }

    /// The newest complete snapshot at or before `lsn`.
    pub fn snapshot_at_or_before(&self, lsn: Lsn) -> Option<&SnapshotEntry> {
        self.complete_snapshots().filter(|s| s.lsn <= lsn).last()
    }

    /// Index of the batch that holds `lsn` if batches are contiguous (the last batch whose
    /// first LSN is at or before it).
    pub fn batch_index_for(&self, lsn: Lsn) -> Option<usize> {
        let i = self.batches.partition_point(|b| b.first_lsn <= lsn);
        i.checked_sub(1)
    }

    /// Read the claim object.
    pub fn read_claim(&self, store: &dyn ObjectStore) -> Result<Option<TimelineInfo>> {
        if !self.claimed {
            return Ok(None);
        }
        let key = timeline_key(self.timeline);
        get_decoded(&key, || store.get(&key), |b| TimelineInfo::decode(&key, &b)).map(Some)
    }

    /// Read the header of batch `index`.
    pub fn batch_header(&self, store: &dyn ObjectStore, index: usize) -> Result<BatchHeader> {
        let b = &self.batches[index];
        let h = get_decoded(
            &b.key,
            || store.get_range(&b.key, 0..BATCH_HEADER_LEN as u64),
            |bytes| BatchHeader::decode(&b.key, &bytes),
        )?;
        if h.first_lsn != b.first_lsn || h.timeline != self.timeline {
            return Err(SnapshotError::Corrupt {
                key: b.key.clone(),
                reason: format!(
                    "header says timeline {} LSN {}, the key says timeline {} LSN {}",
                    h.timeline, h.first_lsn, self.timeline, b.first_lsn
                ),
            });
        }
        Ok(h)
    }

    /// Read a snapshot's manifest.
    pub fn manifest(&self, store: &dyn ObjectStore, snap: &SnapshotEntry) -> Result<Manifest> {
        let key = snap
            .manifest_key
            .as_deref()
            .ok_or_else(|| SnapshotError::Corrupt {
                key: format!("{}snap/{:020}", timeline_dir(self.timeline), snap.lsn),
                reason: "snapshot has no manifest".into(),
            })?;
        let m = get_decoded(key, || store.get(key), |b| Manifest::decode(key, &b))?;
        if m.lsn != snap.lsn || m.timeline != self.timeline {
            return Err(SnapshotError::Corrupt {
                key: key.to_string(),
                reason: format!("manifest says timeline {} LSN {}", m.timeline, m.lsn),
            });
        }
        Ok(m)
    }

    /// The last LSN the timeline holds (end of its last batch or its newest snapshot), with
    /// the last batch's header if there is one. One ranged GET.
    pub fn last_lsn(&self, store: &dyn ObjectStore) -> Result<(Lsn, Option<BatchHeader>)> {
        let header = match self.batches.len() {
            0 => None,
            n => Some(self.batch_header(store, n - 1)?),
        };
        let from_batches = header.map(|h| h.last_lsn).unwrap_or(0);
        let from_snaps = self.complete_snapshots().map(|s| s.lsn).max().unwrap_or(0);
        Ok((from_batches.max(from_snaps), header))
    }
}

/// Everything a store holds, by timeline.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    /// The store's description.
    pub store: String,
    /// Timelines by number.
    pub timelines: BTreeMap<u64, TimelineCatalog>,
    /// Objects under the prefix that are not pagelog's (ignored).
    pub foreign: Vec<String>,
}

impl Catalog {
    /// List the whole store.
    pub fn load(store: &dyn ObjectStore) -> Result<Catalog> {
        let listing = store.list("")?;
        Ok(Catalog::from_listing(store.describe(), listing))
    }

    /// List one timeline.
    pub fn load_timeline(store: &dyn ObjectStore, timeline: u64) -> Result<TimelineCatalog> {
        let listing = store.list(&format!("{}/", timeline_dir(timeline)))?;
        let mut c = Catalog::from_listing(store.describe(), listing);
        Ok(c.timelines.remove(&timeline).unwrap_or(TimelineCatalog {
            timeline,
            ..TimelineCatalog::default()
        }))
    }

    /// Build from a listing (sorted by key).
    pub fn from_listing(store: String, listing: Vec<ObjectMeta>) -> Catalog {
        let mut cat = Catalog {
            store,
            ..Catalog::default()
        };
        for meta in listing {
            let Some(kind) = parse_key(&meta.key) else {
                cat.foreign.push(meta.key);
                continue;
            };
            let tl = match kind {
                KeyKind::Timeline { timeline }
                | KeyKind::Batch { timeline, .. }
                | KeyKind::Manifest { timeline, .. }
                | KeyKind::Part { timeline, .. } => timeline,
            };
            let t = cat.timelines.entry(tl).or_insert_with(|| TimelineCatalog {
                timeline: tl,
                ..TimelineCatalog::default()
            });
            t.bytes += meta.size;
            match kind {
                KeyKind::Timeline { .. } => t.claimed = true,
                KeyKind::Batch { first_lsn, .. } => t.batches.push(BatchEntry {
                    key: meta.key,
                    first_lsn,
                    size: meta.size,
                }),
                KeyKind::Manifest { lsn, .. } | KeyKind::Part { lsn, .. } => {
                    let pos = match t.snapshots.binary_search_by_key(&lsn, |s| s.lsn) {
                        Ok(i) => i,
                        Err(i) => {
                            t.snapshots.insert(
                                i,
                                SnapshotEntry {
                                    lsn,
                                    manifest_key: None,
                                    parts: Vec::new(),
                                    size: 0,
                                },
                            );
                            i
                        }
                    };
                    let s = &mut t.snapshots[pos];
                    s.size += meta.size;
                    if matches!(kind, KeyKind::Manifest { .. }) {
                        s.manifest_key = Some(meta.key);
                    } else {
                        s.parts.push(meta);
                    }
                }
            }
        }
        for t in cat.timelines.values_mut() {
            t.batches.sort_by_key(|b| b.first_lsn);
        }
        cat
    }

    /// The newest timeline with history of its own: a log batch, or a complete snapshot at or
    /// past the timeline's first LSN. A branch that holds nothing but its base snapshot (the
    /// state it was restored from, at its parent LSN, uploaded by `restore --new-timeline`) is
    /// not the latest history yet: its parent may still be moving on. It becomes the latest
    /// when its database first ships (its first batch holds the restore's marker record, so
    /// opening it with a store is enough). Reads the claim of a timeline only when that
    /// timeline has snapshots and no batch.
    pub fn latest_timeline(&self, store: &dyn ObjectStore) -> Result<Option<&TimelineCatalog>> {
        for t in self.timelines.values().rev() {
            if !t.batches.is_empty() {
                return Ok(Some(t));
            }
            let Some(newest) = t.complete_snapshots().map(|s| s.lsn).max() else {
                continue;
            };
            match t.read_claim(store)? {
                Some(c) if c.parent_timeline != 0 && newest < c.first_lsn => continue,
                _ => return Ok(Some(t)),
            }
        }
        Ok(None)
    }

    /// The highest timeline number in use (claimed or not).
    pub fn max_timeline(&self) -> u64 {
        self.timelines.keys().next_back().copied().unwrap_or(0)
    }

    /// Total stored bytes.
    pub fn bytes(&self) -> u64 {
        self.timelines.values().map(|t| t.bytes).sum()
    }
}
