//! Manifests and indexes, Docker schema2 and OCI alike: media types, parsing into
//! [`oci_spec`] types, layer compression, and picking a platform from an index.
//!
//! Parsing never changes the bytes: callers keep the original body for serving and
//! digesting; the parsed form is only for reading descriptors. This module does no I/O.

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};

use crate::digest::Digest;

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker image manifest, schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image manifest, schema 1, signed (JWS). Not served by the cache: its digest is over
/// the payload without the signatures.
pub const DOCKER_MANIFEST_V1_SIGNED: &str =
    "application/vnd.docker.distribution.manifest.v1+prettyjws";
/// Docker image manifest, schema 1, unsigned.
pub const DOCKER_MANIFEST_V1: &str = "application/vnd.docker.distribution.manifest.v1+json";
/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Docker image config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// OCI uncompressed layer.
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// OCI gzip layer.
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// OCI zstd layer.
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// Docker gzip layer.
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// Media type for blobs whose type is not known.
pub const OCTET_STREAM: &str = "application/octet-stream";

/// The `Accept` header a puller sends for manifests: every kind this project understands.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// Largest manifest accepted, in bytes (the distribution spec's recommended limit).
pub const MAX_MANIFEST_BYTES: u64 = 4 * 1024 * 1024;

/// Whether a manifest is Docker schema 1: by its declared `content_type` (parameters ignored),
/// else by `"schemaVersion": 1` in `bytes`.
pub fn is_schema1(content_type: Option<&str>, bytes: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Version {
        #[serde(rename = "schemaVersion")]
        schema_version: Option<u64>,
    }
    if content_type
        .map(essence)
        .is_some_and(|t| t == DOCKER_MANIFEST_V1_SIGNED || t == DOCKER_MANIFEST_V1)
    {
        return true;
    }
    serde_json::from_slice::<Version>(bytes).is_ok_and(|v| v.schema_version == Some(1))
}

/// Whether `media_type` (parameters ignored) is one of the manifest or index types.
pub fn is_manifest_type(media_type: &str) -> bool {
    matches!(
        essence(media_type),
        OCI_MANIFEST | OCI_INDEX | DOCKER_MANIFEST | DOCKER_MANIFEST_LIST
    )
}

/// `type/subtype` without parameters or surrounding space.
pub fn essence(media_type: &str) -> &str {
    media_type.split(';').next().unwrap_or("").trim()
}

/// A parsed manifest document.
#[derive(Debug, Clone)]
pub enum Manifest {
    /// One image: a config and layers.
    Image(Box<ImageManifest>),
    /// A list of per-platform manifests.
    Index(Box<ImageIndex>),
}

/// Why a manifest could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Not JSON of a manifest or index shape.
    #[error("manifest is not a valid {kind}")]
    Invalid {
        /// What we tried to read it as.
        kind: &'static str,
        /// The parser's complaint.
        #[source]
        source: serde_json::Error,
    },
    /// A descriptor's digest is not a usable digest.
    #[error("descriptor digest {0:?} is not a usable sha256 digest")]
    Digest(String),
    /// The index has no manifest for the wanted platform.
    #[error("no manifest for platform {wanted}; the index has: {}", available.join(", "))]
    PlatformMissing {
        /// `os/arch[/variant]` asked for.
        wanted: String,
        /// Every platform the index lists.
        available: Vec<String>,
    },
}

#[derive(serde::Deserialize)]
struct Shape {
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    manifests: Option<serde::de::IgnoredAny>,
}

