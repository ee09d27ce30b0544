//! The scenario file: what a burst looks like (nodes, pods, arrival), which images are pulled
//! ([`Variant`]), through what ([`Target`]), from a registry behaving how ([`RegistryModel`]), on
//! nodes modelled how ([`Runtime`], [`Readiness`]), and what counts as success ([`Slo`]). This
//! module owns parsing (`file.rs`: the file's shape, mistakes with their line), `--set` overrides
//! ([`Override`]), validation (`validate.rs`: every problem at once, each with its field path) and
//! the pod schedule ([`Scenario::schedule`]); it runs nothing. `Scenario` serializes back to the
//! file's shape, so `result.json` carries a scenario that parses again. Quantities (byte sizes,
//! bandwidths, durations) are written as [`units`] say.

mod file;
mod kube;
mod overrides;
pub mod units;
mod validate;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use stampede_oci::{ImageRef, Platform, ReferenceError};

use crate::image::remote::RegistryAccess;
use crate::image::SyntheticImage;
use crate::registry::RegistryModel;
use crate::scenario::units::ByteSize;

pub use kube::KubeTarget;
pub use overrides::{Override, OverrideError};
pub use validate::{Problem, Problems};

/// Most pods a scenario may schedule in total (all nodes, all waves). One simulated pod costs a
/// task and a few hundred bytes of bookkeeping; beyond this a run would not fit the machine.
pub const MAX_PODS: u64 = 1_000_000;

/// A parsed, validated scenario: the runner's whole input besides the CLI. Serializes to the
/// file's shape, so the effective scenario in `result.json` parses back.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Scenario {
    /// Scenario name; the file stem unless set. `[A-Za-z0-9._-]+`: it names the run directory.
    pub name: String,
    /// Free text for the report header.
    pub description: String,
    /// Nodes present at the burst epoch. At least 1.
    pub nodes: u32,
    /// Pods each node starts, for `burst` and `ramp` arrival; at least 1 (waves say their own).
    pub pods_per_node: u32,
    /// Bursts per (variant, target), at least 1; each one's values are kept for intervals.
    pub repetitions: u32,
    /// Seeds image generation and anything else random, so a scenario is reproducible.
    pub seed: u64,
    /// Node platform, picked from image indexes. Defaults to the host's.
    #[serde(serialize_with = "platform_str")]
    pub platform: Platform,
    /// When pods are scheduled relative to the burst epoch.
    pub arrival: Arrival,
    /// Images pulled; each variant is measured separately against every target. At least one.
    pub variants: Vec<Variant>,
    /// Where nodes pull from. At least one.
    pub targets: Vec<Target>,
    /// How the embedded registry behaves: egress, per-node link, latency, throttling.
    pub registry: RegistryModel,
    /// What a node is on the network: a task of this process (default) or a network namespace.
    #[serde(skip_serializing_if = "Network::is_default")]
    pub network: Network,
    /// Container runtime model on each node (containerd and kubelet defaults).
    pub runtime: Runtime,
    /// What a started container does before it is ready.
    pub readiness: Readiness,
    /// Service-level objectives checked after the run; unset ones are not checked.
    pub slo: Slo,
    /// The machine profile `bench-harness model` uses unless `--profile` says otherwise (`run`
    /// ignores it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_profile: Option<PathBuf>,
}

/// When pods are scheduled, relative to the burst epoch.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum Arrival {
    /// Every pod at the epoch: the worst case for a registry.
    Burst,
    /// Pods' scheduled times spread evenly over `[0, over)`, round-robin across nodes.
    Ramp {
        /// Length of the ramp; positive.
        #[serde(with = "span_serde")]
        over: Duration,
    },
    /// Groups of pods at given offsets, optionally on freshly added nodes.
    Waves {
        /// At least one; `at` non-decreasing.
        waves: Vec<Wave>,
    },
}

/// One wave of `arrival.mode = "waves"`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Wave {
    /// Offset of the wave from the burst epoch.
    #[serde(with = "span_serde")]
    pub at: Duration,
    /// Pods started on each of the wave's nodes. At least 1.
    pub pods_per_node: u32,
    /// `0`: the wave lands on the scenario's `nodes` existing nodes. `> 0`: it lands on that many
    /// new, empty nodes (a cluster-autoscaler scale-out), numbered after all earlier nodes.
    #[serde(default)]
    pub new_nodes: u32,
}

/// One image to pull, under a repository named after the variant.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Variant {
    /// `[a-z0-9][a-z0-9._-]*`, unique; becomes the repository name.
    pub name: String,
    #[serde(flatten)]
    pub source: ImageSource,
    /// Other variants whose images every pod of this variant also needs (sidecars, init
    /// containers), pulled through the same node after this variant's own image, in this order.
    /// Their own `sidecars` are not pulled. Empty (and not written) when the pod has one image.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sidecars: Vec<String>,
}

/// Where a variant's image comes from, written as the key of its table (`[variants.synthetic]`,
/// `[variants.registry]`, `[variants.layout]`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum ImageSource {
    /// Generated deterministically from the spec and the scenario's seed.
    Synthetic(SyntheticImage),
    /// An image in a real registry.
    Registry(RegistrySource),
    /// An OCI image layout directory (`skopeo copy ... oci:DIR:tag`, `umoci`).
    Layout(LayoutSource),
}

/// `[variants.registry]`: an image in a real registry, pulled over HTTPS (or HTTP when `insecure`),
/// anonymously or with credentials, with the Bearer token flow when the registry asks for it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RegistrySource {
    /// `registry/repo:tag` or `registry/repo@sha256:<hex>`, with Docker's normalisation
    /// (`alpine` is `docker.io/library/alpine:latest`).
    pub image: String,
    /// `true` (default): fetch the image once (digests verified) into the image cache and serve
    /// it from the embedded registry, so bursts do not hammer the real registry and registry-side
    /// accounting works. `false`: nodes (or the target in front of them) pull straight from the
    /// real registry; registry-side accounting is then unavailable.
    pub mirror: bool,
    #[serde(flatten)]
    pub access: RegistryAccess,
}

impl RegistrySource {
    /// The image reference, normalised.
    ///
    /// # Errors
    /// [`ReferenceError`] when `image` is not a reference (validation reports it first).
    pub fn reference(&self) -> Result<ImageRef, ReferenceError> {
        ImageRef::parse(&self.image)
    }
}

/// `[variants.layout]`: an OCI image layout directory, served in place.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayoutSource {
    /// The layout directory (holding `oci-layout` and `index.json`).
    pub path: PathBuf,
    /// The `index.json` entry to use, by its `org.opencontainers.image.ref.name`; unset, the
    /// layout must hold exactly one image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

