//! The content-addressed blob store on disk: one file per sha256 digest, shared by every
//! repository and registry. Fills write a temp file; [`BlobStore::commit`] makes it visible only
//! after the caller has verified its digest, by fsync + atomic rename (+ fsync of the directory),
//! so a committed file is always complete and correct. At start, temp files left by a crash are
//! removed and the index is rebuilt from what is on disk.
//!
//! The store does not fetch anything (`flight.rs` does) and does not verify digests itself
//! (the fill does, as bytes stream past); it only refuses names that are not digests.
//!
//! # Layout
//! - `layout`: paths.
//! - `index`: in-memory bookkeeping (size, media type, recency).
//! - `page_cache`: opens and reads that succeed only without waiting on the disk.

pub mod index;
pub mod layout;
pub mod page_cache;

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use stampede_oci::Digest;

use crate::config::StoreConfig;
use index::{Entry, Index};
use layout::Layout;

/// Sidecar metadata of a committed blob.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BlobMeta {
    /// Media type as the upstream declared it (manifests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
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
}

/// The blob store.
#[derive(Debug)]
pub struct BlobStore {
    layout: Layout,
    /// A std `Mutex`: held only for constant-time index updates, never across `.await` or I/O.
    index: Mutex<Index>,
}

impl BlobStore {
    /// Opens (creating if needed) the store at `config.root`: removes temp files of interrupted
    /// fills and rebuilds the index from committed blobs. Blocking; call before serving or from
    /// `spawn_blocking`.
    ///
    /// # Errors
    /// The directory cannot be created or read.
    pub fn open(config: StoreConfig) -> io::Result<(Self, Recovery)> {
        let layout = Layout::new(config.root);
        for dir in [layout.blobs_dir(), layout.meta_dir(), layout.tmp_dir()] {
            std::fs::create_dir_all(&dir).map_err(|e| annotate(e, "create", &dir))?;
        }
        let mut recovery = Recovery::default();
        for entry in read_dir(&layout.tmp_dir())? {
            let path = entry.path();
            let removed = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            removed.map_err(|e| annotate(e, "remove stale temp file", &path))?;
            recovery.temp_files_removed += 1;
        }
        let mut index = Index::default();
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
                        found.push((modified, d, meta.len()));
                    }
                    _ => recovery.strays += 1,
                }
            }
        }
        // Oldest first, so the index's recency order starts as modification order.
        found.sort_by_key(|(modified, _, _)| *modified);
        for (_, digest, size_bytes) in found {
            let media_type = read_meta(&layout.meta_path(&digest)).and_then(|m| m.media_type);
            recovery.blobs += 1;
            recovery.bytes += size_bytes;
            index.insert(
                digest,
                Entry {
                    size_bytes,
                    media_type,
                },
            );
        }
        Ok((
            Self {
                layout,
                index: Mutex::new(index),
            },
            recovery,
        ))
    }

    fn index(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().expect("store index mutex poisoned")
    }

    /// The index entry of a committed blob, marking it recently used.
    pub fn lookup(&self, digest: &Digest) -> Option<Entry> {
        self.index().touch(digest)
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

    /// Opens a committed blob for reading; `None` on a miss. A blob that is indexed but gone
    /// from disk (removed by hand) is forgotten and reported as a miss. The open runs inline when
    /// the kernel can resolve the path from its caches, else on the blocking pool.
    ///
    /// # Errors
    /// The file exists but cannot be opened.
    pub async fn open_blob(self: &Arc<Self>, digest: &Digest) -> io::Result<Option<OpenBlob>> {
        let Some(entry) = self.lookup(digest) else {
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
            .map_err(|e| annotate(e, "create temp file", &path))?;
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
        if result.is_err() {
            std::fs::remove_file(&temp.path).ok();
            return result;
        }
        self.index().insert(
            digest.clone(),
            Entry {
                size_bytes,
                media_type: meta.media_type.clone(),
            },
        );
        Ok(())
    }

    fn commit_inner(&self, digest: &Digest, temp: &TempBlob, meta: &BlobMeta) -> io::Result<()> {
        temp.file
            .sync_all()
            .map_err(|e| annotate(e, "fsync", &temp.path))?;
        if *meta != BlobMeta::default() {
            let meta_path = self.layout.meta_path(digest);
            let json = serde_json::to_vec(meta).map_err(io::Error::other)?;
            write_atomically(&meta_path, &json)?;
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
            self.discard(&temp);
            return Err(e);
        }
        self.commit(digest, &temp, bytes.len() as u64, meta)
    }

    /// The store's paths.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }
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

fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().expect("metadata path has a parent");
    std::fs::create_dir_all(dir).map_err(|e| annotate(e, "create", dir))?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f = File::create(&tmp).map_err(|e| annotate(e, "create", &tmp))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| annotate(e, "write", &tmp))?;
    std::fs::rename(&tmp, path).map_err(|e| annotate(e, "rename into place", path))
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
        assert_eq!(s.lookup(&d).unwrap().size_bytes, 5);
        assert_eq!(
            s.lookup(&m).unwrap().media_type.as_deref(),
            Some("application/vnd.oci.image.manifest.v1+json")
        );
        assert_eq!(std::fs::read(s.layout().blob_path(&d)).unwrap(), b"hello");
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
        assert!(s.lookup(&d).is_none());
    }

    #[tokio::test]
    async fn blob_removed_by_hand_becomes_a_miss() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = store(dir.path());
        let s = Arc::new(s);
        let d = Digest::of(b"gone");
        s.put_small(&d, b"gone", &BlobMeta::default()).unwrap();
        std::fs::remove_file(s.layout().blob_path(&d)).unwrap();
        assert!(s.open_blob(&d).await.unwrap().is_none());
        assert!(!s.contains(&d));
    }
}
