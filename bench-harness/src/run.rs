//! A whole scenario run: make the variants' images ready (generate, import, mirror or resolve:
//! `variant_image.rs`), start the embedded registry, then for every repetition, variant and
//! target run one burst, and write `result.json`, `report.md` and `report.html`.
//!
//! Bursts are interleaved (repetition-major: rep 0 of every variant and target, then rep 1, ...)
//! so slow drift of a shared machine spreads over all series instead of biasing one. Each burst
//! starts from nothing: fresh node content stores and snapshots, fresh cache-daemon stores,
//! registry accounting reset at the burst epoch.
//!
//! # One burst
//! Every pod of the schedule is a task that sleeps until its scheduled offset from the epoch,
//! asks its node for the image (`node.rs` shares one pull per node and queues pulls as kubelet
//! does), starts its container (`container.rs`), and hands back its milestones. The burst's
//! coordinator records them into the burst's [`Recorder`] once every pod is done.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures_util::future::join_all;

use stampede_oci::{ClientConfig, Reference, RegistryClient, RepoName};

use crate::container;
use crate::host::{CpuSampler, CpuUse};
use crate::machine::Machine;
use crate::node::{ImageName, Node, NodeConfig};
use crate::pull::{Puller, PullerConfig};
use crate::recorder::{FailureKind, PodTimes, Recorder, Recordings, RunKey};
use crate::registry::accounting::AccountingSnapshot;
use crate::registry::shaping::ByteBucket;
use crate::registry::{EmbeddedRegistry, RegistryError};
use crate::report;
use crate::result::{RegistryTotals, ResultError, RunFacts, RunResult};
use crate::scenario::{Scenario, Target, Variant};
use crate::target::{Deployment, TargetError, Upstream};
use crate::variant_image::{prepare_all, PullFrom, VariantImage, VariantImageError};

/// Time the coordinator gives itself to spawn every pod before the epoch.
const EPOCH_LEAD: Duration = Duration::from_millis(200);
/// A pod not ready this long after its scheduled time counts as failed (`timeout`).
const POD_DEADLINE: Duration = Duration::from_secs(15 * 60);
/// How many distinct failure messages a run keeps as samples for the report.
const ERROR_SAMPLES: usize = 10;
/// Tag under which every variant is served.
pub const TAG: &str = "latest";

