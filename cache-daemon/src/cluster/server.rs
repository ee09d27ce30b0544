//! The peer port's requests: `GET /peer/v1/stripes/<index>/<digest>?repo=<repo>[&ns=<ns>]`
//! with `Range: bytes=<first>-[<last>]` (blob offsets within that stripe), signed
//! (`signing.rs`). Anything unsigned, badly signed or outside the replay window gets `401`
//! and is counted; the accept loop, its own connection limit and shutdown are `crate::server`'s.
//!
//! Where the bytes come from, first match wins:
//! 1. the committed blob;
//! 2. this node's stripe fill of that stripe, running or kept (`origin.rs`);
//! 3. this node's own blob fill, if it has already reached the first byte asked for (or, for a
//!    redirected request, at all: it is receiving the stripe, usually ahead of its fill);
//! 4. a new stripe fill from the registry, unless the request was redirected here (then `503`:
//!    a redirected request is served only from what this node has or is receiving, so a
//!    redirect never costs a registry fetch).
//!
//! Fan-out bound, a hard one: a node sends each stripe to at most [`FANOUT_CHILDREN`] peers
//! (its children; a child asking again for the rest of the stripe, a resume, is the same child)
//! within [`FANOUT_MEMORY`]. A further requester is redirected (`307`, `stampede-redirect:
//! <member>`) to one of those children in turn, which passes on the bytes from its own fill as
//! they land (cut-through) or from its store, and applies the same bound, so the stripe spreads
//! as a tree and no node sends any stripe more than [`FANOUT_CHILDREN`] times. Nothing serves a
//! requester past the bound: a redirected requester that its target cannot serve (dead, its own
//! fill failed) goes back to the node that redirected it, naming the targets that failed
//! (`stampede-avoid`), and is sent to another child; when no child is left the answer is `503`
//! and the requester goes on to the stripe's next candidate, then the registry. A redirected
//! request reaching a child whose own fill has not yet had its first answer (the child asked
//! its parent a moment ago) waits for that answer, bounded, instead of refusing: the child is
//! fetching from its own parent, and passes the bytes on as they come.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use http::header::{HeaderValue, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, RANGE};
use http::{Method, Request, Response, StatusCode};

use stampede_oci::{Digest, RepoName};

use crate::body::{self, Body, FlightFile};
use crate::flight::FillState;

use super::client::{AVOID_HEADER, HOP_HEADER, PEER_HEADER, REDIRECT_HEADER, WHOLE_HEADER};
use super::membership::{parse_member, Member};
use super::signing::{Signed, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use super::stripe::Stripe;
use super::Cluster;

/// Peers one node sends a stripe to; further requesters are redirected to them.
pub const FANOUT_CHILDREN: usize = 2;
/// Most members a request may name in `stampede-avoid`.
pub const MAX_AVOID: usize = 16;

/// A parsed peer request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerRoute {
    /// The blob.
    pub digest: Digest,
    /// The stripe.
    pub stripe: u32,
    /// The repository to fetch it from.
    pub repo: RepoName,
    /// The registry, as requests name it.
    pub ns: Option<String>,
}

impl PeerRoute {
    /// Parses a peer path and query; `None` for anything else.
    pub fn parse(path: &str, query: Option<&str>) -> Option<Self> {
        let rest = path.strip_prefix("/peer/v1/stripes/")?;
        let (stripe, digest) = rest.split_once('/')?;
        let stripe: u32 = stripe.parse().ok()?;
        let digest = Digest::parse(digest).ok()?;
        let mut repo = None;
        let mut ns = None;
        for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            match &*k {
                "repo" => repo = RepoName::parse(&v).ok(),
                "ns" => ns = Some(v.into_owned()),
                _ => return None,
            }
        }
        Some(Self {
            digest,
            stripe,
            repo: repo?,
            ns,
        })
    }
}

/// How long a stripe's children are remembered: far longer than a burst, so that within it
/// no node sends a stripe to more than [`FANOUT_CHILDREN`] peers; a requester arriving after
/// that starts a new count (the stripe is in stores by then, and the tree forms again).
pub const FANOUT_MEMORY: Duration = Duration::from_secs(600);

/// Who this node sent one stripe to, within [`FANOUT_MEMORY`].
#[derive(Debug)]
struct Recipients {
    members: Vec<Member>,
    /// Requests that did not say who they were from (counted, never redirected to).
    anonymous: usize,
    /// Round-robin position among `members` for redirects.
    next: usize,
    since: Instant,
}

