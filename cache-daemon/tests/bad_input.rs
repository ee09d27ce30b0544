//! Bad input gets a clear OCI error and harms nothing.

use crate::common::upstream::FakeUpstream;
use crate::common::{body, get, request, TestDaemon};

#[tokio::test]
async fn malformed_requests_get_oci_errors_and_never_reach_upstream() {
    let up = FakeUpstream::start().await;
    let cache = TestDaemon::start(&up.url()).await;
    let d = format!("sha256:{}", "ab".repeat(32));
    type Case<'a> = (&'a str, String, &'a [(&'a str, &'a str)], u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            "GET",
            format!("/v2/UPPER/blobs/{d}"),
            &[],
            400,
            "NAME_INVALID",
        ),
        (
            "GET",
            format!("/v2/a/../../etc/blobs/{d}"),
            &[],
            400,
            "NAME_INVALID",
        ),
        (
            "GET",
            "/v2/a/blobs/sha256:123".into(),
            &[],
            400,
            "DIGEST_INVALID",
        ),
        (
            "GET",
            "/v2/a/blobs/sha256:..%2F..%2Fetc%2Fpasswd".into(),
            &[],
            400,
            "DIGEST_INVALID",
        ),
        (
            "GET",
            "/v2/a/blobs/md5:d41d8cd98f00b204e9800998ecf8427e".into(),
            &[],
            400,
            "UNSUPPORTED",
        ),
        (
            "GET",
            "/v2/a/manifests/bad..tag!".into(),
            &[],
            400,
            "MANIFEST_INVALID",
        ),
        ("PUT", format!("/v2/a/blobs/{d}"), &[], 405, "UNSUPPORTED"),
        ("GET", "/v2/a/tags/list".into(), &[], 404, "NAME_UNKNOWN"),
        (
            "GET",
            format!("/v2/a/blobs/{d}?ns=unknown.example"),
            &[],
            404,
            "BLOB_UNKNOWN",
        ),
        (
            "GET",
            format!("/v2/a/blobs/{d}"),
            &[("range", "bytes=zz")],
            416,
            "RANGE_INVALID",
        ),
    ];
    for (method, path, headers, status, code) in cases {
        let resp = request(method, &cache.url(&path), headers).await;
        assert_eq!(resp.status().as_u16(), status, "{method} {path}");
        assert_eq!(resp.headers()["content-type"], "application/json");
        let text = String::from_utf8(body(resp).await.unwrap().to_vec()).unwrap();
        assert!(text.contains(code), "{method} {path}: {text}");
    }
    // Only the one well-formed request (the blob behind an unlisted ns) reached the upstream.
    assert_eq!(up.count(http::Method::GET, "/v2/"), 1);
    assert_eq!(get(&cache.url("/v2/")).await.status(), 200);
}
