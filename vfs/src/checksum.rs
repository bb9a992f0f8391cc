//! The whole-database checksum: the XOR of a 64-bit hash of every page (page number as seed),
//! pages 1..=size, a missing page hashing as zeros. XOR makes it incremental: a commit XORs out
//! the old hash of each page it writes and XORs in the new one.

/// Hash of one page.
pub fn page_hash(pgno: u32, page: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(page, pgno as u64)
}

/// Per-page hashes and the running checksum of a database.
#[derive(Debug, Clone, Default)]
pub struct PageHashes {
    page_size: u32,
    hashes: Vec<u64>,
    checksum: u64,
}

impl PageHashes {
    /// An empty database with pages of `page_size` bytes.
    pub fn new(page_size: u32) -> PageHashes {
        PageHashes {
            page_size,
            hashes: Vec::new(),
            checksum: 0,
        }
    }

    /// Database size in pages.
    pub fn pages(&self) -> u32 {
        self.hashes.len() as u32
    }

    /// The current whole-database checksum.
    pub fn checksum(&self) -> u64 {
        self.checksum
    }

    /// Page size.
    pub fn page_size(&self) -> u32 {
        self.page_size
    }

    /// Change the database size; new pages count as zeros until set.
    pub fn resize(&mut self, pages: u32) {
        let pages = pages as usize;
        while self.hashes.len() > pages {
            if let Some(h) = self.hashes.pop() {
                self.checksum ^= h;
            }
        }
        if self.hashes.len() < pages {
            let zeros = vec![0u8; self.page_size as usize];
            while self.hashes.len() < pages {
                let h = page_hash(self.hashes.len() as u32 + 1, &zeros);
                self.checksum ^= h;
                self.hashes.push(h);
            }
        }
    }

    /// Set page `pgno` (1-based, within the size) to `page`.
    pub fn set(&mut self, pgno: u32, page: &[u8]) {
        let i = pgno as usize - 1;
        let h = page_hash(pgno, page);
        self.checksum ^= self.hashes[i] ^ h;
        self.hashes[i] = h;
    }
}

/// Hash every whole page of a file (a trailing partial page is ignored), reading about 1 MiB
/// at a time.
pub fn hash_file(
    file: &dyn pagelog_log::fs::FsFile,
    page_size: u32,
) -> std::io::Result<PageHashes> {
    let len = file.len()?;
    let pages = (len / page_size as u64) as u32;
    let mut hashes = PageHashes::new(page_size);
    hashes.resize(pages);
    let per_chunk = ((1u32 << 20) / page_size).max(1);
    let mut buf = vec![0u8; (per_chunk * page_size) as usize];
    let mut pgno = 1u32;
    while pgno <= pages {
        let n = per_chunk.min(pages - pgno + 1);
        let chunk = &mut buf[..(n * page_size) as usize];
        file.read_exact_at(chunk, (pgno as u64 - 1) * page_size as u64)?;
        for (i, page) in chunk.chunks_exact(page_size as usize).enumerate() {
            hashes.set(pgno + i as u32, page);
        }
        pgno += n;
    }
    Ok(hashes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incremental_equals_from_scratch() {
        let mut inc = PageHashes::new(512);
        inc.resize(3);
        inc.set(1, &[1; 512]);
        inc.set(3, &[3; 512]);
        inc.resize(5);
        inc.set(5, &[5; 512]);
        inc.resize(4); // shrink drops page 5
        inc.set(2, &[2; 512]);
        let mut scratch = PageHashes::new(512);
        scratch.resize(4);
        for (p, b) in [(1u32, 1u8), (2, 2), (3, 3)] {
            scratch.set(p, &[b; 512]);
        }
        assert_eq!(inc.checksum(), scratch.checksum());
        assert_ne!(inc.checksum(), 0);
        scratch.set(4, &[9; 512]);
        assert_ne!(inc.checksum(), scratch.checksum());
    }
}
