//! The peers the harness starts itself (distribution's proxy mode, an nginx cache), the
//! registry behind a kernel-shaped link, and real clients as pullers, each in a burst small
//! enough to take seconds. What is asserted is what is true and stable about each peer, counted
//! by the registry behind it: nginx with `proxy_cache_lock` fetches every blob once however many
//! nodes ask, and its own access log agrees request for request; distribution in proxy mode
//! fetches every blob twice for a single client (one stream for the client, one background fill
//! of its store) and HEADs it once. A missing peer program is named with its package and the
//! other targets still run.
//!
//! Real parts are skipped with a message when missing, unless `STAMPEDE_REQUIRE_REAL=1`; the
//! shaped link needs root and is skipped without it.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use bench_harness::result::RunResult;
use bench_harness::run::recorder::{LayerPhase, Phase};
use bench_harness::run::{run, RunOptions, LOGS_DIR};
use bench_harness::scenario::Scenario;
use stampede_lab::{AccessEntry, RequestKind};

use crate::common::child::Child;
use crate::common::real::have;

const RUN_LIMIT: Duration = Duration::from_secs(180);

/// A scenario of `nodes` nodes x 1 pod pulling a 3-blob image (config and two small layers)
/// through `targets` (TOML `[[targets]]` tables), plus `extra` TOML.
fn scenario(name: &str, nodes: u32, targets: &str, extra: &str) -> Scenario {
    let text = format!(
        r#"
name = "{name}"
nodes = {nodes}
pods_per_node = 1
seed = 11
platform = "linux/amd64"

[[variants]]
name = "tiny"
[[variants.synthetic.layers]]
size = "256KiB"
files = 4
[[variants.synthetic.layers]]
size = "96KiB"
files = 3

{targets}

[readiness]
probe_period = "20ms"

{extra}
"#
    );
    Scenario::parse(&text, &format!("{name}.toml"), &[]).unwrap()
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

async fn run_scenario(s: Scenario, dir: &Path) -> RunResult {
    tokio::time::timeout(RUN_LIMIT, run(s, options(dir)))
        .await
        .expect("run timed out")
        .unwrap_or_else(|e| panic!("{:#}", anyhow::Error::from(e)))
}

/// Blob digests of the variant's image: its config and layers.
fn blobs(r: &RunResult) -> Vec<String> {
    let d = &r.images["tiny"].details;
    let mut out = vec![d["platforms"][0]["config"]["digest"]
        .as_str()
        .unwrap()
        .to_owned()];
    out.extend(layer_sizes(r).into_keys());
    out
}

/// Layer digests of the variant's image, with their compressed sizes.
fn layer_sizes(r: &RunResult) -> BTreeMap<String, u64> {
    r.images["tiny"].details["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["digest"].as_str().unwrap().to_owned(),
                l["compressed_bytes"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn assert_all_ready(r: &RunResult, target: &str, pods: u64) {
    let s = r.series("tiny", target).unwrap();
    for (rep, data) in s.data.repetitions() {
        assert_eq!(
            data.failed_pods(),
            0,
            "{target} rep {rep}: {:?}",
            r.warnings
        );
        assert_eq!(data.ready_pods(), pods, "{target} rep {rep}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_fetches_each_blob_once_and_its_own_log_agrees() {
    if !have("nginx") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let nodes = 4;
    let s = scenario("nginx-peer", nodes, "[[targets]]\nkind = \"nginx\"", "");
    let r = run_scenario(s, dir.path()).await;
    assert_all_ready(&r, "nginx", u64::from(nodes));
    let totals = &r.series("tiny", "nginx").unwrap().registry[&0];
    let digests = blobs(&r);
    for d in &digests {
        assert_eq!(
            totals.blob_gets.get(d),
            Some(&1),
            "{d}: {:?}",
            totals.blob_gets
        );
    }
    assert_eq!(totals.requests["blob_get"], digests.len() as u64);
    // Every node's first byte of every blob is recorded, and its lag behind the first puller's.
    let wave = &r
        .series("tiny", "nginx")
        .unwrap()
        .data
        .repetition(0)
        .unwrap()
        .waves()[&0];
    assert_eq!(
        wave.first_byte.len(),
        digests.len() as u64 * u64::from(nodes)
    );
    assert_eq!(wave.first_byte_lag.len(), wave.first_byte.len());
    assert_eq!(
        wave.first_byte_lag.min(),
        0,
        "the first puller of a blob lags 0"
    );
    // Manifests by tag pass through uncached: one per node.
    assert_eq!(totals.requests["manifest_get"], u64::from(nodes));

    // nginx's own account of what it sent upstream (`up=` set) agrees, kind by kind.
    let log = dir
        .path()
        .join("out")
        .join(LOGS_DIR)
        .join("nginx-tiny-rep0.access.log");
    let text = std::fs::read_to_string(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
    let entries: Vec<AccessEntry> = text.lines().filter_map(AccessEntry::parse).collect();
    let upstream_by_kind = |kind: RequestKind| {
        entries
            .iter()
            .filter(|e| e.kind() == kind && e.upstream.is_some())
            .count() as u64
    };
    assert_eq!(
        upstream_by_kind(RequestKind::BlobGet),
        totals.requests["blob_get"]
    );
    assert_eq!(
        upstream_by_kind(RequestKind::ManifestGet),
        totals.requests["manifest_get"]
    );
    // Every node got every blob from nginx; all but the first fetch of each were its cache.
    let served = entries
        .iter()
        .filter(|e| e.kind() == RequestKind::BlobGet)
        .count();
    assert_eq!(served, digests.len() * nodes as usize, "{text}");
    assert!(dir
        .path()
        .join("out/logs/nginx-tiny-rep0.error.log")
        .is_file());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distribution_proxy_fetches_each_blob_twice_for_one_client() {
    if !have("docker-registry") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = scenario(
        "distribution-peer",
        1,
        "[[targets]]\nkind = \"distribution-proxy\"",
        "",
    );
    let r = run_scenario(s, dir.path()).await;
    assert_all_ready(&r, "distribution-proxy", 1);
    let totals = &r.series("tiny", "distribution-proxy").unwrap().registry[&0];
    let snapshot = totals.snapshot.as_ref().unwrap();
    let sizes = layer_sizes(&r);
    for d in blobs(&r) {
        // One stream for the client and one background fill of the proxy's store, each
        // counted once the fill is over (the runner waits for the registry to go quiet).
        assert_eq!(
            totals.blob_gets.get(&d),
            Some(&2),
            "{d}: {:?}",
            totals.blob_gets
        );
        assert_eq!(snapshot["blobs"][&d]["heads"], 1, "{d}");
        if let Some(size) = sizes.get(&d) {
            assert_eq!(snapshot["blobs"][&d]["bytes_out"], 2 * size, "{d}");
        }
    }
    let log = dir.path().join("out/logs/distribution-proxy-tiny-rep0.log");
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("proxy cache"),
        "{}",
        log.display()
    );
}

#[test]
fn a_missing_peer_names_its_package_and_the_other_targets_still_run() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("missing.toml");
    let targets = "[[targets]]\nkind = \"direct\"\n\n[[targets]]\nkind = \"nginx\"\n\n[[targets]]\nkind = \"distribution-proxy\"";
    let text = format!(
        "nodes = 2\npods_per_node = 1\nplatform = \"linux/amd64\"\n[[variants]]\nname = \"tiny\"\n[[variants.synthetic.layers]]\nsize = \"64KiB\"\nfiles = 2\n{targets}\n[readiness]\nprobe_period = \"20ms\"\n"
    );
    std::fs::write(&file, text).unwrap();
    // A machine without nginx and docker-registry: nothing on PATH at all.
    let empty = dir.path().join("empty-path");
    std::fs::create_dir(&empty).unwrap();
    let out_dir = dir.path().join("out");
    let out = Child::spawn(
        Command::new(env!("CARGO_BIN_EXE_bench-harness"))
            .arg("run")
            .arg(&file)
            .arg("--out")
            .arg(&out_dir)
            .arg("--image-cache")
            .arg(dir.path().join("images"))
            .arg("--work-dir")
            .arg(dir.path().join("work"))
            .arg("--no-progress")
            .env("PATH", &empty)
            .env("RUST_LOG", "warn"),
    )
    .output_within(RUN_LIMIT, "bench-harness");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    for message in [
        "`nginx` is not installed: apt-get install -y nginx",
        "`docker-registry` is not installed: apt-get install -y docker-registry",
    ] {
        assert!(
            stderr.contains(message),
            "missing {message:?} in:\n{stderr}"
        );
    }
    let r = RunResult::load(&out_dir.join("result.json")).unwrap();
    assert_all_ready(&r, "direct", 2);
    for skipped in ["nginx", "distribution-proxy"] {
        let s = r.series("tiny", skipped).unwrap();
        assert!(s.data.repetitions().next().is_none(), "{skipped} ran");
        assert!(
            r.warnings
                .iter()
                .any(|w| w.starts_with(&format!("target {skipped} not run: `"))),
            "{:?}",
            r.warnings
        );
    }
    let report = std::fs::read_to_string(out_dir.join("report.md")).unwrap();
    assert!(report.contains("apt-get install -y nginx"), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shaped_upstream_carries_every_byte_over_its_tbf_link() {
    if !stampede_lab::root_or_skip("the shaped link (network namespaces, tc)") {
        return;
    }
    if !(have("ip") && have("tc")) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = scenario(
        "shaped",
        2,
        "[[targets]]\nkind = \"direct\"\n\n[[targets]]\nkind = \"cache-daemon\"\nplacement = \"shared\"",
        "[registry]\nnetns_rate = \"200Mbit\"",
    );
    let r = run_scenario(s, dir.path()).await;
    let link = &r.registry.as_ref().unwrap()["shaped_link"];
    let netns = link["netns"].as_str().expect("a shaped link").to_owned();
    assert_eq!(link["tbf_rate_bits_per_sec"], 200_000_000);
    assert!(link["registry_ip"].as_str().unwrap().starts_with("10.231."));
    for (target, gets) in [("direct", 2), ("cache-daemon", 1)] {
        assert_all_ready(&r, target, 2);
        let t = &r.series("tiny", target).unwrap().registry[&0];
        assert!(
            t.blob_gets.values().all(|g| *g == gets),
            "{target}: {:?}",
            t.blob_gets
        );
        // The kernel counted every body byte the registry sent, plus headers and TCP/IP.
        let link_bytes = t.link_bytes.expect("link bytes counted");
        assert!(
            link_bytes >= t.bytes_out && link_bytes < t.bytes_out + t.bytes_out / 5 + 64 * 1024,
            "{target}: link {link_bytes} vs body {}",
            t.bytes_out
        );
    }
    let namespaces = String::from_utf8(
        Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(
        !namespaces.contains(&netns),
        "{netns} left behind: {namespaces}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_pulls_for_the_nodes_and_the_registry_counts_its_requests() {
    if !(have("skopeo") && have("nginx")) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let nodes = 3;
    let s = scenario(
        "skopeo-puller",
        nodes,
        "[[targets]]\nkind = \"direct\"\n\n[[targets]]\nkind = \"nginx\"",
        "[runtime]\npuller = \"skopeo\"",
    );
    let r = run_scenario(s, dir.path()).await;
    let digests = blobs(&r);
    for (target, gets) in [("direct", u64::from(nodes)), ("nginx", 1)] {
        assert_all_ready(&r, target, u64::from(nodes));
        let s = r.series("tiny", target).unwrap();
        let t = &s.registry[&0];
        for d in &digests {
            assert_eq!(
                t.blob_gets.get(d),
                Some(&gets),
                "{target} {d}: {:?}",
                t.blob_gets
            );
        }
        // skopeo reports no first byte and no per-layer fetch; the node unpacked its layers.
        assert!(s.data.merged(Phase::Ttfb).is_empty(), "{target}");
        assert!(
            s.data.merged_layer(LayerPhase::Fetch).is_empty(),
            "{target}"
        );
        assert_eq!(
            s.data.merged_layer(LayerPhase::Apply).len(),
            2 * u64::from(nodes),
            "{target}"
        );
    }
    let report = bench_harness::report::markdown(&r);
    assert!(report.contains("not observed"), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctr_pulls_with_a_containerd_per_node() {
    if !stampede_lab::root_or_skip("containerd's snapshotter") {
        return;
    }
    if !(have("containerd") && have("ctr")) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let nodes = 2;
    let s = scenario(
        "ctr-puller",
        nodes,
        "[[targets]]\nkind = \"direct\"\n\n[[targets]]\nkind = \"cache-daemon\"\nplacement = \"shared\"",
        "[runtime]\npuller = \"ctr\"",
    );
    let r = run_scenario(s, dir.path()).await;
    let digests = blobs(&r);
    for (target, gets) in [("direct", u64::from(nodes)), ("cache-daemon", 1)] {
        assert_all_ready(&r, target, u64::from(nodes));
        let t = &r.series("tiny", target).unwrap().registry[&0];
        for d in &digests {
            assert_eq!(
                t.blob_gets.get(d),
                Some(&gets),
                "{target} {d}: {:?}",
                t.blob_gets
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

#[test]
fn interrupting_a_run_stops_its_peers_and_deletes_its_namespace() {
    if !stampede_lab::root_or_skip("the shaped link (network namespaces, tc)") {
        return;
    }
    if !(have("nginx") && have("ip") && have("tc")) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("interrupted.toml");
    // Slow enough (8 Mbit/s for 3 repetitions of 2 MiB) to be interrupted mid-run.
    std::fs::write(
        &file,
        "nodes = 2\npods_per_node = 1\nrepetitions = 3\nplatform = \"linux/amd64\"\n[[variants]]\nname = \"tiny\"\n[[variants.synthetic.layers]]\nsize = \"2MiB\"\nfiles = 2\ncompressibility = 0.0\n[[targets]]\nkind = \"nginx\"\n[registry]\nnetns_rate = \"8Mbit\"\n[runtime]\nunpack = false\n",
    )
    .unwrap();
    let work = dir.path().join("work");
    // The guard kills the harness, its nginx and deletes its namespace should any assertion
    // below fail (a harness that ignored SIGTERM included); on success they are already gone.
    let mut child = Child::spawn(
        Command::new(env!("CARGO_BIN_EXE_bench-harness"))
            .arg("run")
            .arg(&file)
            .arg("--out")
            .arg(dir.path().join("out"))
            .arg("--image-cache")
            .arg(dir.path().join("images"))
            .arg("--work-dir")
            .arg(&work)
            .arg("--no-progress")
            .env("RUST_LOG", "warn"),
    );
    let harness = child.id();
    let netns_prefix = format!("stampede-up-{harness}-");
    child.owns_netns(netns_prefix.clone());
    let work_path = work.to_string_lossy().into_owned();
    let started = Instant::now();
    let nginx = loop {
        let found: Vec<u32> = processes_mentioning(&work_path)
            .into_iter()
            .filter(|p| *p != harness)
            .collect();
        if !found.is_empty() {
            break found;
        }
        if let Some(status) = child.try_wait() {
            panic!("bench-harness exited with {status} before nginx started");
        }
        assert!(started.elapsed() < RUN_LIMIT, "nginx never started");
        std::thread::sleep(Duration::from_millis(50));
    };
    // The master and its workers (whose command lines do not name the directory).
    let mut peers = nginx.clone();
    for pid in &nginx {
        peers.extend(stampede_lab::process::descendants(*pid));
    }
    child.owns(peers.iter().copied());
    let list = || {
        String::from_utf8(
            Command::new("ip")
                .args(["netns", "list"])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap()
    };
    assert!(
        list().contains(&netns_prefix),
        "no namespace {netns_prefix}*: {}",
        list()
    );
    Command::new("kill")
        .args(["-TERM", &harness.to_string()])
        .status()
        .unwrap();
    let out = child.output_within(RUN_LIMIT, "bench-harness after SIGTERM (ignored it?)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("SIGTERM received"), "{stderr}");
    let left: Vec<u32> = peers
        .into_iter()
        .filter(|p| stampede_lab::process::is_alive(*p))
        .collect();
    for pid in &left {
        stampede_lab::process::kill(*pid);
    }
    assert!(left.is_empty(), "peer processes left running: {left:?}");
    assert!(
        !list().contains(&netns_prefix),
        "namespace left behind: {}",
        list()
    );
}
