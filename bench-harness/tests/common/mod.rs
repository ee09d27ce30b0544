//! Shared test helpers: paths into the workspace, a deterministic [`RunResult`] built from fixed
//! samples (no clock, no machine facts, no randomness) for the schema and golden tests,
//! synthetic runs with a chosen difference for the comparison tests, and headless Chromium
//! ([`chromium`]) for the HTML report tests, and a guard for the processes tests start ([`child`]). Crafted OCI layouts live in `layout.rs`, real
//! registries and image tools in `real.rs`.

pub mod child;
pub mod chromium;
pub mod layout;
pub mod real;

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use bench_harness::recorder::{
    BlobFirstByte, FailureKind, LayerTimes, PodTimes, PullTimes, Recorder, Recordings, RunKey,
};
use bench_harness::result::{ImageFacts, RegistryTotals, RunFacts, RunResult};
use bench_harness::scenario::Scenario;
use stampede_lab::Machine;

/// The crate directory (`bench-harness/`).
pub fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The workspace's `scenarios/` directory.
pub fn scenarios_dir() -> PathBuf {
    crate_dir().join("../scenarios")
}

/// A scenario like the quickstart, with every SLO kind, pinned to one platform so the output
/// does not depend on the host.
pub const SAMPLE_SCENARIO: &str = r#"
name = "sample"
description = "Deterministic sample for the schema and golden tests"
nodes = 4
pods_per_node = 2
repetitions = 2
seed = 7
platform = "linux/amd64"

[[variants]]
name = "full"
[variants.synthetic]
[[variants.synthetic.layers]]
size = "32MiB"
files = 64

[[variants]]
name = "slim"
[variants.synthetic]
compression = "zstd"
level = 3
[[variants.synthetic.layers]]
size = "8MiB"
files = 16

[[targets]]
kind = "direct"

[[targets]]
kind = "cache-daemon"

[registry]
egress = "400Mbit"
node_link = "1Gbit"
latency = "5ms"

[readiness]
read_fraction = 0.1
init = "200ms"
probe_period = "500ms"

[slo]
p95_ready = "3s"
p99_pull = "2500ms"
max_registry_egress = "150MB"
"#;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A registry accounting snapshot with only its time series: `bytes` spread over 100 ms
/// buckets as a ramp up and down (longer for later repetitions), `requests` in the first ones.
fn traffic_snapshot(bytes: u64, requests: u64, rep: u32) -> serde_json::Value {
    let weights: Vec<u64> = match rep {
        0 => vec![1, 3, 4, 4, 4, 3, 1],
        _ => vec![1, 2, 3, 3, 3, 3, 2, 1],
    };
    let sum: u64 = weights.iter().sum();
    let mut bytes_out: Vec<u64> = weights.iter().map(|w| bytes * w / sum).collect();
    let given: u64 = bytes_out.iter().sum();
    *bytes_out.last_mut().expect("buckets") += bytes - given;
    let mut per_bucket = vec![0u64; bytes_out.len()];
    per_bucket[0] = requests / 2;
    per_bucket[1] = requests - requests / 2;
    serde_json::json!({
        "series": {
            "bucket_ms": 100,
            "bytes_out": bytes_out,
            "requests": per_bucket,
            "throttled": vec![0u64; bytes_out.len()],
        }
    })
}

/// A fixed result: 2 variants x 2 targets x 2 repetitions of 8 pods, with timings from a
/// formula, one timeout in full/direct repetition 1, registry totals and image facts filled in,
/// SLOs evaluated.
pub fn sample_result() -> RunResult {
    let scenario = Scenario::parse(SAMPLE_SCENARIO, "sample.toml", &[]).expect("sample scenario");
    let recordings = sample_recordings();
    let mut result = RunResult::new(
        RunFacts {
            scenario,
            started_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_323_045),
            duration: ms(41_250),
            machine: Machine {
                cores: 2,
                cpu_model: Some("Example CPU @ 2.20GHz".into()),
                memory_bytes: Some(8 << 30),
                os: "linux".into(),
                arch: "x86_64".into(),
                kernel: Some("6.1.0-test".into()),
                git_revision: Some("0123456789abcdef0123456789abcdef01234567".into()),
                git_dirty: Some(false),
                sha_ni: Some(true),
                load_average: Some("0.52 0.61 0.40".into()),
            },
            warnings: vec!["host-bound: CPU above 90 % for 12 s of the run".into()],
        },
        recordings,
    );
    add_sample_registry(&mut result);
    result.registry = Some(serde_json::json!({ "note": "whole-run snapshot goes here" }));
    result.evaluate_slo();
    result
}

