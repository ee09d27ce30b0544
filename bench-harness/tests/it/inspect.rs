//! `inspect` on crafted OCI layouts with known contents: exact file counts, overwritten and
//! deleted bytes, per-layer waste, shared base layers and recompressed layers between two
//! images, bytes over the wire, a missing platform named with what the index has, and the
//! command's table and JSON output.

use std::path::Path;
use std::time::Duration;

use bench_harness::inspect::{
    diff, inspect, Change, Count, ImageCost, ImageInput, InspectArgs, InspectOptions,
};
use bench_harness::scenario::units::Bandwidth;
use stampede_oci::{Compression, Platform};

use crate::common::layout::{Entry, Layer, LayoutBuilder};

const TEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The crafted layout: three images sharing one base layer.
struct Crafted {
    dir: tempfile::TempDir,
    base: Layer,
    fix: Layer,
    fix_zstd: Layer,
    top: Layer,
    extra: Layer,
}

/// Base: 5 files (32,100 bytes). `app:v1` adds a layer that overwrites `usr/bin/app` (5,000 ->
/// 6,000), whiteouts `usr/lib/libbig.so` (20,000) and makes `var/cache` opaque (hiding a: 3,000
/// and b: 4,000) while adding `var/cache/c` (10), then a layer rewriting `etc/config` (100) and
/// adding `tmp/x` (50). `app:zstd` is the same with its middle layer recompressed as zstd.
/// `other:v1` is the base plus one zstd layer. `multi` is an index for arm64 and s390x only; `arm` its arm64 manifest alone.
fn crafted() -> Crafted {
    use Entry::*;
    let dir = tempfile::tempdir().unwrap();
    let mut b = LayoutBuilder::new(dir.path());
    let base = b.layer(
        &[
            Dir("etc"),
            File("etc/config", 100),
            Dir("usr"),
            Dir("usr/bin"),
            File("usr/bin/app", 5_000),
            Dir("usr/lib"),
            File("usr/lib/libbig.so", 20_000),
            Dir("var"),
            Dir("var/cache"),
            File("var/cache/a", 3_000),
            File("var/cache/b", 4_000),
        ],
        Compression::Gzip,
    );
    let fix_entries = [
        File("usr/bin/app", 6_000),
        Whiteout("usr/lib/libbig.so"),
        Opaque("var/cache"),
        File("var/cache/c", 10),
    ];
    let fix = b.layer(&fix_entries, Compression::Gzip);
    let fix_zstd = b.layer(&fix_entries, Compression::Zstd);
    let top = b.layer(
        &[File("etc/config", 100), Dir("tmp"), File("tmp/x", 50)],
        Compression::Gzip,
    );
    let extra = b.layer(&[Dir("opt"), File("opt/new", 700)], Compression::Zstd);
    let app = b.image("linux/amd64", &[base.clone(), fix.clone(), top.clone()]);
    b.tag("v1", &app);
    let app_zstd = b.image(
        "linux/amd64",
        &[base.clone(), fix_zstd.clone(), top.clone()],
    );
    b.tag("zstd", &app_zstd);
    let other = b.image("linux/amd64", &[base.clone(), extra.clone()]);
    b.tag("other", &other);
    let arm = b.image("linux/arm64/v8", std::slice::from_ref(&base));
    let s390x = b.image("linux/s390x", std::slice::from_ref(&base));
    let multi = b.index(&[(&arm, "linux/arm64/v8"), (&s390x, "linux/s390x")]);
    b.tag("multi", &multi);
    b.tag("arm", &arm);
    Crafted {
        dir,
        base,
        fix,
        fix_zstd,
        top,
        extra,
    }
}

fn options(work: &Path, measure: bool) -> InspectOptions {
    InspectOptions {
        platform: Platform::parse("linux/amd64").unwrap(),
        bandwidth: "200Mbit".parse::<Bandwidth>().unwrap(),
        top_files: 3,
        measure_unpack: measure,
        work_dir: work.to_owned(),
    }
}

async fn cost(c: &Crafted, tag: &str, measure: bool) -> ImageCost {
    let input = ImageInput::Layout {
        path: c.dir.path().to_owned(),
        tag: Some(tag.to_owned()),
    };
    tokio::time::timeout(
        TEST_TIMEOUT,
        inspect(&input, &options(c.dir.path(), measure)),
    )
    .await
    .expect("inspect timed out")
    .unwrap()
}

fn count(files: u64, bytes: u64) -> Count {
    Count { files, bytes }
}

