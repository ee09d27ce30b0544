//! Inline SVG charts drawn in Rust: line charts (straight or step lines, reference rules),
//! horizontal stacked bars and interval (forest) plots, each with labelled axes, tick values, a
//! legend and a `<title>`. Every element that carries data has a `data-points` attribute with
//! the number of data points it draws, so a test can tell a chart with data from an empty frame.
//!
//! Values arrive already in display units (seconds, %, Mbit/s); the axis label names the unit.
//! The `<svg>` elements are meant for inline use in HTML, whose parser puts them in the SVG
//! namespace, so they carry no `xmlns` (and the page holds no URL at all).
//! This module knows nothing of results or reports; `chart.rs` decides what to plot. Output is
//! deterministic: the same chart gives the same bytes.

use std::fmt::Write as _;

use super::escape::escape;

/// Line colours (Okabe-Ito, readable for colour-blind readers), by index modulo the length.
pub const PALETTE: [&str; 8] = [
    "#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#000000", "#999999",
];

/// Dash patterns, by index modulo the length: solid, dashed, dotted, dash-dot.
pub const DASHES: [&str; 4] = ["", "7 4", "2 3", "10 3 2 3"];

/// Width of every chart's view box, in SVG units.
const WIDTH: f64 = 720.0;
/// Height of a line chart's plotting area.
const PLOT_HEIGHT: f64 = 240.0;
const MARGIN_LEFT: f64 = 70.0;
const MARGIN_RIGHT: f64 = 24.0;
const MARGIN_TOP: f64 = 14.0;
/// Font size of chart text (labels, ticks, legends), in SVG units (`svg.chart text` in the
/// page's style).
pub const FONT_PX: f64 = 13.0;
const LEGEND_ROW: f64 = 20.0;
/// Widest left margin a bar or interval label may take; longer labels are shortened with an
/// ellipsis and keep their full text as a tooltip.
const MAX_LABEL_MARGIN: f64 = 340.0;
/// Room between a label's end and the bar it names, and from the chart's left edge.
const LABEL_GAP: f64 = 8.0;
const LABEL_EDGE: f64 = 4.0;

/// Advance widths of printable ASCII (space to `~`) in DejaVu Sans, in hundredths of an em
/// rounded up, as Chromium measures them. The page asks for `system-ui, ..., sans-serif`, which
/// resolves to DejaVu Sans on Debian; the fonts it resolves to elsewhere (Segoe UI, Roboto, SF)
/// are narrower, so widths estimated with this table are upper bounds there.
const ASCII_ADVANCE: [u8; 95] = [
    32, 41, 46, 84, 64, 95, 78, 28, 39, 39, 50, 84, 32, 37, 32, 34, // space to /
    64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 34, 34, 84, 84, 84, 54, // 0 to ?
    100, 69, 69, 70, 77, 64, 58, 78, 76, 30, 30, 66, 56, 87, 75, 79, // @ to O
    61, 79, 70, 64, 62, 74, 69, 99, 69, 62, 69, 39, 34, 39, 84, 50, // P to _
    50, 62, 64, 55, 64, 62, 36, 64, 64, 28, 28, 58, 28, 98, 64, 62, // ` to o
    64, 64, 42, 53, 40, 64, 60, 82, 60, 60, 53, 64, 34, 64, 84, // p to ~
];

/// Estimated width of `text` at `font_px`, in the same units: the sum of its glyphs' advances
/// ([`ASCII_ADVANCE`]; other characters count as one em, wider than any arrow, ellipsis or
/// sign the reports use).
pub fn text_width(text: &str, font_px: f64) -> f64 {
    let hundredths: u32 = text
        .chars()
        .map(|c| match u32::from(c) {
            code @ 32..=126 => u32::from(ASCII_ADVANCE[(code - 32) as usize]),
            _ => 100,
        })
        .sum();
    f64::from(hundredths) / 100.0 * font_px
}

/// `text` if it fits in `room` at [`FONT_PX`], else its longest prefix that fits with `…`.
fn fit(text: &str, room: f64) -> String {
    if text_width(text, FONT_PX) <= room {
        return text.to_owned();
    }
    let mut out = String::new();
    for c in text.chars() {
        let mut next = out.clone();
        next.push(c);
        if text_width(&format!("{next}\u{2026}"), FONT_PX) > room {
            break;
        }
        out = next;
    }
    format!("{}\u{2026}", out.trim_end())
}

