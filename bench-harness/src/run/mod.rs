//! A whole scenario run: check that every peer and real client the scenario names is installed
//! (a missing peer is skipped with a message naming its package), make the nodes' namespaces
//! when nodes are namespaces, make the variants' images ready (`image::variant`), start the
//! embedded registry (`registry::origin`), then for every repetition, variant and target run one
//! burst, and hand back the [`RunResult`]; `main` writes the result and reports. Only the peers'
//! logs, which live as long as a burst, are kept as the bursts end.
//!
//! Bursts are interleaved (repetition-major: rep 0 of every variant and target, then rep 1, ...)
//! so slow drift of a shared machine spreads over all series instead of biasing one. Each burst
//! starts from nothing: fresh node content stores and snapshots, fresh cache-daemon stores,
//! registry accounting reset at the burst epoch.
//!
//! # One burst
//! `burst.rs` runs `deploy.rs` (the target and the nodes, before the epoch), `pod.rs` (each pod
//! of the schedule a task from its offset to ready) and `record.rs` (the pods' milestones into
//! the burst's [`Recorder`](recorder::Recorder)), with the burst's meters around the pods; a
//! `kubernetes` target's burst (`kube.rs`) runs on its cluster instead. Measurements live in
//! [`recorder`] (histograms per phase) and [`host`] (the host's CPU); `progress.rs` draws the
//! progress bar.

mod burst;
mod deploy;
pub mod host;
mod kube;
mod pod;
mod progress;
mod record;
pub mod recorder;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Instant, SystemTime};

use stampede_oci::{Reference, RepoName};

use crate::image::variant::{prepare_all, PullFrom, VariantImage, VariantImageError};
use crate::nodes::node::ImageName;
use crate::nodes::real_puller::{RealPuller, RealPullerError};
use crate::nodes::{NodeNet, NodeNetError};
use crate::registry::accounting::AccountingSnapshot;
use crate::registry::origin::{Origin, OriginError};
use crate::registry::RegistryError;
use crate::result::{BurstCpu, RegistryTotals, RunFacts, RunResult};
use crate::run::burst::{Burst, BurstOutput, Stage};
use crate::run::host::{CpuUse, HostBound};
use crate::run::progress::Progress;
use crate::run::recorder::{Recordings, RunKey};
use crate::scenario::{PullerKind, Scenario, TargetKind, Variant};
use crate::target::peer::PeerKind;
use crate::target::TargetError;
use stampede_lab::Machine;

/// How many distinct failure messages a run keeps as samples for the report.
const ERROR_SAMPLES: usize = 10;
/// Tag under which every variant is served.
pub const TAG: &str = "latest";
/// Where peers' logs go inside the run directory.
pub const LOGS_DIR: &str = "logs";

/// What a run needs besides the scenario.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Where peers' logs are kept (the run directory's [`LOGS_DIR`]).
    pub logs_dir: PathBuf,
    /// Where generated images are cached between runs.
    pub image_cache: PathBuf,
    /// Where node directories and daemon stores live during bursts.
    pub work_root: PathBuf,
    /// The workspace, for its git revision in the machine facts.
    pub workspace: PathBuf,
    /// Show a progress bar on stderr.
    pub progress: bool,
}

