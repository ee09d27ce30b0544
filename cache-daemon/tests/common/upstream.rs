//! An in-test upstream registry for fault injection a real registry cannot do: it counts every
//! request and can delay, pause (gate), cut, stall or corrupt a blob body, answer with any status
//! (or a status per attempt), omit or misstate `Content-Length`, honour or ignore `Range`, and
//! require a bearer token. End-to-end tests use the real registry instead.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use stampede_oci::Digest;
use tokio::sync::{mpsc, watch};

type Body = BoxBody<Bytes, std::io::Error>;

/// A pause point in a body: the upstream stops after `after_bytes` until the gate opens.
#[derive(Debug, Clone)]
pub struct Gate {
    pub after_bytes: usize,
    open: watch::Sender<bool>,
}

impl Gate {
    pub fn new(after_bytes: usize) -> Self {
        Self {
            after_bytes,
            open: watch::Sender::new(false),
        }
    }
    pub fn open(&self) {
        self.open.send_replace(true);
    }
}

/// How the upstream answers for one blob. A blob `GET` is an attempt; attempts are counted per
/// blob from 0. `Range: bytes=N-` and `bytes=N-M` are honoured (`206`) unless `ignore_range`.
#[derive(Debug, Clone)]
pub struct Behavior {
    pub status: Option<StatusCode>,
    /// Sent with `status` and with the non-200 entries of `statuses`.
    pub retry_after_secs: Option<u64>,
    pub header_delay: Duration,
    pub chunk_bytes: usize,
    pub chunk_delay: Duration,
    pub corrupt: bool,
    /// Break the connection once the blob offset reaches this (absolute, so a ranged request
    /// from at or past it breaks before sending anything).
    pub cut_after: Option<usize>,
    pub gate: Option<Gate>,
    pub omit_length: bool,
    /// Stop sending (connection open) once the blob offset reaches this.
    pub stall_after: Option<usize>,
    /// `cut_after` and `stall_after` apply to the first this many attempts only (None: all).
    pub fault_attempts: Option<usize>,
    /// Answer `200` with the whole blob even to a `Range` request.
    pub ignore_range: bool,
    /// Added to the `Content-Length` of a `200` (the body stays the blob).
    pub length_delta: i64,
    /// Attempts after the first send the blob with its first byte flipped.
    pub differ_after_first: bool,
    /// Status of attempt i (past the end, or 200: answer normally).
    pub statuses: Vec<u16>,
    /// Answer a `Range: bytes=N-` from N-1 instead (a `206` that does not continue).
    pub range_early: bool,
}

impl Default for Behavior {
    fn default() -> Self {
        Self {
            status: None,
            retry_after_secs: None,
            header_delay: Duration::ZERO,
            chunk_bytes: 16 * 1024,
            chunk_delay: Duration::ZERO,
            corrupt: false,
            cut_after: None,
            gate: None,
            omit_length: false,
            stall_after: None,
            fault_attempts: None,
            ignore_range: false,
            length_delta: 0,
            differ_after_first: false,
            statuses: Vec::new(),
            range_early: false,
        }
    }
}

/// One request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    pub path: String,
    pub range: Option<String>,
}

#[derive(Default)]
struct State {
    blobs: HashMap<String, (Bytes, Behavior)>,
    attempts: HashMap<String, usize>,
    manifests: HashMap<(String, String), (String, Bytes)>,
    manifest_status: Option<StatusCode>,
    log: Vec<Seen>,
    /// The status of every answer under `/v2/`, with its request, in the order they were made.
    answers: Vec<(Seen, StatusCode)>,
    token_requests: Vec<Option<String>>,
    require_token: bool,
    realm: Option<String>,
    /// `Authorization` value -> repositories it may pull (besides "Bearer good-token", which
    /// may pull everything), when a token is required.
    grants: HashMap<String, Vec<String>>,
    /// Blobs found only under these repositories (others: in every repository).
    blob_repos: HashMap<String, Vec<String>>,
    /// Every request waits this long before it is answered.
    stall: Duration,
    /// Answer every `HEAD` under `/v2/` with a `307` to this base URL plus the same path.
    redirect_heads: Option<String>,
    /// Requests (method, path containing) held at arrival until their gate opens.
    holds: Vec<(Method, String, Gate)>,
}

