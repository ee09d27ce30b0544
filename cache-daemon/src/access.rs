//! Caller checks: private images stay private. Off by default, the daemon serves whatever it
//! has cached to anyone who reaches its port; content it fetched with its own credentials may
//! come from a private repository. With `check_callers` on, before content of a repository whose
//! upstream the daemon holds credentials for is served (a store hit as much as a miss, which
//! would otherwise be filled with the daemon's credentials), the caller's own `Authorization`
//! header is passed as-is on a `HEAD` of the requested manifest or blob in that repository
//! upstream, once, outside the daemon's token flow:
//!
//! - 2xx (after following redirects, at most 5 hops, the caller's `Authorization` sent only to
//!   the upstream's own host): allowed; reused for (caller, upstream, repository) for
//!   `allow_ttl`. A redirect that cannot be followed (too many hops, no `Location`) or a `304`
//!   is no answer: treated as below, never as allowed.
//! - 401/403: denied for `deny_ttl`; the caller gets `401` with the upstream's own challenge
//!   (scoped to the repository), so it can fetch a token from the upstream's realm, or send
//!   Basic credentials, and try again.
//! - 404 for a digest: not in that repository for this caller; answered 404.
//! - no answer, 429, 5xx: served only on an "allowed" decision still within `allow_ttl + grace`,
//!   else 503. Never open silently.
//!
//! A content-addressed request (blob, manifest by digest) for a digest the store holds, or is
//! filling, but never recorded under that repository is checked with a `HEAD` of that exact
//! object in that repository, even when the caller is allowed in the repository: rights to
//! repository A must not read repository B's blob through `/v2/A/blobs/<digest>`. The same goes
//! for upstreams without daemon credentials (public, otherwise not checked): the store is shared
//! by every upstream. Only the upstream the content came from may answer that check: a
//! digest the store holds, or is filling, but never recorded under any repository of the
//! requested upstream (`host[:port]`) is answered 404 without asking and without serving from
//! the store, since another upstream (any host at all, with `allow_any_registry`) could claim
//! to hold any digest. The caller then pulls it from that upstream itself. Repository labels
//! are `host[:port]/repository` of the resolved upstream, never the raw `ns`, so they cannot
//! be aliased. A digest neither held nor being filled needs no such check: its fill
//! fetches it from that very repository, and the repository is recorded once it is committed;
//! nor does one being filled through that very repository. A request admitted for a miss that
//! then finds a fill of its digest in progress (one started meanwhile, through any repository)
//! is asked again by the handler before it follows, which makes it an exact check unless the
//! fill comes from the same repository.
//!
//! Callers are told apart by the sha256 of their `Authorization` value (no header: anonymous).
//! Identical checks in progress share one `HEAD`; at most 16 checks per upstream are in flight
//! (`upstream.rs`), and their answers (a 429 for one caller) never hold back the daemon's own
//! requests. Decisions are kept in two LRUs: allows, and refusals (denied, not found), so a
//! flood of distinct refused callers evicts only refusals, never the allows that the grace
//! period serves on. This module decides; `handler.rs` asks it
//! before dispatching and turns a [`Refusal`] into the answer.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures_util::future::{BoxFuture, FutureExt, Shared};
use http::header::{HeaderMap, HeaderValue, ACCEPT, WWW_AUTHENTICATE};
use http::{Method, StatusCode};

use stampede_oci::auth::Challenge;
use stampede_oci::manifest::MANIFEST_ACCEPT;
use stampede_oci::{Digest, Endpoint, Reference, RegistryRequest, RepoName};

use crate::config::AccessConfig;
use crate::error::{Error, ErrorReply};
use crate::flight::{FillState, Flight, Flights};
use crate::metrics::{AccessResult, AccessSource, Kind, Metrics};
use crate::store::BlobStore;
use crate::upstream::Upstreams;

/// Allow decisions kept at most; past this the least recently used one is dropped (they are
/// only a cache of upstream answers).
const MAX_ALLOWS: usize = 65_536;
/// Refusals (denied, not found) kept at most, apart from the allows, so that refused callers
/// only ever evict each other.
const MAX_REFUSALS: usize = 16_384;