/// How a line or bar segment is drawn: colour and dash by index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Style {
    /// Indexes into [`PALETTE`] and [`DASHES`].
    pub color: usize,
    pub dash: usize,
}

/// A value axis: its label (with unit) and range; ticks fall on round values.
#[derive(Debug, Clone, PartialEq)]
pub struct Axis {
    label: String,
    min: f64,
    max: f64,
    step: f64,
}

/// A line of a [`LineChart`].
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    /// Legend text (and the line's tooltip).
    pub label: String,
    pub style: Style,
    /// Step line: each value holds until the next point's x (CDFs, counts over time).
    pub step: bool,
    /// Points in axis units, x ascending.
    pub points: Vec<(f64, f64)>,
}

/// A labelled reference line across the plot (an SLO limit, the 95 % mark).
#[derive(Debug, Clone, PartialEq)]
pub enum Rule {
    /// Vertical, at this x; horizontal, at this y.
    X(f64, String),
    Y(f64, String),
}

/// One legend entry.
#[derive(Debug, Clone, PartialEq)]
pub struct LegendEntry {
    pub label: String,
    pub style: Style,
}

/// A line chart.
#[derive(Debug, Clone, PartialEq)]
pub struct LineChart {
    /// What the chart shows (the SVG `<title>`).
    pub title: String,
    pub x: Axis,
    pub y: Axis,
    pub lines: Vec<Line>,
    pub rules: Vec<Rule>,
    /// Legend entries; when empty, one per line.
    pub legend: Vec<LegendEntry>,
}

/// Horizontal bars, each a stack of segments, over a horizontal value axis.
#[derive(Debug, Clone, PartialEq)]
pub struct StackedBars {
    pub title: String,
    pub x: Axis,
    /// Segment names, in stacking order (the legend).
    pub segments: Vec<String>,
    /// The bars, top to bottom.
    pub bars: Vec<Bar>,
}

/// One stacked bar.
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    /// Label left of the bar.
    pub label: String,
    /// One value per segment, in axis units.
    pub values: Vec<f64>,
    /// One tooltip per segment (value with unit).
    pub tooltips: Vec<String>,
}

/// Estimates with intervals, one row each, around a zero line on a horizontal value axis (a
/// forest plot).
#[derive(Debug, Clone, PartialEq)]
pub struct IntervalChart {
    pub title: String,
    pub x: Axis,
    /// The rows, top to bottom.
    pub rows: Vec<IntervalRow>,
}

/// One estimate with its interval, in axis units, labelled left of the row.
#[derive(Debug, Clone, PartialEq)]
pub struct IntervalRow {
    pub label: String,
    pub estimate: f64,
    pub low: f64,
    pub high: f64,
    /// Filled marker when true, hollow otherwise.
    pub significant: bool,
    pub tooltip: String,
}

impl Axis {
    /// From 0 to a round value at or above `data_max` (1 when there is no positive data).
    pub fn from_zero(label: impl Into<String>, data_max: f64) -> Self {
        let positive = data_max.is_finite() && data_max > 0.0;
        Self::around_zero(label, 0.0, if positive { data_max } else { 1.0 })
    }

    /// Round bounds around `low..=high`, always including 0.
    pub fn around_zero(label: impl Into<String>, low: f64, high: f64) -> Self {
        let (low, high) = (low.min(0.0), high.max(0.0));
        let span = if high - low > 0.0 { high - low } else { 1.0 };
        let step = nice_step(span);
        Self {
            label: label.into(),
            min: (low / step).floor() * step,
            max: (high / step).ceil() * step,
            step,
        }
    }

    /// Exactly `min..=max` with ticks every `step`.
    pub fn fixed(label: impl Into<String>, min: f64, max: f64, step: f64) -> Self {
        Self {
            label: label.into(),
            min,
            max,
            step,
        }
    }

    pub fn max(&self) -> f64 {
        self.max
    }

    fn ticks(&self) -> Vec<f64> {
        let n = ((self.max - self.min) / self.step).round() as i64;
        (0..=n.max(0))
            .map(|i| self.min + i as f64 * self.step)
            .collect()
    }

