//! Serving a blob straight from upstream without storing it, for when the store cannot take it
//! (the disk is full: `store::health`). Each request is its own upstream GET; nothing is shared
//! between clients or written to disk. A full store is a degraded mode that keeps pulls working,
//! not the fast path.
//!
//! The rule of `body.rs` holds here too: a response never sends its last byte before the whole
//! blob hashed to its digest. The body holds back the latest piece it has; once the upstream
//! body ends and the digest matches, it sends that piece and ends. On a mismatch, a short or
//! long body, an upstream error or a stall it ends with an error instead, so hyper cuts the
//! connection before `Content-Length` (or the final chunk) and no client takes the bytes as a
//! complete blob.
//!
//! A range is cut from the whole blob: the upstream sends everything (it must all be hashed),
//! the client gets only its range, and the range's last byte waits for the digest like a whole
//! blob's.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use http::header::CONTENT_LENGTH;
use http::{Method, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use tokio::sync::OwnedSemaphorePermit;

use stampede_oci::{Digest, Endpoint, RepoName, Verifier};

use crate::body::Body;
use crate::error::Error;
use crate::metrics::{Metrics, Source};
use crate::upstream::{retry_after, status_error, Upstreams};

/// An upstream answer 200 for a blob, its body not yet read.
#[derive(Debug)]
pub struct Passthrough {
    digest: Digest,
    body: Incoming,
    slot: OwnedSemaphorePermit,
    total_bytes: Option<u64>,
}

/// Asks the upstream for the whole blob `digest`.
///
/// # Errors
/// The upstream could not be reached, or answered something other than 200 (a 404 is
/// [`Error::BlobUnknown`]).
pub async fn open(
    upstreams: &Upstreams,
    endpoint: &Endpoint,
    repo: &RepoName,
    digest: &Digest,
) -> Result<Passthrough, Error> {
    let answer = upstreams.blob(endpoint, repo, digest, Method::GET).await?;
    let resp = answer.response;
    if resp.status() != StatusCode::OK {
        return Err(status_error(
            endpoint,
            resp.status(),
            retry_after(&resp),
            Error::BlobUnknown(digest.clone()),
        ));
    }
    let total_bytes = resp
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    Ok(Passthrough {
        digest: digest.clone(),
        body: resp.into_body(),
        slot: answer.slot,
        total_bytes,
    })
}

struct Relay {
    body: Incoming,
    _slot: OwnedSemaphorePermit,
    verifier: Verifier,
    total_bytes: Option<u64>,
    /// Upstream bytes received so far.
    pos: u64,
    /// The client's range, `[start, end)` of the blob.
    start: u64,
    end: u64,
    /// The latest piece of the range, sent only once the next one (or the digest) is in.
    held: Option<Bytes>,
    idle: Duration,
    metrics: Arc<Metrics>,
}

impl Passthrough {
    /// The blob's size, when the upstream sent `Content-Length`.
    pub fn total_bytes(&self) -> Option<u64> {
        self.total_bytes
    }

    /// The response body: bytes `[start, end)` of the blob (`end = None`: to its end), the
    /// last piece held back until the whole blob verified. `idle` is the longest pause allowed
    /// between upstream frames.
    pub fn body(self, start: u64, end: Option<u64>, idle: Duration, metrics: Arc<Metrics>) -> Body {
        let relay = Relay {
            body: self.body,
            _slot: self.slot,
            verifier: Verifier::new(self.digest),
            total_bytes: self.total_bytes,
            pos: 0,
            start,
            end: end.unwrap_or(u64::MAX),
            held: None,
            idle,
            metrics,
        };
        StreamBody::new(stream::unfold(Some(relay), |relay| async move {
            let mut r = relay?;
            loop {
                let frame = match tokio::time::timeout(r.idle, r.body.frame()).await {
                    Err(_) => return Some((Err(io::Error::other("upstream stalled")), None)),
                    Ok(Some(Err(e))) => return Some((Err(io::Error::other(e)), None)),
                    Ok(None) => return r.finish().map(|last| (last, None)),
                    Ok(Some(Ok(frame))) => frame,
                };
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                r.metrics.upstream_bytes(data.len() as u64);
                r.verifier.update(&data);
                let from = r.pos;
                r.pos += data.len() as u64;
                if r.total_bytes.is_some_and(|t| r.pos > t) {
                    return Some((Err(io::Error::other("upstream sent too many bytes")), None));
                }
                let (lo, hi) = (r.start.max(from), r.end.min(r.pos));
                if lo < hi {
                    let piece = data.slice((lo - from) as usize..(hi - from) as usize);
                    if let Some(prev) = r.held.replace(piece) {
                        r.metrics.served(Source::Passthrough, prev.len() as u64);
                        return Some((Ok(Frame::data(prev)), Some(r)));
                    }
                }
            }
        }))
        .boxed()
    }
}

impl Relay {
    /// The upstream body ended: the held piece if the blob verified, else the error that cuts
    /// the response; `None` when nothing is left to send.
    fn finish(self) -> Option<io::Result<Frame<Bytes>>> {
        if self.total_bytes.is_some_and(|t| t != self.pos) {
            return Some(Err(io::Error::other("upstream body ended early")));
        }
        if let Err(mismatch) = self.verifier.finish() {
            tracing::error!(expected = %mismatch.expected, actual = %mismatch.actual, "upstream blob streamed without storing does not match its digest; response cut");
            self.metrics.digest_mismatch();
            return Some(Err(io::Error::other("digest mismatch")));
        }
        let last = self.held?;
        self.metrics.served(Source::Passthrough, last.len() as u64);
        Some(Ok(Frame::data(last)))
    }
}
