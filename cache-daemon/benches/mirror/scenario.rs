//! The measurements only the daemon's own bench makes, each interleaving the targets within
//! every repetition (the order rotates per repetition) and starting each target fresh (the cold
//! burst and the cold large pull are bench-harness scenarios, `scenarios/daemon-*.toml`):
//! - [`hot`]: wrk on a cached 64 MiB blob, a 1 KiB blob and a manifest by digest, with the
//!   target's CPU time per run;
//! - [`rss`]: 256 clients streaming one blob, cold then hot, while RSS is sampled;
//! - [`floor`]: one client's cold pull of a large blob on loopback through each cache and
//!   through the floor of the work (`floor.rs`), with the CPU time each spent.
//!
//! Scenarios only measure and return runs; `report.rs` computes statistics and renders them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use stampede_oci::Digest;

use crate::client::{self, BurstSpec};
use crate::cpu::{Counted, CpuClock};
use crate::data::BlobFile;
use crate::floor::Floor;
use crate::rss::{self, Sampler};
use crate::target::{Kind, Target};
use crate::upstream::Origin;
use crate::wrk::{self, WrkResult, WrkSpec};

/// Repository the test content is pushed to.
pub const REPO: &str = "bench/app";

/// Bound on one burst of the memory scenario.
const BURST_LIMIT: Duration = Duration::from_secs(300);

/// Shared setup every scenario reads.
#[derive(Debug)]
pub struct Bed {
    /// Scratch directory for targets' state.
    pub work: PathBuf,
    /// Targets to measure, daemon first.
    pub kinds: Vec<Kind>,
    /// Repetitions.
    pub reps: usize,
    /// wrk run length.
    pub hot_duration: Duration,
}

impl Bed {
    /// The targets in the order of repetition `rep`.
    fn order(&self, rep: usize) -> Vec<Kind> {
        let mut kinds = self.kinds.clone();
        let n = kinds.len().max(1);
        kinds.rotate_left(rep % n);
        kinds
    }
}

fn progress(what: std::fmt::Arguments<'_>) {
    eprintln!("mirror: {what}");
}

/// What a hot wrk run fetches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HotTest {
    /// The 64 MiB blob over 8 connections.
    LargeBlob,
    /// The 1 KiB blob over 16 connections.
    SmallBlob,
    /// The manifest by digest over 16 connections.
    Manifest,
}

impl HotTest {
    /// Every test, in run order.
    pub const ALL: [HotTest; 3] = [HotTest::LargeBlob, HotTest::SmallBlob, HotTest::Manifest];

    /// wrk connections.
    pub fn connections(self) -> usize {
        match self {
            HotTest::LargeBlob => 8,
            HotTest::SmallBlob | HotTest::Manifest => 16,
        }
    }

    /// Name in the report.
    pub fn name(self) -> &'static str {
        match self {
            HotTest::LargeBlob => "64 MiB blob, 8 conns",
            HotTest::SmallBlob => "1 KiB blob, 16 conns",
            HotTest::Manifest => "manifest by digest, 16 conns",
        }
    }
}

/// The hot paths to fetch.
#[derive(Debug, Clone)]
pub struct HotPaths {
    /// The 64 MiB blob.
    pub large: String,
    /// The 1 KiB blob.
    pub small: String,
    /// The manifest by digest.
    pub manifest: String,
}

impl HotPaths {
    fn of(&self, test: HotTest) -> &str {
        match test {
            HotTest::LargeBlob => &self.large,
            HotTest::SmallBlob => &self.small,
            HotTest::Manifest => &self.manifest,
        }
    }
}

/// One wrk run.
#[derive(Debug, Clone)]
pub struct HotRun {
    /// Target.
    pub kind: Kind,
    /// What was fetched.
    pub test: HotTest,
    /// wrk's numbers.
    pub wrk: WrkResult,
    /// CPU seconds the target's processes used during the run.
    pub target_cpu: f64,
}

async fn warm(addr: SocketAddr, path: &str) -> anyhow::Result<()> {
    // Twice: nginx answers the first request as a MISS and caches it on the way.
    for _ in 0..2 {
        let (status, _, _) = client::drain(addr, path).await?;
        if status != http::StatusCode::OK {
            bail!("warm-up GET {path}: {status}");
        }
    }
    Ok(())
}

