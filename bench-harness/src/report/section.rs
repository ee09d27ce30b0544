//! The report's content as format-neutral [`Table`]s and lines: run facts, warnings, summary,
//! SLO outcomes, capacity answers and per (variant, target) details. `markdown.rs` and
//! `html.rs` lay the same sections out, so both reports always show the same numbers, each with
//! its unit.
//!
//! Percentiles come from the stored histograms, SLO outcomes from
//! [`RunResult::evaluate_slo`], capacity answers from [`Capacity`]; nothing is re-sampled.

use std::time::Duration;

use super::capacity::{Capacity, Egress, ReadyTimes};
use super::human;
use super::side_by_side::{ratio, TargetRow, VariantRows, WaveRow};
use super::table::{Align, Cell, Emphasis, Table};
use crate::result::{RunResult, SeriesResult, SloCheck, READY_FRACTIONS};
use crate::run::recorder::{LayerPhase, Phase, Summary};
use crate::scenario::units::Span;
use crate::scenario::{Arrival, ImageSource, Placement, PullerKind, Scenario, TargetKind};

/// Rows of the "ready % over time" table, at most.
const TIMELINE_ROWS: u64 = 10;

/// One line of run facts: a label and its value.
pub type Fact = (&'static str, Cell);

/// For a modelled run, the line that says so (and with what profile); `None` when measured.
pub fn modelled(r: &RunResult) -> Option<String> {
    let m = r.model.as_ref()?;
    Some(format!(
        "these numbers come from the fleet model (bench-harness model), not from a measured burst; machine profile {}{}. See bench-harness/README.md (Fleet model) for what it models and where it misses.",
        m.profile,
        m.profile_path
            .as_deref()
            .map_or_else(String::new, |p| format!(" ({p})"))
    ))
}

/// The run's facts for the top of a report: when, how long, where, what was run.
pub fn facts(r: &RunResult) -> Vec<Fact> {
    let sc = &r.scenario;
    let m = &r.machine;
    let mut machine = vec![human::count(m.cores, "core")];
    machine.extend(m.cpu_model.clone());
    machine.extend(m.memory_bytes.map(|b| format!("{} RAM", human::bytes(b))));
    machine.push(format!("{} {}", m.os, m.arch));
    machine.extend(m.kernel.as_ref().map(|k| format!("kernel {k}")));
    let revision = match (&m.git_revision, m.git_dirty) {
        (Some(rev), Some(true)) => {
            Cell::with(format!("{rev} (uncommitted changes)"), Emphasis::Code)
        }
        (Some(rev), _) => Cell::with(rev.clone(), Emphasis::Code),
        (None, _) => Cell::from("unknown"),
    };
    vec![
        (
            "started",
            humantime::format_rfc3339_seconds(r.started_at)
                .to_string()
                .into(),
        ),
        ("duration", human::duration(r.duration).into()),
        ("machine", machine.join(", ").into()),
        ("revision", revision),
        ("pods", pods_line(sc).into()),
        ("variants", variants_line(r).into()),
        ("targets", targets_line(sc).into()),
        ("registry", registry_line(sc).into()),
        ("runtime", runtime_line(sc).into()),
        ("readiness", readiness_line(sc).into()),
    ]
}

/// What the reader must know before trusting the numbers: the run's own warnings (host-bound
/// bursts, error samples, scenario warnings), then one line per (variant, target) with failed
/// pods.
pub fn warnings(r: &RunResult) -> Vec<String> {
    let mut out = r.warnings.clone();
    for s in &r.series {
        let failures = s.data.failures();
        if failures.is_empty() {
            continue;
        }
        let kinds: Vec<String> = failures.iter().map(|(k, n)| format!("{k} {n}")).collect();
        out.push(format!(
            "errors: {} of {} failed in {}/{} ({})",
            s.data.failed_pods(),
            human::count(scheduled_pods(s), "pod"),
            s.variant,
            s.target,
            kinds.join(", ")
        ));
    }
    out
}

/// Pods ready of scheduled, over all repetitions of a series (`15/16`).
pub fn ready_fraction(s: &SeriesResult) -> String {
    let ready: u64 = s.data.repetitions().map(|(_, r)| r.ready_pods()).sum();
    format!("{ready}/{}", scheduled_pods(s))
}

fn scheduled_pods(s: &SeriesResult) -> u64 {
    s.data
        .repetitions()
        .map(|(_, r)| r.timeline(s.pods_per_repetition).pods())
        .sum()
}

/// One row per (variant, target): pods ready, end-to-end p50 and p95, pull p95, failures.
pub fn summary(r: &RunResult) -> Table {
    let mut t = Table::new(&[
        ("variant", Align::Left),
        ("target", Align::Left),
        ("ready", Align::Right),
        ("end-to-end p50", Align::Right),
        ("end-to-end p95", Align::Right),
        ("pull p95", Align::Right),
        ("failures", Align::Right),
    ]);
    for s in &r.series {
        let e2e = Summary::of(&s.data.merged(Phase::EndToEnd));
        let pull = Summary::of(&s.data.merged(Phase::Pull));
        let failed = s.data.failed_pods();
        t.row([
            s.variant.as_str().into(),
            s.target.as_str().into(),
            ready_fraction(s).into(),
            human::us_if(e2e.count, e2e.p50_us).into(),
            human::us_if(e2e.count, e2e.p95_us).into(),
            human::us_if(pull.count, pull.p95_us).into(),
            if failed > 0 {
                Cell::with(failed.to_string(), Emphasis::Fail)
            } else {
                Cell::from("0")
            },
        ]);
    }
    t
}

/// SLO outcomes per (variant, target), or `None` when the scenario sets no SLO.
pub fn slo(r: &RunResult) -> Option<Table> {
    if r.slo.is_empty() {
        return None;
    }
    let mut t = Table::new(&[
        ("objective", Align::Left),
        ("variant", Align::Left),
        ("target", Align::Left),
        ("limit", Align::Right),
        ("observed", Align::Right),
        ("result", Align::Left),
    ]);
    for o in &r.slo {
        let (name, limit, observed) = slo_parts(&o.check);
        t.row([
            name.into(),
            o.variant.as_str().into(),
            o.target.as_str().into(),
            limit.into(),
            observed.into(),
            if o.pass {
                Cell::with("pass", Emphasis::Pass)
            } else {
                Cell::with("FAIL", Emphasis::Fail)
            },
        ]);
    }
    Some(t)
}

/// An objective's name, limit and observation as the reader sees them.
fn slo_parts(check: &SloCheck) -> (&'static str, String, String) {
    let not_reached = || "not reached (failures)".to_owned();
    match check {
        SloCheck::P95Ready { limit, observed } => (
            "p95 ready",
            human::duration(*limit),
            observed.map_or_else(not_reached, human::duration),
        ),
        SloCheck::P99Pull { limit, observed } => (
            "p99 pull",
            human::duration(*limit),
            observed.map_or_else(not_reached, human::duration),
        ),
        SloCheck::MaxRegistryEgress {
            limit_bytes,
            observed_bytes,
        } => (
            "max registry egress",
            human::bytes(*limit_bytes),
            human::bytes(*observed_bytes),
        ),
    }
}

/// One line per missed SLO: `p95 ready of full/direct: 6.20 s, limit 5.00 s`.
pub fn slo_misses(r: &RunResult) -> Vec<String> {
    r.slo
        .iter()
        .filter(|o| !o.pass)
        .map(|o| {
            let (name, limit, observed) = slo_parts(&o.check);
            format!(
                "{name} of {}/{}: {observed}, limit {limit}",
                o.variant, o.target
            )
        })
        .collect()
}

/// How the summary's percentiles are taken, and why `compare` shows other p50s for the same
/// run.
pub fn summary_how() -> &'static str {
    "Percentiles here (and in the per-series latency tables) are over every pod of every repetition pooled, from the merged histograms. bench-harness compare takes each repetition's own percentile instead and averages them (it needs one observation per repetition for its intervals), so its p50 of the same run differs from this one whenever repetitions differ; each repetition's own figures are in the series' per-repetition table."
}