/// Where nodes pull from.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Target {
    /// Unique, `[a-z0-9][a-z0-9._-]*`; defaults to the kind (`"cache-daemon"`).
    pub name: String,
    #[serde(flatten)]
    pub kind: TargetKind,
    /// Only the first this many nodes pull in this target's bursts (`None`: every node); `1`
    /// measures a single node's cold pull beside the whole burst, over the same links.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nodes: Option<u32>,
    /// A cluster target only: this long after the burst epoch, the node owning the first
    /// stripe of the variant's largest layer is killed with SIGKILL (its cache process and
    /// with it everything it was serving); its own pods are not scheduled, so every pod
    /// counted is another node's (`nodes/fault.rs`).
    #[serde(with = "opt_span_serde", skip_serializing_if = "Option::is_none")]
    pub kill_owner_after: Option<Duration>,
}

/// What a target is. Written as `kind = "..."` plus the kind's own fields.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum TargetKind {
    /// Nodes pull straight from the embedded registry.
    Direct,
    /// Our `cache-daemon`, started by the harness in front of the registry.
    CacheDaemon {
        /// One daemon per node (default) or one shared by all nodes.
        placement: Placement,
    },
    /// Any other mirror already running, at `url`, which must front the embedded registry.
    Mirror {
        /// Base URL, `http://` or `https://`.
        url: String,
    },
    /// Debian's `docker-registry` (distribution 2.8) in pull-through proxy mode, started by the
    /// harness for each burst in front of the embedded registry (`target/peer.rs`).
    DistributionProxy,
    /// nginx `proxy_cache` with `proxy_cache_lock`, started by the harness for each burst in front
    /// of the embedded registry (`target/peer.rs`).
    Nginx {
        /// One nginx for all nodes (default), or one per node (what an operator would run on
        /// each node instead of our cache; nodes in namespaces only).
        #[serde(skip_serializing_if = "Placement::is_shared")]
        placement: Placement,
    },
    /// A real Kubernetes cluster, reached through a kubeconfig: at the epoch the harness creates
    /// the burst's pods there and records what the cluster reports (`crate::kubernetes`).
    Kubernetes(KubeTarget),
}

/// Where cache instances run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Placement {
    /// One instance per node, as a DaemonSet deploys it.
    #[default]
    PerNode,
    /// One instance for all nodes.
    Shared,
    /// One cache-daemon per node in cluster mode: each knows every other as a peer and the
    /// nodes share one registry fetch per piece of content (nodes in namespaces only).
    Cluster,
}

impl Placement {
    /// `per-node`, `shared`, `cluster`.
    pub fn name(self) -> &'static str {
        match self {
            Self::PerNode => "per-node",
            Self::Shared => "shared",
            Self::Cluster => "cluster",
        }
    }

    fn is_shared(&self) -> bool {
        *self == Self::Shared
    }
}

/// `[network]`: what a node is on the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Network {
    /// Tasks of this process (default) or network namespaces with kernel-shaped links.
    pub nodes: NodeMode,
}

impl Network {
    /// Whether this is the default (nodes are tasks), which result files leave out.
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// Whether nodes are network namespaces.
    pub fn namespaces(&self) -> bool {
        self.nodes == NodeMode::Namespaces
    }
}

/// `[network] nodes`: how the harness makes a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeMode {
    /// Every node is a set of tasks in this process; `registry.node_link` is paced in user space
    /// and caches share this process's loopback.
    #[default]
    Tasks,
    /// Every node is a network namespace joined to a bridge by a veth pair that `tc tbf` shapes to
    /// `registry.node_link` both ways; the registry sits in a namespace of its own on a link
    /// shaped to `registry.netns_rate`. Caches run as real processes inside the nodes. Latency
    /// stays emulated in user space (the kernel has no netem). Needs root and iproute2.
    Namespaces,
}

impl NodeMode {
    /// `tasks`, `namespaces`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Tasks => "tasks",
            Self::Namespaces => "namespaces",
        }
    }
}

/// The node's container runtime, with containerd's and kubelet's defaults.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Runtime {
    /// Layers of one image downloaded at once (containerd `max_concurrent_downloads`, default 3).
    /// At least 1.
    pub max_concurrent_downloads: u32,
    /// Images a node pulls at once (kubelet `maxParallelImagePulls`; 1 models the default
    /// `serializeImagePulls: true`). `0` means unlimited.
    pub max_parallel_image_pulls: u32,
    /// Decompress and untar layers into a snapshot directory, as containerd's unpacker does.
    pub unpack: bool,
    /// Keep each node's snapshot directories after the run (for inspection).
    pub keep_snapshots: bool,
    /// Who does each node's pull: the harness's own client, or a real one.
    pub puller: PullerKind,
}

/// Who pulls for a node (`[runtime] puller`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PullerKind {
    /// The harness's own client (`nodes/pull.rs`): every phase timed, first byte included.
    #[default]
    Harness,
    /// `skopeo copy docker://... dir:...` per node pull; the harness unpacks what it wrote.
    /// Only the whole pull is timed: skopeo does not report a first byte.
    Skopeo,
    /// `ctr images pull` against a containerd of the node's own (one per node, at most
    /// [`MAX_CTR_NODES`]); containerd unpacks as it pulls, so the pull includes the unpack.
    Ctr,
}

/// Most nodes a scenario with `puller = "ctr"` may have: each runs its own containerd.
pub const MAX_CTR_NODES: u32 = 16;

impl PullerKind {
    /// `harness`, `skopeo`, `ctr`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Harness => "harness",
            Self::Skopeo => "skopeo",
            Self::Ctr => "ctr",
        }
    }
}

/// What a started container does before its readiness probe passes.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Readiness {
    /// Fraction of the image's files, by count, the container reads at start, in `[0, 1]`. Which
    /// files is a deterministic choice; see [`Readiness::files_to_read`].
    pub read_fraction: f64,
    /// Application init time after the reads.
    #[serde(with = "span_serde")]
    pub init: Duration,
    /// Readiness probe period (kubelet `periodSeconds`, default 1 s here, 10 s in Kubernetes).
    /// Positive.
    #[serde(with = "span_serde")]
    pub probe_period: Duration,
    /// Delay from container start to the first probe (kubelet `initialDelaySeconds`, default 0).
    #[serde(with = "span_serde")]
    pub probe_initial_delay: Duration,
}

/// Service-level objectives; unset ones are not checked.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Slo {
    /// Limit on the 95th percentile of `end_to_end` (scheduled to ready) per (variant, target),
    /// failed pods counting as never ready. Positive.
    #[serde(with = "opt_span_serde", skip_serializing_if = "Option::is_none")]
    pub p95_ready: Option<Duration>,
    /// Limit on the 99th percentile of `pull` per (variant, target), failed pods counting as
    /// never pulled. Positive.
    #[serde(with = "opt_span_serde", skip_serializing_if = "Option::is_none")]
    pub p99_pull: Option<Duration>,
    /// Limit on bytes the registry sends in one repetition of one (variant, target).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_registry_egress: Option<ByteSize>,
}

