//! Deterministic generation of a synthetic image into an OCI image layout, cached on disk:
//! [`generate`] turns a [`SyntheticImage`] and a seed into `cache_dir/<key>/` and describes it as a
//! [`GeneratedImage`]. With `format = "oci"` the layout is what `skopeo copy oci:DIR:latest` and
//! umoci read; containers/image ignores `index.json` entries of Docker media types, so `"docker"`
//! layouts are for serving through the registry only. The same spec and seed give byte-identical
//! blobs on any machine (for one build: the encoders are pinned by `Cargo.lock`; bump
//! [`GENERATOR_VERSION`] whenever output bytes may change). Layers stream from the content
//! generator through tar framing, a hasher, the compressor and a second hasher into a file, one
//! thread per core, never whole in memory. The layout is built in a temporary directory and renamed
//! into place once synced and marked complete, so a reader sees nothing or a complete layout, and
//! two processes generating the same image race harmlessly (the loser uses the winner's).

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use sha2::{Digest as _, Sha256};
use stampede_oci::manifest::{
    DOCKER_CONFIG, DOCKER_LAYER_GZIP, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_CONFIG, OCI_INDEX,
    OCI_MANIFEST,
};
use stampede_oci::{Compression, Digest, Platform};

use super::content::{file_sizes, FileContent};
use super::layout::{
    blob_path, blobs_dir, ConfigDoc, DescriptorDoc, HashingWriter, HistoryDoc, IndexDoc,
    ManifestDoc, RootFsDoc, RunConfigDoc, CREATED, INDEX_FILE, LAYOUT_TAG, OCI_LAYOUT_CONTENT,
    OCI_LAYOUT_FILE,
};
use super::layout_image::{LayoutImage, PlatformManifest};
use super::spec::{ManifestFormat, SpecError, SyntheticImage};

pub use super::layout_image::Descriptor;

/// Part of every cache key: bump it whenever the bytes generated for a spec and seed change.
pub const GENERATOR_VERSION: &str = "stampede-synthetic-1";

/// Written last into a finished layout: the [`GeneratedImage`] as JSON.
pub const MARKER_FILE: &str = "stampede-image.json";

/// Docker's media type for an uncompressed layer.
const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
/// Modification time of every tar entry, seconds since the epoch (2024-01-01, fixed).
const TAR_MTIME: u64 = 1_704_067_200;
/// Content is generated and fed to the tar stream in pieces of this many bytes.
const FILL_BUFFER_BYTES: usize = 256 * 1024;
/// Buffer between the compressor and the blob file.
const FILE_BUFFER_BYTES: usize = 1024 * 1024;
/// A tar block.
const TAR_BLOCK_BYTES: u64 = 512;

/// One platform's image within a generated layout.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PlatformImage {
    pub platform: Platform,
    pub manifest: Descriptor,
    /// Its image config (configs differ per platform; layers are shared).
    pub config: Descriptor,
}

/// One generated layer, shared by every platform's manifest.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GeneratedLayer {
    /// The blob's digest (of the compressed bytes).
    pub digest: Digest,
    /// The layer media type the manifests use.
    pub media_type: String,
    pub compression: Compression,
    /// Blob length in bytes, as downloaded.
    pub compressed_bytes: u64,
    /// sha256 of the uncompressed tar (the config's `rootfs.diff_ids` entry).
    pub diff_id: Digest,
    /// Length of the uncompressed tar in bytes, headers and padding included.
    pub uncompressed_bytes: u64,
    /// File content bytes in the layer (the spec's `size`).
    pub content_bytes: u64,
    /// Regular files in the layer.
    pub files: u32,
}

/// Sums over the layers of one image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Totals {
    pub layers: usize,
    /// Regular files in all layers.
    pub files: u64,
    /// File content bytes.
    pub content_bytes: u64,
    /// Uncompressed tar bytes.
    pub uncompressed_bytes: u64,
    /// Compressed layer blob bytes.
    pub compressed_bytes: u64,
}

/// A generated image: where its layout is and what is in it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GeneratedImage {
    /// The OCI image layout directory (`cache_dir/<key>`).
    pub layout_dir: PathBuf,
    /// The cache key: sha256 hex of the generator version, the spec and the seed.
    pub key: String,
    /// [`GENERATOR_VERSION`] at generation time.
    pub generator: String,
    pub seed: u64,
    pub format: ManifestFormat,
    /// What a tag resolves to: the index (manifest list) when there are several platforms,
    /// else the only platform's manifest.
    pub top: Descriptor,
    /// Per platform, in the spec's order.
    pub platforms: Vec<PlatformImage>,
    /// Layers, base first.
    pub layers: Vec<GeneratedLayer>,
    pub totals: Totals,
}

