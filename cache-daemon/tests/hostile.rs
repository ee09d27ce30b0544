//! Hostile input over raw TCP (bytes written by hand, not by an HTTP client that would refuse to
//! send them): slow and oversized requests, names and digests built to escape the store,
//! absurd ranges, pipelining, request smuggling shapes and methods the mirror does not serve.
//! Every case asserts the exact answer (or that the connection was closed without one), that the
//! upstream saw no request it should not have, and that `/healthz` still answers afterwards.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::upstream::{Behavior, FakeUpstream};
use crate::common::{body, data, get, request, within, TestDaemon};

/// The header read timeout the slow-client tests configure.
const SHORT_HEADER_TIMEOUT: Duration = Duration::from_secs(1);

/// One response as read off the wire.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", String::as_str)
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// What came back on a connection: the responses in order, and whether the daemon closed it.
#[derive(Debug)]
struct Exchange {
    answers: Vec<Answer>,
    closed: bool,
}

/// Writes `bytes` on a fresh connection, then reads until the daemon closes it or `idle` passes
/// without a byte. `heads[i]` says whether the i-th request is a HEAD (its response has no body).
async fn exchange(addr: SocketAddr, bytes: &[u8], heads: &[bool], idle: Duration) -> Exchange {
    let mut s = within(TcpStream::connect(addr)).await.unwrap();
    // The daemon may answer and close before everything is written (a refused request):
    // a failed write is not a test failure, what was read is what counts.
    let _ = within(s.write_all(bytes)).await;
    let (raw, closed) = read_until_close(&mut s, idle).await;
    Exchange {
        answers: parse_answers(&raw, heads),
        closed,
    }
}

/// Reads until EOF (or a reset: closed) or `idle` without data (not closed).
async fn read_until_close(s: &mut TcpStream, idle: Duration) -> (Vec<u8>, bool) {
    let mut raw = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match tokio::time::timeout(idle, s.read(&mut buf)).await {
            Err(_) => return (raw, false),
            Ok(Ok(0) | Err(_)) => return (raw, true),
            Ok(Ok(n)) => raw.extend_from_slice(&buf[..n]),
        }
    }
}

/// Splits a byte stream into responses (`Content-Length` or chunked bodies).
fn parse_answers(mut raw: &[u8], heads: &[bool]) -> Vec<Answer> {
    let mut out = Vec::new();
    while let Some(end) = find(raw, b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&raw[..end]).into_owned();
        raw = &raw[end + 4..];
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or("");
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not a status line: {status_line:?}"));
        let headers: BTreeMap<String, String> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let is_head = heads.get(out.len()).copied().unwrap_or(false);
        let mut body = Vec::new();
        if !is_head {
            if let Some(len) = headers.get("content-length") {
                let len: usize = len.parse().unwrap();
                let take = len.min(raw.len());
                body.extend_from_slice(&raw[..take]);
                raw = &raw[take..];
            } else if headers
                .get("transfer-encoding")
                .is_some_and(|t| t.contains("chunked"))
            {
                while let Some(eol) = find(raw, b"\r\n") {
                    let size =
                        usize::from_str_radix(std::str::from_utf8(&raw[..eol]).unwrap().trim(), 16)
                            .unwrap();
                    raw = &raw[eol + 2..];
                    if size == 0 {
                        raw = &raw[2.min(raw.len())..];
                        break;
                    }
                    body.extend_from_slice(&raw[..size]);
                    raw = &raw[size + 2..];
                }
            }
        }
        out.push(Answer {
            status,
            headers,
            body,
        });
    }
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Requests the upstream saw, of any method (a forwarded POST or PUT counts) and on any path.
fn upstream_requests(up: &FakeUpstream) -> usize {
    up.requests()
}

