//! Images of real registries: [`mirror`] fetches one once into an OCI layout in the image cache
//! (`<cache>/mirror/<manifest digest hex>/`), verifying every digest, so repeated bursts are
//! served by the embedded registry instead of hammering the real one; [`resolve_remote`] only
//! reads the manifests, for variants pulled straight from the real registry. The tag is resolved
//! on every run (tags move); below it everything is content-addressed, so a layout already
//! holding the nodes' platform is reused. Only that platform's manifest, config and layers are
//! fetched, beside the whole index (an index without it is held alone, and nodes' pulls then fail
//! as `platform_missing`, as against the real registry). Blobs land through the harness's own
//! puller (`crate::nodes::pull`: verified, renamed into place); manifests and `index.json` are
//! written last, so an interrupted mirror leaves no layout that imports as complete.

use std::path::{Path, PathBuf};
use std::time::Duration;

use stampede_oci::manifest::{descriptor_digest, descriptor_platform, select_platform};
use stampede_oci::{
    ClientConfig, Digest, Manifest, ManifestError, Platform, Reference, RegistryClient,
};

use super::import::{import_layout, ImportError};
use super::layout::{
    blobs_dir, DescriptorDoc, IndexDoc, INDEX_FILE, LAYOUT_TAG, OCI_LAYOUT_CONTENT, OCI_LAYOUT_FILE,
};
use super::layout_image::LayoutImage;
use crate::image::remote::Remote;
use crate::nodes::pull::{FetchedManifest, PullError, Puller, PullerConfig};

/// Layers fetched at once while mirroring.
const MIRROR_CONCURRENT_DOWNLOADS: usize = 3;
/// Longest pause allowed inside a blob body while mirroring.
const MIRROR_BODY_IDLE: Duration = Duration::from_secs(120);

/// A real-registry image held in the cache.
#[derive(Debug, Clone)]
pub struct MirroredImage {
    /// The layout: the index (or manifest) the reference resolved to, and the nodes' platform
    /// when the index has it.
    pub image: LayoutImage,
    /// Blob bytes fetched from the real registry by this call (0 when the cache had them).
    pub fetched_bytes: u64,
    /// Why pulls of this image will fail, when they will: the index lacks the platform (the
    /// message names every platform it has).
    pub platform_missing: Option<String>,
}

/// What a reference resolves to in a real registry, read from its manifests only.
#[derive(Debug, Clone)]
pub struct RemoteImage {
    /// The index or manifest digest the reference resolved to.
    pub digest: Digest,
    pub media_type: String,
    /// Every platform the index lists (for a plain manifest: empty, the config was not read).
    pub listed: Vec<Platform>,
    /// The nodes' platform manifest, when the image has that platform.
    pub platform_digest: Option<Digest>,
    /// Compressed layer bytes of the nodes' platform.
    pub layer_bytes: u64,
    /// Config bytes of the nodes' platform.
    pub config_bytes: u64,
    /// Why pulls of this image will fail, when they will (the message names every platform the
    /// index has).
    pub platform_missing: Option<String>,
}

/// Why an image could not be mirrored or resolved.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    /// The real registry refused or failed.
    #[error("fetch {reference}")]
    Fetch {
        reference: String,
        #[source]
        source: PullError,
    },
    /// A client could not be built (CA file).
    #[error("registry client for {reference}")]
    Client {
        reference: String,
        #[source]
        source: stampede_oci::ClientError,
    },
    /// A manifest of the image is unusable.
    #[error("read manifest of {reference}")]
    Manifest {
        reference: String,
        #[source]
        source: ManifestError,
    },
    #[error("write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("read back the mirrored layout")]
    Import(#[source] ImportError),
}

