//! Applying one layer's tar entries to the snapshot root, with the changeset semantics of the
//! OCI image spec ("Applying changesets") and containerd's `archive.Apply`: regular files,
//! directories, symlinks and hard links are created (replacing whatever a lower layer had at
//! that path, file over directory and back included), `.wh.<name>` deletes `<name>`,
//! `.wh..wh..opq` clears the lower-layer contents of its directory, and whiteouts themselves
//! are never written.
//!
//! Owns: per-entry refusal of anything escaping the root, the set of paths this layer created
//! (what an opaque directory keeps), directory modes and mtimes deferred to the end of the
//! layer, and the entry counters. Does not decompress or time the stream ([`super::stream`]),
//! resolve symlinks in parents ([`super::root`]), set ownership or xattrs, or fsync.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tar::EntryType;

use super::name::{self, Whiteout};
use super::root::{Missing, ResolveError, RootDir};
use super::{EntryName, LayerStats, Refusal, UnpackError, UnpackOptions};

/// Permission bits we restore: rwx for all, setuid, setgid, sticky.
const MODE_MASK: u32 = 0o7777;
/// setuid and setgid, which mkdir(2) does not set.
const SETID_BITS: u32 = 0o6000;
/// Owner rwx: a directory is created with these so its children can be written, and gets its
/// exact mode at the end of the layer.
const OWNER_RWX: u32 = 0o700;

/// What the header says about the entry being applied.
#[derive(Debug, Clone, Copy)]
struct Meta {
    index: u64,
    kind: EntryType,
    /// Permission bits, [`MODE_MASK`] applied.
    mode: u32,
    /// `Some` only when mtimes are preserved.
    mtime: Option<SystemTime>,
}

/// A directory whose exact mode or mtime is applied once the layer's entries are all written.
#[derive(Debug)]
struct DeferredDir {
    index: u64,
    /// Cleaned name relative to the root, re-resolved at the end (never a stored host path,
    /// which a later entry could have turned into a symlink).
    name: Vec<u8>,
    mode: Option<u32>,
    mtime: Option<SystemTime>,
}

/// The state of applying one layer.
#[derive(Debug)]
pub(super) struct Applier {
    root: RootDir,
    preserve_mtime: bool,
    /// Bits the process umask clears at creation; `None` if unknown (then always chmod).
    umask: Option<u32>,
    /// Host paths this layer created or declared: an opaque marker keeps these.
    created: HashSet<PathBuf>,
    deferred: Vec<DeferredDir>,
    /// The current entry's name as in the archive (for errors).
    raw: Vec<u8>,
    /// The current entry's cleaned name.
    name: Vec<u8>,
    /// The current entry's link name as in the archive.
    link: Vec<u8>,
    /// A hard link target's cleaned name.
    link_clean: Vec<u8>,
    /// Copy buffer between the stream and files.
    buf: Vec<u8>,
    stats: LayerStats,
}

impl Applier {
    /// Prepares to apply a layer to `root` (created if missing).
    ///
    /// # Errors
    /// [`UnpackError::Root`] if the root cannot be created or is not a directory.
    pub(super) fn new(root: &Path, opts: &UnpackOptions) -> Result<Self, UnpackError> {
        let root = RootDir::open(root).map_err(|source| UnpackError::Root {
            path: root.to_path_buf(),
            source,
        })?;
        Ok(Self {
            root,
            preserve_mtime: opts.preserve_mtime,
            umask: process_umask(),
            created: HashSet::new(),
            deferred: Vec::new(),
            raw: Vec::new(),
            name: Vec::new(),
            link: Vec::new(),
            link_clean: Vec::new(),
            buf: vec![0; opts.copy_buffer_bytes.max(4096)],
            stats: LayerStats::default(),
        })
    }

    pub(super) fn stats(&self) -> &LayerStats {
        &self.stats
    }

