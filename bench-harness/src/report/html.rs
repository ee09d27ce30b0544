//! `report.html`: one self-contained page (inline CSS and SVG, no script, no external
//! resource; a Content-Security-Policy forbids any fetch) with the run's facts and warnings at
//! the top, then summary, SLO, capacity answers, charts and per (variant, target) tables.
//!
//! The page frame ([`page`]) and [`escape`] are shared with the comparison report. Charts come
//! from `chart.rs`, tables from `section.rs`; this module only lays them out.

use std::fmt::Write as _;

use super::capacity::Capacity;
use super::chart::{self, Figure};
use super::section;
use super::side_by_side::SideBySide;
use super::table::Emphasis;
use super::MARKDOWN_FILE_NAME;
use crate::result::RunResult;

/// Nothing may be fetched: styles and images only inline (`data:`), no script at all.
const CONTENT_SECURITY_POLICY: &str =
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'";

const STYLE: &str = r#"
:root { color-scheme: light; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d1d1f; margin: 0 auto; max-width: 1180px; padding: 16px 24px 48px; }
h1 { font-size: 24px; margin: 8px 0 4px; }
h2 { font-size: 19px; margin: 32px 0 8px; padding-top: 8px; border-top: 1px solid #ddd; }
h3 { font-size: 15px; margin: 20px 0 6px; }
p.lead { color: #444; margin-top: 0; }
nav { font-size: 13px; margin: 8px 0 0; }
nav a { margin-right: 12px; }
table { border-collapse: collapse; margin: 6px 0 14px; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #d6d6d6; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f3f4f6; font-weight: 600; }
td.num, th.num { text-align: right; }
table.facts th { background: none; border: none; padding: 1px 12px 1px 0; color: #555; font-weight: 500; }
table.facts td { border: none; padding: 1px 0; }
code { font: 12px ui-monospace, SFMono-Regular, Menlo, monospace; }
td code { overflow-wrap: anywhere; }
.pass { color: #0a7a32; font-weight: 600; }
.fail { color: #b00020; font-weight: 700; }
.warnings { background: #fff6e0; border: 1px solid #e8b64c; border-radius: 4px; padding: 8px 14px; margin: 12px 0; }
.warnings h2 { border: none; margin: 0 0 4px; padding: 0; font-size: 15px; }
.warnings ul { margin: 0; padding-left: 20px; }
.verdict-ok { background: #e9f7ee; border: 1px solid #7cc597; border-radius: 4px; padding: 6px 12px; }
.verdict-bad { background: #fdecee; border: 1px solid #e07b8a; border-radius: 4px; padding: 6px 12px; }
.figures { display: grid; grid-template-columns: repeat(auto-fill, minmax(520px, 1fr)); gap: 18px; }
figure { margin: 0; border: 1px solid #e3e3e3; border-radius: 4px; padding: 8px 10px; background: #fff; }
figcaption { font-weight: 600; margin-bottom: 4px; }
figure p.how { font-size: 12.5px; color: #555; margin: 4px 0 0; }
svg.chart { width: 100%; height: auto; display: block; }
svg.chart text { font: 13px system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; fill: #333; }
svg.chart text.axis-label { font-size: 14px; fill: #1d1d1f; }
svg.chart text.rule-label { fill: #7a2e00; }
svg.chart .plot { fill: #fcfcfc; stroke: none; }
svg.chart .grid { stroke: #e6e6e6; stroke-width: 1; }
svg.chart .axis { stroke: #444; stroke-width: 1; fill: none; }
svg.chart .series { fill: none; stroke-width: 2; stroke-linejoin: round; }
svg.chart .rule { stroke: #7a2e00; stroke-width: 1; stroke-dasharray: 4 3; }
svg.chart .zero { stroke: #444; stroke-width: 1; }
svg.chart .interval line { stroke: #1d1d1f; stroke-width: 1.5; }
svg.chart circle { stroke: #1d1d1f; stroke-width: 1.5; }
footer { margin-top: 40px; font-size: 12px; color: #666; }
"#;

/// Escapes text for HTML and SVG content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A complete page: doctype, charset, the no-fetch policy, inline style, `body` as given.
pub fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<meta http-equiv=\"Content-Security-Policy\" content=\"{CONTENT_SECURITY_POLICY}\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n{body}</body>\n</html>\n",
        escape(title)
    )
}

/// A chart in a `<figure>` with caption and its "how to read this" line.
pub fn figure(f: &Figure) -> String {
    format!(
        "<figure class=\"chart-figure\" id=\"{}\">\n<figcaption>{}</figcaption>\n{}<p class=\"how\">How to read this: {}</p>\n</figure>\n",
        escape(&f.id),
        escape(&f.title),
        f.svg,
        escape(&f.how_to_read)
    )
}

fn figures(out: &mut String, figs: &[Figure]) {
    if figs.is_empty() {
        return;
    }
    out.push_str("<div class=\"figures\">\n");
    for f in figs {
        out.push_str(&figure(f));
    }
    out.push_str("</div>\n");
}

/// The HTML report. Deterministic for a given result.
pub fn render(r: &RunResult) -> String {
    let sc = &r.scenario;
    let mut b = String::new();
    let _ = writeln!(
        b,
        "<header>\n<h1>{}: burst pull report</h1>",
        escape(&sc.name)
    );
    if let Some(note) = section::modelled(r) {
        let _ = writeln!(
            b,
            "<p class=\"warnings\"><strong>Modelled</strong>: {}</p>",
            escape(&note)
        );
    }
    if !sc.description.is_empty() {
        let _ = writeln!(b, "<p class=\"lead\">{}</p>", escape(&sc.description));
    }
    b.push_str("<table class=\"facts\">\n");
    for (k, v) in section::facts(r) {
        let value = match v.emphasis {
            Emphasis::Code => format!("<code>{}</code>", escape(&v.text)),
            _ => escape(&v.text),
        };
        let _ = writeln!(b, "<tr><th>{k}</th><td>{value}</td></tr>");
    }
    b.push_str("</table>\n");
    let warnings = section::warnings(r);
    if !warnings.is_empty() {
        b.push_str("<div class=\"warnings\">\n<h2>Warnings</h2>\n<ul>\n");
        for w in &warnings {
            let _ = writeln!(b, "<li>{}</li>", escape(w));
        }
        b.push_str("</ul>\n</div>\n");
    }
    let sbs = SideBySide::of(r);
    let side_by_side_link = if sbs.is_some() {
        "<a href=\"#side-by-side\">Side by side</a>"
    } else {
        ""
    };
    let _ = writeln!(
        b,
        "<nav><a href=\"#summary\">Summary</a>{side_by_side_link}<a href=\"#slo\">SLO</a><a href=\"#capacity\">Capacity</a><a href=\"#ready\">Pods ready</a><a href=\"#latency\">Latency CDFs</a><a href=\"#layers\">Layers</a><a href=\"#registry\">Registry traffic</a><a href=\"#details\">Details</a> \u{b7} same numbers as Markdown: <a href=\"{MARKDOWN_FILE_NAME}\">{MARKDOWN_FILE_NAME}</a></nav>\n</header>"
    );

    if let Some(t) = section::image_sources(r) {
        b.push_str("<h2 id=\"images\">Images</h2>\n");
        b.push_str(&t.html());
    }

    b.push_str("<h2 id=\"summary\">Summary</h2>\n");
    let _ = writeln!(b, "<p>{}</p>", escape(section::summary_how()));
    b.push_str(&section::summary(r).html());

    if let Some(sbs) = sbs {
        let waves = SideBySide::has_waves(r);
        b.push_str("<h2 id=\"side-by-side\">Targets side by side</h2>\n");
        for how in section::side_by_side_how() {
            let _ = writeln!(b, "<p>{}</p>", escape(&how));
        }
        for v in &sbs.variants {
            let _ = writeln!(b, "<h3>{}</h3>", escape(&v.variant));
            b.push_str("<p>Pulls:</p>\n");
            b.push_str(&section::side_by_side(v, waves).html());
            b.push_str("<p>Registry, per burst:</p>\n");
            b.push_str(&section::side_by_side_upstream(v).html());
            if let Some(t) = section::side_by_side_ratios(v, waves) {
                let _ = writeln!(
                    b,
                    "<p>Against {}:</p>",
                    escape(v.baseline.as_deref().unwrap_or("cache-daemon"))
                );
                b.push_str(&t.html());
            }
        }
    }

    b.push_str("<h2 id=\"slo\">SLO</h2>\n");
    match section::slo(r) {
        None => b.push_str("<p>No SLO checked.</p>\n"),
        Some(t) => {
            let class = if r.passed() {
                "verdict-ok"
            } else {
                "verdict-bad"
            };
            let _ = writeln!(
                b,
                "<p class=\"{class}\">{}</p>",
                escape(&section::slo_line(r))
            );
            b.push_str(&t.html());
        }
    }

    let c = Capacity::of(r);
    let [ready_how, egress_how, savings_how] = section::capacity_how(&c);
    b.push_str("<h2 id=\"capacity\">Capacity</h2>\n<h3>Time to ready</h3>\n");
    let _ = writeln!(b, "<p>{}</p>", escape(&ready_how));
    b.push_str(&section::time_to_ready(&c).html());
    b.push_str("<h3>Registry egress</h3>\n");
    let _ = writeln!(b, "<p>{}</p>", escape(&egress_how));
    b.push_str(&section::egress(&c).html());
    b.push_str("<h3>Cache saving against direct pulls</h3>\n");
    match section::savings(&c) {
        Some(t) => {
            let _ = writeln!(b, "<p>{}</p>", escape(&savings_how));
            b.push_str(&t.html());
        }
        None => b.push_str("<p>No variant ran both direct and through a cache or mirror.</p>\n"),
    }

    for n in super::nodes::sections(r) {
        let _ = writeln!(
            b,
            "<h2>{}</h2>\n<p>{}</p>",
            escape(n.title),
            escape(&n.caption)
        );
        b.push_str(&n.table.html());
    }
    b.push_str("<h2 id=\"ready\">Pods ready over time</h2>\n");
    figures(&mut b, &chart::ready_over_time(r));
    b.push_str("<h2 id=\"latency\">Latency CDFs per phase</h2>\n");
    figures(&mut b, &chart::phase_cdfs(r));
    b.push_str("<h2 id=\"layers\">Layer phases</h2>\n");
    match chart::layer_phases(r) {
        Some(f) => figures(&mut b, &[f]),
        None => b.push_str("<p>No layer was pulled.</p>\n"),
    }
    b.push_str("<h2 id=\"registry\">Registry traffic over time</h2>\n");
    let traffic = chart::registry_traffic(r);
    if traffic.is_empty() {
        b.push_str("<p>No registry time series recorded.</p>\n");
    }
    figures(&mut b, &traffic);

    b.push_str("<h2 id=\"details\">Details per variant and target</h2>\n");
    for s in &r.series {
        let _ = writeln!(b, "<h3>{} / {}</h3>", escape(&s.variant), escape(&s.target));
        if s.data.repetitions().next().is_none() {
            b.push_str("<p>Nothing recorded.</p>\n");
            continue;
        }
        b.push_str("<p>Latency per phase over all repetitions:</p>\n");
        b.push_str(&section::latency(s).html());
        b.push_str("<p>Per repetition:</p>\n");
        b.push_str(&section::repetitions(s).html());
        b.push_str(&section::ready_times(s).html());
        match section::registry(r, s) {
            Some(t) => {
                b.push_str("<p>Registry:</p>\n");
                b.push_str(&t.html());
            }
            None => b.push_str("<p>No registry accounting recorded.</p>\n"),
        }
        if let Some(t) = section::failures(s) {
            b.push_str("<p>Failures:</p>\n");
            b.push_str(&t.html());
        }
    }
    let _ = writeln!(
        b,
        "<footer>Rendered by bench-harness from result.json (schema version {}); histograms merged from the stored HdrHistogram encodings.</footer>",
        crate::result::SCHEMA_VERSION
    );
    page(&format!("{}: burst pull report", sc.name), &b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            escape(r#"<a href="x">&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn page_forbids_fetches_and_scripts() {
        let p = page("t", "<p>x</p>\n");
        assert!(p.contains("default-src 'none'"));
        assert!(!p.contains("<script"));
        assert!(!p.contains("http://") && !p.contains("https://"));
    }
}