/// Fetches `remote`'s image for `platform` into `<cache_dir>/mirror/<digest hex>/` (or finds it
/// there) and describes the layout.
///
/// # Errors
/// [`MirrorError`] when the registry fails, a manifest is unusable or the cache is unwritable.
/// An index without `platform` is not an error (see [`MirroredImage::platform_missing`]).
pub async fn mirror(
    remote: &Remote,
    platform: &Platform,
    cache_dir: &Path,
) -> Result<MirroredImage, MirrorError> {
    let reference = remote.reference.to_string();
    let fetch = |source| MirrorError::Fetch {
        reference: reference.clone(),
        source,
    };
    let client = client(remote)?;
    let repo = &remote.reference.repo;
    let top = puller(&client, remote, platform, cache_dir)
        .fetch_manifest(repo, &remote.reference.reference())
        .await
        .map_err(fetch)?;
    let dir = cache_dir.join("mirror").join(top.digest.hex());
    let chosen = chosen_platform(&top, platform).map_err(|source| MirrorError::Manifest {
        reference: reference.clone(),
        source,
    })?;
    if let Ok(image) = import_layout(&dir, Some(LAYOUT_TAG)) {
        let held = match &chosen {
            Ok(digest) => image.platforms.iter().any(|p| p.manifest.digest == *digest),
            Err(_) => true,
        };
        if held {
            tracing::info!(%reference, digest = %top.digest, dir = %dir.display(), "mirror reused");
            return Ok(MirroredImage {
                image,
                fetched_bytes: 0,
                platform_missing: chosen.err().map(|e| e.to_string()),
            });
        }
    }
    let blobs = blobs_dir(&dir, "sha256");
    std::fs::create_dir_all(&blobs).map_err(write_err(&blobs))?;
    let mut fetched_bytes = 0;
    if let Ok(digest) = &chosen {
        // Config and layers first, through the puller (verified, renamed into place).
        let puller = puller(&client, remote, platform, &blobs);
        let record = puller
            .pull(repo, &Reference::Digest(top.digest.clone()))
            .await
            .map_err(fetch)?;
        fetched_bytes = record.bytes_fetched;
        if record.manifest_digest != top.digest {
            let child = puller
                .fetch_manifest(repo, &Reference::Digest(digest.clone()))
                .await
                .map_err(fetch)?;
            write_blob(&blobs, &child.digest, &child.bytes)?;
        }
    }
    write_blob(&blobs, &top.digest, &top.bytes)?;
    write_index(&dir, &top)?;
    let image = import_layout(&dir, Some(LAYOUT_TAG)).map_err(MirrorError::Import)?;
    tracing::info!(%reference, digest = %top.digest, fetched_bytes, dir = %dir.display(), "mirrored");
    Ok(MirroredImage {
        image,
        fetched_bytes,
        platform_missing: chosen.err().map(|e| e.to_string()),
    })
}

/// Reads what `remote`'s reference resolves to for `platform`: the top manifest, and the
/// platform's manifest when the top is an index. No blob is fetched.
///
/// # Errors
/// [`MirrorError::Fetch`] when the registry fails, [`MirrorError::Manifest`] for an unusable
/// manifest.
pub async fn resolve_remote(
    remote: &Remote,
    platform: &Platform,
) -> Result<RemoteImage, MirrorError> {
    let reference = remote.reference.to_string();
    let fetch = |source| MirrorError::Fetch {
        reference: reference.clone(),
        source,
    };
    let manifest_err = |source| MirrorError::Manifest {
        reference: reference.clone(),
        source,
    };
    let client = client(remote)?;
    // Only manifests are fetched: the content store is never written.
    let puller = puller(&client, remote, platform, &std::env::temp_dir());
    let repo = &remote.reference.repo;
    let top = puller
        .fetch_manifest(repo, &remote.reference.reference())
        .await
        .map_err(fetch)?;
    let listed = match &top.manifest {
        Manifest::Index(index) => index
            .manifests()
            .iter()
            .filter_map(descriptor_platform)
            .collect(),
        Manifest::Image(_) => Vec::new(),
    };
    let mut image = RemoteImage {
        digest: top.digest.clone(),
        media_type: top
            .media_type
            .clone()
            .unwrap_or_else(|| stampede_oci::manifest::OCI_MANIFEST.to_owned()),
        listed,
        platform_digest: None,
        layer_bytes: 0,
        config_bytes: 0,
        platform_missing: None,
    };
    let chosen = match chosen_platform(&top, platform).map_err(manifest_err)? {
        Ok(digest) => digest,
        Err(missing) => {
            image.platform_missing = Some(missing.to_string());
            return Ok(image);
        }
    };
    let manifest = if chosen == top.digest {
        top.manifest
    } else {
        puller
            .fetch_manifest(repo, &Reference::Digest(chosen.clone()))
            .await
            .map_err(fetch)?
            .manifest
    };
    let Manifest::Image(m) = manifest else {
        return Err(manifest_err(ManifestError::Digest(format!(
            "{chosen} is an index inside an index"
        ))));
    };
    image.platform_digest = Some(chosen);
    image.layer_bytes = m.layers().iter().map(|l| l.size()).sum();
    image.config_bytes = m.config().size();
    Ok(image)
}

