//! `result.json`: everything a run produced, versioned ([`SCHEMA_VERSION`]) and described by the
//! committed JSON Schema `bench-harness/schema/result.schema.json`.
//!
//! A [`RunResult`] holds the effective scenario, when and where the run happened, and per
//! (variant, target) a [`SeriesResult`]: the recorder's per-repetition histograms, registry
//! accounting per repetition, and after [`RunResult::evaluate_slo`] the SLO outcomes. On disk
//! every histogram is the standard HdrHistogram V2 deflate encoding in base64 (readable by any
//! HdrHistogram implementation), next to summary numbers for humans; per phase there is the
//! merged histogram and one per repetition. Reading back ([`RunResult::load`]) decodes the
//! per-repetition encodings; merged views are sums of those, never re-sampled.
//!
//! This module does not measure or render: `run/recorder.rs` measures, `report/` renders.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use hdrhistogram::serialization::{
    Deserializer as HdrDeserializer, Serializer as _, V2DeflateSerializer,
};
use hdrhistogram::Histogram;

use crate::run::host::{CpuUse, HostBound};
use crate::run::recorder::{
    FailureKind, LayerPhase, Phase, Recordings, Repetition, RepetitionParts, Series, Summary,
    WaveData,
};
use crate::scenario::Scenario;
use stampede_lab::Machine;

/// Version of the `result.json` format this code writes and reads.
pub const SCHEMA_VERSION: u32 = 1;

/// File name of a result inside its run directory.
pub const FILE_NAME: &str = "result.json";

/// Quantiles of the ready timeline precomputed per repetition: 50 %, 95 %, 100 % ready.
pub const READY_FRACTIONS: [f64; 3] = [0.5, 0.95, 1.0];

/// Everything one run produced.
#[derive(Debug, Clone, PartialEq)]
pub struct RunResult {
    /// The effective scenario: the file with overrides applied.
    pub scenario: Scenario,
    /// When the first burst started (wall clock, UTC).
    pub started_at: SystemTime,
    /// Wall-clock length of the whole run, image generation included.
    pub duration: Duration,
    pub machine: Machine,
    /// One entry per (variant, target): the scenario's variants x targets in file order, then
    /// any other pair that was recorded.
    pub series: Vec<SeriesResult>,
    /// Whole-run registry accounting, as the embedded registry reports it (any JSON).
    pub registry: Option<serde_json::Value>,
    /// Per variant name: the generated image's facts.
    pub images: BTreeMap<String, ImageFacts>,
    /// Things the reader should know (host-bound run, platform missing, ...).
    pub warnings: Vec<String>,
    /// SLO outcomes, filled by [`RunResult::evaluate_slo`].
    pub slo: Vec<SloOutcome>,
    /// Set when the run was modelled (`bench-harness model`), not measured; absent in measured
    /// runs and in results written before models existed.
    pub model: Option<ModelFacts>,
}

/// What a modelled run was modelled with.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ModelFacts {
    pub profile: String,
    /// The profile file, as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_path: Option<String>,
    /// The profile's values, as the model read them (any JSON).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub profile_values: serde_json::Value,
    /// Events the model handled over all bursts.
    pub events: u64,
    /// Wall-clock time the model took, microseconds.
    pub compute_us: u64,
}

/// What one (variant, target) measured over all repetitions.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesResult {
    pub variant: String,
    pub target: String,
    /// Pods scheduled in each repetition (the ready timeline's denominator).
    pub pods_per_repetition: u64,
    /// Per-repetition histograms, failures and ready offsets.
    pub data: Series,
    /// Registry accounting per repetition, filled by the runner.
    pub registry: BTreeMap<u32, RegistryTotals>,
    /// How busy the host's CPUs were per repetition, filled by the runner (absent in results
    /// written before it was stored).
    pub cpu: BTreeMap<u32, CpuUse>,
    /// A `kubernetes` target only: the pull times kubelet itself reported (its `Pulled`
    /// event), per repetition, one per pull, beside the event times in the `pull` phase.
    pub kubelet_pulls: BTreeMap<u32, Vec<Duration>>,
}