/// What a request wants to read.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// A manifest by tag or digest.
    Manifest(&'a Reference),
    /// A blob.
    Blob(&'a Digest),
}

impl Target<'_> {
    fn digest(&self) -> Option<&Digest> {
        match *self {
            Self::Manifest(Reference::Digest(d)) | Self::Blob(d) => Some(d),
            Self::Manifest(Reference::Tag(_)) => None,
        }
    }

    fn object(&self) -> String {
        match self {
            Self::Manifest(r) => format!("manifests/{r}"),
            Self::Blob(d) => format!("blobs/{d}"),
        }
    }

    fn kind(&self) -> Kind {
        match self {
            Self::Manifest(_) => Kind::Manifest,
            Self::Blob(_) => Kind::Blob,
        }
    }

    fn not_found(&self) -> Error {
        match self {
            Self::Manifest(r) => Error::ManifestUnknown(r.to_string()),
            Self::Blob(d) => Error::BlobUnknown((*d).clone()),
        }
    }

    fn head(&self, repo: &RepoName) -> RegistryRequest {
        let mut headers = HeaderMap::new();
        if let Self::Manifest(_) = self {
            headers.insert(ACCEPT, HeaderValue::from_static(MANIFEST_ACCEPT));
        }
        RegistryRequest {
            method: Method::HEAD,
            path_and_query: format!("/v2/{repo}/{}", self.object()),
            scope: None,
            headers,
        }
    }
}

/// One request to read content, as the caller checks see it: who asks for what, where.
#[derive(Debug, Clone, Copy)]
pub struct Read<'a> {
    /// The caller's `Authorization` value, if it sent one.
    pub caller: Option<&'a HeaderValue>,
    /// The upstream the repository resolves to.
    pub endpoint: &'a Endpoint,
    /// The repository at that upstream.
    pub repo: &'a RepoName,
    /// `registry/repository`, as the store records it.
    pub label: &'a str,
    /// What is read.
    pub target: Target<'a>,
}

impl Read<'_> {
    /// The decision this read needs: about the repository, or (`exact`) about its object.
    fn key(&self, exact: bool) -> Key {
        Key {
            caller: Digest::of(self.caller.map_or(&[][..], HeaderValue::as_bytes)),
            upstream: self.endpoint.base_url(),
            repo: self.repo.to_string(),
            object: exact.then(|| self.target.object()),
        }
    }
}

/// The `HEAD` that asks the upstream about a caller: the caller's own `Authorization` on the
/// object read, in its repository. Owned, so the check runs in a task of its own.
struct Probe {
    endpoint: Endpoint,
    repo: RepoName,
    req: RegistryRequest,
    kind: Kind,
    caller: Option<HeaderValue>,
}

impl Probe {
    fn of(read: &Read<'_>) -> Self {
        Self {
            endpoint: read.endpoint.clone(),
            repo: read.repo.clone(),
            req: read.target.head(read.repo),
            kind: read.target.kind(),
            caller: read.caller.cloned(),
        }
    }
}

/// Whose question about what: a repository as a whole (`object: None`) or one object in it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    /// sha256 of the caller's `Authorization` value (of nothing, for anonymous callers).
    caller: Digest,
    upstream: String,
    repo: String,
    object: Option<String>,
}

/// What the upstream said about a caller.
#[derive(Debug, Clone)]
enum Verdict {
    Allowed,
    Denied { challenge: Option<HeaderValue> },
    NotFound,
    Unverifiable(String),
}

impl Verdict {
    fn result(&self) -> AccessResult {
        match self {
            Self::Allowed => AccessResult::Allowed,
            Self::Denied { .. } => AccessResult::Denied,
            Self::NotFound => AccessResult::NotFound,
            Self::Unverifiable(_) => AccessResult::Error,
        }
    }
}

#[derive(Debug, Clone)]
struct Decision {
    verdict: Verdict,
    decided_at: Instant,
}

/// Decisions by key: allows and refusals in separate LRUs (see the module doc).
struct Decisions {
    allows: lru::LruCache<Key, Decision>,
    refusals: lru::LruCache<Key, Decision>,
}

impl Decisions {
    fn new(max_allows: usize, max_refusals: usize) -> Self {
        let cap = |n: usize| NonZeroUsize::new(n.max(1)).expect("at least 1");
        Self {
            allows: lru::LruCache::new(cap(max_allows)),
            refusals: lru::LruCache::new(cap(max_refusals)),
        }
    }

    /// The decision for `key`, marking it recently used.
    fn get(&mut self, key: &Key) -> Option<&Decision> {
        if self.allows.contains(key) {
            return self.allows.get(key);
        }
        self.refusals.get(key)
    }

