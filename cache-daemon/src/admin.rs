//! Operator operations on a running daemon (inventory, pin and unpin, prefetch, gc, verify)
//! and their HTTP endpoints on the admin listener, which is separate from the mirror listener
//! and loopback-only by default, so that pods pulling images cannot evict or pin anything.
//!
//! Endpoints (all answer JSON; errors are OCI-style error documents). Parameters go in the
//! query string; a request body or a parameter the endpoint does not take is refused with 400
//! and nothing is done:
//!
//! | method and path | query | does |
//! | --- | --- | --- |
//! | `GET /admin/store` | | which store this daemon serves: its id (`<root>/store-id`) and canonical root |
//! | `GET /admin/blobs` | | the inventory, least recently used first |
//! | `GET /admin/pins` | | the pins |
//! | `POST /admin/pins` | `target`, `platform` | pin an image (fetching it first) or a digest |
//! | `DELETE /admin/pins` | `target` | remove pins made with `target` |
//! | `POST /admin/prefetch` | `image`, `platform` | fetch an image into the cache |
//! | `POST /admin/gc` | `dry_run`, `target_bytes` | evict now |
//! | `POST /admin/verify` | | rehash every blob, quarantine mismatches |
//!
//! The same operations run on a stopped store from `tool.rs`, through an [`App`] built without
//! listeners.

use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};

use stampede_oci::{Digest, Endpoint, ImageRef, Manifest, Platform, Reference, RepoName};

use crate::body::{self, Body};
use crate::cli::{parse_bytes, parse_pin_target};
use crate::config::{PinRequest, PinTarget};
use crate::error::{Error, ErrorReply};
use crate::flight::{Claim, FillState};
use crate::handler::App;
use crate::store::index::Victim;
use crate::store::state::{unix_secs, Pin};

/// What a prefetch did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PrefetchReport {
    /// The image as asked for.
    pub image: String,
    /// The upstream it came from (`scheme://host[:port]`): the configured default upstream for
    /// a reference that names no registry, whatever Docker's normalisation (`docker.io`) says.
    #[serde(default)]
    pub upstream: String,
    /// Manifests (and indexes) resolved.
    pub manifests: Vec<Digest>,
    /// Blobs (configs and layers) the image needs.
    pub blobs: usize,
    /// Of those, fetched from upstream now.
    pub fetched: usize,
    /// Bytes of the blobs fetched now.
    pub fetched_bytes: u64,
    /// Every digest the image covers (manifests and blobs).
    pub digests: BTreeSet<Digest>,
}

/// What a gc did or would do.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GcReport {
    /// Whether anything was removed.
    pub dry_run: bool,
    /// The blobs evicted (or that would be).
    pub victims: Vec<Digest>,
    /// Their bytes.
    pub bytes: u64,
}

/// The upstream, repository and reference for an image reference, as if containerd had asked
/// with `?ns=<registry>`.
fn locate(
    app: &App,
    image: &ImageRef,
) -> Result<(Endpoint, RepoName, Reference, String), ErrorReply> {
    let endpoint = app.upstreams.resolve(Some(&image.registry))?;
    let label = app.upstreams.repo_label(Some(&image.registry), &image.repo);
    Ok((endpoint, image.repo.clone(), image.reference(), label))
}

