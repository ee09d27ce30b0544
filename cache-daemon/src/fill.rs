//! One upstream blob fill, start to finish: GET the blob upstream, write it to a temp file while
//! hashing it, then commit it (verified) or fail the flight (nothing committed, followers cut).
//!
//! Two stages run in parallel: this task receives frames from the upstream connection and hands
//! each (shared, not copied) to a blocking writer thread, which writes it to the temp file with
//! a positional write, reports progress to followers, batching wake-ups (every
//! [`NOTIFY_BYTES`], or whenever it has caught up with the network) so a hundred followers are
//! not woken per packet, and then hashes it. Followers never wait for the hash; only the commit
//! (and so every response's last byte) does. The hash used to have a thread of its own; off a
//! slow link every frame is small, and waking a third thread per frame cost more CPU than the
//! overlap saved (README, *Zero-copy sends*).
//!
//! When the upstream body breaks (connection reset, early end) or stalls past the idle timeout,
//! the fill is not given up at once: it asks again from the offset it has received, which the
//! writer holds in order (`Range: bytes=<received>-`). A `206` from that offset
//! continues the same file and the same running hash. A `200` (an upstream that ignores ranges)
//! sends the blob from its start: the bytes the file already has are compared with it, not
//! written again, and any difference fails the fill as a mismatch, since followers have already
//! read them. Anything else fails the fill. At most [`RESUME_ATTEMPTS`] resumes per fill, and
//! none after a resumed body that stalled before its first new byte (a hung upstream would
//! otherwise hold readers for one idle timeout per attempt). Since
//! the writer writes every byte at its own offset exactly once, followers see neither a gap nor
//! a repeat across a resume.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::sync::{mpsc, oneshot};

use stampede_oci::{Digest, Endpoint, RepoName, Verifier};

use crate::error::Error;
use crate::flight::{FillFailure, FillGuard, ProgressWriter, Started};
use crate::metrics::{FillResult, Metrics, Resume};
use crate::store::health::WriteFailure;
use crate::store::{BlobMeta, BlobStore, TempBlob};
use crate::upstream::{content_range, retry_after, Answer, ContentRange, Upstreams};

/// Followers are woken at least every this many bytes written.
pub const NOTIFY_BYTES: u64 = 64 * 1024;
/// Bytes the network stage holds before handing frames to the writer.
const HOLD_BYTES: u64 = NOTIFY_BYTES;
/// Longest the network stage holds a frame before handing it to the writer.
const HOLD_TIME: Duration = Duration::from_millis(2);

/// Frames received and not yet handed to the writer.
#[derive(Default)]
struct Held {
    frames: Vec<Bytes>,
    bytes: u64,
}

/// Frames queued between the network stage and the writer.
const WRITE_QUEUE_FRAMES: usize = 64;
/// Times one fill asks the upstream again after its body broke or stalled, at most.
pub const RESUME_ATTEMPTS: u32 = 3;
/// Pause before the first resume of a fill; doubled before each further one.
const RESUME_PAUSE: Duration = Duration::from_millis(50);

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
    let answer = ctx
        .upstreams
        .blob(endpoint, repo, &digest, Method::GET)
        .await
        .map_err(|e| request_failure(&digest, e))?;
    if answer.response.status() != StatusCode::OK {
        return Err(FillFailure::Status {
            status: answer.response.status().as_u16(),
            retry_after: retry_after(&answer.response),
        });
    }
    let total_bytes = content_length(&answer.response);

    let store = ctx.store.clone();
    let d = digest.clone();
    let temp = tokio::task::spawn_blocking(move || store.create_temp(&d))
        .await
        .map_err(|_| FillFailure::Local)?
        .map_err(|e| {
            tracing::error!(%digest, error = %e, "cannot create temp file for fill");
            // Before any byte went out: the handler streams it from upstream instead.
            if WriteFailure::of(&e).marks_full() {
                FillFailure::StoreFull
            } else {
                FillFailure::Local
            }
        })?;
    let temp = Arc::new(temp);
    guard.start(Started {
        file: temp.file.clone(),
        total_bytes,
    });

    let origin = Origin {
        endpoint,
        repo,
        digest: &digest,
        total_bytes,
    };
    let outcome = stream_to_disk(answer, &origin, &temp, guard.progress_writer(), ctx).await;
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

