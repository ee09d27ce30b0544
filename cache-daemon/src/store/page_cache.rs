//! Opens and reads that never wait on the disk, for use on runtime threads: they succeed only
//! when the kernel's caches already hold what is asked for, and otherwise say so (`None`) so the
//! caller goes to the blocking pool as before. A blocking-pool round trip costs two thread
//! wake-ups; on a hot blob the data is in the page cache and the read is a memory copy, so
//! doing it inline is what lets small blobs and manifests be served at nginx's rate.
//!
//! Built on `openat2(RESOLVE_CACHED)` (Linux 5.12) and `preadv2(RWF_NOWAIT)` (Linux 4.14) through
//! `rustix`'s safe wrappers. Any error, including "not supported by this kernel or filesystem",
//! means `None`: the fast path is only ever an optimisation, and the blocking path reports real
//! errors with their context.

use std::fs::File;
use std::io::{self, IoSliceMut};
use std::os::unix::fs::FileExt as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use rustix::fs::{Mode, OFlags, ResolveFlags, CWD};
use rustix::io::{Errno, ReadWriteFlags};

/// Opens `path` read-only if every step of its resolution is in the dentry cache.
pub fn open(path: &Path) -> Option<File> {
    rustix::fs::openat2(
        CWD,
        path,
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::CACHED,
    )
    .ok()
    .map(File::from)
}

/// Set once `RWF_NOWAIT` reads fail as unsupported here (kernel or filesystem): every later
/// read then goes straight to the blocking pool instead of paying a failed syscall first.
static NOWAIT_UNSUPPORTED: AtomicBool = AtomicBool::new(false);

/// Reads up to `len` bytes at `offset` from the page cache only, into `buf` (`len` bytes
/// long). The count read: 0 when not even the first byte is cached, at end of file, or when
/// the fast path is unavailable.
fn read_cached(file: &File, offset: u64, buf: &mut [u8]) -> usize {
    if NOWAIT_UNSUPPORTED.load(Ordering::Relaxed) {
        return 0;
    }
    match rustix::io::preadv2(
        file,
        &mut [IoSliceMut::new(buf)],
        offset,
        ReadWriteFlags::NOWAIT,
    ) {
        Ok(n) => n,
        Err(e) => {
            if e == Errno::OPNOTSUPP || e == Errno::INVAL {
                NOWAIT_UNSUPPORTED.store(true, Ordering::Relaxed);
            }
            0
        }
    }
}

/// `statfs` magic of tmpfs, whose files live in memory (`linux/magic.h`).
const TMPFS_MAGIC: rustix::fs::FsWord = 0x0102_1994;

/// Whether the page cache holds the first and the last byte of `len` bytes at `offset` of
/// `file`: a probe (two one-byte reads that never wait on the disk) for whether the kernel can
/// send the span without waiting on the disk. Pages between the two are not asked about: a file
/// is read and cached front to back, and one evicted in between costs that page's disk read on a
/// runtime thread, not a wrong byte. A file on tmpfs, which cannot be read this way, is in
/// memory by definition. `false` on any other error.
///
/// Unlike the reads above, this never consults or sets the process-wide "unsupported" flag: a
/// probe on one filesystem says nothing about another (the store and a test's tmpfs, say).
pub fn holds(file: &File, offset: u64, len: usize) -> bool {
    if len == 0 {
        return false;
    }
    let probe = |at: u64| {
        let mut byte = [0u8; 1];
        rustix::io::preadv2(
            file,
            &mut [IoSliceMut::new(&mut byte)],
            at,
            ReadWriteFlags::NOWAIT,
        )
    };
    match (probe(offset), probe(offset + (len as u64 - 1))) {
        (Ok(1), Ok(1)) => true,
        (Err(e), _) | (_, Err(e)) if e == Errno::OPNOTSUPP || e == Errno::INVAL => {
            rustix::fs::fstatfs(file).is_ok_and(|s| s.f_type == TMPFS_MAGIC)
        }
        _ => false,
    }
}

/// Reads `len` bytes at `offset` of `file` (which holds them) without a runtime thread ever
/// waiting on the disk: inline when the page cache has them, else on the blocking pool, reusing
/// the same buffer. With `whole = false` a cached prefix is returned as it is (a streaming
/// caller asks for the rest next); with `whole = true` only all `len` bytes count as cached.
///
/// # Errors
/// The blocking read fails (including a file shorter than `offset + len`).
pub async fn read_at(file: &Arc<File>, offset: u64, len: usize, whole: bool) -> io::Result<Bytes> {
    let mut buf = BytesMut::zeroed(len);
    let n = read_cached(file, offset, &mut buf);
    if n > 0 && (!whole || n == len) {
        buf.truncate(n);
        return Ok(buf.freeze());
    }
    let file = file.clone();
    tokio::task::spawn_blocking(move || {
        file.read_exact_at(&mut buf, offset)?;
        Ok(buf.freeze())
    })
    .await
    .map_err(io::Error::other)?
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    #[tokio::test]
    async fn reads_what_was_just_written_and_opens_a_cached_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        std::fs::File::create(&path)
            .unwrap()
            .write_all(b"hello world")
            .unwrap();
        // Just created: its dentry is cached. (Kernels without RESOLVE_CACHED say None.)
        let file = Arc::new(open(&path).unwrap_or_else(|| File::open(&path).unwrap()));
        // Just written: in the page cache, or read on the blocking pool; the same bytes.
        let mut buf = [0u8; 5];
        let n = read_cached(&file, 6, &mut buf);
        assert!(n == 0 || &buf[..n] == b"world");
        assert_eq!(&read_at(&file, 6, 5, true).await.unwrap()[..], b"world");
        assert_eq!(&read_at(&file, 0, 5, false).await.unwrap()[..], b"hello");
        assert_eq!(
            read_cached(&file, 11, &mut buf),
            0,
            "end of file is not data"
        );
        assert!(read_at(&file, 8, 10, true).await.is_err(), "past the end");
        assert!(open(&dir.path().join("missing")).is_none());
        // Just read: cached (tempdir is on a filesystem with RWF_NOWAIT reads, or tmpfs).
        assert!(holds(&file, 0, 11));
        assert!(!holds(&file, 6, 6), "a span past the end is not held");
        assert!(!holds(&file, 0, 0));
    }
}
