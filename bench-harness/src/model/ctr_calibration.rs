//! `calibrate`'s measurement of containerd's `ctr` as a puller ([`CtrCosts`]): kubelet pulls
//! with containerd, not with the harness's client, so a profile for real nodes needs its costs.
//! One containerd on a temporary root (`stampede_lab::Containerd`) pulls generated one-layer
//! images from the embedded registry on loopback, each with its own seed (containerd shares
//! content between its namespaces, so a blob it holds is not fetched again). Per sample, four
//! cold runs of `ctr`, each timed from its start to its exit: `content fetch` and `images pull`
//! of a 64 KiB image and of one of the sample layer's size. Medians of [`SAMPLES`] then give
//! `pull_overhead` (the small pull), `stream_rate` (the large layer's bytes over the large fetch
//! less the small one) and `unpack` (its uncompressed bytes over the large pull less the large
//! fetch: containerd 1.6 unpacks after fetching). Needs root, `containerd` and `ctr`; without
//! them [`measure`] says why and the profile has no `[ctr]` table.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use stampede_lab::Containerd;

use crate::image::{
    generate, FileSizes, GeneratedImage, LayerSpec, ManifestFormat, SyntheticImage,
};
use crate::registry::{EmbeddedRegistry, RegistryModel};
use crate::scenario::units::{ByteSize, Span};

use super::calibrate::{bandwidth, median, SAMPLES};
use super::profile::CtrCosts;

/// Content bytes of the small image's one layer.
const SMALL_LAYER_BYTES: u64 = 64 * 1024;
/// Most content bytes of the large image's layer (calibrate's sample layer, at most this).
const MAX_LARGE_LAYER_BYTES: u64 = 32 << 20;
/// The containerd namespace the pulls are made in.
const NAMESPACE: &str = "calibrate";

/// Why containerd was not calibrated.
#[derive(Debug, thiserror::Error)]
pub enum CtrCalibrationError {
    /// Not root, containerd or ctr missing, or containerd did not start.
    #[error("containerd could not be started")]
    Containerd(#[source] stampede_lab::LabError),
    /// A `ctr` command failed.
    #[error("`{command}` failed: {stderr}")]
    Ctr { command: String, stderr: String },
    /// A sample image could not be generated or served.
    #[error("prepare the ctr sample images")]
    Images(#[source] anyhow::Error),
}

/// One sample's four timings, seconds.
#[derive(Debug, Clone, Copy)]
struct Timings {
    small_pull: f64,
    small_fetch: f64,
    large_fetch: f64,
    large_pull: f64,
}

/// Measures `ctr` on this machine (see the module doc), with its work under `root`.
///
/// # Errors
/// [`CtrCalibrationError`]: containerd not available, a pull that failed, or an image that could
/// not be made.
pub async fn measure(root: &Path, layer_bytes: u64) -> Result<CtrCosts, CtrCalibrationError> {
    let registry = EmbeddedRegistry::start(RegistryModel::default(), 1)
        .await
        .map_err(|e| CtrCalibrationError::Images(e.into()))?;
    let large_bytes = layer_bytes.clamp(SMALL_LAYER_BYTES, MAX_LARGE_LAYER_BYTES);
    let images = root.join("ctr-images");
    let mut refs = Vec::new();
    let mut large = None;
    for sample in 0..SAMPLES as u64 {
        let mut names = Vec::new();
        let sizes = [
            SMALL_LAYER_BYTES,
            SMALL_LAYER_BYTES,
            large_bytes,
            large_bytes,
        ];
        for (k, bytes) in sizes.into_iter().enumerate() {
            let image = sample_image(bytes, 100 + sample * 4 + k as u64, &images)?;
            let repo = format!("calibrate/ctr{k}");
            let tag = format!("s{sample}");
            registry
                .add_image(&repo, &tag, &image)
                .map_err(|e| CtrCalibrationError::Images(e.into()))?;
            names.push(format!("{}/{repo}:{tag}", registry.addr()));
            if k == 2 {
                large = Some(image);
            }
        }
        refs.push(names);
    }
    let large = large.ok_or_else(|| CtrCalibrationError::Images(anyhow::anyhow!("no samples")))?;
    let (compressed, uncompressed) = large
        .layers
        .first()
        .map(|l| (l.compressed_bytes as f64, l.uncompressed_bytes as f64))
        .unwrap_or_default();
    let ctrd_root = root.join("containerd");
    let timings = tokio::task::spawn_blocking(move || pull_samples(&ctrd_root, &refs))
        .await
        .map_err(|e| CtrCalibrationError::Images(e.into()))?;
    registry.shutdown().await;
    let timings = timings?;
    let med = |f: fn(&Timings) -> f64| median(timings.iter().map(f).collect());
    let overhead = med(|t| t.small_pull);
    let fetch_s = (med(|t| t.large_fetch) - med(|t| t.small_fetch)).max(1e-3);
    let unpack_s = (med(|t| t.large_pull) - med(|t| t.large_fetch)).max(1e-3);
    Ok(CtrCosts {
        pull_overhead: Span(Duration::from_millis((overhead * 1e3).round() as u64)),
        stream_rate: bandwidth(compressed / fetch_s),
        unpack: bandwidth(uncompressed / unpack_s),
    })
}

/// A one-layer gzip image of `bytes` content, as calibrate's sample layers are made.
fn sample_image(bytes: u64, seed: u64, dir: &Path) -> Result<GeneratedImage, CtrCalibrationError> {
    let spec = SyntheticImage {
        layers: vec![LayerSpec {
            size: ByteSize(bytes),
            files: if bytes > SMALL_LAYER_BYTES { 256 } else { 4 },
            file_sizes: FileSizes::Lognormal,
            compressibility: 0.5,
        }],
        compression: stampede_oci::Compression::Gzip,
        level: None,
        platforms: vec!["linux/amd64".into()],
        format: ManifestFormat::Oci,
    };
    generate(&spec, seed, dir).map_err(|e| CtrCalibrationError::Images(e.into()))
}

/// Starts containerd and times every sample's four pulls (`refs[sample]`: small for pull,
/// small for fetch, large for fetch, large for pull).
fn pull_samples(root: &Path, refs: &[Vec<String>]) -> Result<Vec<Timings>, CtrCalibrationError> {
    let containerd = Containerd::start(root).map_err(CtrCalibrationError::Containerd)?;
    let time = |sub: &[&str], image: &str| -> Result<f64, CtrCalibrationError> {
        let mut cmd: Command = containerd.ctr(NAMESPACE);
        cmd.args(sub).args(["--plain-http", image]);
        let command = format!("ctr {} {image}", sub.join(" "));
        let started = Instant::now();
        let out = cmd.output().map_err(|e| CtrCalibrationError::Ctr {
            command: command.clone(),
            stderr: e.to_string(),
        })?;
        let took = started.elapsed().as_secs_f64();
        if !out.status.success() {
            return Err(CtrCalibrationError::Ctr {
                command,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        Ok(took)
    };
    let (pull, fetch) = (["images", "pull"], ["content", "fetch"]);
    refs.iter()
        .map(|r| {
            Ok(Timings {
                small_pull: time(&pull, &r[0])?,
                small_fetch: time(&fetch, &r[1])?,
                large_fetch: time(&fetch, &r[2])?,
                large_pull: time(&pull, &r[3])?,
            })
        })
        .collect()
}