/// The failure a fill reports when an upstream request got no usable answer.
fn request_failure(digest: &Digest, e: Error) -> FillFailure {
    match e {
        // Held back during a Retry-After window: nothing was sent.
        Error::UpstreamThrottled { retry_after, .. } => FillFailure::Status {
            status: StatusCode::TOO_MANY_REQUESTS.as_u16(),
            retry_after,
        },
        Error::UpstreamUnavailable { retry_after, .. } => FillFailure::Status {
            status: StatusCode::SERVICE_UNAVAILABLE.as_u16(),
            retry_after,
        },
        e => {
            tracing::warn!(%digest, error = %stampede_oci::error_chain(&e), "upstream blob request failed");
            match e {
                Error::UpstreamTimeout { .. } => FillFailure::Timeout,
                Error::UpstreamDenied { status, .. } => FillFailure::Status {
                    status: status.as_u16(),
                    retry_after: None,
                },
                _ => FillFailure::Unreachable,
            }
        }
    }
}

fn content_length<B>(resp: &http::Response<B>) -> Option<u64> {
    resp.headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// Where a fill's bytes come from, for resumes and logs.
struct Origin<'a> {
    endpoint: &'a Endpoint,
    repo: &'a RepoName,
    digest: &'a Digest,
    /// `Content-Length` of the first answer, when it had one.
    total_bytes: Option<u64>,
}

/// What the network stage hands the writer.
enum ToWriter {
    /// The next bytes of the blob, to write right after the previous ones.
    Frame(Bytes),
    /// Answer with the bytes written so far once everything before this is in the file.
    Flush(oneshot::Sender<u64>),
}

/// Receives the body and hands every frame to a blocking thread that writes it to the temp file
/// and hashes it (the frames are shared, not copied). Resumes a broken body (see the module
/// doc). Returns bytes written and the verifier (not yet finished).
///
/// Hashing here, inline, kept the upstream connection from reading while a frame was hashed
/// (hyper reads the next frame only once this one is taken), so receive and sha256 ran in
/// series; on the writer's thread they overlap.
async fn stream_to_disk(
    answer: Answer,
    origin: &Origin<'_>,
    temp: &Arc<TempBlob>,
    progress: ProgressWriter,
    ctx: &FillContext,
) -> Result<(u64, Verifier), FillFailure> {
    let mut verifier = Verifier::new(origin.digest.clone());
    let (tx, rx) = mpsc::channel::<ToWriter>(WRITE_QUEUE_FRAMES);
    let file = temp.file.clone();
    let path = temp.path.clone();
    let writer = tokio::task::spawn_blocking(move || {
        let written = write_frames(&file, rx, &progress, &mut verifier).map_err(|e| (e, path));
        (written, verifier)
    });
    let mut transfer = Transfer {
        origin,
        ctx,
        file: temp.file.clone(),
        to_writer: tx,
        received_bytes: 0,
    };
    let received = transfer.receive(answer).await;
    drop(transfer);
    let (written, verifier) = writer.await.map_err(|_| FillFailure::Local)?;
    let written = match written {
        Ok(n) => n,
        Err((e, path)) => {
            ctx.store.write_failed(&e, temp);
            tracing::error!(path = %path.display(), error = %e, "write to temp file failed");
            return Err(FillFailure::Local);
        }
    };
    received?;
    if written == verifier.bytes() {
        Ok((written, verifier))
    } else {
        Err(FillFailure::Local)
    }
}

