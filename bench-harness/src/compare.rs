//! `bench-harness compare`: is the candidate really faster than the baseline, or is it noise?
//!
//! A comparison pairs series: the same (variant, target) in two runs ([`Pairing::SameSeries`]),
//! or two variants or two targets within one run ([`Pairing::Variants`], [`Pairing::Targets`]).
//! For every pair and metric (p50 / p95 / p99 of each phase, time to 50 / 95 / 100 % ready,
//! registry egress) each repetition gives one observation (its own quantile, from its own
//! stored histogram: [`Series::per_repetition`](crate::run::recorder::Series::per_repetition)). The
//! difference is the mean over the candidate's repetitions minus the mean over the baseline's,
//! and its confidence interval is a percentile bootstrap that resamples the repetitions of both
//! sides independently, so it reflects both runs' repetition-to-repetition variability. The RNG
//! is seeded per row from `seed` and the row's name: the same inputs give the same intervals.
//!
//! A difference is significant when its interval excludes zero. A [`Gate`] (`--fail-if-slower
//! p95:end_to_end:10%`) is crossed when the candidate is significantly slower and the estimate
//! exceeds the limit. With fewer than two repetitions on a side there is no interval and no
//! verdict (a gate on such a pair is an error); with fewer than [`FEW_REPETITIONS`] the
//! comparison says its intervals are rough.
//!
//! A pair with a host-bound repetition on either side ([`crate::run::host`]) is marked and its
//! gates are not judged unless [`Settings::judge_host_bound`]: a saturated machine makes
//! differences of its own. `main.rs` exits 3 when a gate went unjudged for that reason.
//!
//! This module computes; `report/comparison.rs` renders Markdown and HTML.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::result::{RunResult, SeriesResult, READY_FRACTIONS};
use crate::run::recorder::Phase;

/// Below this many repetitions on a side, the output warns that intervals are rough.
pub const FEW_REPETITIONS: usize = 5;

/// Bootstrap resamples per row unless told otherwise.
pub const DEFAULT_RESAMPLES: u32 = 10_000;

/// Fewest bootstrap resamples that give an interval worth printing.
pub const MIN_RESAMPLES: u32 = 100;

/// Seed of the bootstrap RNG unless told otherwise.
pub const DEFAULT_SEED: u64 = 1;

/// Phases compared by default, most telling first.
pub const DEFAULT_PHASES: [Phase; 6] = [
    Phase::EndToEnd,
    Phase::Pull,
    Phase::Unpack,
    Phase::Queue,
    Phase::Ttfb,
    Phase::StartToReady,
];

/// A quantile written as `p50`, `p95`, `p99.9`: a fraction in (0, 1].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quantile(f64);

/// How much slower the candidate may be before a gate fails.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Limit {
    /// A fraction of the baseline (`10%` is 0.1).
    Relative(f64),
    /// An absolute duration (`200ms`).
    Absolute(Duration),
}

/// A regression threshold: `p95:end_to_end:10%`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gate {
    pub quantile: Quantile,
    pub phase: Phase,
    pub limit: Limit,
}

/// Why a quantile or gate did not parse; each variant carries the text given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GateError {
    #[error("{0:?} is not QUANTILE:PHASE:LIMIT (e.g. p95:end_to_end:10%)")]
    Shape(String),
    /// Not `p` followed by a number in (0, 100].
    #[error("{0:?} is not a quantile like p50, p95, p99.9")]
    Quantile(String),
    #[error("{0:?} is not a phase; phases are {phases}", phases = Phase::ALL.map(Phase::name).join(", "))]
    Phase(String),
    #[error("{0:?} is not a limit like 10% or 200ms")]
    Limit(String),
}

/// What to compare with what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pairing {
    /// The same (variant, target) in the baseline run and the candidate run.
    SameSeries,
    /// Within one run: variant `baseline` against variant `candidate`, per target.
    Variants { baseline: String, candidate: String },
    /// Within one run: target `baseline` against target `candidate`, per variant.
    Targets { baseline: String, candidate: String },
}

