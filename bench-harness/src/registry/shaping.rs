//! The registry model's limits, enforced: byte buckets for the shared egress and each node's
//! link (a body chunk goes when both allow it), and a request bucket for throttling. Byte buckets
//! are GCRA reservations: a chunk reserves its slot under a short lock, then sleeps until it, so
//! waiting costs no CPU and streams reserving one chunk at a time are served round-robin (none
//! starves). Times are `tokio::time` instants so tests can pause the clock. No HTTP here.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::accounting::ListenerId;
use super::model::{RegistryModel, Throttle};
use crate::scenario::units::Bandwidth;

/// Largest body chunk, in bytes; also the chunk size when nothing is shaped.
pub const MAX_CHUNK_BYTES: usize = 64 * 1024;
/// Smallest body chunk, in bytes.
pub const MIN_CHUNK_BYTES: usize = 16 * 1024;
/// Chunks are sized to carry about this much of the slowest configured rate.
const CHUNK_TIME: Duration = Duration::from_millis(20);
/// Bytes a byte bucket lets through at once after being idle, in chunks.
const BURST_CHUNKS: u64 = 2;

/// A byte-rate limit: at most `rate` bytes per second on average, with a burst of `burst_bytes`.
#[derive(Debug)]
pub struct ByteBucket {
    seconds_per_byte: f64,
    burst: Duration,
    /// Theoretical arrival time of the next byte. A std `Mutex`: held for a comparison and an
    /// addition, never across an `.await`.
    next: Mutex<Instant>,
}

impl ByteBucket {
    /// A bucket releasing `rate` on average, `burst_bytes` at once after idling.
    pub fn new(rate: Bandwidth, burst_bytes: u64) -> Self {
        let seconds_per_byte = 1.0 / rate.bytes_per_sec.max(1) as f64;
        Self {
            seconds_per_byte,
            burst: Duration::from_secs_f64(burst_bytes as f64 * seconds_per_byte),
            next: Mutex::new(Instant::now()),
        }
    }

    /// Reserves `bytes` at `now`; returns when they may go (`None`: at once).
    pub fn reserve(&self, bytes: u64, now: Instant) -> Option<Instant> {
        let cost = Duration::from_secs_f64(bytes as f64 * self.seconds_per_byte);
        let mut next = self.next.lock().expect("byte bucket mutex poisoned");
        *next = (*next).max(now) + cost;
        let ready = next.checked_sub(self.burst).unwrap_or(now);
        (ready > now).then_some(ready)
    }

    /// Waits until `bytes` may go.
    pub async fn take(&self, bytes: u64) {
        if let Some(at) = self.reserve(bytes, Instant::now()) {
            tokio::time::sleep_until(at).await;
        }
    }
}

/// A request-rate limit: a token bucket of `burst` requests refilled at `requests_per_second`.
#[derive(Debug)]
pub struct RequestBucket {
    per_second: f64,
    capacity: f64,
    /// (tokens, when they were counted). A std `Mutex`: held for arithmetic only.
    state: Mutex<(f64, Instant)>,
}

impl RequestBucket {
    /// A full bucket for `throttle` (a burst below 1 still lets one request through; a
    /// non-finite or negative rate never refills).
    pub fn new(throttle: &Throttle) -> Self {
        let per_second = if throttle.requests_per_second.is_finite() {
            throttle.requests_per_second.max(0.0)
        } else {
            0.0
        };
        let capacity = f64::from(throttle.burst.max(1));
        Self {
            per_second,
            capacity,
            state: Mutex::new((capacity, Instant::now())),
        }
    }

    /// Takes a token at `now` if there is one.
    pub fn try_take(&self, now: Instant) -> bool {
        let mut state = self.state.lock().expect("request bucket mutex poisoned");
        let (tokens, since) = *state;
        let refilled = (tokens
            + now.saturating_duration_since(since).as_secs_f64() * self.per_second)
            .min(self.capacity);
        if refilled >= 1.0 {
            *state = (refilled - 1.0, now);
            true
        } else {
            *state = (refilled, now);
            false
        }
    }
}

/// The bandwidth part of the model: one egress bucket shared by every listener, one link bucket
/// per node listener (the shared listener has none), and the chunk size that keeps them smooth.
#[derive(Debug)]
pub struct Shaper {
    egress: Option<ByteBucket>,
    node_links: Vec<ByteBucket>,
    chunk_bytes: usize,
}

