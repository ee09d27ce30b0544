//! The synthetic image spec a scenario writes under `[variants.synthetic]`: what layers an image
//! has, how many files of what sizes each holds, how compressible they are, and how layers are
//! compressed. Generation from the spec lives in `generate.rs`; this file only describes and
//! validates.

use stampede_oci::Compression;

use crate::units::ByteSize;

/// A synthetic image, generated deterministically from this spec and a seed.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyntheticImage {
    /// Layers, base first. At least one.
    pub layers: Vec<LayerSpec>,
    /// Layer compression: `"gzip"` (default), `"zstd"` or `"none"`.
    #[serde(default = "default_compression")]
    pub compression: Compression,
    /// Compression level: gzip 1-9 (default 6), zstd 1-19 (default 3). Ignored for `"none"`.
    #[serde(default)]
    pub level: Option<i32>,
    /// Platforms the image is built for, `os/arch[/variant]`. One platform gives a plain
    /// manifest; several give an index whose per-platform manifests share the same layers.
    #[serde(default = "default_platforms")]
    pub platforms: Vec<String>,
    /// Manifest flavour: `"oci"` (default) or `"docker"` (schema2 media types).
    #[serde(default)]
    pub format: ManifestFormat,
}

/// Which media types the generated manifests and layers use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ManifestFormat {
    /// OCI image manifest / index.
    #[default]
    Oci,
    /// Docker schema2 manifest / manifest list.
    Docker,
}

/// One layer of a synthetic image.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerSpec {
    /// Total bytes of file content in the layer, before compression.
    pub size: ByteSize,
    /// Number of regular files the content is split into. At least one.
    pub files: u32,
    /// How file sizes are distributed: `"equal"` (default) or `"lognormal"` (many small files,
    /// a few large, as in real images).
    #[serde(default)]
    pub file_sizes: FileSizes,
    /// Fraction of content that compresses well, 0.0 (random bytes) to 1.0 (repetitive text).
    /// Default 0.5, which gzip shrinks to about half.
    #[serde(default = "default_compressibility")]
    pub compressibility: f64,
}

/// Distribution of file sizes within a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileSizes {
    /// Every file the same size.
    #[default]
    Equal,
    /// Log-normal sizes (sigma 1.5), scaled to the layer size.
    Lognormal,
}

fn default_compression() -> Compression {
    Compression::Gzip
}

fn default_platforms() -> Vec<String> {
    vec!["linux/amd64".to_owned()]
}

fn default_compressibility() -> f64 {
    0.5
}
