//! Any [`Document`] as Markdown: `#` headings, pipe tables, `**Warnings**` lists, `>` for a
//! callout. Markdown draws no charts, so figures, the contents and blocks meant for HTML only
//! are left out, and so is the page footer.
//!
//! Only the format lives here; what a report says comes from `run.rs` and `comparison.rs`.

use std::fmt::Write as _;

use super::document::{Block, Document, Format, Inline, Paragraph, ParagraphKind};
use super::table::{Align, Cell, Emphasis, Table};

/// The document as Markdown. Deterministic for a given document.
pub fn render(doc: &Document) -> String {
    let mut out = format!("# {}\n\n", doc.title);
    blocks(&mut out, &doc.header);
    blocks(&mut out, &doc.body);
    out
}

fn blocks(out: &mut String, blocks: &[Block]) {
    for b in blocks {
        block(out, b);
    }
}

fn block(out: &mut String, b: &Block) {
    match b {
        Block::Heading { level, text, .. } => {
            let _ = writeln!(out, "{} {text}\n", "#".repeat(usize::from(*level)));
        }
        Block::Paragraph(p) => paragraph(out, p),
        Block::Facts(facts) => {
            out.push_str("| | |\n|---|---|\n");
            for (label, value) in facts {
                let _ = writeln!(out, "| {label} | {} |", cell(value));
            }
            out.push('\n');
        }
        Block::Notices { title, items } => {
            let _ = writeln!(out, "**{title}**\n");
            for item in items {
                let _ = writeln!(out, "- {item}");
            }
            out.push('\n');
        }
        Block::Table(t) => table(out, t),
        Block::Only(Format::Markdown, inner) => blocks(out, inner),
        Block::Figures(_) | Block::Contents { .. } | Block::Only(Format::Html, _) => {}
    }
}

fn paragraph(out: &mut String, p: &Paragraph) {
    if p.kind == ParagraphKind::Callout {
        out.push_str("> ");
    }
    for inline in &p.inlines {
        match inline {
            Inline::Text(t) => out.push_str(t),
            Inline::Strong(t) => {
                let _ = write!(out, "**{t}**");
            }
            Inline::Code(t) => {
                let _ = write!(out, "`{t}`");
            }
            Inline::Link { text, href } => {
                let _ = write!(out, "[{text}]({href})");
            }
        }
    }
    out.push_str("\n\n");
}

/// A pipe table, ending with a blank line.
fn table(out: &mut String, t: &Table) {
    out.push('|');
    for (name, _) in t.columns() {
        let _ = write!(out, " {name} |");
    }
    out.push_str("\n|");
    for (_, align) in t.columns() {
        out.push_str(match align {
            Align::Left => "---|",
            Align::Right => "--:|",
        });
    }
    out.push('\n');
    for row in t.rows() {
        out.push('|');
        for c in row {
            let _ = write!(out, " {} |", cell(c));
        }
        out.push('\n');
    }
    out.push('\n');
}

/// A cell's text with its emphasis, `|` escaped.
fn cell(c: &Cell) -> String {
    let text = c.text.replace('|', "\\|");
    match c.emphasis {
        Emphasis::None | Emphasis::Pass => text,
        Emphasis::Fail | Emphasis::Strong if !text.is_empty() => format!("**{text}**"),
        Emphasis::Fail | Emphasis::Strong => text,
        Emphasis::Code => format!("`{text}`"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_tables_with_alignment_and_emphasis() {
        let mut t = Table::new(&[("name", Align::Left), ("value", Align::Right)]);
        t.row([Cell::from("a|b"), Cell::with("FAIL", Emphasis::Fail)]);
        t.row([Cell::with("abc", Emphasis::Code)]);
        let mut out = String::new();
        table(&mut out, &t);
        assert_eq!(
            out,
            "| name | value |\n|---|--:|\n| a\\|b | **FAIL** |\n| `abc` |  |\n\n"
        );
    }

    #[test]
    fn leaves_out_what_markdown_cannot_show() {
        let doc = Document {
            title: "t".into(),
            header: vec![Block::Contents {
                links: vec![("a", "A")],
                tail: vec![],
            }],
            body: vec![
                Block::Only(Format::Html, vec![Block::text("charts only")]),
                Block::Only(Format::Markdown, vec![Block::text("see the charts")]),
                Block::Figures(vec![]),
            ],
            footer: Some("made by".into()),
        };
        assert_eq!(render(&doc), "# t\n\nsee the charts\n\n");
    }
}
