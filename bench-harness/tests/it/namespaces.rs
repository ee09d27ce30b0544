//! Nodes as network namespaces (`[network] nodes = "namespaces"`): every node a namespace on a
//! bridge with a `tc tbf`-shaped link, caches as real processes inside the nodes. Asserted: the
//! links' kernel counters of a direct run carry the image once per node (within protocol
//! overhead), and the registry's egress series never exceeds its shaped rate by more than the
//! tbf's bucket; per-node cache-daemons and nginxes are separate processes with logs of their own;
//! a shared cache-daemon fetches once and uploads to every node; the cluster target starts with
//! every member listed; nothing (namespace, process) is left after a run or after SIGINT; and
//! without root the run stops with a message saying so.
//!
//! Needs root and iproute2 (skipped without them unless `STAMPEDE_REQUIRE_REAL=1`), and the
//! `cache-daemon` binary, which is built once with cargo when it is not beside the test.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bench_harness::nodes::caches::{cache_daemon_binary, BINARY_ENV};
use bench_harness::nodes::WireTotals;
use bench_harness::result::{RegistryTotals, RunResult};
use bench_harness::run::{run, RunOptions, LOGS_DIR};
use bench_harness::scenario::Scenario;
use stampede_lab::process::is_alive;
use stampede_lab::Shaping;

use crate::common::real::have;

const RUN_LIMIT: Duration = Duration::from_secs(240);
/// Headers (Ethernet, IP, TCP, HTTP), manifests and requests on top of the blob bytes.
const OVERHEAD: f64 = 0.08;
const SLACK_BYTES: u64 = 32 * 1024;

fn namespaces_or_skip() -> bool {
    stampede_lab::root_or_skip("nodes in network namespaces") && have("ip") && have("tc")
}

/// The `cache-daemon` binary, built once with cargo when it is not beside this test.
fn daemon_binary() -> PathBuf {
    static BUILD: Mutex<()> = Mutex::new(());
    let _once = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(path) = cache_daemon_binary() {
        return path;
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "-p", "cache-daemon", "--bin", "cache-daemon"])
        .status()
        .expect("run cargo build");
    assert!(status.success(), "cargo build -p cache-daemon failed");
    cache_daemon_binary().expect("cache-daemon built beside the test binary")
}

/// `nodes` nodes in namespaces x 1 pod, a 3-blob image, links of `link` each, `targets` as TOML.
fn scenario_text(nodes: u32, link: &str, targets: &str, layer: &str) -> String {
    format!(
        r#"
nodes = {nodes}
pods_per_node = 1
seed = 5
platform = "linux/amd64"

[[variants]]
name = "tiny"
[[variants.synthetic.layers]]
size = "{layer}"
files = 4
compressibility = 0.0
[[variants.synthetic.layers]]
size = "96KiB"
files = 3

{targets}

[network]
nodes = "namespaces"

[registry]
node_link = "{link}"
netns_rate = "{link}"

[runtime]
unpack = false

[readiness]
probe_period = "20ms"
"#
    )
}

fn options(dir: &Path) -> RunOptions {
    RunOptions {
        logs_dir: dir.join("out").join(LOGS_DIR),
        image_cache: dir.join("images"),
        work_root: dir.join("work"),
        workspace: dir.to_owned(),
        progress: false,
    }
}

async fn run_scenario(text: &str, dir: &Path) -> RunResult {
    let s = Scenario::parse(text, "ns.toml", &[]).unwrap();
    tokio::time::timeout(RUN_LIMIT, run(s, options(dir)))
        .await
        .expect("run timed out")
        .unwrap_or_else(|e| panic!("{:#}", anyhow::Error::from(e)))
}

/// The namespaces of the fabric `r` ran on that still exist (tests in this binary run at the
/// same time, each with fabrics of its own, so the run's own names are read from its result).
fn fabric_namespaces(r: &RunResult) -> Vec<String> {
    let hub = r.registry.as_ref().unwrap()["shaped_link"]["hub"]
        .as_str()
        .expect("the fabric's hub in the result")
        .to_owned();
    let prefix = hub.strip_suffix("hub").unwrap().to_owned();
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&prefix))
        .map(str::to_owned)
        .collect()
}

