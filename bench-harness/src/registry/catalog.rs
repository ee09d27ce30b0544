//! What the embedded registry holds: repositories, their tags, and the manifests and blobs each
//! repository may serve, pointing into OCI image layouts (generated, imported or mirrored).
//!
//! Manifests (a few KiB each) are kept in memory; blobs stay files and are only located here,
//! never read. Lookups clone an `Arc` under a read lock and release it before any I/O. This
//! module does not speak HTTP: it answers "found", "no such repository" or "no such object".

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use stampede_oci::{Digest, Reference, RepoName};

use crate::image::LayoutImage;

/// A manifest or index as served: its bytes and media type.
#[derive(Debug)]
pub struct ManifestEntry {
    /// The document's media type (the `Content-Type` it is served with).
    pub media_type: String,
    pub bytes: Bytes,
}

/// A blob as served: where its bytes are.
#[derive(Debug)]
pub struct BlobEntry {
    /// The file in an image layout.
    pub path: PathBuf,
    pub size_bytes: u64,
}

/// Why a lookup found nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// The repository has never been added.
    Repo,
    /// The repository exists but holds no such tag or digest.
    Object,
}

/// Why an image could not be added.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// A manifest file of the layout could not be read.
    #[error("read manifest {digest} from {path}")]
    Read {
        digest: Digest,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A layout file is missing, or its content does not match its descriptor.
    #[error("layout file {path} does not hold {digest}")]
    Mismatch {
        /// What the image says the file holds.
        digest: Digest,
        path: PathBuf,
    },
}

#[derive(Debug, Default)]
struct Repo {
    tags: HashMap<String, Digest>,
    manifests: HashMap<Digest, Arc<ManifestEntry>>,
    blobs: HashMap<Digest, Arc<BlobEntry>>,
}

/// Repositories and what they hold.
#[derive(Debug, Default)]
pub struct Catalog {
    /// A std `RwLock`: held only to clone an `Arc` or insert entries, never across an `.await`.
    repos: RwLock<HashMap<RepoName, Repo>>,
}

impl Catalog {
    /// Makes `image` available as `repo:tag` (a tag already there is moved). Reads the image's
    /// manifests (small) and checks that every blob file exists with its size: a little
    /// blocking I/O.
    ///
    /// # Errors
    /// [`CatalogError`] when the layout on disk does not match the image.
    pub fn add(&self, repo: RepoName, tag: &str, image: &LayoutImage) -> Result<(), CatalogError> {
        let mut manifests = Vec::new();
        for d in image.manifests() {
            let path = image.blob_path(&d.digest);
            let bytes = std::fs::read(&path).map_err(|source| CatalogError::Read {
                digest: d.digest.clone(),
                path: path.clone(),
                source,
            })?;
            if Digest::of(&bytes) != d.digest {
                return Err(CatalogError::Mismatch {
                    digest: d.digest.clone(),
                    path,
                });
            }
            let blob = BlobEntry {
                path,
                size_bytes: bytes.len() as u64,
            };
            let manifest = ManifestEntry {
                media_type: d.media_type.clone(),
                bytes: Bytes::from(bytes),
            };
            manifests.push((d.digest.clone(), manifest, blob));
        }
        let mut blobs = Vec::new();
        for d in image.blobs() {
            let path = image.blob_path(&d.digest);
            if !std::fs::metadata(&path).is_ok_and(|m| m.len() == d.size_bytes) {
                return Err(CatalogError::Mismatch {
                    digest: d.digest,
                    path,
                });
            }
            blobs.push((
                d.digest,
                BlobEntry {
                    path,
                    size_bytes: d.size_bytes,
                },
            ));
        }

        let mut repos = self.repos.write().expect("catalog lock poisoned");
        let entry = repos.entry(repo).or_default();
        entry.tags.insert(tag.to_owned(), image.top.digest.clone());
        for (digest, manifest, blob) in manifests {
            entry.manifests.insert(digest.clone(), Arc::new(manifest));
            // Manifests are blobs too: registries serve them through `/blobs/` as well.
            entry.blobs.insert(digest, Arc::new(blob));
        }
        for (digest, blob) in blobs {
            entry.blobs.insert(digest, Arc::new(blob));
        }
        Ok(())
    }

    /// The manifest `reference` names in `repo`, with its digest.
    ///
    /// # Errors
    /// [`Missing`] saying whether the repository or the manifest is unknown.
    pub fn manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<(Digest, Arc<ManifestEntry>), Missing> {
        let repos = self.repos.read().expect("catalog lock poisoned");
        let r = repos.get(repo).ok_or(Missing::Repo)?;
        let digest = match reference {
            Reference::Tag(t) => r.tags.get(t).ok_or(Missing::Object)?,
            Reference::Digest(d) => d,
        };
        let entry = r.manifests.get(digest).ok_or(Missing::Object)?;
        Ok((digest.clone(), entry.clone()))
    }

    /// Blob `digest` of `repo`.
    ///
    /// # Errors
    /// [`Missing`] saying whether the repository or the blob is unknown.
    pub fn blob(&self, repo: &RepoName, digest: &Digest) -> Result<Arc<BlobEntry>, Missing> {
        let repos = self.repos.read().expect("catalog lock poisoned");
        let r = repos.get(repo).ok_or(Missing::Repo)?;
        r.blobs.get(digest).cloned().ok_or(Missing::Object)
    }
}
