//! The accept loops (mirror and admin listeners): HTTP/1.1 connections, a cap on concurrent connections, header-read timeouts
//! for idle or slow clients, and graceful shutdown (stop accepting, let responses in flight
//! finish for a grace period, then close).
//!
//! No OCI knowledge: every request goes to [`App::handle`]. [`start`] assembles the daemon from
//! a [`Config`]; [`run`] serves it on a listener the caller bound, until the caller's shutdown
//! signal, so tests bind port 0.
//!
//! Hostile clients: headers must arrive within [`ServerConfig::header_read_timeout`] (also the
//! longest a kept-alive connection idles); a client that stops reading its response is
//! disconnected after [`ServerConfig::client_write_timeout`] ([`WriteDeadline`], which also
//! bounds the kernel's sends of blob spans, [`KernelSend`]); a request head beyond [`MAX_HEADER_BYTES`] or
//! [`MAX_HEADERS`] fields gets a 431 (a long URL included), and framing hyper cannot trust (two
//! different `Content-Length`s, a `Transfer-Encoding` not ending in `chunked`, obs-fold, a bare
//! CR) a 400 and a close. The mirror never reads a request body (only GET and HEAD are served):
//! a request that has one is answered with `Connection: close`, so the body is never waited for
//! and whatever follows it on the connection is never taken as another request. hyper itself
//! closes after a request carrying both `Content-Length` and `Transfer-Encoding` (RFC 9112
//! section 6.1, which TE wins), and accepts a bare LF as a line end (section 2.2 allows it).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderValue, CONNECTION};
use hyper::body::Body as _;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{oneshot, watch, Semaphore};
use tokio::task::JoinHandle;

use crate::cluster::Cluster;
use crate::config::{Config, ServerConfig};
use crate::flight::Flights;
use crate::handler::App;
use crate::manifests::Manifests;
use crate::metrics::Metrics;
use crate::store::BlobStore;
use crate::upstream::Upstreams;
use crate::write_deadline::WriteDeadline;
use crate::zero_copy::{self, KernelSend, Lane};

/// hyper's per-connection buffer limit (`max_buf_size`), in bytes: request headers must fit, and
/// hyper stops asking a response body for more once this much is queued unsent. Its default
/// (~400 KiB) let a connection hold two [`crate::body::CHUNK_BYTES`] chunks at once, which is
/// what made 256 clients of a hot blob cost over 100 MiB.
pub const HTTP_BUF_BYTES: usize = 64 * 1024;
/// Largest request head (request line and headers) accepted, in bytes; a larger one gets a 431
/// and the connection is closed. Set explicitly: `max_buf_size` alone is not a hard bound (a
/// 70 KiB header arriving in one read was accepted). Registry requests are a short path and a
/// few headers; 32 KiB leaves room for large bearer tokens.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;
/// Most header fields in a request (hyper's default, stated here); more get a 431.
pub const MAX_HEADERS: usize = 100;

/// Connections the kernel queues on a listener until they are accepted (it caps this at
/// `net.core.somaxconn`, 4096 by default). `TcpListener::bind` uses 128, and a thousand clients
/// connecting at once overflowed that: the kernel dropped handshakes, which clients retried only
/// after 1 s, then 2 s (`/healthz` included). Connections past `max_connections` wait here too.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Kernel send buffer of each client connection (`SO_SNDBUF`; Linux doubles it, so 256 KiB).
/// Left to autotuning, the kernel let every connection queue up to `net.ipv4.tcp_wmem`'s
/// maximum (4 MiB) however slowly its client read: 256 slow readers of one blob held 988 MiB of
/// kernel memory, and copying it in stalled the daemon for a second. Fixed, a slow reader holds
/// 256 KiB in the kernel; a fast one on the node (loopback or pod network, RTT well under 1 ms)
/// still gets well over 1 GB/s from it.
pub const SEND_BUFFER_BYTES: u32 = 128 * 1024;

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
        source: crate::store::OpenError,
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

/// Connections the admin listener serves at once (operators and scrapers, not clients); the
/// mirror listener's cap is `max_connections`.
const ADMIN_MAX_CONNECTIONS: usize = 64;

