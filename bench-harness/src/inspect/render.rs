//! `inspect`'s tables for a terminal: one image ([`image_table`]) or two compared
//! ([`diff_table`]). Sizes in decimal units, times in ms or s, digests shortened to 12 hex
//! digits (`--json` has them whole). Renders only; every number comes from the cost it is given.

use std::fmt::Write as _;

use stampede_oci::Digest;

use super::diff::{Change, LayerSide, VariantDiff};
use super::{Count, ImageCost, LayerCost, Removal};
use crate::report::human::{self, bytes};
use crate::report::table::{Align, Cell, Table};

/// The report for one image: what it is, its layers, what it ships for nothing, its largest
/// files, the predicted pull and unpack times, and warnings.
pub fn image_table(c: &ImageCost) -> String {
    let mut out = String::new();
    write_identity(&mut out, c);
    write_layers(&mut out, c);
    write_filesystem(&mut out, c);
    write_largest_files(&mut out, c);
    write_wasted_files(&mut out, c);
    write_prediction(&mut out, c);
    for w in &c.warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    out
}

/// Image, digest, platform (and the others it has), manifest and config.
fn write_identity(out: &mut String, c: &ImageCost) {
    let _ = writeln!(out, "image     {}", c.source);
    let _ = writeln!(out, "digest    {} ({})", c.digest, c.media_type);
    let others: Vec<&str> = c
        .platforms
        .iter()
        .map(String::as_str)
        .filter(|p| *p != c.platform)
        .collect();
    let _ = writeln!(
        out,
        "platform  {}{}",
        c.platform,
        if others.is_empty() {
            String::new()
        } else {
            format!(" (the image also has {})", others.join(", "))
        }
    );
    let _ = writeln!(
        out,
        "manifest  {}  config {}\n",
        c.manifest_digest, c.config_digest
    );
}

/// One row per layer, a total row, and the legend.
fn write_layers(out: &mut String, c: &ImageCost) {
    let mut t = Table::text_then_numbers(
        &["layer", "digest", "format"],
        &[
            "compressed",
            "uncompressed",
            "ratio",
            "files",
            "file bytes",
            "wasted",
            "removes below",
            "fetch",
            "unpack",
        ],
    );
    for l in &c.layers {
        t.row(cells(layer_row(l)));
    }
    t.row(cells(total_row(c)));
    out.push_str(&t.plain());
    let _ = writeln!(
        out,
        "(fetch at {}; \"wasted\": the layer's files not in the final filesystem; \"removes below\": files it overwrites or deletes)\n",
        c.prediction.bandwidth
    );
}

fn layer_row(l: &LayerCost) -> Vec<String> {
    vec![
        l.index.to_string(),
        short(&l.digest),
        l.compression.name().to_owned(),
        bytes(l.compressed_bytes),
        bytes(l.uncompressed_bytes),
        format!("{:.1}x", l.compression_ratio),
        l.files.files.to_string(),
        bytes(l.files.bytes),
        count(l.wasted),
        count(Count {
            files: l.overwrites.files + l.deletes.files,
            bytes: l.overwrites.bytes + l.deletes.bytes,
        }),
        seconds(l.fetch_seconds),
        l.unpack_seconds.map_or_else(|| "-".to_owned(), seconds),
    ]
}

fn total_row(c: &ImageCost) -> Vec<String> {
    let tot = &c.totals;
    vec![
        "total".to_owned(),
        String::new(),
        String::new(),
        bytes(tot.compressed_bytes),
        bytes(tot.uncompressed_bytes),
        format!("{:.1}x", tot.compression_ratio),
        tot.shipped.files.to_string(),
        bytes(tot.shipped.bytes),
        count(Count {
            files: c.waste.overwritten.files + c.waste.deleted.files,
            bytes: c.waste.wasted_bytes,
        }),
        String::new(),
        seconds(c.layers.iter().map(|l| l.fetch_seconds).sum()),
        c.prediction
            .unpack_seconds
            .map_or_else(|| "-".to_owned(), seconds),
    ]
}

/// The final filesystem against what was shipped, and what was shipped for nothing.
fn write_filesystem(out: &mut String, c: &ImageCost) {
    let tot = &c.totals;
    let _ = writeln!(
        out,
        "final filesystem: {}, {}; shipped: {}, {}",
        human::count(tot.visible.files, "file"),
        bytes(tot.visible.bytes),
        human::count(tot.shipped.files, "file"),
        bytes(tot.shipped.bytes)
    );
    let _ = writeln!(
        out,
        "shipped for nothing: {} ({} overwritten by later entries, {}; {} deleted by whiteouts, {}), about {} compressed\n",
        bytes(c.waste.wasted_bytes),
        human::count(c.waste.overwritten.files, "file"),
        bytes(c.waste.overwritten.bytes),
        c.waste.deleted.files,
        bytes(c.waste.deleted.bytes),
        bytes(c.waste.wasted_compressed_bytes_estimate)
    );
}

