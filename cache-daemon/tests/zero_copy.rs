//! Bytes the kernel sends from blob files (`zero_copy`): hits, ranges of hits, fill followers
//! behind the in-memory window and `verify_on_read` hits, each checked byte for byte and header
//! for header against the blob, with `cache_daemon_sent_by_kernel_bytes_total` showing that the
//! kernel sent them (and that spans under `MIN_SPAN_BYTES` were copied instead); and a
//! keep-alive connection whose responses (GET, HEAD, 206, 404) follow each other exactly on the
//! wire.

use http::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use cache_daemon::zero_copy::{MIN_SPAN_BYTES, SPAN_BYTES};

use crate::common::upstream::{Behavior, FakeUpstream, Gate};
use crate::common::{
    blob_path, body, data, eventually, first_chunk, get, header, metrics, request, rest, within,
    TestDaemon,
};

/// `cache_daemon_sent_by_kernel_bytes_total`.
async fn kernel_bytes(cache: &TestDaemon) -> u64 {
    let text = metrics(cache).await;
    text.lines()
        .find_map(|l| l.strip_prefix("cache_daemon_sent_by_kernel_bytes_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no kernel-sent counter in\n{text}"))
}

/// A daemon with `content` committed (fetched once through it).
async fn committed(
    content: &[u8],
    tweak: impl FnOnce(&mut cache_daemon::Config),
) -> (FakeUpstream, TestDaemon, String) {
    let up = FakeUpstream::start().await;
    let d = up.blob(content.to_vec(), Behavior::default());
    let cache = TestDaemon::start_in(tempfile::tempdir().unwrap(), &up.url(), tweak).await;
    let url = cache.url(&blob_path(&d));
    assert!(body(get(&url).await).await.unwrap()[..] == *content);
    let app = cache.daemon.app().clone();
    eventually(|| app.store.contains(&d)).await;
    (up, cache, url)
}

#[tokio::test]
async fn a_hit_is_sent_by_the_kernel_with_its_headers() {
    // Three whole spans and a last one just long enough to be sent by the kernel too.
    let content = data(3 * SPAN_BYTES + MIN_SPAN_BYTES, 41);
    let (up, cache, url) = committed(&content, |_| {}).await;
    let digest = stampede_oci::Digest::of(&content).to_string();
    let before = kernel_bytes(&cache).await;
    let resp = get(&url).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "content-length"), content.len().to_string());
    assert_eq!(header(&resp, "docker-content-digest"), digest);
    assert_eq!(header(&resp, "etag"), format!("\"{digest}\""));
    assert_eq!(header(&resp, "accept-ranges"), "bytes");
    assert!(body(resp).await.unwrap()[..] == content[..]);
    assert_eq!(kernel_bytes(&cache).await - before, content.len() as u64);
    assert_eq!(up.count(Method::GET, &digest), 1);
}

#[tokio::test]
async fn ranges_of_a_hit_are_sent_by_the_kernel() {
    let len = 2 * (1 << 20) + 77;
    let content = data(len, 42);
    let (_up, cache, url) = committed(&content, |_| {}).await;
    let before = kernel_bytes(&cache).await;
    let mut sent = 0;
    for (range, from, to) in [
        ("bytes=0-0", 0, 1),
        ("bytes=5-9", 5, 10),
        ("bytes=1048570-", 1_048_570, len),
        ("bytes=-3", len - 3, len),
        ("bytes=100-1500000", 100, 1_500_001),
    ] {
        // Short ones are copied; longer ones go in spans, whose last may be short and copied.
        let span = (to - from) % SPAN_BYTES;
        let copied = if span < MIN_SPAN_BYTES { span } else { 0 };
        let r = request("GET", &url, &[("range", range)]).await;
        assert_eq!(r.status(), 206, "{range}");
        assert_eq!(header(&r, "content-length"), (to - from).to_string());
        assert_eq!(
            header(&r, "content-range"),
            format!("bytes {from}-{}/{len}", to - 1),
            "{range}"
        );
        assert!(body(r).await.unwrap()[..] == content[from..to], "{range}");
        sent += (to - from - copied) as u64;
    }
    assert_eq!(kernel_bytes(&cache).await - before, sent);
}

