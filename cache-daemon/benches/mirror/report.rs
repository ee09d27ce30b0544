//! Statistics over the runs (medians over repetitions, nearest-rank p95 over clients) and the
//! Markdown summary: the machine, one table per scenario with ratios to cache-daemon (the floor
//! scenario's to the floor), and the goals, each with its bar, the measured value and
//! whether it was met.

use std::fmt::Write as _;
use std::time::Duration;

use crate::floor::READ_BYTES;
use crate::machine::Machine;
use crate::scenario::{ColdRun, ColdServer, HotRun, HotTest, RssRun, COLD_SETTLE, RSS_CLIENTS};
use crate::target::Kind;

/// The median; `None` for no values.
pub fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Everything the report shows.
#[derive(Debug)]
pub struct Inputs<'a> {
    /// Where it ran.
    pub machine: &'a Machine,
    /// Load average when the report was made.
    pub load_end: String,
    /// Repetitions asked for.
    pub reps: usize,
    /// Size of the burst blob.
    pub burst_bytes: u64,
    /// wrk run length.
    pub hot_duration: Duration,
    /// Single-core sha256, bytes/s.
    pub sha256_bps: f64,
    /// wrk runs.
    pub hot: &'a [HotRun],
    /// Memory runs.
    pub rss: &'a [RssRun],
    /// Cold pulls of the floor scenario.
    pub cold: &'a [ColdRun],
    /// Size of the floor scenario's blob.
    pub floor_bytes: u64,
    /// Targets skipped (not installed).
    pub skipped: &'a [Kind],
}

fn f(v: f64, digits: usize) -> String {
    if v.is_finite() {
        format!("{v:.digits$}")
    } else {
        "-".to_owned()
    }
}

/// Renders the Markdown summary.
pub fn render(i: &Inputs<'_>) -> String {
    let mut out = String::new();
    let m = i.machine;
    let _ = writeln!(
        out,
        "Run {} on {} ({} cores{}, {:.0} GiB RAM), Linux {}; load average at start {}, at end {}.",
        m.date,
        m.cpu,
        m.cores,
        if m.sha_ni { ", SHA-NI" } else { "" },
        m.memory_gib,
        m.kernel,
        m.load,
        i.load_end
    );
    let _ = writeln!(
        out,
        "Peers: {}. sha256 on one core here: {:.2} GB/s. Repetitions: {}. \
         Every target is started fresh for every measurement; within a repetition the targets run one after another in an order that rotates per repetition. \
         Clients, targets and the origin share the same cores.",
        m.peers.join("; "),
        i.sha256_bps / 1e9,
        i.reps
    );
    if !i.skipped.is_empty() {
        let names: Vec<_> = i.skipped.iter().map(|k| k.name()).collect();
        let _ = writeln!(
            out,
            "\nSkipped (not installed, or no MIRROR_BASELINE_BIN): {}.",
            names.join(", ")
        );
    }
    render_hot(&mut out, i);
    render_rss(&mut out, i);
    render_cold(&mut out, i);
    render_goals(&mut out, i);
    out
}

/// Medians of one (target, test) cell.
#[derive(Debug, Clone, Copy)]
struct HotCell {
    rps: f64,
    bps: f64,
    p50: f64,
    p99: f64,
    errors: u64,
    runs: usize,
    /// Target CPU seconds per GB served.
    cpu_per_gb: f64,
}

fn hot_median(i: &Inputs<'_>, kind: Kind, test: HotTest) -> Option<HotCell> {
    let runs: Vec<_> = i
        .hot
        .iter()
        .filter(|r| r.kind == kind && r.test == test)
        .collect();
    if runs.is_empty() {
        return None;
    }
    Some(HotCell {
        rps: median(runs.iter().map(|r| r.wrk.requests_per_s).collect())?,
        bps: median(runs.iter().map(|r| r.wrk.bytes_per_s).collect())?,
        p50: median(runs.iter().map(|r| secs(r.wrk.p50)).collect())?,
        p99: median(runs.iter().map(|r| secs(r.wrk.p99)).collect())?,
        errors: runs.iter().map(|r| r.wrk.errors).sum(),
        runs: runs.len(),
        cpu_per_gb: median(
            runs.iter()
                .map(|r| r.target_cpu / (r.wrk.bytes_per_s * secs(i.hot_duration) / 1e9))
                .collect(),
        )?,
    })
}