impl GeneratedLayer {
    /// The layer as manifests list it.
    pub fn descriptor(&self) -> Descriptor {
        Descriptor {
            digest: self.digest.clone(),
            media_type: self.media_type.clone(),
            size_bytes: self.compressed_bytes,
        }
    }
}

impl GeneratedImage {
    /// The file holding blob `digest` (which may not be part of this image).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        blob_path(&self.layout_dir, digest)
    }

    /// The image as any layout image (every platform with every layer), for serving, reading and
    /// its sums ([`LayoutImage::manifests`], [`LayoutImage::blobs`], [`LayoutImage::pull_bytes`]).
    pub fn layout_image(&self) -> LayoutImage {
        let layers: Vec<Descriptor> = self.layers.iter().map(GeneratedLayer::descriptor).collect();
        LayoutImage {
            layout_dir: self.layout_dir.clone(),
            top: self.top.clone(),
            listed: self.platforms.iter().map(|p| p.platform.clone()).collect(),
            platforms: self
                .platforms
                .iter()
                .map(|p| PlatformManifest {
                    platform: p.platform.clone(),
                    manifest: p.manifest.clone(),
                    config: p.config.clone(),
                    layers: layers.clone(),
                })
                .collect(),
        }
    }
}

impl From<&GeneratedImage> for LayoutImage {
    fn from(image: &GeneratedImage) -> Self {
        image.layout_image()
    }
}

