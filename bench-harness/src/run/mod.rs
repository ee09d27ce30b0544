//! A whole scenario run: make the variants' images ready (generate, import, mirror or resolve:
//! `variant_image.rs`), start the embedded registry (behind a kernel-shaped link when asked:
//! `origin.rs`), check that every peer and real client the scenario names is installed (a
//! missing peer is skipped with a message naming its package; the other targets still run),
//! then for every repetition, variant and target run one burst, and hand back the
//! [`RunResult`]. The runner writes no result or report: `main` writes `result.json`,
//! `report.md` and `report.html`. Only the peers' logs, which live as long as a burst, are kept
//! as the bursts end (`<logs_dir>/<target>-<variant>-rep<N>.*`).
//!
//! Bursts are interleaved (repetition-major: rep 0 of every variant and target, then rep 1, ...)
//! so slow drift of a shared machine spreads over all series instead of biasing one. Each burst
//! starts from nothing: fresh node content stores and snapshots, fresh cache-daemon stores,
//! registry accounting reset at the burst epoch.
//!
//! # One burst
//! Every pod of the schedule is a task that sleeps until its scheduled offset from the epoch,
//! asks its node for its images (the variant's, then its sidecars': `node.rs` shares one pull
//! per image and node and queues pulls as kubelet does), starts its container (`container.rs`), and hands back its milestones. The burst's
//! coordinator records them into the burst's [`Recorder`] once every pod is done.

pub mod host;
pub mod recorder;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures_util::future::join_all;

use stampede_oci::{ClientConfig, Reference, RegistryClient, RepoName};

use crate::image::variant::{prepare_all, PullFrom, VariantImage, VariantImageError};
use crate::nodes::container;
use crate::nodes::node::{ImageName, Node, NodeConfig, NodePuller};
use crate::nodes::pull::{Puller, PullerConfig};
use crate::nodes::real_puller::{RealPuller, RealPullerConfig, RealPullerError};
use crate::nodes::{CacheProcessFacts, NodeNet, NodeNetError, WireSampler, WireTotals};
use crate::registry::accounting::AccountingSnapshot;
use crate::registry::origin::{Origin, OriginError};
use crate::registry::shaping::ByteBucket;
use crate::registry::{EmbeddedRegistry, RegistryError};
use crate::result::{BurstCpu, RegistryTotals, RunFacts, RunResult};
use crate::run::host::{CpuSampler, CpuUse, HostBound};
use crate::run::recorder::{
    BlobFirstByte, FailureKind, PodTimes, PullTimes, Recorder, Recordings, RunKey,
};
use crate::scenario::{PodSlot, PullerKind, Scenario, Target, TargetKind, Variant};
use crate::target::peer::PeerKind;
use crate::target::{Deployment, TargetError, Upstream};
use stampede_lab::Machine;

