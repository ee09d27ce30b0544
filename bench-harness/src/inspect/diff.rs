//! Two images side by side (`inspect A B`): what changed layer by layer, and what that does to
//! the bytes on the wire. Layers are compared by position (a rebuild keeps its base at the bottom)
//! and matched by digest (what a node already holding A does not download again for B) and by
//! diff ID (the same content compressed differently, as a zstd rebuild of a gzip image is).
//!
//! Pure arithmetic over two [`ImageCost`]s; no I/O.

use std::collections::HashSet;

use stampede_oci::{Compression, Digest};

use super::ImageCost;

/// How the layers at one position compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// The same blob.
    Same,
    /// The same tar content (diff ID), another blob: recompressed.
    Recompressed,
    /// Different content.
    Changed,
    /// Only B has a layer here.
    Added,
    /// Only A has a layer here.
    Removed,
}

/// One image's layer, as the diff shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LayerSide {
    pub digest: Digest,
    pub compression: Compression,
    pub compressed_bytes: u64,
    pub uncompressed_bytes: u64,
    /// Regular files shipped.
    pub files: u64,
}

/// The layers at one position of A and B.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LayerRow {
    /// Position, 0 = base.
    pub position: usize,
    pub a: Option<LayerSide>,
    pub b: Option<LayerSide>,
    pub change: Change,
    /// Whether B's layer here is a blob A has (anywhere): a node holding A skips it.
    pub b_held_by_a: bool,
}

/// One image's totals, as the diff shows them.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Side {
    pub source: String,
    /// What it resolved to.
    pub digest: Digest,
    pub layers: usize,
    pub compressed_bytes: u64,
    pub uncompressed_bytes: u64,
    /// Regular files of the final filesystem.
    pub files: u64,
    pub file_bytes: u64,
    /// Bytes shipped for nothing.
    pub wasted_bytes: u64,
    pub pull_bytes: u64,
    /// Predicted cold pull time, in seconds.
    pub pull_seconds: f64,
    /// Predicted unpack time, in seconds, when measured.
    pub unpack_seconds: Option<f64>,
}

/// Bytes over the wire, cold and warm.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Wire {
    /// Layers (distinct blobs) both images have.
    pub shared_layers: usize,
    pub shared_bytes: u64,
    /// B's pull on a node that already holds A: B's manifest(s), config and the layers A lacks.
    pub b_after_a_bytes: u64,
    /// What holding A saves on B's pull.
    pub b_after_a_saved_bytes: u64,
    /// `b_after_a_bytes` at the bandwidth, in seconds.
    pub b_after_a_seconds: f64,
    /// A's pull on a node that already holds B.
    pub a_after_b_bytes: u64,
    /// B's cold pull minus A's, in bytes (negative: B is smaller).
    pub pull_bytes_delta: i64,
    /// B's cold pull time minus A's, in seconds.
    pub pull_seconds_delta: f64,
}

/// A and B compared.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct VariantDiff {
    pub a: Side,
    pub b: Side,
    pub layers: Vec<LayerRow>,
    pub wire: Wire,
    /// The bandwidth the times assume (`"200Mbit"`).
    pub bandwidth: String,
}

/// Compares `a` and `b`, both inspected with the same options.
pub fn diff(a: &ImageCost, b: &ImageCost) -> VariantDiff {
    let a_blobs: HashSet<&Digest> = a.layers.iter().map(|l| &l.digest).collect();
    let b_blobs: HashSet<&Digest> = b.layers.iter().map(|l| &l.digest).collect();
    let side_layer = |l: &super::LayerCost| LayerSide {
        digest: l.digest.clone(),
        compression: l.compression,
        compressed_bytes: l.compressed_bytes,
        uncompressed_bytes: l.uncompressed_bytes,
        files: l.files.files,
    };
    let rows = (0..a.layers.len().max(b.layers.len()))
        .map(|position| {
            let (la, lb) = (a.layers.get(position), b.layers.get(position));
            let change = match (la, lb) {
                (Some(x), Some(y)) if x.digest == y.digest => Change::Same,
                (Some(x), Some(y)) if x.diff_id == y.diff_id => Change::Recompressed,
                (Some(_), Some(_)) => Change::Changed,
                (None, _) => Change::Added,
                (Some(_), None) => Change::Removed,
            };
            LayerRow {
                position,
                a: la.map(side_layer),
                b: lb.map(side_layer),
                change,
                b_held_by_a: lb.is_some_and(|l| a_blobs.contains(&l.digest)),
            }
        })
        .collect();

    // Distinct shared blobs, counted once even when an image repeats a layer.
    let mut seen = HashSet::new();
    let shared_bytes: u64 = b
        .layers
        .iter()
        .filter(|l| a_blobs.contains(&l.digest) && seen.insert(&l.digest))
        .map(|l| l.compressed_bytes)
        .sum();
    let shared_layers = seen.len();
    let missing = |x: &ImageCost, held: &HashSet<&Digest>| -> u64 {
        let mut fetched = HashSet::new();
        let layers: u64 = x
            .layers
            .iter()
            .filter(|l| !held.contains(&l.digest) && fetched.insert(&l.digest))
            .map(|l| l.compressed_bytes)
            .sum();
        x.prediction.pull_bytes - x.totals.compressed_bytes + layers
    };
    let b_after_a_bytes = missing(b, &a_blobs);
    let a_after_b_bytes = missing(a, &b_blobs);
    let bandwidth = b.prediction.bandwidth_bytes_per_sec as f64;
    let side = |x: &ImageCost| Side {
        source: x.source.clone(),
        digest: x.digest.clone(),
        layers: x.layers.len(),
        compressed_bytes: x.totals.compressed_bytes,
        uncompressed_bytes: x.totals.uncompressed_bytes,
        files: x.totals.visible.files,
        file_bytes: x.totals.visible.bytes,
        wasted_bytes: x.waste.wasted_bytes,
        pull_bytes: x.prediction.pull_bytes,
        pull_seconds: x.prediction.pull_seconds,
        unpack_seconds: x.prediction.unpack_seconds,
    };
    VariantDiff {
        a: side(a),
        b: side(b),
        layers: rows,
        wire: Wire {
            shared_layers,
            shared_bytes,
            b_after_a_bytes,
            b_after_a_saved_bytes: b.prediction.pull_bytes - b_after_a_bytes,
            b_after_a_seconds: b_after_a_bytes as f64 / bandwidth,
            a_after_b_bytes,
            pull_bytes_delta: b.prediction.pull_bytes as i64 - a.prediction.pull_bytes as i64,
            pull_seconds_delta: b.prediction.pull_seconds - a.prediction.pull_seconds,
        },
        bandwidth: b.prediction.bandwidth.clone(),
    }
}
