//! The peer port's requests: `GET /peer/v1/stripes/<index>/<digest>?repo=<repo>[&ns=<ns>]`
//! with `Range: bytes=<first>-[<last>]` (blob offsets within that stripe), signed
//! (`signing.rs`). Anything unsigned, badly signed or outside the replay window gets `401`
//! and is counted; the accept loop, its own connection limit and shutdown are `crate::server`'s.
//!
//! Where the bytes come from, first match wins:
//! 1. the committed blob;
//! 2. this node's stripe fill of that stripe, running or kept (`origin.rs`);
//! 3. this node's own blob fill, if it has already reached the first byte asked for;
//! 4. a new stripe fill from the registry, unless the request was redirected here (then `503`:
//!    a redirected request is served only from what this node has or is receiving, so a
//!    redirect never costs a registry fetch).
//!
//! Fan-out bound: a node streams each stripe to at most [`FANOUT_CHILDREN`] peers at once.
//! A further requester is redirected (`307`, `stampede-redirect: <member>`) to one of the peers
//! it is streaming that stripe to, which passes on the bytes from its own fill as they land
//! (cut-through), so no node uploads more than about two copies of a stripe however many nodes
//! want it. A redirected requester that the child cannot serve asks again with
//! `stampede-hop: 0` and `stampede-direct: 1` and is served here.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use http::header::{HeaderValue, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, RANGE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;

use stampede_oci::{Digest, RepoName};

use crate::body::{self, Body, FlightFile};
use crate::flight::FillState;

use super::client::{HOP_HEADER, PEER_HEADER, REDIRECT_HEADER, WHOLE_HEADER};
use super::membership::{parse_member, Member};
use super::signing::{SIGNATURE_HEADER, TIMESTAMP_HEADER};
use super::stripe::Stripe;
use super::Cluster;

/// Peers one node streams a stripe to at once; further requesters are redirected to them.
pub const FANOUT_CHILDREN: usize = 2;
/// Header asking the node to serve the request itself (no redirect).
pub const DIRECT_HEADER: &str = "stampede-direct";

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

/// One upload in progress: its id and the member receiving it (when it said).
type Streaming = (u64, Option<Member>);

/// Streams in progress to peers, by stripe, so the fan-out can be bounded.
#[derive(Debug, Default)]
pub struct Uploads {
    next_id: AtomicU64,
    /// A std `Mutex`: held to add, remove or pick an entry; never across `.await`.
    active: Mutex<HashMap<(Digest, u32), Vec<Streaming>>>,
}

/// Removes an upload from [`Uploads`] when its body is dropped.
#[derive(Debug)]
struct Upload {
    uploads: Arc<Uploads>,
    key: (Digest, u32),
    id: u64,
}

impl Drop for Upload {
    fn drop(&mut self) {
        let mut active = self.uploads.active.lock().expect("uploads mutex poisoned");
        if let Some(list) = active.get_mut(&self.key) {
            list.retain(|(id, _)| *id != self.id);
            if list.is_empty() {
                active.remove(&self.key);
            }
        }
    }
}

impl Uploads {
    /// Either a child to redirect `asker` to (the stripe already goes to
    /// [`FANOUT_CHILDREN`] peers), or the registration of a new upload.
    fn admit(
        self: &Arc<Self>,
        key: (Digest, u32),
        asker: Option<Member>,
        direct: bool,
    ) -> Result<Upload, Member> {
        let mut active = self.uploads_lock();
        let list = active.entry(key.clone()).or_default();
        if !direct && list.len() >= FANOUT_CHILDREN {
            // The child with the fewest redirects so far would need bookkeeping; rotating by
            // the request counter spreads them evenly enough.
            let children: Vec<Member> = list
                .iter()
                .filter_map(|(_, m)| *m)
                .filter(|m| Some(*m) != asker)
                .collect();
            if !children.is_empty() {
                let n = self.next_id.load(Ordering::Relaxed) as usize;
                return Err(children[n % children.len()]);
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        list.push((id, asker));
        Ok(Upload {
            uploads: self.clone(),
            key,
            id,
        })
    }

    fn uploads_lock(&self) -> std::sync::MutexGuard<'_, HashMap<(Digest, u32), Vec<Streaming>>> {
        self.active.lock().expect("uploads mutex poisoned")
    }
}

/// A body that keeps `upload` registered while it streams.
fn tracked(body: Body, upload: Upload) -> Body {
    body.map_frame(move |f| {
        let _ = &upload;
        f
    })
    .boxed()
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
        if let Err(rejection) = self.signer.verify(
            req.method().as_str(),
            &path_and_query,
            header(TIMESTAMP_HEADER),
            header(SIGNATURE_HEADER),
            SystemTime::now(),
        ) {
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
        let direct = header(DIRECT_HEADER).is_some();
        let asker = header(PEER_HEADER).and_then(|v| parse_member(v).ok());
        let key = (route.digest.clone(), route.stripe);
        let upload = match self.uploads.admit(key, asker, direct) {
            Ok(u) => u,
            Err(child) => {
                self.metrics.peer_redirect();
                let mut resp = status(StatusCode::TEMPORARY_REDIRECT);
                resp.headers_mut().insert(
                    REDIRECT_HEADER,
                    HeaderValue::from_str(&child.to_string()).expect("an address is ASCII"),
                );
                return resp;
            }
        };
        match self.source(&route, first, last, hop).await {
            Ok(src) => {
                let mut resp = Response::new(tracked(src.body, upload));
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
                // This node's own fill, if it already has the first byte asked for.
                if let Some(src) = self.own_fill(route, first, &clamp) {
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

    fn own_fill(
        &self,
        route: &PeerRoute,
        first: u64,
        clamp: &dyn Fn(u64) -> Result<u64, StatusCode>,
    ) -> Option<Source> {
        let flight = self.blob_flights.get(&route.digest)?;
        let started = flight.started()?;
        let total = started.total_bytes?;
        let p = flight.progress();
        if p.written_bytes < first || matches!(p.state, FillState::Failed(_)) {
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
    fn a_stripe_goes_to_at_most_fanout_children_then_requesters_are_redirected_to_them() {
        let uploads = Arc::new(Uploads::default());
        let key = (Digest::of(b"x"), 0);
        let m = |i: u8| Member::from(std::net::SocketAddr::from(([10, 0, 0, i], 5052)));
        let a = uploads.admit(key.clone(), Some(m(1)), false).unwrap();
        let _b = uploads.admit(key.clone(), Some(m(2)), false).unwrap();
        let child = uploads.admit(key.clone(), Some(m(3)), false).unwrap_err();
        assert!(child == m(1) || child == m(2));
        // Direct and redirected requests are served regardless.
        let _c = uploads.admit(key.clone(), Some(m(3)), true).unwrap();
        drop(a);
        drop(_c);
        let _d = uploads.admit(key.clone(), Some(m(4)), false).unwrap();
    }
}
