//! `bench-harness inspect`: what an image costs to pull and start, read from its manifest and
//! layers before any burst. Per layer: compressed and uncompressed size, compression format and
//! ratio, files, what it ships for nothing (files a later layer overwrites or a whiteout
//! deletes); for the image: platforms, largest files, the wasted bytes, and a predicted pull
//! time at a given bandwidth plus an unpack time from a throughput measured on this machine.
//! Given two images, [`diff`] says what changed layer by layer and what that does to the bytes
//! on the wire, including what a node already holding the first saves on the second.
//!
//! # Layout
//! - `args`: the command's flags into inputs and options.
//! - `input`: the argument (`oci:DIR[:TAG]`, a layout path, `variant:NAME`, a reference), the
//!   platform pick, and streaming blobs from a layout or a registry.
//! - `scan`: one layer read once: digest verified, decompressed, tar members listed.
//! - `overlay`: the layers' members applied in order: what is visible, what was shipped for
//!   nothing.
//! - `measure`: the unpack throughput of this machine, on one of the image's layers.
//! - `diff`: two images side by side.
//! - `render`: the tables.
//!
//! Each layer is streamed exactly once (two at a time) and never held in memory: only member
//! paths and sizes are kept. Nothing is written but the sample layers kept for the unpack
//! measurement (under `work_dir`, removed afterwards).

mod args;
mod diff;
mod input;
mod measure;
mod overlay;
mod render;
mod scan;

use std::path::PathBuf;

use futures_util::stream::{self, StreamExt, TryStreamExt};
use stampede_oci::{Compression, Digest, ManifestError, Platform};

use crate::image::layout_image::Descriptor;
use crate::scenario::units::Bandwidth;

pub use args::InspectArgs;
pub use diff::{diff, Change, LayerRow, Side, VariantDiff, Wire};
pub use input::{Blobs, ImageInput, InputContext, Opened};
pub use measure::{Throughput, SAMPLE_MAX_COMPRESSED_BYTES};
pub use overlay::{Count, DeadFile, LayerWaste, Removal, VisibleFile};
pub use render::{diff_table, image_table};
pub use scan::{Member, MemberKind, ScanError};

/// The bandwidth predictions assume unless told otherwise: a node's share of a busy registry or
/// NAT gateway in a scale-out, well below a data-centre link.
pub const DEFAULT_BANDWIDTH: &str = "200Mbit";
/// Files listed in "largest" and "wasted" lists unless told otherwise.
pub const DEFAULT_TOP_FILES: usize = 10;
/// Layers scanned at once (each is CPU-bound decompression; the machines here have 2 cores).
const SCAN_CONCURRENCY: usize = 2;

/// How to inspect.
#[derive(Debug, Clone)]
pub struct InspectOptions {
    pub platform: Platform,
    pub bandwidth: Bandwidth,
    /// How many largest and wasted files to list.
    pub top_files: usize,
    /// Measure this machine's unpack throughput (on a sample layer per format) to predict unpack
    /// time; without it, no unpack time is predicted.
    pub measure_unpack: bool,
    /// Where sample layers and the measurement's snapshot go (removed afterwards).
    pub work_dir: PathBuf,
}

/// What an image costs, as `inspect --json` prints it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ImageCost {
    /// The image as given on the command line.
    pub source: String,
    /// What the tag or reference resolved to (an index or a manifest).
    pub digest: Digest,
    pub media_type: String,
    /// Every platform the image offers.
    pub platforms: Vec<String>,
    pub platform: String,
    /// Its manifest.
    pub manifest_digest: Digest,
    /// Its config.
    pub config_digest: Digest,
    pub totals: Totals,
    pub waste: Waste,
    pub layers: Vec<LayerCost>,
    /// The largest files of the final filesystem, largest first.
    pub largest_files: Vec<VisibleFile>,
    /// The largest files shipped for nothing, largest first.
    pub wasted_files: Vec<DeadFile>,
    pub prediction: Prediction,
    /// Unpack throughput measured on this machine, per compression format.
    pub unpack_throughput: Vec<Throughput>,
    /// Things that look wrong (a config whose diff IDs do not match its layers).
    pub warnings: Vec<String>,
}

/// Sums over an image's layers.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Totals {
    pub layers: usize,
    /// Layer blob bytes (compressed, as downloaded).
    pub compressed_bytes: u64,
    /// Tar stream bytes (uncompressed).
    pub uncompressed_bytes: u64,
    /// `uncompressed_bytes / compressed_bytes` (2.5 means the blobs are 40 % of the tar).
    pub compression_ratio: f64,
    /// Bytes one pull downloads: index (if any), manifest, config and layers.
    pub pull_bytes: u64,
    /// Regular files the layers ship, counting every copy.
    pub shipped: Count,
    /// Regular files of the final filesystem.
    pub visible: Count,
}

