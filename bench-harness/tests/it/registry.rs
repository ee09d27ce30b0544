//! The embedded registry end to end: generated images pulled over loopback with
//! `stampede_oci::RegistryClient` and plain hyper requests, with the registry's accounting
//! checked exactly; ranges, HEADs, OCI errors, throttling, latency and bandwidth shaping.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue, ACCEPT, RANGE};
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use stampede_oci::manifest::MANIFEST_ACCEPT;
use stampede_oci::{
    ClientConfig, Compression, Digest, Endpoint, Manifest, RegistryClient, RegistryRequest,
    Verifier,
};
use tokio::time::Instant;

use bench_harness::image::{
    generate, FileSizes, GeneratedImage, LayerSpec, ManifestFormat, SyntheticImage,
};
use bench_harness::registry::{EmbeddedRegistry, RegistryModel, Throttle};
use bench_harness::scenario::units::{Bandwidth, ByteSize, Span};

/// Upper bound on any single test's waiting: a bug fails instead of hanging.
const TEST_TIMEOUT: Duration = Duration::from_secs(60);

async fn within<T>(fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(TEST_TIMEOUT, fut)
        .await
        .expect("test timed out")
}

fn layer(size: u64, files: u32) -> LayerSpec {
    LayerSpec {
        size: ByteSize(size),
        files,
        file_sizes: FileSizes::Equal,
        compressibility: 0.3,
    }
}

/// A small three-layer gzip image.
fn small_spec() -> SyntheticImage {
    SyntheticImage {
        layers: vec![layer(40_000, 2), layer(100_000, 5), layer(150_000, 3)],
        compression: Compression::Gzip,
        level: Some(1),
        platforms: vec!["linux/amd64".to_owned()],
        format: ManifestFormat::Oci,
    }
}

async fn generated(spec: SyntheticImage, dir: &Path) -> GeneratedImage {
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || generate(&spec, 42, &dir))
        .await
        .unwrap()
        .unwrap()
}

/// A response as plain hyper sees it: status, headers, the whole body.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header"))
            .to_str()
            .unwrap()
    }

    fn error_code(&self) -> String {
        let doc: serde_json::Value = serde_json::from_slice(&self.body).unwrap();
        doc["errors"][0]["code"].as_str().unwrap().to_owned()
    }
}

async fn fetch(method: Method, url: &str, headers: &[(http::HeaderName, &str)]) -> Answer {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let mut req = http::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        req = req.header(name, *value);
    }
    let resp = client
        .request(req.body(Empty::new()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        headers,
        body,
    }
}

