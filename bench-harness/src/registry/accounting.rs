//! Registry-side truth about what the embedded registry served: requests by kind, throttled
//! answers, error codes, body bytes out (in total, per blob and manifest digest, per listener),
//! and a time series in fixed buckets since a settable epoch. One method per event, called by the
//! handler and the bodies; [`Accounting::snapshot`] gives a serializable copy for `result.json`,
//! [`Accounting::reset`] starts over between repetitions. No I/O, no HTTP.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use stampede_oci::api::RequestKind;
use stampede_oci::Digest;
use tokio::time::Instant;

/// Default width of a time-series bucket.
pub const DEFAULT_SERIES_BUCKET: Duration = Duration::from_millis(100);

/// Most buckets kept; later events are added to the last one (a day at 100 ms buckets).
const MAX_SERIES_BUCKETS: usize = 864_000;

/// Which listener a request arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListenerId {
    /// The shared listener (no node link): what a shared mirror's upstream uses.
    Shared,
    /// Node `i`'s own listener, behind that node's link.
    Node(usize),
}

/// Whose bytes a response body carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyKind {
    /// A blob (layer, config, or a manifest fetched through `/blobs/`).
    Blob(Digest),
    /// A manifest or index fetched through `/manifests/`.
    Manifest(Digest),
    /// The ping answer or an error document.
    Other,
}

/// Requests counted by kind. Every request is counted exactly once: in its kind, or in
/// `throttled` if it was answered 429 instead of being served.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RequestCounts {
    pub total: u64,
    /// `/v2/` pings.
    pub ping: u64,
    /// Manifest GETs (any status).
    pub manifest_get: u64,
    /// Manifest HEADs (any status).
    pub manifest_head: u64,
    /// Blob GETs (any status).
    pub blob_get: u64,
    /// Blob HEADs (any status).
    pub blob_head: u64,
    /// Requests that matched no route or method.
    pub other: u64,
    /// Requests answered `429 TOOMANYREQUESTS`.
    pub throttled: u64,
}

/// Response body bytes by what they carried.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BodyBytes {
    pub blobs: u64,
    pub manifests: u64,
    /// Ping and error documents.
    pub other: u64,
}

/// What was served of one digest.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ObjectCounts {
    /// GETs answered 200 or 206.
    pub gets: u64,
    /// Of those, range GETs answered 206.
    pub range_gets: u64,
    /// HEADs answered 200.
    pub heads: u64,
    /// Body bytes sent.
    pub bytes_out: u64,
}

/// What one listener carried.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ListenerCounts {
    /// Requests received, throttled ones included.
    pub requests: u64,
    /// Requests answered 429.
    pub throttled: u64,
    /// Body bytes sent.
    pub bytes_out: u64,
}

/// Per-listener counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ListenerSnapshot {
    pub shared: ListenerCounts,
    /// Node listeners, by node index.
    pub nodes: Vec<ListenerCounts>,
}

/// Events per fixed-width bucket since the epoch; bucket `i` covers
/// `[epoch + i * bucket_ms, epoch + (i + 1) * bucket_ms)`. Events before the epoch count in
/// bucket 0. The vectors are equally long, up to the last bucket with an event.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Series {
    /// Bucket width in milliseconds.
    pub bucket_ms: u64,
    /// Body bytes sent per bucket.
    pub bytes_out: Vec<u64>,
    /// Requests received per bucket (throttled included).
    pub requests: Vec<u64>,
    /// Requests answered 429 per bucket.
    pub throttled: Vec<u64>,
}

/// A copy of everything counted since the last reset.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AccountingSnapshot {
    /// Milliseconds from the epoch to the snapshot.
    pub elapsed_ms: u64,
    pub requests: RequestCounts,
    /// Error answers by OCI error code (`BLOB_UNKNOWN`, `TOOMANYREQUESTS`, ...).
    pub errors: BTreeMap<String, u64>,
    /// All response body bytes sent.
    pub bytes_out: u64,
    /// Body bytes by what they carried.
    pub body_bytes: BodyBytes,
    /// Per blob digest served through `/blobs/`.
    pub blobs: BTreeMap<Digest, ObjectCounts>,
    /// Per manifest digest served through `/manifests/` (tags resolved to digests).
    pub manifests: BTreeMap<Digest, ObjectCounts>,
    pub listeners: ListenerSnapshot,
    /// Over time.
    pub series: Series,
}

impl RequestCounts {
    /// Counts one request of `kind` (not a throttled one).
    pub fn count(&mut self, kind: RequestKind) {
        self.total += 1;
        *match kind {
            RequestKind::Ping => &mut self.ping,
            RequestKind::ManifestGet => &mut self.manifest_get,
            RequestKind::ManifestHead => &mut self.manifest_head,
            RequestKind::BlobGet => &mut self.blob_get,
            RequestKind::BlobHead => &mut self.blob_head,
            RequestKind::Other => &mut self.other,
        } += 1;
    }
}

