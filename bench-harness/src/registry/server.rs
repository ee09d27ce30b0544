//! Accepting connections for the embedded registry: one accept loop per listener, HTTP/1.1 via
//! hyper, graceful shutdown on a cancellation token (in-flight responses get
//! [`SHUTDOWN_GRACE`] to finish, then their connections are dropped). No OCI knowledge: every
//! request goes to the [`Handler`] with the id of the listener it arrived on.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::accounting::ListenerId;
use super::handler::Handler;

/// How long in-flight responses may run on after shutdown is asked for.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// Pause after a failed `accept` (e.g. out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(20);

/// Serves `listener` until `shutdown` is cancelled, then drains its connections.
pub async fn accept_loop(
    listener: TcpListener,
    id: ListenerId,
    handler: Arc<Handler>,
    shutdown: CancellationToken,
) {
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    stream.set_nodelay(true).ok();
                    let handler = handler.clone();
                    let service = service_fn(move |req| {
                        let handler = handler.clone();
                        async move { Ok::<_, Infallible>(handler.handle(id, req).await) }
                    });
                    let connection = http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), service);
                    let watched = graceful.watch(connection);
                    connections.spawn(async move {
                        if let Err(error) = watched.await {
                            tracing::debug!(%error, "registry connection ended with an error");
                        }
                    });
                }
                Err(error) => {
                    tracing::warn!(%error, ?id, "registry accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!(
            ?id,
            "registry connections still busy after the grace period; dropping them"
        );
    }
    connections.shutdown().await;
}
