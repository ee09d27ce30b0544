//! The snapshot root seen as a chroot: turns cleaned relative directory names into host paths,
//! following symlinks met in intermediate components as if the root were `/` (like
//! containerd's `fs.RootPath` or securejoin), so every path handed out lies inside the root.
//!
//! Owns the cache of directories already resolved in this layer. Does not create or remove
//! entries other than missing parent directories; whoever removes or replaces anything under
//! the root must call [`RootDir::invalidate`]. Assumes nothing else modifies the root while a
//! layer is applied (no defence against a concurrent attacker swapping directories for
//! symlinks between our checks and our writes).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// Symlinks followed while resolving one directory before giving up (Linux's `ELOOP` limit).
const MAX_SYMLINKS: u32 = 40;
/// Mode of parent directories a layer uses without declaring them (as containerd does).
const IMPLICIT_DIR_MODE: u32 = 0o755;

/// What to do about a directory that does not exist yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Missing {
    /// Create it (mode 0755), as for the parents of a new entry.
    Create,
    /// Report `None`, as for whiteouts and hard link targets.
    Absent,
}

/// Why a directory could not be resolved.
#[derive(Debug)]
pub(super) enum ResolveError {
    /// A component (relative to the root) exists and is neither a directory nor a symlink.
    NotADirectory(PathBuf),
    /// More than [`MAX_SYMLINKS`] symlinks on the way.
    TooManySymlinks,
    /// A filesystem call on this host path failed.
    Io(PathBuf, io::Error),
}

/// A snapshot root and the directories resolved under it so far.
#[derive(Debug)]
pub(super) struct RootDir {
    host: PathBuf,
    /// Cleaned relative directory name -> resolved host path (a real directory inside `host`).
    dirs: HashMap<Vec<u8>, PathBuf>,
}

