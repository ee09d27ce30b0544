//! Single-flight with fan-out, as a type. The first request for an uncached digest gets
//! [`Claim::Leader`] and starts the one upstream fill; every other request, including those that
//! arrive mid-fill, gets [`Claim::Follower`] and reads the growing temp file as bytes land,
//! told of progress through a `watch` channel. The fill belongs to the daemon (a spawned task
//! holding the [`FillGuard`]), not to the first client, so it completes if that client leaves.
//! If the fill task dies without finishing, the guard's `Drop` marks the flight failed, so no
//! follower waits forever, and removes it, so the next request retries.
//!
//! Followers that keep up with the fill are served from memory: the flight keeps the last
//! [`WINDOW_BYTES`] the writer put in the file as the very frames that came off the upstream
//! connection (shared, not copied), so a burst's followers send them without reading the file
//! back. A follower that falls further behind reads the file.
//!
//! This module knows nothing of HTTP or upstreams: `fill.rs` drives a fill, `body.rs` turns a
//! flight into a response body.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::watch;

use stampede_oci::Digest;

/// Bytes of a fill kept in memory behind the writer, per flight.
pub const WINDOW_BYTES: u64 = 4 << 20;
/// A window slice shorter than this is gathered with the frames after it into one chunk, so a
/// follower does not send a trickle of small frames (frames off a slow link are small).
const GATHER_BELOW: usize = 32 * 1024;

/// What a request for a blob gets.
#[derive(Debug)]
pub enum Claim {
    /// The blob is committed: serve it from the store.
    Cached,
    /// This request starts the upstream fill and owns it until it hands it to a task.
    Leader(FillGuard),
    /// A fill is already running: read its bytes as they land.
    Follower(Arc<Flight>),
}

/// Why a fill ended without a committed blob. Cheap to clone: every follower gets a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FillFailure {
    /// The upstream answered with this status instead of the blob.
    Status {
        /// The upstream's status code.
        status: u16,
        /// Its `Retry-After`, for 429s.
        retry_after: Option<Duration>,
    },
    /// The upstream could not be reached or broke the connection.
    Unreachable,
    /// The upstream stopped answering (headers or body) within the timeout.
    Timeout,
    /// The bytes did not hash to the digest.
    Mismatch,
    /// The body ended before its `Content-Length`.
    Truncated,
    /// Our disk failed.
    Local,
    /// The temp file could not be created because the store cannot take blobs (full,
    /// read-only): nothing was sent, so readers may stream the blob from upstream instead.
    StoreFull,
    /// The fill task ended without saying why (it panicked or was cancelled).
    Abandoned,
}

impl std::fmt::Display for FillFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Status { status, .. } => write!(f, "upstream answered {status}"),
            Self::Unreachable => f.write_str("upstream unreachable"),
            Self::Timeout => f.write_str("upstream timed out"),
            Self::Mismatch => f.write_str("digest mismatch"),
            Self::Truncated => f.write_str("upstream body ended early"),
            Self::Local => f.write_str("local storage error"),
            Self::StoreFull => f.write_str("store cannot take blobs"),
            Self::Abandoned => f.write_str("fill abandoned"),
        }
    }
}

/// Where a fill is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FillState {
    /// Bytes are landing.
    Running,
    /// Verified and committed; `written_bytes` is the blob's size.
    Done,
    /// Ended without a blob; readers must cut their responses short.
    Failed(FillFailure),
}

/// Progress of a fill as followers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// Bytes written to the temp file so far (readable by `pread`).
    pub written_bytes: u64,
    /// Running, done or failed.
    pub state: FillState,
}

/// What is known once the upstream has answered 200: the file to read and its expected size.
#[derive(Debug)]
pub struct Started {
    /// The temp file, shared with the writer; read with positional reads only.
    pub file: Arc<File>,
    /// `Content-Length` of the upstream answer, when it sent one.
    pub total_bytes: Option<u64>,
}

/// The most recent frames written, by file offset, in order and contiguous.
#[derive(Debug, Default)]
struct Window {
    frames: VecDeque<(u64, Bytes)>,
    bytes: u64,
}

/// What a flight fills: a whole blob, or one stripe of it (cluster mode, `cluster/origin.rs`).
type Key = (Digest, Option<u32>);

/// One fill in progress.
#[derive(Debug)]
pub struct Flight {
    digest: Digest,
    stripe: Option<u32>,
    started: OnceLock<Started>,
    progress: watch::Sender<Progress>,
    /// A std `Mutex`: held to push, pop or slice a frame; never across `.await`.
    window: Mutex<Window>,
}

