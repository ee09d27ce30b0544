//! What a burst measured: per-pod phases and per-layer phases in HDR histograms (microseconds, 3
//! significant digits), failures counted by kind, and when each pod turned ready.
//!
//! A worker owns a [`Recorder`] for one run (variant, target, repetition) and only records into
//! it; after the run the recorders are merged into [`Recordings`], keyed by (variant, target),
//! which keep each repetition's histograms apart ([`Series`]) and merge them on demand. Every
//! time a worker hands in is an offset from the burst epoch ([`PodTimes`]), so a phase is measured
//! from the pod's scheduled time, never from when a worker got to it.
//!
//! A scenario whose pods arrive in waves is also recorded per wave ([`WaveData`]): the pull, time
//! to first byte, end-to-end and blob first-byte histograms of that wave's pods and nodes, and
//! when its last pod turned ready, so a cold first wave and a warm second one read apart.
//!
//! This module does no I/O and knows nothing of the file format; `result.rs` encodes what is
//! here, and `report/` renders it.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use hdrhistogram::Histogram;

/// Significant decimal digits every histogram keeps: values are exact to 0.1 %.
pub const SIGNIFICANT_DIGITS: u8 = 3;

/// An enum whose values have a fixed name, used in JSON and reports: `ALL` (in declaration
/// order), `name`, `from_name` and `Display` from one table.
macro_rules! named {
    ($(#[$meta:meta])* pub enum $ty:ident { $($(#[$doc:meta])* $v:ident = $name:literal,)* }) => {
        $(#[$meta])*
        pub enum $ty { $($(#[$doc])* $v,)* }

        impl $ty {
            /// Every value, in declaration order.
            pub const ALL: [$ty; [$($name),*].len()] = [$(Self::$v),*];

            /// The name used in JSON and reports.
            pub fn name(self) -> &'static str {
                match self { $(Self::$v => $name,)* }
            }

            /// The value named `name`, as [`Self::name`] writes it.
            pub fn from_name(name: &str) -> Option<Self> {
                Self::ALL.into_iter().find(|v| v.name() == name)
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

named! {
    /// A per-pod phase, in pipeline order. All are durations in microseconds in the histograms.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
    pub enum Phase {
        /// Scheduled → its node began the last of the pulls this pod waits for: the wait for a
        /// slot in the node's pull queue. With several images (sidecars) under serialized pulls
        /// it overlaps the pulls of the images before it. 0 when the images were already there
        /// or the pulls began before the pod was scheduled.
        Queue = "queue",
        /// First pull start → every layer of every image fetched and verified; 0 when the
        /// images were already there.
        Pull = "pull",
        /// All layers fetched → all layers unpacked into the snapshot (the part of unpacking
        /// not overlapped with fetching); 0 when the image was already there or unpacking is
        /// off.
        Unpack = "unpack",
        /// Container start → ready (reads, init and probes).
        StartToReady = "start_to_ready",
        /// Scheduled → ready: what a user waits for.
        EndToEnd = "end_to_end",
        /// Pull start → first byte of the first blob. Only for pods whose node pulled.
        Ttfb = "ttfb",
    }
}

named! {
    /// A per-layer phase, as durations in microseconds, in pipeline order (`first_byte`, part of
    /// `fetch`, last).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
    pub enum LayerPhase {
        /// Request sent → last byte of the blob received.
        Fetch = "fetch",
        /// Digest verification after (or beyond) the fetch.
        Verify = "verify",
        Decompress = "decompress",
        /// Writing the tar's entries into the snapshot.
        Apply = "apply",
        /// Request sent → first body byte, for every blob a node fetched: each layer (inside its
        /// `fetch`) and the image config. What a cache that coalesces misses makes its followers
        /// wait: one that streams keeps it near the leader's, one that holds followers until its
        /// fill is complete makes it the leader's whole download.
        FirstByte = "first_byte",
    }
}

named! {
    /// Why a pod did not become ready, in the order reports list them. One count per failed
    /// pod; the names are the JSON keys.
    #[derive(
        Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
    )]
    #[serde(rename_all = "snake_case")]
    pub enum FailureKind {
        /// The TCP or TLS connection failed.
        Connect = "connect",
        /// A request or the pod's deadline ran out.
        Timeout = "timeout",
        /// A 4xx other than 429.
        #[serde(rename = "http_4xx")]
        Http4xx = "http_4xx",
        #[serde(rename = "http_5xx")]
        Http5xx = "http_5xx",
        /// 429 Too Many Requests, retries exhausted.
        Throttled = "throttled",
        /// A blob or manifest did not match its digest.
        DigestMismatch = "digest_mismatch",
        /// The image index has no manifest for the node's platform.
        PlatformMissing = "platform_missing",
        /// Decompressing or applying a layer failed.
        Unpack = "unpack",
        /// Anything else.
        Other = "other",
    }
}

impl LayerPhase {
    /// The phases that follow one another in a layer's life, without overlap: what a stacked
    /// bar of the time per layer shows (`first_byte` is inside `fetch`).
    pub const STACKED: [LayerPhase; 4] = [
        LayerPhase::Fetch,
        LayerPhase::Verify,
        LayerPhase::Decompress,
        LayerPhase::Apply,
    ];
}

/// When one pod's milestones happened, each as an offset from the burst epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodTimes {
    /// When the pod was scheduled (its slot's offset in the schedule).
    pub scheduled: Duration,
    /// The node's pulls this pod waited for, taken together ([`PullTimes::spanning`]); `None`
    /// when its images were already on the node when it asked.
    pub pull: Option<PullTimes>,
    /// When the container started (after unpack).
    pub started: Duration,
    /// When the readiness probe first passed.
    pub ready: Duration,
    /// The arrival wave the pod belongs to (`0` unless the scenario has waves).
    pub wave: u32,
}

/// The milestones of a node's pull of one image (or of a pod's images together), as offsets
/// from the burst epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PullTimes {
    /// The node started pulling (manifest request sent, after its slot in the pull queue).
    pub started: Duration,
    /// The node started the last of the pulls taken together; `started` for one image.
    pub last_started: Duration,
    /// First byte of the first blob arrived; `None` if no blob was fetched (all layers present).
    pub first_byte: Option<Duration>,
    /// Every layer fetched and verified.
    pub fetched: Duration,
    /// Every layer unpacked; equal to `fetched` when unpacking is off.
    pub unpacked: Duration,
}

impl PullTimes {
    /// The milestones of one image's pull, which started at `started`.
    pub fn one(
        started: Duration,
        first_byte: Option<Duration>,
        fetched: Duration,
        unpacked: Duration,
    ) -> Self {
        Self {
            started,
            last_started: started,
            first_byte,
            fetched,
            unpacked,
        }
    }

    /// Several pulls (a pod's images) as one: from the earliest start (and first byte) to the
    /// latest fetch and unpack, with the latest start as `last_started`; `None` for no pulls.
    pub fn spanning(pulls: impl IntoIterator<Item = PullTimes>) -> Option<Self> {
        pulls.into_iter().reduce(|a, b| Self {
            started: a.started.min(b.started),
            last_started: a.last_started.max(b.last_started),
            first_byte: match (a.first_byte, b.first_byte) {
                (Some(x), Some(y)) => Some(x.min(y)),
                (x, y) => x.or(y),
            },
            fetched: a.fetched.max(b.fetched),
            unpacked: a.unpacked.max(b.unpacked),
        })
    }
}

/// How long each phase of one layer took.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LayerTimes {
    /// Request → last byte.
    pub fetch: Duration,
    pub verify: Duration,
    pub decompress: Duration,
    /// Applying entries to the snapshot.
    pub apply: Duration,
}

/// One layer of one image, its phases summed over the nodes that pulled it: what the report's
/// per-layer bars show (mean = sum / count). Phases a node did not time (a real client's fetch)
/// count zero.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct LayerSums {
    /// The image: the variant's name (a pod's sidecars are their own variants).
    pub image: String,
    /// The layer's position in the image's manifest, from 0.
    pub position: u32,
    /// Nodes that recorded it; the `*_us` fields are summed over them.
    pub count: u64,
    pub fetch_us: u64,
    pub verify_us: u64,
    pub decompress_us: u64,
    pub apply_us: u64,
}

impl LayerSums {
    fn add(&mut self, other: &LayerSums) {
        self.count += other.count;
        self.fetch_us += other.fetch_us;
        self.verify_us += other.verify_us;
        self.decompress_us += other.decompress_us;
        self.apply_us += other.apply_us;
    }

    /// Mean microseconds per node in `phase` (`first_byte` is not summed: 0).
    pub fn mean_us(&self, phase: LayerPhase) -> f64 {
        let sum = match phase {
            LayerPhase::Fetch => self.fetch_us,
            LayerPhase::Verify => self.verify_us,
            LayerPhase::Decompress => self.decompress_us,
            LayerPhase::Apply => self.apply_us,
            LayerPhase::FirstByte => 0,
        };
        sum as f64 / self.count.max(1) as f64
    }
}

/// Which run a recorder belongs to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RunKey {
    pub variant: String,
    pub target: String,
    /// From 0.
    pub repetition: u32,
}

/// A (variant, target) pair: what one [`Series`] measures.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SeriesKey {
    pub variant: String,
    pub target: String,
}

