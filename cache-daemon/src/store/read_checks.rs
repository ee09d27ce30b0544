//! `verify_on_read` without letting clients force unbounded rehashing. A range of a committed
//! blob cannot be checked on its own, so before the first byte of a range goes out the whole
//! file is rehashed (on the blocking pool). Without care, every ranged GET would do so: 500
//! parallel `Range: bytes=0-0` on a 5 GiB layer would read 2.5 TB and exhaust the blocking pool.
//!
//! Two things bound that work:
//! - **Shared checks**: concurrent requests for the same file join the one running recheck
//!   (a shared future, like a flight for fills) instead of each starting its own. The recheck
//!   is a spawned task: it finishes, and its result is remembered, whoever still waits on it.
//! - **Remembered results**: a file that hashed to its digest (a recheck, or a whole GET that
//!   hashed it while streaming) is remembered as verified for [`VERIFIED_FOR`], keyed by the
//!   digest and the file's identity ([`FileIdentity`]: device, inode, size, mtime and ctime).
//!   A range within that window is served without a rehash; a file that was replaced or
//!   written to since (a new inode, or a changed mtime/ctime) is rechecked.
//!
//! Whole GETs always hash as they stream (`body::from_file_verified`), remembered or not, so a
//! corruption after a remembered verification is still caught by the next whole GET. What the
//! window leaves open: a byte flipped without any write through the filesystem (bit rot on the
//! medium) within [`VERIFIED_FOR`] of a verification can reach a range client; so can a write
//! in the same timestamp tick as the verification (the kernel's coarse clock, a few ms).

use std::collections::HashMap;
use std::fs::File;
use std::future::Future;
use std::io;
use std::os::unix::fs::MetadataExt as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::{BoxFuture, FutureExt as _, Shared};

use stampede_oci::Digest;

/// How long a verified file is trusted for ranges without a rehash.
pub const VERIFIED_FOR: Duration = Duration::from_secs(10 * 60);
/// At most this many verified files remembered; expired entries go first, then all.
const REMEMBERED_MAX: usize = 65_536;

/// Which file a verification was about: a replaced or rewritten file has another identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileIdentity {
    dev: u64,
    ino: u64,
    size_bytes: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl FileIdentity {
    /// The identity of an open file (`fstat`: no disk access).
    ///
    /// # Errors
    /// `fstat` failed.
    pub fn of(file: &File) -> io::Result<Self> {
        let m = file.metadata()?;
        let ns = |secs: i64, nsecs: i64| i128::from(secs) * 1_000_000_000 + i128::from(nsecs);
        Ok(Self {
            dev: m.dev(),
            ino: m.ino(),
            size_bytes: m.size(),
            mtime_ns: ns(m.mtime(), m.mtime_nsec()),
            ctime_ns: ns(m.ctime(), m.ctime_nsec()),
        })
    }
}

/// A recheck in progress: `Ok(matched)` or the error text, shared by every waiter.
pub type Recheck = Shared<BoxFuture<'static, Result<bool, String>>>;

/// Verified files remembered, and rechecks running.
#[derive(Debug, Default)]
pub struct ReadChecks {
    /// std `Mutex`es: held only to look up, insert or remove, never across `.await` or I/O.
    verified: Mutex<HashMap<Digest, (FileIdentity, Instant)>>,
    running: Mutex<HashMap<(Digest, FileIdentity), Recheck>>,
}

impl ReadChecks {
    /// Whether `digest`'s file with identity `id` verified less than [`VERIFIED_FOR`] ago.
    pub fn is_verified(&self, digest: &Digest, id: FileIdentity) -> bool {
        self.verified
            .lock()
            .expect("read checks mutex poisoned")
            .get(digest)
            .is_some_and(|(was, at)| *was == id && at.elapsed() < VERIFIED_FOR)
    }

    /// Remembers that `digest`'s file with identity `id` hashed to its digest just now.
    pub fn note_verified(&self, digest: &Digest, id: FileIdentity) {
        let mut verified = self.verified.lock().expect("read checks mutex poisoned");
        if verified.len() >= REMEMBERED_MAX && !verified.contains_key(digest) {
            verified.retain(|_, (_, at)| at.elapsed() < VERIFIED_FOR);
            if verified.len() >= REMEMBERED_MAX {
                verified.clear();
            }
        }
        verified.insert(digest.clone(), (id, Instant::now()));
    }

    /// Forgets any verification of `digest` (it was quarantined or removed).
    pub fn forget(&self, digest: &Digest) {
        self.verified
            .lock()
            .expect("read checks mutex poisoned")
            .remove(digest);
    }

    /// The running recheck of `digest`'s file `id`, or a new one: `start()` spawned as a task,
    /// its success remembered (before it stops being joinable, so a later caller finds either
    /// the running check or its result).
    pub fn join_or_start<F>(
        self: &Arc<Self>,
        digest: &Digest,
        id: FileIdentity,
        start: impl FnOnce() -> F,
    ) -> Recheck
    where
        F: Future<Output = Result<bool, String>> + Send + 'static,
    {
        let key = (digest.clone(), id);
        let mut running = self.running.lock().expect("read checks mutex poisoned");
        if let Some(check) = running.get(&key) {
            return check.clone();
        }
        let check = start();
        let checks = self.clone();
        let task_key = key.clone();
        let task = tokio::spawn(async move {
            let result = check.await;
            if result == Ok(true) {
                checks.note_verified(&task_key.0, task_key.1);
            }
            checks
                .running
                .lock()
                .expect("read checks mutex poisoned")
                .remove(&task_key);
            result
        });
        let shared = async move {
            task.await
                .unwrap_or_else(|e| Err(format!("recheck task failed: {e}")))
        }
        .boxed()
        .shared();
        running.insert(key, shared.clone());
        shared
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn concurrent_rechecks_share_one_run_and_success_is_remembered_per_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"abc").unwrap();
        let id = FileIdentity::of(&File::open(&path).unwrap()).unwrap();
        let d = Digest::of(b"abc");
        let checks = Arc::new(ReadChecks::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let mut rx = Some(rx);
        let mut waiters = Vec::new();
        for _ in 0..10 {
            let runs = runs.clone();
            let gate = rx.take();
            waiters.push(checks.join_or_start(&d, id, move || async move {
                runs.fetch_add(1, Ordering::SeqCst);
                if let Some(gate) = gate {
                    gate.await.ok();
                }
                Ok(true)
            }));
        }
        assert!(!checks.is_verified(&d, id), "not before the check ends");
        tx.send(()).unwrap();
        for w in waiters {
            assert_eq!(w.await, Ok(true));
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(checks.is_verified(&d, id));
        assert!(checks.running.lock().unwrap().is_empty());
        // A write changes the file's identity: no longer verified.
        std::thread::sleep(Duration::from_millis(20));
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"d")
            .unwrap();
        let changed = FileIdentity::of(&File::open(&path).unwrap()).unwrap();
        assert_ne!(changed, id);
        assert!(!checks.is_verified(&d, changed));
        checks.forget(&d);
        assert!(!checks.is_verified(&d, id));
    }
}