/// How one upstream body ended.
enum Pumped {
    /// It ended where it should (or a stage stopped; joining it says why).
    Ended,
    /// It broke or stalled: worth asking again from where we are.
    Broke(FillFailure),
    /// The fill cannot go on.
    Failed(FillFailure),
}

/// The network stage of a fill: feeds the writer (and so the hash), and resumes broken bodies.
struct Transfer<'a> {
    origin: &'a Origin<'a>,
    ctx: &'a FillContext,
    file: Arc<File>,
    to_writer: mpsc::Sender<ToWriter>,
    /// Bytes handed to the writer (which hashes them too), in order: the offset a resume asks
    /// for.
    received_bytes: u64,
}

impl Transfer<'_> {
    /// Receives `first`'s body to its end, resuming it at most [`RESUME_ATTEMPTS`] times.
    async fn receive(&mut self, first: Answer) -> Result<(), FillFailure> {
        let mut answer = first;
        // Bytes at the start of the current body that the file already has (after a restart).
        let mut again_bytes = 0;
        let mut resumes = 0;
        loop {
            let Answer { response, slot } = answer;
            let before_bytes = self.received_bytes;
            let broke = match self.pump(response.into_body(), again_bytes).await {
                Pumped::Ended => return Ok(()),
                Pumped::Failed(f) => return Err(f),
                Pumped::Broke(f) => f,
            };
            // The next request needs a slot of its own; with one slot per upstream, holding this
            // one would wait for ever.
            drop(slot);
            // A resumed body that stalled before its first new byte: the upstream is hung, and
            // every further attempt would keep the readers waiting another idle timeout.
            let hung =
                resumes > 0 && broke == FillFailure::Timeout && self.received_bytes == before_bytes;
            if resumes == RESUME_ATTEMPTS || hung {
                tracing::warn!(digest = %self.origin.digest, upstream = %self.origin.endpoint.base_url(), received_bytes = self.received_bytes, resumes, hung, %broke, "upstream blob body broke again; giving up");
                return Err(broke);
            }
            tokio::time::sleep(RESUME_PAUSE * 2u32.pow(resumes)).await;
            resumes += 1;
            (answer, again_bytes) = self.resume(broke, resumes).await?;
        }
    }

    /// Hands on one body's bytes, comparing its first `again_bytes` with the file instead.
    ///
    /// Frames are held until [`HOLD_BYTES`] have come or [`HOLD_TIME`] has passed since the
    /// first one held, then handed to the writer together: off a slow link every frame is a few
    /// KiB, and handing each on woke the writer and every follower per frame.
    async fn pump(&mut self, mut body: Incoming, again_bytes: u64) -> Pumped {
        let idle = self.ctx.upstreams.body_idle_timeout;
        let mut compared_bytes = 0;
        let mut held = Held::default();
        loop {
            let next = if held.frames.is_empty() {
                tokio::time::timeout(idle, body.frame()).await
            } else {
                match tokio::time::timeout(HOLD_TIME, body.frame()).await {
                    Ok(next) => Ok(next),
                    Err(_) => {
                        if !self.hand_on(&mut held).await {
                            return Pumped::Ended;
                        }
                        continue;
                    }
                }
            };
            // Whatever happens next, what was received is the writer's first.
            if next.as_ref().map_or(true, |n| !matches!(n, Some(Ok(_))))
                && !self.hand_on(&mut held).await
            {
                return Pumped::Ended;
            }
            let frame = match next {
                Err(_) => return Pumped::Broke(FillFailure::Timeout),
                Ok(None) => {
                    // hyper reports a body short of its Content-Length as an error; this is an
                    // upstream that closed early without one while we know the length.
                    let short = self
                        .origin
                        .total_bytes
                        .is_some_and(|t| self.received_bytes < t);
                    return if short {
                        Pumped::Broke(FillFailure::Truncated)
                    } else {
                        Pumped::Ended
                    };
                }
                Ok(Some(Err(e))) => {
                    tracing::warn!(digest = %self.origin.digest, error = %e, received_bytes = self.received_bytes, "upstream body failed");
                    return Pumped::Broke(FillFailure::Truncated);
                }
                Ok(Some(Ok(frame))) => frame,
            };
            let Ok(mut data) = frame.into_data() else {
                continue;
            };
            self.ctx.metrics.upstream_bytes(data.len() as u64);
            if compared_bytes < again_bytes {
                let n = usize::try_from(again_bytes - compared_bytes)
                    .unwrap_or(usize::MAX)
                    .min(data.len());
                let seen = data.split_to(n);
                match self.same_as_file(compared_bytes, seen).await {
                    Ok(true) => compared_bytes += n as u64,
                    Ok(false) => {
                        tracing::error!(digest = %self.origin.digest, upstream = %self.origin.endpoint.base_url(), offset_bytes = compared_bytes, "upstream sent different bytes when asked again; the blob is not what followers already read");
                        return Pumped::Failed(FillFailure::Mismatch);
                    }
                    Err(f) => return Pumped::Failed(f),
                }
                if data.is_empty() {
                    continue;
                }
            }
            held.bytes += data.len() as u64;
            held.frames.push(data);
            if held.bytes >= HOLD_BYTES && !self.hand_on(&mut held).await {
                return Pumped::Ended;
            }
        }
    }

    /// Hands the held frames to the writer. `false`: the writer stopped, which ends the fill
    /// (its own error says why).
    async fn hand_on(&mut self, held: &mut Held) -> bool {
        for data in held.frames.drain(..) {
            let len = data.len() as u64;
            if self.to_writer.send(ToWriter::Frame(data)).await.is_err() {
                return false;
            }
            self.received_bytes += len;
        }
        held.bytes = 0;
        true
    }

    /// Asks the upstream for the rest of the blob after its body broke (`broke`). Returns the
    /// new answer and how many of its first bytes the file already has.
    async fn resume(
        &mut self,
        broke: FillFailure,
        attempt: u32,
    ) -> Result<(Answer, u64), FillFailure> {
        let Origin {
            endpoint,
            repo,
            digest,
            total_bytes,
        } = *self.origin;
        let offset = self.received_bytes;
        let upstream = endpoint.base_url();
        let answer = self
            .ctx
            .upstreams
            .blob_from(endpoint, repo, digest, offset)
            .await
            .map_err(|e| request_failure(digest, e))?;
        let resp = &answer.response;
        match resp.status() {
            StatusCode::PARTIAL_CONTENT => {
                let range = content_range(resp);
                if !continues(range, offset, total_bytes) {
                    tracing::warn!(%digest, %upstream, offset_bytes = offset, ?range, ?total_bytes, "upstream answered a resume with a range that does not continue the blob; giving up");
                    return Err(broke);
                }
                self.ctx.metrics.fill_resumed(Resume::Range);
                tracing::warn!(%digest, %upstream, offset_bytes = offset, attempt, %broke, "upstream blob body broke; resumed with a range request");
                Ok((answer, 0))
            }
            StatusCode::OK => {
                let len = content_length(resp);
                if let (Some(t), Some(l)) = (total_bytes, len) {
                    if t != l {
                        tracing::warn!(%digest, %upstream, first_bytes = t, again_bytes = l, "upstream sent the blob again with another length; giving up");
                        return Err(broke);
                    }
                }
                // The bytes received so far must be in the file before the new body's are
                // compared with them.
                self.flush().await?;
                self.ctx.metrics.fill_resumed(Resume::Restart);
                tracing::warn!(%digest, %upstream, offset_bytes = offset, attempt, %broke, "upstream blob body broke and the upstream ignores ranges; restarted, comparing what we have");
                Ok((answer, offset))
            }
            status => {
                tracing::warn!(%digest, %upstream, offset_bytes = offset, status = status.as_u16(), "upstream refused to resume a broken blob body");
                Err(FillFailure::Status {
                    status: status.as_u16(),
                    retry_after: retry_after(resp),
                })
            }
        }
    }

    /// Waits until the writer has put every byte received so far in the file.
    async fn flush(&self) -> Result<(), FillFailure> {
        let (tx, rx) = oneshot::channel();
        if self.to_writer.send(ToWriter::Flush(tx)).await.is_err() {
            return Err(FillFailure::Local);
        }
        match rx.await {
            Ok(written) if written == self.received_bytes => Ok(()),
            _ => Err(FillFailure::Local),
        }
    }

    /// Whether `bytes` are what the file holds at `offset_bytes`.
    async fn same_as_file(&self, offset_bytes: u64, bytes: Bytes) -> Result<bool, FillFailure> {
        let file = self.file.clone();
        tokio::task::spawn_blocking(move || {
            let mut have = vec![0; bytes.len()];
            file.read_exact_at(&mut have, offset_bytes)
                .map(|()| have[..] == bytes[..])
        })
        .await
        .map_err(|_| FillFailure::Local)?
        .map_err(|e| {
            tracing::error!(error = %e, "cannot read back the temp file");
            FillFailure::Local
        })
    }
}