/// "N of M passed."
pub fn slo_line(r: &RunResult) -> String {
    let passed = r.slo.iter().filter(|o| o.pass).count();
    format!("{passed} of {} passed.", r.slo.len())
}

/// Whether the capacity answers are per arrival wave.
fn per_wave(c: &Capacity) -> bool {
    c.series.iter().any(|s| !s.waves.is_empty())
}

/// `variant`, `target` and, per wave, `wave` columns, then `rest`.
fn capacity_columns<'a>(c: &Capacity, rest: &[(&'a str, Align)]) -> Vec<(&'a str, Align)> {
    let mut columns = vec![("variant", Align::Left), ("target", Align::Left)];
    if per_wave(c) {
        columns.push(("wave", Align::Left));
    }
    columns.extend_from_slice(rest);
    columns
}

/// The wave cell of a whole-burst row in a per-wave table.
fn whole_burst() -> String {
    "all (from the epoch)".to_owned()
}

/// `1 at 0 ms`: a wave's number (from 1) and start.
fn wave_at(wave: u32, at: Duration) -> String {
    format!("{} at {}", wave + 1, human::duration(at))
}

/// How the capacity tables read: time to ready, egress (with the peak window), savings.
pub fn capacity_how(c: &Capacity) -> [String; 3] {
    let window = peak_window(c).map_or_else(
        || "no time series recorded".to_owned(),
        |w| format!("averaged over {} windows", human::duration(w)),
    );
    if per_wave(c) {
        [
            "Per arrival wave: from the wave's start until that share of the wave's pods was ready; median over repetitions, worst repetition in brackets. Failed pods never count as ready.".to_owned(),
            format!("Per arrival wave: bytes the registry sent from the wave's start until the next wave's (mean per repetition, max in brackets), per pod of the wave and in copies of the compressed image. Peak bandwidth and requests are {window}; mean bandwidth is over the wave's start to its last byte."),
            "Per arrival wave, direct \u{2192} through the target, same variant: the wave's registry egress (mean per repetition) and its times to ready from the wave's start (median over repetitions).".to_owned(),
        ]
    } else {
        [
            "From the burst epoch until that share of the scheduled pods was ready; median over repetitions, worst repetition in brackets. Failed pods never count as ready.".to_owned(),
            format!("Bytes the registry sent per repetition (mean, max in brackets), per scheduled pod and in copies of the compressed image. Peak bandwidth and requests are {window}; mean bandwidth is over the epoch to the last byte."),
            "Direct \u{2192} through the target, same variant; registry egress is the mean per repetition, times the median over repetitions.".to_owned(),
        ]
    }
}