/// What an image ships for nothing: regular files not in its final filesystem.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Waste {
    /// Files replaced by a later entry at the same path.
    pub overwritten: Count,
    /// Files deleted by a later whiteout or opaque directory.
    pub deleted: Count,
    /// `overwritten.bytes + deleted.bytes` (uncompressed file content).
    pub wasted_bytes: u64,
    /// The same, on the wire: each file's bytes scaled by its layer's compressed/uncompressed
    /// ratio (an estimate: compression is not uniform within a layer).
    pub wasted_compressed_bytes_estimate: u64,
}

/// One layer's cost.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LayerCost {
    /// Position, 0 = base.
    pub index: usize,
    pub digest: Digest,
    pub media_type: String,
    pub compression: Compression,
    pub compressed_bytes: u64,
    /// Tar stream bytes.
    pub uncompressed_bytes: u64,
    /// `uncompressed_bytes / compressed_bytes`.
    pub compression_ratio: f64,
    /// sha256 of the tar stream.
    pub diff_id: Digest,
    /// Regular files and their bytes.
    pub files: Count,
    pub directories: u64,
    pub symlinks: u64,
    pub hard_links: u64,
    /// `.wh.` whiteouts.
    pub whiteouts: u64,
    /// Opaque directory markers.
    pub opaque_dirs: u64,
    /// Device nodes, fifos and the like.
    pub other: u64,
    /// This layer's files that are not in the final filesystem.
    pub wasted: Count,
    /// Files this layer's entries overwrite.
    pub overwrites: Count,
    /// Files of lower layers this layer's whiteouts delete.
    pub deletes: Count,
    /// Predicted download time at the bandwidth, in seconds.
    pub fetch_seconds: f64,
    /// Predicted unpack time from the measured throughput, in seconds.
    pub unpack_seconds: Option<f64>,
}

/// Predicted pull and start cost.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Prediction {
    /// The bandwidth assumed (`"200Mbit"`).
    pub bandwidth: String,
    pub bandwidth_bytes_per_sec: u64,
    pub pull_bytes: u64,
    /// `pull_bytes` at the bandwidth, in seconds (no latency, no contention).
    pub pull_seconds: f64,
    /// Sum of the layers' predicted unpack times, in seconds (layers unpack one after another).
    pub unpack_seconds: Option<f64>,
    /// `pull_seconds + unpack_seconds`: fetch everything, then unpack, as this harness's nodes
    /// do. A runtime that unpacks while fetching lands between the larger of the two and this.
    pub total_seconds: Option<f64>,
}