/// Why a run could not complete. Failed pulls are not errors: they are counted in the result.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A variant's image could not be made ready (generated, imported, mirrored or resolved).
    #[error("prepare image for variant {variant}")]
    Image {
        variant: String,
        #[source]
        source: VariantImageError,
    },
    #[error("embedded registry")]
    Registry(#[source] RegistryError),
    /// The nodes' network namespaces could not be made.
    #[error(transparent)]
    Nodes(#[from] NodeNetError),
    /// The registry could not be started where the scenario puts it.
    #[error(transparent)]
    Origin(#[from] OriginError),
    /// The real client the scenario names is not installed (the message names the package).
    #[error("runtime.puller = \"{puller}\"")]
    PullerMissing {
        puller: &'static str,
        #[source]
        source: stampede_lab::LabError,
    },
    /// A node's real client could not be set up.
    #[error(transparent)]
    RealPuller(#[from] RealPullerError),
    /// A target could not be set up.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// A kubernetes target's burst could not run on its cluster (its pods were deleted).
    #[error("target {target}")]
    Kubernetes {
        target: String,
        /// The cluster's reason (boxed: it is large, and this error is rare).
        #[source]
        source: Box<crate::kubernetes::KubeTargetError>,
    },
    /// A local file operation failed.
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("registry client")]
    Client(#[source] stampede_oci::ClientError),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> RunError {
    let what = what.into();
    move |source| RunError::Io { what, source }
}

/// A blocking task that did not finish (it panicked or was cancelled), as an I/O error saying
/// what it was doing.
fn joined(what: &str) -> impl FnOnce(tokio::task::JoinError) -> RunError + '_ {
    move |e| RunError::Io {
        what: what.to_owned(),
        source: std::io::Error::other(e),
    }
}

/// The repository a variant is served under.
pub fn variant_repo(variant: &Variant) -> String {
    format!("stampede/{}", variant.name)
}

/// Runs `scenario` to the end and returns its result, SLOs evaluated; writing it is the
/// caller's.
///
/// # Errors
/// [`RunError`] when the run itself cannot proceed (not when pulls fail: those are data).
pub async fn run(scenario: Scenario, options: RunOptions) -> Result<RunResult, RunError> {
    let started_at = SystemTime::now();
    let started = Instant::now();
    RealPuller::check(scenario.runtime.puller).map_err(|source| RunError::PullerMissing {
        puller: scenario.runtime.puller.name(),
        source,
    })?;
    kube::check_kubeconfigs(&scenario).map_err(|e| *e)?;
    let skipped = missing_peers(&scenario);
    let mut warnings = setup_warnings(&scenario, &skipped);
    // Before the images: a run that cannot make its nodes stops at once.
    let net = node_net(&scenario).await?;
    let images = prepare_all(&scenario, &options.image_cache)
        .await
        .map_err(|(variant, source)| RunError::Image { variant, source })?;
    let nodes = scenario.total_nodes();
    let origin = Origin::start(
        &scenario.registry,
        nodes as usize,
        net.as_ref().map(NodeNet::registry),
    )
    .await?;
    let registry = origin.registry();
    for (variant, image) in scenario.variants.iter().zip(&images) {
        warnings.extend(image.warnings.iter().cloned());
        if let PullFrom::Embedded(layout) = &image.pull {
            registry
                .add_image(&variant_repo(variant), TAG, layout)
                .map_err(RunError::Registry)?;
        }
    }
    tracing::info!(registry = %registry.url(), nodes, "embedded registry serving");

    let bursts = Bursts {
        scenario: &scenario,
        images: &images,
        skipped: &skipped,
        origin: &origin,
        net: net.as_ref(),
    };
    let gathered = bursts.run(&options).await?;
    let link = net
        .as_ref()
        .map_or_else(|| origin.link_facts(), NodeNet::facts);
    origin.shutdown().await;
    if let Some(net) = net {
        // Deleting namespaces runs `ip`: blocking work, off the runtime's threads.
        tokio::task::spawn_blocking(move || drop(net)).await.ok();
    }
    warnings.extend(gathered.warnings.iter().cloned());
    warnings.extend(
        gathered
            .errors
            .iter()
            .map(|e| format!("pull error sample: {e}")),
    );

    let workspace = options.workspace.clone();
    let machine = tokio::task::spawn_blocking(move || Machine::collect(&workspace))
        .await
        .map_err(joined("collect machine facts"))?;
    let facts = RunFacts {
        scenario: scenario.clone(),
        started_at,
        duration: started.elapsed(),
        machine,
        warnings,
    };
    let mut result = gathered.into_result(facts);
    describe_images(&mut result, &scenario, images, link);
    result.evaluate_slo();
    Ok(result)
}

/// The warnings a run knows before it starts: skipped targets, node links a real client's pulls
/// escape, and cache-daemons that run inside the harness's process.
fn setup_warnings(
    scenario: &Scenario,
    skipped: &BTreeMap<String, stampede_lab::LabError>,
) -> Vec<String> {
    let mut warnings = Vec::new();
    for (target, why) in skipped {
        tracing::warn!(%target, "target skipped: {why:#}");
        warnings.push(format!("target {target} not run: {why}"));
    }
    if scenario.runtime.puller != PullerKind::Harness
        && scenario.registry.node_link.is_some()
        && !scenario.network.namespaces()
    {
        warnings.push(format!(
            "puller = \"{}\": node_link is applied by the registry's per-node listeners (direct, per-node caches) but not to a real client's pulls from a shared target, which the harness cannot pace",
            scenario.runtime.puller.name()
        ));
    }
    if !scenario.network.namespaces() {
        for t in &scenario.targets {
            if matches!(t.kind, TargetKind::CacheDaemon { .. }) {
                warnings.push(format!(
                    "target {}: cache-daemon ran inside the harness's own process (the fallback for nodes as tasks), so its CPU is counted with the harness's; with [network] nodes = \"namespaces\" (root) it runs as the real binary, a process per node",
                    t.name
                ));
            }
        }
    }
    warnings
}

/// Every burst of a run: what they share.
struct Bursts<'a> {
    scenario: &'a Scenario,
    images: &'a [VariantImage],
    /// Targets not run, with why.
    skipped: &'a BTreeMap<String, stampede_lab::LabError>,
    origin: &'a Origin,
    net: Option<&'a NodeNet>,
}

impl Bursts<'_> {
    /// Runs every (repetition, variant, target) burst, repetition-major, each in a fresh work
    /// directory (kept only with `keep_snapshots`).
    async fn run(&self, options: &RunOptions) -> Result<Gathered, RunError> {
        let s = self.scenario;
        let bursts = u64::from(s.repetitions) * (s.variants.len() * s.targets.len()) as u64;
        let progress = Progress::new(options.progress, bursts * u64::from(s.total_pods()));
        let stage = Stage {
            scenario: s,
            origin: self.origin,
            net: self.net,
            logs: &options.logs_dir,
            progress: &progress,
        };
        let mut gathered = Gathered::default();
        std::fs::create_dir_all(&options.work_root)
            .map_err(io(format!("create {}", options.work_root.display())))?;
        for repetition in 0..s.repetitions {
            for (variant, image) in s.variants.iter().zip(self.images) {
                for target in s
                    .targets
                    .iter()
                    .filter(|t| !self.skipped.contains_key(&t.name))
                {
                    let work = tempfile::Builder::new()
                        .prefix(&format!(
                            "burst-{repetition}-{}-{}-",
                            variant.name, target.name
                        ))
                        .tempdir_in(&options.work_root)
                        .map_err(io("create burst directory"))?;
                    let burst = Burst {
                        stage: &stage,
                        variant,
                        image,
                        pod_images: pod_images(s, self.images, variant),
                        target,
                        repetition,
                        work: work.path(),
                    };
                    gathered.add(burst.run().await?);
                    if s.runtime.keep_snapshots {
                        let kept = work.keep();
                        tracing::info!(dir = %kept.display(), "kept burst directory");
                    }
                }
            }
        }
        progress.finish();
        Ok(gathered)
    }
}