/// How to compare.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Phases whose quantiles are compared (gated phases are added).
    pub phases: Vec<Phase>,
    /// Quantiles compared per phase (gated quantiles are added).
    pub quantiles: Vec<Quantile>,
    pub gates: Vec<Gate>,
    /// Bootstrap resamples per row, at least [`MIN_RESAMPLES`].
    pub resamples: u32,
    /// Confidence level of the intervals, in (0, 1).
    pub confidence: f64,
    pub seed: u64,
    /// Judge gates on pairs with host-bound repetitions too (`--judge-host-bound`).
    pub judge_host_bound: bool,
}

/// A result to compare and what to call it in the output.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// How the output names it (usually its path).
    pub name: &'a str,
    pub result: &'a RunResult,
}

/// Why the comparison could not be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CompareError {
    /// A variant or target (`what`) named in the pairing is not in run `run`, which has
    /// `available`.
    #[error("{what} {name:?} is not in {run}; it has {}", available.join(", "))]
    Unknown {
        what: &'static str,
        name: String,
        run: String,
        available: Vec<String>,
    },
    /// No pair of series with data on both sides; the series with data on each side.
    #[error("nothing to compare: no (variant, target) has data on both sides (baseline: {}; candidate: {})", baseline.join(", "), candidate.join(", "))]
    NothingInCommon {
        baseline: Vec<String>,
        candidate: Vec<String>,
    },
    /// A gate applies to a pair without enough repetitions (with data) to judge it.
    #[error("--fail-if-slower {gate}: {pair} has {baseline} baseline and {candidate} candidate repetitions; judging a regression needs at least 2 on each side")]
    TooFewRepetitions {
        gate: String,
        pair: String,
        baseline: usize,
        candidate: usize,
    },
    #[error("confidence {0} is not between 0 and 1 (e.g. 0.95)")]
    Confidence(f64),
    #[error("{0} resamples are too few for an interval; use at least {MIN_RESAMPLES}")]
    Resamples(u32),
}

/// What is compared in a row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Metric {
    /// A quantile of a pod phase, per repetition (microseconds).
    Phase { phase: Phase, quantile: Quantile },
    /// Time from the epoch to this fraction of pods ready, per repetition (microseconds);
    /// repetitions that never got there are left out.
    TimeToReady(f64),
    /// Registry egress per repetition (bytes).
    Egress,
}

/// The unit of a metric's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Micros,
    Bytes,
}

/// A confidence interval of a difference.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    /// Low and high end, metric units.
    pub low: f64,
    pub high: f64,
    /// The same interval relative to the baseline mean, when that is positive.
    pub relative: Option<(f64, f64)>,
}

/// What a row concludes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The candidate is significantly higher (slower, more bytes).
    Higher,
    /// The candidate is significantly lower (faster, fewer bytes).
    Lower,
    /// The interval includes zero.
    NotSignificant,
    /// Fewer than two repetitions on a side: no interval.
    TooFewRepetitions,
    /// No observation on a side.
    NoData,
}

/// One row: a metric's per-repetition values on both sides and their difference.
#[derive(Debug, Clone, PartialEq)]
pub struct Difference {
    pub metric: Metric,
    /// Baseline observations, one per repetition with data.
    pub baseline: Vec<f64>,
    pub candidate: Vec<f64>,
    /// Mean of the candidate minus mean of the baseline (0 without data).
    pub estimate: f64,
    /// The estimate relative to the baseline mean, when that is positive.
    pub relative: Option<f64>,
    /// Bootstrap interval, with at least 2 observations per side.
    pub interval: Option<Interval>,
    pub verdict: Verdict,
}

/// All rows of one pair of series.
#[derive(Debug, Clone, PartialEq)]
pub struct PairComparison {
    /// `full / direct` for the same series in two runs, else `full / direct → slim / direct`.
    pub label: String,
    /// Per side (baseline, candidate): repetitions, failed pods, and the repetitions whose
    /// burst was host-bound.
    pub repetitions: [usize; 2],
    pub failed: [u64; 2],
    pub host_bound: [Vec<u32>; 2],
    pub differences: Vec<Difference>,
}

/// A gate checked against one pair.
#[derive(Debug, Clone, PartialEq)]
pub struct GateOutcome {
    pub gate: Gate,
    /// The pair's label, and its row the gate judged.
    pub pair: String,
    pub difference: Difference,
    /// Whether the gate was judged: false when the pair has host-bound repetitions and
    /// [`Settings::judge_host_bound`] is off.
    pub judged: bool,
    /// Whether the candidate regressed beyond the limit (false when not judged).
    pub crossed: bool,
}