impl Manifest {
    /// Parses `bytes`, choosing manifest or index by `content_type` when it names one, then by
    /// the document's own `mediaType`, then by shape (`manifests` means an index).
    ///
    /// # Errors
    /// [`ManifestError::Invalid`] when the JSON does not fit.
    pub fn parse(content_type: Option<&str>, bytes: &[u8]) -> Result<Self, ManifestError> {
        let declared = content_type.map(essence).filter(|t| is_manifest_type(t));
        let is_index = match declared {
            Some(t) => matches!(t, OCI_INDEX | DOCKER_MANIFEST_LIST),
            None => {
                let shape: Shape =
                    serde_json::from_slice(bytes).map_err(|source| ManifestError::Invalid {
                        kind: "manifest",
                        source,
                    })?;
                match shape.media_type.as_deref().map(essence) {
                    Some(OCI_INDEX | DOCKER_MANIFEST_LIST) => true,
                    Some(OCI_MANIFEST | DOCKER_MANIFEST) => false,
                    _ => shape.manifests.is_some(),
                }
            }
        };
        if is_index {
            serde_json::from_slice(bytes)
                .map(|i| Self::Index(Box::new(i)))
                .map_err(|source| ManifestError::Invalid {
                    kind: "image index",
                    source,
                })
        } else {
            serde_json::from_slice(bytes)
                .map(|m| Self::Image(Box::new(m)))
                .map_err(|source| ManifestError::Invalid {
                    kind: "image manifest",
                    source,
                })
        }
    }

    /// Every blob and child manifest this document points at, with sizes, config first.
    ///
    /// # Errors
    /// [`ManifestError::Digest`] when a descriptor's digest is not sha256.
    pub fn children(&self) -> Result<Vec<(Digest, u64)>, ManifestError> {
        let descriptors: Vec<&Descriptor> = match self {
            Self::Image(m) => std::iter::once(m.config()).chain(m.layers()).collect(),
            Self::Index(i) => i.manifests().iter().collect(),
        };
        descriptors
            .into_iter()
            .map(|d| Ok((descriptor_digest(d)?, d.size())))
            .collect()
    }
}

/// The descriptor's digest as a verified-usable [`Digest`].
///
/// # Errors
/// [`ManifestError::Digest`] when it is not a sha256 digest.
pub fn descriptor_digest(d: &Descriptor) -> Result<Digest, ManifestError> {
    let s: &str = d.digest().as_ref();
    Digest::parse(s).map_err(|_| ManifestError::Digest(s.chars().take(160).collect()))
}

/// How a layer's tar stream is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip (RFC 1952).
    Gzip,
    /// Zstandard.
    Zstd,
}

impl Compression {
    /// From a layer media type; unknown `+gzip`/`.gzip` suffixes count as gzip.
    pub fn from_media_type(media_type: &str) -> Option<Self> {
        let t = essence(media_type);
        if t.ends_with("+zstd") || t.ends_with(".zstd") {
            Some(Self::Zstd)
        } else if t.ends_with("+gzip") || t.ends_with(".gzip") {
            Some(Self::Gzip)
        } else if t.ends_with(".tar") || t == OCI_LAYER_TAR {
            Some(Self::None)
        } else {
            None
        }
    }

    /// How people and scenario files write it: `none`, `gzip`, `zstd`.
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Gzip => "gzip",
            Self::Zstd => "zstd",
        }
    }

    /// From the first bytes of a blob (gzip and zstd magic numbers), `None` otherwise.
    pub fn sniff(head: &[u8]) -> Self {
        if head.starts_with(&[0x1f, 0x8b]) {
            Self::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Self::Zstd
        } else {
            Self::None
        }
    }

    /// The OCI layer media type for this compression.
    pub fn oci_media_type(self) -> &'static str {
        match self {
            Self::None => OCI_LAYER_TAR,
            Self::Gzip => OCI_LAYER_GZIP,
            Self::Zstd => OCI_LAYER_ZSTD,
        }
    }
}