/// Time to 50 / 95 / 100 % ready per (variant, target), per wave when the scenario has waves:
/// median over repetitions, and the worst repetition when there are several.
pub fn time_to_ready(c: &Capacity) -> Table {
    let mut t = Table::new(&capacity_columns(
        c,
        &[
            ("50 % ready", Align::Right),
            ("95 % ready", Align::Right),
            ("100 % ready", Align::Right),
        ],
    ));
    for s in &c.series {
        // A series without wave records (a result written before they were) keeps its
        // whole-burst row among per-wave ones.
        let rows: Vec<(Option<String>, &[ReadyTimes; 3])> = if s.waves.is_empty() {
            vec![(per_wave(c).then(whole_burst), &s.time_to_ready)]
        } else {
            s.waves
                .iter()
                .map(|w| (Some(wave_at(w.wave, w.at)), &w.time_to_ready))
                .collect()
        };
        for (wave, [a, b, d]) in rows {
            let mut cells = vec![s.variant.as_str().into(), s.target.as_str().into()];
            cells.extend(wave.map(Cell::from));
            cells.extend([ready_cell(a), ready_cell(b), ready_cell(d)]);
            t.row(cells);
        }
    }
    t
}

fn ready_cell(t: &ReadyTimes) -> Cell {
    let n = t.per_repetition.len();
    let never = t.never();
    match (t.median(), t.worst()) {
        (Some(median), Some(worst)) if n > 1 && worst != median => format!(
            "{} (worst {})",
            human::duration(median),
            human::duration(worst)
        )
        .into(),
        (Some(median), Some(_)) => human::duration(median).into(),
        (Some(median), None) => Cell::with(
            format!(
                "{} (never in {never} of {})",
                human::duration(median),
                human::count(n as u64, "repetition")
            ),
            Emphasis::Fail,
        ),
        (None, _) => Cell::with(
            format!(
                "never (in {never} of {})",
                human::count(n as u64, "repetition")
            ),
            Emphasis::Fail,
        ),
    }
}

/// Registry egress per (variant, target), per wave when the scenario has waves: per
/// repetition, per pod, in image copies, and the bandwidth and request rate it took.
pub fn egress(c: &Capacity) -> Table {
    let egress_column = if per_wave(c) {
        "egress per wave"
    } else {
        "egress per repetition"
    };
    let mut t = Table::new(&capacity_columns(
        c,
        &[
            (egress_column, Align::Right),
            ("per pod", Align::Right),
            ("image copies", Align::Right),
            ("peak bandwidth", Align::Right),
            ("mean bandwidth", Align::Right),
            ("peak requests", Align::Right),
            ("throttled", Align::Right),
        ],
    ));
    for s in &c.series {
        let rows: Vec<(Option<String>, Option<&Egress>)> = if s.waves.is_empty() {
            vec![(per_wave(c).then(whole_burst), s.egress.as_ref())]
        } else {
            s.waves
                .iter()
                .map(|w| (Some(wave_at(w.wave, w.at)), w.egress.as_ref()))
                .collect()
        };
        for (wave, e) in rows {
            let mut cells = vec![s.variant.as_str().into(), s.target.as_str().into()];
            cells.extend(wave.map(Cell::from));
            cells.extend(egress_cells(e));
            t.row(cells);
        }
    }
    t
}

/// The egress columns of one row; "not recorded" alone without egress.
fn egress_cells(e: Option<&Egress>) -> Vec<Cell> {
    let Some(e) = e else {
        return vec!["not recorded".into()];
    };
    let (mean, max) = (
        human::bytes(e.mean_bytes().round() as u64),
        human::bytes(e.max_bytes()),
    );
    let per_rep = if mean == max {
        max
    } else {
        format!("{mean} (max {max})")
    };
    let dash = || "-".to_owned();
    let traffic = e.traffic.as_ref();
    vec![
        per_rep.into(),
        human::bytes(e.per_pod_bytes().round() as u64).into(),
        e.image_copies()
            .map_or_else(dash, |x| format!("{x:.2} x"))
            .into(),
        traffic
            .map_or_else(dash, |t| human::bandwidth(t.peak_bytes_per_sec))
            .into(),
        traffic
            .map_or_else(dash, |t| human::bandwidth(t.mean_bytes_per_sec))
            .into(),
        traffic
            .map_or_else(dash, |t| {
                human::requests_per_second(t.peak_requests_per_sec)
            })
            .into(),
        traffic
            .map_or_else(dash, |t| t.throttled.to_string())
            .into(),
    ]
}

/// The window peaks are averaged over, if any series recorded a time series.
pub fn peak_window(c: &Capacity) -> Option<Duration> {
    c.series
        .iter()
        .filter_map(|s| s.egress.as_ref()?.traffic.map(|t| t.bucket))
        .max()
}

