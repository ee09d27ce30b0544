//! `cargo bench -p cache-daemon --bench mirror`: what only the daemon's own bench measures,
//! cache-daemon side by side with nginx (`proxy_cache_lock`), distribution in proxy mode and the
//! origin itself ("direct"), on this machine, in one run: hot serving under `wrk`, and resident
//! memory while 256 clients stream one blob, and a cold pull of a large blob through each cache
//! beside the floor of the work itself (`floor`). Needs root (network namespace, `tc`), Debian's
//! `docker-registry`, and `wrk`; nginx is optional (a missing peer is skipped). The cold burst and
//! the cold large pull it used to time are bench-harness scenarios against the real binary
//! (`scenarios/daemon-cold-burst.toml`, `scenarios/daemon-large-blob.toml`).
//!
//! Topology: the origin `docker-registry` runs in its own network namespace, reached from the
//! host namespace over a veth pair whose namespace end is shaped with `tc tbf rate 200mbit`
//! (the memory scenario's cold fill); the caches and this process's clients stay in the host
//! namespace. A second origin process on the host's loopback serves the same store unshaped, for
//! the hot runs and the floor scenario.
//!
//! Scenarios are chosen by name on the command line (`hot`, `rss`, `floor`; default all three),
//! e.g. `cargo bench -p cache-daemon --bench mirror -- hot`. Environment: `MIRROR_REPS` (3),
//! `MIRROR_TARGETS` (`cache-daemon,nginx,distribution,direct`), `MIRROR_HOT_SECS` (5),
//! `MIRROR_BURST_MIB` (32, the memory scenario's blob), `MIRROR_RATE_MBIT` (200),
//! `MIRROR_FLOOR_MIB` (1024, the floor scenario's blob),
//! `MIRROR_BASELINE_BIN` (another cache-daemon binary, e.g. an older commit's, measured beside
//! this build as `cache-daemon-baseline`).
//!
//! The Markdown summary goes to stdout and to `target/tmp/mirror-report.md`; progress to stderr.
//! Every process and namespace it creates is removed on exit, on error, on panic and on
//! SIGINT/SIGTERM (guards in `stampede_lab`).
//!
//! # Layout
//! - `stampede_lab` (the workspace's lab crate): processes and the shaped namespace, and their
//!   cleanup; the origin's and the peers' configurations.
//! - `data`: test blobs and the manifest.
//! - `upstream`: the origin registry and its access-log counts.
//! - `target`: cache-daemon, nginx, distribution, direct: started fresh per measurement.
//! - `client`: the timed burst client; registry pushes.
//! - `wrk`, `rss`, `cpu`: the hot-path load tool, the memory sampler, CPU time per process.
//! - `floor`: the floor of a verified cold fill, the simplest program doing the work.
//! - `scenario`: the three measurements.
//! - `machine`, `report`: what the summary says about where and what.

#[path = "mirror/client.rs"]
mod client;
#[path = "mirror/cpu.rs"]
mod cpu;
#[path = "mirror/data.rs"]
mod data;
#[path = "mirror/entry.rs"]
mod entry;
use entry::env_num;
#[path = "mirror/floor.rs"]
mod floor;
#[path = "mirror/machine.rs"]
mod machine;
#[path = "mirror/report.rs"]
mod report;
#[path = "mirror/rss.rs"]
mod rss;
#[path = "mirror/scenario.rs"]
mod scenario;
#[path = "mirror/target.rs"]
mod target;
#[path = "mirror/upstream.rs"]
mod upstream;
#[path = "mirror/wrk.rs"]
mod wrk;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};

use machine::Machine;
use scenario::{Bed, HotPaths, REPO};
use stampede_lab::{ShapedLink, Shaping};
use target::Kind;
use upstream::Origin;

/// Size of the large hot blob (issue 18: 8 connections on one 64 MiB blob).
const LARGE_HOT_BYTES: u64 = 64 << 20;
/// Size of the small hot blob.
const SMALL_HOT_BYTES: u64 = 1024;
/// Port of the origin inside the namespace.
const SHAPED_ORIGIN_PORT: u16 = 5000;
/// Prefix of the shaped namespace's name (`mirror-bench-<pid>-<n>`).
const NETNS_PREFIX: &str = "mirror-bench-";
/// Bytes hashed to measure sha256 speed.
const SHA_PROBE_BYTES: usize = 256 << 20;

/// Which measurements to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    Hot,
    Rss,
    Floor,
}

/// Validated settings from arguments and environment.
#[derive(Debug)]
struct Settings {
    scenarios: Vec<Scenario>,
    kinds: Vec<Kind>,
    reps: usize,
    hot_duration: Duration,
    burst_bytes: u64,
    rate_mbit: u32,
    floor_bytes: u64,
}