/// How often recency is saved and the budget checked, besides wake-ups after commits.
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(30);
/// How long a declared pin that failed waits before trying again.
const PIN_RETRY_EVERY: Duration = Duration::from_secs(60);

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
            source: std::io::Error::other(e).into(),
        })?
        .map_err(|source| StartError::Store {
            root: root.clone(),
            source,
        })?;
    tracing::info!(
        root = %root.display(),
        blobs = recovery.blobs,
        bytes = recovery.bytes,
        pins = recovery.pins,
        temp_files_removed = recovery.temp_files_removed,
        strays = recovery.strays,
        "store opened"
    );
    let store = Arc::new(store);
    let metrics = Arc::new(Metrics::new());
    let tag_ttl = config.upstream.tag_ttl;
    let upstreams =
        Arc::new(Upstreams::new(config.upstream, metrics.clone()).map_err(StartError::Upstream)?);
    let manifests = Arc::new(Manifests::new(
        store.clone(),
        upstreams.clone(),
        metrics.clone(),
        tag_ttl,
    ));
    let flights = Arc::new(Flights::default());
    if config.access.check_callers {
        tracing::info!(allow_ttl = ?config.access.allow_ttl, deny_ttl = ?config.access.deny_ttl, grace = ?config.access.grace, "caller checks on: private repositories are served only to callers the upstream accepts");
    }
    let access = Arc::new(crate::access::Access::new(
        config.access,
        upstreams.clone(),
        store.clone(),
        flights.clone(),
        metrics.clone(),
    ));
    let cluster = config.cluster.as_ref().map(|c| {
        tracing::info!(peer_listen = %c.listen, advertise = %c.advertise, peers = %c.peers, "cluster mode on: misses are shared with the other members");
        Arc::new(Cluster::new(
            c,
            crate::cluster::Parts {
                store: store.clone(),
                flights: flights.clone(),
                upstreams: upstreams.clone(),
                metrics: metrics.clone(),
            },
        ))
    });
    Ok(Arc::new(App {
        store,
        flights,
        manifests,
        upstreams,
        metrics,
        evict: Arc::new(tokio::sync::Notify::new()),
        declared_pins: config.pins,
        access,
        cluster,
    }))
}

/// The sockets the daemon serves.
#[derive(Debug)]
pub struct Listeners {
    /// Registry clients (the mirror API, `/metrics`, `/healthz`).
    pub mirror: TcpListener,
    /// The admin API, if enabled.
    pub admin: Option<TcpListener>,
    /// The peer port, in cluster mode.
    pub peer: Option<TcpListener>,
}

impl Listeners {
    /// Binds `config.listen`, `config.admin_listen` and the peer port (`peer_listen`).
    ///
    /// # Errors
    /// [`StartError::Bind`] naming the address.
    pub async fn bind(
        config: &ServerConfig,
        peer_listen: Option<SocketAddr>,
    ) -> Result<Self, StartError> {
        let bind = |addr: SocketAddr| async move {
            listen(addr).map_err(|source| StartError::Bind { addr, source })
        };
        let mirror = bind(config.listen).await?;
        let admin = match config.admin_listen {
            Some(a) => Some(bind(a).await?),
            None => None,
        };
        let peer = match peer_listen {
            Some(a) => Some(bind(a).await?),
            None => None,
        };
        Ok(Self {
            mirror,
            admin,
            peer,
        })
    }
}

/// Binds `addr` and listens with [`LISTEN_BACKLOG`], address reuse on (as tokio's own `bind`),
/// and [`SEND_BUFFER_BYTES`] for the connections it accepts (they inherit it).
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_send_buffer_size(SEND_BUFFER_BYTES)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Mirror,
    Admin,
    /// Cluster peers (`cluster/server.rs`).
    Peer,
}