/// Why an image could not be generated.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// The spec cannot be generated.
    #[error("invalid synthetic image spec")]
    Spec(#[from] SpecError),
    #[error("create directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Writing a layer failed.
    #[error("write layer {layer} into {path}")]
    Layer {
        /// Index of the layer, base first.
        layer: usize,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Writing a JSON document or the layout's metadata failed.
    #[error("write {what} to {path}")]
    Write {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The finished layout could not be moved into place.
    #[error("move generated layout {from} to {to}")]
    Commit {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The cache key of `spec` with `seed`: sha256 hex of [`GENERATOR_VERSION`], the spec as JSON
/// (field order fixed by its declaration) and the seed.
pub fn cache_key(spec: &SyntheticImage, seed: u64) -> String {
    let mut h = Sha256::new();
    h.update(GENERATOR_VERSION.as_bytes());
    h.update([0]);
    h.update(serde_json::to_vec(spec).expect("a spec always serializes"));
    h.update([0]);
    h.update(seed.to_le_bytes());
    hex::encode(h.finalize())
}

/// Generates `spec` with `seed` into `cache_dir/<key>/`, or reuses it if a complete layout is
/// already there. CPU-bound and blocking (seconds for ~100 MB): call it from
/// `tokio::task::spawn_blocking` inside a runtime.
///
/// # Errors
/// [`GenerateError::Spec`] for a spec that cannot be generated; the other variants for I/O
/// failures, naming the file.
pub fn generate(
    spec: &SyntheticImage,
    seed: u64,
    cache_dir: &Path,
) -> Result<GeneratedImage, GenerateError> {
    let problems = spec.problems();
    if !problems.0.is_empty() {
        return Err(GenerateError::Spec(SpecError(problems)));
    }
    let key = cache_key(spec, seed);
    let final_dir = cache_dir.join(&key);
    if let Some(image) = load_complete(&final_dir, &key) {
        tracing::debug!(dir = %final_dir.display(), "reusing generated image");
        return Ok(image);
    }
    fs::create_dir_all(cache_dir).map_err(|source| GenerateError::CreateDir {
        path: cache_dir.to_owned(),
        source,
    })?;
    // Dropped at the end, it removes what a failed or losing attempt left behind.
    let temp_dir = tempfile::Builder::new()
        .prefix(&format!(".tmp-{}-", &key[..16]))
        .tempdir_in(cache_dir)
        .map_err(|source| GenerateError::CreateDir {
            path: cache_dir.to_owned(),
            source,
        })?;
    let started = Instant::now();
    let image = build(spec, seed, &key, temp_dir.path(), &final_dir)
        .and_then(|image| commit(temp_dir.path(), &final_dir, &key, image))?;
    tracing::info!(
        dir = %final_dir.display(),
        compressed_bytes = image.totals.compressed_bytes,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "generated synthetic image"
    );
    Ok(image)
}

/// The image in `dir` if it is a complete layout of `key` (marker present and matching, every
/// blob present with its size).
fn load_complete(dir: &Path, key: &str) -> Option<GeneratedImage> {
    let bytes = fs::read(dir.join(MARKER_FILE)).ok()?;
    let mut image: GeneratedImage = serde_json::from_slice(&bytes).ok()?;
    if image.key != key || image.generator != GENERATOR_VERSION {
        return None;
    }
    image.layout_dir = dir.to_owned();
    let layout = image.layout_image();
    let complete = dir.join(INDEX_FILE).is_file()
        && layout
            .manifests()
            .into_iter()
            .chain(&layout.blobs())
            .all(|d| {
                fs::metadata(layout.blob_path(&d.digest)).is_ok_and(|m| m.len() == d.size_bytes)
            });
    complete.then_some(image)
}

/// Moves the finished `temp_dir` to `final_dir`. If another process got there first with a
/// complete layout, uses that one; a broken leftover at `final_dir` is moved aside and removed.
fn commit(
    temp_dir: &Path,
    final_dir: &Path,
    key: &str,
    image: GeneratedImage,
) -> Result<GeneratedImage, GenerateError> {
    let failed = |source| GenerateError::Commit {
        from: temp_dir.to_owned(),
        to: final_dir.to_owned(),
        source,
    };
    for _ in 0..2 {
        match fs::rename(temp_dir, final_dir) {
            Ok(()) => {
                if let Some(parent) = final_dir.parent() {
                    sync_dir(parent).ok();
                }
                return Ok(image);
            }
            Err(source) if final_dir.exists() => {
                if let Some(theirs) = load_complete(final_dir, key) {
                    return Ok(theirs);
                }
                let stale = temp_dir.with_extension("stale");
                fs::rename(final_dir, &stale).map_err(|_| failed(source))?;
                fs::remove_dir_all(&stale).ok();
            }
            Err(source) => return Err(failed(source)),
        }
    }
    Err(failed(io::Error::other(
        "the final directory keeps reappearing incomplete",
    )))
}

/// Builds the whole layout in `dir`; the returned image already names `final_dir`.
fn build(
    spec: &SyntheticImage,
    seed: u64,
    key: &str,
    dir: &Path,
    final_dir: &Path,
) -> Result<GeneratedImage, GenerateError> {
    let blobs = blobs_dir(dir, "sha256");
    fs::create_dir_all(&blobs).map_err(|source| GenerateError::CreateDir {
        path: blobs.clone(),
        source,
    })?;
    // Every platform parses: `generate` checked the spec.
    let platforms: Vec<Platform> = spec
        .platforms
        .iter()
        .filter_map(|p| Platform::parse(p))
        .collect();
    let layers = build_layers(spec, seed, dir)?;
    let media = MediaTypes::of(spec.format);
    let platform_images = platforms
        .iter()
        .map(|platform| write_platform_image(dir, &media, platform, seed, &layers))
        .collect::<Result<Vec<_>, _>>()?;
    let top = write_top(dir, &media, &platform_images)?;
    write_layout_index(dir, &top, &platform_images)?;
    let image = GeneratedImage {
        layout_dir: final_dir.to_owned(),
        key: key.to_owned(),
        generator: GENERATOR_VERSION.to_owned(),
        seed,
        format: spec.format,
        top,
        platforms: platform_images,
        totals: Totals::of(&layers),
        layers,
    };
    seal(dir, &blobs, &image)?;
    Ok(image)
}

/// Writes one platform's image config and manifest (over the shared `layers`) as blobs.
fn write_platform_image(
    dir: &Path,
    media: &MediaTypes,
    platform: &Platform,
    seed: u64,
    layers: &[GeneratedLayer],
) -> Result<PlatformImage, GenerateError> {
    let config = config_doc(platform, seed, layers);
    let config = write_json_blob(dir, "image config", media.config, &config)?;
    let manifest = ManifestDoc {
        schema_version: 2,
        media_type: media.manifest.to_owned(),
        config: DescriptorDoc::of(&config, None),
        layers: layers
            .iter()
            .map(|l| DescriptorDoc::of(&l.descriptor(), None))
            .collect(),
    };
    let manifest = write_json_blob(dir, "image manifest", media.manifest, &manifest)?;
    Ok(PlatformImage {
        platform: platform.clone(),
        manifest,
        config,
    })
}

/// The image config of `platform`: a shell as the command, the generator and seed as labels,
/// `layers`' diff IDs and one history entry per layer.
fn config_doc(platform: &Platform, seed: u64, layers: &[GeneratedLayer]) -> ConfigDoc {
    ConfigDoc {
        created: CREATED.to_owned(),
        platform: platform.into(),
        config: RunConfigDoc {
            env: vec![
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned(),
            ],
            cmd: vec!["/bin/sh".to_owned()],
            labels: [
                (
                    "org.stampede.generator".to_owned(),
                    GENERATOR_VERSION.to_owned(),
                ),
                ("org.stampede.seed".to_owned(), seed.to_string()),
            ]
            .into(),
        },
        rootfs: RootFsDoc {
            kind: "layers".to_owned(),
            diff_ids: layers.iter().map(|l| l.diff_id.clone()).collect(),
        },
        history: (0..layers.len())
            .map(|i| HistoryDoc {
                created: CREATED.to_owned(),
                created_by: format!("stampede synthetic layer {i}"),
            })
            .collect(),
    }
}

/// What a tag resolves to: the only platform's manifest, or an index (written as a blob) of
/// every platform's.
fn write_top(
    dir: &Path,
    media: &MediaTypes,
    platform_images: &[PlatformImage],
) -> Result<Descriptor, GenerateError> {
    if let [only] = platform_images {
        return Ok(only.manifest.clone());
    }
    let index = IndexDoc {
        schema_version: 2,
        media_type: media.index.to_owned(),
        manifests: platform_images
            .iter()
            .map(|p| DescriptorDoc::of(&p.manifest, Some(&p.platform)))
            .collect(),
    };
    write_json_blob(dir, "image index", media.index, &index)
}

/// Writes the layout's `index.json` (one entry: `top`, tagged [`LAYOUT_TAG`], with its platform
/// when there is only one) and `oci-layout`.
fn write_layout_index(
    dir: &Path,
    top: &Descriptor,
    platform_images: &[PlatformImage],
) -> Result<(), GenerateError> {
    let single_platform = (platform_images.len() == 1).then(|| &platform_images[0].platform);
    let layout_index = IndexDoc::tagged(DescriptorDoc::of(top, single_platform), LAYOUT_TAG);
    let index_json = serde_json::to_vec(&layout_index).expect("index serializes");
    write_synced(&dir.join(INDEX_FILE), "index.json", &index_json)?;
    write_synced(&dir.join(OCI_LAYOUT_FILE), "oci-layout", OCI_LAYOUT_CONTENT)
}

/// Syncs the blob directory, writes the completion marker (the image as JSON) and syncs the
/// layout directory: after this, `dir` is complete on disk.
fn seal(dir: &Path, blobs: &Path, image: &GeneratedImage) -> Result<(), GenerateError> {
    let sync_err = |what, path: &Path| {
        let path = path.to_owned();
        move |source| GenerateError::Write { what, path, source }
    };
    sync_dir(blobs).map_err(sync_err("blob directory", blobs))?;
    let marker = serde_json::to_vec_pretty(image).expect("image serializes");
    write_synced(&dir.join(MARKER_FILE), "completion marker", &marker)?;
    sync_dir(dir).map_err(sync_err("layout directory", dir))
}

impl Totals {
    fn of(layers: &[GeneratedLayer]) -> Self {
        Self {
            layers: layers.len(),
            files: layers.iter().map(|l| u64::from(l.files)).sum(),
            content_bytes: layers.iter().map(|l| l.content_bytes).sum(),
            uncompressed_bytes: layers.iter().map(|l| l.uncompressed_bytes).sum(),
            compressed_bytes: layers.iter().map(|l| l.compressed_bytes).sum(),
        }
    }
}

/// The media types of one manifest flavour.
struct MediaTypes {
    manifest: &'static str,
    index: &'static str,
    config: &'static str,
}

impl MediaTypes {
    fn of(format: ManifestFormat) -> Self {
        match format {
            ManifestFormat::Oci => Self {
                manifest: OCI_MANIFEST,
                index: OCI_INDEX,
                config: OCI_CONFIG,
            },
            ManifestFormat::Docker => Self {
                manifest: DOCKER_MANIFEST,
                index: DOCKER_MANIFEST_LIST,
                config: DOCKER_CONFIG,
            },
        }
    }

    /// Layer media type. Docker schema2 has no zstd type (validation refuses that pairing); were
    /// it asked for, the OCI type would be the honest label.
    fn layer(format: ManifestFormat, compression: Compression) -> &'static str {
        match (format, compression) {
            (ManifestFormat::Docker, Compression::Gzip) => DOCKER_LAYER_GZIP,
            (ManifestFormat::Docker, Compression::None) => DOCKER_LAYER_TAR,
            (_, c) => c.oci_media_type(),
        }
    }
}

/// Serializes `doc` compactly and stores it as a blob of the layout in `dir`.
fn write_json_blob<T: serde::Serialize>(
    dir: &Path,
    what: &'static str,
    media_type: &str,
    doc: &T,
) -> Result<Descriptor, GenerateError> {
    let bytes = serde_json::to_vec(doc).expect("layout documents serialize");
    let digest = Digest::of(&bytes);
    write_synced(&blob_path(dir, &digest), what, &bytes)?;
    Ok(Descriptor {
        digest,
        media_type: media_type.to_owned(),
        size_bytes: bytes.len() as u64,
    })
}

fn write_synced(path: &Path, what: &'static str, bytes: &[u8]) -> Result<(), GenerateError> {
    let write = || -> io::Result<()> {
        let mut f = File::create(path)?;
        f.write_all(bytes)?;
        f.sync_all()
    };
    write().map_err(|source| GenerateError::Write {
        what,
        path: path.to_owned(),
        source,
    })
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Builds every layer, in parallel on up to one thread per core; results in layer order.
fn build_layers(
    spec: &SyntheticImage,
    seed: u64,
    dir: &Path,
) -> Result<Vec<GeneratedLayer>, GenerateError> {
    let count = spec.layers.len();
    let threads = std::thread::available_parallelism()
        .map_or(1, std::num::NonZero::get)
        .min(count);
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<GeneratedLayer, GenerateError>>>> =
        Mutex::new((0..count).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let layer = next.fetch_add(1, Ordering::Relaxed);
                if layer >= count {
                    break;
                }
                let result = build_layer(spec, seed, layer, dir);
                // The lock only stores a finished result; no I/O happens under it.
                results.lock().expect("layer results mutex poisoned")[layer] = Some(result);
            });
        }
    });
    results
        .into_inner()
        .expect("layer results mutex poisoned")
        .into_iter()
        .map(|r| r.expect("every layer index was taken by a worker"))
        .collect()
}

