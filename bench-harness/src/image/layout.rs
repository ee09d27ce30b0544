//! The OCI image layout on disk: its paths, the JSON documents written into it (config,
//! manifest, index) and a writer that hashes and counts bytes as they pass. The documents are our
//! own serde structs, not `oci-spec` builders, so their bytes (and digests) depend only on this
//! file: `serde_json`'s map order changes with a feature another crate may turn on.

use std::collections::BTreeMap;
use std::io::{self, Write};

use sha2::{Digest as _, Sha256};
use stampede_oci::{Digest, Platform};

// The layout's names and paths are the workspace's one definition, in `stampede_oci::layout`.
pub use stampede_oci::layout::{
    blob_path, blobs_dir, INDEX_FILE, OCI_LAYOUT_CONTENT, OCI_LAYOUT_FILE, REF_NAME_ANNOTATION,
};
/// The name given to the image in `index.json`.
pub const LAYOUT_TAG: &str = "latest";
/// Timestamp of every generated config and history entry (fixed, for stable digests).
pub const CREATED: &str = "2024-01-01T00:00:00Z";

/// A content descriptor as manifests and indexes write it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DescriptorDoc {
    /// Media type of the referenced content.
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub digest: Digest,
    /// Its length in bytes.
    pub size: u64,
    /// For entries of an index: the platform of the referenced manifest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<PlatformDoc>,
    /// Annotations (for `index.json`: the ref name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// A platform as descriptors write it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PlatformDoc {
    /// GOARCH spelling.
    pub architecture: String,
    /// `linux`, ...
    pub os: String,
    /// `v8`, ... when given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl From<&Platform> for PlatformDoc {
    fn from(p: &Platform) -> Self {
        Self {
            architecture: p.architecture.clone(),
            os: p.os.clone(),
            variant: p.variant.clone(),
        }
    }
}

/// An image manifest (OCI or Docker schema2: same shape, different media types).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ManifestDoc {
    /// Always 2.
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    /// The manifest's own media type.
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub config: DescriptorDoc,
    /// Layers, base first.
    pub layers: Vec<DescriptorDoc>,
}

/// An image index or Docker manifest list; also the shape of `index.json`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct IndexDoc {
    /// Always 2.
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    /// The index's own media type.
    #[serde(rename = "mediaType")]
    pub media_type: String,
    /// One entry per platform manifest.
    pub manifests: Vec<DescriptorDoc>,
}

impl DescriptorDoc {
    /// How a manifest or index lists `d`, with `platform` for an index's entry.
    pub fn of(d: &super::layout_image::Descriptor, platform: Option<&Platform>) -> Self {
        Self {
            media_type: d.media_type.clone(),
            digest: d.digest.clone(),
            size: d.size_bytes,
            platform: platform.map(PlatformDoc::from),
            annotations: None,
        }
    }
}

impl IndexDoc {
    /// A layout's `index.json` whose one entry, `entry`, is tagged `tag`.
    pub fn tagged(mut entry: DescriptorDoc, tag: &str) -> Self {
        entry.annotations = Some([(REF_NAME_ANNOTATION.to_owned(), tag.to_owned())].into());
        Self {
            schema_version: 2,
            media_type: stampede_oci::manifest::OCI_INDEX.to_owned(),
            manifests: vec![entry],
        }
    }
}

/// An image config: platform, root filesystem diff IDs, history and a command.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ConfigDoc {
    /// Creation time, fixed at [`CREATED`].
    pub created: String,
    /// Its fields in place (`architecture`, `os`, `variant`): same bytes as written out.
    #[serde(flatten)]
    pub platform: PlatformDoc,
    /// How to run it.
    pub config: RunConfigDoc,
    /// The layers' uncompressed digests.
    pub rootfs: RootFsDoc,
    /// One entry per layer.
    pub history: Vec<HistoryDoc>,
}

/// The `config` member of an image config.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunConfigDoc {
    /// Environment.
    #[serde(rename = "Env")]
    pub env: Vec<String>,
    /// Default command.
    #[serde(rename = "Cmd")]
    pub cmd: Vec<String>,
    /// Labels (the generator records its seed here).
    #[serde(rename = "Labels")]
    pub labels: BTreeMap<String, String>,
}

/// The `rootfs` member of an image config.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RootFsDoc {
    /// Always `layers`.
    #[serde(rename = "type")]
    pub kind: String,
    /// sha256 of each layer's uncompressed tar, base first.
    pub diff_ids: Vec<Digest>,
}

/// One `history` entry of an image config.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HistoryDoc {
    /// Fixed at [`CREATED`].
    pub created: String,
    /// What made the layer.
    pub created_by: String,
}

/// A writer that hashes (sha256) and counts every byte written through it.
#[derive(Debug)]
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> HashingWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// The inner writer, the digest of everything written, and its length in bytes.
    pub fn finish(self) -> (W, Digest, u64) {
        let hex = hex::encode(self.hasher.finalize());
        let digest = Digest::parse(&format!("sha256:{hex}")).expect("sha256 hex is a digest");
        (self.inner, digest, self.bytes)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
