//! In-memory bookkeeping of committed blobs: size, media type, when committed, when last used,
//! which repositories and tags they were seen under, and which are pinned. Pure data, no I/O;
//! the store holds it under a mutex only for these updates.
//!
//! Eviction is bookkeeping too: [`Index::evict`] picks least-recently-used, unpinned, old-enough
//! blobs until usage falls to a target, forgets them, and returns them; the caller deletes the
//! files after releasing the lock.

use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, SystemTime};

use lru::LruCache;

use stampede_oci::Digest;

/// What the index knows about one committed blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Size on disk, in bytes.
    pub size_bytes: u64,
    /// Media type for manifests (served as `Content-Type`); `None` for plain blobs.
    pub media_type: Option<String>,
    /// When it was committed.
    pub committed: SystemTime,
    /// When a client last asked for it.
    pub last_access: SystemTime,
    /// `registry/repository` names it was requested under.
    pub repos: BTreeSet<String>,
    /// `registry/repository:tag` names that resolved to it (manifests).
    pub tags: BTreeSet<String>,
    /// Where its bytes came from (cluster mode; see `BlobMeta::source`).
    pub source: Option<String>,
}

/// What a lookup that serves a blob needs from its entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    /// Size on disk, in bytes.
    pub size_bytes: u64,
    /// Media type for manifests; `None` for plain blobs.
    pub media_type: Option<String>,
}

impl Entry {
    /// A blob committed at `now`.
    pub fn new(size_bytes: u64, media_type: Option<String>, now: SystemTime) -> Self {
        Self {
            size_bytes,
            media_type,
            committed: now,
            last_access: now,
            repos: BTreeSet::new(),
            tags: BTreeSet::new(),
            source: None,
        }
    }
}

/// A blob chosen for eviction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Victim {
    /// The blob.
    pub digest: Digest,
    /// Its size.
    pub size_bytes: u64,
}

/// Committed blobs in least-recently-used order, and the pinned set.
#[derive(Debug)]
pub struct Index {
    entries: LruCache<Digest, Entry>,
    total_bytes: u64,
    pinned: HashSet<Digest>,
    dirty: bool,
}