/// Fetches `image` (for an index: every platform, or only `platform`) into the cache.
///
/// # Errors
/// The image or one of its blobs could not be fetched.
pub async fn prefetch(
    app: &Arc<App>,
    image: &ImageRef,
    platform: Option<&Platform>,
) -> Result<PrefetchReport, ErrorReply> {
    let (endpoint, repo, reference, label) = locate(app, image)?;
    let mut report = PrefetchReport {
        image: image.to_string(),
        upstream: endpoint.base_url(),
        ..PrefetchReport::default()
    };
    let top = app
        .manifests
        .get(&endpoint, &repo, &reference, &label)
        .await?;
    let mut images = Vec::new();
    report.manifests.push(top.digest.clone());
    match parse(&top.media_type, &top.bytes)? {
        Manifest::Image(_) => images.push(top),
        Manifest::Index(index) => {
            for child in index.manifests() {
                let wanted = platform.is_none_or(|w| {
                    stampede_oci::manifest::descriptor_platform(child).is_some_and(|p| p.runs_on(w))
                });
                if !wanted {
                    continue;
                }
                let digest = stampede_oci::manifest::descriptor_digest(child)
                    .map_err(|e| bad_manifest(&e))?;
                let m = app
                    .manifests
                    .get(&endpoint, &repo, &Reference::Digest(digest), &label)
                    .await?;
                report.manifests.push(m.digest.clone());
                images.push(m);
            }
            if images.is_empty() {
                // The operator asked for a platform the image does not have: their request, not
                // the upstream's answer, is at fault.
                let has: Vec<String> = index
                    .manifests()
                    .iter()
                    .map(|d| {
                        stampede_oci::manifest::descriptor_platform(d)
                            .map_or_else(|| "(no platform)".to_owned(), |p| p.to_string())
                    })
                    .collect();
                return Err(ErrorReply {
                    status: StatusCode::NOT_FOUND,
                    code: "MANIFEST_UNKNOWN",
                    message: format!(
                        "the index of {image} has no manifest for platform {}; it has: {}",
                        platform.map_or_else(String::new, ToString::to_string),
                        has.join(", ")
                    ),
                    retry_after: None,
                    fault: crate::error::Fault::Downstream,
                    complete_length: None,
                });
            }
        }
    }
    let mut blobs = BTreeSet::new();
    for m in &images {
        let manifest = parse(&m.media_type, &m.bytes)?;
        if matches!(manifest, Manifest::Index(_)) {
            return Err(bad_manifest(&"an index points at another index"));
        }
        for (d, _) in manifest.children().map_err(|e| bad_manifest(&e))? {
            blobs.insert(d);
        }
    }
    report.blobs = blobs.len();
    for d in &blobs {
        if let Some(bytes) = ensure_blob(app, &endpoint, &repo, d).await? {
            report.fetched += 1;
            report.fetched_bytes += bytes;
        }
        app.store.lookup(d, Some(&label));
    }
    report.digests = report.manifests.iter().cloned().chain(blobs).collect();
    tracing::info!(%image, blobs = report.blobs, fetched = report.fetched, fetched_bytes = report.fetched_bytes, "prefetched");
    Ok(report)
}

fn parse(media_type: &str, bytes: &[u8]) -> Result<Manifest, ErrorReply> {
    Manifest::parse(Some(media_type), bytes).map_err(|e| bad_manifest(&e))
}

fn bad_manifest(e: &dyn std::fmt::Display) -> ErrorReply {
    ErrorReply {
        status: StatusCode::BAD_GATEWAY,
        code: "MANIFEST_INVALID",
        message: e.to_string(),
        retry_after: None,
        fault: crate::error::Fault::Upstream,
        complete_length: None,
    }
}

/// Makes sure blob `digest` is committed, joining or starting its fill. Returns the bytes
/// fetched now, or `None` if it was already cached.
///
/// # Errors
/// The fill failed.
pub async fn ensure_blob(
    app: &Arc<App>,
    endpoint: &Endpoint,
    repo: &RepoName,
    digest: &Digest,
) -> Result<Option<u64>, ErrorReply> {
    let flight = match app.flights.claim(digest, || app.store.contains(digest)) {
        Claim::Cached => return Ok(None),
        Claim::Follower(f) => f,
        Claim::Leader(guard) => app.start_fill(guard, endpoint, repo),
    };
    let mut progress = flight.subscribe();
    loop {
        let p = progress.borrow_and_update().clone();
        match p.state {
            FillState::Done => return Ok(Some(p.written_bytes)),
            FillState::Failed(f) => {
                return Err(Error::FillFailed {
                    digest: digest.clone(),
                    reason: f.to_string(),
                }
                .reply())
            }
            FillState::Running => {}
        }
        if progress.changed().await.is_err() {
            return Err(Error::FillFailed {
                digest: digest.clone(),
                reason: "fill vanished".into(),
            }
            .reply());
        }
    }
}

