//! Faults from upstream, each as the daemon's clients see it: a body reset or stalled mid-blob
//! (resumed with a `Range` request, or restarted and compared when the upstream ignores ranges),
//! wrong bytes, a wrong `Content-Length`, 429/503 storms with and without `Retry-After`, and
//! upstreams that cannot be reached (DNS, connect, TLS). Clients get errors they retry on, never
//! a truncated body presented as complete; nothing unverified is committed.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::join_all;
use http::{Method, StatusCode};
use hyper::body::Incoming;

use cache_daemon::fill::RESUME_ATTEMPTS;
use stampede_oci::Digest;

use crate::common::real::{free_port, have, push_layout, write_layout, Registry};
use crate::common::upstream::{Behavior, FakeUpstream, Gate};
use crate::common::{blob_path, metrics};
use crate::common::{body, data, eventually, first_chunk, get, header, rest, within, TestDaemon};

const BLOB_BYTES: usize = 1024 * 1024;

fn assert_metric(text: &str, line: &str) {
    assert!(
        text.lines().any(|l| l == line),
        "missing `{line}` in:\n{text}"
    );
}

/// Nothing of `d` in the store and no temp file left behind.
fn assert_nothing_committed(cache: &TestDaemon, d: &Digest) {
    assert!(!cache.daemon.app().store.contains(d), "{d} was committed");
    let temps = std::fs::read_dir(cache.dir.path().join("store/tmp"))
        .unwrap()
        .count();
    assert_eq!(temps, 0, "temp files left behind");
}

/// A daemon whose upstream bodies count as stalled after `idle` without a byte.
async fn daemon_with_idle(up: &FakeUpstream, idle: Duration) -> TestDaemon {
    TestDaemon::start_in(tempfile::tempdir().unwrap(), &up.url(), |c| {
        c.upstream.body_idle_timeout = idle;
    })
    .await
}

/// A reader that has its response headers and first chunk.
struct Reader {
    body: Incoming,
    got: Vec<u8>,
    content_length: String,
}

async fn start_reader(url: &str) -> Reader {
    let resp = get(url).await;
    assert_eq!(resp.status(), 200);
    let content_length = header(&resp, "content-length").to_owned();
    let mut body = resp.into_body();
    let got = first_chunk(&mut body).await.to_vec();
    Reader {
        body,
        got,
        content_length,
    }
}

/// `n` readers of a fill held by a closed gate: the first starts it, the others follow it.
async fn held_readers(url: &str, n: usize) -> Vec<Reader> {
    let mut readers = Vec::new();
    for _ in 0..n {
        readers.push(start_reader(url).await);
    }
    readers
}

/// Every reader's body ends in an error before its `Content-Length`.
async fn assert_all_cut(readers: Vec<Reader>) {
    for r in readers {
        let declared: usize = r.content_length.parse().unwrap();
        match rest(r.body, r.got).await {
            Err(_) => {}
            Ok(got) => panic!("a complete body of {} / {declared} bytes", got.len()),
        }
    }
}

/// The first blob offset the daemon asked for on its second `GET` (its resume).
fn resume_offset(up: &FakeUpstream, d: &Digest) -> u64 {
    let ranges = up.ranges(&d.to_string());
    assert_eq!(
        ranges[0], None,
        "the first request is not ranged: {ranges:?}"
    );
    let resume = ranges[1].as_deref().expect("the resume is ranged");
    resume
        .strip_prefix("bytes=")
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected range {resume}"))
}