impl Flight {
    fn new(digest: Digest, stripe: Option<u32>) -> Self {
        Self {
            digest,
            stripe,
            started: OnceLock::new(),
            progress: watch::Sender::new(Progress {
                written_bytes: 0,
                state: FillState::Running,
            }),
            window: Mutex::new(Window::default()),
        }
    }

    /// Up to `max` bytes at `pos` from the in-memory window, when it still holds `pos`: the
    /// frame's own bytes when it has at least `GATHER_BELOW` of them (or all `max`), else a copy
    /// gathered from it and the frames after it. `None` when `pos` is behind the window or not
    /// written yet. The caller must not ask beyond what progress says was written.
    pub fn recent(&self, pos: u64, max: usize) -> Option<Bytes> {
        let w = self.window.lock().expect("window mutex poisoned");
        let i = w.frames.partition_point(|(off, _)| *off <= pos);
        let (off, frame) = w.frames.get(i.checked_sub(1)?)?;
        let rel = usize::try_from(pos - off).ok()?;
        if rel >= frame.len() {
            return None;
        }
        let here = frame.len() - rel;
        if here >= max.min(GATHER_BELOW) {
            return Some(frame.slice(rel..rel + here.min(max)));
        }
        let mut out = BytesMut::with_capacity(max);
        out.extend_from_slice(&frame[rel..]);
        for (_, next) in w.frames.range(i..) {
            let take = next.len().min(max - out.len());
            out.extend_from_slice(&next[..take]);
            if out.len() == max {
                break;
            }
        }
        Some(out.freeze())
    }

    /// The blob being filled.
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// A receiver of progress updates.
    pub fn subscribe(&self) -> watch::Receiver<Progress> {
        self.progress.subscribe()
    }

    /// The current progress.
    pub fn progress(&self) -> Progress {
        self.progress.borrow().clone()
    }

    /// The file and size, once the upstream has answered; `None` before.
    pub fn started(&self) -> Option<&Started> {
        self.started.get()
    }

    /// Waits until the upstream has answered and the temp file exists.
    ///
    /// # Errors
    /// The [`FillFailure`] if the fill failed before (or instead of) starting.
    pub async fn wait_started(&self) -> Result<&Started, FillFailure> {
        let mut rx = self.subscribe();
        loop {
            if let Some(s) = self.started.get() {
                return Ok(s);
            }
            if let FillState::Failed(f) = &rx.borrow_and_update().state {
                return Err(f.clone());
            }
            // The sender lives in `self`, so this cannot fail while we hold `&self`.
            rx.changed().await.map_err(|_| FillFailure::Abandoned)?;
        }
    }
}

/// Every fill in progress, by digest (and stripe, for a cluster node's stripe fills).
#[derive(Debug, Default)]
pub struct Flights {
    /// A std `Mutex`: held only to look up, insert or remove an entry; never across `.await`.
    map: Mutex<HashMap<Key, Arc<Flight>>>,
}

impl Flights {
    /// Claims `digest`: [`Claim::Cached`] if `is_cached()` says it is committed,
    /// [`Claim::Follower`] if a fill is running, else [`Claim::Leader`] with a new flight.
    ///
    /// `is_cached` is checked under the flights lock, after the map: a fill removes its flight
    /// only after committing, so a request either sees the flight or the committed blob and
    /// never starts a second fetch of a blob that just landed.
    pub fn claim(self: &Arc<Self>, digest: &Digest, is_cached: impl FnOnce() -> bool) -> Claim {
        self.claim_key((digest.clone(), None), is_cached)
    }

    /// Claims stripe `stripe` of `digest` (never [`Claim::Cached`]: stripes are not committed).
    pub fn claim_stripe(self: &Arc<Self>, digest: &Digest, stripe: u32) -> Claim {
        self.claim_key((digest.clone(), Some(stripe)), || false)
    }

    fn claim_key(self: &Arc<Self>, key: Key, is_cached: impl FnOnce() -> bool) -> Claim {
        let mut map = self.map.lock().expect("flights mutex poisoned");
        if let Some(f) = map.get(&key) {
            return Claim::Follower(f.clone());
        }
        if is_cached() {
            return Claim::Cached;
        }
        let flight = Arc::new(Flight::new(key.0.clone(), key.1));
        map.insert(key, flight.clone());
        Claim::Leader(FillGuard {
            flights: self.clone(),
            flight,
            finished: false,
        })
    }

