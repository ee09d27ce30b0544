//! What the harness costs the machine it measures: CPU seconds and peak memory per GB pulled,
//! side by side in one run with `curl` fetching the same blobs from the same embedded registry.
//!
//! Three measurements, each repeated, in rotating order:
//! - `harness pull`: a burst of N nodes (one pod each, direct, unshaped registry, unpack off)
//!   through `bench_harness::run::run`, which includes the embedded registry serving it;
//! - `harness pull+unpack`: the same with unpack on (what a real scenario does);
//! - `curl`: the same blobs fetched by N concurrent `curl -o /dev/null` processes from an
//!   embedded registry in this process (so both sides include the registry's own cost).
//!
//! CPU is user + system time of this process and its waited-for children (`/proc/self/stat`),
//! per GB of blob bytes the registry sent. Peak RSS is this process's `VmHWM`, reset before each
//! measurement by writing `5` to `/proc/self/clear_refs`, so it is that measurement's own peak
//! (for `curl`, the registry's side only: curl's own memory is in other processes).
//!
//! Run: `cargo bench -p bench-harness --bench overhead`. Knobs: `OVERHEAD_NODES` (4),
//! `OVERHEAD_LAYER_MIB` (64, four layers), `OVERHEAD_REPS` (3).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use bench_harness::image::generate::generate;
use bench_harness::registry::{EmbeddedRegistry, RegistryModel};
use bench_harness::run::{run, RunOptions, LOGS_DIR};
use bench_harness::scenario::{ImageSource, Scenario};

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Seconds of CPU used by this process and its waited-for children (`stampede_lab`).
fn cpu_seconds() -> f64 {
    stampede_lab::process::cpu_times(std::process::id())
        .map_or(0.0, |t| (t.own + t.children).as_secs_f64())
}

fn vm_hwm_mib() -> f64 {
    stampede_lab::process::status_kib(std::process::id(), "VmHWM")
        .map_or(0.0, |kb| kb as f64 / 1024.0)
}

fn scenario_text(nodes: u64, layer_mib: u64, unpack: bool) -> String {
    let layers = (0..4)
        .map(|_| format!("[[variants.synthetic.layers]]\nsize = \"{layer_mib}MiB\"\nfiles = 256\nfile_sizes = \"lognormal\"\n"))
        .collect::<String>();
    format!(
        "name = \"overhead\"\nnodes = {nodes}\npods_per_node = 1\nrepetitions = 1\nseed = 11\nplatform = \"linux/amd64\"\n\
         [[variants]]\nname = \"big\"\n[variants.synthetic]\n{layers}\n[[targets]]\nkind = \"direct\"\n\
         [runtime]\nunpack = {unpack}\n"
    )
}

