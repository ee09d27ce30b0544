//! Human-readable views of a [`RunResult`] and of a [`Comparison`]: `report.md`, the
//! self-contained `report.html` with inline SVG charts, `compare.md` / `compare.html`, and the
//! compact tables the CLI prints. Durations read in ms or s, sizes in decimal units, rates in
//! bit/s or per second; every number carries its unit.
//!
//! This module renders what `result.rs` and `compare.rs` hold. The only things it computes are
//! the capacity answers ([`capacity`]), and those only from stored data: percentiles come from
//! the stored histograms (merged, never re-sampled), SLO outcomes from
//! [`RunResult::evaluate_slo`], traffic from the registry's stored time series.
//!
//! # Layout
//! - [`document`]: the format-neutral shape of a report: headings, paragraphs, facts, tables,
//!   figures.
//! - [`run`]: the run report as a document; [`comparison`]: the comparison as a document (and
//!   its terminal summary).
//! - [`markdown`], [`html`]: render any document; [`escape`] is HTML's and SVG's escaping.
//! - [`table`]: a format-neutral table (and its plain-text form for the terminal).
//! - [`facts`]: what was run (the report's header); [`section`]: summary, SLO, capacity and
//!   side-by-side tables with the sentences that say how to read them; [`series`]: each
//!   (variant, target) in detail.
//! - [`capacity`]: time to 50/95/100 % ready, egress and bandwidth, cache savings (per arrival
//!   wave when the scenario has waves).
//! - [`side_by_side`]: targets side by side per variant (and wave), the registry's counts, and
//!   each target's ratio to cache-daemon.
//! - [`nodes`]: with nodes in namespaces, what every link carried and what every cache process
//!   cost.
//! - [`kubelet`]: a kubernetes target's pull times as kubelet reported them.
//! - [`chart`]: which charts a run report has and what each plots; [`svg`] draws them.
//! - [`human`]: how numbers read (durations, sizes, bandwidths, percentages).
//!
//! A report is built once ([`run::document`], [`comparison::document`]) and rendered twice
//! ([`markdown::render`], [`html::render`]); the functions below do both and write the files.

use std::path::{Path, PathBuf};

use crate::compare::Comparison;
use crate::result::RunResult;
use document::Document;

pub mod capacity;
pub mod chart;
pub mod comparison;
pub mod document;
pub mod escape;
pub mod facts;
pub mod html;
pub mod human;
pub mod kubelet;
pub mod markdown;
pub mod nodes;
pub mod run;
pub mod section;
pub mod series;
pub mod side_by_side;
pub mod svg;
pub mod table;

pub use run::{HTML_FILE_NAME, MARKDOWN_FILE_NAME};

/// Why a report could not be written: the directory or file and the I/O error.
#[derive(Debug, thiserror::Error)]
#[error("write report {path}")]
pub struct ReportError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// The Markdown report: header (scenario, date, machine, warnings), summary, SLO outcomes,
/// capacity answers, then per (variant, target) latency percentiles per phase, pods ready over
/// time, registry egress and requests, and failures by kind. Deterministic for a given result.
pub fn markdown(r: &RunResult) -> String {
    markdown::render(&run::document(r))
}

/// The HTML report: the Markdown report's content plus charts, in one self-contained page.
/// Deterministic for a given result.
pub fn html(r: &RunResult) -> String {
    html::render(&run::document(r))
}

/// One line per (variant, target): pods ready, end-to-end p50 and p95, pull p95, failures;
/// the report's summary table with columns aligned for a terminal.
pub fn summary_table(r: &RunResult) -> String {
    section::summary(r).plain()
}

/// Writes `report.md` and `report.html` into `dir` (created if missing) and returns their
/// paths. The document is built once for both.
///
/// # Errors
/// [`ReportError`] if the directory or a file cannot be written.
pub fn write_all(result: &RunResult, dir: &Path) -> Result<[PathBuf; 2], ReportError> {
    write_both(
        &run::document(result),
        dir,
        [MARKDOWN_FILE_NAME, HTML_FILE_NAME],
    )
}

/// Writes `compare.md` and `compare.html` into `dir` (created if missing) and returns their
/// paths.
///
/// # Errors
/// [`ReportError`] if the directory or a file cannot be written.
pub fn write_comparison(c: &Comparison, dir: &Path) -> Result<[PathBuf; 2], ReportError> {
    let names = [comparison::MARKDOWN_FILE_NAME, comparison::HTML_FILE_NAME];
    write_both(&comparison::document(c), dir, names)
}

/// `doc` as Markdown and as HTML into `dir` (created if missing), under `names` in that order.
fn write_both(doc: &Document, dir: &Path, names: [&str; 2]) -> Result<[PathBuf; 2], ReportError> {
    let error = |path: &Path| {
        let path = path.to_owned();
        |source| ReportError { path, source }
    };
    std::fs::create_dir_all(dir).map_err(error(dir))?;
    let paths = names.map(|n| dir.join(n));
    for (path, text) in paths.iter().zip([markdown::render(doc), html::render(doc)]) {
        std::fs::write(path, text).map_err(error(path))?;
    }
    Ok(paths)
}