impl AccountingSnapshot {
    /// GETs served of blob `digest` (0 if never asked for).
    pub fn blob_gets(&self, digest: &Digest) -> u64 {
        self.blobs.get(digest).map_or(0, |c| c.gets)
    }
}

/// The registry's counters. Cheap to update from many tasks at once.
#[derive(Debug)]
pub struct Accounting {
    /// A std `Mutex` is right here: it is held only for a few additions, never across an
    /// `.await` and never around I/O, and updates happen once per body chunk (>= 16 KiB).
    state: Mutex<State>,
    bucket: Duration,
    nodes: usize,
}

#[derive(Debug)]
struct State {
    epoch: Instant,
    snapshot: AccountingSnapshot,
}

impl Accounting {
    /// Counters for a registry with `nodes` node listeners, time series in buckets of
    /// `bucket` (clamped to at least 1 ms), epoch now.
    pub fn new(nodes: usize, bucket: Duration) -> Self {
        let bucket = bucket.max(Duration::from_millis(1));
        Self {
            state: Mutex::new(State {
                epoch: Instant::now(),
                snapshot: empty(nodes, bucket),
            }),
            bucket,
            nodes,
        }
    }

    /// Clears every counter and sets the epoch to now.
    pub fn reset(&self) {
        self.reset_at(Instant::now());
    }

    /// Clears every counter and sets the epoch to `epoch` (e.g. the burst's start).
    pub fn reset_at(&self, epoch: Instant) {
        let mut state = self.lock();
        state.epoch = epoch;
        state.snapshot = empty(self.nodes, self.bucket);
    }

    /// A copy of the counters.
    pub fn snapshot(&self) -> AccountingSnapshot {
        let state = self.lock();
        let mut snapshot = state.snapshot.clone();
        snapshot.elapsed_ms = Instant::now()
            .saturating_duration_since(state.epoch)
            .as_millis() as u64;
        snapshot
    }

    /// Body bytes sent and requests answered so far: what a quiet-wait polls, without copying
    /// the per-digest maps and the time series that [`Accounting::snapshot`] copies.
    pub fn progress(&self) -> (u64, u64) {
        let state = self.lock();
        (state.snapshot.bytes_out, state.snapshot.requests.total)
    }

    /// A request of `kind` arrived on `listener` at `at` and will be served.
    pub fn request(&self, listener: ListenerId, kind: RequestKind, at: Instant) {
        let mut state = self.lock();
        let bucket = state.bucket_index(at, self.bucket);
        let s = &mut state.snapshot;
        s.requests.count(kind);
        listener_counts(&mut s.listeners, listener).requests += 1;
        grow(&mut s.series, bucket).requests[bucket] += 1;
    }

    /// A request arrived on `listener` at `at` and was answered 429.
    pub fn throttled(&self, listener: ListenerId, at: Instant) {
        let mut state = self.lock();
        let bucket = state.bucket_index(at, self.bucket);
        let s = &mut state.snapshot;
        s.requests.total += 1;
        s.requests.throttled += 1;
        let l = listener_counts(&mut s.listeners, listener);
        l.requests += 1;
        l.throttled += 1;
        let series = grow(&mut s.series, bucket);
        series.requests[bucket] += 1;
        series.throttled[bucket] += 1;
    }

    /// An error answer with OCI code `code` was sent.
    pub fn error(&self, code: &'static str) {
        *self
            .lock()
            .snapshot
            .errors
            .entry(code.to_owned())
            .or_default() += 1;
    }

    /// `digest` is being served (`head`: headers only; `range`: a 206 answer).
    pub fn served(&self, body: &BodyKind, head: bool, range: bool) {
        let mut state = self.lock();
        let s = &mut state.snapshot;
        let counts = match body {
            BodyKind::Blob(d) => object_counts(&mut s.blobs, d),
            BodyKind::Manifest(d) => object_counts(&mut s.manifests, d),
            BodyKind::Other => return,
        };
        if head {
            counts.heads += 1;
        } else {
            counts.gets += 1;
            counts.range_gets += u64::from(range);
        }
    }

