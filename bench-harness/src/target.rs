//! Targets: what the nodes pull through, set up fresh for each burst and torn down after it.
//!
//! - `direct`: each node talks to the registry's port for that node (its own link).
//! - `cache-daemon`, per node: one daemon per node, in this process, each filling from the
//!   registry over that node's link; the node's pulls go to its own daemon over loopback.
//! - `cache-daemon`, shared: one daemon for every node, filling over the registry's shared port;
//!   node links are then between the nodes and the daemon, and the harness's client paces them.
//! - `mirror`: a URL the user runs; node links paced by the client as for a shared cache.
//!
//! The harness talks to every target over HTTP only; running our daemon in-process is a
//! convenience (the same binary, no build step), not a back door.

use std::path::Path;
use std::time::Duration;

use stampede_oci::Endpoint;

use crate::registry::EmbeddedRegistry;
use crate::scenario::{Placement, Target, TargetKind};

/// A target set up for one burst.
#[derive(Debug)]
pub struct Deployment {
    /// Where each node sends its pulls, by node index.
    pub endpoints: Vec<Endpoint>,
    /// Whether node links must be paced by the client (the target sits across the node link).
    pub client_paced_links: bool,
    daemons: Vec<cache_daemon::Daemon>,
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
    /// A peer this build cannot run yet.
    #[error("target {target}: kind {kind} is not available in this build")]
    Unsupported {
        /// Target name.
        target: String,
        /// Its kind.
        kind: &'static str,
    },
}

impl Deployment {
    /// Sets `target` up for `nodes` nodes in front of `registry`; daemon stores go under `work`.
    ///
    /// # Errors
    /// [`TargetError`] naming the target.
    pub async fn up(
        target: &Target,
        registry: &EmbeddedRegistry,
        nodes: u32,
        work: &Path,
    ) -> Result<Self, TargetError> {
        let url = |u: &str| {
            Endpoint::parse(u).map_err(|source| TargetError::Url {
                target: target.name.clone(),
                source,
            })
        };
        let node_url = |n: u32| {
            registry
                .node_url(n as usize)
                .unwrap_or_else(|| registry.url())
        };
        match &target.kind {
            TargetKind::Direct => Ok(Self {
                endpoints: (0..nodes)
                    .map(|n| url(&node_url(n)))
                    .collect::<Result<_, _>>()?,
                client_paced_links: false,
                daemons: Vec::new(),
            }),
            TargetKind::CacheDaemon { placement } => {
                let upstreams: Vec<String> = match placement {
                    Placement::PerNode => (0..nodes).map(node_url).collect(),
                    Placement::Shared => vec![registry.url()],
                };
                let mut daemons = Vec::with_capacity(upstreams.len());
                for (i, upstream) in upstreams.iter().enumerate() {
                    let mut config = cache_daemon::Config::for_upstream(
                        work.join(format!("cache-daemon-{i}")),
                        url(upstream)?,
                    );
                    config.server.shutdown_grace = Duration::from_secs(1);
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
                    client_paced_links: matches!(placement, Placement::Shared),
                    daemons,
                })
            }
            TargetKind::Mirror { url: mirror } => Ok(Self {
                endpoints: (0..nodes).map(|_| url(mirror)).collect::<Result<_, _>>()?,
                client_paced_links: true,
                daemons: Vec::new(),
            }),
            TargetKind::DistributionProxy => Err(TargetError::Unsupported {
                target: target.name.clone(),
                kind: "distribution-proxy",
            }),
            TargetKind::Nginx => Err(TargetError::Unsupported {
                target: target.name.clone(),
                kind: "nginx",
            }),
        }
    }

    /// Stops whatever `up` started.
    pub async fn down(self) {
        for d in self.daemons {
            d.shutdown().await;
        }
    }
}
