//! Whole runs in-process against the embedded registry, small enough to take seconds: every pod
//! becomes ready, registry-side counts are exact, result.json and report.md are written and the
//! result validates against the schema.

use std::time::Duration;

use bench_harness::run::{run, RunOptions};
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
        results_root: dir.join("results"),
        out_dir: Some(dir.join("out")),
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
    let out = tokio::time::timeout(Duration::from_secs(120), run(scenario, options(dir.path())))
        .await
        .expect("run timed out")
        .unwrap();
    let r = &out.result;
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
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.dir.join("result.json")).unwrap())
            .unwrap();
    let problems = crate::result_schema::errors(&crate::result_schema::validator(), &doc);
    assert!(problems.is_empty(), "{problems:#?}");
    assert!(out.dir.join("report.md").exists());
    let text = std::fs::read_to_string(out.dir.join("report.md")).unwrap();
    assert!(text.contains("shared-cache"), "{text}");
}

fn config_bytes(image: &bench_harness::result::ImageFacts) -> u64 {
    image.details["platforms"][0]["config"]["size_bytes"]
        .as_u64()
        .unwrap()
}
