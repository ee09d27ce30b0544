//! The content-addressed blob store on disk: one file per sha256 digest, shared by every
//! repository and registry. Fills write a temp file; [`BlobStore::commit`] makes it visible only
//! after the caller has verified its digest, by fsync + atomic rename (+ fsync of the directory),
//! so a committed file is always complete and correct. At start, temp files left by a crash are
//! removed and the index is rebuilt from what is on disk, with recency and pins from `state/`.
//!
//! The store keeps a byte budget: [`BlobStore::evict`] removes least-recently-used, unpinned,
//! old-enough blobs down to the low watermark. Eviction unlinks files; a client streaming a victim
//! keeps reading its open file, so eviction never waits for readers and never cuts one.
//!
//! One process owns a store at a time: `open` takes an exclusive lock on `<root>/lock`.
//!
//! The store does not fetch anything (`fill.rs` does) and does not verify digests when
//! committing (the fill does, as bytes stream past); [`BlobStore::verify`] rehashes on demand.
//!
//! A write that fails because the disk is full marks the store full ([`health`]); the handler
//! then streams misses from upstream without storing them until there is room again.
//! With `verify_on_read`, the handler rehashes committed blobs as it serves them and
//! [`BlobStore::quarantine`]s one that no longer matches.
//!
//! # Layout
//! - `health`: full or not, write errors counted.
//! - `identity`: the store's id and canonical root, reported to operator tools.
//! - `layout`: paths.
//! - `index`: in-memory bookkeeping (size, media type, recency, pins) and victim choice.
//! - `page_cache`: opens and reads that succeed only without waiting on the disk.
//! - `read_checks`: `verify_on_read` rechecks shared between requests, results remembered.
//! - `state`: recency, repositories, tags and pins saved across restarts.

pub mod health;
pub mod identity;
pub mod index;
pub mod layout;
pub mod page_cache;
pub mod read_checks;
pub mod state;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use stampede_oci::{Digest, Verifier};

use crate::config::{Budget, StoreConfig};
use health::{Health, WriteFailure};
use index::{Entry, Index, Victim};
use layout::Layout;
use read_checks::ReadChecks;
use state::{from_unix_secs, unix_secs, BlobState, Pin};

/// Sidecar metadata of a committed blob.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BlobMeta {
    /// Media type as the upstream declared it (manifests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// Where a cluster node's fill took the bytes from (`local`, `peer`, `registry`, or a
    /// `+`-joined mix); `None` outside cluster mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// A committed blob opened for reading. The file stays readable even if the blob is evicted
/// (unlinked) while this is held.
#[derive(Debug, Clone)]
pub struct OpenBlob {
    /// The open file.
    pub file: Arc<File>,
    /// Its size in bytes.
    pub size_bytes: u64,
    /// Media type, for manifests.
    pub media_type: Option<String>,
}

/// A fill's temp file, not yet committed.
#[derive(Debug)]
pub struct TempBlob {
    /// Where it is.
    pub path: PathBuf,
    /// Opened read-write; readers of the fill share it and read with `pread`.
    pub file: Arc<File>,
}

/// What `open` found on disk.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Recovery {
    /// Committed blobs indexed.
    pub blobs: usize,
    /// Their bytes.
    pub bytes: u64,
    /// Temp files of interrupted fills removed.
    pub temp_files_removed: usize,
    /// Files under `blobs/` that are not named by a digest, left alone and not served.
    pub strays: usize,
    /// Pins loaded.
    pub pins: usize,
}

/// One line of the inventory.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InventoryItem {
    /// The blob.
    pub digest: Digest,
    /// Its size in bytes.
    pub size_bytes: u64,
    /// Media type, when known (manifests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// Repositories it was requested under.
    pub repos: BTreeSet<String>,
    /// Tags that resolved to it.
    pub tags: BTreeSet<String>,
    /// Last access, seconds since the Unix epoch.
    pub last_access: u64,
    /// Commit time, seconds since the Unix epoch.
    pub committed: u64,
    /// Whether a pin covers it.
    pub pinned: bool,
    /// Where its bytes came from, when a cluster node recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// What a `verify` pass found.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VerifyReport {
    /// Blobs rehashed.
    pub checked: usize,
    /// Bytes rehashed.
    pub bytes: u64,
    /// Blobs whose content did not match their digest, moved to `quarantine/`.
    pub quarantined: Vec<Digest>,
    /// Blobs that vanished or could not be read.
    pub unreadable: Vec<Digest>,
    /// Blobs quarantined before this pass (by an earlier `verify` or by `verify_on_read`) and
    /// still in `quarantine/`: not served, not counted in `checked`, listed so that a clean
    /// pass does not hide them.
    #[serde(default)]
    pub held_in_quarantine: Vec<Digest>,
}

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Another process holds the store.
    #[error("store {root} is in use by another process (lock {lock})")]
    Locked {
        /// The store root.
        root: PathBuf,
        /// The lock file.
        lock: PathBuf,
    },
    /// A directory or file could not be used.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// The blob store.
