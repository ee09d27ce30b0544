//! The pod step of a burst: one pod of the schedule as a task. It sleeps until its scheduled
//! offset from the burst epoch, asks its node for its images (`nodes::node`), starts its
//! container (`nodes::container`), and hands back its milestones as a [`PodOutcome`]: it records
//! nothing, and a failure is an outcome, not an error. A pod not ready within [`POD_DEADLINE`] of
//! its scheduled time fails as `timeout`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::nodes::container;
use crate::nodes::node::{ImageName, ImageOnNode, Node};
use crate::run::recorder::{FailureKind, PodTimes, PullTimes};
use crate::scenario::{PodSlot, Readiness};

/// A pod not ready this long after its scheduled time counts as failed (`timeout`).
pub(super) const POD_DEADLINE: Duration = Duration::from_secs(15 * 60);

/// How one pod of a burst ended.
pub(super) enum PodOutcome {
    /// Its container turned ready.
    Ready {
        node: u32,
        slot: PodSlot,
        times: PodTimes,
        /// The pod's images as on its node: the variant's own first, then its sidecars'.
        images: Vec<Arc<ImageOnNode>>,
    },
    /// A pull, the container start or the deadline failed it.
    Failed {
        slot: PodSlot,
        kind: FailureKind,
        message: String,
    },
}

/// One pod of a burst, ready to be started.
pub(super) struct Pod<'a> {
    /// When (offset from the epoch) and where it is scheduled.
    pub slot: PodSlot,
    pub node: Arc<Node>,
    /// Its images, the variant's own first, then its sidecars'.
    pub images: &'a [ImageName],
    /// What its container does before it is ready.
    pub readiness: &'a Readiness,
    /// The burst epoch every milestone is measured from.
    pub epoch: Instant,
}

impl Pod<'_> {
    /// Waits for the pod's scheduled time, then gets its images and starts its container.
    pub(super) async fn run(self) -> PodOutcome {
        tokio::time::sleep_until((self.epoch + self.slot.offset).into()).await;
        tokio::time::timeout(POD_DEADLINE, self.start())
            .await
            .unwrap_or_else(|_| {
                self.failed(
                    FailureKind::Timeout,
                    format!("pod not ready within {POD_DEADLINE:?}"),
                )
            })
    }

    async fn start(&self) -> PodOutcome {
        let got = match self.node.images(self.images).await {
            Ok(got) => got,
            Err(f) => return self.failed(f.kind, f.message),
        };
        let started = self.epoch.elapsed();
        // Readiness reads the main container's image.
        let start_files = got[0].image.start_files.clone();
        let pull = PullTimes::spanning(got.iter().filter(|g| g.waited).map(|g| g.image.pull));
        match container::start(start_files, self.readiness, self.epoch, started).await {
            Ok(ready) => PodOutcome::Ready {
                node: self.node.index(),
                slot: self.slot,
                times: PodTimes {
                    scheduled: self.slot.offset,
                    pull,
                    started,
                    ready,
                    wave: self.slot.wave,
                },
                images: got.into_iter().map(|g| g.image).collect(),
            },
            Err(e) => self.failed(
                FailureKind::Other,
                format!("container start on node {}: {e}", self.node.index()),
            ),
        }
    }

    fn failed(&self, kind: FailureKind, message: String) -> PodOutcome {
        PodOutcome::Failed {
            slot: self.slot,
            kind,
            message,
        }
    }
}