/// What the bursts of a run handed back, gathered per (variant, target, repetition).
#[derive(Default)]
struct Gathered {
    recordings: Recordings,
    /// Per burst: what the registry served (bursts pulled from the embedded registry), the
    /// host's CPU, and the pull times kubelet reported (kubernetes targets).
    bursts: BTreeMap<RunKey, (Option<RegistryTotals>, CpuUse, Vec<std::time::Duration>)>,
    /// Up to [`ERROR_SAMPLES`] distinct failure messages.
    errors: Vec<String>,
    /// One per host-bound burst.
    warnings: Vec<String>,
}

impl Gathered {
    fn add(&mut self, out: BurstOutput) {
        let key = out.key;
        if out.cpu.host_bound() {
            let bound = HostBound {
                variant: key.variant.clone(),
                target: key.target.clone(),
                repetition: key.repetition,
                mean_busy: out.cpu.mean_busy,
            };
            self.warnings.push(bound.warning());
        }
        for e in out.errors {
            if self.errors.len() < ERROR_SAMPLES && !self.errors.contains(&e) {
                self.errors.push(e);
            }
        }
        let totals = out.registry.map(|snapshot| RegistryTotals {
            wire: out.wire,
            cache_processes: out.caches,
            cpu: Some(BurstCpu {
                host_busy: out.cpu.mean_busy,
                harness_cpu_seconds: out.cpu.own_cpu_seconds,
            }),
            ..registry_totals(&snapshot, out.link_bytes)
        });
        self.bursts
            .insert(key, (totals, out.cpu, out.kubelet_pulls));
        self.recordings.add(out.recorder);
    }