    fn tick_label(&self, v: f64) -> String {
        // As many decimals as the step needs: 2.5 -> 1, 0.2 -> 1, 0.25 -> 2, 50 -> 0.
        let decimals = (0..4)
            .find(|d| {
                let scaled = self.step * 10f64.powi(*d);
                (scaled - scaled.round()).abs() < 1e-6
            })
            .unwrap_or(4) as usize;
        let text = format!("{v:.decimals$}");
        if text.starts_with('-') && text.trim_start_matches(['-', '0', '.']).is_empty() {
            text[1..].to_owned()
        } else {
            text.replace('-', "\u{2212}")
        }
    }

    /// Maps `v` to `[from, to]`, clamped to the axis.
    fn scale(&self, v: f64, from: f64, to: f64) -> f64 {
        let span = self.max - self.min;
        let t = if span > 0.0 {
            ((v - self.min) / span).clamp(0.0, 1.0)
        } else {
            0.0
        };
        from + t * (to - from)
    }
}

/// The smallest of 1, 2, 2.5, 5 x 10^k giving at most about six ticks over `span`.
fn nice_step(span: f64) -> f64 {
    let raw = span / 5.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let n = raw / magnitude;
    let m = [1.0, 2.0, 2.5, 5.0].into_iter().find(|m| n <= *m);
    m.unwrap_or(10.0) * magnitude
}

fn svg_open(out: &mut String, title: &str, height: f64) {
    let _ = write!(
        out,
        "<svg class=\"chart\" viewBox=\"0 0 {WIDTH:.0} {height:.0}\" role=\"img\" aria-label=\"{t}\">\n<title>{t}</title>\n",
        t = escape(title)
    );
}

fn text(out: &mut String, (x, y): (f64, f64), anchor: &str, class: &str, content: &str) {
    let _ = writeln!(
        out,
        "<text x=\"{x:.1}\" y=\"{y:.1}\" text-anchor=\"{anchor}\" class=\"{class}\">{}</text>",
        escape(content)
    );
}

/// A row's label, ending [`LABEL_GAP`] left of the plot's `left` edge at `y`: shortened to fit
/// the margin when it is longer, with the full text as its tooltip.
fn end_label(out: &mut String, left: f64, y: f64, content: &str) {
    let x = left - LABEL_GAP;
    let shown = fit(content, x - LABEL_EDGE);
    if shown == content {
        text(out, (x, y), "end", "bar-label", content);
    } else {
        let _ = writeln!(
            out,
            "<text x=\"{x:.1}\" y=\"{y:.1}\" text-anchor=\"end\" class=\"bar-label\"><title>{}</title>{}</text>",
            escape(content),
            escape(&shown)
        );
    }
}

fn dash_attr(style: Style) -> String {
    let d = DASHES[style.dash % DASHES.len()];
    if d.is_empty() {
        String::new()
    } else {
        format!(" stroke-dasharray=\"{d}\"")
    }
}

fn color(style: Style) -> &'static str {
    PALETTE[style.color % PALETTE.len()]
}

/// Lays legend entries out in rows below `top`; returns the SVG and the height used.
fn legend(entries: &[LegendEntry], left: f64, top: f64, swatch: Swatch) -> (String, f64) {
    let mut out = String::new();
    let (mut x, mut y) = (left, top + LEGEND_ROW / 2.0);
    let mut rows = if entries.is_empty() { 0.0 } else { 1.0 };
    for e in entries {
        let width = 34.0 + text_width(&e.label, FONT_PX) + 18.0;
        if x + width > WIDTH - MARGIN_RIGHT && x > left {
            x = left;
            y += LEGEND_ROW;
            rows += 1.0;
        }
        match swatch {
            Swatch::Line => {
                let _ = writeln!(
                    out,
                    "<line x1=\"{x:.1}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"{}\" stroke-width=\"2.5\"{}/>",
                    x + 26.0,
                    color(e.style),
                    dash_attr(e.style)
                );
            }
            Swatch::Block => {
                let _ = writeln!(
                    out,
                    "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"26\" height=\"10\" fill=\"{}\"/>",
                    y - 5.0,
                    color(e.style)
                );
            }
        }
        text(&mut out, (x + 32.0, y + 4.0), "start", "legend", &e.label);
        x += width;
    }
    (out, rows * LEGEND_ROW)
}