/// Serves `app` on `listeners` until `shutdown` completes, then drains gracefully and saves the
/// store's state. Background housekeeping (eviction, saving recency, declared pins) runs
/// meanwhile.
pub async fn run(
    app: Arc<App>,
    config: ServerConfig,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) {
    let (stop_tx, stop) = watch::channel(false);
    let housekeeping = tokio::spawn(housekeep(app.clone(), stop.clone()));
    for request in app.declared_pins.clone() {
        tokio::spawn(ensure_declared_pin(app.clone(), request, stop.clone()));
    }
    let limit = Semaphore::new(config.max_connections);
    let graceful = Arc::new(GracefulShutdown::new());
    let shared = LoopShared {
        app: app.clone(),
        timeouts: Timeouts::of(&config),
        graceful: graceful.clone(),
        stop: stop.clone(),
    };
    let mut loops = Vec::new();
    loops.push(tokio::spawn(accept_loop(
        shared.clone(),
        listeners.mirror,
        Role::Mirror,
        Arc::new(limit),
    )));
    if let Some(admin) = listeners.admin {
        // Its own cap: a loop holds a permit while it waits in accept, so a shared cap served
        // one mirror connection fewer than configured, and clients filling the mirror port
        // would lock the operator out of the admin API.
        loops.push(tokio::spawn(accept_loop(
            shared.clone(),
            admin,
            Role::Admin,
            Arc::new(Semaphore::new(ADMIN_MAX_CONNECTIONS)),
        )));
    }
    if let (Some(peer), Some(cluster)) = (listeners.peer, app.cluster.clone()) {
        tokio::spawn(cluster.clone().watch_members(stop.clone()));
        // Its own cap, as the admin port's: peers cannot take the slots of the node's clients.
        let cap = cluster.max_connections();
        loops.push(tokio::spawn(accept_loop(
            shared.clone(),
            peer,
            Role::Peer,
            Arc::new(Semaphore::new(cap)),
        )));
    }
    // The loops hold the only other handles on `graceful`, unwrapped once they end.
    drop(shared);
    shutdown.await;
    stop_tx.send_replace(true);
    for l in loops {
        l.await.ok();
    }
    tracing::info!("shutting down: waiting for responses in flight");
    let graceful =
        Arc::try_unwrap(graceful).unwrap_or_else(|_| unreachable!("accept loops have ended"));
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(config.shutdown_grace) => tracing::warn!(grace = ?config.shutdown_grace, "grace period over; closing remaining connections"),
    }
    housekeeping.await.ok();
    let store = app.store.clone();
    match tokio::task::spawn_blocking(move || store.save_state()).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "could not save store state at shutdown"),
        Err(e) => tracing::warn!(error = %e, "state saving task failed"),
    }
}

/// What a connection may take from a slow or absent client.
#[derive(Debug, Clone, Copy)]
struct Timeouts {
    header_read: Duration,
    client_write: Duration,
}

impl Timeouts {
    fn of(config: &ServerConfig) -> Self {
        Self {
            header_read: config.header_read_timeout,
            client_write: config.client_write_timeout,
        }
    }
}

/// What every accept loop shares: the app, the client timeouts, the graceful-shutdown watch
/// over all connections and the stop signal.
#[derive(Clone)]
struct LoopShared {
    app: Arc<App>,
    timeouts: Timeouts,
    graceful: Arc<GracefulShutdown>,
    stop: watch::Receiver<bool>,
}

/// Accepts connections on `listener` for `role`, at most `limit` at once, until stopped.
async fn accept_loop(shared: LoopShared, listener: TcpListener, role: Role, limit: Arc<Semaphore>) {
    let LoopShared {
        app,
        timeouts,
        graceful,
        mut stop,
    } = shared;
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(timeouts.header_read)
        .max_buf_size(HTTP_BUF_BYTES)
        .max_header_size(MAX_HEADER_BYTES)
        .max_headers(MAX_HEADERS)
        // Body frames queued as they are, never copied into hyper's buffer: the stand-in frames
        // of `zero_copy` must reach the socket as their own slices.
        .writev(true);
    loop {
        let permit = tokio::select! {
            () = stopped(&mut stop) => break,
            permit = limit.clone().acquire_owned() => permit.expect("semaphore never closed"),
        };
        let (stream, peer) = tokio::select! {
            () = stopped(&mut stop) => break,
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
        let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
            let app = app.clone();
            async move {
                Ok::<_, std::convert::Infallible>(match role {
                    Role::Mirror => {
                        let has_body = !req.body().is_end_stream();
                        let mut resp = app.handle(req).await;
                        if has_body {
                            // Never read: answer now and close instead of draining it.
                            resp.headers_mut()
                                .insert(CONNECTION, HeaderValue::from_static("close"));
                        }
                        resp
                    }
                    Role::Admin => app.handle_admin(req).await,
                    Role::Peer => match app.cluster.clone() {
                        Some(cluster) => cluster.handle(req).await,
                        None => unreachable!("the peer port is bound only in cluster mode"),
                    },
                })
            }
        });
        let lane = Lane::default();
        let socket = KernelSend::new(stream, lane.clone());
        let io = TokioIo::new(WriteDeadline::new(socket, timeouts.client_write));
        let conn = graceful.watch(http.serve_connection(io, service));
        tokio::spawn(zero_copy::serve(lane, async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(permit);
        }));
    }
}

