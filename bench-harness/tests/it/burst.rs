//! Whole runs in-process against the embedded registry, small enough to take seconds: every pod
//! becomes ready, registry-side counts are exact, result.json and report.md are written and the
//! result validates against the schema.

use std::time::Duration;

use bench_harness::run::recorder::Phase;
use bench_harness::run::{run, RunOptions, LOGS_DIR};
use bench_harness::scenario::Scenario;

const SMALL: &str = r#"
name = "small"
nodes = 3
pods_per_node = 2
repetitions = 2
seed = 5
platform = "linux/amd64"

[[variants]]
name = "tiny"
[variants.synthetic]
[[variants.synthetic.layers]]
size = "256KiB"
files = 8
[[variants.synthetic.layers]]
size = "128KiB"
files = 16
file_sizes = "lognormal"

[[targets]]
kind = "direct"

[[targets]]
name = "shared-cache"
kind = "cache-daemon"
placement = "shared"

[[targets]]
name = "node-cache"
kind = "cache-daemon"
placement = "per-node"

[readiness]
read_fraction = 0.5
init = "10ms"
probe_period = "50ms"
"#;

fn options(dir: &std::path::Path) -> RunOptions {
    RunOptions {
        logs_dir: dir.join("out").join(LOGS_DIR),
        image_cache: dir.join("images"),
        work_root: dir.join("work"),
        workspace: dir.to_owned(),
        progress: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_burst_counts_every_request_and_byte_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = Scenario::parse(SMALL, "small.toml", &[]).unwrap();
    let result = tokio::time::timeout(Duration::from_secs(120), run(scenario, options(dir.path())))
        .await
        .expect("run timed out")
        .unwrap();
    let r = &result;
    let image = &r.images["tiny"];
    let blobs = 1 + 2; // config + 2 layers (single platform: no index)
    for (target, gets_per_blob) in [("direct", 3), ("shared-cache", 1), ("node-cache", 3)] {
        let s = r.series("tiny", target).unwrap();
        assert_eq!(s.data.failed_pods(), 0, "{target}");
        for rep in 0..2 {
            let data = s.data.repetition(rep).unwrap();
            assert_eq!(data.ready_pods(), 6, "{target} rep {rep}");
            let t = &s.registry[&rep];
            assert_eq!(t.blob_gets.len(), blobs, "{target}: {:?}", t.blob_gets);
            assert!(
                t.blob_gets.values().all(|&g| g == gets_per_blob),
                "{target}: {:?}",
                t.blob_gets
            );
            // Pods on a node share its pull: one manifest GET per node (or one for a shared cache).
            assert_eq!(t.requests["manifest_get"], gets_per_blob, "{target}");
            assert_eq!(t.requests["throttled"], 0);
            // Bytes out: every blob once per fetch, plus the manifest once per fetch.
            let manifest_bytes = t.snapshot.as_ref().unwrap()["body_bytes"]["manifests"]
                .as_u64()
                .unwrap();
            assert_eq!(
                t.bytes_out,
                gets_per_blob * (image.compressed_bytes + config_bytes(image)) + manifest_bytes,
                "{target}"
            );
        }
    }
    let doc: serde_json::Value = serde_json::from_str(&r.to_json().unwrap()).unwrap();
    let problems = crate::result_schema::errors(&crate::result_schema::validator(), &doc);
    assert!(problems.is_empty(), "{problems:#?}");
    let text = bench_harness::report::markdown(r);
    assert!(text.contains("shared-cache"), "{text}");
}

fn config_bytes(image: &bench_harness::result::ImageFacts) -> u64 {
    image.details["platforms"][0]["config"]["size_bytes"]
        .as_u64()
        .unwrap()
}

/// A pod of `app` also runs `proxy`; every registry request waits 1 s, so `app`'s pull takes at
/// least two round trips (manifest, then its blobs). The latency is long so that "waited for
/// the main image" (at least 2 s) and "did not wait" (under 1 s) stay apart on a loaded machine:
/// how short the queue is without a wait is a speed figure, not this test's.
const SIDECARS: &str = r#"
name = "sidecars"
nodes = 2
pods_per_node = 2
seed = 9
platform = "linux/amd64"

[[variants]]
name = "app"
sidecars = ["proxy"]
[variants.synthetic]
[[variants.synthetic.layers]]
size = "256KiB"
files = 8
[[variants.synthetic.layers]]
size = "128KiB"
files = 4

[[variants]]
name = "proxy"
[variants.synthetic]
[[variants.synthetic.layers]]
size = "64KiB"
files = 4

[[targets]]
kind = "direct"

[[targets]]
name = "shared-cache"
kind = "cache-daemon"
placement = "shared"

[registry]
latency = "1s"

[runtime]
max_parallel_image_pulls = PULLS

[readiness]
init = "0s"
probe_period = "10ms"
"#;

/// Lower bound of `app`'s pull on a node: the manifest's round trip, then its blobs'.
const APP_PULL_AT_LEAST: Duration = Duration::from_secs(2);

/// Runs [`SIDECARS`] with `pulls` image pulls at once per node; checks that every pod of `app`
/// got ready and that each node fetched both images' blobs exactly once (directly; once in all
/// through a shared cache); returns the direct `app` pods' smallest and largest queue time.
async fn run_sidecars(pulls: u32) -> (Duration, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let text = SIDECARS.replace("PULLS", &pulls.to_string());
    let scenario = Scenario::parse(&text, "sidecars.toml", &[]).unwrap();
    let result = tokio::time::timeout(Duration::from_secs(120), run(scenario, options(dir.path())))
        .await
        .expect("run timed out")
        .unwrap();
    let r = &result;
    let s = r.series("app", "direct").unwrap();
    let data = s.data.repetition(0).unwrap();
    assert_eq!(s.data.failed_pods(), 0);
    assert_eq!(data.ready_pods(), 4);
    let t = &s.registry[&0];
    // Both images' blobs (config + layers each), once per node; both manifests, once per node.
    let (app, proxy) = (&r.images["app"], &r.images["proxy"]);
    assert_eq!(t.blob_gets.len(), (1 + 2) + (1 + 1), "{:?}", t.blob_gets);
    assert!(t.blob_gets.values().all(|&g| g == 2), "{:?}", t.blob_gets);
    assert!(t.blob_gets.contains_key(&proxy_config(proxy)));
    assert_eq!(t.requests["manifest_get"], 2 * 2);
    let manifest_bytes = t.snapshot.as_ref().unwrap()["body_bytes"]["manifests"]
        .as_u64()
        .unwrap();
    let images_bytes =
        app.compressed_bytes + config_bytes(app) + proxy.compressed_bytes + config_bytes(proxy);
    assert_eq!(t.bytes_out, 2 * images_bytes + manifest_bytes);
    // Layers of both images, recorded once per node.
    let layers = data
        .layer(bench_harness::run::recorder::LayerPhase::Fetch)
        .len();
    assert_eq!(layers, 2 * (2 + 1));
    // The pull phase covers every image of the pod, and ends after the queue.
    let queue = data.phase(Phase::Queue);
    let pull = data.phase(Phase::Pull);
    assert_eq!(queue.len(), 4);
    assert!(
        pull.min() >= APP_PULL_AT_LEAST.as_micros() as u64,
        "{}",
        pull.min()
    );
    assert!(
        queue.max() <= pull.max(),
        "{} > {}",
        queue.max(),
        pull.max()
    );
    // Through one shared cache, the registry serves each blob of both images once.
    let cached = &r.series("app", "shared-cache").unwrap().registry[&0];
    assert_eq!(cached.blob_gets.len(), 5, "{:?}", cached.blob_gets);
    assert!(cached.blob_gets.values().all(|&g| g == 1));
    assert_eq!(
        r.series("app", "shared-cache")
            .unwrap()
            .data
            .repetition(0)
            .unwrap()
            .ready_pods(),
        4
    );
    // The proxy's own burst: one image per pod, nothing to queue behind.
    let alone = r.series("proxy", "direct").unwrap();
    let alone = alone.data.repetition(0).unwrap();
    assert_eq!(alone.ready_pods(), 4);
    let alone_queue = Duration::from_micros(alone.phase(Phase::Queue).max());
    assert!(alone_queue < APP_PULL_AT_LEAST / 2, "{alone_queue:?}");

    let doc: serde_json::Value = serde_json::from_str(&r.to_json().unwrap()).unwrap();
    let problems = crate::result_schema::errors(&crate::result_schema::validator(), &doc);
    assert!(problems.is_empty(), "{problems:#?}");
    assert_eq!(doc["scenario"]["variants"][0]["sidecars"][0], "proxy");
    // Reports count image copies in a pod's images, and say which sidecars a variant has.
    assert_eq!(
        r.pod_image_bytes("app"),
        Some(app.compressed_bytes + proxy.compressed_bytes)
    );
    let report = bench_harness::report::markdown(r);
    assert!(report.contains("with sidecars proxy"), "{report}");
    (
        Duration::from_micros(queue.min()),
        Duration::from_micros(queue.max()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serialized_pulls_make_a_sidecar_wait_for_the_main_image() {
    let (queue_min, _) = run_sidecars(1).await;
    // Every pod waits for the slot while its node pulls app (at least two round trips).
    assert!(queue_min >= APP_PULL_AT_LEAST, "{queue_min:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_pulls_let_a_sidecar_start_at_once() {
    let (_, queue_max) = run_sidecars(2).await;
    // Both images pulled at once: no pod waits for a slot (well under half of the serialized
    // case's least wait).
    assert!(queue_max < APP_PULL_AT_LEAST / 2, "{queue_max:?}");
}

fn proxy_config(image: &bench_harness::result::ImageFacts) -> String {
    image.details["platforms"][0]["config"]["digest"]
        .as_str()
        .unwrap()
        .to_owned()
}