/// A platform as `os/architecture[/variant]`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Platform {
    /// `linux`, `windows`, ...
    pub os: String,
    /// GOARCH spelling: `amd64`, `arm64`, ...
    pub architecture: String,
    /// `v8`, `v7`, ... when it matters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// The platform this binary runs on, in GOARCH spelling.
    pub fn host() -> Self {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "arm" => "arm",
            "powerpc64" => "ppc64le",
            "s390x" => "s390x",
            "riscv64" => "riscv64",
            other => other,
        };
        Self {
            os: "linux".to_owned(),
            architecture: architecture.to_owned(),
            variant: None,
        }
    }

    /// Parses `os/arch[/variant]`.
    pub fn parse(s: &str) -> Option<Self> {
        let mut parts = s.split('/');
        let os = parts.next().filter(|p| !p.is_empty())?.to_owned();
        let architecture = parts.next().filter(|p| !p.is_empty())?.to_owned();
        let variant = parts.next().map(str::to_owned);
        if parts.next().is_some() {
            return None;
        }
        Some(Self {
            os,
            architecture,
            variant,
        })
    }
}

impl Platform {
    /// Whether an image built for `self` runs on a `node` platform: same OS and architecture,
    /// and the same variant when both name one (containerd's rule for picking from an index).
    pub fn runs_on(&self, node: &Platform) -> bool {
        self.os == node.os
            && self.architecture == node.architecture
            && match (&node.variant, &self.variant) {
                (Some(w), Some(v)) => w == v,
                _ => true,
            }
    }