#[derive(Clone, Copy)]
enum Swatch {
    Line,
    Block,
}

/// The plotting area's edges, in SVG units.
#[derive(Clone, Copy)]
struct Frame {
    left: f64,
    right: f64,
    top: f64,
    bottom: f64,
}

impl Frame {
    /// The plot of a chart of `rows` rows `row_height` high, with room on the left for the
    /// widest of `labels`.
    fn labelled_rows<'a>(
        labels: impl Iterator<Item = &'a str>,
        rows: usize,
        row_height: f64,
    ) -> Self {
        Self {
            left: label_margin(labels),
            right: WIDTH - MARGIN_RIGHT,
            top: MARGIN_TOP,
            bottom: MARGIN_TOP + row_height * rows.max(1) as f64,
        }
    }

    /// Left, right, top, bottom.
    fn edges(self) -> (f64, f64, f64, f64) {
        (self.left, self.right, self.top, self.bottom)
    }
}

fn grid_x(out: &mut String, axis: &Axis, frame: Frame) {
    let (left, right, top, bottom) = frame.edges();
    for t in axis.ticks() {
        let x = axis.scale(t, left, right);
        let _ = writeln!(
            out,
            "<line class=\"grid\" x1=\"{x:.1}\" y1=\"{top:.1}\" x2=\"{x:.1}\" y2=\"{bottom:.1}\"/>"
        );
        let label = axis.tick_label(t);
        text(out, (x, bottom + 16.0), "middle", "tick", &label);
    }
    let middle = (left + right) / 2.0;
    text(
        out,
        (middle, bottom + 36.0),
        "middle",
        "axis-label",
        &axis.label,
    );
}

impl LineChart {
    /// The chart as an `<svg>` element.
    pub fn render(&self) -> String {
        let (left, right, top) = (MARGIN_LEFT, WIDTH - MARGIN_RIGHT, MARGIN_TOP);
        let bottom = top + PLOT_HEIGHT;
        let frame = Frame {
            left,
            right,
            top,
            bottom,
        };
        let entries: Vec<LegendEntry> = if self.legend.is_empty() {
            let entry = |l: &Line| LegendEntry {
                label: l.label.clone(),
                style: l.style,
            };
            self.lines.iter().map(entry).collect()
        } else {
            self.legend.clone()
        };
        let (legend_svg, legend_height) = legend(&entries, left, bottom + 48.0, Swatch::Line);
        let mut out = String::new();
        svg_open(&mut out, &self.title, bottom + 52.0 + legend_height + 6.0);
        let width = right - left;
        let _ = writeln!(
            out,
            "<rect class=\"plot\" x=\"{left:.1}\" y=\"{top:.1}\" width=\"{width:.1}\" height=\"{PLOT_HEIGHT:.1}\"/>"
        );
        grid_y(&mut out, &self.y, frame);
        grid_x(&mut out, &self.x, frame);
        axes(&mut out, frame);
        for line in &self.lines {
            self.line(&mut out, line, frame);
        }
        for rule in &self.rules {
            self.rule(&mut out, rule, frame);
        }
        out.push_str(&legend_svg);
        out.push_str("</svg>\n");
        out
    }

    /// A line as a path with its label as tooltip; nothing for a line without points.
    fn line(&self, out: &mut String, line: &Line, frame: Frame) {
        if line.points.is_empty() {
            return;
        }
        let mut d = String::new();
        for (i, (x, y)) in line.points.iter().enumerate() {
            let px = self.x.scale(*x, frame.left, frame.right);
            let py = self.y.scale(*y, frame.bottom, frame.top);
            if i == 0 {
                let _ = write!(d, "M{px:.1} {py:.1}");
            } else if line.step {
                let _ = write!(d, "H{px:.1}V{py:.1}");
            } else {
                let _ = write!(d, "L{px:.1} {py:.1}");
            }
        }
        let _ = writeln!(
            out,
            "<path class=\"series\" data-points=\"{}\" d=\"{d}\" stroke=\"{}\"{}><title>{}</title></path>",
            line.points.len(),
            color(line.style),
            dash_attr(line.style),
            escape(&line.label)
        );
    }

