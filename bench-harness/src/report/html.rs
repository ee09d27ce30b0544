//! Any [`Document`] as one self-contained HTML page: inline CSS and SVG, no script, no external
//! resource (a Content-Security-Policy forbids any fetch). The document's header goes in
//! `<header>`, its figures in a grid of `<figure>`s, its footer in `<footer>`.
//!
//! Only the format lives here; what a report says comes from `run.rs` and `comparison.rs`,
//! and charts are drawn by `svg.rs` before they get here.

use std::fmt::Write as _;

use super::document::{Block, Document, Figure, Format, Inline, Paragraph, ParagraphKind};
use super::escape::escape;
use super::table::{Align, Cell, Emphasis, Table};

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

/// The document as a complete page. Deterministic for a given document.
pub fn render(doc: &Document) -> String {
    let mut body = format!("<header>\n<h1>{}</h1>\n", escape(&doc.title));
    blocks(&mut body, &doc.header);
    body.push_str("</header>\n");
    blocks(&mut body, &doc.body);
    if let Some(footer) = &doc.footer {
        let _ = writeln!(body, "<footer>{}</footer>", escape(footer));
    }
    page(&doc.title, &body)
}

/// A complete page: doctype, charset, the no-fetch policy, inline style, `body` as given.
fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<meta http-equiv=\"Content-Security-Policy\" content=\"{CONTENT_SECURITY_POLICY}\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n{body}</body>\n</html>\n",
        escape(title)
    )
}

fn blocks(out: &mut String, blocks: &[Block]) {
    for b in blocks {
        block(out, b);
    }
}

fn block(out: &mut String, b: &Block) {
    match b {
        Block::Heading { level, id, text } => {
            let id = id
                .as_deref()
                .map_or_else(String::new, |id| format!(" id=\"{}\"", escape(id)));
            let _ = writeln!(out, "<h{level}{id}>{}</h{level}>", escape(text));
        }
        Block::Paragraph(p) => paragraph(out, p),
        Block::Facts(facts) => {
            out.push_str("<table class=\"facts\">\n");
            for (label, value) in facts {
                let _ = writeln!(
                    out,
                    "<tr><th>{}</th><td>{}</td></tr>",
                    escape(label),
                    cell(value)
                );
            }
            out.push_str("</table>\n");
        }
        Block::Notices { title, items } => {
            let _ = writeln!(
                out,
                "<div class=\"warnings\">\n<h2>{}</h2>\n<ul>",
                escape(title)
            );
            for item in items {
                let _ = writeln!(out, "<li>{}</li>", escape(item));
            }
            out.push_str("</ul>\n</div>\n");
        }
        Block::Table(t) => table(out, t),
        Block::Figures(figures) if !figures.is_empty() => {
            out.push_str("<div class=\"figures\">\n");
            for f in figures {
                figure(out, f);
            }
            out.push_str("</div>\n");
        }
        Block::Contents { links, tail } => {
            out.push_str("<nav>");
            for (id, label) in links {
                let _ = write!(out, "<a href=\"#{id}\">{}</a>", escape(label));
            }
            inlines(out, tail);
            out.push_str("</nav>\n");
        }
        Block::Only(Format::Html, inner) => blocks(out, inner),
        Block::Figures(_) | Block::Only(Format::Markdown, _) => {}
    }
}

fn paragraph(out: &mut String, p: &Paragraph) {
    let class = match p.kind {
        ParagraphKind::Plain => "",
        ParagraphKind::Lead => " class=\"lead\"",
        ParagraphKind::Verdict(true) => " class=\"verdict-ok\"",
        ParagraphKind::Verdict(false) => " class=\"verdict-bad\"",
        ParagraphKind::Callout => " class=\"warnings\"",
    };
    let _ = write!(out, "<p{class}>");
    inlines(out, &p.inlines);
    out.push_str("</p>\n");
}

fn inlines(out: &mut String, inlines: &[Inline]) {
    for inline in inlines {
        let _ = match inline {
            Inline::Text(t) => write!(out, "{}", escape(t)),
            Inline::Strong(t) => write!(out, "<strong>{}</strong>", escape(t)),
            Inline::Code(t) => write!(out, "<code>{}</code>", escape(t)),
            Inline::Link { text, href } => {
                write!(out, "<a href=\"{}\">{}</a>", escape(href), escape(text))
            }
        };
    }
}

/// A chart in a `<figure>` with caption and its "how to read this" line.
fn figure(out: &mut String, f: &Figure) {
    let _ = writeln!(
        out,
        "<figure class=\"chart-figure\" id=\"{}\">\n<figcaption>{}</figcaption>\n{}<p class=\"how\">How to read this: {}</p>\n</figure>",
        escape(&f.id),
        escape(&f.title),
        f.svg,
        escape(&f.how_to_read)
    );
}

/// A `<table>`, escaped, numbers right-aligned.
fn table(out: &mut String, t: &Table) {
    out.push_str("<table>\n<thead><tr>");
    for (name, align) in t.columns() {
        let _ = write!(out, "<th{}>{}</th>", align_attr(*align), escape(name));
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    for row in t.rows() {
        out.push_str("<tr>");
        for (c, (_, align)) in row.iter().zip(t.columns()) {
            let _ = write!(out, "<td{}>{}</td>", align_attr(*align), cell(c));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody>\n</table>\n");
}

fn cell(c: &Cell) -> String {
    let text = escape(&c.text);
    match c.emphasis {
        Emphasis::None => text,
        Emphasis::Pass => format!("<span class=\"pass\">{text}</span>"),
        Emphasis::Fail => format!("<span class=\"fail\">{text}</span>"),
        Emphasis::Code => format!("<code>{text}</code>"),
        Emphasis::Strong => format!("<strong>{text}</strong>"),
    }
}

fn align_attr(align: Align) -> &'static str {
    match align {
        Align::Left => "",
        Align::Right => " class=\"num\"",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_forbids_fetches_and_scripts() {
        let p = page("t", "<p>x</p>\n");
        assert!(p.contains("default-src 'none'"));
        assert!(!p.contains("<script"));
        assert!(!p.contains("http://") && !p.contains("https://"));
    }

    #[test]
    fn renders_escaped_tables() {
        let mut t = Table::new(&[("name", Align::Left), ("value", Align::Right)]);
        t.row([Cell::from("a|b"), Cell::with("FAIL", Emphasis::Fail)]);
        t.row([Cell::from("<script>")]);
        let mut html = String::new();
        table(&mut html, &t);
        assert!(
            html.contains("<td>a|b</td><td class=\"num\"><span class=\"fail\">FAIL</span></td>")
        );
        assert!(html.contains("<th class=\"num\">value</th>"));
        assert!(html.contains("&lt;script&gt;"));
    }
}
