//! Shared helpers for the cache-daemon integration tests: a daemon on a temp dir, an HTTP client,
//! timeouts around every wait, and the in-test upstream.

#![allow(dead_code)]

pub mod real;
pub mod shipped;
pub mod upstream;

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use cache_daemon::{Config, Daemon};
use stampede_oci::Endpoint;

/// Every wait in a test is bounded by this, so a bug fails instead of hanging.
pub const WAIT: Duration = Duration::from_secs(20);

pub async fn within<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(WAIT, f).await.expect("timed out")
}

/// A daemon on a fresh temp dir in front of `upstream`.
pub struct TestDaemon {
    pub daemon: Daemon,
    pub dir: tempfile::TempDir,
}

impl TestDaemon {
    pub async fn start(upstream: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, upstream, |_| {}).await
    }

    pub async fn start_in(
        dir: tempfile::TempDir,
        upstream: &str,
        tweak: impl FnOnce(&mut Config),
    ) -> Self {
        let mut config =
            Config::for_upstream(dir.path().join("store"), Endpoint::parse(upstream).unwrap());
        config.upstream.response_timeout = Duration::from_secs(5);
        config.upstream.body_idle_timeout = Duration::from_secs(5);
        tweak(&mut config);
        let daemon = within(cache_daemon::start(config)).await.unwrap();
        Self { daemon, dir }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.daemon.url(), path)
    }

    pub async fn stop(self) -> tempfile::TempDir {
        within(self.daemon.shutdown()).await;
        self.dir
    }
}

pub type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>;

pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build_http()
}

pub async fn request(method: &str, url: &str, headers: &[(&str, &str)]) -> Response<Incoming> {
    let mut b = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    within(client().request(b.body(Empty::new()).unwrap()))
        .await
        .unwrap()
}

pub async fn get(url: &str) -> Response<Incoming> {
    request("GET", url, &[]).await
}

/// The whole body, or the error that cut it short.
pub async fn body(resp: Response<Incoming>) -> Result<Bytes, hyper::Error> {
    within(resp.into_body().collect())
        .await
        .map(|c| c.to_bytes())
}

/// The first data frame of a body.
pub async fn first_chunk(body: &mut Incoming) -> Bytes {
    loop {
        let frame = within(body.frame())
            .await
            .expect("body ended")
            .expect("body failed");
        if let Ok(d) = frame.into_data() {
            if !d.is_empty() {
                return d;
            }
        }
    }
}

/// Reads the rest of a body after some chunks were taken.
pub async fn rest(mut body: Incoming, mut got: Vec<u8>) -> Result<Vec<u8>, hyper::Error> {
    while let Some(frame) = within(body.frame()).await {
        if let Ok(d) = frame?.into_data() {
            got.extend_from_slice(&d);
        }
    }
    Ok(got)
}

pub fn header<'a>(resp: &'a Response<Incoming>, name: &str) -> &'a str {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// Deterministic pseudo-random bytes.
pub fn data(len: usize, seed: u8) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9 ^ u32::from(seed);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// Polls `cond` until true.
pub async fn eventually(mut cond: impl FnMut() -> bool) {
    within(async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

/// The path of blob `d` in the repository most tests use.
pub fn blob_path(d: &stampede_oci::Digest) -> String {
    format!("/v2/test/app/blobs/{d}")
}

/// The daemon's `/metrics` text.
pub async fn metrics(cache: &TestDaemon) -> String {
    String::from_utf8(
        body(get(&cache.url("/metrics")).await)
            .await
            .unwrap()
            .to_vec(),
    )
    .unwrap()
}
