//! The embedded registry: the harness's default upstream (no Docker, no network). An in-process
//! OCI distribution pull API on 127.0.0.1 that serves images from OCI layouts with the
//! scenario's bandwidth, latency and throttling ([`model`]), and counts what it serves. It
//! listens on one shared port and one port per simulated node: the shared egress limit applies
//! to all, each node port also has its own link limit. A request goes: [`server`] (accept,
//! HTTP/1.1) -> [`handler`] (throttle, route, [`catalog`]) -> a [`body`] whose chunks pass
//! [`shaping`] and land in [`accounting`]. [`origin`] starts it where a run wants it.
//!
//! ```no_run
//! # async fn demo(image: &bench_harness::image::GeneratedImage) -> Result<(), Box<dyn std::error::Error>> {
//! use bench_harness::registry::{EmbeddedRegistry, RegistryModel};
//! let registry = EmbeddedRegistry::start(RegistryModel::default(), 4).await?;
//! registry.add_image("stampede/full", "latest", image)?;
//! println!("pull from {} or, as node 0, from {:?}", registry.url(), registry.node_url(0));
//! let served = registry.accounting().snapshot();
//! registry.shutdown().await;
//! # Ok(()) }
//! ```

pub mod accounting;
pub mod body;
pub mod catalog;
pub mod handler;
pub mod model;
pub mod origin;
pub mod server;
pub mod shaping;

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use stampede_oci::reference::is_tag;
use stampede_oci::{ReferenceError, RepoName};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use accounting::{
    Accounting, AccountingSnapshot, BodyBytes, ListenerCounts, ListenerId, ListenerSnapshot,
    ObjectCounts, RequestCounts, Series, DEFAULT_SERIES_BUCKET,
};
pub use catalog::CatalogError;
pub use model::{RegistryModel, Throttle};

use crate::image::LayoutImage;
use catalog::Catalog;
use handler::Handler;

/// The listeners a registry serves: one shared, one per node.
#[derive(Debug)]
pub struct Listeners {
    /// The shared listener (egress limit only).
    pub shared: TcpListener,
    /// Node listeners, by node index (egress and node link limits).
    pub nodes: Vec<TcpListener>,
}