    /// Applies entry number `index` (0-based, in archive order).
    ///
    /// # Errors
    /// [`UnpackError::Refused`] for an entry that would escape the root or is malformed,
    /// [`UnpackError::EntryData`] when its data cannot be read, [`UnpackError::Apply`] when a
    /// filesystem call fails.
    pub(super) fn apply<R: Read>(
        &mut self,
        index: u64,
        entry: &mut tar::Entry<'_, R>,
    ) -> Result<(), UnpackError> {
        self.stats.entries += 1;
        self.raw.clear();
        self.raw.extend_from_slice(&entry.path_bytes());
        let header = entry.header();
        let kind = header.entry_type();
        if kind.is_pax_global_extensions() {
            self.stats.skipped += 1;
            return Ok(());
        }
        let unreadable = |source| UnpackError::EntryData {
            entry: self.entry_name(index),
            source,
        };
        let mode = header.mode().map_err(unreadable)? & MODE_MASK;
        let mtime = if self.preserve_mtime {
            let secs = header.mtime().map_err(unreadable)?;
            Some(UNIX_EPOCH + Duration::from_secs(secs))
        } else {
            None
        };
        self.link.clear();
        if matches!(kind, EntryType::Symlink | EntryType::Link) {
            match entry.link_name_bytes() {
                Some(link) if !link.is_empty() => self.link.extend_from_slice(&link),
                _ => return Err(self.refuse(index, Refusal::MissingLinkName)),
            }
        }

        let mut cleaned = std::mem::take(&mut self.name);
        if let Err(reason) = name::clean(&self.raw, &mut cleaned) {
            return Err(self.refuse(index, reason));
        }
        let meta = Meta {
            index,
            kind,
            mode,
            mtime,
        };
        let link = std::mem::take(&mut self.link);
        let result = self.apply_named(meta, &cleaned, &link, entry);
        self.name = cleaned;
        self.link = link;
        result
    }