/// One pod of the schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodSlot {
    /// Index of the pod, `0..total_pods()`, in schedule order.
    pub pod: u32,
    /// Index of its node, `0..total_nodes()`. Nodes `0..nodes` exist at the epoch; nodes added by
    /// waves with `new_nodes > 0` follow in wave order.
    pub node: u32,
    /// When the pod is scheduled, from the burst epoch.
    pub offset: Duration,
    /// The wave it belongs to; `0` for `burst` and `ramp`.
    pub wave: u32,
}

/// Why a scenario could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("read scenario {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not have the scenario's shape (unknown field, wrong
    /// type). The message names the file; the source gives the line, the column and a snippet.
    #[error("parse scenario {origin}")]
    Parse {
        /// The file name given to [`Scenario::parse`].
        origin: String,
        #[source]
        source: Box<toml::de::Error>,
    },
    /// An override could not be applied or made the scenario's shape invalid.
    #[error("apply override to scenario {origin}")]
    Override {
        /// The file name given to [`Scenario::parse`].
        origin: String,
        #[source]
        source: OverrideError,
    },
    /// The scenario has the right shape but wrong values; every problem is listed.
    #[error("invalid scenario {origin}:\n{problems}")]
    Invalid {
        /// The file name given to [`Scenario::parse`].
        origin: String,
        problems: Problems,
    },
}

impl Scenario {
    /// Reads and parses a scenario file (its name is the origin in messages, its stem the default
    /// name) and anchors its relative paths in the file's directory ([`Scenario::anchor_paths`]).
    ///
    /// # Errors
    /// [`ScenarioError::Read`] if the file cannot be read, otherwise as [`Scenario::parse`].
    pub fn load(path: &Path, overrides: &[Override]) -> Result<Self, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut scenario = Self::parse(&text, &path.display().to_string(), overrides)?;
        scenario.anchor_paths(path.parent().unwrap_or(Path::new("")));
        Ok(scenario)
    }

    /// Joins every relative, non-`~` path of the variants' image sources, `model_profile`
    /// and kubernetes targets' kubeconfigs and registry logs onto `base`.
    pub fn anchor_paths(&mut self, base: &Path) {
        let anchor = |p: &mut PathBuf| {
            if p.is_relative() && !p.starts_with("~") {
                *p = base.join(&*p);
            }
        };
        self.model_profile.iter_mut().for_each(anchor);
        for t in &mut self.targets {
            if let TargetKind::Kubernetes(k) = &mut t.kind {
                anchor(&mut k.kubeconfig);
                k.registry_log.iter_mut().for_each(anchor);
            }
        }
        for v in &mut self.variants {
            match &mut v.source {
                ImageSource::Synthetic(_) => {}
                ImageSource::Layout(l) => anchor(&mut l.path),
                ImageSource::Registry(r) => {
                    r.access.ca_file.iter_mut().for_each(anchor);
                    r.access.docker_config.iter_mut().for_each(anchor);
                }
            }
        }
    }

    /// Parses a scenario from TOML text, applies `overrides` in order, and validates the result.
    /// `origin` names the text in messages (a file name); its file stem is the default `name`.
    ///
    /// # Errors
    /// [`ScenarioError::Parse`] (with the line), [`ScenarioError::Override`] or
    /// [`ScenarioError::Invalid`] (every problem validation found).
    pub fn parse(text: &str, origin: &str, overrides: &[Override]) -> Result<Self, ScenarioError> {
        let parse_error = |source| ScenarioError::Parse {
            origin: origin.to_owned(),
            source: Box::new(source),
        };
        let mut shape: file::ScenarioFile = toml::from_str(text).map_err(parse_error)?;
        if !overrides.is_empty() {
            let mut table: toml::Table = text.parse().map_err(parse_error)?;
            for o in overrides {
                shape = o
                    .apply(&mut table)
                    .map_err(|source| ScenarioError::Override {
                        origin: origin.to_owned(),
                        source,
                    })?;
            }
        }
        let default_name = Path::new(origin)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        shape
            .into_scenario(&default_name)
            .map_err(|problems| ScenarioError::Invalid {
                origin: origin.to_owned(),
                problems,
            })
    }

    /// Whether `run` can run this scenario as it is (the fleet model runs more: see
    /// `validate::run_problems`); `origin` names the file in the error.
    ///
    /// # Errors
    /// [`ScenarioError::Invalid`] listing each target `run` cannot deploy.
    pub fn check_runnable(&self, origin: &str) -> Result<(), ScenarioError> {
        let problems = validate::run_problems(self);
        if problems.is_empty() {
            return Ok(());
        }
        Err(ScenarioError::Invalid {
            origin: origin.to_owned(),
            problems: validate::Problems(problems),
        })
    }

    /// Nodes over the whole run: the `nodes` present at the epoch plus every wave's `new_nodes`.
    pub fn total_nodes(&self) -> u32 {
        let added: u64 = match &self.arrival {
            Arrival::Waves { waves } => waves.iter().map(|w| u64::from(w.new_nodes)).sum(),
            Arrival::Burst | Arrival::Ramp { .. } => 0,
        };
        saturate(u64::from(self.nodes) + added)
    }

    /// Pods per repetition of one (variant, target), over all nodes and waves.
    pub fn total_pods(&self) -> u32 {
        saturate(self.total_pods_u64())
    }

    /// Pods per repetition of `target`: those of the nodes it pulls on (its `nodes`), less
    /// the killed node's when it kills one (`kill_owner_after`; node 0's count stands for it:
    /// every node of a burst or ramp has the same).
    pub fn target_pods(&self, target: &Target) -> u32 {
        let slots = self.schedule();
        let limit = target.nodes.unwrap_or(u32::MAX);
        let pulling = slots.iter().filter(|s| s.node < limit).count();
        let killed = match target.kill_owner_after {
            Some(_) => slots.iter().filter(|s| s.node == 0).count(),
            None => 0,
        };
        u32::try_from(pulling.saturating_sub(killed)).unwrap_or(u32::MAX)
    }

    fn total_pods_u64(&self) -> u64 {
        match &self.arrival {
            Arrival::Burst | Arrival::Ramp { .. } => {
                u64::from(self.nodes) * u64::from(self.pods_per_node)
            }
            Arrival::Waves { waves } => waves
                .iter()
                .map(|w| u64::from(self.wave_nodes(w)) * u64::from(w.pods_per_node))
                .sum(),
        }
    }

    fn wave_nodes(&self, wave: &Wave) -> u32 {
        if wave.new_nodes > 0 {
            wave.new_nodes
        } else {
            self.nodes
        }
    }

    /// Every pod of one repetition: its node, its scheduled offset from the epoch and its wave,
    /// ordered by offset (ties by pod index). Deterministic: the same scenario gives the same
    /// schedule.
    ///
    /// Pods are dealt round-robin across the nodes they land on (pod `i` of a group of `n` nodes
    /// goes to node `i % n`), as a spreading scheduler would, so every node gets its
    /// `pods_per_node`. `ramp` gives pod `i` of `N` the offset `over * i / N`.
    pub fn schedule(&self) -> Vec<PodSlot> {
        let mut slots = Vec::with_capacity(self.total_pods() as usize);
        let existing = NodeGroup {
            first_node: 0,
            nodes: self.nodes,
            pods_per_node: self.pods_per_node,
            wave: 0,
        };
        match &self.arrival {
            Arrival::Burst => existing.deal(&mut slots, |_, _| Duration::ZERO),
            Arrival::Ramp { over } => existing.deal(&mut slots, |i, n| {
                let nanos = over.as_nanos() * u128::from(i) / u128::from(n.max(1));
                Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
            }),
            Arrival::Waves { waves } => {
                let mut next_new_node = self.nodes;
                for (w, wave) in waves.iter().enumerate() {
                    let first_node = if wave.new_nodes > 0 {
                        let first = next_new_node;
                        next_new_node = next_new_node.saturating_add(wave.new_nodes);
                        first
                    } else {
                        0
                    };
                    let group = NodeGroup {
                        first_node,
                        nodes: self.wave_nodes(wave),
                        pods_per_node: wave.pods_per_node,
                        wave: saturate(w as u64),
                    };
                    group.deal(&mut slots, |_, _| wave.at);
                }
            }
        }
        slots.sort_by_key(|s| (s.offset, s.pod));
        slots
    }

    /// The variant named `name`.
    pub fn variant(&self, name: &str) -> Option<&Variant> {
        self.variants.iter().find(|v| v.name == name)
    }

    /// The target named `name`.
    pub fn target(&self, name: &str) -> Option<&Target> {
        self.targets.iter().find(|t| t.name == name)
    }

    /// Every problem with the values, each with its field path (`targets[1].url`). Empty when the
    /// scenario is valid. [`Scenario::parse`] already calls this; it is public for scenarios built
    /// or changed in code.
    pub fn validate(&self) -> Vec<Problem> {
        validate::problems(self)
    }

    /// Things that are allowed but probably not meant, or that limit what a run can report (a
    /// platform missing from a synthetic image, a variant without registry-side accounting), for
    /// the report's warnings.
    pub fn warnings(&self) -> Vec<String> {
        validate::warnings(self)
    }
}