pub struct FakeUpstream {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeUpstream {
    pub async fn start() -> Self {
        // SO_REUSEPORT, so `close_keeping_port` can hold the port after the listener closes.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_reuseaddr(true).unwrap();
        socket.set_reuseport(true).unwrap();
        socket.bind(([127, 0, 0, 1], 0).into()).unwrap();
        let listener = socket.listen(1024).unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let st = st.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let st = st.clone();
                        async move { Ok::<_, Infallible>(serve(st, addr, req).await) }
                    });
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await
                        .ok();
                });
            }
        });
        Self { addr, state, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops listening, so connections to this upstream are refused, while the returned socket
    /// keeps its port bound: no other test's listener can take the port and answer in its
    /// place (a bound socket that does not listen refuses every connection).
    pub async fn close_keeping_port(mut self) -> tokio::net::TcpSocket {
        let holder = tokio::net::TcpSocket::new_v4().unwrap();
        holder.set_reuseport(true).unwrap();
        holder.bind(self.addr).unwrap();
        self.task.abort();
        // The listener lives in the accept task: closed once the aborted task is gone.
        (&mut self.task).await.ok();
        holder
    }

    /// Adds a blob; returns its digest.
    pub fn blob(&self, data: impl Into<Bytes>, behavior: Behavior) -> Digest {
        let data = data.into();
        let d = Digest::of(&data);
        self.state
            .lock()
            .unwrap()
            .blobs
            .insert(d.to_string(), (data, behavior));
        d
    }

    /// Changes how an existing blob is answered.
    pub fn set_behavior(&self, digest: &Digest, behavior: Behavior) {
        self.state
            .lock()
            .unwrap()
            .blobs
            .get_mut(&digest.to_string())
            .unwrap()
            .1 = behavior;
    }

    /// Size in bytes of a manifest added with [`FakeUpstream::manifest`].
    pub fn manifest_len(&self, repo: &str, digest: &Digest) -> usize {
        self.state.lock().unwrap().manifests[&(repo.to_owned(), digest.to_string())]
            .1
            .len()
    }

    /// Adds a manifest under `repo` by tag (if given) and by digest; returns its digest.
    pub fn manifest(
        &self,
        repo: &str,
        tag: Option<&str>,
        media_type: &str,
        bytes: impl Into<Bytes>,
    ) -> Digest {
        let bytes = bytes.into();
        let d = Digest::of(&bytes);
        let mut s = self.state.lock().unwrap();
        s.manifests.insert(
            (repo.to_owned(), d.to_string()),
            (media_type.to_owned(), bytes.clone()),
        );
        if let Some(t) = tag {
            s.manifests.insert(
                (repo.to_owned(), t.to_owned()),
                (media_type.to_owned(), bytes),
            );
        }
        d
    }

    /// Every manifest request answers `status` instead (None: normal).
    pub fn fail_manifests(&self, status: Option<StatusCode>) {
        self.state.lock().unwrap().manifest_status = status;
    }

    pub fn require_token(&self) {
        self.state.lock().unwrap().require_token = true;
    }

    /// Advertise this token realm instead of our own `/token`.
    pub fn set_realm(&self, realm: &str) {
        self.state.lock().unwrap().realm = Some(realm.to_owned());
    }

    /// Lets requests carrying `authorization` pull from `repo` (with [`Self::require_token`]).
    pub fn grant(&self, authorization: &str, repo: &str) {
        self.state
            .lock()
            .unwrap()
            .grants
            .entry(authorization.to_owned())
            .or_default()
            .push(repo.to_owned());
    }

    /// Takes back every grant of `authorization`.
    pub fn revoke(&self, authorization: &str) {
        self.state.lock().unwrap().grants.remove(authorization);
    }

    /// Answers every `HEAD` under `/v2/` with `307` to `base` + the same path, before any
    /// authorization check (as registry.k8s.io does), or no longer (`None`).
    pub fn redirect_heads_to(&self, base: Option<&str>) {
        self.state.lock().unwrap().redirect_heads = base.map(str::to_owned);
    }

    /// Adds a blob found only under `repo`; returns its digest.
    pub fn blob_in(&self, repo: &str, data: impl Into<Bytes>) -> Digest {
        let d = self.blob(data, Behavior::default());
        self.state
            .lock()
            .unwrap()
            .blob_repos
            .entry(d.to_string())
            .or_default()
            .push(repo.to_owned());
        d
    }

    /// Every request waits `stall` before it is answered (a hung upstream).
    /// Requests `method` whose path contains `needle` that arrive before the returned gate opens
    /// wait for it before they are answered (their authorization is judged on arrival); those
    /// arriving after it opened are answered at once. Orders events by state, not by delays.
    pub fn hold(&self, method: Method, needle: &str) -> Gate {
        let gate = Gate::new(0);
        self.state
            .lock()
            .unwrap()
            .holds
            .push((method, needle.to_owned(), gate.clone()));
        gate
    }

    pub fn stall(&self, stall: Duration) {
        self.state.lock().unwrap().stall = stall;
    }

    /// Requests whose method is `method` and whose path contains `needle`.
    pub fn count(&self, method: Method, needle: &str) -> usize {
        self.state
            .lock()
            .unwrap()
            .log
            .iter()
            .filter(|s| s.method == method && s.path.contains(needle))
            .count()
    }

    /// The `Range` header of every `GET` whose path contains `needle`, in order.
    pub fn ranges(&self, needle: &str) -> Vec<Option<String>> {
        self.state
            .lock()
            .unwrap()
            .log
            .iter()
            .filter(|s| s.method == Method::GET && s.path.contains(needle))
            .map(|s| s.range.clone())
            .collect()
    }

    /// Every request this upstream received, of any method and on any path (token requests
    /// included).
    pub fn requests(&self) -> usize {
        let s = self.state.lock().unwrap();
        s.log.len() + s.token_requests.len()
    }

    /// The `Range` header and answer status of every `GET` whose path contains `needle`, in the
    /// order the answers were made (a stalled request is listed once it is answered).
    pub fn answered(&self, needle: &str) -> Vec<(Option<String>, StatusCode)> {
        self.state
            .lock()
            .unwrap()
            .answers
            .iter()
            .filter(|(s, _)| s.method == Method::GET && s.path.contains(needle))
            .map(|(s, status)| (s.range.clone(), *status))
            .collect()
    }

    /// `Authorization` headers seen on token requests.
    pub fn token_requests(&self) -> Vec<Option<String>> {
        self.state.lock().unwrap().token_requests.clone()
    }
}