    /// The allow decision for `key`, if any, without marking it used.
    fn allow(&self, key: &Key) -> Option<&Decision> {
        self.allows.peek(key)
    }

    fn insert(&mut self, key: Key, decision: Decision) {
        if matches!(decision.verdict, Verdict::Allowed) {
            self.refusals.pop(&key);
            self.allows.put(key, decision);
        } else {
            self.allows.pop(&key);
            self.refusals.put(key, decision);
        }
    }
}

/// Why a request is not served: the error to send and, for a 401, the challenge to send with
/// it (`WWW-Authenticate`).
#[derive(Debug, Clone)]
pub struct Refusal {
    /// Status, code and message.
    pub reply: ErrorReply,
    /// The upstream's challenge, scoped to the repository.
    pub challenge: Option<HeaderValue>,
}

impl From<Error> for Refusal {
    fn from(e: Error) -> Self {
        Self {
            reply: e.reply(),
            challenge: None,
        }
    }
}

type Check = Shared<BoxFuture<'static, Verdict>>;

/// Caller checks and their decisions.
pub struct Access {
    config: AccessConfig,
    upstreams: Arc<Upstreams>,
    store: Arc<BlobStore>,
    flights: Arc<Flights>,
    metrics: Arc<Metrics>,
    /// std `Mutex`es: held only to read or update an entry, never across `.await`.
    decisions: Mutex<Decisions>,
    in_flight: Mutex<HashMap<Key, Check>>,
    /// Each upstream's `/v2/` challenge to anonymous callers, and when it was asked.
    base_challenges: Mutex<HashMap<String, (Option<HeaderValue>, Instant)>>,
    /// Fills this daemon leads, by digest: the repository (`registry/repository`) each fetches
    /// from. Removed when the fill ends.
    filling: Mutex<HashMap<Digest, String>>,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Access {
    /// Caller checks as `config` says, asking `upstreams`, knowing what `store` holds under
    /// which repository and what `flights` are filling.
    pub fn new(
        config: AccessConfig,
        upstreams: Arc<Upstreams>,
        store: Arc<BlobStore>,
        flights: Arc<Flights>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            config,
            upstreams,
            store,
            flights,
            metrics,
            decisions: Mutex::new(Decisions::new(MAX_ALLOWS, MAX_REFUSALS)),
            in_flight: Mutex::new(HashMap::new()),
            base_challenges: Mutex::new(HashMap::new()),
            filling: Mutex::new(HashMap::new()),
        }
    }

    /// Notes that this daemon leads a fill of the flight's blob from repository `label`
    /// (`registry/repository`): while it runs, followers asking through the same repository need
    /// no exact check. Once committed, the store holds the repository anyway (`fill.rs` records
    /// it with the commit, with checks on or off, so a store filled with checks off and then
    /// served with them on still knows where its blobs came from). Only a leader's fill counts:
    /// a follower may be reading a fill started through another repository.
    pub fn note_fill(self: &Arc<Self>, flight: &Arc<Flight>, label: &str) {
        if !self.config.check_callers {
            return;
        }
        let mut progress = flight.subscribe();
        let digest = flight.digest().clone();
        let label = label.to_owned();
        self.filling
            .lock()
            .expect("filling mutex poisoned")
            .insert(digest.clone(), label.clone());
        let this = self.clone();
        tokio::spawn(async move {
            progress
                .wait_for(|p| p.state != FillState::Running)
                .await
                .ok();
            let mut filling = this.filling.lock().expect("filling mutex poisoned");
            if filling.get(&digest) == Some(&label) {
                filling.remove(&digest);
            }
        });
    }

    /// Whether this daemon leads a fill of `digest` from a repository of `registry`.
    fn filling_from(&self, digest: &Digest, registry: &str) -> bool {
        self.filling
            .lock()
            .expect("filling mutex poisoned")
            .get(digest)
            .is_some_and(|l| l.split_once('/').is_some_and(|(reg, _)| reg == registry))
    }

    fn filling_through(&self, digest: &Digest, label: &str) -> bool {
        self.filling
            .lock()
            .expect("filling mutex poisoned")
            .get(digest)
            .is_some_and(|l| l == label)
    }

    /// Whether callers are checked at all.
    pub fn enabled(&self) -> bool {
        self.config.check_callers
    }

