//! The origin registries: which one a request means (`?ns=` or the default), and the calls the
//! daemon makes to them (blob and manifest GET/HEAD) through the shared registry client with
//! its token flow and each registry's credentials. Never touches disk; turns upstream failures
//! into the daemon's [`Error`].
//!
//! Politeness towards each upstream: at most `concurrency` requests in flight per upstream
//! (a blob fill holds its slot until its body is read); further requests queue rather than
//! fail. After a `429` (or a `503` that carries `Retry-After`) the upstream is left alone until
//! its `Retry-After` has passed: requests in that window are answered "throttled" (or
//! "unavailable") without being sent, so callers can serve stale content. A `503` without
//! `Retry-After` fails only the request it answered.
//!
//! Caller checks (`access.rs`) are sent with the caller's own credential and answered about
//! that caller: they are counted like every request and held back inside a Retry-After window,
//! but their answers never start one (one caller's 429 must not stop fills for everyone), and
//! at most [`CALLER_CHECKS_PER_UPSTREAM`] run at once per upstream, apart from the fill slots.

use std::collections::{BTreeMap, HashMap};
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::header::{HeaderValue, CONTENT_RANGE, RANGE, RETRY_AFTER};
use http::{Method, Response, StatusCode};
use hyper::body::Incoming;

