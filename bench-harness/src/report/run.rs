//! The run report as a [`Document`]: facts and warnings at the top, then summary, targets side
//! by side, SLO outcomes, capacity answers, the nodes' links and processes, the charts, and per
//! (variant, target) details. `report.md` and `report.html` are this one document rendered twice.
//!
//! Only the order and the connecting sentences live here: tables come from `facts.rs`,
//! `section.rs`, `series.rs` and `nodes.rs`, charts from `chart.rs`.

use super::capacity::Capacity;
use super::chart;
use super::document::{Block, Document, Format, Inline, ParagraphKind};
use super::section;
use super::side_by_side::SideBySide;
use super::{facts, series};
use crate::result::{RunResult, SeriesResult, SCHEMA_VERSION};

/// File name of the Markdown report inside a run directory.
pub const MARKDOWN_FILE_NAME: &str = "report.md";

/// File name of the HTML report inside a run directory.
pub const HTML_FILE_NAME: &str = "report.html";

/// The whole run report. Deterministic for a given result.
pub fn document(r: &RunResult) -> Document {
    let sbs = SideBySide::of(r);
    let mut body = Vec::new();
    if let Some(t) = facts::image_sources(r) {
        body.extend([Block::anchored(2, "images", "Images"), Block::Table(t)]);
    }
    body.extend([
        Block::anchored(2, "summary", "Summary"),
        Block::text(section::summary_how()),
        Block::Table(section::summary(r)),
    ]);
    if let Some(sbs) = &sbs {
        body.extend(side_by_side(r, sbs));
    }
    body.extend(slo(r));
    body.extend(capacity(&Capacity::of(r)));
    body.extend(super::nodes::sections(r));
    body.extend(super::kubelet::sections(r));
    body.push(Block::Only(Format::Html, charts(r)));
    body.push(Block::anchored(
        2,
        "details",
        "Details per variant and target",
    ));
    for s in &r.series {
        body.extend(details(r, s));
    }
    Document {
        title: format!("{}: burst pull report", r.scenario.name),
        header: header(r, sbs.is_some()),
        body,
        footer: Some(format!("Rendered by bench-harness from result.json (schema version {SCHEMA_VERSION}); histograms merged from the stored HdrHistogram encodings.")),
    }
}

/// The modelled-run callout, the description, the facts, the warnings, and where the other
/// format is.
fn header(r: &RunResult, side_by_side: bool) -> Vec<Block> {
    let mut out = Vec::new();
    if let Some(note) = facts::modelled(r) {
        out.push(Block::paragraph(
            ParagraphKind::Callout,
            vec![
                Inline::Strong("Modelled".into()),
                Inline::Text(format!(": {note}")),
            ],
        ));
    }
    if !r.scenario.description.is_empty() {
        out.push(Block::paragraph(
            ParagraphKind::Lead,
            vec![Inline::Text(r.scenario.description.clone())],
        ));
    }
    let link = |name: &str| Inline::Link {
        text: name.to_owned(),
        href: name.to_owned(),
    };
    let charts = "Charts (pods ready over time, latency CDFs, registry traffic, layer phases): ";
    let where_charts = vec![
        Inline::Text(charts.into()),
        link(HTML_FILE_NAME),
        Inline::Text(".".into()),
    ];
    let where_charts = Block::paragraph(ParagraphKind::Plain, where_charts);
    out.push(Block::Only(Format::Markdown, vec![where_charts]));
    out.push(Block::Facts(facts::facts(r)));
    let warnings = facts::warnings(r);
    if !warnings.is_empty() {
        out.push(Block::Notices {
            title: "Warnings",
            items: warnings,
        });
    }
    let mut links = vec![("summary", "Summary")];
    if side_by_side {
        links.push(("side-by-side", "Side by side"));
    }
    links.extend([
        ("slo", "SLO"),
        ("capacity", "Capacity"),
        ("ready", "Pods ready"),
        ("latency", "Latency CDFs"),
        ("layers", "Layers"),
        ("registry", "Registry traffic"),
        ("details", "Details"),
    ]);
    out.push(Block::Contents {
        links,
        tail: vec![
            Inline::Text(" \u{b7} same numbers as Markdown: ".into()),
            link(MARKDOWN_FILE_NAME),
        ],
    });
    out
}

