//! What the store remembers across restarts besides the blobs themselves: last access times and
//! the repositories and tags each blob was seen under (`state/index.json`, saved periodically
//! and at shutdown), and the pins (`state/pins.json`, saved at every change). Both are written
//! atomically (temp file, fsync, rename). A missing or unreadable state file is not fatal: the
//! blobs are still there and verified; only recency falls back to file modification times.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Write};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use stampede_oci::Digest;

use super::annotate;

/// Version of both state files' format.
const STATE_VERSION: u32 = 1;

/// Per-blob facts saved across restarts.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BlobState {
    /// Last access, seconds since the Unix epoch.
    pub last_access: u64,
    /// `registry/repository` names it was requested under.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub repos: BTreeSet<String>,
    /// `registry/repository:tag` names that resolved to it.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub tags: BTreeSet<String>,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct IndexFile {
    version: u32,
    blobs: BTreeMap<Digest, BlobState>,
}

/// A pin: content that is never evicted.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Pin {
    /// What the operator pinned, as written: an image reference or a digest.
    pub target: String,
    /// For an index: the one platform pinned (`None`: every platform).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// Every digest the pin covers (manifests, configs, layers).
    pub digests: BTreeSet<Digest>,
    /// When it was pinned, seconds since the Unix epoch.
    pub pinned_at: u64,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct PinsFile {
    version: u32,
    pins: Vec<Pin>,
}

/// Seconds since the Unix epoch.
pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

/// The time `secs` after the Unix epoch.
pub fn from_unix_secs(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// Reads `state/index.json`; an absent file is empty state, an unreadable one is logged and
/// ignored.
pub fn load_index(path: &Path) -> BTreeMap<Digest, BlobState> {
    match std::fs::read(path) {
        Ok(bytes) => match serde_json::from_slice::<IndexFile>(&bytes) {
            Ok(f) if f.version == STATE_VERSION => f.blobs,
            Ok(f) => {
                tracing::warn!(path = %path.display(), version = f.version, "ignoring state file of another version");
                BTreeMap::new()
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring unreadable state file; recency falls back to file times");
                BTreeMap::new()
            }
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => BTreeMap::new(),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read state file");
            BTreeMap::new()
        }
    }
}

/// Writes `state/index.json` atomically.
///
/// # Errors
/// The file cannot be written.
pub fn save_index(path: &Path, blobs: BTreeMap<Digest, BlobState>) -> io::Result<()> {
    let json = serde_json::to_vec(&IndexFile {
        version: STATE_VERSION,
        blobs,
    })
    .map_err(io::Error::other)?;
    write_atomically(path, &json)
}

/// Reads `state/pins.json`.
///
/// # Errors
/// The file exists but is unreadable or malformed: pins protect content, so a broken pin file
/// stops the daemon instead of silently unpinning.
pub fn load_pins(path: &Path) -> io::Result<Vec<Pin>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice::<PinsFile>(&bytes)
            .map(|f| f.pins)
            .map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("parse pins file {}: {e}", path.display()),
                )
            }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(annotate(e, "read pins file", path)),
    }
}

/// Writes `state/pins.json` atomically.
///
/// # Errors
/// The file cannot be written.
pub fn save_pins(path: &Path, pins: &[Pin]) -> io::Result<()> {
    let json = serde_json::to_vec_pretty(&PinsFile {
        version: STATE_VERSION,
        pins: pins.to_vec(),
    })
    .map_err(io::Error::other)?;
    write_atomically(path, &json)
}

/// Writes `bytes` to `path` via a temp file, fsync and rename.
///
/// # Errors
/// Any step fails.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().expect("state path has a parent");
    std::fs::create_dir_all(dir).map_err(|e| annotate(e, "create", dir))?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f = std::fs::File::create(&tmp).map_err(|e| annotate(e, "create", &tmp))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| annotate(e, "write", &tmp))?;
    std::fs::rename(&tmp, path).map_err(|e| annotate(e, "rename into place", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_and_pins_round_trip_and_bad_files_behave() {
        let dir = tempfile::tempdir().unwrap();
        let index = dir.path().join("state/index.json");
        let d = Digest::of(b"x");
        let mut blobs = BTreeMap::new();
        blobs.insert(
            d.clone(),
            BlobState {
                last_access: 42,
                repos: ["docker.io/library/alpine".to_owned()].into(),
                tags: BTreeSet::new(),
            },
        );
        save_index(&index, blobs.clone()).unwrap();
        assert_eq!(load_index(&index), blobs);
        std::fs::write(&index, b"garbage").unwrap();
        assert!(load_index(&index).is_empty());

        let pins_path = dir.path().join("state/pins.json");
        assert!(load_pins(&pins_path).unwrap().is_empty());
        let pins = vec![Pin {
            target: "docker.io/library/alpine:3.20".into(),
            platform: Some("linux/amd64".into()),
            digests: [d].into(),
            pinned_at: 7,
        }];
        save_pins(&pins_path, &pins).unwrap();
        assert_eq!(load_pins(&pins_path).unwrap(), pins);
        std::fs::write(&pins_path, b"{").unwrap();
        assert!(load_pins(&pins_path).is_err());
    }
}