/// The compressor between the tar stream and the blob file.
enum Encoder<W: Write> {
    None(W),
    Gzip(flate2::write::GzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> Encoder<W> {
    /// `level` unset: gzip 6, zstd 3.
    fn new(compression: Compression, level: Option<i32>, inner: W) -> io::Result<Self> {
        Ok(match compression {
            Compression::None => Self::None(inner),
            Compression::Gzip => {
                let level = u32::try_from(level.unwrap_or(6)).unwrap_or(6);
                // Fixed header: no name, mtime 0, OS "unknown", so the bytes never vary.
                Self::Gzip(
                    flate2::GzBuilder::new()
                        .operating_system(255)
                        .write(inner, flate2::Compression::new(level)),
                )
            }
            Compression::Zstd => {
                let mut e = zstd::stream::write::Encoder::new(inner, level.unwrap_or(3))?;
                e.include_checksum(false)?;
                Self::Zstd(e)
            }
        })
    }

    fn finish(self) -> io::Result<W> {
        match self {
            Self::None(w) => Ok(w),
            Self::Gzip(e) => e.finish(),
            Self::Zstd(e) => e.finish(),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::None(w) => w.write(buf),
            Self::Gzip(e) => e.write(buf),
            Self::Zstd(e) => e.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::None(w) => w.flush(),
            Self::Gzip(e) => e.flush(),
            Self::Zstd(e) => e.flush(),
        }
    }
}

/// Builds layer `layer` as a blob in `dir`'s layout.
fn build_layer(
    spec: &SyntheticImage,
    seed: u64,
    layer: usize,
    dir: &Path,
) -> Result<GeneratedLayer, GenerateError> {
    let partial = blobs_dir(dir, "sha256").join(format!(".layer-{layer}.partial"));
    let layer_err = |path: &Path| {
        let path = path.to_owned();
        move |source| GenerateError::Layer {
            layer,
            path,
            source,
        }
    };
    let l = &spec.layers[layer];
    let file = File::create(&partial).map_err(layer_err(&partial))?;
    let compressed = HashingWriter::new(BufWriter::with_capacity(FILE_BUFFER_BYTES, file));
    let encoder =
        Encoder::new(spec.compression, spec.level, compressed).map_err(layer_err(&partial))?;
    let mut tar = HashingWriter::new(encoder);
    write_tar(&mut tar, spec, seed, layer).map_err(layer_err(&partial))?;
    let (encoder, diff_id, uncompressed_bytes) = tar.finish();
    let compressed = encoder.finish().map_err(layer_err(&partial))?;
    let (buffered, digest, compressed_bytes) = compressed.finish();
    let file = buffered
        .into_inner()
        .map_err(|e| layer_err(&partial)(e.into_error()))?;
    file.sync_all().map_err(layer_err(&partial))?;
    drop(file);
    let path = blob_path(dir, &digest);
    fs::rename(&partial, &path).map_err(layer_err(&path))?;
    Ok(GeneratedLayer {
        digest,
        media_type: MediaTypes::layer(spec.format, spec.compression).to_owned(),
        compression: spec.compression,
        compressed_bytes,
        diff_id,
        uncompressed_bytes,
        content_bytes: l.size.0,
        files: l.files,
    })
}

/// Writes layer `layer`'s tar stream: `data/`, `data/l<layer>/`, then its files
/// `data/l<layer>/f<index>.bin`, then the end-of-archive blocks.
fn write_tar<W: Write>(
    out: &mut W,
    spec: &SyntheticImage,
    seed: u64,
    layer: usize,
) -> io::Result<()> {
    let l = &spec.layers[layer];
    for dir in ["data/".to_owned(), format!("data/l{layer}/")] {
        let header = tar_header(&dir, tar::EntryType::Directory, 0o755, 0)?;
        out.write_all(header.as_bytes())?;
    }
    let sizes = file_sizes(l.file_sizes, l.size.0, l.files, seed, layer);
    let mut buf = vec![0u8; FILL_BUFFER_BYTES];
    for (file, &size) in sizes.iter().enumerate() {
        let path = format!("data/l{layer}/f{file:05}.bin");
        let header = tar_header(&path, tar::EntryType::Regular, 0o644, size)?;
        out.write_all(header.as_bytes())?;
        let mut content = FileContent::new(seed, layer, file as u64, size, l.compressibility);
        loop {
            let n = content.fill(&mut buf);
            if n == 0 {
                break;
            }
            out.write_all(&buf[..n])?;
        }
        let padding = (TAR_BLOCK_BYTES - size % TAR_BLOCK_BYTES) % TAR_BLOCK_BYTES;
        out.write_all(&[0u8; TAR_BLOCK_BYTES as usize][..padding as usize])?;
    }
    out.write_all(&[0u8; 2 * TAR_BLOCK_BYTES as usize])
}

/// A ustar header with fixed owner (0:0), mtime and mode.
fn tar_header(
    path: &str,
    kind: tar::EntryType,
    mode: u32,
    size_bytes: u64,
) -> io::Result<tar::Header> {
    let mut h = tar::Header::new_ustar();
    h.set_path(path)?;
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(TAR_MTIME);
    h.set_size(size_bytes);
    h.set_cksum();
    Ok(h)
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use oci_spec::image::{ImageConfiguration, ImageIndex};
    use stampede_oci::manifest::{OCI_LAYER_GZIP, OCI_LAYER_TAR, OCI_LAYER_ZSTD};
    use stampede_oci::Manifest;

    use super::*;
    use crate::image::spec::{FileSizes, LayerSpec};
    use crate::scenario::units::ByteSize;

    fn layer(size: u64, files: u32, compressibility: f64) -> LayerSpec {
        LayerSpec {
            size: ByteSize(size),
            files,
            file_sizes: FileSizes::Equal,
            compressibility,
        }
    }

    #[test]
    fn an_unset_level_compresses_as_gzip_6_and_zstd_3() {
        let dir = tempfile::tempdir().unwrap();
        for (compression, level) in [(Compression::Gzip, 6), (Compression::Zstd, 3)] {
            let digest = |level| {
                let spec = SyntheticImage {
                    compression,
                    level,
                    ..small_spec()
                };
                generate(&spec, 1, dir.path()).unwrap().layers[0]
                    .digest
                    .clone()
            };
            assert_eq!(digest(None), digest(Some(level)), "{compression:?}");
            assert_ne!(digest(None), digest(Some(1)), "{compression:?}");
        }
    }

    fn small_spec() -> SyntheticImage {
        SyntheticImage {
            layers: vec![
                layer(300_000, 3, 0.5),
                LayerSpec {
                    file_sizes: FileSizes::Lognormal,
                    ..layer(200_001, 17, 0.2)
                },
                layer(1000, 1, 1.0),
            ],
            compression: Compression::Gzip,
            level: Some(1),
            platforms: vec!["linux/amd64".to_owned()],
            format: ManifestFormat::Oci,
        }
    }

    /// Reads a layer blob back: (sha256 of the tar, its length, [(path, size)] of regular files).
    fn read_layer(path: &Path, compression: Compression) -> (Digest, u64, Vec<(String, u64)>) {
        let file = File::open(path).unwrap();
        let reader: Box<dyn Read> = match compression {
            Compression::None => Box::new(file),
            Compression::Gzip => Box::new(flate2::read::GzDecoder::new(file)),
            Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(file).unwrap()),
        };
        let mut tar_bytes = Vec::new();
        io::BufReader::new(reader)
            .read_to_end(&mut tar_bytes)
            .unwrap();
        let mut archive = tar::Archive::new(tar_bytes.as_slice());
        let files = archive
            .entries()
            .unwrap()
            .map(Result::unwrap)
            .filter(|e| e.header().entry_type() == tar::EntryType::Regular)
            .map(|e| {
                let h = e.header();
                assert_eq!((h.uid().unwrap(), h.gid().unwrap()), (0, 0));
                assert_eq!(h.mtime().unwrap(), TAR_MTIME);
                (e.path().unwrap().display().to_string(), e.size())
            })
            .collect();
        (Digest::of(&tar_bytes), tar_bytes.len() as u64, files)
    }

    fn without_dir(image: &GeneratedImage) -> GeneratedImage {
        GeneratedImage {
            layout_dir: PathBuf::new(),
            ..image.clone()
        }
    }

    #[test]
    fn same_seed_gives_same_digests_and_another_seed_differs() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let spec = small_spec();
        let first = generate(&spec, 7, a.path()).unwrap();
        let second = generate(&spec, 7, b.path()).unwrap();
        assert_eq!(without_dir(&first), without_dir(&second));
        assert_eq!(first.layout_dir, a.path().join(&first.key));
        let other = generate(&spec, 8, a.path()).unwrap();
        assert_ne!(other.key, first.key);
        for (x, y) in first.layers.iter().zip(&other.layers) {
            assert_ne!(x.digest, y.digest);
            assert_eq!(x.content_bytes, y.content_bytes);
        }
    }

