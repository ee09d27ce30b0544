//! Whether the store can take new blobs. A fill whose temp file cannot be created or written
//! because the disk is full (`ENOSPC`, or `EDQUOT` for a quota), remounted read-only (`EROFS`)
//! or not writable to us (`EACCES`, `EPERM`) marks the store *full*; while it is, the handler
//! serves misses by streaming them from upstream without storing them (`passthrough.rs`),
//! instead of starting fills that would fail and cut their readers. Other errors (out of file
//! descriptors under connection load, `EMFILE`/`ENFILE`; `EIO`; ...) fail only the fill they
//! hit: they say nothing about the store's room, and switching every miss to pass-through for
//! [`RECHECK_AFTER`] over a passing descriptor shortage would cost more than it saves.
//!
//! The full state is checked again, so the store takes blobs once there is room:
//! - a commit of at least [`RECOVER_FREE_BYTES`] succeeds (a fill that was already running
//!   found room), or eviction, `gc` or `verify` removed files;
//! - the filesystem has at least [`RECOVER_FREE_BYTES`] more available than when the store was
//!   marked full (after the failed fill's temp file is gone), checked with `statvfs` at most
//!   every [`STATVFS_EVERY`];
//! - [`RECHECK_AFTER`] has passed: the next miss tries to store again (and marks the store full
//!   again if the disk still is).
//!
//! Other errors while creating, writing or committing a fill (`EIO`, `EMFILE`, ...) are counted
//! but do not mark the store full: they fail the one fill, whose readers retry.
//!
//! This module only keeps the state; `mod.rs` feeds it, the handler asks it.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A full store tries to take blobs again after this long, whatever the disk says.
pub const RECHECK_AFTER: Duration = Duration::from_secs(30);
/// A full store takes blobs again once this many more bytes are available than when it filled.
pub const RECOVER_FREE_BYTES: u64 = 1 << 20;
/// `statvfs` of the store root at most this often while the store is full.
pub const STATVFS_EVERY: Duration = Duration::from_millis(100);

/// Why a store write failed, as far as the store's health goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WriteFailure {
    /// The filesystem (or the quota) is full.
    NoSpace,
    /// The store cannot be written at all: a read-only filesystem, a permission. Counted with
    /// `Other` in the metrics, but marks the store full like `NoSpace`.
    Unwritable,
    /// Anything else: an I/O error, out of file descriptors, ...
    Other,
}

impl WriteFailure {
    /// Classifies an I/O error.
    pub fn of(e: &io::Error) -> Self {
        // By kind, not errno: errors annotated with a path (`store::annotate`) keep only it.
        match e.kind() {
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => Self::NoSpace,
            // EACCES and EPERM both map to PermissionDenied.
            io::ErrorKind::ReadOnlyFilesystem | io::ErrorKind::PermissionDenied => Self::Unwritable,
            _ => Self::Other,
        }
    }

    /// Whether this failure means the store cannot take blobs now.
    pub fn marks_full(self) -> bool {
        matches!(self, Self::NoSpace | Self::Unwritable)
    }
}

/// The store was marked full.
#[derive(Debug, Clone, Copy)]
struct Full {
    since: Instant,
    /// Bytes available to us on the filesystem once the failed fill's temp file is gone.
    available_bytes: Option<u64>,
    /// When `statvfs` was last asked.
    checked: Instant,
}

/// The store's health: full or not, and write errors counted by kind.
#[derive(Debug, Default)]
pub struct Health {
    /// A std `Mutex`: held to read or replace the state; `statvfs` runs outside it.
    full: Mutex<Option<Full>>,
    no_space_errors: AtomicU64,
    other_errors: AtomicU64,
}