fn render_hot(out: &mut String, i: &Inputs<'_>) {
    if i.hot.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\n### Hot: cached content, wrk -t2 for {} s per run, origin on loopback\n",
        i.hot_duration.as_secs()
    );
    let _ = writeln!(out, "\"CPU s/GB\" is the CPU time of the target's processes (all threads, nginx's workers included) during the run, from /proc/<pid>/stat, over the GB wrk received.\n");
    let _ = writeln!(out, "| test | target | runs | req/s | MB/s | latency p50 / p99 ms | cache-daemon ÷ this (req/s) | CPU s/GB | errors |");
    let _ = writeln!(
        out,
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for test in HotTest::ALL {
        let daemon = hot_median(i, Kind::Daemon, test).map_or(f64::NAN, |h| h.rps);
        for kind in Kind::ALL {
            let Some(c) = hot_median(i, kind, test) else {
                continue;
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} / {} | {} | {} | {} |",
                test.name(),
                kind.name(),
                c.runs,
                f(c.rps, 0),
                f(c.bps / 1e6, 0),
                f(c.p50 * 1000.0, 2),
                f(c.p99 * 1000.0, 2),
                f(daemon / c.rps, 2),
                f(c.cpu_per_gb, 3),
                c.errors
            );
        }
    }
}

fn render_rss(out: &mut String, i: &Inputs<'_>) {
    if i.rss.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\n### Memory: {} concurrent clients streaming one {:.0} MiB blob\n",
        RSS_CLIENTS,
        i.burst_bytes as f64 / 1048576.0
    );
    let _ = writeln!(out, "Peak RSS sampled every 10 ms, summed over the target's processes (nginx: master and workers); VmHWM is the main process's peak since start. Worst over runs.\n");
    let _ = writeln!(out, "| target | blob | runs | peak RSS MiB | VmHWM MiB | wall s (median) | clients ok (worst) |");
    let _ = writeln!(out, "| --- | --- | ---: | ---: | ---: | ---: | ---: |");
    for kind in Kind::ALL {
        for hot in [false, true] {
            let runs: Vec<_> = i
                .rss
                .iter()
                .filter(|r| r.kind == kind && r.hot == hot)
                .collect();
            if runs.is_empty() {
                continue;
            }
            let peak = runs.iter().map(|r| r.peak_rss_bytes).max().unwrap_or(0) as f64 / 1048576.0;
            let hwm = runs
                .iter()
                .filter_map(|r| r.high_water_bytes)
                .max()
                .map_or(f64::NAN, |b| b as f64 / 1048576.0);
            let wall = median(runs.iter().map(|r| secs(r.wall)).collect()).unwrap_or(f64::NAN);
            let ok = runs.iter().map(|r| r.ok).min().unwrap_or(0);
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {}/{} |",
                kind.name(),
                if hot { "cached" } else { "cold, shaped" },
                runs.len(),
                f(peak, 1),
                f(hwm, 1),
                f(wall, 2),
                ok,
                RSS_CLIENTS
            );
        }
    }
}

/// The cold runs of `server`.
fn cold_runs<'a>(i: &'a Inputs<'_>, server: ColdServer) -> Vec<&'a ColdRun> {
    i.cold.iter().filter(|r| r.server == server).collect()
}

/// Median CPU seconds per GiB of `server`'s cold pulls.
fn cold_cpu_per_gib(i: &Inputs<'_>, server: ColdServer) -> Option<f64> {
    median(
        cold_runs(i, server)
            .iter()
            .map(|r| r.cpu_per_gib())
            .collect(),
    )
}

/// Everyone who served a cold pull, in the report's order (the floor last).
fn cold_servers(i: &Inputs<'_>) -> Vec<ColdServer> {
    Kind::ALL
        .into_iter()
        .map(ColdServer::Cache)
        .chain([ColdServer::Floor])
        .filter(|s| !cold_runs(i, *s).is_empty())
        .collect()
}