#[derive(Debug)]
pub struct BlobStore {
    layout: Layout,
    budget: Option<Budget>,
    /// A std `Mutex`: held only for index updates, never across `.await` or I/O.
    index: Mutex<Index>,
    /// Pins in the order they were made. Held only to read or replace the list; the pins file
    /// is written after the lock is released.
    pins: Mutex<Vec<Pin>>,
    /// Full or not; write errors.
    health: Health,
    /// Rehash committed blobs as they are served.
    verify_on_read: bool,
    /// `verify_on_read` rechecks running and files remembered as verified.
    read_checks: Arc<ReadChecks>,
    /// Which store this is (`identity.rs`).
    identity: identity::StoreIdentity,
    /// Exclusive lock on `<root>/lock`, held for the store's lifetime.
    _lock: File,
}

impl BlobStore {
    /// Opens (creating if needed) the store at `config.root`: locks it, removes temp files of
    /// interrupted fills, and rebuilds the index from committed blobs, recency and pins. Blocking;
    /// call before serving or from `spawn_blocking`.
    ///
    /// # Errors
    /// [`OpenError::Locked`] when another process has it; I/O errors otherwise.
    pub fn open(config: StoreConfig) -> Result<(Self, Recovery), OpenError> {
        let layout = Layout::new(config.root);
        let lock = lock_root(&layout)?;
        for dir in [
            layout.blobs_dir(),
            layout.meta_dir(),
            layout.tmp_dir(),
            layout.state_dir(),
        ] {
            std::fs::create_dir_all(&dir).map_err(|e| annotate(e, "create", &dir))?;
        }
        let identity = identity::ensure(&layout)
            .map_err(|e| annotate(e, "identify store", &layout.store_id_path()))?;
        let mut recovery = Recovery {
            temp_files_removed: remove_temp_files(&layout)?,
            ..Recovery::default()
        };
        probe_writable(&layout)?;
        let found = scan_blobs(&layout, &mut recovery)?;
        let mut index = restore_index(&layout, found, &mut recovery);
        let pins = state::load_pins(&layout.pins_path())?;
        recovery.pins = pins.len();
        index.set_pinned(pinned_set(&pins));
        Ok((
            Self {
                layout,
                budget: config.budget,
                index: Mutex::new(index),
                pins: Mutex::new(pins),
                health: Health::default(),
                verify_on_read: config.verify_on_read,
                read_checks: Arc::default(),
                identity,
                _lock: lock,
            },
            recovery,
        ))
    }

    fn index(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().expect("store index mutex poisoned")
    }

    /// Which store this is: its id and canonical root.
    pub fn identity(&self) -> &identity::StoreIdentity {
        &self.identity
    }

    /// Size and media type of a committed blob, marking it used now under `repo` (if given).
    pub fn lookup(&self, digest: &Digest, repo: Option<&str>) -> Option<index::Hit> {
        self.index().touch(digest, SystemTime::now(), repo)
    }

    /// Notes that `tag` (`registry/repo:tag`) resolved to manifest `digest`.
    pub fn note_tag(&self, digest: &Digest, tag: &str) {
        self.index().note_tag(digest, tag);
    }

    /// The most recently used committed manifest that `tag` (`registry/repo:tag`) resolved to.
    /// A scan: only for the outage path.
    pub fn find_tag(&self, tag: &str) -> Option<Digest> {
        let index = self.index();
        let found = index
            .iter_lru()
            .filter(|(_, e)| e.tags.contains(tag))
            .max_by_key(|(_, e)| e.last_access)
            .map(|(d, _)| d.clone());
        found
    }

    /// Every recorded tag (`registry/repo:tag`) and the most recently used committed manifest it
    /// resolved to. A scan: call once, at start.
    pub fn tags_held(&self) -> std::collections::HashMap<String, Digest> {
        let index = self.index();
        let mut held = std::collections::HashMap::new();
        // Least recently used first, so the most recent use of a tag wins.
        for (digest, entry) in index.iter_lru() {
            for tag in &entry.tags {
                held.insert(tag.clone(), digest.clone());
            }
        }
        held
    }

    /// Whether a committed blob was ever requested under `repo` (`registry/repository`); does
    /// not change recency.
    pub fn seen_under(&self, digest: &Digest, repo: &str) -> bool {
        self.index()
            .peek(digest)
            .is_some_and(|e| e.repos.contains(repo))
    }

