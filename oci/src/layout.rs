//! Reading OCI image layouts on disk: the directories `skopeo copy ... oci:DIR[:tag]`, `umoci`
//! and bench-harness's generator write (`oci-layout`, `index.json`, `blobs/sha256/<hex>`).
//!
//! [`OciLayout::open`] checks the layout marker and reads `index.json`; [`OciLayout::resolve`]
//! finds the entry a tag names (the `org.opencontainers.image.ref.name` annotation) or the only
//! entry; [`OciLayout::read_manifest`] reads a manifest or index blob, bounded and verified
//! against its digest. Layer blobs are only located ([`OciLayout::blob_path`]), never read here:
//! callers stream them. Writing layouts is not this module's business.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use oci_spec::image::ImageIndex;

use crate::digest::Digest;
use crate::manifest::{descriptor_digest, Manifest, ManifestError, MAX_MANIFEST_BYTES};

/// The layout marker file's name.
pub const OCI_LAYOUT_FILE: &str = "oci-layout";
/// The layout's index file.
pub const INDEX_FILE: &str = "index.json";
/// The layout marker file's content, as this workspace writes it.
pub const OCI_LAYOUT_CONTENT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;
/// Where blobs live, relative to the layout root, per algorithm (`blobs/sha256/<hex>`).
pub const BLOBS_DIR: &str = "blobs";

/// The directory of a layout rooted at `root` that holds `algorithm`'s blobs (`blobs/sha256`).
pub fn blobs_dir(root: &Path, algorithm: &str) -> PathBuf {
    root.join(BLOBS_DIR).join(algorithm)
}

/// The path of blob `digest` in the layout rooted at `root` (it may not exist).
pub fn blob_path(root: &Path, digest: &Digest) -> PathBuf {
    blobs_dir(root, digest.algorithm()).join(digest.hex())
}
/// The annotation naming an `index.json` entry (`skopeo copy oci:DIR:v1` writes `v1`).
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// An entry of `index.json` or of an index: what it points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutEntry {
    /// The referenced manifest or index.
    pub digest: Digest,
    /// Its media type as the entry declares it.
    pub media_type: String,
    /// Its length in bytes.
    pub size_bytes: u64,
    /// Its `org.opencontainers.image.ref.name`, when it has one.
    pub ref_name: Option<String>,
}

/// Why a layout could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    /// The directory has no `oci-layout` file: it is not an OCI image layout.
    #[error("{path} is not an OCI image layout (no {OCI_LAYOUT_FILE} file)")]
    NotALayout {
        /// The directory.
        path: PathBuf,
    },
    /// A file of the layout could not be read.
    #[error("read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// `oci-layout` or `index.json` is not what the image-layout spec says.
    #[error("{path} is not a valid {what}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What it should have been.
        what: &'static str,
        /// The parser's complaint.
        #[source]
        source: serde_json::Error,
    },
    /// `index.json` lists nothing.
    #[error("{path} lists no image")]
    Empty {
        /// The index file.
        path: PathBuf,
    },
    /// No entry carries the tag asked for.
    #[error("{path} has no image tagged {tag:?}; it has: {}", names(available))]
    NoSuchTag {
        /// The index file.
        path: PathBuf,
        /// The tag asked for.
        tag: String,
        /// The tags it has (entries without a name are left out).
        available: Vec<String>,
    },
    /// No tag was given and the layout holds several images.
    #[error(
        "{path} holds {count} images; name one with DIR:TAG (tags: {})",
        names(available)
    )]
    Ambiguous {
        /// The index file.
        path: PathBuf,
        /// How many entries it has.
        count: usize,
        /// The tags it has.
        available: Vec<String>,
    },
    /// A descriptor's digest is not a usable sha256 digest.
    #[error("{path}: {source}")]
    Descriptor {
        /// The document holding the descriptor.
        path: PathBuf,
        /// The cause.
        #[source]
        source: ManifestError,
    },
    /// A blob is missing, larger than a manifest may be, or does not hash to its name.
    #[error("blob {digest} at {path}: {problem}")]
    Blob {
        /// The blob.
        digest: Digest,
        /// Its file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// A manifest blob is not a manifest or index.
    #[error("manifest {digest} at {path}")]
    Manifest {
        /// The blob.
        digest: Digest,
        /// Its file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: ManifestError,
    },
}

fn names(tags: &[String]) -> String {
    if tags.is_empty() {
        "no tags".to_owned()
    } else {
        tags.join(", ")
    }
}

