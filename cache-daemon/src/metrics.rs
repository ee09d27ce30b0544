//! Prometheus metrics: one method per event, named `cache_daemon_<noun>_<unit|total>`, labels of
//! low cardinality only (never a digest or repository). Rendered as OpenMetrics text on
//! `GET /metrics`. Counters on the byte path are resolved once and cloned, so counting a chunk is
//! one atomic add.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::cluster::signing::Rejection;
use crate::error::PeerFailure;

/// What kind of request.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Kind {
    /// `/v2/<name>/blobs/<digest>`.
    Blob,
    /// `/v2/<name>/manifests/<ref>`.
    Manifest,
    /// `/v2/`.
    Base,
    /// Metrics, health, unknown paths.
    Other,
}

/// How a request was answered.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Outcome {
    /// From the store.
    Hit,
    /// Started an upstream fetch.
    Miss,
    /// Joined a fetch already running.
    Coalesced,
    /// Streamed from upstream without storing (the store is full).
    Passthrough,
    /// Answered with an error.
    Error,
}

/// Where served bytes came from.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Source {
    /// A committed blob.
    Cache,
    /// A fill in progress (bytes streamed as they arrived from upstream).
    Upstream,
    /// Streamed from upstream without storing (the store is full).
    Passthrough,
    /// Sent to a cluster peer over the peer port (committed blobs, fills and stripes alike).
    Peer,
}

/// Label values in Prometheus' lowercase convention.
macro_rules! label_values {
    ($($t:ty { $($v:ident => $s:literal),* })*) => {$(
        impl EncodeLabelValue for $t {
            fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
                use std::fmt::Write as _;
                encoder.write_str(match self { $(Self::$v => $s),* })
            }
        }
    )*};
}

label_values! {
    Kind { Blob => "blob", Manifest => "manifest", Base => "base", Other => "other" }
    Outcome { Hit => "hit", Miss => "miss", Coalesced => "coalesced", Passthrough => "passthrough", Error => "error" }
    Source { Cache => "cache", Upstream => "upstream", Passthrough => "passthrough", Peer => "peer" }
    WriteKind { NoSpace => "no_space", Other => "other" }
    FillResult { Committed => "committed", Failed => "failed", Mismatch => "mismatch" }
    Resume { Range => "range", Restart => "restart" }
    AccessResult { Allowed => "allowed", Denied => "denied", NotFound => "not_found", Error => "error" }
    AccessSource { Upstream => "upstream", Cache => "cache", Coalesced => "coalesced", Grace => "grace" }
    FillSource { Local => "local", Peer => "peer", Registry => "registry" }
    PeerFailure { Connect => "connect", Timeout => "timeout", Refused => "refused", Broken => "broken", Unusable => "unusable", Mismatch => "mismatch" }
    Rejection { Unsigned => "unsigned", BadSignature => "bad_signature", Expired => "expired" }
}