/// What the registry served during one repetition of one (variant, target). The runner maps the
/// embedded registry's snapshot into these numbers; the report and the egress SLO read them.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct RegistryTotals {
    /// Response body bytes sent (egress).
    pub bytes_out: u64,
    /// Requests by kind (`manifest`, `blob`, `token`, `head`, ... as the registry names them).
    #[serde(default)]
    pub requests: BTreeMap<String, u64>,
    /// Blob `GET`s by digest: how often each blob went upstream.
    #[serde(default)]
    pub blob_gets: BTreeMap<String, u64>,
    /// The registry's full snapshot, any JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<serde_json::Value>,
    /// With `registry.netns_rate`: bytes the shaped link's tbf qdisc sent toward the host during
    /// the repetition, by the kernel's count (response bodies plus headers and TCP/IP overhead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_bytes: Option<u64>,
    /// With nodes in namespaces: what every link carried during the repetition, by the kernel's
    /// counters (per node upload and download, the registry's egress and ingress series).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wire: Option<crate::nodes::WireTotals>,
    /// With nodes in namespaces: every cache process of the target, its CPU seconds and peak
    /// memory over the repetition.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cache_processes: Vec<crate::nodes::CacheProcessFacts>,
    /// The host's and the harness's own CPU during the repetition, so a reader sees whether the
    /// burst was bound by the links or by this machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<BurstCpu>,
}

/// CPU during one repetition, from the burst epoch to its end.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct BurstCpu {
    /// Mean fraction of all the host's CPUs busy, 0..=1.
    pub host_busy: f64,
    /// CPU seconds the harness's own process used (user + system, every thread: the
    /// registry it embeds, its pullers, unpacking).
    pub harness_cpu_seconds: f64,
}

/// Facts about a variant's generated image.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct ImageFacts {
    /// Bytes one node downloads to pull the image: manifest(s), config and layer blobs as
    /// stored (compressed).
    pub compressed_bytes: u64,
    /// Digests, sizes and anything else the generator reports, any JSON.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub details: serde_json::Value,
}

/// The outcome of one SLO for one (variant, target).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SloOutcome {
    pub variant: String,
    pub target: String,
    /// Which objective, its limit and what was observed.
    #[serde(flatten)]
    pub check: SloCheck,
    pub pass: bool,
}

/// One objective with its limit (the scenario's `slo.*` of the same name) and observation.
/// Failed pods count as never ready / never pulled, so a quantile that falls among them is not
/// observed (`None`) and fails.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "check", rename_all = "snake_case")]
pub enum SloCheck {
    /// 95th percentile of `end_to_end` over all repetitions.
    P95Ready {
        #[serde(rename = "limit_us", with = "micros_serde")]
        limit: Duration,
        #[serde(rename = "observed_us", with = "opt_micros_serde")]
        observed: Option<Duration>,
    },
    /// 99th percentile of `pull` over all repetitions.
    P99Pull {
        #[serde(rename = "limit_us", with = "micros_serde")]
        limit: Duration,
        #[serde(rename = "observed_us", with = "opt_micros_serde")]
        observed: Option<Duration>,
    },
    /// Registry egress of the worst repetition.
    MaxRegistryEgress {
        limit_bytes: u64,
        /// The largest `bytes_out` of any repetition.
        observed_bytes: u64,
    },
}

/// The run's facts besides the measurements, for [`RunResult::new`]; each field as in
/// [`RunResult`].
#[derive(Debug, Clone)]
pub struct RunFacts {
    pub scenario: Scenario,
    pub started_at: SystemTime,
    pub duration: Duration,
    pub machine: Machine,
    /// The runner's warnings; the scenario's own ([`Scenario::warnings`]) are added by
    /// [`RunResult::new`].
    pub warnings: Vec<String>,
}