/// A blob whose first upstream body breaks at `BLOB_BYTES / 2` and whose later bodies pause at
/// three quarters until `gate` opens; a leader and two followers reading it before the break,
/// and a third joining after the resume. All four must get exactly `content`.
async fn readers_across_a_resume(
    content: &[u8],
    extra: Behavior,
) -> (FakeUpstream, TestDaemon, Digest) {
    let up = FakeUpstream::start().await;
    let gate = Gate::new(BLOB_BYTES * 3 / 4);
    let d = up.blob(
        content.to_vec(),
        Behavior {
            cut_after: Some(BLOB_BYTES / 2),
            fault_attempts: Some(1),
            gate: Some(gate.clone()),
            ..extra
        },
    );
    let cache = TestDaemon::start(&up.url()).await;
    let url = cache.url(&blob_path(&d));
    let mut readers = Vec::new();
    for _ in 0..3 {
        readers.push(start_reader(&url).await);
    }
    // The resume has been sent; the gate holds its body at 3/4, so the fill is still running.
    eventually(|| up.count(Method::GET, &d.to_string()) == 2).await;
    let app = cache.daemon.app().clone();
    eventually(|| {
        app.flights
            .get(&d)
            .is_some_and(|f| f.progress().written_bytes >= (BLOB_BYTES / 2) as u64)
    })
    .await;
    readers.push(start_reader(&url).await);
    assert!(
        !app.store.contains(&d),
        "the late reader must join mid-fill"
    );
    gate.open();
    for r in readers {
        assert_eq!(r.content_length, BLOB_BYTES.to_string());
        let got = rest(r.body, r.got).await.unwrap();
        assert!(got == content, "a reader got other bytes (gap or repeat)");
    }
    eventually(|| app.store.contains(&d)).await;
    let m = metrics(&cache).await;
    assert_metric(
        &m,
        r#"cache_daemon_requests_total{kind="blob",result="coalesced"} 3"#,
    );
    assert_metric(&m, r#"cache_daemon_fills_total{result="committed"} 1"#);
    (up, cache, d)
}

#[tokio::test]
async fn reset_mid_blob_resumes_with_a_range_and_every_reader_gets_exact_bytes() {
    let content = data(BLOB_BYTES, 101);
    let (up, cache, d) = readers_across_a_resume(&content, Behavior::default()).await;
    let offset = resume_offset(&up, &d);
    assert!(
        offset > 0 && offset <= (BLOB_BYTES / 2) as u64,
        "resumed from {offset}"
    );
    assert_eq!(up.count(Method::GET, &d.to_string()), 2);
    let m = metrics(&cache).await;
    assert_metric(&m, r#"cache_daemon_fill_resumes_total{how="range"} 1"#);
    // The resumed body started where the first stopped: nothing was fetched twice.
    assert_metric(
        &m,
        &format!("cache_daemon_upstream_bytes_total {BLOB_BYTES}"),
    );
    // A hit now, the same bytes.
    assert!(body(get(&cache.url(&blob_path(&d))).await).await.unwrap() == content);
}

#[tokio::test]
async fn reset_with_an_upstream_that_ignores_range_restarts_and_skips_what_it_has() {
    let content = data(BLOB_BYTES, 102);
    let (up, cache, d) = readers_across_a_resume(
        &content,
        Behavior {
            ignore_range: true,
            ..Behavior::default()
        },
    )
    .await;
    let offset = resume_offset(&up, &d);
    let m = metrics(&cache).await;
    assert_metric(&m, r#"cache_daemon_fill_resumes_total{how="restart"} 1"#);
    // The whole blob came again: the first `offset` bytes twice.
    assert_metric(
        &m,
        &format!(
            "cache_daemon_upstream_bytes_total {}",
            BLOB_BYTES as u64 + offset
        ),
    );
    assert_metric(&m, "cache_daemon_digest_mismatches_total 0");
}

#[tokio::test]
async fn restart_with_different_bytes_fails_as_mismatch_and_cuts_every_reader() {
    let up = FakeUpstream::start().await;
    let gate = Gate::new(BLOB_BYTES / 4);
    let d = up.blob(
        data(BLOB_BYTES, 103),
        Behavior {
            cut_after: Some(BLOB_BYTES / 2),
            fault_attempts: Some(1),
            ignore_range: true,
            differ_after_first: true,
            gate: Some(gate.clone()),
            ..Behavior::default()
        },
    );
    let cache = TestDaemon::start(&up.url()).await;
    let url = cache.url(&blob_path(&d));
    let readers = held_readers(&url, 3).await;
    gate.open();
    assert_all_cut(readers).await;
    eventually(|| cache.daemon.app().flights.is_empty()).await;
    assert_nothing_committed(&cache, &d);
    assert_eq!(up.count(Method::GET, &d.to_string()), 2);
    let m = metrics(&cache).await;
    assert_metric(&m, r#"cache_daemon_fill_resumes_total{how="restart"} 1"#);
    assert_metric(&m, r#"cache_daemon_fills_total{result="mismatch"} 1"#);
    assert_metric(&m, "cache_daemon_digest_mismatches_total 1");
    // The next request retries and, the upstream healthy again, gets the blob.
    up.set_behavior(&d, Behavior::default());
    assert_eq!(body(get(&url).await).await.unwrap().len(), BLOB_BYTES);
    assert!(cache.daemon.app().store.contains(&d));
}

/// A `206` that starts elsewhere than asked would put bytes at the wrong offsets: the fill fails,
/// readers are cut, nothing is committed, and the next request starts afresh.
#[tokio::test]
async fn partial_answer_from_the_wrong_offset_fails_the_fill() {
    let up = FakeUpstream::start().await;
    let content = data(BLOB_BYTES, 113);
    let gate = Gate::new(BLOB_BYTES / 8);
    let d = up.blob(
        content.clone(),
        Behavior {
            cut_after: Some(BLOB_BYTES / 2),
            fault_attempts: Some(1),
            range_early: true,
            gate: Some(gate.clone()),
            ..Behavior::default()
        },
    );
    let cache = TestDaemon::start(&up.url()).await;
    let url = cache.url(&blob_path(&d));
    let readers = held_readers(&url, 3).await;
    gate.open();
    assert_all_cut(readers).await;
    eventually(|| cache.daemon.app().flights.is_empty()).await;
    assert_nothing_committed(&cache, &d);
    // Asked once, refused: no further resume from a source that does not continue.
    assert_eq!(up.count(Method::GET, &d.to_string()), 2);
    let m = metrics(&cache).await;
    assert!(!m.contains("cache_daemon_fill_resumes_total{"), "{m}");
    assert_metric(&m, r#"cache_daemon_fills_total{result="failed"} 1"#);
    up.set_behavior(&d, Behavior::default());
    assert!(body(get(&url).await).await.unwrap() == content);
}

/// With one upstream slot, the resume must not wait for the slot its own broken body held.
#[tokio::test]
async fn resume_with_one_upstream_slot_does_not_wait_for_itself() {
    let up = FakeUpstream::start().await;
    let content = data(BLOB_BYTES, 111);
    let d = up.blob(
        content.clone(),
        Behavior {
            cut_after: Some(BLOB_BYTES / 2),
            fault_attempts: Some(1),
            ..Behavior::default()
        },
    );
    let cache = TestDaemon::start_in(tempfile::tempdir().unwrap(), &up.url(), |c| {
        c.upstream.concurrency = 1;
    })
    .await;
    assert!(body(get(&cache.url(&blob_path(&d))).await).await.unwrap() == content);
    assert_eq!(up.count(Method::GET, &d.to_string()), 2);
}

/// A TCP relay to `target` that breaks the first connection whose answer passes `cut_bytes`
/// (closing it after exactly that many response bytes) and relays every other one whole.
async fn cutting_relay(target: std::net::SocketAddr, cut_bytes: usize) -> String {
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cut_done = std::sync::Arc::new(AtomicBool::new(false));
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let cut_done = cut_done.clone();
            tokio::spawn(async move {
                let Ok(upstream) = tokio::net::TcpStream::connect(target).await else {
                    return;
                };
                let (mut client_read, mut client_write) = client.into_split();
                let (mut upstream_read, mut upstream_write) = upstream.into_split();
                let requests = tokio::spawn(async move {
                    tokio::io::copy(&mut client_read, &mut upstream_write)
                        .await
                        .ok();
                });
                let mut buf = vec![0; 16 * 1024];
                let mut relayed = 0;
                loop {
                    let n = match upstream_read.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if relayed + n > cut_bytes && !cut_done.swap(true, Ordering::SeqCst) {
                        client_write
                            .write_all(&buf[..cut_bytes - relayed])
                            .await
                            .ok();
                        break;
                    }
                    if client_write.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    relayed += n;
                }
                requests.abort();
            });
        }
    });
    format!("http://{addr}")
}

/// The real registry (Debian's `docker-registry`) honours the resume's `Range` with a `206`
/// whose `Content-Range` the daemon accepts: a connection broken mid-blob costs one ranged
/// request, and the client gets the exact blob.
#[tokio::test]
async fn reset_mid_blob_against_the_real_registry_resumes_with_a_range() {
    if !have("docker-registry") || !have("skopeo") {
        return;
    }
    let (registry, layer, _work) = tokio::task::spawn_blocking(|| {
        let registry = Registry::start(None);
        let work = tempfile::tempdir().unwrap();
        let layout = work.path().join("layout");
        let image = write_layout(&layout, "v1", &[BLOB_BYTES], 112);
        push_layout(&layout, &format!("127.0.0.1:{}/test/app:v1", registry.port));
        (registry, image.layers[0].clone(), work)
    })
    .await
    .unwrap();
    let target = std::net::SocketAddr::from(([127, 0, 0, 1], registry.port));
    let relay = cutting_relay(target, BLOB_BYTES / 3).await;
    let cache = TestDaemon::start(&relay).await;
    let before = registry.count("GET", &layer.to_string());
    let got = body(get(&cache.url(&blob_path(&layer))).await)
        .await
        .unwrap();
    assert_eq!(Digest::of(&got), layer);
    assert_eq!(registry.count("GET", &layer.to_string()) - before, 2);
    let m = metrics(&cache).await;
    assert_metric(&m, r#"cache_daemon_fill_resumes_total{how="range"} 1"#);
    assert_metric(&m, r#"cache_daemon_fills_total{result="committed"} 1"#);
}

#[tokio::test]
async fn reset_on_every_attempt_cuts_readers_after_bounded_resumes() {
    let up = FakeUpstream::start().await;
    let content = data(BLOB_BYTES, 104);
    let gate = Gate::new(BLOB_BYTES / 8);
    let d = up.blob(
        content.clone(),
        Behavior {
            cut_after: Some(BLOB_BYTES / 4),
            gate: Some(gate.clone()),
            ..Behavior::default()
        },
    );
    let cache = TestDaemon::start(&up.url()).await;
    let url = cache.url(&blob_path(&d));
    let readers = held_readers(&url, 4).await;
    gate.open();
    assert_all_cut(readers).await;
    eventually(|| cache.daemon.app().flights.is_empty()).await;
    assert_nothing_committed(&cache, &d);
    let attempts = 1 + RESUME_ATTEMPTS as usize;
    assert_eq!(up.count(Method::GET, &d.to_string()), attempts);
    let m = metrics(&cache).await;
    assert_metric(
        &m,
        &format!(r#"cache_daemon_fill_resumes_total{{how="range"}} {RESUME_ATTEMPTS}"#),
    );
    assert_metric(&m, r#"cache_daemon_fills_total{result="failed"} 1"#);
    up.set_behavior(&d, Behavior::default());
    assert!(body(get(&url).await).await.unwrap() == content);
    assert_eq!(up.count(Method::GET, &d.to_string()), attempts + 1);
}

#[tokio::test]
async fn stalled_body_times_out_and_resumes_from_the_offset() {
    let up = FakeUpstream::start().await;
    let content = data(BLOB_BYTES, 105);
    let d = up.blob(
        content.clone(),
        Behavior {
            stall_after: Some(BLOB_BYTES / 2),
            fault_attempts: Some(1),
            ..Behavior::default()
        },
    );
    let cache = daemon_with_idle(&up, Duration::from_millis(300)).await;
    let url = cache.url(&blob_path(&d));
    let started = Instant::now();
    let bodies = join_all((0..3).map(|_| async { body(get(&url).await).await.unwrap() })).await;
    assert!(bodies.iter().all(|b| *b == content));
    // The stall cost about one idle timeout, not a response timeout.
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    // Every byte before the stall had arrived: the resume asks for exactly the rest.
    assert_eq!(resume_offset(&up, &d), (BLOB_BYTES / 2) as u64);
    let m = metrics(&cache).await;
    assert_metric(&m, r#"cache_daemon_fill_resumes_total{how="range"} 1"#);
    assert_metric(&m, r#"cache_daemon_fills_total{result="committed"} 1"#);
}

#[tokio::test]
async fn stall_on_every_attempt_cuts_readers_and_next_request_retries() {
    let up = FakeUpstream::start().await;
    let content = data(BLOB_BYTES, 106);
    let gate = Gate::new(BLOB_BYTES / 8);
    let d = up.blob(
        content.clone(),
        Behavior {
            stall_after: Some(BLOB_BYTES / 4),
            gate: Some(gate.clone()),
            ..Behavior::default()
        },
    );
    let cache = daemon_with_idle(&up, Duration::from_millis(300)).await;
    let url = cache.url(&blob_path(&d));
    let readers = held_readers(&url, 3).await;
    gate.open();
    assert_all_cut(readers).await;
    eventually(|| cache.daemon.app().flights.is_empty()).await;
    assert_nothing_committed(&cache, &d);
    // The resumed body stalls before its first new byte: a hung upstream, given up after one
    // resume rather than after RESUME_ATTEMPTS idle timeouts.
    assert_eq!(up.count(Method::GET, &d.to_string()), 2);
    up.set_behavior(&d, Behavior::default());
    assert!(body(get(&url).await).await.unwrap() == content);
}

#[tokio::test]
async fn wrong_content_length_never_yields_a_complete_looking_body() {
    let up = FakeUpstream::start().await;
    let gate = Gate::new(BLOB_BYTES / 2);
    let longer = up.blob(
        data(BLOB_BYTES, 107),
        Behavior {
            length_delta: 1000,
            gate: Some(gate.clone()),
            ..Behavior::default()
        },
    );
    let shorter = up.blob(
        data(BLOB_BYTES, 108),
        Behavior {
            length_delta: -1000,
            gate: Some(gate.clone()),
            ..Behavior::default()
        },
    );
    let cache = TestDaemon::start(&up.url()).await;
    let mut readers = Vec::new();
    for (d, declared) in [(&longer, BLOB_BYTES + 1000), (&shorter, BLOB_BYTES - 1000)] {
        for r in held_readers(&cache.url(&blob_path(d)), 3).await {
            // Headers go out once the upstream answered, with its length.
            assert_eq!(r.content_length, declared.to_string());
            readers.push(r);
        }
    }
    gate.open();
    // The body is then cut short: never all of the declared length.
    assert_all_cut(readers).await;
    for d in [&longer, &shorter] {
        eventually(|| cache.daemon.app().flights.is_empty()).await;
        assert_nothing_committed(&cache, d);
    }
    let m = metrics(&cache).await;
    // Declared longer: the body ends early, after every byte the blob has; the resume asks for
    // the bytes past it and the upstream refuses the range with a 416, which ends the fill
    // (no third GET).
    assert_eq!(
        up.answered(&longer.to_string()),
        [
            (None, StatusCode::OK),
            (
                Some(format!("bytes={BLOB_BYTES}-")),
                StatusCode::RANGE_NOT_SATISFIABLE
            ),
        ]
    );
    // Declared shorter: the body is cut at the declared length, which does not hash right.
    assert_metric(&m, r#"cache_daemon_fills_total{result="mismatch"} 1"#);
    assert_metric(&m, r#"cache_daemon_fills_total{result="failed"} 1"#);
}

/// Requests to the daemon during an upstream's Retry-After window are answered without being
/// sent upstream.
async fn storm(cache: &TestDaemon, d: &Digest, requests: usize) -> Vec<(u16, String, Bytes)> {
    let url = cache.url(&blob_path(d));
    join_all((0..requests).map(|_| async {
        let resp = get(&url).await;
        let status = resp.status().as_u16();
        let retry_after = header(&resp, "retry-after").to_owned();
        (status, retry_after, body(resp).await.unwrap())
    }))
    .await
}

#[tokio::test]
async fn throttle_storms_hold_requests_back_and_recover() {
    let up = FakeUpstream::start().await;
    let cache = TestDaemon::start(&up.url()).await;
    for (seed, code, retry_after_secs, client_status) in [
        // 429 without Retry-After: the daemon assumes a second.
        (109, 429, None, 429),
        // A window of seconds, so the storm fits inside it even on a loaded machine.
        (110, 503, Some(3), 503),
    ] {
        let window = Duration::from_secs(retry_after_secs.unwrap_or(1));
        let content = data(64 * 1024, seed);
        let d = up.blob(content.clone(), Behavior::default());
        let url = cache.url(&blob_path(&d));
        up.set_behavior(
            &d,
            Behavior {
                statuses: vec![code; 50],
                retry_after_secs,
                ..Behavior::default()
            },
        );
        let before = up.count(Method::GET, &d.to_string());
        let first = get(&url).await;
        let opened = Instant::now();
        assert_eq!(first.status().as_u16(), client_status);
        if let Some(s) = retry_after_secs {
            assert_eq!(header(&first, "retry-after"), s.to_string());
        }
        let text = String::from_utf8(body(first).await.unwrap().to_vec()).unwrap();
        let oci_code = if code == 429 {
            "TOOMANYREQUESTS"
        } else {
            "UNAVAILABLE"
        };
        assert!(text.contains(oci_code), "{text}");
        // The storm: answered with Retry-After, and not sent upstream.
        for (status, retry_after, _) in storm(&cache, &d, 16).await {
            assert_eq!(status, client_status);
            let secs: u64 = retry_after
                .parse()
                .unwrap_or_else(|_| panic!("Retry-After {retry_after:?} is not whole seconds"));
            assert!((1..=window.as_secs()).contains(&secs), "{secs}");
        }
        // At most one upstream request per window: exactly the first when the storm fits in
        // one window (it does, bar a stall of the machine); a window that ran out during the
        // storm lets one more request through, which is answered the same and opens the next.
        let windows = 1 + (opened.elapsed().as_millis() / window.as_millis()) as usize;
        let sent = up.count(Method::GET, &d.to_string()) - before;
        assert!(
            (1..=windows).contains(&sent),
            "{sent} upstream requests in {windows} Retry-After windows"
        );
        // The upstream is healthy again: once the window passes, the next request goes up and
        // is served (requests until then are held back, never sent).
        up.set_behavior(&d, Behavior::default());
        let before = up.count(Method::GET, &d.to_string());
        let served = within(async {
            loop {
                let resp = get(&url).await;
                if resp.status() == 200 {
                    return body(resp).await.unwrap();
                }
                assert_eq!(resp.status().as_u16(), client_status);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
        assert!(served == content);
        assert_eq!(up.count(Method::GET, &d.to_string()), before + 1);
    }
    // Two answers opened a window; requests held back in them count too (concurrent ones
    // coalesce onto one fill, so how many varies).
    let m = metrics(&cache).await;
    let throttled: u64 = m
        .lines()
        .find_map(|l| l.strip_prefix("cache_daemon_upstream_throttled_total "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no throttled count in:\n{m}"));
    assert!(throttled >= 4, "{throttled}");
}

#[tokio::test]
async fn service_unavailable_without_retry_after_fails_each_request_alone() {
    let up = FakeUpstream::start().await;
    let content = data(64 * 1024, 110);
    let d = up.blob(
        content.clone(),
        Behavior {
            statuses: vec![503, 503, 503],
            ..Behavior::default()
        },
    );
    let cache = TestDaemon::start(&up.url()).await;
    let url = cache.url(&blob_path(&d));
    for i in 1..=3 {
        let resp = get(&url).await;
        assert_eq!(resp.status(), 502);
        assert_eq!(header(&resp, "retry-after"), "");
        let text = String::from_utf8(body(resp).await.unwrap().to_vec()).unwrap();
        assert!(
            text.contains("UNAVAILABLE") && text.contains("503"),
            "{text}"
        );
        // One upstream request per client request: no window, no retry storm of our own.
        assert_eq!(up.count(Method::GET, &d.to_string()), i);
    }
    assert!(body(get(&url).await).await.unwrap() == content);
    assert_eq!(up.count(Method::GET, &d.to_string()), 4);
}

/// A daemon in front of `upstream` (which cannot serve anything) answers a blob request with a
/// clear 5xx OCI error within `bound`, commits nothing, and stays healthy.
async fn fails_fast(upstream: &str, bound: Duration) {
    let cache = TestDaemon::start_in(tempfile::tempdir().unwrap(), upstream, |c| {
        c.upstream.connect_timeout = Duration::from_secs(2);
        c.upstream.response_timeout = Duration::from_secs(2);
    })
    .await;
    let d = Digest::of(b"never served");
    let started = Instant::now();
    let resp = get(&cache.url(&blob_path(&d))).await;
    let elapsed = started.elapsed();
    let status = resp.status();
    let text = String::from_utf8(body(resp).await.unwrap().to_vec()).unwrap();
    assert!(
        status == 502 || status == 504,
        "{upstream}: {status} {text}"
    );
    assert!(text.contains("UNAVAILABLE"), "{upstream}: {text}");
    assert!(elapsed < bound, "{upstream}: answered after {elapsed:?}");
    assert_nothing_committed(&cache, &d);
    assert_eq!(
        get(&cache.url("/healthz")).await.status(),
        200,
        "{upstream}"
    );
    let m = metrics(&cache).await;
    assert_metric(&m, r#"cache_daemon_fills_total{result="failed"} 1"#);
    cache.stop().await;
}

#[tokio::test]
async fn dns_and_connect_failures_fail_fast() {
    fails_fast("http://nonexistent.invalid", Duration::from_secs(5)).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    fails_fast(&format!("http://127.0.0.1:{port}"), Duration::from_secs(3)).await;
}

#[tokio::test]
async fn tls_to_a_plain_http_upstream_fails_fast() {
    let up = FakeUpstream::start().await;
    let https = up.url().replace("http://", "https://");
    fails_fast(&https, Duration::from_secs(3)).await;
    // The plain upstream saw no HTTP request: the handshake failed first.
    assert_eq!(up.count(Method::GET, "/v2/"), 0);
}

/// `openssl s_server` with a fresh self-signed certificate, killed on drop.
struct SelfSignedServer {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for SelfSignedServer {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

async fn self_signed_server() -> SelfSignedServer {
    let dir = tempfile::tempdir().unwrap();
    let (key, cert) = (dir.path().join("key.pem"), dir.path().join("cert.pem"));
    let made = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let port = free_port();
    let child = std::process::Command::new("openssl")
        .args(["s_server", "-quiet", "-www", "-accept"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("-cert")
        .arg(&cert)
        .arg("-key")
        .arg(&key)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let server = SelfSignedServer {
        child,
        port,
        _dir: dir,
    };
    within(async {
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    server
}

#[tokio::test]
async fn tls_with_an_untrusted_certificate_fails_fast() {
    if !have("openssl") {
        return;
    }
    let server = self_signed_server().await;
    fails_fast(
        &format!("https://127.0.0.1:{}", server.port),
        Duration::from_secs(3),
    )
    .await;
}