/// A whole comparison.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// What is compared with what: `a.json → b.json`, `run.json: variant full → slim`.
    pub title: String,
    /// One line describing each side (scenario, date, repetitions, revision).
    pub sides: [String; 2],
    pub settings: Settings,
    pub pairs: Vec<PairComparison>,
    pub gates: Vec<GateOutcome>,
    /// What the reader should know: few repetitions, failures, differing scenarios.
    pub notes: Vec<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            phases: DEFAULT_PHASES.to_vec(),
            quantiles: vec![Quantile(0.5), Quantile(0.95), Quantile(0.99)],
            gates: Vec::new(),
            resamples: DEFAULT_RESAMPLES,
            confidence: 0.95,
            seed: DEFAULT_SEED,
            judge_host_bound: false,
        }
    }
}

impl Quantile {
    /// The fraction, (0, 1].
    pub fn fraction(self) -> f64 {
        self.0
    }
}

impl fmt::Display for Quantile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.0 * 100.0;
        if (p - p.round()).abs() < 1e-9 {
            write!(f, "p{p:.0}")
        } else {
            write!(f, "p{}", (p * 1000.0).round() / 1000.0)
        }
    }
}

impl FromStr for Quantile {
    type Err = GateError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || GateError::Quantile(s.to_owned());
        let number = s
            .trim()
            .strip_prefix(['p', 'P'])
            .ok_or_else(err)?
            .parse::<f64>()
            .map_err(|_| err())?;
        let fraction = number / 100.0;
        (fraction > 0.0 && fraction <= 1.0)
            .then_some(Self(fraction))
            .ok_or_else(err)
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Relative(r) => write!(f, "{}%", (r * 100.0 * 1000.0).round() / 1000.0),
            Self::Absolute(d) => write!(f, "{}", humantime::format_duration(*d)),
        }
    }
}

impl fmt::Display for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.quantile, self.phase, self.limit)
    }
}

impl FromStr for Gate {
    type Err = GateError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split(':').map(str::trim).collect();
        let [q, phase, limit] = parts[..] else {
            return Err(GateError::Shape(s.to_owned()));
        };
        let quantile = q.parse()?;
        let phase = Phase::from_name(phase).ok_or_else(|| GateError::Phase(phase.to_owned()))?;
        let limit_err = || GateError::Limit(limit.to_owned());
        let limit = if let Some(p) = limit.strip_suffix('%') {
            let p: f64 = p.trim().parse().map_err(|_| limit_err())?;
            if !(p.is_finite() && p >= 0.0) {
                return Err(limit_err());
            }
            Limit::Relative(p / 100.0)
        } else {
            Limit::Absolute(humantime::parse_duration(limit).map_err(|_| limit_err())?)
        };
        Ok(Self {
            quantile,
            phase,
            limit,
        })
    }
}

impl Metric {
    /// How the row is named: `p95 end_to_end`, `time to 95 % ready`, `registry egress`.
    pub fn name(&self) -> String {
        match self {
            Self::Phase { phase, quantile } => format!("{quantile} {phase}"),
            Self::TimeToReady(f) => format!("time to {:.0} % ready", f * 100.0),
            Self::Egress => "registry egress".to_owned(),
        }
    }

    pub fn unit(&self) -> Unit {
        match self {
            Self::Phase { .. } | Self::TimeToReady(_) => Unit::Micros,
            Self::Egress => Unit::Bytes,
        }
    }

    /// One observation per repetition of `s` that has one.
    pub fn observations(&self, s: &SeriesResult) -> Vec<f64> {
        match self {
            Self::Phase { phase, quantile } => s
                .data
                .per_repetition(*phase, quantile.fraction())
                .into_iter()
                .map(|d| d.as_micros() as f64)
                .collect(),
            Self::TimeToReady(f) => s
                .data
                .repetitions()
                .filter_map(|(_, r)| r.timeline(s.pods_per_repetition).time_to(*f))
                .map(|d| d.as_micros() as f64)
                .collect(),
            Self::Egress => s.registry.values().map(|t| t.bytes_out as f64).collect(),
        }
    }
}

/// The mean of `v`, 0 when it is empty.
pub(crate) fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

