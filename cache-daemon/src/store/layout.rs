//! Where things live under the store root. Paths only; no I/O.
//!
//! ```text
//! <root>/blobs/sha256/<first 2 hex>/<64 hex>      committed, verified blobs (manifests too)
//! <root>/meta/sha256/<first 2 hex>/<64 hex>.json   what we know about a blob (media type)
//! <root>/tmp/<64 hex>.<pid>.<n>.partial           fills in progress; removed at start
//! <root>/state/index.json                          recency, repositories, tags (saved periodically)
//! <root>/state/pins.json                           pins (saved at every change)
//! <root>/quarantine/<64 hex>                       blobs `verify` found corrupt; never served
//! <root>/lock                                      held by the process that owns the store
//! <root>/store-id                                  the store's random id (`identity.rs`)
//! ```
//! Hash-prefix directories keep any one directory small on stores with many blobs.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use stampede_oci::Digest;

/// Paths under one store root.
#[derive(Debug)]
pub struct Layout {
    root: PathBuf,
    next_temp: AtomicU64,
}

impl Layout {
    /// Paths under `root`.
    pub fn new(root: PathBuf) -> Self {
        Self {
            root,
            next_temp: AtomicU64::new(0),
        }
    }

    /// The store root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Directory of committed blobs.
    pub fn blobs_dir(&self) -> PathBuf {
        stampede_oci::layout::blobs_dir(&self.root, "sha256")
    }

    /// Directory of blob metadata.
    pub fn meta_dir(&self) -> PathBuf {
        self.root.join("meta").join("sha256")
    }

    /// Directory of fills in progress.
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// Directory of state saved across restarts.
    pub fn state_dir(&self) -> PathBuf {
        self.root.join("state")
    }

    /// Recency, repositories and tags of blobs.
    pub fn index_state_path(&self) -> PathBuf {
        self.state_dir().join("index.json")
    }

    /// The pins.
    pub fn pins_path(&self) -> PathBuf {
        self.state_dir().join("pins.json")
    }

    /// The store's id file (`identity.rs`).
    pub fn store_id_path(&self) -> PathBuf {
        self.root.join("store-id")
    }

    /// Where corrupt blobs are moved.
    pub fn quarantine_dir(&self) -> PathBuf {
        self.root.join("quarantine")
    }

    /// Where the committed blob `digest` lives.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.blobs_dir().join(&hex[..2]).join(hex)
    }

    /// Where the metadata of `digest` lives.
    pub fn meta_path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.meta_dir().join(&hex[..2]).join(format!("{hex}.json"))
    }

    /// A fresh temp path for a fill of `digest`, unique within this process and across
    /// processes sharing the root.
    pub fn temp_path(&self, digest: &Digest) -> PathBuf {
        let n = self.next_temp.fetch_add(1, Ordering::Relaxed);
        self.tmp_dir().join(format!(
            "{}.{}.{n}.partial",
            digest.hex(),
            std::process::id()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_hash_prefixed_and_temp_paths_unique() {
        let l = Layout::new(PathBuf::from("/s"));
        let d = Digest::of(b"");
        assert_eq!(
            l.blob_path(&d),
            PathBuf::from("/s/blobs/sha256/e3/e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        );
        assert!(l
            .meta_path(&d)
            .ends_with("e3/e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855.json"));
        assert_ne!(l.temp_path(&d), l.temp_path(&d));
        assert!(l.temp_path(&d).starts_with("/s/tmp"));
    }
}
