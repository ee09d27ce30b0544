//! One simulated node: its container runtime's content store and snapshots, kubelet's image pull
//! queue, and the rule that pods on the same node share one pull of an image.
//!
//! The first pod to ask for an image starts the node's pull of it, which waits for a slot in the
//! node's pull queue (kubelet serialises image pulls unless `max_parallel_image_pulls` says
//! otherwise), pulls with the runtime's download concurrency, then unpacks the layers in order
//! into the node's snapshot directory. Every other pod asking for the same image waits for that
//! same pull; a pod scheduled after an image landed finds it present. This module times and
//! shares; the pull itself is `pull.rs` or `real_puller.rs`, unpacking is `unpack`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::{BoxFuture, FutureExt, Shared};
use tokio::sync::Semaphore;

use stampede_oci::{Reference, RepoName};

use crate::nodes::container::StartFiles;
use crate::nodes::pull::{PullError, PullRecord, Puller};
use crate::nodes::real_puller::RealPuller;
use crate::nodes::unpack::{unpack_layer_file, UnpackOptions};
use crate::nodes::NodeRuntime;
use crate::run::recorder::{BlobFirstByte, FailureKind, LayerTimes, PullTimes};
use crate::scenario::Readiness;

/// An image as a node has it after its pull.
#[derive(Debug)]
pub struct ImageOnNode {
    /// The node's pull, as offsets from the epoch.
    pub pull: PullTimes,
    /// Per-layer timings of this pull (fetch and verify from the pull, decompress and apply from
    /// unpacking); layers already present count zero fetch time.
    pub layers: Vec<LayerTimes>,
    /// The files containers of this image read at start.
    pub start_files: Arc<StartFiles>,
    /// Blob bytes the node received.
    pub bytes_fetched: u64,
    /// Whether `layers` carry the fetch and verify times of each layer (the harness's own
    /// client); a real client reports only the whole pull.
    pub layers_timed: bool,
    /// Every blob fetched (config and layers) with its request and first byte, from the epoch;
    /// empty for a real client, which does not report them.
    pub blob_timings: Vec<BlobFirstByte>,
}

/// Who does a node's pulls.
#[derive(Debug)]
pub enum NodePuller {
    /// The harness's own client.
    Harness(Puller),
    /// The harness's own client, run inside the node's network namespace.
    HarnessInNode(Puller, Arc<NodeRuntime>),
    /// A real client (skopeo, ctr); boxed, it is the largest.
    Real(Box<RealPuller>),
}

impl NodePuller {
    async fn pull(&self, repo: &RepoName, reference: &Reference) -> Result<PullRecord, PullError> {
        match self {
            Self::Harness(p) => p.pull(repo, reference).await,
            Self::HarnessInNode(p, runtime) => {
                let (p, repo, reference) = (p.clone(), repo.clone(), reference.clone());
                runtime
                    .run(async move { p.pull(&repo, &reference).await })
                    .await
            }
            Self::Real(p) => p.pull(repo, reference).await,
        }
    }
}

/// Why a node's pull of an image failed.
#[derive(Debug, Clone)]
pub struct NodePullFailure {
    /// The kind, for counting.
    pub kind: FailureKind,
    /// What happened, for the run's error samples.
    pub message: String,
}

impl NodePullFailure {
    fn new(kind: FailureKind, message: String) -> Self {
        Self { kind, message }
    }
}

impl From<PullError> for NodePullFailure {
    fn from(e: PullError) -> Self {
        Self::new(e.kind, e.to_string())
    }
}

type PullFuture = Shared<BoxFuture<'static, Result<Arc<ImageOnNode>, NodePullFailure>>>;

/// What a node needs to exist.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub index: u32,
    /// The node's directory: `content/` (blobs) and `snapshots/<image>/` live under it.
    pub dir: PathBuf,
    /// Images pulled at once; `None` for unlimited.
    pub max_parallel_image_pulls: Option<u32>,
    pub unpack: bool,
    /// The container start model (to choose start files once per image).
    pub readiness: Readiness,
}

/// An image a pod runs: where to pull it from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageName {
    pub repo: RepoName,
    /// Tag or digest.
    pub reference: Reference,
}

/// One simulated node.
#[derive(Debug)]
pub struct Node {
    config: NodeConfig,
    puller: NodePuller,
    epoch: Instant,
    slots: Option<Semaphore>,
    /// A std `Mutex`: held only to find or insert an entry, never across `.await`.
    images: Mutex<HashMap<ImageName, PullFuture>>,
}

/// What a pod got from its node.
#[derive(Debug, Clone)]
pub struct PodImage {
    /// The image, once on the node.
    pub image: Arc<ImageOnNode>,
    /// Whether the pod waited for a pull (false: the image was already there when scheduled).
    pub waited: bool,
}