/// One worker's measurements for one run. Recording allocates nothing per sample once the
/// histograms have grown to the values seen (ready offsets go into one `Vec`).
#[derive(Debug, Clone)]
pub struct Recorder {
    run: RunKey,
    data: Repetition,
}

/// Everything one repetition of one (variant, target) measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Repetition {
    phases: [Histogram<u64>; 6],
    layers: [Histogram<u64>; 5],
    failures: BTreeMap<FailureKind, u64>,
    /// Microseconds from the epoch; sorted once merged into [`Recordings`].
    ready_us: Vec<u64>,
    waves: BTreeMap<u32, WaveData>,
    /// Per image and layer position, in the order first recorded.
    by_layer: Vec<LayerSums>,
}

/// A repetition as `result.rs` decodes it, for [`Repetition::from_parts`]. Phases and layer
/// phases absent here stay empty.
#[derive(Debug)]
pub(crate) struct RepetitionParts {
    /// Pod phase histograms, microseconds.
    pub phases: BTreeMap<Phase, Histogram<u64>>,
    /// Layer phase histograms, microseconds.
    pub layers: BTreeMap<LayerPhase, Histogram<u64>>,
    pub failures: BTreeMap<FailureKind, u64>,
    /// When each ready pod turned ready, microseconds from the epoch, in any order.
    pub ready_us: Vec<u64>,
    pub waves: BTreeMap<u32, WaveData>,
    pub by_layer: Vec<LayerSums>,
}

