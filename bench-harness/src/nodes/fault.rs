//! Faults a scenario injects into a burst of nodes in namespaces. One today: a cluster
//! target's `kill_owner_after`, which kills the node owning the first stripe of the variant's
//! largest layer with SIGKILL that long after the burst epoch, as a crashed node or a pulled
//! plug would end it: no shutdown, its connections reset, everything it was fetching or
//! passing on gone.
//!
//! The owner is found the way every cluster member finds it, with cache-daemon's own
//! rendezvous ranking (`cache_daemon::cluster::rendezvous`) over the members the harness
//! started (`caches.rs`: every node's address at the peer port), so the harness never holds a
//! second copy of the hashing. The victim's own pods are not scheduled: every pod the burst
//! counts is another node's, which is what the cluster promises to keep whole.
//!
//! What it does not do: pick the time (the scenario says it), or restart the victim.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use cache_daemon::cluster::membership::Member;
use cache_daemon::cluster::rendezvous;
use stampede_lab::Endpoint;
use stampede_oci::Digest;

use super::caches::PEER_PORT;
use crate::result::ImageFacts;
use crate::scenario::Target;

/// A planned owner kill for one burst.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerKill {
    /// The victim's node index.
    pub node: u32,
    /// How long after the epoch.
    pub after: Duration,
    /// The layer whose first stripe it owns.
    pub layer: Digest,
}

impl OwnerKill {
    /// The kill `target` asks for against the image `facts` describes, on `nodes`; `None`
    /// when it asks for none, or the image's layers are not known (an image not generated or
    /// imported by the harness: a warning says so).
    pub fn plan(target: &Target, facts: &ImageFacts, nodes: &[Endpoint]) -> Option<Self> {
        let after = target.kill_owner_after?;
        let Some(layer) = largest_layer(facts) else {
            tracing::warn!(target = %target.name, "kill_owner_after: the image's layers are not known, so no owner is killed");
            return None;
        };
        let members: Vec<Member> = nodes
            .iter()
            .map(|n| Member::from(SocketAddr::from((n.ip(), PEER_PORT))))
            .collect();
        let owner = *rendezvous::rank(&members, &layer, 0).first()?;
        let node = members.iter().position(|m| *m == owner)?;
        Some(Self {
            node: u32::try_from(node).ok()?,
            after,
            layer,
        })
    }

    /// Kills `pid` (the victim's cache process) at `epoch + after`; the task is aborted if the
    /// burst ends first.
    pub fn arm(&self, pid: u32, epoch: Instant) -> tokio::task::JoinHandle<()> {
        let (at, node, layer) = (epoch + self.after, self.node, self.layer.clone());
        tokio::spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            stampede_lab::process::kill(pid);
            tracing::info!(node, pid, %layer, "killed the owner of the largest layer's first stripe");
        })
    }
}

/// The largest layer in the image's facts (`details.layers[].digest`, `compressed_bytes`).
fn largest_layer(facts: &ImageFacts) -> Option<Digest> {
    facts
        .details
        .get("layers")?
        .as_array()?
        .iter()
        .filter_map(|l| {
            let size = l.get("compressed_bytes")?.as_u64()?;
            let digest = Digest::parse(l.get("digest")?.as_str()?).ok()?;
            Some((size, digest))
        })
        .max_by_key(|(size, _)| *size)
        .map(|(_, d)| d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_largest_layer_is_found_in_the_image_facts() {
        let (a, b) = (Digest::of(b"a"), Digest::of(b"b"));
        let facts = ImageFacts {
            compressed_bytes: 30,
            details: serde_json::json!({"layers": [
                {"digest": a.to_string(), "compressed_bytes": 10},
                {"digest": b.to_string(), "compressed_bytes": 20},
            ]}),
        };
        assert_eq!(largest_layer(&facts), Some(b));
        let bare = ImageFacts {
            compressed_bytes: 30,
            details: serde_json::Value::Null,
        };
        assert_eq!(largest_layer(&bare), None);
    }
}
