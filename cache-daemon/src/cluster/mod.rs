//! Cluster mode (off unless `--peer-listen` is set): the nodes' caches share one registry
//! fetch per piece of content, with no tracker, scheduler or seed service. Each blob is cut
//! into stripes; every node computes the same owner for each (digest, stripe) by rendezvous
//! hashing over the live members; a miss asks each stripe's owner over the peer port, and the
//! owner fetches the stripe from the registry once (its own single flight) and streams it to
//! everyone who asks, bounded in fan-out: further requesters are sent on to a node already
//! receiving it, which passes the bytes on as they land.
//!
//! What this folder owns:
//! - [`membership`]: the member list (static, DNS, watched file), this node, down and bad marks.
//! - [`endpoints`]: the member list from a Kubernetes Service's Endpoints (the API server).
//! - [`rendezvous`]: who owns a (digest, stripe): highest-random-weight ranking.
//! - [`stripe`]: stripe arithmetic (size, offsets).
//! - [`origin`]: this node's stripe fills from the registry, for peers and itself.
//! - [`server`]: the peer port's requests (signature check, fan-out bound, where bytes come from).
//! - [`client`]: signed requests to peers with fast failure and redirects.
//! - [`fetch`]: the asking side: a blob fill fed stripe by stripe, with fallbacks.
//! - [`signing`]: HMAC-SHA256 request signing with the cluster secret, replay window.
//!
//! What it does not own: the accept loop and its connection limit (`crate::server`), the blob
//! fill's writing, hashing and commit (`crate::fill`, which calls [`Cluster::open`] on a miss),
//! tags and manifests (each node resolves its own: credentials and TTLs live there).

pub mod client;
pub mod endpoints;
pub mod fetch;
pub mod membership;
pub mod origin;
pub mod rendezvous;
pub mod server;
pub mod signing;
pub mod stripe;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use stampede_oci::Digest;

use crate::config::ClusterConfig;
use crate::error::PeerFailure;
use crate::flight::Flights;
use crate::metrics::Metrics;
use crate::store::BlobStore;
use crate::upstream::Upstreams;

use client::PeerClient;
use membership::{Member, Membership};
use origin::Origin;
use server::Uploads;
use signing::Signer;

/// How long a digest whose assembled bytes failed the digest is fetched from the registry
/// directly.
pub const DIRECT_AFTER_MISMATCH: Duration = membership::BAD_FOR;

/// The daemon parts the cluster works with.
#[derive(Debug, Clone)]
pub struct Parts {
    /// Committed blobs (served to peers).
    pub store: Arc<BlobStore>,
    /// This node's blob fills (a peer redirected here reads them).
    pub flights: Arc<Flights>,
    /// The registries (stripe fills, fallbacks).
    pub upstreams: Arc<Upstreams>,
    /// What to count.
    pub metrics: Arc<Metrics>,
}

/// This node's part in the cluster.
#[derive(Debug)]
pub struct Cluster {
    membership: Arc<Membership>,
    signer: Signer,
    client: PeerClient,
    origin: Arc<Origin>,
    uploads: Arc<Uploads>,
    store: Arc<BlobStore>,
    blob_flights: Arc<Flights>,
    upstreams: Arc<Upstreams>,
    metrics: Arc<Metrics>,
    idle_timeout: Duration,
    /// How long a redirected request waits for this node's own fill's first answer.
    start_wait: Duration,
    max_connections: usize,
    /// Digests fetched from the registry directly until the instant, after a mismatch. A std
    /// `Mutex`: held to look up or insert, never across `.await`.
    direct: Mutex<HashMap<Digest, Instant>>,
}

impl Cluster {
    /// This node's cluster part from its config.
    pub fn new(config: &ClusterConfig, parts: Parts) -> Self {
        let signer = Signer::new(&config.secret.0);
        let membership = Arc::new(Membership::new(config.advertise, config.peers.clone()));
        let client = PeerClient::new(
            signer.clone(),
            config.advertise,
            config.connect_timeout,
            config.response_timeout,
        );
        let origin = Arc::new(Origin::new(
            parts.store.clone(),
            parts.upstreams.clone(),
            parts.metrics.clone(),
        ));
        Self {
            membership,
            signer,
            client,
            origin,
            uploads: Arc::new(Uploads::default()),
            store: parts.store,
            blob_flights: parts.flights,
            upstreams: parts.upstreams,
            metrics: parts.metrics,
            idle_timeout: config.idle_timeout,
            // Half the requester's response timeout, so it hears `503` before giving up.
            start_wait: config.response_timeout / 2,
            max_connections: config.max_connections,
            direct: Mutex::new(HashMap::new()),
        }
    }

    /// Connections the peer port serves at once.
    pub fn max_connections(&self) -> usize {
        self.max_connections
    }

    /// The member list and marks.
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// Keeps the member list fresh (DNS, file) and the member gauges current until `stop`.
    /// A DNS name that does not resolve is a warning, retried at the next refresh: the
    /// node works alone (every miss from the registry) until it resolves.
    pub async fn watch_members(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let every = self
            .membership
            .refresh_every()
            .unwrap_or(Duration::from_secs(10));
        let mut failing = false;
        loop {
            match self.membership.refresh().await {
                Ok(()) if failing => {
                    failing = false;
                    tracing::info!(
                        members = self.membership.known().len(),
                        "cluster member list readable again"
                    );
                }
                Ok(()) => {}
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, retry_in = ?every, "cluster member list could not be refreshed; keeping the last one");
                    }
                    failing = true;
                }
            }
            self.metrics
                .cluster_members(self.membership.known().len(), self.membership.bad_count());
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                () = tokio::time::sleep(every) => {}
            }
        }
    }

    /// A blob assembled with bytes from `contributors` failed its digest: mark them bad, and
    /// fetch the digest from the registry directly for [`DIRECT_AFTER_MISMATCH`].
    pub fn mismatch(&self, digest: &Digest, contributors: &[Member]) {
        for m in contributors {
            tracing::error!(%digest, peer = %m, "a blob with bytes from this peer failed its digest; the peer is skipped for a while");
            self.membership.mark_bad(*m);
            self.metrics.cluster_fallback(PeerFailure::Mismatch);
        }
        self.direct
            .lock()
            .expect("cluster mutex poisoned")
            .insert(digest.clone(), Instant::now() + DIRECT_AFTER_MISMATCH);
        self.metrics
            .cluster_members(self.membership.known().len(), self.membership.bad_count());
    }

    fn direct_only(&self, digest: &Digest) -> bool {
        let now = Instant::now();
        let mut direct = self.direct.lock().expect("cluster mutex poisoned");
        direct.retain(|_, until| *until > now);
        direct.contains_key(digest)
    }
}