/// What the pods of one arrival wave measured in one repetition.
#[derive(Debug, Clone, PartialEq)]
pub struct WaveData {
    /// Earliest scheduled offset of the wave's pods, microseconds from the epoch (its `at`).
    pub at_us: u64,
    /// Pull phase of the wave's pods.
    pub pull: Histogram<u64>,
    /// Time to first byte of the wave's pods' pulls.
    pub ttfb: Histogram<u64>,
    /// End to end of the wave's pods.
    pub end_to_end: Histogram<u64>,
    /// Request to first byte of every blob (config and layers) the wave's nodes fetched.
    pub first_byte: Histogram<u64>,
    /// Per blob and puller: how long after that blob's first bytes reached any of the wave's
    /// pullers (or after its own request, if it asked later) this puller got its first byte.
    /// The first puller of a blob counts 0.
    pub first_byte_lag: Histogram<u64>,
    pub ready_pods: u64,
    pub failed_pods: u64,
    /// When its last pod turned ready, microseconds from the epoch (0: none did).
    pub last_ready_us: u64,
}

impl WaveData {
    fn new(at_us: u64) -> Self {
        Self::from_parts(at_us, (0, 0, 0), std::array::from_fn(|_| new_histogram()))
    }

    /// A wave rebuilt from decoded parts (`result.rs`); histograms auto-resize.
    pub(crate) fn from_parts(
        at_us: u64,
        counts: (u64, u64, u64),
        mut hists: [Histogram<u64>; 5],
    ) -> Self {
        for h in &mut hists {
            h.auto(true);
        }
        let [pull, ttfb, end_to_end, first_byte, first_byte_lag] = hists;
        let (ready_pods, failed_pods, last_ready_us) = counts;
        Self {
            at_us,
            pull,
            ttfb,
            end_to_end,
            first_byte,
            first_byte_lag,
            ready_pods,
            failed_pods,
            last_ready_us,
        }
    }

    /// From the wave's start until its last pod was ready; `None` when a pod failed or none was
    /// ready.
    pub fn time_to_all_ready(&self) -> Option<Duration> {
        (self.failed_pods == 0 && self.ready_pods > 0)
            .then(|| Duration::from_micros(self.last_ready_us.saturating_sub(self.at_us)))
    }

    /// The longest any puller of the wave waited for a blob's first bytes after they had reached
    /// another puller (see [`WaveData::first_byte_lag`]); `None` when no first byte was observed.
    pub fn first_byte_lag_max(&self) -> Option<Duration> {
        (!self.first_byte_lag.is_empty()).then(|| Duration::from_micros(self.first_byte_lag.max()))
    }

    fn merge(&mut self, other: &WaveData) {
        self.at_us = self.at_us.min(other.at_us);
        for (into, from) in [
            (&mut self.pull, &other.pull),
            (&mut self.ttfb, &other.ttfb),
            (&mut self.end_to_end, &other.end_to_end),
            (&mut self.first_byte, &other.first_byte),
            (&mut self.first_byte_lag, &other.first_byte_lag),
        ] {
            add_into(into, from);
        }
        self.ready_pods += other.ready_pods;
        self.failed_pods += other.failed_pods;
        self.last_ready_us = self.last_ready_us.max(other.last_ready_us);
    }
}

/// One blob one node fetched: when it asked and when the first body byte arrived, as offsets
/// from the burst epoch (as instants while a pull still holds them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobFirstByte<T = Duration> {
    pub digest: stampede_oci::Digest,
    /// Request sent.
    pub requested: T,
    /// First body byte received.
    pub first_byte: T,
}

/// Every repetition of one (variant, target), kept apart; merged histograms on demand.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Series {
    repetitions: BTreeMap<u32, Repetition>,
}

/// All runs' measurements after the workers are done, by (variant, target).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Recordings {
    series: BTreeMap<SeriesKey, Series>,
}

/// Summary numbers of a histogram, in microseconds (all 0 when it is empty).
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    pub count: u64,
    pub min_us: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p95_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    pub mean_us: f64,
}

/// Pods ready over time for one repetition: how many of `pods` were ready at each moment.
#[derive(Debug, Clone, Copy)]
pub struct ReadyTimeline<'a> {
    ready_us: &'a [u64],
    pods: u64,
}

/// A new, empty histogram: microseconds, [`SIGNIFICANT_DIGITS`], resizing to any value.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new(SIGNIFICANT_DIGITS).expect("3 significant digits is in hdrhistogram's range")
}

