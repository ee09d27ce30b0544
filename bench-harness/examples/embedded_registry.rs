//! Generates a synthetic image and serves it from the embedded registry, for trying real
//! clients against it by hand:
//!
//! ```sh
//! cargo run --release -p bench-harness --example embedded_registry -- /tmp/stampede-cache 64 4 gzip 600
//! skopeo copy --src-tls-verify=false docker://127.0.0.1:PORT/stampede/synthetic:latest dir:/tmp/x
//! ```
//!
//! Arguments: cache dir, total layer content in MiB (default 64), layers (4), compression
//! (`gzip`, `zstd` or `none`), seconds to serve (0: generate only), manifest format (`oci` or
//! `docker`), platforms (comma-separated, default `linux/amd64`). Prints the generation time,
//! the layout dir and the registry URL; prints the registry's accounting when it stops.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use bench_harness::image::{generate, FileSizes, LayerSpec, ManifestFormat, SyntheticImage};
use bench_harness::registry::{EmbeddedRegistry, RegistryModel};
use bench_harness::scenario::units::ByteSize;
use stampede_oci::Compression;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or_else(|| default.to_owned());
    let cache_dir = PathBuf::from(arg(0, "/tmp/stampede-cache"));
    let total_mib: u64 = arg(1, "64").parse().context("total MiB")?;
    let layers: u64 = arg(2, "4").parse().context("layer count")?;
    let compression = match arg(3, "gzip").as_str() {
        "zstd" => Compression::Zstd,
        "none" => Compression::None,
        _ => Compression::Gzip,
    };
    let serve_secs: u64 = arg(4, "0").parse().context("seconds to serve")?;
    let format = match arg(5, "oci").as_str() {
        "docker" => ManifestFormat::Docker,
        _ => ManifestFormat::Oci,
    };
    let platforms = arg(6, "linux/amd64")
        .split(',')
        .map(str::to_owned)
        .collect();

    let spec = SyntheticImage {
        layers: (0..layers.max(1))
            .map(|_| LayerSpec {
                size: ByteSize((total_mib << 20) / layers.max(1)),
                files: 64,
                file_sizes: FileSizes::Lognormal,
                compressibility: 0.5,
            })
            .collect(),
        compression,
        level: None,
        platforms,
        format,
    };
    let started = Instant::now();
    let image = tokio::task::spawn_blocking(move || generate(&spec, 1, &cache_dir))
        .await?
        .context("generate image")?;
    println!(
        "generated {} layers, {} compressed / {} uncompressed in {:.2?} at {}",
        image.totals.layers,
        ByteSize(image.totals.compressed_bytes).human(),
        ByteSize(image.totals.uncompressed_bytes).human(),
        started.elapsed(),
        image.layout_dir.display()
    );
    if serve_secs == 0 {
        return Ok(());
    }
    let registry = EmbeddedRegistry::start(RegistryModel::default(), 1).await?;
    registry.add_image("stampede/synthetic", "latest", &image)?;
    println!(
        "serving {}/v2/stampede/synthetic/manifests/latest",
        registry.url()
    );
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = tokio::time::sleep(Duration::from_secs(serve_secs)) => {}
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&registry.accounting().snapshot())?
    );
    registry.shutdown().await;
    Ok(())
}