/// Where the bytes of a blob fill came from (cluster mode; without it, all are `Registry`).
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum FillSource {
    /// A stripe this node owns, fetched from the registry by its own stripe fill.
    Local,
    /// Another node's peer port.
    Peer,
    /// The registry directly, by the blob fill itself.
    Registry,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FillSourceLabels {
    source: FillSource,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FallbackLabels {
    reason: PeerFailure,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectionLabels {
    reason: Rejection,
}

/// Cluster metrics, registered with the rest.
#[derive(Debug)]
struct ClusterMetrics {
    fill_bytes: Family<FillSourceLabels, Counter>,
    fallbacks: Family<FallbackLabels, Counter>,
    rejected: Family<RejectionLabels, Counter>,
    members: Gauge,
    bad_peers: Gauge,
    redirects: Counter,
}

impl ClusterMetrics {
    fn register(registry: &mut Registry) -> Self {
        let m = Self {
            fill_bytes: Family::default(),
            fallbacks: Family::default(),
            rejected: Family::default(),
            members: Gauge::default(),
            bad_peers: Gauge::default(),
            redirects: Counter::default(),
        };
        registry.register(
            "fill_source_bytes",
            "Bytes of blob fills by where they came from: local (a stripe this node owns), peer, registry",
            m.fill_bytes.clone(),
        );
        registry.register(
            "cluster_fallbacks",
            "Times a peer could not supply a stripe and the next candidate or the registry was asked, by reason",
            m.fallbacks.clone(),
        );
        registry.register(
            "peer_requests_rejected",
            "Requests on the peer port refused with 401, by reason",
            m.rejected.clone(),
        );
        registry.register(
            "cluster_members",
            "Cluster members known, this node included",
            m.members.clone(),
        );
        registry.register(
            "cluster_bad_peers",
            "Members skipped because bytes they sent failed the digest",
            m.bad_peers.clone(),
        );
        registry.register(
            "peer_redirects",
            "Peer requests sent on to a node already streaming the stripe (fan-out bound)",
            m.redirects.clone(),
        );
        m
    }
}

/// What a caller check decided.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum AccessResult {
    /// The caller may read it.
    Allowed,
    /// The upstream refused the caller (or it presented nothing).
    Denied,
    /// The object is not in that repository for this caller.
    NotFound,
    /// The upstream could not be asked and nothing recent allowed the caller.
    Error,
}

/// Where a caller check's decision came from.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum AccessSource {
    /// A `HEAD` upstream with the caller's credential.
    Upstream,
    /// A decision still within its TTL.
    Cache,
    /// Joined an identical check already running.
    Coalesced,
    /// An "allowed" past its TTL but within the grace, because the upstream could not be asked.
    Grace,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AccessLabels {
    result: AccessResult,
    source: AccessSource,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    kind: Kind,
    result: Outcome,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: Source,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    kind: Kind,
    status: String,
}

/// Why a store write failed, as a label.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
enum WriteKind {
    NoSpace,
    Other,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WriteLabels {
    kind: WriteKind,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FillLabels {
    result: FillResult,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResumeLabels {
    how: Resume,
}

/// How a fill went on after its upstream body broke or stalled.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Resume {
    /// A `Range` request from the verified offset, answered `206`.
    Range,
    /// The upstream ignored the range and sent the whole blob again (`200`).
    Restart,
}

/// How a fill ended.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum FillResult {
    /// Verified and committed.
    Committed,
    /// Upstream error, timeout, truncation, local error.
    Failed,
    /// Bytes did not match the digest.
    Mismatch,
}

/// Every metric the daemon exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    serving: Serving,
    upstream: UpstreamMetrics,
    fills: FillMetrics,
    store: StoreMetrics,
    access_checks: Family<AccessLabels, Counter>,
    cluster: ClusterMetrics,
}

/// What clients were answered: requests by kind and outcome, body bytes by source.
#[derive(Debug)]
struct Serving {
    requests: Family<RequestLabels, Counter>,
    served_cache: Counter,
    served_upstream: Counter,
    served_passthrough: Counter,
    served_peer: Counter,
    sent_by_kernel: Counter,
}

impl Serving {
    fn register(registry: &mut Registry) -> Self {
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests by kind and how they were answered",
            requests.clone(),
        );
        let served = Family::<SourceLabels, Counter>::default();
        registry.register(
            "served_bytes",
            "Body bytes sent to clients, by source",
            served.clone(),
        );
        let sent_by_kernel = Counter::default();
        registry.register(
            "sent_by_kernel_bytes",
            "Body bytes of served_bytes that the kernel sent from the blob file (sendfile), not copied through the daemon",
            sent_by_kernel.clone(),
        );
        let served_passthrough = served
            .get_or_create(&SourceLabels {
                source: Source::Passthrough,
            })
            .clone();
        let served_cache = served
            .get_or_create(&SourceLabels {
                source: Source::Cache,
            })
            .clone();
        let served_upstream = served
            .get_or_create(&SourceLabels {
                source: Source::Upstream,
            })
            .clone();
        let served_peer = served
            .get_or_create(&SourceLabels {
                source: Source::Peer,
            })
            .clone();
        Self {
            requests,
            served_cache,
            served_upstream,
            served_passthrough,
            served_peer,
            sent_by_kernel,
        }
    }
}

/// What the daemon asked of upstream registries and how they answered.
#[derive(Debug)]
struct UpstreamMetrics {
    upstream_requests: Family<UpstreamLabels, Counter>,
    upstream_bytes: Counter,
    digest_mismatches: Counter,
    stale_serves: Counter,
    upstream_throttled: Counter,
    upstream_waiting: Gauge,
}

impl UpstreamMetrics {
    fn register(registry: &mut Registry) -> Self {
        let upstream_requests = Family::<UpstreamLabels, Counter>::default();
        registry.register(
            "upstream_requests",
            "Requests sent to upstream registries, by kind and status class",
            upstream_requests.clone(),
        );
        let upstream_bytes = Counter::default();
        registry.register(
            "upstream_bytes",
            "Blob body bytes received from upstream registries",
            upstream_bytes.clone(),
        );
        let digest_mismatches = Counter::default();
        registry.register(
            "digest_mismatches",
            "Upstream blobs or manifests whose bytes did not match their digest",
            digest_mismatches.clone(),
        );
        let stale_serves = Counter::default();
        registry.register(
            "stale_serves",
            "Tags answered from the last known manifest because the upstream failed",
            stale_serves.clone(),
        );
        let upstream_throttled = Counter::default();
        registry.register(
            "upstream_throttled",
            "Upstream answers 429 Too Many Requests or 503 with Retry-After (and requests held back while that Retry-After runs)",
            upstream_throttled.clone(),
        );
        let upstream_waiting = Gauge::default();
        registry.register(
            "upstream_waiting",
            "Requests queued for an upstream concurrency slot",
            upstream_waiting.clone(),
        );
        Self {
            upstream_requests,
            upstream_bytes,
            digest_mismatches,
            stale_serves,
            upstream_throttled,
            upstream_waiting,
        }
    }
}

/// Blob fills: how they ended, resumed, and who is waiting on them.
#[derive(Debug)]
struct FillMetrics {
    fills: Family<FillLabels, Counter>,
    fill_resumes: Family<ResumeLabels, Counter>,
    fills_in_flight: Gauge,
    fill_waiters: Gauge,
}

impl FillMetrics {
    fn register(registry: &mut Registry) -> Self {
        let fills = Family::<FillLabels, Counter>::default();
        registry.register(
            "fills",
            "Upstream blob fills, by how they ended",
            fills.clone(),
        );
        let fill_resumes = Family::<ResumeLabels, Counter>::default();
        registry.register(
            "fill_resumes",
            "Upstream blob bodies that broke or stalled mid-fill and were resumed, by how",
            fill_resumes.clone(),
        );
        let fills_in_flight = Gauge::default();
        registry.register(
            "fills_in_flight",
            "Upstream blob fills in progress",
            fills_in_flight.clone(),
        );
        let fill_waiters = Gauge::default();
        registry.register(
            "fill_waiters",
            "Responses currently streaming from a fill in progress",
            fill_waiters.clone(),
        );
        Self {
            fills,
            fill_resumes,
            fills_in_flight,
            fill_waiters,
        }
    }
}

/// The blob store: its size, evictions, failed writes and read checks.
#[derive(Debug)]
struct StoreMetrics {
    store_bytes: Gauge,
    store_blobs: Gauge,
    pinned_bytes: Gauge,
    evictions: Counter,
    evicted_bytes: Counter,
    store_write_no_space: Counter,
    store_write_other: Counter,
    store_full: Gauge,
    read_mismatches: Counter,
    read_rechecks: Counter,
}

impl StoreMetrics {
    fn register(registry: &mut Registry) -> Self {
        let store_bytes = Gauge::default();
        registry.register(
            "store_bytes",
            "Bytes of committed blobs in the store",
            store_bytes.clone(),
        );
        let store_blobs = Gauge::default();
        registry.register(
            "store_blobs",
            "Committed blobs in the store",
            store_blobs.clone(),
        );
        let pinned_bytes = Gauge::default();
        registry.register(
            "pinned_bytes",
            "Bytes of committed blobs covered by pins",
            pinned_bytes.clone(),
        );
        let evictions = Counter::default();
        registry.register(
            "evictions",
            "Blobs evicted to keep the byte budget",
            evictions.clone(),
        );
        let evicted_bytes = Counter::default();
        registry.register(
            "evicted_bytes",
            "Bytes evicted to keep the byte budget",
            evicted_bytes.clone(),
        );
        let store_writes = Family::<WriteLabels, Counter>::default();
        registry.register(
            "store_write_errors",
            "Failed writes to the store (temp file create, write, commit), by kind: no_space is a full disk or quota",
            store_writes.clone(),
        );
        let store_full = Gauge::default();
        registry.register(
            "store_full",
            "1 while the store cannot take blobs (disk full, temp files cannot be created) and misses are streamed from upstream without storing",
            store_full.clone(),
        );
        let read_mismatches = Counter::default();
        registry.register(
            "read_mismatches",
            "Committed blobs that no longer matched their digest when served (verify_on_read); cut and quarantined",
            read_mismatches.clone(),
        );
        let read_rechecks = Counter::default();
        registry.register(
            "read_rechecks",
            "Whole-blob rehashes before serving a range (verify_on_read); shared by concurrent requests and skipped for files verified recently",
            read_rechecks.clone(),
        );
        let store_write_no_space = store_writes
            .get_or_create(&WriteLabels {
                kind: WriteKind::NoSpace,
            })
            .clone();
        let store_write_other = store_writes
            .get_or_create(&WriteLabels {
                kind: WriteKind::Other,
            })
            .clone();
        Self {
            store_bytes,
            store_blobs,
            pinned_bytes,
            evictions,
            evicted_bytes,
            store_write_no_space,
            store_write_other,
            store_full,
            read_mismatches,
            read_rechecks,
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// All metrics at zero.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("cache_daemon");
        let serving = Serving::register(&mut registry);
        let upstream = UpstreamMetrics::register(&mut registry);
        let fills = FillMetrics::register(&mut registry);
        let store = StoreMetrics::register(&mut registry);
        let access_checks = Family::<AccessLabels, Counter>::default();
        registry.register(
            "access_checks",
            "Caller checks before serving private content, by decision and where it came from",
            access_checks.clone(),
        );
        let cluster = ClusterMetrics::register(&mut registry);
        Self {
            registry,
            serving,
            upstream,
            fills,
            store,
            access_checks,
            cluster,
        }
    }

    /// A caller check decided `result`, from `source`.
    pub fn access_check(&self, result: AccessResult, source: AccessSource) {
        self.access_checks
            .get_or_create(&AccessLabels { result, source })
            .inc();
    }

    /// Brings the store's health into the metrics before rendering: whether it is full, and
    /// its write errors so far (`no_space`, `other`; counted by the store, monotonic).
    pub fn store_health(&self, full: bool, write_errors: (u64, u64)) {
        self.store.store_full.set(i64::from(full));
        for (counter, total) in [
            (&self.store.store_write_no_space, write_errors.0),
            (&self.store.store_write_other, write_errors.1),
        ] {
            // fetch_max, not inc_by(delta): two scrapes at once must not both add the delta.
            counter
                .inner()
                .fetch_max(total, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// A committed blob did not match its digest when served.
    pub fn read_mismatch(&self) {
        self.store.read_mismatches.inc();
    }

    /// A committed blob was rehashed whole before a range of it was served (`verify_on_read`).
    pub fn read_recheck(&self) {
        self.store.read_rechecks.inc();
    }

    /// Blobs were evicted.
    pub fn evicted(&self, blobs: u64, bytes: u64) {
        self.store.evictions.inc_by(blobs);
        self.store.evicted_bytes.inc_by(bytes);
    }

    /// A tag was answered stale because the upstream failed.
    pub fn stale_serve(&self) {
        self.upstream.stale_serves.inc();
    }

    /// The upstream answered 429, or a request was held back during its Retry-After.
    pub fn upstream_throttled(&self) {
        self.upstream.upstream_throttled.inc();
    }

    /// A request began (`+1`) or stopped (`-1`) waiting for an upstream concurrency slot.
    pub fn upstream_waiting(&self, delta: i64) {
        self.upstream.upstream_waiting.inc_by(delta);
    }

    /// A request of `kind` was answered as `result`.
    pub fn request(&self, kind: Kind, result: Outcome) {
        self.serving
            .requests
            .get_or_create(&RequestLabels { kind, result })
            .inc();
    }

    /// `bytes` of body were sent from `source`.
    pub fn served(&self, source: Source, bytes: u64) {
        match source {
            Source::Cache => self.serving.served_cache.inc_by(bytes),
            Source::Upstream => self.serving.served_upstream.inc_by(bytes),
            Source::Passthrough => self.serving.served_passthrough.inc_by(bytes),
            Source::Peer => self.serving.served_peer.inc_by(bytes),
        };
    }

    /// `bytes` of a blob fill arrived from `source`.
    pub fn fill_source(&self, source: FillSource, bytes: u64) {
        self.cluster
            .fill_bytes
            .get_or_create(&FillSourceLabels { source })
            .inc_by(bytes);
    }

    /// A peer could not supply a stripe (`reason`); the next candidate or the registry is asked.
    pub fn cluster_fallback(&self, reason: PeerFailure) {
        self.cluster
            .fallbacks
            .get_or_create(&FallbackLabels { reason })
            .inc();
    }

    /// A peer-port request was refused with 401.
    pub fn peer_rejected(&self, reason: Rejection) {
        self.cluster
            .rejected
            .get_or_create(&RejectionLabels { reason })
            .inc();
    }

    /// A peer request was redirected to a node already streaming its stripe.
    pub fn peer_redirect(&self) {
        self.cluster.redirects.inc();
    }

    /// The members known and those marked bad, as of now.
    pub fn cluster_members(&self, known: usize, bad: usize) {
        self.cluster
            .members
            .set(i64::try_from(known).unwrap_or(i64::MAX));
        self.cluster
            .bad_peers
            .set(i64::try_from(bad).unwrap_or(i64::MAX));
    }

    /// `bytes` of body were sent from `source` by the kernel from the blob file (`zero_copy`).
    pub fn sent_by_kernel(&self, source: Source, bytes: u64) {
        self.served(source, bytes);
        self.serving.sent_by_kernel.inc_by(bytes);
    }

    /// A request of `kind` to an upstream was answered with `status` (`None`: no answer).
    pub fn upstream_request(&self, kind: Kind, status: Option<http::StatusCode>) {
        let status = match status.map(|s| s.as_u16() / 100) {
            Some(2) => "2xx",
            Some(3) => "3xx",
            Some(4) => "4xx",
            Some(5) => "5xx",
            Some(_) => "other",
            None => "error",
        };
        self.upstream
            .upstream_requests
            .get_or_create(&UpstreamLabels {
                kind,
                status: status.to_owned(),
            })
            .inc();
    }

    /// `bytes` of blob body arrived from upstream.
    pub fn upstream_bytes(&self, bytes: u64) {
        self.upstream.upstream_bytes.inc_by(bytes);
    }

    /// A fill started.
    pub fn fill_started(&self) {
        self.fills.fills_in_flight.inc();
    }

    /// A fill ended.
    pub fn fill_ended(&self, result: FillResult) {
        self.fills.fills_in_flight.dec();
        self.fills.fills.get_or_create(&FillLabels { result }).inc();
        if result == FillResult::Mismatch {
            self.upstream.digest_mismatches.inc();
        }
    }

    /// A fill's upstream body broke or stalled and the fill went on `how`.
    pub fn fill_resumed(&self, how: Resume) {
        self.fills
            .fill_resumes
            .get_or_create(&ResumeLabels { how })
            .inc();
    }

    /// A blob streamed from upstream without storing did not match its digest.
    pub fn digest_mismatch(&self) {
        self.upstream.digest_mismatches.inc();
    }

    /// A manifest from upstream did not match its digest.
    pub fn manifest_mismatch(&self) {
        self.upstream.digest_mismatches.inc();
    }

    /// A response began (`+1`) or stopped (`-1`) streaming from a fill in progress.
    pub fn fill_waiter(&self, delta: i64) {
        self.fills.fill_waiters.inc_by(delta);
    }

    /// OpenMetrics text, with store gauges set from the store's usage.
    pub fn render(&self, store_bytes: u64, store_blobs: usize, pinned_bytes: u64) -> String {
        self.store
            .pinned_bytes
            .set(i64::try_from(pinned_bytes).unwrap_or(i64::MAX));
        self.store
            .store_bytes
            .set(i64::try_from(store_bytes).unwrap_or(i64::MAX));
        self.store
            .store_blobs
            .set(i64::try_from(store_blobs).unwrap_or(i64::MAX));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// `Content-Type` of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_values_render() {
        let m = Metrics::new();
        m.request(Kind::Blob, Outcome::Coalesced);
        m.served(Source::Upstream, 10);
        m.upstream_request(Kind::Blob, Some(http::StatusCode::OK));
        m.fill_started();
        m.fill_ended(FillResult::Mismatch);
        m.evicted(2, 30);
        m.stale_serve();
        m.upstream_throttled();
        m.store_health(true, (2, 1));
        m.store_health(true, (3, 1));
        m.read_mismatch();
        let text = m.render(42, 2, 7);
        for line in [
            "cache_daemon_requests_total{kind=\"blob\",result=\"coalesced\"} 1",
            "cache_daemon_served_bytes_total{source=\"upstream\"} 10",
            "cache_daemon_upstream_requests_total{kind=\"blob\",status=\"2xx\"} 1",
            "cache_daemon_digest_mismatches_total 1",
            "cache_daemon_fills_in_flight 0",
            "cache_daemon_store_bytes 42",
            "cache_daemon_store_blobs 2",
            "cache_daemon_pinned_bytes 7",
            "cache_daemon_evictions_total 2",
            "cache_daemon_evicted_bytes_total 30",
            "cache_daemon_stale_serves_total 1",
            "cache_daemon_upstream_throttled_total 1",
            "cache_daemon_store_write_errors_total{kind=\"no_space\"} 3",
            "cache_daemon_store_write_errors_total{kind=\"other\"} 1",
            "cache_daemon_store_full 1",
            "cache_daemon_read_mismatches_total 1",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
    }
}