    /// The run's result: its facts, the recordings, and each burst's figures.
    fn into_result(self, facts: RunFacts) -> RunResult {
        let mut result = RunResult::new(facts, self.recordings);
        for (key, (totals, cpu, pulls)) in self.bursts {
            let Some(s) = result.series_mut(&key.variant, &key.target) else {
                continue;
            };
            if let Some(t) = totals {
                s.registry.insert(key.repetition, t);
            }
            s.cpu.insert(key.repetition, cpu);
            if !pulls.is_empty() {
                s.kubelet_pulls.insert(key.repetition, pulls);
            }
        }
        result
    }
}

/// Records each variant's image facts and the registry the nodes pulled from.
fn describe_images(
    result: &mut RunResult,
    scenario: &Scenario,
    images: Vec<VariantImage>,
    link: serde_json::Value,
) {
    let mut repositories = Vec::new();
    let mut remote = Vec::new();
    for (variant, image) in scenario.variants.iter().zip(images) {
        match &image.pull {
            PullFrom::Embedded(_) => repositories.push(format!("{}:{TAG}", variant_repo(variant))),
            PullFrom::Remote(r) => remote.push(r.reference.to_string()),
        }
        result.images.insert(variant.name.clone(), image.facts);
    }
    result.registry = Some(serde_json::json!({
        "kind": "embedded",
        "model": scenario.registry,
        "repositories": repositories,
        "remote_without_accounting": remote,
        "shaped_link": link,
    }));
}

/// The nodes' namespaces, for `[network] nodes = "namespaces"`.
async fn node_net(scenario: &Scenario) -> Result<Option<NodeNet>, RunError> {
    if !scenario.network.namespaces() {
        return Ok(None);
    }
    let s = scenario.clone();
    tokio::task::spawn_blocking(move || NodeNet::create(&s))
        .await
        .map_err(joined("create the nodes' namespaces"))?
        .map(Some)
        .map_err(RunError::Nodes)
}

/// Targets whose peer program is not installed, with why; the runner skips them.
fn missing_peers(scenario: &Scenario) -> BTreeMap<String, stampede_lab::LabError> {
    scenario
        .targets
        .iter()
        .filter_map(|t| {
            let why = PeerKind::of(&t.kind)?.check().err()?;
            Some((t.name.clone(), why))
        })
        .collect()
}

fn registry_totals(snap: &AccountingSnapshot, link_bytes: Option<u64>) -> RegistryTotals {
    let requests = match serde_json::to_value(&snap.requests) {
        Ok(serde_json::Value::Object(m)) => m
            .into_iter()
            .filter_map(|(k, v)| Some((k, v.as_u64()?)))
            .collect(),
        _ => BTreeMap::new(),
    };
    RegistryTotals {
        bytes_out: snap.bytes_out,
        requests,
        blob_gets: snap
            .blobs
            .iter()
            .map(|(d, c)| (d.to_string(), c.gets))
            .collect(),
        snapshot: serde_json::to_value(snap).ok(),
        link_bytes,
        ..RegistryTotals::default()
    }
}

/// Where nodes pull a variant's image from: its repository in the embedded registry, or the
/// real registry it names (`mirror = false`).
fn image_name(variant: &Variant, image: &VariantImage) -> ImageName {
    match &image.pull {
        PullFrom::Embedded(_) => ImageName {
            repo: RepoName::parse(&variant_repo(variant))
                .expect("variant names are valid repository components"),
            reference: Reference::Tag(TAG.to_owned()),
        },
        PullFrom::Remote(remote) => ImageName {
            repo: remote.reference.repo.clone(),
            reference: remote.reference.reference(),
        },
    }
}

/// Every image a pod of `variant` needs, in the order its node is asked for them: the variant's
/// own, then each sidecar's (validation made them all embedded when there are sidecars).
fn pod_images(scenario: &Scenario, images: &[VariantImage], variant: &Variant) -> Vec<ImageName> {
    let find = |name: &str| {
        scenario
            .variants
            .iter()
            .zip(images)
            .find(|(v, _)| v.name == name)
            .map(|(v, image)| image_name(v, image))
    };
    std::iter::once(variant.name.as_str())
        .chain(variant.sidecars.iter().map(String::as_str))
        .map(|name| find(name).expect("validation: sidecars name variants of the scenario"))
        .collect()
}
