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

/// The page's style: tables, facts, warnings, verdicts, the figure grid, chart text. The SVG
/// charts' classes are styled here too, so `svg.rs` draws no style of its own.
const STYLE: &str = include_str!("report.css");

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
