//! What the model knows of an image: per blob its compressed and uncompressed size and its
//! compression, and how many manifest requests a pull makes. No image byte is generated: sizes
//! come from a synthetic spec (estimated the way the generator compresses), from an OCI layout's
//! manifest, or from the image facts a measured `result.json` recorded (exact).

use std::collections::BTreeMap;

use serde::Deserialize as _;
use stampede_oci::Compression;

use crate::image::SyntheticImage;
use crate::result::ImageFacts;
use crate::scenario::{ImageSource, Scenario, Variant};

/// Bytes of tar header and padding per file, as the generator's layers carry on average.
const TAR_BYTES_PER_FILE: u64 = 600;
/// What the compressible part of a synthetic layer shrinks to (gzip and zstd alike, measured on
/// the generator's output: a layer of compressibility 0.5 is 50.8 % of its content).
const COMPRESSIBLE_RATIO: f64 = 0.015;
/// Uncompressed-to-compressed ratio assumed for a layout's compressed layers, whose manifest
/// does not give the uncompressed size.
const LAYOUT_EXPANSION: f64 = 2.0;
/// Bytes of a manifest or config when the source does not say.
const SMALL_DOCUMENT_BYTES: u64 = 1_000;

/// One blob a pull fetches.
#[derive(Debug, Clone, PartialEq)]
pub struct Blob {
    /// Identity across images (a digest, or `variant/layer-N` for estimates): caches coalesce
    /// by it.
    pub key: String,
    /// Bytes on the wire.
    pub bytes: u64,
    /// Bytes after decompression (what unpack writes).
    pub uncompressed_bytes: u64,
    /// Layer compression; the config is `None`.
    pub compression: Compression,
    /// A layer (unpacked), not the config.
    pub layer: bool,
}

/// An image as the model pulls it.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    pub name: String,
    /// Manifest GETs per pull (index and platform manifest, or one manifest).
    pub manifest_requests: u32,
    /// Bytes of those manifests together.
    pub manifest_bytes: u64,
    /// The config, then the layers base first.
    pub blobs: Vec<Blob>,
}

impl Image {
    /// Compressed bytes one pull downloads (manifests, config, layers).
    pub fn pull_bytes(&self) -> u64 {
        self.manifest_bytes + self.blobs.iter().map(|b| b.bytes).sum::<u64>()
    }
}

/// Why an image cannot be modelled.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The model has no sizes for this source.
    #[error("variants[{index}].registry ({name}): the model reads layer sizes from a synthetic spec, an OCI layout or a measured result, not from a remote registry; copy the image into a layout (skopeo copy docker://IMAGE oci:DIR:TAG) and use [variants.layout], or model a measured run with --against")]
    Remote { index: usize, name: String },
    /// The layout could not be read.
    #[error("variants[{index}].layout ({name}): read the layout")]
    Layout {
        index: usize,
        name: String,
        #[source]
        source: Box<crate::image::import::ImportError>,
    },
}

/// Every variant's image, by name: from `measured` facts when given (a result's `images`),
/// else from the scenario's sources.
///
/// # Errors
/// [`ImageError`] naming the variant and field the model cannot read sizes from.
pub fn images(
    scenario: &Scenario,
    measured: Option<&BTreeMap<String, ImageFacts>>,
) -> Result<BTreeMap<String, Image>, ImageError> {
    let image = |(index, v): (usize, &Variant)| {
        let facts = measured.and_then(|m| m.get(&v.name));
        let image = facts.and_then(|f| from_facts(&v.name, f));
        Ok((
            v.name.clone(),
            image.map_or_else(|| from_source(index, v), Ok)?,
        ))
    };
    scenario.variants.iter().enumerate().map(image).collect()
}

fn from_source(index: usize, v: &Variant) -> Result<Image, ImageError> {
    match &v.source {
        ImageSource::Synthetic(spec) => Ok(synthetic(&v.name, spec)),
        ImageSource::Layout(l) => {
            let layout = crate::image::import::import_layout(&l.path, l.tag.as_deref()).map_err(
                |source| ImageError::Layout {
                    index,
                    name: v.name.clone(),
                    source: Box::new(source),
                },
            )?;
            Ok(from_layout(&v.name, &layout))
        }
        ImageSource::Registry(_) => Err(ImageError::Remote {
            index,
            name: v.name.clone(),
        }),
    }
}

