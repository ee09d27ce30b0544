//! A single-platform image built for another platform than the nodes': every pull fails as
//! `platform_missing` once the config says what the image is built for, before any layer is
//! fetched, as containerd refuses it; an image for the nodes' platform pulls.

use std::time::Duration;

use bench_harness::run::recorder::FailureKind;
use stampede_oci::Compression;

use crate::common::layout::{Entry, LayoutBuilder};
use bench_harness::run::{run, RunOptions, LOGS_DIR};
use bench_harness::scenario::Scenario;

const SCENARIO: &str = r#"
name = "platforms"
nodes = 2
pods_per_node = 2
seed = 9
platform = "linux/amd64"

[[variants]]
name = "arm-only"
[variants.synthetic]
platforms = ["linux/arm64"]
[[variants.synthetic.layers]]
size = "64KiB"
files = 4

[[variants]]
name = "amd"
[variants.synthetic]
platforms = ["linux/amd64"]
[[variants.synthetic.layers]]
size = "64KiB"
files = 4

[[targets]]
kind = "direct"

[readiness]
probe_period = "20ms"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_platform_image_for_another_platform_fails_every_pull() {
    let dir = tempfile::tempdir().unwrap();
    // The same through an OCI layout holding one linux/arm64 manifest (no index).
    let layout = dir.path().join("arm-layout");
    let mut b = LayoutBuilder::new(&layout);
    let base = b.layer(&[Entry::File("bin/tool", 1_000)], Compression::Gzip);
    let arm = b.image("linux/arm64", &[base]);
    b.tag("v1", &arm);
    let text = format!(
        "{SCENARIO}\n[[variants]]\nname = \"arm-layout\"\n[variants.layout]\npath = \"{}\"\ntag = \"v1\"\n",
        layout.display()
    );
    let scenario = Scenario::parse(&text, "platforms.toml", &[]).unwrap();
    let options = RunOptions {
        logs_dir: dir.path().join("out").join(LOGS_DIR),
        image_cache: dir.path().join("images"),
        work_root: dir.path().join("work"),
        workspace: dir.path().to_owned(),
        progress: false,
    };
    let result = tokio::time::timeout(Duration::from_secs(120), run(scenario, options))
        .await
        .expect("run timed out")
        .unwrap();
    let r = &result;
    let arm = r.series("arm-only", "direct").unwrap();
    assert_eq!(
        arm.data.failures().into_iter().collect::<Vec<_>>(),
        [(FailureKind::PlatformMissing, 4)]
    );
    // Each node fetched the manifest and the config, and no layer.
    let config = r.images["arm-only"].details["platforms"][0]["config"]["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let gets = &arm.registry[&0].blob_gets;
    assert_eq!(gets.keys().collect::<Vec<_>>(), [&config], "{gets:?}");
    assert_eq!(gets[&config], 2);
    assert!(
        r.warnings.iter().any(|w| w.contains(
            "the image is a single-platform manifest for linux/arm64; the nodes are linux/amd64"
        )),
        "{:#?}",
        r.warnings
    );
    // Said up front too, and consistently: the prepared image is one nodes refuse.
    assert!(
        r.warnings
            .iter()
            .any(|w| w.starts_with("variant arm-only: ")
                && w.contains("linux/arm64")
                && w.ends_with("every pull will fail as platform_missing")),
        "{:#?}",
        r.warnings
    );
    let layout_series = r.series("arm-layout", "direct").unwrap();
    assert_eq!(
        layout_series
            .data
            .failures()
            .into_iter()
            .collect::<Vec<_>>(),
        [(FailureKind::PlatformMissing, 4)]
    );
    assert!(
        r.warnings
            .iter()
            .any(|w| w.starts_with("variant arm-layout: ")
                && w.contains("a single-platform manifest for linux/arm64, not linux/amd64")
                && w.ends_with("every pull will fail as platform_missing")),
        "{:#?}",
        r.warnings
    );
    let amd = r.series("amd", "direct").unwrap();
    assert_eq!(amd.data.failed_pods(), 0);
    assert_eq!(amd.data.repetition(0).unwrap().ready_pods(), 4);
}
