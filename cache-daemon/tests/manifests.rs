//! Manifests: tags resolved once per TTL however many ask, digests kept, bytes untouched,
//! stale tags served through outages.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use http::{Method, StatusCode};
use stampede_oci::manifest::{DOCKER_MANIFEST, OCI_INDEX};

use crate::common::upstream::FakeUpstream;
use crate::common::{body, get, header, request, within, TestDaemon};

fn docker_manifest() -> Vec<u8> {
    // Deliberately odd whitespace: the bytes must pass through exactly.
    format!(
        "{{\n   \"schemaVersion\": 2,\"mediaType\":\"{DOCKER_MANIFEST}\",\n\"config\":{{\"mediaType\":\"application/vnd.docker.container.image.v1+json\",\"size\":1,\"digest\":\"sha256:{}\"}},\"layers\":[]}}  ",
        "a".repeat(64)
    )
    .into_bytes()
}

#[tokio::test]
async fn tag_burst_makes_one_upstream_request_and_bytes_pass_through() {
    let up = FakeUpstream::start().await;
    let bytes = docker_manifest();
    let d = up.manifest("test/app", Some("v1"), DOCKER_MANIFEST, bytes.clone());
    let cache = TestDaemon::start(&up.url()).await;
    let url = cache.url("/v2/test/app/manifests/v1");
    let (d_ref, bytes_ref) = (&d, &bytes);
    let answers = within(join_all((0..16).map(|i| {
        let url = url.clone();
        let (d, bytes) = (d_ref, bytes_ref);
        async move {
            let resp = request(if i % 2 == 0 { "HEAD" } else { "GET" }, &url, &[]).await;
            assert_eq!(resp.status(), 200);
            assert_eq!(header(&resp, "content-type"), DOCKER_MANIFEST);
            assert_eq!(header(&resp, "docker-content-digest"), d.to_string());
            assert_eq!(header(&resp, "content-length"), bytes.len().to_string());
            (i, body(resp).await.unwrap())
        }
    })))
    .await;
    for (i, b) in answers {
        if i % 2 == 1 {
            assert_eq!(b[..], bytes[..]);
        } else {
            assert!(b.is_empty());
        }
    }
    assert_eq!(
        up.count(Method::GET, "/manifests/v1") + up.count(Method::HEAD, "/manifests/v1"),
        1
    );
    // By digest: served from the store, no upstream request.
    let by_digest = get(&cache.url(&format!("/v2/test/app/manifests/{d}"))).await;
    assert_eq!(header(&by_digest, "content-type"), DOCKER_MANIFEST);
    assert_eq!(body(by_digest).await.unwrap()[..], bytes[..]);
    assert_eq!(up.count(Method::GET, &d.to_string()), 0);
}

#[tokio::test]
async fn tags_are_refreshed_after_ttl_and_served_stale_when_upstream_fails() {
    let up = FakeUpstream::start().await;
    let index = format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[]}}"#);
    up.manifest("test/app", Some("v1"), OCI_INDEX, index.clone());
    // Seconds, so the second GET lands inside the TTL even on a loaded machine.
    let ttl = Duration::from_secs(3);
    let cache = TestDaemon::start_in(tempfile::tempdir().unwrap(), &up.url(), |c| {
        c.upstream.tag_ttl = ttl;
    })
    .await;
    let url = cache.url("/v2/test/app/manifests/v1");
    assert_eq!(body(get(&url).await).await.unwrap(), index.as_bytes());
    let resolved = Instant::now();
    assert_eq!(body(get(&url).await).await.unwrap(), index.as_bytes());
    assert!(
        resolved.elapsed() < ttl,
        "the second GET came {:?} after the first, past the {ttl:?} TTL",
        resolved.elapsed()
    );
    assert_eq!(up.count(Method::GET, "/manifests/v1"), 1);
    tokio::time::sleep_until((resolved + ttl).into()).await;
    assert_eq!(body(get(&url).await).await.unwrap(), index.as_bytes());
    // Refreshed with a HEAD naming the same digest (issue 17: no GET to spend pull quota on).
    assert_eq!(up.count(Method::GET, "/manifests/v1"), 1);
    assert_eq!(up.count(Method::HEAD, "/manifests/v1"), 1);
    let refreshed = Instant::now();
    // Upstream fails: the known tag is served stale; an unknown tag is an error.
    tokio::time::sleep_until((refreshed + ttl).into()).await;
    up.fail_manifests(Some(StatusCode::SERVICE_UNAVAILABLE));
    let stale = get(&url).await;
    assert_eq!(stale.status(), 200);
    assert_eq!(header(&stale, "content-type"), OCI_INDEX);
    assert_eq!(
        get(&cache.url("/v2/test/app/manifests/v2")).await.status(),
        502
    );
}

#[tokio::test]
async fn manifest_by_digest_is_verified_and_kept() {
    let up = FakeUpstream::start().await;
    let bytes = docker_manifest();
    let d = up.manifest("test/app", None, DOCKER_MANIFEST, bytes.clone());
    let cache = TestDaemon::start(&up.url()).await;
    let url = cache.url(&format!("/v2/test/app/manifests/{d}"));
    assert_eq!(body(get(&url).await).await.unwrap()[..], bytes[..]);
    up.fail_manifests(Some(StatusCode::INTERNAL_SERVER_ERROR));
    let again = get(&url).await;
    assert_eq!(again.status(), 200);
    assert_eq!(body(again).await.unwrap()[..], bytes[..]);
    assert_eq!(up.count(Method::GET, "/manifests/"), 1);
}

#[tokio::test]
async fn bad_upstream_manifests_are_refused() {
    let up = FakeUpstream::start().await;
    // Oversized.
    let huge = format!(
        r#"{{"schemaVersion":2,"pad":"{}"}}"#,
        "x".repeat(5 * 1024 * 1024)
    );
    up.manifest("test/app", Some("huge"), DOCKER_MANIFEST, huge);
    let cache = TestDaemon::start(&up.url()).await;
    let resp = get(&cache.url("/v2/test/app/manifests/huge")).await;
    assert_eq!(resp.status(), 502);
    assert!(String::from_utf8_lossy(&body(resp).await.unwrap()).contains("MANIFEST_INVALID"));
    // Unknown.
    let resp = get(&cache.url("/v2/test/app/manifests/nope")).await;
    assert_eq!(resp.status(), 404);
    assert!(String::from_utf8_lossy(&body(resp).await.unwrap()).contains("MANIFEST_UNKNOWN"));
}