/// Pins `request`: an image is fetched first (so that what is pinned is really here), a digest
/// covers its children when it is a cached manifest.
///
/// # Errors
/// Fetching failed, or the pins file could not be written.
pub async fn pin(app: &Arc<App>, request: &PinRequest) -> Result<Pin, ErrorReply> {
    let digests = match &request.target {
        PinTarget::Image(image) => {
            prefetch(app, image, request.platform.as_ref())
                .await?
                .digests
        }
        PinTarget::Digest(d) => {
            let mut all = BTreeSet::from([d.clone()]);
            let mut queue = vec![d.clone()];
            while let Some(next) = queue.pop() {
                let Some(entry) = app.store.lookup(&next, None) else {
                    continue;
                };
                let Some(media_type) = entry.media_type else {
                    continue;
                };
                let path = app.store.layout().blob_path(&next);
                let Ok(bytes) = tokio::fs::read(&path).await else {
                    continue;
                };
                if let Ok(children) =
                    Manifest::parse(Some(&media_type), &bytes).and_then(|m| m.children())
                {
                    for (c, _) in children {
                        if all.insert(c.clone()) {
                            queue.push(c);
                        }
                    }
                }
            }
            all
        }
    };
    let pin = Pin {
        target: request.target.to_string(),
        platform: request.platform.as_ref().map(ToString::to_string),
        digests,
        pinned_at: unix_secs(std::time::SystemTime::now()),
    };
    let store = app.store.clone();
    let p = pin.clone();
    tokio::task::spawn_blocking(move || store.pin(p))
        .await
        .map_err(|e| Error::internal("pin", std::io::Error::other(e)).reply())?
        .map_err(|e| Error::internal("write pins file", e).reply())?;
    tracing::info!(target = %pin.target, digests = pin.digests.len(), "pinned");
    Ok(pin)
}

/// Evicts now (or, with `dry_run`, says what would go).
pub async fn gc(app: &Arc<App>, target_bytes: Option<u64>, dry_run: bool) -> GcReport {
    let store = app.store.clone();
    let victims: Vec<Victim> =
        tokio::task::spawn_blocking(move || store.evict(target_bytes, dry_run))
            .await
            .unwrap_or_default();
    let bytes = victims.iter().map(|v| v.size_bytes).sum();
    if !dry_run {
        app.metrics.evicted(victims.len() as u64, bytes);
    }
    GcReport {
        dry_run,
        victims: victims.into_iter().map(|v| v.digest).collect(),
        bytes,
    }
}

