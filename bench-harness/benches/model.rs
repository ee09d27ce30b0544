//! Speed of the fleet model (`bench-harness model`): wall time and peak memory to model bursts of
//! 500 and 5,000 nodes pulling a 4-layer image, for each target kind, with the arrival shapes
//! that keep nodes in lockstep (a burst) and that do not (a ramp: every node its own group, the
//! worst case for the flow classes). Goals from the issue: 5,000 nodes x 4 layers in under 30 s,
//! 500 nodes in under 2 s, memory bounded.
//!
//! Peak RSS is this process's `VmHWM`, reset before each case by writing `5` to
//! `/proc/self/clear_refs`, so each line shows that case's own peak.
//!
//! Run: `cargo bench -p bench-harness --bench model`. Knob: `MODEL_BENCH_REPS` (3; the median
//! is printed).

use std::path::Path;
use std::time::{Duration, Instant};

use bench_harness::model::{self, Inputs, Profile};
use bench_harness::scenario::Scenario;

const TARGETS: [&str; 5] = [
    "kind = \"direct\"",
    "kind = \"cache-daemon\"\nplacement = \"per-node\"",
    "kind = \"cache-daemon\"\nplacement = \"shared\"",
    "kind = \"nginx\"",
    "kind = \"cache-daemon\"\nplacement = \"cluster\"",
];

fn scenario(nodes: u32, arrival: &str) -> Scenario {
    let targets: String = TARGETS
        .iter()
        .enumerate()
        .map(|(i, t)| format!("[[targets]]\nname = \"t{i}\"\n{t}\n"))
        .collect();
    let text = format!(
        "name = \"model-bench\"\nnodes = {nodes}\npods_per_node = 1\n{arrival}\n[[variants]]\nname = \"app\"\n[variants.synthetic]\ncompression = \"gzip\"\n[[variants.synthetic.layers]]\nsize = \"400MB\"\nfiles = 400\n[[variants.synthetic.layers]]\nsize = \"200MB\"\nfiles = 200\n[[variants.synthetic.layers]]\nsize = \"100MB\"\nfiles = 100\n[[variants.synthetic.layers]]\nsize = \"20MB\"\nfiles = 20\n{targets}[registry]\negress = \"10Gbit\"\nnode_link = \"10Gbit\"\nlatency = \"20ms\"\n[registry.throttle]\nrequests_per_second = 500\nburst = 1000\nretry_after = \"1s\"\n"
    );
    Scenario::parse(&text, "model-bench.toml", &[]).expect("bench scenario")
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let reps: usize = std::env::var("MODEL_BENCH_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let profile_path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/profiles/fleet-node.toml");
    let profile = Profile::load(&profile_path).expect("fleet-node profile");
    println!("fleet model speed, {reps} repetitions, median; 4 layers, 5 targets per case");
    println!("| nodes | arrival | wall (all 5 targets) | events | peak RSS |");
    println!("| --: | --- | --: | --: | --: |");
    for (nodes, arrival) in [
        (500, "[arrival]\nmode = \"burst\""),
        (500, "[arrival]\nmode = \"ramp\"\nover = \"60s\""),
        (5000, "[arrival]\nmode = \"burst\""),
        (5000, "[arrival]\nmode = \"ramp\"\nover = \"60s\""),
    ] {
        let s = scenario(nodes, arrival);
        let _ = std::fs::write("/proc/self/clear_refs", "5");
        let mut times = Vec::new();
        let mut events = 0;
        for _ in 0..reps {
            let started = Instant::now();
            let r = model::run(
                &s,
                &Inputs {
                    profile: &profile,
                    profile_path: None,
                    measured_images: None,
                    workspace: Path::new("."),
                },
            )
            .expect("model runs");
            times.push(started.elapsed());
            events = r.model.as_ref().map_or(0, |m| m.events);
        }
        times.sort();
        let median: Duration = times[times.len() / 2];
        println!(
            "| {nodes} | {} | {:.2} s | {events} | {:.1} MiB |",
            s.arrival,
            median.as_secs_f64(),
            peak_rss_kib() as f64 / 1024.0
        );
    }
}