/// wrk against every target, content cached first.
///
/// # Errors
/// A target cannot be started or warmed, or wrk fails.
pub async fn hot(bed: &Bed, origin: &Origin, paths: &HotPaths) -> anyhow::Result<Vec<HotRun>> {
    let mut runs = Vec::new();
    for rep in 0..bed.reps {
        for kind in bed.order(rep) {
            let target = Target::start(kind, origin.addr, &bed.work)?;
            for test in HotTest::ALL {
                warm(target.addr, paths.of(test))
                    .await
                    .with_context(|| format!("{}: {}", kind.name(), test.name()))?;
            }
            for test in HotTest::ALL {
                let spec = WrkSpec {
                    addr: target.addr,
                    path: paths.of(test).to_owned(),
                    connections: test.connections(),
                    threads: 2,
                    duration: bed.hot_duration,
                };
                let work = bed.work.clone();
                let clock =
                    CpuClock::start(vec![target.pid().map_or(Counted::Nothing, Counted::Tree)]);
                let result = tokio::task::spawn_blocking(move || wrk::run(&spec, &work)).await??;
                let target_cpu = clock.read()[0];
                progress(format_args!(
                    "{:<12} {:<30} {:>9.0} req/s {:>7.0} MB/s errors {} target CPU {:.2} s",
                    kind.name(),
                    test.name(),
                    result.requests_per_s,
                    result.bytes_per_s / 1e6,
                    result.errors,
                    target_cpu
                ));
                runs.push(HotRun {
                    kind,
                    test,
                    wrk: result,
                    target_cpu,
                });
            }
            target.stop();
        }
    }
    Ok(runs)
}

/// Concurrent clients of the memory scenario.
pub const RSS_CLIENTS: usize = 256;

/// Memory while many clients stream one blob.
#[derive(Debug, Clone)]
pub struct RssRun {
    /// Target.
    pub kind: Kind,
    /// Whether the blob was cached before the burst.
    pub hot: bool,
    /// Peak RSS summed over the target's processes, sampled.
    pub peak_rss_bytes: u64,
    /// The kernel's peak RSS of the target's main process since it started.
    pub high_water_bytes: Option<u64>,
    /// Clients that got the whole blob.
    pub ok: usize,
    /// Wall time of the burst.
    pub wall: Duration,
}

/// 256 clients on one blob, cold (shaped origin) then hot, RSS sampled throughout. Only the
/// caches are measured: without coalescing, 256 upstream copies at 200 Mbit/s take many minutes.
///
/// # Errors
/// A target cannot be started.
pub async fn rss(bed: &Bed, origin: &Origin, blob: &BlobFile) -> anyhow::Result<Vec<RssRun>> {
    let mut runs = Vec::new();
    for rep in 0..bed.reps {
        for kind in bed.order(rep) {
            if !matches!(kind, Kind::Daemon | Kind::Baseline | Kind::Nginx) {
                continue;
            }
            let target = Target::start(kind, origin.addr, &bed.work)?;
            let pid = target.pid().context("a cache has a process")?;
            for hot in [false, true] {
                let sampler = Sampler::start(pid);
                let started = Instant::now();
                let pulls = client::burst(&BurstSpec {
                    addr: target.addr,
                    path: blob.path_in(REPO),
                    clients: RSS_CLIENTS,
                    size_bytes: blob.size_bytes,
                    digest: blob.digest.clone(),
                    verify: true,
                    limit: BURST_LIMIT,
                })
                .await;
                let wall = started.elapsed();
                let peak = sampler.stop().rss_bytes;
                let run = RssRun {
                    kind,
                    hot,
                    peak_rss_bytes: peak,
                    high_water_bytes: rss::high_water_bytes(pid),
                    ok: pulls.iter().filter(|p| p.is_ok()).count(),
                    wall,
                };
                progress(format_args!(
                    "{:<12} {} clients {}: peak RSS {:.1} MiB, {}/{} ok in {:.2} s",
                    kind.name(),
                    RSS_CLIENTS,
                    if hot { "hot" } else { "cold" },
                    peak as f64 / 1048576.0,
                    run.ok,
                    RSS_CLIENTS,
                    wall.as_secs_f64()
                ));
                runs.push(run);
            }
            target.stop();
        }
    }
    Ok(runs)
}

/// Who serves a cold pull in the floor scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColdServer {
    /// A cache, started fresh with an empty store.
    Cache(Kind),
    /// The floor of the work (`floor.rs`).
    Floor,
}

impl ColdServer {
    /// Name in the report.
    pub fn name(self) -> &'static str {
        match self {
            ColdServer::Cache(kind) => kind.name(),
            ColdServer::Floor => "floor",
        }
    }
}