    /// Whether a committed blob was ever requested under a repository of `registry`
    /// (`host[:port]`, the part of a `registry/repository` label before its first `/`); does
    /// not change recency.
    pub fn seen_from(&self, digest: &Digest, registry: &str) -> bool {
        self.index().peek(digest).is_some_and(|e| {
            e.repos
                .iter()
                .any(|r| r.split_once('/').is_some_and(|(reg, _)| reg == registry))
        })
    }

    /// Whether a blob is committed (does not change recency).
    pub fn contains(&self, digest: &Digest) -> bool {
        self.index().peek(digest).is_some()
    }

    /// Bytes and count of committed blobs.
    pub fn usage(&self) -> (u64, usize) {
        let index = self.index();
        (index.total_bytes(), index.len())
    }

    /// Bytes of committed blobs covered by pins.
    pub fn pinned_bytes(&self) -> u64 {
        self.index().pinned_bytes()
    }

    /// The byte budget, if any.
    pub fn budget(&self) -> Option<&Budget> {
        self.budget.as_ref()
    }

    /// Bytes of committed blobs.
    pub fn used_bytes(&self) -> u64 {
        self.index().total_bytes()
    }

    /// Whether usage is above the high watermark.
    pub fn over_budget(&self) -> bool {
        self.budget
            .as_ref()
            .is_some_and(|b| self.index().total_bytes() > b.high_bytes())
    }

    /// Opens a committed blob for reading, marking it used under `repo`; `None` on a miss. A
    /// blob that is indexed but gone from disk (evicted meanwhile, or removed by hand) is
    /// forgotten and reported as a miss. The open runs inline when the kernel can resolve the
    /// path from its caches, else on the blocking pool.
    ///
    /// # Errors
    /// The file exists but cannot be opened.
    pub async fn open_blob(
        self: &Arc<Self>,
        digest: &Digest,
        repo: Option<&str>,
    ) -> io::Result<Option<OpenBlob>> {
        let Some(entry) = self.lookup(digest, repo) else {
            return Ok(None);
        };
        let path = self.layout.blob_path(digest);
        // A hot blob's path is in the dentry cache: open it here, without a blocking-pool trip.
        let opened = match page_cache::open(&path) {
            Some(file) => Ok(file),
            None => tokio::task::spawn_blocking(move || {
                File::open(&path).map_err(|e| annotate(e, "open", &path))
            })
            .await
            .map_err(io::Error::other)?,
        };
        match opened {
            Ok(file) => Ok(Some(OpenBlob {
                file: Arc::new(file),
                size_bytes: entry.size_bytes,
                media_type: entry.media_type,
            })),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                tracing::warn!(%digest, "indexed blob is gone from disk; forgetting it");
                self.index().remove(digest);
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Creates a temp file for a fill of `digest`. Blocking.
    ///
    /// # Errors
    /// The temp file cannot be created.
    pub fn create_temp(&self, digest: &Digest) -> io::Result<TempBlob> {
        let path = self.layout.temp_path(digest);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| {
                self.health.create_failed(&e, self.layout.root());
                annotate(e, "create temp file", &path)
            })?;
        Ok(TempBlob {
            path,
            file: Arc::new(file),
        })
    }

    /// Makes a verified temp file the committed blob `digest`: fsync, write metadata, atomic
    /// rename, fsync of the directory, then index. The caller must have verified the digest.
    /// Blocking.
    ///
    /// # Errors
    /// Any step fails; the temp file is then removed and nothing is committed.
    pub fn commit(
        &self,
        digest: &Digest,
        temp: &TempBlob,
        size_bytes: u64,
        meta: &BlobMeta,
    ) -> io::Result<()> {
        let result = self.commit_inner(digest, temp, meta);
        if let Err(e) = &result {
            self.health
                .write_failed(e, self.layout.root(), allocated_bytes(&temp.file));
            std::fs::remove_file(&temp.path).ok();
            return result;
        }
        let mut entry = Entry::new(size_bytes, meta.media_type.clone(), SystemTime::now());
        entry.source = meta.source.clone();
        self.index().insert(digest.clone(), entry);
        // A manifest squeezed into the last free blocks is no sign of room for layers.
        if size_bytes >= health::RECOVER_FREE_BYTES {
            self.health.room_made("a blob was committed");
        }
        Ok(())
    }

    fn commit_inner(&self, digest: &Digest, temp: &TempBlob, meta: &BlobMeta) -> io::Result<()> {
        temp.file
            .sync_all()
            .map_err(|e| annotate(e, "fsync", &temp.path))?;
        if *meta != BlobMeta::default() {
            let meta_path = self.layout.meta_path(digest);
            let json = serde_json::to_vec(meta).map_err(io::Error::other)?;
            state::write_atomically(&meta_path, &json)?;
        }
        let final_path = self.layout.blob_path(digest);
        let dir = final_path.parent().expect("blob path has a parent");
        std::fs::create_dir_all(dir).map_err(|e| annotate(e, "create", dir))?;
        std::fs::rename(&temp.path, &final_path)
            .map_err(|e| annotate(e, "rename into place", &final_path))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| annotate(e, "fsync directory", dir))
    }

