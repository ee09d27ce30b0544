//! `bench-harness calibrate`: a machine profile measured on the machine it runs on, from short
//! real runs of the harness's own code (medians of [`SAMPLES`]): a gzip and a zstd sample layer
//! made by the image generator, hashed with sha256 (hash rate), unpacked by the harness's
//! unpacker (decompress and apply rates, timed apart by [`crate::nodes::unpack::LayerStats`]), a
//! file written and synced (disk write), and small HTTP requests to the embedded registry on
//! loopback (client overhead). Cache costs are taken as the client's (the daemon hashes and
//! copies the same per stream); the uplink is left to the scenario's node link. Where containerd
//! is installed (and we are root), `ctr` is measured too (`ctr_calibration.rs`).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::Digest as _;

use crate::image::{generate, FileSizes, LayerSpec, ManifestFormat, SyntheticImage};
use crate::scenario::units::{Bandwidth, ByteSize, Span};

use super::profile::{CacheCosts, ClusterShape, NodeCosts, Profile, UnpackRates};

/// Runs per measurement; the median is kept.
pub const SAMPLES: usize = 3;
/// Requests timed for the client overhead.
const REQUESTS: usize = 50;

/// What to measure with.
#[derive(Debug, Clone)]
pub struct Settings {
    pub name: String,
    /// Content bytes per sample layer.
    pub layer_bytes: u64,
    /// Work directory (a temp dir when unset).
    pub work_dir: Option<PathBuf>,
}

pub(super) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// A measured rate, rounded to whole MB/s (the file then reads `8672Mbit`, not a 10-digit
/// byte count; measurements are not that precise anyway).
pub(super) fn bandwidth(bytes_per_sec: f64) -> Bandwidth {
    Bandwidth {
        bytes_per_sec: ((bytes_per_sec / 1e6).round().max(1.0) * 1e6) as u64,
    }
}

/// Measures this machine.
///
/// # Errors
/// When a sample cannot be generated, read, unpacked or written.
pub async fn measure(settings: &Settings) -> anyhow::Result<Profile> {
    let mut builder = tempfile::Builder::new();
    builder.prefix("stampede-calibrate-");
    let work = match &settings.work_dir {
        Some(d) => builder.tempdir_in(d)?,
        None => builder.tempdir()?,
    };
    let root = work.path().to_owned();
    let layer_bytes = settings.layer_bytes;
    let cpu = tokio::task::spawn_blocking(move || measure_cpu(&root, layer_bytes)).await??;
    let request_overhead = measure_requests().await?;
    let ctr = super::ctr_calibration::measure(work.path(), layer_bytes)
        .await
        .map_err(|error| {
            let error = anyhow::Error::from(error);
            tracing::warn!(
                "containerd's ctr not calibrated, the profile has no [ctr] table: {error:#}"
            );
        })
        .ok();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    Ok(Profile {
        name: settings.name.clone(),
        source: format!(
            "bench-harness calibrate, {} MiB sample layers, median of {SAMPLES}, {}",
            layer_bytes >> 20,
            humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        ),
        node: NodeCosts {
            cores: u32::try_from(cores).unwrap_or(1),
            shared_host_cores: None,
            hash_rate: bandwidth(cpu.hash),
            disk_write: bandwidth(cpu.disk),
            request_overhead: Span(request_overhead),
            stream_rate: bandwidth(cpu.hash),
            uplink: None,
        },
        unpack: UnpackRates {
            gzip_decompress: bandwidth(cpu.gzip),
            zstd_decompress: bandwidth(cpu.zstd),
            apply: bandwidth(cpu.apply),
        },
        cache: CacheCosts {
            request_overhead: Span(request_overhead),
            stream_rate: bandwidth(cpu.hash),
            serve_rate: bandwidth(cpu.hash * cores as f64),
            lock_poll: Span(Duration::from_millis(500)),
        },
        cluster: ClusterShape::default(),
        ctr,
    })
}

/// The profile as TOML with a header comment.
///
/// # Errors
/// Only if serialization fails.
pub fn to_toml(p: &Profile) -> anyhow::Result<String> {
    Ok(format!(
        "# Machine profile for `bench-harness model` (bench-harness/README.md, \"Fleet model\").\n{}",
        toml::to_string(p)?
    ))
}

struct CpuRates {
    hash: f64,
    disk: f64,
    gzip: f64,
    zstd: f64,
    apply: f64,
}