    /// A reference line across the plot with its label inside the plot.
    fn rule(&self, out: &mut String, rule: &Rule, frame: Frame) {
        let (left, right, top, bottom) = frame.edges();
        match rule {
            Rule::X(v, label) => {
                let x = self.x.scale(*v, left, right);
                let _ = writeln!(
                    out,
                    "<line class=\"rule\" x1=\"{x:.1}\" y1=\"{top:.1}\" x2=\"{x:.1}\" y2=\"{bottom:.1}\"/>"
                );
                let (anchor, dx) = if x > (left + right) / 2.0 {
                    ("end", -4.0)
                } else {
                    ("start", 4.0)
                };
                text(out, (x + dx, top + 12.0), anchor, "rule-label", label);
            }
            Rule::Y(v, label) => {
                let y = self.y.scale(*v, bottom, top);
                let _ = writeln!(
                    out,
                    "<line class=\"rule\" x1=\"{left:.1}\" y1=\"{y:.1}\" x2=\"{right:.1}\" y2=\"{y:.1}\"/>"
                );
                text(out, (left + 4.0, y - 4.0), "start", "rule-label", label);
            }
        }
    }
}

/// Horizontal grid lines with their tick values left of the plot, and the rotated axis label.
fn grid_y(out: &mut String, axis: &Axis, frame: Frame) {
    let (left, right, top, bottom) = frame.edges();
    for t in axis.ticks() {
        let y = axis.scale(t, bottom, top);
        let _ = writeln!(
            out,
            "<line class=\"grid\" x1=\"{left:.1}\" y1=\"{y:.1}\" x2=\"{right:.1}\" y2=\"{y:.1}\"/>"
        );
        let label = axis.tick_label(t);
        text(out, (left - 6.0, y + 4.0), "end", "tick", &label);
    }
    let ly = (top + bottom) / 2.0;
    let _ = writeln!(
        out,
        "<text x=\"16\" y=\"{ly:.1}\" text-anchor=\"middle\" class=\"axis-label\" transform=\"rotate(-90 16 {ly:.1})\">{}</text>",
        escape(&axis.label)
    );
}

/// The left and bottom axis lines of the plot.
fn axes(out: &mut String, frame: Frame) {
    let (left, right, top, bottom) = frame.edges();
    let _ = writeln!(
        out,
        "<path class=\"axis\" d=\"M{left:.1} {top:.1}V{bottom:.1}H{right:.1}\"/>"
    );
}

/// Left margin that fits the widest of `labels` (at most [`MAX_LABEL_MARGIN`]).
fn label_margin<'a>(labels: impl Iterator<Item = &'a str>) -> f64 {
    let widest = labels.map(|l| text_width(l, FONT_PX)).fold(0.0, f64::max);
    (widest + LABEL_GAP + LABEL_EDGE).clamp(80.0, MAX_LABEL_MARGIN)
}

impl StackedBars {
    /// The chart as an `<svg>` element.
    pub fn render(&self) -> String {
        const ROW: f64 = 28.0;
        const BAR: f64 = 18.0;
        let labels = self.bars.iter().map(|b| b.label.as_str());
        let frame = Frame::labelled_rows(labels, self.bars.len(), ROW);
        let (left, right, top, bottom) = frame.edges();
        let entries: Vec<LegendEntry> = self
            .segments
            .iter()
            .enumerate()
            .map(|(i, s)| LegendEntry {
                label: s.clone(),
                style: Style { color: i, dash: 0 },
            })
            .collect();
        let (legend_svg, legend_height) = legend(&entries, left, bottom + 48.0, Swatch::Block);
        let mut out = String::new();
        svg_open(&mut out, &self.title, bottom + 52.0 + legend_height + 6.0);
        grid_x(&mut out, &self.x, frame);
        for (i, bar) in self.bars.iter().enumerate() {
            let y = top + ROW * i as f64 + (ROW - BAR) / 2.0;
            end_label(&mut out, left, y + BAR / 2.0 + 4.0, &bar.label);
            let points = bar.values.len();
            let _ = writeln!(out, "<g class=\"bar\" data-points=\"{points}\">");
            let mut at = 0.0;
            for (j, v) in bar.values.iter().enumerate() {
                let x0 = self.x.scale(at, left, right);
                at += v.max(0.0);
                let x1 = self.x.scale(at, left, right);
                let tip = bar.tooltips.get(j).map_or("", String::as_str);
                let _ = writeln!(
                    out,
                    "<rect x=\"{x0:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{BAR:.1}\" fill=\"{}\"><title>{}</title></rect>",
                    (x1 - x0).max(0.0),
                    color(Style { color: j, dash: 0 }),
                    escape(&format!("{}: {tip}", bar.label))
                );
            }
            out.push_str("</g>\n");
        }
        axes(&mut out, frame);
        out.push_str(&legend_svg);
        out.push_str("</svg>\n");
        out
    }
}

