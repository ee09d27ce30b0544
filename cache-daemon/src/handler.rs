//! Dispatch on [`Route`]: the only place that combines the store, the flights, the manifest
//! cache and the upstreams. Every answer, content or error, is built here with the headers a
//! registry client expects (`Content-Type`, `Content-Length`, `Docker-Content-Digest`, `ETag`,
//! `Accept-Ranges`, `Content-Range`).

use std::sync::Arc;

use bytes::Bytes;
use http::header::{
    HeaderValue, ACCEPT_RANGES, AUTHORIZATION, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG,
    RANGE, RETRY_AFTER, WWW_AUTHENTICATE,
};
use http::{Method, Request, Response, StatusCode};

use stampede_oci::api::ByteRange;
use stampede_oci::manifest::OCTET_STREAM;
use stampede_oci::{Digest, Endpoint, RepoName};

use crate::access::{Access, Read, Refusal, Target};
use crate::body::{self, Body};
use crate::error::{Error, ErrorReply, Fault};
use crate::fill::{self, FillContext, FillJob};
use crate::flight::{Claim, FillFailure, FillGuard, Flight, Flights};
use crate::manifests::Manifests;
use crate::metrics::{self, Kind, Metrics, Outcome};
use crate::passthrough;
use crate::route::{Parsed, Route};
use crate::store::read_checks::FileIdentity;
use crate::store::BlobStore;
use crate::upstream::Upstreams;

const DIGEST_HEADER: &str = "docker-content-digest";
const API_VERSION_HEADER: &str = "docker-distribution-api-version";

/// A blob request as routed: what it asks for and the headers that shape the answer.
struct BlobAsk<'a> {
    repo: &'a RepoName,
    digest: &'a Digest,
    /// `?ns=`: the registry it is for, when the client named one.
    ns: Option<&'a str>,
    head: bool,
    /// The `Range` header, unparsed.
    range: Option<&'a str>,
    /// The `Authorization` header, for caller checks.
    caller: Option<&'a HeaderValue>,
}

/// The daemon's shared state; one per daemon, behind an `Arc`.
#[derive(Debug)]
pub struct App {
    /// Committed blobs.
    pub store: Arc<BlobStore>,
    /// Fills in progress.
    pub flights: Arc<Flights>,
    /// Manifests and tags.
    pub manifests: Arc<Manifests>,
    /// Origin registries.
    pub upstreams: Arc<Upstreams>,
    /// What to count.
    pub metrics: Arc<Metrics>,
    /// Wakes the evictor.
    pub evict: Arc<tokio::sync::Notify>,
    /// Pins declared in the config file, ensured at start.
    pub declared_pins: Vec<crate::config::PinRequest>,
    /// Caller checks (off by default).
    pub access: Arc<Access>,
    /// Cluster mode (off by default): misses come from the stripes' owners.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
}

impl App {
    /// Starts the upstream fill a leader claimed, owned by the daemon (a spawned task), and
    /// returns its flight for the caller to follow.
    pub fn start_fill(
        &self,
        guard: FillGuard,
        endpoint: &Endpoint,
        repo: &RepoName,
    ) -> Arc<Flight> {
        let flight = guard.flight().clone();
        let ctx = FillContext {
            store: self.store.clone(),
            upstreams: self.upstreams.clone(),
            metrics: self.metrics.clone(),
            evict: self.evict.clone(),
            cluster: self.cluster.clone(),
        };
        let job = FillJob {
            guard,
            endpoint: endpoint.clone(),
            repo: repo.clone(),
        };
        tokio::spawn(fill::run(job, ctx));
        flight
    }

