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
//!
//! A client that stops reading holds the upstream's concurrency slot (`upstream.rs`) only
//! until the server's `client_write_timeout` closes its connection (`write_deadline.rs`): the
//! response body, and with it the upstream body and the slot, is dropped then.

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

/// What the next step of the body yields.
enum Piece {
    /// The next bytes of the client's range.
    Data(Bytes),
    /// The blob verified and everything was sent: end the body cleanly.
    End,
    /// Cut the response.
    Cut(io::Error),
}

struct Relay {
    body: Incoming,
    /// Held as long as the response body: until it ends, is cut, or is dropped.
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
    /// The upstream body ended and the blob verified: nothing more to read.
    verified: bool,
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
            verified: false,
            idle,
            metrics,
        };
        StreamBody::new(stream::unfold(Some(relay), |relay| async move {
            let mut relay = relay?;
            match relay.next().await {
                Piece::Data(bytes) => {
                    relay
                        .metrics
                        .served(Source::Passthrough, bytes.len() as u64);
                    Some((Ok(Frame::data(bytes)), Some(relay)))
                }
                Piece::End => None,
                Piece::Cut(e) => Some((Err(e), None)),
            }
        }))
        .boxed()
    }
}

impl Relay {
    /// Reads upstream frames until a piece can go out: the one held before the newest, or, at
    /// the end of a verified blob, the held one; then `End`. A failure is `Cut`.
    async fn next(&mut self) -> Piece {
        if self.verified {
            return Piece::End;
        }
        loop {
            let frame = match tokio::time::timeout(self.idle, self.body.frame()).await {
                Err(_) => return Piece::Cut(io::Error::other("upstream stalled")),
                Ok(Some(Err(e))) => return Piece::Cut(io::Error::other(e)),
                Ok(None) => return self.finish(),
                Ok(Some(Ok(frame))) => frame,
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            self.metrics.upstream_bytes(data.len() as u64);
            self.verifier.update(&data);
            let from = self.pos;
            self.pos += data.len() as u64;
            if self.total_bytes.is_some_and(|t| self.pos > t) {
                return Piece::Cut(io::Error::other("upstream sent too many bytes"));
            }
            let (lo, hi) = (self.start.max(from), self.end.min(self.pos));
            if lo < hi {
                let piece = data.slice((lo - from) as usize..(hi - from) as usize);
                if let Some(prev) = self.held.replace(piece) {
                    return Piece::Data(prev);
                }
            }
        }
    }

    /// The upstream body ended: the held piece if the blob verified (`Data`, or `End` when
    /// nothing is left to send), else the error that cuts the response.
    fn finish(&mut self) -> Piece {
        if self.total_bytes.is_some_and(|t| t != self.pos) {
            return Piece::Cut(io::Error::other("upstream body ended early"));
        }
        let fresh = Verifier::new(self.verifier.expected().clone());
        let verifier = std::mem::replace(&mut self.verifier, fresh);
        if let Err(mismatch) = verifier.finish() {
            tracing::error!(expected = %mismatch.expected, actual = %mismatch.actual, "upstream blob streamed without storing does not match its digest; response cut");
            self.metrics.digest_mismatch();
            return Piece::Cut(io::Error::other("digest mismatch"));
        }
        self.verified = true;
        match self.held.take() {
            Some(last) => Piece::Data(last),
            None => Piece::End,
        }
    }
}