    /// `Ok` when `read.caller` may read `read.target` in `read.repo` at `read.endpoint`.
    ///
    /// # Errors
    /// The [`Refusal`] to answer with: 401 (with the upstream's challenge) or 403 when the
    /// upstream refuses the caller, 404 when the object is not in that repository for it, 503
    /// when the upstream cannot be asked and no recent decision allows the caller.
    pub async fn admit(self: &Arc<Self>, read: Read<'_>) -> Result<(), Refusal> {
        if !self.config.check_callers {
            return Ok(());
        }
        let exact = self.needs_exact_check(&read);
        if !read.endpoint.has_credentials() && !exact {
            return Ok(());
        }
        if exact {
            self.came_from_its_upstream(&read)?;
        }
        let key = read.key(exact);
        let verdict = match self.fresh(&key) {
            Some(v) => {
                self.metrics.access_check(v.result(), AccessSource::Cache);
                v
            }
            None => self.ask(&key, &read).await,
        };
        self.answer(&read, key, verdict)
    }

    /// Whether `read` must be checked on its exact object: a digest the store holds or is
    /// filling, but never recorded under this repository nor being filled through it. Neither
    /// in the store nor being filled: the fill will fetch it from this very repository, which
    /// proves it belongs there; else only the store's record of it under this repository does.
    fn needs_exact_check(&self, read: &Read<'_>) -> bool {
        read.target.digest().is_some_and(|d| {
            (self.store.contains(d) || self.flights.get(d).is_some())
                && !self.store.seen_under(d, read.label)
                && !self.filling_through(d, read.label)
        })
    }

    /// For an exact check: only the upstream the content came from may vouch for it in one of
    /// its repositories; any other could claim any digest.
    ///
    /// # Errors
    /// The 404 to answer with when the digest never came from `read`'s upstream.
    fn came_from_its_upstream(&self, read: &Read<'_>) -> Result<(), Refusal> {
        let Some(d) = read.target.digest() else {
            return Ok(());
        };
        let registry = read.endpoint.authority();
        if !self.store.seen_from(d, registry) && !self.filling_from(d, registry) {
            tracing::debug!(repo = read.label, digest = %d, "digest held but not from this upstream; answering 404");
            return Err(read.target.not_found().into());
        }
        Ok(())
    }

    /// What `read` gets for the upstream's `verdict` on `key`: served, refused (with the
    /// upstream's challenge), not found, or, when the upstream could not be asked, served only
    /// on an allow decision still within its grace period.
    fn answer(&self, read: &Read<'_>, key: Key, verdict: Verdict) -> Result<(), Refusal> {
        match verdict {
            Verdict::Allowed => Ok(()),
            Verdict::Denied { challenge } => {
                tracing::debug!(
                    repo = read.label,
                    object = key.object,
                    presented = read.caller.is_some(),
                    "caller refused by the upstream"
                );
                Err(Refusal {
                    reply: Error::CallerUnauthorized {
                        repo: read.label.to_owned(),
                        presented: read.caller.is_some(),
                        status: if challenge.is_some() {
                            StatusCode::UNAUTHORIZED
                        } else {
                            StatusCode::FORBIDDEN
                        },
                    }
                    .reply(),
                    challenge,
                })
            }
            Verdict::NotFound => Err(read.target.not_found().into()),
            Verdict::Unverifiable(reason) => {
                if self.allowed_within_grace(&key) {
                    self.metrics
                        .access_check(AccessResult::Allowed, AccessSource::Grace);
                    tracing::warn!(repo = read.label, upstream = key.upstream, reason, "cannot check the caller upstream; serving on its last allow decision (grace)");
                    return Ok(());
                }
                tracing::warn!(
                    repo = read.label,
                    upstream = key.upstream,
                    reason,
                    "cannot check the caller upstream and no recent decision allows it; refusing"
                );
                Err(Error::CallerUnverifiable {
                    repo: read.label.to_owned(),
                    upstream: key.upstream,
                    reason,
                }
                .into())
            }
        }
    }

