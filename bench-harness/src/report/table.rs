//! A format-neutral table: header, column alignment and rows of cells, each cell plain text with
//! an optional emphasis. `markdown.rs` renders it as a pipe table, `html.rs` as a `<table>`, and
//! [`Table::plain`] as aligned columns for a terminal, so every output shows the same numbers.
//!
//! This module knows nothing of results; `facts.rs`, `section.rs`, `series.rs`, `nodes.rs` and
//! `comparison.rs` fill tables.

/// How a column's cells are aligned: text left, numbers right.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// How a cell is set apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Emphasis {
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

/// One cell: its text, units included, and how it is set apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cell {
    pub text: String,
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
        Self::with(text, Emphasis::None)
    }
}

impl From<&str> for Cell {
    fn from(text: &str) -> Self {
        text.to_owned().into()
    }
}

impl Cell {
    pub fn with(text: impl Into<String>, emphasis: Emphasis) -> Self {
        Self {
            text: text.into(),
            emphasis,
        }
    }
}

impl Table {
    pub fn new(columns: &[(&str, Align)]) -> Self {
        Self {
            columns: columns.iter().map(|(n, a)| ((*n).to_owned(), *a)).collect(),
            rows: Vec::new(),
        }
    }

    /// An empty table of `text` columns (left-aligned) followed by `numbers` columns
    /// (right-aligned), the shape of most tables.
    pub fn text_then_numbers(text: &[&str], numbers: &[&str]) -> Self {
        let text = text.iter().map(|n| (*n, Align::Left));
        let numbers = numbers.iter().map(|n| (*n, Align::Right));
        Self::new(&text.chain(numbers).collect::<Vec<_>>())
    }

    /// Adds a row; missing cells are empty, extra ones dropped.
    pub fn row(&mut self, cells: impl IntoIterator<Item = Cell>) {
        let mut cells: Vec<Cell> = cells.into_iter().take(self.columns.len()).collect();
        cells.resize_with(self.columns.len(), || Cell::from(""));
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Plain text for a terminal: the header and the rows as columns two spaces apart, each
    /// aligned as its column says; trailing spaces trimmed.
    pub fn plain(&self) -> String {
        let header = self.columns.iter().map(|(n, _)| n.as_str()).collect();
        let rows: Vec<Vec<&str>> = std::iter::once(header)
            .chain(
                self.rows
                    .iter()
                    .map(|r| r.iter().map(|c| c.text.as_str()).collect()),
            )
            .collect();
        let mut widths = vec![0; self.columns.len()];
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in rows {
            let cells: Vec<String> = row
                .iter()
                .zip(&widths)
                .zip(&self.columns)
                .map(|((cell, w), (_, align))| match align {
                    Align::Left => format!("{cell:<w$}"),
                    Align::Right => format!("{cell:>w$}"),
                })
                .collect();
            out.push_str(cells.join("  ").trim_end());
            out.push('\n');
        }
        out
    }

    /// The columns: name and alignment.
    pub fn columns(&self) -> &[(String, Align)] {
        &self.columns
    }

    /// The rows, each with one cell per column.
    pub fn rows(&self) -> &[Vec<Cell>] {
        &self.rows
    }
}