fn resampled_mean(v: &[f64], rng: &mut impl Rng) -> f64 {
    let sum: f64 = (0..v.len()).map(|_| v[rng.random_range(0..v.len())]).sum();
    sum / v.len() as f64
}

/// The value at `q` (0..=1) of sorted `v`, interpolating linearly between ranks.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    let at = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let (lo, hi) = (at.floor() as usize, at.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (at - lo as f64)
}

/// Percentile-bootstrap interval of `mean(candidate) - mean(baseline)` at `confidence`,
/// resampling each side's observations with replacement `resamples` times. Both sides need at
/// least one observation.
pub fn bootstrap(
    baseline: &[f64],
    candidate: &[f64],
    resamples: u32,
    confidence: f64,
    rng: &mut impl Rng,
) -> Interval {
    let base_mean = mean(baseline);
    let mut diffs = Vec::with_capacity(resamples as usize);
    let mut ratios = Vec::with_capacity(resamples as usize);
    for _ in 0..resamples {
        let b = resampled_mean(baseline, rng);
        let c = resampled_mean(candidate, rng);
        diffs.push(c - b);
        if b > 0.0 {
            ratios.push((c - b) / b);
        }
    }
    diffs.sort_by(f64::total_cmp);
    ratios.sort_by(f64::total_cmp);
    let tail = (1.0 - confidence) / 2.0;
    let relative = (base_mean > 0.0 && !ratios.is_empty())
        .then(|| (percentile(&ratios, tail), percentile(&ratios, 1.0 - tail)));
    Interval {
        low: percentile(&diffs, tail),
        high: percentile(&diffs, 1.0 - tail),
        relative,
    }
}

/// FNV-1a: a stable hash of a row's name, to seed its RNG independently of row order.
fn row_seed(seed: u64, name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    seed ^ h
}

impl Difference {
    fn of(
        metric: Metric,
        baseline: &SeriesResult,
        candidate: &SeriesResult,
        row: &str,
        settings: &Settings,
    ) -> Self {
        let (b, c) = (
            metric.observations(baseline),
            metric.observations(candidate),
        );
        let data = !b.is_empty() && !c.is_empty();
        let base_mean = mean(&b);
        let estimate = if data { mean(&c) - base_mean } else { 0.0 };
        let relative = (data && base_mean > 0.0).then(|| estimate / base_mean);
        let (interval, verdict) = if !data {
            (None, Verdict::NoData)
        } else if b.len() < 2 || c.len() < 2 {
            (None, Verdict::TooFewRepetitions)
        } else {
            let mut rng = ChaCha8Rng::seed_from_u64(row_seed(settings.seed, row));
            let i = bootstrap(&b, &c, settings.resamples, settings.confidence, &mut rng);
            let verdict = if i.low > 0.0 {
                Verdict::Higher
            } else if i.high < 0.0 {
                Verdict::Lower
            } else {
                Verdict::NotSignificant
            };
            (Some(i), verdict)
        };
        Self {
            metric,
            baseline: b,
            candidate: c,
            estimate,
            relative,
            interval,
            verdict,
        }
    }

    pub fn baseline_mean(&self) -> f64 {
        mean(&self.baseline)
    }

    pub fn candidate_mean(&self) -> f64 {
        mean(&self.candidate)
    }

    pub fn significant(&self) -> bool {
        matches!(self.verdict, Verdict::Higher | Verdict::Lower)
    }
}

impl Gate {
    /// Whether `d` (this gate's row) crosses the limit: significantly slower, and the estimate
    /// beyond the limit.
    pub fn crossed_by(&self, d: &Difference) -> bool {
        if d.verdict != Verdict::Higher {
            return false;
        }
        match self.limit {
            Limit::Relative(r) => d.relative.is_none_or(|x| x > r),
            Limit::Absolute(limit) => d.estimate > limit.as_micros() as f64,
        }
    }

    fn metric(&self) -> Metric {
        Metric::Phase {
            phase: self.phase,
            quantile: self.quantile,
        }
    }
}

fn side_line(input: &Input<'_>) -> String {
    let r = input.result;
    let revision = r.machine.git_revision.as_deref().map_or_else(
        || "unknown revision".to_owned(),
        |v| format!("revision {}", &v[..v.len().min(12)]),
    );
    format!(
        "{}: scenario {}, started {}, {}, {}",
        input.name,
        r.scenario.name,
        humantime::format_rfc3339_seconds(r.started_at),
        crate::report::human::count(r.scenario.repetitions, "repetition"),
        revision
    )
}