impl Health {
    fn full(&self) -> std::sync::MutexGuard<'_, Option<Full>> {
        self.full.lock().expect("store health mutex poisoned")
    }

    /// Records a failed write; `freed_bytes` is what the failed temp file held (it is about to
    /// be removed). Returns its kind. Logs once when the store becomes full.
    pub fn write_failed(&self, e: &io::Error, root: &Path, freed_bytes: u64) -> WriteFailure {
        self.failed(e, root, freed_bytes)
    }

    /// Records that a temp file could not be created; marks the store full only for the
    /// causes the module doc names.
    pub fn create_failed(&self, e: &io::Error, root: &Path) -> WriteFailure {
        self.failed(e, root, 0)
    }

    fn failed(&self, e: &io::Error, root: &Path, freed_bytes: u64) -> WriteFailure {
        let kind = WriteFailure::of(e);
        match kind {
            WriteFailure::Other | WriteFailure::Unwritable => {
                self.other_errors.fetch_add(1, Ordering::Relaxed)
            }
            WriteFailure::NoSpace => self.no_space_errors.fetch_add(1, Ordering::Relaxed),
        };
        if kind.marks_full() {
            let available_bytes = available_bytes(root).map(|a| a + freed_bytes);
            let now = Instant::now();
            let was = self.full().replace(Full {
                since: now,
                available_bytes,
                checked: now,
            });
            if was.is_none() {
                tracing::error!(
                    root = %root.display(),
                    available_bytes,
                    error = %e,
                    "store cannot take blobs (disk full, or temp files cannot be created): misses are streamed from upstream without being stored until it can"
                );
            }
        }
        kind
    }

    /// Space was freed or a commit succeeded: the store takes blobs again.
    pub fn room_made(&self, why: &str) {
        if self.full().take().is_some() {
            tracing::info!(why, "store takes blobs again");
        }
    }

    /// Whether a new fill should write to the store; when it is full, rechecks as the module
    /// doc says. `statvfs` runs at most every [`STATVFS_EVERY`].
    pub fn accepts_fills(&self, root: &Path) -> bool {
        let now = Instant::now();
        let (since, baseline) = {
            let mut full = self.full();
            let Some(f) = full.as_mut() else {
                return true;
            };
            if now.duration_since(f.since) < RECHECK_AFTER
                && now.duration_since(f.checked) < STATVFS_EVERY
            {
                return false;
            }
            f.checked = now;
            (f.since, f.available_bytes)
        };
        if now.duration_since(since) >= RECHECK_AFTER {
            self.room_made("recheck interval passed");
            return true;
        }
        match (baseline, available_bytes(root)) {
            (Some(then), Some(now)) if now >= then.saturating_add(RECOVER_FREE_BYTES) => {
                self.room_made("space freed on the filesystem");
                true
            }
            _ => false,
        }
    }

    /// Whether the store is marked full (no recheck).
    pub fn is_full(&self) -> bool {
        self.full().is_some()
    }

    /// Write errors so far: `(no space, other)`.
    pub fn write_errors(&self) -> (u64, u64) {
        (
            self.no_space_errors.load(Ordering::Relaxed),
            self.other_errors.load(Ordering::Relaxed),
        )
    }
}

/// Bytes available to an unprivileged writer on the filesystem holding `path`.
pub fn available_bytes(path: &Path) -> Option<u64> {
    let s = rustix::fs::statvfs(path).ok()?;
    Some(s.f_bavail.saturating_mul(s.f_frsize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_space_marks_full_until_room_is_made_and_other_errors_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let h = Health::default();
        assert!(h.accepts_fills(dir.path()));
        let eio = io::Error::from_raw_os_error(rustix::io::Errno::IO.raw_os_error());
        assert_eq!(h.write_failed(&eio, dir.path(), 0), WriteFailure::Other);
        assert!(
            h.accepts_fills(dir.path()),
            "one failed write is not a full store"
        );
        let enospc = io::Error::from_raw_os_error(rustix::io::Errno::NOSPC.raw_os_error());
        // Annotated errors keep their kind.
        let annotated = super::super::annotate(enospc, "write", Path::new("/x"));
        assert_eq!(
            h.write_failed(&annotated, dir.path(), 0),
            WriteFailure::NoSpace
        );
        assert!(!h.accepts_fills(dir.path()));
        assert!(h.is_full());
        assert_eq!(h.write_errors(), (1, 1));
        h.room_made("test");
        assert!(h.accepts_fills(dir.path()));
        // A temp file that cannot be created on a read-only store stops fills.
        let erofs = io::Error::from_raw_os_error(rustix::io::Errno::ROFS.raw_os_error());
        assert_eq!(
            h.create_failed(&erofs, dir.path()),
            WriteFailure::Unwritable
        );
        assert!(!h.accepts_fills(dir.path()));
        assert_eq!(h.write_errors(), (1, 2));
    }

    #[test]
    fn only_full_read_only_or_forbidden_stores_are_marked_full() {
        use rustix::io::Errno;
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            (Errno::NOSPC, WriteFailure::NoSpace),
            (Errno::DQUOT, WriteFailure::NoSpace),
            (Errno::ROFS, WriteFailure::Unwritable),
            (Errno::ACCESS, WriteFailure::Unwritable),
            (Errno::PERM, WriteFailure::Unwritable),
            (Errno::MFILE, WriteFailure::Other),
            (Errno::NFILE, WriteFailure::Other),
            (Errno::IO, WriteFailure::Other),
            (Errno::NOMEM, WriteFailure::Other),
        ];
        for (errno, want) in cases {
            let e = io::Error::from_raw_os_error(errno.raw_os_error());
            // Annotated as `create_temp` does: the kind is kept.
            let e = super::super::annotate(e, "create temp file", Path::new("/x"));
            let h = Health::default();
            assert_eq!(h.create_failed(&e, dir.path()), want, "{errno:?}");
            assert_eq!(
                h.is_full(),
                want != WriteFailure::Other,
                "{errno:?} marks the store full: {}",
                want != WriteFailure::Other
            );
            let h = Health::default();
            h.write_failed(&e, dir.path(), 0);
            assert_eq!(
                h.is_full(),
                want != WriteFailure::Other,
                "{errno:?} (write)"
            );
        }
    }
}
