//! One burst of one (variant, target, repetition): deploy the target and the nodes
//! (`deploy.rs`), run every pod of the schedule (`pod.rs`), record their milestones
//! (`record.rs`); a `kubernetes` target's burst runs on its cluster instead (`kube.rs`).
//!
//! Around the pods run the burst's [`Meters`]: the registry's accounting reset at the epoch, the
//! shaped link's byte counter, the fabric's wire counters (nodes in namespaces) and the host's
//! CPU. A peer's upstream traffic that outlives its clients is waited out (`settle`) before the
//! registry's accounting is read.

use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::future::{join_all, OptionFuture};
use tokio::task::JoinHandle;

use crate::image::variant::{PullFrom, VariantImage};
use crate::nodes::node::ImageName;
use crate::nodes::{CacheProcessFacts, NodeNet, OwnerKill, WireSampler, WireTotals};
use crate::registry::accounting::AccountingSnapshot;
use crate::registry::origin::Origin;
use crate::registry::EmbeddedRegistry;
use crate::run::deploy::Fleet;
use crate::run::host::{CpuSampler, CpuUse};
use crate::run::pod::Pod;
use crate::run::progress::Progress;
use crate::run::record::record;
use crate::run::recorder::{Recorder, RunKey};
use crate::run::RunError;
use crate::scenario::{Scenario, Target, TargetKind, Variant};
use crate::target::peer::PeerKind;

/// A peer's upstream traffic counts as finished once the registry has seen nothing new for this
/// long (distribution's proxy keeps filling its store after its clients are served).
const UPSTREAM_QUIET: Duration = Duration::from_secs(1);
/// Longest wait for a peer's upstream traffic to finish after the burst.
const UPSTREAM_QUIET_LIMIT: Duration = Duration::from_secs(60);

/// What every burst of a run shares.
pub(super) struct Stage<'a> {
    pub scenario: &'a Scenario,
    /// Where every burst's bytes come from: the embedded registry.
    pub origin: &'a Origin,
    /// The nodes' namespaces, when nodes are namespaces.
    pub net: Option<&'a NodeNet>,
    /// Where peers' logs are kept.
    pub logs: &'a Path,
    pub progress: &'a Progress,
}

/// One burst of one (variant, target, repetition).
pub(super) struct Burst<'a> {
    pub stage: &'a Stage<'a>,
    pub variant: &'a Variant,
    pub image: &'a VariantImage,
    /// The pod's images: the variant's own first, then its sidecars'.
    pub pod_images: Vec<ImageName>,
    pub target: &'a Target,
    pub repetition: u32,
    /// The burst's own directory: nodes' content stores and snapshots, caches' stores.
    pub work: &'a Path,
}

/// What one burst measured.
pub(super) struct BurstOutput {
    pub key: RunKey,
    pub recorder: Recorder,
    /// What the embedded registry served; `None` when the variant is pulled from a real one.
    pub registry: Option<AccountingSnapshot>,
    /// Bytes the shaped link carried toward the host during the burst, by the kernel's count.
    pub link_bytes: Option<u64>,
    /// What every link of the nodes' fabric carried, when nodes are namespaces.
    pub wire: Option<WireTotals>,
    /// What each cache process inside the nodes used.
    pub caches: Vec<CacheProcessFacts>,
    pub cpu: CpuUse,
    /// Each distinct failure message.
    pub errors: Vec<String>,
    /// A `kubernetes` target: the pull times kubelet reported.
    pub kubelet_pulls: Vec<Duration>,
}