/// What each cache or mirror target saves against direct pulls of the same variant, or `None`
/// when no variant ran both direct and through another target.
pub fn savings(c: &Capacity) -> Option<Table> {
    if c.savings.is_empty() {
        return None;
    }
    let waves = c.savings.iter().any(|s| s.wave.is_some());
    let mut columns = vec![("variant", Align::Left), ("target", Align::Left)];
    if waves {
        columns.push(("wave", Align::Left));
    }
    columns.extend([
        ("registry egress", Align::Right),
        ("time to 95 % ready", Align::Right),
        ("time to 100 % ready", Align::Right),
    ]);
    let mut t = Table::new(&columns);
    for s in &c.savings {
        let egress = s.egress_bytes.map_or_else(
            || "-".to_owned(),
            |(direct, other)| {
                change(
                    human::bytes(direct.round() as u64),
                    human::bytes(other.round() as u64),
                    direct,
                    other,
                )
            },
        );
        let time = |i: usize| -> String {
            match s.time_to_ready[i] {
                (Some(d), Some(o)) => change(
                    human::duration(d),
                    human::duration(o),
                    d.as_secs_f64(),
                    o.as_secs_f64(),
                ),
                (d, o) => format!(
                    "{} \u{2192} {}",
                    d.map_or_else(|| "never".to_owned(), human::duration),
                    o.map_or_else(|| "never".to_owned(), human::duration)
                ),
            }
        };
        let mut cells = vec![
            s.variant.as_str().into(),
            format!("{} vs {}", s.target, s.direct).into(),
        ];
        if waves {
            cells.push(
                s.wave
                    .map_or_else(whole_burst, |(w, at)| wave_at(w, at))
                    .into(),
            );
        }
        cells.extend([egress.into(), time(1).into(), time(2).into()]);
        t.row(cells);
    }
    Some(t)
}

fn change(from: String, to: String, a: f64, b: f64) -> String {
    if a > 0.0 {
        format!(
            "{from} \u{2192} {to} ({})",
            human::signed_percent((b - a) / a)
        )
    } else {
        format!("{from} \u{2192} {to}")
    }
}

/// How the side-by-side tables read: one paragraph per table kind.
pub fn side_by_side_how() -> [String; 3] {
    [
        "Pulls: pull and TTFB are per pod, from its node's pull start (TTFB: to the first byte of the first blob), every repetition merged. First-byte lag is, for every blob (config and layers) and every node of the wave that fetched it, how long after that blob's first bytes reached the first of them this node got its own (or after its own request, if it asked later); the column shows the longest: a cache that streams one upstream fetch to every waiter keeps it near zero, one that holds waiters until its fill is complete makes it the leader's whole download. All ready after is from the wave's start until its last pod was ready. Lag and all-ready are medians over repetitions. A real client (skopeo, ctr) reports neither first bytes nor per-layer times: those read \"not observed\".".to_owned(),
        "Registry, per burst: the registry's own counts for the whole burst (every wave), medians over repetitions: blob GETs per blob (mean, then smallest to largest over every blob and repetition), bytes it sent in copies of the compressed image, requests it answered, with a shaped link the bytes the kernel's tbf qdisc carried (in image copies), and the time from the epoch until every pod of the burst was ready.".to_owned(),
        "Against cache-daemon: each target's figure divided by cache-daemon's for the same wave; above 1.00 x it is slower, or lags first bytes more.".to_owned(),
    ]
}

fn wave_label(w: &WaveRow) -> String {
    format!("{} at {}", w.wave + 1, human::duration(w.at))
}

fn never_or(d: Option<Duration>) -> Cell {
    match d {
        Some(d) => human::duration(d).into(),
        None => Cell::with("never", Emphasis::Fail),
    }
}

fn observed(count: u64, us: u64) -> Cell {
    if count == 0 {
        Cell::from("not observed")
    } else {
        human::us(us).into()
    }
}

/// One row per target (and wave, when `waves`): pull and TTFB p50 / p95 / p99, the longest
/// first-byte lag, time until the wave's pods were all ready.
pub fn side_by_side(v: &VariantRows, waves: bool) -> Table {
    let mut columns = vec![("target", Align::Left)];
    if waves {
        columns.push(("wave", Align::Left));
    }
    columns.extend([
        ("pull p50", Align::Right),
        ("pull p95", Align::Right),
        ("pull p99", Align::Right),
        ("TTFB p50", Align::Right),
        ("TTFB p95", Align::Right),
        ("TTFB p99", Align::Right),
        ("first-byte lag", Align::Right),
        ("all ready after", Align::Right),
    ]);
    let mut t = Table::new(&columns);
    for row in &v.targets {
        for w in &row.waves {
            let mut cells = vec![Cell::from(row.target.as_str())];
            if waves {
                cells.push(wave_label(w).into());
            }
            cells.extend([
                human::us_if(w.pull.count, w.pull.p50_us).into(),
                human::us_if(w.pull.count, w.pull.p95_us).into(),
                human::us_if(w.pull.count, w.pull.p99_us).into(),
                observed(w.ttfb.count, w.ttfb.p50_us),
                observed(w.ttfb.count, w.ttfb.p95_us),
                observed(w.ttfb.count, w.ttfb.p99_us),
                w.first_byte_lag
                    .map_or_else(|| Cell::from("not observed"), |d| human::duration(d).into()),
                never_or(w.all_ready),
            ]);
            t.row(cells);
        }
    }
    t
}

