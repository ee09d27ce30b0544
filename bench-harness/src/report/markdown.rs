//! `report.md`: the run as Markdown (facts, warnings, summary, SLO, capacity, then per
//! (variant, target) details), and the compact summary the CLI prints after a run.
//!
//! Only layout lives here; the tables come from `section.rs`, so the HTML report shows the
//! same numbers. Charts are in the HTML report only.

use std::fmt::Write as _;

use super::capacity::Capacity;
use super::section;
use super::side_by_side::SideBySide;
use super::table::Align;
use super::HTML_FILE_NAME;
use crate::result::RunResult;

/// The Markdown report. Deterministic for a given result.
pub fn render(r: &RunResult) -> String {
    let mut out = String::new();
    let sc = &r.scenario;
    let _ = writeln!(out, "# {}: burst pull report\n", sc.name);
    if let Some(note) = section::modelled(r) {
        let _ = writeln!(out, "> **Modelled**: {note}\n");
    }
    if !sc.description.is_empty() {
        let _ = writeln!(out, "{}\n", sc.description);
    }
    let _ = writeln!(
        out,
        "Charts (pods ready over time, latency CDFs, registry traffic, layer phases): [{HTML_FILE_NAME}]({HTML_FILE_NAME}).\n"
    );
    out.push_str("| | |\n|---|---|\n");
    for (k, v) in section::facts(r) {
        let text = match v.emphasis {
            super::table::Emphasis::Code => format!("`{}`", v.text),
            _ => v.text,
        };
        let _ = writeln!(out, "| {k} | {text} |");
    }
    out.push('\n');
    let warnings = section::warnings(r);
    if !warnings.is_empty() {
        out.push_str("**Warnings**\n\n");
        for w in &warnings {
            let _ = writeln!(out, "- {w}");
        }
        out.push('\n');
    }

    if let Some(t) = section::image_sources(r) {
        out.push_str("## Images\n\n");
        out.push_str(&t.markdown());
    }

    out.push_str("## Summary\n\n");
    let _ = writeln!(out, "{}\n", section::summary_how());
    out.push_str(&section::summary(r).markdown());

    if let Some(sbs) = SideBySide::of(r) {
        let waves = SideBySide::has_waves(r);
        out.push_str("## Targets side by side\n\n");
        for how in section::side_by_side_how() {
            let _ = writeln!(out, "{how}\n");
        }
        for v in &sbs.variants {
            let _ = writeln!(out, "### {}\n", v.variant);
            out.push_str("Pulls:\n\n");
            out.push_str(&section::side_by_side(v, waves).markdown());
            out.push_str("Registry, per burst:\n\n");
            out.push_str(&section::side_by_side_upstream(v).markdown());
            if let Some(t) = section::side_by_side_ratios(v, waves) {
                let _ = writeln!(
                    out,
                    "Against {}:\n",
                    v.baseline.as_deref().unwrap_or("cache-daemon")
                );
                out.push_str(&t.markdown());
            }
        }
    }

    out.push_str("## SLO\n\n");
    match section::slo(r) {
        None => out.push_str("No SLO checked.\n\n"),
        Some(t) => {
            let _ = writeln!(out, "{}\n", section::slo_line(r));
            out.push_str(&t.markdown());
        }
    }

    capacity(&mut out, &Capacity::of(r));
    for n in super::nodes::sections(r) {
        let _ = writeln!(out, "## {}\n\n{}\n", n.title, n.caption);
        out.push_str(&n.table.markdown());
    }

    for s in &r.series {
        let _ = writeln!(out, "## {} / {}\n", s.variant, s.target);
        if s.data.repetitions().next().is_none() {
            out.push_str("Nothing recorded.\n\n");
            continue;
        }
        out.push_str("### Latency\n\n");
        out.push_str(&section::latency(s).markdown());
        out.push_str("### Per repetition\n\n");
        out.push_str(&section::repetitions(s).markdown());
        out.push_str("### Pods ready over time\n\n");
        out.push_str(&section::ready_times(s).markdown());
        if let Some(t) = section::ready_over_time(s) {
            out.push_str(&t.markdown());
        }
        out.push_str("### Registry\n\n");
        match section::registry(r, s) {
            Some(t) => out.push_str(&t.markdown()),
            None => out.push_str("No registry accounting recorded.\n\n"),
        }
        out.push_str("### Failures\n\n");
        match section::failures(s) {
            Some(t) => out.push_str(&t.markdown()),
            None => out.push_str("None.\n\n"),
        }
    }
    out
}

fn capacity(out: &mut String, c: &Capacity) {
    let [ready_how, egress_how, savings_how] = section::capacity_how(c);
    out.push_str("## Capacity\n\n");
    out.push_str("### Time to ready\n\n");
    let _ = writeln!(out, "{ready_how}\n");
    out.push_str(&section::time_to_ready(c).markdown());
    out.push_str("### Registry egress\n\n");
    let _ = writeln!(out, "{egress_how}\n");
    out.push_str(&section::egress(c).markdown());
    out.push_str("### Cache saving against direct pulls\n\n");
    match section::savings(c) {
        Some(t) => {
            let _ = writeln!(out, "{savings_how}\n");
            out.push_str(&t.markdown());
        }
        None => out.push_str("No variant ran both direct and through a cache or mirror.\n\n"),
    }
}

/// One line per (variant, target): pods ready, end-to-end p50 and p95, pull p95, failures;
/// the report's summary table with columns aligned for a terminal.
pub fn summary_table(r: &RunResult) -> String {
    section::summary(r).plain()
}

/// Rows as space-aligned columns: the first `left` columns left-aligned, the rest right.
pub(crate) fn aligned<const N: usize>(rows: &[[String; N]], left: usize) -> String {
    let aligns: Vec<Align> = (0..N)
        .map(|i| if i < left { Align::Left } else { Align::Right })
        .collect();
    super::table::aligned_text(rows, &aligns)
}