/// What [`Uploads::admit`] decided for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Serve it: a new child (within the bound) or a child asking again.
    Serve,
    /// Send it on to this child, which is receiving the stripe.
    Redirect(Member),
    /// Every child is to be avoided (the requester says they failed it): refused, `503`.
    Full,
}

/// The peers each stripe went to, so that a node sends each stripe to at most
/// [`FANOUT_CHILDREN`] peers and sends further requesters on to them.
#[derive(Debug, Default)]
pub struct Uploads {
    /// A std `Mutex`: held to look up and update an entry; never across `.await`.
    sent: Mutex<HashMap<(Digest, u32), Recipients>>,
}

impl Uploads {
    /// Whether to serve `asker` (then recorded as a child), redirect it to a child, or refuse
    /// it. A child asking again (a resume) is served without counting twice. `avoid`: members
    /// the requester could not get the stripe from; never a redirect target.
    pub fn admit(&self, key: (Digest, u32), asker: Option<Member>, avoid: &[Member]) -> Admit {
        let now = Instant::now();
        let mut sent = self.sent.lock().expect("uploads mutex poisoned");
        sent.retain(|_, r| now.duration_since(r.since) < FANOUT_MEMORY);
        let r = sent.entry(key).or_insert_with(|| Recipients {
            members: Vec::new(),
            anonymous: 0,
            next: 0,
            since: now,
        });
        if asker.is_some_and(|a| r.members.contains(&a)) {
            return Admit::Serve;
        }
        if r.members.len() + r.anonymous < FANOUT_CHILDREN {
            match asker {
                Some(a) => r.members.push(a),
                None => r.anonymous += 1,
            }
            return Admit::Serve;
        }
        let children: Vec<Member> = r
            .members
            .iter()
            .copied()
            .filter(|m| !avoid.contains(m))
            .collect();
        if children.is_empty() {
            return Admit::Full;
        }
        let child = children[r.next % children.len()];
        r.next += 1;
        Admit::Redirect(child)
    }
}

/// What a request asked for, resolved against what this node has.
struct Source {
    body: Body,
    first_bytes: u64,
    end_bytes: u64,
    total_bytes: u64,
    whole: bool,
}

impl Cluster {
    /// Answers one peer-port request. Never fails: problems become status codes.
    pub async fn handle<B>(self: Arc<Self>, req: Request<B>) -> Response<Body> {
        let path_and_query = req
            .uri()
            .path_and_query()
            .map_or("", |p| p.as_str())
            .to_owned();
        let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
        let signed = Signed {
            method: req.method().as_str(),
            path_and_query: &path_and_query,
            timestamp: header(TIMESTAMP_HEADER),
            signature: header(SIGNATURE_HEADER),
        };
        if let Err(rejection) = self.signer.verify(signed, SystemTime::now()) {
            self.metrics.peer_rejected(rejection);
            tracing::warn!(path = %path_and_query.chars().take(200).collect::<String>(), %rejection, "peer request refused");
            return status(StatusCode::UNAUTHORIZED);
        }
        if req.method() != Method::GET {
            return status(StatusCode::METHOD_NOT_ALLOWED);
        }
        let Some(route) = PeerRoute::parse(req.uri().path(), req.uri().query()) else {
            return status(StatusCode::NOT_FOUND);
        };
        let Some((first, last)) = header(RANGE.as_str()).and_then(parse_range) else {
            return status(StatusCode::RANGE_NOT_SATISFIABLE);
        };
        let hop: u32 = header(HOP_HEADER).and_then(|v| v.parse().ok()).unwrap_or(0);
        let asker = header(PEER_HEADER).and_then(|v| parse_member(v).ok());
        let avoid = header(AVOID_HEADER).map(parse_avoid).unwrap_or_default();
        let key = (route.digest.clone(), route.stripe);
        match self.uploads.admit(key, asker, &avoid) {
            Admit::Serve => {}
            Admit::Redirect(child) => {
                self.metrics.peer_redirect();
                let mut resp = status(StatusCode::TEMPORARY_REDIRECT);
                resp.headers_mut().insert(
                    REDIRECT_HEADER,
                    HeaderValue::from_str(&child.to_string()).expect("an address is ASCII"),
                );
                return resp;
            }
            Admit::Full => return status(StatusCode::SERVICE_UNAVAILABLE),
        }
        match self.source(&route, first, last, hop).await {
            Ok(src) => piece_response(src),
            Err(code) => status(code),
        }
    }