use stampede_oci::manifest_get;
use stampede_oci::{
    ClientConfig, ClientError, Digest, Endpoint, Reference, RegistryClient, RegistryRequest,
    RepoName,
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::UpstreamConfig;
use crate::error::Error;
use crate::metrics::{Kind, Metrics};

/// `Retry-After` assumed when a 429 carries none.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Caller checks in flight at once per upstream; more wait for a slot (each is bounded by the
/// response timeout), so distinct callers cannot open unbounded upstream connections.
pub const CALLER_CHECKS_PER_UPSTREAM: usize = 16;

/// The configured upstreams and the client that talks to them.
#[derive(Debug)]
pub struct Upstreams {
    client: RegistryClient,
    default: Option<Endpoint>,
    registries: BTreeMap<String, Endpoint>,
    allow_any_registry: bool,
    any_credentials: BTreeMap<String, stampede_oci::auth::Credentials>,
    concurrency: usize,
    metrics: Arc<Metrics>,
    /// std `Mutex`es: held only to look up or insert an entry, never across `.await`.
    slots: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// Per upstream: slots for caller checks (see [`CALLER_CHECKS_PER_UPSTREAM`]).
    check_slots: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// Per upstream: until when requests are held back, and the status that started the window.
    backoff: Mutex<HashMap<String, (Instant, StatusCode)>>,
    /// Longest pause between body bytes of an upstream response.
    pub body_idle_timeout: Duration,
}

/// An upstream response and the concurrency slot it holds; drop the slot when done reading.
#[derive(Debug)]
pub struct Answer {
    /// The response, body unread.
    pub response: Response<Incoming>,
    /// The upstream slot; the body should be read before it is dropped.
    pub slot: OwnedSemaphorePermit,
}

impl Upstreams {
    /// Builds the client (TLS roots, timeouts) for `config`.
    ///
    /// # Errors
    /// The extra CA file cannot be used.
    pub fn new(config: UpstreamConfig, metrics: Arc<Metrics>) -> Result<Self, ClientError> {
        let client = RegistryClient::new(ClientConfig {
            connect_timeout: config.connect_timeout,
            response_timeout: config.response_timeout,
            extra_ca_file: config.ca_file,
            user_agent: concat!("cache-daemon/", env!("CARGO_PKG_VERSION")).to_owned(),
            trusted_realm_hosts: config.trusted_token_hosts,
            ..ClientConfig::default()
        })?;
        Ok(Self {
            client,
            default: config.default,
            registries: config.registries,
            allow_any_registry: config.allow_any_registry,
            any_credentials: config.any_credentials,
            concurrency: config.concurrency.max(1),
            metrics,
            slots: Mutex::new(HashMap::new()),
            check_slots: Mutex::new(HashMap::new()),
            backoff: Mutex::new(HashMap::new()),
            body_idle_timeout: config.body_idle_timeout,
        })
    }

    /// The upstream a request means: the registry named by `ns` if configured, else `https://ns`
    /// when any registry is allowed, else the default (when `ns` is absent).
    ///
    /// # Errors
    /// [`Error::RegistryNotConfigured`] when neither applies.
    pub fn resolve(&self, ns: Option<&str>) -> Result<Endpoint, Error> {
        match ns {
            None => self.default.clone().ok_or_else(|| {
                Error::RegistryNotConfigured("(none: no default upstream)".to_owned())
            }),
            Some(ns) => {
                if let Some(e) = self.registries.get(ns) {
                    return Ok(e.clone());
                }
                if self.allow_any_registry {
                    let host = if ns == "docker.io" {
                        "registry-1.docker.io"
                    } else {
                        ns
                    };
                    if let Ok(e) = Endpoint::parse(&format!("https://{host}")) {
                        return Ok(e.with_credentials(self.any_credentials.get(ns).cloned()));
                    }
                }
                // A single-upstream cache (no map) takes any ns as meaning its upstream: that is
                // what a hosts.toml for one registry sends.
                match (&self.default, self.registries.is_empty()) {
                    (Some(d), true) => Ok(d.clone()),
                    _ => Err(Error::RegistryNotConfigured(ns.chars().take(253).collect())),
                }
            }
        }
    }

    /// `registry/repository` as the inventory records it and caller checks compare it: the
    /// `host[:port]` of the upstream `ns` resolves to (not `ns` itself, which several spellings
    /// could alias), so one label names one repository of one upstream. An `ns` that resolves to
    /// nothing keeps its own name (such requests are refused before content is served when
    /// callers are checked).
    pub fn repo_label(&self, ns: Option<&str>, repo: &RepoName) -> String {
        let registry = match self.resolve(ns) {
            Ok(e) => e.authority().to_owned(),
            Err(_) => ns.unwrap_or("default").to_owned(),
        };
        format!("{registry}/{repo}")
    }

    /// `GET` or `HEAD` of a blob.
    ///
    /// # Errors
    /// The upstream could not be reached or did not answer in time.
    pub async fn blob(
        &self,
        endpoint: &Endpoint,
        repo: &RepoName,
        digest: &Digest,
        method: Method,
    ) -> Result<Answer, Error> {
        let req =
            RegistryRequest::pull(method, repo.as_str(), format!("/v2/{repo}/blobs/{digest}"));
        self.send(endpoint, &req, Kind::Blob).await
    }

    /// `GET` of a blob from byte `offset_bytes` on (`Range: bytes=<offset>-`), to resume a fill
    /// whose body broke. The upstream may answer `206` with that range or ignore the header and
    /// answer `200` with the whole blob; the caller checks which.
    ///
    /// # Errors
    /// The upstream could not be reached or did not answer in time.
    pub async fn blob_from(
        &self,
        endpoint: &Endpoint,
        repo: &RepoName,
        digest: &Digest,
        offset_bytes: u64,
    ) -> Result<Answer, Error> {
        self.ranged_blob(endpoint, repo, digest, format!("bytes={offset_bytes}-"))
            .await
    }

    /// `GET` of blob bytes `bytes` (first to last, inclusive: `Range: bytes=<first>-<last>`):
    /// a cluster stripe. The upstream may answer `206` or ignore the range with `200`.
    ///
    /// # Errors
    /// The upstream could not be reached or did not answer in time.
    pub async fn blob_range(
        &self,
        endpoint: &Endpoint,
        repo: &RepoName,
        digest: &Digest,
        bytes: RangeInclusive<u64>,
    ) -> Result<Answer, Error> {
        let (first, last) = bytes.into_inner();
        self.ranged_blob(endpoint, repo, digest, format!("bytes={first}-{last}"))
            .await
    }

    /// `GET` of a blob with `Range: <range>` (digits and punctuation only, so a valid value).
    async fn ranged_blob(
        &self,
        endpoint: &Endpoint,
        repo: &RepoName,
        digest: &Digest,
        range: String,
    ) -> Result<Answer, Error> {
        let range = HeaderValue::from_str(&range).expect("a byte range is a valid header value");
        let req = RegistryRequest::pull(
            Method::GET,
            repo.as_str(),
            format!("/v2/{repo}/blobs/{digest}"),
        )
        .header(RANGE, range);
        self.send(endpoint, &req, Kind::Blob).await
    }

    /// The `ns` a request names to mean `endpoint` here (`None` inside: the default upstream),
    /// so a cluster peer with the same configuration resolves it to the same registry.
    /// `None` when no `ns` leads to it.
    pub fn ns_of(&self, endpoint: &Endpoint) -> Option<Option<String>> {
        let url = endpoint.base_url();
        if self.default.as_ref().is_some_and(|d| d.base_url() == url) {
            return Some(None);
        }
        if let Some((ns, _)) = self.registries.iter().find(|(_, e)| e.base_url() == url) {
            return Some(Some(ns.clone()));
        }
        self.allow_any_registry
            .then(|| Some(endpoint.authority().to_owned()))
    }

    /// `GET` or `HEAD` of a manifest, accepting every manifest and index type.
    ///
    /// # Errors
    /// The upstream could not be reached or did not answer in time.
    pub async fn manifest(
        &self,
        endpoint: &Endpoint,
        repo: &RepoName,
        reference: &Reference,
        method: Method,
    ) -> Result<Answer, Error> {
        let req = manifest_get::request(method, repo, reference);
        self.send(endpoint, &req, Kind::Manifest).await
    }

    /// Sends `req` within the upstream's concurrency limit and Retry-After window, and counts
    /// it in `upstream_requests_total` (by status, or none when no answer came); a request held
    /// back by a Retry-After window was never sent and is not counted.
    async fn send(
        &self,
        endpoint: &Endpoint,
        req: &RegistryRequest,
        kind: Kind,
    ) -> Result<Answer, Error> {
        let key = endpoint.base_url();
        self.held_back(&key)?;
        let semaphore = self
            .slots
            .lock()
            .expect("upstream slots mutex poisoned")
            .entry(key.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(self.concurrency)))
            .clone();
        let slot = match semaphore.clone().try_acquire_owned() {
            Ok(s) => s,
            Err(_) => {
                self.metrics.upstream_waiting(1);
                let s = semaphore.acquire_owned().await;
                self.metrics.upstream_waiting(-1);
                s.expect("upstream semaphores are never closed")
            }
        };
        // A 429 may have arrived while we queued.
        self.held_back(&key)?;
        let response = match self.client.send(endpoint, req).await {
            Ok(r) => r,
            Err(e) => {
                self.metrics.upstream_request(kind, None);
                return Err(client_error(endpoint, e));
            }
        };
        self.note_answer(&key, kind, &response);
        Ok(Answer { response, slot })
    }

    /// Sends `req` with the caller's own `Authorization` (or none) instead of ours: no token
    /// flow; redirects followed as for our own requests (the caller's `Authorization` goes only
    /// to the upstream's own host). Outside the fill slots (a check must not queue behind fills
    /// that hold their slots while bodies stream) but within the caller-check slots and the
    /// Retry-After window, and counted in `upstream_requests_total` like every other request;
    /// its answer never starts a Retry-After window (it is about one caller).
    ///
    /// # Errors
    /// The upstream is throttling us, could not be reached or did not answer in time.
    pub async fn send_as_caller(
        &self,
        endpoint: &Endpoint,
        req: &RegistryRequest,
        kind: Kind,
        authorization: Option<&HeaderValue>,
    ) -> Result<Response<Incoming>, Error> {
        let key = endpoint.base_url();
        self.held_back(&key)?;
        let semaphore = self
            .check_slots
            .lock()
            .expect("caller check slots mutex poisoned")
            .entry(key.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(CALLER_CHECKS_PER_UPSTREAM)))
            .clone();
        let _slot = semaphore
            .acquire_owned()
            .await
            .expect("caller check semaphores are never closed");
        match self.client.send_once(endpoint, req, authorization).await {
            Ok(response) => {
                self.metrics.upstream_request(kind, Some(response.status()));
                Ok(response)
            }
            Err(e) => {
                self.metrics.upstream_request(kind, None);
                Err(client_error(endpoint, e))
            }
        }
    }

    /// Counts an answer, and after a 429 holds requests to `key` back until its Retry-After.
    fn note_answer(&self, key: &str, kind: Kind, response: &Response<Incoming>) {
        self.metrics.upstream_request(kind, Some(response.status()));
        let window = match response.status() {
            StatusCode::TOO_MANY_REQUESTS => {
                Some(retry_after(response).unwrap_or(DEFAULT_RETRY_AFTER))
            }
            // A 503 without Retry-After says nothing about when to come back: it fails only
            // this request.
            StatusCode::SERVICE_UNAVAILABLE => retry_after(response),
            _ => None,
        };
        if let Some(wait) = window {
            self.metrics.upstream_throttled();
            self.backoff
                .lock()
                .expect("upstream backoff mutex poisoned")
                .insert(key.to_owned(), (Instant::now() + wait, response.status()));
            tracing::warn!(upstream = %key, status = response.status().as_u16(), retry_after_ms = wait.as_millis() as u64, "upstream is throttling or unavailable; holding requests back until Retry-After passes");
        }
    }

    /// `Err(throttled)` (or `Err(unavailable)` after a 503) while `key` is inside a Retry-After
    /// window.
    fn held_back(&self, key: &str) -> Result<(), Error> {
        let mut backoff = self
            .backoff
            .lock()
            .expect("upstream backoff mutex poisoned");
        match backoff.get(key) {
            Some((until, status)) if *until > Instant::now() => {
                let retry_after = Some(*until - Instant::now());
                let status = *status;
                drop(backoff);
                self.metrics.upstream_throttled();
                let upstream = key.to_owned();
                Err(if status == StatusCode::SERVICE_UNAVAILABLE {
                    Error::UpstreamUnavailable {
                        upstream,
                        retry_after,
                    }
                } else {
                    Error::UpstreamThrottled {
                        upstream,
                        retry_after,
                    }
                })
            }
            Some(_) => {
                backoff.remove(key);
                Ok(())
            }
            None => Ok(()),
        }
    }
}