fn totals<'a>(r: &'a RunResult, target: &str) -> &'a RegistryTotals {
    let s = r.series("tiny", target).expect("series");
    for (rep, data) in s.data.repetitions() {
        assert_eq!(
            data.failed_pods(),
            0,
            "{target} rep {rep}: {:?}",
            r.warnings
        );
    }
    &s.registry[&0]
}

fn assert_near(what: &str, got: u64, payload: u64) {
    let most = payload + (payload as f64 * OVERHEAD) as u64 + SLACK_BYTES;
    assert!(
        got >= payload && got <= most,
        "{what}: {got} bytes on the wire for {payload} bytes of blobs (at most {most})"
    );
}

/// Every 100 ms bucket of the registry's egress series is at most what a `tbf` of `rate` lets
/// through in that time: `rate x (interval + the longest read's span)` plus one tbf bucket (10 ms
/// of the rate, 62.5 KB at 50 Mbit/s: the 10 % the link may burst above its rate). The span term
/// is the sampler's own timing uncertainty (each read is timed at its midpoint, so an interval
/// between two reads is known to one span), normally tens of microseconds.
fn assert_within_shaped_rate(wire: &WireTotals, rate_bits_per_sec: u64) -> u64 {
    let burst = Shaping { rate_bits_per_sec }.burst_bytes();
    let span_us = wire.max_read_span_us.expect("reads are timed");
    let window_us = wire.interval_ms * 1000 + span_us;
    let most = rate_bits_per_sec / 8 * window_us / 1_000_000 + burst;
    let max = wire.registry_egress.iter().max().copied().unwrap_or(0);
    let mbit = |b: u64| b as f64 * 8.0 / (wire.interval_ms as f64 / 1000.0) / 1e6;
    assert!(
        max <= most,
        "{max} bytes ({:.1} Mbit/s) in one {} ms bucket of the registry's egress on a {} Mbit/s \
         link (at most {most}: tbf bucket {burst} bytes, longest read {span_us} us); series: {:?}",
        mbit(max),
        wire.interval_ms,
        rate_bits_per_sec / 1_000_000,
        wire.registry_egress
    );
    max
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registrys_egress_series_never_exceeds_its_shaped_rate() {
    if !namespaces_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Three nodes pull 3 x 4 MiB direct over a 50 Mbit/s registry link: two seconds of a
    // saturated link, twenty buckets that could overshoot.
    let targets = "[[targets]]\nkind = \"direct\"\n";
    let r = run_scenario(&scenario_text(3, "50Mbit", targets, "4MiB"), dir.path()).await;
    let direct = totals(&r, "direct");
    let wire = direct.wire.as_ref().expect("wire totals");
    let max = assert_within_shaped_rate(wire, 50_000_000);
    // The link was full, so the bound was tested: some bucket carried 80 % of the rate.
    let full = 50_000_000 / 8 / 10 * 8 / 10;
    assert!(
        max >= full,
        "the link never ran full ({max} bytes at most in a bucket): {:?}",
        wire.registry_egress
    );
    assert!(fabric_namespaces(&r).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caches_run_as_processes_inside_the_nodes_and_the_links_count_what_they_carried() {
    if !namespaces_or_skip() || !have("nginx") {
        return;
    }
    daemon_binary();
    let dir = tempfile::tempdir().unwrap();
    let targets = r#"
[[targets]]
kind = "direct"
[[targets]]
name = "per-node"
kind = "cache-daemon"
[[targets]]
name = "shared"
kind = "cache-daemon"
placement = "shared"
[[targets]]
name = "nginx-per-node"
kind = "nginx"
placement = "per-node"
"#;
    let r = run_scenario(&scenario_text(3, "100Mbit", targets, "512KiB"), dir.path()).await;
    let image = r.images["tiny"].compressed_bytes;
    assert!(image > 500 * 1024, "{image}");

    direct_links_carried_one_image_each(&r, image);
    per_node_daemons_filled_once_each(&r, dir.path(), image);

    // A shared cache-daemon: one process on its own link; the registry sends one copy and the
    // shared cache's link uploads three.
    let shared = totals(&r, "shared");
    assert_eq!(shared.cache_processes.len(), 1);
    assert_eq!(shared.cache_processes[0].who, "shared");
    let wire = shared.wire.as_ref().unwrap();
    assert_near("shared registry upload", wire.registry.upload_bytes, image);
    assert_near(
        "shared cache upload",
        wire.services[0].upload_bytes,
        3 * image,
    );

    // nginx per node: three masters, each with its access and error log.
    let nginx = totals(&r, "nginx-per-node");
    assert_eq!(nginx.cache_processes.len(), 3);
    assert!(nginx.cache_processes.iter().all(|p| p.program == "nginx"));
    assert_eq!(nginx.cache_processes[2].logs.len(), 2);

    assert!(
        fabric_namespaces(&r).is_empty(),
        "left behind: {:?}",
        fabric_namespaces(&r)
    );
    // Written as `main` writes it, and read back.
    let file = r.write(&dir.path().join("out")).unwrap();
    let again = RunResult::load(&file).unwrap();
    assert_eq!(again.series, r.series);
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let validator = crate::result_schema::validator();
    let errs = crate::result_schema::errors(&validator, &doc);
    assert!(errs.is_empty(), "{}", errs.join("\n"));
}

/// Direct: every node's link carried one image, the registry's three, never above the rate.
fn direct_links_carried_one_image_each(r: &RunResult, image: u64) {
    let direct = totals(r, "direct");
    let wire = direct.wire.as_ref().expect("wire totals");
    assert_eq!(wire.nodes.len(), 3);
    for (n, link) in wire.nodes.iter().enumerate() {
        assert_near(
            &format!("direct node {n} download"),
            link.download_bytes,
            image,
        );
        assert!(link.upload_bytes < image / 10, "node {n}: {link:?}");
    }
    assert_near(
        "direct registry upload",
        wire.registry.upload_bytes,
        3 * image,
    );
    assert_eq!(
        wire.registry_egress.iter().sum::<u64>(),
        wire.registry.upload_bytes
    );
    // The registry's own accounting counts body bytes only: below the wire.
    assert!(direct.bytes_out <= wire.registry.upload_bytes);
    assert_within_shaped_rate(wire, 100_000_000);
    assert!(direct.cache_processes.is_empty());
}

/// Per-node cache-daemons: three processes, one log each (kept under `dir`'s run directory);
/// each filled once from the registry.
fn per_node_daemons_filled_once_each(r: &RunResult, dir: &Path, image: u64) {
    let per_node = totals(r, "per-node");
    let procs = &per_node.cache_processes;
    assert_eq!(procs.len(), 3, "{procs:?}");
    let mut pids: Vec<u32> = procs.iter().map(|p| p.pid).collect();
    pids.sort_unstable();
    pids.dedup();
    assert_eq!(pids.len(), 3, "{procs:?}");
    for (n, p) in procs.iter().enumerate() {
        assert_eq!(p.who, format!("node-{n}"));
        assert_eq!(p.program, "cache-daemon");
        assert!(p.peak_rss_bytes > 1024 * 1024, "{p:?}");
        assert!(p.cpu_seconds >= 0.0);
        let log = dir.join("out").join(LOGS_DIR).join(&p.logs[0]);
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(!text.is_empty(), "{} is empty", log.display());
        assert!(!is_alive(p.pid), "{} still runs", p.pid);
    }
    let wire = per_node.wire.as_ref().unwrap();
    assert_near(
        "per-node registry upload",
        wire.registry.upload_bytes,
        3 * image,
    );
    for (n, link) in wire.nodes.iter().enumerate() {
        assert_near(
            &format!("per-node node {n} download"),
            link.download_bytes,
            image,
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_target_starts_every_daemon_with_every_member() {
    if !namespaces_or_skip() {
        return;
    }
    let binary = daemon_binary();
    let help = Command::new(&binary)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    if !String::from_utf8_lossy(&help.stdout).contains("--peer-listen") {
        eprintln!("SKIPPED: this cache-daemon has no cluster mode (--peer-listen) yet");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let targets = "[[targets]]\nkind = \"cache-daemon\"\nplacement = \"cluster\"\n";
    let r = run_scenario(&scenario_text(3, "100Mbit", targets, "512KiB"), dir.path()).await;
    let t = totals(&r, "cache-daemon");
    assert_eq!(t.cache_processes.len(), 3);
    let members = ["10.232.1.1:5052", "10.232.1.2:5052", "10.232.1.3:5052"];
    for (n, p) in t.cache_processes.iter().enumerate() {
        let log = dir.path().join("out").join(LOGS_DIR).join(&p.logs[0]);
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(!text.contains("error:"), "{}: {text}", log.display());
        // The daemon says whom it knows: every member, itself included, and its own address.
        let membership = text
            .lines()
            .find(|l| l.contains("cluster mode on"))
            .unwrap_or_else(|| panic!("{}: no cluster line in {text}", log.display()));
        for m in members {
            assert!(membership.contains(m), "{m} missing: {membership}");
        }
        assert!(
            membership.contains(&format!("advertise={}", members[n])),
            "{membership}"
        );
    }
    let image = r.images["tiny"].compressed_bytes;
    let wire = t.wire.as_ref().unwrap();
    assert!(
        wire.registry.upload_bytes < 2 * image,
        "a cluster of 3 fetched {} bytes for a {image}-byte image",
        wire.registry.upload_bytes
    );
}

/// `kill_owner_after` kills the largest layer's first-stripe owner mid-burst and schedules no
/// pod there; `nodes = 1` pulls on one node only. Both series count only the pods they
/// scheduled, and the other nodes' pulls all succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_cluster_owner_fails_no_other_pull_and_a_one_node_target_pulls_once() {
    if !namespaces_or_skip() {
        return;
    }
    let binary = daemon_binary();
    let help = Command::new(&binary)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    if !String::from_utf8_lossy(&help.stdout).contains("--peer-listen") {
        eprintln!("SKIPPED: this cache-daemon has no cluster mode (--peer-listen) yet");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // 4 MiB over 20 Mbit/s links takes about 1.7 s: a kill at 300 ms lands mid-burst.
    let targets = "[[targets]]\nname = \"killed\"\nkind = \"cache-daemon\"\nplacement = \"cluster\"\nkill_owner_after = \"300ms\"\n\n[[targets]]\nname = \"one\"\nkind = \"direct\"\nnodes = 1\n";
    let r = run_scenario(&scenario_text(4, "20Mbit", targets, "4MiB"), dir.path()).await;
    let killed = r.series("tiny", "killed").expect("series");
    assert_eq!(killed.pods_per_repetition, 3);
    let t = totals(&r, "killed");
    assert_eq!(killed.data.repetitions().count(), 1);
    for (_, data) in killed.data.repetitions() {
        assert_eq!(data.ready_pods(), 3);
    }
    // The victim died while it served its stripe: the others' fills broke off and went on
    // from the next candidate.
    let fallbacks: usize = t
        .cache_processes
        .iter()
        .map(|p| {
            let log = dir.path().join("out").join(LOGS_DIR).join(&p.logs[0]);
            std::fs::read_to_string(&log)
                .unwrap()
                .matches("stripe source failed")
                .count()
        })
        .sum();
    assert!(fallbacks >= 1, "no node fell back from the killed owner");
    let one = r.series("tiny", "one").expect("series");
    assert_eq!(one.pods_per_repetition, 1);
    let t = totals(&r, "one");
    let image = r.images["tiny"].compressed_bytes;
    // The registry's link carried one image: one node pulled, the others stayed idle.
    let wire = t.wire.as_ref().expect("wire totals");
    assert_near("one node's pull", wire.registry.upload_bytes, image);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_and_ctr_pull_from_inside_the_nodes() {
    if !namespaces_or_skip() || !have("skopeo") || !have("containerd") || !have("ctr") {
        return;
    }
    daemon_binary();
    for puller in ["skopeo", "ctr"] {
        let dir = tempfile::tempdir().unwrap();
        let targets =
            "[[targets]]\nkind = \"direct\"\n[[targets]]\nname = \"per-node\"\nkind = \"cache-daemon\"\n";
        let text = scenario_text(2, "100Mbit", targets, "512KiB").replace(
            "unpack = false",
            &format!("unpack = false\npuller = \"{puller}\""),
        );
        let r = run_scenario(&text, dir.path()).await;
        let image = r.images["tiny"].compressed_bytes;
        for target in ["direct", "per-node"] {
            let wire = totals(&r, target).wire.clone().expect("wire totals");
            // The client ran inside each node: its bytes crossed that node's link.
            for (n, link) in wire.nodes.iter().enumerate() {
                assert_near(
                    &format!("{puller} {target} node {n} download"),
                    link.download_bytes,
                    image,
                );
            }
            assert_near(
                &format!("{puller} {target} registry upload"),
                wire.registry.upload_bytes,
                2 * image,
            );
        }
    }
}

/// Processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            String::from_utf8_lossy(&cmdline).contains(needle)
        })
        .collect()
}

fn harness(file: &Path, dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bench-harness"));
    cmd.arg("run")
        .arg(file)
        .arg("--out")
        .arg(dir.join("out"))
        .arg("--image-cache")
        .arg(dir.join("images"))
        .arg("--work-dir")
        .arg(dir.join("work"))
        .arg("--no-progress")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

#[test]
fn interrupting_a_run_stops_the_node_caches_and_deletes_the_namespaces() {
    if !namespaces_or_skip() {
        return;
    }
    let binary = daemon_binary();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("interrupted.toml");
    // 8 Mbit/s links and a 2 MiB layer over 3 repetitions: seconds per burst.
    let text = scenario_text(2, "8Mbit", "[[targets]]\nkind = \"cache-daemon\"\n", "2MiB")
        .replace("seed = 5", "seed = 5\nrepetitions = 3");
    std::fs::write(&file, text).unwrap();
    let work = dir.path().join("work").to_string_lossy().into_owned();
    let mut child = harness(&file, dir.path())
        .env(BINARY_ENV, &binary)
        .spawn()
        .unwrap();
    let prefix = format!("stampede-fab-{}-", child.id());
    let list = || {
        let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let started = Instant::now();
    let daemons = loop {
        let found: Vec<u32> = processes_mentioning(&work)
            .into_iter()
            .filter(|p| *p != child.id())
            .collect();
        if found.len() >= 2 {
            break found;
        }
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            panic!(
                "bench-harness exited with {status} before its daemons started: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        if started.elapsed() > RUN_LIMIT {
            child.kill().ok();
            panic!("the daemons never started");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(list().contains(&prefix), "no {prefix}*: {}", list());
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(
            started.elapsed() < RUN_LIMIT,
            "bench-harness ignored SIGINT"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("SIGINT received"), "{stderr}");
    let left: Vec<u32> = daemons.into_iter().filter(|p| is_alive(*p)).collect();
    for pid in &left {
        stampede_lab::process::kill(*pid);
    }
    assert!(left.is_empty(), "cache-daemons left running: {left:?}");
    assert!(!list().contains(&prefix), "left behind: {}", list());
}

#[test]
fn without_root_the_run_says_namespaces_need_root() {
    if !stampede_lab::root_or_skip("switching to an unprivileged user") || !have("setpriv") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // The unprivileged user writes its output here.
    Command::new("chmod")
        .args(["0777", &dir.path().to_string_lossy()])
        .status()
        .unwrap();
    let file = dir.path().join("ns.toml");
    let text = scenario_text(2, "8Mbit", "[[targets]]\nkind = \"direct\"\n", "64KiB");
    std::fs::write(&file, text).unwrap();
    let inner = harness(&file, dir.path());
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(inner.get_program())
        .args(inner.get_args())
        .env("HOME", dir.path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("[network] nodes = \"namespaces\"") && stderr.contains("needs root"),
        "{stderr}"
    );
    assert!(!stderr.contains("Some("), "{stderr}");
}