/// Time the coordinator gives itself to spawn every pod before the epoch.
const EPOCH_LEAD: Duration = Duration::from_millis(200);
/// A pod not ready this long after its scheduled time counts as failed (`timeout`).
const POD_DEADLINE: Duration = Duration::from_secs(15 * 60);
/// How many distinct failure messages a run keeps as samples for the report.
const ERROR_SAMPLES: usize = 10;
/// Tag under which every variant is served.
pub const TAG: &str = "latest";
/// Where peers' logs go inside the run directory.
pub const LOGS_DIR: &str = "logs";
/// A peer's upstream traffic counts as finished once the registry has seen nothing new for this
/// long (distribution's proxy keeps filling its store after its clients are served).
const UPSTREAM_QUIET: Duration = Duration::from_secs(1);
/// Longest wait for a peer's upstream traffic to finish after the burst.
const UPSTREAM_QUIET_LIMIT: Duration = Duration::from_secs(60);

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
        /// The variant.
        variant: String,
        /// The cause.
        #[source]
        source: VariantImageError,
    },
    /// The embedded registry failed.
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
        /// The puller.
        puller: &'static str,
        /// What is missing.
        #[source]
        source: stampede_lab::LabError,
    },
    /// A node's real client could not be set up.
    #[error(transparent)]
    RealPuller(#[from] RealPullerError),
    /// A target could not be set up.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// A local file operation failed.
    #[error("{what}")]
    Io {
        /// What we were doing.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The client could not be built.
    #[error("registry client")]
    Client(#[source] stampede_oci::ClientError),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> RunError {
    let what = what.into();
    move |source| RunError::Io { what, source }
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
    let mut warnings = Vec::new();

    RealPuller::check(scenario.runtime.puller).map_err(|source| RunError::PullerMissing {
        puller: scenario.runtime.puller.name(),
        source,
    })?;
    let skipped = missing_peers(&scenario);
    for (target, why) in &skipped {
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

    let bursts =
        u64::from(scenario.repetitions) * (scenario.variants.len() * scenario.targets.len()) as u64;
    let progress = Progress::new(options.progress, bursts * u64::from(scenario.total_pods()));
    let mut recordings = Recordings::new();
    let mut totals: BTreeMap<(String, String, u32), RegistryTotals> = BTreeMap::new();
    let mut cpu: BTreeMap<(String, String, u32), CpuUse> = BTreeMap::new();
    let mut errors: Vec<String> = Vec::new();
    std::fs::create_dir_all(&options.work_root)
        .map_err(io(format!("create {}", options.work_root.display())))?;
    for rep in 0..scenario.repetitions {
        for (variant, image) in scenario.variants.iter().zip(&images) {
            for target in scenario
                .targets
                .iter()
                .filter(|t| !skipped.contains_key(&t.name))
            {
                let work = tempfile::Builder::new()
                    .prefix(&format!("burst-{rep}-{}-{}-", variant.name, target.name))
                    .tempdir_in(&options.work_root)
                    .map_err(io("create burst directory"))?;
                let burst = Burst {
                    scenario: &scenario,
                    variant,
                    image,
                    pod_images: pod_images(&scenario, &images, variant),
                    target,
                    repetition: rep,
                    origin: &origin,
                    net: net.as_ref(),
                    work: work.path(),
                    logs: &options.logs_dir,
                    progress: &progress,
                };
                let out = burst.run().await?;
                if out.cpu.host_bound() {
                    let bound = HostBound {
                        variant: variant.name.clone(),
                        target: target.name.clone(),
                        repetition: rep,
                        mean_busy: out.cpu.mean_busy,
                    };
                    warnings.push(bound.warning());
                }
                cpu.insert((variant.name.clone(), target.name.clone(), rep), out.cpu);
                for e in out.errors {
                    if errors.len() < ERROR_SAMPLES && !errors.contains(&e) {
                        errors.push(e);
                    }
                }
                if let Some(snapshot) = &out.registry {
                    let mut t = registry_totals(snapshot, out.link_bytes);
                    t.wire = out.wire;
                    t.cache_processes = out.caches;
                    t.cpu = Some(BurstCpu {
                        host_busy: out.cpu.mean_busy,
                        harness_cpu_seconds: out.cpu.own_cpu_seconds,
                    });
                    totals.insert((variant.name.clone(), target.name.clone(), rep), t);
                }
                recordings.add(out.recorder);
                if scenario.runtime.keep_snapshots {
                    let kept = work.keep();
                    tracing::info!(dir = %kept.display(), "kept burst directory");
                }
            }
        }
    }
    progress.finish();
    let link = match &net {
        Some(net) => net.facts(),
        None => origin.link_facts(),
    };
    origin.shutdown().await;
    if let Some(net) = net {
        // Deleting namespaces runs `ip`: blocking work, off the runtime's threads.
        tokio::task::spawn_blocking(move || drop(net)).await.ok();
    }
    for e in &errors {
        warnings.push(format!("pull error sample: {e}"));
    }

    let workspace = options.workspace.clone();
    let machine = tokio::task::spawn_blocking(move || Machine::collect(&workspace))
        .await
        .map_err(|e| RunError::Io {
            what: "collect machine facts".into(),
            source: std::io::Error::other(e),
        })?;
    let mut result = RunResult::new(
        RunFacts {
            scenario: scenario.clone(),
            started_at,
            duration: started.elapsed(),
            machine,
            warnings,
        },
        recordings,
    );
    for ((variant, target, rep), t) in totals {
        if let Some(s) = result.series_mut(&variant, &target) {
            s.registry.insert(rep, t);
        }
    }
    for ((variant, target, rep), c) in cpu {
        if let Some(s) = result.series_mut(&variant, &target) {
            s.cpu.insert(rep, c);
        }
    }
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
    result.evaluate_slo();
    Ok(result)
}

/// The nodes' namespaces, for `[network] nodes = "namespaces"`.
async fn node_net(scenario: &Scenario) -> Result<Option<NodeNet>, RunError> {
    if !scenario.network.namespaces() {
        return Ok(None);
    }
    let s = scenario.clone();
    tokio::task::spawn_blocking(move || NodeNet::create(&s))
        .await
        .map_err(|e| RunError::Io {
            what: "create the nodes' namespaces".into(),
            source: std::io::Error::other(e),
        })?
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

/// One burst of one (variant, target, repetition).
struct Burst<'a> {
    scenario: &'a Scenario,
    variant: &'a Variant,
    image: &'a VariantImage,
    /// The pod's images: the variant's own first, then its sidecars'.
    pod_images: Vec<ImageName>,
    target: &'a Target,
    repetition: u32,
    origin: &'a Origin,
    /// The nodes' namespaces, when nodes are namespaces.
    net: Option<&'a NodeNet>,
    work: &'a Path,
    /// Where peers' logs are kept.
    logs: &'a Path,
    progress: &'a Progress,
}

struct BurstOutput {
    recorder: Recorder,
    /// What the embedded registry served; `None` when the variant is pulled from a real one.
    registry: Option<AccountingSnapshot>,
    /// Bytes the shaped link carried toward the host during the burst, by the kernel's count.
    link_bytes: Option<u64>,
    /// What every link of the nodes' fabric carried, when nodes are namespaces.
    wire: Option<WireTotals>,
    /// What each cache process inside the nodes used.
    caches: Vec<CacheProcessFacts>,
    cpu: CpuUse,
    errors: Vec<String>,
}

enum PodOutcome {
    Ready {
        node: u32,
        slot: PodSlot,
        times: PodTimes,
        /// The pod's images as on its node, in the order of [`Burst::pod_images`].
        images: Vec<Arc<crate::nodes::node::ImageOnNode>>,
    },
    Failed {
        slot: PodSlot,
        kind: FailureKind,
        message: String,
    },
}

impl Burst<'_> {
    async fn run(&self) -> Result<BurstOutput, RunError> {
        let s = self.scenario;
        let nodes_n = s.total_nodes();
        let registry = self.origin.registry();
        let upstream = match &self.image.pull {
            PullFrom::Embedded(_) => Upstream::Embedded(registry),
            PullFrom::Remote(remote) => Upstream::Remote(remote),
        };
        let mut deployment =
            Deployment::up(self.target, upstream, nodes_n, self.work, self.net).await?;
        let pullers = self.pullers(&deployment).await?;
        let epoch = Instant::now() + EPOCH_LEAD;
        let mut nodes = Vec::with_capacity(nodes_n as usize);
        for (n, puller) in (0..nodes_n).zip(pullers) {
            let config = NodeConfig {
                index: n,
                dir: self.node_dir(n),
                max_parallel_image_pulls: s.runtime.parallel_image_pulls_limit(),
                unpack: s.runtime.unpack,
                readiness: s.readiness.clone(),
            };
            nodes.push(Arc::new(Node::new(config, puller, epoch)));
        }
        let link_before = self.origin.link_sent_bytes();
        registry.accounting().reset_at(epoch.into());
        deployment.burst_started();
        let wire = self
            .net
            .map(|net| WireSampler::start(net.fabric().clone(), epoch));
        let cpu = CpuSampler::start();
        let pods = s.schedule().into_iter().map(|slot| {
            let node = nodes[slot.node as usize].clone();
            let images = &self.pod_images;
            let readiness = s.readiness.clone();
            let progress = self.progress;
            async move {
                tokio::time::sleep_until((epoch + slot.offset).into()).await;
                let failed = |kind, message| PodOutcome::Failed {
                    slot,
                    kind,
                    message,
                };
                let outcome = tokio::time::timeout(POD_DEADLINE, async {
                    match node.images(images).await {
                        Err(f) => failed(f.kind, f.message),
                        Ok(got) => {
                            let started = epoch.elapsed();
                            // Readiness reads the main container's image.
                            let start_files = got[0].image.start_files.clone();
                            let pull = PullTimes::spanning(
                                got.iter().filter(|g| g.waited).map(|g| g.image.pull),
                            );
                            match container::start(start_files, &readiness, epoch, started).await {
                                Ok(ready) => PodOutcome::Ready {
                                    node: node.index(),
                                    slot,
                                    times: PodTimes {
                                        scheduled: slot.offset,
                                        pull,
                                        started,
                                        ready,
                                        wave: slot.wave,
                                    },
                                    images: got.into_iter().map(|g| g.image).collect(),
                                },
                                Err(e) => failed(
                                    FailureKind::Other,
                                    format!("container start on node {}: {e}", node.index()),
                                ),
                            }
                        }
                    }
                })
                .await
                .unwrap_or_else(|_| {
                    failed(
                        FailureKind::Timeout,
                        format!("pod not ready within {POD_DEADLINE:?}"),
                    )
                });
                progress.pod_done();
                outcome
            }
        });
        let outcomes = join_all(pods).await;
        let cpu = cpu.finish().await;
        let embedded = matches!(self.image.pull, PullFrom::Embedded(_));
        if embedded && PeerKind::of(&self.target.kind).is_some() {
            settle(registry).await;
        }
        let snapshot = embedded.then(|| registry.accounting().snapshot());
        let wire = match wire {
            Some(w) => Some(w.finish().await),
            None => None,
        };
        let link_bytes = match (link_before, self.origin.link_sent_bytes()) {
            (Some(before), Some(after)) if embedded => Some(after.saturating_sub(before)),
            _ => None,
        };
        let stem = format!(
            "{}-{}-rep{}",
            self.target.name, self.variant.name, self.repetition
        );
        let caches = deployment.cache_facts(&stem);
        for kept in deployment.keep_logs(self.logs, &stem) {
            tracing::debug!(log = %kept.display(), "kept a peer log");
        }
        deployment.down().await;
        // Nodes with a real containerd stop it on drop (scanning /proc, waiting for exit):
        // blocking work, kept off the runtime's threads.
        tokio::task::spawn_blocking(move || drop(nodes)).await.ok();

        let mut recorder = Recorder::new(RunKey {
            variant: self.variant.name.clone(),
            target: self.target.name.clone(),
            repetition: self.repetition,
        });
        let mut layers_recorded = HashSet::new();
        let mut wave_blobs: BTreeMap<u32, (Duration, Vec<BlobFirstByte>)> = BTreeMap::new();
        let mut errors = Vec::new();
        for outcome in outcomes {
            match outcome {
                PodOutcome::Ready {
                    node,
                    slot,
                    times,
                    images,
                } => {
                    recorder.pod(&times);
                    // Each image a node pulled is recorded once for the node, in the wave of
                    // its first ready pod (every pod has the same images, in the same order).
                    for (i, image) in images.iter().enumerate() {
                        if !layers_recorded.insert((node, i)) {
                            continue;
                        }
                        // Image 0 is the variant's own, then its sidecars in order.
                        let name = match i.checked_sub(1) {
                            None => self.variant.name.as_str(),
                            Some(k) => self.variant.sidecars.get(k).map_or("?", String::as_str),
                        };
                        for (position, l) in image.layers.iter().enumerate() {
                            if image.layers_timed {
                                recorder.layer(name, position, l);
                            } else {
                                recorder.layer_unpacked(name, position, l);
                            }
                        }
                        let (_, blobs) = wave_blobs
                            .entry(slot.wave)
                            .or_insert((slot.offset, Vec::new()));
                        blobs.extend(image.blob_timings.iter().cloned());
                    }
                }
                PodOutcome::Failed {
                    slot,
                    kind,
                    message,
                } => {
                    recorder.failed_in_wave(slot.wave, slot.offset, kind);
                    if !errors.contains(&message) {
                        errors.push(message);
                    }
                }
            }
        }
        for (wave, (scheduled, blobs)) in wave_blobs {
            recorder.wave_blobs(wave, scheduled, &blobs);
        }
        Ok(BurstOutput {
            recorder,
            registry: snapshot,
            link_bytes,
            wire,
            caches,
            cpu,
            errors,
        })
    }

    fn node_dir(&self, n: u32) -> PathBuf {
        self.work.join(format!("node-{n}"))
    }

    /// Every node's puller, in node order: the harness's own client, or a real one (for `ctr`,
    /// each node's containerd is started here, all at once, before the epoch).
    async fn pullers(&self, deployment: &Deployment) -> Result<Vec<NodePuller>, RunError> {
        let s = self.scenario;
        let mut pullers = Vec::new();
        let mut starting = Vec::new();
        for n in 0..s.total_nodes() {
            let dir = self.node_dir(n);
            let content = dir.join("content");
            std::fs::create_dir_all(&content)
                .map_err(io(format!("create {}", content.display())))?;
            let endpoint = deployment.endpoints[n as usize].clone();
            if s.runtime.puller != PullerKind::Harness {
                let config = RealPullerConfig {
                    client: s.runtime.puller,
                    endpoint,
                    dir,
                    platform: s.platform.clone(),
                    unpack: s.runtime.unpack,
                    netns: self
                        .net
                        .and_then(|net| net.node(n as usize))
                        .map(|node| node.netns().to_owned()),
                };
                starting.push(tokio::task::spawn_blocking(move || {
                    RealPuller::new(n, config)
                }));
                continue;
            }
            let client = RegistryClient::new(ClientConfig {
                response_timeout: Duration::from_secs(120),
                extra_ca_file: deployment.ca_file.clone(),
                ..ClientConfig::default()
            })
            .map_err(RunError::Client)?;
            let link = s
                .registry
                .node_link
                .filter(|_| deployment.client_paced_links);
            let puller = Puller::new(
                client,
                PullerConfig {
                    endpoint,
                    content_dir: content,
                    max_concurrent_downloads: s.runtime.max_concurrent_downloads as usize,
                    platform: s.platform.clone(),
                    body_idle_timeout: Duration::from_secs(120),
                    link: link.map(|rate| Arc::new(ByteBucket::new(rate, 64 * 1024))),
                },
            );
            pullers.push(match self.net.and_then(|net| net.runtime(n as usize)) {
                Some(runtime) => NodePuller::HarnessInNode(puller, runtime),
                None => NodePuller::Harness(puller),
            });
        }
        for started in join_all(starting).await {
            let puller = started.map_err(|e| RunError::Io {
                what: "start a node's real client".into(),
                source: std::io::Error::other(e),
            })??;
            pullers.push(NodePuller::Real(Box::new(puller)));
        }
        Ok(pullers)
    }
}

/// Waits until the registry has served nothing new for [`UPSTREAM_QUIET`] (at most
/// [`UPSTREAM_QUIET_LIMIT`]), so a peer's fills that outlive its clients are counted.
async fn settle(registry: &EmbeddedRegistry) {
    let started = Instant::now();
    let mut last = (registry.accounting().progress(), Instant::now());
    while started.elapsed() < UPSTREAM_QUIET_LIMIT {
        tokio::time::sleep(UPSTREAM_QUIET / 4).await;
        let now = registry.accounting().progress();
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() >= UPSTREAM_QUIET {
            return;
        }
    }
    tracing::warn!("registry traffic still going {UPSTREAM_QUIET_LIMIT:?} after the burst; counting what was served so far");
}

/// A progress bar on stderr (only when asked for and stderr is a terminal).
#[derive(Debug)]
struct Progress {
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    fn new(enabled: bool, pods: u64) -> Self {
        let bar = enabled.then(|| {
            let bar = indicatif::ProgressBar::with_draw_target(
                Some(pods),
                indicatif::ProgressDrawTarget::stderr(),
            );
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{elapsed_precise} [{bar:40}] {pos}/{len} pods ready or failed",
                )
                .expect("static template")
                .progress_chars("=> "),
            );
            bar
        });
        Self { bar }
    }

    fn pod_done(&self) {
        if let Some(b) = &self.bar {
            b.inc(1);
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