    /// Answers one request. Never fails: errors become OCI error responses.
    pub async fn handle<B>(self: Arc<Self>, req: Request<B>) -> Response<Body> {
        let range = req
            .headers()
            .get(RANGE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let caller = req.headers().get(AUTHORIZATION).cloned();
        let parsed = Route::parse(req.method(), req.uri().path(), req.uri().query());
        let head = req.method() == Method::HEAD;
        let (kind, answer) = match parsed {
            Err(e) => (Kind::Other, Err(e.reply())),
            Ok(Parsed { route, head }) => match route {
                Route::Base => match self.base_challenge(caller.as_ref()).await {
                    Some(refusal) => return self.refuse(Kind::Base, refusal, head),
                    None => (Kind::Base, Ok(self.base(head))),
                },
                Route::Health => (Kind::Other, Ok(text(StatusCode::OK, "ok\n", head))),
                Route::Metrics => (Kind::Other, Ok(self.metrics_text())),
                Route::Blob { repo, digest, ns } => {
                    let target = Target::Blob(&digest);
                    if let Err(r) = self
                        .admit(caller.as_ref(), ns.as_deref(), &repo, target)
                        .await
                    {
                        return self.refuse(Kind::Blob, r, head);
                    }
                    (
                        Kind::Blob,
                        self.blob(BlobAsk {
                            repo: &repo,
                            digest: &digest,
                            ns: ns.as_deref(),
                            head,
                            range: range.as_deref(),
                            caller: caller.as_ref(),
                        })
                        .await,
                    )
                }
                Route::Manifest {
                    repo,
                    reference,
                    ns,
                } => {
                    let target = Target::Manifest(&reference);
                    if let Err(r) = self
                        .admit(caller.as_ref(), ns.as_deref(), &repo, target)
                        .await
                    {
                        return self.refuse(Kind::Manifest, r, head);
                    }
                    let answer = async {
                        let endpoint = self.upstreams.resolve(ns.as_deref())?;
                        let label = self.upstreams.repo_label(ns.as_deref(), &repo);
                        let m = self
                            .manifests
                            .get(&endpoint, &repo, &reference, &label)
                            .await?;
                        self.metrics.request(Kind::Manifest, m.outcome);
                        Ok(manifest_response(m.digest, &m.media_type, m.bytes, head))
                    };
                    (Kind::Manifest, answer.await)
                }
            },
        };
        match answer {
            Ok(resp) => resp,
            Err(reply) => {
                self.metrics.request(kind, Outcome::Error);
                if reply.fault == Fault::Downstream {
                    tracing::debug!(path = %req.uri().path(), code = reply.code, "request refused");
                }
                error_response(&reply, head)
            }
        }
    }

    /// With caller checks on: whether the caller may read `target` in `repo` (see `access.rs`);
    /// a registry this cache does not serve is refused here, before the store is consulted.
    async fn admit(
        &self,
        caller: Option<&HeaderValue>,
        ns: Option<&str>,
        repo: &RepoName,
        target: Target<'_>,
    ) -> Result<(), Refusal> {
        if !self.access.enabled() {
            return Ok(());
        }
        let endpoint = self.upstreams.resolve(ns)?;
        let label = self.upstreams.repo_label(ns, repo);
        self.access
            .admit(Read {
                caller,
                endpoint: &endpoint,
                repo,
                label: &label,
                target,
            })
            .await
    }

    /// With caller checks on and a private default upstream: `/v2/` answers a caller without
    /// credentials as the upstream does (401 and its challenge), so clients that decide from
    /// the ping whether to send credentials (containers/image: skopeo, podman, CRI-O) send them.
    async fn base_challenge(&self, caller: Option<&HeaderValue>) -> Option<Refusal> {
        if !self.access.enabled() || caller.is_some() {
            return None;
        }
        let endpoint = self.upstreams.resolve(None).ok()?;
        let challenge = self.access.base_challenge(&endpoint).await?;
        Some(Refusal {
            reply: Error::CallerUnauthorized {
                repo: endpoint.authority().to_owned(),
                presented: false,
                status: StatusCode::UNAUTHORIZED,
            }
            .reply(),
            challenge: Some(challenge),
        })
    }

    /// The answer to a refused caller: the OCI error and, for a 401, the challenge.
    fn refuse(&self, kind: Kind, refusal: Refusal, head: bool) -> Response<Body> {
        self.metrics.request(kind, Outcome::Error);
        let mut resp = error_response(&refusal.reply, head);
        if let Some(c) = refusal.challenge {
            resp.headers_mut().insert(WWW_AUTHENTICATE, c);
        }
        if kind == Kind::Base {
            // Clients tell a v2 registry from anything else by this header, 401 or not.
            resp.headers_mut()
                .insert(API_VERSION_HEADER, HeaderValue::from_static("registry/2.0"));
        }
        resp
    }

    fn base(&self, head: bool) -> Response<Body> {
        self.metrics.request(Kind::Base, Outcome::Hit);
        let mut resp = text(StatusCode::OK, "{}", head);
        resp.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        resp.headers_mut()
            .insert(API_VERSION_HEADER, HeaderValue::from_static("registry/2.0"));
        resp
    }

    fn metrics_text(&self) -> Response<Body> {
        let (bytes, blobs) = self.store.usage();
        let health = self.store.health();
        self.metrics
            .store_health(health.is_full(), health.write_errors());
        let text = self.metrics.render(bytes, blobs, self.store.pinned_bytes());
        let mut resp = Response::new(body::full(Bytes::from(text)));
        resp.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static(metrics::CONTENT_TYPE),
        );
        resp
    }