/// `d` in whole microseconds, saturating.
pub fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Records `us`; an auto-resizing histogram grows to take it. (`saturating_record` would clamp
/// to the current range instead of growing.)
fn record_us(h: &mut Histogram<u64>, us: u64) {
    if h.record(us).is_err() {
        h.saturating_record(us);
    }
}

fn add_into(into: &mut Histogram<u64>, from: &Histogram<u64>) {
    // Every histogram here auto-resizes (new_histogram, and result.rs turns it on after
    // decoding), so adding cannot run out of range.
    into.add(from)
        .expect("auto-resizing histograms take any value");
}

impl Recorder {
    pub fn new(run: RunKey) -> Self {
        Self {
            run,
            data: Repetition::new(),
        }
    }

    /// Records a pod that became ready: every pod phase from its milestones, and its ready
    /// offset for the timeline. A milestone before the one it is measured from (a node's pull
    /// that began before this pod was scheduled) gives 0.
    pub fn pod(&mut self, t: &PodTimes) {
        let (queue, pull, unpack) = match &t.pull {
            // A pod that joins a pull already under way waits only for what is left of it,
            // so its phases still add up to its own time from scheduled to started.
            Some(p) => (
                p.last_started.saturating_sub(t.scheduled),
                p.fetched.saturating_sub(p.started.max(t.scheduled)),
                p.unpacked.saturating_sub(p.fetched.max(t.scheduled)),
            ),
            None => (Duration::ZERO, Duration::ZERO, Duration::ZERO),
        };
        let end_to_end = t.ready.saturating_sub(t.scheduled);
        let d = &mut self.data;
        d.record(Phase::Queue, queue);
        d.record(Phase::Pull, pull);
        d.record(Phase::Unpack, unpack);
        d.record(Phase::StartToReady, t.ready.saturating_sub(t.started));
        d.record(Phase::EndToEnd, end_to_end);
        let ttfb = t
            .pull
            .and_then(|p| Some(p.first_byte?.saturating_sub(p.started)));
        if let Some(ttfb) = ttfb {
            d.record(Phase::Ttfb, ttfb);
        }
        d.ready_us.push(micros(t.ready));
        let w = d.wave(t.wave, t.scheduled);
        record_us(&mut w.pull, micros(pull));
        if let Some(ttfb) = ttfb {
            record_us(&mut w.ttfb, micros(ttfb));
        }
        record_us(&mut w.end_to_end, micros(end_to_end));
        w.ready_pods += 1;
        w.last_ready_us = w.last_ready_us.max(micros(t.ready));
    }

    /// Records the phases of layer `position` of `image` on one node (not attributed to a
    /// wave).
    pub fn layer(&mut self, image: &str, position: usize, t: &LayerTimes) {
        self.add_layer(image, position, t, true);
    }

    /// Records a layer one node unpacked after a pull whose client reports only the whole
    /// pull (a real client): `decompress` and `apply`, no fetch or verify.
    pub fn layer_unpacked(&mut self, image: &str, position: usize, t: &LayerTimes) {
        self.add_layer(image, position, t, false);
    }

    fn add_layer(&mut self, image: &str, position: usize, t: &LayerTimes, fetch_timed: bool) {
        let d = &mut self.data;
        let values = [t.fetch, t.verify, t.decompress, t.apply];
        let skip = if fetch_timed { 0 } else { 2 };
        for (phase, value) in LayerPhase::STACKED.into_iter().zip(values).skip(skip) {
            record_us(&mut d.layers[phase as usize], micros(value));
        }
        let timed = |v: Duration| if fetch_timed { micros(v) } else { 0 };
        d.add_layer_sums(&LayerSums {
            image: image.to_owned(),
            position: u32::try_from(position).unwrap_or(u32::MAX),
            count: 1,
            fetch_us: timed(t.fetch),
            verify_us: timed(t.verify),
            decompress_us: micros(t.decompress),
            apply_us: micros(t.apply),
        });
    }

    /// Records the blobs every node of `wave` (scheduled at `scheduled`) fetched, all nodes
    /// together: each fetch's request-to-first-byte (in the repetition and the wave), and each
    /// puller's first-byte lag: its first byte of a blob minus the later of its own request and
    /// the earliest first byte of that blob among the wave's pullers.
    pub fn wave_blobs(&mut self, wave: u32, scheduled: Duration, blobs: &[BlobFirstByte]) {
        let mut earliest: std::collections::HashMap<&stampede_oci::Digest, Duration> =
            std::collections::HashMap::new();
        for b in blobs {
            let e = earliest.entry(&b.digest).or_insert(b.first_byte);
            *e = (*e).min(b.first_byte);
        }
        for b in blobs {
            let ttfb = micros(b.first_byte.saturating_sub(b.requested));
            let first = earliest[&b.digest];
            let lag = micros(b.first_byte.saturating_sub(b.requested.max(first)));
            record_us(&mut self.data.layers[LayerPhase::FirstByte as usize], ttfb);
            let w = self.data.wave(wave, scheduled);
            record_us(&mut w.first_byte, ttfb);
            record_us(&mut w.first_byte_lag, lag);
        }
    }

    /// Counts a pod that did not become ready. Call once per failed pod, not per failed
    /// attempt.
    pub fn failed(&mut self, kind: FailureKind) {
        *self.data.failures.entry(kind).or_insert(0) += 1;
    }

    /// Counts a pod of `wave` (scheduled at `scheduled`) that did not become ready, in the
    /// repetition and in its wave.
    pub fn failed_in_wave(&mut self, wave: u32, scheduled: Duration, kind: FailureKind) {
        self.failed(kind);
        self.data.wave(wave, scheduled).failed_pods += 1;
    }

    /// What has been recorded so far (ready offsets in recording order).
    pub fn data(&self) -> &Repetition {
        &self.data
    }
}

impl Repetition {
    fn new() -> Self {
        Self {
            phases: std::array::from_fn(|_| new_histogram()),
            layers: std::array::from_fn(|_| new_histogram()),
            failures: BTreeMap::new(),
            ready_us: Vec::new(),
            waves: BTreeMap::new(),
            by_layer: Vec::new(),
        }
    }

    fn add_layer_sums(&mut self, sums: &LayerSums) {
        match self
            .by_layer
            .iter_mut()
            .find(|l| l.image == sums.image && l.position == sums.position)
        {
            Some(l) => l.add(sums),
            None => self.by_layer.push(sums.clone()),
        }
    }

    /// Per image and layer position, the phases summed over the nodes that pulled it, in the
    /// order first recorded (an image's layers in manifest order).
    pub fn by_layer(&self) -> &[LayerSums] {
        &self.by_layer
    }

    /// Wave `wave`'s data, created (starting at `scheduled`) on first use.
    fn wave(&mut self, wave: u32, scheduled: Duration) -> &mut WaveData {
        let at = micros(scheduled);
        let w = self.waves.entry(wave).or_insert_with(|| WaveData::new(at));
        w.at_us = w.at_us.min(at);
        w
    }

    /// Rebuilds a repetition from decoded parts (`result.rs`). Histograms are switched to
    /// auto-resize so they merge with any other; `ready_us` is sorted.
    pub(crate) fn from_parts(parts: RepetitionParts) -> Self {
        let mut r = Self {
            failures: parts.failures,
            ready_us: parts.ready_us,
            waves: parts.waves,
            by_layer: parts.by_layer,
            ..Self::new()
        };
        r.ready_us.sort_unstable();
        for (phase, mut h) in parts.phases {
            h.auto(true);
            r.phases[phase as usize] = h;
        }
        for (phase, mut h) in parts.layers {
            h.auto(true);
            r.layers[phase as usize] = h;
        }
        r
    }

    fn record(&mut self, phase: Phase, value: Duration) {
        record_us(&mut self.phases[phase as usize], micros(value));
    }

    fn merge(&mut self, other: &Repetition) {
        for (into, from) in self.phases.iter_mut().zip(&other.phases) {
            add_into(into, from);
        }
        for (into, from) in self.layers.iter_mut().zip(&other.layers) {
            add_into(into, from);
        }
        for (kind, n) in &other.failures {
            *self.failures.entry(*kind).or_insert(0) += n;
        }
        self.ready_us.extend_from_slice(&other.ready_us);
        self.ready_us.sort_unstable();
        for l in &other.by_layer {
            self.add_layer_sums(l);
        }
        for (wave, data) in &other.waves {
            self.waves
                .entry(*wave)
                .and_modify(|w| w.merge(data))
                .or_insert_with(|| data.clone());
        }
    }

    /// Per arrival wave, what its pods measured (a scenario without waves has only wave 0; a
    /// result read back has waves only when the scenario had several).
    pub fn waves(&self) -> &BTreeMap<u32, WaveData> {
        &self.waves
    }

    /// The histogram of a pod phase, in microseconds.
    pub fn phase(&self, phase: Phase) -> &Histogram<u64> {
        &self.phases[phase as usize]
    }

    /// The histogram of a layer phase, in microseconds.
    pub fn layer(&self, phase: LayerPhase) -> &Histogram<u64> {
        &self.layers[phase as usize]
    }

    /// Failed pods by kind; kinds that did not occur are absent.
    pub fn failures(&self) -> &BTreeMap<FailureKind, u64> {
        &self.failures
    }

    /// Pods that did not become ready.
    pub fn failed_pods(&self) -> u64 {
        self.failures.values().sum()
    }

    pub fn ready_pods(&self) -> u64 {
        self.ready_us.len() as u64
    }

    /// When each ready pod turned ready, in microseconds from the epoch: ascending once merged
    /// into [`Recordings`] (a [`Recorder`]'s own are in recording order).
    pub fn ready_offsets_us(&self) -> &[u64] {
        &self.ready_us
    }

    /// Pods ready over time, out of `pods` scheduled (the scenario's pods per repetition; at
    /// least the pods recorded here, ready or failed).
    pub fn timeline(&self, pods: u64) -> ReadyTimeline<'_> {
        ReadyTimeline {
            ready_us: &self.ready_us,
            pods: pods.max(self.ready_pods() + self.failed_pods()),
        }
    }
}

