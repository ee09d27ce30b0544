//! A [`Comparison`] as a [`Document`] (rendered as `compare.md` and `compare.html`, the latter
//! with one interval plot per pair), plus a compact terminal table. Every number carries its
//! unit; every interval says its confidence level.
//!
//! This module only lays out and words the comparison; `compare.rs` computes the differences
//! and verdicts.

use std::fmt::Write as _;

use super::document::{Block, Document, Figure, Inline, ParagraphKind};
use super::human;
use super::svg::{Axis, IntervalChart, IntervalRow};
use super::table::{Align, Cell, Emphasis, Table};
use crate::compare::{Comparison, Difference, GateOutcome, PairComparison, Unit, Verdict};

/// File name of the Markdown comparison in its output directory.
pub const MARKDOWN_FILE_NAME: &str = "compare.md";
/// File name of the HTML comparison in its output directory.
pub const HTML_FILE_NAME: &str = "compare.html";

fn value(unit: Unit, v: f64) -> String {
    match unit {
        Unit::Micros => human::us(v.max(0.0).round() as u64),
        Unit::Bytes => human::bytes(v.max(0.0).round() as u64),
    }
}

fn signed(unit: Unit, v: f64) -> String {
    match unit {
        Unit::Micros => human::signed_us(v),
        Unit::Bytes => human::signed_bytes(v),
    }
}

fn difference_cell(d: &Difference) -> String {
    let estimate = signed(d.metric.unit(), d.estimate);
    match d.relative {
        Some(r) => format!("{estimate} ({})", human::signed_percent(r)),
        None => estimate,
    }
}

/// The difference, or `-` without data.
fn difference_text(d: &Difference) -> String {
    if d.verdict == Verdict::NoData {
        "-".to_owned()
    } else {
        difference_cell(d)
    }
}

fn interval_cell(d: &Difference) -> String {
    let unit = d.metric.unit();
    let Some(i) = &d.interval else {
        return "-".to_owned();
    };
    let abs = format!("{} to {}", signed(unit, i.low), signed(unit, i.high));
    match i.relative {
        Some((lo, hi)) => {
            let (lo, hi) = (human::signed_percent(lo), human::signed_percent(hi));
            format!("{abs} ({lo} to {hi})")
        }
        None => abs,
    }
}

/// The row's verdict; `host_bound` marks a row of a pair with host-bound repetitions.
fn verdict_cell(d: &Difference, host_bound: bool) -> Cell {
    let (higher, lower) = match d.metric.unit() {
        Unit::Micros => ("slower", "faster"),
        Unit::Bytes => ("more", "less"),
    };
    let (text, emphasis) = match d.verdict {
        Verdict::Higher => (higher, Emphasis::Strong),
        Verdict::Lower => (lower, Emphasis::Strong),
        Verdict::NotSignificant => ("not significant", Emphasis::None),
        Verdict::TooFewRepetitions => ("too few repetitions", Emphasis::None),
        Verdict::NoData => ("no data", Emphasis::None),
    };
    let mark = if host_bound { " (host-bound)" } else { "" };
    Cell::with(format!("{text}{mark}"), emphasis)
}

fn confidence(c: &Comparison) -> String {
    format!("{:.0} %", c.settings.confidence * 100.0)
}

fn method(c: &Comparison) -> String {
    format!(
        "Each repetition's quantile (or time to ready, or egress) is one observation; baseline and candidate are the means over repetitions, the difference is candidate minus baseline. So a p50 here is the mean of each repetition's own p50, not the p50 over every pod of every repetition pooled that report.md shows: the two differ when repetitions differ, and the pooled one gives no interval. Intervals: percentile bootstrap, {} resamples of both sides' repetitions, {} confidence, seed {}. Significant when the interval excludes 0.",
        c.settings.resamples,
        confidence(c),
        c.settings.seed
    )
}