    async fn blob(&self, ask: BlobAsk<'_>) -> Result<Response<Body>, ErrorReply> {
        let BlobAsk {
            repo,
            digest,
            ns,
            head,
            range,
            caller,
        } = ask;
        let range = range
            .map(ByteRange::parse)
            .transpose()
            .map_err(Error::from)?
            .flatten();
        let label = self.upstreams.repo_label(ns, repo);
        if let Some(resp) = self.blob_from_store(digest, &label, head, range).await? {
            self.metrics.request(Kind::Blob, Outcome::Hit);
            return Ok(resp);
        }
        let endpoint = self.upstreams.resolve(ns)?;
        if head {
            return self.blob_head_miss(&endpoint, repo, digest).await;
        }
        // The store is full: stream the miss from upstream without storing it, unless a fill
        // of it (started before) is running anyway.
        if self.flights.get(digest).is_none() && !self.store.accepts_fills() {
            let resp = self
                .blob_passthrough(&endpoint, repo, digest, range)
                .await?;
            self.metrics.request(Kind::Blob, Outcome::Passthrough);
            return Ok(resp);
        }
        let flight = match self.flights.claim(digest, || self.store.contains(digest)) {
            Claim::Cached => {
                return match self.blob_from_store(digest, &label, head, range).await? {
                    Some(resp) => {
                        self.metrics.request(Kind::Blob, Outcome::Hit);
                        Ok(resp)
                    }
                    None => Err(Error::BlobUnknown(digest.clone()).reply()),
                };
            }
            Claim::Leader(guard) => {
                self.metrics.request(Kind::Blob, Outcome::Miss);
                self.access.note_fill(guard.flight(), &label);
                self.start_fill(guard, &endpoint, repo)
            }
            Claim::Follower(flight) => {
                // Admitted as a miss, but a fill started meanwhile, maybe through another
                // repository: ask again (an exact check unless it is this repository's fill).
                // A refusal keeps its challenge (`WWW-Authenticate`), as on the first check.
                if let Err(r) = self.admit(caller, ns, repo, Target::Blob(digest)).await {
                    return Ok(self.refuse(Kind::Blob, r, head));
                }
                self.metrics.request(Kind::Blob, Outcome::Coalesced);
                flight
            }
        };
        // The fill found the store unable to take blobs before it sent a byte: this request
        // (and every other waiting on the same fill) streams the blob from upstream instead of
        // failing. At most one extra upstream GET per waiting request, once per flight; later
        // misses pass through directly.
        if matches!(flight.wait_started().await, Err(FillFailure::StoreFull)) {
            return self.blob_passthrough(&endpoint, repo, digest, range).await;
        }
        self.follow(&endpoint.base_url(), flight, range).await
    }

    async fn blob_from_store(
        &self,
        digest: &Digest,
        repo_label: &str,
        head: bool,
        range: Option<ByteRange>,
    ) -> Result<Option<Response<Body>>, ErrorReply> {
        let open = self
            .store
            .open_blob(digest, Some(repo_label))
            .await
            .map_err(|e| {
                tracing::error!(%digest, error = %e, "cannot open committed blob");
                Error::internal(format!("open blob {digest}"), e).reply()
            })?;
        let Some(open) = open else {
            return Ok(None);
        };
        let len = open.size_bytes;
        let (status, start, end) = span(range, len)?;
        let verify = !head && self.store.verify_on_read();
        // The file's identity: what a verification is remembered for (`store::read_checks`).
        let identity = if verify {
            let id = FileIdentity::of(&open.file)
                .map_err(|e| Error::internal(format!("stat blob {digest}"), e).reply())?;
            Some(id)
        } else {
            None
        };
        if let (Some(id), Some(_)) = (identity, range) {
            if !self.recheck(digest, &open.file, len, id).await? {
                return Ok(None);
            }
        }
        let mut resp = blob_headers(digest, status, start, end, len);
        if !head {
            *resp.body_mut() = match identity {
                Some(identity) if range.is_none() => body::from_file_verified(
                    open.file,
                    len,
                    body::ReadCheck {
                        digest: digest.clone(),
                        identity,
                        store: self.store.clone(),
                    },
                    self.metrics.clone(),
                ),
                _ => body::from_file(open.file, start, end, self.metrics.clone()),
            };
        }
        Ok(Some(resp))
    }

