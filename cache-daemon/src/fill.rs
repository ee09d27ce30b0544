//! One upstream blob fill, start to finish: GET the blob upstream, write it to a temp file while
//! hashing it, then commit it (verified) or fail the flight (nothing committed, followers cut).
//!
//! Three stages run in parallel so none caps throughput alone: this task receives frames from
//! the upstream connection and hands each (shared, not copied) to a blocking hasher thread and
//! a blocking writer thread; the writer writes them to the temp file with positional writes and
//! reports progress to followers, batching wake-ups (every [`NOTIFY_BYTES`], or whenever it has
//! caught up with the network) so a hundred followers are not woken per packet. Followers never
//! wait for the hash; only the commit (and so every response's last byte) does.

use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use tokio::sync::mpsc;

use stampede_oci::{Endpoint, RepoName, Verifier};

use crate::error::Error;
use crate::flight::{FillFailure, FillGuard, ProgressWriter, Started};
use crate::metrics::{FillResult, Metrics};
use crate::store::{BlobMeta, BlobStore, TempBlob};
use crate::upstream::{retry_after, Upstreams};

/// Followers are woken at least every this many bytes written.
pub const NOTIFY_BYTES: u64 = 64 * 1024;
/// Frames queued between the network stage and the writer, and again before the hasher.
const WRITE_QUEUE_FRAMES: usize = 64;

/// What a fill needs besides its guard: shared daemon parts.
#[derive(Debug, Clone)]
pub struct FillContext {
    /// Where the blob is committed.
    pub store: Arc<BlobStore>,
    /// Who to fetch from.
    pub upstreams: Arc<Upstreams>,
    /// What to count.
    pub metrics: Arc<Metrics>,
    /// Wakes the evictor when a commit takes the store over its high watermark.
    pub evict: Arc<tokio::sync::Notify>,
}

/// Which blob to fetch from where.
#[derive(Debug)]
pub struct FillJob {
    /// The claim on the flight; consumed by success or failure.
    pub guard: FillGuard,
    /// The upstream registry.
    pub endpoint: Endpoint,
    /// The repository the client asked through (blobs are shared, but upstream needs a name).
    pub repo: RepoName,
}

/// Runs a fill to the end. Spawn it: it must not depend on any client staying connected.
pub async fn run(job: FillJob, ctx: FillContext) {
    let FillJob {
        guard,
        endpoint,
        repo,
    } = job;
    let digest = guard.flight().digest().clone();
    let started_at = Instant::now();
    ctx.metrics.fill_started();
    match fetch(&guard, &endpoint, &repo, &ctx).await {
        Ok(bytes) => {
            ctx.metrics.fill_ended(FillResult::Committed);
            tracing::info!(%digest, bytes, upstream = %endpoint.base_url(), elapsed_ms = started_at.elapsed().as_millis() as u64, "blob committed");
            guard.done();
            if ctx.store.over_budget() {
                ctx.evict.notify_one();
            }
        }
        Err(failure) => {
            let result = if failure == FillFailure::Mismatch {
                FillResult::Mismatch
            } else {
                FillResult::Failed
            };
            ctx.metrics.fill_ended(result);
            tracing::warn!(%digest, %repo, upstream = %endpoint.base_url(), %failure, "blob fill failed; nothing committed");
            guard.fail(failure);
        }
    }
}

async fn fetch(
    guard: &FillGuard,
    endpoint: &Endpoint,
    repo: &RepoName,
    ctx: &FillContext,
) -> Result<u64, FillFailure> {
    let digest = guard.flight().digest().clone();
    // The upstream slot is held until the body is read to the end (or the fill fails).
    let (resp, _slot) = match ctx
        .upstreams
        .blob(endpoint, repo, &digest, Method::GET)
        .await
    {
        Ok(a) => (a.response, a.slot),
        Err(Error::UpstreamThrottled { retry_after, .. }) => {
            // Held back during a Retry-After window: nothing was sent.
            return Err(FillFailure::Status {
                status: StatusCode::TOO_MANY_REQUESTS.as_u16(),
                retry_after,
            });
        }
        Err(e) => {
            tracing::warn!(%digest, error = %stampede_oci::error_chain(&e), "upstream blob request failed");
            return Err(match e {
                Error::UpstreamTimeout { .. } => FillFailure::Timeout,
                Error::UpstreamDenied { status, .. } => FillFailure::Status {
                    status: status.as_u16(),
                    retry_after: None,
                },
                _ => FillFailure::Unreachable,
            });
        }
    };
    if resp.status() != StatusCode::OK {
        return Err(FillFailure::Status {
            status: resp.status().as_u16(),
            retry_after: retry_after(&resp),
        });
    }
    let total_bytes = resp
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());

    let store = ctx.store.clone();
    let d = digest.clone();
    let temp = tokio::task::spawn_blocking(move || store.create_temp(&d))
        .await
        .map_err(|_| FillFailure::Local)?
        .map_err(|e| {
            tracing::error!(%digest, error = %e, "cannot create temp file for fill");
            FillFailure::Local
        })?;
    let temp = Arc::new(temp);
    guard.start(Started {
        file: temp.file.clone(),
        total_bytes,
    });

    let outcome = stream_to_disk(
        resp.into_body(),
        &temp,
        guard.progress_writer(),
        Verifier::new(digest.clone()),
        ctx,
    )
    .await;
    let outcome = outcome.and_then(|(written, verifier)| {
        if total_bytes.is_some_and(|t| t != written) {
            return Err(FillFailure::Truncated);
        }
        verifier.finish().map(|_| written).map_err(|mismatch| {
            tracing::error!(expected = %mismatch.expected, actual = %mismatch.actual, upstream = %endpoint.base_url(), "upstream blob does not match its digest");
            FillFailure::Mismatch
        })
    });
    let store = ctx.store.clone();
    match outcome {
        Ok(written) => {
            let temp2 = temp.clone();
            let committed = tokio::task::spawn_blocking(move || {
                store.commit(&digest, &temp2, written, &BlobMeta::default())
            })
            .await
            .map_err(|_| FillFailure::Local)?;
            committed.map(|()| written).map_err(|e| {
                tracing::error!(error = %e, "commit of verified blob failed");
                FillFailure::Local
            })
        }
        Err(f) => {
            tokio::task::spawn_blocking(move || store.discard(&temp))
                .await
                .ok();
            Err(f)
        }
    }
}