/// Why a result could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum ResultError {
    #[error("read result {path}: the file does not exist")]
    Missing { path: PathBuf },
    #[error("read result {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Creating the run directory (`path`) or writing the file failed.
    #[error("write result {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not a result of this schema: bad JSON, a missing field, an undecodable
    /// histogram.
    #[error("decode result {path}")]
    Decode {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// The file declares another schema version (`found`), or none.
    #[error("result {path} {}; this build reads schema_version {SCHEMA_VERSION}", declared_version(*.found))]
    Version { path: PathBuf, found: Option<u64> },
    /// Encoding to JSON failed (a histogram could not be encoded).
    #[error("encode result")]
    Encode(#[source] serde_json::Error),
}

/// How a [`ResultError::Version`] names what the file declares: `has schema_version 2`, or
/// `has no schema_version`.
fn declared_version(found: Option<u64>) -> String {
    found.map_or_else(
        || "has no schema_version".to_owned(),
        |v| format!("has schema_version {v}"),
    )
}

/// Why a stored histogram could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum HistogramDecodeError {
    #[error("histogram is not base64")]
    Base64(#[from] base64::DecodeError),
    #[error("histogram is not an HdrHistogram V2 encoding")]
    Hdr(#[from] hdrhistogram::serialization::DeserializeError),
}

/// Encodes a histogram as HdrHistogram V2 deflate, in standard base64 (`HISTFAAA...`).
///
/// # Errors
/// Only if the histogram cannot be encoded (a count beyond the format's range).
pub fn encode_histogram(
    h: &Histogram<u64>,
) -> Result<String, hdrhistogram::serialization::V2DeflateSerializeError> {
    let mut bytes = Vec::new();
    V2DeflateSerializer::new().serialize(h, &mut bytes)?;
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// Decodes [`encode_histogram`]'s output (or any V2 / V2 deflate encoding in base64) into an
/// auto-resizing histogram.
///
/// # Errors
/// [`HistogramDecodeError`] when the text is not base64 or not a V2 encoding.
pub fn decode_histogram(text: &str) -> Result<Histogram<u64>, HistogramDecodeError> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(text.trim())?;
    let mut h: Histogram<u64> = HdrDeserializer::new().deserialize(&mut Cursor::new(bytes))?;
    h.auto(true);
    Ok(h)
}

impl RegistryTotals {
    /// Requests of every kind: the registry's own `total` when it counts one, else the sum.
    pub fn total_requests(&self) -> u64 {
        let sum = || self.requests.values().sum();
        self.requests.get("total").copied().unwrap_or_else(sum)
    }
}

impl RunResult {
    /// Assembles a result from the run's facts and the merged recordings: one series per
    /// scenario (variant, target) in file order (empty if nothing was recorded for it), then any
    /// other recorded pair. Registry totals, images and SLO outcomes are left for the runner to
    /// fill ([`RunResult::series_mut`], [`RunResult::evaluate_slo`]).
    pub fn new(facts: RunFacts, recordings: Recordings) -> Self {
        let mut recorded = recordings.into_series();
        let pods = u64::from(facts.scenario.total_pods());
        let mut series = Vec::new();
        for v in &facts.scenario.variants {
            for t in &facts.scenario.targets {
                let key = crate::run::recorder::SeriesKey {
                    variant: v.name.clone(),
                    target: t.name.clone(),
                };
                let data = recorded.remove(&key).unwrap_or_default();
                let target_pods = u64::from(facts.scenario.target_pods(t));
                series.push(SeriesResult::new(key, target_pods, data));
            }
        }
        for (key, data) in recorded {
            series.push(SeriesResult::new(key, pods, data));
        }
        let mut warnings = facts.scenario.warnings();
        warnings.extend(facts.warnings);
        Self {
            scenario: facts.scenario,
            started_at: facts.started_at,
            duration: facts.duration,
            machine: facts.machine,
            series,
            registry: None,
            images: BTreeMap::new(),
            warnings,
            slo: Vec::new(),
            model: None,
        }
    }

    /// Compressed bytes a pod of `variant` pulls: its image's and each sidecar's, the unit of
    /// "image copies" in reports. `None` when a size is unknown (an image not mirrored here).
    pub fn pod_image_bytes(&self, variant: &str) -> Option<u64> {
        let v = self.scenario.variants.iter().find(|v| v.name == variant)?;
        std::iter::once(&v.name)
            .chain(&v.sidecars)
            .map(|name| {
                self.images
                    .get(name)
                    .map(|i| i.compressed_bytes)
                    .filter(|b| *b > 0)
            })
            .sum()
    }

    pub fn series(&self, variant: &str, target: &str) -> Option<&SeriesResult> {
        self.series
            .iter()
            .find(|s| s.variant == variant && s.target == target)
    }

    /// The series of (variant, target), to fill in registry totals.
    pub fn series_mut(&mut self, variant: &str, target: &str) -> Option<&mut SeriesResult> {
        self.series
            .iter_mut()
            .find(|s| s.variant == variant && s.target == target)
    }

    /// Checks the scenario's SLOs against every series and stores the outcomes in `slo`
    /// (replacing earlier ones). An egress limit on a series without registry totals cannot be
    /// checked; that becomes a warning instead of an outcome.
    pub fn evaluate_slo(&mut self) {
        let slo = self.scenario.slo.clone();
        let mut outcomes = Vec::new();
        for s in &self.series {
            let failed = s.data.failed_pods();
            let mut push = |check: SloCheck, pass: bool| {
                outcomes.push(SloOutcome {
                    variant: s.variant.clone(),
                    target: s.target.clone(),
                    check,
                    pass,
                });
            };
            if let Some(limit) = slo.p95_ready {
                let observed =
                    quantile_with_failures(&s.data.merged(Phase::EndToEnd), failed, 0.95);
                push(
                    SloCheck::P95Ready { limit, observed },
                    observed.is_some_and(|o| o <= limit),
                );
            }
            if let Some(limit) = slo.p99_pull {
                let observed = quantile_with_failures(&s.data.merged(Phase::Pull), failed, 0.99);
                push(
                    SloCheck::P99Pull { limit, observed },
                    observed.is_some_and(|o| o <= limit),
                );
            }
            if let Some(limit) = slo.max_registry_egress {
                match s.registry.values().map(|r| r.bytes_out).max() {
                    Some(observed_bytes) => push(
                        SloCheck::MaxRegistryEgress {
                            limit_bytes: limit.0,
                            observed_bytes,
                        },
                        observed_bytes <= limit.0,
                    ),
                    None => self.warnings.push(format!(
                        "slo.max_registry_egress not checked for {}/{}: no registry totals recorded",
                        s.variant, s.target
                    )),
                }
            }
        }
        self.slo = outcomes;
    }

    /// Every burst the host's CPUs bound, in series order: from the stored CPU use, and for a
    /// series without it (a result written before it was stored) from the run's host-bound
    /// warnings.
    pub fn host_bound(&self) -> Vec<HostBound> {
        let from_warnings: Vec<HostBound> = self
            .warnings
            .iter()
            .filter_map(|w| HostBound::from_warning(w))
            .collect();
        let mut out = Vec::new();
        for s in &self.series {
            let stored = s.cpu.iter().filter(|(_, c)| c.host_bound());
            out.extend(stored.map(|(rep, c)| HostBound {
                variant: s.variant.clone(),
                target: s.target.clone(),
                repetition: *rep,
                mean_busy: c.mean_busy,
            }));
            if s.cpu.is_empty() {
                let of_s = |b: &&HostBound| b.variant == s.variant && b.target == s.target;
                out.extend(from_warnings.iter().filter(of_s).cloned());
            }
        }
        out
    }

    /// Whether every SLO outcome passed (true when there are none).
    pub fn passed(&self) -> bool {
        self.slo.iter().all(|o| o.pass)
    }

    /// The directory a run gets: `<results_root>/runs/<scenario>-<YYYYMMDDTHHMMSSZ>`.
    pub fn run_dir(results_root: &Path, scenario_name: &str, started_at: SystemTime) -> PathBuf {
        let stamp: String = humantime::format_rfc3339_seconds(started_at)
            .to_string()
            .chars()
            .filter(|c| !matches!(c, '-' | ':'))
            .collect();
        results_root
            .join("runs")
            .join(format!("{scenario_name}-{stamp}"))
    }

    /// The result as pretty-printed JSON.
    ///
    /// # Errors
    /// [`ResultError::Encode`] if a histogram cannot be encoded.
    pub fn to_json(&self) -> Result<String, ResultError> {
        serde_json::to_string_pretty(self).map_err(ResultError::Encode)
    }

    /// Writes `result.json` into `dir` (created if missing) and returns its path.
    ///
    /// # Errors
    /// [`ResultError::Write`] if the directory or file cannot be written,
    /// [`ResultError::Encode`] if a histogram cannot be encoded.
    pub fn write(&self, dir: &Path) -> Result<PathBuf, ResultError> {
        let error = |path: &Path| {
            let path = path.to_owned();
            |source| ResultError::Write { path, source }
        };
        std::fs::create_dir_all(dir).map_err(error(dir))?;
        let path = dir.join(FILE_NAME);
        std::fs::write(&path, self.to_json()? + "\n").map_err(error(&path))?;
        Ok(path)
    }

    /// Reads a `result.json`, decoding every histogram.
    ///
    /// # Errors
    /// [`ResultError::Missing`] if there is no such file, [`ResultError::Read`] if it cannot be
    /// read, [`ResultError::Version`] if it is not
    /// schema version [`SCHEMA_VERSION`], [`ResultError::Decode`] if it does not fit the schema.
    pub fn load(path: &Path) -> Result<Self, ResultError> {
        let text = std::fs::read_to_string(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                ResultError::Missing {
                    path: path.to_owned(),
                }
            } else {
                ResultError::Read {
                    path: path.to_owned(),
                    source,
                }
            }
        })?;
        let decode = |source| ResultError::Decode {
            path: path.to_owned(),
            source,
        };
        let value: serde_json::Value = serde_json::from_str(&text).map_err(decode)?;
        let found = value
            .get("schema_version")
            .and_then(serde_json::Value::as_u64);
        if found != Some(u64::from(SCHEMA_VERSION)) {
            return Err(ResultError::Version {
                path: path.to_owned(),
                found,
            });
        }
        serde_json::from_value(value).map_err(decode)
    }
}