/// Repetitions of `s` (a series of `r`) whose burst was host-bound.
fn bound_reps(r: &RunResult, s: &SeriesResult) -> Vec<u32> {
    r.host_bound()
        .into_iter()
        .filter(|b| b.variant == s.variant && b.target == s.target)
        .map(|b| b.repetition)
        .collect()
}

fn has_data(s: &SeriesResult) -> bool {
    s.data.repetitions().next().is_some()
}

/// `Ok` when run `input` has a series whose `what` (variant or target, as `pick` reads it) is
/// `name`; else the names it has.
fn known(
    name: &str,
    input: &Input<'_>,
    what: &'static str,
    pick: fn(&SeriesResult) -> &String,
) -> Result<(), CompareError> {
    let mut available: Vec<String> = Vec::new();
    for s in &input.result.series {
        if !available.contains(pick(s)) {
            available.push(pick(s).clone());
        }
    }
    if available.iter().any(|a| a == name) {
        return Ok(());
    }
    Err(CompareError::Unknown {
        what,
        name: name.to_owned(),
        run: input.name.to_owned(),
        available,
    })
}

/// The pairs of series `pairing` asks for.
fn pairs<'a>(
    baseline: &Input<'a>,
    candidate: &Input<'a>,
    pairing: &Pairing,
) -> Result<Vec<(&'a SeriesResult, &'a SeriesResult)>, CompareError> {
    let (b, c) = (baseline.result, candidate.result);
    let found: Vec<(&SeriesResult, &SeriesResult)> = match pairing {
        Pairing::SameSeries => b
            .series
            .iter()
            .filter_map(|s| Some((s, c.series(&s.variant, &s.target)?)))
            .collect(),
        Pairing::Variants {
            baseline: bv,
            candidate: cv,
        } => {
            known(bv, baseline, "variant", |s| &s.variant)?;
            known(cv, candidate, "variant", |s| &s.variant)?;
            b.series
                .iter()
                .filter(|s| &s.variant == bv)
                .filter_map(|s| Some((s, c.series(cv, &s.target)?)))
                .collect()
        }
        Pairing::Targets {
            baseline: bt,
            candidate: ct,
        } => {
            known(bt, baseline, "target", |s| &s.target)?;
            known(ct, candidate, "target", |s| &s.target)?;
            b.series
                .iter()
                .filter(|s| &s.target == bt)
                .filter_map(|s| Some((s, c.series(&s.variant, ct)?)))
                .collect()
        }
    };
    let found: Vec<_> = found
        .into_iter()
        .filter(|(x, y)| has_data(x) && has_data(y))
        .collect();
    if found.is_empty() {
        let list = |r: &RunResult| {
            r.series
                .iter()
                .filter(|s| has_data(s))
                .map(|s| format!("{}/{}", s.variant, s.target))
                .collect()
        };
        return Err(CompareError::NothingInCommon {
            baseline: list(b),
            candidate: list(c),
        });
    }
    Ok(found)
}

/// Scenario fields (top-level keys) that differ between two runs, name and description aside.
fn scenario_differences(a: &RunResult, b: &RunResult) -> Vec<String> {
    let (Ok(serde_json::Value::Object(x)), Ok(serde_json::Value::Object(y))) = (
        serde_json::to_value(&a.scenario),
        serde_json::to_value(&b.scenario),
    ) else {
        return Vec::new();
    };
    let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| !matches!(k.as_str(), "name" | "description" | "variants" | "targets"))
        .filter(|k| x.get(*k) != y.get(*k))
        .cloned()
        .collect()
}

/// Compares `candidate` against `baseline` (the same input twice for a within-run pairing).
///
/// # Errors
/// [`CompareError`] when the pairing names an unknown variant or target, nothing pairs up, a
/// gated pair has fewer than 2 repetitions on a side, or the settings are out of range.
pub fn compare(
    baseline: &Input<'_>,
    candidate: &Input<'_>,
    pairing: &Pairing,
    settings: &Settings,
) -> Result<Comparison, CompareError> {
    let settings = settings.with_gated_rows()?;
    let metrics = settings.metrics();
    let mut pairs_out = Vec::new();
    let mut gates = Vec::new();
    for (b, c) in pairs(baseline, candidate, pairing)? {
        let pair = PairComparison::of([baseline, candidate], (b, c), &metrics, &settings);
        gates.extend(pair.judge_gates(&settings)?);
        pairs_out.push(pair);
    }
    Ok(Comparison {
        title: title(baseline, candidate, pairing),
        sides: [side_line(baseline), side_line(candidate)],
        notes: notes(baseline, candidate, &pairs_out),
        settings,
        pairs: pairs_out,
        gates,
    })
}