/// Per variant, the targets' pulls, the registry's counts and the ratios to the baseline.
fn side_by_side(r: &RunResult, sbs: &SideBySide) -> Vec<Block> {
    let waves = SideBySide::has_waves(r);
    let mut out = vec![Block::anchored(2, "side-by-side", "Targets side by side")];
    out.extend(section::side_by_side_how().map(Block::text));
    for v in &sbs.variants {
        out.extend([
            Block::heading(3, v.variant.clone()),
            Block::text("Pulls:"),
            Block::Table(section::side_by_side(v, waves)),
            Block::text("Registry, per burst:"),
            Block::Table(section::side_by_side_upstream(v)),
        ]);
        if let Some(t) = section::side_by_side_ratios(v, waves) {
            let against = v.baseline.as_deref().unwrap_or("cache-daemon");
            out.extend([Block::text(format!("Against {against}:")), Block::Table(t)]);
        }
    }
    out
}

fn slo(r: &RunResult) -> Vec<Block> {
    let mut out = vec![Block::anchored(2, "slo", "SLO")];
    match section::slo(r) {
        None => out.push(Block::text("No SLO checked.")),
        Some(t) => out.extend([
            Block::paragraph(
                ParagraphKind::Verdict(r.passed()),
                vec![Inline::Text(section::slo_line(r))],
            ),
            Block::Table(t),
        ]),
    }
    out
}

fn capacity(c: &Capacity) -> Vec<Block> {
    let [ready_how, egress_how, savings_how] = section::capacity_how(c);
    let mut out = vec![
        Block::anchored(2, "capacity", "Capacity"),
        Block::heading(3, "Time to ready"),
        Block::text(ready_how),
        Block::Table(section::time_to_ready(c)),
        Block::heading(3, "Registry egress"),
        Block::text(egress_how),
        Block::Table(section::egress(c)),
        Block::heading(3, "Cache saving against direct pulls"),
    ];
    match section::savings(c) {
        Some(t) => out.extend([Block::text(savings_how), Block::Table(t)]),
        None => out.push(Block::text(
            "No variant ran both direct and through a cache or mirror.",
        )),
    }
    out
}

/// The chart sections: pods ready, latency CDFs, layer phases, registry traffic.
fn charts(r: &RunResult) -> Vec<Block> {
    let mut out = vec![
        Block::anchored(2, "ready", "Pods ready over time"),
        Block::Figures(chart::ready_over_time(r)),
        Block::anchored(2, "latency", "Latency CDFs per phase"),
        Block::Figures(chart::phase_cdfs(r)),
        Block::anchored(2, "layers", "Layer phases"),
    ];
    match chart::layer_phases(r) {
        Some(f) => out.push(Block::Figures(vec![f])),
        None => out.push(Block::text("No layer was pulled.")),
    }
    out.push(Block::anchored(2, "registry", "Registry traffic over time"));
    let traffic = chart::registry_traffic(r);
    if traffic.is_empty() {
        out.push(Block::text("No registry time series recorded."));
    }
    out.push(Block::Figures(traffic));
    out
}

/// One series: latency per phase, per repetition, pods ready over time, registry, failures.
fn details(r: &RunResult, s: &SeriesResult) -> Vec<Block> {
    let mut out = vec![Block::heading(3, format!("{} / {}", s.variant, s.target))];
    if s.data.repetitions().next().is_none() {
        out.push(Block::text("Nothing recorded."));
        return out;
    }
    out.extend([
        Block::text("Latency per phase over all repetitions:"),
        Block::Table(series::latency(s)),
        Block::text("Per repetition:"),
        Block::Table(series::repetitions(s)),
        Block::text("Pods ready over time:"),
        Block::Table(series::ready_times(s)),
    ]);
    out.extend(series::ready_over_time(s).map(Block::Table));
    match series::registry(r, s) {
        Some(t) => out.extend([Block::text("Registry:"), Block::Table(t)]),
        None => out.push(Block::text("No registry accounting recorded.")),
    }
    if let Some(t) = series::failures(s) {
        out.extend([Block::text("Failures:"), Block::Table(t)]);
    }
    out
}