    /// Records that writing the fill's `temp` failed with `e` (the disk may be full: see
    /// [`health`]); call before discarding it. Returns the kind of failure.
    pub fn write_failed(&self, e: &io::Error, temp: &TempBlob) -> WriteFailure {
        self.health
            .write_failed(e, self.layout.root(), allocated_bytes(&temp.file))
    }

    /// Whether a new fill should write to the store; `false` while it is full (rechecked as
    /// [`health`] says). The handler streams misses from upstream without storing them then.
    pub fn accepts_fills(&self) -> bool {
        self.health.accepts_fills(self.layout.root())
    }

    /// Full or not, and write errors so far.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Whether committed blobs are rehashed as they are served (`verify_on_read`).
    pub fn verify_on_read(&self) -> bool {
        self.verify_on_read
    }

    /// `verify_on_read` rechecks running, and files remembered as verified.
    pub fn read_checks(&self) -> &Arc<ReadChecks> {
        &self.read_checks
    }

    /// Removes a temp file of a failed fill. Blocking; errors are logged, not returned.
    pub fn discard(&self, temp: &TempBlob) {
        if let Err(e) = std::fs::remove_file(&temp.path) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(path = %temp.path.display(), error = %e, "could not remove temp file of a failed fill");
            }
        }
    }

    /// Writes small verified content (a manifest) as a committed blob. Blocking.
    ///
    /// # Errors
    /// As [`BlobStore::commit`].
    pub fn put_small(&self, digest: &Digest, bytes: &[u8], meta: &BlobMeta) -> io::Result<()> {
        if self.contains(digest) {
            return Ok(());
        }
        let temp = self.create_temp(digest)?;
        let written = (&*temp.file)
            .write_all(bytes)
            .map_err(|e| annotate(e, "write", &temp.path));
        if let Err(e) = written {
            self.write_failed(&e, &temp);
            self.discard(&temp);
            return Err(e);
        }
        self.commit(digest, &temp, bytes.len() as u64, meta)
    }

    /// Evicts down to `target_bytes` (default: the budget's low watermark; nothing without a
    /// budget), least recently used first, never pinned or too-young blobs. With `dry_run`,
    /// only says what would go. Blocking: deletes files after releasing the index lock.
    pub fn evict(&self, target_bytes: Option<u64>, dry_run: bool) -> Vec<Victim> {
        let Some(target) = target_bytes.or_else(|| self.budget.as_ref().map(Budget::low_bytes))
        else {
            return Vec::new();
        };
        let min_age = self.budget.as_ref().map(|b| b.min_age).unwrap_or_default();
        let victims = self
            .index()
            .evict(target, min_age, SystemTime::now(), !dry_run);
        if !dry_run {
            for v in &victims {
                for path in [
                    self.layout.blob_path(&v.digest),
                    self.layout.meta_path(&v.digest),
                ] {
                    if let Err(e) = std::fs::remove_file(&path) {
                        if e.kind() != io::ErrorKind::NotFound {
                            tracing::warn!(path = %path.display(), error = %e, "could not delete evicted blob");
                        }
                    }
                }
            }
            if !victims.is_empty() {
                self.health.room_made("blobs were evicted");
            }
        }
        victims
    }

    /// Every committed blob, least recently used first.
    pub fn inventory(&self) -> Vec<InventoryItem> {
        let index = self.index();
        index
            .iter_lru()
            .map(|(d, e)| InventoryItem {
                digest: d.clone(),
                size_bytes: e.size_bytes,
                media_type: e.media_type.clone(),
                repos: e.repos.clone(),
                tags: e.tags.clone(),
                last_access: unix_secs(e.last_access),
                committed: unix_secs(e.committed),
                pinned: index.is_pinned(d),
                source: e.source.clone(),
            })
            .collect()
    }

    /// Saves recency, repositories and tags to `state/index.json` if anything changed.
    /// Blocking.
    ///
    /// # Errors
    /// The state file cannot be written.
    pub fn save_state(&self) -> io::Result<bool> {
        let blobs: BTreeMap<Digest, BlobState> = {
            let mut index = self.index();
            if !index.is_dirty() {
                return Ok(false);
            }
            index.clear_dirty();
            index
                .iter_lru()
                .map(|(d, e)| {
                    (
                        d.clone(),
                        BlobState {
                            last_access: unix_secs(e.last_access),
                            repos: e.repos.clone(),
                            tags: e.tags.clone(),
                        },
                    )
                })
                .collect()
        };
        state::save_index(&self.layout.index_state_path(), blobs)?;
        Ok(true)
    }

    /// The pins, in the order they were made.
    pub fn pins(&self) -> Vec<Pin> {
        self.pins.lock().expect("pins mutex poisoned").clone()
    }

    /// Adds or replaces (same target and platform) a pin, and saves the pins file. Blocking.
    ///
    /// # Errors
    /// The pins file cannot be written; the pin is then not kept.
    pub fn pin(&self, pin: Pin) -> io::Result<()> {
        self.update_pins(|pins| {
            pins.retain(|p| !(p.target == pin.target && p.platform == pin.platform));
            pins.push(pin);
            true
        })
        .map(|_| ())
    }

    /// Removes every pin whose target is `target`; returns how many. Blocking.
    ///
    /// # Errors
    /// The pins file cannot be written; the pins are then unchanged.
    pub fn unpin(&self, target: &str) -> io::Result<usize> {
        // Pins record images fully qualified (`docker.io/library/app:v1`); accept the name
        // as the operator gave it to `pin` (`library/app:v1`, `app:v1`) too.
        let qualified = (!target.starts_with("sha256:"))
            .then(|| stampede_oci::ImageRef::parse(target).ok())
            .flatten()
            .map(|r| r.to_string());
        let mut removed = 0;
        self.update_pins(|pins| {
            let before = pins.len();
            pins.retain(|p| p.target != target && qualified.as_deref() != Some(p.target.as_str()));
            removed = before - pins.len();
            removed > 0
        })?;
        Ok(removed)
    }

    /// Read, change, save, publish, all under the pins lock: two pins made at once (declared
    /// pins start in parallel, admin requests overlap) both land, and one temp file is written
    /// at a time. Readers of `pins()` wait only while the small file is written.
    fn update_pins(&self, change: impl FnOnce(&mut Vec<Pin>) -> bool) -> io::Result<bool> {
        let mut pins = self.pins.lock().expect("pins mutex poisoned");
        let mut next = pins.clone();
        if !change(&mut next) {
            return Ok(false);
        }
        state::save_pins(&self.layout.pins_path(), &next)?;
        self.index().set_pinned(pinned_set(&next));
        *pins = next;
        Ok(true)
    }

    /// Rehashes every committed blob; a blob whose bytes do not match its digest is moved to
    /// `quarantine/` and forgotten, so it is never served again (the next request fetches it
    /// anew). Blocking and slow: reads everything.
    pub fn verify(&self) -> VerifyReport {
        let digests: Vec<(Digest, u64)> = self
            .index()
            .iter_lru()
            .map(|(d, e)| (d.clone(), e.size_bytes))
            .collect();
        let mut report = VerifyReport::default();
        let mut buf = vec![0u8; 1024 * 1024];
        for (digest, size) in digests {
            match self.matches(&digest, size, &mut buf) {
                Ok(true) => {
                    report.checked += 1;
                    report.bytes += size;
                }
                Ok(false) => {
                    report.checked += 1;
                    report.bytes += size;
                    self.quarantine(&digest);
                    report.quarantined.push(digest);
                }
                Err(e) => {
                    tracing::warn!(%digest, error = %e, "blob unreadable during verify; forgetting it");
                    self.index().remove(&digest);
                    report.unreadable.push(digest);
                }
            }
        }
        if !report.quarantined.is_empty() || !report.unreadable.is_empty() {
            self.health.room_made("verify removed blobs");
        }
        let mut earlier: Vec<Digest> = std::fs::read_dir(self.layout.quarantine_dir())
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let hex = e.file_name().into_string().ok()?;
                Digest::parse(&format!("sha256:{hex}")).ok()
            })
            .filter(|d| !report.quarantined.contains(d))
            .collect();
        earlier.sort();
        report.held_in_quarantine = earlier;
        report
    }

    /// Rehashes committed blob `digest` of `size_bytes` through its open `file` (the file a
    /// response is about to read); quarantines it when it does not match. Returns whether it
    /// matched. Blocking: reads the whole file.
    ///
    /// # Errors
    /// The file cannot be read (it is then left alone).
    pub fn recheck(&self, digest: &Digest, file: &File, size_bytes: u64) -> io::Result<bool> {
        let mut buf = vec![0u8; 1024 * 1024];
        let mut v = Verifier::new(digest.clone());
        let mut pos = 0u64;
        loop {
            let n = file
                .read_at(&mut buf, pos)
                .map_err(|e| annotate(e, "read", &self.layout.blob_path(digest)))?;
            if n == 0 {
                break;
            }
            v.update(&buf[..n]);
            pos += n as u64;
        }
        let matched = v.bytes() == size_bytes && v.finish().is_ok();
        if !matched {
            self.quarantine(digest);
        }
        Ok(matched)
    }

    fn matches(&self, digest: &Digest, size_bytes: u64, buf: &mut [u8]) -> io::Result<bool> {
        let path = self.layout.blob_path(digest);
        let mut f = File::open(&path).map_err(|e| annotate(e, "open", &path))?;
        let mut v = Verifier::new(digest.clone());
        loop {
            let n = f.read(buf).map_err(|e| annotate(e, "read", &path))?;
            if n == 0 {
                break;
            }
            v.update(&buf[..n]);
        }
        Ok(v.bytes() == size_bytes && v.finish().is_ok())
    }

    /// Moves committed blob `digest`, found corrupt, to `quarantine/<hex>` (deleting it if it
    /// cannot be moved) and forgets it, so it is never served again and the next request
    /// fetches it anew. Returns where it went. Blocking.
    pub fn quarantine(&self, digest: &Digest) -> PathBuf {
        let path = self.layout.blob_path(digest);
        let dest = self.layout.quarantine_dir().join(digest.hex());
        self.index().remove(digest);
        self.read_checks.forget(digest);
        let moved = std::fs::create_dir_all(self.layout.quarantine_dir())
            .and_then(|()| std::fs::rename(&path, &dest));
        match moved {
            Ok(()) => {
                tracing::error!(%digest, quarantine = %dest.display(), "blob does not match its digest; quarantined");
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::error!(%digest, error = %e, "could not quarantine corrupt blob; deleting it");
                std::fs::remove_file(&path).ok();
            }
        }
        dest
    }

    /// The store's paths.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }
}