impl Shaper {
    /// Buckets for `model` with `nodes` node listeners.
    pub fn new(model: &RegistryModel, nodes: usize) -> Self {
        let slowest = [model.egress, model.node_link]
            .into_iter()
            .flatten()
            .map(|b| b.bytes_per_sec)
            .min();
        let chunk_bytes = slowest.map_or(MAX_CHUNK_BYTES, |rate| {
            let per_chunk = (rate as f64 * CHUNK_TIME.as_secs_f64()) as usize;
            per_chunk.clamp(MIN_CHUNK_BYTES, MAX_CHUNK_BYTES)
        });
        let burst = BURST_CHUNKS * chunk_bytes as u64;
        Self {
            egress: model.egress.map(|rate| ByteBucket::new(rate, burst)),
            node_links: model
                .node_link
                .map(|rate| (0..nodes).map(|_| ByteBucket::new(rate, burst)).collect())
                .unwrap_or_default(),
            chunk_bytes,
        }
    }

    /// Bytes per body chunk.
    pub fn chunk_bytes(&self) -> usize {
        self.chunk_bytes
    }

    /// Waits until `bytes` may leave through `listener`: first its node's link, then the shared
    /// egress.
    pub async fn pass(&self, listener: ListenerId, bytes: u64) {
        if let ListenerId::Node(i) = listener {
            if let Some(link) = self.node_links.get(i) {
                link.take(bytes).await;
            }
        }
        if let Some(egress) = &self.egress {
            egress.take(bytes).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(bytes_per_sec: u64) -> Bandwidth {
        Bandwidth { bytes_per_sec }
    }

    #[tokio::test(start_paused = true)]
    async fn byte_bucket_allows_a_burst_then_the_rate() {
        let bucket = ByteBucket::new(rate(1000), 200);
        let now = Instant::now();
        assert_eq!(bucket.reserve(100, now), None);
        assert_eq!(bucket.reserve(100, now), None);
        // 300 bytes reserved at 1000 B/s with 200 B of burst: the third 100 waits 100 ms.
        assert_eq!(
            bucket.reserve(100, now),
            Some(now + Duration::from_millis(100))
        );
        assert_eq!(
            bucket.reserve(500, now),
            Some(now + Duration::from_millis(600))
        );
        // After a long idle, only the burst is allowed again, not the idle time's worth.
        let later = now + Duration::from_secs(10);
        assert_eq!(bucket.reserve(200, later), None);
        assert_eq!(
            bucket.reserve(100, later),
            Some(later + Duration::from_millis(100))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_streams_share_the_rate_fairly() {
        let bucket = std::sync::Arc::new(ByteBucket::new(rate(100_000), 0));
        let start = Instant::now();
        let streams: Vec<_> = (0..4)
            .map(|_| {
                let bucket = bucket.clone();
                tokio::spawn(async move {
                    for _ in 0..10 {
                        bucket.take(1000).await;
                    }
                    Instant::now() - start
                })
            })
            .collect();
        let mut done = Vec::new();
        for s in streams {
            done.push(s.await.unwrap());
        }
        // 40 kB at 100 kB/s: everyone finishes within one chunk-time of 400 ms.
        for d in done {
            assert!(
                d >= Duration::from_millis(370) && d <= Duration::from_millis(400),
                "{d:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn request_bucket_refills_at_its_rate() {
        let bucket = RequestBucket::new(&Throttle {
            requests_per_second: 10.0,
            burst: 2,
            retry_after: crate::scenario::units::Span::default(),
        });
        let now = Instant::now();
        assert!(bucket.try_take(now));
        assert!(bucket.try_take(now));
        assert!(!bucket.try_take(now));
        assert!(!bucket.try_take(now + Duration::from_millis(50)));
        assert!(bucket.try_take(now + Duration::from_millis(100)));
        assert!(!bucket.try_take(now + Duration::from_millis(100)));
    }

    #[test]
    fn chunks_follow_the_slowest_rate() {
        let model = |egress: Option<u64>, node_link: Option<u64>| RegistryModel {
            egress: egress.map(rate),
            node_link: node_link.map(rate),
            ..RegistryModel::default()
        };
        let cases = [
            (None, None, MAX_CHUNK_BYTES),
            (Some(1_000_000_000), None, MAX_CHUNK_BYTES),
            (Some(1_000_000_000), Some(1_000_000), 20_000),
            (Some(125_000), None, MIN_CHUNK_BYTES),
        ];
        for (egress, node_link, want) in cases {
            assert_eq!(
                Shaper::new(&model(egress, node_link), 3).chunk_bytes(),
                want,
                "{egress:?} {node_link:?}"
            );
        }
    }
}