impl Node {
    /// A node whose content store and snapshots live under `config.dir`, pulling with `puller`,
    /// timing from `epoch`.
    pub fn new(config: NodeConfig, puller: NodePuller, epoch: Instant) -> Self {
        let slots = config
            .max_parallel_image_pulls
            .map(|n| Semaphore::new(n as usize));
        Self {
            config,
            puller,
            epoch,
            slots,
            images: Mutex::new(HashMap::new()),
        }
    }

    pub fn index(&self) -> u32 {
        self.config.index
    }

    /// Gets `image` onto this node for a pod, starting the node's pull if it is the first to ask.
    ///
    /// # Errors
    /// The node's pull failed (every pod that waited for it gets the same failure).
    pub async fn image(self: &Arc<Self>, image: &ImageName) -> Result<PodImage, NodePullFailure> {
        let fut = {
            let mut images = self.images.lock().expect("node images mutex poisoned");
            images
                .entry(image.clone())
                .or_insert_with(|| {
                    let node = self.clone();
                    let image = image.clone();
                    async move { node.pull_and_unpack(&image).await.map(Arc::new) }
                        .boxed()
                        .shared()
                })
                .clone()
        };
        let waited = fut.peek().is_none();
        let image = fut.await?;
        Ok(PodImage { image, waited })
    }

    /// Gets every image of a pod onto this node: asks for all of them at once, in the order
    /// given (the main image, then its sidecars), and waits until all are there. With parallel
    /// pulls they download side by side, where kubelet (starting a pod's containers in turn)
    /// would pull them one after another: a lower bound.
    ///
    /// # Errors
    /// The first of the node's pulls to fail; the pod does not start.
    pub async fn images(
        self: &Arc<Self>,
        images: &[ImageName],
    ) -> Result<Vec<PodImage>, NodePullFailure> {
        // `try_join_all` polls a short list in order on its first poll, so the pulls this pod
        // starts queue for their slots in the listed order (the semaphore is fair).
        futures_util::future::try_join_all(images.iter().map(|i| self.image(i))).await
    }

    async fn pull_and_unpack(&self, image: &ImageName) -> Result<ImageOnNode, NodePullFailure> {
        let _slot = match &self.slots {
            Some(s) => Some(s.acquire().await.expect("pull slots never close")),
            None => None,
        };
        let record = self.puller.pull(&image.repo, &image.reference).await?;
        let at = |i: Instant| i.saturating_duration_since(self.epoch);
        let snapshot = self.config.dir.join("snapshots").join(format!(
            "{}-{}",
            image.repo.as_str().replace('/', "_"),
            record.manifest_digest.hex()
        ));
        let mut layers: Vec<LayerTimes> = record
            .layers
            .iter()
            .map(|l| LayerTimes {
                fetch: if l.cached { Duration::ZERO } else { l.fetch },
                verify: l.verify,
                ..LayerTimes::default()
            })
            .collect();
        let unpack = self.config.unpack && !record.unpacked_by_client;
        if unpack {
            std::fs::create_dir_all(&snapshot).map_err(|e| {
                NodePullFailure::new(
                    FailureKind::Other,
                    format!("create snapshot {}: {e}", snapshot.display()),
                )
            })?;
            for (i, layer) in record.layers.iter().enumerate() {
                let (path, compression, root) =
                    (layer.path.clone(), layer.compression, snapshot.clone());
                let stats = tokio::task::spawn_blocking(move || {
                    unpack_layer_file(&path, compression, &root, &UnpackOptions::default())
                })
                .await
                .map_err(|e| format!("unpack task failed: {e}"))
                .and_then(|r| {
                    r.map_err(|e| format!("unpack layer {} of {}: {e}", layer.digest, image.repo))
                })
                .map_err(|message| NodePullFailure::new(FailureKind::Unpack, message))?;
                layers[i].decompress = stats.decompress;
                layers[i].apply = stats.apply;
            }
        }
        let unpacked = Instant::now();
        let readiness = self.config.readiness.clone();
        let root = snapshot.clone();
        let start_files = tokio::task::spawn_blocking(move || {
            if unpack {
                StartFiles::choose(&root, &readiness)
            } else {
                Ok(StartFiles::default())
            }
        })
        .await
        .map_err(|e| format!("list snapshot: {e}"))
        .and_then(|r| r.map_err(|e| format!("list snapshot {}: {e}", snapshot.display())))
        .map_err(|message| NodePullFailure::new(FailureKind::Other, message))?;
        Ok(ImageOnNode {
            pull: PullTimes::one(
                at(record.started),
                record.first_byte.map(at),
                at(record.fetched),
                at(unpacked),
            ),
            layers,
            start_files: Arc::new(start_files),
            bytes_fetched: record.bytes_fetched,
            layers_timed: !matches!(self.puller, NodePuller::Real(_)),
            blob_timings: record
                .blob_timings
                .iter()
                .map(|b| BlobFirstByte {
                    digest: b.digest.clone(),
                    requested: at(b.requested),
                    first_byte: at(b.first_byte),
                })
                .collect(),
        })
    }
}
