//! In-memory bookkeeping of committed blobs: size, media type, recency. Pure data, no I/O; the
//! store holds it under a mutex only for these constant-time updates.

use lru::LruCache;

use stampede_oci::Digest;

/// What the index knows about one committed blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Size on disk, in bytes.
    pub size_bytes: u64,
    /// Media type for manifests (served as `Content-Type`); `None` for plain blobs.
    pub media_type: Option<String>,
}

/// Committed blobs in least-recently-used order.
#[derive(Debug)]
pub struct Index {
    entries: LruCache<Digest, Entry>,
    total_bytes: u64,
}

impl Default for Index {
    fn default() -> Self {
        Self {
            entries: LruCache::unbounded(),
            total_bytes: 0,
        }
    }
}

impl Index {
    /// Records a committed blob (replacing any previous entry) as most recently used.
    pub fn insert(&mut self, digest: Digest, entry: Entry) {
        self.total_bytes += entry.size_bytes;
        if let Some(old) = self.entries.put(digest, entry) {
            self.total_bytes -= old.size_bytes;
        }
    }

    /// Looks a blob up and marks it most recently used.
    pub fn touch(&mut self, digest: &Digest) -> Option<Entry> {
        self.entries.get(digest).cloned()
    }

    /// Looks a blob up without changing its recency.
    pub fn peek(&self, digest: &Digest) -> Option<&Entry> {
        self.entries.peek(digest)
    }

    /// Forgets a blob; returns its entry if it was known.
    pub fn remove(&mut self, digest: &Digest) -> Option<Entry> {
        let old = self.entries.pop(digest)?;
        self.total_bytes -= old.size_bytes;
        Some(old)
    }

    /// Bytes of all committed blobs.
    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// Number of committed blobs.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no blob is committed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(size_bytes: u64) -> Entry {
        Entry {
            size_bytes,
            media_type: None,
        }
    }

    #[test]
    fn totals_follow_inserts_replacements_and_removals() {
        let mut i = Index::default();
        let (a, b) = (Digest::of(b"a"), Digest::of(b"b"));
        i.insert(a.clone(), e(10));
        i.insert(b.clone(), e(5));
        assert_eq!((i.total_bytes(), i.len()), (15, 2));
        i.insert(a.clone(), e(7));
        assert_eq!((i.total_bytes(), i.len()), (12, 2));
        assert_eq!(i.remove(&b), Some(e(5)));
        assert_eq!(i.remove(&b), None);
        assert_eq!((i.total_bytes(), i.len()), (7, 1));
        assert_eq!(i.touch(&a), Some(e(7)));
        assert!(i.peek(&b).is_none());
    }
}