/// Bytes the file occupies on disk (what removing it frees).
fn allocated_bytes(file: &File) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    file.metadata().map_or(0, |m| m.blocks() * 512)
}

/// Creates the store's root and takes the exclusive lock on `<root>/lock`, held as long as the
/// returned file is open.
///
/// # Errors
/// [`OpenError::Locked`] when another process holds it; I/O errors otherwise.
fn lock_root(layout: &Layout) -> Result<File, OpenError> {
    std::fs::create_dir_all(layout.root()).map_err(|e| annotate(e, "create", layout.root()))?;
    let lock_path = layout.root().join("lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| annotate(e, "open", &lock_path))?;
    match lock.try_lock() {
        Ok(()) => Ok(lock),
        Err(std::fs::TryLockError::WouldBlock) => Err(OpenError::Locked {
            root: layout.root().to_owned(),
            lock: lock_path,
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(annotate(e, "lock", &lock_path).into()),
    }
}

/// Removes what interrupted fills left in `tmp/`; returns how many entries went.
fn remove_temp_files(layout: &Layout) -> io::Result<usize> {
    let mut removed_count = 0;
    for entry in read_dir(&layout.tmp_dir())? {
        let path = entry.path();
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.map_err(|e| annotate(e, "remove stale temp file", &path))?;
        removed_count += 1;
    }
    Ok(removed_count)
}

/// Creates and removes a file in `tmp/`. A store we can lock but not write to (a read-only bind
/// mount of `tmp/`) would fail every fill later; this says so now.
fn probe_writable(layout: &Layout) -> io::Result<()> {
    let probe = layout
        .tmp_dir()
        .join(format!("write-probe.{}", std::process::id()));
    File::create(&probe)
        .and_then(|_| std::fs::remove_file(&probe))
        .map_err(|e| annotate(e, "create file", &probe))
}

/// Every committed blob under `blobs/<2 hex>/<hex>`, with its size, mtime and the recency,
/// repositories and tags saved in `state/`. Anything else there is counted in
/// `recovery.strays`, left alone and not served.
fn scan_blobs(layout: &Layout, recovery: &mut Recovery) -> io::Result<Vec<(Digest, Entry)>> {
    let saved = state::load_index(&layout.index_state_path());
    let mut found = Vec::new();
    for prefix in read_dir(&layout.blobs_dir())? {
        let prefix_path = prefix.path();
        if !prefix_path.is_dir() {
            recovery.strays += 1;
            continue;
        }
        for blob in read_dir(&prefix_path)? {
            let name = blob.file_name();
            let digest = name
                .to_str()
                .and_then(|hex| Digest::parse(&format!("sha256:{hex}")).ok())
                .filter(|d| prefix.file_name().to_str() == Some(&d.hex()[..2]));
            let meta = blob
                .metadata()
                .map_err(|e| annotate(e, "stat", &blob.path()))?;
            match digest {
                Some(d) if meta.is_file() => {
                    let modified = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
                    let mut entry = Entry::new(meta.len(), None, modified);
                    if let Some(s) = saved.get(&d) {
                        entry.last_access = from_unix_secs(s.last_access);
                        entry.repos = s.repos.clone();
                        entry.tags = s.tags.clone();
                    }
                    found.push((d, entry));
                }
                _ => recovery.strays += 1,
            }
        }
    }
    Ok(found)
}

/// The index of the `found` blobs, with their media types from `meta/`, counted into
/// `recovery`. Oldest access first, so the index's recency order is what it was before the
/// restart.
fn restore_index(
    layout: &Layout,
    mut found: Vec<(Digest, Entry)>,
    recovery: &mut Recovery,
) -> Index {
    found.sort_by_key(|(_, e)| e.last_access);
    let mut index = Index::default();
    for (digest, mut entry) in found {
        let meta = read_meta(&layout.meta_path(&digest));
        entry.media_type = meta.as_ref().and_then(|m| m.media_type.clone());
        entry.source = meta.and_then(|m| m.source);
        recovery.blobs += 1;
        recovery.bytes += entry.size_bytes;
        index.restore(digest, entry);
    }
    index
}

fn pinned_set(pins: &[Pin]) -> HashSet<Digest> {
    pins.iter()
        .flat_map(|p| p.digests.iter().cloned())
        .collect()
}

fn read_dir(dir: &Path) -> io::Result<Vec<std::fs::DirEntry>> {
    std::fs::read_dir(dir)
        .and_then(Iterator::collect)
        .map_err(|e| annotate(e, "read directory", dir))
}

fn read_meta(path: &Path) -> Option<BlobMeta> {
    let bytes = std::fs::read(path).ok()?;
    match serde_json::from_slice(&bytes) {
        Ok(m) => Some(m),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "ignoring unreadable blob metadata");
            None
        }
    }
}

/// Adds what we were doing and the path to an I/O error, keeping its kind.
pub fn annotate(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(root: &Path) -> (BlobStore, Recovery) {
        BlobStore::open(StoreConfig {
            root: root.to_owned(),
            budget: None,
            verify_on_read: false,
        })
        .unwrap()
    }

    #[test]
    fn commit_then_reopen_rebuilds_index_and_cleans_temp() {
        let dir = tempfile::tempdir().unwrap();
        let (s, rec) = store(dir.path());
        assert_eq!(rec, Recovery::default());
        let d = Digest::of(b"hello");
        let temp = s.create_temp(&d).unwrap();
        (&*temp.file).write_all(b"hello").unwrap();
        s.commit(&d, &temp, 5, &BlobMeta::default()).unwrap();
        let m = Digest::of(b"{}");
        s.put_small(
            &m,
            b"{}",
            &BlobMeta {
                media_type: Some("application/vnd.oci.image.manifest.v1+json".into()),
                ..BlobMeta::default()
            },
        )
        .unwrap();
        // A crash mid-fill leaves a temp file; a stray file sits among blobs.
        let stale = s.create_temp(&Digest::of(b"partial")).unwrap();
        std::fs::write(dir.path().join("blobs/sha256/zz"), b"stray").unwrap();
        drop(s);

        let (s, rec) = store(dir.path());
        assert_eq!(rec.blobs, 2);
        assert_eq!(rec.bytes, 7);
        assert_eq!(rec.temp_files_removed, 1);
        assert_eq!(rec.strays, 1);
        assert!(!stale.path.exists());
        assert_eq!(s.lookup(&d, None).unwrap().size_bytes, 5);
        assert_eq!(
            s.lookup(&m, None).unwrap().media_type.as_deref(),
            Some("application/vnd.oci.image.manifest.v1+json")
        );
        assert_eq!(std::fs::read(s.layout().blob_path(&d)).unwrap(), b"hello");
    }

    #[test]
    fn a_second_process_cannot_open_the_same_store() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = store(dir.path());
        let again = BlobStore::open(StoreConfig {
            root: dir.path().to_owned(),
            budget: None,
            verify_on_read: false,
        });
        assert!(matches!(again, Err(OpenError::Locked { .. })), "{again:?}");
        drop(s);
        store(dir.path());
    }

    #[test]
    fn misnamed_blob_files_are_not_served() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = store(dir.path());
        let d = Digest::of(b"x");
        // Right name, wrong prefix directory: not indexed.
        let wrong = dir.path().join("blobs/sha256/00").join(d.hex());
        std::fs::create_dir_all(wrong.parent().unwrap()).unwrap();
        std::fs::write(&wrong, b"x").unwrap();
        drop(s);
        let (s, rec) = store(dir.path());
        assert_eq!(rec.strays, 1);
        assert!(s.lookup(&d, None).is_none());
    }

    #[tokio::test]
    async fn blob_removed_by_hand_becomes_a_miss() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = store(dir.path());
        let s = Arc::new(s);
        let d = Digest::of(b"gone");
        s.put_small(&d, b"gone", &BlobMeta::default()).unwrap();
        std::fs::remove_file(s.layout().blob_path(&d)).unwrap();
        assert!(s.open_blob(&d, None).await.unwrap().is_none());
        assert!(!s.contains(&d));
    }

    #[test]
    fn recency_pins_and_repositories_survive_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = store(dir.path());
        let blobs: Vec<Digest> = (0..3u8).map(|i| Digest::of(&[i])).collect();
        for (i, d) in blobs.iter().enumerate() {
            s.put_small(d, &[i as u8], &BlobMeta::default()).unwrap();
        }
        // Use 0 last so the order becomes 1, 2, 0; pin 1.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        s.lookup(&blobs[0], Some("r/app"));
        s.pin(Pin {
            target: blobs[1].to_string(),
            platform: None,
            digests: [blobs[1].clone()].into(),
            pinned_at: 1,
        })
        .unwrap();
        assert!(s.save_state().unwrap());
        drop(s);
        let (s, rec) = store(dir.path());
        assert_eq!(rec.pins, 1);
        let inv = s.inventory();
        let order: Vec<&Digest> = inv.iter().map(|i| &i.digest).collect();
        assert_eq!(order, [&blobs[1], &blobs[2], &blobs[0]]);
        assert!(inv[0].pinned && !inv[1].pinned);
        assert!(inv[2].repos.contains("r/app"));
        // Evict everything evictable: the pin holds.
        let gone = s.evict(Some(0), false);
        assert_eq!(
            gone.iter().map(|v| &v.digest).collect::<Vec<_>>(),
            [&blobs[2], &blobs[0]]
        );
        assert!(s.contains(&blobs[1]) && !s.layout().blob_path(&blobs[2]).exists());
        assert_eq!(s.unpin(&blobs[1].to_string()).unwrap(), 1);
        assert_eq!(
            s.evict(Some(0), true).len(),
            1,
            "dry run lists the unpinned blob"
        );
        assert!(s.contains(&blobs[1]), "dry run removes nothing");
        // An image pin is recorded fully qualified; unpin takes the short name `pin` was given.
        let pin_image = |target: &str| Pin {
            target: target.into(),
            platform: None,
            digests: [blobs[1].clone()].into(),
            pinned_at: 2,
        };
        s.pin(pin_image("docker.io/library/app:v1")).unwrap();
        s.pin(pin_image("docker.io/library/other:v1")).unwrap();
        assert_eq!(s.unpin("app:v1").unwrap(), 1);
        assert_eq!(s.unpin("library/app:v1").unwrap(), 0);
        assert_eq!(s.unpin("docker.io/library/other:v1").unwrap(), 1);
        assert!(s.pins().is_empty());
    }

    #[test]
    fn pins_made_at_once_are_all_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = store(dir.path());
        let s = std::sync::Arc::new(s);
        let threads: Vec<_> = (0..8u8)
            .map(|i| {
                let s = s.clone();
                std::thread::spawn(move || {
                    let d = Digest::of(&[i]);
                    s.pin(Pin {
                        target: d.to_string(),
                        platform: None,
                        digests: [d].into(),
                        pinned_at: u64::from(i),
                    })
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap().unwrap();
        }
        assert_eq!(s.pins().len(), 8);
        assert_eq!(
            state::load_pins(&s.layout().pins_path()).unwrap().len(),
            8,
            "the file holds every pin too"
        );
    }

    #[test]
    fn verify_quarantines_corrupt_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = store(dir.path());
        let good = Digest::of(b"good");
        let bad = Digest::of(b"bad");
        s.put_small(&good, b"good", &BlobMeta::default()).unwrap();
        s.put_small(&bad, b"bad", &BlobMeta::default()).unwrap();
        std::fs::write(s.layout().blob_path(&bad), b"BAD").unwrap();
        let report = s.verify();
        assert_eq!(report.checked, 2);
        assert_eq!(report.quarantined, vec![bad.clone()]);
        assert!(!s.contains(&bad) && s.contains(&good));
        assert!(s.layout().quarantine_dir().join(bad.hex()).exists());
    }
}
