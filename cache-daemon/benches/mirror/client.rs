//! The benchmark's own HTTP/1.1 client (hyper, one connection per request) and the burst: N
//! clients connect first, then all send their GET at once, and each checks its body's length
//! (client 0 its digest too). A failed pull is data: it is returned, classified.
//!
//! It also has the few registry calls the setup needs: drain a GET, and the
//! blob upload (POST + streamed PUT) and manifest PUT of the distribution API.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use bytes::Bytes;
use futures_util::StreamExt as _;
use http::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, HOST, LOCATION};
use http::{Method, Request, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Empty, Full, StreamBody};
use hyper::body::Frame;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::{watch, Barrier};

use stampede_oci::digest::Hasher;
use stampede_oci::Digest;

type Body = BoxBody<Bytes, std::io::Error>;

/// Sent with every request: registries answer manifests only in a media type the client accepts.
pub const MANIFEST_ACCEPT: &str =
    "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, */*";

/// Longest wait for a TCP connect plus HTTP handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

async fn connect(addr: SocketAddr) -> anyhow::Result<SendRequest<Body>> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .with_context(|| format!("connect to {addr}: timed out"))?
        .with_context(|| format!("connect to {addr}"))?;
    stream.set_nodelay(true).ok();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        conn.await.ok();
    });
    Ok(sender)
}

fn request(method: Method, addr: SocketAddr, path: &str, body: Body) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(path)
        .header(HOST, addr.to_string())
        .header(ACCEPT, MANIFEST_ACCEPT)
        .body(body)
        .expect("valid request")
}

fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// GETs `path` and drains the body. Returns the status, the response headers and the bytes
/// read.
///
/// # Errors
/// Connection or body failure.
pub async fn drain(
    addr: SocketAddr,
    path: &str,
) -> anyhow::Result<(StatusCode, http::HeaderMap, u64)> {
    let mut sender = connect(addr).await?;
    let resp = sender
        .send_request(request(Method::GET, addr, path, empty()))
        .await?;
    let (parts, mut body) = resp.into_parts();
    let mut bytes = 0u64;
    while let Some(frame) = body.frame().await {
        if let Some(d) = frame?.data_ref() {
            bytes += d.len() as u64;
        }
    }
    Ok((parts.status, parts.headers, bytes))
}

/// Pushes a blob file with the monolithic upload of the distribution API: `POST` an upload
/// session, then `PUT <location>&digest=` with the file streamed as the body.
///
/// # Errors
/// The registry refuses or the file cannot be read.
pub async fn push_blob(
    addr: SocketAddr,
    repo: &str,
    file: &Path,
    digest: &Digest,
) -> anyhow::Result<()> {
    let mut sender = connect(addr).await?;
    let resp = sender
        .send_request(request(
            Method::POST,
            addr,
            &format!("/v2/{repo}/blobs/uploads/"),
            empty(),
        ))
        .await?;
    if resp.status() != StatusCode::ACCEPTED {
        bail!("start upload to {repo}: {}", resp.status());
    }
    let location = resp
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .context("upload answer without Location")?
        .to_owned();
    resp.into_body().collect().await?;
    // Absolute or relative: keep the path and query.
    let path = location
        .find("/v2/")
        .map(|i| &location[i..])
        .context("Location without /v2/")?;
    let sep = if path.contains('?') { '&' } else { '?' };
    let len = tokio::fs::metadata(file).await?.len();
    let reader = tokio::fs::File::open(file).await?;
    let stream = tokio_util::io::ReaderStream::with_capacity(reader, 1 << 20)
        .map(|chunk| chunk.map(Frame::data));
    let mut put = request(
        Method::PUT,
        addr,
        &format!("{path}{sep}digest={digest}"),
        http_body_util::BodyExt::boxed(StreamBody::new(stream)),
    );
    put.headers_mut().insert(CONTENT_LENGTH, len.into());
    put.headers_mut().insert(
        CONTENT_TYPE,
        http::HeaderValue::from_static("application/octet-stream"),
    );
    let mut sender = connect(addr).await?;
    let resp = sender.send_request(put).await?;
    let status = resp.status();
    let text = resp.into_body().collect().await?.to_bytes();
    if status != StatusCode::CREATED {
        bail!(
            "upload {digest}: {status} {}",
            String::from_utf8_lossy(&text)
        );
    }
    Ok(())
}

