//! Targets: what the nodes pull through, set up fresh for each burst and torn down after it.
//!
//! - `direct`: each node talks to the registry's port for that node (its own link).
//! - `cache-daemon`, per node: one daemon per node, each filling from the registry over that
//!   node's link; the node's pulls go to its own daemon over loopback.
//! - `cache-daemon`, shared: one daemon for every node, filling over the registry's shared port.
//! - `mirror`: a URL the user runs.
//! - `distribution-proxy`, `nginx`: peers the harness starts itself (`peer.rs`), one instance for
//!   all nodes in front of the registry's shared listener.
//! - `kubernetes`: not set up here; its bursts run on the cluster (`run/kube.rs`).
//!
//! A target that sits across the node links (shared, mirror, peers, or a real registry as the
//! upstream of a variant with `mirror = false`, which has no per-node ports) leaves the links to
//! be paced by the nodes' clients. With nodes as tasks our daemon runs in this process (the
//! fallback without root, named so in the report); with nodes in namespaces every cache is a
//! real process inside the nodes (`nodes/caches.rs`) and the kernel shapes every link. The
//! harness talks to every target over HTTP only.

pub mod peer;

use std::path::{Path, PathBuf};
use std::time::Duration;

use stampede_oci::Endpoint;

use crate::image::remote::Remote;
use crate::nodes::caches::{CacheError, CacheKind, CacheSpec};
use crate::nodes::{CacheProcessFacts, NodeCaches, NodeNet};
use crate::registry::EmbeddedRegistry;
use crate::scenario::{Placement, Target, TargetKind};
use crate::target::peer::{Peer, PeerKind};