    /// The platform an image config (`application/vnd.oci.image.config.v1+json` or Docker's)
    /// declares in its `os`, `architecture` and `variant`; `None` when it names no OS or
    /// architecture or is not JSON.
    pub fn of_config(config: &[u8]) -> Option<Self> {
        #[derive(serde::Deserialize)]
        struct Fields {
            #[serde(default)]
            os: String,
            #[serde(default)]
            architecture: String,
            #[serde(default)]
            variant: Option<String>,
        }
        let f: Fields = serde_json::from_slice(config).ok()?;
        (!f.os.is_empty() && !f.architecture.is_empty()).then(|| Self {
            os: f.os,
            architecture: f.architecture,
            variant: f.variant.filter(|v| !v.is_empty()),
        })
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// The platform a descriptor (an index entry) declares, if any.
pub fn descriptor_platform(d: &Descriptor) -> Option<Platform> {
    d.platform().as_ref().map(|p| Platform {
        os: p.os().to_string(),
        architecture: p.architecture().to_string(),
        variant: p.variant().clone(),
    })
}

/// Picks `wanted` from an index. A wanted platform without a variant matches any variant;
/// with one, only that variant (or an entry without a variant).
///
/// # Errors
/// [`ManifestError::PlatformMissing`] naming every platform the index has.
pub fn select_platform<'a>(
    index: &'a ImageIndex,
    wanted: &Platform,
) -> Result<&'a Descriptor, ManifestError> {
    index
        .manifests()
        .iter()
        .find(|d| descriptor_platform(d).is_some_and(|p| p.runs_on(wanted)))
        .ok_or_else(|| ManifestError::PlatformMissing {
            wanted: wanted.to_string(),
            available: index
                .manifests()
                .iter()
                .map(|d| {
                    descriptor_platform(d)
                        .map_or_else(|| "(no platform)".to_owned(), |p| p.to_string())
                })
                .collect(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    fn docker_manifest() -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}",
            "config":{{"mediaType":"{DOCKER_CONFIG}","size":7,"digest":"{}"}},
            "layers":[{{"mediaType":"{DOCKER_LAYER_GZIP}","size":100,"digest":"{}"}}]}}"#,
            hex('a'),
            hex('b')
        )
    }

    fn index() -> String {
        format!(
            r#"{{"schemaVersion":2,"manifests":[
            {{"mediaType":"{OCI_MANIFEST}","size":10,"digest":"{}","platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}},
            {{"mediaType":"{OCI_MANIFEST}","size":11,"digest":"{}","platform":{{"os":"linux","architecture":"s390x"}}}}]}}"#,
            hex('c'),
            hex('d')
        )
    }

    #[test]
    fn schema1_is_told_by_its_type_or_its_schema_version() {
        let v1 = br#"{"schemaVersion":1,"name":"a","tag":"b","fsLayers":[]}"#;
        let v2 = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}"#;
        assert!(is_schema1(Some(DOCKER_MANIFEST_V1_SIGNED), b"not json"));
        assert!(is_schema1(
            Some("application/vnd.docker.distribution.manifest.v1+json; charset=utf-8"),
            v2
        ));
        assert!(is_schema1(Some("application/json"), v1));
        assert!(is_schema1(None, v1));
        assert!(!is_schema1(None, v2));
        assert!(!is_schema1(Some("application/json"), b"{}"));
    }

    #[test]
    fn docker_schema2_parses_as_image() {
        let m = Manifest::parse(None, docker_manifest().as_bytes()).unwrap();
        let children = m.children().unwrap();
        assert_eq!(children.len(), 2);
        assert_eq!(children[0].1, 7);
        assert_eq!(children[1].0.to_string(), hex('b'));
    }

    #[test]
    fn index_by_shape_and_platform_selection() {
        let Manifest::Index(i) =
            Manifest::parse(Some("application/json"), index().as_bytes()).unwrap()
        else {
            panic!("expected index");
        };
        let arm = select_platform(&i, &Platform::parse("linux/arm64").unwrap()).unwrap();
        assert_eq!(arm.size(), 10);
        let err = select_platform(&i, &Platform::parse("linux/amd64").unwrap()).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("linux/amd64")
                && msg.contains("linux/arm64/v8")
                && msg.contains("linux/s390x"),
            "{msg}"
        );
    }

    #[test]
    fn garbage_is_invalid() {
        assert!(matches!(
            Manifest::parse(Some(OCI_MANIFEST), b"{}"),
            Err(ManifestError::Invalid { .. })
        ));
        assert!(matches!(
            Manifest::parse(None, b"not json"),
            Err(ManifestError::Invalid { .. })
        ));
    }

    #[test]
    fn compression_from_type_and_magic() {
        assert_eq!(
            Compression::from_media_type(DOCKER_LAYER_GZIP),
            Some(Compression::Gzip)
        );
        assert_eq!(
            Compression::from_media_type(OCI_LAYER_ZSTD),
            Some(Compression::Zstd)
        );
        assert_eq!(
            Compression::from_media_type(OCI_LAYER_TAR),
            Some(Compression::None)
        );
        assert_eq!(Compression::from_media_type("text/plain"), None);
        assert_eq!(Compression::sniff(&[0x1f, 0x8b, 8]), Compression::Gzip);
        assert_eq!(
            Compression::sniff(&[0x28, 0xb5, 0x2f, 0xfd]),
            Compression::Zstd
        );
        assert_eq!(Compression::sniff(b"ustar"), Compression::None);
    }

    #[test]
    fn config_platforms_and_what_runs_where() {
        let arm = Platform::of_config(
            br#"{"os":"linux","architecture":"arm64","variant":"v8","rootfs":{}}"#,
        )
        .unwrap();
        assert_eq!(arm.to_string(), "linux/arm64/v8");
        let amd = Platform::of_config(br#"{"architecture":"amd64","os":"linux"}"#).unwrap();
        assert!(amd.runs_on(&Platform::parse("linux/amd64").unwrap()));
        assert!(!arm.runs_on(&Platform::parse("linux/amd64").unwrap()));
        assert!(arm.runs_on(&Platform::parse("linux/arm64").unwrap()));
        assert!(!arm.runs_on(&Platform::parse("linux/arm64/v7").unwrap()));
        assert!(Platform::parse("linux/arm64")
            .unwrap()
            .runs_on(&Platform::parse("linux/arm64/v8").unwrap()));
        assert_eq!(Platform::of_config(br#"{"rootfs":{}}"#), None);
        assert_eq!(Platform::of_config(b"not json"), None);
    }
}