impl Settings {
    fn from_env() -> anyhow::Result<Self> {
        let mut scenarios = Vec::new();
        // cargo bench passes `--bench`; flags are not ours.
        for arg in std::env::args().skip(1).filter(|a| !a.starts_with('-')) {
            scenarios.push(match arg.as_str() {
                "hot" => Scenario::Hot,
                "rss" => Scenario::Rss,
                "floor" => Scenario::Floor,
                "cold" | "big" => bail!(
                    "scenario {arg:?} moved to bench-harness: run scenarios/daemon-cold-burst.toml or scenarios/daemon-large-blob.toml (see scenarios/README.md); the cold pull beside its floor is scenario floor"
                ),
                other => bail!("unknown scenario {other:?}: expected hot, rss or floor"),
            });
        }
        if scenarios.is_empty() {
            scenarios = vec![Scenario::Hot, Scenario::Rss, Scenario::Floor];
        }
        let kinds = match std::env::var("MIRROR_TARGETS") {
            Ok(list) => list
                .split(',')
                .map(|name| {
                    Kind::ALL
                        .into_iter()
                        .find(|k| k.name() == name.trim())
                        .with_context(|| format!("MIRROR_TARGETS: unknown target {name:?}"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?,
            Err(_) => Kind::ALL.to_vec(),
        };
        let reps = env_num("MIRROR_REPS", 3usize)?.max(1);
        Ok(Self {
            scenarios,
            kinds,
            reps,
            hot_duration: Duration::from_secs(env_num("MIRROR_HOT_SECS", 5u64)?.max(1)),
            burst_bytes: env_num("MIRROR_BURST_MIB", 32u64)?.max(1) << 20,
            rate_mbit: env_num("MIRROR_RATE_MBIT", 200u32)?.max(1),
            floor_bytes: env_num("MIRROR_FLOOR_MIB", 1024u64)?.max(1) << 20,
        })
    }

    fn wants(&self, s: Scenario) -> bool {
        self.scenarios.contains(&s)
    }
}

/// The content every scenario uses.
#[derive(Debug)]
struct Content {
    burst: data::BlobFile,
    large: data::BlobFile,
    small: data::BlobFile,
    /// The floor scenario's blob, when it runs.
    floor: Option<data::BlobFile>,
    manifest: stampede_oci::Digest,
}

fn make_content(
    dir: &std::path::Path,
    burst_bytes: u64,
    floor_bytes: Option<u64>,
) -> anyhow::Result<(Content, Vec<data::BlobFile>, bytes::Bytes)> {
    std::fs::create_dir_all(dir)?;
    let burst = data::random_blob(dir, "burst", burst_bytes, 1)?;
    let large = data::random_blob(dir, "large", LARGE_HOT_BYTES, 2)?;
    let small = data::random_blob(dir, "small", SMALL_HOT_BYTES, 3)?;
    let config = data::fixed_blob(
        dir,
        "config",
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#,
    )?;
    let (manifest_bytes, manifest) = data::manifest(&config, &[&small, &large]);
    let floor = floor_bytes
        .map(|size| data::random_blob(dir, "floor", size, 4))
        .transpose()?;
    let mut all = vec![burst.clone(), large.clone(), small.clone(), config];
    all.extend(floor.clone());
    Ok((
        Content {
            burst,
            large,
            small,
            floor,
            manifest,
        },
        all,
        manifest_bytes,
    ))
}

/// What the scenarios pull from: the content, pushed to an origin on loopback (hot, floor), and
/// (for the memory scenario) a second origin over the same store behind the shaped link.
struct Origins {
    content: Content,
    loopback: Origin,
    shaped: Option<(ShapedLink, Origin)>,
}

/// Writes the content under `work`, pushes it to the loopback origin, and starts the shaped
/// origin when a scenario needs it.
async fn origins(settings: &Settings, work: &std::path::Path) -> anyhow::Result<Origins> {
    eprintln!("mirror: writing test content under {}", work.display());
    let content_dir = work.join("content");
    let (content, blobs, manifest_bytes) = {
        let dir = content_dir.clone();
        let burst_bytes = settings.burst_bytes;
        let floor_bytes = settings
            .wants(Scenario::Floor)
            .then_some(settings.floor_bytes);
        tokio::task::spawn_blocking(move || make_content(&dir, burst_bytes, floor_bytes)).await??
    };
    let origin_data = work.join("origin-data");
    let loopback = Origin::start(
        &work.join("origin-lo"),
        &origin_data,
        target::free_addr()?,
        None,
    )?;
    for b in &blobs {
        client::push_blob(loopback.addr, REPO, &b.path, &b.digest).await?;
    }
    client::push_manifest(
        loopback.addr,
        REPO,
        "v1",
        data::MANIFEST_TYPE,
        manifest_bytes,
    )
    .await?;
    for b in &blobs {
        std::fs::remove_file(&b.path).ok();
    }

    let shaped = if settings.wants(Scenario::Rss) {
        let link = ShapedLink::create(
            NETNS_PREFIX,
            Shaping {
                rate_bits_per_sec: u64::from(settings.rate_mbit) * 1_000_000,
            },
        )
        .context("set up the shaped namespace (needs root, ip, tc)")?;
        let addr = SocketAddr::from((link.upstream_ip(), SHAPED_ORIGIN_PORT));
        let origin = Origin::start(&work.join("origin-shaped"), &origin_data, addr, Some(&link))?;
        eprintln!(
            "mirror: shaped origin at {} ({} Mbit/s), loopback origin at {}",
            origin.url(),
            settings.rate_mbit,
            loopback.url()
        );
        Some((link, origin))
    } else {
        None
    };

    Ok(Origins {
        content,
        loopback,
        shaped,
    })
}

async fn run(settings: Settings) -> anyhow::Result<String> {
    let machine = Machine::probe();
    eprintln!(
        "mirror: {} x {} cores, Linux {}, load average {}",
        machine.cpu, machine.cores, machine.kernel, machine.load
    );
    if machine::load_1m() > 1.5 {
        eprintln!(
            "mirror: warning: the machine is busy (load {}); numbers will be noisy",
            machine.load
        );
    }
    stampede_lab::find("docker-registry").context("the origin needs Debian's docker-registry")?;
    if settings.wants(Scenario::Hot) {
        stampede_lab::find("wrk").context("the hot scenario needs wrk")?;
    }
    let mut skipped = Vec::new();
    let kinds: Vec<Kind> = settings
        .kinds
        .iter()
        .copied()
        .filter(|k| {
            let ok = k.available();
            if !ok {
                skipped.push(*k);
            }
            ok
        })
        .collect();
    let work = tempfile::Builder::new().prefix("mirror-bench-").tempdir()?;
    let Origins {
        content,
        loopback,
        shaped,
    } = origins(&settings, work.path()).await?;
    let bed = Bed {
        work: work.path().to_owned(),
        kinds,
        reps: settings.reps,
        hot_duration: settings.hot_duration,
    };
    let sha256_bps =
        tokio::task::spawn_blocking(|| scenario::sha256_speed(SHA_PROBE_BYTES)).await?;
    let (mut hot, mut rss, mut cold) = (vec![], vec![], vec![]);
    if settings.wants(Scenario::Hot) {
        eprintln!("mirror: hot (load {})", machine::load_average());
        let paths = HotPaths {
            large: content.large.path_in(REPO),
            small: content.small.path_in(REPO),
            manifest: format!("/v2/{REPO}/manifests/{}", content.manifest),
        };
        hot = scenario::hot(&bed, &loopback, &paths).await?;
    }
    if let Some((_, origin)) = shaped.as_ref().filter(|_| settings.wants(Scenario::Rss)) {
        eprintln!("mirror: memory (load {})", machine::load_average());
        rss = scenario::rss(&bed, origin, &content.burst).await?;
    }
    if let Some(blob) = content.floor.as_ref() {
        eprintln!("mirror: floor (load {})", machine::load_average());
        cold = scenario::floor(&bed, &loopback, blob).await?;
    }
    if let Some((link, origin)) = shaped {
        origin.stop();
        drop(link);
    }
    loopback.stop();

    Ok(report::render(&report::Inputs {
        machine: &machine,
        load_end: machine::load_average(),
        reps: settings.reps,
        burst_bytes: settings.burst_bytes,
        hot_duration: settings.hot_duration,
        sha256_bps,
        hot: &hot,
        rss: &rss,
        cold: &cold,
        floor_bytes: settings.floor_bytes,
        skipped: &skipped,
    }))
}

fn main() -> ExitCode {
    let report = match entry::run_bench("mirror", Settings::from_env(), run) {
        Ok(r) => r,
        Err(code) => return code,
    };
    println!("{report}");
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("mirror-report.md");
    match std::fs::write(&path, &report) {
        Ok(()) => eprintln!("mirror: report written to {}", path.display()),
        Err(e) => eprintln!("mirror: could not write {}: {e}", path.display()),
    }
    ExitCode::SUCCESS
}