impl Series {
    /// Repetitions in order, with their measurements.
    pub fn repetitions(&self) -> impl Iterator<Item = (u32, &Repetition)> {
        self.repetitions.iter().map(|(r, d)| (*r, d))
    }

    pub fn repetition(&self, repetition: u32) -> Option<&Repetition> {
        self.repetitions.get(&repetition)
    }

    /// Every repetition merged into one: histograms merged, counts summed, each wave's `at`
    /// the earliest and `last_ready` the latest, layers in the order first recorded.
    fn all(&self) -> Repetition {
        let mut all = Repetition::new();
        for r in self.repetitions.values() {
            all.merge(r);
        }
        all
    }

    /// A pod phase over all repetitions.
    pub fn merged(&self, phase: Phase) -> Histogram<u64> {
        self.all().phases[phase as usize].clone()
    }

    /// A layer phase over all repetitions.
    pub fn merged_layer(&self, phase: LayerPhase) -> Histogram<u64> {
        self.all().layers[phase as usize].clone()
    }

    /// Per image and layer position, summed over every repetition.
    pub fn merged_by_layer(&self) -> Vec<LayerSums> {
        self.all().by_layer
    }

    /// The arrival waves any repetition recorded, in order.
    pub fn wave_numbers(&self) -> Vec<u32> {
        self.all().waves.into_keys().collect()
    }

    /// Wave `wave` over all repetitions, or `None` if no repetition has it.
    pub fn merged_wave(&self, wave: u32) -> Option<WaveData> {
        self.all().waves.remove(&wave)
    }

    /// Failed pods by kind over all repetitions.
    pub fn failures(&self) -> BTreeMap<FailureKind, u64> {
        self.all().failures
    }

    /// Failed pods over all repetitions.
    pub fn failed_pods(&self) -> u64 {
        self.repetitions.values().map(Repetition::failed_pods).sum()
    }

    /// The `quantile` (0..=1) of `phase` in each repetition, in repetition order: the input of a
    /// bootstrap confidence interval. Repetitions without samples are skipped.
    pub fn per_repetition(&self, phase: Phase, quantile: f64) -> Vec<Duration> {
        self.repetitions
            .values()
            .map(|r| r.phase(phase))
            .filter(|h| !h.is_empty())
            .map(|h| Duration::from_micros(h.value_at_quantile(quantile)))
            .collect()
    }

    /// Adds a repetition's measurements (merging if it is already there).
    pub(crate) fn insert(&mut self, repetition: u32, mut data: Repetition) {
        data.ready_us.sort_unstable();
        self.repetitions
            .entry(repetition)
            .and_modify(|r| r.merge(&data))
            .or_insert(data);
    }
}

impl Recordings {
    pub fn new() -> Self {
        Self::default()
    }

