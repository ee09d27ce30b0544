//! The synthetic image spec a scenario writes under `[variants.synthetic]`: what layers an image
//! has, how many files of what sizes each holds, how compressible they are, and how layers are
//! compressed. Generation from the spec lives in `generate.rs`; this file only describes and
//! validates.

use stampede_oci::{Compression, Platform};

use crate::scenario::units::ByteSize;
use crate::scenario::Problems;

/// A synthetic image, generated deterministically from this spec and a seed.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyntheticImage {
    /// Layers, base first. At least one.
    pub layers: Vec<LayerSpec>,
    /// Layer compression: `"gzip"` (default), `"zstd"` or `"none"`.
    #[serde(default = "default_compression")]
    pub compression: Compression,
    /// Compression level: gzip 0-9 (default 6), zstd 1-22 (default 3). Ignored for `"none"`.
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

/// Why a synthetic image spec cannot be generated: every problem, each at its field path within
/// the spec (`layers[2].files`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct SpecError(pub Problems);

impl SyntheticImage {
    /// Every problem that keeps the spec from being generated, in the order of its fields, each at
    /// its path within the spec; scenario validation reports them under the variant's path.
    pub fn problems(&self) -> Problems {
        let mut out = Problems::default();
        if self.layers.is_empty() {
            out.add("layers", "needs at least one [[...layers]] table");
        }
        for (i, layer) in self.layers.iter().enumerate() {
            if layer.files == 0 {
                out.add(format!("layers[{i}].files"), "must be at least 1");
            } else if layer.size.0 < u64::from(layer.files) {
                out.add(
                    format!("layers[{i}].size"),
                    format!(
                        "{} is less than one byte for each of its {} files",
                        layer.size, layer.files
                    ),
                );
            }
            if !(0.0..=1.0).contains(&layer.compressibility) {
                out.add(
                    format!("layers[{i}].compressibility"),
                    format!("{} is not in [0, 1]", layer.compressibility),
                );
            }
        }
        if let (Some(level), Some(range)) = (self.level, level_range(self.compression)) {
            if !range.contains(&level) {
                out.add(
                    "level",
                    format!(
                        "{level} is not a {} level ({}-{})",
                        self.compression.name(),
                        range.start(),
                        range.end()
                    ),
                );
            }
        }
        if self.format == ManifestFormat::Docker && self.compression == Compression::Zstd {
            out.add(
                "format",
                "\"docker\" cannot carry zstd layers (Docker schema2 has no zstd media type); use format = \"oci\" or gzip",
            );
        }
        if self.platforms.is_empty() {
            out.add("platforms", "needs at least one platform");
        }
        let mut seen = Vec::new();
        for (i, p) in self.platforms.iter().enumerate() {
            match Platform::parse(p) {
                Some(parsed) if seen.contains(&parsed) => {
                    out.add(format!("platforms[{i}]"), format!("{p:?} is listed twice"));
                }
                Some(parsed) => seen.push(parsed),
                None => out.add(
                    format!("platforms[{i}]"),
                    format!("{p:?} is not a platform; write os/arch[/variant]"),
                ),
            }
        }
        out
    }
}

/// Levels each compressor accepts: flate2 takes gzip 0-9 (0 stores without compressing), the
/// `zstd` crate 1-22 (20-22 are the "ultra" levels).
fn level_range(compression: Compression) -> Option<std::ops::RangeInclusive<i32>> {
    match compression {
        Compression::None => None,
        Compression::Gzip => Some(0..=9),
        Compression::Zstd => Some(1..=22),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(toml: &str) -> SyntheticImage {
        toml::from_str(toml).unwrap()
    }

    #[test]
    fn validation_table() {
        let layer = "[[layers]]\nsize = \"1MiB\"\nfiles = 2\n";
        let cases: &[(String, &[&str])] = &[
            (layer.to_owned(), &[]),
            ("layers = []".to_owned(), &["layers"]),
            (
                "[[layers]]\nsize = 1\nfiles = 0\n".to_owned(),
                &["layers[0].files"],
            ),
            (
                "[[layers]]\nsize = 1\nfiles = 2\n".to_owned(),
                &["layers[0].size"],
            ),
            (
                format!("{layer}[[layers]]\nsize = 1\nfiles = 1\ncompressibility = 1.5\n"),
                &["layers[1].compressibility"],
            ),
            (format!("level = 12\n{layer}"), &["level"]),
            (format!("compression = \"zstd\"\nlevel = 22\n{layer}"), &[]),
            (
                format!("compression = \"zstd\"\nlevel = 23\n{layer}"),
                &["level"],
            ),
            (format!("compression = \"none\"\nlevel = 99\n{layer}"), &[]),
            (
                format!("compression = \"zstd\"\nformat = \"docker\"\n{layer}"),
                &["format"],
            ),
            (
                format!("platforms = [\"linux\"]\n{layer}"),
                &["platforms[0]"],
            ),
            (
                format!("platforms = [\"linux/amd64\", \"linux/amd64\"]\n{layer}"),
                &["platforms[1]"],
            ),
            (format!("platforms = []\n{layer}"), &["platforms"]),
        ];
        for (toml, want) in cases {
            let got: Vec<String> = spec(toml)
                .problems()
                .0
                .into_iter()
                .map(|p| p.path)
                .collect();
            assert_eq!(got, *want, "{toml}");
        }
    }

    #[test]
    fn a_level_out_of_range_names_the_compression_plainly() {
        let err = SpecError(spec("level = 12\n[[layers]]\nsize = 1\nfiles = 1\n").problems());
        assert_eq!(err.to_string(), "level: 12 is not a gzip level (0-9)");
    }
}