    async fn source(
        &self,
        route: &PeerRoute,
        first: u64,
        last: Option<u64>,
        hop: u32,
    ) -> Result<Source, StatusCode> {
        let digest = &route.digest;
        // The end of what is asked for: the stripe's end, or `last + 1` if earlier.
        let clamp = |total: u64| -> Result<u64, StatusCode> {
            let stripe =
                Stripe::nth(route.stripe, Some(total)).ok_or(StatusCode::RANGE_NOT_SATISFIABLE)?;
            if first < stripe.first_bytes || first >= stripe.end_bytes {
                return Err(StatusCode::RANGE_NOT_SATISFIABLE);
            }
            Ok(last.map_or(stripe.end_bytes, |l| (l + 1).min(stripe.end_bytes)))
        };
        if let Ok(Some(open)) = self.store.open_blob(digest, None).await {
            let end = clamp(open.size_bytes)?;
            return Ok(Source {
                body: body::file_to_peer(open.file, first, end, self.metrics.clone()),
                first_bytes: first,
                end_bytes: end,
                total_bytes: open.size_bytes,
                whole: false,
            });
        }
        let held = match self.origin.peek(digest, route.stripe) {
            Some(h) => Some(h),
            None => {
                // This node's own fill, if it already has the first byte asked for; for a
                // redirected request, also one still behind it (the requester was sent here
                // because this node is receiving the stripe, often ahead of its own fill).
                if let Some(src) = self.own_fill(route, first, hop > 0, &clamp).await {
                    return Ok(src);
                }
                if hop > 0 {
                    return Err(StatusCode::SERVICE_UNAVAILABLE);
                }
                None
            }
        };
        let held = match held {
            Some(h) => h,
            None => {
                let endpoint = self
                    .upstreams
                    .resolve(route.ns.as_deref())
                    .map_err(|_| StatusCode::NOT_FOUND)?;
                self.origin
                    .open(digest, route.stripe, &endpoint, &route.repo)
                    .await
                    .map_err(|f| {
                        tracing::debug!(%digest, stripe = route.stripe, %f, "stripe fetch for a peer failed");
                        StatusCode::BAD_GATEWAY
                    })?
            }
        };
        let info = held.info;
        let end = if info.whole {
            if first >= info.total_bytes {
                return Err(StatusCode::RANGE_NOT_SATISFIABLE);
            }
            info.total_bytes
        } else {
            clamp(info.total_bytes)?
        };
        if first < info.base_bytes || end > info.base_bytes + info.len_bytes {
            return Err(StatusCode::RANGE_NOT_SATISFIABLE);
        }
        let file = FlightFile {
            file: held.file,
            base_bytes: info.base_bytes,
        };
        Ok(Source {
            body: body::to_peer(held.flight, file, first, end, self.metrics.clone()),
            first_bytes: first,
            end_bytes: end,
            total_bytes: info.total_bytes,
            whole: info.whole,
        })
    }

    /// This node's own blob fill as a source. `behind_ok` (a redirected request): also when
    /// the fill has not reached `first`, or has not yet had its first answer from its own
    /// parent (waited for, at most half the peer response timeout).
    async fn own_fill(
        &self,
        route: &PeerRoute,
        first: u64,
        behind_ok: bool,
        clamp: &(dyn Fn(u64) -> Result<u64, StatusCode> + Sync),
    ) -> Option<Source> {
        let flight = self.blob_flights.get(&route.digest)?;
        let started = match flight.started() {
            Some(s) => s,
            None if behind_ok => tokio::time::timeout(self.start_wait, flight.wait_started())
                .await
                .ok()?
                .ok()?,
            None => return None,
        };
        let total = started.total_bytes?;
        let p = flight.progress();
        if (p.written_bytes < first && !behind_ok) || matches!(p.state, FillState::Failed(_)) {
            return None;
        }
        let end = clamp(total).ok()?;
        let file = FlightFile {
            file: started.file.clone(),
            base_bytes: 0,
        };
        Some(Source {
            body: body::to_peer(flight.clone(), file, first, end, self.metrics.clone()),
            first_bytes: first,
            end_bytes: end,
            total_bytes: total,
            whole: false,
        })
    }
}

/// The `206` carrying `src`.
fn piece_response(src: Source) -> Response<Body> {
    let mut resp = Response::new(src.body);
    *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
    let h = resp.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(
        CONTENT_LENGTH,
        HeaderValue::from(src.end_bytes - src.first_bytes),
    );
    let range = format!(
        "bytes {}-{}/{}",
        src.first_bytes,
        src.end_bytes - 1,
        src.total_bytes
    );
    h.insert(
        CONTENT_RANGE,
        HeaderValue::from_str(&range).expect("numbers are ASCII"),
    );
    if src.whole {
        h.insert(WHOLE_HEADER, HeaderValue::from_static("1"));
    }
    resp
}