/// Whether a `206` with `range` continues a blob of `total_bytes` (when known) from
/// `offset_bytes` to its end.
fn continues(range: Option<ContentRange>, offset_bytes: u64, total_bytes: Option<u64>) -> bool {
    range.is_some_and(|r| {
        r.first_bytes == offset_bytes
            && total_bytes.is_none_or(|t| r.complete_bytes == Some(t) && r.last_bytes + 1 == t)
    })
}

/// The writer thread: writes each frame at its offset, tells followers (see the module doc),
/// then hashes it into `verifier`. Returns the bytes written.
fn write_frames(
    file: &std::fs::File,
    mut rx: mpsc::Receiver<ToWriter>,
    progress: &ProgressWriter,
    verifier: &mut Verifier,
) -> std::io::Result<u64> {
    let mut written = 0u64;
    let mut notified = 0u64;
    let mut next = rx.blocking_recv();
    while let Some(msg) = next {
        let chunk = match msg {
            ToWriter::Frame(chunk) => chunk,
            ToWriter::Flush(done) => {
                progress.wrote(written, true);
                notified = written;
                done.send(written).ok();
                next = rx.blocking_recv();
                continue;
            }
        };
        file.write_all_at(&chunk, written)?;
        let len = chunk.len() as u64;
        progress.remember(written, chunk.clone());
        written += len;
        let more = rx.try_recv().ok();
        if more.is_some() && written - notified < NOTIFY_BYTES {
            progress.wrote(written, false);
        } else {
            // Every NOTIFY_BYTES, or caught up with the network: followers have it all now.
            progress.wrote(written, true);
            notified = written;
        }
        // Hashed after followers were told: they never wait for the hash.
        verifier.update(&chunk);
        next = match more {
            Some(more) => Some(more),
            None => rx.blocking_recv(),
        };
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_partial_answers_continue_a_blob() {
        let r = |first_bytes, last_bytes, complete_bytes| {
            Some(ContentRange {
                first_bytes,
                last_bytes,
                complete_bytes,
            })
        };
        let cases = [
            (r(5, 9, Some(10)), 5, Some(10), true),
            (r(5, 9, None), 5, None, true),
            (r(5, 9, Some(10)), 5, None, true),
            (r(4, 9, Some(10)), 5, Some(10), false),
            (r(6, 9, Some(10)), 5, Some(10), false),
            (r(5, 9, Some(11)), 5, Some(10), false),
            (r(5, 8, Some(10)), 5, Some(10), false),
            (r(5, 9, None), 5, Some(10), false),
            (None, 5, Some(10), false),
        ];
        for (range, offset, total, want) in cases {
            assert_eq!(
                continues(range, offset, total),
                want,
                "{range:?} from {offset} of {total:?}"
            );
        }
    }
}
