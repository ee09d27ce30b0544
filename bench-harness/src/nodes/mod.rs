//! The nodes: what happens on a node during a burst, from a pod asking for its images to its
//! container turning ready, whether the node is a set of tasks in this process or a network
//! namespace with a real, kernel-shaped link (`[network] nodes = "namespaces"`).
//!
//! - [`node`]: a simulated node: content store and snapshots, kubelet's pull queue, one shared
//!   pull per image and node.
//! - [`pull`]: the harness's own OCI client pull into the node's content store.
//! - [`real_puller`]: node pulls done by real clients (skopeo, ctr).
//! - [`unpack`]: decompress and untar layers into the node's snapshot directory, safely.
//! - [`container`]: the container start model (file reads, init, readiness probe).
//!
//! Only for nodes in namespaces:
//!
//! - [`NodeNet`] (this file): the run's fabric (`stampede_lab::Fabric`): one namespace per node,
//!   one for the registry, one service namespace when a target runs one process for every node,
//!   each link `tc tbf`-shaped both ways (`registry.node_link` for nodes and services,
//!   `registry.netns_rate` for the registry); and one [`NodeRuntime`] per node, the harness's
//!   own client running inside the node's namespace ([`runtime`]).
//! - [`caches`]: [`NodeCaches`], the cache processes a target runs inside the nodes.
//! - [`wire`]: [`WireSampler`], the kernel's byte counters of every link, on the burst's clock.
//! - [`usage`]: CPU seconds and peak memory of each cache process over a burst.
//! - [`fault`]: [`OwnerKill`], a cluster target's stripe owner killed mid-burst.
//!
//! The embedded registry still runs in this process (bound inside the registry's namespace),
//! its latency and egress model stay in user space (the kernel has no netem), and pods, pulls
//! and unpacking are the same code as for nodes that are tasks. The fabric is deleted when the
//! run ends, also on error or SIGINT (dropping the run's future drops this value).

pub mod caches;
pub mod container;
pub mod fault;
pub mod node;
pub mod pull;
pub mod real_puller;
pub mod runtime;
pub mod unpack;
pub mod usage;
pub mod wire;

use std::sync::Arc;

use stampede_lab::{Endpoint, Fabric, FabricConfig, LabError, Shaping};

use crate::scenario::units::Bandwidth;
use crate::scenario::{Placement, Scenario, TargetKind};

pub use caches::{CacheProcessFacts, NodeCaches};
pub use fault::OwnerKill;
pub use runtime::NodeRuntime;
pub use usage::ProcessUsage;
pub use wire::{WireSampler, WireTotals};

/// Why the nodes' namespaces could not be made.
#[derive(Debug, thiserror::Error)]
#[error("[network] nodes = \"namespaces\": cannot make the nodes' network namespaces (use nodes = \"tasks\" to run without root)")]
pub struct NodeNetError(#[source] pub LabError);

/// The run's fabric and each node's runtime; see the module doc.
#[derive(Debug)]
pub struct NodeNet {
    // Declared first: fields drop in order, so the runtimes (and their sockets) end before the
    // namespaces go.
    runtimes: Vec<Arc<NodeRuntime>>,
    fabric: Arc<Fabric>,
}

impl NodeNet {
    /// Builds the fabric for `scenario` (its total nodes, one service namespace when a target
    /// needs one) and starts each node's runtime. Blocking: a few `ip`/`tc` batches.
    ///
    /// # Errors
    /// [`NodeNetError`]: not root, iproute2 missing, or a failing `ip`/`tc` command.
    pub fn create(scenario: &Scenario) -> Result<Self, NodeNetError> {
        let shaping = |b: Option<Bandwidth>| {
            b.map(|b| Shaping {
                rate_bits_per_sec: b.bytes_per_sec.saturating_mul(8),
            })
        };
        let fabric = Fabric::create(FabricConfig {
            nodes: scenario.total_nodes() as usize,
            node_link: shaping(scenario.registry.node_link),
            registry_link: shaping(scenario.registry.netns_rate),
            services: usize::from(scenario.targets.iter().any(needs_service)),
        })
        .map_err(NodeNetError)?;
        let runtimes = fabric
            .nodes()
            .iter()
            .map(|n| NodeRuntime::start(n).map(Arc::new))
            .collect::<Result<_, _>>()
            .map_err(NodeNetError)?;
        tracing::info!(
            nodes = fabric.nodes().len(),
            hub = fabric.hub(),
            "nodes in network namespaces"
        );
        Ok(Self {
            runtimes,
            fabric: Arc::new(fabric),
        })
    }

    pub fn fabric(&self) -> &Arc<Fabric> {
        &self.fabric
    }

    pub fn registry(&self) -> &Endpoint {
        self.fabric.registry()
    }

    /// Node `n`'s namespace.
    pub fn node(&self, n: usize) -> Option<&Endpoint> {
        self.fabric.nodes().get(n)
    }

    pub fn runtime(&self, n: usize) -> Option<Arc<NodeRuntime>> {
        self.runtimes.get(n).cloned()
    }

    /// What `result.json` records about the fabric: namespaces, addresses and rates.
    pub fn facts(&self) -> serde_json::Value {
        let rate = |e: &Endpoint| e.shaping().map(|s| s.rate_bits_per_sec);
        serde_json::json!({
            "nodes": "namespaces",
            "hub": self.fabric.hub(),
            "registry_netns": self.registry().netns(),
            "registry_ip": self.registry().ip().to_string(),
            "registry_tbf_rate_bits_per_sec": rate(self.registry()),
            "node_tbf_rate_bits_per_sec": self.fabric.nodes().first().and_then(rate),
            "node_count": self.fabric.nodes().len(),
            "services": self.fabric.services().len(),
        })
    }
}

/// Whether `target` runs one process for every node, which then lives in a service namespace.
fn needs_service(target: &crate::scenario::Target) -> bool {
    matches!(
        target.kind,
        TargetKind::CacheDaemon {
            placement: Placement::Shared
        } | TargetKind::Nginx {
            placement: Placement::Shared
        }
    )
}