    /// Applies the entry whose cleaned name is `cleaned` (and link name `link`, for links).
    fn apply_named<R: Read>(
        &mut self,
        meta: Meta,
        cleaned: &[u8],
        link: &[u8],
        entry: &mut tar::Entry<'_, R>,
    ) -> Result<(), UnpackError> {
        let index = meta.index;
        if cleaned.is_empty() {
            // The root itself (`./`): its mode and owner are the snapshotter's, not the layer's.
            return match meta.kind {
                EntryType::Directory => {
                    self.stats.directories += 1;
                    Ok(())
                }
                _ => Err(self.refuse(index, Refusal::ReplacesRoot)),
            };
        }
        let (parent, base) = name::split_parent(cleaned);
        match name::whiteout(base) {
            Err(reason) => return Err(self.refuse(index, reason)),
            Ok(Whiteout::Opaque) => return self.opaque(index, parent),
            Ok(Whiteout::Remove(target)) => return self.whiteout(index, parent, target),
            Ok(Whiteout::Meta) => {
                self.stats.skipped += 1;
                return Ok(());
            }
            Ok(Whiteout::None) => {}
        }
        match meta.kind {
            // Old (pre-POSIX) archives mark directories with a trailing slash only.
            EntryType::Regular if self.raw.ends_with(b"/") => self.directory(meta, cleaned),
            EntryType::Directory => self.directory(meta, cleaned),
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                self.regular(meta, parent, base, entry)
            }
            EntryType::Symlink => self.symlink(index, parent, base, link),
            EntryType::Link => self.hard_link(index, parent, base, link),
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                self.stats.skipped += 1;
                Ok(())
            }
            other => Err(self.refuse(index, Refusal::UnsupportedType(other.as_byte()))),
        }
    }

    /// Applies deferred directory modes and mtimes, deepest-declared first.
    ///
    /// # Errors
    /// [`UnpackError::Apply`] when a chmod or utimes fails.
    pub(super) fn finish(mut self) -> Result<LayerStats, UnpackError> {
        let deferred = std::mem::take(&mut self.deferred);
        for dir in deferred.iter().rev() {
            let (parent, base) = name::split_parent(&dir.name);
            let resolved = self.root.resolve_dir(parent, Missing::Absent, &mut |_| {});
            let Ok(Some(parent)) = resolved else {
                continue; // removed or replaced later in the layer: nothing to finish
            };
            let path = parent.join(OsStr::from_bytes(base));
            if !fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
                continue;
            }
            let failed = |op: &'static str, source| UnpackError::Apply {
                entry: EntryName {
                    index: dir.index,
                    name: PathBuf::from(OsStr::from_bytes(&dir.name)),
                },
                op,
                path: path.clone(),
                source,
            };
            if let Some(mtime) = dir.mtime {
                File::open(&path)
                    .and_then(|f| f.set_modified(mtime))
                    .map_err(|e| failed("set mtime of directory", e))?;
            }
            if let Some(mode) = dir.mode {
                fs::set_permissions(&path, Permissions::from_mode(mode))
                    .map_err(|e| failed("set mode of directory", e))?;
            }
        }
        Ok(self.stats)
    }

    fn regular<R: Read>(
        &mut self,
        meta: Meta,
        parent: &[u8],
        base: &[u8],
        entry: &mut tar::Entry<'_, R>,
    ) -> Result<(), UnpackError> {
        let Meta {
            index, mode, mtime, ..
        } = meta;
        let path = self.host_path(index, parent, base)?;
        let mut file = self.replacing(index, &path, "create file", || {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&path)
        })?;
        loop {
            let n = match entry.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(UnpackError::EntryData {
                        entry: self.entry_name(index),
                        source,
                    })
                }
            };
            file.write_all(&self.buf[..n])
                .map_err(|e| self.failed(index, "write file", &path, e))?;
            self.stats.file_bytes += n as u64;
        }
        if self.umask_interferes(mode) {
            file.set_permissions(Permissions::from_mode(mode))
                .map_err(|e| self.failed(index, "set mode of file", &path, e))?;
        }
        if let Some(mtime) = mtime {
            file.set_modified(mtime)
                .map_err(|e| self.failed(index, "set mtime of file", &path, e))?;
        }
        self.stats.regular_files += 1;
        self.created.insert(path);
        Ok(())
    }

    fn directory(&mut self, meta: Meta, cleaned: &[u8]) -> Result<(), UnpackError> {
        let Meta {
            index, mode, mtime, ..
        } = meta;
        let (parent, base) = name::split_parent(cleaned);
        let path = self.host_path(index, parent, base)?;
        let mut builder = fs::DirBuilder::new();
        builder.mode(mode | OWNER_RWX);
        let fresh = match builder.create(&path) {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
                    false // a lower layer's directory: keep its contents, take the new mode
                } else {
                    self.remove_existing(index, &path)?;
                    builder
                        .create(&path)
                        .map_err(|e| self.failed(index, "create directory", &path, e))?;
                    true
                }
            }
            Err(e) => return Err(self.failed(index, "create directory", &path, e)),
        };
        // mkdir(2) honours the sticky bit but not setuid/setgid, and applies the umask.
        let exact = fresh
            && mode & OWNER_RWX == OWNER_RWX
            && mode & SETID_BITS == 0
            && !self.umask_interferes(mode);
        let mut deferred_mode = None;
        if !exact {
            if mode & OWNER_RWX == OWNER_RWX {
                fs::set_permissions(&path, Permissions::from_mode(mode))
                    .map_err(|e| self.failed(index, "set mode of directory", &path, e))?;
            } else {
                deferred_mode = Some(mode);
            }
        }
        if deferred_mode.is_some() || mtime.is_some() {
            self.deferred.push(DeferredDir {
                index,
                name: cleaned.to_vec(),
                mode: deferred_mode,
                mtime,
            });
        }
        self.stats.directories += 1;
        self.root.remember(cleaned, &path);
        self.created.insert(path);
        Ok(())
    }

    fn symlink(
        &mut self,
        index: u64,
        parent: &[u8],
        base: &[u8],
        target: &[u8],
    ) -> Result<(), UnpackError> {
        if !name::symlink_stays_inside(parent, target) {
            return Err(self.refuse(
                index,
                Refusal::SymlinkEscapes {
                    target: PathBuf::from(OsStr::from_bytes(target)),
                },
            ));
        }
        let path = self.host_path(index, parent, base)?;
        let target = OsStr::from_bytes(target);
        self.replacing(index, &path, "create symlink", || {
            std::os::unix::fs::symlink(target, &path)
        })?;
        self.stats.symlinks += 1;
        self.created.insert(path);
        Ok(())
    }

    fn hard_link(
        &mut self,
        index: u64,
        parent: &[u8],
        base: &[u8],
        link: &[u8],
    ) -> Result<(), UnpackError> {
        let mut cleaned = std::mem::take(&mut self.link_clean);
        let target = self.hard_link_target(index, link, &mut cleaned);
        self.link_clean = cleaned;
        let target = target?;
        let path = self.host_path(index, parent, base)?;
        if path != target {
            // link(2) does not follow a symlink target: the new name links the symlink itself.
            self.replacing(index, &path, "create hard link", || {
                fs::hard_link(&target, &path)
            })?;
        }
        self.stats.hard_links += 1;
        self.created.insert(path);
        Ok(())
    }

    /// The host path of a hard link's target, which must already exist inside the root.
    fn hard_link_target(
        &mut self,
        index: u64,
        raw_target: &[u8],
        cleaned: &mut Vec<u8>,
    ) -> Result<PathBuf, UnpackError> {
        let target = || PathBuf::from(OsStr::from_bytes(raw_target));
        if name::clean(raw_target, cleaned).is_err() {
            return Err(self.refuse(index, Refusal::HardLinkEscapes { target: target() }));
        }
        let (target_parent, target_base) = name::split_parent(cleaned);
        let path = match self.resolve(index, target_parent, Missing::Absent)? {
            Some(dir) => dir.join(OsStr::from_bytes(target_base)),
            None => PathBuf::new(),
        };
        if path.as_os_str().is_empty() || fs::symlink_metadata(&path).is_err() {
            return Err(self.refuse(index, Refusal::HardLinkTargetMissing { target: target() }));
        }
        Ok(path)
    }

    fn whiteout(&mut self, index: u64, parent: &[u8], target: &[u8]) -> Result<(), UnpackError> {
        self.stats.whiteouts += 1;
        let Some(dir) = self.resolve(index, parent, Missing::Absent)? else {
            return Ok(()); // nothing below to hide
        };
        let path = dir.join(OsStr::from_bytes(target));
        match fs::symlink_metadata(&path) {
            Ok(_) => self.remove_existing(index, &path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.failed(index, "inspect whiteout target", &path, e)),
        }
    }

    fn opaque(&mut self, index: u64, parent: &[u8]) -> Result<(), UnpackError> {
        self.stats.opaque_dirs += 1;
        let dir = self
            .resolve(index, parent, Missing::Create)?
            .expect("Missing::Create always resolves");
        let mut removed = false;
        let mut pending = vec![dir];
        while let Some(dir) = pending.pop() {
            let listing = fs::read_dir(&dir).map_err(|e| self.failed(index, "list", &dir, e))?;
            for child in listing {
                let child = child.map_err(|e| self.failed(index, "list", &dir, e))?;
                let path = child.path();
                let kind = child
                    .file_type()
                    .map_err(|e| self.failed(index, "inspect", &path, e))?;
                if self.created.contains(&path) {
                    if kind.is_dir() {
                        pending.push(path); // declared by this layer: clear what lies below
                    }
                    continue;
                }
                remove(&path, kind.is_dir())
                    .map_err(|e| self.failed(index, "remove lower-layer entry", &path, e))?;
                removed = true;
            }
        }
        if removed {
            self.root.invalidate();
        }
        Ok(())
    }

    /// The host path for `base` in the cleaned directory `parent`, creating missing parents.
    fn host_path(
        &mut self,
        index: u64,
        parent: &[u8],
        base: &[u8],
    ) -> Result<PathBuf, UnpackError> {
        let dir = self
            .resolve(index, parent, Missing::Create)?
            .expect("Missing::Create always resolves");
        Ok(dir.join(OsStr::from_bytes(base)))
    }

    fn resolve(
        &mut self,
        index: u64,
        parent: &[u8],
        missing: Missing,
    ) -> Result<Option<PathBuf>, UnpackError> {
        let created = &mut self.created;
        let resolved = self
            .root
            .resolve_dir(parent, missing, &mut |dir| {
                created.insert(dir.to_path_buf());
            })
            .map(|dir| dir.map(Path::to_path_buf));
        resolved.map_err(|e| match e {
            ResolveError::NotADirectory(path) => {
                self.refuse(index, Refusal::NotADirectory { path })
            }
            ResolveError::TooManySymlinks => self.refuse(index, Refusal::SymlinkLoop),
            ResolveError::Io(path, source) => {
                self.failed(index, "resolve directory", &path, source)
            }
        })
    }

    /// Runs `create` for `path`, replacing whatever a lower layer had there if it exists.
    fn replacing<T>(
        &mut self,
        index: u64,
        path: &Path,
        op: &'static str,
        create: impl Fn() -> io::Result<T>,
    ) -> Result<T, UnpackError> {
        match create() {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                self.remove_existing(index, path)?;
                create()
            }
            other => other,
        }
        .map_err(|e| self.failed(index, op, path, e))
    }

    /// Removes whatever is at `path` (never following a symlink there).
    fn remove_existing(&mut self, index: u64, path: &Path) -> Result<(), UnpackError> {
        let is_dir = fs::symlink_metadata(path).is_ok_and(|m| m.is_dir());
        remove(path, is_dir).map_err(|e| self.failed(index, "replace", path, e))?;
        self.root.invalidate();
        Ok(())
    }

    /// Whether creating with `mode` under the current umask would not give `mode` exactly.
    fn umask_interferes(&self, mode: u32) -> bool {
        self.umask.is_none_or(|umask| mode & umask != 0)
    }

    fn entry_name(&self, index: u64) -> EntryName {
        EntryName {
            index,
            name: PathBuf::from(OsStr::from_bytes(&self.raw)),
        }
    }

    fn refuse(&self, index: u64, reason: Refusal) -> UnpackError {
        UnpackError::Refused {
            entry: self.entry_name(index),
            reason,
        }
    }

    fn failed(&self, index: u64, op: &'static str, path: &Path, source: io::Error) -> UnpackError {
        UnpackError::Apply {
            entry: self.entry_name(index),
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Removes the directory tree or the single entry (a symlink is never followed) at `path`.
fn remove(path: &Path, is_dir: bool) -> io::Result<()> {
    if is_dir {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    }
}

/// The process umask, from `/proc/self/status` (reading it with `umask(2)` would change it).
fn process_umask() -> Option<u32> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let value = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
    u32::from_str_radix(value.trim(), 8).ok()
}