    /// The running fill of `digest`, if any.
    pub fn get(&self, digest: &Digest) -> Option<Arc<Flight>> {
        self.map
            .lock()
            .expect("flights mutex poisoned")
            .get(&(digest.clone(), None))
            .cloned()
    }

    /// The running fill of stripe `stripe` of `digest`, if any.
    pub fn get_stripe(&self, digest: &Digest, stripe: u32) -> Option<Arc<Flight>> {
        self.map
            .lock()
            .expect("flights mutex poisoned")
            .get(&(digest.clone(), Some(stripe)))
            .cloned()
    }

    /// Number of fills in progress.
    pub fn len(&self) -> usize {
        self.map.lock().expect("flights mutex poisoned").len()
    }

    /// Whether no fill is in progress.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn remove(&self, flight: &Arc<Flight>) {
        let key = (flight.digest.clone(), flight.stripe);
        let mut map = self.map.lock().expect("flights mutex poisoned");
        if map.get(&key).is_some_and(|f| Arc::ptr_eq(f, flight)) {
            map.remove(&key);
        }
    }
}

/// The leader's hold on a flight. Dropping it without [`FillGuard::done`] or
/// [`FillGuard::fail`] fails the flight with [`FillFailure::Abandoned`].
#[derive(Debug)]
pub struct FillGuard {
    flights: Arc<Flights>,
    flight: Arc<Flight>,
    finished: bool,
}

impl FillGuard {
    /// The flight this guard fills.
    pub fn flight(&self) -> &Arc<Flight> {
        &self.flight
    }

    /// Records that the upstream answered and the temp file exists; wakes waiting followers.
    pub fn start(&self, started: Started) {
        if self.flight.started.set(started).is_ok() {
            self.flight.progress.send_modify(|_| {});
        }
    }

    /// A handle the writer (on another thread) uses to report bytes written.
    pub fn progress_writer(&self) -> ProgressWriter {
        ProgressWriter(self.flight.clone())
    }

    /// The blob is committed: followers may send their last bytes; the flight is removed.
    pub fn done(mut self) {
        self.finish(FillState::Done);
    }

    /// The fill failed: followers cut their responses short; the flight is removed so the next
    /// request retries.
    pub fn fail(mut self, failure: FillFailure) {
        self.finish(FillState::Failed(failure));
    }

    fn finish(&mut self, state: FillState) {
        self.finished = true;
        // Readers left read the file; the frames' memory goes now.
        *self.flight.window.lock().expect("window mutex poisoned") = Window::default();
        self.flight.progress.send_modify(|p| p.state = state);
        self.flights.remove(&self.flight);
    }
}

/// Reports bytes landing in a fill's temp file; held by the writer thread.
#[derive(Debug, Clone)]
pub struct ProgressWriter(Arc<Flight>);

impl ProgressWriter {
    /// Keeps `frames`, just written one after another from `offset` (right after the previous
    /// ones), in the flight's in-memory window, dropping the oldest frames beyond
    /// [`WINDOW_BYTES`]. Call before [`ProgressWriter::wrote`] reports those bytes.
    pub fn remember(&self, offset: u64, frames: impl IntoIterator<Item = Bytes>) {
        let mut w = self.0.window.lock().expect("window mutex poisoned");
        debug_assert!(w
            .frames
            .back()
            .is_none_or(|(o, f)| o + f.len() as u64 == offset));
        let mut at = offset;
        for frame in frames {
            let len = frame.len() as u64;
            w.bytes += len;
            w.frames.push_back((at, frame));
            at += len;
        }
        while w.bytes > WINDOW_BYTES && w.frames.len() > 1 {
            if let Some((_, old)) = w.frames.pop_front() {
                w.bytes -= old.len() as u64;
            }
        }
    }

    /// Records that `written_bytes` are now in the temp file. Followers are woken when `notify`
    /// is true (the writer batches notifications so many followers are not woken per packet).
    pub fn wrote(&self, written_bytes: u64, notify: bool) {
        if notify {
            self.0
                .progress
                .send_modify(|p| p.written_bytes = written_bytes);
        } else {
            self.0.progress.send_if_modified(|p| {
                p.written_bytes = written_bytes;
                false
            });
        }
    }
}

