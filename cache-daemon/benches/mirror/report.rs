//! Statistics over the runs (medians over repetitions, nearest-rank p95 over clients) and the
//! Markdown summary: the machine, one table per scenario with ratios to cache-daemon, and the
//! issue's goals, each with its bar, the measured value and whether it was met.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use crate::machine::Machine;
use crate::scenario::{BigRun, BurstRun, HotRun, HotTest, RssRun, COLD_CLIENTS, RSS_CLIENTS};
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

/// Nearest-rank percentile `p` (0-100); `None` for no values.
pub fn percentile(mut v: Vec<f64>, p: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    Some(v[rank.clamp(1, v.len()) - 1])
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Per-run numbers of one burst.
#[derive(Debug, Clone, Copy)]
struct BurstStats {
    first_min: f64,
    spread: f64,
    p50: f64,
    p95: f64,
    failed: usize,
    gets: usize,
    heads: usize,
    cpu: f64,
}

fn burst_stats(run: &BurstRun) -> BurstStats {
    let ok: Vec<_> = run.pulls.iter().flatten().collect();
    let firsts: Vec<f64> = ok.iter().map(|p| secs(p.first_byte)).collect();
    let dones: Vec<f64> = ok.iter().map(|p| secs(p.done)).collect();
    let first_min = firsts.iter().copied().fold(f64::INFINITY, f64::min);
    let first_max = firsts.iter().copied().fold(0.0, f64::max);
    BurstStats {
        first_min: if ok.is_empty() { f64::NAN } else { first_min },
        spread: if ok.is_empty() {
            f64::NAN
        } else {
            first_max - first_min
        },
        p50: percentile(dones.clone(), 50.0).unwrap_or(f64::NAN),
        p95: percentile(dones, 95.0).unwrap_or(f64::NAN),
        failed: run.pulls.len() - ok.len(),
        gets: run.upstream_gets,
        heads: run.upstream_heads,
        cpu: run.target_cpu,
    }
}

/// Medians over the repetitions of one (target, clients) cell.
#[derive(Debug, Clone, Copy)]
struct ColdCell {
    runs: usize,
    first_min: f64,
    spread: f64,
    spread_max: f64,
    p50: f64,
    p95: f64,
    failed: usize,
    gets: f64,
    gets_max: usize,
    heads: f64,
    cpu: f64,
}

fn cold_cells(runs: &[BurstRun]) -> BTreeMap<(usize, usize), ColdCell> {
    let mut by: BTreeMap<(usize, usize), Vec<BurstStats>> = BTreeMap::new();
    for r in runs {
        by.entry((kind_index(r.kind), r.clients))
            .or_default()
            .push(burst_stats(r));
    }
    by.into_iter()
        .map(|(k, s)| {
            let med =
                |f: fn(&BurstStats) -> f64| median(s.iter().map(f).collect()).unwrap_or(f64::NAN);
            (
                k,
                ColdCell {
                    runs: s.len(),
                    first_min: med(|s| s.first_min),
                    spread: med(|s| s.spread),
                    spread_max: s.iter().map(|s| s.spread).fold(0.0, f64::max),
                    p50: med(|s| s.p50),
                    p95: med(|s| s.p95),
                    failed: s.iter().map(|s| s.failed).sum(),
                    gets: med(|s| s.gets as f64),
                    gets_max: s.iter().map(|s| s.gets).max().unwrap_or(0),
                    heads: med(|s| s.heads as f64),
                    cpu: med(|s| s.cpu),
                },
            )
        })
        .collect()
}

fn kind_index(kind: Kind) -> usize {
    Kind::ALL.iter().position(|k| *k == kind).unwrap_or(0)
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
    /// Repetitions for the slow targets at 64 clients.
    pub slow_reps: usize,
    /// Shaped upstream rate.
    pub rate_mbit: u32,
    /// Size of the burst blob.
    pub burst_bytes: u64,
    /// Size of the big blob.
    pub big_bytes: u64,
    /// wrk run length.
    pub hot_duration: Duration,
    /// Single-core sha256, bytes/s.
    pub sha256_bps: f64,
    /// Cold burst runs.
    pub cold: &'a [BurstRun],
    /// Big pull runs.
    pub big: &'a [BigRun],
    /// wrk runs.
    pub hot: &'a [HotRun],
    /// Memory runs.
    pub rss: &'a [RssRun],
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

fn ms(v: f64) -> String {
    f(v * 1000.0, 0)
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
        "Peers: {}. sha256 on one core here: {:.2} GB/s. Repetitions: {} (distribution and direct at 64 clients: {}). \
         Every target is started fresh for every measurement; within a repetition the targets run one after another in an order that rotates per repetition. \
         Clients, targets and the origin share the same cores.",
        m.peers.join("; "),
        i.sha256_bps / 1e9,
        i.reps,
        i.slow_reps
    );
    if !i.skipped.is_empty() {
        let names: Vec<_> = i.skipped.iter().map(|k| k.name()).collect();
        let _ = writeln!(
            out,
            "\nSkipped (not installed, or no MIRROR_BASELINE_BIN): {}.",
            names.join(", ")
        );
    }
    render_cold(&mut out, i);
    render_big(&mut out, i);
    render_hot(&mut out, i);
    render_rss(&mut out, i);
    render_goals(&mut out, i);
    out
}

fn render_cold(out: &mut String, i: &Inputs<'_>) {
    if i.cold.is_empty() {
        return;
    }
    let cells = cold_cells(i.cold);
    let _ = writeln!(
        out,
        "\n### Cold burst: one uncached {:.0} MiB blob, origin behind tc tbf {} Mbit/s\n",
        i.burst_bytes as f64 / 1048576.0,
        i.rate_mbit
    );
    let _ = writeln!(out, "Times are seconds from the common epoch at which every client sent its request (medians over runs). \
        \"first byte\" is the earliest client's; \"spread\" is the latest client's first byte minus the earliest's (worst run in brackets). \
        \"p95 ÷ single\" divides by the same target's median single cold pull. \"CPU s\" is what the target's processes used during the burst; \"CPU s/GB\" divides it by the GB sent to the clients (clients × blob).\n");
    let _ = writeln!(out, "| target | clients | runs | first byte ms | spread ms | p50 s | p95 s | p95 ÷ single | p95 ÷ cache-daemon's | upstream GETs (max) | upstream HEADs | failed pulls | CPU s | CPU s/GB |");
    let _ = writeln!(
        out,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for clients in COLD_CLIENTS {
        for kind in Kind::ALL {
            let Some(c) = cells.get(&(kind_index(kind), clients)) else {
                continue;
            };
            let single = cells
                .get(&(kind_index(kind), 1))
                .map_or(f64::NAN, |s| s.p95);
            let daemon = cells
                .get(&(kind_index(Kind::Daemon), clients))
                .map_or(f64::NAN, |s| s.p95);
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} ({}) | {} | {} | {} | {} | {} ({}) | {} | {} | {} | {} |",
                kind.name(),
                clients,
                c.runs,
                ms(c.first_min),
                ms(c.spread),
                ms(c.spread_max),
                f(c.p50, 3),
                f(c.p95, 3),
                f(c.p95 / single, 2),
                f(c.p95 / daemon, 2),
                f(c.gets, 0),
                c.gets_max,
                f(c.heads, 0),
                c.failed,
                f(c.cpu, 2),
                f(c.cpu / (clients as f64 * i.burst_bytes as f64 / 1e9), 3)
            );
        }
    }
}