fn measure_cpu(root: &Path, layer_bytes: u64) -> anyhow::Result<CpuRates> {
    let spec = |compression| SyntheticImage {
        layers: vec![LayerSpec {
            size: ByteSize(layer_bytes),
            files: 256,
            file_sizes: FileSizes::Lognormal,
            compressibility: 0.5,
        }],
        compression,
        level: None,
        platforms: vec!["linux/amd64".into()],
        format: ManifestFormat::Oci,
    };
    let images = root.join("images");
    let mut hash = Vec::new();
    let mut rates = [Vec::new(), Vec::new()];
    let mut apply = Vec::new();
    let formats = [
        stampede_oci::Compression::Gzip,
        stampede_oci::Compression::Zstd,
    ];
    for (k, compression) in formats.into_iter().enumerate() {
        let image = generate(&spec(compression), 1, &images)?;
        let layer = &image.layers[0];
        let blob = image.blob_path(&layer.digest);
        for i in 0..SAMPLES {
            let mut file = std::fs::File::open(&blob)?;
            let mut buf = vec![0u8; 1 << 20];
            let mut hasher = sha2::Sha256::new();
            let started = Instant::now();
            loop {
                let n = file.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
            }
            let _ = hasher.finalize();
            hash.push(layer.compressed_bytes as f64 / started.elapsed().as_secs_f64());
            let target = root.join(format!("unpacked-{k}-{i}"));
            let stats = crate::nodes::unpack::unpack_layer_file(
                &blob,
                compression,
                &target,
                &crate::nodes::unpack::UnpackOptions::default(),
            )?;
            let u = stats.uncompressed_bytes as f64;
            rates[k].push(u / stats.decompress.as_secs_f64().max(1e-9));
            apply.push(u / stats.apply.as_secs_f64().max(1e-9));
            let _ = std::fs::remove_dir_all(&target);
        }
    }
    let mut disk = Vec::new();
    let chunk = vec![0x5au8; 1 << 20];
    for i in 0..SAMPLES {
        let path = root.join(format!("disk-{i}"));
        let started = Instant::now();
        let mut f = std::fs::File::create(&path)?;
        let mut written = 0u64;
        while written < layer_bytes {
            f.write_all(&chunk)?;
            written += chunk.len() as u64;
        }
        f.sync_all()?;
        disk.push(written as f64 / started.elapsed().as_secs_f64());
        let _ = std::fs::remove_file(&path);
    }
    let [gzip, zstd] = rates;
    Ok(CpuRates {
        hash: median(hash),
        disk: median(disk),
        gzip: median(gzip),
        zstd: median(zstd),
        apply: median(apply),
    })
}

/// Median time of a small GET (`/v2/`) to the embedded registry on loopback, on a kept-alive
/// connection, as the client's per-request cost.
async fn measure_requests() -> anyhow::Result<Duration> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let registry =
        crate::registry::EmbeddedRegistry::start(crate::registry::RegistryModel::default(), 1)
            .await?;
    let url = registry.url();
    let addr = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let mut conn = tokio::net::TcpStream::connect(&addr).await?;
    let mut times = Vec::with_capacity(REQUESTS);
    let mut buf = vec![0u8; 16 * 1024];
    let request = format!("GET /v2/ HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    for _ in 0..REQUESTS {
        let started = Instant::now();
        conn.write_all(request.as_bytes()).await?;
        // The ping answer is small: its headers and body arrive in one read or a few.
        let mut got = Vec::new();
        loop {
            let n = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf)).await??;
            if n == 0 {
                anyhow::bail!("registry closed the connection during calibration");
            }
            got.extend_from_slice(&buf[..n]);
            if complete_response(&got) {
                break;
            }
        }
        times.push(started.elapsed().as_secs_f64());
    }
    registry.shutdown().await;
    // Whole microseconds: the file then reads `8us`.
    Ok(Duration::from_micros(
        (median(times) * 1e6).round().max(1.0) as u64,
    ))
}

/// Whether `bytes` hold a whole HTTP/1.1 response with a `content-length` body.
fn complete_response(bytes: &[u8]) -> bool {
    let text = String::from_utf8_lossy(bytes);
    let Some(end) = text.find("\r\n\r\n") else {
        return false;
    };
    let length = text[..end]
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())
                .flatten()
        })
        .unwrap_or(0);
    bytes.len() >= end + 4 + length
}