/// The largest files of the final filesystem, if any.
fn write_largest_files(out: &mut String, c: &ImageCost) {
    let columns = [
        ("size", Align::Right),
        ("layer", Align::Right),
        ("path", Align::Left),
    ];
    let rows = c
        .largest_files
        .iter()
        .map(|f| vec![bytes(f.size_bytes), f.layer.to_string(), f.path.clone()]);
    write_file_table(out, "largest files", &columns, rows);
}

/// The largest files shipped for nothing, with what removed them, if any.
fn write_wasted_files(out: &mut String, c: &ImageCost) {
    let columns = [
        ("size", Align::Right),
        ("layer", Align::Right),
        ("removed by", Align::Right),
        ("how", Align::Left),
        ("path", Align::Left),
    ];
    let rows = c.wasted_files.iter().map(|f| {
        let how = match f.how {
            Removal::Overwritten => "overwritten",
            Removal::Deleted => "deleted",
        };
        vec![
            bytes(f.size_bytes),
            f.layer.to_string(),
            f.removed_by.to_string(),
            how.to_owned(),
            f.path.clone(),
        ]
    });
    write_file_table(out, "largest files shipped for nothing", &columns, rows);
}

/// A titled, indented table of files; nothing when there are none.
fn write_file_table(
    out: &mut String,
    title: &str,
    columns: &[(&str, Align)],
    rows: impl ExactSizeIterator<Item = Vec<String>>,
) {
    if rows.len() == 0 {
        return;
    }
    let mut t = Table::new(columns);
    for r in rows {
        t.row(cells(r));
    }
    let _ = writeln!(out, "{title}\n{}", indent(&t.plain()));
}

/// The predicted pull and unpack times, and the unpack throughput they come from.
fn write_prediction(out: &mut String, c: &ImageCost) {
    let p = &c.prediction;
    let _ = write!(
        out,
        "predicted at {}: pull {} ({})",
        p.bandwidth,
        seconds(p.pull_seconds),
        bytes(p.pull_bytes)
    );
    match (p.unpack_seconds, p.total_seconds) {
        (Some(u), Some(total)) => {
            let _ = writeln!(
                out,
                ", unpack {}, pull then unpack {} (a runtime unpacking while it fetches: from {})",
                seconds(u),
                seconds(total),
                seconds(p.pull_seconds.max(u))
            );
        }
        _ => out.push_str(", unpack not measured\n"),
    }
    for m in &c.unpack_throughput {
        let _ = writeln!(
            out,
            "unpack on this machine: {} {}/s (layer {}: {} tar, {} in {}, {} of it decompressing)",
            m.compression.name(),
            bytes(m.bytes_per_sec as u64),
            short(&m.sample_layer),
            bytes(m.sample_uncompressed_bytes),
            human::count(m.sample_files, "file"),
            seconds(m.seconds),
            seconds(m.decompress_seconds)
        );
    }
}

/// The comparison of two images: layer by layer, the totals side by side, and what a node
/// holding one downloads for the other.
pub fn diff_table(d: &VariantDiff) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "A  {}  {}", d.a.source, d.a.digest);
    let _ = writeln!(out, "B  {}  {}\n", d.b.source, d.b.digest);
    out.push_str(&layer_changes(d));
    out.push('\n');
    out.push_str(&side_by_side(d));
    let w = &d.wire;
    let _ = writeln!(
        out,
        "\nshared layers: {} ({}); B on a node already holding A downloads {} in {} at {} (saves {}); A on a node holding B downloads {}",
        w.shared_layers,
        bytes(w.shared_bytes),
        bytes(w.b_after_a_bytes),
        seconds(w.b_after_a_seconds),
        d.bandwidth,
        bytes(w.b_after_a_saved_bytes),
        bytes(w.a_after_b_bytes)
    );
    out
}

/// Layer by layer: how A's and B's layers at each position compare.
fn layer_changes(d: &VariantDiff) -> String {
    let mut t = Table::text_then_numbers(
        &["layer", "change"],
        &[
            "A digest",
            "A format",
            "A compressed",
            "B digest",
            "B format",
            "B compressed",
            "B held by A",
        ],
    );
    let side = |s: &Option<LayerSide>| match s {
        Some(l) => (
            short(&l.digest),
            l.compression.name().to_owned(),
            bytes(l.compressed_bytes),
        ),
        None => ("-".to_owned(), "-".to_owned(), "-".to_owned()),
    };
    for r in &d.layers {
        let (ad, af, ac) = side(&r.a);
        let (bd, bf, bc) = side(&r.b);
        t.row(cells(vec![
            r.position.to_string(),
            change_name(r.change).to_owned(),
            ad,
            af,
            ac,
            bd,
            bf,
            bc,
            if r.b.is_none() {
                String::new()
            } else if r.b_held_by_a {
                "yes".to_owned()
            } else {
                "no".to_owned()
            },
        ]));
    }
    t.plain()
}