impl IntervalChart {
    /// The chart as an `<svg>` element.
    pub fn render(&self) -> String {
        const ROW: f64 = 24.0;
        let labels = self.rows.iter().map(|r| r.label.as_str());
        let frame = Frame::labelled_rows(labels, self.rows.len(), ROW);
        let (left, right, top, bottom) = frame.edges();
        let mut out = String::new();
        svg_open(&mut out, &self.title, bottom + 52.0 + LEGEND_ROW + 6.0);
        grid_x(&mut out, &self.x, frame);
        let zero = self.x.scale(0.0, left, right);
        let _ = writeln!(
            out,
            "<line class=\"zero\" x1=\"{zero:.1}\" y1=\"{top:.1}\" x2=\"{zero:.1}\" y2=\"{bottom:.1}\"/>"
        );
        for (i, r) in self.rows.iter().enumerate() {
            let y = top + ROW * i as f64 + ROW / 2.0;
            end_label(&mut out, left, y + 4.0, &r.label);
            let [x0, x1, xe] = [r.low, r.high, r.estimate].map(|v| self.x.scale(v, left, right));
            let (y0, y1) = (y - 5.0, y + 5.0);
            let fill = if r.significant { PALETTE[1] } else { "#ffffff" };
            let _ = writeln!(
                out,
                "<g class=\"interval\" data-points=\"1\"><title>{}</title><line x1=\"{x0:.1}\" y1=\"{y:.1}\" x2=\"{x1:.1}\" y2=\"{y:.1}\"/><line x1=\"{x0:.1}\" y1=\"{y0:.1}\" x2=\"{x0:.1}\" y2=\"{y1:.1}\"/><line x1=\"{x1:.1}\" y1=\"{y0:.1}\" x2=\"{x1:.1}\" y2=\"{y1:.1}\"/><circle cx=\"{xe:.1}\" cy=\"{y:.1}\" r=\"4.5\" fill=\"{fill}\"/></g>",
                escape(&r.tooltip)
            );
        }
        axes(&mut out, frame);
        let ly = bottom + 48.0 + LEGEND_ROW / 2.0;
        for (dx, fill, label) in [
            (6.0, PALETTE[1], "significant"),
            (116.0, "#ffffff", "not significant (interval includes 0)"),
        ] {
            let x = left + dx;
            let _ = writeln!(
                out,
                "<circle cx=\"{x:.1}\" cy=\"{ly:.1}\" r=\"4.5\" fill=\"{fill}\" class=\"marker\"/>"
            );
            text(&mut out, (x + 10.0, ly + 4.0), "start", "legend", label);
        }
        out.push_str("</svg>\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_end_on_round_values() {
        let cases = [
            (6.52, 0.0, 8.0, 2.0),
            (0.93, 0.0, 1.0, 0.2),
            (100.0, 0.0, 100.0, 20.0),
            (0.0, 0.0, 1.0, 0.2),
            (339.0, 0.0, 400.0, 100.0),
            (11.0, 0.0, 12.5, 2.5),
        ];
        for (data_max, min, max, step) in cases {
            let a = Axis::from_zero("x", data_max);
            assert_eq!((a.min, a.max, a.step), (min, max, step), "{data_max}");
        }
        let a = Axis::around_zero("d", -31.0, 4.0);
        assert_eq!((a.min, a.max, a.step), (-40.0, 10.0, 10.0));
        assert_eq!(a.tick_label(-40.0), "\u{2212}40");
        assert_eq!(Axis::from_zero("x", 0.93).tick_label(0.4), "0.4");
        assert_eq!(Axis::from_zero("x", 11.0).tick_label(7.5), "7.5");
        assert_eq!(Axis::from_zero("x", 11.0).tick_label(10.0), "10.0");
    }

    #[test]
    fn line_chart_marks_data_and_clamps_to_the_plot() {
        let chart = LineChart {
            title: "t <1>".into(),
            x: Axis::from_zero("time (s)", 2.0),
            y: Axis::fixed("ready (%)", 0.0, 100.0, 20.0),
            lines: vec![Line {
                label: "a".into(),
                style: Style::default(),
                step: true,
                points: vec![(0.0, 0.0), (1.0, 50.0), (9.0, 100.0)],
            }],
            rules: vec![Rule::Y(95.0, "95 %".into())],
            legend: vec![],
        };
        let svg = chart.render();
        assert!(svg.starts_with("<svg class=\"chart\""), "{svg}");
        assert!(svg.contains("<title>t &lt;1&gt;</title>"));
        assert!(svg.contains("data-points=\"3\""));
        // x = 9 is beyond the axis (0..2) and drawn at its right edge.
        assert!(svg.contains("H696.0V14.0"), "{svg}");
        assert!(svg.contains(">ready (%)</text>"));
        assert!(svg.contains(">95 %</text>"));
    }

    /// The right-aligned labels of `svg`: anchor x, text shown, tooltip.
    fn end_labels(svg: &str) -> Vec<(f64, String, Option<String>)> {
        svg.split("<text ")
            .skip(1)
            .filter(|t| t.contains("text-anchor=\"end\" class=\"bar-label\""))
            .map(|t| {
                let x: f64 = t["x=\"".len()..]
                    .split('"')
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap();
                let body = &t[t.find('>').unwrap() + 1..t.find("</text>").unwrap()];
                match body.strip_prefix("<title>") {
                    Some(rest) => {
                        let (title, shown) = rest.split_once("</title>").unwrap();
                        (x, shown.to_owned(), Some(title.to_owned()))
                    }
                    None => (x, body.to_owned(), None),
                }
            })
            .collect()
    }

    #[test]
    fn long_bar_labels_fit_left_of_their_bars() {
        let label = |text: &str| Bar {
            label: text.into(),
            values: vec![1.0],
            tooltips: vec!["1 s".into()],
        };
        let long = "app / distribution-proxy (288 layer pulls, mean)";
        let longer = "app / distribution-proxy: stampede/app layer 4, 8.5 MB and some more words";
        let svg = StackedBars {
            title: "Time per layer by phase".into(),
            x: Axis::from_zero("s", 2.0),
            segments: vec!["fetch".into()],
            bars: vec![label("app / direct"), label(long), label(longer)],
        }
        .render();
        let labels = end_labels(&svg);
        assert_eq!(labels.len(), 3, "{svg}");
        for (x, shown, _) in &labels {
            let width = text_width(shown, FONT_PX);
            assert!(
                x - width >= 0.0,
                "{shown:?} is {width:.1} wide, ends at {x}: clipped"
            );
        }
        // The label fits whole; one too long for any margin is shortened, with the
        // full text as its tooltip.
        assert_eq!(labels[1].1, long);
        assert!(labels[2].1.ends_with('\u{2026}') && labels[2].1.len() < longer.len());
        assert_eq!(labels[2].2.as_deref(), Some(longer));
        // Chromium's width of the label in DejaVu Sans 13 px is 307.7.
        assert!((307.7..312.0).contains(&text_width(long, FONT_PX)));
    }

    #[test]
    fn bars_and_intervals_carry_data_points() {
        let bars = StackedBars {
            title: "b".into(),
            x: Axis::from_zero("ms", 10.0),
            segments: vec!["fetch".into(), "apply".into()],
            bars: vec![Bar {
                label: "full / direct".into(),
                values: vec![6.0, 4.0],
                tooltips: vec!["6 ms".into(), "4 ms".into()],
            }],
        }
        .render();
        assert!(bars.contains("<g class=\"bar\" data-points=\"2\">"));
        assert!(bars.contains("<title>full / direct: 6 ms</title>"));
        let forest = IntervalChart {
            title: "f".into(),
            x: Axis::around_zero("%", -10.0, 20.0),
            rows: vec![IntervalRow {
                label: "p95 pull".into(),
                estimate: 12.0,
                low: 4.0,
                high: 20.0,
                significant: true,
                tooltip: "+12 %".into(),
            }],
        }
        .render();
        assert!(forest.contains("class=\"interval\" data-points=\"1\""));
    }
}