impl Settings {
    /// These settings checked (confidence and resamples in range), with every gated phase and
    /// quantile added to the rows compared.
    fn with_gated_rows(&self) -> Result<Self, CompareError> {
        if !(self.confidence > 0.0 && self.confidence < 1.0) {
            return Err(CompareError::Confidence(self.confidence));
        }
        if self.resamples < MIN_RESAMPLES {
            return Err(CompareError::Resamples(self.resamples));
        }
        let mut settings = self.clone();
        for g in &self.gates {
            if !settings.phases.contains(&g.phase) {
                settings.phases.push(g.phase);
            }
            if !settings.quantiles.contains(&g.quantile) {
                settings.quantiles.push(g.quantile);
            }
        }
        Ok(settings)
    }

    /// The rows of every pair, in order: each phase at each quantile, the times to ready, then
    /// registry egress.
    fn metrics(&self) -> Vec<Metric> {
        let phases = self.phases.iter().flat_map(|&phase| {
            self.quantiles
                .iter()
                .map(move |&quantile| Metric::Phase { phase, quantile })
        });
        let ready = READY_FRACTIONS.map(Metric::TimeToReady);
        phases.chain(ready).chain([Metric::Egress]).collect()
    }
}

/// What the reader should know about the whole comparison, in this order: too few
/// repetitions, host-bound pairs, failed pods, and for two runs, differing scenarios or
/// machines.
fn notes(baseline: &Input<'_>, candidate: &Input<'_>, pairs: &[PairComparison]) -> Vec<String> {
    let mut notes: Vec<String> = repetitions_note(pairs).into_iter().collect();
    notes.extend(pairs.iter().filter_map(PairComparison::host_bound_note));
    for p in pairs {
        let [b, c] = p.failed;
        if b + c > 0 {
            notes.push(format!(
                "{}: {b} baseline and {c} candidate pods failed; phase quantiles cover only the pods that became ready, time to ready counts failures as never ready.",
                p.label
            ));
        }
    }
    if !std::ptr::eq(baseline.result, candidate.result) {
        notes.extend(two_run_notes(baseline.result, candidate.result));
    }
    notes
}

/// The warning when the side with the fewest repetitions has too few for a verdict, or for a
/// trustworthy one.
fn repetitions_note(pairs: &[PairComparison]) -> Option<String> {
    let fewest = pairs.iter().flat_map(|p| p.repetitions).min().unwrap_or(0);
    if fewest < 2 {
        Some(format!(
            "Only {fewest} repetition on a side: without repetitions to resample there is no confidence interval and no verdict. Run the scenario with repetitions >= {FEW_REPETITIONS}."
        ))
    } else if fewest < FEW_REPETITIONS {
        Some(format!(
            "Only {fewest} repetitions on a side: a bootstrap over so few repetitions can only return a handful of distinct means, so the intervals are rough and a verdict is weak evidence. Use repetitions >= {FEW_REPETITIONS} (10 is better) before trusting a verdict."
        ))
    } else {
        None
    }
}

/// What differs between two runs besides the change under test: scenario fields, the machine.
fn two_run_notes(baseline: &RunResult, candidate: &RunResult) -> Vec<String> {
    let mut notes = Vec::new();
    let differing = scenario_differences(baseline, candidate);
    if !differing.is_empty() {
        notes.push(format!(
            "The two runs' scenarios differ in: {}. A difference may come from that rather than from the change under test.",
            differing.join(", ")
        ));
    }
    let (mb, mc) = (&baseline.machine, &candidate.machine);
    if (mb.cores, &mb.cpu_model) != (mc.cores, &mc.cpu_model) {
        notes.push(
            "The two runs happened on different machines (cores or CPU model differ).".to_owned(),
        );
    }
    notes
}

