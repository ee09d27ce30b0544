//! Single-flight with fan-out, as a type. The first request for an uncached digest gets
//! [`Claim::Leader`] and starts the one upstream fill; every other request, including those that
//! arrive mid-fill, gets [`Claim::Follower`] and reads the growing temp file as bytes land,
//! told of progress through a `watch` channel. The fill belongs to the daemon (a spawned task
//! holding the [`FillGuard`]), not to the first client, so it completes if that client leaves.
//! If the fill task dies without finishing, the guard's `Drop` marks the flight failed, so no
//! follower waits forever, and removes it, so the next request retries.
//!
//! This module knows nothing of HTTP or upstreams: `fill.rs` drives a fill, `body.rs` turns a
//! flight into a response body.

use std::collections::HashMap;
use std::fs::File;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::watch;

use stampede_oci::Digest;

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

/// One fill in progress.
#[derive(Debug)]
pub struct Flight {
    digest: Digest,
    started: OnceLock<Started>,
    progress: watch::Sender<Progress>,
}

impl Flight {
    fn new(digest: Digest) -> Self {
        Self {
            digest,
            started: OnceLock::new(),
            progress: watch::Sender::new(Progress {
                written_bytes: 0,
                state: FillState::Running,
            }),
        }
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

/// Every fill in progress, by digest.
#[derive(Debug, Default)]
pub struct Flights {
    /// A std `Mutex`: held only to look up, insert or remove an entry; never across `.await`.
    map: Mutex<HashMap<Digest, Arc<Flight>>>,
}

impl Flights {
    /// Claims `digest`: [`Claim::Cached`] if `is_cached()` says it is committed,
    /// [`Claim::Follower`] if a fill is running, else [`Claim::Leader`] with a new flight.
    ///
    /// `is_cached` is checked under the flights lock, after the map: a fill removes its flight
    /// only after committing, so a request either sees the flight or the committed blob and
    /// never starts a second fetch of a blob that just landed.
    pub fn claim(self: &Arc<Self>, digest: &Digest, is_cached: impl FnOnce() -> bool) -> Claim {
        let mut map = self.map.lock().expect("flights mutex poisoned");
        if let Some(f) = map.get(digest) {
            return Claim::Follower(f.clone());
        }
        if is_cached() {
            return Claim::Cached;
        }
        let flight = Arc::new(Flight::new(digest.clone()));
        map.insert(digest.clone(), flight.clone());
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
            .get(digest)
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
        let mut map = self.map.lock().expect("flights mutex poisoned");
        if map
            .get(&flight.digest)
            .is_some_and(|f| Arc::ptr_eq(f, flight))
        {
            map.remove(&flight.digest);
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
        self.flight.progress.send_modify(|p| p.state = state);
        self.flights.remove(&self.flight);
    }
}

/// Reports bytes landing in a fill's temp file; held by the writer thread.
#[derive(Debug, Clone)]
pub struct ProgressWriter(Arc<Flight>);

impl ProgressWriter {
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
}
