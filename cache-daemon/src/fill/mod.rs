//! One upstream blob fill, start to finish: GET the blob upstream, write it to a temp file while
//! hashing it, then commit it (verified) or fail the flight (nothing committed, followers cut).
//!
//! Two stages run in parallel: this task receives frames from the upstream connection (or the
//! cluster's stripes) and hands them, in batches of about [`writer::HOLD_BYTES`] (up to
//! [`writer::SLOW_HOLD_BYTES`] every [`writer::SLOW_HOLD_TIME`] off a slow link) and shared,
//! not copied, to a blocking writer thread, which writes each batch to the temp file with few
//! positional writes, reports progress to followers (waking them every [`NOTIFY_BYTES`], or
//! whenever it has caught up with the network, so a hundred followers are not woken per
//! packet) and then hashes it (`writer`). Followers never wait for the hash; only the commit
//! (and so every response's last byte) does.
//!
//! When the upstream body breaks (connection reset, early end) or stalls past the idle timeout,
//! the fill is not given up at once: it asks again from the offset it has received, which the
//! writer holds (and has hashed) in order (`Range: bytes=<received>-`). A `206` from that offset
//! continues the same file and the same running hash. A `200` (an upstream that ignores ranges)
//! sends the blob from its start: the bytes the file already has are compared with it, not
//! written again, and any difference fails the fill as a mismatch, since followers have already
//! read them. Anything else fails the fill. At most [`RESUME_ATTEMPTS`] resumes per fill, and
//! none after a resumed body that stalled before its first new byte (a hung upstream would
//! otherwise hold readers for one idle timeout per attempt). Since
//! the writer writes every byte at its own offset exactly once, followers see neither a gap nor
//! a repeat across a resume.

pub(crate) mod writer;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use http::{Method, StatusCode};
use hyper::body::Incoming;

use stampede_oci::{Digest, Endpoint, RepoName, Verifier};

use crate::cluster::fetch::FeedEnd;
use crate::cluster::membership::Member;
use crate::cluster::{self, Cluster};
use crate::error::Error;
use crate::flight::{FillFailure, FillGuard, ProgressWriter, Started};
use crate::metrics::{FillResult, FillSource, Metrics, Resume};
use crate::store::health::WriteFailure;
use crate::store::{BlobMeta, BlobStore, TempBlob};
use crate::upstream::{content_range, retry_after, Answer, ContentRange, Upstreams};

pub use writer::NOTIFY_BYTES;
use writer::{Feeder, Next, Written};
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
    /// Cluster mode: misses are fed from the stripes' owners (`cluster/fetch.rs`).
    pub cluster: Option<Arc<Cluster>>,
}