/// A reader that joins a fill once byte 0 has left the in-memory window gets every byte from
/// the temp file through the kernel, before and after the commit.
#[tokio::test]
async fn a_follower_behind_the_window_is_sent_the_temp_file_by_the_kernel() {
    const BIG: usize = 12 << 20;
    let window = usize::try_from(cache_daemon::flight::WINDOW_BYTES).unwrap();
    let content = data(BIG, 43);
    let up = FakeUpstream::start().await;
    let gate = Gate::new(window + (6 << 20));
    let d = up.blob(
        content.clone(),
        Behavior {
            gate: Some(gate.clone()),
            ..Behavior::default()
        },
    );
    let cache = TestDaemon::start(&up.url()).await;
    let url = cache.url(&blob_path(&d));
    let mut leader = get(&url).await.into_body();
    let first = first_chunk(&mut leader).await;
    let app = cache.daemon.app().clone();
    eventually(|| {
        app.flights
            .get(&d)
            .is_some_and(|f| f.progress().written_bytes >= gate.after_bytes as u64)
    })
    .await;
    assert!(app.flights.get(&d).unwrap().recent(0, 1).is_none());
    let before = kernel_bytes(&cache).await;
    let late = get(&url).await;
    assert_eq!(late.status(), 200);
    assert_eq!(header(&late, "content-length"), BIG.to_string());
    assert_eq!(header(&late, "docker-content-digest"), d.to_string());
    let behind = request("GET", &url, &[("range", "bytes=1000-")]).await;
    assert_eq!(behind.status(), 206);
    assert_eq!(
        header(&behind, "content-range"),
        format!("bytes 1000-{}/{BIG}", BIG - 1)
    );
    gate.open();
    let (late, behind, leader) = within(async {
        (
            body(late).await.unwrap(),
            body(behind).await.unwrap(),
            rest(leader, first.to_vec()).await.unwrap(),
        )
    })
    .await;
    assert!(late[..] == content[..]);
    assert!(behind[..] == content[1000..]);
    assert!(leader[..] == content[..]);
    // What the two late readers joined behind went out through the kernel, at least.
    let by_kernel = kernel_bytes(&cache).await - before;
    assert!(
        by_kernel >= (2 * gate.after_bytes - 1000) as u64,
        "{by_kernel} bytes sent by the kernel"
    );
    assert_eq!(up.count(Method::GET, &d.to_string()), 1);
}

/// With `verify_on_read`, a hit is hashed as it is read and the kernel sends what was hashed;
/// the whole body and a (short, so copied) range match the blob.
#[tokio::test]
async fn a_verify_on_read_hit_is_hashed_then_sent_by_the_kernel() {
    // Hashed in 128 KiB chunks; the last is long enough for the kernel path.
    let content = data((1 << 20) + MIN_SPAN_BYTES + 1, 44);
    let (_up, cache, url) = committed(&content, |c| c.store.verify_on_read = true).await;
    let before = kernel_bytes(&cache).await;
    let resp = get(&url).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "content-length"), content.len().to_string());
    assert!(body(resp).await.unwrap()[..] == content[..]);
    let r = request("GET", &url, &[("range", "bytes=10-20")]).await;
    assert_eq!(r.status(), 206);
    assert!(body(r).await.unwrap()[..] == content[10..21]);
    assert_eq!(kernel_bytes(&cache).await - before, content.len() as u64);
}

/// One response off a raw connection: head (lower-cased header names) and `body_bytes` of body.
async fn response(conn: &mut TcpStream, body_bytes: impl Fn(&str) -> usize) -> (String, Vec<u8>) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(within(conn.read(&mut byte)).await.unwrap(), 1, "head cut");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
    let mut body = vec![0u8; body_bytes(&head)];
    within(conn.read_exact(&mut body)).await.unwrap();
    (head, body)
}