fn change_name(change: Change) -> &'static str {
    match change {
        Change::Same => "same",
        Change::Recompressed => "recompressed",
        Change::Changed => "changed",
        Change::Added => "added",
        Change::Removed => "removed",
    }
}

/// A's and B's totals and predicted times side by side, with B - A.
fn side_by_side(d: &VariantDiff) -> String {
    let mut t = Table::text_then_numbers(&[""], &["A", "B", "B - A"]);
    let signed = |a: u64, b: u64| {
        let (d, sign) = if b >= a { (b - a, "+") } else { (a - b, "-") };
        format!("{sign}{}", bytes(d))
    };
    let counts = |name: &str, x: u64, y: u64| {
        let delta = format!("{:+}", y as i64 - x as i64);
        cells(vec![name.into(), x.to_string(), y.to_string(), delta])
    };
    let (a, b) = (&d.a, &d.b);
    t.row(counts("layers", a.layers as u64, b.layers as u64));
    for (name, x, y) in [
        ("compressed", a.compressed_bytes, b.compressed_bytes),
        ("uncompressed", a.uncompressed_bytes, b.uncompressed_bytes),
        ("file bytes", a.file_bytes, b.file_bytes),
        ("shipped for nothing", a.wasted_bytes, b.wasted_bytes),
        ("cold pull", a.pull_bytes, b.pull_bytes),
    ] {
        t.row(cells(vec![name.into(), bytes(x), bytes(y), signed(x, y)]));
    }
    t.row(counts("files", a.files, b.files));
    t.row(cells(vec![
        format!("pull at {}", d.bandwidth),
        seconds(a.pull_seconds),
        seconds(b.pull_seconds),
        signed_seconds(b.pull_seconds - a.pull_seconds),
    ]));
    if let (Some(ua), Some(ub)) = (a.unpack_seconds, b.unpack_seconds) {
        t.row(cells(vec![
            "unpack".into(),
            seconds(ua),
            seconds(ub),
            signed_seconds(ub - ua),
        ]));
    }
    t.plain()
}

fn short(d: &Digest) -> String {
    format!("{}:{}", d.algorithm(), &d.hex()[..12])
}

fn count(c: Count) -> String {
    if c.files == 0 {
        "-".to_owned()
    } else {
        format!("{} ({})", bytes(c.bytes), c.files)
    }
}

fn seconds(s: f64) -> String {
    if s < 1.0 {
        format!("{:.0} ms", s * 1e3)
    } else if s < 100.0 {
        format!("{s:.2} s")
    } else {
        format!("{s:.0} s")
    }
}

/// A difference in seconds to two decimals with its sign; one that rounds to zero reads
/// `0.00 s`, never `-0.00 s`.
fn signed_seconds(d: f64) -> String {
    let rounded = (d * 100.0).round() / 100.0;
    if rounded == 0.0 {
        "0.00 s".to_owned()
    } else {
        format!("{rounded:+.2} s")
    }
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("  {l}\n")).collect()
}

/// A row of plain cells.
fn cells(texts: Vec<String>) -> impl Iterator<Item = Cell> {
    texts.into_iter().map(Cell::from)
}

#[cfg(test)]
mod tests {
    use super::super::diff::{Side, Wire};
    use super::*;

    fn side(pull_seconds: f64, unpack_seconds: f64) -> Side {
        Side {
            source: "oci:/tmp/a".to_owned(),
            digest: format!("sha256:{}", "a".repeat(64)).parse().unwrap(),
            layers: 1,
            compressed_bytes: 1_000,
            uncompressed_bytes: 2_000,
            files: 3,
            file_bytes: 1_500,
            wasted_bytes: 0,
            pull_bytes: 1_200,
            pull_seconds,
            unpack_seconds: Some(unpack_seconds),
        }
    }

    #[test]
    fn a_difference_that_rounds_to_zero_has_no_minus_sign() {
        let d = VariantDiff {
            a: side(0.5012, 0.3004),
            b: side(0.5, 0.3),
            layers: Vec::new(),
            wire: Wire {
                shared_layers: 1,
                shared_bytes: 1_000,
                b_after_a_bytes: 0,
                b_after_a_saved_bytes: 1_000,
                b_after_a_seconds: 0.0,
                a_after_b_bytes: 0,
                pull_bytes_delta: 0,
                pull_seconds_delta: -0.0012,
            },
            bandwidth: "200Mbit".to_owned(),
        };
        let text = diff_table(&d);
        assert!(!text.contains("-0.00"), "{text}");
        let unpack = text
            .lines()
            .find(|l| l.trim_start().starts_with("unpack"))
            .unwrap();
        assert!(unpack.trim_end().ends_with("0.00 s"), "{unpack}");
        assert_eq!(signed_seconds(1.234), "+1.23 s");
        assert_eq!(signed_seconds(-0.5), "-0.50 s");
    }
}