/// Completes once `stop` turns true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Evicts when woken (a commit went over the high watermark) or periodically, and saves recency
/// periodically, until stopped.
async fn housekeep(app: Arc<App>, mut stop: watch::Receiver<bool>) {
    // An interval, not a fresh sleep per loop: eviction wake-ups must not push the state save
    // back indefinitely.
    let mut save = tokio::time::interval(HOUSEKEEPING_EVERY);
    save.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    save.tick().await;
    // Usage when an eviction last freed nothing (everything left pinned or too young): the
    // LRU scan is not repeated, under the index lock, until usage grows past it.
    let mut fruitless_at: Option<u64> = None;
    loop {
        tokio::select! {
            () = stopped(&mut stop) => return,
            () = app.evict.notified() => {}
            _ = save.tick() => {
                let store = app.store.clone();
                if let Ok(Err(e)) = tokio::task::spawn_blocking(move || store.save_state()).await {
                    tracing::warn!(error = %e, "could not save store state");
                }
                // Blobs age past min_age and pins are removed: look again at every save.
                fruitless_at = None;
            }
        }
        let used = app.store.used_bytes();
        if app.store.over_budget() && fruitless_at.is_none_or(|at| used > at) {
            let report = crate::admin::gc(&app, None, false).await;
            fruitless_at = report.victims.is_empty().then_some(used);
            tracing::info!(
                blobs = report.victims.len(),
                bytes = report.bytes,
                "evicted to the low watermark"
            );
        }
    }
}

/// Pins what the config file declares, retrying while the upstream is unavailable.
async fn ensure_declared_pin(
    app: Arc<App>,
    request: crate::config::PinRequest,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        match crate::admin::pin(&app, &request).await {
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(target = %request.target, error = e.message, "declared pin not yet in place; retrying")
            }
        }
        tokio::select! {
            () = stopped(&mut stop) => return,
            () = tokio::time::sleep(PIN_RETRY_EVERY) => {}
        }
    }
}

/// Linux's default `fs.nr_open`, the most files a process may ever have open.
const NR_OPEN_DEFAULT: u64 = 1 << 20;

/// The soft open-file limit before and after [`raise_open_file_limit`] (`None`: unlimited).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFileLimit {
    /// Before.
    pub before: Option<u64>,
    /// After.
    pub after: Option<u64>,
}

/// Raises this process's soft limit on open files to its hard limit, as servers commonly do:
/// every client connection, upstream connection and blob being read or filled is a descriptor,
/// and the soft limit's usual default (1024) is below `max_connections`' default. An unlimited
/// hard limit cannot be the soft one for files (the kernel caps it at `fs.nr_open`), so the
/// kernel's default cap is taken then. Also used by the load tests and bench for themselves.
///
/// # Errors
/// The kernel refused the new limit.
pub fn raise_open_file_limit() -> std::io::Result<OpenFileLimit> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let old = getrlimit(Resource::Nofile);
    if old.current != old.maximum {
        let raised = Rlimit {
            current: Some(old.maximum.unwrap_or(NR_OPEN_DEFAULT)),
            maximum: old.maximum,
        };
        setrlimit(Resource::Nofile, raised)?;
    }
    Ok(OpenFileLimit {
        before: old.current,
        after: getrlimit(Resource::Nofile).current,
    })
}

/// A daemon running in this process (tests, embedding in the bench harness).
#[derive(Debug)]
pub struct Daemon {
    addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
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
    let listeners = Listeners::bind(&server, config.cluster.as_ref().map(|c| c.listen)).await?;
    let local = |l: &TcpListener, addr: SocketAddr| {
        l.local_addr()
            .map_err(|source| StartError::Bind { addr, source })
    };
    let addr = local(&listeners.mirror, server.listen)?;
    let admin_addr = match (&listeners.admin, server.admin_listen) {
        (Some(l), Some(a)) => Some(local(l, a)?),
        _ => None,
    };
    let app = build(config).await?;
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(run(app.clone(), server, listeners, async {
        stopped.await.ok();
    }));
    Ok(Daemon {
        addr,
        admin_addr,
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

    /// `http://<admin addr>`, when the admin listener is enabled.
    pub fn admin_url(&self) -> Option<String> {
        self.admin_addr.map(|a| format!("http://{a}"))
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
