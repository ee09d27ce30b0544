//! `cargo bench -p cache-daemon --bench load`: the heavy variants of `tests/load.rs`, the release
//! daemon side by side with nginx as a cache (`proxy_cache_lock`, `stampede_lab`'s test-bed
//! config), each started fresh per measurement in front of one origin, Debian's
//! `docker-registry` on loopback. Needs `docker-registry`; nginx is optional (skipped if
//! missing). No root, no namespaces.
//!
//! Scenarios by name on the command line (`held`, `burst`, `slow`; default all), e.g.
//! `cargo bench -p cache-daemon --bench load -- burst`. Environment: `LOAD_REPS` (3),
//! `LOAD_TARGETS` (`cache-daemon,nginx`), `LOAD_CONNECTIONS` (5000 held), `LOAD_REQUESTS`
//! (100000), `LOAD_BURST_CONNECTIONS` (200), `LOAD_SLOW_READERS` (256), `LOAD_SLOW_MIB` (512).
//!
//! - `held`: connections opened (one small GET each) and held idle for 3 s.
//! - `burst`: requests over keep-alive connections, cycling through a manifest by digest and 64
//!   small blobs (512 B to 8 KiB), all cached (warmed twice first).
//! - `slow`: slow readers (16 KiB receive buffer, 4 KiB per 100 ms) of one uncached large blob,
//!   then one fast reader, against one reader alone on another fresh target.
//!
//! Each reports medians over the repetitions: time, req/s, latency p50/p99, the slowest health
//! poll during the load (`/healthz` for the daemon; nginx has none, so `/v2/`, which it passes to
//! the origin), and peak RSS and open descriptors summed over the server's processes. A Markdown
//! table goes to stdout; progress to stderr.

#[allow(dead_code)]
#[path = "mirror/client.rs"]
mod client;
#[allow(dead_code)]
#[path = "mirror/data.rs"]
mod data;
#[path = "mirror/entry.rs"]
mod entry;
use entry::env_num;
#[allow(dead_code)]
#[path = "mirror/machine.rs"]
mod machine;
#[allow(dead_code)]
#[path = "mirror/rss.rs"]
mod rss;
#[path = "load/scenario.rs"]
mod scenario;
#[allow(dead_code)]
#[path = "mirror/target.rs"]
mod target;
#[allow(dead_code)]
#[path = "mirror/upstream.rs"]
mod upstream;
#[path = "load/watch.rs"]
mod watch;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};

use scenario::{Bed, BurstRun, HeldRun, SlowRun, Wanted};
use target::Kind;
use upstream::Origin;

/// Repository the content is pushed to.
const REPO: &str = "bench/load";
/// Small blobs in the burst mix.
const SMALL_BLOBS: u64 = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    Held,
    Burst,
    Slow,
}

#[derive(Debug)]
struct Settings {
    scenarios: Vec<Scenario>,
    kinds: Vec<Kind>,
    reps: usize,
    connections: usize,
    requests: usize,
    burst_connections: usize,
    slow_readers: usize,
    slow_bytes: u64,
}

