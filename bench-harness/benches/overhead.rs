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
//! Then, as root with iproute2 and the `cache-daemon` binary, nodes as network namespaces
//! (`[network] nodes = "namespaces"`, unshaped links): `OVERHEAD_NS_NODES` nodes (24) pull four
//! layers of `OVERHEAD_NS_LAYER_MIB` (4) direct, through a cache-daemon per node and through
//! cache-daemon cluster mode, `OVERHEAD_NS_REPS` (2) repetitions in one run. The table gives,
//! per target, the harness's own CPU seconds per GB the nodes downloaded (its clients run inside
//! the nodes; it embeds the registry) beside the cache processes' (each a real process), from
//! the run's own accounting (`result.json`'s `cpu` and `cache_processes`, medians over
//! repetitions). `OVERHEAD_NS_NODES=0` skips it.
//!
//! Run: `cargo bench -p bench-harness --bench overhead`. Knobs: `OVERHEAD_NODES` (4),
//! `OVERHEAD_LAYER_MIB` (64, four layers), `OVERHEAD_REPS` (3).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use bench_harness::image::generate::generate;
use bench_harness::registry::{EmbeddedRegistry, RegistryModel};
use bench_harness::result::{RegistryTotals, RunResult};
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

fn options(work: &Path) -> RunOptions {
    RunOptions {
        logs_dir: work.join("out").join(LOGS_DIR),
        image_cache: work.join("images"),
        work_root: work.join("bursts"),
        workspace: work.to_owned(),
        progress: false,
    }
}

async fn harness(scenario: Scenario, work: &Path) -> (f64, f64, f64) {
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    let result = run(scenario, options(work)).await.expect("harness run");
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

/// The namespace scenario: `nodes` nodes in namespaces, unshaped, three targets.
fn namespace_text(nodes: u64, layer_mib: u64, reps: u64) -> String {
    let layers = (0..4)
        .map(|_| format!("[[variants.synthetic.layers]]\nsize = \"{layer_mib}MiB\"\nfiles = 64\nfile_sizes = \"lognormal\"\ncompressibility = 0.0\n"))
        .collect::<String>();
    format!(
        "name = \"overhead-namespaces\"\nnodes = {nodes}\npods_per_node = 1\nrepetitions = {reps}\nseed = 12\nplatform = \"linux/amd64\"\n\
         [[variants]]\nname = \"app\"\n[variants.synthetic]\n{layers}\n\
         [[targets]]\nkind = \"direct\"\n\
         [[targets]]\nname = \"cache-daemon-per-node\"\nkind = \"cache-daemon\"\nplacement = \"per-node\"\n\
         [[targets]]\nname = \"cache-daemon-cluster\"\nkind = \"cache-daemon\"\nplacement = \"cluster\"\n\
         [network]\nnodes = \"namespaces\"\n[runtime]\nunpack = false\n[readiness]\nprobe_period = \"100ms\"\n"
    )
}

/// One repetition's CPU seconds per GB the nodes downloaded: (harness, caches, host busy);
/// caches are NaN for a target without cache processes (printed as `-`).
fn per_gb(t: &RegistryTotals) -> Option<(f64, f64, f64)> {
    let gb = t
        .wire
        .as_ref()?
        .nodes
        .iter()
        .map(|n| n.download_bytes)
        .sum::<u64>() as f64
        / 1e9;
    let cpu = t.cpu?;
    let caches: f64 = if t.cache_processes.is_empty() {
        f64::NAN
    } else {
        t.cache_processes.iter().map(|p| p.cpu_seconds).sum()
    };
    (gb > 0.0).then(|| (cpu.harness_cpu_seconds / gb, caches / gb, cpu.host_busy))
}

/// Nodes as namespaces: the harness's CPU per GB beside the caches' (see the module doc).
fn namespaces(rt: &tokio::runtime::Runtime, work: &Path) {
    let nodes = env_num("OVERHEAD_NS_NODES", 24);
    if nodes == 0 || !stampede_lab::is_root() {
        println!("\n(nodes as namespaces skipped: OVERHEAD_NS_NODES=0 or not root)");
        return;
    }
    let layer_mib = env_num("OVERHEAD_NS_LAYER_MIB", 4);
    let reps = env_num("OVERHEAD_NS_REPS", 2);
    let text = namespace_text(nodes, layer_mib, reps);
    let scenario = Scenario::parse(&text, "overhead-namespaces.toml", &[]).unwrap();
    let result: RunResult = rt
        .block_on(run(scenario, options(&work.join("namespaces"))))
        .expect("namespace run");
    println!(
        "\n{nodes} nodes as network namespaces (unshaped links), 4 layers of {layer_mib} MiB, \
         {reps} repetitions, medians; CPU seconds per GB the nodes downloaded\n"
    );
    println!("| target | GB downloaded | harness CPU s per GB | cache processes' CPU s per GB | host busy |");
    println!("|---|--:|--:|--:|--:|");
    for s in &result.series {
        assert_eq!(s.data.failed_pods(), 0, "{}: pulls failed", s.target);
        let rows: Vec<_> = s.registry.values().filter_map(per_gb).collect();
        let gb = s
            .registry
            .values()
            .filter_map(|t| t.wire.as_ref())
            .map(|w| w.nodes.iter().map(|n| n.download_bytes).sum::<u64>() as f64 / 1e9)
            .collect::<Vec<_>>();
        let col = |f: fn(&(f64, f64, f64)) -> f64| median(&rows.iter().map(f).collect::<Vec<_>>());
        let caches = col(|r| r.1);
        let caches = if caches.is_nan() {
            "-".to_owned()
        } else {
            format!("{caches:.2}")
        };
        println!(
            "| {} | {:.2} | {:.2} | {caches} | {:.0} % |",
            s.target,
            median(&gb),
            col(|r| r.0),
            col(|r| r.2) * 100.0
        );
    }
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
    namespaces(&rt, work.path());
}