fn content_length(head: &str) -> usize {
    head.lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .and_then(|v| v.trim().parse().ok())
        .expect("a content-length")
}

/// GET, HEAD, a range and a 404 one after another on one connection: each response is framed
/// exactly (a kernel-sent body ends where its `Content-Length` says, so the next head follows
/// it), and the connection stays open.
#[tokio::test]
async fn kernel_sent_bodies_keep_a_connection_alive_and_framed() {
    let content = data((1 << 20) + 5, 45);
    let (_up, cache, url) = committed(&content, |_| {}).await;
    let path = url.trim_start_matches(&cache.daemon.url()).to_owned();
    let mut conn = within(TcpStream::connect(cache.daemon.addr()))
        .await
        .unwrap();
    let ask = |method: &str, extra: &str| {
        format!("{method} {path} HTTP/1.1\r\nhost: cache\r\n{extra}\r\n").into_bytes()
    };
    conn.write_all(&ask("GET", "")).await.unwrap();
    let (head, got) = response(&mut conn, content_length).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(got == content);
    conn.write_all(&ask("HEAD", "")).await.unwrap();
    let (head, _) = response(&mut conn, |_| 0).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(content_length(&head), content.len());
    conn.write_all(&ask("GET", "range: bytes=1048570-\r\n"))
        .await
        .unwrap();
    let (head, got) = response(&mut conn, content_length).await;
    assert!(head.starts_with("http/1.1 206"), "{head}");
    assert!(got[..] == content[1_048_570..]);
    let missing = format!(
        "GET /v2/test/app/blobs/sha256:{} HTTP/1.1\r\nhost: cache\r\n\r\n",
        "0".repeat(64)
    );
    conn.write_all(missing.as_bytes()).await.unwrap();
    let (head, _) = response(&mut conn, content_length).await;
    assert!(head.starts_with("http/1.1 404"), "{head}");
    conn.write_all(&ask("GET", "range: bytes=0-9\r\n"))
        .await
        .unwrap();
    let (head, got) = response(&mut conn, content_length).await;
    assert!(head.starts_with("http/1.1 206"), "{head}");
    assert!(got[..] == content[..10]);
}

/// An upstream that sends no length: the fill's readers get a chunked body, whose chunks hyper
/// frames around the kernel-sent spans; the body is the blob, byte for byte.
#[tokio::test]
async fn a_chunked_follower_is_framed_around_kernel_sent_spans() {
    let content = data(2 * SPAN_BYTES + 3 * MIN_SPAN_BYTES, 46);
    let up = FakeUpstream::start().await;
    let gate = Gate::new(SPAN_BYTES + MIN_SPAN_BYTES);
    let d = up.blob(
        content.clone(),
        Behavior {
            omit_length: true,
            gate: Some(gate.clone()),
            ..Behavior::default()
        },
    );
    let cache = TestDaemon::start(&up.url()).await;
    let url = cache.url(&blob_path(&d));
    let mut leader = get(&url).await;
    assert_eq!(header(&leader, "transfer-encoding"), "chunked");
    assert_eq!(header(&leader, "content-length"), "");
    let first = first_chunk(leader.body_mut()).await;
    let app = cache.daemon.app().clone();
    eventually(|| {
        app.flights
            .get(&d)
            .is_some_and(|f| f.progress().written_bytes >= gate.after_bytes as u64)
    })
    .await;
    // Joins with a whole span written: sent by the kernel, inside chunk framing.
    let before = kernel_bytes(&cache).await;
    let late = get(&url).await;
    assert_eq!(header(&late, "transfer-encoding"), "chunked");
    gate.open();
    let (late, leader) = within(async {
        (
            body(late).await.unwrap(),
            rest(leader.into_body(), first.to_vec()).await.unwrap(),
        )
    })
    .await;
    assert!(late[..] == content[..]);
    assert!(leader[..] == content[..]);
    let by_kernel = kernel_bytes(&cache).await - before;
    assert!(
        by_kernel >= SPAN_BYTES as u64,
        "{by_kernel} bytes sent by the kernel"
    );
}