impl Settings {
    fn from_env() -> anyhow::Result<Self> {
        let mut scenarios = Vec::new();
        for arg in std::env::args().skip(1).filter(|a| !a.starts_with('-')) {
            scenarios.push(match arg.as_str() {
                "held" => Scenario::Held,
                "burst" => Scenario::Burst,
                "slow" => Scenario::Slow,
                other => bail!("unknown scenario {other:?}: expected held, burst or slow"),
            });
        }
        if scenarios.is_empty() {
            scenarios = vec![Scenario::Held, Scenario::Burst, Scenario::Slow];
        }
        let kinds = std::env::var("LOAD_TARGETS")
            .unwrap_or_else(|_| "cache-daemon,nginx".to_owned())
            .split(',')
            .map(|name| {
                [Kind::Daemon, Kind::Nginx]
                    .into_iter()
                    .find(|k| k.name() == name.trim())
                    .with_context(|| format!("LOAD_TARGETS: {name:?} is not cache-daemon or nginx"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self {
            scenarios,
            kinds,
            reps: env_num("LOAD_REPS", 3usize)?.max(1),
            connections: env_num("LOAD_CONNECTIONS", 5000usize)?.max(1),
            requests: env_num("LOAD_REQUESTS", 100_000usize)?.max(1),
            burst_connections: env_num("LOAD_BURST_CONNECTIONS", 200usize)?.max(1),
            slow_readers: env_num("LOAD_SLOW_READERS", 256usize)?,
            slow_bytes: env_num("LOAD_SLOW_MIB", 512u64)?.max(1) << 20,
        })
    }
}

fn median<T: Copy + PartialOrd>(mut v: Vec<T>) -> T {
    v.sort_by(|a, b| a.partial_cmp(b).expect("comparable"));
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

fn mib(bytes: u64) -> String {
    format!("{:.0}", bytes as f64 / 1048576.0)
}

/// The content: small blobs and a manifest for the burst, one large blob for the slow readers.
struct Content {
    small: Vec<Wanted>,
    manifest: Wanted,
    large: Wanted,
}

async fn push_content(
    origin: &Origin,
    dir: &std::path::Path,
    large_bytes: u64,
) -> anyhow::Result<Content> {
    let dir = dir.to_owned();
    let (smalls, large, config) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        std::fs::create_dir_all(&dir)?;
        let smalls = (0..SMALL_BLOBS)
            .map(|i| {
                data::random_blob(
                    &dir,
                    &format!("small-{i}"),
                    512 + (i * 1031) % 8192,
                    100 + i,
                )
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let large = data::random_blob(&dir, "large", large_bytes, 7)?;
        let config = data::fixed_blob(
            &dir,
            "config",
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#,
        )?;
        Ok((smalls, large, config))
    })
    .await??;
    for b in smalls.iter().chain([&large, &config]) {
        client::push_blob(origin.addr, REPO, &b.path, &b.digest).await?;
        std::fs::remove_file(&b.path).ok();
    }
    let layers: Vec<&data::BlobFile> = smalls.iter().take(4).collect();
    let (manifest_bytes, manifest_digest) = data::manifest(&config, &layers);
    let manifest_len = manifest_bytes.len() as u64;
    client::push_manifest(origin.addr, REPO, "v1", data::MANIFEST_TYPE, manifest_bytes).await?;
    let wanted = |b: &data::BlobFile| Wanted {
        path: b.path_in(REPO),
        len: b.size_bytes,
    };
    Ok(Content {
        small: smalls.iter().map(wanted).collect(),
        manifest: Wanted {
            path: format!("/v2/{REPO}/manifests/{manifest_digest}"),
            len: manifest_len,
        },
        large: wanted(&large),
    })
}

async fn run(s: Settings) -> anyhow::Result<String> {
    let m = machine::Machine::probe();
    let nofile = cache_daemon::server::raise_open_file_limit()
        .ok()
        .and_then(|l| l.after);
    eprintln!(
        "load: {} x {} cores, Linux {}, load average {}, open file limit {nofile:?}",
        m.cpu, m.cores, m.kernel, m.load
    );
    stampede_lab::find("docker-registry").context("the origin needs Debian's docker-registry")?;
    let kinds: Vec<Kind> = s.kinds.iter().copied().filter(|k| k.available()).collect();
    // The daemon's default cap (4096) is below the held connections' default (5000); past it
    // connections wait in the backlog (tests/load.rs shows that). Here every one is served.
    let max_connections = s.connections.max(4096) + 64;
    std::env::set_var("CACHE_DAEMON_MAX_CONNECTIONS", max_connections.to_string());
    let work = tempfile::Builder::new().prefix("load-bench-").tempdir()?;
    let origin = Origin::start(
        &work.path().join("origin"),
        &work.path().join("origin-data"),
        target::free_addr()?,
        None,
    )?;
    let large_bytes = if s.scenarios.contains(&Scenario::Slow) {
        s.slow_bytes
    } else {
        1
    };
    let content = push_content(&origin, &work.path().join("content"), large_bytes).await?;
    let bed = Bed {
        work: work.path().to_owned(),
        origin: origin.addr,
    };
    let mut out = String::new();
    out.push_str(&format!(
        "## Load: cache-daemon ({}) and nginx, {} repetitions, medians\n\n{} x {} cores, {:.1} GiB, Linux {}, {}; load average at start {}.\n\n",
        if cfg!(debug_assertions) { "debug build" } else { "release build" },
        s.reps, m.cpu, m.cores, m.memory_gib, m.kernel, m.date, m.load
    ));
    let mix: Vec<Wanted> = std::iter::once(content.manifest.clone())
        .chain(content.small.iter().cloned())
        .collect();

    if s.scenarios.contains(&Scenario::Held) {
        out.push_str(&held_table(&s, &bed, &kinds, &content, max_connections).await?);
    }
    if s.scenarios.contains(&Scenario::Burst) {
        out.push_str(&burst_table(&s, &bed, &kinds, &mix).await?);
    }
    if s.scenarios.contains(&Scenario::Slow) {
        out.push_str(&slow_table(&s, &bed, &kinds, &content).await?);
    }
    out.push_str(&format!(
        "Load average at end {}.\n",
        machine::load_average()
    ));
    origin.stop();
    Ok(out)
}

/// The held-connections measurement, one table row per target.
async fn held_table(
    s: &Settings,
    bed: &Bed,
    kinds: &[Kind],
    content: &Content,
    max_connections: usize,
) -> anyhow::Result<String> {
    let mut out = String::new();
    out.push_str(&format!("### {} connections held (one small GET each, then idle 3 s; daemon max_connections {max_connections})\n\n| target | open all (ms) | fds before | fds peak | RSS peak (MiB) | slowest health poll (ms) | failed polls |\n|---|---|---|---|---|---|---|\n", s.connections));
    for &kind in kinds {
        let mut runs: Vec<HeldRun> = Vec::new();
        for rep in 0..s.reps {
            eprintln!(
                "load: held {} rep {rep} (load {})",
                kind.name(),
                machine::load_average()
            );
            runs.push(scenario::held(bed, kind, s.connections, &content.small[0]).await?);
        }
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            kind.name(),
            ms(median(runs.iter().map(|r| r.open).collect())),
            median(runs.iter().map(|r| r.base_fds).collect()),
            median(runs.iter().map(|r| r.peaks.fds).collect()),
            mib(median(runs.iter().map(|r| r.peaks.rss_bytes).collect())),
            ms(median(runs.iter().map(|r| r.health.slowest).collect())),
            runs.iter().map(|r| r.health.failures).sum::<usize>(),
        ));
    }
    out.push('\n');
    Ok(out)
}

/// The hot-burst measurement, one table row per target.
async fn burst_table(
    s: &Settings,
    bed: &Bed,
    kinds: &[Kind],
    mix: &[Wanted],
) -> anyhow::Result<String> {
    let mut out = String::new();
    out.push_str(&format!("### Hot burst: {} requests over {} keep-alive connections (manifest by digest + 64 small blobs, cached)\n\n| target | req/s | p50 (ms) | p99 (ms) | max (ms) | RSS peak (MiB) | fds peak | slowest health poll (ms) | failed polls |\n|---|---|---|---|---|---|---|---|---|\n", s.requests, s.burst_connections));
    for &kind in kinds {
        let mut runs: Vec<BurstRun> = Vec::new();
        for rep in 0..s.reps {
            eprintln!(
                "load: burst {} rep {rep} (load {})",
                kind.name(),
                machine::load_average()
            );
            runs.push(scenario::burst(bed, kind, s.requests, s.burst_connections, mix).await?);
        }
        let pct = |r: &BurstRun, p: f64| r.latencies[((r.latencies.len() - 1) as f64 * p) as usize];
        out.push_str(&format!(
            "| {} | {:.0} | {} | {} | {} | {} | {} | {} | {} |\n",
            kind.name(),
            median(
                runs.iter()
                    .map(|r| r.requests as f64 / r.took.as_secs_f64())
                    .collect()
            ),
            ms(median(runs.iter().map(|r| pct(r, 0.5)).collect())),
            ms(median(runs.iter().map(|r| pct(r, 0.99)).collect())),
            ms(median(runs.iter().map(|r| pct(r, 1.0)).collect())),
            mib(median(runs.iter().map(|r| r.peaks.rss_bytes).collect())),
            median(runs.iter().map(|r| r.peaks.fds).collect()),
            ms(median(runs.iter().map(|r| r.health.slowest).collect())),
            runs.iter().map(|r| r.health.failures).sum::<usize>(),
        ));
    }
    out.push('\n');
    Ok(out)
}

/// The slow-readers measurement, one table row per target.
async fn slow_table(
    s: &Settings,
    bed: &Bed,
    kinds: &[Kind],
    content: &Content,
) -> anyhow::Result<String> {
    let mut out = String::new();
    out.push_str(&format!("### {} slow readers (40 KiB/s each) of one uncached {} MiB blob, plus one fast reader\n\n| target | one reader alone (s) | fast reader among slow ones (s) | slow readers' max bytes by then | RSS idle (MiB) | RSS peak (MiB) | fds peak | slowest health poll (ms) | failed polls |\n|---|---|---|---|---|---|---|---|---|\n", s.slow_readers, s.slow_bytes >> 20));
    for &kind in kinds {
        let mut runs: Vec<SlowRun> = Vec::new();
        for rep in 0..s.reps {
            eprintln!(
                "load: slow {} rep {rep} (load {})",
                kind.name(),
                machine::load_average()
            );
            runs.push(scenario::slow(bed, kind, s.slow_readers, &content.large).await?);
        }
        out.push_str(&format!(
            "| {} | {:.2} | {:.2} | {} | {} | {} | {} | {} | {} |\n",
            kind.name(),
            median(runs.iter().map(|r| r.alone.as_secs_f64()).collect()),
            median(runs.iter().map(|r| r.fast.as_secs_f64()).collect()),
            median(runs.iter().map(|r| r.slow_max_bytes).collect()),
            mib(median(runs.iter().map(|r| r.base_rss_bytes).collect())),
            mib(median(runs.iter().map(|r| r.peaks.rss_bytes).collect())),
            median(runs.iter().map(|r| r.peaks.fds).collect()),
            ms(median(runs.iter().map(|r| r.health.slowest).collect())),
            runs.iter().map(|r| r.health.failures).sum::<usize>(),
        ));
    }
    out.push('\n');
    Ok(out)
}

fn main() -> ExitCode {
    let report = match entry::run_bench("load", Settings::from_env(), run) {
        Ok(r) => r,
        Err(code) => return code,
    };
    println!("{report}");
    ExitCode::SUCCESS
}