fn pair_table(c: &Comparison, p: &PairComparison) -> Table {
    let ci = format!("{} interval", confidence(c));
    let mut t = Table::new(&[
        ("metric", Align::Left),
        ("n", Align::Right),
        ("baseline", Align::Right),
        ("candidate", Align::Right),
        ("difference", Align::Right),
        (ci.as_str(), Align::Right),
        ("verdict", Align::Left),
    ]);
    for d in &p.differences {
        let [base, cand] = [d.baseline_mean(), d.candidate_mean()].map(|m| match d.verdict {
            Verdict::NoData => "-".to_owned(),
            _ => value(d.metric.unit(), m),
        });
        t.row([
            d.metric.name().into(),
            format!("{}/{}", d.baseline.len(), d.candidate.len()).into(),
            base.into(),
            cand.into(),
            difference_text(d).into(),
            interval_cell(d).into(),
            verdict_cell(d, p.host_bound()),
        ]);
    }
    t
}

fn gate_table(c: &Comparison) -> Table {
    let ci = format!("{} interval", confidence(c));
    let mut t = Table::new(&[
        ("gate", Align::Left),
        ("pair", Align::Left),
        ("difference", Align::Right),
        (ci.as_str(), Align::Right),
        ("result", Align::Left),
    ]);
    for g in &c.gates {
        t.row([
            Cell::with(format!("--fail-if-slower {}", g.gate), Emphasis::Code),
            g.pair.as_str().into(),
            difference_cell(&g.difference).into(),
            interval_cell(&g.difference).into(),
            gate_result(g),
        ]);
    }
    t
}

fn gate_result(g: &GateOutcome) -> Cell {
    if !g.judged {
        Cell::with(
            "not judged: host-bound (--judge-host-bound)",
            Emphasis::Fail,
        )
    } else if g.crossed {
        Cell::with("FAIL: regression", Emphasis::Fail)
    } else {
        Cell::with("pass", Emphasis::Pass)
    }
}

/// How many gates passed, crossed or went unjudged, and what crossing one means.
fn gate_line(c: &Comparison) -> String {
    let all = c.gates.len();
    let crossed = c.gates.iter().filter(|g| g.crossed).count();
    let unjudged = c.unjudged().count();
    let of_all = human::count(all as u64, "gate");
    let mut line = if crossed == 0 {
        format!("{} of {of_all} passed.", all - unjudged)
    } else {
        format!(
            "{crossed} of {of_all} crossed: the candidate is significantly slower than the limit allows."
        )
    };
    if unjudged > 0 {
        line.push_str(&format!(
            " {unjudged} not judged: their series are host-bound (see the notes); --judge-host-bound judges them anyway."
        ));
    }
    line + " A gate fails when the candidate is significantly slower (the interval lies above 0) and the estimated difference exceeds the limit."
}

/// The comparison as Markdown (`compare.md`).
pub fn markdown(c: &Comparison) -> String {
    super::markdown::render(&document(c))
}

/// The comparison as a self-contained HTML page (`compare.html`), with an interval plot per
/// pair.
pub fn html(c: &Comparison) -> String {
    super::html::render(&document(c))
}

/// The whole comparison. Deterministic for given inputs and seed.
pub fn document(c: &Comparison) -> Document {
    let mut header = vec![Block::Facts(vec![
        ("baseline", c.sides[0].as_str().into()),
        ("candidate", c.sides[1].as_str().into()),
        ("method", method(c).into()),
    ])];
    if !c.notes.is_empty() {
        header.push(Block::Notices {
            title: "Notes",
            items: c.notes.clone(),
        });
    }
    let mut body = vec![Block::anchored(2, "gates", "Gates")];
    if c.gates.is_empty() {
        body.push(Block::paragraph(
            ParagraphKind::Plain,
            vec![
                Inline::Text("No gate set (".into()),
                Inline::Code("--fail-if-slower QUANTILE:PHASE:LIMIT".into()),
                Inline::Text(").".into()),
            ],
        ));
    } else {
        let ok = c.passed() && c.unjudged().next().is_none();
        body.extend([
            Block::paragraph(ParagraphKind::Verdict(ok), vec![Inline::Text(gate_line(c))]),
            Block::Table(gate_table(c)),
        ]);
    }
    for (i, p) in c.pairs.iter().enumerate() {
        body.extend([
            Block::anchored(2, format!("pair-{i}"), p.label.clone()),
            Block::text(pair_line(p)),
            Block::Figures(forest(c, p, i).into_iter().collect()),
            Block::Table(pair_table(c, p)),
        ]);
    }
    Document {
        title: format!("Comparison: {}", c.title),
        header,
        body,
        footer: Some("Rendered by bench-harness compare from stored result.json files; per-repetition quantiles come from the stored HdrHistogram encodings.".into()),
    }
}