/// Why an image could not be inspected.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// The argument names nothing inspectable.
    #[error("image {arg:?}: {why}")]
    Input { arg: String, why: String },
    /// The scenario named by `--scenario` could not be loaded.
    #[error(transparent)]
    Scenario(#[from] crate::scenario::ScenarioError),
    /// A layout could not be read.
    #[error(transparent)]
    Import(#[from] crate::image::ImportError),
    /// A synthetic variant could not be generated.
    #[error(transparent)]
    Generate(#[from] crate::image::GenerateError),
    /// Registry access could not be resolved (credentials, CA file).
    #[error(transparent)]
    Remote(#[from] crate::image::remote::RemoteError),
    /// A registry client could not be built.
    #[error("registry client")]
    Client(#[source] stampede_oci::ClientError),
    /// A manifest could not be fetched.
    #[error("fetch {reference}")]
    Fetch {
        reference: String,
        #[source]
        source: crate::nodes::pull::PullError,
    },
    /// A registry request got no answer.
    #[error("{what}")]
    Request {
        what: String,
        #[source]
        source: stampede_oci::ClientError,
    },
    /// A registry answered with an error status.
    #[error("{what}: answered {status}")]
    Status {
        what: String,
        status: http::StatusCode,
    },
    /// A registry body could not be read.
    #[error("{what}")]
    Body {
        what: String,
        #[source]
        source: stampede_oci::client::BodyError,
    },
    /// A manifest is unusable, or the index has no manifest for the platform (the message names
    /// every platform it has).
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// A layer could not be read.
    #[error("layer {index} ({digest})")]
    Scan {
        index: usize,
        digest: Digest,
        #[source]
        source: ScanError,
    },
    /// The unpack measurement failed.
    #[error("measure unpack of layer {digest}")]
    Measure {
        digest: Digest,
        #[source]
        source: crate::nodes::unpack::UnpackError,
    },
    /// A local file operation failed.
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// A blocking task died.
    #[error("inspect task")]
    Task(#[source] tokio::task::JoinError),
}

impl InspectError {
    /// Whether the image lacks the platform asked for.
    pub fn is_platform_missing(&self) -> bool {
        matches!(self, Self::Manifest(ManifestError::PlatformMissing { .. }))
    }

    /// For `map_err` on a local file operation: what we were doing.
    fn io(what: String) -> impl FnOnce(std::io::Error) -> Self {
        move |source| Self::Io { what, source }
    }
}

/// Reads `input` for `options.platform` and works out what it costs.
///
/// # Errors
/// [`InspectError`]: unreadable input, a registry failure, a missing platform, a corrupt layer.
pub async fn inspect(
    input: &ImageInput,
    options: &InspectOptions,
) -> Result<ImageCost, InspectError> {
    let opened = input.open(&options.platform).await?;
    let config = opened.blobs.read_small(&opened.config).await?;
    let declared_diff_ids = config_diff_ids(&config);

    let formats: Vec<(Compression, u64)> = opened
        .layers
        .iter()
        .map(|l| {
            (
                Compression::from_media_type(&l.media_type).unwrap_or(Compression::Gzip),
                l.size_bytes,
            )
        })
        .collect();
    let samples = if options.measure_unpack {
        measure::pick_samples(&formats)
    } else {
        Vec::new()
    };
    let work = options.work_dir.display();
    std::fs::create_dir_all(&options.work_dir)
        .map_err(InspectError::io(format!("create {work}")))?;
    let tee_dir = tempfile::Builder::new()
        .prefix("stampede-inspect-")
        .tempdir_in(&options.work_dir)
        .map_err(InspectError::io(format!("create a directory in {work}")))?;
    let tee_path = |d: &Descriptor| tee_dir.path().join(d.digest.hex());

    let scans: Vec<scan::LayerScan> = stream::iter(opened.layers.iter().enumerate())
        .map(|(index, layer)| {
            let keep = (samples.contains(&index) && matches!(opened.blobs, Blobs::Remote(_)))
                .then(|| tee_path(layer));
            let digest = layer.digest.clone();
            let declared = Compression::from_media_type(&layer.media_type);
            opened.blobs.with_reader(layer, move |reader| {
                let create = |path: &PathBuf| {
                    std::fs::File::create(path)
                        .map_err(InspectError::io(format!("create {}", path.display())))
                };
                let mut tee = keep.as_ref().map(create).transpose()?;
                scan::scan_layer(
                    reader,
                    &digest,
                    declared,
                    tee.as_mut().map(|f| f as &mut (dyn std::io::Write + Send)),
                )
                .map_err(|source| InspectError::Scan {
                    index,
                    digest: digest.clone(),
                    source,
                })
            })
        })
        .buffered(SCAN_CONCURRENCY)
        .try_collect()
        .await?;

    let mut throughput = Vec::new();
    for &index in &samples {
        let layer = &opened.layers[index];
        let blob = match &opened.blobs {
            Blobs::Disk(image) => image.blob_path(&layer.digest),
            Blobs::Remote(_) => tee_path(layer),
        };
        let (digest, compression, work) = (
            layer.digest.clone(),
            scans[index].compression,
            options.work_dir.clone(),
        );
        let measured = tokio::task::spawn_blocking(move || {
            measure::measure(&blob, &digest, compression, &work)
                .map_err(|source| InspectError::Measure { digest, source })
        })
        .await
        .map_err(InspectError::Task)??;
        throughput.push(measured);
    }
    drop(tee_dir);

    Ok(cost(CostInputs {
        source: input.describe(),
        opened: &opened,
        scans: &scans,
        declared_diff_ids,
        throughput,
        options,
    }))
}

/// What [`cost`] adds up.
struct CostInputs<'a> {
    source: String,
    opened: &'a Opened,
    scans: &'a [scan::LayerScan],
    declared_diff_ids: Option<Vec<String>>,
    throughput: Vec<Throughput>,
    options: &'a InspectOptions,
}

/// Adds up what the image costs: the layers' overlay (applied in order: the final filesystem and
/// what each layer ships for nothing), each layer's cost, the waste, the totals, the prediction
/// and the warnings; the file lists keep the largest `options.top_files`.
fn cost(inputs: CostInputs<'_>) -> ImageCost {
    let (opened, scans, options) = (inputs.opened, inputs.scans, inputs.options);
    let mut overlay = overlay::Overlay::new();
    for (i, s) in scans.iter().enumerate() {
        overlay.apply(i, &s.members);
    }
    let mut fs = overlay.finish();
    // One entry per layer, even for layers without files.
    fs.layers.resize(scans.len(), LayerWaste::default());
    let rates = Rates {
        bandwidth_bytes_per_sec: options.bandwidth.bytes_per_sec as f64,
        throughput: &inputs.throughput,
    };
    let layers: Vec<LayerCost> = scans
        .iter()
        .zip(&opened.layers)
        .enumerate()
        .map(|(index, (s, d))| LayerCost::of(index, s, d, &fs.layers[index], &rates))
        .collect();
    let waste = Waste::of(&fs.dead, &layers);
    let totals = Totals::of(&layers, opened, fs.visible);
    let prediction = Prediction::of(totals.pull_bytes, &layers, &options.bandwidth, &rates);
    let warnings = warnings(opened, options, inputs.declared_diff_ids, &layers);
    keep_largest(&mut fs, options.top_files);
    ImageCost {
        source: inputs.source,
        digest: opened.top.digest.clone(),
        media_type: opened.top.media_type.clone(),
        platforms: opened.listed.iter().map(ToString::to_string).collect(),
        platform: opened.platform.to_string(),
        manifest_digest: opened.manifest.digest.clone(),
        config_digest: opened.config.digest.clone(),
        totals,
        waste,
        layers,
        largest_files: fs.visible_files,
        wasted_files: fs.dead,
        prediction,
        unpack_throughput: inputs.throughput,
        warnings,
    }
}

/// Keeps the `top_files` largest visible and dead files, largest first (ties by path).
fn keep_largest(fs: &mut overlay::OverlayResult, top_files: usize) {
    fs.visible_files
        .sort_by(|a, b| b.size_bytes.cmp(&a.size_bytes).then(a.path.cmp(&b.path)));
    fs.visible_files.truncate(top_files);
    fs.dead
        .sort_by(|a, b| b.size_bytes.cmp(&a.size_bytes).then(a.path.cmp(&b.path)));
    fs.dead.truncate(top_files);
}

/// What the predictions divide by: the bandwidth, and the unpack throughput measured per
/// compression format.
struct Rates<'a> {
    bandwidth_bytes_per_sec: f64,
    throughput: &'a [Throughput],
}

impl Rates<'_> {
    /// Seconds to download `bytes` at the bandwidth.
    fn fetch_seconds(&self, bytes: u64) -> f64 {
        bytes as f64 / self.bandwidth_bytes_per_sec
    }

    /// Seconds to unpack `uncompressed_bytes` of a `compression` layer, if that format was
    /// measured.
    fn unpack_seconds(&self, compression: Compression, uncompressed_bytes: u64) -> Option<f64> {
        self.throughput
            .iter()
            .find(|t| t.compression == compression)
            .map(|t| uncompressed_bytes as f64 / t.bytes_per_sec)
    }
}

/// `uncompressed / compressed`, 0 for an empty blob.
fn ratio(compressed: u64, uncompressed: u64) -> f64 {
    if compressed == 0 {
        0.0
    } else {
        uncompressed as f64 / compressed as f64
    }
}

impl LayerCost {
    /// Layer `index` (scanned as `s`, described by `d`), with what the overlay says of its
    /// files (`waste`) and its predicted times at `rates`.
    fn of(
        index: usize,
        s: &scan::LayerScan,
        d: &Descriptor,
        waste: &LayerWaste,
        rates: &Rates<'_>,
    ) -> Self {
        let mut c = Self {
            index,
            digest: d.digest.clone(),
            media_type: d.media_type.clone(),
            compression: s.compression,
            compressed_bytes: s.compressed_bytes,
            uncompressed_bytes: s.uncompressed_bytes,
            compression_ratio: ratio(s.compressed_bytes, s.uncompressed_bytes),
            diff_id: s.diff_id.clone(),
            files: Count::default(),
            directories: 0,
            symlinks: 0,
            hard_links: 0,
            whiteouts: 0,
            opaque_dirs: 0,
            other: 0,
            wasted: waste.wasted,
            overwrites: waste.overwrites,
            deletes: waste.deletes,
            fetch_seconds: rates.fetch_seconds(s.compressed_bytes),
            unpack_seconds: rates.unpack_seconds(s.compression, s.uncompressed_bytes),
        };
        c.count_members(&s.members);
        c
    }

    /// Counts `members` by kind; regular files with their bytes.
    fn count_members(&mut self, members: &[Member]) {
        for m in members {
            match m.kind {
                MemberKind::File => self.files.add(m.size_bytes),
                MemberKind::Dir => self.directories += 1,
                MemberKind::Symlink => self.symlinks += 1,
                MemberKind::HardLink => self.hard_links += 1,
                MemberKind::Whiteout => self.whiteouts += 1,
                MemberKind::Opaque => self.opaque_dirs += 1,
                MemberKind::Other => self.other += 1,
            }
        }
    }
}

impl Waste {
    /// What the `dead` files add up to, and their compressed size estimated from the ratio of
    /// the layer that shipped each.
    fn of(dead: &[DeadFile], layers: &[LayerCost]) -> Self {
        let (mut overwritten, mut deleted) = (Count::default(), Count::default());
        let mut estimate = 0.0;
        for dead in dead {
            match dead.how {
                Removal::Overwritten => overwritten.add(dead.size_bytes),
                Removal::Deleted => deleted.add(dead.size_bytes),
            }
            let l = &layers[dead.layer];
            if l.uncompressed_bytes > 0 {
                estimate += dead.size_bytes as f64 * l.compressed_bytes as f64
                    / l.uncompressed_bytes as f64;
            }
        }
        Self {
            overwritten,
            deleted,
            wasted_bytes: overwritten.bytes + deleted.bytes,
            wasted_compressed_bytes_estimate: estimate.round() as u64,
        }
    }
}

impl Totals {
    /// Sums over `layers`; a pull downloads the index (when the top is one), the manifest, the
    /// config and every layer. `visible` is the final filesystem's files.
    fn of(layers: &[LayerCost], opened: &Opened, visible: Count) -> Self {
        let compressed_bytes: u64 = layers.iter().map(|l| l.compressed_bytes).sum();
        let uncompressed_bytes: u64 = layers.iter().map(|l| l.uncompressed_bytes).sum();
        let index_bytes = if opened.top.digest == opened.manifest.digest {
            0
        } else {
            opened.top.size_bytes
        };
        let mut shipped = Count::default();
        for l in layers {
            shipped.files += l.files.files;
            shipped.bytes += l.files.bytes;
        }
        Self {
            layers: layers.len(),
            compressed_bytes,
            uncompressed_bytes,
            compression_ratio: ratio(compressed_bytes, uncompressed_bytes),
            pull_bytes: index_bytes
                + opened.manifest.size_bytes
                + opened.config.size_bytes
                + compressed_bytes,
            shipped,
            visible,
        }
    }
}

impl Prediction {
    /// Pulling `pull_bytes` at `bandwidth`, then unpacking `layers` one after another.
    fn of(pull_bytes: u64, layers: &[LayerCost], bandwidth: &Bandwidth, rates: &Rates<'_>) -> Self {
        let pull_seconds = rates.fetch_seconds(pull_bytes);
        let unpack_seconds: Option<f64> = layers.iter().map(|l| l.unpack_seconds).sum();
        Self {
            bandwidth: bandwidth.to_string(),
            bandwidth_bytes_per_sec: bandwidth.bytes_per_sec,
            pull_bytes,
            pull_seconds,
            unpack_seconds,
            total_seconds: unpack_seconds.map(|u| pull_seconds + u),
        }
    }
}

/// What looks wrong: a single-platform manifest the node's platform cannot run, a config whose
/// `rootfs.diff_ids` (when it has them: `declared_diff_ids`) do not match the layers.
fn warnings(
    opened: &Opened,
    options: &InspectOptions,
    declared_diff_ids: Option<Vec<String>>,
    layers: &[LayerCost],
) -> Vec<String> {
    let mut warnings = Vec::new();
    if !opened.platform.runs_on(&options.platform) {
        warnings.push(format!(
            "a single {} manifest, not {}: a {} node refuses it (its pulls fail as platform_missing)",
            opened.platform, options.platform, options.platform
        ));
    }
    if let Some(declared) = declared_diff_ids {
        let actual: Vec<String> = layers.iter().map(|l| l.diff_id.to_string()).collect();
        if declared != actual {
            warnings.push(format!(
                "the config's rootfs.diff_ids ({}) do not match the layers' tar digests ({}): a runtime verifying them refuses this image",
                match declared.len() {
                    1 => "1 entry".to_owned(),
                    n => format!("{n} entries"),
                },
                crate::report::human::count(actual.len() as u64, "layer")
            ));
        }
    }
    warnings
}

/// `rootfs.diff_ids` of an image config, if it has them.
fn config_diff_ids(config: &[u8]) -> Option<Vec<String>> {
    #[derive(serde::Deserialize)]
    struct Config {
        rootfs: RootFs,
    }
    #[derive(serde::Deserialize)]
    struct RootFs {
        diff_ids: Vec<String>,
    }
    serde_json::from_slice::<Config>(config)
        .ok()
        .map(|c| c.rootfs.diff_ids)
}
