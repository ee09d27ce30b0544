//! Human-readable views of a [`RunResult`]: `report.md` ([`markdown`]) and the compact table
//! the CLI prints after a run ([`summary_table`]). Durations are shown in ms or s, sizes in
//! decimal units.
//!
//! This module only renders what `result.rs` holds; it computes nothing the result does not
//! already define (percentiles come from the histograms, SLO outcomes from
//! [`RunResult::evaluate_slo`]). HTML will be a sibling of [`markdown`].

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::recorder::{micros, LayerPhase, Phase, Summary};
use crate::result::{RunResult, SeriesResult, SloCheck};
use crate::scenario::{Arrival, Scenario};
use crate::units::{ByteSize, Span};

/// File name of the Markdown report inside a run directory.
pub const MARKDOWN_FILE_NAME: &str = "report.md";

/// Rows of the "ready % over time" table, at most.
const TIMELINE_ROWS: u64 = 10;

/// Why a report could not be written.
#[derive(Debug, thiserror::Error)]
#[error("write report {path}")]
pub struct ReportError {
    /// The file.
    pub path: PathBuf,
    /// The I/O error.
    #[source]
    pub source: std::io::Error,
}

/// Writes `report.md` into `dir` and returns its path.
///
/// # Errors
/// [`ReportError`] if the file cannot be written.
pub fn write_markdown(result: &RunResult, dir: &Path) -> Result<PathBuf, ReportError> {
    let path = dir.join(MARKDOWN_FILE_NAME);
    std::fs::write(&path, markdown(result)).map_err(|source| ReportError {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

/// The Markdown report: header (scenario, date, machine, warnings), a summary table, SLO
/// outcomes, then per (variant, target) latency percentiles per phase, pods ready over time,
/// registry egress and requests, and failures by kind. Deterministic for a given result.
pub fn markdown(r: &RunResult) -> String {
    let mut out = String::new();
    header(&mut out, r);
    image_sources_section(&mut out, r);
    summary_section(&mut out, r);
    slo_section(&mut out, r);
    for s in &r.series {
        series_section(&mut out, r, s);
    }
    out
}

/// One line per (variant, target): pods ready, end-to-end p50 and p95, pull p95, failures;
/// columns aligned for a terminal.
pub fn summary_table(r: &RunResult) -> String {
    let mut rows = vec![[
        "variant".to_owned(),
        "target".to_owned(),
        "ready".to_owned(),
        "e2e p50".to_owned(),
        "e2e p95".to_owned(),
        "pull p95".to_owned(),
        "failures".to_owned(),
    ]];
    for s in &r.series {
        let e2e = Summary::of(&s.data.merged(Phase::EndToEnd));
        let pull = Summary::of(&s.data.merged(Phase::Pull));
        rows.push([
            s.variant.clone(),
            s.target.clone(),
            ready_fraction(s),
            human_us_if(e2e.count, e2e.p50_us),
            human_us_if(e2e.count, e2e.p95_us),
            human_us_if(pull.count, pull.p95_us),
            s.data.failed_pods().to_string(),
        ]);
    }
    let mut widths = [0; 7];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            if i < 2 {
                let _ = write!(line, "{cell:<w$}");
            } else {
                let _ = write!(line, "{cell:>w$}");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// A duration for people: `0.25 ms`, `4.2 ms`, `123 ms`, `1.23 s`, `12.3 s`, `123 s`.
pub fn human_duration(d: Duration) -> String {
    human_us(micros(d))
}

fn human_us(us: u64) -> String {
    let ms = us as f64 / 1e3;
    let s = us as f64 / 1e6;
    match us {
        0 => "0 ms".to_owned(),
        1..=999 => format!("{ms:.2} ms"),
        1_000..=9_999 => format!("{ms:.1} ms"),
        10_000..=999_999 => format!("{ms:.0} ms"),
        1_000_000..=9_999_999 => format!("{s:.2} s"),
        10_000_000..=99_999_999 => format!("{s:.1} s"),
        _ => format!("{s:.0} s"),
    }
}

fn human_us_if(count: u64, us: u64) -> String {
    if count == 0 {
        "-".to_owned()
    } else {
        human_us(us)
    }
}

fn percent(fraction: f64) -> String {
    format!("{:.0} %", fraction * 100.0)
}

fn ready_fraction(s: &SeriesResult) -> String {
    let (mut ready, mut scheduled) = (0, 0);
    for (_, r) in s.data.repetitions() {
        ready += r.ready_pods();
        scheduled += r.timeline(s.pods_per_repetition).pods();
    }
    format!("{ready}/{scheduled}")
}

fn header(out: &mut String, r: &RunResult) {
    let sc = &r.scenario;
    let _ = writeln!(out, "# {}: burst pull report\n", sc.name);
    if !sc.description.is_empty() {
        let _ = writeln!(out, "{}\n", sc.description);
    }
    let m = &r.machine;
    let mut machine = vec![format!("{} cores", m.cores)];
    machine.extend(m.cpu_model.clone());
    machine.extend(
        m.memory_bytes
            .map(|b| format!("{} RAM", ByteSize(b).human())),
    );
    machine.push(format!("{} {}", m.os, m.arch));
    machine.extend(m.kernel.as_ref().map(|k| format!("kernel {k}")));
    let revision = match (&m.git_revision, m.git_dirty) {
        (Some(rev), Some(true)) => format!("`{rev}` with uncommitted changes"),
        (Some(rev), _) => format!("`{rev}`"),
        (None, _) => "unknown".to_owned(),
    };
    let rows = [
        (
            "started",
            humantime::format_rfc3339_seconds(r.started_at).to_string(),
        ),
        ("duration", human_duration(r.duration)),
        ("machine", machine.join(", ")),
        ("revision", revision),
        ("pods", pods_line(sc)),
        ("registry", registry_line(sc)),
        ("runtime", runtime_line(sc)),
        ("readiness", readiness_line(sc)),
    ];
    out.push_str("| | |\n|---|---|\n");
    for (k, v) in rows {
        let _ = writeln!(out, "| {k} | {v} |");
    }
    out.push('\n');
    if !r.warnings.is_empty() {
        out.push_str("**Warnings**\n\n");
        for w in &r.warnings {
            let _ = writeln!(out, "- {w}");
        }
        out.push('\n');
    }
}

fn pods_line(sc: &Scenario) -> String {
    let shape = match &sc.arrival {
        Arrival::Burst | Arrival::Ramp { .. } => format!(
            "{} nodes x {} pods = {} per repetition",
            sc.nodes,
            sc.pods_per_node,
            sc.total_pods()
        ),
        Arrival::Waves { .. } => format!(
            "{} pods on {} nodes per repetition",
            sc.total_pods(),
            sc.total_nodes()
        ),
    };
    format!(
        "{shape}, {}, {} repetitions, seed {}, {}",
        sc.arrival, sc.repetitions, sc.seed, sc.platform
    )
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
    format!(
        "egress {egress}, node link {link}, latency {}, {throttle}",
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
        "{} concurrent layer downloads, {pulls}, unpack {}",
        rt.max_concurrent_downloads,
        if rt.unpack { "on" } else { "off" }
    )
}

fn readiness_line(sc: &Scenario) -> String {
    let rd = &sc.readiness;
    format!(
        "reads {} of files, init {}, probe every {} from {}",
        percent(rd.read_fraction),
        Span(rd.init),
        Span(rd.probe_period),
        Span(rd.probe_initial_delay)
    )
}

/// Where each variant's image came from and the digest it resolved to, from
/// `images[variant].details.source` (written by `variant_image.rs`). Nothing when no image has a
/// recorded source (results written before sources were recorded).
fn image_sources_section(out: &mut String, r: &RunResult) {
    let sourced: Vec<_> = r
        .images
        .iter()
        .filter(|(_, f)| f.details.get("source").is_some_and(|s| s.is_object()))
        .collect();
    if sourced.is_empty() {
        return;
    }
    out.push_str("## Images\n\n");
    out.push_str("| variant | source | digest | platform manifest | served by | layer bytes |\n");
    out.push_str("|---|---|---|---|---|--:|\n");
    for (variant, facts) in sourced {
        let s = &facts.details["source"];
        let text = |key: &str| s.get(key).and_then(|v| v.as_str()).unwrap_or("");
        let code = |key: &str| match text(key) {
            "" => "-".to_owned(),
            t => format!("`{t}`"),
        };
        let (source, served) = match text("kind") {
            "registry" if s["mirrored"] == true => (
                format!("registry `{}`", text("reference")),
                "embedded registry (mirrored once)",
            ),
            "registry" => (
                format!("registry `{}`", text("reference")),
                "the real registry (no registry-side accounting)",
            ),
            "layout" => (
                match text("tag") {
                    "" => format!("OCI layout `{}`", text("path")),
                    tag => format!("OCI layout `{}` tag `{tag}`", text("path")),
                },
                "embedded registry",
            ),
            kind => (kind.to_owned(), "embedded registry"),
        };
        let _ = writeln!(
            out,
            "| {variant} | {source} | {} | {} | {served} | {} |",
            code("digest"),
            code("platform_digest"),
            ByteSize(facts.compressed_bytes).human()
        );
    }
    out.push('\n');
}

fn summary_section(out: &mut String, r: &RunResult) {
    out.push_str("## Summary\n\n");
    out.push_str(
        "| variant | target | ready | end-to-end p50 | end-to-end p95 | pull p95 | failures |\n",
    );
    out.push_str("|---|---|--:|--:|--:|--:|--:|\n");
    for s in &r.series {
        let e2e = Summary::of(&s.data.merged(Phase::EndToEnd));
        let pull = Summary::of(&s.data.merged(Phase::Pull));
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            s.variant,
            s.target,
            ready_fraction(s),
            human_us_if(e2e.count, e2e.p50_us),
            human_us_if(e2e.count, e2e.p95_us),
            human_us_if(pull.count, pull.p95_us),
            s.data.failed_pods()
        );
    }
    out.push('\n');
}

fn slo_section(out: &mut String, r: &RunResult) {
    out.push_str("## SLO\n\n");
    if r.slo.is_empty() {
        out.push_str("No SLO checked.\n\n");
        return;
    }
    let passed = r.slo.iter().filter(|o| o.pass).count();
    let _ = writeln!(out, "{passed} of {} passed.\n", r.slo.len());
    out.push_str("| objective | variant | target | limit | observed | result |\n");
    out.push_str("|---|---|---|--:|--:|---|\n");
    for o in &r.slo {
        let not_reached = "not reached (failures)".to_owned();
        let (name, limit, observed) = match &o.check {
            SloCheck::P95Ready { limit, observed } => (
                "p95 ready",
                human_duration(*limit),
                observed.map_or(not_reached, human_duration),
            ),
            SloCheck::P99Pull { limit, observed } => (
                "p99 pull",
                human_duration(*limit),
                observed.map_or(not_reached, human_duration),
            ),
            SloCheck::MaxRegistryEgress {
                limit_bytes,
                observed_bytes,
            } => (
                "max registry egress",
                ByteSize(*limit_bytes).human(),
                ByteSize(*observed_bytes).human(),
            ),
        };
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {limit} | {observed} | {} |",
            o.variant,
            o.target,
            if o.pass { "pass" } else { "**FAIL**" }
        );
    }
    out.push('\n');
}

fn series_section(out: &mut String, r: &RunResult, s: &SeriesResult) {
    let _ = writeln!(out, "## {} / {}\n", s.variant, s.target);
    if s.data.repetitions().next().is_none() {
        out.push_str("Nothing recorded.\n\n");
        return;
    }
    latency_table(out, s);
    repetition_table(out, s);
    ready_section(out, s);
    registry_section(out, r, s);
    failures_section(out, s);
}

fn latency_table(out: &mut String, s: &SeriesResult) {
    out.push_str("### Latency\n\n");
    out.push_str("| phase | n | p50 | p90 | p95 | p99 | max |\n");
    out.push_str("|---|--:|--:|--:|--:|--:|--:|\n");
    let rows = Phase::ALL
        .iter()
        .map(|p| (p.name().to_owned(), s.data.merged(*p)))
        .chain(
            LayerPhase::ALL
                .iter()
                .map(|p| (format!("layer {}", p.name()), s.data.merged_layer(*p))),
        );
    for (name, h) in rows {
        let sum = Summary::of(&h);
        let cell = |us| human_us_if(sum.count, us);
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} | {} | {} | {} |",
            sum.count,
            cell(sum.p50_us),
            cell(sum.p90_us),
            cell(sum.p95_us),
            cell(sum.p99_us),
            cell(sum.max_us)
        );
    }
    out.push('\n');
}

fn repetition_table(out: &mut String, s: &SeriesResult) {
    out.push_str("### Per repetition\n\n");
    out.push_str("| repetition | ready | failed | end-to-end p50 | end-to-end p95 | end-to-end p99 | pull p95 |\n");
    out.push_str("|--:|--:|--:|--:|--:|--:|--:|\n");
    for (rep, data) in s.data.repetitions() {
        let e2e = Summary::of(data.phase(Phase::EndToEnd));
        let pull = Summary::of(data.phase(Phase::Pull));
        let _ = writeln!(
            out,
            "| {rep} | {} | {} | {} | {} | {} | {} |",
            data.ready_pods(),
            data.failed_pods(),
            human_us_if(e2e.count, e2e.p50_us),
            human_us_if(e2e.count, e2e.p95_us),
            human_us_if(e2e.count, e2e.p99_us),
            human_us_if(pull.count, pull.p95_us)
        );
    }
    out.push('\n');
}

fn ready_section(out: &mut String, s: &SeriesResult) {
    out.push_str("### Pods ready over time\n\n");
    out.push_str("| repetition | 50 % ready | 95 % ready | 100 % ready |\n");
    out.push_str("|--:|--:|--:|--:|\n");
    let never = || "never".to_owned();
    for (rep, data) in s.data.repetitions() {
        let t = data.timeline(s.pods_per_repetition);
        let [p50, p95, p100] =
            crate::result::READY_FRACTIONS.map(|f| t.time_to(f).map_or_else(never, human_duration));
        let _ = writeln!(out, "| {rep} | {p50} | {p95} | {p100} |");
    }
    out.push('\n');

    let last_us = s
        .data
        .repetitions()
        .filter_map(|(_, d)| d.ready_offsets_us().last().copied())
        .max()
        .unwrap_or(0);
    if last_us == 0 {
        return;
    }
    let step_us = nice_step(last_us.div_ceil(TIMELINE_ROWS));
    let reps: Vec<_> = s.data.repetitions().collect();
    out.push_str("| since epoch |");
    for (rep, _) in &reps {
        let _ = write!(out, " rep {rep} |");
    }
    out.push_str("\n|--:|");
    out.push_str(&"--:|".repeat(reps.len()));
    out.push('\n');
    let mut at = step_us;
    loop {
        let _ = write!(out, "| {} |", human_us(at));
        for (_, d) in &reps {
            let f = d
                .timeline(s.pods_per_repetition)
                .fraction_at(Duration::from_micros(at));
            let _ = write!(out, " {} |", percent(f));
        }
        out.push('\n');
        if at >= last_us {
            break;
        }
        at += step_us;
    }
    out.push('\n');
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

fn registry_section(out: &mut String, r: &RunResult, s: &SeriesResult) {
    out.push_str("### Registry\n\n");
    if s.registry.is_empty() {
        out.push_str("No registry accounting recorded.\n\n");
        return;
    }
    let image_bytes = r
        .images
        .get(&s.variant)
        .map(|i| i.compressed_bytes)
        .filter(|b| *b > 0);
    out.push_str("| repetition | egress | egress / image size | requests | blob GETs per blob |\n");
    out.push_str("|--:|--:|--:|---|---|\n");
    for (rep, t) in &s.registry {
        let ratio = image_bytes.map_or_else(
            || "-".to_owned(),
            |b| format!("{:.2}", t.bytes_out as f64 / b as f64),
        );
        let requests = if t.requests.is_empty() {
            "-".to_owned()
        } else {
            t.requests
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let gets = blob_gets_line(t.blob_gets.values().copied().collect());
        let _ = writeln!(
            out,
            "| {rep} | {} | {ratio} | {requests} | {gets} |",
            ByteSize(t.bytes_out).human()
        );
    }
    out.push('\n');
}

fn blob_gets_line(mut gets: Vec<u64>) -> String {
    if gets.is_empty() {
        return "-".to_owned();
    }
    gets.sort_unstable();
    let (min, max) = (gets[0], gets[gets.len() - 1]);
    let median = gets[(gets.len() - 1) / 2];
    if min == max {
        format!("{} blobs x {min}", gets.len())
    } else {
        format!("{} blobs, {min} to {max} (median {median})", gets.len())
    }
}

fn failures_section(out: &mut String, s: &SeriesResult) {
    out.push_str("### Failures\n\n");
    let failures = s.data.failures();
    if failures.is_empty() {
        out.push_str("None.\n\n");
        return;
    }
    out.push_str("| kind | pods |\n|---|--:|\n");
    for (kind, n) in failures {
        let _ = writeln!(out, "| {kind} | {n} |");
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        let cases = [
            (0, "0 ms"),
            (250, "0.25 ms"),
            (4_200, "4.2 ms"),
            (123_400, "123 ms"),
            (1_234_000, "1.23 s"),
            (12_340_000, "12.3 s"),
            (123_400_000, "123 s"),
        ];
        for (us, want) in cases {
            assert_eq!(human_us(us), want);
        }
    }

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
}
