//! The peer client: signed requests for a piece of a stripe to another member's peer port,
//! with the fast failure the miss path relies on: a connection must be accepted within the
//! peer connect timeout (200 ms by default), response headers arrive within the response
//! timeout, and the caller bounds every pause in the body (`fetch.rs`). A redirect (the member
//! already sent the stripe to as many children as it serves) is followed to the child it
//! names, at most [`MAX_HOPS`] deep. A child that cannot serve (no connection, an error, an
//! answer that does not fit) is named in `stampede-avoid` and the node that redirected to it is
//! asked again, which sends the request to another child or refuses it (`503`): nobody serves
//! past its fan-out bound, and at most [`MAX_REQUESTS`] requests go out per piece.
//!
//! A request names content by digest, plus the registry (`ns`) and repository the owner
//! fetches it from with its own credentials; no tag and no client credential ever goes to a
//! peer.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{HeaderValue, RANGE};
use http::{Request, Response, StatusCode};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use stampede_oci::{Digest, RepoName};

use crate::error::PeerFailure;
use crate::upstream::content_range;

use super::membership::Member;
use super::signing::{Signer, SIGNATURE_HEADER, TIMESTAMP_HEADER};

/// Header naming the member that asks (its advertised address), so an owner can send later
/// requesters to it.
pub const PEER_HEADER: &str = "stampede-peer";
/// Header of a redirect: the member to ask instead.
pub const REDIRECT_HEADER: &str = "stampede-redirect";
/// Header counting redirects a request has followed; a redirected request is served only from
/// what the node already has or is receiving, never by a registry fetch of its own.
pub const HOP_HEADER: &str = "stampede-hop";
/// Header on an answer whose bytes run to the blob's end because the registry ignores `Range`.
pub const WHOLE_HEADER: &str = "stampede-whole";
/// Header naming members (comma-separated) the requester could not get this piece from; never
/// redirected to.
pub const AVOID_HEADER: &str = "stampede-avoid";
/// Redirects followed at most in a row: a tree of depth 16 with 2 children per node reaches
/// 65,535 nodes.
pub const MAX_HOPS: usize = 16;
/// Requests sent at most for one piece, redirects and retries at parents included.
pub const MAX_REQUESTS: usize = 32;

/// Which bytes to ask for.
#[derive(Debug, Clone)]
pub struct PieceRequest {
    /// The blob.
    pub digest: Digest,
    /// Its stripe holding `first_bytes`.
    pub stripe: u32,
    /// The registry as this node's requests name it (`None`: the default upstream).
    pub ns: Option<String>,
    /// The repository to fetch it from.
    pub repo: RepoName,
    /// First blob byte wanted.
    pub first_bytes: u64,
    /// One past the last byte wanted; `None`: to the end of the stripe (length unknown yet).
    pub end_bytes: Option<u64>,
}

impl PieceRequest {
    /// The request path with its query; what the signature covers.
    pub fn path(&self) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        q.append_pair("repo", self.repo.as_str());
        if let Some(ns) = &self.ns {
            q.append_pair("ns", ns);
        }
        format!(
            "/peer/v1/stripes/{}/{}?{}",
            self.stripe,
            self.digest,
            q.finish()
        )
    }
}

/// A peer's answer: body unread.
#[derive(Debug)]
pub struct PeerPiece {
    /// The response (`206`).
    pub response: Response<Incoming>,
    /// Who sent it (the member asked, or the child it redirected to).
    pub from: Member,
    /// First blob byte of the body.
    pub first_bytes: u64,
    /// One past its last byte.
    pub end_bytes: u64,
    /// The blob's length.
    pub total_bytes: u64,
    /// The body runs to the blob's end (the registry ignores `Range`).
    pub whole: bool,
}

/// Signed HTTP/1.1 requests to members.
#[derive(Debug, Clone)]
pub struct PeerClient {
    http: Client<HttpConnector, Empty<Bytes>>,
    signer: Signer,
    me: Member,
    response_timeout: Duration,
}