/// Receives the body and hands every frame to two blocking threads: one hashes it, one writes
/// it to the temp file (the frames are shared, not copied). Returns bytes written and the
/// verifier (not yet finished).
///
/// Hashing here, inline, kept the upstream connection from reading while a frame was hashed
/// (hyper reads the next frame only once this one is taken), so receive and sha256 ran in
/// series; on their own thread they overlap.
async fn stream_to_disk(
    mut body: hyper::body::Incoming,
    temp: &Arc<TempBlob>,
    progress: ProgressWriter,
    verifier: Verifier,
    ctx: &FillContext,
) -> Result<(u64, Verifier), FillFailure> {
    let (tx, rx) = mpsc::channel::<Bytes>(WRITE_QUEUE_FRAMES);
    let (hash_tx, hash_rx) = mpsc::channel::<Bytes>(WRITE_QUEUE_FRAMES);
    let file = temp.file.clone();
    let path = temp.path.clone();
    let writer = tokio::task::spawn_blocking(move || {
        write_frames(&file, rx, &progress).map_err(|e| (e, path))
    });
    let hasher = tokio::task::spawn_blocking(move || hash_frames(hash_rx, verifier));
    let idle = ctx.upstreams.body_idle_timeout;
    let received: Result<(), FillFailure> = async {
        loop {
            let frame = match tokio::time::timeout(idle, body.frame()).await {
                Err(_) => return Err(FillFailure::Timeout),
                Ok(None) => return Ok(()),
                Ok(Some(Err(e))) => {
                    tracing::warn!(error = %e, "upstream body failed");
                    return Err(FillFailure::Truncated);
                }
                Ok(Some(Ok(frame))) => frame,
            };
            if let Ok(data) = frame.into_data() {
                ctx.metrics.upstream_bytes(data.len() as u64);
                // Either stage stopping ends the fill: the writer's own error says why, and
                // the hasher stops only if it died.
                if hash_tx.send(data.clone()).await.is_err() || tx.send(data).await.is_err() {
                    return Ok(());
                }
            }
        }
    }
    .await;
    drop(tx);
    drop(hash_tx);
    let written = writer.await.map_err(|_| FillFailure::Local)?;
    let verifier = hasher.await.map_err(|_| FillFailure::Local)?;
    received?;
    match written {
        Ok(n) if n == verifier.bytes() => Ok((n, verifier)),
        Ok(_) => Err(FillFailure::Local),
        Err((e, path)) => {
            ctx.store.write_failed(&e, temp);
            tracing::error!(path = %path.display(), error = %e, "write to temp file failed");
            Err(FillFailure::Local)
        }
    }
}

fn hash_frames(mut rx: mpsc::Receiver<Bytes>, mut verifier: Verifier) -> Verifier {
    while let Some(chunk) = rx.blocking_recv() {
        verifier.update(&chunk);
    }
    verifier
}

fn write_frames(
    file: &std::fs::File,
    mut rx: mpsc::Receiver<Bytes>,
    progress: &ProgressWriter,
) -> std::io::Result<u64> {
    let mut written = 0u64;
    let mut notified = 0u64;
    let mut next = rx.blocking_recv();
    while let Some(chunk) = next {
        file.write_all_at(&chunk, written)?;
        let len = chunk.len() as u64;
        progress.remember(written, chunk);
        written += len;
        next = match rx.try_recv() {
            Ok(more) => {
                if written - notified >= NOTIFY_BYTES {
                    progress.wrote(written, true);
                    notified = written;
                } else {
                    progress.wrote(written, false);
                }
                Some(more)
            }
            Err(_) => {
                // Caught up with the network: let followers have everything now.
                progress.wrote(written, true);
                notified = written;
                rx.blocking_recv()
            }
        };
    }
    Ok(written)
}