/// What a run needs besides the scenario.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Where `<scenario>-<timestamp>/` goes, unless `out_dir` is given.
    pub results_root: PathBuf,
    /// Exact output directory.
    pub out_dir: Option<PathBuf>,
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
    /// The result could not be written.
    #[error(transparent)]
    Result(#[from] ResultError),
    /// The report could not be written.
    #[error(transparent)]
    Report(#[from] report::ReportError),
    /// The client could not be built.
    #[error("registry client")]
    Client(#[source] stampede_oci::ClientError),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> RunError {
    let what = what.into();
    move |source| RunError::Io { what, source }
}

/// A finished run: its result and where it was written.
#[derive(Debug)]
pub struct RunOutput {
    /// The result, as written to `result.json`.
    pub result: RunResult,
    /// The run directory.
    pub dir: PathBuf,
}

/// The repository a variant is served under.
pub fn variant_repo(variant: &Variant) -> String {
    format!("stampede/{}", variant.name)
}

/// Runs `scenario` to the end and writes its result.
///
/// # Errors
/// [`RunError`] when the run itself cannot proceed (not when pulls fail: those are data).
pub async fn run(scenario: Scenario, options: RunOptions) -> Result<RunOutput, RunError> {
    let started_at = SystemTime::now();
    let started = Instant::now();
    let mut warnings = Vec::new();

    let images = prepare_all(&scenario, &options.image_cache)
        .await
        .map_err(|(variant, source)| RunError::Image { variant, source })?;
    let nodes = scenario.total_nodes();
    let registry = EmbeddedRegistry::start(scenario.registry.clone(), nodes as usize)
        .await
        .map_err(RunError::Registry)?;
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
    let mut errors: Vec<String> = Vec::new();
    std::fs::create_dir_all(&options.work_root)
        .map_err(io(format!("create {}", options.work_root.display())))?;
    for rep in 0..scenario.repetitions {
        for (variant, image) in scenario.variants.iter().zip(&images) {
            for target in &scenario.targets {
                let work = tempfile::Builder::new()
                    .prefix(&format!("burst-{rep}-{}-{}-", variant.name, target.name))
                    .tempdir_in(&options.work_root)
                    .map_err(io("create burst directory"))?;
                let burst = Burst {
                    scenario: &scenario,
                    variant,
                    image,
                    target,
                    repetition: rep,
                    registry: &registry,
                    work: work.path(),
                    progress: &progress,
                };
                let out = burst.run().await?;
                if out.cpu.host_bound() {
                    warnings.push(format!(
                        "host-bound: repetition {rep} of {}/{}: the host's CPUs were {:.0}% busy on average during the burst, so its figures measure this machine more than the registry or the cache",
                        variant.name,
                        target.name,
                        out.cpu.mean_busy * 100.0
                    ));
                }
                for e in out.errors {
                    if errors.len() < ERROR_SAMPLES && !errors.contains(&e) {
                        errors.push(e);
                    }
                }
                if let Some(snapshot) = &out.registry {
                    totals.insert(
                        (variant.name.clone(), target.name.clone(), rep),
                        registry_totals(snapshot),
                    );
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
    registry.shutdown().await;
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
    }));
    result.evaluate_slo();
    let dir = options
        .out_dir
        .clone()
        .unwrap_or_else(|| RunResult::run_dir(&options.results_root, &scenario.name, started_at));
    result.write(&dir)?;
    report::write_markdown(&result, &dir)?;
    report::write_html(&result, &dir)?;
    Ok(RunOutput { result, dir })
}

fn registry_totals(snap: &AccountingSnapshot) -> RegistryTotals {
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
    }
}

/// One burst of one (variant, target, repetition).
struct Burst<'a> {
    scenario: &'a Scenario,
    variant: &'a Variant,
    image: &'a VariantImage,
    target: &'a Target,
    repetition: u32,
    registry: &'a EmbeddedRegistry,
    work: &'a Path,
    progress: &'a Progress,
}

struct BurstOutput {
    recorder: Recorder,
    /// What the embedded registry served; `None` when the variant is pulled from a real one.
    registry: Option<AccountingSnapshot>,
    cpu: CpuUse,
    errors: Vec<String>,
}

enum PodOutcome {
    Ready {
        node: u32,
        times: PodTimes,
        image: Arc<crate::node::ImageOnNode>,
    },
    Failed {
        kind: FailureKind,
        message: String,
    },
}

impl Burst<'_> {
    async fn run(&self) -> Result<BurstOutput, RunError> {
        let s = self.scenario;
        let nodes_n = s.total_nodes();
        let upstream = match &self.image.pull {
            PullFrom::Embedded(_) => Upstream::Embedded(self.registry),
            PullFrom::Remote(remote) => Upstream::Remote(remote),
        };
        let deployment = Deployment::up(self.target, upstream, nodes_n, self.work).await?;
        let link = s
            .registry
            .node_link
            .filter(|_| deployment.client_paced_links);
        let epoch = Instant::now() + EPOCH_LEAD;
        let mut nodes = Vec::with_capacity(nodes_n as usize);
        for n in 0..nodes_n {
            let dir = self.work.join(format!("node-{n}"));
            let content = dir.join("content");
            std::fs::create_dir_all(&content)
                .map_err(io(format!("create {}", content.display())))?;
            let client = RegistryClient::new(ClientConfig {
                response_timeout: Duration::from_secs(120),
                extra_ca_file: deployment.ca_file.clone(),
                ..ClientConfig::default()
            })
            .map_err(RunError::Client)?;
            let puller = Puller::new(
                client,
                PullerConfig {
                    endpoint: deployment.endpoints[n as usize].clone(),
                    content_dir: content,
                    max_concurrent_downloads: s.runtime.max_concurrent_downloads as usize,
                    platform: s.platform.clone(),
                    body_idle_timeout: Duration::from_secs(120),
                    link: link.map(|rate| Arc::new(ByteBucket::new(rate, 64 * 1024))),
                },
            );
            let config = NodeConfig {
                index: n,
                dir,
                max_parallel_image_pulls: s.runtime.parallel_image_pulls_limit(),
                unpack: s.runtime.unpack,
                readiness: s.readiness.clone(),
            };
            nodes.push(Arc::new(Node::new(config, puller, epoch)));
        }
        let image = match &self.image.pull {
            PullFrom::Embedded(_) => ImageName {
                repo: RepoName::parse(&variant_repo(self.variant))
                    .expect("variant names are valid repository components"),
                reference: Reference::Tag(TAG.to_owned()),
            },
            PullFrom::Remote(remote) => ImageName {
                repo: remote.reference.repo.clone(),
                reference: remote.reference.reference(),
            },
        };
        self.registry.accounting().reset_at(epoch.into());
        let cpu = CpuSampler::start();
        let pods = s.schedule().into_iter().map(|slot| {
            let node = nodes[slot.node as usize].clone();
            let image = image.clone();
            let readiness = s.readiness.clone();
            let progress = self.progress;
            async move {
                tokio::time::sleep_until((epoch + slot.offset).into()).await;
                let outcome = tokio::time::timeout(POD_DEADLINE, async {
                    match node.image(&image).await {
                        Err(f) => PodOutcome::Failed {
                            kind: f.kind,
                            message: f.message,
                        },
                        Ok(got) => {
                            let started = epoch.elapsed();
                            match container::start(
                                got.image.start_files.clone(),
                                &readiness,
                                epoch,
                                started,
                            )
                            .await
                            {
                                Ok(ready) => PodOutcome::Ready {
                                    node: node.index(),
                                    times: PodTimes {
                                        scheduled: slot.offset,
                                        pull: got.waited.then_some(got.image.pull),
                                        started,
                                        ready,
                                    },
                                    image: got.image,
                                },
                                Err(e) => PodOutcome::Failed {
                                    kind: FailureKind::Other,
                                    message: format!(
                                        "container start on node {}: {e}",
                                        node.index()
                                    ),
                                },
                            }
                        }
                    }
                })
                .await
                .unwrap_or(PodOutcome::Failed {
                    kind: FailureKind::Timeout,
                    message: format!("pod not ready within {POD_DEADLINE:?}"),
                });
                progress.pod_done();
                outcome
            }
        });
        let outcomes = join_all(pods).await;
        let cpu = cpu.finish().await;
        let registry = matches!(self.image.pull, PullFrom::Embedded(_))
            .then(|| self.registry.accounting().snapshot());
        deployment.down().await;

        let mut recorder = Recorder::new(RunKey {
            variant: self.variant.name.clone(),
            target: self.target.name.clone(),
            repetition: self.repetition,
        });
        let mut layers_recorded = HashSet::new();
        let mut errors = Vec::new();
        for outcome in outcomes {
            match outcome {
                PodOutcome::Ready { node, times, image } => {
                    recorder.pod(&times);
                    if layers_recorded.insert(node) {
                        for l in &image.layers {
                            recorder.layer(l);
                        }
                    }
                }
                PodOutcome::Failed { kind, message } => {
                    recorder.failed(kind);
                    if !errors.contains(&message) {
                        errors.push(message);
                    }
                }
            }
        }
        Ok(BurstOutput {
            recorder,
            registry,
            cpu,
            errors,
        })
    }
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