/// One row per target: the registry's own counts per burst, the bytes against the baseline's
/// (cache-daemon), and when every pod of the burst was ready.
pub fn side_by_side_upstream(v: &VariantRows) -> Table {
    let vs = v.baseline.as_deref().unwrap_or("cache-daemon");
    let bytes_vs = format!("bytes vs {vs}");
    let mut t = Table::new(&[
        ("target", Align::Left),
        ("upstream GETs per blob", Align::Right),
        ("upstream bytes / image", Align::Right),
        ("upstream requests", Align::Right),
        ("shaped link bytes / image", Align::Right),
        (bytes_vs.as_str(), Align::Right),
        ("all pods ready", Align::Right),
    ]);
    let base = v
        .baseline
        .as_deref()
        .and_then(|b| v.targets.iter().find(|r| r.target == b));
    let dash = || Cell::from("-");
    for row in &v.targets {
        let (gets, copies, requests, link) = match &row.upstream {
            None => (Cell::from("not recorded"), dash(), dash(), dash()),
            Some(u) => {
                let (mean, min, max) = u.gets_per_blob;
                let gets = if min == max {
                    format!("{min}")
                } else {
                    format!("{mean:.2} ({min} to {max})")
                };
                (
                    gets.into(),
                    u.image_copies
                        .map_or_else(dash, |c| format!("{c:.2} x").into()),
                    u.requests.to_string().into(),
                    u.link_image_copies
                        .map_or_else(dash, |c| format!("{c:.2} x").into()),
                )
            }
        };
        let bytes = |r: &TargetRow| r.upstream.as_ref().map(|u| u.bytes as f64);
        let bytes_vs = match base {
            Some(b) if b.target != row.target => ratio_cell(ratio(bytes(row), bytes(b))),
            _ => dash(),
        };
        t.row([
            row.target.as_str().into(),
            gets,
            copies,
            requests,
            link,
            bytes_vs,
            never_or(row.all_ready),
        ]);
    }
    t
}

fn ratio_cell(r: Option<f64>) -> Cell {
    r.map_or_else(|| Cell::from("-"), |r| format!("{r:.2} x").into())
}

/// Each target's figures divided by the baseline's (cache-daemon) for the same wave: above
/// 1.00 x it is slower (or lags first bytes more) than our cache. `None` without a baseline
/// or another target.
pub fn side_by_side_ratios(v: &VariantRows, waves: bool) -> Option<Table> {
    let base = v
        .targets
        .iter()
        .find(|r| Some(&r.target) == v.baseline.as_ref())?;
    let others: Vec<&TargetRow> = v
        .targets
        .iter()
        .filter(|r| r.target != base.target)
        .collect();
    if others.is_empty() {
        return None;
    }
    let mut columns = vec![("target", Align::Left)];
    if waves {
        columns.push(("wave", Align::Left));
    }
    columns.extend([
        ("pull p50", Align::Right),
        ("pull p95", Align::Right),
        ("pull p99", Align::Right),
        ("TTFB p50", Align::Right),
        ("TTFB p95", Align::Right),
        ("first-byte lag", Align::Right),
        ("all ready after", Align::Right),
    ]);
    let mut t = Table::new(&columns);
    let us = |count: u64, v: u64| (count > 0).then_some(v as f64);
    let secs = |d: Option<Duration>| d.map(|d| d.as_secs_f64());
    for row in others {
        for w in &row.waves {
            let Some(b) = base.waves.iter().find(|b| b.wave == w.wave) else {
                continue;
            };
            let mut cells = vec![Cell::from(row.target.as_str())];
            if waves {
                cells.push(wave_label(w).into());
            }
            cells.extend([
                ratio_cell(ratio(
                    us(w.pull.count, w.pull.p50_us),
                    us(b.pull.count, b.pull.p50_us),
                )),
                ratio_cell(ratio(
                    us(w.pull.count, w.pull.p95_us),
                    us(b.pull.count, b.pull.p95_us),
                )),
                ratio_cell(ratio(
                    us(w.pull.count, w.pull.p99_us),
                    us(b.pull.count, b.pull.p99_us),
                )),
                ratio_cell(ratio(
                    us(w.ttfb.count, w.ttfb.p50_us),
                    us(b.ttfb.count, b.ttfb.p50_us),
                )),
                ratio_cell(ratio(
                    us(w.ttfb.count, w.ttfb.p95_us),
                    us(b.ttfb.count, b.ttfb.p95_us),
                )),
                ratio_cell(ratio(secs(w.first_byte_lag), secs(b.first_byte_lag))),
                ratio_cell(ratio(secs(w.all_ready), secs(b.all_ready))),
            ]);
            t.row(cells);
        }
    }
    Some(t)
}

/// Percentiles of every pod phase and layer phase of a series, over all repetitions.
pub fn latency(s: &SeriesResult) -> Table {
    let mut t = Table::new(&[
        ("phase", Align::Left),
        ("n", Align::Right),
        ("p50", Align::Right),
        ("p90", Align::Right),
        ("p95", Align::Right),
        ("p99", Align::Right),
        ("max", Align::Right),
    ]);
    let rows = Phase::ALL
        .iter()
        .map(|p| (p.name().to_owned(), s.data.merged(*p)))
        .chain(LayerPhase::ALL.iter().map(|p| {
            let what = if *p == LayerPhase::FirstByte {
                "blob"
            } else {
                "layer"
            };
            (format!("{what} {}", p.name()), s.data.merged_layer(*p))
        }));
    for (name, h) in rows {
        let sum = Summary::of(&h);
        let cell = |us| Cell::from(human::us_if(sum.count, us));
        t.row([
            name.into(),
            sum.count.to_string().into(),
            cell(sum.p50_us),
            cell(sum.p90_us),
            cell(sum.p95_us),
            cell(sum.p99_us),
            cell(sum.max_us),
        ]);
    }
    t
}

