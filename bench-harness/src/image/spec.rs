//! The synthetic image spec a scenario writes under `[variants.synthetic]`: what layers an image
//! has, how many files of what sizes each holds, how compressible they are, and how layers are
//! compressed. Generation from the spec lives in `generate.rs`; this file only describes and
//! validates.

use stampede_oci::{Compression, Platform};

use crate::scenario::units::ByteSize;

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

/// Why a synthetic image spec cannot be generated.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SpecError {
    /// `layers` is empty.
    #[error("a synthetic image needs at least one layer")]
    NoLayers,
    /// A layer has `files = 0`.
    #[error("layer {layer} needs at least one file")]
    NoFiles {
        /// Index of the layer, base first.
        layer: usize,
    },
    /// A layer's compressibility is not a number in 0.0..=1.0.
    #[error("layer {layer}: compressibility {value} is outside 0.0..=1.0")]
    Compressibility {
        /// Index of the layer, base first.
        layer: usize,
        /// The value given.
        value: f64,
    },
    /// The compression level is outside what the compressor accepts.
    #[error("{} level {level} is outside {min}..={max}", .compression.name())]
    Level {
        /// The compression it was given for.
        compression: Compression,
        /// The level given.
        level: i32,
        /// Lowest accepted.
        min: i32,
        /// Highest accepted.
        max: i32,
    },
    /// Docker schema2 has no zstd layer media type (skopeo and containers/image refuse one).
    #[error("format \"docker\" cannot carry zstd layers; use format \"oci\" or gzip")]
    DockerZstd,
    /// `platforms` is empty.
    #[error("a synthetic image needs at least one platform")]
    NoPlatforms,
    /// A platform is not `os/arch[/variant]`.
    #[error("platform {0:?} is not os/arch[/variant]")]
    Platform(String),
    /// A platform is listed twice.
    #[error("platform {0:?} is listed twice")]
    DuplicatePlatform(String),
}

impl SyntheticImage {
    /// Checks that the spec can be generated.
    ///
    /// # Errors
    /// The first [`SpecError`] found, layers first.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.layers.is_empty() {
            return Err(SpecError::NoLayers);
        }
        for (layer, l) in self.layers.iter().enumerate() {
            if l.files == 0 {
                return Err(SpecError::NoFiles { layer });
            }
            if !(0.0..=1.0).contains(&l.compressibility) {
                return Err(SpecError::Compressibility {
                    layer,
                    value: l.compressibility,
                });
            }
        }
        if let (Some(level), Some((min, max))) = (self.level, level_range(self.compression)) {
            if !(min..=max).contains(&level) {
                return Err(SpecError::Level {
                    compression: self.compression,
                    level,
                    min,
                    max,
                });
            }
        }
        if self.format == ManifestFormat::Docker && self.compression == Compression::Zstd {
            return Err(SpecError::DockerZstd);
        }
        self.parsed_platforms().map(drop)
    }

    /// The platforms, parsed, in the order written.
    ///
    /// # Errors
    /// [`SpecError::NoPlatforms`], [`SpecError::Platform`] or [`SpecError::DuplicatePlatform`].
    pub fn parsed_platforms(&self) -> Result<Vec<Platform>, SpecError> {
        if self.platforms.is_empty() {
            return Err(SpecError::NoPlatforms);
        }
        let mut parsed: Vec<Platform> = Vec::with_capacity(self.platforms.len());
        for p in &self.platforms {
            let platform = Platform::parse(p).ok_or_else(|| SpecError::Platform(p.clone()))?;
            if parsed.contains(&platform) {
                return Err(SpecError::DuplicatePlatform(p.clone()));
            }
            parsed.push(platform);
        }
        Ok(parsed)
    }

    /// The compression level in effect: the one given, else gzip 6 / zstd 3; `None` for
    /// uncompressed layers.
    pub fn effective_level(&self) -> Option<i32> {
        match self.compression {
            Compression::None => None,
            Compression::Gzip => Some(self.level.unwrap_or(6)),
            Compression::Zstd => Some(self.level.unwrap_or(3)),
        }
    }
}

/// Levels accepted per compression, inclusive.
fn level_range(compression: Compression) -> Option<(i32, i32)> {
    match compression {
        Compression::None => None,
        Compression::Gzip => Some((1, 9)),
        Compression::Zstd => Some((1, 19)),
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
        let cases: &[(String, Result<(), SpecError>)] = &[
            (layer.to_owned(), Ok(())),
            ("layers = []".to_owned(), Err(SpecError::NoLayers)),
            (
                "[[layers]]\nsize = 1\nfiles = 0\n".to_owned(),
                Err(SpecError::NoFiles { layer: 0 }),
            ),
            (
                format!("{layer}[[layers]]\nsize = 1\nfiles = 1\ncompressibility = 1.5\n"),
                Err(SpecError::Compressibility {
                    layer: 1,
                    value: 1.5,
                }),
            ),
            (
                format!("level = 12\n{layer}"),
                Err(SpecError::Level {
                    compression: Compression::Gzip,
                    level: 12,
                    min: 1,
                    max: 9,
                }),
            ),
            (
                format!("compression = \"zstd\"\nlevel = 12\n{layer}"),
                Ok(()),
            ),
            (
                format!("compression = \"none\"\nlevel = 99\n{layer}"),
                Ok(()),
            ),
            (
                format!("platforms = [\"linux\"]\n{layer}"),
                Err(SpecError::Platform("linux".to_owned())),
            ),
            (
                format!("platforms = [\"linux/amd64\", \"linux/amd64\"]\n{layer}"),
                Err(SpecError::DuplicatePlatform("linux/amd64".to_owned())),
            ),
            (
                format!("platforms = []\n{layer}"),
                Err(SpecError::NoPlatforms),
            ),
        ];
        for (toml, want) in cases {
            assert_eq!(&spec(toml).validate(), want, "{toml}");
        }
    }

    #[test]
    fn default_levels() {
        let mut s = spec("[[layers]]\nsize = 1\nfiles = 1\n");
        assert_eq!(s.effective_level(), Some(6));
        s.compression = Compression::Zstd;
        assert_eq!(s.effective_level(), Some(3));
        s.level = Some(9);
        assert_eq!(s.effective_level(), Some(9));
        s.compression = Compression::None;
        assert_eq!(s.effective_level(), None);
    }

    #[test]
    fn a_level_out_of_range_names_the_compression_plainly() {
        let e = SpecError::Level {
            compression: Compression::Gzip,
            level: 12,
            min: 1,
            max: 9,
        };
        assert_eq!(e.to_string(), "gzip level 12 is outside 1..=9");
    }
}