fn pair_line(p: &PairComparison) -> String {
    format!(
        "Repetitions: {} baseline, {} candidate. Failed pods: {} baseline, {} candidate. n = observations per side (baseline/candidate).",
        p.repetitions[0], p.repetitions[1], p.failed[0], p.failed[1]
    )
}

/// Relative differences with their intervals, one row per metric that has both.
fn forest(c: &Comparison, p: &PairComparison, index: usize) -> Option<Figure> {
    let rows: Vec<IntervalRow> = p
        .differences
        .iter()
        .filter_map(|d| {
            let r = d.relative?;
            let (lo, hi) = d.interval?.relative?;
            let (name, diff, interval) = (d.metric.name(), difference_cell(d), interval_cell(d));
            Some(IntervalRow {
                tooltip: format!("{name}: {diff} [{interval}]"),
                label: name,
                estimate: r * 100.0,
                low: lo * 100.0,
                high: hi * 100.0,
                significant: d.significant(),
            })
        })
        .collect();
    if rows.is_empty() {
        return None;
    }
    let low = rows.iter().map(|r| r.low).fold(0.0, f64::min);
    let high = rows.iter().map(|r| r.high).fold(0.0, f64::max);
    let title = format!("Candidate vs baseline: {}", p.label);
    Some(Figure {
        id: format!("forest-{index}"),
        title: title.clone(),
        how_to_read: format!(
            "Each row is the candidate's difference from the baseline in % of the baseline, with its {} bootstrap interval; right of 0 is slower (or more bytes). A filled dot's interval excludes 0.",
            confidence(c)
        ),
        svg: IntervalChart {
            title,
            x: Axis::around_zero("candidate \u{2212} baseline (% of baseline)", low, high),
            rows,
        }
        .render(),
    })
}

/// For the terminal: one line per significant difference, then notes and gates, in the
/// words of the comparison's tables.
pub fn summary(c: &Comparison) -> String {
    let mut t = Table::new(&[
        ("pair", Align::Left),
        ("metric", Align::Left),
        ("difference", Align::Right),
        (format!("{} interval", confidence(c)).as_str(), Align::Right),
        ("verdict", Align::Right),
    ]);
    let mut quiet = 0;
    for p in &c.pairs {
        let label = if p.host_bound() {
            format!("{} [host-bound]", p.label)
        } else {
            p.label.clone()
        };
        for d in &p.differences {
            if !d.significant() {
                quiet += 1;
                continue;
            }
            t.row([
                label.as_str().into(),
                d.metric.name().into(),
                difference_text(d).into(),
                interval_cell(d).into(),
                verdict_cell(d, p.host_bound()),
            ]);
        }
    }
    let mut out = if t.is_empty() {
        "No significant difference.\n".to_owned()
    } else {
        t.plain()
    };
    if quiet > 0 {
        let _ = writeln!(
            out,
            "({quiet} more rows without a significant difference or without data: see {MARKDOWN_FILE_NAME})"
        );
    }
    for n in &c.notes {
        let _ = writeln!(out, "note: {n}");
    }
    for g in &c.gates {
        let result = gate_result(g).text;
        let _ = writeln!(out, "gate {} on {}: {result}", g.gate, g.pair);
    }
    out
}