impl App {
    /// Answers one request on the admin listener.
    pub async fn handle_admin<B>(self: Arc<Self>, req: Request<B>) -> Response<Body> {
        let query: Vec<(String, String)> =
            form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
                .into_owned()
                .collect();
        let param = |name: &str| {
            query
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        // A body or a misspelt parameter is refused, never ignored: `{"dry_run": true}` or
        // `?dryrun=1` must not run a real eviction.
        if let Err(reply) = check_request(&req, &query) {
            return reply_response(Err(reply));
        }
        let result: Result<Bytes, ErrorReply> = match (req.method(), req.uri().path()) {
            (&Method::GET, "/healthz") => Ok(Bytes::from_static(b"\"ok\"")),
            (&Method::GET, "/metrics") => return self.handle(req).await,
            (&Method::GET, "/admin/store") => json(self.store.identity()),
            (&Method::GET, "/admin/blobs") => json(&self.store.inventory()),
            (&Method::GET, "/admin/pins") => json(&self.store.pins()),
            (&Method::POST, "/admin/pins") => match param("target") {
                None => Err(bad_request("target is required")),
                Some(t) => match parse_pin_target(t, param("platform")) {
                    Ok(request) => pin(&self, &request).await.and_then(|p| json(&p)),
                    Err(e) => Err(bad_request(&e.to_string())),
                },
            },
            (&Method::DELETE, "/admin/pins") => match param("target") {
                None => Err(bad_request("target is required")),
                Some(t) => {
                    let (store, t) = (self.store.clone(), t.to_owned());
                    match tokio::task::spawn_blocking(move || store.unpin(&t)).await {
                        Ok(Ok(n)) => json(&serde_json::json!({ "removed": n })),
                        Ok(Err(e)) => Err(Error::internal("write pins file", e).reply()),
                        Err(e) => Err(Error::internal("unpin", std::io::Error::other(e)).reply()),
                    }
                }
            },
            (&Method::POST, "/admin/prefetch") => match param("image").map(ImageRef::parse) {
                None => Err(bad_request("image is required")),
                Some(Err(e)) => Err(bad_request(&e.to_string())),
                Some(Ok(image)) => match param("platform").map(|p| Platform::parse(p).ok_or(p)) {
                    Some(Err(p)) => Err(bad_request(&format!(
                        "platform {p:?} is not os/arch[/variant]"
                    ))),
                    Some(Ok(p)) => prefetch(&self, &image, Some(&p))
                        .await
                        .and_then(|r| json(&r)),
                    None => prefetch(&self, &image, None).await.and_then(|r| json(&r)),
                },
            },
            (&Method::POST, "/admin/gc") => {
                let dry_run = match param("dry_run") {
                    None | Some("0" | "false" | "no") => Ok(false),
                    Some("" | "1" | "true" | "yes") => Ok(true),
                    Some(other) => Err(bad_request(&format!(
                        "dry_run={other:?}: expected true or false"
                    ))),
                };
                match (
                    dry_run,
                    param("target_bytes")
                        .map(|b| parse_bytes("target_bytes", b))
                        .transpose(),
                ) {
                    (Err(reply), _) => Err(reply),
                    (_, Err(e)) => Err(bad_request(&e.to_string())),
                    (Ok(dry_run), Ok(target)) => json(&gc(&self, target, dry_run).await),
                }
            }
            (&Method::POST, "/admin/verify") => {
                let store = self.store.clone();
                match tokio::task::spawn_blocking(move || store.verify()).await {
                    Ok(report) => json(&report),
                    Err(e) => Err(Error::internal("verify", std::io::Error::other(e)).reply()),
                }
            }
            _ => Err(Error::NotFound.reply()),
        };
        reply_response(result)
    }
}

/// The query parameters each admin endpoint takes.
fn allowed_params(method: &Method, path: &str) -> &'static [&'static str] {
    match (method, path) {
        (&Method::POST, "/admin/pins") => &["target", "platform"],
        (&Method::DELETE, "/admin/pins") => &["target"],
        (&Method::POST, "/admin/prefetch") => &["image", "platform"],
        (&Method::POST, "/admin/gc") => &["dry_run", "target_bytes"],
        _ => &[],
    }
}

/// Refuses a request body (parameters go in the query) and parameters the endpoint does not
/// take, naming what it does take.
fn check_request<B>(req: &Request<B>, query: &[(String, String)]) -> Result<(), ErrorReply> {
    let headers = req.headers();
    let has_body = headers.contains_key(http::header::TRANSFER_ENCODING)
        || headers
            .get(http::header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0");
    let path = req.uri().path();
    if path == "/metrics" || path == "/healthz" {
        return Ok(());
    }
    let allowed = allowed_params(req.method(), path);
    let takes = if allowed.is_empty() {
        "no parameters".to_owned()
    } else {
        format!("the query parameters {}", allowed.join(", "))
    };
    if has_body {
        return Err(bad_request(&format!(
            "{} {path} takes {takes} and no request body (the body was not read; nothing was done)",
            req.method()
        )));
    }
    if let Some((k, _)) = query.iter().find(|(k, _)| !allowed.contains(&k.as_str())) {
        return Err(bad_request(&format!(
            "{} {path}: unknown parameter {k:?}; it takes {takes} (nothing was done)",
            req.method()
        )));
    }
    Ok(())
}

fn reply_response(result: Result<Bytes, ErrorReply>) -> Response<Body> {
    let (status, bytes) = match result {
        Ok(bytes) => (StatusCode::OK, bytes),
        Err(reply) => (reply.status, reply.body()),
    };
    let mut resp = Response::new(body::full(bytes));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

fn json<T: serde::Serialize>(value: &T) -> Result<Bytes, ErrorReply> {
    serde_json::to_vec_pretty(value)
        .map(Bytes::from)
        .map_err(|e| Error::internal("encode JSON", std::io::Error::other(e)).reply())
}

fn bad_request(message: &str) -> ErrorReply {
    ErrorReply {
        status: StatusCode::BAD_REQUEST,
        code: "UNSUPPORTED",
        message: message.to_owned(),
        retry_after: None,
        fault: crate::error::Fault::Downstream,
        complete_length: None,
    }
}