fn full(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).map_err(|n| match n {}).boxed());
    *r.status_mut() = status;
    r
}

/// Answers `req` and records the answer's status under `/v2/`.
async fn serve(st: Arc<Mutex<State>>, addr: SocketAddr, req: Request<Incoming>) -> Response<Body> {
    let seen = Seen {
        method: req.method().clone(),
        path: req.uri().path().to_owned(),
        range: req
            .headers()
            .get("range")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    };
    let resp = answer(st.clone(), addr, req).await;
    if seen.path.starts_with("/v2/") {
        st.lock().unwrap().answers.push((seen, resp.status()));
    }
    resp
}

async fn answer(st: Arc<Mutex<State>>, addr: SocketAddr, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let range = req
        .headers()
        .get("range")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if path == "/token" {
        st.lock().unwrap().token_requests.push(auth);
        return full(StatusCode::OK, r#"{"token":"good-token","expires_in":300}"#);
    }
    let (require_token, realm, granted, stall, held) = {
        let mut s = st.lock().unwrap();
        let held = s
            .holds
            .iter()
            .find(|(m, needle, gate)| {
                *m == method && path.contains(needle.as_str()) && !*gate.open.borrow()
            })
            .map(|(_, _, gate)| gate.open.subscribe());
        s.log.push(Seen {
            method: method.clone(),
            path: path.clone(),
            range: range.clone(),
        });
        if let (Some(base), true) = (&s.redirect_heads, method == Method::HEAD) {
            let mut r = full(StatusCode::TEMPORARY_REDIRECT, "");
            r.headers_mut()
                .insert("location", format!("{base}{path}").parse().unwrap());
            return r;
        }
        let granted = auth
            .as_deref()
            .and_then(|a| s.grants.get(a))
            .is_some_and(|repos| repos.iter().any(|r| path.starts_with(&format!("/v2/{r}/"))));
        (
            s.require_token,
            s.realm
                .clone()
                .unwrap_or_else(|| format!("http://{addr}/token")),
            granted,
            s.stall,
            held,
        )
    };
    if let Some(mut open) = held {
        open.wait_for(|o| *o).await.ok();
    }
    tokio::time::sleep(stall).await;
    if let Some(refused) = challenge(require_token, granted, auth.as_deref(), &path, &realm) {
        return refused;
    }
    if path == "/v2/" {
        return full(StatusCode::OK, "{}");
    }
    let rest = path.trim_start_matches("/v2/");
    if let Some((repo, reference)) = rest.rsplit_once("/manifests/") {
        return manifest(&st, &method, repo, reference);
    }
    blob(&st, &method, rest, range.as_deref()).await
}

/// The token challenge a caller without the token (or a grant for this path) gets, when
/// tokens are required.
fn challenge(
    require_token: bool,
    granted: bool,
    auth: Option<&str>,
    path: &str,
    realm: &str,
) -> Option<Response<Body>> {
    if !require_token || auth == Some("Bearer good-token") || granted {
        return None;
    }
    let repo = path
        .trim_start_matches("/v2/")
        .split("/blobs/")
        .next()
        .unwrap_or("")
        .split("/manifests/")
        .next()
        .unwrap_or("");
    let mut r = full(StatusCode::UNAUTHORIZED, "{}");
    r.headers_mut().insert(
        "www-authenticate",
        format!(r#"Bearer realm="{realm}",service="fake",scope="repository:{repo}:pull""#)
            .parse()
            .unwrap(),
    );
    Some(r)
}

/// A manifest by tag or digest, with its type and digest headers (schema 1's payload digest).
fn manifest(st: &Mutex<State>, method: &Method, repo: &str, reference: &str) -> Response<Body> {
    let (status, found) = {
        let s = st.lock().unwrap();
        (
            s.manifest_status,
            s.manifests
                .get(&(repo.to_owned(), reference.to_owned()))
                .cloned(),
        )
    };
    if let Some(status) = status {
        return full(status, "{}");
    }
    match found {
        None => full(
            StatusCode::NOT_FOUND,
            r#"{"errors":[{"code":"MANIFEST_UNKNOWN"}]}"#,
        ),
        Some((media_type, bytes)) => {
            let len = bytes.len();
            let digest = schema1_payload_digest(&media_type, &bytes)
                .unwrap_or_else(|| Digest::of(&bytes))
                .to_string();
            let mut r = full(
                StatusCode::OK,
                if method == Method::HEAD {
                    Bytes::new()
                } else {
                    bytes
                },
            );
            r.headers_mut()
                .insert("content-type", media_type.parse().unwrap());
            r.headers_mut()
                .insert("docker-content-digest", digest.parse().unwrap());
            r.headers_mut().insert("content-length", len.into());
            r
        }
    }
}

/// A blob, whole or from a `Range`, with the behaviour its test set (statuses, delays,
/// corruption, cuts and stalls).
async fn blob(
    st: &Mutex<State>,
    method: &Method,
    rest: &str,
    range: Option<&str>,
) -> Response<Body> {
    let Some((_, digest)) = rest.rsplit_once("/blobs/") else {
        return full(StatusCode::NOT_FOUND, "{}");
    };
    let elsewhere = st
        .lock()
        .unwrap()
        .blob_repos
        .get(digest)
        .is_some_and(|repos| {
            !repos
                .iter()
                .any(|r| rest.starts_with(&format!("{r}/blobs/")))
        });
    let (data, b, attempt) = {
        let mut s = st.lock().unwrap();
        let Some((data, b)) = s.blobs.get(digest).cloned().filter(|_| !elsewhere) else {
            return full(
                StatusCode::NOT_FOUND,
                r#"{"errors":[{"code":"BLOB_UNKNOWN"}]}"#,
            );
        };
        let attempt = if method == Method::GET {
            let n = s.attempts.entry(digest.to_owned()).or_default();
            *n += 1;
            *n - 1
        } else {
            0
        };
        (data, b, attempt)
    };
    tokio::time::sleep(b.header_delay).await;
    let status = match b.statuses.get(attempt) {
        Some(&code) if method == Method::GET && code != 200 => {
            Some(StatusCode::from_u16(code).unwrap())
        }
        _ => b.status,
    };
    if let Some(status) = status {
        let mut r = full(status, "{}");
        if let Some(s) = b.retry_after_secs {
            r.headers_mut().insert("retry-after", s.into());
        }
        return r;
    }
    let len = data.len();
    if method == Method::HEAD {
        let mut r = full(StatusCode::OK, Bytes::new());
        r.headers_mut().insert("content-length", len.into());
        return r;
    }
    let mut data = data.to_vec();
    if b.corrupt {
        let i = data.len() - 1;
        data[i] ^= 0xff;
    }
    if b.differ_after_first && attempt > 0 {
        data[0] ^= 0xff;
    }
    ranged(data, b, attempt, range)
}

/// The body of a blob GET: `data` from the start of `range` (or whole), sent in the test's
/// chunks with its cuts, stalls and gates.
fn ranged(data: Vec<u8>, b: Behavior, attempt: usize, range: Option<&str>) -> Response<Body> {
    let len = data.len();
    let mut end = len;
    let from = match range.and_then(|r| r.strip_prefix("bytes=")) {
        Some(r) if !b.ignore_range => {
            let (first, last) = r.split_once('-').unwrap();
            let from: usize = first.parse().unwrap();
            if !last.is_empty() {
                end = (last.parse::<usize>().unwrap() + 1).min(len);
            }
            if from >= len {
                let mut r = full(StatusCode::RANGE_NOT_SATISFIABLE, "{}");
                r.headers_mut()
                    .insert("content-range", format!("bytes */{len}").parse().unwrap());
                return r;
            }
            Some(if b.range_early {
                from.saturating_sub(1)
            } else {
                from
            })
        }
        _ => None,
    };
    let start = from.unwrap_or(0);
    let faulty = b.fault_attempts.is_none_or(|k| attempt < k);
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(4);
    tokio::spawn(async move {
        let mut sent = start;
        for chunk in data[start..end].chunks(b.chunk_bytes.max(1)) {
            if let Some(g) = &b.gate {
                if sent >= g.after_bytes {
                    let mut open = g.open.subscribe();
                    open.wait_for(|o| *o).await.ok();
                }
            }
            if let Some(cut) = b.cut_after.filter(|_| faulty) {
                if sent >= cut {
                    tx.send(Err(std::io::Error::other("cut"))).await.ok();
                    return;
                }
            }
            if let Some(stall) = b.stall_after.filter(|_| faulty) {
                if sent >= stall {
                    // Silent, connection open, until the reader gives up.
                    tx.closed().await;
                    return;
                }
            }
            if tx
                .send(Ok(Frame::data(Bytes::copy_from_slice(chunk))))
                .await
                .is_err()
            {
                return;
            }
            sent += chunk.len();
            tokio::time::sleep(b.chunk_delay).await;
        }
    });
    let body = StreamBody::new(stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|x| (x, rx))
    }));
    let mut r = Response::new(body.boxed());
    match from {
        Some(from) => {
            *r.status_mut() = StatusCode::PARTIAL_CONTENT;
            r.headers_mut().insert(
                "content-range",
                format!("bytes {from}-{}/{len}", end - 1).parse().unwrap(),
            );
            r.headers_mut()
                .insert("content-length", (end - from).into());
        }
        None if !b.omit_length => {
            let declared = (len as i64 + b.length_delta).max(0);
            r.headers_mut().insert("content-length", declared.into());
        }
        None => {}
    }
    r
}

/// The digest distribution gives a signed schema 1 manifest (`...manifest.v1+prettyjws`): over
/// the payload without its signatures, which is the body's first `formatLength` bytes followed by
/// the base64url-decoded `formatTail`, both from the first signature's `protected` header. `None`
/// for other media types.
pub fn schema1_payload_digest(media_type: &str, body: &[u8]) -> Option<Digest> {
    use base64::Engine as _;
    if media_type != "application/vnd.docker.distribution.manifest.v1+prettyjws" {
        return None;
    }
    let doc: serde_json::Value = serde_json::from_slice(body).ok()?;
    let protected = doc["signatures"][0]["protected"].as_str()?;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header: serde_json::Value = serde_json::from_slice(&b64.decode(protected).ok()?).ok()?;
    let length = usize::try_from(header["formatLength"].as_u64()?).ok()?;
    let tail = b64.decode(header["formatTail"].as_str()?).ok()?;
    let mut payload = body.get(..length)?.to_vec();
    payload.extend_from_slice(&tail);
    Some(Digest::of(&payload))
}