impl TargetKind {
    /// The kind as the file writes it: `"direct"`, `"cache-daemon"`, ...
    pub fn name(&self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::CacheDaemon { .. } => "cache-daemon",
            Self::Mirror { .. } => "mirror",
            Self::DistributionProxy => "distribution-proxy",
            Self::Nginx { .. } => "nginx",
            Self::Kubernetes(_) => "kubernetes",
        }
    }
}

impl Runtime {
    /// `max_parallel_image_pulls` as a limit: `None` when unlimited (`0`).
    pub fn parallel_image_pulls_limit(&self) -> Option<u32> {
        (self.max_parallel_image_pulls > 0).then_some(self.max_parallel_image_pulls)
    }
}

impl Default for Runtime {
    fn default() -> Self {
        Self {
            max_concurrent_downloads: 3,
            max_parallel_image_pulls: 1,
            unpack: true,
            keep_snapshots: false,
            puller: PullerKind::Harness,
        }
    }
}

impl Readiness {
    /// How many of an image's `total_files` files the container reads at start:
    /// `ceil(read_fraction * total_files)`, so any positive fraction reads at least one file.
    pub fn files_to_read(&self, total_files: u64) -> u64 {
        let n = (self.read_fraction.clamp(0.0, 1.0) * total_files as f64).ceil() as u64;
        n.min(total_files)
    }

    /// When the pod turns ready, as an offset from the epoch: the first probe at or after
    /// `init_done` (when reads and `init` finished). Probes run at `started +
    /// probe_initial_delay + k * probe_period`, `k >= 0`.
    pub fn ready_offset(&self, started: Duration, init_done: Duration) -> Duration {
        let first = started + self.probe_initial_delay;
        if init_done <= first || self.probe_period.is_zero() {
            return first.max(init_done);
        }
        let behind = (init_done - first).as_nanos();
        let period = self.probe_period.as_nanos();
        let probes = behind.div_ceil(period);
        let nanos = u64::try_from(probes * period).unwrap_or(u64::MAX);
        first + Duration::from_nanos(nanos)
    }
}

impl Default for Readiness {
    fn default() -> Self {
        Self {
            read_fraction: 0.0,
            init: Duration::ZERO,
            probe_period: Duration::from_secs(1),
            probe_initial_delay: Duration::ZERO,
        }
    }
}

impl fmt::Display for Arrival {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Burst => f.write_str("burst"),
            Self::Ramp { over } => write!(f, "ramp over {}", crate::scenario::units::Span(*over)),
            Self::Waves { waves } => write!(f, "{} waves", waves.len()),
        }
    }
}

/// Consecutive nodes that get the same number of pods at once: the scenario's nodes, or a wave's.
struct NodeGroup {
    first_node: u32,
    nodes: u32,
    pods_per_node: u32,
    wave: u32,
}

impl NodeGroup {
    /// Appends the group's pods to `slots`, dealt round-robin over its nodes; `offset(i, n)` is
    /// the scheduled offset of the group's pod `i` of `n`.
    fn deal(&self, slots: &mut Vec<PodSlot>, offset: impl Fn(u64, u64) -> Duration) {
        let count = u64::from(self.nodes) * u64::from(self.pods_per_node);
        for i in 0..count {
            slots.push(PodSlot {
                pod: saturate(slots.len() as u64),
                node: self.first_node + saturate(i % u64::from(self.nodes)),
                offset: offset(i, count),
                wave: self.wave,
            });
        }
    }
}

fn saturate(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// `Duration` as a [`crate::scenario::units::Span`] string (`"250ms"`).
pub(crate) mod span_serde {
    use std::time::Duration;

    use crate::scenario::units::Span;

    pub(crate) fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        serde::Serialize::serialize(&Span(*d), s)
    }

    pub(crate) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Duration, D::Error> {
        <Span as serde::Deserialize>::deserialize(d).map(|s| s.0)
    }
}

/// `Option<Duration>` as an optional [`crate::scenario::units::Span`] string.
pub(crate) mod opt_span_serde {
    use std::time::Duration;

    use crate::scenario::units::Span;

    pub(crate) fn serialize<S: serde::Serializer>(
        d: &Option<Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        serde::Serialize::serialize(&d.map(Span), s)
    }

    pub(crate) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        <Option<Span> as serde::Deserialize>::deserialize(d).map(|s| s.map(|s| s.0))
    }
}

/// `Platform` as its `os/arch[/variant]` string.
fn platform_str<S: serde::Serializer>(p: &Platform, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(p)
}

