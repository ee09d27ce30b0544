//! The deploy step of a burst, before the epoch, and its teardown. Deploying sets up the target
//! fresh (`target::Deployment::up`), every node's puller (the harness's own client, paced when
//! the target leaves node links to the client, or a real client: for `ctr` each node's
//! containerd is started here, all at once) and the nodes, each with a fresh content store and
//! snapshot directory under the burst's work directory; it times nothing. Teardown reads the
//! cache processes' facts, keeps the peers' logs, stops the target and drops the nodes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use stampede_oci::{ClientConfig, Endpoint, RegistryClient};

use crate::image::variant::PullFrom;
use crate::nodes::node::{Node, NodeConfig, NodePuller};
use crate::nodes::pull::{Puller, PullerConfig};
use crate::nodes::real_puller::{RealPuller, RealPullerConfig};
use crate::nodes::CacheProcessFacts;
use crate::registry::shaping::ByteBucket;
use crate::run::burst::Burst;
use crate::run::{io, joined, RunError};
use crate::scenario::PullerKind;
use crate::target::{Deployment, Upstream};

/// Time given to spawn every pod between the end of the deploy step and the epoch.
const EPOCH_LEAD: Duration = Duration::from_millis(200);
/// How long a node's own client waits for a response, and for the next bytes of a body.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);
/// Burst size of a client-paced node link's token bucket.
const NODE_LINK_BURST_BYTES: u64 = 64 * 1024;

/// A burst's target and nodes, deployed.
pub(super) struct Fleet {
    pub deployment: Deployment,
    pub nodes: Vec<Arc<Node>>,
    /// The burst epoch: every pod's schedule and every milestone counts from here.
    pub epoch: Instant,
}

impl Fleet {
    /// Sets up the burst's target, then its nodes' pullers and nodes; the epoch is set just
    /// after, leaving time to spawn every pod.
    ///
    /// # Errors
    /// [`RunError`] when the target, a node's directory or a node's client cannot be set up.
    pub(super) async fn up(burst: &Burst<'_>) -> Result<Self, RunError> {
        let s = burst.stage.scenario;
        let upstream = match &burst.image.pull {
            PullFrom::Embedded(_) => Upstream::Embedded(burst.stage.origin.registry()),
            PullFrom::Remote(remote) => Upstream::Remote(remote),
        };
        let nodes_n = s.total_nodes();
        let deployment =
            Deployment::up(burst.target, upstream, nodes_n, burst.work, burst.stage.net).await?;
        let pullers = pullers(burst, &deployment).await?;
        let epoch = Instant::now() + EPOCH_LEAD;
        let nodes = (0..nodes_n)
            .zip(pullers)
            .map(|(n, puller)| {
                let config = NodeConfig {
                    index: n,
                    dir: node_dir(burst.work, n),
                    max_parallel_image_pulls: s.runtime.parallel_image_pulls_limit(),
                    unpack: s.runtime.unpack,
                    readiness: s.readiness.clone(),
                };
                Arc::new(Node::new(config, puller, epoch))
            })
            .collect();
        Ok(Self {
            deployment,
            nodes,
            epoch,
        })
    }

    /// Tears the burst down: reads the cache processes' facts, keeps the peers' logs in `logs`
    /// (named after `stem`), stops the target and drops the nodes. Returns the facts.
    pub(super) async fn down(self, logs: &Path, stem: &str) -> Vec<CacheProcessFacts> {
        let caches = self.deployment.cache_facts(stem);
        for kept in self.deployment.keep_logs(logs, stem) {
            tracing::debug!(log = %kept.display(), "kept a peer log");
        }
        self.deployment.down().await;
        // Nodes with a real containerd stop it on drop (scanning /proc, waiting for exit):
        // blocking work, kept off the runtime's threads.
        let nodes = self.nodes;
        tokio::task::spawn_blocking(move || drop(nodes)).await.ok();
        caches
    }
}

fn node_dir(work: &Path, n: u32) -> PathBuf {
    work.join(format!("node-{n}"))
}

/// Every node's puller, in node order: the harness's own client, or a real one (for `ctr`,
/// each node's containerd is started here, all at once, before the epoch).
async fn pullers(burst: &Burst<'_>, deployment: &Deployment) -> Result<Vec<NodePuller>, RunError> {
    let s = burst.stage.scenario;
    let net = burst.stage.net;
    let mut pullers = Vec::new();
    let mut starting = Vec::new();
    for n in 0..s.total_nodes() {
        let dir = node_dir(burst.work, n);
        let content = dir.join("content");
        std::fs::create_dir_all(&content).map_err(io(format!("create {}", content.display())))?;
        let endpoint = deployment.endpoints[n as usize].clone();
        if s.runtime.puller != PullerKind::Harness {
            let config = RealPullerConfig {
                client: s.runtime.puller,
                endpoint,
                dir,
                platform: s.platform.clone(),
                unpack: s.runtime.unpack,
                netns: net
                    .and_then(|net| net.node(n as usize))
                    .map(|node| node.netns().to_owned()),
            };
            starting.push(tokio::task::spawn_blocking(move || {
                RealPuller::new(n, config)
            }));
            continue;
        }
        let puller =
            harness_puller(burst, deployment, endpoint, content).map_err(RunError::Client)?;
        pullers.push(match net.and_then(|net| net.runtime(n as usize)) {
            Some(runtime) => NodePuller::HarnessInNode(puller, runtime),
            None => NodePuller::Harness(puller),
        });
    }
    for started in join_all(starting).await {
        let puller = started.map_err(joined("start a node's real client"))??;
        pullers.push(NodePuller::Real(Box::new(puller)));
    }
    Ok(pullers)
}

/// The harness's own client for a node pulling from `endpoint` into `content`; its link is
/// paced here when the target leaves node links to the client.
fn harness_puller(
    burst: &Burst<'_>,
    deployment: &Deployment,
    endpoint: Endpoint,
    content: PathBuf,
) -> Result<Puller, stampede_oci::ClientError> {
    let s = burst.stage.scenario;
    let client = RegistryClient::new(ClientConfig {
        response_timeout: CLIENT_TIMEOUT,
        extra_ca_file: deployment.ca_file.clone(),
        ..ClientConfig::default()
    })?;
    let link = s
        .registry
        .node_link
        .filter(|_| deployment.client_paced_links);
    Ok(Puller::new(
        client,
        PullerConfig {
            endpoint,
            content_dir: content,
            max_concurrent_downloads: s.runtime.max_concurrent_downloads as usize,
            platform: s.platform.clone(),
            body_idle_timeout: CLIENT_TIMEOUT,
            link: link.map(|rate| Arc::new(ByteBucket::new(rate, NODE_LINK_BURST_BYTES))),
        },
    ))
}