    /// `bytes` of a `body` were handed to `listener`'s connection at `at`.
    pub fn body_sent(&self, listener: ListenerId, body: &BodyKind, bytes: u64, at: Instant) {
        let mut state = self.lock();
        let bucket = state.bucket_index(at, self.bucket);
        let s = &mut state.snapshot;
        s.bytes_out += bytes;
        match body {
            BodyKind::Blob(d) => {
                s.body_bytes.blobs += bytes;
                object_counts(&mut s.blobs, d).bytes_out += bytes;
            }
            BodyKind::Manifest(d) => {
                s.body_bytes.manifests += bytes;
                object_counts(&mut s.manifests, d).bytes_out += bytes;
            }
            BodyKind::Other => s.body_bytes.other += bytes,
        }
        listener_counts(&mut s.listeners, listener).bytes_out += bytes;
        grow(&mut s.series, bucket).bytes_out[bucket] += bytes;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("accounting mutex poisoned")
    }
}

impl State {
    fn bucket_index(&self, at: Instant, bucket: Duration) -> usize {
        let since = at.saturating_duration_since(self.epoch);
        let index = since.as_nanos() / bucket.as_nanos();
        usize::try_from(index)
            .unwrap_or(usize::MAX)
            .min(MAX_SERIES_BUCKETS - 1)
    }
}

fn empty(nodes: usize, bucket: Duration) -> AccountingSnapshot {
    AccountingSnapshot {
        listeners: ListenerSnapshot {
            shared: ListenerCounts::default(),
            nodes: vec![ListenerCounts::default(); nodes],
        },
        series: Series {
            bucket_ms: bucket.as_millis() as u64,
            ..Series::default()
        },
        ..AccountingSnapshot::default()
    }
}

/// The counts of `digest`, created on first use; the digest is cloned only then, not per chunk.
fn object_counts<'a>(
    map: &'a mut BTreeMap<Digest, ObjectCounts>,
    digest: &Digest,
) -> &'a mut ObjectCounts {
    if !map.contains_key(digest) {
        map.insert(digest.clone(), ObjectCounts::default());
    }
    map.get_mut(digest).expect("inserted above")
}

fn listener_counts(listeners: &mut ListenerSnapshot, id: ListenerId) -> &mut ListenerCounts {
    match id {
        ListenerId::Shared => &mut listeners.shared,
        ListenerId::Node(i) => {
            if listeners.nodes.len() <= i {
                listeners.nodes.resize(i + 1, ListenerCounts::default());
            }
            &mut listeners.nodes[i]
        }
    }
}

/// The series, with every vector long enough to index `bucket`.
fn grow(series: &mut Series, bucket: usize) -> &mut Series {
    if series.bytes_out.len() <= bucket {
        series.bytes_out.resize(bucket + 1, 0);
        series.requests.resize(bucket + 1, 0);
        series.throttled.resize(bucket + 1, 0);
    }
    series
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn events_land_in_their_buckets_and_reset_clears() {
        let a = Accounting::new(2, Duration::from_millis(100));
        let epoch = Instant::now();
        a.reset_at(epoch);
        let d = Digest::of(b"blob");
        let blob = BodyKind::Blob(d.clone());
        a.request(ListenerId::Node(1), RequestKind::BlobGet, epoch);
        a.served(&blob, false, false);
        a.body_sent(
            ListenerId::Node(1),
            &blob,
            10,
            epoch + Duration::from_millis(50),
        );
        a.body_sent(
            ListenerId::Node(1),
            &blob,
            5,
            epoch + Duration::from_millis(250),
        );
        a.throttled(ListenerId::Shared, epoch + Duration::from_millis(120));
        a.error("TOOMANYREQUESTS");
        tokio::time::advance(Duration::from_millis(300)).await;

        let s = a.snapshot();
        assert_eq!(s.elapsed_ms, 300);
        assert_eq!(s.requests.total, 2);
        assert_eq!((s.requests.blob_get, s.requests.throttled), (1, 1));
        assert_eq!(s.bytes_out, 15);
        assert_eq!(s.body_bytes.blobs, 15);
        assert_eq!(s.blob_gets(&d), 1);
        assert_eq!(s.blobs[&d].bytes_out, 15);
        assert_eq!(s.listeners.nodes[1].bytes_out, 15);
        assert_eq!(s.listeners.shared.throttled, 1);
        assert_eq!(s.errors["TOOMANYREQUESTS"], 1);
        assert_eq!(s.series.bytes_out, vec![10, 0, 5]);
        assert_eq!(s.series.requests, vec![1, 1, 0]);
        assert_eq!(s.series.throttled, vec![0, 1, 0]);

        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(
            serde_json::from_str::<AccountingSnapshot>(&json).unwrap(),
            s
        );

        a.reset();
        let s = a.snapshot();
        assert_eq!(s.requests, RequestCounts::default());
        assert!(s.blobs.is_empty() && s.series.bytes_out.is_empty());
        assert_eq!(s.listeners.nodes.len(), 2);
    }
}