impl<'de> serde::Deserialize<'de> for Scenario {
    /// Reads the file's shape back (as `result.json` stores it) and validates it.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let shape = <file::ScenarioFile as serde::Deserialize>::deserialize(d)?;
        shape
            .into_scenario("")
            .map_err(<D::Error as serde::de::Error>::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
nodes = 2
pods_per_node = 3

[[variants]]
name = "app"
[[variants.synthetic.layers]]
size = "1MiB"
files = 4

[[targets]]
kind = "direct"
"#;

    fn parse(text: &str) -> Result<Scenario, ScenarioError> {
        Scenario::parse(text, "dir/minimal.toml", &[])
    }

    fn with(extra: &str) -> String {
        format!("{MINIMAL}\n{extra}")
    }

    fn problems(text: &str) -> Vec<String> {
        match parse(text) {
            Err(ScenarioError::Invalid { problems, .. }) => {
                problems.0.iter().map(ToString::to_string).collect()
            }
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    fn overrides(list: &[&str]) -> Vec<Override> {
        list.iter().map(|o| Override::parse(o).unwrap()).collect()
    }

    #[test]
    fn nodes_are_tasks_unless_the_network_says_namespaces() {
        let s = parse(MINIMAL).unwrap();
        assert_eq!(s.network.nodes, NodeMode::Tasks);
        let json = serde_json::to_value(&s).unwrap();
        assert!(json.get("network").is_none(), "the default is not written");
        let ns = parse(&with(
            "[network]\nnodes = \"namespaces\"\n[[targets]]\nname = \"c\"\nkind = \"cache-daemon\"\nplacement = \"cluster\"\n[[targets]]\nname = \"n\"\nkind = \"nginx\"\nplacement = \"per-node\"\n",
        ))
        .unwrap();
        assert!(ns.network.namespaces());
        assert_eq!(
            ns.targets[1].kind,
            TargetKind::CacheDaemon {
                placement: Placement::Cluster
            }
        );
        let back: Scenario = serde_json::from_value(serde_json::to_value(&ns).unwrap()).unwrap();
        assert_eq!(back, ns);
        let nginx = parse(&with("[[targets]]\nname = \"n\"\nkind = \"nginx\"\n")).unwrap();
        assert_eq!(
            nginx.targets[1].kind,
            TargetKind::Nginx {
                placement: Placement::Shared
            }
        );
    }

    #[test]
    fn what_nodes_in_namespaces_need_and_cannot_do_is_said() {
        // Loads (the fleet model runs it with nodes as tasks), but `run` refuses it up front.
        let tasks = parse(&with(
            "[[targets]]\nname = \"c\"\nkind = \"cache-daemon\"\nplacement = \"cluster\"\n[[targets]]\nname = \"n\"\nkind = \"nginx\"\nplacement = \"per-node\"\n",
        ))
        .unwrap();
        let Err(ScenarioError::Invalid {
            problems: found, ..
        }) = tasks.check_runnable("s.toml")
        else {
            panic!("cluster and per-node nginx with nodes as tasks must not be runnable");
        };
        let said: Vec<String> = found.0.iter().map(ToString::to_string).collect();
        assert_eq!(
            said,
            [
                "targets[1].placement: cache-daemon with placement = \"cluster\" runs a process inside every node, so `run` needs [network] nodes = \"namespaces\" (or model the scenario with `bench-harness model`)",
                "targets[2].placement: nginx with placement = \"per-node\" runs a process inside every node, so `run` needs [network] nodes = \"namespaces\" (or model the scenario with `bench-harness model`)",
            ]
        );
        let ns = problems(&with(
            "[network]\nnodes = \"namespaces\"\n[[targets]]\nkind = \"mirror\"\nurl = \"http://127.0.0.1:5001\"\n[[targets]]\nkind = \"distribution-proxy\"\n",
        ));
        assert_eq!(ns.len(), 2, "{ns:?}");
        assert!(
            ns[0].starts_with(
                "targets[1].kind: a mirror the harness did not start cannot be reached"
            ),
            "{ns:?}"
        );
        assert!(
            ns[1].starts_with("targets[2].kind: distribution-proxy runs on the host's loopback"),
            "{ns:?}"
        );
        let cluster_nginx = problems(&with(
            "[network]\nnodes = \"namespaces\"\n[[targets]]\nname = \"n\"\nkind = \"nginx\"\nplacement = \"cluster\"\n",
        ));
        assert_eq!(
            cluster_nginx,
            ["targets[1].placement: nginx runs \"shared\" (one for all nodes) or \"per-node\"; \"cluster\" is cache-daemon's mode"]
        );
        let Err(ScenarioError::Parse { source, .. }) = parse(&with("[network]\nnodes = \"vms\"\n"))
        else {
            panic!("an unknown node mode parses")
        };
        assert!(
            source.to_string().contains("unknown variant `vms`"),
            "{source}"
        );
    }

    #[test]
    fn minimal_scenario_takes_defaults() {
        let s = parse(MINIMAL).unwrap();
        assert_eq!(s.name, "minimal");
        assert_eq!(s.description, "");
        assert_eq!(
            (s.nodes, s.pods_per_node, s.repetitions, s.seed),
            (2, 3, 1, 0)
        );
        assert_eq!(s.platform, Platform::host());
        assert_eq!(s.arrival, Arrival::Burst);
        assert_eq!(s.targets[0].name, "direct");
        assert_eq!(s.runtime, Runtime::default());
        assert_eq!(s.runtime.parallel_image_pulls_limit(), Some(1));
        assert_eq!(s.readiness, Readiness::default());
        assert_eq!(s.slo, Slo::default());
        assert_eq!(s.registry, RegistryModel::default());
        assert_eq!((s.total_nodes(), s.total_pods()), (2, 6));
    }

    #[test]
    fn shape_errors_name_the_file_and_line() {
        let cases = [
            (
                with("[runtime]\nunpak = false"),
                15,
                "unknown field `unpak`",
            ),
            (with("[slo]\np95_ready = 30"), 15, "duration"),
            (
                MINIMAL.replace("files = 4", "files = \"four\""),
                9,
                "invalid type",
            ),
            (
                with("[[targets]]\nkind = \"squid\""),
                15,
                "unknown variant `squid`",
            ),
            (
                with("[registry]\negress = \"1Gbps\""),
                15,
                "invalid bandwidth \"1Gbps\"",
            ),
            (format!("nodes = 3{MINIMAL}"), 2, "duplicate key"),
        ];
        for (text, line, needle) in cases {
            let err = parse(&text).unwrap_err();
            let shown = format!("{err}");
            let chain = format!("{:#}", anyhow::Error::from(err));
            assert!(shown.contains("dir/minimal.toml"), "{shown}");
            // The line is said once, by the message or by the parser's own (with a snippet).
            assert_eq!(
                chain.matches(&format!("line {line}")).count(),
                1,
                "{chain}\n---\n{text}"
            );
            assert!(chain.contains(needle), "{chain}");
        }
    }

    #[test]
    fn validation_reports_every_problem_with_its_path() {
        let text = r#"
name = "bad name"
nodes = 0
pods_per_node = 1
repetitions = 0
platform = "linux"

[arrival]
mode = "ramp"

[[variants]]
name = "App"
[variants.synthetic]
compression = "zstd"
level = 30
platforms = ["linux/amd64", "windows"]
[[variants.synthetic.layers]]
size = "3B"
files = 4
compressibility = 1.5

[[variants]]
name = "b"

[[variants]]
name = "b"
[[variants.synthetic.layers]]
size = "1KiB"
files = 0

[[targets]]
kind = "mirror"

[[targets]]
kind = "direct"
url = "http://x"

[[targets]]
kind = "direct"
placement = "shared"

[[targets]]
name = "m2"
kind = "mirror"
url = "ftp://x"

[registry.throttle]
requests_per_second = 0.0

[readiness]
read_fraction = 1.5
probe_period = "0s"

[slo]
p95_ready = "0s"
"#;
        let got = problems(text);
        let want = [
            "platform: \"linux\" is not a platform",
            "arrival.over: required for mode = \"ramp\"",
            "variants[1]: needs an image source",
            "targets[0].url: required for kind = \"mirror\"",
            "targets[1].url: not a setting of kind = \"direct\"",
            "targets[2].placement: not a setting of kind = \"direct\"",
            "name: \"bad name\"",
            "nodes: must be at least 1",
            "repetitions: must be at least 1",
            "variants[0].name: \"App\"",
            "variants[0].synthetic.layers[0].size: 3B is less than one byte for each of its 4 files",
            "variants[0].synthetic.layers[0].compressibility: 1.5 is not in [0, 1]",
            "variants[0].synthetic.level: 30 is not a zstd level (1-22)",
            "variants[0].synthetic.platforms[1]: \"windows\" is not a platform",
            "variants[2].name: \"b\" is used by an earlier variant",
            "variants[2].synthetic.layers[0].files: must be at least 1",
            "targets[2].name: \"direct\" is used by an earlier target",
            "targets[3].url: \"ftp://x\": write http://host[:port]",
            "registry.throttle.requests_per_second: 0 must be a positive number",
            "readiness.read_fraction: 1.5 is not in [0, 1]",
            "readiness.probe_period: must be positive",
            "slo.p95_ready: must be positive",
        ];
        for w in want {
            assert!(
                got.iter().any(|g| g.starts_with(w)),
                "missing {w:?} in\n{}",
                got.join("\n")
            );
        }
        assert_eq!(got.len(), want.len(), "{}", got.join("\n"));
    }

    #[test]
    fn peers_shaping_and_real_pullers_are_checked() {
        let s = parse(&with(
            "[registry]\nnetns_rate = \"200Mbit\"\n[runtime]\npuller = \"skopeo\"\n[[targets]]\nkind = \"nginx\"\n[[targets]]\nkind = \"distribution-proxy\"",
        ))
        .unwrap();
        assert_eq!(
            s.registry.netns_rate,
            Some(
                "200Mbit"
                    .parse::<crate::scenario::units::Bandwidth>()
                    .unwrap()
            )
        );
        assert_eq!(s.runtime.puller, PullerKind::Skopeo);
        assert_eq!(
            s.targets.iter().map(|t| t.kind.name()).collect::<Vec<_>>(),
            ["direct", "nginx", "distribution-proxy"]
        );
        let straight = "[[variants]]\nname = \"remote\"\n[variants.registry]\nimage = \"127.0.0.1:5000/a:b\"\ninsecure = true\nmirror = false";
        assert_eq!(
            problems(&with(&format!(
                "{straight}\n[[targets]]\nkind = \"nginx\"\n[runtime]\npuller = \"ctr\""
            ))),
            [
                "targets[1].kind: nginx is started in front of the embedded registry, but variant remote is pulled straight from a real registry (mirror = false); set mirror = true",
                "variants[1].registry.mirror: puller = \"ctr\" pulls from the embedded registry or a target in front of it, without credentials; set mirror = true",
            ]
        );
        assert_eq!(
            problems(&with("[runtime]\npuller = \"ctr\"").replace("nodes = 2", "nodes = 17")),
            ["runtime.puller: \"ctr\" runs one containerd per node; this scenario has 17 nodes, at most 16 are allowed"]
        );
        let warned = parse(&with(&format!(
            "{straight}\n[registry]\nnetns_rate = \"1Gbit\""
        )))
        .unwrap();
        assert!(
            warned
                .warnings()
                .iter()
                .any(|w| w.starts_with("variant remote: registry.netns_rate shapes only")),
            "{:?}",
            warned.warnings()
        );
        let err = parse(&with("[runtime]\npuller = \"docker\"")).unwrap_err();
        assert!(format!("{:#}", anyhow::Error::from(err)).contains("unknown variant `docker`"));
    }

    #[test]
    fn sidecars_name_other_embedded_variants_once() {
        let variant = |name: &str, sidecars: &str| {
            format!("[[variants]]\nname = \"{name}\"\nsidecars = {sidecars}\n[[variants.synthetic.layers]]\nsize = \"1MiB\"\nfiles = 4\n")
        };
        let straight = "[[variants]]\nname = \"remote\"\n[variants.registry]\nimage = \"127.0.0.1:5000/a:b\"\nmirror = false\n";
        let ok = parse(&with(&variant("mesh", "[\"app\"]"))).unwrap();
        assert_eq!(ok.variants[1].sidecars, ["app"]);
        assert!(ok.variants[0].sidecars.is_empty());
        for (extra, expected) in [
            (
                variant("mesh", "[\"proxy\"]"),
                "variants[1].sidecars[0]: \"proxy\" is not a variant of this scenario (variants: app, mesh)",
            ),
            (
                variant("mesh", "[\"mesh\"]"),
                "variants[1].sidecars[0]: \"mesh\" is this variant itself; name other variants (its own image is pulled anyway)",
            ),
            (
                variant("mesh", "[\"app\", \"app\"]"),
                "variants[1].sidecars[1]: \"app\" is listed twice",
            ),
            (
                format!("{straight}{}", variant("mesh", "[\"remote\"]")),
                "variants[2].sidecars[0]: variant remote is pulled straight from its registry (mirror = false), but a sidecar's image must come through the burst's target from the embedded registry like the main image; set mirror = true on remote",
            ),
            (
                straight.replace("\"remote\"\n", "\"remote\"\nsidecars = [\"app\"]\n"),
                "variants[1].sidecars: variant remote is pulled straight from its registry (mirror = false), but a pod's images must all come through the burst's target from the embedded registry; set mirror = true",
            ),
        ] {
            assert_eq!(problems(&with(&extra)), [expected], "{extra}");
        }
        // A typo in the field's name is a shape error with its line.
        let err = parse(&with("[[variants]]\nname = \"mesh\"\nsidecar = [\"app\"]")).unwrap_err();
        let chain = format!("{:#}", anyhow::Error::from(err));
        assert!(chain.contains("line"), "{chain}");
    }

    #[test]
    fn arrival_fields_must_match_the_mode() {
        let got = problems(&with(
            "[arrival]\nover = \"1s\"\n[[arrival.waves]]\nat = \"0s\"\npods_per_node = 1",
        ));
        assert_eq!(
            got,
            [
                "arrival.over: only for mode = \"ramp\", not \"burst\"",
                "arrival.waves: only for mode = \"waves\", not \"burst\""
            ]
        );
        let got = problems(&with(
            "[arrival]\nmode = \"waves\"\n[[arrival.waves]]\nat = \"5s\"\npods_per_node = 0\n[[arrival.waves]]\nat = \"1s\"\npods_per_node = 1",
        ));
        assert_eq!(
            got,
            [
                "arrival.waves[0].pods_per_node: must be at least 1",
                "arrival.waves[1].at: 1s is before the previous wave's 5s; waves must be in order"
            ]
        );
        assert_eq!(
            problems(&with("[arrival]\nmode = \"ramp\"\nover = \"0s\"")),
            ["arrival.over: must be positive (for pods all at once, use mode = \"burst\")"]
        );
    }

    #[test]
    fn overrides_apply_after_the_file_and_keep_its_line_numbers() {
        let s = Scenario::parse(
            MINIMAL,
            "minimal.toml",
            &overrides(&[
                "nodes=8",
                "registry.egress=100Mbit",
                "arrival.mode=ramp",
                "arrival.over=10s",
                "targets[0].name=origin",
                "slo.p95_ready=30s",
            ]),
        )
        .unwrap();
        assert_eq!(s.nodes, 8);
        assert_eq!(s.registry.egress.unwrap().bytes_per_sec, 12_500_000);
        assert_eq!(
            s.arrival,
            Arrival::Ramp {
                over: Duration::from_secs(10)
            }
        );
        assert_eq!(s.targets[0].name, "origin");
        assert_eq!(s.slo.p95_ready, Some(Duration::from_secs(30)));

        // The file's own mistake is reported with its line even when overrides are given.
        let err =
            Scenario::parse(&with("bogus = 1"), "m.toml", &overrides(&["nodes=8"])).unwrap_err();
        let chain = format!("{:#}", anyhow::Error::from(err));
        assert!(chain.contains("line 14"), "{chain}");

        // An unknown key or a wrong type in an override names the override.
        for (o, needle) in [
            ("nodez=8", "unknown field `nodez`"),
            ("runtime.unpak=false", "unknown field `unpak`"),
            ("nodes=many", "invalid type"),
            ("registry.egress=fast", "invalid bandwidth"),
        ] {
            let err = Scenario::parse(MINIMAL, "m.toml", &overrides(&[o])).unwrap_err();
            let chain = format!("{:#}", anyhow::Error::from(err));
            assert!(chain.contains(&format!("--set {o}")), "{chain}");
            assert!(chain.contains(needle), "{chain}");
        }
        // Values an override sets are validated like the file's.
        let err = Scenario::parse(MINIMAL, "m.toml", &overrides(&["nodes=0"])).unwrap_err();
        assert!(
            err.to_string().contains("nodes: must be at least 1"),
            "{err}"
        );
    }

    #[test]
    fn platform_missing_from_an_image_is_a_warning_not_an_error() {
        let text = format!("platform = \"linux/s390x\"\n{MINIMAL}");
        let s = parse(&text).unwrap();
        let warnings = s.warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("no linux/s390x manifest (it has linux/amd64)"),
            "{warnings:?}"
        );
    }

    #[test]
    fn a_target_limited_to_fewer_nodes_or_killing_one_counts_only_the_pods_it_schedules() {
        let s = parse(MINIMAL).unwrap();
        let mut t = s.targets[0].clone();
        assert_eq!(s.target_pods(&t), s.total_pods());
        t.nodes = Some(1);
        assert_eq!(s.target_pods(&t), s.total_pods() / 2);
        t.nodes = Some(99);
        assert_eq!(s.target_pods(&t), s.total_pods());
        t.nodes = None;
        t.kill_owner_after = Some(Duration::from_secs(1));
        assert_eq!(s.target_pods(&t), s.total_pods() / 2);
    }

    #[test]
    fn schedule_burst_and_ramp_deal_pods_round_robin() {
        let s = parse(MINIMAL).unwrap();
        let slots = s.schedule();
        assert_eq!(slots.len(), 6);
        let nodes: Vec<u32> = slots.iter().map(|p| p.node).collect();
        assert_eq!(nodes, [0, 1, 0, 1, 0, 1]);
        assert!(slots.iter().all(|p| p.offset.is_zero() && p.wave == 0));

        let s = Scenario::parse(
            MINIMAL,
            "m.toml",
            &overrides(&["arrival.mode=ramp", "arrival.over=6s"]),
        )
        .unwrap();
        let offsets: Vec<u64> = s.schedule().iter().map(|p| p.offset.as_secs()).collect();
        assert_eq!(offsets, [0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn schedule_waves_put_new_nodes_after_existing_ones() {
        let s = parse(&with(
            r#"[arrival]
mode = "waves"
[[arrival.waves]]
at = "0s"
pods_per_node = 1
[[arrival.waves]]
at = "30s"
pods_per_node = 2
new_nodes = 3
[[arrival.waves]]
at = "30s"
pods_per_node = 1
new_nodes = 1
[[arrival.waves]]
at = "60s"
pods_per_node = 1"#,
        ))
        .unwrap();
        assert_eq!(s.total_nodes(), 2 + 3 + 1);
        assert_eq!(s.total_pods(), 2 + 6 + 1 + 2);
        let got: Vec<(u32, u64, u32)> = s
            .schedule()
            .iter()
            .map(|p| (p.node, p.offset.as_secs(), p.wave))
            .collect();
        assert_eq!(
            got,
            [
                (0, 0, 0),
                (1, 0, 0),
                (2, 30, 1),
                (3, 30, 1),
                (4, 30, 1),
                (2, 30, 1),
                (3, 30, 1),
                (4, 30, 1),
                (5, 30, 2),
                (0, 60, 3),
                (1, 60, 3),
            ]
        );
        let pods: Vec<u32> = s.schedule().iter().map(|p| p.pod).collect();
        assert_eq!(pods, (0..11).collect::<Vec<_>>());
    }

    #[test]
    fn too_many_pods_is_refused() {
        let got = problems(
            &MINIMAL
                .replace("nodes = 2", "nodes = 100000")
                .replace("pods_per_node = 3", "pods_per_node = 11"),
        );
        assert_eq!(
            got,
            ["nodes: 1100000 pods in total is more than the 1000000 a run can simulate"]
        );
    }

    #[test]
    fn serializes_back_to_a_scenario_that_parses_the_same() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../scenarios/quickstart.toml"
        ))
        .unwrap();
        let mut s = Scenario::parse(&text, "quickstart.toml", &[]).unwrap();
        s.targets.push(Target {
            name: "m".into(),
            kind: TargetKind::Mirror {
                url: "http://m:5000".into(),
            },
            nodes: None,
            kill_owner_after: None,
        });
        s.arrival = Arrival::Waves {
            waves: vec![Wave {
                at: Duration::from_millis(1500),
                pods_per_node: 2,
                new_nodes: 1,
            }],
        };
        let toml_text = toml::to_string(&s).unwrap();
        assert_eq!(
            Scenario::parse(&toml_text, "again.toml", &[]).unwrap(),
            s,
            "{toml_text}"
        );
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(
            serde_json::from_str::<Scenario>(&json).unwrap(),
            s,
            "{json}"
        );
        assert!(
            json.contains(r#""kind":"cache-daemon","placement":"shared""#),
            "{json}"
        );
    }

    #[test]
    fn registry_and_layout_sources_parse_validate_and_round_trip() {
        let text = r#"
nodes = 1
pods_per_node = 1

[[variants]]
name = "app"
[variants.registry]
image = "127.0.0.1:5000/test/app:v1"
insecure = true
username = "bench"
password_env = "APP_PASSWORD"

[[variants]]
name = "pinned"
[variants.registry]
image = "ghcr.io/o/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
mirror = false
ca_file = "certs/ca.pem"
docker_config = "~/.docker/config.json"

[[variants]]
name = "local"
[variants.layout]
path = "layouts/app"
tag = "v2"

[[targets]]
kind = "direct"
"#;
        let mut s = parse(text).unwrap();
        let ImageSource::Registry(app) = &s.variants[0].source else {
            panic!("registry source");
        };
        assert!(app.mirror, "mirror defaults to true");
        assert_eq!(
            app.reference().unwrap().to_string(),
            "127.0.0.1:5000/test/app:v1"
        );
        assert_eq!(app.access.password_env.as_deref(), Some("APP_PASSWORD"));
        let warnings = s.warnings();
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("variant pinned") && w.contains("accounting")),
            "{warnings:?}"
        );
        let toml_text = toml::to_string(&s).unwrap();
        assert_eq!(
            Scenario::parse(&toml_text, "again.toml", &[]).unwrap(),
            s,
            "{toml_text}"
        );
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(
            serde_json::from_str::<Scenario>(&json).unwrap(),
            s,
            "{json}"
        );

        s.anchor_paths(Path::new("/scenarios"));
        let ImageSource::Registry(pinned) = &s.variants[1].source else {
            panic!("registry source");
        };
        assert_eq!(
            pinned.access.ca_file.as_deref(),
            Some(Path::new("/scenarios/certs/ca.pem"))
        );
        assert_eq!(
            pinned.access.docker_config.as_deref(),
            Some(Path::new("~/.docker/config.json")),
            "~ is expanded when used, not anchored"
        );
        let ImageSource::Layout(local) = &s.variants[2].source else {
            panic!("layout source");
        };
        assert_eq!(local.path, Path::new("/scenarios/layouts/app"));
    }

    #[test]
    fn image_source_mistakes_are_named() {
        let base = "nodes = 1\npods_per_node = 1\n[[targets]]\nkind = \"direct\"\n[[variants]]\nname = \"a\"\n";
        let cases = [
            (
                "[variants.registry]\nimage = \"r:5000/a:v1\"\nusername = \"u\"\npassword = \"hunter2\"",
                vec![
                    "variants[0].registry.password: never write a password",
                    "variants[0].registry: username and password_env go together",
                ],
            ),
            (
                "[variants.registry]\nimage = \"Bad/Name\"\ninsecure = true\nca_file = \"ca.pem\"",
                vec![
                    "variants[0].registry.image: \"Bad/Name\"",
                    "variants[0].registry: insecure (plain HTTP) and ca_file",
                ],
            ),
            (
                "[variants.registry]\nimage = \"r/a\"\nusername = \"u\"\npassword_env = \"not a var\"",
                vec!["variants[0].registry.password_env: \"not a var\" is not an environment variable name"],
            ),
            (
                "[variants.layout]\npath = \"x\"\n[[variants.synthetic.layers]]\nsize = 1\nfiles = 1",
                vec!["variants[0]: has 2 image sources (synthetic, layout)"],
            ),
            (
                "[variants.layout]\npath = \"x\"\ntag = \"-bad\"",
                vec!["variants[0].layout.tag: \"-bad\" is not a tag"],
            ),
        ];
        for (source, want) in cases {
            let got = problems(&format!("{base}{source}"));
            for w in &want {
                assert!(
                    got.iter().any(|g| g.starts_with(w)),
                    "missing {w:?} in {got:#?}"
                );
            }
            assert_eq!(got.len(), want.len(), "{got:#?}");
            assert!(!got.iter().any(|g| g.contains("hunter2")), "{got:#?}");
        }
        let err = parse(&format!(
            "{base}[variants.registry]\nimage = \"r/a\"\nmirorr = false"
        ))
        .unwrap_err();
        let shown = format!("{:#}", anyhow::Error::from(err));
        assert!(
            shown.contains("line 9") && shown.contains("unknown field `mirorr`"),
            "{shown}"
        );
    }

    #[test]
    fn readiness_turns_ready_at_the_first_probe_after_init() {
        let r = Readiness {
            read_fraction: 0.1,
            init: Duration::ZERO,
            probe_period: Duration::from_millis(500),
            probe_initial_delay: Duration::from_millis(100),
        };
        let ms = Duration::from_millis;
        let cases = [
            // (started, init_done, ready)
            (ms(1000), ms(1000), ms(1100)),
            (ms(1000), ms(1100), ms(1100)),
            (ms(1000), ms(1101), ms(1600)),
            (ms(1000), ms(1600), ms(1600)),
            (ms(1000), ms(2000), ms(2100)),
        ];
        for (started, init_done, want) in cases {
            assert_eq!(
                r.ready_offset(started, init_done),
                want,
                "{started:?} {init_done:?}"
            );
        }
        assert_eq!(r.files_to_read(64), 7);
        assert_eq!(r.files_to_read(0), 0);
        assert_eq!(
            Readiness {
                read_fraction: 0.0,
                ..r.clone()
            }
            .files_to_read(64),
            0
        );
        assert_eq!(
            Readiness {
                read_fraction: 1.0,
                ..r
            }
            .files_to_read(64),
            64
        );
    }
}