/// A synthetic image's sizes, estimated as the generator makes them: incompressible content
/// stays its size, compressible content shrinks to [`COMPRESSIBLE_RATIO`].
pub fn synthetic(name: &str, spec: &SyntheticImage) -> Image {
    let blobs = std::iter::once(config_blob(format!("{name}/config"), SMALL_DOCUMENT_BYTES))
        .chain(spec.layers.iter().enumerate().map(|(i, l)| {
            let content = l.size.0;
            let tar = content + u64::from(l.files) * TAR_BYTES_PER_FILE;
            let c = l.compressibility.clamp(0.0, 1.0);
            let bytes = match spec.compression {
                Compression::None => tar,
                Compression::Gzip | Compression::Zstd => {
                    (content as f64 * ((1.0 - c) + c * COMPRESSIBLE_RATIO)) as u64
                        + u64::from(l.files) * 64
                }
            };
            Blob {
                key: format!("{name}/layer-{i}"),
                bytes: bytes.max(1),
                uncompressed_bytes: tar,
                compression: spec.compression,
                layer: true,
            }
        }))
        .collect();
    let requests = manifest_requests(spec.platforms.len() > 1);
    Image {
        name: name.to_owned(),
        manifest_requests: requests,
        manifest_bytes: u64::from(requests) * SMALL_DOCUMENT_BYTES,
        blobs,
    }
}

/// Manifest GETs per pull: the index, then the platform's manifest; or the one manifest.
fn manifest_requests(index: bool) -> u32 {
    1 + u32::from(index)
}

fn config_blob(key: String, bytes: u64) -> Blob {
    Blob {
        key,
        bytes,
        uncompressed_bytes: bytes,
        compression: Compression::None,
        layer: false,
    }
}

fn from_layout(name: &str, layout: &crate::image::LayoutImage) -> Image {
    let platform = layout
        .select(&stampede_oci::Platform::host())
        .ok()
        .or_else(|| layout.platforms.first());
    let mut blobs = Vec::new();
    let mut manifest_bytes = 0;
    if let Some(p) = platform {
        manifest_bytes += p.manifest.size_bytes;
        blobs.push(config_blob(
            p.config.digest.to_string(),
            p.config.size_bytes,
        ));
        for l in &p.layers {
            let compression =
                Compression::from_media_type(&l.media_type).unwrap_or(Compression::Gzip);
            let expansion = match compression {
                Compression::None => 1.0,
                Compression::Gzip | Compression::Zstd => LAYOUT_EXPANSION,
            };
            blobs.push(Blob {
                key: l.digest.to_string(),
                bytes: l.size_bytes,
                uncompressed_bytes: (l.size_bytes as f64 * expansion) as u64,
                compression,
                layer: true,
            });
        }
    }
    let index = layout.is_index();
    if index {
        manifest_bytes += layout.top.size_bytes;
    }
    Image {
        name: name.to_owned(),
        manifest_requests: manifest_requests(index),
        manifest_bytes,
        blobs,
    }
}

/// The exact sizes a measured run recorded for its generated image, if it recorded layers.
fn from_facts(name: &str, facts: &ImageFacts) -> Option<Image> {
    let layers = facts.details.get("layers")?.as_array()?;
    let platform = facts.details.get("platforms")?.as_array()?.first()?;
    let size = |v: &serde_json::Value, k: &str| v.get(k).and_then(serde_json::Value::as_u64);
    let config = platform.get("config")?;
    let mut blobs = vec![config_blob(
        config.get("digest")?.as_str()?.to_owned(),
        size(config, "size_bytes")?,
    )];
    for l in layers {
        let compression = l
            .get("compression")
            .and_then(|c| Compression::deserialize(c).ok())
            .unwrap_or(Compression::Gzip);
        blobs.push(Blob {
            key: l.get("digest")?.as_str()?.to_owned(),
            bytes: size(l, "compressed_bytes")?,
            uncompressed_bytes: size(l, "uncompressed_bytes")?,
            compression,
            layer: true,
        });
    }
    let blob_bytes: u64 = blobs.iter().map(|b| b.bytes).sum();
    let platforms = facts
        .details
        .get("platforms")
        .and_then(serde_json::Value::as_array)
        .map_or(1, Vec::len);
    Some(Image {
        name: name.to_owned(),
        manifest_requests: manifest_requests(platforms > 1),
        manifest_bytes: facts.compressed_bytes.saturating_sub(blob_bytes),
        blobs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_sizes_follow_compressibility() {
        let spec: SyntheticImage = toml::from_str(
            "compression = \"gzip\"\nplatforms = [\"linux/amd64\", \"linux/arm64\"]\n[[layers]]\nsize = \"32MiB\"\nfiles = 64\n[[layers]]\nsize = \"8MiB\"\nfiles = 8\ncompressibility = 0.0\n",
        )
        .unwrap();
        let img = synthetic("full", &spec);
        assert_eq!(img.manifest_requests, 2);
        assert_eq!(img.blobs.len(), 3);
        // The generator made 17,031,254 bytes of the first layer; the estimate is within 1 %.
        let first = img.blobs[1].bytes as f64;
        assert!((first / 17_031_254.0 - 1.0).abs() < 0.01, "{first}");
        // Incompressible content does not shrink.
        assert!(img.blobs[2].bytes >= 8 << 20);
        assert!(img.blobs.iter().skip(1).all(|b| b.layer));
    }
}