/// Why the registry could not start or take an image.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// A listener could not be bound.
    #[error("bind registry listener {} on 127.0.0.1", node.map_or("shared".to_owned(), |n| format!("of node {n}")))]
    Bind {
        /// The node whose listener it was; `None` for the shared one.
        node: Option<usize>,
        #[source]
        source: io::Error,
    },
    #[error("read the address of a registry listener")]
    LocalAddr(#[source] io::Error),
    /// The repository name breaks the distribution grammar.
    #[error("add image: invalid repository name")]
    Repo(#[source] ReferenceError),
    /// The tag breaks the distribution grammar.
    #[error("add image: invalid tag {0:?}")]
    Tag(String),
    /// The image's layout on disk does not match it.
    #[error("add image as {repo}:{tag}")]
    Catalog {
        repo: RepoName,
        tag: String,
        #[source]
        source: CatalogError,
    },
}

/// A running embedded registry. Dropping it stops accepting and aborts connections;
/// [`EmbeddedRegistry::shutdown`] lets in-flight responses finish first.
#[derive(Debug)]
pub struct EmbeddedRegistry {
    catalog: Arc<Catalog>,
    accounting: Arc<Accounting>,
    shared_addr: SocketAddr,
    node_addrs: Vec<SocketAddr>,
    shutdown: CancellationToken,
    accept_loops: Vec<JoinHandle<()>>,
}

impl EmbeddedRegistry {
    /// Binds a shared listener and `nodes` node listeners on 127.0.0.1 (free ports) and serves
    /// them under `model`, with the time series in [`DEFAULT_SERIES_BUCKET`] buckets.
    ///
    /// # Errors
    /// [`RegistryError::Bind`] or [`RegistryError::LocalAddr`].
    pub async fn start(model: RegistryModel, nodes: usize) -> Result<Self, RegistryError> {
        let bind = |node: Option<usize>| async move {
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .await
                .map_err(|source| RegistryError::Bind { node, source })
        };
        let shared = bind(None).await?;
        let mut listeners = Vec::with_capacity(nodes);
        for i in 0..nodes {
            listeners.push(bind(Some(i)).await?);
        }
        let listeners = Listeners {
            shared,
            nodes: listeners,
        };
        Self::serve(listeners, model, DEFAULT_SERIES_BUCKET)
    }

    /// Serves `listeners` under `model` until shut down; the time series has buckets of
    /// `series_bucket`. Must be called within a tokio runtime (it spawns the accept loops).
    ///
    /// # Errors
    /// [`RegistryError::LocalAddr`] when a listener's address cannot be read.
    pub fn serve(
        listeners: Listeners,
        model: RegistryModel,
        series_bucket: Duration,
    ) -> Result<Self, RegistryError> {
        let nodes = listeners.nodes.len();
        let catalog = Arc::new(Catalog::default());
        let accounting = Arc::new(Accounting::new(nodes, series_bucket));
        let handler = Arc::new(Handler::new(
            &model,
            nodes,
            catalog.clone(),
            accounting.clone(),
        ));
        let shared_addr = listeners
            .shared
            .local_addr()
            .map_err(RegistryError::LocalAddr)?;
        let node_addrs = listeners
            .nodes
            .iter()
            .map(TcpListener::local_addr)
            .collect::<io::Result<Vec<_>>>()
            .map_err(RegistryError::LocalAddr)?;
        let shutdown = CancellationToken::new();
        let all = std::iter::once((ListenerId::Shared, listeners.shared)).chain(
            listeners
                .nodes
                .into_iter()
                .enumerate()
                .map(|(i, l)| (ListenerId::Node(i), l)),
        );
        let accept_loops = all
            .map(|(id, listener)| {
                tokio::spawn(server::accept_loop(
                    listener,
                    id,
                    handler.clone(),
                    shutdown.clone(),
                ))
            })
            .collect();
        tracing::debug!(%shared_addr, nodes, "embedded registry listening");
        Ok(Self {
            catalog,
            accounting,
            shared_addr,
            node_addrs,
            shutdown,
            accept_loops,
        })
    }

    /// Serves `image` (or what describes itself as one, such as a `&GeneratedImage`) as
    /// `repo:tag` on every listener, through [`catalog::Catalog::add`] (a little blocking I/O).
    ///
    /// # Errors
    /// [`RegistryError::Repo`] or [`RegistryError::Tag`] for invalid names,
    /// [`RegistryError::Catalog`] when the layout on disk does not match the image.
    pub fn add_image(
        &self,
        repo: &str,
        tag: &str,
        image: impl Into<LayoutImage>,
    ) -> Result<(), RegistryError> {
        let image = image.into();
        let repo = RepoName::parse(repo).map_err(RegistryError::Repo)?;
        if !is_tag(tag) {
            return Err(RegistryError::Tag(tag.to_owned()));
        }
        self.catalog
            .add(repo.clone(), tag, &image)
            .map_err(|source| RegistryError::Catalog {
                repo,
                tag: tag.to_owned(),
                source,
            })
    }

    /// `http://127.0.0.1:<port>` of the shared listener.
    pub fn url(&self) -> String {
        format!("http://{}", self.shared_addr)
    }

    /// `http://127.0.0.1:<port>` of node `node`'s listener; `None` past the last node.
    pub fn node_url(&self, node: usize) -> Option<String> {
        self.node_addrs.get(node).map(|a| format!("http://{a}"))
    }

    /// The shared listener's address.
    pub fn addr(&self) -> SocketAddr {
        self.shared_addr
    }

    /// Node `node`'s listener address; `None` past the last node.
    pub fn node_addr(&self, node: usize) -> Option<SocketAddr> {
        self.node_addrs.get(node).copied()
    }

    /// Number of node listeners.
    pub fn nodes(&self) -> usize {
        self.node_addrs.len()
    }

    /// The registry's counters: snapshot, reset, epoch.
    pub fn accounting(&self) -> &Accounting {
        &self.accounting
    }

    /// Stops accepting, lets in-flight responses finish for up to [`server::SHUTDOWN_GRACE`],
    /// then drops the remaining connections.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        for handle in std::mem::take(&mut self.accept_loops) {
            if let Err(error) = handle.await {
                tracing::warn!(%error, "registry accept loop failed");
            }
        }
    }
}

impl Drop for EmbeddedRegistry {
    fn drop(&mut self) {
        self.shutdown.cancel();
        for handle in &self.accept_loops {
            handle.abort();
        }
    }
}