/// The registry a target fronts.
#[derive(Debug, Clone, Copy)]
pub enum Upstream<'a> {
    /// The embedded registry: one port per node, one shared.
    Embedded(&'a EmbeddedRegistry),
    /// A real registry (a variant with `mirror = false`).
    Remote(&'a Remote),
}

/// A target set up for one burst.
#[derive(Debug)]
pub struct Deployment {
    /// Where each node sends its pulls, by node index.
    pub endpoints: Vec<Endpoint>,
    /// Whether node links must be paced by the client (the target sits across the node link).
    pub client_paced_links: bool,
    /// Extra CA file the nodes' clients must trust (a real registry with a private CA).
    pub ca_file: Option<PathBuf>,
    daemons: Vec<cache_daemon::Daemon>,
    peer: Option<Peer>,
    /// The cache processes inside the nodes' namespaces.
    caches: Option<NodeCaches>,
}

/// Why a target could not be set up: the target's name, and what went wrong.
#[derive(Debug, thiserror::Error)]
#[error("target {target}")]
pub struct TargetError {
    pub target: String,
    #[source]
    pub fault: TargetFault,
}

/// What went wrong setting up a target. `&'static str` payloads are the target's kind; large
/// causes are boxed (these errors are rare).
#[derive(Debug, thiserror::Error)]
pub enum TargetFault {
    /// A URL is not usable.
    #[error(transparent)]
    Url(stampede_oci::ClientError),
    #[error("start cache-daemon")]
    Daemon(#[source] cache_daemon::StartError),
    /// A peer did not start (or its program is missing: the message names the package).
    #[error("start {0}")]
    Peer(&'static str, #[source] Box<stampede_lab::LabError>),
    #[error("{0} is started in front of the embedded registry only; the variant is pulled straight from a real registry (mirror = false)")]
    PeerUpstream(&'static str),
    #[error("start {0} in the nodes' namespaces")]
    Caches(&'static str, #[source] Box<CacheError>),
    #[error("{0} cannot run with nodes in namespaces")]
    NotInNamespaces(&'static str),
    #[error("cache-daemon in cluster mode needs [network] nodes = \"namespaces\"")]
    NeedsNamespaces,
    #[error("a kubernetes target's pods run on its cluster, not on the harness's nodes")]
    OnCluster,
    /// A blocking start or stop task died.
    #[error("start task")]
    Task(#[source] tokio::task::JoinError),
}

impl TargetFault {
    fn of(self, target: &Target) -> TargetError {
        TargetError {
            target: target.name.clone(),
            fault: self,
        }
    }
}

impl Deployment {
    /// Sets `target` up for `nodes` nodes in front of `upstream`; daemon stores go under
    /// `work`. With `net` (nodes in namespaces) caches run as processes inside the nodes.
    ///
    /// # Errors
    /// [`TargetError`] naming the target.
    pub async fn up(
        target: &Target,
        upstream: Upstream<'_>,
        nodes: u32,
        work: &Path,
        net: Option<&NodeNet>,
    ) -> Result<Self, TargetError> {
        if let (Some(net), Upstream::Embedded(registry)) = (net, upstream) {
            if !matches!(target.kind, TargetKind::Direct | TargetKind::Kubernetes(_)) {
                return Self::in_namespaces(target, net, registry.addr(), work).await;
            }
        }
        let setup = Setup {
            target,
            upstream,
            nodes,
            work,
        };
        match &target.kind {
            TargetKind::Direct => setup.direct(),
            TargetKind::CacheDaemon { placement } => setup.cache_daemons(*placement).await,
            TargetKind::Mirror { url } => {
                Ok(Self::at(vec![endpoint(target, url)?; nodes as usize], true))
            }
            TargetKind::DistributionProxy | TargetKind::Nginx { .. } => setup.peer().await,
            // Its bursts run on the cluster (`run/kube.rs`); the harness's nodes never pull.
            TargetKind::Kubernetes(_) => Err(TargetFault::OnCluster.of(target)),
        }
    }

    /// Nodes pulling from `endpoints`, with nothing started for them.
    fn at(endpoints: Vec<Endpoint>, client_paced_links: bool) -> Self {
        Self {
            endpoints,
            client_paced_links,
            ca_file: None,
            daemons: Vec::new(),
            peer: None,
            caches: None,
        }
    }

    /// The cache processes inside the nodes, for nodes in namespaces.
    async fn in_namespaces(
        target: &Target,
        net: &NodeNet,
        registry: std::net::SocketAddr,
        work: &Path,
    ) -> Result<Self, TargetError> {
        let kind = target.kind.name();
        let cache = match target.kind {
            TargetKind::CacheDaemon { placement } => CacheKind::CacheDaemon(placement),
            TargetKind::Nginx { placement } => CacheKind::Nginx(placement),
            _ => return Err(TargetFault::NotInNamespaces(kind).of(target)),
        };
        let spec = CacheSpec {
            kind: cache,
            fabric: net.fabric().clone(),
            upstream: registry,
            work: work.join(&target.name),
        };
        let caches = tokio::task::spawn_blocking(move || NodeCaches::start(spec))
            .await
            .map_err(|e| TargetFault::Task(e).of(target))?
            .map_err(|e| TargetFault::Caches(kind, Box::new(e)).of(target))?;
        let endpoints = caches
            .urls
            .iter()
            .map(|u| endpoint(target, u))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            caches: Some(caches),
            ..Self::at(endpoints, false)
        })
    }

    /// Marks the burst's start for the cache processes' CPU accounting.
    pub fn burst_started(&mut self) {
        if let Some(c) = &mut self.caches {
            c.burst_started();
        }
    }

    /// The process id of node `n`'s own cache process, when the target runs one per node.
    pub fn node_cache_pid(&self, n: u32) -> Option<u32> {
        self.caches.as_ref().and_then(|c| c.node_pid(n))
    }

    /// What each cache process inside the nodes used; empty for other targets. `stem` names
    /// their kept logs.
    pub fn cache_facts(&self, stem: &str) -> Vec<CacheProcessFacts> {
        self.caches
            .as_ref()
            .map(|c| c.facts(stem))
            .unwrap_or_default()
    }

    /// Copies a peer's or the cache processes' logs into `dir` as `<stem>.*` (made only if there
    /// is a log to keep); returns the files written. A log that cannot be copied is skipped with
    /// a warning: logs are for reading, not for the result.
    pub fn keep_logs(&self, dir: &Path, stem: &str) -> Vec<PathBuf> {
        let peer = self.peer.iter().flat_map(|p| p.log_files(stem));
        let caches = self.caches.iter().flat_map(|c| c.log_files(stem));
        let mut logs = peer.chain(caches).peekable();
        if logs.peek().is_none() {
            return Vec::new();
        }
        if let Err(error) = std::fs::create_dir_all(dir) {
            tracing::warn!(dir = %dir.display(), %error, "cannot create the logs directory");
            return Vec::new();
        }
        let mut kept = Vec::new();
        for (from, name) in logs {
            let to = dir.join(name);
            match std::fs::copy(from, &to) {
                Ok(_) => kept.push(to),
                Err(error) => tracing::warn!(from = %from.display(), %error, "cannot keep a log"),
            }
        }
        kept
    }

    /// Stops whatever `up` started.
    pub async fn down(self) {
        if let Some(caches) = self.caches {
            if let Err(error) = tokio::task::spawn_blocking(move || drop(caches)).await {
                tracing::warn!(%error, "stopping the cache processes failed");
            }
        }
        for d in self.daemons {
            d.shutdown().await;
        }
        if let Some(peer) = self.peer {
            if let Err(error) = tokio::task::spawn_blocking(move || peer.stop()).await {
                tracing::warn!(%error, "stopping a peer failed");
            }
        }
    }
}

/// `url` as an endpoint of `target`'s nodes.
fn endpoint(target: &Target, url: &str) -> Result<Endpoint, TargetError> {
    Endpoint::parse(url).map_err(|e| TargetFault::Url(e).of(target))
}

/// One target being set up with nodes as tasks: what every kind needs.
struct Setup<'a> {
    target: &'a Target,
    upstream: Upstream<'a>,
    nodes: u32,
    /// Where daemon stores and peer state go.
    work: &'a Path,
}

impl Setup<'_> {
    /// The upstream endpoint for node `n` (its own port of the embedded registry), or the
    /// shared one with `None`.
    fn upstream_for(&self, n: Option<u32>) -> Result<Endpoint, TargetError> {
        match self.upstream {
            Upstream::Embedded(registry) => endpoint(
                self.target,
                &n.and_then(|n| registry.node_url(n as usize))
                    .unwrap_or_else(|| registry.url()),
            ),
            Upstream::Remote(remote) => Ok(remote.endpoint.clone()),
        }
    }

    /// Every node's own upstream endpoint, in node order.
    fn per_node(&self) -> Result<Vec<Endpoint>, TargetError> {
        (0..self.nodes)
            .map(|n| self.upstream_for(Some(n)))
            .collect()
    }

    /// A real registry has no per-node ports: its node links are paced by the clients.
    fn remote(&self) -> Option<&Remote> {
        match self.upstream {
            Upstream::Embedded(_) => None,
            Upstream::Remote(remote) => Some(remote),
        }
    }

    /// `direct`: each node to its own port of the upstream.
    fn direct(&self) -> Result<Deployment, TargetError> {
        Ok(Deployment {
            ca_file: self.remote().and_then(|r| r.ca_file.clone()),
            ..Deployment::at(self.per_node()?, self.remote().is_some())
        })
    }

    /// `cache-daemon` in this process: one per node, each filling over its node's port, or one
    /// for every node filling over the shared port.
    async fn cache_daemons(&self, placement: Placement) -> Result<Deployment, TargetError> {
        let upstreams: Vec<Endpoint> = match placement {
            Placement::PerNode => self.per_node()?,
            Placement::Shared => vec![self.upstream_for(None)?],
            Placement::Cluster => return Err(TargetFault::NeedsNamespaces.of(self.target)),
        };
        let mut daemons = Vec::with_capacity(upstreams.len());
        for (i, upstream) in upstreams.into_iter().enumerate() {
            let mut config = cache_daemon::Config::for_upstream(
                self.work.join(format!("cache-daemon-{i}")),
                upstream,
            );
            config.server.shutdown_grace = Duration::from_secs(1);
            config.upstream.ca_file = self.remote().and_then(|r| r.ca_file.clone());
            let d = cache_daemon::start(config)
                .await
                .map_err(|e| TargetFault::Daemon(e).of(self.target))?;
            daemons.push(d);
        }
        let endpoints = (0..self.nodes as usize)
            .map(|n| endpoint(self.target, &daemons[n.min(daemons.len() - 1)].url()))
            .collect::<Result<_, _>>()?;
        let paced = self.remote().is_some() || matches!(placement, Placement::Shared);
        Ok(Deployment {
            daemons,
            ..Deployment::at(endpoints, paced)
        })
    }

    /// `distribution-proxy`, `nginx`: one peer for every node, in front of the embedded
    /// registry's shared listener.
    async fn peer(&self) -> Result<Deployment, TargetError> {
        let target = self.target;
        let kind = target.kind.name();
        let Upstream::Embedded(registry) = self.upstream else {
            return Err(TargetFault::PeerUpstream(kind).of(target));
        };
        let peer_kind = PeerKind::of(&target.kind).expect("a peer kind");
        let (shared, dir) = (registry.addr(), self.work.join(&target.name));
        let peer = tokio::task::spawn_blocking(move || Peer::start(peer_kind, shared, &dir))
            .await
            .map_err(|e| TargetFault::Task(e).of(target))?
            .map_err(|e| TargetFault::Peer(kind, Box::new(e)).of(target))?;
        let endpoints = vec![endpoint(target, &peer.url())?; self.nodes as usize];
        Ok(Deployment {
            peer: Some(peer),
            ..Deployment::at(endpoints, true)
        })
    }
}