/// The platform manifest digest a node of `platform` picks from `top` (`top` itself for a
/// plain manifest), or why there is none. The outer error is an unusable index entry.
fn chosen_platform(
    top: &FetchedManifest,
    platform: &Platform,
) -> Result<Result<Digest, ManifestError>, ManifestError> {
    match &top.manifest {
        Manifest::Image(_) => Ok(Ok(top.digest.clone())),
        Manifest::Index(index) => match select_platform(index, platform) {
            Ok(d) => descriptor_digest(d).map(Ok),
            Err(missing) => Ok(Err(missing)),
        },
    }
}

/// A client for `remote`, with a response timeout fit for large blobs.
fn client(remote: &Remote) -> Result<RegistryClient, MirrorError> {
    remote
        .client(ClientConfig {
            response_timeout: Duration::from_secs(120),
            ..ClientConfig::default()
        })
        .map_err(|source| MirrorError::Client {
            reference: remote.reference.to_string(),
            source,
        })
}

/// A puller for `remote` over `client` whose content store is `content_dir`.
fn puller(
    client: &RegistryClient,
    remote: &Remote,
    platform: &Platform,
    content_dir: &Path,
) -> Puller {
    Puller::new(
        client.clone(),
        PullerConfig {
            endpoint: remote.endpoint.clone(),
            content_dir: content_dir.to_owned(),
            max_concurrent_downloads: MIRROR_CONCURRENT_DOWNLOADS,
            platform: platform.clone(),
            body_idle_timeout: MIRROR_BODY_IDLE,
            link: None,
        },
    )
}

fn write_err(path: &Path) -> impl FnOnce(std::io::Error) -> MirrorError {
    let path = path.to_owned();
    move |source| MirrorError::Write { path, source }
}

/// Writes `bytes` as blob `digest` (already verified) unless it is there, atomically.
fn write_blob(blobs: &Path, digest: &Digest, bytes: &[u8]) -> Result<(), MirrorError> {
    let path = blobs.join(digest.hex());
    if std::fs::metadata(&path).is_ok_and(|m| m.len() == bytes.len() as u64) {
        return Ok(());
    }
    write_atomically(&path, bytes)
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), MirrorError> {
    let partial = path.with_extension(format!("partial-{}", std::process::id()));
    std::fs::write(&partial, bytes).map_err(write_err(&partial))?;
    std::fs::rename(&partial, path).map_err(write_err(path))
}

/// Writes `oci-layout` and an `index.json` whose one entry, tagged [`LAYOUT_TAG`], is `top`.
fn write_index(dir: &Path, top: &FetchedManifest) -> Result<(), MirrorError> {
    let media_type = top
        .media_type
        .clone()
        .filter(|t| stampede_oci::manifest::is_manifest_type(t))
        .unwrap_or_else(|| match top.manifest {
            Manifest::Index(_) => stampede_oci::manifest::OCI_INDEX.to_owned(),
            Manifest::Image(_) => stampede_oci::manifest::OCI_MANIFEST.to_owned(),
        });
    let entry = DescriptorDoc {
        media_type,
        digest: top.digest.clone(),
        size: top.bytes.len() as u64,
        platform: None,
        annotations: None,
    };
    let index = IndexDoc::tagged(entry, LAYOUT_TAG);
    write_atomically(&dir.join(OCI_LAYOUT_FILE), OCI_LAYOUT_CONTENT)?;
    write_atomically(
        &dir.join(INDEX_FILE),
        &serde_json::to_vec(&index).expect("index serializes"),
    )
}