/// `stampede-avoid`: members, comma-separated; malformed entries are ignored, at most
/// [`MAX_AVOID`] kept.
fn parse_avoid(v: &str) -> Vec<Member> {
    v.split(',')
        .filter_map(|m| parse_member(m.trim()).ok())
        .take(MAX_AVOID)
        .collect()
}

/// `bytes=<first>-[<last>]`.
fn parse_range(v: &str) -> Option<(u64, Option<u64>)> {
    let (first, last) = v.trim().strip_prefix("bytes=")?.split_once('-')?;
    let first = first.parse().ok()?;
    let last = match last {
        "" => None,
        l => Some(l.parse().ok().filter(|l: &u64| *l >= first)?),
    };
    Some((first, last))
}

fn status(code: StatusCode) -> Response<Body> {
    let mut resp = Response::new(body::empty());
    *resp.status_mut() = code;
    resp.headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from(0));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_paths_and_ranges_parse() {
        let d = Digest::of(b"x");
        let r = PeerRoute::parse(
            &format!("/peer/v1/stripes/3/{d}"),
            Some("repo=team%2Fapp&ns=reg.example%3A5000"),
        )
        .unwrap();
        assert_eq!(r.stripe, 3);
        assert_eq!(r.repo.as_str(), "team/app");
        assert_eq!(r.ns.as_deref(), Some("reg.example:5000"));
        for (path, query) in [
            (format!("/peer/v1/stripes/x/{d}"), Some("repo=a")),
            (format!("/peer/v1/stripes/1/{d}"), None),
            (format!("/peer/v1/stripes/1/{d}"), Some("repo=a&tag=latest")),
            ("/v2/a/blobs/sha256:00".to_owned(), Some("repo=a")),
        ] {
            assert_eq!(PeerRoute::parse(&path, query), None, "{path} {query:?}");
        }
        assert_eq!(parse_range("bytes=5-"), Some((5, None)));
        assert_eq!(parse_range("bytes=5-9"), Some((5, Some(9))));
        assert_eq!(parse_range("bytes=9-5"), None);
        assert_eq!(parse_range("items=0-1"), None);
    }

    #[test]
    fn a_stripe_goes_to_at_most_fanout_children_and_nobody_is_served_past_them() {
        let uploads = Uploads::default();
        let key = (Digest::of(b"x"), 0);
        let m = |i: u8| Member::from(std::net::SocketAddr::from(([10, 0, 0, i], 5052)));
        assert_eq!(uploads.admit(key.clone(), Some(m(1)), &[]), Admit::Serve);
        assert_eq!(uploads.admit(key.clone(), Some(m(2)), &[]), Admit::Serve);
        // Later requesters go to the two children in turn, even after those finished.
        let sent_to: Vec<Admit> = (3..7)
            .map(|i| uploads.admit(key.clone(), Some(m(i)), &[]))
            .collect();
        let to = |i| Admit::Redirect(m(i));
        assert_eq!(sent_to, vec![to(1), to(2), to(1), to(2)]);
        // A child asking again (a resume) is served.
        assert_eq!(uploads.admit(key.clone(), Some(m(1)), &[]), Admit::Serve);
        // A requester that could not get it from a child goes to the other one, and when it
        // could get it from neither, it is refused: never served past the bound.
        assert_eq!(uploads.admit(key.clone(), Some(m(7)), &[m(1)]), to(2));
        assert_eq!(
            uploads.admit(key.clone(), Some(m(7)), &[m(1), m(2)]),
            Admit::Full
        );
        // Requests without a name count as children too, and are never redirected to.
        let anon = (Digest::of(b"y"), 0);
        assert_eq!(uploads.admit(anon.clone(), None, &[]), Admit::Serve);
        assert_eq!(uploads.admit(anon.clone(), Some(m(1)), &[]), Admit::Serve);
        assert_eq!(uploads.admit(anon.clone(), Some(m(2)), &[]), to(1));
        // Another stripe has its own count.
        assert_eq!(
            uploads.admit((Digest::of(b"x"), 1), Some(m(3)), &[]),
            Admit::Serve
        );
    }

    #[test]
    fn avoid_lists_parse_and_are_capped() {
        assert_eq!(
            parse_avoid("10.0.0.1:5052, 10.0.0.2:5052,junk"),
            vec![
                Member::from(std::net::SocketAddr::from(([10, 0, 0, 1], 5052))),
                Member::from(std::net::SocketAddr::from(([10, 0, 0, 2], 5052))),
            ]
        );
        let long = vec!["10.0.0.1:5052"; 40].join(",");
        assert_eq!(parse_avoid(&long).len(), MAX_AVOID);
    }
}
