//! Targets: what the nodes pull through, set up fresh for each burst and torn down after it.
//!
//! - `direct`: each node talks to the registry's port for that node (its own link).
//! - `cache-daemon`, per node: one daemon per node, in this process, each filling from the
//!   registry over that node's link; the node's pulls go to its own daemon over loopback.
//! - `cache-daemon`, shared: one daemon for every node, filling over the registry's shared port;
//!   node links are then between the nodes and the daemon, and the harness's client paces them.
//! - `mirror`: a URL the user runs; node links paced by the client as for a shared cache.
//! - `distribution-proxy`, `nginx`: peers the harness starts itself (`peer.rs`), one instance for
//!   all nodes in front of the registry's shared listener, like a shared cache-daemon; node links
//!   paced by the client. Their logs can be kept next to the results ([`Deployment::keep_logs`]).
//!
//! A variant pulled straight from a real registry (`mirror = false`) has that registry as the
//! upstream instead of the embedded one ([`Upstream::Remote`]): `direct` nodes talk to it, and a
//! `cache-daemon` fills from it with the variant's credentials and CA file. It has no per-node
//! ports, so node links are paced by the nodes' clients.
//!
//! The harness talks to every target over HTTP only; running our daemon in-process is a
//! convenience (the same binary, no build step), not a back door.

use std::path::{Path, PathBuf};
use std::time::Duration;

use stampede_oci::Endpoint;

use crate::peer::{Peer, PeerKind};
use crate::registry::EmbeddedRegistry;
use crate::remote::Remote;
use crate::scenario::{Placement, Target, TargetKind};

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
}

/// Why a target could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// A URL is not usable.
    #[error("target {target}: {source}")]
    Url {
        /// Target name.
        target: String,
        /// The cause.
        #[source]
        source: stampede_oci::ClientError,
    },
    /// Our daemon did not start.
    #[error("target {target}: start cache-daemon")]
    Daemon {
        /// Target name.
        target: String,
        /// The cause.
        #[source]
        source: cache_daemon::StartError,
    },
    /// A peer did not start (or its program is missing: the message names the package).
    #[error("target {target}: start {kind}")]
    Peer {
        /// Target name.
        target: String,
        /// Its kind.
        kind: &'static str,
        /// The cause (boxed: it is large, and this error is rare).
        #[source]
        source: Box<stampede_lab::LabError>,
    },
    /// A peer was asked to front a registry other than the embedded one.
    #[error("target {target}: {kind} is started in front of the embedded registry only; the variant is pulled straight from a real registry (mirror = false)")]
    PeerUpstream {
        /// Target name.
        target: String,
        /// Its kind.
        kind: &'static str,
    },
    /// A placement only the fleet model runs (`bench-harness model`).
    #[error("target {target}: placement = \"cluster\" is not run by this build's runner (cluster mode needs namespace nodes); model it with `bench-harness model`")]
    ModelOnly {
        /// Target name.
        target: String,
    },
    /// A blocking start or stop task died.
    #[error("target {target}: start task")]
    Task {
        /// Target name.
        target: String,
        /// The cause.
        #[source]
        source: tokio::task::JoinError,
    },
}