    /// The challenge `/v2/` should answer an anonymous caller with when callers are checked
    /// and `endpoint` is private: the upstream's own, asked anonymously and kept for
    /// `allow_ttl`. `None` when not checking, when the upstream sends none, or cannot be asked
    /// (`/v2/` itself reveals nothing).
    pub async fn base_challenge(&self, endpoint: &Endpoint) -> Option<HeaderValue> {
        if !self.config.check_callers || !endpoint.has_credentials() {
            return None;
        }
        let upstream = endpoint.base_url();
        if let Some((challenge, at)) = self
            .base_challenges
            .lock()
            .expect("base challenge mutex poisoned")
            .get(&upstream)
        {
            if at.elapsed() < self.config.allow_ttl {
                return challenge.clone();
            }
        }
        let req = RegistryRequest {
            method: Method::GET,
            path_and_query: "/v2/".to_owned(),
            scope: None,
            headers: HeaderMap::new(),
        };
        let resp = self
            .upstreams
            .send_as_caller(endpoint, &req, Kind::Base, None)
            .await
            .ok()?;
        let challenge = match resp.status() {
            StatusCode::UNAUTHORIZED => resp.headers().get(WWW_AUTHENTICATE).cloned(),
            _ => None,
        };
        self.base_challenges
            .lock()
            .expect("base challenge mutex poisoned")
            .insert(upstream, (challenge.clone(), Instant::now()));
        challenge
    }

    /// A decision for `key` still within its TTL.
    fn fresh(&self, key: &Key) -> Option<Verdict> {
        let mut decisions = self.decisions.lock().expect("decisions mutex poisoned");
        let d = decisions.get(key)?;
        let ttl = match d.verdict {
            Verdict::Allowed => self.config.allow_ttl,
            _ => self.config.deny_ttl,
        };
        (d.decided_at.elapsed() < ttl).then(|| d.verdict.clone())
    }

    fn allowed_within_grace(&self, key: &Key) -> bool {
        self.decisions
            .lock()
            .expect("decisions mutex poisoned")
            .allow(key)
            .is_some_and(|d| {
                matches!(d.verdict, Verdict::Allowed)
                    && d.decided_at.elapsed() < self.config.allow_ttl + self.config.grace
            })
    }

    /// Asks the upstream, or joins the identical question already asked. The check runs in its
    /// own task, so a caller that goes away neither cancels it for the others nor leaves it
    /// registered forever.
    async fn ask(self: &Arc<Self>, key: &Key, read: &Read<'_>) -> Verdict {
        let (check, joined) = {
            let mut in_flight = self.in_flight.lock().expect("in-flight mutex poisoned");
            match in_flight.get(key) {
                Some(c) => (c.clone(), true),
                None => {
                    let check = self.start_check(key.clone(), Probe::of(read));
                    in_flight.insert(key.clone(), check.clone());
                    (check, false)
                }
            }
        };
        let verdict = check.await;
        if joined {
            self.metrics
                .access_check(verdict.result(), AccessSource::Coalesced);
        }
        verdict
    }

    /// Spawns the task that sends `probe` for `key`, records the verdict and unregisters the
    /// check; the returned future, shared by every caller asking the same, yields the verdict.
    fn start_check(self: &Arc<Self>, key: Key, probe: Probe) -> Check {
        let this = self.clone();
        let task = tokio::spawn(async move {
            let verdict = this.head(&probe).await;
            this.metrics
                .access_check(verdict.result(), AccessSource::Upstream);
            this.record(&key, &verdict);
            this.in_flight
                .lock()
                .expect("in-flight mutex poisoned")
                .remove(&key);
            verdict
        });
        async move {
            task.await
                .unwrap_or_else(|e| Verdict::Unverifiable(format!("caller check task failed: {e}")))
        }
        .boxed()
        .shared()
    }

    /// Sends `probe` upstream and reads the caller's verdict from the answer.
    async fn head(&self, probe: &Probe) -> Verdict {
        let resp = match self
            .upstreams
            .send_as_caller(
                &probe.endpoint,
                &probe.req,
                probe.kind,
                probe.caller.as_ref(),
            )
            .await
        {
            Ok(r) => r,
            Err(e) => return Verdict::Unverifiable(stampede_oci::error_chain(&e)),
        };
        let status = resp.status();
        // Only a final 2xx allows: redirects were followed, so a 3xx left here (a 304, or
        // one without a usable `Location`) says nothing about the caller.
        if status.is_success() {
            return Verdict::Allowed;
        }
        match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Verdict::Denied {
                challenge: scoped_challenge(resp.headers().get(WWW_AUTHENTICATE), &probe.repo),
            },
            StatusCode::NOT_FOUND => Verdict::NotFound,
            status => Verdict::Unverifiable(format!("the upstream answered {status}")),
        }
    }

    /// Remembers what the upstream said. An object allowed proves the repository allowed too;
    /// a 404 is about the object only, never the repository (a missing tag says nothing about
    /// the caller's rights).
    fn record(&self, key: &Key, verdict: &Verdict) {
        let now = Instant::now();
        let mut decisions = self.decisions.lock().expect("decisions mutex poisoned");
        let decision = |verdict: &Verdict| Decision {
            verdict: verdict.clone(),
            decided_at: now,
        };
        match verdict {
            Verdict::Unverifiable(_) => {}
            Verdict::NotFound if key.object.is_none() => {}
            Verdict::Allowed if key.object.is_some() => {
                decisions.insert(key.clone(), decision(verdict));
                let repo = Key {
                    object: None,
                    ..key.clone()
                };
                decisions.insert(repo, decision(verdict));
            }
            v => {
                decisions.insert(key.clone(), decision(v));
            }
        }
    }
}