/// Per repetition of a series: ready and failed pods, end-to-end percentiles, pull p95.
pub fn repetitions(s: &SeriesResult) -> Table {
    let mut t = Table::new(&[
        ("repetition", Align::Right),
        ("ready", Align::Right),
        ("failed", Align::Right),
        ("end-to-end p50", Align::Right),
        ("end-to-end p95", Align::Right),
        ("end-to-end p99", Align::Right),
        ("pull p95", Align::Right),
    ]);
    for (rep, data) in s.data.repetitions() {
        let e2e = Summary::of(data.phase(Phase::EndToEnd));
        let pull = Summary::of(data.phase(Phase::Pull));
        t.row([
            rep.to_string().into(),
            data.ready_pods().to_string().into(),
            data.failed_pods().to_string().into(),
            human::us_if(e2e.count, e2e.p50_us).into(),
            human::us_if(e2e.count, e2e.p95_us).into(),
            human::us_if(e2e.count, e2e.p99_us).into(),
            human::us_if(pull.count, pull.p95_us).into(),
        ]);
    }
    t
}

/// Per repetition of a series: when 50, 95, 100 % of its pods were ready.
pub fn ready_times(s: &SeriesResult) -> Table {
    let mut t = Table::new(&[
        ("repetition", Align::Right),
        ("50 % ready", Align::Right),
        ("95 % ready", Align::Right),
        ("100 % ready", Align::Right),
    ]);
    for (rep, data) in s.data.repetitions() {
        let timeline = data.timeline(s.pods_per_repetition);
        let [a, b, c] = READY_FRACTIONS.map(|f| {
            timeline
                .time_to(f)
                .map_or_else(|| "never".to_owned(), human::duration)
        });
        t.row([rep.to_string().into(), a.into(), b.into(), c.into()]);
    }
    t
}

/// Percentage of a series' pods ready at round times since the epoch, one column per
/// repetition; `None` when no pod became ready.
pub fn ready_over_time(s: &SeriesResult) -> Option<Table> {
    let last_us = s
        .data
        .repetitions()
        .filter_map(|(_, d)| d.ready_offsets_us().last().copied())
        .max()
        .unwrap_or(0);
    if last_us == 0 {
        return None;
    }
    let step_us = nice_step(last_us.div_ceil(TIMELINE_ROWS));
    let reps: Vec<_> = s.data.repetitions().collect();
    let names: Vec<String> = reps.iter().map(|(r, _)| format!("rep {r}")).collect();
    let mut columns = vec![("since epoch", Align::Right)];
    columns.extend(names.iter().map(|n| (n.as_str(), Align::Right)));
    let mut t = Table::new(&columns);
    let mut at = step_us;
    loop {
        let mut row = vec![Cell::from(human::us(at))];
        for (_, d) in &reps {
            let f = d
                .timeline(s.pods_per_repetition)
                .fraction_at(Duration::from_micros(at));
            row.push(human::percent(f).into());
        }
        t.row(row);
        if at >= last_us {
            break;
        }
        at += step_us;
    }
    Some(t)
}

/// The smallest of 1, 2, 5 x 10^k microseconds (at least 1 ms) that is >= `us`.
fn nice_step(us: u64) -> u64 {
    let mut base = 1_000;
    loop {
        for m in [1, 2, 5] {
            if base * m >= us {
                return base * m;
            }
        }
        base *= 10;
    }
}

/// Registry accounting per repetition of a series, or `None` when none was recorded.
pub fn registry(r: &RunResult, s: &SeriesResult) -> Option<Table> {
    if s.registry.is_empty() {
        return None;
    }
    let image_bytes = r.pod_image_bytes(&s.variant);
    let mut t = Table::new(&[
        ("repetition", Align::Right),
        ("egress", Align::Right),
        ("egress / image size", Align::Right),
        ("requests", Align::Left),
        ("blob GETs per blob", Align::Left),
    ]);
    for (rep, totals) in &s.registry {
        let ratio = image_bytes.map_or_else(
            || "-".to_owned(),
            |b| format!("{:.2} x", totals.bytes_out as f64 / b as f64),
        );
        t.row([
            rep.to_string().into(),
            human::bytes(totals.bytes_out).into(),
            ratio.into(),
            requests_line(&totals.requests).into(),
            blob_gets_line(totals.blob_gets.values().copied().collect()).into(),
        ]);
    }
    Some(t)
}

/// Where each variant's image came from, for variants not generated here (a real registry or an
/// OCI layout): the source, its digests, and who served it. `None` when every image is synthetic.
pub fn image_sources(r: &RunResult) -> Option<Table> {
    let sourced: Vec<_> = r
        .images
        .iter()
        .filter(|(_, f)| {
            f.details
                .get("source")
                .is_some_and(serde_json::Value::is_object)
        })
        .collect();
    if sourced.is_empty() {
        return None;
    }
    let mut t = Table::new(&[
        ("variant", Align::Left),
        ("source", Align::Left),
        ("digest", Align::Left),
        ("platform manifest", Align::Left),
        ("served by", Align::Left),
        ("layer bytes", Align::Right),
    ]);
    for (variant, facts) in sourced {
        let s = &facts.details["source"];
        let text = |key: &str| s.get(key).and_then(|v| v.as_str()).unwrap_or("").to_owned();
        let code = |key: &str| match text(key).as_str() {
            "" => Cell::from("-"),
            t => Cell::with(t, Emphasis::Code),
        };
        let (source, served) = match text("kind").as_str() {
            "registry" if s["mirrored"] == true => (
                format!("registry {}", text("reference")),
                "embedded registry (mirrored once)",
            ),
            "registry" => (
                format!("registry {}", text("reference")),
                "the real registry (no registry-side accounting)",
            ),
            "layout" => (
                match text("tag").as_str() {
                    "" => format!("OCI layout {}", text("path")),
                    tag => format!("OCI layout {} tag {tag}", text("path")),
                },
                "embedded registry",
            ),
            kind => (kind.to_owned(), "embedded registry"),
        };
        t.row([
            variant.clone().into(),
            source.into(),
            code("digest"),
            platform_manifest(&facts.details, &r.scenario.platform),
            served.into(),
            human::bytes(facts.compressed_bytes).into(),
        ]);
    }
    Some(t)
}