impl PeerClient {
    /// A client signing with `signer`, naming itself `me`.
    pub fn new(
        signer: Signer,
        me: Member,
        connect_timeout: Duration,
        response_timeout: Duration,
    ) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(connect_timeout));
        connector.set_nodelay(true);
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Self {
            http,
            signer,
            me,
            response_timeout,
        }
    }

    /// Asks `member` for `want`, following redirects; a redirect target that fails is
    /// avoided and its parent asked again.
    ///
    /// # Errors
    /// The [`PeerFailure`] of `member` itself (it could not be reached, refused, or had no
    /// child left to send the request to), and `member`.
    pub async fn get(
        &self,
        member: Member,
        want: &PieceRequest,
    ) -> Result<PeerPiece, (PeerFailure, Member)> {
        // The redirect chain, `member` first; the last is asked next.
        let mut chain = vec![member];
        let mut avoid: Vec<Member> = Vec::new();
        for _ in 0..MAX_REQUESTS {
            let at = *chain.last().expect("the chain holds member");
            let failure = match self.send(at, want, chain.len() - 1, &avoid).await {
                Ok(resp) if resp.status() == StatusCode::TEMPORARY_REDIRECT => {
                    match redirect_target(&resp) {
                        Some(next)
                            if next != self.me
                                && !chain.contains(&next)
                                && chain.len() <= MAX_HOPS =>
                        {
                            chain.push(next);
                            continue;
                        }
                        _ => PeerFailure::Unusable,
                    }
                }
                Ok(resp) => match piece(resp, at, want) {
                    Ok(p) => return Ok(p),
                    Err(f) => f,
                },
                Err(f) => f,
            };
            if chain.len() == 1 {
                return Err((failure, member));
            }
            // A child could not serve: its parent sends the request elsewhere.
            tracing::debug!(peer = %at, %failure, digest = %want.digest, stripe = want.stripe, "redirect target could not serve; asking its parent again");
            avoid.push(at);
            chain.pop();
        }
        Err((PeerFailure::Unusable, member))
    }

    async fn send(
        &self,
        member: Member,
        want: &PieceRequest,
        hop: usize,
        avoid: &[Member],
    ) -> Result<Response<Incoming>, PeerFailure> {
        let path = want.path();
        let (ts, sig) = self.signer.sign("GET", &path, SystemTime::now());
        let range = match want.end_bytes {
            Some(end) => format!("bytes={}-{}", want.first_bytes, end.saturating_sub(1)),
            None => format!("bytes={}-", want.first_bytes),
        };
        let mut req = Request::get(format!("http://{}{path}", member.addr()));
        if !avoid.is_empty() {
            let list: Vec<String> = avoid.iter().map(ToString::to_string).collect();
            req = req.header(AVOID_HEADER, list.join(","));
        }
        let req = req
            .header(TIMESTAMP_HEADER, ts)
            .header(SIGNATURE_HEADER, sig)
            .header(PEER_HEADER, self.me.to_string())
            .header(HOP_HEADER, HeaderValue::from(hop))
            .header(RANGE, range)
            .body(Empty::new())
            .map_err(|_| PeerFailure::Unusable)?;
        match tokio::time::timeout(self.response_timeout, self.http.request(req)).await {
            Err(_) => Err(PeerFailure::Timeout),
            Ok(Err(e)) if e.is_connect() => Err(PeerFailure::Connect),
            Ok(Err(_)) => Err(PeerFailure::Broken),
            Ok(Ok(resp)) => Ok(resp),
        }
    }
}

/// The member a redirect names.
fn redirect_target(resp: &Response<Incoming>) -> Option<Member> {
    resp.headers()
        .get(REDIRECT_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| super::membership::parse_member(v).ok())
}

/// Checks a peer's answer fits `want`.
fn piece(
    resp: Response<Incoming>,
    from: Member,
    want: &PieceRequest,
) -> Result<PeerPiece, PeerFailure> {
    if resp.status() != StatusCode::PARTIAL_CONTENT {
        tracing::debug!(peer = %from, status = resp.status().as_u16(), digest = %want.digest, "peer refused a stripe request");
        return Err(PeerFailure::Refused);
    }
    let range = content_range(&resp).ok_or(PeerFailure::Unusable)?;
    let total_bytes = range.complete_bytes.ok_or(PeerFailure::Unusable)?;
    let fits = range.first_bytes == want.first_bytes
        && want.end_bytes.is_none_or(|end| range.last_bytes < end);
    if !fits {
        return Err(PeerFailure::Unusable);
    }
    let whole = resp.headers().contains_key(WHOLE_HEADER);
    Ok(PeerPiece {
        response: resp,
        from,
        first_bytes: range.first_bytes,
        end_bytes: range.last_bytes + 1,
        total_bytes,
        whole,
    })
}