    /// `verify_on_read` for a range: the whole blob rehashed on the blocking pool before any
    /// byte goes out (a range cannot be checked on its own), unless this file verified
    /// recently; concurrent requests share one rehash (`store::read_checks`). `false`: it did
    /// not match and was quarantined, so the caller treats the request as a miss.
    async fn recheck(
        &self,
        digest: &Digest,
        file: &Arc<std::fs::File>,
        len: u64,
        id: FileIdentity,
    ) -> Result<bool, ErrorReply> {
        let checks = self.store.read_checks();
        if checks.is_verified(digest, id) {
            return Ok(true);
        }
        let (store, metrics, file, d) = (
            self.store.clone(),
            self.metrics.clone(),
            file.clone(),
            digest.clone(),
        );
        let check = checks.join_or_start(digest, id, move || async move {
            metrics.read_recheck();
            let matched = tokio::task::spawn_blocking(move || store.recheck(&d, &file, len))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
            if !matched {
                metrics.read_mismatch();
            }
            Ok(matched)
        });
        check.await.map_err(|e| {
            Error::internal(format!("recheck blob {digest}"), std::io::Error::other(e)).reply()
        })
    }

    /// A miss while the store is full: the blob streamed from upstream without storing it
    /// (`passthrough.rs`), its last byte held back until its digest matched. Not counted here:
    /// a direct pass-through is counted by the caller, a miss that fell back was counted as one.
    async fn blob_passthrough(
        &self,
        endpoint: &Endpoint,
        repo: &RepoName,
        digest: &Digest,
        range: Option<ByteRange>,
    ) -> Result<Response<Body>, ErrorReply> {
        let through = passthrough::open(&self.upstreams, endpoint, repo, digest).await?;
        let idle = self.upstreams.body_idle_timeout;
        let metrics = self.metrics.clone();
        Ok(match through.total_bytes() {
            Some(len) => {
                let (status, start, end) = span(range, len)?;
                let mut resp = blob_headers(digest, status, start, end, len);
                *resp.body_mut() = through.body(start, Some(end), idle, metrics);
                resp
            }
            None => {
                // Unknown length: the range is ignored (allowed) and the body is chunked.
                let mut resp = blob_headers(digest, StatusCode::OK, 0, 0, 0);
                resp.headers_mut().remove(CONTENT_LENGTH);
                *resp.body_mut() = through.body(0, None, idle, metrics);
                resp
            }
        })
    }

    async fn blob_head_miss(
        &self,
        endpoint: &stampede_oci::Endpoint,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Response<Body>, ErrorReply> {
        if let Some(total) = self
            .flights
            .get(digest)
            .and_then(|f| f.started().and_then(|s| s.total_bytes))
        {
            self.metrics.request(Kind::Blob, Outcome::Coalesced);
            return Ok(blob_headers(digest, StatusCode::OK, 0, total, total));
        }
        let resp = self
            .upstreams
            .blob(endpoint, repo, digest, Method::HEAD)
            .await?
            .response;
        if resp.status() != StatusCode::OK {
            return Err(crate::upstream::status_error(
                endpoint,
                resp.status(),
                crate::upstream::retry_after(&resp),
                Error::BlobUnknown(digest.clone()),
            )
            .reply());
        }
        let len = resp
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        self.metrics.request(Kind::Blob, Outcome::Miss);
        Ok(match len {
            Some(len) => blob_headers(digest, StatusCode::OK, 0, len, len),
            None => {
                let mut r = blob_headers(digest, StatusCode::OK, 0, 0, 0);
                r.headers_mut().remove(CONTENT_LENGTH);
                r
            }
        })
    }

    async fn follow(
        &self,
        upstream: &str,
        flight: Arc<Flight>,
        range: Option<ByteRange>,
    ) -> Result<Response<Body>, ErrorReply> {
        let digest = flight.digest().clone();
        let started = flight
            .wait_started()
            .await
            .map_err(|f| failure_error(upstream, &digest, f).reply())?;
        let file = started.file.clone();
        match started.total_bytes {
            Some(len) => {
                let (status, start, end) = span(range, len)?;
                let mut resp = blob_headers(&digest, status, start, end, len);
                *resp.body_mut() =
                    body::from_flight(flight, file, start, Some(end), self.metrics.clone());
                Ok(resp)
            }
            None => {
                // Unknown length: the range is ignored (allowed) and the body is chunked.
                let mut resp = blob_headers(&digest, StatusCode::OK, 0, 0, 0);
                resp.headers_mut().remove(CONTENT_LENGTH);
                *resp.body_mut() = body::from_flight(flight, file, 0, None, self.metrics.clone());
                Ok(resp)
            }
        }
    }
}

/// `(status, start, end)` for an optional range over `len` bytes.
fn span(range: Option<ByteRange>, len: u64) -> Result<(StatusCode, u64, u64), ErrorReply> {
    match range {
        None => Ok((StatusCode::OK, 0, len)),
        Some(r) => {
            let (start, end) = r.resolve(len).map_err(Error::from)?;
            Ok((StatusCode::PARTIAL_CONTENT, start, end))
        }
    }
}

fn failure_error(upstream: &str, digest: &Digest, failure: FillFailure) -> Error {
    let upstream = upstream.to_owned();
    match failure {
        FillFailure::Status {
            status,
            retry_after,
        } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
            match status {
                StatusCode::NOT_FOUND => Error::BlobUnknown(digest.clone()),
                StatusCode::TOO_MANY_REQUESTS => Error::UpstreamThrottled {
                    upstream,
                    retry_after,
                },
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                    Error::UpstreamDenied { upstream, status }
                }
                StatusCode::SERVICE_UNAVAILABLE if retry_after.is_some() => {
                    Error::UpstreamUnavailable {
                        upstream,
                        retry_after,
                    }
                }
                status => Error::UpstreamStatus { upstream, status },
            }
        }
        FillFailure::Timeout => Error::UpstreamTimeout { upstream },
        other => Error::FillFailed {
            digest: digest.clone(),
            reason: other.to_string(),
        },
    }
}