    #[test]
    fn a_complete_layout_is_reused_and_a_broken_one_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let spec = small_spec();
        let first = generate(&spec, 1, dir.path()).unwrap();
        let marker = first.layout_dir.join(MARKER_FILE);
        let written = fs::metadata(&marker).unwrap().modified().unwrap();
        let again = generate(&spec, 1, dir.path()).unwrap();
        assert_eq!(again, first);
        assert_eq!(fs::metadata(&marker).unwrap().modified().unwrap(), written);

        fs::remove_file(first.blob_path(&first.layers[1].digest)).unwrap();
        let rebuilt = generate(&spec, 1, dir.path()).unwrap();
        assert_eq!(rebuilt, first);
        assert!(first.blob_path(&first.layers[1].digest).is_file());
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from(&first.key)]);
    }

    #[test]
    fn racing_generators_agree_and_leave_one_layout() {
        let dir = tempfile::tempdir().unwrap();
        let spec = small_spec();
        let images: Vec<GeneratedImage> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..3)
                .map(|_| s.spawn(|| generate(&spec, 5, dir.path()).unwrap()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(images.iter().all(|i| *i == images[0]));
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        assert!(load_complete(&images[0].layout_dir, &images[0].key).is_some());
    }

    #[test]
    fn layers_hold_the_files_the_spec_asks_for() {
        let dir = tempfile::tempdir().unwrap();
        let spec = small_spec();
        let image = generate(&spec, 3, dir.path()).unwrap();
        for (i, (l, want)) in image.layers.iter().zip(&spec.layers).enumerate() {
            let (diff_id, tar_bytes, files) =
                read_layer(&image.blob_path(&l.digest), l.compression);
            assert_eq!(diff_id, l.diff_id);
            assert_eq!(tar_bytes, l.uncompressed_bytes);
            assert_eq!(files.len(), want.files as usize);
            assert_eq!(files.iter().map(|f| f.1).sum::<u64>(), want.size.0);
            assert_eq!(files[0].0, format!("data/l{i}/f00000.bin"));
        }
        assert_eq!(image.totals.files, 21);
        assert_eq!(image.totals.content_bytes, 501_001);
    }

    #[test]
    fn compressibility_is_roughly_honoured() {
        let dir = tempfile::tempdir().unwrap();
        let size = 1 << 20;
        let spec = SyntheticImage {
            layers: vec![
                layer(size, 4, 0.0),
                layer(size, 4, 0.5),
                layer(size, 4, 0.9),
            ],
            level: None,
            ..small_spec()
        };
        let image = generate(&spec, 11, dir.path()).unwrap();
        let ratio: Vec<f64> = image
            .layers
            .iter()
            .map(|l| l.compressed_bytes as f64 / size as f64)
            .collect();
        assert!(ratio[0] > 0.99 && ratio[0] < 1.01, "{ratio:?}");
        assert!(ratio[1] > 0.45 && ratio[1] < 0.55, "{ratio:?}");
        assert!(ratio[2] < 0.15, "{ratio:?}");
    }

    #[test]
    fn layout_is_a_valid_oci_layout() {
        let dir = tempfile::tempdir().unwrap();
        for (format, compression, platforms) in [
            (ManifestFormat::Oci, Compression::Gzip, vec!["linux/amd64"]),
            (
                ManifestFormat::Docker,
                Compression::Gzip,
                vec!["linux/amd64", "linux/arm64/v8"],
            ),
            (
                ManifestFormat::Oci,
                Compression::Zstd,
                vec!["linux/amd64", "linux/s390x"],
            ),
            (ManifestFormat::Oci, Compression::None, vec!["linux/arm64"]),
        ] {
            let spec = SyntheticImage {
                format,
                compression,
                level: None,
                platforms: platforms.iter().map(|p| (*p).to_owned()).collect(),
                ..small_spec()
            };
            let image = generate(&spec, 2, dir.path()).unwrap();
            check_layout(&image, &spec);
        }
    }

    fn check_layout(image: &GeneratedImage, spec: &SyntheticImage) {
        let root = &image.layout_dir;
        assert_eq!(
            fs::read(root.join(OCI_LAYOUT_FILE)).unwrap(),
            OCI_LAYOUT_CONTENT
        );
        let index: ImageIndex = serde_json::from_slice(&fs::read(root.join(INDEX_FILE)).unwrap())
            .expect("index.json parses");
        let entry = &index.manifests()[0];
        assert_eq!(entry.digest().to_string(), image.top.digest.to_string());
        assert_eq!(
            entry.annotations().as_ref().unwrap()[crate::image::layout::REF_NAME_ANNOTATION],
            LAYOUT_TAG
        );
        // Every blob is named by its digest.
        for e in fs::read_dir(blobs_dir(root, "sha256")).unwrap() {
            let e = e.unwrap();
            let bytes = fs::read(e.path()).unwrap();
            assert_eq!(Digest::of(&bytes).hex(), e.file_name().to_str().unwrap());
        }
        let top = fs::read(image.blob_path(&image.top.digest)).unwrap();
        let parsed = Manifest::parse(Some(&image.top.media_type), &top).unwrap();
        assert_eq!(image.layout_image().is_index(), spec.platforms.len() > 1);
        if let Manifest::Index(i) = &parsed {
            assert_eq!(i.manifests().len(), spec.platforms.len());
        }
        for p in &image.platforms {
            let bytes = fs::read(image.blob_path(&p.manifest.digest)).unwrap();
            assert_eq!(bytes.len() as u64, p.manifest.size_bytes);
            let Manifest::Image(m) = Manifest::parse(None, &bytes).unwrap() else {
                panic!("platform manifest parses as an index");
            };
            assert_eq!(
                m.media_type().as_ref().unwrap().to_string(),
                p.manifest.media_type
            );
            let children = Manifest::Image(m.clone()).children().unwrap();
            assert_eq!(children[0], (p.config.digest.clone(), p.config.size_bytes));
            for (l, (d, size)) in image.layers.iter().zip(&children[1..]) {
                assert_eq!((&l.digest, l.compressed_bytes), (d, *size));
            }
            let layer_type = m.layers()[0].media_type().to_string();
            let want = match (spec.format, spec.compression) {
                (ManifestFormat::Docker, Compression::Gzip) => DOCKER_LAYER_GZIP,
                (_, Compression::Gzip) => OCI_LAYER_GZIP,
                (_, Compression::Zstd) => OCI_LAYER_ZSTD,
                (_, Compression::None) => OCI_LAYER_TAR,
            };
            assert_eq!(layer_type, want);
            let config: ImageConfiguration =
                serde_json::from_slice(&fs::read(image.blob_path(&p.config.digest)).unwrap())
                    .expect("config parses");
            assert_eq!(config.architecture().to_string(), p.platform.architecture);
            let diff_ids: Vec<String> =
                image.layers.iter().map(|l| l.diff_id.to_string()).collect();
            assert_eq!(config.rootfs().diff_ids(), &diff_ids);
        }
        let (diff_id, _, _) =
            read_layer(&image.blob_path(&image.layers[0].digest), spec.compression);
        assert_eq!(diff_id, image.layers[0].diff_id);
    }

    /// Digests pinned across machines and runs. If this fails after a dependency update (tar,
    /// rand_chacha, flate2/zlib-rs, zstd) or a change here, the generated bytes changed: bump
    /// [`GENERATOR_VERSION`] and update the digests.
    #[test]
    fn digests_are_pinned() {
        let dir = tempfile::tempdir().unwrap();
        let mut got = Vec::new();
        for compression in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let spec = SyntheticImage {
                compression,
                level: None,
                ..small_spec()
            };
            let image = generate(&spec, 7, dir.path()).unwrap();
            got.push(image.layers[1].digest.hex()[..16].to_owned());
            got.push(image.top.digest.hex()[..16].to_owned());
        }
        let want = [
            "837ebc03cc51227a",
            "170364bea1776a7a",
            "345c0d98eb4e2965",
            "00723f74be15cd31",
            "cf15d47a196ea2ea",
            "2e4579a9feee685b",
        ];
        assert_eq!(got, want, "GENERATOR_VERSION {GENERATOR_VERSION}");
    }

    #[test]
    fn invalid_specs_are_refused_before_any_io() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("never-created");
        let spec = SyntheticImage {
            layers: vec![],
            ..small_spec()
        };
        assert!(matches!(
            generate(&spec, 1, &missing),
            Err(GenerateError::Spec(SpecError(problems))) if problems.0[0].path == "layers"
        ));
        assert!(!missing.exists());
    }
}