#[derive(Default)]
struct Samples {
    cpu_per_gb: Vec<f64>,
    wall_per_gb: Vec<f64>,
    gb: Vec<f64>,
    hwm_mib: f64,
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

async fn harness(scenario: Scenario, work: &Path) -> (f64, f64, f64) {
    let options = RunOptions {
        logs_dir: work.join("out").join(LOGS_DIR),
        image_cache: work.join("images"),
        work_root: work.join("bursts"),
        workspace: work.to_owned(),
        progress: false,
    };
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    let result = run(scenario, options).await.expect("harness run");
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let series = &result.series[0];
    assert_eq!(series.data.failed_pods(), 0, "pulls failed");
    let bytes = series.registry[&0].snapshot.as_ref().unwrap()["body_bytes"]["blobs"]
        .as_u64()
        .unwrap();
    (cpu, wall, bytes as f64 / 1e9)
}

async fn curl(scenario: &Scenario, nodes: u64, work: &Path) -> (f64, f64, f64) {
    let ImageSource::Synthetic(spec) = &scenario.variants[0].source else {
        unreachable!("the overhead scenario is synthetic")
    };
    let image = generate(spec, scenario.seed, &work.join("images")).expect("generate");
    let registry = EmbeddedRegistry::start(RegistryModel::default(), 0)
        .await
        .expect("registry");
    registry
        .add_image("stampede/big", "latest", &image)
        .expect("add image");
    let urls: Vec<String> = image
        .layers
        .iter()
        .map(|l| format!("{}/v2/stampede/big/blobs/{}", registry.url(), l.digest))
        .collect();
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    let children: Vec<_> = (0..nodes)
        .map(|_| {
            let mut c = Command::new("curl");
            c.args([
                "-sf",
                "--no-progress-meter",
                "--parallel",
                "--parallel-max",
                "3",
            ]);
            c.stderr(std::process::Stdio::null());
            for u in &urls {
                c.args(["-o", "/dev/null", u]);
            }
            c.spawn().expect("curl")
        })
        .collect();
    let children = tokio::task::spawn_blocking(move || {
        for mut ch in children {
            assert!(ch.wait().expect("wait curl").success(), "curl failed");
        }
    });
    children.await.unwrap();
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let bytes = registry.accounting().snapshot().body_bytes.blobs;
    registry.shutdown().await;
    (cpu, wall, bytes as f64 / 1e9)
}

fn main() {
    let nodes = env_num("OVERHEAD_NODES", 4);
    let layer_mib = env_num("OVERHEAD_LAYER_MIB", 64);
    let reps = env_num("OVERHEAD_REPS", 3);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    let pull = Scenario::parse(
        &scenario_text(nodes, layer_mib, false),
        "overhead.toml",
        &[],
    )
    .unwrap();
    let unpack =
        Scenario::parse(&scenario_text(nodes, layer_mib, true), "overhead.toml", &[]).unwrap();
    // Generate once outside the timed runs.
    rt.block_on(harness(pull.clone(), work.path()));
    let names = ["curl", "harness pull", "harness pull+unpack"];
    let mut samples: Vec<Samples> = (0..3).map(|_| Samples::default()).collect();
    for rep in 0..reps {
        for k in 0..3 {
            let which = (k + rep as usize) % 3;
            std::fs::write("/proc/self/clear_refs", "5").ok();
            let (cpu, wall, gb) = match which {
                0 => rt.block_on(curl(&pull, nodes, work.path())),
                1 => rt.block_on(harness(pull.clone(), work.path())),
                _ => rt.block_on(harness(unpack.clone(), work.path())),
            };
            let s = &mut samples[which];
            s.cpu_per_gb.push(cpu / gb);
            s.wall_per_gb.push(wall / gb);
            s.gb.push(gb);
            s.hwm_mib = s.hwm_mib.max(vm_hwm_mib());
            eprintln!(
                "rep {rep} {:>20}: {gb:.2} GB, cpu {cpu:.2} s, wall {wall:.2} s",
                names[which]
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    let machine = stampede_lab::Machine::collect(Path::new(env!("CARGO_MANIFEST_DIR")));
    println!(
        "machine: {} cores, {}, kernel {}",
        machine.cores,
        machine.cpu_model.as_deref().unwrap_or("unknown CPU"),
        machine.kernel.as_deref().unwrap_or("unknown")
    );
    println!("{nodes} nodes x 4 layers of {layer_mib} MiB content, {reps} repetitions, medians\n");
    println!("| measurement | GB pulled | CPU s per GB | wall s per GB | CPU vs curl | peak RSS (VmHWM) |");
    println!("|---|--:|--:|--:|--:|--:|");
    let base = median(&samples[0].cpu_per_gb);
    for (name, s) in names.iter().zip(&samples) {
        println!(
            "| {name} | {:.2} | {:.2} | {:.2} | {:.2}x | {:.0} MiB |",
            median(&s.gb),
            median(&s.cpu_per_gb),
            median(&s.wall_per_gb),
            median(&s.cpu_per_gb) / base,
            s.hwm_mib
        );
    }
}