impl Burst<'_> {
    /// Deploys, runs every pod, tears down, records.
    ///
    /// # Errors
    /// [`RunError`] when the target or the nodes cannot be set up (failed pods are data).
    pub(super) async fn run(&self) -> Result<BurstOutput, RunError> {
        if let TargetKind::Kubernetes(k) = &self.target.kind {
            return self.run_on_cluster(k).await;
        }
        let s = self.stage.scenario;
        let mut fleet = Fleet::up(self).await?;
        let meters = Meters::start(self, &mut fleet);
        let (pods_on, killer) = self.pods_on(&fleet);
        let pods = s
            .schedule()
            .into_iter()
            .filter(|slot| pods_on(slot.node))
            .map(|slot| {
                let pod = Pod {
                    slot,
                    node: fleet.nodes[slot.node as usize].clone(),
                    images: &self.pod_images,
                    readiness: &s.readiness,
                    epoch: fleet.epoch,
                };
                async move {
                    let outcome = pod.run().await;
                    self.stage.progress.pod_done();
                    outcome
                }
            });
        let outcomes = join_all(pods).await;
        if let Some(k) = killer {
            k.abort();
        }
        let measured = meters.finish(self).await;
        let key = RunKey {
            variant: self.variant.name.clone(),
            target: self.target.name.clone(),
            repetition: self.repetition,
        };
        let stem = format!("{}-{}-rep{}", key.target, key.variant, key.repetition);
        let caches = fleet.down(self.stage.logs, &stem).await;
        let (recorder, errors) = record(key.clone(), self.variant, outcomes);
        Ok(BurstOutput {
            key,
            recorder,
            registry: measured.registry,
            link_bytes: measured.link_bytes,
            wire: measured.wire,
            caches,
            cpu: measured.cpu,
            errors,
            kubelet_pulls: Vec::new(),
        })
    }

    /// Which nodes get pods in this burst (a target limited to fewer nodes, and a node to be
    /// killed, get none), and the armed kill, if the target asks for one.
    fn pods_on(&self, fleet: &Fleet) -> (impl Fn(u32) -> bool, Option<JoinHandle<()>>) {
        let nodes_n = self.stage.scenario.total_nodes();
        let kill = self
            .stage
            .net
            .and_then(|net| OwnerKill::plan(self.target, &self.image.facts, net.fabric().nodes()));
        let killer = kill.as_ref().and_then(|k| {
            let pid = fleet.deployment.node_cache_pid(k.node)?;
            Some(k.arm(pid, fleet.epoch))
        });
        let pulling = self.target.nodes.unwrap_or(nodes_n).min(nodes_n);
        let victim = kill.map(|k| k.node);
        (move |n| n < pulling && Some(n) != victim, killer)
    }
}

/// The burst's meters, running from the epoch until every pod is done.
struct Meters {
    /// The shaped link's byte count at the start.
    link_before: Option<u64>,
    wire: Option<WireSampler>,
    cpu: CpuSampler,
}

/// What the meters read at the end of a burst.
struct Measured {
    registry: Option<AccountingSnapshot>,
    link_bytes: Option<u64>,
    wire: Option<WireTotals>,
    cpu: CpuUse,
}

impl Meters {
    /// Resets the registry's accounting at the epoch, tells the target's cache processes the
    /// burst starts, and starts sampling the links and the CPU.
    fn start(burst: &Burst<'_>, fleet: &mut Fleet) -> Self {
        let origin = burst.stage.origin;
        let link_before = origin.link_sent_bytes();
        origin.registry().accounting().reset_at(fleet.epoch.into());
        fleet.deployment.burst_started();
        let wire = burst
            .stage
            .net
            .map(|net| WireSampler::start(net.fabric().clone(), fleet.epoch));
        Self {
            link_before,
            wire,
            cpu: CpuSampler::start(),
        }
    }

    /// Stops the samplers and reads what the registry served (after a peer's lingering
    /// upstream traffic has settled) and what the shaped link carried.
    async fn finish(self, burst: &Burst<'_>) -> Measured {
        let cpu = self.cpu.finish().await;
        let origin = burst.stage.origin;
        let registry = origin.registry();
        // Only the embedded registry counts what it serves.
        let embedded = matches!(burst.image.pull, PullFrom::Embedded(_));
        if embedded && PeerKind::of(&burst.target.kind).is_some() {
            settle(registry).await;
        }
        let snapshot = embedded.then(|| registry.accounting().snapshot());
        let wire = OptionFuture::from(self.wire.map(WireSampler::finish)).await;
        let link_bytes = match (self.link_before, origin.link_sent_bytes()) {
            (Some(before), Some(after)) if embedded => Some(after.saturating_sub(before)),
            _ => None,
        };
        Measured {
            registry: snapshot,
            link_bytes,
            wire,
            cpu,
        }
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
