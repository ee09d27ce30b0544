//! A store's identity: a random id written once to `<root>/store-id` the first time the store
//! is opened, and the root's canonical path. The daemon reports both on its admin endpoint
//! (`GET /admin/store`), so an operator tool given a store proves that the daemon answering on
//! an admin address serves that very store, and not another daemon's that happens to listen on
//! the default address. This module reads and creates the file; it does not lock the store
//! (`BlobStore::open` does that before calling [`ensure`]).

use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use stampede_oci::Digest;

use super::layout::Layout;
use super::state::write_atomically;

/// Hex characters of a store id.
const ID_LEN: usize = 32;

/// Which store a daemon serves.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoreIdentity {
    /// The id in `<root>/store-id`.
    pub id: String,
    /// The store root, canonical (symbolic links resolved).
    pub root: PathBuf,
}

/// The identity of the store at `layout`, creating its id file if there is none. Blocking.
///
/// # Errors
/// The root cannot be resolved, or the id file cannot be read or written.
pub fn ensure(layout: &Layout) -> io::Result<StoreIdentity> {
    let root = layout.root().canonicalize()?;
    let path = layout.store_id_path();
    let id = match read_id(layout.root())? {
        Some(id) => id,
        None => {
            let nanos = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos();
            let seed = format!("{}:{}:{nanos}", root.display(), std::process::id());
            let id = Digest::of(seed.as_bytes()).hex()[..ID_LEN].to_owned();
            write_atomically(&path, format!("{id}\n").as_bytes())?;
            id
        }
    };
    Ok(StoreIdentity { id, root })
}

/// The id of the store at `root`, if it has one; reads only, takes no lock. Blocking.
///
/// # Errors
/// The id file exists but cannot be read, or holds no id (the error does not name the file:
/// [`Layout::store_id_path`] does).
pub fn read_id(root: &Path) -> io::Result<Option<String>> {
    let path = Layout::new(root.to_owned()).store_id_path();
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let id = text.trim();
            if id.len() == ID_LEN && id.bytes().all(|b| b.is_ascii_hexdigit()) {
                Ok(Some(id.to_owned()))
            } else {
                Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the file holds no store id",
                ))
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_is_made_once_and_differs_between_stores() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        assert_eq!(read_id(&a).unwrap(), None);
        let first = ensure(&Layout::new(a.clone())).unwrap();
        assert_eq!(ensure(&Layout::new(a.clone())).unwrap(), first);
        assert_eq!(read_id(&a).unwrap(), Some(first.id.clone()));
        assert_eq!(first.root, a.canonicalize().unwrap());
        let other = ensure(&Layout::new(b)).unwrap();
        assert_ne!(other.id, first.id);
        std::fs::write(a.join("store-id"), "garbage").unwrap();
        assert!(read_id(&a).is_err());
    }
}