/// The manifest the nodes pull for their platform: the source's `platform_digest` when it
/// recorded one, else the entry of the image's `platforms` that runs on `platform` (synthetic
/// images list every platform they were generated for). A plain manifest is its own.
fn platform_manifest(details: &serde_json::Value, platform: &stampede_oci::Platform) -> Cell {
    if let Some(d) = details["source"]["platform_digest"].as_str() {
        return Cell::with(d, Emphasis::Code);
    }
    let index = details["top"]["media_type"]
        .as_str()
        .is_some_and(|m| m.contains("index") || m.contains("manifest.list"));
    let chosen = details["platforms"].as_array().and_then(|all| {
        all.iter().find(|p| {
            serde_json::from_value::<stampede_oci::Platform>(p["platform"].clone())
                .is_ok_and(|p| p.runs_on(platform))
        })
    });
    match chosen.and_then(|p| p["manifest"]["digest"].as_str()) {
        Some(d) if index => Cell::with(d, Emphasis::Code),
        _ if !index && details["top"].is_object() => Cell::from("the image is one manifest"),
        _ => Cell::from("-"),
    }
}

/// `28 (blob_get 20, manifest_get 8)`: the total, then the non-zero kinds.
fn requests_line(requests: &std::collections::BTreeMap<String, u64>) -> String {
    let kinds: Vec<String> = requests
        .iter()
        .filter(|(k, n)| **n > 0 && k.as_str() != "total")
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    let total = requests
        .get("total")
        .copied()
        .unwrap_or_else(|| requests.values().sum());
    if kinds.is_empty() {
        total.to_string()
    } else {
        format!("{total} ({})", kinds.join(", "))
    }
}

fn blob_gets_line(mut gets: Vec<u64>) -> String {
    if gets.is_empty() {
        return "-".to_owned();
    }
    gets.sort_unstable();
    let (min, max) = (gets[0], gets[gets.len() - 1]);
    let median = gets[(gets.len() - 1) / 2];
    if min == max {
        format!("{} x {min}", human::count(gets.len() as u64, "blob"))
    } else {
        format!(
            "{}, {min} to {max} (median {median})",
            human::count(gets.len() as u64, "blob")
        )
    }
}

/// Failed pods of a series by kind, or `None` when every pod became ready.
pub fn failures(s: &SeriesResult) -> Option<Table> {
    let failures = s.data.failures();
    if failures.is_empty() {
        return None;
    }
    let mut t = Table::new(&[("kind", Align::Left), ("pods", Align::Right)]);
    for (kind, n) in failures {
        t.row([kind.name().into(), n.to_string().into()]);
    }
    Some(t)
}

fn pods_line(sc: &Scenario) -> String {
    let shape = match &sc.arrival {
        Arrival::Burst | Arrival::Ramp { .. } => format!(
            "{} x {} = {} per repetition",
            human::count(sc.nodes, "node"),
            human::count(sc.pods_per_node, "pod"),
            sc.total_pods()
        ),
        Arrival::Waves { .. } => format!(
            "{} on {} per repetition",
            human::count(sc.total_pods(), "pod"),
            human::count(sc.total_nodes(), "node")
        ),
    };
    format!(
        "{shape}, {}, {}, seed {}, {}",
        sc.arrival,
        human::count(sc.repetitions, "repetition"),
        sc.seed,
        sc.platform
    )
}