/// [`sample_result`]'s pods, layers and blob first bytes, from formulas.
fn sample_recordings() -> Recordings {
    let mut recordings = Recordings::new();
    let variants = [("full", 1_000u64), ("slim", 300)];
    let targets = [("direct", 1u64), ("cache-daemon", 2)];
    for (variant, pull_ms) in variants {
        for (target, slowdown) in targets {
            for rep in 0..2u32 {
                // Two workers per run, each with its own recorder, merged afterwards.
                for worker in 0..2u64 {
                    let mut rec = Recorder::new(RunKey {
                        variant: variant.into(),
                        target: target.into(),
                        repetition: rep,
                    });
                    let mut blobs: Vec<BlobFirstByte> = Vec::new();
                    for pod in (worker * 4)..(worker * 4 + 4) {
                        if variant == "full" && target == "direct" && rep == 1 && pod == 7 {
                            rec.failed(FailureKind::Timeout);
                            continue;
                        }
                        let node = pod % 4;
                        let started_pull = ms(3 * node + u64::from(rep));
                        let fetched =
                            started_pull + ms(pull_ms * slowdown / 2 + 97 * node + 13 * pod);
                        let unpacked = fetched + ms(pull_ms / 5 + 7 * pod);
                        let started = unpacked + ms(20);
                        let ready = started + ms(500 + 500 * ((pod + u64::from(rep)) % 2));
                        rec.pod(&PodTimes {
                            scheduled: Duration::ZERO,
                            pull: (pod < 4).then_some(PullTimes::one(
                                started_pull,
                                Some(started_pull + ms(8 + node)),
                                fetched,
                                unpacked,
                            )),
                            started,
                            ready,
                            wave: 0,
                        });
                        if pod < 4 {
                            let lag = if target == "direct" { 1 } else { 5 };
                            blobs.extend((0..3u8).map(|b| BlobFirstByte {
                                digest: stampede_oci::Digest::of(&[b]),
                                requested: started_pull + ms(u64::from(b)),
                                first_byte: started_pull + ms(u64::from(b) + 2 + lag * node),
                            }));
                            for layer in 0..2 {
                                rec.layer(
                                    variant,
                                    layer as usize,
                                    &LayerTimes {
                                        fetch: ms(pull_ms * slowdown / 4 + 11 * layer + pod),
                                        verify: Duration::from_micros(300 + 50 * layer),
                                        decompress: ms(40 + 3 * pod),
                                        apply: ms(25 + layer),
                                    },
                                );
                            }
                        }
                    }
                    rec.wave_blobs(0, Duration::ZERO, &blobs);
                    recordings.add(rec);
                }
            }
        }
    }
    recordings
}