fn client_error(endpoint: &Endpoint, e: ClientError) -> Error {
    let upstream = endpoint.base_url();
    match e {
        ClientError::Timeout { .. } => Error::UpstreamTimeout { upstream },
        ClientError::TokenStatus { status, .. }
            if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN =>
        {
            Error::UpstreamDenied { upstream, status }
        }
        other => Error::UpstreamUnreachable {
            upstream,
            source: Box::new(other),
        },
    }
}

/// The error for a non-success upstream answer. `not_found` is what a 404 means here
/// (blob or manifest unknown).
pub fn status_error(
    endpoint: &Endpoint,
    status: StatusCode,
    retry_after: Option<Duration>,
    not_found: Error,
) -> Error {
    let upstream = endpoint.base_url();
    match status {
        StatusCode::NOT_FOUND => not_found,
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
            Error::UpstreamDenied { upstream, status }
        }
        StatusCode::TOO_MANY_REQUESTS => Error::UpstreamThrottled {
            upstream,
            retry_after,
        },
        StatusCode::SERVICE_UNAVAILABLE if retry_after.is_some() => Error::UpstreamUnavailable {
            upstream,
            retry_after,
        },
        status => Error::UpstreamStatus { upstream, status },
    }
}

/// A `Content-Range: bytes <first>-<last>/<complete>` of a `206`; `complete` is `None` for `*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentRange {
    /// Offset of the first byte sent.
    pub first_bytes: u64,
    /// Offset of the last byte sent (inclusive).
    pub last_bytes: u64,
    /// Length of the whole blob, when the upstream says.
    pub complete_bytes: Option<u64>,
}