impl RootDir {
    /// Opens `path` as a root, creating it if missing. The host path is canonical, so the
    /// root itself may be reached through symlinks.
    ///
    /// # Errors
    /// The root cannot be created or canonicalised, or is not a directory.
    pub(super) fn open(path: &Path) -> io::Result<Self> {
        fs::create_dir_all(path)?;
        let host = path.canonicalize()?;
        if !fs::metadata(&host)?.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                "snapshot root is not a directory",
            ));
        }
        Ok(Self {
            host,
            dirs: HashMap::new(),
        })
    }

    /// Records that the cleaned name `rel` is the real directory `host` inside the root, as
    /// the caller has just created or checked it, so its children resolve without `lstat`.
    pub(super) fn remember(&mut self, rel: &[u8], host: &Path) {
        if !self.dirs.contains_key(rel) {
            self.dirs.insert(rel.to_vec(), host.to_path_buf());
        }
    }

    /// Forgets every resolved directory; call after removing or replacing anything.
    pub(super) fn invalidate(&mut self) {
        self.dirs.clear();
    }

    /// Resolves the cleaned relative directory name `rel` (empty = the root) to a host
    /// directory inside the root. Symlinks in any component are followed with chroot
    /// semantics; `..` never climbs above the root. Directories created on the way are
    /// passed to `created`.
    ///
    /// Returns `Ok(None)` only with [`Missing::Absent`] when some component does not exist.
    ///
    /// # Errors
    /// A component is a file (or other non-directory), a symlink loop, or a failed
    /// `lstat`/`readlink`/`mkdir`.
    pub(super) fn resolve_dir(
        &mut self,
        rel: &[u8],
        missing: Missing,
        created: &mut dyn FnMut(&Path),
    ) -> Result<Option<&Path>, ResolveError> {
        if rel.is_empty() {
            return Ok(Some(&self.host));
        }
        if !self.dirs.contains_key(rel) {
            match self.walk(rel, missing, created)? {
                Some(resolved) => {
                    self.dirs.insert(rel.to_vec(), resolved);
                }
                None => return Ok(None),
            }
        }
        Ok(self.dirs.get(rel).map(PathBuf::as_path))
    }

    fn walk(
        &self,
        rel: &[u8],
        missing: Missing,
        created: &mut dyn FnMut(&Path),
    ) -> Result<Option<PathBuf>, ResolveError> {
        // Start from the deepest ancestor already resolved, if any.
        let (mut current, rest) = rel
            .iter()
            .enumerate()
            .rev()
            .filter(|(_, b)| **b == b'/')
            .find_map(|(i, _)| Some((self.dirs.get(&rel[..i])?.clone(), &rel[i + 1..])))
            .unwrap_or_else(|| (self.host.clone(), rel));
        let mut depth = current
            .strip_prefix(&self.host)
            .map_or(0, |inside| inside.components().count());
        let mut symlinks = 0u32;
        // Components still to walk, last one first; symlink targets are spliced in.
        let mut pending: Vec<Vec<u8>> = rest.rsplit(|b| *b == b'/').map(<[u8]>::to_vec).collect();
        while let Some(component) = pending.pop() {
            match component.as_slice() {
                b"" | b"." => continue,
                b".." => {
                    if depth > 0 {
                        current.pop();
                        depth -= 1;
                    }
                    continue;
                }
                name => current.push(OsStr::from_bytes(name)),
            }
            match fs::symlink_metadata(&current) {
                Ok(meta) if meta.is_dir() => depth += 1,
                Ok(meta) if meta.file_type().is_symlink() => {
                    symlinks += 1;
                    if symlinks > MAX_SYMLINKS {
                        return Err(ResolveError::TooManySymlinks);
                    }
                    let target = fs::read_link(&current)
                        .map_err(|e| ResolveError::Io(current.clone(), e))?;
                    current.pop();
                    let target = target.as_os_str().as_bytes();
                    if target.first() == Some(&b'/') {
                        current.clone_from(&self.host);
                        depth = 0;
                    }
                    pending.extend(target.rsplit(|b| *b == b'/').map(<[u8]>::to_vec));
                }
                Ok(_) => {
                    let inside = current.strip_prefix(&self.host).unwrap_or(&current);
                    return Err(ResolveError::NotADirectory(inside.to_path_buf()));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => match missing {
                    Missing::Absent => return Ok(None),
                    Missing::Create => {
                        fs::DirBuilder::new()
                            .mode(IMPLICIT_DIR_MODE)
                            .create(&current)
                            .map_err(|e| ResolveError::Io(current.clone(), e))?;
                        created(&current);
                        depth += 1;
                    }
                },
                Err(e) => return Err(ResolveError::Io(current, e)),
            }
        }
        Ok(Some(current))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn resolve(root: &mut RootDir, rel: &str, missing: Missing) -> Result<Option<PathBuf>, String> {
        root.resolve_dir(rel.as_bytes(), missing, &mut |_| {})
            .map(|p| p.map(Path::to_path_buf))
            .map_err(|e| format!("{e:?}"))
    }

    #[test]
    fn symlinks_in_components_resolve_inside_the_root() {
        let tmp = tempfile::tempdir().unwrap();
        let mut root = RootDir::open(&tmp.path().join("root")).unwrap();
        let host = root.host.clone();
        fs::create_dir_all(host.join("usr/lib")).unwrap();
        symlink("/", host.join("up")).unwrap();
        symlink("../../..", host.join("usr/climb")).unwrap();
        symlink("/usr/lib", host.join("abs")).unwrap();
        symlink("usr/lib", host.join("rel")).unwrap();
        symlink("loop2", host.join("loop1")).unwrap();
        symlink("loop1", host.join("loop2")).unwrap();
        fs::write(host.join("file"), b"x").unwrap();

        type Want = Result<Option<PathBuf>, &'static str>;
        let cases: &[(&str, Missing, Want)] = &[
            ("", Missing::Absent, Ok(Some(host.clone()))),
            ("usr/lib", Missing::Absent, Ok(Some(host.join("usr/lib")))),
            ("up", Missing::Absent, Ok(Some(host.clone()))),
            ("up/usr", Missing::Absent, Ok(Some(host.join("usr")))),
            ("usr/climb", Missing::Absent, Ok(Some(host.clone()))),
            ("usr/climb/etc", Missing::Create, Ok(Some(host.join("etc")))),
            ("abs", Missing::Absent, Ok(Some(host.join("usr/lib")))),
            ("rel", Missing::Absent, Ok(Some(host.join("usr/lib")))),
            ("nope/deeper", Missing::Absent, Ok(None)),
            (
                "new/deeper",
                Missing::Create,
                Ok(Some(host.join("new/deeper"))),
            ),
            ("loop1", Missing::Absent, Err("TooManySymlinks")),
            ("file/x", Missing::Create, Err("NotADirectory(\"file\")")),
        ];
        for (rel, missing, want) in cases {
            let got = resolve(&mut root, rel, *missing);
            match want {
                Ok(path) => assert_eq!(got.as_ref(), Ok(path), "{rel}"),
                Err(text) => assert_eq!(got.unwrap_err(), *text, "{rel}"),
            }
        }
        assert!(host.join("new/deeper").is_dir());
        assert!(!tmp.path().join("etc").exists());
    }
}
