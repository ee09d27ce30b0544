//! A report as a format-neutral [`Document`]: a title, a header (facts, warnings, a table of
//! contents), a body of [`Block`]s (headings, paragraphs, tables, figures) and a footer. The run
//! report (`run.rs`) and the comparison (`comparison.rs`) each build one document; `markdown.rs`
//! and `html.rs` render any document, so every sentence of a report is written once and both
//! formats always say the same.
//!
//! This module only holds the shape; it neither fills nor renders it.

use super::table::{Cell, Table};

/// A whole report.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// The page title and the top heading.
    pub title: String,
    /// What comes before the body: facts, warnings, the contents.
    pub header: Vec<Block>,
    pub body: Vec<Block>,
    /// How the page was made, at its foot. Page furniture: only HTML shows it.
    pub footer: Option<String>,
}

/// One piece of a document.
#[derive(Debug, Clone, PartialEq)]
pub enum Block {
    /// A heading, `level` 2 for a section, 3 for a subsection; `id` is its anchor (unique in
    /// the document) where the format has anchors.
    Heading {
        level: u8,
        id: Option<String>,
        text: String,
    },
    Paragraph(Paragraph),
    /// Label and value lines (the run's or comparison's facts).
    Facts(Vec<(&'static str, Cell)>),
    /// A titled list (`Warnings`, `Notes`) the reader must see before the numbers.
    Notices {
        title: &'static str,
        items: Vec<String>,
    },
    Table(Table),
    /// Charts. Formats that cannot draw leave them out.
    Figures(Vec<Figure>),
    /// Links to the document's sections (anchor id, label), then `tail`; for formats that
    /// navigate a page.
    Contents {
        links: Vec<(&'static str, &'static str)>,
        tail: Vec<Inline>,
    },
    /// Blocks shown in one format only: the Markdown report points to the charts it cannot
    /// draw; the HTML report has sections of charts.
    Only(Format, Vec<Block>),
}

/// An output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Markdown,
    Html,
}

/// A paragraph: its runs of text and how it is set apart.
#[derive(Debug, Clone, PartialEq)]
pub struct Paragraph {
    pub inlines: Vec<Inline>,
    pub kind: ParagraphKind,
}

/// How a paragraph is set apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParagraphKind {
    /// Body text.
    Plain,
    /// The scenario's description under the title.
    Lead,
    /// An outcome line (SLO, gates): passed or not.
    Verdict(bool),
    /// Something to read before anything else (a modelled run).
    Callout,
}

/// A run of text inside a paragraph.
#[derive(Debug, Clone, PartialEq)]
pub enum Inline {
    Text(String),
    Strong(String),
    /// Machine text: a flag, a digest.
    Code(String),
    /// A link to `href` (a file next to the report).
    Link {
        text: String,
        href: String,
    },
}

/// A chart: its `<svg>` element, a caption (`title`), a "how to read this" sentence, and an
/// anchor `id` unique within the page.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    pub id: String,
    pub title: String,
    pub how_to_read: String,
    pub svg: String,
}

impl Block {
    /// A heading without an anchor.
    pub fn heading(level: u8, text: impl Into<String>) -> Self {
        Self::Heading {
            level,
            id: None,
            text: text.into(),
        }
    }

    /// A heading with anchor `id`.
    pub fn anchored(level: u8, id: impl Into<String>, text: impl Into<String>) -> Self {
        Self::Heading {
            level,
            id: Some(id.into()),
            text: text.into(),
        }
    }

    /// A plain paragraph of one run of text.
    pub fn text(text: impl Into<String>) -> Self {
        Self::paragraph(ParagraphKind::Plain, vec![Inline::Text(text.into())])
    }

    /// A paragraph of `kind`.
    pub fn paragraph(kind: ParagraphKind, inlines: Vec<Inline>) -> Self {
        Self::Paragraph(Paragraph { inlines, kind })
    }
}
