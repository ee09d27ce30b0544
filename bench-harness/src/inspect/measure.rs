//! How fast this machine unpacks an image's layers, measured rather than guessed: per
//! compression format the image uses, one of its own layers (the largest of at most
//! [`SAMPLE_MAX_COMPRESSED_BYTES`] compressed, else the smallest) is unpacked by the harness's
//! unpacker (`crate::nodes::unpack`, the code a simulated node runs) into a fresh temporary
//! directory, from the page cache and without fsync, as a node's is right after its pull. The
//! wall time gives uncompressed tar bytes per second; a layer's predicted unpack time is its
//! uncompressed size over its format's throughput. One run, no warm-up: a figure for planning,
//! not a benchmark.

use std::path::Path;
use std::time::Instant;

use stampede_oci::{Compression, Digest};

use crate::nodes::unpack::{unpack_layer_file, UnpackError, UnpackOptions};

/// Largest layer (compressed bytes) preferred as a sample.
pub const SAMPLE_MAX_COMPRESSED_BYTES: u64 = 64 * 1024 * 1024;

/// A measured unpack throughput for one compression format.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Throughput {
    pub compression: Compression,
    /// The layer unpacked.
    pub sample_layer: Digest,
    pub sample_compressed_bytes: u64,
    pub sample_uncompressed_bytes: u64,
    /// Regular files it wrote.
    pub sample_files: u64,
    /// Wall time of the unpack, in seconds.
    pub seconds: f64,
    /// Of which inside the decoder, in seconds.
    pub decompress_seconds: f64,
    /// Uncompressed tar bytes per second.
    pub bytes_per_sec: f64,
}

/// Picks the sample layer for each compression in `layers` (compression, compressed bytes), by
/// index, in order of first appearance.
pub fn pick_samples(layers: &[(Compression, u64)]) -> Vec<usize> {
    let mut formats: Vec<Compression> = Vec::new();
    for (c, _) in layers {
        if !formats.contains(c) {
            formats.push(*c);
        }
    }
    formats
        .into_iter()
        .filter_map(|format| {
            let of_format = || {
                layers
                    .iter()
                    .enumerate()
                    .filter(move |(_, (c, _))| *c == format)
            };
            of_format()
                .filter(|(_, (_, size))| *size <= SAMPLE_MAX_COMPRESSED_BYTES)
                .max_by_key(|(i, (_, size))| (*size, std::cmp::Reverse(*i)))
                .or_else(|| of_format().min_by_key(|(_, (_, size))| *size))
                .map(|(i, _)| i)
        })
        .collect()
}

/// Unpacks `blob` (layer `digest`, compressed as `compression`) into a temporary directory
/// under `work_dir`, removed afterwards, and times it. Blocking.
///
/// # Errors
/// [`UnpackError`] when the layer cannot be unpacked (or the directory created).
pub fn measure(
    blob: &Path,
    digest: &Digest,
    compression: Compression,
    work_dir: &Path,
) -> Result<Throughput, UnpackError> {
    let root = tempfile::Builder::new()
        .prefix("stampede-unpack-sample-")
        .tempdir_in(work_dir)
        .map_err(|source| UnpackError::Root {
            path: work_dir.to_owned(),
            source,
        })?;
    let started = Instant::now();
    let stats = unpack_layer_file(
        blob,
        compression,
        &root.path().join("rootfs"),
        &UnpackOptions::default(),
    )?;
    let seconds = started.elapsed().as_secs_f64().max(1e-6);
    Ok(Throughput {
        compression,
        sample_layer: digest.clone(),
        sample_compressed_bytes: stats.compressed_bytes,
        sample_uncompressed_bytes: stats.uncompressed_bytes,
        sample_files: stats.regular_files,
        seconds,
        decompress_seconds: stats.decompress.as_secs_f64(),
        bytes_per_sec: stats.uncompressed_bytes as f64 / seconds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_the_largest_under_the_cap_per_format() {
        use Compression::*;
        let big = SAMPLE_MAX_COMPRESSED_BYTES + 1;
        let layers = [
            (Gzip, 10),
            (Gzip, 500),
            (Zstd, big),
            (Gzip, big),
            (Zstd, big + 5),
            (Gzip, 500),
        ];
        assert_eq!(pick_samples(&layers), [1, 2]);
        assert_eq!(pick_samples(&[]), Vec::<usize>::new());
    }
}