/// One cold pull.
#[derive(Debug, Clone)]
pub struct ColdRun {
    /// Who served it.
    pub server: ColdServer,
    /// CPU seconds the server used: a cache's processes from the request until its commit
    /// settled ([`COLD_SETTLE`] after the last byte), the floor's thread until its file was
    /// synced and verified.
    pub cpu_secs: f64,
    /// From the request to the client's last byte.
    pub wall: Duration,
    /// Bytes the client got.
    pub bytes: u64,
}

impl ColdRun {
    /// CPU seconds per GiB pulled.
    pub fn cpu_per_gib(&self) -> f64 {
        self.cpu_secs / (self.bytes as f64 / (1u64 << 30) as f64)
    }
}

/// Bound on one cold pull.
const COLD_LIMIT: Duration = Duration::from_secs(120);
/// A cache's CPU is read this long after the client's last byte, so its commit (the `fsync`
/// and rename after the last byte went out) is counted.
pub const COLD_SETTLE: Duration = Duration::from_millis(300);

/// One client pulls `blob`, cold, through each cache in `bed.kinds` (distribution and direct
/// are not caches that verify, and are left out) and through the floor, on the unshaped origin.
///
/// # Errors
/// A target cannot be started, a pull fails or comes back short.
pub async fn floor(bed: &Bed, origin: &Origin, blob: &BlobFile) -> anyhow::Result<Vec<ColdRun>> {
    let mut servers: Vec<ColdServer> = bed
        .kinds
        .iter()
        .filter(|k| matches!(k, Kind::Daemon | Kind::Baseline | Kind::Nginx))
        .map(|k| ColdServer::Cache(*k))
        .collect();
    servers.push(ColdServer::Floor);
    let path = blob.path_in(REPO);
    let mut runs = Vec::new();
    for rep in 0..bed.reps {
        let mut order = servers.clone();
        order.rotate_left(rep % servers.len());
        for server in order {
            let run = match server {
                ColdServer::Cache(kind) => {
                    let target = Target::start(kind, origin.addr, &bed.work)?;
                    let clock =
                        CpuClock::start(vec![target.pid().map_or(Counted::Nothing, Counted::Tree)]);
                    let (wall, bytes) = cold_pull(target.addr, &path, blob.size_bytes).await?;
                    tokio::time::sleep(COLD_SETTLE).await;
                    let cpu_secs = clock.read()[0];
                    target.stop();
                    ColdRun {
                        server,
                        cpu_secs,
                        wall,
                        bytes,
                    }
                }
                ColdServer::Floor => {
                    let floor = Floor::start(origin.addr, &path, blob.digest.clone(), &bed.work)?;
                    let (wall, bytes) = cold_pull(floor.addr, &path, blob.size_bytes).await?;
                    let fill = tokio::task::spawn_blocking(move || floor.finish()).await??;
                    if fill.bytes != bytes {
                        bail!("the floor filled {} bytes but sent {bytes}", fill.bytes);
                    }
                    ColdRun {
                        server,
                        cpu_secs: fill.cpu_secs,
                        wall,
                        bytes,
                    }
                }
            };
            progress(format_args!(
                "{:<22} cold {:.0} MiB: {:.2} CPU-s, {:.2} s",
                server.name(),
                blob.size_bytes as f64 / 1048576.0,
                run.cpu_secs,
                run.wall.as_secs_f64()
            ));
            runs.push(run);
        }
    }
    Ok(runs)
}

/// One GET of `path` from `addr`, drained: the wall time and the bytes, which must be `size`.
async fn cold_pull(addr: SocketAddr, path: &str, size: u64) -> anyhow::Result<(Duration, u64)> {
    let started = Instant::now();
    let (status, _, bytes) = tokio::time::timeout(COLD_LIMIT, client::drain(addr, path))
        .await
        .with_context(|| format!("cold pull of {path} took longer than {COLD_LIMIT:?}"))??;
    let wall = started.elapsed();
    if status != http::StatusCode::OK || bytes != size {
        bail!("cold pull of {path}: {status}, {bytes} of {size} bytes");
    }
    Ok((wall, bytes))
}

/// Single-core sha256 speed on this machine, bytes per second, over `bytes` of buffer.
pub fn sha256_speed(bytes: usize) -> f64 {
    let buf = vec![0x5Au8; bytes];
    let start = Instant::now();
    let d = Digest::of(&buf);
    let secs = start.elapsed().as_secs_f64();
    std::hint::black_box(d);
    bytes as f64 / secs
}