/// Pulls `repo:tag` the way a runtime does: ping, manifest, then every blob, each verified.
/// Returns the body bytes received.
async fn pull(client: &RegistryClient, base_url: &str, repo: &str, tag: &str) -> u64 {
    let endpoint = Endpoint::parse(base_url).unwrap();
    let mut received = 0;
    let ping = RegistryRequest {
        method: Method::GET,
        path_and_query: "/v2/".to_owned(),
        scope: None,
        headers: HeaderMap::new(),
    };
    let resp = client.send(&endpoint, &ping).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    received += resp.into_body().collect().await.unwrap().to_bytes().len() as u64;

    let req = RegistryRequest::pull(Method::GET, repo, format!("/v2/{repo}/manifests/{tag}"))
        .header(ACCEPT, HeaderValue::from_static(MANIFEST_ACCEPT));
    let resp = client.send(&endpoint, &req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let content_type = resp.headers()[http::header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .to_owned();
    let manifest = resp.into_body().collect().await.unwrap().to_bytes();
    received += manifest.len() as u64;
    let parsed = Manifest::parse(Some(&content_type), &manifest).unwrap();
    for (digest, size) in parsed.children().unwrap() {
        let req = RegistryRequest::pull(Method::GET, repo, format!("/v2/{repo}/blobs/{digest}"));
        let resp = client.send(&endpoint, &req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let mut body = resp.into_body();
        let mut verifier = Verifier::new(digest);
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.unwrap().into_data() {
                verifier.update(&data);
            }
        }
        assert_eq!(verifier.bytes(), size);
        received += verifier.bytes();
        verifier.finish().unwrap();
    }
    received
}

#[tokio::test]
async fn burst_of_pulls_is_counted_exactly() {
    within(async {
        let dir = tempfile::tempdir().unwrap();
        let image = generated(small_spec(), dir.path()).await;
        let registry = EmbeddedRegistry::start(RegistryModel::default(), 2)
            .await
            .unwrap();
        registry
            .add_image("stampede/small", "latest", &image)
            .unwrap();
        registry.accounting().reset();

        // 8 concurrent pulls: 3 on the shared port, 3 on node 0's, 2 on node 1's.
        let client = RegistryClient::new(ClientConfig::default()).unwrap();
        let urls: Vec<String> = (0..8)
            .map(|i| match i % 3 {
                0 => registry.url(),
                n => registry.node_url(n - 1).unwrap(),
            })
            .collect();
        let pulls: Vec<_> = urls
            .iter()
            .map(|url| {
                let client = client.clone();
                let url = url.clone();
                tokio::spawn(async move { pull(&client, &url, "stampede/small", "latest").await })
            })
            .collect();
        let mut received = 0;
        for p in pulls {
            received += p.await.unwrap();
        }

        let p = &image.platforms[0];
        let layout = image.layout_image();
        let per_pull = 2 + layout.pull_bytes(&layout.platforms[0]);
        assert_eq!(
            per_pull,
            2 + p.manifest.size_bytes + p.config.size_bytes + image.totals.compressed_bytes
        );
        let s = registry.accounting().snapshot();
        assert_eq!(received, 8 * per_pull);
        assert_eq!(s.bytes_out, 8 * per_pull);
        assert_eq!(s.body_bytes.other, 8 * 2);
        assert_eq!(s.body_bytes.manifests, 8 * p.manifest.size_bytes);
        assert_eq!(
            s.body_bytes.blobs,
            8 * (p.config.size_bytes + image.totals.compressed_bytes)
        );
        assert_eq!(s.requests.total, 8 * 6);
        assert_eq!(s.requests.ping, 8);
        assert_eq!(s.requests.manifest_get, 8);
        assert_eq!(s.requests.blob_get, 8 * 4);
        assert_eq!(
            (
                s.requests.manifest_head,
                s.requests.blob_head,
                s.requests.other,
                s.requests.throttled
            ),
            (0, 0, 0, 0)
        );
        assert!(s.errors.is_empty(), "{:?}", s.errors);
        assert_eq!(s.blobs.len(), 4);
        for blob in layout.blobs() {
            let c = &s.blobs[&blob.digest];
            assert_eq!((c.gets, c.range_gets, c.heads), (8, 0, 0));
            assert_eq!(c.bytes_out, 8 * blob.size_bytes);
        }
        assert_eq!(s.manifests[&p.manifest.digest].gets, 8);
        assert_eq!(s.listeners.shared.bytes_out, 3 * per_pull);
        assert_eq!(s.listeners.nodes[0].bytes_out, 3 * per_pull);
        assert_eq!(s.listeners.nodes[1].bytes_out, 2 * per_pull);
        assert_eq!(s.listeners.nodes[1].requests, 2 * 6);
        assert_eq!(s.series.bytes_out.iter().sum::<u64>(), s.bytes_out);
        assert_eq!(s.series.requests.iter().sum::<u64>(), s.requests.total);

        registry.accounting().reset();
        assert_eq!(registry.accounting().snapshot().bytes_out, 0);
        registry.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn range_requests_get_partial_content() {
    within(async {
        let dir = tempfile::tempdir().unwrap();
        let image = generated(small_spec(), dir.path()).await;
        let registry = EmbeddedRegistry::start(RegistryModel::default(), 0)
            .await
            .unwrap();
        registry.add_image("stampede/small", "v1", &image).unwrap();
        let layer = &image.layers[2];
        let size = layer.compressed_bytes;
        let whole = std::fs::read(image.blob_path(&layer.digest)).unwrap();
        let url = format!(
            "{}/v2/stampede/small/blobs/{}",
            registry.url(),
            layer.digest
        );

        let cases = [
            ("bytes=10-19", 10, 19),
            ("bytes=100-", 100, size - 1),
            ("bytes=-5", size - 5, size - 1),
            ("bytes=0-99999999", 0, size - 1),
        ];
        let mut sent = 0;
        for (range, start, end) in cases {
            let a = fetch(Method::GET, &url, &[(RANGE, range)]).await;
            assert_eq!(a.status, StatusCode::PARTIAL_CONTENT, "{range}");
            assert_eq!(
                a.header("content-range"),
                format!("bytes {start}-{end}/{size}")
            );
            assert_eq!(a.header("content-length"), (end - start + 1).to_string());
            assert_eq!(
                &a.body[..],
                &whole[start as usize..=end as usize],
                "{range}"
            );
            sent += end - start + 1;
        }
        let a = fetch(Method::GET, &url, &[(RANGE, &format!("bytes={size}-"))]).await;
        assert_eq!(a.status, StatusCode::RANGE_NOT_SATISFIABLE);
        assert_eq!(a.header("content-range"), format!("bytes */{size}"));
        assert_eq!(a.error_code(), "RANGE_INVALID");
        let a = fetch(Method::GET, &url, &[(RANGE, "bytes=5-1")]).await;
        assert_eq!(a.status, StatusCode::OK, "an invalid range is ignored");
        assert_eq!(a.header("accept-ranges"), "bytes");
        assert_eq!(a.body.len() as u64, size);

        let s = registry.accounting().snapshot();
        let c = &s.blobs[&layer.digest];
        assert_eq!((c.gets, c.range_gets), (5, 4));
        assert_eq!(c.bytes_out, sent + size);
        assert_eq!(s.errors["RANGE_INVALID"], 1);
        registry.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn head_sends_headers_without_body() {
    within(async {
        let dir = tempfile::tempdir().unwrap();
        let image = generated(small_spec(), dir.path()).await;
        let registry = EmbeddedRegistry::start(RegistryModel::default(), 1)
            .await
            .unwrap();
        registry
            .add_image("stampede/small", "latest", &image)
            .unwrap();
        let base = registry.node_url(0).unwrap();
        let layer = &image.layers[0];

        let a = fetch(
            Method::HEAD,
            &format!("{base}/v2/stampede/small/blobs/{}", layer.digest),
            &[],
        )
        .await;
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(
            a.header("content-length"),
            layer.compressed_bytes.to_string()
        );
        assert_eq!(a.header("docker-content-digest"), layer.digest.to_string());
        assert!(a.body.is_empty());

        let a = fetch(
            Method::HEAD,
            &format!("{base}/v2/stampede/small/manifests/latest"),
            &[],
        )
        .await;
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(a.header("content-type"), image.top.media_type);
        assert_eq!(a.header("content-length"), image.top.size_bytes.to_string());
        assert_eq!(
            a.header("docker-content-digest"),
            image.top.digest.to_string()
        );
        assert!(a.body.is_empty());

        let s = registry.accounting().snapshot();
        assert_eq!((s.requests.blob_head, s.requests.manifest_head), (1, 1));
        assert_eq!(s.bytes_out, 0);
        assert_eq!(s.blobs[&layer.digest].heads, 1);
        assert_eq!(s.blobs[&layer.digest].gets, 0);
        assert_eq!(s.manifests[&image.top.digest].heads, 1);
        assert_eq!(s.listeners.nodes[0].requests, 2);
        registry.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn unknown_and_invalid_requests_get_oci_errors() {
    within(async {
        let dir = tempfile::tempdir().unwrap();
        let image = generated(small_spec(), dir.path()).await;
        let registry = EmbeddedRegistry::start(RegistryModel::default(), 0)
            .await
            .unwrap();
        registry
            .add_image("stampede/small", "latest", &image)
            .unwrap();
        let base = registry.url();
        let absent = Digest::of(b"absent");
        let cases = [
            (
                Method::GET,
                "/v2/stampede/small/manifests/nope".to_owned(),
                StatusCode::NOT_FOUND,
                "MANIFEST_UNKNOWN",
            ),
            (
                Method::GET,
                format!("/v2/stampede/small/manifests/{absent}"),
                StatusCode::NOT_FOUND,
                "MANIFEST_UNKNOWN",
            ),
            (
                Method::GET,
                "/v2/stampede/other/manifests/latest".to_owned(),
                StatusCode::NOT_FOUND,
                "NAME_UNKNOWN",
            ),
            (
                Method::GET,
                format!("/v2/stampede/small/blobs/{absent}"),
                StatusCode::NOT_FOUND,
                "BLOB_UNKNOWN",
            ),
            (
                Method::GET,
                format!("/v2/stampede/other/blobs/{absent}"),
                StatusCode::NOT_FOUND,
                "NAME_UNKNOWN",
            ),
            (
                Method::GET,
                "/v2/Stampede/manifests/latest".to_owned(),
                StatusCode::BAD_REQUEST,
                "NAME_INVALID",
            ),
            (
                Method::GET,
                "/v2/stampede/small/blobs/sha256:123".to_owned(),
                StatusCode::BAD_REQUEST,
                "DIGEST_INVALID",
            ),
            (
                Method::GET,
                "/v2/stampede/small/tags/list".to_owned(),
                StatusCode::NOT_FOUND,
                "UNSUPPORTED",
            ),
            (
                Method::DELETE,
                "/v2/stampede/small/manifests/latest".to_owned(),
                StatusCode::METHOD_NOT_ALLOWED,
                "UNSUPPORTED",
            ),
        ];
        for (method, path, status, code) in &cases {
            let a = fetch(method.clone(), &format!("{base}{path}"), &[]).await;
            assert_eq!(a.status, *status, "{method} {path}");
            assert_eq!(a.error_code(), *code, "{method} {path}");
            assert_eq!(a.header("content-type"), "application/json");
        }
        // A manifest is also a blob; the blobs of one repository are not another's.
        let top = image.top.digest.to_string();
        let a = fetch(
            Method::GET,
            &format!("{base}/v2/stampede/small/blobs/{top}"),
            &[],
        )
        .await;
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(Digest::of(&a.body).to_string(), top);

        let s = registry.accounting().snapshot();
        assert_eq!(s.errors["MANIFEST_UNKNOWN"], 2);
        assert_eq!(s.errors["NAME_UNKNOWN"], 2);
        assert_eq!(s.errors["UNSUPPORTED"], 2);
        assert_eq!(s.errors.values().sum::<u64>(), cases.len() as u64);
        assert_eq!(s.requests.manifest_get, 3);
        assert_eq!(s.requests.blob_get, 3);
        // Bad names and digests, unknown endpoints and other methods are "other".
        assert_eq!(s.requests.other, 4);
        assert_eq!(s.body_bytes.blobs, image.top.size_bytes);
        registry.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn manifests_by_tag_and_digest_for_a_multi_platform_image() {
    within(async {
        let dir = tempfile::tempdir().unwrap();
        let spec = SyntheticImage {
            platforms: vec!["linux/amd64".to_owned(), "linux/arm64/v8".to_owned()],
            format: ManifestFormat::Docker,
            ..small_spec()
        };
        let image = generated(spec, dir.path()).await;
        let registry = EmbeddedRegistry::start(RegistryModel::default(), 0)
            .await
            .unwrap();
        registry.add_image("stampede/multi", "v2", &image).unwrap();
        let base = format!("{}/v2/stampede/multi/manifests", registry.url());

        let a = fetch(
            Method::GET,
            &format!("{base}/v2"),
            &[(ACCEPT, MANIFEST_ACCEPT)],
        )
        .await;
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(
            a.header("content-type"),
            stampede_oci::manifest::DOCKER_MANIFEST_LIST
        );
        let Manifest::Index(index) =
            Manifest::parse(Some(a.header("content-type")), &a.body).unwrap()
        else {
            panic!("a multi-platform tag resolves to an index");
        };
        assert_eq!(index.manifests().len(), 2);
        for p in &image.platforms {
            let a = fetch(Method::GET, &format!("{base}/{}", p.manifest.digest), &[]).await;
            assert_eq!(a.status, StatusCode::OK);
            assert_eq!(
                a.header("content-type"),
                stampede_oci::manifest::DOCKER_MANIFEST
            );
            assert_eq!(Digest::of(&a.body), p.manifest.digest);
        }
        let s = registry.accounting().snapshot();
        assert_eq!(s.manifests.len(), 3);
        assert_eq!(s.requests.manifest_get, 3);
        registry.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn throttling_answers_429_with_retry_after() {
    within(async {
        let model = RegistryModel {
            throttle: Some(Throttle {
                requests_per_second: 0.001,
                burst: 3,
                retry_after: Span(Duration::from_millis(1500)),
            }),
            ..RegistryModel::default()
        };
        let registry = EmbeddedRegistry::start(model, 1).await.unwrap();
        let mut statuses = Vec::new();
        for i in 0..6 {
            let url = if i % 2 == 0 {
                registry.url()
            } else {
                registry.node_url(0).unwrap()
            };
            let a = fetch(Method::GET, &format!("{url}/v2/"), &[]).await;
            if a.status == StatusCode::TOO_MANY_REQUESTS {
                assert_eq!(a.header("retry-after"), "2");
                assert_eq!(a.error_code(), "TOOMANYREQUESTS");
            }
            statuses.push(a.status.as_u16());
        }
        assert_eq!(statuses, [200, 200, 200, 429, 429, 429]);
        let s = registry.accounting().snapshot();
        assert_eq!(
            (s.requests.total, s.requests.ping, s.requests.throttled),
            (6, 3, 3)
        );
        assert_eq!(s.errors["TOOMANYREQUESTS"], 3);
        assert_eq!(s.listeners.shared.throttled, 1);
        assert_eq!(s.listeners.nodes[0].throttled, 2);
        assert_eq!(s.series.throttled.iter().sum::<u64>(), 3);
        registry.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn latency_delays_response_headers() {
    within(async {
        let model = RegistryModel {
            latency: Span(Duration::from_millis(150)),
            ..RegistryModel::default()
        };
        let registry = EmbeddedRegistry::start(model, 0).await.unwrap();
        let started = Instant::now();
        let a = fetch(Method::GET, &format!("{}/v2/", registry.url()), &[]).await;
        assert_eq!(a.status, StatusCode::OK);
        assert!(started.elapsed() >= Duration::from_millis(150));
        registry.shutdown().await;
    })
    .await;
}

/// A one-layer uncompressed image of about `size` bytes.
fn big_spec(size: u64) -> SyntheticImage {
    SyntheticImage {
        layers: vec![layer(size, 2)],
        compression: Compression::None,
        level: None,
        ..small_spec()
    }
}

#[tokio::test]
async fn bandwidth_limits_slow_downloads() {
    within(async {
        let dir = tempfile::tempdir().unwrap();
        let image = generated(big_spec(2 << 20), dir.path()).await;
        let blob = &image.layers[0];
        let mib_per_sec = |n: u64| Bandwidth {
            bytes_per_sec: n << 20,
        };
        // The shared egress, on the shared port: 2 MiB at 8 MiB/s takes at least ~0.23 s.
        let model = RegistryModel {
            egress: Some(mib_per_sec(8)),
            ..RegistryModel::default()
        };
        let registry = EmbeddedRegistry::start(model, 1).await.unwrap();
        registry
            .add_image("stampede/big", "latest", &image)
            .unwrap();
        let path = format!("/v2/stampede/big/blobs/{}", blob.digest);
        let started = Instant::now();
        let a = fetch(Method::GET, &format!("{}{path}", registry.url()), &[]).await;
        assert_eq!(a.body.len() as u64, blob.compressed_bytes);
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(200), "{took:?}");
        registry.shutdown().await;

        // A node link, on that node's port only.
        let model = RegistryModel {
            node_link: Some(mib_per_sec(8)),
            ..RegistryModel::default()
        };
        let registry = EmbeddedRegistry::start(model, 1).await.unwrap();
        registry
            .add_image("stampede/big", "latest", &image)
            .unwrap();
        let started = Instant::now();
        let a = fetch(
            Method::GET,
            &format!("{}{path}", registry.node_url(0).unwrap()),
            &[],
        )
        .await;
        assert_eq!(a.body.len() as u64, blob.compressed_bytes);
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(200), "{took:?}");
        let s = registry.accounting().snapshot();
        assert_eq!(s.listeners.nodes[0].bytes_out, blob.compressed_bytes);
        // ~0.25 s of transfer spreads over at least two 100 ms buckets.
        assert!(s.series.bytes_out.iter().filter(|&&b| b > 0).count() >= 2);
        registry.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_client_that_hangs_up_is_charged_only_for_what_was_sent() {
    within(async {
        let dir = tempfile::tempdir().unwrap();
        let image = generated(big_spec(2 << 20), dir.path()).await;
        let blob = &image.layers[0];
        let model = RegistryModel {
            egress: Some(Bandwidth {
                bytes_per_sec: 1 << 20,
            }),
            ..RegistryModel::default()
        };
        let registry = EmbeddedRegistry::start(model, 0).await.unwrap();
        registry
            .add_image("stampede/big", "latest", &image)
            .unwrap();
        let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
        let url = format!("{}/v2/stampede/big/blobs/{}", registry.url(), blob.digest);
        let resp = client
            .request(http::Request::get(url).body(Empty::new()).unwrap())
            .await
            .unwrap();
        let mut body = resp.into_body();
        let mut got = 0;
        while got < 100_000 {
            got += body
                .frame()
                .await
                .unwrap()
                .unwrap()
                .into_data()
                .unwrap()
                .len();
        }
        drop(body);
        drop(client);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let first = registry.accounting().snapshot().bytes_out;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let second = registry.accounting().snapshot();
        assert!(first >= got as u64, "{first} < {got}");
        assert!(first < blob.compressed_bytes / 2, "{first}");
        assert_eq!(second.bytes_out, first, "nothing is sent after the hang-up");
        assert_eq!(second.blob_gets(&blob.digest), 1);
        registry.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn shutdown_closes_the_listeners() {
    within(async {
        let registry = EmbeddedRegistry::start(RegistryModel::default(), 2)
            .await
            .unwrap();
        let addrs = [registry.addr(), registry.node_addr(1).unwrap()];
        assert_eq!(registry.nodes(), 2);
        assert!(registry.node_url(2).is_none());
        registry.shutdown().await;
        for addr in addrs {
            assert!(tokio::net::TcpStream::connect(addr).await.is_err());
        }
    })
    .await;
}