fn render_big(out: &mut String, i: &Inputs<'_>) {
    if i.big.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\n### Cold unshaped pull: one client, one uncached {:.0} MiB blob, origin on loopback\n",
        i.big_bytes as f64 / 1048576.0
    );
    let _ = writeln!(out, "\"direct\" is the origin registry serving the client itself: the ceiling for any cache in front of it on this machine. \
        The client counts bytes and does not hash them. \"hot\" is the same pull repeated once the blob is cached. \
        CPU columns are seconds of CPU used during the cold pull by the target's processes, the origin registry and the client (this process), medians over runs; \
        their sum divided by the cores is the shortest the pull could take if nothing else ran.\n");
    let _ = writeln!(out, "| target | runs | cold s | cold GB/s | cold time ÷ cache-daemon's | CPU s target / origin / client | target CPU s/GiB | CPU-bound floor s | hot s | hot GB/s | upstream GETs (cold + hot) | failed |");
    let _ = writeln!(
        out,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    let gb = |s: f64| i.big_bytes as f64 / s / 1e9;
    let cold_of = |kind: Kind| {
        median(
            i.big
                .iter()
                .filter(|r| r.kind == kind)
                .filter_map(|r| r.cold.ok())
                .map(secs)
                .collect(),
        )
    };
    let daemon = cold_of(Kind::Daemon).unwrap_or(f64::NAN);
    for kind in Kind::ALL {
        let runs: Vec<_> = i.big.iter().filter(|r| r.kind == kind).collect();
        if runs.is_empty() {
            continue;
        }
        let cold = cold_of(kind).unwrap_or(f64::NAN);
        let hot =
            median(runs.iter().filter_map(|r| r.hot.ok()).map(secs).collect()).unwrap_or(f64::NAN);
        let gets =
            median(runs.iter().map(|r| r.upstream_gets as f64).collect()).unwrap_or(f64::NAN);
        let failed = runs
            .iter()
            .map(|r| usize::from(r.cold.is_err()) + usize::from(r.hot.is_err()))
            .sum::<usize>();
        let cpu: Vec<f64> = (0..3)
            .map(|j| median(runs.iter().map(|r| r.cpu[j]).collect()).unwrap_or(f64::NAN))
            .collect();
        let floor = cpu.iter().sum::<f64>() / i.machine.cores.max(1) as f64;
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} / {} / {} | {} | {} | {} | {} | {} | {} |",
            kind.name(),
            runs.len(),
            f(cold, 2),
            f(gb(cold), 2),
            f(cold / daemon, 2),
            f(cpu[0], 2),
            f(cpu[1], 2),
            f(cpu[2], 2),
            f(cpu[0] / (i.big_bytes as f64 / 1073741824.0), 2),
            f(floor, 2),
            f(hot, 2),
            f(gb(hot), 2),
            f(gets, 0),
            failed
        );
    }
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
    let cells = cold_cells(i.cold);
    let daemon = |clients: usize| cells.get(&(kind_index(Kind::Daemon), clients)).copied();
    let single = daemon(1).map(|c| c.p95);
    for clients in [16, 64] {
        let Some(c) = daemon(clients) else {
            continue;
        };
        let _ = writeln!(
            out,
            "| cold burst {clients}: upstream GETs per blob | = 1 | max {} over {} runs | {} |",
            c.gets_max,
            c.runs,
            verdict(Some(c.gets_max == 1))
        );
        let _ = writeln!(out, "| cold burst {clients}: last follower's first byte after the leader's | ≤ 50 ms | median {} ms, worst {} ms | {} |",
            ms(c.spread), ms(c.spread_max), verdict(Some(c.spread_max <= 0.050)));
        let ratio = single.map(|s| c.p95 / s);
        let _ = writeln!(out, "| cold burst {clients}: p95 completion ÷ single cold pull | ≤ 1.10 | {} s ÷ {} s = {} | {} |",
            f(c.p95, 3), f(single.unwrap_or(f64::NAN), 3), f(ratio.unwrap_or(f64::NAN), 2), verdict(ratio.map(|r| r <= 1.10)));
    }
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
    let big = median(
        i.big
            .iter()
            .filter(|r| r.kind == Kind::Daemon)
            .filter_map(|r| r.cold.ok())
            .map(secs)
            .collect(),
    )
    .map(|s| i.big_bytes as f64 / s / 1e9);
    let ceiling = median(
        i.big
            .iter()
            .filter(|r| r.kind == Kind::Direct)
            .filter_map(|r| r.cold.ok())
            .map(secs)
            .collect(),
    )
    .map(|s| i.big_bytes as f64 / s / 1e9);
    let _ = writeln!(out, "| cold unshaped {:.0} MiB pull | ≥ 1.00 GB/s | {} GB/s (origin alone to one client: {} GB/s) | {} |",
        i.big_bytes as f64 / 1048576.0, f(big.unwrap_or(f64::NAN), 2), f(ceiling.unwrap_or(f64::NAN), 2), verdict(big.map(|g| g >= 1.0)));
    render_cpu_goals(out, i);
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