#[tokio::test]
async fn overwritten_and_deleted_files_are_counted_exactly() {
    let c = crafted();
    let cost = cost(&c, "v1", true).await;
    assert_eq!(cost.platforms, ["linux/amd64"]);
    assert_eq!(cost.totals.layers, 3);
    assert_eq!(cost.totals.shipped, count(5 + 2 + 2, 32_100 + 6_010 + 150));
    assert_eq!(cost.totals.visible, count(4, 100 + 6_000 + 10 + 50));
    assert_eq!(cost.waste.overwritten, count(2, 5_000 + 100));
    assert_eq!(cost.waste.deleted, count(3, 20_000 + 3_000 + 4_000));
    assert_eq!(cost.waste.wasted_bytes, 32_100);

    let [l0, l1, l2] = &cost.layers[..] else {
        panic!("three layers");
    };
    assert_eq!((l0.files, l0.directories), (count(5, 32_100), 6));
    assert_eq!(
        l0.wasted,
        count(5, 32_100),
        "every base file but none survives"
    );
    assert_eq!(
        (l1.whiteouts, l1.opaque_dirs, l1.overwrites, l1.deletes),
        (1, 1, count(1, 5_000), count(3, 27_000))
    );
    assert_eq!(l1.wasted, count(0, 0));
    assert_eq!((l2.overwrites, l2.deletes), (count(1, 100), count(0, 0)));
    for (got, want) in cost.layers.iter().zip([&c.base, &c.fix, &c.top]) {
        assert_eq!(got.digest, want.digest);
        assert_eq!(got.diff_id, want.diff_id);
        assert_eq!(got.compressed_bytes, want.compressed_bytes);
        assert_eq!(got.uncompressed_bytes, want.uncompressed_bytes);
        assert_eq!(got.compression, Compression::Gzip);
    }
    let compressed: u64 = [&c.base, &c.fix, &c.top]
        .iter()
        .map(|l| l.compressed_bytes)
        .sum();
    assert_eq!(cost.totals.compressed_bytes, compressed);
    assert!(
        cost.prediction.pull_bytes > compressed,
        "plus manifest and config"
    );
    let want_seconds = cost.prediction.pull_bytes as f64 / 25_000_000.0;
    assert!((cost.prediction.pull_seconds - want_seconds).abs() < 1e-9);

    let largest: Vec<(&str, u64)> = cost
        .largest_files
        .iter()
        .map(|f| (f.path.as_str(), f.size_bytes))
        .collect();
    assert_eq!(
        largest,
        [("usr/bin/app", 6_000), ("etc/config", 100), ("tmp/x", 50)]
    );
    let wasted: Vec<(&str, usize, usize)> = cost
        .wasted_files
        .iter()
        .map(|f| (f.path.as_str(), f.layer, f.removed_by))
        .collect();
    assert_eq!(
        wasted,
        [
            ("usr/lib/libbig.so", 0, 1),
            ("usr/bin/app", 0, 1),
            ("var/cache/b", 0, 1)
        ]
    );
    assert!(cost.warnings.is_empty(), "{:?}", cost.warnings);

    // The unpack measurement ran on the gzip sample and predicts every layer.
    let [m] = &cost.unpack_throughput[..] else {
        panic!("one format, one sample: {:?}", cost.unpack_throughput);
    };
    assert_eq!(m.compression, Compression::Gzip);
    assert_eq!(m.sample_layer, c.base.digest, "the largest gzip layer");
    assert_eq!(m.sample_uncompressed_bytes, c.base.uncompressed_bytes);
    assert_eq!(m.sample_files, 5);
    assert!(m.bytes_per_sec > 0.0);
    assert!(cost.layers.iter().all(|l| l.unpack_seconds.is_some()));
    assert!(cost.prediction.total_seconds.unwrap() > cost.prediction.pull_seconds);
}

#[tokio::test]
async fn a_shared_base_and_a_recompressed_layer_show_in_the_diff() {
    let c = crafted();
    let (app, app_zstd, other) = (
        cost(&c, "v1", false).await,
        cost(&c, "zstd", false).await,
        cost(&c, "other", false).await,
    );
    let d = diff(&app, &app_zstd);
    let changes: Vec<Change> = d.layers.iter().map(|r| r.change).collect();
    assert_eq!(changes, [Change::Same, Change::Recompressed, Change::Same]);
    assert_eq!(d.wire.shared_layers, 2);
    assert_eq!(
        d.wire.shared_bytes,
        c.base.compressed_bytes + c.top.compressed_bytes
    );
    assert_eq!(app_zstd.layers[1].compression, Compression::Zstd);
    assert_eq!(
        d.wire.b_after_a_bytes,
        app_zstd.prediction.pull_bytes - d.wire.shared_bytes
    );
    assert_eq!(
        d.wire.b_after_a_bytes - c.fix_zstd.compressed_bytes,
        app_zstd.prediction.pull_bytes - app_zstd.totals.compressed_bytes,
        "what B costs on a node holding A: its manifest, config and the recompressed layer"
    );
    assert_eq!(
        d.a.wasted_bytes, d.b.wasted_bytes,
        "same content, same waste"
    );

    let d = diff(&app, &other);
    let changes: Vec<Change> = d.layers.iter().map(|r| r.change).collect();
    assert_eq!(changes, [Change::Same, Change::Changed, Change::Removed]);
    assert!(d.layers[0].b_held_by_a && !d.layers[1].b_held_by_a);
    assert_eq!(
        (d.wire.shared_layers, d.wire.shared_bytes),
        (1, c.base.compressed_bytes)
    );
    assert_eq!(
        d.wire.b_after_a_saved_bytes, c.base.compressed_bytes,
        "a node holding the base saves exactly the base"
    );
    assert_eq!(
        d.wire.pull_bytes_delta,
        other.prediction.pull_bytes as i64 - app.prediction.pull_bytes as i64
    );
    assert_eq!(other.totals.visible, count(6, 32_100 + 700));
    assert_eq!(other.layers[1].digest, c.extra.digest);
}