/// `a.json → b.json`, `run.json: variant full → slim`, or `a.json (target x) → b.json (target y)`.
fn title(baseline: &Input<'_>, candidate: &Input<'_>, pairing: &Pairing) -> String {
    let (what, b, c) = match pairing {
        Pairing::SameSeries => {
            return format!("{} \u{2192} {}", baseline.name, candidate.name);
        }
        Pairing::Variants {
            baseline: b,
            candidate: c,
        } => ("variant", b, c),
        Pairing::Targets {
            baseline: b,
            candidate: c,
        } => ("target", b, c),
    };
    if std::ptr::eq(baseline.result, candidate.result) {
        format!("{}: {what} {b} \u{2192} {c}", baseline.name)
    } else {
        format!(
            "{} ({what} {b}) \u{2192} {} ({what} {c})",
            baseline.name, candidate.name
        )
    }
}

impl Comparison {
    pub fn passed(&self) -> bool {
        self.gates.iter().all(|g| !g.crossed)
    }

    /// Gates left unjudged because their pair has host-bound repetitions.
    pub fn unjudged(&self) -> impl Iterator<Item = &GateOutcome> {
        self.gates.iter().filter(|g| !g.judged)
    }
}

impl PairComparison {
    /// Every row of `metrics` for series `b` of run `runs[0]` against series `c` of run
    /// `runs[1]`, with each side's repetitions, failures and host-bound repetitions.
    fn of(
        runs: [&Input<'_>; 2],
        (b, c): (&SeriesResult, &SeriesResult),
        metrics: &[Metric],
        settings: &Settings,
    ) -> Self {
        let label = if (&b.variant, &b.target) == (&c.variant, &c.target) {
            format!("{} / {}", b.variant, b.target)
        } else {
            format!(
                "{} / {} \u{2192} {} / {}",
                b.variant, b.target, c.variant, c.target
            )
        };
        let differences = metrics
            .iter()
            .map(|m| Difference::of(*m, b, c, &format!("{label}|{}", m.name()), settings))
            .collect();
        Self {
            label,
            repetitions: [b, c].map(|s| s.data.repetitions().count()),
            failed: [b, c].map(|s| s.data.failed_pods()),
            host_bound: [bound_reps(runs[0].result, b), bound_reps(runs[1].result, c)],
            differences,
        }
    }

    /// Every gate of `settings` judged on this pair's row (an error when a gated row has fewer
    /// than 2 repetitions on a side); a host-bound pair's gates are left unjudged unless
    /// [`Settings::judge_host_bound`].
    fn judge_gates(&self, settings: &Settings) -> Result<Vec<GateOutcome>, CompareError> {
        let judged = settings.judge_host_bound || !self.host_bound();
        let mut outcomes = Vec::new();
        for gate in &settings.gates {
            let Some(d) = self.differences.iter().find(|d| d.metric == gate.metric()) else {
                continue;
            };
            if d.verdict == Verdict::TooFewRepetitions {
                return Err(CompareError::TooFewRepetitions {
                    gate: gate.to_string(),
                    pair: self.label.clone(),
                    baseline: d.baseline.len(),
                    candidate: d.candidate.len(),
                });
            }
            outcomes.push(GateOutcome {
                gate: *gate,
                pair: self.label.clone(),
                difference: d.clone(),
                judged,
                crossed: judged && gate.crossed_by(d),
            });
        }
        Ok(outcomes)
    }

    pub fn host_bound(&self) -> bool {
        self.host_bound.iter().any(|reps| !reps.is_empty())
    }

    /// What the reader must know about a host-bound pair, or `None`.
    pub fn host_bound_note(&self) -> Option<String> {
        if !self.host_bound() {
            return None;
        }
        let sides: Vec<String> = ["baseline", "candidate"]
            .into_iter()
            .zip(&self.host_bound)
            .zip(self.repetitions)
            .filter(|((_, reps), _)| !reps.is_empty())
            .map(|((name, reps), of)| {
                let list: Vec<String> = reps.iter().map(u32::to_string).collect();
                let noun = if reps.len() == 1 {
                    "repetition"
                } else {
                    "repetitions"
                };
                format!("{name} {noun} {} ({} of {of})", list.join(", "), reps.len())
            })
            .collect();
        Some(format!(
            "{}: host-bound bursts in {}: the host's CPUs were saturated, so differences may be the machine's rather than the change's; its rows are marked host-bound, and its gates are judged only with --judge-host-bound.",
            self.label,
            sides.join(" and ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gates_parse_and_print_back() {
        let cases = [
            ("p95:end_to_end:10%", "p95:end_to_end:10%"),
            ("p99.9:pull:200ms", "p99.9:pull:200ms"),
            ("P50:ttfb:0%", "p50:ttfb:0%"),
            ("p95:pull:2.5%", "p95:pull:2.5%"),
        ];
        for (raw, back) in cases {
            let g: Gate = raw.parse().unwrap();
            assert_eq!(g.to_string(), back);
        }
        let g: Gate = "p95:end_to_end:10%".parse().unwrap();
        assert_eq!(g.quantile.fraction(), 0.95);
        assert_eq!(g.phase, Phase::EndToEnd);
        assert_eq!(g.limit, Limit::Relative(0.1));
    }

    #[test]
    fn bad_gates_say_what_is_wrong() {
        let kind = |e: &GateError| match e {
            GateError::Shape(_) => "shape",
            GateError::Quantile(_) => "quantile",
            GateError::Phase(_) => "phase",
            GateError::Limit(_) => "limit",
        };
        let cases = [
            ("p95:end_to_end", "shape"),
            ("95:end_to_end:10%", "quantile"),
            ("p0:end_to_end:10%", "quantile"),
            ("p101:end_to_end:10%", "quantile"),
            ("p95:e2e:10%", "phase"),
            ("p95:pull:ten", "limit"),
            ("p95:pull:-5%", "limit"),
        ];
        for (raw, want) in cases {
            let e = raw.parse::<Gate>().unwrap_err();
            assert_eq!(kind(&e), want, "{raw}: {e}");
        }
        assert!(GateError::Phase("x".into())
            .to_string()
            .contains("end_to_end"));
    }

    #[test]
    fn bootstrap_of_a_clear_shift_excludes_zero() {
        let base = [100.0, 104.0, 98.0, 101.0, 99.0, 102.0];
        let cand = [130.0, 128.0, 133.0, 131.0, 129.0, 132.0];
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let i = bootstrap(&base, &cand, 5_000, 0.95, &mut rng);
        assert!(i.low > 25.0 && i.high < 35.0, "{i:?}");
        let (lo, hi) = i.relative.unwrap();
        assert!(lo > 0.25 && hi < 0.35, "{lo} {hi}");
        // The same inputs on both sides: the interval straddles zero.
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let i = bootstrap(&base, &base, 5_000, 0.95, &mut rng);
        assert!(i.low < 0.0 && i.high > 0.0, "{i:?}");
        // Constant and equal: a point at zero, not significant either way.
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let i = bootstrap(&[5.0, 5.0], &[5.0, 5.0], 1_000, 0.95, &mut rng);
        assert_eq!((i.low, i.high), (0.0, 0.0));
    }

    #[test]
    fn percentiles_interpolate_between_ranks() {
        let v = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile(&v, 0.5), 3.0);
        assert_eq!(percentile(&v, 0.125), 1.5);
        assert_eq!(percentile(&v, 1.0), 5.0);
        assert_eq!(percentile(&[7.0], 0.975), 7.0);
    }

    #[test]
    fn gate_needs_a_significant_slowdown_beyond_its_limit() {
        let d = |estimate: f64, verdict| Difference {
            metric: Metric::Egress,
            baseline: vec![100.0, 100.0],
            candidate: vec![100.0 + estimate; 2],
            estimate,
            relative: Some(estimate / 100.0),
            interval: None,
            verdict,
        };
        let g: Gate = "p95:end_to_end:10%".parse().unwrap();
        assert!(g.crossed_by(&d(12.0, Verdict::Higher)));
        assert!(!g.crossed_by(&d(8.0, Verdict::Higher)));
        assert!(!g.crossed_by(&d(12.0, Verdict::NotSignificant)));
        assert!(!g.crossed_by(&d(-12.0, Verdict::Lower)));
        let g: Gate = "p95:end_to_end:5us".parse().unwrap();
        assert!(g.crossed_by(&d(6.0, Verdict::Higher)));
        assert!(!g.crossed_by(&d(5.0, Verdict::Higher)));
    }
}
