//! The fleet model (`bench-harness model`): properties that must hold for any parameters, each
//! checked over a spread of parameters drawn from a fixed-seed generator; the modelled
//! result's contract (schema, marked modelled, renders, compares with a measured run); the
//! committed profiles; and bad input (exit 2 with the field named).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use bench_harness::model::{self, Inputs, Profile};
use bench_harness::result::RunResult;
use bench_harness::run::recorder::Phase;
use bench_harness::scenario::Scenario;

use crate::common::{crate_dir, scenarios_dir};

fn workspace() -> std::path::PathBuf {
    crate_dir().join("..")
}

const BIN: &str = env!("CARGO_BIN_EXE_bench-harness");

/// A deterministic spread of parameters (an LCG: the same cases on every run).
struct Cases(u64);

impl Cases {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    fn pick(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

/// A profile whose rates are `scale` times the base ones and whose overheads are `overhead`.
fn profile(scale: u64, overhead: &str) -> Profile {
    let text = format!(
        r#"
name = "test"
[node]
cores = 4
hash_rate = "{h}MB/s"
disk_write = "{d}MB/s"
request_overhead = "{overhead}"
stream_rate = "{s}MB/s"
[unpack]
gzip_decompress = "{g}MB/s"
zstd_decompress = "{z}MB/s"
apply = "{a}MB/s"
[cache]
request_overhead = "{overhead}"
stream_rate = "{s}MB/s"
serve_rate = "{c}MB/s"
[cluster]
stripe = "8MiB"
fan_out = 2
hop_latency = "0s"
"#,
        h = 2000 * scale,
        d = 1500 * scale,
        s = 3000 * scale,
        g = 300 * scale,
        z = 900 * scale,
        a = 500 * scale,
        c = 4000 * scale,
    );
    Profile::parse(&text, Path::new("test-profile.toml")).unwrap()
}

struct Shape<'a> {
    nodes: u64,
    layers: &'a [u64],
    egress_mbit: u64,
    node_mbit: u64,
    latency_ms: u64,
    target: &'a str,
    extra: &'a str,
}

fn scenario(s: &Shape<'_>) -> Scenario {
    let layers: String = s
        .layers
        .iter()
        .map(|mib| format!("[[variants.synthetic.layers]]\nsize = \"{mib}MiB\"\nfiles = 16\n"))
        .collect();
    let text = format!(
        "name = \"prop\"\nnodes = {}\npods_per_node = 1\n{}\n[[variants]]\nname = \"app\"\n[variants.synthetic]\ncompression = \"gzip\"\n{layers}[[targets]]\n{}\n[registry]\negress = \"{}Mbit\"\nnode_link = \"{}Mbit\"\nlatency = \"{}ms\"\n[runtime]\nunpack = false\n[readiness]\nprobe_period = \"1ms\"\n",
        s.nodes, s.extra, s.target, s.egress_mbit, s.node_mbit, s.latency_ms
    );
    Scenario::parse(&text, "prop.toml", &[]).unwrap_or_else(|e| panic!("{e:#}\n{text}"))
}

fn model(s: &Scenario, p: &Profile) -> RunResult {
    model::run(
        s,
        &Inputs {
            profile: p,
            profile_path: None,
            measured_images: None,
            workspace: Path::new("."),
        },
    )
    .unwrap()
}

fn pull(r: &RunResult, quantile: f64) -> f64 {
    let h = r.series[0].data.merged(Phase::Pull);
    Duration::from_micros(h.value_at_quantile(quantile)).as_secs_f64()
}

fn min_pull(r: &RunResult) -> f64 {
    Duration::from_micros(r.series[0].data.merged(Phase::Pull).min()).as_secs_f64()
}

#[test]
fn no_pull_is_faster_than_its_bytes_over_the_narrowest_link_plus_latency() {
    let mut c = Cases(1);
    for _ in 0..12 {
        let layers: Vec<u64> = (0..c.pick(1, 4)).map(|_| c.pick(1, 64)).collect();
        let shape = Shape {
            nodes: c.pick(1, 40),
            layers: &layers,
            egress_mbit: c.pick(50, 5000),
            node_mbit: c.pick(50, 5000),
            latency_ms: c.pick(0, 50),
            target: [
                "kind = \"direct\"",
                "kind = \"cache-daemon\"\nplacement = \"shared\"",
                "kind = \"cache-daemon\"\nplacement = \"cluster\"",
                "kind = \"nginx\"",
                "kind = \"distribution-proxy\"",
            ][c.pick(0, 4) as usize],
            extra: "",
        };
        let s = scenario(&shape);
        let r = model(&s, &profile(1, "0s"));
        let bytes = r.images["app"].compressed_bytes as f64;
        let narrowest = (shape.egress_mbit.min(shape.node_mbit) as f64) * 1e6 / 8.0;
        // Manifest, config and the first layer each wait one latency at least.
        let bound = bytes / narrowest + 3.0 * shape.latency_ms as f64 / 1000.0;
        // Histograms keep 3 significant digits.
        assert!(
            min_pull(&r) >= bound * 0.998,
            "{}: fastest pull {:.4} s < bound {bound:.4} s",
            shape.target,
            min_pull(&r)
        );
    }
}

#[test]
fn a_registry_bound_direct_burst_grows_linearly_with_node_count() {
    let mut c = Cases(2);
    for _ in 0..4 {
        let layers: Vec<u64> = (0..c.pick(1, 4)).map(|_| c.pick(2, 32)).collect();
        let egress = c.pick(100, 1000);
        let latency = c.pick(0, 20);
        let at = |nodes| {
            let s = scenario(&Shape {
                nodes,
                layers: &layers,
                egress_mbit: egress,
                node_mbit: 100_000,
                latency_ms: latency,
                target: "kind = \"direct\"",
                extra: "",
            });
            pull(&model(&s, &profile(1, "0s")), 1.0)
        };
        let (t10, t20, t40) = (at(10), at(20), at(40));
        let step1 = t20 - t10;
        let step2 = t40 - t20;
        assert!(
            (step2 / step1 - 2.0).abs() < 0.02,
            "10, 20, 40 nodes: {t10:.3} {t20:.3} {t40:.3} s"
        );
    }
}

#[test]
fn coalescing_targets_cost_exactly_one_registry_copy_per_blob() {
    let mut c = Cases(3);
    for target in [
        "kind = \"cache-daemon\"\nplacement = \"shared\"",
        "kind = \"nginx\"",
        "kind = \"cache-daemon\"\nplacement = \"cluster\"",
    ] {
        for waves in [false, true] {
            let layers: Vec<u64> = (0..c.pick(1, 4)).map(|_| c.pick(1, 40)).collect();
            let extra = if waves {
                "[arrival]\nmode = \"waves\"\n[[arrival.waves]]\nat = \"0s\"\npods_per_node = 1\n[[arrival.waves]]\nat = \"500ms\"\npods_per_node = 1\nnew_nodes = 7"
            } else {
                ""
            };
            let s = scenario(&Shape {
                nodes: c.pick(2, 60),
                layers: &layers,
                egress_mbit: c.pick(100, 2000),
                node_mbit: c.pick(100, 2000),
                latency_ms: c.pick(0, 10),
                target,
                extra,
            });
            let r = model(&s, &profile(1, "1ms"));
            let totals = &r.series[0].registry[&0];
            let blob_bytes: u64 = r.images["app"].details["layers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l["compressed_bytes"].as_u64().unwrap())
                .sum();
            let nodes = f64::from(s.total_nodes());
            // Body bytes: one copy of each layer and of the config, plus every node's manifest.
            let sent = totals.bytes_out as f64;
            let one_copy = blob_bytes as f64;
            let manifests = nodes * 1_000.0;
            assert!(
                (sent - one_copy - 1_000.0 - manifests).abs() < 64.0,
                "{target} waves={waves}: sent {sent}, one copy {one_copy}"
            );
            if !target.contains("cluster") {
                assert!(
                    totals.blob_gets.values().all(|n| *n == 1),
                    "{target}: {:?}",
                    totals.blob_gets
                );
            }
            assert_eq!(r.series[0].data.failed_pods(), 0);
        }
    }
}

#[test]
fn doubling_every_bandwidth_halves_a_transfer_bound_time() {
    let mut c = Cases(4);
    for target in [
        "kind = \"direct\"",
        "kind = \"cache-daemon\"\nplacement = \"shared\"",
        "kind = \"cache-daemon\"\nplacement = \"cluster\"",
    ] {
        let layers: Vec<u64> = (0..c.pick(1, 4)).map(|_| c.pick(4, 64)).collect();
        let nodes = c.pick(1, 30);
        let (egress, link) = (c.pick(50, 500), c.pick(50, 500));
        let at = |scale: u64| {
            let s = scenario(&Shape {
                nodes,
                layers: &layers,
                egress_mbit: egress * scale,
                node_mbit: link * scale,
                latency_ms: 0,
                target,
                extra: "",
            });
            pull(&model(&s, &profile(scale, "0s")), 1.0)
        };
        let (once, twice) = (at(1), at(2));
        assert!(
            (once / twice - 2.0).abs() < 0.01,
            "{target}: {once:.4} s, doubled {twice:.4} s"
        );
    }
}

#[test]
fn a_throttled_registry_never_exceeds_its_rate() {
    let mut c = Cases(5);
    for _ in 0..6 {
        let rate = c.pick(5, 100) as f64;
        let burst = c.pick(1, 50) as f64;
        let target = ["kind = \"direct\"", "kind = \"distribution-proxy\""][c.pick(0, 1) as usize];
        let throttle = format!(
            "[registry.throttle]\nrequests_per_second = {rate}\nburst = {burst}\nretry_after = \"{}ms\"",
            c.pick(100, 2000)
        );
        let layers = [4, 2, 1];
        let text_shape = Shape {
            nodes: c.pick(10, 200),
            layers: &layers,
            egress_mbit: 10_000,
            node_mbit: 10_000,
            latency_ms: 5,
            target,
            extra: "",
        };
        let mut s = scenario(&text_shape);
        let extra = Scenario::parse(
            &format!("nodes = 1\npods_per_node = 1\n[[variants]]\nname = \"a\"\n[[variants.synthetic.layers]]\nsize = 1\nfiles = 1\n[[targets]]\nkind = \"direct\"\n{throttle}"),
            "t.toml",
            &[],
        )
        .unwrap();
        s.registry.throttle = extra.registry.throttle;
        let r = model(&s, &profile(1, "1ms"));
        let series = &r.series[0].registry[&0].snapshot.as_ref().unwrap()["series"];
        let reqs: Vec<u64> = serde_json::from_value(series["requests"].clone()).unwrap();
        let throttled: Vec<u64> = serde_json::from_value(series["throttled"].clone()).unwrap();
        let admitted: Vec<u64> = reqs.iter().zip(&throttled).map(|(r, t)| r - t).collect();
        assert!(throttled.iter().sum::<u64>() > 0, "the case must throttle");
        for i in 0..admitted.len() {
            let mut sum = 0u64;
            for (j, a) in admitted.iter().enumerate().skip(i) {
                sum += a;
                let window = (j - i + 1) as f64 * 0.1;
                assert!(
                    sum as f64 <= burst + rate * window + 1e-9,
                    "{sum} requests admitted in {window:.1} s at {rate}/s, burst {burst}"
                );
            }
        }
    }
}

#[test]
fn a_modelled_result_says_so_validates_renders_and_compares_with_a_measured_one() {
    let s = Scenario::load(&scenarios_dir().join("quickstart.toml"), &[]).unwrap();
    let r = model(&s, &profile(1, "1ms"));
    let facts = r.model.as_ref().expect("marked modelled");
    assert_eq!(facts.profile, "test");
    let json: serde_json::Value = serde_json::from_str(&r.to_json().unwrap()).unwrap();
    let validator = crate::result_schema::validator();
    assert!(
        crate::result_schema::errors(&validator, &json).is_empty(),
        "{:?}",
        crate::result_schema::errors(&validator, &json)
    );
    let dir = tempfile::tempdir().unwrap();
    r.write(dir.path()).unwrap();
    let back = RunResult::load(&dir.path().join("result.json")).unwrap();
    assert_eq!(back.model, r.model);
    let md = bench_harness::report::markdown(&back);
    assert!(md.lines().nth(2).unwrap().contains("**Modelled**"), "{md}");
    assert!(bench_harness::report::html(&back).contains("<strong>Modelled</strong>"));
    // A measured result (the committed quickstart) has no model and renders as before.
    let measured_path = workspace().join("results/quickstart/result.json");
    let measured = RunResult::load(&measured_path).unwrap();
    assert!(measured.model.is_none());
    assert!(!bench_harness::report::markdown(&measured).contains("Modelled"));
    // compare: modelled against measured, same series.
    let out = Command::new(BIN)
        .arg("compare")
        .arg(&measured_path)
        .arg(dir.path().join("result.json"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("end_to_end"));
}

#[test]
fn against_a_measured_run_prints_the_table_with_errors() {
    let dir = tempfile::tempdir().unwrap();
    let ws = workspace();
    let out = Command::new(BIN)
        .current_dir(&ws)
        .args([
            "model",
            "--against",
            "results/quickstart/result.json",
            "--out",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(matches!(out.status.code(), Some(0 | 1)), "{out:?}");
    for needle in [
        "| full | direct | pull p50 |",
        "registry bytes",
        "peak egress",
        " %",
    ] {
        assert!(stdout.contains(needle), "{needle}: {stdout}");
    }
    let table = std::fs::read_to_string(dir.path().join("against.md")).unwrap();
    assert!(
        table.contains("| slim | cache-daemon | all ready |"),
        "{table}"
    );
}

#[test]
fn against_several_sizes_writes_one_folder_each_and_the_scaling_table() {
    let dir = tempfile::tempdir().unwrap();
    let ws = workspace();
    let run = |out: Option<&Path>| {
        let mut cmd = Command::new(BIN);
        cmd.current_dir(&ws).args([
            "model",
            "--against",
            "results/cluster-scaling/nodes-4/result.json",
            "--against",
            "results/cluster-scaling/nodes-8/result.json",
        ]);
        if let Some(out) = out {
            cmd.arg("--out").arg(out);
        }
        cmd.output().unwrap()
    };
    let out = run(Some(dir.path()));
    assert!(matches!(out.status.code(), Some(0 | 1)), "{out:?}");
    let table = std::fs::read_to_string(dir.path().join("scaling.md")).unwrap();
    for needle in [
        "| variant | target | metric | 4 nodes | 8 nodes |",
        "| app | cache-daemon-cluster | all ready |",
        "cells within tolerance",
    ] {
        assert!(table.contains(needle), "{needle}: {table}");
    }
    for n in [4, 8] {
        let one = dir.path().join(format!("cluster-scaling-{n}-nodes"));
        assert!(one.join("against.md").is_file(), "{}", one.display());
        assert!(one.join("result.json").is_file());
    }
    // Several runs need a folder to put them in.
    let out = run(None);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--out"));
}

#[test]
fn committed_profiles_parse() {
    let dir = scenarios_dir().join("profiles");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            Profile::load(&path).unwrap_or_else(|e| panic!("{e:#}"));
            seen += 1;
        }
    }
    assert!(seen >= 2, "profiles in {}", dir.display());
}

#[test]
fn bad_input_exits_2_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let ws = workspace();
    let bad_profile = dir.path().join("bad.toml");
    std::fs::write(
        &bad_profile,
        std::fs::read_to_string(ws.join("scenarios/profiles/fleet-node.toml"))
            .unwrap()
            .replace("hash_rate", "hash_rte"),
    )
    .unwrap();
    let mirror = dir.path().join("mirror.toml");
    std::fs::write(
        &mirror,
        "nodes = 2\npods_per_node = 1\n[[variants]]\nname = \"a\"\n[[variants.synthetic.layers]]\nsize = \"1MiB\"\nfiles = 1\n[[targets]]\nkind = \"mirror\"\nurl = \"http://127.0.0.1:1\"\n",
    )
    .unwrap();
    let quickstart = ws.join("scenarios/quickstart.toml");
    let cases: [(Vec<&std::ffi::OsStr>, &str); 3] = [
        (
            vec![
                quickstart.as_os_str(),
                "--profile".as_ref(),
                bad_profile.as_os_str(),
            ],
            "hash_rte",
        ),
        (
            vec![
                quickstart.as_os_str(),
                "--profile".as_ref(),
                "/nonexistent/p.toml".as_ref(),
            ],
            "/nonexistent/p.toml",
        ),
        (vec![mirror.as_os_str()], "targets[0].kind"),
    ];
    for (args, needle) in cases {
        let out = Command::new(BIN)
            .current_dir(&ws)
            .arg("model")
            .args(&args)
            .arg("--out")
            .arg(dir.path().join("out"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{needle}: {stderr}");
        assert!(!stderr.contains("Some("), "{stderr}");
    }
}

#[test]
fn calibrate_writes_a_profile_the_model_reads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("measured.toml");
    let out = Command::new(BIN)
        .args(["calibrate", "--layer-size", "2MiB", "--name", "ci", "--out"])
        .arg(&path)
        .arg("--work-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let p = Profile::load(&path).unwrap();
    assert_eq!(p.name, "ci");
    for (what, rate) in [
        ("hash", p.node.hash_rate.bytes_per_sec),
        ("disk", p.node.disk_write.bytes_per_sec),
        ("gzip", p.unpack.gzip_decompress.bytes_per_sec),
        ("zstd", p.unpack.zstd_decompress.bytes_per_sec),
        ("apply", p.unpack.apply.bytes_per_sec),
    ] {
        // Anything real moves more than 1 MB/s and less than 1 TB/s.
        assert!(
            (1_000_000..1_000_000_000_000).contains(&rate),
            "{what}: {rate}"
        );
    }
    assert!(p.node.request_overhead.0 > Duration::ZERO);
    assert!(p.node.request_overhead.0 < Duration::from_secs(1));
    // Nothing left behind in the work dir but the profile.
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(left.len(), 1, "{left:?}");
}

#[test]
fn the_runner_refuses_cluster_placement_without_namespace_nodes_and_points_to_the_model() {
    let ws = workspace();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .current_dir(&ws)
        .args(["run", "scenarios/planner-500-nodes.toml", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("cluster")
            && stderr.contains("nodes = \"namespaces\"")
            && stderr.contains("bench-harness model"),
        "{stderr}"
    );
}

#[test]
fn the_model_refuses_a_kubernetes_target_in_plain_words() {
    let ws = workspace();
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("cluster.toml");
    std::fs::write(
        &scenario,
        "nodes = 1\npods_per_node = 5\n[[variants]]\nname = \"app\"\n[variants.registry]\nimage = \"10.200.0.1:5000/app:1\"\nmirror = false\ninsecure = true\n[[targets]]\nname = \"lab\"\nkind = \"kubernetes\"\nkubeconfig = \"admin.kubeconfig\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .current_dir(&ws)
        .arg("model")
        .arg(&scenario)
        .args(["--profile", "scenarios/profiles/this-machine.toml", "--out"])
        .arg(dir.path().join("out"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    // The target is named before the variant's remote image, which the model cannot size either.
    assert!(
        stderr.contains("targets[0].kind: \"kubernetes\" is a real cluster")
            && stderr.contains("run the scenario against the cluster")
            && !stderr.contains("Some(")
            && !stderr.contains("variants[0]"),
        "{stderr}"
    );
    assert!(!dir.path().join("out/result.json").exists());
}

#[test]
fn nginx_waiters_get_no_byte_before_the_fill_completes_and_their_lock_poll() {
    let layers = [16, 8];
    let ttfb_p50 = |target: &str| {
        let s = scenario(&Shape {
            nodes: 8,
            layers: &layers,
            egress_mbit: 400,
            node_mbit: 1000,
            latency_ms: 5,
            target,
            extra: "",
        });
        let r = model(&s, &profile(1, "1ms"));
        let h = r.series[0].data.merged(Phase::Ttfb);
        (
            Duration::from_micros(h.value_at_quantile(0.5)).as_secs_f64(),
            Duration::from_micros(h.min()).as_secs_f64(),
            r.series[0].registry[&0].blob_gets.clone(),
        )
    };
    let (nginx_median, nginx_first, nginx_gets) = ttfb_p50("kind = \"nginx\"");
    let (daemon_median, _, daemon_gets) =
        ttfb_p50("kind = \"cache-daemon\"\nplacement = \"shared\"");
    // The lock holder streams at once; the 7 others wait for the config's fill and nginx's
    // 500 ms lock poll. cache-daemon streams the fill to all of them.
    assert!(nginx_first < 0.1, "lock holder's first byte {nginx_first}");
    assert!(nginx_median >= 0.5, "waiters' first byte {nginx_median}");
    assert!(
        daemon_median < 0.1,
        "cache-daemon readers' first byte {daemon_median}"
    );
    assert!(nginx_gets
        .values()
        .chain(daemon_gets.values())
        .all(|n| *n == 1));
}

#[test]
fn distributions_proxy_fetches_a_cold_blob_once_per_node_and_a_stored_one_never() {
    let layers = [4, 2];
    let s = scenario(&Shape {
        nodes: 6,
        layers: &layers,
        egress_mbit: 200,
        node_mbit: 1000,
        latency_ms: 2,
        target: "kind = \"distribution-proxy\"",
        extra: "[arrival]\nmode = \"waves\"\n[[arrival.waves]]\nat = \"0s\"\npods_per_node = 1\n[[arrival.waves]]\nat = \"30s\"\npods_per_node = 1\nnew_nodes = 4",
    });
    let r = model(&s, &profile(1, "1ms"));
    let gets = &r.series[0].registry[&0].blob_gets;
    assert_eq!(gets.len(), 3, "{gets:?}");
    // 6 cold nodes each miss and go upstream; the 4 nodes of the later wave hit the store.
    assert!(gets.values().all(|n| *n == 6), "{gets:?}");
}

#[test]
fn a_ctr_pull_pays_the_profiles_ctr_overhead_and_unpack_rate() {
    let base = |puller: &str, unpack: bool| {
        let text = format!(
            "name = \"ctr\"\nnodes = 3\npods_per_node = 1\n[[variants]]\nname = \"app\"\n[variants.synthetic]\ncompression = \"gzip\"\n[[variants.synthetic.layers]]\nsize = \"8MiB\"\nfiles = 16\n[[targets]]\nkind = \"direct\"\n[registry]\negress = \"10Gbit\"\n[runtime]\npuller = \"{puller}\"\nunpack = {unpack}\n[readiness]\nprobe_period = \"1ms\"\n"
        );
        Scenario::parse(&text, "ctr.toml", &[]).unwrap()
    };
    let plain = profile(1, "0s");
    let mut with_ctr = plain.clone();
    with_ctr.ctr = Some(
        Profile::parse(
            &format!(
                "{}\n[ctr]\npull_overhead = \"700ms\"\nstream_rate = \"3000MB/s\"\nunpack = \"20MB/s\"\n",
                toml::to_string(&plain).unwrap()
            ),
            Path::new("ctr.toml"),
        )
        .unwrap()
        .ctr
        .unwrap(),
    );
    // Without unpacking: the pull is the harness client's plus exactly the overhead.
    let harness = model(&base("harness", false), &with_ctr);
    let ctr = model(&base("ctr", false), &with_ctr);
    let extra = pull(&ctr, 0.5) - pull(&harness, 0.5);
    assert!((extra - 0.7).abs() < 0.01, "ctr pull {extra} s longer");
    assert!(harness.warnings.iter().all(|w| !w.contains("[ctr]")));
    // Unpacking at containerd's 20 MB/s: 8 MiB of content takes about 0.4 s, far above the
    // harness's rates (300 and 500 MB/s).
    let unpack = |r: &RunResult| {
        let h = r.series[0].data.merged(Phase::Unpack);
        Duration::from_micros(h.value_at_quantile(0.5)).as_secs_f64()
    };
    let ctr = model(&base("ctr", true), &with_ctr);
    let harness = model(&base("harness", true), &with_ctr);
    assert!(unpack(&ctr) > 0.3, "ctr unpack {}", unpack(&ctr));
    assert!(
        unpack(&harness) < 0.1,
        "harness unpack {}",
        unpack(&harness)
    );
    // A profile without [ctr] models ctr with the harness's costs and says so.
    let r = model(&base("ctr", false), &plain);
    assert!(
        r.warnings.iter().any(|w| w.contains("no [ctr] costs")),
        "{:?}",
        r.warnings
    );
}

#[test]
fn with_namespace_nodes_a_shared_cache_serves_through_its_own_link() {
    let s = |namespaces: bool| {
        let network = if namespaces {
            "[network]\nnodes = \"namespaces\"\n"
        } else {
            ""
        };
        let text = format!(
            "name = \"shared\"\nnodes = 8\npods_per_node = 1\n[[variants]]\nname = \"app\"\n[variants.synthetic]\ncompression = \"gzip\"\n[[variants.synthetic.layers]]\nsize = \"8MiB\"\nfiles = 16\ncompressibility = 0.0\n[[targets]]\nkind = \"cache-daemon\"\nplacement = \"shared\"\n{network}[registry]\nnetns_rate = \"1Gbit\"\nnode_link = \"100Mbit\"\n[runtime]\nunpack = false\n[readiness]\nprobe_period = \"1ms\"\n"
        );
        Scenario::parse(&text, "shared.toml", &[]).unwrap()
    };
    let p = profile(1, "0s");
    let tasks = model(&s(false), &p);
    let ns = model(&s(true), &p);
    // As tasks every node has its own 100 Mbit/s: about one copy's time (0.7 s). In namespaces
    // the cache's own 100 Mbit/s link carries all eight copies: about 8 x 8 MiB / 12.5 MB/s.
    let one = 8.0 * 1_048_576.0 / 12.5e6;
    assert!(pull(&tasks, 0.95) < 1.5 * one, "{}", pull(&tasks, 0.95));
    assert!(pull(&ns, 0.95) > 7.0 * one, "{}", pull(&ns, 0.95));
}