impl SeriesResult {
    fn new(key: crate::run::recorder::SeriesKey, pods_per_repetition: u64, data: Series) -> Self {
        Self {
            variant: key.variant,
            target: key.target,
            pods_per_repetition,
            data,
            registry: BTreeMap::new(),
            cpu: BTreeMap::new(),
            kubelet_pulls: BTreeMap::new(),
        }
    }
}

/// The `quantile` of `h` when `failed` more samples are beyond every value (pods that never got
/// there). `None` when the quantile falls among those, or there is no sample at all.
pub fn quantile_with_failures(h: &Histogram<u64>, failed: u64, quantile: f64) -> Option<Duration> {
    let total = h.len().checked_add(failed)?;
    if total == 0 {
        return None;
    }
    let rank = ((quantile.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
    if rank > h.len() {
        return None;
    }
    let mut seen = 0;
    for v in h.iter_recorded() {
        seen += v.count_at_value();
        if seen >= rank {
            return Some(Duration::from_micros(v.value_iterated_to()));
        }
    }
    None
}

// ---- The file format. These mirror result.schema.json; change both together. ----

#[derive(serde::Serialize, serde::Deserialize)]
struct Wire {
    schema_version: u32,
    scenario: Scenario,
    started_at: String,
    duration_us: u64,
    machine: Machine,
    series: Vec<SeriesWire>,
    #[serde(default)]
    registry: Option<serde_json::Value>,
    #[serde(default)]
    images: BTreeMap<String, ImageFacts>,
    #[serde(default)]
    warnings: Vec<String>,
    #[serde(default)]
    slo: Vec<SloOutcome>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    model: Option<ModelFacts>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct SeriesWire {
    variant: String,
    target: String,
    pods_per_repetition: u64,
    phases: BTreeMap<String, PhaseWire>,
    layer_phases: BTreeMap<String, PhaseWire>,
    failures: BTreeMap<FailureKind, u64>,
    repetitions: Vec<RepetitionWire>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct PhaseWire {
    #[serde(flatten)]
    merged: HistogramWire,
    repetitions: Vec<RepetitionHistogramWire>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct RepetitionHistogramWire {
    repetition: u32,
    #[serde(flatten)]
    histogram: HistogramWire,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct RepetitionWire {
    repetition: u32,
    ready_pods: u64,
    failed_pods: u64,
    failures: BTreeMap<FailureKind, u64>,
    time_to_ready_us: TimeToReadyWire,
    ready_offsets_us: Vec<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    registry: Option<RegistryTotals>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cpu: Option<CpuUse>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    waves: Vec<WaveWire>,
    /// Per image and layer position: phases summed over the nodes that pulled it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    layers: Vec<crate::run::recorder::LayerSums>,
    /// A `kubernetes` target's pull times as kubelet reported them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    kubelet_pull_us: Vec<u64>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct WaveWire {
    wave: u32,
    at_us: u64,
    ready_pods: u64,
    failed_pods: u64,
    last_ready_us: u64,
    pull: HistogramWire,
    ttfb: HistogramWire,
    end_to_end: HistogramWire,
    first_byte: HistogramWire,
    first_byte_lag: HistogramWire,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct HistogramWire {
    summary: Summary,
    histogram: String,
}

impl HistogramWire {
    fn of<E: serde::ser::Error>(h: &Histogram<u64>) -> Result<Self, E> {
        let histogram =
            encode_histogram(h).map_err(|e| E::custom(format!("encode histogram: {e}")))?;
        Ok(Self {
            summary: Summary::of(h),
            histogram,
        })
    }
}

impl WaveWire {
    fn of<E: serde::ser::Error>(wave: u32, w: &WaveData) -> Result<Self, E> {
        Ok(Self {
            wave,
            at_us: w.at_us,
            ready_pods: w.ready_pods,
            failed_pods: w.failed_pods,
            last_ready_us: w.last_ready_us,
            pull: HistogramWire::of(&w.pull)?,
            ttfb: HistogramWire::of(&w.ttfb)?,
            end_to_end: HistogramWire::of(&w.end_to_end)?,
            first_byte: HistogramWire::of(&w.first_byte)?,
            first_byte_lag: HistogramWire::of(&w.first_byte_lag)?,
        })
    }

    fn into_wave(self) -> Result<(u32, WaveData), HistogramDecodeError> {
        let hists = [
            decode_histogram(&self.pull.histogram)?,
            decode_histogram(&self.ttfb.histogram)?,
            decode_histogram(&self.end_to_end.histogram)?,
            decode_histogram(&self.first_byte.histogram)?,
            decode_histogram(&self.first_byte_lag.histogram)?,
        ];
        Ok((
            self.wave,
            WaveData::from_parts(
                self.at_us,
                (self.ready_pods, self.failed_pods, self.last_ready_us),
                hists,
            ),
        ))
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct TimeToReadyWire {
    p50: Option<u64>,
    p95: Option<u64>,
    p100: Option<u64>,
}

fn phase_wire<E: serde::ser::Error>(
    merged: &Histogram<u64>,
    per_rep: impl Iterator<Item = (u32, Histogram<u64>)>,
) -> Result<PhaseWire, E> {
    let repetitions = per_rep
        .map(|(repetition, h)| {
            let histogram = HistogramWire::of(&h)?;
            Ok(RepetitionHistogramWire {
                repetition,
                histogram,
            })
        })
        .collect::<Result<_, E>>()?;
    Ok(PhaseWire {
        merged: HistogramWire::of(merged)?,
        repetitions,
    })
}

/// Per repetition, the histogram of each of `phases` (named as `parse` reads them), for the
/// errors of series `series` as `what` (`phase`, `layer phase`).
fn decode_phases<P: Ord + Copy>(
    phases: &BTreeMap<String, PhaseWire>,
    parse: fn(&str) -> Option<P>,
    what: &str,
    series: &str,
) -> Result<BTreeMap<u32, BTreeMap<P, Histogram<u64>>>, String> {
    let mut out: BTreeMap<u32, BTreeMap<P, Histogram<u64>>> = BTreeMap::new();
    for (name, pw) in phases {
        let phase =
            parse(name).ok_or_else(|| format!("series {series}: unknown {what} {name:?}"))?;
        for r in &pw.repetitions {
            let h = decode_histogram(&r.histogram.histogram).map_err(|e| {
                format!(
                    "series {series}, {what} {name}, repetition {}: {e}",
                    r.repetition
                )
            })?;
            out.entry(r.repetition).or_default().insert(phase, h);
        }
    }
    Ok(out)
}

impl SeriesResult {
    fn to_wire<E: serde::ser::Error>(&self) -> Result<SeriesWire, E> {
        let d = &self.data;
        let mut phases = BTreeMap::new();
        for p in Phase::ALL {
            let reps = d.repetitions().map(|(r, rep)| (r, rep.phase(p).clone()));
            phases.insert(p.name().to_owned(), phase_wire(&d.merged(p), reps)?);
        }
        let mut layer_phases = BTreeMap::new();
        for p in LayerPhase::ALL {
            let reps = d.repetitions().map(|(r, rep)| (r, rep.layer(p).clone()));
            layer_phases.insert(p.name().to_owned(), phase_wire(&d.merged_layer(p), reps)?);
        }
        let repetitions = d
            .repetitions()
            .map(|(repetition, rep)| {
                let timeline = rep.timeline(self.pods_per_repetition);
                let [p50, p95, p100] =
                    READY_FRACTIONS.map(|f| timeline.time_to(f).map(crate::run::recorder::micros));
                Ok(RepetitionWire {
                    repetition,
                    ready_pods: rep.ready_pods(),
                    failed_pods: rep.failed_pods(),
                    failures: rep.failures().clone(),
                    time_to_ready_us: TimeToReadyWire { p50, p95, p100 },
                    ready_offsets_us: rep.ready_offsets_us().to_vec(),
                    registry: self.registry.get(&repetition).cloned(),
                    cpu: self.cpu.get(&repetition).copied(),
                    waves: rep
                        .waves()
                        .iter()
                        .map(|(wave, w)| WaveWire::of(*wave, w))
                        .collect::<Result<_, E>>()?,
                    layers: rep.by_layer().to_vec(),
                    kubelet_pull_us: self
                        .kubelet_pulls
                        .get(&repetition)
                        .map(|p| p.iter().map(|d| crate::run::recorder::micros(*d)).collect())
                        .unwrap_or_default(),
                })
            })
            .collect::<Result<_, E>>()?;
        Ok(SeriesWire {
            variant: self.variant.clone(),
            target: self.target.clone(),
            pods_per_repetition: self.pods_per_repetition,
            phases,
            layer_phases,
            failures: d.failures(),
            repetitions,
        })
    }

    fn from_wire(w: SeriesWire) -> Result<Self, String> {
        let series = format!("{}/{}", w.variant, w.target);
        let mut phases = decode_phases(&w.phases, Phase::from_name, "phase", &series)?;
        let mut layers = decode_phases(
            &w.layer_phases,
            LayerPhase::from_name,
            "layer phase",
            &series,
        )?;
        let mut data = Series::default();
        let mut registry = BTreeMap::new();
        let mut cpu = BTreeMap::new();
        let mut kubelet_pulls = BTreeMap::new();
        for r in w.repetitions {
            let waves = r
                .waves
                .into_iter()
                .map(WaveWire::into_wave)
                .collect::<Result<_, _>>()
                .map_err(|e| {
                    format!("series {series}, waves of repetition {}: {e}", r.repetition)
                })?;
            let rep = Repetition::from_parts(RepetitionParts {
                phases: phases.remove(&r.repetition).unwrap_or_default(),
                layers: layers.remove(&r.repetition).unwrap_or_default(),
                failures: r.failures,
                ready_us: r.ready_offsets_us,
                waves,
                by_layer: r.layers,
            });
            data.insert(r.repetition, rep);
            if let Some(totals) = r.registry {
                registry.insert(r.repetition, totals);
            }
            if let Some(c) = r.cpu {
                cpu.insert(r.repetition, c);
            }
            if !r.kubelet_pull_us.is_empty() {
                let pulls = r
                    .kubelet_pull_us
                    .iter()
                    .map(|us| Duration::from_micros(*us));
                kubelet_pulls.insert(r.repetition, pulls.collect());
            }
        }
        if let Some(rep) = phases.keys().chain(layers.keys()).next() {
            return Err(format!(
                "series {series}: histograms for repetition {rep}, which is not in repetitions"
            ));
        }
        Ok(Self {
            variant: w.variant,
            target: w.target,
            pods_per_repetition: w.pods_per_repetition,
            data,
            registry,
            cpu,
            kubelet_pulls,
        })
    }
}

impl serde::Serialize for RunResult {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let wire = Wire {
            schema_version: SCHEMA_VERSION,
            scenario: self.scenario.clone(),
            started_at: humantime::format_rfc3339_millis(self.started_at).to_string(),
            duration_us: crate::run::recorder::micros(self.duration),
            machine: self.machine.clone(),
            series: self
                .series
                .iter()
                .map(SeriesResult::to_wire)
                .collect::<Result<_, S::Error>>()?,
            registry: self.registry.clone(),
            images: self.images.clone(),
            warnings: self.warnings.clone(),
            slo: self.slo.clone(),
            model: self.model.clone(),
        };
        wire.serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for RunResult {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let w = Wire::deserialize(d)?;
        if w.schema_version != SCHEMA_VERSION {
            return Err(D::Error::custom(format!(
                "schema_version {} is not {SCHEMA_VERSION}",
                w.schema_version
            )));
        }
        let started_at = humantime::parse_rfc3339(&w.started_at)
            .map_err(|e| D::Error::custom(format!("started_at {:?}: {e}", w.started_at)))?;
        let series = w
            .series
            .into_iter()
            .map(SeriesResult::from_wire)
            .collect::<Result<_, _>>()
            .map_err(D::Error::custom)?;
        Ok(Self {
            scenario: w.scenario,
            started_at,
            duration: Duration::from_micros(w.duration_us),
            machine: w.machine,
            series,
            registry: w.registry,
            images: w.images,
            warnings: w.warnings,
            slo: w.slo,
            model: w.model,
        })
    }
}

/// `Duration` as whole microseconds.
mod micros_serde {
    use std::time::Duration;

    pub(super) fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(crate::run::recorder::micros(*d))
    }

    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Duration, D::Error> {
        <u64 as serde::Deserialize>::deserialize(d).map(Duration::from_micros)
    }
}

/// `Option<Duration>` as whole microseconds or `null`.
mod opt_micros_serde {
    use std::time::Duration;

    pub(super) fn serialize<S: serde::Serializer>(
        d: &Option<Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        serde::Serialize::serialize(&d.map(crate::run::recorder::micros), s)
    }

    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        <Option<u64> as serde::Deserialize>::deserialize(d).map(|o| o.map(Duration::from_micros))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::recorder::{new_histogram, PodTimes, Recorder, RunKey};

    #[test]
    fn histograms_round_trip_through_the_v2_encoding() {
        let mut h = new_histogram();
        for v in [0, 1, 999, 1_000, 123_456, 3_600_000_000, 10_000_000_000] {
            h.record_n(v, v % 7 + 1).unwrap();
        }
        let text = encode_histogram(&h).unwrap();
        assert!(text.starts_with("HISTF"), "{text}");
        let back = decode_histogram(&text).unwrap();
        assert_eq!(back, h);
        let pairs = |h: &Histogram<u64>| -> Vec<(u64, u64)> {
            h.iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value()))
                .collect()
        };
        assert_eq!(pairs(&back), pairs(&h));
        assert!(back.is_auto_resize());
        assert!(matches!(
            decode_histogram("not base64!"),
            Err(HistogramDecodeError::Base64(_))
        ));
        assert!(matches!(
            decode_histogram("aGVsbG8="),
            Err(HistogramDecodeError::Hdr(_))
        ));
    }

    #[test]
    fn quantiles_count_failures_as_never_reached() {
        let mut h = new_histogram();
        for v in 1..=95 {
            h.record(v * 1000).unwrap();
        }
        let q = |failed, q| quantile_with_failures(&h, failed, q).map(|d| d.as_millis());
        assert_eq!(q(0, 0.95), Some(91)); // rank ceil(0.95 * 95) = 91
        assert_eq!(q(5, 0.95), Some(95)); // rank 95 of 100: the last success
        assert_eq!(q(6, 0.95), None); // rank 96 of 101 falls among the failures
        assert_eq!(q(0, 0.0), Some(1));
        assert_eq!(quantile_with_failures(&new_histogram(), 0, 0.5), None);
        assert_eq!(quantile_with_failures(&new_histogram(), 3, 0.5), None);
    }

    #[test]
    fn run_dirs_are_named_by_scenario_and_utc_second() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_767_323_045_678);
        assert_eq!(
            RunResult::run_dir(Path::new("results"), "quickstart", at),
            Path::new("results/runs/quickstart-20260102T030405Z")
        );
    }

    fn scenario(slo: &str) -> Scenario {
        let text = format!(
            "nodes = 1\npods_per_node = 4\n[[variants]]\nname = \"v\"\n[[variants.synthetic.layers]]\nsize = 10\nfiles = 1\n[[targets]]\nkind = \"direct\"\n[slo]\n{slo}"
        );
        Scenario::parse(&text, "t.toml", &[]).unwrap()
    }

    fn result_with(slo: &str, ready_ms: &[u64], failed: u64) -> RunResult {
        let mut rec = Recorder::new(RunKey {
            variant: "v".into(),
            target: "direct".into(),
            repetition: 0,
        });
        for ms in ready_ms {
            rec.pod(&PodTimes {
                scheduled: Duration::ZERO,
                pull: Some(crate::run::recorder::PullTimes::one(
                    Duration::ZERO,
                    None,
                    Duration::from_millis(*ms / 2),
                    Duration::from_millis(*ms / 2),
                )),
                started: Duration::from_millis(*ms / 2),
                ready: Duration::from_millis(*ms),
                wave: 0,
            });
        }
        for _ in 0..failed {
            rec.failed(FailureKind::Timeout);
        }
        let mut all = Recordings::new();
        all.add(rec);
        RunResult::new(
            RunFacts {
                scenario: scenario(slo),
                started_at: SystemTime::UNIX_EPOCH,
                duration: Duration::from_secs(1),
                machine: Machine::default(),
                warnings: vec![],
            },
            all,
        )
    }

    #[test]
    fn slo_outcomes_pass_fail_and_unchecked() {
        let mut r = result_with(
            "p95_ready = \"1s\"\np99_pull = \"100ms\"",
            &[100, 200, 300, 400],
            0,
        );
        r.evaluate_slo();
        let got: Vec<(bool, Option<u128>)> = r
            .slo
            .iter()
            .map(|o| match &o.check {
                SloCheck::P95Ready { observed, .. } | SloCheck::P99Pull { observed, .. } => {
                    (o.pass, observed.map(|d| d.as_millis()))
                }
                SloCheck::MaxRegistryEgress { .. } => unreachable!(),
            })
            .collect();
        assert_eq!(got, [(true, Some(400)), (false, Some(200))]);
        assert!(!r.passed());

        let mut r = result_with("p95_ready = \"1s\"", &[100, 200, 300], 1);
        r.evaluate_slo();
        assert_eq!(r.slo.len(), 1);
        assert!(
            !r.slo[0].pass,
            "a failed pod puts p95 of 4 pods out of reach"
        );

        let mut r = result_with("max_registry_egress = \"1KiB\"", &[100], 0);
        r.evaluate_slo();
        assert!(r.slo.is_empty());
        assert!(
            r.warnings
                .iter()
                .any(|w| w.contains("not checked for v/direct")),
            "{:?}",
            r.warnings
        );
        r.warnings.clear();
        let s = r.series_mut("v", "direct").unwrap();
        for (rep, bytes) in [(0, 1000), (1, 1025)] {
            s.registry.insert(
                rep,
                RegistryTotals {
                    bytes_out: bytes,
                    ..Default::default()
                },
            );
        }
        r.evaluate_slo();
        assert_eq!(
            r.slo,
            [SloOutcome {
                variant: "v".into(),
                target: "direct".into(),
                check: SloCheck::MaxRegistryEgress {
                    limit_bytes: 1024,
                    observed_bytes: 1025
                },
                pass: false
            }]
        );
        assert!(r.warnings.is_empty());
    }

    #[test]
    fn results_round_trip_through_json() {
        let mut r = result_with("p95_ready = \"1s\"", &[100, 200, 300], 1);
        r.evaluate_slo();
        r.registry = Some(serde_json::json!({"anything": [1, 2]}));
        r.images.insert(
            "v".into(),
            ImageFacts {
                compressed_bytes: 10,
                details: serde_json::json!({"digest": "sha256:00"}),
            },
        );
        let json = r.to_json().unwrap();
        let back: RunResult = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["slo"][0]["check"], "p95_ready");
        assert_eq!(v["slo"][0]["limit_us"], 1_000_000);
        assert_eq!(v["slo"][0]["observed_us"], serde_json::Value::Null);
        assert_eq!(
            v["series"][0]["repetitions"][0]["time_to_ready_us"]["p50"],
            200_000
        );
        assert_eq!(
            v["series"][0]["repetitions"][0]["time_to_ready_us"]["p100"],
            serde_json::Value::Null
        );
        assert_eq!(v["series"][0]["failures"]["timeout"], 1);
    }
}