/// Where a fill's bytes come from.
enum Feed {
    /// The registry's answer to a plain `GET`.
    Upstream(Answer),
    /// The cluster, stripe by stripe.
    Cluster(cluster::fetch::Feed),
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
    let from_cluster = match &ctx.cluster {
        Some(cluster) => cluster.open(&digest, endpoint, repo).await,
        None => None,
    };
    let (feed, total_bytes) = match from_cluster {
        Some(feed) => {
            let total = feed.total_bytes();
            (Feed::Cluster(feed), Some(total))
        }
        None => {
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
            let total = content_length(&answer.response);
            (Feed::Upstream(answer), total)
        }
    };

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
    let streamed = stream_to_disk(feed, &origin, &temp, guard.progress_writer(), ctx).await;
    let mut meta = BlobMeta::default();
    let outcome = streamed.and_then(|streamed| {
        let Streamed {
            written,
            verifier,
            contributors,
            source,
        } = streamed;
        meta.source = source;
        if total_bytes.is_some_and(|t| t != written) {
            return Err(FillFailure::Truncated);
        }
        verifier.finish().map(|_| written).map_err(|mismatch| {
            tracing::error!(expected = %mismatch.expected, actual = %mismatch.actual, upstream = %endpoint.base_url(), peers = contributors.len(), "blob does not match its digest");
            if let Some(cluster) = &ctx.cluster {
                cluster.mismatch(&digest, &contributors);
            }
            FillFailure::Mismatch
        })
    });
    let store = ctx.store.clone();
    match outcome {
        Ok(written) => {
            let temp2 = temp.clone();
            // Provenance is recorded with the commit, whatever the settings: `ls` shows where a
            // blob came from, and caller checks (on now or after a restart) know that this
            // repository of this upstream holds it, without a hit having to record it first.
            let seen_as = format!("{}/{repo}", endpoint.authority());
            let committed = tokio::task::spawn_blocking(move || {
                store.commit(&digest, &temp2, written, &meta).map(|()| {
                    store.lookup(&digest, Some(&seen_as));
                })
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
pub(crate) fn request_failure(digest: &Digest, e: Error) -> FillFailure {
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

pub(crate) fn content_length<B>(resp: &http::Response<B>) -> Option<u64> {
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

/// What a fill's streaming stage produced.
struct Streamed {
    /// Bytes in the temp file.
    written: u64,
    /// The hash of them, not yet compared.
    verifier: Verifier,
    /// Cluster peers whose bytes went in.
    contributors: Vec<Member>,
    /// Where the bytes came from, for `ls` (cluster mode only).
    source: Option<String>,
}

/// Receives the body (or the cluster's stripes) and hands its frames to the writer thread,
/// which writes and hashes them (`writer`; the frames are shared, not copied). Resumes a
/// broken body (see the module doc). Returns bytes written, the verifier (not yet finished)
/// and the cluster peers whose bytes went in.
///
/// Hashing here, inline, kept the upstream connection from reading while a frame was hashed
/// (hyper reads the next frame only once this one is taken), so receive and sha256 ran in
/// series; on the writer's thread they overlap.
async fn stream_to_disk(
    feed: Feed,
    origin: &Origin<'_>,
    temp: &Arc<TempBlob>,
    progress: ProgressWriter,
    ctx: &FillContext,
) -> Result<Streamed, FillFailure> {
    let verifier = Verifier::new(origin.digest.clone());
    let (mut feeder, writer) = writer::spawn(temp.file.clone(), progress, Some(verifier));
    feeder.expect_end(origin.total_bytes);
    let mut transfer = Transfer {
        origin,
        ctx,
        file: temp.file.clone(),
        feeder,
    };
    let (received, contributors, source) = transfer.take(feed).await;
    transfer.feeder.finish().await;
    let Written { result, verifier } = writer.await.map_err(|_| FillFailure::Local)?;
    let written = match result {
        Ok(n) => n,
        Err(e) => {
            ctx.store.write_failed(&e, temp);
            tracing::error!(path = %temp.path.display(), error = %e, "write to temp file failed");
            return Err(FillFailure::Local);
        }
    };
    received?;
    let verifier = verifier.ok_or(FillFailure::Local)?;
    if written == verifier.bytes() {
        Ok(Streamed {
            written,
            verifier,
            contributors,
            source,
        })
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

/// The network stage of a fill: feeds the writer (and so the hash), and resumes broken
/// bodies. A cluster feed hands its frames on through [`Transfer::next_frame`] and
/// [`Transfer::push`].
pub(crate) struct Transfer<'a> {
    origin: &'a Origin<'a>,
    ctx: &'a FillContext,
    file: Arc<File>,
    /// Holds the bytes received, in order, and hands them to the writer in batches; its
    /// count is the offset a resume asks for.
    feeder: Feeder,
}

impl Transfer<'_> {
    /// Bytes handed on so far, in order: the blob offset the next frame starts at.
    pub(crate) fn received_bytes(&self) -> u64 {
        self.feeder.received_bytes()
    }

    /// Hands the next bytes of the blob to the writer; `false` when it has stopped (its own
    /// error says why).
    pub(crate) async fn push(&mut self, data: Bytes) -> bool {
        self.feeder.push(data).await
    }

    /// The next data frame of `body`, waiting at most `idle` for it, while the bytes held for
    /// the writer go on to it in time (`writer`).
    pub(crate) async fn next_frame<B>(&mut self, body: &mut B, idle: Duration) -> Next
    where
        B: http_body::Body<Data = Bytes> + Unpin,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        self.feeder.next_frame(body, idle).await
    }

    /// Hands the bytes held for the writer on now (before a wait that is not for the body).
    /// A writer that stopped says why when joined.
    pub(crate) async fn hand_on(&mut self) {
        self.feeder.hand_on().await;
    }

    /// Takes every byte of `feed`. Returns how it ended, the cluster peers whose bytes went in
    /// and where the bytes came from (cluster mode only).
    async fn take(&mut self, feed: Feed) -> (Result<(), FillFailure>, Vec<Member>, Option<String>) {
        match feed {
            // Outside cluster mode nothing is recorded (single-node stores stay as they were).
            Feed::Upstream(answer) => {
                let source = self.ctx.cluster.as_ref().map(|_| "registry".to_owned());
                (self.receive(answer, 0).await, Vec::new(), source)
            }
            Feed::Cluster(mut feed) => {
                let ended = feed.run(self).await;
                let contributors = feed.contributors().to_vec();
                let mut took = feed.sources();
                let ended = match ended {
                    Ok(FeedEnd::Complete) => Ok(()),
                    Ok(FeedEnd::Registry) => {
                        took.push("registry");
                        self.rest_from_registry().await
                    }
                    Err(f) => Err(f),
                };
                took.dedup();
                (ended, contributors, Some(took.join("+")))
            }
        }
    }

    /// The rest of the blob from the registry after the cluster could not supply it: a resume
    /// from the offset received, with the same checks as after a broken body.
    async fn rest_from_registry(&mut self) -> Result<(), FillFailure> {
        if self.origin.total_bytes == Some(self.received_bytes()) {
            return Ok(());
        }
        let (answer, again_bytes) = self.resume(FillFailure::Unreachable, 0).await?;
        self.receive(answer, again_bytes).await
    }

    /// Receives `first`'s body to its end, resuming it at most [`RESUME_ATTEMPTS`] times;
    /// its first `again_bytes` are compared with the file rather than written.
    async fn receive(&mut self, first: Answer, again_bytes: u64) -> Result<(), FillFailure> {
        let mut answer = first;
        // Bytes at the start of the current body that the file already has (after a restart).
        let mut again_bytes = again_bytes;
        let mut resumes = 0;
        loop {
            let Answer { response, slot } = answer;
            let before_bytes = self.received_bytes();
            let broke = match self.pump(response.into_body(), again_bytes).await {
                Pumped::Ended => return Ok(()),
                Pumped::Failed(f) => return Err(f),
                Pumped::Broke(f) => f,
            };
            // The next request needs a slot of its own; with one slot per upstream, holding this
            // one would wait for ever.
            drop(slot);
            // Followers have every byte received while the fill asks again.
            self.hand_on().await;
            // A resumed body that stalled before its first new byte: the upstream is hung, and
            // every further attempt would keep the readers waiting another idle timeout.
            let hung = resumes > 0
                && broke == FillFailure::Timeout
                && self.received_bytes() == before_bytes;
            if resumes == RESUME_ATTEMPTS || hung {
                tracing::warn!(digest = %self.origin.digest, upstream = %self.origin.endpoint.base_url(), received_bytes = self.received_bytes(), resumes, hung, %broke, "upstream blob body broke again; giving up");
                return Err(broke);
            }
            tokio::time::sleep(RESUME_PAUSE * 2u32.pow(resumes)).await;
            resumes += 1;
            (answer, again_bytes) = self.resume(broke, resumes).await?;
        }
    }

    /// Hands on one body's bytes, comparing its first `again_bytes` with the file instead.
    async fn pump(&mut self, mut body: Incoming, again_bytes: u64) -> Pumped {
        let idle = self.ctx.upstreams.body_idle_timeout;
        let mut compared_bytes = 0;
        loop {
            let mut data = match self.feeder.next_frame(&mut body, idle).await {
                Next::Data(data) => data,
                Next::Idle => return Pumped::Broke(FillFailure::Timeout),
                Next::End => {
                    // hyper reports a body short of its Content-Length as an error; this is an
                    // upstream that closed early without one while we know the length.
                    let short = self
                        .origin
                        .total_bytes
                        .is_some_and(|t| self.received_bytes() < t);
                    return if short {
                        Pumped::Broke(FillFailure::Truncated)
                    } else {
                        Pumped::Ended
                    };
                }
                Next::Broken(e) => {
                    tracing::warn!(digest = %self.origin.digest, error = %e, received_bytes = self.received_bytes(), "upstream body failed");
                    return Pumped::Broke(FillFailure::Truncated);
                }
                // The writer's own error says why.
                Next::Stopped => return Pumped::Ended,
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
            self.ctx
                .metrics
                .fill_source(FillSource::Registry, data.len() as u64);
            // The writer stopping ends the fill: its own error says why.
            if !self.push(data).await {
                return Pumped::Ended;
            }
        }
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
        let offset = self.received_bytes();
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
                    // As the header would read (`bytes first-last/complete`), not Rust Debug.
                    let got = range.map_or_else(
                        || "no usable Content-Range".to_owned(),
                        |r| {
                            let complete =
                                r.complete_bytes.map_or("*".to_owned(), |n| n.to_string());
                            format!("bytes {}-{}/{complete}", r.first_bytes, r.last_bytes)
                        },
                    );
                    let expected_bytes =
                        total_bytes.map_or("unknown".to_owned(), |n| n.to_string());
                    tracing::warn!(%digest, %upstream, offset_bytes = offset, content_range = %got, total_bytes = %expected_bytes, "upstream answered a resume with a range that does not continue the blob; giving up");
                    return Err(broke);
                }
                self.ctx.metrics.fill_resumed(Resume::Range);
                tracing::warn!(%digest, %upstream, offset_bytes = offset, attempt, %broke, "blob body broke (or the cluster could not supply the rest); resumed from the upstream with a range request");
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
    async fn flush(&mut self) -> Result<(), FillFailure> {
        if self.feeder.flush().await {
            Ok(())
        } else {
            Err(FillFailure::Local)
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