impl Deployment {
    /// Sets `target` up for `nodes` nodes in front of `upstream`; daemon stores go under
    /// `work`.
    ///
    /// # Errors
    /// [`TargetError`] naming the target.
    pub async fn up(
        target: &Target,
        upstream: Upstream<'_>,
        nodes: u32,
        work: &Path,
    ) -> Result<Self, TargetError> {
        let url = |u: &str| {
            Endpoint::parse(u).map_err(|source| TargetError::Url {
                target: target.name.clone(),
                source,
            })
        };
        // The upstream endpoint for node `n` (its own port of the embedded registry), or the
        // shared one with `None`.
        let upstream_for = |n: Option<u32>| match upstream {
            Upstream::Embedded(registry) => url(&n
                .and_then(|n| registry.node_url(n as usize))
                .unwrap_or_else(|| registry.url())),
            Upstream::Remote(remote) => Ok(remote.endpoint.clone()),
        };
        let (remote_paced, remote_ca) = match upstream {
            Upstream::Embedded(_) => (false, None),
            Upstream::Remote(remote) => (true, remote.ca_file.clone()),
        };
        match &target.kind {
            TargetKind::Direct => Ok(Self {
                endpoints: (0..nodes)
                    .map(|n| upstream_for(Some(n)))
                    .collect::<Result<_, _>>()?,
                client_paced_links: remote_paced,
                ca_file: remote_ca,
                daemons: Vec::new(),
                peer: None,
            }),
            TargetKind::CacheDaemon { placement } => {
                let upstreams: Vec<Endpoint> = match placement {
                    Placement::PerNode => (0..nodes)
                        .map(|n| upstream_for(Some(n)))
                        .collect::<Result<_, _>>()?,
                    Placement::Shared => vec![upstream_for(None)?],
                    Placement::Cluster => {
                        return Err(TargetError::ModelOnly {
                            target: target.name.clone(),
                        })
                    }
                };
                let mut daemons = Vec::with_capacity(upstreams.len());
                for (i, upstream) in upstreams.into_iter().enumerate() {
                    let mut config = cache_daemon::Config::for_upstream(
                        work.join(format!("cache-daemon-{i}")),
                        upstream,
                    );
                    config.server.shutdown_grace = Duration::from_secs(1);
                    config.upstream.ca_file = remote_ca.clone();
                    let d = cache_daemon::start(config).await.map_err(|source| {
                        TargetError::Daemon {
                            target: target.name.clone(),
                            source,
                        }
                    })?;
                    daemons.push(d);
                }
                let endpoints = (0..nodes as usize)
                    .map(|n| url(&daemons[n.min(daemons.len() - 1)].url()))
                    .collect::<Result<_, _>>()?;
                Ok(Self {
                    endpoints,
                    client_paced_links: remote_paced || matches!(placement, Placement::Shared),
                    ca_file: None,
                    daemons,
                    peer: None,
                })
            }
            TargetKind::Mirror { url: mirror } => Ok(Self {
                endpoints: (0..nodes).map(|_| url(mirror)).collect::<Result<_, _>>()?,
                client_paced_links: true,
                ca_file: None,
                daemons: Vec::new(),
                peer: None,
            }),
            TargetKind::DistributionProxy | TargetKind::Nginx => {
                let kind = target.kind.name();
                let Upstream::Embedded(registry) = upstream else {
                    return Err(TargetError::PeerUpstream {
                        target: target.name.clone(),
                        kind,
                    });
                };
                let peer_kind = PeerKind::of(&target.kind).expect("a peer kind");
                let (shared, dir) = (registry.addr(), work.join(&target.name));
                let peer =
                    tokio::task::spawn_blocking(move || Peer::start(peer_kind, shared, &dir))
                        .await
                        .map_err(|source| TargetError::Task {
                            target: target.name.clone(),
                            source,
                        })?
                        .map_err(|source| TargetError::Peer {
                            target: target.name.clone(),
                            kind,
                            source: Box::new(source),
                        })?;
                let endpoint = url(&peer.url())?;
                Ok(Self {
                    endpoints: vec![endpoint; nodes as usize],
                    client_paced_links: true,
                    ca_file: None,
                    daemons: Vec::new(),
                    peer: Some(peer),
                })
            }
        }
    }

    /// Copies a peer's logs into `dir` as `<stem>.*`; nothing for other targets.
    pub fn keep_logs(&self, dir: &Path, stem: &str) -> Vec<PathBuf> {
        self.peer
            .as_ref()
            .map(|p| p.keep_logs(dir, stem))
            .unwrap_or_default()
    }

    /// Stops whatever `up` started.
    pub async fn down(self) {
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