/// Issue 18's rows: daemon CPU per GB served against nginx's, hot and in the 16-client cold
/// burst, and daemon CPU per cold unshaped GiB.
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
    let cells = cold_cells(i.cold);
    let clients = 16;
    let per_gb = |kind| {
        cells
            .get(&(kind_index(kind), clients))
            .map(|c| c.cpu / (clients as f64 * i.burst_bytes as f64 / 1e9))
    };
    let (d, n) = (per_gb(Kind::Daemon), per_gb(Kind::Nginx));
    let _ = writeln!(
        out,
        "| cold burst {clients}: daemon CPU s/GB ≤ nginx's | ≤ 1.00 × | {} ÷ {} = {} | {} |",
        f(d.unwrap_or(f64::NAN), 3),
        f(n.unwrap_or(f64::NAN), 3),
        f(d.zip(n).map_or(f64::NAN, |(d, n)| d / n), 2),
        verdict(d.zip(n).map(|(d, n)| d <= n))
    );
    let gib = i.big_bytes as f64 / 1073741824.0;
    let big = median(
        i.big
            .iter()
            .filter(|r| r.kind == Kind::Daemon && r.cold.is_ok())
            .map(|r| r.cpu[0] / gib)
            .collect(),
    );
    let _ = writeln!(
        out,
        "| cold unshaped {:.0} MiB pull: daemon CPU s per GiB | ≤ 1.50 | {} | {} |",
        i.big_bytes as f64 / 1048576.0,
        f(big.unwrap_or(f64::NAN), 2),
        verdict(big.map(|b| b <= 1.5))
    );
}