fn variants_line(r: &RunResult) -> String {
    r.scenario
        .variants
        .iter()
        .map(|v| {
            let size = r
                .images
                .get(&v.name)
                .filter(|i| i.compressed_bytes > 0)
                .map_or_else(String::new, |i| {
                    format!(", {} to pull", human::bytes(i.compressed_bytes))
                });
            let sidecars = if v.sidecars.is_empty() {
                String::new()
            } else {
                let per_pod = r
                    .pod_image_bytes(&v.name)
                    .map_or_else(String::new, |b| format!(", {} per pod", human::bytes(b)));
                format!(", with sidecars {}{per_pod}", v.sidecars.join(", "))
            };
            match &v.source {
                ImageSource::Synthetic(spec) => {
                    let layers = spec.layers.len();
                    let compression = spec.compression.name();
                    let s = if layers == 1 { "" } else { "s" };
                    format!(
                        "{} ({layers} {compression} layer{s}{size}{sidecars})",
                        v.name
                    )
                }
                ImageSource::Registry(src) => {
                    format!("{} (registry {}{size}{sidecars})", v.name, src.image)
                }
                ImageSource::Layout(src) => {
                    format!(
                        "{} (OCI layout {}{size}{sidecars})",
                        v.name,
                        src.path.display()
                    )
                }
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn targets_line(sc: &Scenario) -> String {
    sc.targets
        .iter()
        .map(|t| {
            let what = match &t.kind {
                TargetKind::Direct => "straight from the registry".to_owned(),
                TargetKind::CacheDaemon {
                    placement: Placement::Shared,
                } => "one cache-daemon shared by all nodes".to_owned(),
                TargetKind::CacheDaemon {
                    placement: Placement::PerNode,
                } => "a cache-daemon per node".to_owned(),
                TargetKind::CacheDaemon {
                    placement: Placement::Cluster,
                } => "a cache-daemon per node in cluster mode".to_owned(),
                TargetKind::Mirror { url } => format!("mirror at {url}"),
                TargetKind::DistributionProxy => {
                    "Docker Distribution pull-through proxy".to_owned()
                }
                TargetKind::Nginx {
                    placement: Placement::PerNode,
                } => "an nginx caching proxy per node".to_owned(),
                TargetKind::Nginx { .. } => "nginx caching proxy".to_owned(),
            };
            format!("{} ({what})", t.name)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn registry_line(sc: &Scenario) -> String {
    let reg = &sc.registry;
    let egress = reg
        .egress
        .map_or_else(|| "unlimited".to_owned(), |b| b.to_string());
    let link = reg
        .node_link
        .map_or_else(|| "unlimited".to_owned(), |b| b.to_string());
    let throttle = match &reg.throttle {
        Some(t) => format!(
            "throttled above {} req/s (burst {})",
            t.requests_per_second, t.burst
        ),
        None => "no throttling".to_owned(),
    };
    let kernel = reg.netns_rate.map_or_else(String::new, |r| {
        format!(", behind a {r} tc tbf-shaped link in its own network namespace")
    });
    format!(
        "egress {egress}, node link {link}, latency {}, {throttle}{kernel}",
        Span(reg.latency.0)
    )
}

fn runtime_line(sc: &Scenario) -> String {
    let rt = &sc.runtime;
    let pulls = match rt.parallel_image_pulls_limit() {
        Some(1) => "serialized image pulls".to_owned(),
        Some(n) => format!("{n} parallel image pulls"),
        None => "unlimited parallel image pulls".to_owned(),
    };
    format!(
        "{} concurrent layer downloads, {pulls}, unpack {}, pulled by {}",
        rt.max_concurrent_downloads,
        if rt.unpack { "on" } else { "off" },
        match rt.puller {
            PullerKind::Harness => "the harness's client",
            PullerKind::Skopeo => "skopeo copy",
            PullerKind::Ctr => "ctr images pull",
        }
    )
}

fn readiness_line(sc: &Scenario) -> String {
    let rd = &sc.readiness;
    format!(
        "reads {} of files, init {}, probe every {} from {}",
        human::percent(rd.read_fraction),
        Span(rd.init),
        Span(rd.probe_period),
        Span(rd.probe_initial_delay)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeline_steps_are_round() {
        let cases = [
            (1, 1_000),
            (1_001, 2_000),
            (2_500, 5_000),
            (120_000, 200_000),
            (5_000_000, 5_000_000),
        ];
        for (us, want) in cases {
            assert_eq!(nice_step(us), want, "{us}");
        }
    }

    #[test]
    fn blob_gets_summarised() {
        assert_eq!(blob_gets_line(vec![]), "-");
        assert_eq!(blob_gets_line(vec![4, 4, 4]), "3 blobs x 4");
        assert_eq!(
            blob_gets_line(vec![1, 8, 4, 4]),
            "4 blobs, 1 to 8 (median 4)"
        );
    }

    #[test]
    fn requests_show_total_then_non_zero_kinds() {
        let m = |pairs: &[(&str, u64)]| {
            pairs
                .iter()
                .map(|(k, n)| ((*k).to_owned(), *n))
                .collect::<std::collections::BTreeMap<_, _>>()
        };
        assert_eq!(
            requests_line(&m(&[
                ("total", 28),
                ("blob_get", 20),
                ("manifest_get", 8),
                ("ping", 0)
            ])),
            "28 (blob_get 20, manifest_get 8)"
        );
        assert_eq!(
            requests_line(&m(&[("blob", 8), ("manifest", 8)])),
            "16 (blob 8, manifest 8)"
        );
        assert_eq!(requests_line(&m(&[])), "0");
    }

    #[test]
    fn header_names_the_shaped_link_and_the_puller() {
        let base = "nodes = 2\npods_per_node = 1\n[[variants]]\nname = \"app\"\n[[variants.synthetic.layers]]\nsize = \"1MiB\"\nfiles = 4\n[[targets]]\nkind = \"direct\"\n";
        let plain = Scenario::parse(base, "test", &[]).unwrap();
        assert!(!registry_line(&plain).contains("tbf"));
        assert!(runtime_line(&plain).ends_with("pulled by the harness's client"));
        let shaped = Scenario::parse(
            &format!(
                "{base}[registry]\nnetns_rate = \"200Mbit\"\n[runtime]\npuller = \"skopeo\"\n"
            ),
            "test",
            &[],
        )
        .unwrap();
        assert!(
            registry_line(&shaped)
                .ends_with("behind a 200Mbit tc tbf-shaped link in its own network namespace"),
            "{}",
            registry_line(&shaped)
        );
        assert!(runtime_line(&shaped).ends_with("pulled by skopeo copy"));
    }
}