impl Drop for FillGuard {
    fn drop(&mut self) {
        if !self.finished {
            self.finish(FillState::Failed(FillFailure::Abandoned));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leader(c: Claim) -> FillGuard {
        match c {
            Claim::Leader(g) => g,
            other => panic!("expected leader, got {other:?}"),
        }
    }

    #[test]
    fn first_claim_leads_others_follow_until_done() {
        let flights = Arc::new(Flights::default());
        let d = Digest::of(b"x");
        let g = leader(flights.claim(&d, || false));
        assert!(matches!(flights.claim(&d, || false), Claim::Follower(_)));
        assert_eq!(flights.len(), 1);
        g.done();
        assert!(flights.is_empty());
        assert!(matches!(flights.claim(&d, || true), Claim::Cached));
    }

    #[tokio::test]
    async fn dropped_guard_fails_waiters_and_frees_the_digest() {
        let flights = Arc::new(Flights::default());
        let d = Digest::of(b"x");
        let g = leader(flights.claim(&d, || false));
        let Claim::Follower(f) = flights.claim(&d, || false) else {
            panic!("expected follower")
        };
        let waiter = tokio::spawn(async move { f.wait_started().await.map(|_| ()) });
        drop(g);
        let got = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, Err(FillFailure::Abandoned));
        // The next request retries.
        assert!(matches!(flights.claim(&d, || false), Claim::Leader(_)));
    }

    #[tokio::test]
    async fn start_wakes_waiters() {
        let flights = Arc::new(Flights::default());
        let d = Digest::of(b"x");
        let g = leader(flights.claim(&d, || false));
        let f = g.flight().clone();
        let waiter = tokio::spawn(async move { f.wait_started().await.map(|s| s.total_bytes) });
        tokio::task::yield_now().await;
        let file = tempfile::tempfile().unwrap();
        g.start(Started {
            file: Arc::new(file),
            total_bytes: Some(3),
        });
        let got = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, Ok(Some(3)));
        g.progress_writer().wrote(2, true);
        assert_eq!(flights.get(&d).unwrap().progress().written_bytes, 2);
        g.fail(FillFailure::Mismatch);
        assert!(flights.get(&d).is_none());
    }

    #[test]
    fn recent_bytes_come_from_the_window_until_they_fall_out() {
        let flights = Arc::new(Flights::default());
        let d = Digest::of(b"x");
        let g = leader(flights.claim(&d, || false));
        let f = g.flight().clone();
        let w = g.progress_writer();
        assert_eq!(f.recent(0, 10), None);
        // Three frames: 40 KiB, 8 KiB, 1 MiB; byte i of the fill is (i % 251).
        let byte = |i: u64| (i % 251) as u8;
        let frame = |at: u64, len: u64| Bytes::from((at..at + len).map(byte).collect::<Vec<_>>());
        let sizes = [40 * 1024, 8 * 1024, 1 << 20];
        let mut at = 0;
        for len in sizes {
            w.remember(at, [frame(at, len)]);
            at += len;
        }
        let check = |pos: u64, max: usize, want_len: usize| {
            let got = f.recent(pos, max).unwrap();
            assert_eq!(got.len(), want_len, "at {pos} max {max}");
            assert!(got
                .iter()
                .enumerate()
                .all(|(k, b)| *b == byte(pos + k as u64)));
        };
        // Inside the first frame: its own bytes, up to max or its end.
        check(100, 1000, 1000);
        check(100, 128 * 1024, 40 * 1024 - 100);
        // 4 KiB left in the first frame: gathered across the 8 KiB frame into the third.
        check(36 * 1024, 64 * 1024, 64 * 1024);
        // The 8 KiB frame alone is short too: gathered with the next.
        check(40 * 1024, 128 * 1024, 128 * 1024);
        // Near the end: what there is.
        check(at - 10, 128 * 1024, 10);
        assert_eq!(f.recent(at, 10), None);
        // Past the window: the oldest frames go once more than WINDOW_BYTES are held.
        while at < 2 * WINDOW_BYTES {
            w.remember(at, [frame(at, 1 << 20)]);
            at += 1 << 20;
        }
        assert_eq!(f.recent(0, 10), None);
        check(at - WINDOW_BYTES, 10, 10);
        assert_eq!(f.recent(at - WINDOW_BYTES - 1, 10), None);
        g.done();
        assert_eq!(
            f.recent(at - 10, 10),
            None,
            "the window is dropped when the fill ends"
        );
    }
}
