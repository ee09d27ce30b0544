//! Where every burst's bytes come from: the embedded registry, listening on 127.0.0.1, or, with
//! `registry.netns_rate`, inside a network namespace of its own behind a veth pair that `tc tbf`
//! shapes to that rate (`stampede_lab::ShapedLink`). The registry still runs in this process, so
//! its accounting stays registry-side truth, but every client (node, cache, peer) reaches it over
//! the kernel-shaped link; the harness's own bandwidth model still applies on top when set.
//! Without root or iproute2 the shaped link fails the run, saying so; it never falls back.

use std::net::{SocketAddr, TcpListener as StdListener};

use serde_json::json;
use stampede_lab::{LabError, ShapedLink, Shaping};
use tokio::net::TcpListener;

use crate::registry::{
    EmbeddedRegistry, Listeners, RegistryError, RegistryModel, DEFAULT_SERIES_BUCKET,
};
use crate::scenario::units::Bandwidth;

/// Prefix of the shaped namespace's name: `stampede-up-<pid>-<n>`.
pub const NETNS_PREFIX: &str = "stampede-up-";

/// Why the origin could not start.
#[derive(Debug, thiserror::Error)]
pub enum OriginError {
    /// The registry could not bind or serve.
    #[error("embedded registry")]
    Registry(#[from] RegistryError),
    /// The registry's listener could not be bound inside its namespace on the nodes' fabric.
    #[error("bind the embedded registry inside its namespace")]
    Fabric(#[source] LabError),
    /// The shaped link could not be made (not root, iproute2 missing, a failing `ip`/`tc`).
    #[error("registry.netns_rate = {rate}: cannot put the registry behind a kernel-shaped link (remove netns_rate to use only the embedded registry's own bandwidth model)")]
    Link {
        rate: Bandwidth,
        #[source]
        source: LabError,
    },
}

/// The embedded registry and, when shaped, the link it sits behind (with nodes in namespaces,
/// the fabric owns the registry's link: `nodes/`).
#[derive(Debug)]
pub struct Origin {
    registry: EmbeddedRegistry,
    // Declared after `registry`: fields drop in order, so the listeners close before the
    // namespace goes.
    link: Option<ShapedLink>,
}

impl Origin {
    /// Starts the registry for `nodes` node listeners under `model`, behind a shaped link when
    /// `model.netns_rate` is set. With `fabric` (nodes in namespaces), its one listener is
    /// bound inside that registry namespace instead, and the fabric shapes every link.
    pub async fn start(
        model: &RegistryModel,
        nodes: usize,
        fabric: Option<&stampede_lab::Endpoint>,
    ) -> Result<Self, OriginError> {
        if let Some(endpoint) = fabric {
            let std = endpoint.bind(0).map_err(OriginError::Fabric)?;
            let listeners = Listeners {
                shared: tokio_listener(std, None)?,
                nodes: Vec::new(),
            };
            let registry =
                EmbeddedRegistry::serve(listeners, model.clone(), DEFAULT_SERIES_BUCKET)?;
            return Ok(Self {
                registry,
                link: None,
            });
        }
        let Some(rate) = model.netns_rate else {
            let registry = EmbeddedRegistry::start(model.clone(), nodes).await?;
            return Ok(Self {
                registry,
                link: None,
            });
        };
        let link_error = |source| OriginError::Link { rate, source };
        let shaping = Shaping {
            rate_bits_per_sec: rate.bytes_per_sec.saturating_mul(8),
        };
        let link = tokio::task::spawn_blocking(move || ShapedLink::create(NETNS_PREFIX, shaping))
            .await
            .map_err(|e| {
                link_error(LabError::Socket {
                    what: "create the shaped link".into(),
                    source: std::io::Error::other(e),
                })
            })?
            .map_err(link_error)?;
        let bind = |node| tokio_listener(link.bind(0).map_err(link_error)?, node);
        let listeners = Listeners {
            shared: bind(None)?,
            nodes: (0..nodes)
                .map(|n| bind(Some(n)))
                .collect::<Result<_, _>>()?,
        };
        let registry = EmbeddedRegistry::serve(listeners, model.clone(), DEFAULT_SERIES_BUCKET)?;
        tracing::info!(
            namespace = link.netns(),
            address = %link.upstream_ip(),
            %rate,
            "embedded registry behind a tbf-shaped link"
        );
        Ok(Self {
            registry,
            link: Some(link),
        })
    }

    /// The registry.
    pub fn registry(&self) -> &EmbeddedRegistry {
        &self.registry
    }

    /// The registry's shared address (what peers and shared caches fill from).
    pub fn shared_addr(&self) -> SocketAddr {
        self.registry.addr()
    }

    /// Bytes the shaped link's tbf qdisc has sent toward the host so far (the kernel's count);
    /// `None` without a shaped link or when `tc` cannot say.
    pub fn link_sent_bytes(&self) -> Option<u64> {
        self.link.as_ref().and_then(|l| l.sent_bytes().ok())
    }

    /// What `result.json` records about the origin's link: `null` on loopback, else the
    /// namespace, addresses and rate.
    pub fn link_facts(&self) -> serde_json::Value {
        match &self.link {
            None => serde_json::Value::Null,
            Some(l) => json!({
                "netns": l.netns(),
                "registry_ip": l.upstream_ip().to_string(),
                "host_ip": l.host_ip().to_string(),
                "tbf_rate_bits_per_sec": l.shaping().rate_bits_per_sec,
                "tbf_burst_bytes": l.shaping().burst_bytes(),
            }),
        }
    }

    /// Stops the registry (in-flight responses get their grace period), then deletes the namespace.
    pub async fn shutdown(self) {
        let Self { registry, link } = self;
        registry.shutdown().await;
        if let Some(link) = link {
            if let Err(error) = tokio::task::spawn_blocking(move || drop(link)).await {
                tracing::warn!(%error, "deleting the shaped link failed");
            }
        }
    }
}

/// `std` as a tokio listener; `node` names it in the error.
fn tokio_listener(std: StdListener, node: Option<usize>) -> Result<TcpListener, OriginError> {
    std.set_nonblocking(true)
        .and_then(|()| TcpListener::from_std(std))
        .map_err(|source| RegistryError::Bind { node, source }.into())
}