#[derive(serde::Deserialize)]
struct LayoutMarker {
    #[serde(rename = "imageLayoutVersion")]
    #[allow(dead_code)]
    image_layout_version: String,
}

/// An opened OCI image layout.
#[derive(Debug, Clone)]
pub struct OciLayout {
    root: PathBuf,
    entries: Vec<LayoutEntry>,
}

impl OciLayout {
    /// Opens the layout rooted at `root`: checks `oci-layout` and reads `index.json`.
    ///
    /// # Errors
    /// [`LayoutError::NotALayout`] without the marker file; [`LayoutError::Read`] or
    /// [`LayoutError::Invalid`] for unreadable or malformed files; [`LayoutError::Descriptor`]
    /// for an entry whose digest is not sha256.
    pub fn open(root: &Path) -> Result<Self, LayoutError> {
        let marker_path = root.join(OCI_LAYOUT_FILE);
        if !marker_path.is_file() {
            return Err(LayoutError::NotALayout {
                path: root.to_owned(),
            });
        }
        let marker = read_small(&marker_path, MAX_MANIFEST_BYTES)?;
        serde_json::from_slice::<LayoutMarker>(&marker).map_err(|source| LayoutError::Invalid {
            path: marker_path.clone(),
            what: "oci-layout file",
            source,
        })?;
        let index_path = root.join(INDEX_FILE);
        let bytes = read_small(&index_path, MAX_MANIFEST_BYTES)?;
        let index: ImageIndex =
            serde_json::from_slice(&bytes).map_err(|source| LayoutError::Invalid {
                path: index_path.clone(),
                what: "index.json",
                source,
            })?;
        let entries = index
            .manifests()
            .iter()
            .map(|d| {
                Ok(LayoutEntry {
                    digest: descriptor_digest(d).map_err(|source| LayoutError::Descriptor {
                        path: index_path.clone(),
                        source,
                    })?,
                    media_type: d.media_type().to_string(),
                    size_bytes: d.size(),
                    ref_name: d
                        .annotations()
                        .as_ref()
                        .and_then(|a| a.get(REF_NAME_ANNOTATION).cloned()),
                })
            })
            .collect::<Result<Vec<_>, LayoutError>>()?;
        Ok(Self {
            root: root.to_owned(),
            entries,
        })
    }

    /// The layout's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Every entry of `index.json`, in order.
    pub fn entries(&self) -> &[LayoutEntry] {
        &self.entries
    }

    /// The tags (`ref.name` annotations) of the entries, in order.
    pub fn tags(&self) -> Vec<String> {
        self.entries
            .iter()
            .filter_map(|e| e.ref_name.clone())
            .collect()
    }

    /// The entry tagged `tag`, or with `None` the only entry.
    ///
    /// # Errors
    /// [`LayoutError::Empty`], [`LayoutError::NoSuchTag`] or [`LayoutError::Ambiguous`], each
    /// naming the tags the layout has.
    pub fn resolve(&self, tag: Option<&str>) -> Result<&LayoutEntry, LayoutError> {
        let path = self.root.join(INDEX_FILE);
        match tag {
            Some(tag) => self
                .entries
                .iter()
                .find(|e| e.ref_name.as_deref() == Some(tag))
                .ok_or_else(|| LayoutError::NoSuchTag {
                    path,
                    tag: tag.to_owned(),
                    available: self.tags(),
                }),
            None => match self.entries.as_slice() {
                [] => Err(LayoutError::Empty { path }),
                [only] => Ok(only),
                many => Err(LayoutError::Ambiguous {
                    path,
                    count: many.len(),
                    available: self.tags(),
                }),
            },
        }
    }

    /// Where blob `digest` lives (it may not exist).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        blob_path(&self.root, digest)
    }

    /// Whether blob `digest` is present with `size_bytes` bytes (its content is not hashed).
    pub fn has_blob(&self, digest: &Digest, size_bytes: u64) -> bool {
        std::fs::metadata(self.blob_path(digest)).is_ok_and(|m| m.len() == size_bytes)
    }

    /// Reads manifest or index `digest` (at most [`MAX_MANIFEST_BYTES`]), checks it hashes to
    /// its digest, and parses it; `media_type` is what the pointing descriptor declared.
    ///
    /// # Errors
    /// [`LayoutError::Blob`] when it is missing, too large or does not match its digest;
    /// [`LayoutError::Manifest`] when it is not a manifest or index.
    pub fn read_manifest(
        &self,
        digest: &Digest,
        media_type: Option<&str>,
    ) -> Result<(Vec<u8>, Manifest), LayoutError> {
        let path = self.blob_path(digest);
        let bytes = read_small(&path, MAX_MANIFEST_BYTES).map_err(|e| LayoutError::Blob {
            digest: digest.clone(),
            path: path.clone(),
            problem: match e {
                LayoutError::Read { source, .. } => source.to_string(),
                other => other.to_string(),
            },
        })?;
        let actual = Digest::of(&bytes);
        if actual != *digest {
            return Err(LayoutError::Blob {
                digest: digest.clone(),
                path,
                problem: format!("content hashes to {actual}"),
            });
        }
        let manifest =
            Manifest::parse(media_type, &bytes).map_err(|source| LayoutError::Manifest {
                digest: digest.clone(),
                path,
                source,
            })?;
        Ok((bytes, manifest))
    }
}