/// The upstream's challenge as the caller should get it: Bearer re-scoped to pulling `repo`
/// (the scope the daemon will need the caller's token to carry), Basic as the upstream sent it.
fn scoped_challenge(header: Option<&HeaderValue>, repo: &RepoName) -> Option<HeaderValue> {
    let raw = header?.to_str().ok()?;
    match Challenge::parse(raw)? {
        Challenge::Bearer { realm, service, .. } => {
            let mut value = format!("Bearer realm=\"{}\"", quoted(&realm));
            if let Some(s) = service {
                value.push_str(&format!(",service=\"{}\"", quoted(&s)));
            }
            value.push_str(&format!(",scope=\"repository:{repo}:pull\""));
            HeaderValue::from_str(&value).ok()
        }
        Challenge::Basic => HeaderValue::from_str(raw).ok(),
    }
}

fn quoted(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(caller: &str, object: Option<&str>) -> Key {
        Key {
            caller: Digest::of(caller.as_bytes()),
            upstream: "https://registry.example".to_owned(),
            repo: "team/app".to_owned(),
            object: object.map(str::to_owned),
        }
    }

    fn decided(verdict: Verdict) -> Decision {
        Decision {
            verdict,
            decided_at: Instant::now(),
        }
    }

    /// A flood of distinct refused callers (more than the refusals kept) must not evict the
    /// allows the grace period serves on; allows evict the least recently used allow.
    #[test]
    fn refused_callers_never_evict_allows() {
        let mut d = Decisions::new(3, 4);
        for who in ["alice", "bob", "carol"] {
            d.insert(key(who, None), decided(Verdict::Allowed));
        }
        for i in 0..100 {
            let verdict = if i % 2 == 0 {
                Verdict::Denied { challenge: None }
            } else {
                Verdict::NotFound
            };
            d.insert(
                key(&format!("garbage-{i}"), Some("blobs/x")),
                decided(verdict),
            );
        }
        for who in ["alice", "bob", "carol"] {
            assert!(
                d.allow(&key(who, None)).is_some(),
                "{who}'s allow was evicted"
            );
        }
        assert_eq!(d.refusals.len(), 4);
        assert!(d.get(&key("garbage-99", Some("blobs/x"))).is_some());
        assert!(d.get(&key("garbage-0", Some("blobs/x"))).is_none());
        // alice used recently: dave's allow evicts bob, the least recently used.
        assert!(d.get(&key("alice", None)).is_some());
        d.insert(key("dave", None), decided(Verdict::Allowed));
        assert!(d.allow(&key("bob", None)).is_none());
        assert!(d.allow(&key("alice", None)).is_some());
        // A refusal replaces the same key's allow (and the other way round).
        d.insert(
            key("alice", None),
            decided(Verdict::Denied { challenge: None }),
        );
        assert!(d.allow(&key("alice", None)).is_none());
        assert!(matches!(
            d.get(&key("alice", None)).map(|x| &x.verdict),
            Some(Verdict::Denied { .. })
        ));
    }

    #[test]
    fn bearer_challenges_are_scoped_to_the_repository() {
        let repo = RepoName::parse("team/app").unwrap();
        let h = HeaderValue::from_static(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:other:pull",error="insufficient_scope""#,
        );
        let got = scoped_challenge(Some(&h), &repo).unwrap();
        assert_eq!(
            got.to_str().unwrap(),
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:team/app:pull""#
        );
        let basic = HeaderValue::from_static(r#"Basic realm="Registry Realm""#);
        assert_eq!(scoped_challenge(Some(&basic), &repo), Some(basic.clone()));
        assert_eq!(scoped_challenge(None, &repo), None);
        let odd = HeaderValue::from_static("Negotiate abc");
        assert_eq!(scoped_challenge(Some(&odd), &repo), None);
    }
}