/// PUTs a manifest under `reference`.
///
/// # Errors
/// The registry refuses it.
pub async fn push_manifest(
    addr: SocketAddr,
    repo: &str,
    reference: &str,
    media_type: &'static str,
    bytes: Bytes,
) -> anyhow::Result<()> {
    let mut sender = connect(addr).await?;
    let len = bytes.len();
    let mut put = request(
        Method::PUT,
        addr,
        &format!("/v2/{repo}/manifests/{reference}"),
        Full::new(bytes).map_err(|never| match never {}).boxed(),
    );
    put.headers_mut().insert(CONTENT_LENGTH, len.into());
    put.headers_mut()
        .insert(CONTENT_TYPE, http::HeaderValue::from_static(media_type));
    let resp = sender.send_request(put).await?;
    let status = resp.status();
    let text = resp.into_body().collect().await?.to_bytes();
    if status != StatusCode::CREATED {
        bail!(
            "put manifest {repo}:{reference}: {status} {}",
            String::from_utf8_lossy(&text)
        );
    }
    Ok(())
}

/// Why a pull failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullError {
    /// Could not connect or handshake.
    Connect,
    /// The answer was not 200.
    Status(u16),
    /// The connection broke mid-body.
    Body,
    /// The body ended with fewer or more bytes than expected.
    Length,
    /// The bytes did not hash to the digest (checked on the first client only).
    Digest,
    /// The pull did not finish within the burst's time limit.
    Timeout,
}

/// What a burst asks for.
#[derive(Debug, Clone)]
pub struct BurstSpec {
    /// The server.
    pub addr: SocketAddr,
    /// Request path.
    pub path: String,
    /// Concurrent clients.
    pub clients: usize,
    /// The blob's size; a different body length is a failure.
    pub size_bytes: u64,
    /// The blob's digest.
    pub digest: Digest,
    /// Whether client 0 hashes its body and checks it against `digest`.
    pub verify: bool,
    /// Bound on the whole burst.
    pub limit: Duration,
}

/// Runs a burst; one result per client, in client order.
pub async fn burst(spec: &BurstSpec) -> Vec<Result<(), PullError>> {
    let barrier = Arc::new(Barrier::new(spec.clients + 1));
    let (go, started) = watch::channel(false);
    let mut tasks = Vec::with_capacity(spec.clients);
    for i in 0..spec.clients {
        let barrier = barrier.clone();
        let mut started = started.clone();
        let spec = spec.clone();
        tasks.push(tokio::spawn(async move {
            let conn = connect(spec.addr).await;
            barrier.wait().await;
            let Ok(mut sender) = conn else {
                return Err(PullError::Connect);
            };
            if started.wait_for(|go| *go).await.is_err() {
                return Err(PullError::Connect);
            }
            let hash = (i == 0 && spec.verify).then(Hasher::new);
            match tokio::time::timeout(spec.limit, pull(&mut sender, &spec, hash)).await {
                Ok(r) => r,
                Err(_) => Err(PullError::Timeout),
            }
        }));
    }
    barrier.wait().await;
    go.send_replace(true);
    let mut results = Vec::with_capacity(tasks.len());
    for t in tasks {
        results.push(t.await.unwrap_or(Err(PullError::Body)));
    }
    results
}

async fn pull(
    sender: &mut SendRequest<Body>,
    spec: &BurstSpec,
    mut hash: Option<Hasher>,
) -> Result<(), PullError> {
    let resp = sender
        .send_request(request(Method::GET, spec.addr, &spec.path, empty()))
        .await
        .map_err(|_| PullError::Body)?;
    if resp.status() != StatusCode::OK {
        return Err(PullError::Status(resp.status().as_u16()));
    }
    let mut body = resp.into_body();
    let mut bytes = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| PullError::Body)?;
        if let Some(d) = frame.data_ref() {
            if d.is_empty() {
                continue;
            }
            bytes += d.len() as u64;
            if let Some(h) = hash.as_mut() {
                h.update(d);
            }
        }
    }
    if bytes != spec.size_bytes {
        return Err(PullError::Length);
    }
    if hash.is_some_and(|h| h.finish() != spec.digest) {
        return Err(PullError::Digest);
    }
    Ok(())
}