#[tokio::test]
async fn an_index_without_the_platform_names_the_platforms_it_has() {
    let c = crafted();
    let input = ImageInput::Layout {
        path: c.dir.path().to_owned(),
        tag: Some("multi".to_owned()),
    };
    let err = inspect(&input, &options(c.dir.path(), false))
        .await
        .unwrap_err();
    assert!(err.is_platform_missing(), "{err}");
    assert_eq!(
        err.to_string(),
        "no manifest for platform linux/amd64; the index has: linux/arm64/v8, linux/s390x"
    );
    let arm = InspectOptions {
        platform: Platform::parse("linux/arm64").unwrap(),
        ..options(c.dir.path(), false)
    };
    let cost = inspect(&input, &arm).await.unwrap();
    assert_eq!(cost.platform, "linux/arm64/v8");
    assert_eq!(cost.platforms, ["linux/arm64/v8", "linux/s390x"]);
    assert!(cost.prediction.pull_bytes > cost.totals.compressed_bytes);

    // A plain manifest is read whatever its platform (a puller fetches it), with a warning.
    let single = ImageInput::Layout {
        path: c.dir.path().to_owned(),
        tag: Some("arm".to_owned()),
    };
    let cost = inspect(&single, &options(c.dir.path(), false))
        .await
        .unwrap();
    assert_eq!(cost.platform, "linux/arm64/v8");
    assert!(
        cost.warnings[0].contains("a single linux/arm64/v8 manifest, not linux/amd64"),
        "{:?}",
        cost.warnings
    );
}

fn args(images: &[String], json: bool) -> InspectArgs {
    InspectArgs {
        images: images.to_vec(),
        scenario: None,
        platform: Some("linux/amd64".into()),
        bandwidth: "1Gbit".parse().unwrap(),
        json,
        top: 2,
        no_measure: true,
        insecure: false,
        ca_file: None,
        docker_config: None,
        username: None,
        password_env: None,
        image_cache: None,
        work_dir: None,
    }
}

#[tokio::test]
async fn the_command_prints_tables_and_json() {
    let c = crafted();
    let a = format!("oci:{}:v1", c.dir.path().display());
    let b = format!("oci:{}:other", c.dir.path().display());
    let table = args(std::slice::from_ref(&a), false).run().await.unwrap();
    for needle in [
        "platform  linux/amd64",
        "final filesystem: 4 files, 6.2 kB; shipped: 9 files, 38.3 kB",
        "shipped for nothing: 32.1 kB (2 files overwritten by later entries, 5.1 kB; 3 deleted by whiteouts, 27.0 kB)",
        "predicted at 1Gbit: pull",
        "unpack not measured",
        "usr/lib/libbig.so",
    ] {
        assert!(table.contains(needle), "{needle:?} missing from\n{table}");
    }
    let json = args(&[a.clone(), b], true).run().await.unwrap();
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(doc["a"]["waste"]["wasted_bytes"], 32_100);
    assert_eq!(doc["a"]["totals"]["visible"]["files"], 4);
    assert_eq!(doc["b"]["layers"][1]["compression"], "zstd");
    assert_eq!(doc["diff"]["layers"][1]["change"], "changed");
    assert_eq!(doc["diff"]["wire"]["shared_bytes"], c.base.compressed_bytes);
    assert_eq!(doc["a"]["prediction"]["bandwidth"], "1Gbit");

    let err = args(&[format!("oci:{}:nope", c.dir.path().display())], false)
        .run()
        .await
        .unwrap_err();
    let chain = format!("{:#}", anyhow::Error::from(err));
    assert!(chain.contains("no image tagged \"nope\""), "{chain}");
    assert!(chain.contains("v1, zstd, other, multi, arm"), "{chain}");
}