    /// Merges a worker's recorder into its series and repetition.
    pub fn add(&mut self, recorder: Recorder) {
        let Recorder { run, data } = recorder;
        self.series
            .entry(SeriesKey {
                variant: run.variant,
                target: run.target,
            })
            .or_default()
            .insert(run.repetition, data);
    }

    pub fn series(&self, variant: &str, target: &str) -> Option<&Series> {
        self.series.get(&SeriesKey {
            variant: variant.to_owned(),
            target: target.to_owned(),
        })
    }

    /// Every series, ordered by (variant, target).
    pub fn iter(&self) -> impl Iterator<Item = (&SeriesKey, &Series)> {
        self.series.iter()
    }

    /// Takes the series out, ordered by (variant, target).
    pub fn into_series(self) -> BTreeMap<SeriesKey, Series> {
        self.series
    }
}

impl Summary {
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        Self {
            count: h.len(),
            min_us: h.min(),
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p95_us: h.value_at_quantile(0.95),
            p99_us: h.value_at_quantile(0.99),
            max_us: h.max(),
            mean_us: h.mean(),
        }
    }
}

impl ReadyTimeline<'_> {
    /// Pods scheduled in the repetition (the denominator).
    pub fn pods(&self) -> u64 {
        self.pods
    }

    /// When `fraction` (0..=1) of the scheduled pods were ready, from the epoch; `None` if that
    /// many never were (failures). `time_to(1.0)` is when the last pod turned ready.
    pub fn time_to(&self, fraction: f64) -> Option<Duration> {
        if self.pods == 0 {
            return None;
        }
        let needed = ((fraction.clamp(0.0, 1.0) * self.pods as f64).ceil() as u64).max(1);
        let index = usize::try_from(needed - 1).ok()?;
        self.ready_us
            .get(index)
            .map(|us| Duration::from_micros(*us))
    }

    /// Fraction (0..=1) of the scheduled pods ready at `offset` from the epoch (inclusive).
    pub fn fraction_at(&self, offset: Duration) -> f64 {
        if self.pods == 0 {
            return 0.0;
        }
        let at = micros(offset);
        let ready = self.ready_us.partition_point(|us| *us <= at);
        ready as f64 / self.pods as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_kinds_serialize_as_their_names() {
        for kind in FailureKind::ALL {
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.name());
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn run(rep: u32) -> RunKey {
        RunKey {
            variant: "full".into(),
            target: "direct".into(),
            repetition: rep,
        }
    }

    fn within(got: u64, want: u64) -> bool {
        // 3 significant digits: within 0.1 % (and one unit for small values).
        got.abs_diff(want) <= (want / 1000).max(1)
    }

    #[test]
    fn percentiles_of_uniform_1_to_10000_us() {
        let mut h = new_histogram();
        for v in 1..=10_000 {
            h.record(v).unwrap();
        }
        let s = Summary::of(&h);
        assert_eq!(s.count, 10_000);
        assert_eq!(s.min_us, 1);
        for (got, want) in [
            (s.p50_us, 5_000),
            (s.p90_us, 9_000),
            (s.p95_us, 9_500),
            (s.p99_us, 9_900),
            (s.max_us, 10_000),
        ] {
            assert!(within(got, want), "{got} vs {want}");
        }
        assert!((s.mean_us - 5_000.5).abs() < 5.0, "{}", s.mean_us);
    }

    #[test]
    fn percentiles_of_known_distributions() {
        // 90 % at 1 ms and 10 % at 1 s: p90 is 1 ms, p95 is 1 s.
        let mut h = new_histogram();
        h.record_n(1_000, 90).unwrap();
        h.record_n(1_000_000, 10).unwrap();
        let s = Summary::of(&h);
        assert!(within(s.p50_us, 1_000) && within(s.p90_us, 1_000), "{s:?}");
        assert!(
            within(s.p95_us, 1_000_000) && within(s.p99_us, 1_000_000),
            "{s:?}"
        );
        // A constant.
        let mut h = new_histogram();
        h.record_n(42_000, 7).unwrap();
        let s = Summary::of(&h);
        assert!(
            [s.min_us, s.p50_us, s.p99_us, s.max_us]
                .iter()
                .all(|v| within(*v, 42_000)),
            "{s:?}"
        );
        // Values beyond an hour are kept, not clamped.
        let mut h = new_histogram();
        h.record(micros(Duration::from_secs(3 * 3600))).unwrap();
        assert!(within(Summary::of(&h).max_us, 3 * 3600 * 1_000_000));
        assert_eq!(Summary::of(&new_histogram()), Summary::default());
    }

    #[test]
    fn phases_are_measured_from_the_scheduled_time() {
        let mut rec = Recorder::new(run(0));
        rec.pod(&PodTimes {
            scheduled: ms(100),
            pull: Some(PullTimes::one(ms(300), Some(ms(350)), ms(1_300), ms(1_500))),
            started: ms(1_600),
            ready: ms(2_100),
            wave: 0,
        });
        // Same node's pull, but this pod was scheduled after it began: no queue, and only the
        // rest of the pull (900 ms) counts for it.
        rec.pod(&PodTimes {
            scheduled: ms(400),
            pull: Some(PullTimes::one(ms(300), None, ms(1_300), ms(1_500))),
            started: ms(1_600),
            ready: ms(2_000),
            wave: 0,
        });
        // Image already present.
        rec.pod(&PodTimes {
            scheduled: ms(5_000),
            pull: None,
            started: ms(5_010),
            ready: ms(5_500),
            wave: 0,
        });
        let d = rec.data();
        let values = |phase| -> Vec<u64> {
            d.phase(phase)
                .iter_recorded()
                .flat_map(|v| {
                    std::iter::repeat_n(v.value_iterated_to() / 1000, v.count_at_value() as usize)
                })
                .collect()
        };
        assert_eq!(values(Phase::Queue), [0, 0, 200]);
        assert_eq!(values(Phase::Pull), [0, 900, 1_000]);
        assert_eq!(values(Phase::Unpack), [0, 200, 200]);
        assert_eq!(values(Phase::Ttfb), [50]);
        assert_eq!(values(Phase::StartToReady), [400, 490, 500]);
        assert_eq!(values(Phase::EndToEnd), [500, 1_600, 2_000]);
        assert_eq!(d.ready_offsets_us(), [2_100_000, 2_000_000, 5_500_000]);
    }

    #[test]
    fn a_pods_images_pulled_one_after_another_show_the_wait_as_queue() {
        // Serialized pulls: the main image 100-600 ms (unpacked at 700), the sidecar waits for
        // the slot and pulls 700-900 ms.
        let main = PullTimes::one(ms(100), Some(ms(120)), ms(600), ms(700));
        let sidecar = PullTimes::one(ms(700), Some(ms(710)), ms(900), ms(950));
        let both = PullTimes::spanning([main, sidecar]).unwrap();
        assert_eq!(
            both,
            PullTimes {
                started: ms(100),
                last_started: ms(700),
                first_byte: Some(ms(120)),
                fetched: ms(900),
                unpacked: ms(950),
            }
        );
        assert_eq!(PullTimes::spanning([main]), Some(main));
        assert_eq!(PullTimes::spanning([]), None);
        let mut rec = Recorder::new(run(0));
        rec.pod(&PodTimes {
            scheduled: ms(100),
            pull: Some(both),
            started: ms(950),
            ready: ms(1_000),
            wave: 0,
        });
        let d = rec.data();
        let only = |phase| d.phase(phase).max() / 1000;
        assert_eq!(only(Phase::Queue), 600);
        assert_eq!(only(Phase::Pull), 800);
        assert_eq!(only(Phase::Unpack), 50);
        assert_eq!(only(Phase::Ttfb), 20);
    }

    #[test]
    fn workers_merge_into_series_and_repetitions_stay_apart() {
        let mut all = Recordings::new();
        for (rep, worker_values) in [
            (0, [[10, 20], [30, 40]]),
            (1, [[1_000, 2_000], [3_000, 4_000]]),
            (0, [[50, 60], [70, 80]]),
        ] {
            for values in worker_values {
                let mut rec = Recorder::new(run(rep));
                for v in values {
                    rec.pod(&PodTimes {
                        scheduled: Duration::ZERO,
                        pull: None,
                        started: Duration::ZERO,
                        ready: ms(v),
                        wave: 0,
                    });
                    rec.layer(
                        "app",
                        0,
                        &LayerTimes {
                            fetch: ms(v),
                            ..Default::default()
                        },
                    );
                }
                rec.failed(FailureKind::Timeout);
                all.add(rec);
            }
        }
        let mut other = Recorder::new(RunKey {
            target: "cache-daemon".into(),
            ..run(0)
        });
        other.failed(FailureKind::Http5xx);
        all.add(other);

        let series = all.series("full", "direct").unwrap();
        assert_eq!(series.repetitions().count(), 2);
        let rep0 = series.repetition(0).unwrap();
        assert_eq!(rep0.phase(Phase::EndToEnd).len(), 8);
        assert_eq!(
            rep0.ready_offsets_us(),
            [10, 20, 30, 40, 50, 60, 70, 80].map(|v| v * 1000)
        );
        assert_eq!(series.merged(Phase::EndToEnd).len(), 12);
        assert_eq!(series.merged_layer(LayerPhase::Fetch).len(), 12);
        assert_eq!(
            series.failures(),
            BTreeMap::from([(FailureKind::Timeout, 6)])
        );
        assert_eq!(rep0.failed_pods(), 4);
        let p50: Vec<u64> = series
            .per_repetition(Phase::EndToEnd, 0.5)
            .iter()
            .map(|d| d.as_millis() as u64)
            .collect();
        assert!(within(p50[0], 40) && within(p50[1], 2_000), "{p50:?}");
        assert_eq!(
            all.series("full", "cache-daemon").unwrap().failures(),
            BTreeMap::from([(FailureKind::Http5xx, 1)])
        );
        assert!(all.series("slim", "direct").is_none());
    }

    #[test]
    fn layers_are_summed_per_image_and_position_across_nodes_and_repetitions() {
        let mut all = Recordings::new();
        for rep in 0..2 {
            for node in 0..3u64 {
                let mut rec = Recorder::new(run(rep));
                for position in 0..2usize {
                    let t = LayerTimes {
                        fetch: ms(100 * (position as u64 + 1) + node),
                        verify: ms(1),
                        decompress: ms(10),
                        apply: ms(5),
                    };
                    rec.layer("app", position, &t);
                }
                rec.layer_unpacked(
                    "proxy",
                    0,
                    &LayerTimes {
                        fetch: ms(999),
                        decompress: ms(4),
                        apply: ms(2),
                        ..Default::default()
                    },
                );
                all.add(rec);
            }
        }
        let series = all.series("full", "direct").unwrap();
        let layers = series.merged_by_layer();
        let keys: Vec<(&str, u32, u64)> = layers
            .iter()
            .map(|l| (l.image.as_str(), l.position, l.count))
            .collect();
        assert_eq!(keys, [("app", 0, 6), ("app", 1, 6), ("proxy", 0, 6)]);
        // Nodes 0, 1, 2 fetched layer 0 in 100, 101, 102 ms: mean 101 ms.
        assert_eq!(layers[0].mean_us(LayerPhase::Fetch), 101_000.0);
        assert_eq!(layers[1].mean_us(LayerPhase::Fetch), 201_000.0);
        assert_eq!(layers[1].mean_us(LayerPhase::Apply), 5_000.0);
        // A real client's layer: the fetch was not timed and counts zero.
        assert_eq!(layers[2].mean_us(LayerPhase::Fetch), 0.0);
        assert_eq!(layers[2].mean_us(LayerPhase::Decompress), 4_000.0);
        assert_eq!(series.repetition(0).unwrap().by_layer()[0].count, 3);
    }

    #[test]
    fn waves_are_recorded_apart() {
        let mut rec = Recorder::new(run(0));
        let pod = |scheduled: u64, pull_ms: u64, ready: u64, wave: u32| PodTimes {
            scheduled: ms(scheduled),
            pull: Some(PullTimes::one(
                ms(scheduled),
                Some(ms(scheduled + 5)),
                ms(scheduled + pull_ms),
                ms(scheduled + pull_ms),
            )),
            started: ms(scheduled + pull_ms),
            ready: ms(ready),
            wave,
        };
        let blob = |n: u8, requested: u64, first_byte: u64| BlobFirstByte {
            digest: stampede_oci::Digest::of(&[n]),
            requested: ms(requested),
            first_byte: ms(first_byte),
        };
        rec.pod(&pod(0, 1_000, 1_100, 0));
        rec.pod(&pod(0, 2_000, 2_100, 0));
        // Blob 1: two pullers at once, the second gets its first byte 37 ms after the first;
        // a third asks after the bytes are there and waits 5 ms for its own. Blob 2: one puller.
        rec.wave_blobs(
            0,
            ms(0),
            &[
                blob(1, 0, 3),
                blob(1, 0, 40),
                blob(1, 100, 105),
                blob(2, 10, 19),
            ],
        );
        rec.pod(&pod(10_000, 300, 10_400, 1));
        rec.wave_blobs(
            1,
            ms(10_000),
            &[blob(1, 10_000, 10_002), blob(1, 10_000, 10_004)],
        );
        rec.failed_in_wave(1, ms(10_000), FailureKind::Timeout);

        let d = rec.data();
        assert_eq!(d.layer(LayerPhase::FirstByte).len(), 6);
        assert_eq!(d.failed_pods(), 1);
        let cold = &d.waves()[&0];
        assert_eq!(cold.at_us, 0);
        assert_eq!((cold.pull.len(), cold.ttfb.len()), (2, 2));
        assert_eq!(cold.time_to_all_ready(), Some(ms(2_100)));
        let lags: Vec<u64> = cold
            .first_byte_lag
            .iter_recorded()
            .flat_map(|v| {
                std::iter::repeat_n(v.value_iterated_to() / 1000, v.count_at_value() as usize)
            })
            .collect();
        assert_eq!(lags, [0, 0, 5, 37]);
        assert!(within(micros(cold.first_byte_lag_max().unwrap()), 37_000));
        let warm = &d.waves()[&1];
        assert_eq!(
            (warm.at_us, warm.ready_pods, warm.failed_pods),
            (10_000_000, 1, 1)
        );
        assert_eq!(
            warm.time_to_all_ready(),
            None,
            "a failed pod is never ready"
        );
        assert!(within(micros(warm.first_byte_lag_max().unwrap()), 2_000));

        let mut all = Recordings::new();
        all.add(rec.clone());
        let mut again = Recorder::new(run(1));
        again.pod(&pod(0, 500, 600, 0));
        all.add(again);
        let series = all.series("full", "direct").unwrap();
        assert_eq!(series.wave_numbers(), [0, 1]);
        let merged = series.merged_wave(0).unwrap();
        assert_eq!((merged.pull.len(), merged.ready_pods), (3, 3));
        assert_eq!(merged.last_ready_us, 2_100_000);
        assert!(series.merged_wave(2).is_none());
    }

    #[test]
    fn ready_timeline_counts_failures_as_never_ready() {
        let mut rec = Recorder::new(run(0));
        for v in [100, 200, 300, 400, 500, 600, 700, 800, 900] {
            rec.pod(&PodTimes {
                scheduled: Duration::ZERO,
                pull: None,
                started: Duration::ZERO,
                ready: ms(v),
                wave: 0,
            });
        }
        rec.failed(FailureKind::Throttled);
        let mut all = Recordings::new();
        all.add(rec);
        let rep = all.series("full", "direct").unwrap().repetition(0).unwrap();
        let t = rep.timeline(10);
        assert_eq!(t.time_to(0.5), Some(ms(500)));
        assert_eq!(t.time_to(0.9), Some(ms(900)));
        assert_eq!(t.time_to(0.95), None);
        assert_eq!(t.time_to(1.0), None);
        assert_eq!(t.time_to(0.0), Some(ms(100)));
        assert_eq!(t.fraction_at(ms(99)), 0.0);
        assert_eq!(t.fraction_at(ms(450)), 0.4);
        assert_eq!(t.fraction_at(ms(10_000)), 0.9);
        // The denominator is never below what was recorded.
        assert_eq!(rep.timeline(3).pods(), 10);
    }

    #[test]
    fn names_round_trip() {
        for p in Phase::ALL {
            assert_eq!(Phase::from_name(p.name()), Some(p));
        }
        for p in LayerPhase::ALL {
            assert_eq!(LayerPhase::from_name(p.name()), Some(p));
        }
        for k in FailureKind::ALL {
            let json = serde_json::to_string(&k).unwrap();
            assert_eq!(json, format!("\"{}\"", k.name()));
            assert_eq!(serde_json::from_str::<FailureKind>(&json).unwrap(), k);
        }
    }
}