/// Files under the store's `blobs/` (committed content). Panics when `blobs/` (or anything
/// under it) cannot be read, so an empty answer always means the directory was looked at.
fn stored_blobs(root: &Path) -> Vec<std::path::PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        let entries =
            std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
        for e in entries {
            let p = e
                .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
                .path();
            if p.is_dir() {
                walk(&p, out);
            } else {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(&root.join("blobs"), &mut out);
    out
}

async fn assert_healthy(cache: &TestDaemon) {
    let resp = get(&cache.url("/healthz")).await;
    assert_eq!(resp.status(), 200, "/healthz after hostile input");
}

async fn daemon_with_short_header_timeout(up: &FakeUpstream) -> TestDaemon {
    let dir = tempfile::tempdir().unwrap();
    TestDaemon::start_in(dir, &up.url(), |c| {
        c.server.header_read_timeout = SHORT_HEADER_TIMEOUT;
    })
    .await
}

#[tokio::test]
async fn slowloris_headers_and_idle_connections_are_closed_at_the_header_read_timeout() {
    let up = FakeUpstream::start().await;
    let cache = daemon_with_short_header_timeout(&up).await;
    let addr = cache.daemon.addr();

    // Idle: connects and never sends a byte.
    let mut idle = within(TcpStream::connect(addr)).await.unwrap();
    let started = Instant::now();
    let (raw, closed) = read_until_close(&mut idle, Duration::from_secs(10)).await;
    let idle_for = started.elapsed();
    assert!(closed, "an idle connection stayed open");
    assert!(
        idle_for >= SHORT_HEADER_TIMEOUT - Duration::from_millis(100)
            && idle_for < SHORT_HEADER_TIMEOUT * 4,
        "idle connection closed after {idle_for:?}"
    );
    assert!(
        parse_answers(&raw, &[]).iter().all(|a| a.status >= 400),
        "idle connection got a success"
    );

    // Trickling: a header line every 100 ms, never the blank line that ends the headers.
    let mut slow = within(TcpStream::connect(addr)).await.unwrap();
    let started = Instant::now();
    slow.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut closed_after = None;
    let mut buf = [0u8; 1024];
    for i in 0..100 {
        let line = format!("X-Slow-{i}: y\r\n");
        if slow.write_all(line.as_bytes()).await.is_err() {
            closed_after = Some(started.elapsed());
            break;
        }
        match tokio::time::timeout(Duration::from_millis(100), slow.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => {
                closed_after = Some(started.elapsed());
                break;
            }
            Ok(Ok(n)) => {
                let answers = parse_answers(&buf[..n], &[]);
                assert!(
                    answers.iter().all(|a| a.status >= 400),
                    "a trickled request was answered: {answers:?}"
                );
            }
            Err(_) => {}
        }
    }
    let closed_after = closed_after.expect("a trickling client was never disconnected (10 s)");
    assert!(
        closed_after >= SHORT_HEADER_TIMEOUT - Duration::from_millis(100)
            && closed_after < SHORT_HEADER_TIMEOUT * 4,
        "trickling client disconnected after {closed_after:?}"
    );
    assert_eq!(upstream_requests(&up), 0);
    assert_healthy(&cache).await;
}

#[tokio::test]
async fn a_trickled_request_body_is_answered_and_the_connection_then_closed() {
    let up = FakeUpstream::start().await;
    let cache = daemon_with_short_header_timeout(&up).await;
    let addr = cache.daemon.addr();
    let d = format!("sha256:{}", "ab".repeat(32));
    // (request head, is HEAD, status): a declared 1 MB body, and a chunked one that never ends.
    let cases = [
        ("GET /v2/ HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n".to_owned(), false, 200),
        (
            format!("HEAD /v2/a/blobs/{d} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\nRange: bytes=x\r\n\r\n"),
            true,
            416,
        ),
        ("GET /v2/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nfffff\r\n".to_owned(), false, 200),
    ];
    for (head, is_head, status) in cases {
        let mut s = within(TcpStream::connect(addr)).await.unwrap();
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(b"0123456789").await.unwrap();
        let (mut rd, mut wr) = s.into_split();
        // Keeps trickling a byte every 50 ms for up to 10 s, whatever the daemon does.
        let trickle = tokio::spawn(async move {
            for _ in 0..200 {
                if wr.write_all(b"x").await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        let started = Instant::now();
        let mut raw = Vec::new();
        let mut buf = [0u8; 4096];
        let closed = loop {
            match tokio::time::timeout(Duration::from_secs(10), rd.read(&mut buf)).await {
                Err(_) => break false,
                Ok(Ok(0) | Err(_)) => break true,
                Ok(Ok(n)) => raw.extend_from_slice(&buf[..n]),
            }
        };
        let elapsed = started.elapsed();
        trickle.abort();
        let answers = parse_answers(&raw, &[is_head]);
        assert_eq!(answers.len(), 1, "{head:?}: {answers:?}");
        assert_eq!(answers[0].status, status, "{head:?}");
        assert_eq!(answers[0].header("connection"), "close", "{head:?}");
        assert!(
            closed,
            "{head:?}: connection with an unread body stayed open"
        );
        assert!(
            elapsed < Duration::from_secs(3),
            "{head:?}: closed after {elapsed:?}"
        );
    }
    assert_eq!(upstream_requests(&up), 0);
    assert_healthy(&cache).await;
}

#[tokio::test]
async fn oversized_headers_and_urls_are_refused() {
    let up = FakeUpstream::start().await;
    let cache = TestDaemon::start(&up.url()).await;
    let addr = cache.daemon.addr();
    let big_header = format!(
        "GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(70 * 1024)
    );
    let long_url = format!(
        "GET /v2/{}/blobs/sha256:{} HTTP/1.1\r\nHost: x\r\n\r\n",
        "a/".repeat(50 * 1024),
        "0".repeat(64)
    );
    let many_headers = format!(
        "GET /v2/ HTTP/1.1\r\nHost: x\r\n{}\r\n",
        (0..200)
            .map(|i| format!("X-H{i}: v\r\n"))
            .collect::<String>()
    );
    let cases: [(&str, String, &[u16]); 3] = [
        ("70 KiB header", big_header, &[431]),
        ("100 KiB URL", long_url, &[414, 431]),
        ("200 headers", many_headers, &[431]),
    ];
    for (what, req, allowed) in cases {
        let started = Instant::now();
        let ex = exchange(addr, req.as_bytes(), &[], Duration::from_secs(5)).await;
        assert!(
            ex.closed,
            "{what}: connection stayed open: {:?}",
            ex.answers
        );
        assert!(started.elapsed() < Duration::from_secs(5), "{what}");
        assert_eq!(ex.answers.len(), 1, "{what}: {:?}", ex.answers);
        assert!(
            allowed.contains(&ex.answers[0].status),
            "{what}: {}",
            ex.answers[0].status
        );
    }
    assert_eq!(upstream_requests(&up), 0);
    assert_healthy(&cache).await;
}

#[tokio::test]
async fn hostile_names_and_digests_get_oci_errors_and_touch_nothing() {
    let up = FakeUpstream::start().await;
    let cache = TestDaemon::start(&up.url()).await;
    let addr = cache.daemon.addr();
    // A file next to the store that a traversal would reach.
    let secret = cache.dir.path().join("secret");
    std::fs::write(&secret, b"TOP-SECRET").unwrap();
    let hex = "ab".repeat(32);
    // (request target, status, OCI code; None: refused by the HTTP parser, no OCI body).
    let cases: Vec<(Vec<u8>, u16, Option<&str>)> = vec![
        (
            format!("/v2/a%ff/blobs/sha256:{hex}").into(),
            400,
            Some("NAME_INVALID"),
        ),
        (
            format!("/v2/%2e%2e/%2e%2e/blobs/sha256:{hex}").into(),
            400,
            Some("NAME_INVALID"),
        ),
        (
            format!("/v2/a%2Fb/blobs/sha256:{hex}").into(),
            400,
            Some("NAME_INVALID"),
        ),
        (
            format!("/v2/a/../../../blobs/sha256:{hex}").into(),
            400,
            Some("NAME_INVALID"),
        ),
        (
            format!("/v2/a/./b/manifests/sha256:{hex}").into(),
            400,
            Some("NAME_INVALID"),
        ),
        (
            format!("/v2//a/blobs/sha256:{hex}").into(),
            400,
            Some("NAME_INVALID"),
        ),
        (
            b"/v2/a/blobs/sha256:../../secret".to_vec(),
            404,
            Some("NAME_UNKNOWN"),
        ),
        (
            b"/v2/a/blobs/sha256:..%2F..%2Fsecret".to_vec(),
            400,
            Some("DIGEST_INVALID"),
        ),
        (
            b"/v2/a/blobs/sha256%3A..%2F..%2Fsecret".to_vec(),
            400,
            Some("DIGEST_INVALID"),
        ),
        (
            b"/v2/a/blobs/sha256:..".to_vec(),
            400,
            Some("DIGEST_INVALID"),
        ),
        (
            format!("/v2/a/blobs/sha256:{}", hex.to_uppercase()).into(),
            400,
            Some("DIGEST_INVALID"),
        ),
        (
            format!("/v2/a/blobs/sha256:{}", &hex[..63]).into(),
            400,
            Some("DIGEST_INVALID"),
        ),
        (
            format!("/v2/a/blobs/sha256:{hex}0").into(),
            400,
            Some("DIGEST_INVALID"),
        ),
        (
            format!("/v2/a/blobs/sha256:{hex}%00").into(),
            400,
            Some("DIGEST_INVALID"),
        ),
        (
            format!("/v2/a/manifests/sha256:{}", &hex[..10]).into(),
            400,
            Some("DIGEST_INVALID"),
        ),
        (
            b"/v2/a/manifests/..".to_vec(),
            400,
            Some("MANIFEST_INVALID"),
        ),
        (
            b"/v2/a/manifests/%2e%2e".to_vec(),
            400,
            Some("MANIFEST_INVALID"),
        ),
        // Raw bytes the request line may not carry: the HTTP parser refuses them.
        (
            [b"/v2/a\xff/blobs/sha256:".as_slice(), hex.as_bytes()].concat(),
            400,
            None,
        ),
        (
            [b"/v2/a\xc3\xa9/blobs/sha256:".as_slice(), hex.as_bytes()].concat(),
            400,
            None,
        ),
        (
            [b"/v2/a\x00/blobs/sha256:".as_slice(), hex.as_bytes()].concat(),
            400,
            None,
        ),
        (
            [b"/v2/a/blobs/sha256:".as_slice(), hex.as_bytes(), b"\x00"].concat(),
            400,
            None,
        ),
    ];
    for (target, status, code) in cases {
        let shown = String::from_utf8_lossy(&target).into_owned();
        let mut req = b"GET ".to_vec();
        req.extend_from_slice(&target);
        req.extend_from_slice(b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let ex = exchange(addr, &req, &[], Duration::from_secs(5)).await;
        assert!(ex.closed, "{shown}");
        assert_eq!(ex.answers.len(), 1, "{shown}: {:?}", ex.answers);
        let a = &ex.answers[0];
        assert_eq!(a.status, status, "{shown}: {}", a.text());
        assert!(!a.text().contains("TOP-SECRET"), "{shown}");
        if let Some(code) = code {
            assert_eq!(a.header("content-type"), "application/json", "{shown}");
            assert!(a.text().contains(code), "{shown}: {}", a.text());
        }
    }
    assert_eq!(
        upstream_requests(&up),
        0,
        "a hostile name reached the upstream"
    );
    assert!(stored_blobs(&cache.dir.path().join("store")).is_empty());
    assert_eq!(std::fs::read(&secret).unwrap(), b"TOP-SECRET");
    assert_healthy(&cache).await;
}

#[tokio::test]
async fn absurd_ranges_get_416_or_the_whole_blob_and_never_a_panic() {
    let up = FakeUpstream::start().await;
    let cache = TestDaemon::start(&up.url()).await;
    let blob = data(10, 7);
    let d = up.blob(blob.clone(), Behavior::default());
    let path = format!("/v2/a/blobs/{d}");
    // Cache it first: ranges are then answered from the store.
    assert_eq!(
        body(get(&cache.url(&path)).await).await.unwrap(),
        blob.as_slice()
    );
    let before = upstream_requests(&up);
    // (Range, status, Content-Range; "" means none)
    let cases: &[(&str, u16, &str)] = &[
        ("bytes=999999999999999999999-", 416, "bytes */10"),
        ("bytes=18446744073709551615-", 416, "bytes */10"),
        (
            "bytes=18446744073709551616-18446744073709551617",
            416,
            "bytes */10",
        ),
        ("bytes=10-", 416, "bytes */10"),
        ("bytes=-0", 416, "bytes */10"),
        ("bytes=-18446744073709551616", 206, "bytes 0-9/10"),
        ("bytes=-99999999999999999999999999", 206, "bytes 0-9/10"),
        ("bytes=0-18446744073709551616", 206, "bytes 0-9/10"),
        ("bytes=2-4", 206, "bytes 2-4/10"),
        ("bytes=5-2", 416, ""),
        ("bytes=", 416, ""),
        ("bytes=-", 416, ""),
        ("bytes=--1", 416, ""),
        ("bytes=1-2-3", 416, ""),
        ("bytes=0x1-2", 416, ""),
        ("bytes=0-1,3-4", 200, ""),
        ("bytes=0-1,,,,,,,,,,,,,,,,,,,,,,,,,,", 200, ""),
        ("items=0-1", 200, ""),
        ("0-1", 200, ""),
        ("", 200, ""),
    ];
    for (range, status, content_range) in cases {
        let resp = request("GET", &cache.url(&path), &[("range", range)]).await;
        let got_status = resp.status().as_u16();
        let got_cr = resp
            .headers()
            .get("content-range")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let got = body(resp).await.unwrap();
        assert_eq!(got_status, *status, "{range}");
        assert_eq!(got_cr, *content_range, "{range}");
        match got_status {
            200 => assert_eq!(got, blob.as_slice(), "{range}"),
            206 => {
                let span = content_range
                    .strip_prefix("bytes ")
                    .and_then(|s| s.split_once('/'))
                    .and_then(|(s, _)| s.split_once('-'))
                    .map(|(a, b)| (a.parse::<usize>().unwrap(), b.parse::<usize>().unwrap()))
                    .unwrap();
                assert_eq!(got, &blob[span.0..=span.1], "{range}");
            }
            _ => assert!(String::from_utf8_lossy(&got).contains("RANGE_INVALID")),
        }
    }
    assert_eq!(upstream_requests(&up), before, "a range went upstream");

    // An empty blob satisfies no range, not even a suffix (found by fuzzing: it was answered
    // as the span 0..0, whose Content-Range computed `0 - 1`): on the miss, then on the hit.
    let empty = up.blob(Vec::new(), Behavior::default());
    let path = format!("/v2/a/blobs/{empty}");
    for attempt in ["miss", "hit"] {
        for range in ["bytes=-1", "bytes=0-", "bytes=-18446744073709551616"] {
            let resp = request("GET", &cache.url(&path), &[("range", range)]).await;
            assert_eq!(resp.status(), 416, "{attempt} {range}");
            assert_eq!(
                resp.headers()["content-range"],
                "bytes */0",
                "{attempt} {range}"
            );
            body(resp).await.unwrap();
        }
        if attempt == "miss" {
            let resp = get(&cache.url(&path)).await;
            assert_eq!(resp.status(), 200);
            assert!(body(resp).await.unwrap().is_empty());
        }
    }
    assert_healthy(&cache).await;
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let up = FakeUpstream::start().await;
    let cache = TestDaemon::start(&up.url()).await;
    let blob = data(3000, 9);
    let d = up.blob(blob.clone(), Behavior::default());
    let path = format!("/v2/a/blobs/{d}");
    assert_eq!(body(get(&cache.url(&path)).await).await.unwrap(), blob);
    let before = upstream_requests(&up);
    let req = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n\
         GET {path} HTTP/1.1\r\nHost: x\r\nRange: bytes=10-19\r\n\r\n\
         HEAD {path} HTTP/1.1\r\nHost: x\r\n\r\n\
         GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    );
    let ex = exchange(
        cache.daemon.addr(),
        req.as_bytes(),
        &[false, false, true, false],
        Duration::from_secs(5),
    )
    .await;
    assert!(ex.closed);
    let got: Vec<u16> = ex.answers.iter().map(|a| a.status).collect();
    assert_eq!(got, [200, 206, 200, 200]);
    assert_eq!(ex.answers[0].body, b"ok\n");
    assert_eq!(ex.answers[1].body, &blob[10..20]);
    assert_eq!(ex.answers[2].header("content-length"), "3000");
    assert!(ex.answers[2].body.is_empty());
    assert_eq!(ex.answers[3].body, blob);
    assert_eq!(upstream_requests(&up), before);
    assert_healthy(&cache).await;
}

#[tokio::test]
async fn smuggling_shapes_never_become_a_second_request() {
    let up = FakeUpstream::start().await;
    let cache = TestDaemon::start(&up.url()).await;
    let addr = cache.daemon.addr();
    // Would reach the upstream (an unknown blob) if it were ever handled as a request.
    let smuggled = format!(
        "GET /v2/smuggled/blobs/sha256:{} HTTP/1.1\r\nHost: x\r\n\r\n",
        "cd".repeat(32)
    );
    // (shape, request bytes, status of the one answer allowed; None: closed without an answer)
    let cases: Vec<(&str, String, Option<u16>)> = vec![
        (
            "Content-Length then Transfer-Encoding",
            format!("GET /v2/ HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"),
            Some(200),
        ),
        (
            "Transfer-Encoding then Content-Length",
            format!("GET /v2/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n{smuggled}"),
            Some(200),
        ),
        (
            "two different Content-Lengths",
            format!("GET /v2/ HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 5\r\n\r\n{smuggled}"),
            Some(400),
        ),
        (
            "Content-Length list",
            format!("GET /v2/ HTTP/1.1\r\nHost: x\r\nContent-Length: 0, 5\r\n\r\n{smuggled}"),
            Some(400),
        ),
        (
            "Transfer-Encoding: chunked, identity",
            format!("GET /v2/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n{smuggled}"),
            Some(400),
        ),
        (
            "Transfer-Encoding: identity",
            format!("GET /v2/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n\r\n{smuggled}"),
            Some(400),
        ),
        (
            "Transfer-Encoding on HTTP/1.0",
            format!("GET /v2/ HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"),
            Some(400),
        ),
        (
            "obs-fold hiding Transfer-Encoding",
            format!("GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Fold: a\r\n Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"),
            Some(400),
        ),
        (
            "space before the colon",
            format!("GET /v2/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n{smuggled}"),
            Some(400),
        ),
        (
            "bare CR in a header",
            format!("GET /v2/ HTTP/1.1\r\nHost: x\r\nX-A: a\rContent-Length: 0\r\n\r\n{smuggled}"),
            Some(400),
        ),
        (
            "bare LF hiding a Content-Length from a CRLF-only parser",
            format!("GET /v2/ HTTP/1.1\r\nHost: x\r\nX-A: a\nContent-Length: {}\r\n\r\n{smuggled}", smuggled.len()),
            Some(200),
        ),
        (
            "chunk size overflow",
            format!("GET /v2/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n{smuggled}"),
            Some(200),
        ),
    ];
    for (shape, req, want) in cases {
        let ex = exchange(addr, req.as_bytes(), &[], Duration::from_secs(5)).await;
        assert!(ex.closed, "{shape}: connection left open");
        let got: Vec<u16> = ex.answers.iter().map(|a| a.status).collect();
        assert_eq!(got, want.into_iter().collect::<Vec<_>>(), "{shape}");
    }
    assert_eq!(
        up.count(http::Method::GET, "smuggled"),
        0,
        "a smuggled request was handled"
    );
    assert_eq!(upstream_requests(&up), 0);
    assert_healthy(&cache).await;
}

#[tokio::test]
async fn methods_other_than_get_and_head_get_405_with_allow() {
    let up = FakeUpstream::start().await;
    let cache = TestDaemon::start(&up.url()).await;
    let addr = cache.daemon.addr();
    let d = format!("sha256:{}", "ab".repeat(32));
    let targets = [
        format!("/v2/a/blobs/{d}"),
        "/v2/a/manifests/v1".to_owned(),
        "/v2/a/blobs/uploads/".to_owned(),
        "/v2/".to_owned(),
    ];
    let methods = [
        "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT", "PROPFIND", "FOO",
    ];
    for target in &targets {
        for method in methods {
            let req = format!(
                "{method} {target} HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"
            );
            let ex = exchange(addr, req.as_bytes(), &[], Duration::from_secs(5)).await;
            assert!(ex.closed, "{method} {target}");
            assert_eq!(ex.answers.len(), 1, "{method} {target}: {:?}", ex.answers);
            let a = &ex.answers[0];
            assert_eq!(a.status, 405, "{method} {target}");
            assert_eq!(a.header("allow"), "GET, HEAD", "{method} {target}");
            assert!(a.text().contains("UNSUPPORTED"), "{method} {target}");
        }
    }
    // CONNECT in its authority form and OPTIONS *: refused the same way.
    for req in [
        "CONNECT 127.0.0.1:1 HTTP/1.1\r\nHost: 127.0.0.1:1\r\n\r\n",
        "OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    ] {
        let ex = exchange(addr, req.as_bytes(), &[], Duration::from_secs(5)).await;
        let got: Vec<u16> = ex.answers.iter().map(|a| a.status).collect();
        assert_eq!(got, [405], "{req:?}");
        assert_eq!(ex.answers[0].header("allow"), "GET, HEAD");
    }
    assert_eq!(upstream_requests(&up), 0);
    assert!(stored_blobs(&cache.dir.path().join("store")).is_empty());
    assert_healthy(&cache).await;
}

/// The one connection slot (`max_connections = 1`) of a daemon whose `client_write_timeout` is
/// `limit`, taken by a client that asked for a cached 16 MiB blob through a 4 KiB receive
/// buffer and reads nothing.
struct StalledSlot {
    _up: FakeUpstream,
    cache: TestDaemon,
    stalled: TcpStream,
    content: Vec<u8>,
}

const STALLED_BLOB_BYTES: usize = 16 << 20;

async fn a_slot_taken_by_a_client_that_never_reads(limit: Duration) -> StalledSlot {
    let up = FakeUpstream::start().await;
    let content = data(STALLED_BLOB_BYTES, 91);
    let d = up.blob(content.clone(), Behavior::default());
    let dir = tempfile::tempdir().unwrap();
    let cache = TestDaemon::start_in(dir, &up.url(), |c| {
        c.server.client_write_timeout = limit;
        c.server.max_connections = 1;
    })
    .await;
    let path = format!("/v2/test/app/blobs/{d}");
    // Cached first, so the stalled response is a hit read from the file.
    assert!(body(get(&cache.url(&path)).await).await.unwrap() == content);

    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stalled = within(socket.connect(cache.daemon.addr())).await.unwrap();
    let head = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    within(stalled.write_all(head.as_bytes())).await.unwrap();
    StalledSlot {
        _up: up,
        cache,
        stalled,
        content,
    }
}

/// A client that asks for a blob and never reads the answer is disconnected once the daemon's
/// write has been blocked for `client_write_timeout`, freeing its connection slot: with one
/// slot, the next client is served. The negative control is
/// `without_a_write_timeout_a_client_that_never_reads_keeps_its_slot`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_disconnected_at_the_write_timeout() {
    let StalledSlot {
        cache, mut stalled, ..
    } = a_slot_taken_by_a_client_that_never_reads(Duration::from_secs(1)).await;

    // The only slot is the stalled client's until the daemon gives up on it.
    let started = Instant::now();
    let served = within(get(&cache.url("/healthz"))).await;
    assert_eq!(served.status(), 200);
    let waited = started.elapsed();
    // Not before the limit (a slot freed early would mean it was never the stalled client's);
    // the upper bound is `within`'s: how long after it is load, not behaviour.
    assert!(
        waited >= Duration::from_millis(500),
        "the next client was served after {waited:?}, before the 1 s write timeout"
    );

    // What the stalled client can still read is what the kernels had buffered: not the blob.
    let (raw, closed) = read_until_close(&mut stalled, Duration::from_secs(5)).await;
    assert!(closed, "the daemon closed the stalled connection");
    assert!(
        raw.len() < STALLED_BLOB_BYTES,
        "a disconnected client got {} of {STALLED_BLOB_BYTES} bytes",
        raw.len()
    );
    assert_healthy(&cache).await;
}

/// The negative control of `a_client_that_never_reads_is_disconnected_at_the_write_timeout`:
/// with a write timeout of an hour (as good as none), the stalled client still holds the only
/// slot seconds later, and once it reads it gets the whole blob; closing it frees the slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_write_timeout_a_client_that_never_reads_keeps_its_slot() {
    let StalledSlot {
        cache,
        mut stalled,
        content,
        ..
    } = a_slot_taken_by_a_client_that_never_reads(Duration::from_secs(3600)).await;

    let next = tokio::time::timeout(Duration::from_secs(4), get(&cache.url("/healthz"))).await;
    assert!(
        next.is_err(),
        "the next client was served while a client that never reads held the only slot"
    );

    // The daemon kept the stalled response: reading now yields all of it.
    let mut raw = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let whole = within(async {
        loop {
            if let Some(end) = find(&raw, b"\r\n\r\n") {
                if raw.len() >= end + 4 + STALLED_BLOB_BYTES {
                    return end + 4;
                }
            }
            let n = stalled.read(&mut buf).await.unwrap();
            assert!(
                n > 0,
                "the stalled connection closed after {} bytes",
                raw.len()
            );
            raw.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    assert!(
        raw[whole..] == content[..],
        "the stalled client's body differs"
    );

    drop(stalled);
    assert_healthy(&cache).await;
}