/// The `Content-Range` of a response, if it has a well-formed byte range.
pub fn content_range<B>(resp: &Response<B>) -> Option<ContentRange> {
    let v = resp.headers().get(CONTENT_RANGE)?.to_str().ok()?.trim();
    let (span, complete) = v.strip_prefix("bytes ")?.split_once('/')?;
    let (first, last) = span.split_once('-')?;
    let first_bytes = first.parse::<u64>().ok()?;
    let last_bytes = last.parse::<u64>().ok()?;
    let complete_bytes = match complete {
        "*" => None,
        n => Some(n.parse::<u64>().ok()?),
    };
    let fits = first_bytes <= last_bytes && complete_bytes.is_none_or(|c| last_bytes < c);
    fits.then_some(ContentRange {
        first_bytes,
        last_bytes,
        complete_bytes,
    })
}

/// `Retry-After` in delta-seconds or HTTP-date form.
pub fn retry_after<B>(resp: &Response<B>) -> Option<Duration> {
    let v = resp.headers().get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstreams(map: &[(&str, &str)], default: Option<&str>, any: bool) -> Upstreams {
        let mut cfg = UpstreamConfig::with_default(Endpoint::parse("http://127.0.0.1:1").unwrap());
        cfg.default = default.map(|d| Endpoint::parse(d).unwrap());
        cfg.registries = map
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Endpoint::parse(v).unwrap()))
            .collect();
        cfg.allow_any_registry = any;
        Upstreams::new(cfg, Arc::new(Metrics::new())).unwrap()
    }

    #[test]
    fn ns_resolution_table() {
        let mapped = upstreams(
            &[("127.0.0.1:5000", "http://127.0.0.1:5000")],
            Some("http://default:1"),
            false,
        );
        assert_eq!(
            mapped.resolve(Some("127.0.0.1:5000")).unwrap().base_url(),
            "http://127.0.0.1:5000"
        );
        assert_eq!(mapped.resolve(None).unwrap().base_url(), "http://default:1");
        assert_eq!(
            mapped.resolve(Some("ghcr.io")).unwrap_err().code(),
            "DENIED"
        );

        let single = upstreams(&[], Some("http://only:1"), false);
        assert_eq!(
            single.resolve(Some("anything.example")).unwrap().base_url(),
            "http://only:1"
        );

        let open = upstreams(&[], None, true);
        assert_eq!(
            open.resolve(Some("ghcr.io")).unwrap().base_url(),
            "https://ghcr.io"
        );
        assert_eq!(
            open.resolve(Some("docker.io")).unwrap().base_url(),
            "https://registry-1.docker.io"
        );
        assert_eq!(open.resolve(None).unwrap_err().code(), "DENIED");
    }

    /// Labels name the resolved upstream, so two spellings of one upstream share a label and
    /// an `ns` cannot pose as another registry's name.
    #[test]
    fn repo_labels_name_the_resolved_upstream() {
        let repo = RepoName::parse("team/app").unwrap();
        let single = upstreams(&[], Some("http://only:1"), false);
        assert_eq!(single.repo_label(None, &repo), "only:1/team/app");
        assert_eq!(
            single.repo_label(Some("anything.example"), &repo),
            "only:1/team/app"
        );
        let open = upstreams(&[], None, true);
        assert_eq!(
            open.repo_label(Some("docker.io"), &repo),
            "registry-1.docker.io/team/app"
        );
        assert_eq!(
            open.repo_label(Some("registry-1.docker.io"), &repo),
            "registry-1.docker.io/team/app"
        );
        let mapped = upstreams(
            &[("mirror.example", "http://127.0.0.1:5000")],
            Some("http://default:1"),
            false,
        );
        assert_eq!(
            mapped.repo_label(Some("mirror.example"), &repo),
            "127.0.0.1:5000/team/app"
        );
        // Unresolvable: its own name (refused before anything is served under it).
        assert_eq!(
            mapped.repo_label(Some("ghcr.io"), &repo),
            "ghcr.io/team/app"
        );
    }

    #[test]
    fn retry_after_forms() {
        let r = |v: &str| Response::builder().header(RETRY_AFTER, v).body(()).unwrap();
        assert_eq!(retry_after(&r("7")), Some(Duration::from_secs(7)));
        assert_eq!(
            retry_after(&r("Wed, 21 Oct 2015 07:28:00 GMT")),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after(&r("soon")), None);
    }

    #[test]
    fn content_range_forms() {
        let r = |v: &str| {
            Response::builder()
                .header(CONTENT_RANGE, v)
                .body(())
                .unwrap()
        };
        let cr = |first_bytes, last_bytes, complete_bytes| {
            Some(ContentRange {
                first_bytes,
                last_bytes,
                complete_bytes,
            })
        };
        assert_eq!(content_range(&r("bytes 5-9/10")), cr(5, 9, Some(10)));
        assert_eq!(content_range(&r("bytes 0-0/*")), cr(0, 0, None));
        for bad in [
            "bytes 5-9/9",
            "bytes 9-5/10",
            "bytes */10",
            "items 0-1/2",
            "bytes 5-/10",
            "bytes -1-2/3",
            "bytes 0-1/x",
        ] {
            assert_eq!(content_range(&r(bad)), None, "{bad}");
        }
        assert_eq!(content_range(&Response::builder().body(()).unwrap()), None);
    }
}