impl Default for Index {
    fn default() -> Self {
        Self {
            entries: LruCache::unbounded(),
            total_bytes: 0,
            pinned: HashSet::new(),
            dirty: false,
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
        self.dirty = true;
    }

    /// Records an entry loaded from disk at its place in recency order: callers insert in
    /// order of last access, oldest first.
    pub fn restore(&mut self, digest: Digest, entry: Entry) {
        self.insert(digest, entry);
        self.dirty = false;
    }

    /// Looks a blob up, marks it most recently used at `now`, and notes the repository it was
    /// asked for under (if any). Returns only what serving needs: this runs on every hit,
    /// under the index lock, and an entry's repository and tag sets can be large.
    pub fn touch(&mut self, digest: &Digest, now: SystemTime, repo: Option<&str>) -> Option<Hit> {
        let e = self.entries.get_mut(digest)?;
        e.last_access = now;
        if let Some(r) = repo {
            if !e.repos.contains(r) {
                e.repos.insert(r.to_owned());
            }
        }
        self.dirty = true;
        Some(Hit {
            size_bytes: e.size_bytes,
            media_type: e.media_type.clone(),
        })
    }

    /// Notes that `tag` resolved to `digest`.
    pub fn note_tag(&mut self, digest: &Digest, tag: &str) {
        if let Some(e) = self.entries.peek_mut(digest) {
            if !e.tags.contains(tag) {
                e.tags.insert(tag.to_owned());
                self.dirty = true;
            }
        }
    }

    /// Looks a blob up without changing its recency.
    pub fn peek(&self, digest: &Digest) -> Option<&Entry> {
        self.entries.peek(digest)
    }

    /// Forgets a blob; returns its entry if it was known.
    pub fn remove(&mut self, digest: &Digest) -> Option<Entry> {
        let old = self.entries.pop(digest)?;
        self.total_bytes -= old.size_bytes;
        self.dirty = true;
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

    /// Replaces the pinned set.
    pub fn set_pinned(&mut self, pinned: HashSet<Digest>) {
        self.pinned = pinned;
    }

    /// Whether `digest` is pinned.
    pub fn is_pinned(&self, digest: &Digest) -> bool {
        self.pinned.contains(digest)
    }

    /// Bytes of committed blobs that are pinned.
    pub fn pinned_bytes(&self) -> u64 {
        self.pinned
            .iter()
            .filter_map(|d| self.entries.peek(d))
            .map(|e| e.size_bytes)
            .sum()
    }

    /// Every entry, least recently used first.
    pub fn iter_lru(&self) -> impl Iterator<Item = (&Digest, &Entry)> {
        self.entries.iter().rev()
    }

    /// Whether anything changed since the last [`Index::clear_dirty`].
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Marks the current state as saved.
    pub fn clear_dirty(&mut self) {
        self.dirty = false;
    }

    /// Chooses blobs to evict, least recently used first, skipping pinned blobs and blobs
    /// committed less than `min_age` before `now`, until usage is at most `target_bytes`.
    /// With `apply`, the victims are forgotten (the caller deletes their files); without, this
    /// is a dry run.
    pub fn evict(
        &mut self,
        target_bytes: u64,
        min_age: Duration,
        now: SystemTime,
        apply: bool,
    ) -> Vec<Victim> {
        let mut victims = Vec::new();
        let mut remaining = self.total_bytes;
        for (digest, entry) in self.iter_lru() {
            if remaining <= target_bytes {
                break;
            }
            let young = now
                .duration_since(entry.committed)
                .unwrap_or(Duration::ZERO)
                < min_age;
            if self.pinned.contains(digest) || young {
                continue;
            }
            remaining -= entry.size_bytes;
            victims.push(Victim {
                digest: digest.clone(),
                size_bytes: entry.size_bytes,
            });
        }
        if apply {
            for v in &victims {
                self.remove(&v.digest);
            }
        }
        victims
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn e(size_bytes: u64) -> Entry {
        Entry::new(size_bytes, None, t(0))
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
        assert_eq!(
            i.touch(&a, t(0), None),
            Some(Hit {
                size_bytes: 7,
                media_type: e(7).media_type
            })
        );
        assert!(i.peek(&b).is_none());
    }

    #[test]
    fn eviction_takes_least_recently_used_unpinned_old_blobs() {
        // (name, size, committed at) in insertion order; then accesses reorder them.
        let d: Vec<Digest> = (0..5u8).map(|i| Digest::of(&[i])).collect();
        let build = || {
            let mut i = Index::default();
            for (k, digest) in d.iter().enumerate() {
                i.insert(digest.clone(), Entry::new(10, None, t(k as u64 * 100)));
            }
            // Recency, oldest first: 1, 3, 4, 0, 2.
            i.touch(&d[0], t(1000), None);
            i.touch(&d[2], t(1001), None);
            i
        };
        // (target bytes, min age, pinned, expected victims)
        let cases: Vec<(u64, u64, Vec<usize>, Vec<usize>)> = vec![
            (50, 0, vec![], vec![]),
            (30, 0, vec![], vec![1, 3]),
            (30, 0, vec![1], vec![3, 4]),
            (0, 0, vec![1, 2], vec![3, 4, 0]),
            // At now = 450, blobs committed after 250 (3 and 4) are younger than 200 s.
            (20, 200, vec![], vec![1, 0, 2]),
        ];
        for (target, min_age, pinned, want) in cases {
            let mut i = build();
            i.set_pinned(pinned.iter().map(|&k| d[k].clone()).collect());
            let dry = i.evict(target, Duration::from_secs(min_age), t(450), false);
            let got: Vec<usize> = dry
                .iter()
                .map(|v| d.iter().position(|x| *x == v.digest).unwrap())
                .collect();
            assert_eq!(
                got, want,
                "target {target}, min age {min_age}, pinned {pinned:?}"
            );
            assert_eq!(i.len(), 5, "dry run changes nothing");
            let applied = i.evict(target, Duration::from_secs(min_age), t(450), true);
            assert_eq!(applied, dry);
            assert_eq!(i.total_bytes(), 50 - 10 * want.len() as u64);
        }
    }

    #[test]
    fn touch_records_repositories_and_tags() {
        let mut i = Index::default();
        let a = Digest::of(b"a");
        i.insert(a.clone(), e(1));
        i.touch(&a, t(5), Some("docker.io/library/alpine"));
        i.note_tag(&a, "docker.io/library/alpine:3.20");
        let entry = i.peek(&a).unwrap();
        assert_eq!(entry.last_access, t(5));
        assert!(entry.repos.contains("docker.io/library/alpine"));
        assert!(entry.tags.contains("docker.io/library/alpine:3.20"));
        i.set_pinned([a.clone()].into());
        assert_eq!(i.pinned_bytes(), 1);
    }
}