fn render_cold(out: &mut String, i: &Inputs<'_>) {
    if i.cold.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\n### Cold pull beside its floor: one client, a cold {:.0} MiB blob, origin on loopback\n",
        i.floor_bytes as f64 / 1048576.0
    );
    let _ = writeln!(
        out,
        "The floor is the least work a cache that verifies what it serves must do: one thread, one socket read of at most {} KiB at a time (one receive copy), sha256 of it, one write to a temp file, `sendfile` of it to the client, and an `fsync` and digest check at the end (`benches/mirror/floor.rs`). \
         A cache's CPU is its processes' from the request until {} ms after the last byte (its commit); the floor's is its thread's until its file is synced and verified. \
         On loopback the kernel charges the client's TCP receive to the sender, so every row includes it. nginx verifies nothing.\n",
        READ_BYTES / 1024,
        COLD_SETTLE.as_millis()
    );
    let _ = writeln!(
        out,
        "| server | runs | CPU-s per GiB (median) | range | ÷ floor | wall s (median) |"
    );
    let _ = writeln!(out, "| --- | ---: | ---: | --- | ---: | ---: |");
    let floor = cold_cpu_per_gib(i, ColdServer::Floor).unwrap_or(f64::NAN);
    for server in cold_servers(i) {
        let runs = cold_runs(i, server);
        let per_gib: Vec<f64> = runs.iter().map(|r| r.cpu_per_gib()).collect();
        let lo = per_gib.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = per_gib.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let med = median(per_gib).unwrap_or(f64::NAN);
        let wall = median(runs.iter().map(|r| secs(r.wall)).collect()).unwrap_or(f64::NAN);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {}-{} | {} | {} |",
            server.name(),
            runs.len(),
            f(med, 2),
            f(lo, 2),
            f(hi, 2),
            f(med / floor, 2),
            f(wall, 2)
        );
    }
}

fn verdict(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "met",
        Some(false) => "**not met**",
        None => "not measured",
    }
}

fn render_goals(out: &mut String, i: &Inputs<'_>) {
    let _ = writeln!(out, "\n### Goals (cache-daemon)\n");
    let _ = writeln!(out, "| goal | bar | measured | verdict |");
    let _ = writeln!(out, "| --- | --- | --- | --- |");
    for (test, bar) in [
        (HotTest::LargeBlob, 0.9),
        (HotTest::SmallBlob, 0.8),
        (HotTest::Manifest, 0.8),
    ] {
        let d = hot_median(i, Kind::Daemon, test);
        let n = hot_median(i, Kind::Nginx, test);
        let ratio = d.zip(n).map(|(d, n)| d.rps / n.rps);
        let _ = writeln!(
            out,
            "| hot {}: req/s ÷ nginx's | ≥ {bar:.1} | {} ÷ {} = {} | {} |",
            test.name(),
            f(d.map_or(f64::NAN, |d| d.rps), 0),
            f(n.map_or(f64::NAN, |n| n.rps), 0),
            f(ratio.unwrap_or(f64::NAN), 2),
            verdict(ratio.map(|r| r >= bar))
        );
    }
    render_cpu_goals(out, i);
    if !i.cold.is_empty() {
        let d = cold_cpu_per_gib(i, ColdServer::Cache(Kind::Daemon));
        let floor = cold_cpu_per_gib(i, ColdServer::Floor);
        let _ = writeln!(
            out,
            "| cold {:.0} MiB pull, unshaped: daemon CPU-s per GiB (floor of the work here: {}) | ≤ 1.5 | {} | {} |",
            i.floor_bytes as f64 / 1048576.0,
            f(floor.unwrap_or(f64::NAN), 2),
            f(d.unwrap_or(f64::NAN), 2),
            verdict(d.map(|d| d <= 1.5))
        );
    }
    let peak = i
        .rss
        .iter()
        .filter(|r| r.kind == Kind::Daemon)
        .map(|r| r.peak_rss_bytes.max(r.high_water_bytes.unwrap_or(0)))
        .max();
    let _ = writeln!(
        out,
        "| RSS while streaming to {RSS_CLIENTS} clients | < 100 MiB | {} MiB peak | {} |",
        f(peak.map_or(f64::NAN, |b| b as f64 / 1048576.0), 1),
        verdict(peak.map(|b| b < 100 * 1048576))
    );
}

/// Issue 18's row: daemon CPU per GB served against nginx's, hot (the cold burst's and the
/// cold pull's are the harness scenarios' now).
fn render_cpu_goals(out: &mut String, i: &Inputs<'_>) {
    let hot = |kind| hot_median(i, kind, HotTest::LargeBlob).map(|c| c.cpu_per_gb);
    let (d, n) = (hot(Kind::Daemon), hot(Kind::Nginx));
    let _ = writeln!(
        out,
        "| hot {}: daemon CPU s/GB ≤ nginx's | ≤ 1.00 × | {} ÷ {} = {} | {} |",
        HotTest::LargeBlob.name(),
        f(d.unwrap_or(f64::NAN), 3),
        f(n.unwrap_or(f64::NAN), 3),
        f(d.zip(n).map_or(f64::NAN, |(d, n)| d / n), 2),
        verdict(d.zip(n).map(|(d, n)| d <= n))
    );
}
