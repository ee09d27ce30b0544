//! A format-neutral table: header, column alignment and rows of cells, each cell plain text with
//! an optional emphasis. The same [`Table`] renders as a Markdown pipe table and as an HTML
//! `<table>`, so both reports show the same numbers.
//!
//! This module knows nothing of results; `section.rs` fills tables.

use std::fmt::Write as _;

use super::html::escape;

/// How a column's cells are aligned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    /// Text columns.
    Left,
    /// Number columns.
    Right,
}

/// How a cell is set apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Emphasis {
    /// Plain.
    #[default]
    None,
    /// A passing outcome.
    Pass,
    /// A failing outcome (bold in Markdown, red in HTML).
    Fail,
    /// Machine text: revisions, digests (code in both).
    Code,
    /// Worth a look: few repetitions, a significant difference (bold in Markdown).
    Strong,
}

/// One cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cell {
    /// The text, units included.
    pub text: String,
    /// How it is set apart.
    pub emphasis: Emphasis,
}

/// A table with a header row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    columns: Vec<(String, Align)>,
    rows: Vec<Vec<Cell>>,
}

impl From<String> for Cell {
    fn from(text: String) -> Self {
        Self {
            text,
            emphasis: Emphasis::None,
        }
    }
}

impl From<&str> for Cell {
    fn from(text: &str) -> Self {
        text.to_owned().into()
    }
}

impl Cell {
    /// A cell with `emphasis`.
    pub fn with(text: impl Into<String>, emphasis: Emphasis) -> Self {
        Self {
            text: text.into(),
            emphasis,
        }
    }
}

impl Table {
    /// An empty table with these columns.
    pub fn new(columns: &[(&str, Align)]) -> Self {
        Self {
            columns: columns.iter().map(|(n, a)| ((*n).to_owned(), *a)).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; missing cells are empty, extra ones dropped.
    pub fn row(&mut self, cells: impl IntoIterator<Item = Cell>) {
        let mut cells: Vec<Cell> = cells.into_iter().take(self.columns.len()).collect();
        cells.resize_with(self.columns.len(), || Cell::from(""));
        self.rows.push(cells);
    }

    /// Whether no row was added.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Plain text for a terminal: the header and the rows as space-aligned columns, each
    /// aligned as its column says.
    pub fn plain(&self) -> String {
        let header: Vec<String> = self.columns.iter().map(|(n, _)| n.clone()).collect();
        let rows: Vec<Vec<String>> = std::iter::once(header)
            .chain(
                self.rows
                    .iter()
                    .map(|r| r.iter().map(|c| c.text.clone()).collect()),
            )
            .collect();
        let aligns: Vec<Align> = self.columns.iter().map(|(_, a)| *a).collect();
        aligned_text(&rows, &aligns)
    }

    /// A Markdown pipe table, ending with a blank line.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        out.push('|');
        for (name, _) in &self.columns {
            let _ = write!(out, " {name} |");
        }
        out.push_str("\n|");
        for (_, align) in &self.columns {
            out.push_str(match align {
                Align::Left => "---|",
                Align::Right => "--:|",
            });
        }
        out.push('\n');
        for row in &self.rows {
            out.push('|');
            for cell in row {
                let text = cell.text.replace('|', "\\|");
                let text = match cell.emphasis {
                    Emphasis::None | Emphasis::Pass => text,
                    Emphasis::Fail | Emphasis::Strong if !text.is_empty() => format!("**{text}**"),
                    Emphasis::Fail | Emphasis::Strong => text,
                    Emphasis::Code => format!("`{text}`"),
                };
                let _ = write!(out, " {text} |");
            }
            out.push('\n');
        }
        out.push('\n');
        out
    }

    /// An HTML `<table>` (escaped; numbers right-aligned).
    pub fn html(&self) -> String {
        let mut out = String::from("<table>\n<thead><tr>");
        for (name, align) in &self.columns {
            let _ = write!(out, "<th{}>{}</th>", align_attr(*align), escape(name));
        }
        out.push_str("</tr></thead>\n<tbody>\n");
        for row in &self.rows {
            out.push_str("<tr>");
            for (cell, (_, align)) in row.iter().zip(&self.columns) {
                let text = escape(&cell.text);
                let inner = match cell.emphasis {
                    Emphasis::None => text,
                    Emphasis::Pass => format!("<span class=\"pass\">{text}</span>"),
                    Emphasis::Fail => format!("<span class=\"fail\">{text}</span>"),
                    Emphasis::Code => format!("<code>{text}</code>"),
                    Emphasis::Strong => format!("<strong>{text}</strong>"),
                };
                let _ = write!(out, "<td{}>{inner}</td>", align_attr(*align));
            }
            out.push_str("</tr>\n");
        }
        out.push_str("</tbody>\n</table>\n");
        out
    }
}

fn align_attr(align: Align) -> &'static str {
    match align {
        Align::Left => "",
        Align::Right => " class=\"num\"",
    }
}

/// Rows as space-aligned columns, two spaces apart, each aligned as `aligns` says (right when
/// not said); trailing spaces trimmed.
pub(crate) fn aligned_text<R: AsRef<[String]>>(rows: &[R], aligns: &[Align]) -> String {
    let mut widths: Vec<usize> = Vec::new();
    for row in rows {
        for (i, cell) in row.as_ref().iter().enumerate() {
            if widths.len() <= i {
                widths.push(0);
            }
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, (cell, w)) in row.as_ref().iter().zip(&widths).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            let pad = " ".repeat(w - cell.chars().count());
            if aligns.get(i) == Some(&Align::Left) {
                line.push_str(cell);
                line.push_str(&pad);
            } else {
                line.push_str(&pad);
                line.push_str(cell);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Table {
        let mut t = Table::new(&[("name", Align::Left), ("value", Align::Right)]);
        t.row([Cell::from("a|b"), Cell::with("FAIL", Emphasis::Fail)]);
        t.row([Cell::with("abc", Emphasis::Code)]);
        t
    }

    #[test]
    fn renders_markdown_with_alignment_and_emphasis() {
        assert_eq!(
            sample().markdown(),
            "| name | value |\n|---|--:|\n| a\\|b | **FAIL** |\n| `abc` |  |\n\n"
        );
    }

    #[test]
    fn renders_escaped_html() {
        let html = sample().html();
        assert!(
            html.contains("<td>a|b</td><td class=\"num\"><span class=\"fail\">FAIL</span></td>")
        );
        assert!(html.contains("<th class=\"num\">value</th>"));
        let mut t = Table::new(&[("x", Align::Left)]);
        t.row([Cell::from("<script>")]);
        assert!(t.html().contains("&lt;script&gt;"));
    }
}