fn blob_headers(
    digest: &Digest,
    status: StatusCode,
    start: u64,
    end: u64,
    len: u64,
) -> Response<Body> {
    let mut resp = Response::new(body::empty());
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(OCTET_STREAM));
    h.insert(CONTENT_LENGTH, HeaderValue::from(end - start));
    h.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    let digest_value = HeaderValue::from_str(&digest.to_string()).expect("digest is ASCII");
    h.insert(
        ETAG,
        HeaderValue::from_str(&format!("\"{digest}\"")).expect("digest is ASCII"),
    );
    h.insert(DIGEST_HEADER, digest_value);
    if status == StatusCode::PARTIAL_CONTENT {
        let value = format!("bytes {start}-{}/{len}", end - 1);
        h.insert(
            CONTENT_RANGE,
            HeaderValue::from_str(&value).expect("numbers are ASCII"),
        );
    }
    resp
}

fn manifest_response(digest: Digest, media_type: &str, bytes: Bytes, head: bool) -> Response<Body> {
    let len = bytes.len() as u64;
    let mut resp = Response::new(if head {
        body::empty()
    } else {
        body::full(bytes)
    });
    let h = resp.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_str(media_type).unwrap_or(HeaderValue::from_static(OCTET_STREAM)),
    );
    h.insert(CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(
        ETAG,
        HeaderValue::from_str(&format!("\"{digest}\"")).expect("digest is ASCII"),
    );
    h.insert(
        DIGEST_HEADER,
        HeaderValue::from_str(&digest.to_string()).expect("digest is ASCII"),
    );
    resp
}

fn text(status: StatusCode, s: &'static str, head: bool) -> Response<Body> {
    let mut resp = Response::new(if head {
        body::empty()
    } else {
        body::full(Bytes::from_static(s.as_bytes()))
    });
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from(s.len()));
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn error_response(reply: &ErrorReply, head: bool) -> Response<Body> {
    let body_bytes = reply.body();
    let len = body_bytes.len();
    let mut resp = Response::new(if head {
        body::empty()
    } else {
        body::full(body_bytes)
    });
    *resp.status_mut() = reply.status;
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(CONTENT_LENGTH, HeaderValue::from(len));
    if reply.status == StatusCode::METHOD_NOT_ALLOWED {
        h.insert(http::header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    }
    if let Some(after) = reply.retry_after {
        h.insert(RETRY_AFTER, HeaderValue::from(after.as_secs().max(1)));
    }
    if let Some(n) = reply.complete_length {
        if let Ok(v) = HeaderValue::from_str(&format!("bytes */{n}")) {
            h.insert(http::header::CONTENT_RANGE, v);
        }
    }
    resp
}