/// [`sample_result`]'s image sizes and registry totals per repetition.
fn add_sample_registry(result: &mut RunResult) {
    for (variant, image_bytes) in [("full", 33_554_432u64 / 2), ("slim", 4_194_304)] {
        result.images.insert(
            variant.into(),
            ImageFacts {
                compressed_bytes: image_bytes,
                details: serde_json::json!({ "layers": 1 }),
            },
        );
        for (target, fetches) in [("direct", 4u64), ("cache-daemon", 4)] {
            let series = result.series_mut(variant, target).expect("series");
            for rep in 0..2 {
                let blob_gets = [
                    ("sha256:aaaa".to_owned(), fetches),
                    ("sha256:bbbb".to_owned(), fetches - u64::from(rep)),
                ];
                let bytes_out = image_bytes * fetches + 1_000 * u64::from(rep);
                series.registry.insert(
                    rep,
                    RegistryTotals {
                        bytes_out,
                        requests: [("blob".to_owned(), 2 * fetches), ("manifest".to_owned(), 8)]
                            .into(),
                        blob_gets: blob_gets.into(),
                        snapshot: Some(traffic_snapshot(bytes_out, 2 * fetches + 8, rep)),
                        link_bytes: Some(bytes_out + bytes_out / 20),
                        ..Default::default()
                    },
                );
            }
        }
    }
}

/// How a [`synthetic_run`] series behaves.
#[derive(Debug, Clone, Copy)]
pub struct SyntheticSeries {
    /// Variant name.
    pub variant: &'static str,
    /// Median end-to-end time of a pod, before noise.
    pub end_to_end_ms: u64,
    /// Registry egress per repetition, before noise.
    pub egress_bytes: u64,
}

/// A run of `repetitions` x 8 pods per series on one `direct` target, with timings from
/// `series` plus a few percent of deterministic noise from `seed` (an LCG: no clock, no
/// randomness between test runs). Phases scale with `end_to_end_ms`; registry totals carry
/// egress with noise. For the comparison tests: a known difference between series or runs.
pub fn synthetic_run(series: &[SyntheticSeries], repetitions: u32, seed: u64) -> RunResult {
    let variants: String = series
        .iter()
        .map(|s| {
            format!(
                "[[variants]]\nname = \"{}\"\n[[variants.synthetic.layers]]\nsize = \"1MiB\"\nfiles = 4\n",
                s.variant
            )
        })
        .collect();
    let text = format!(
        "name = \"synthetic\"\nnodes = 4\npods_per_node = 2\nrepetitions = {repetitions}\nseed = {seed}\nplatform = \"linux/amd64\"\n{variants}[[targets]]\nkind = \"direct\"\n"
    );
    let scenario = Scenario::parse(&text, "synthetic.toml", &[]).expect("synthetic scenario");
    let mut state = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    let mut noise = move || {
        // +-4 % around 1.
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        0.96 + ((state >> 33) % 8_001) as f64 / 100_000.0
    };
    let mut recordings = Recordings::new();
    let mut egress = Vec::new();
    for s in series {
        for rep in 0..repetitions {
            let mut rec = Recorder::new(RunKey {
                variant: s.variant.into(),
                target: "direct".into(),
                repetition: rep,
            });
            let rep_factor = noise();
            for pod in 0..8u64 {
                let e2e = s.end_to_end_ms as f64 * rep_factor * (0.9 + 0.025 * pod as f64);
                let pull = Duration::from_micros((e2e * 600.0) as u64);
                let unpack = Duration::from_micros((e2e * 200.0) as u64);
                let started = pull + unpack;
                rec.pod(&PodTimes {
                    scheduled: Duration::ZERO,
                    pull: Some(PullTimes::one(Duration::ZERO, Some(ms(5)), pull, started)),
                    started,
                    ready: Duration::from_micros((e2e * 1_000.0) as u64),
                    wave: 0,
                });
            }
            recordings.add(rec);
            egress.push((s.variant, rep, (s.egress_bytes as f64 * noise()) as u64));
        }
    }
    let mut result = RunResult::new(
        RunFacts {
            scenario,
            started_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_323_045),
            duration: ms(60_000),
            machine: Machine {
                cores: 2,
                os: "linux".into(),
                arch: "x86_64".into(),
                ..Machine::default()
            },
            warnings: vec![],
        },
        recordings,
    );
    for (variant, rep, bytes_out) in egress {
        let s = result.series_mut(variant, "direct").expect("series");
        s.registry.insert(
            rep,
            RegistryTotals {
                bytes_out,
                ..Default::default()
            },
        );
    }
    result.evaluate_slo();
    result
}
