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
use std::io::IoSliceMut;
use std::path::Path;

use bytes::{Bytes, BytesMut};
use rustix::fs::{Mode, OFlags, ResolveFlags, CWD};
use rustix::io::ReadWriteFlags;

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

/// Reads up to `len` bytes at `offset` from the page cache only. `None` when not even the first
/// byte is cached (or at end of file); otherwise the bytes that were cached, possibly fewer
/// than `len`.
pub fn read(file: &File, offset: u64, len: usize) -> Option<Bytes> {
    let mut buf = BytesMut::zeroed(len);
    let n = rustix::io::preadv2(
        file,
        &mut [IoSliceMut::new(&mut buf)],
        offset,
        ReadWriteFlags::NOWAIT,
    )
    .ok()?;
    if n == 0 {
        return None;
    }
    buf.truncate(n);
    Some(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    #[test]
    fn reads_what_was_just_written_and_opens_a_cached_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        std::fs::File::create(&path)
            .unwrap()
            .write_all(b"hello world")
            .unwrap();
        // Just created: its dentry is cached. (Kernels without RESOLVE_CACHED say None.)
        let file = open(&path).unwrap_or_else(|| File::open(&path).unwrap());
        // Just written: in the page cache. (Filesystems without RWF_NOWAIT say None.)
        if let Some(bytes) = read(&file, 6, 100) {
            assert_eq!(&bytes[..], b"world");
        }
        assert!(read(&file, 11, 4).is_none(), "end of file is not data");
        assert!(open(&dir.path().join("missing")).is_none());
    }
}
