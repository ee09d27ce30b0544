//! The accept loop: HTTP/1.1 connections, a cap on concurrent connections, header-read timeouts
//! for idle or slow clients, and graceful shutdown (stop accepting, let responses in flight
//! finish for a grace period, then close). No OCI knowledge: every request goes to
//! [`App::handle`]. [`start`] assembles the daemon from a [`Config`]; [`run`] serves it on a
//! listener the caller bound, until the caller's shutdown signal, so tests bind port 0.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, Semaphore};
use tokio::task::JoinHandle;

use crate::config::{Config, ServerConfig};
use crate::flight::Flights;
use crate::handler::App;
use crate::manifests::Manifests;
use crate::metrics::Metrics;
use crate::store::BlobStore;
use crate::upstream::Upstreams;

/// Clients must finish sending request headers within this time.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// hyper's per-connection buffer limit (`max_buf_size`), in bytes: request headers must fit, and
/// hyper stops asking a response body for more once this much is queued unsent. Its default
/// (~400 KiB) let a connection hold two [`crate::body::CHUNK_BYTES`] chunks at once, which is
/// what made 256 clients of a hot blob cost over 100 MiB.
pub const HTTP_BUF_BYTES: usize = 64 * 1024;

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The store could not be opened.
    #[error("open store at {root}")]
    Store {
        /// The store root.
        root: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The upstream client could not be built.
    #[error("configure upstream client")]
    Upstream(#[source] stampede_oci::ClientError),
    /// The listen address could not be bound.
    #[error("listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Opens the store and builds every component from `config`. Blocking parts run on the
/// blocking pool.
///
/// # Errors
/// [`StartError`] naming the component that failed.
pub async fn build(config: Config) -> Result<Arc<App>, StartError> {
    let root = config.store.root.clone();
    let store_config = config.store.clone();
    let (store, recovery) = tokio::task::spawn_blocking(move || BlobStore::open(store_config))
        .await
        .map_err(|e| StartError::Store {
            root: root.clone(),
            source: std::io::Error::other(e),
        })?
        .map_err(|source| StartError::Store {
            root: root.clone(),
            source,
        })?;
    tracing::info!(
        root = %root.display(),
        blobs = recovery.blobs,
        bytes = recovery.bytes,
        temp_files_removed = recovery.temp_files_removed,
        strays = recovery.strays,
        "store opened"
    );
    let store = Arc::new(store);
    let metrics = Arc::new(Metrics::new());
    let tag_ttl = config.upstream.tag_ttl;
    let upstreams = Arc::new(Upstreams::new(config.upstream).map_err(StartError::Upstream)?);
    let manifests = Arc::new(Manifests::new(
        store.clone(),
        upstreams.clone(),
        metrics.clone(),
        tag_ttl,
    ));
    Ok(Arc::new(App {
        store,
        flights: Arc::new(Flights::default()),
        manifests,
        upstreams,
        metrics,
    }))
}

/// Serves `app` on `listener` until `shutdown` completes, then drains gracefully.
pub async fn run(
    app: Arc<App>,
    config: ServerConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) {
    let limit = Arc::new(Semaphore::new(config.max_connections));
    let graceful = GracefulShutdown::new();
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(HTTP_BUF_BYTES);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = limit.clone().acquire_owned() => permit.expect("semaphore never closed"),
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        stream.set_nodelay(true).ok();
        let app = app.clone();
        let service = service_fn(move |req| {
            let app = app.clone();
            async move { Ok::<_, std::convert::Infallible>(app.handle(req).await) }
        });
        let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    tracing::info!("shutting down: waiting for responses in flight");
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(config.shutdown_grace) => tracing::warn!(grace = ?config.shutdown_grace, "grace period over; closing remaining connections"),
    }
}

/// A daemon running in this process (tests, embedding in the bench harness).
#[derive(Debug)]
pub struct Daemon {
    addr: SocketAddr,
    app: Arc<App>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

/// Builds the daemon, binds `config.server.listen` and serves in a spawned task.
///
/// # Errors
/// [`StartError`] when a component cannot be built or the address bound.
pub async fn start(config: Config) -> Result<Daemon, StartError> {
    let server = config.server.clone();
    let listener = TcpListener::bind(server.listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: server.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: server.listen,
        source,
    })?;
    let app = build(config).await?;
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(run(app.clone(), server, listener, async {
        stopped.await.ok();
    }));
    Ok(Daemon {
        addr,
        app,
        stop: Some(stop),
        task,
    })
}

impl Daemon {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The daemon's state, for inspection in tests.
    pub fn app(&self) -> &Arc<App> {
        &self.app
    }

    /// Stops accepting, drains, and waits for the server task.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            stop.send(()).ok();
        }
        (&mut self.task).await.ok();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.stop.is_some() {
            self.task.abort();
        }
    }
}