/// Reads a small file, refusing one over `limit_bytes`.
fn read_small(path: &Path, limit_bytes: u64) -> Result<Vec<u8>, LayoutError> {
    let read = |source| LayoutError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read)?;
    let mut bytes = Vec::new();
    file.take(limit_bytes + 1)
        .read_to_end(&mut bytes)
        .map_err(read)?;
    if bytes.len() as u64 > limit_bytes {
        return Err(read(std::io::Error::other(format!(
            "larger than {limit_bytes} bytes"
        ))));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_layout(dir: &Path, entries: &[(&[u8], Option<&str>)]) -> Vec<Digest> {
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::write(
            dir.join(OCI_LAYOUT_FILE),
            r#"{"imageLayoutVersion":"1.0.0"}"#,
        )
        .unwrap();
        let mut digests = Vec::new();
        let mut docs = Vec::new();
        for (bytes, tag) in entries {
            let d = Digest::of(bytes);
            std::fs::write(dir.join("blobs/sha256").join(d.hex()), bytes).unwrap();
            let annotations = tag.map_or(String::new(), |t| {
                format!(r#","annotations":{{"{REF_NAME_ANNOTATION}":"{t}"}}"#)
            });
            docs.push(format!(
                r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{d}","size":{}{annotations}}}"#,
                bytes.len()
            ));
            digests.push(d);
        }
        std::fs::write(
            dir.join(INDEX_FILE),
            format!(r#"{{"schemaVersion":2,"manifests":[{}]}}"#, docs.join(",")),
        )
        .unwrap();
        digests
    }

    fn manifest(n: u8) -> Vec<u8> {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{}","size":{n}}},"layers":[]}}"#,
            "a".repeat(64)
        )
        .into_bytes()
    }

    #[test]
    fn tags_resolve_and_missing_ones_name_what_there_is() {
        let dir = tempfile_dir("tags");
        let (m1, m2) = (manifest(1), manifest(2));
        let digests = write_layout(&dir, &[(&m1, Some("v1")), (&m2, Some("v2"))]);
        let layout = OciLayout::open(&dir).unwrap();
        assert_eq!(layout.tags(), ["v1", "v2"]);
        assert_eq!(layout.resolve(Some("v2")).unwrap().digest, digests[1]);
        let err = layout.resolve(Some("v3")).unwrap_err().to_string();
        assert!(err.contains("\"v3\"") && err.contains("v1, v2"), "{err}");
        let err = layout.resolve(None).unwrap_err().to_string();
        assert!(err.contains("holds 2 images"), "{err}");
        let (bytes, parsed) = layout
            .read_manifest(&digests[0], Some(crate::manifest::OCI_MANIFEST))
            .unwrap();
        assert_eq!(bytes, m1);
        assert!(matches!(parsed, Manifest::Image(_)));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_layouts_are_named() {
        let dir = tempfile_dir("bad");
        assert!(matches!(
            OciLayout::open(&dir),
            Err(LayoutError::NotALayout { .. })
        ));
        let m = manifest(1);
        let digests = write_layout(&dir, &[(&m, None)]);
        let layout = OciLayout::open(&dir).unwrap();
        assert_eq!(layout.resolve(None).unwrap().digest, digests[0]);
        std::fs::write(layout.blob_path(&digests[0]), b"tampered").unwrap();
        let err = layout.read_manifest(&digests[0], None).unwrap_err();
        assert!(err.to_string().contains("content hashes to"), "{err}");
        std::fs::write(dir.join(INDEX_FILE), "{").unwrap();
        assert!(matches!(
            OciLayout::open(&dir),
            Err(LayoutError::Invalid { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tempfile_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "stampede-layout-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::remove_dir_all(&dir).ok();
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
