//! Blobs: single-flight, fan-out streaming, failures cutting readers, ranges, restarts.

use std::time::Duration;

use futures_util::future::join_all;
use http::Method;

use crate::common::blob_path;
use crate::common::upstream::{Behavior, FakeUpstream, Gate};
use crate::common::{
    body, data, eventually, first_chunk, get, header, request, rest, within, TestDaemon,
};

const BLOB_BYTES: usize = 1024 * 1024;

#[tokio::test]
async fn concurrent_misses_fetch_upstream_once() {
    let up = FakeUpstream::start().await;
    let content = data(BLOB_BYTES, 1);
    let d = up.blob(
        content.clone(),
        Behavior {
            chunk_delay: Duration::from_millis(2),
            ..Behavior::default()
        },
    );
    let cache = TestDaemon::start(&up.url()).await;
    let url = cache.url(&blob_path(&d));
    let bodies = within(join_all((0..32).map(|_| async {
        let resp = get(&url).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(header(&resp, "docker-content-digest"), d.to_string());
        body(resp).await.unwrap()
    })))
    .await;
    assert!(bodies.iter().all(|b| b[..] == content[..]));
    assert_eq!(up.count(Method::GET, &d.to_string()), 1);
    // Now a hit: no more upstream requests.
    assert_eq!(body(get(&url).await).await.unwrap().len(), BLOB_BYTES);
    assert_eq!(up.count(Method::GET, &d.to_string()), 1);
    let metrics = String::from_utf8(
        body(get(&cache.url("/metrics")).await)
            .await
            .unwrap()
            .to_vec(),
    )
    .unwrap();
    assert!(
        metrics.contains(r#"cache_daemon_requests_total{kind="blob",result="miss"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"cache_daemon_requests_total{kind="blob",result="coalesced"} 31"#),
        "{metrics}"
    );
    // Counted where requests are sent: one upstream GET, answered 2xx.
    assert!(
        metrics.contains(r#"cache_daemon_upstream_requests_total{kind="blob",status="2xx"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"cache_daemon_requests_total{kind="blob",result="hit"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!("cache_daemon_upstream_bytes_total {BLOB_BYTES}")),
        "{metrics}"
    );
}

#[tokio::test]
async fn follower_gets_first_byte_before_fill_completes() {
    let up = FakeUpstream::start().await;
    let content = data(BLOB_BYTES, 2);
    let gate = Gate::new(BLOB_BYTES / 2);
    let d = up.blob(
        content.clone(),
        Behavior {
            gate: Some(gate.clone()),
            ..Behavior::default()
        },
    );
    let cache = TestDaemon::start(&up.url()).await;
    let url = cache.url(&blob_path(&d));
    // Eight readers; the upstream holds the second half back, so the fill cannot complete.
    let mut readers = Vec::new();
    for _ in 0..8 {
        let resp = get(&url).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(header(&resp, "content-length"), BLOB_BYTES.to_string());
        let mut b = resp.into_body();
        let first = first_chunk(&mut b).await;
        readers.push((b, first.to_vec()));
    }
    assert!(
        !cache.daemon.app().store.contains(&d),
        "fill must still be in progress"
    );
    // A reader that joins mid-fill also streams at once.
    let mut late = get(&url).await.into_body();
    let late_first = first_chunk(&mut late).await;
    readers.push((late, late_first.to_vec()));
    gate.open();
    for (b, got) in readers {
        assert_eq!(rest(b, got).await.unwrap(), content);
    }
    assert_eq!(up.count(Method::GET, &d.to_string()), 1);
}

#[tokio::test]
async fn digest_mismatch_commits_nothing_and_cuts_every_reader() {
    let up = FakeUpstream::start().await;
    let gate = Gate::new(BLOB_BYTES / 2);
    let d = up.blob(
        data(BLOB_BYTES, 3),
        Behavior {
            corrupt: true,
            gate: Some(gate.clone()),
            ..Behavior::default()
        },
    );
    let cache = TestDaemon::start(&up.url()).await;
    let url = cache.url(&blob_path(&d));
    let mut readers = Vec::new();
    for _ in 0..4 {
        let mut b = get(&url).await.into_body();
        let first = first_chunk(&mut b).await;
        readers.push((b, first.to_vec()));
    }
    gate.open();
    for (b, got) in readers {
        let err = rest(b, got).await;
        assert!(
            err.is_err(),
            "a reader got a complete body of a corrupt blob"
        );
    }
    eventually(|| cache.daemon.app().flights.is_empty()).await;
    assert!(!cache.daemon.app().store.contains(&d));
    assert_eq!(
        std::fs::read_dir(cache.dir.path().join("store/tmp"))
            .unwrap()
            .count(),
        0
    );
    // The next request retries upstream (and, the upstream now healthy, succeeds).
    up.set_behavior(&d, Behavior::default());
    assert_eq!(body(get(&url).await).await.unwrap().len(), BLOB_BYTES);
    assert_eq!(up.count(Method::GET, &d.to_string()), 2);
    let metrics = String::from_utf8(
        body(get(&cache.url("/metrics")).await)
            .await
            .unwrap()
            .to_vec(),
    )
    .unwrap();
    assert!(
        metrics.contains("cache_daemon_digest_mismatches_total 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn upstream_cut_mid_body_cuts_readers_and_next_request_retries() {
    let up = FakeUpstream::start().await;
    let d = up.blob(
        data(BLOB_BYTES, 4),
        Behavior {
            cut_after: Some(BLOB_BYTES / 4),
            ..Behavior::default()
        },
    );
    let cache = TestDaemon::start(&up.url()).await;
    let url = cache.url(&blob_path(&d));
    let results = join_all((0..4).map(|_| async { body(get(&url).await).await })).await;
    assert!(results.iter().all(Result::is_err));
    up.set_behavior(&d, Behavior::default());
    assert_eq!(body(get(&url).await).await.unwrap().len(), BLOB_BYTES);
    // The fill resumed (cut again each time) before giving up; then the retry.
    let resumes = cache_daemon::fill::RESUME_ATTEMPTS as usize;
    assert_eq!(up.count(Method::GET, &d.to_string()), 1 + resumes + 1);
}

#[tokio::test]
async fn client_disconnect_does_not_cancel_the_fill() {
    let up = FakeUpstream::start().await;
    let gate = Gate::new(BLOB_BYTES / 4);
    let d = up.blob(
        data(BLOB_BYTES, 5),
        Behavior {
            gate: Some(gate.clone()),
            ..Behavior::default()
        },
    );
    let cache = TestDaemon::start(&up.url()).await;
    let url = cache.url(&blob_path(&d));
    let mut b = get(&url).await.into_body();
    first_chunk(&mut b).await;
    drop(b);
    gate.open();
    eventually(|| cache.daemon.app().store.contains(&d)).await;
    assert_eq!(body(get(&url).await).await.unwrap().len(), BLOB_BYTES);
    assert_eq!(up.count(Method::GET, &d.to_string()), 1);
}

/// A blob whose upstream stops after `gate_at` bytes until the gate opens, a daemon in front,
/// and a leader that has started the fill and read its first chunk.
struct GatedFill {
    up: FakeUpstream,
    gate: Gate,
    d: stampede_oci::Digest,
    cache: TestDaemon,
    url: String,
    leader: hyper::body::Incoming,
    first: bytes::Bytes,
}

async fn gated_fill(content: &[u8], gate_at: usize) -> GatedFill {
    let up = FakeUpstream::start().await;
    let gate = Gate::new(gate_at);
    let d = up.blob(
        content.to_vec(),
        Behavior {
            gate: Some(gate.clone()),
            ..Behavior::default()
        },
    );
    let cache = TestDaemon::start(&up.url()).await;
    let url = cache.url(&blob_path(&d));
    let mut leader = get(&url).await.into_body();
    let first = first_chunk(&mut leader).await;
    GatedFill {
        up,
        gate,
        d,
        cache,
        url,
        leader,
        first,
    }
}

#[tokio::test]
async fn ranges_on_hits_and_mid_fill() {
    let content = data(BLOB_BYTES, 6);
    // Start the fill, then ask for ranges while it runs.
    let GatedFill {
        up,
        gate,
        d,
        cache,
        url,
        leader: _leader,
        ..
    } = gated_fill(&content, BLOB_BYTES / 2).await;
    let mid = request("GET", &url, &[("range", "bytes=100-")]).await;
    assert_eq!(mid.status(), 206);
    assert_eq!(
        header(&mid, "content-range"),
        format!("bytes 100-{}/{BLOB_BYTES}", BLOB_BYTES - 1)
    );
    let closed = request("GET", &url, &[("range", "bytes=10-19")]).await;
    assert_eq!(closed.status(), 206);
    assert_eq!(header(&closed, "content-length"), "10");
    gate.open();
    assert_eq!(body(mid).await.unwrap()[..], content[100..]);
    assert_eq!(body(closed).await.unwrap()[..], content[10..20]);
    eventually(|| cache.daemon.app().store.contains(&d)).await;
    // And on a hit.
    for (range, want) in [
        ("bytes=0-", &content[..]),
        ("bytes=5-9", &content[5..10]),
        ("bytes=-3", &content[BLOB_BYTES - 3..]),
    ] {
        let r = request("GET", &url, &[("range", range)]).await;
        assert_eq!(r.status(), 206, "{range}");
        assert_eq!(body(r).await.unwrap()[..], *want, "{range}");
    }
    let bad = request("GET", &url, &[("range", &format!("bytes={BLOB_BYTES}-"))]).await;
    assert_eq!(bad.status(), 416);
    assert_eq!(
        header(&bad, "content-range"),
        format!("bytes */{BLOB_BYTES}")
    );
    let text = body(bad).await.unwrap();
    assert!(
        String::from_utf8_lossy(&text).contains(&format!("for a blob of {BLOB_BYTES} bytes")),
        "{text:?}"
    );
    assert_eq!(up.count(Method::GET, &d.to_string()), 1);
}

/// A blob bigger than the fill's in-memory window: readers that join late start behind the
/// window (read from the temp file) and catch up into it (served from memory); every byte is
/// the upstream's, whole bodies and ranges alike.
#[tokio::test]
async fn late_readers_behind_the_in_memory_window_read_the_file() {
    const BIG: usize = 12 << 20;
    let window = usize::try_from(cache_daemon::flight::WINDOW_BYTES).unwrap();
    let content = data(BIG, 11);
    let GatedFill {
        up,
        gate,
        d,
        cache,
        url,
        leader,
        first,
    } = gated_fill(&content, window + (6 << 20)).await;
    // Wait until the writer has passed the window's size: byte 0 has left memory.
    let app = cache.daemon.app().clone();
    eventually(|| {
        app.flights
            .get(&d)
            .is_some_and(|f| f.progress().written_bytes >= gate.after_bytes as u64)
    })
    .await;
    let flight = app.flights.get(&d).unwrap();
    assert!(
        flight.recent(0, 1).is_none(),
        "byte 0 should be out of the window"
    );
    assert!(flight.recent(gate.after_bytes as u64 - 1, 1).is_some());
    let whole = get(&url).await;
    let behind = request("GET", &url, &[("range", "bytes=100-")]).await;
    let inside = format!("bytes={}-", gate.after_bytes - 1000);
    let inside_resp = request("GET", &url, &[("range", &inside)]).await;
    let closed = request("GET", &url, &[("range", "bytes=1000-1999")]).await;
    for r in [&whole, &behind, &inside_resp, &closed] {
        assert!(r.status().is_success(), "{}", r.status());
    }
    gate.open();
    let (whole, behind, inside_body, closed, rest_of_leader) = within(async {
        (
            body(whole).await.unwrap(),
            body(behind).await.unwrap(),
            body(inside_resp).await.unwrap(),
            body(closed).await.unwrap(),
            rest(leader, first.to_vec()).await.unwrap(),
        )
    })
    .await;
    assert!(whole[..] == content[..]);
    assert!(behind[..] == content[100..]);
    assert!(inside_body[..] == content[gate.after_bytes - 1000..]);
    assert!(closed[..] == content[1000..2000]);
    assert!(rest_of_leader[..] == content[..]);
    assert_eq!(up.count(Method::GET, &d.to_string()), 1);
}

#[tokio::test]
async fn unknown_length_upstream_is_streamed_chunked() {
    let up = FakeUpstream::start().await;
    let content = data(100_000, 7);
    let d = up.blob(
        content.clone(),
        Behavior {
            omit_length: true,
            ..Behavior::default()
        },
    );
    let cache = TestDaemon::start(&up.url()).await;
    let resp = get(&cache.url(&blob_path(&d))).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(body(resp).await.unwrap()[..], content[..]);
    eventually(|| cache.daemon.app().store.contains(&d)).await;
}

#[tokio::test]
async fn upstream_failures_map_to_statuses() {
    let up = FakeUpstream::start().await;
    let missing = stampede_oci::Digest::of(b"nope");
    let throttled = up.blob(
        data(10, 8),
        Behavior {
            status: Some(http::StatusCode::TOO_MANY_REQUESTS),
            retry_after_secs: Some(7),
            ..Behavior::default()
        },
    );
    let broken = up.blob(
        data(10, 9),
        Behavior {
            status: Some(http::StatusCode::INTERNAL_SERVER_ERROR),
            ..Behavior::default()
        },
    );
    let slow = up.blob(
        data(10, 10),
        Behavior {
            header_delay: Duration::from_secs(30),
            ..Behavior::default()
        },
    );
    let cache = TestDaemon::start_in(tempfile::tempdir().unwrap(), &up.url(), |c| {
        c.upstream.response_timeout = Duration::from_millis(300);
    })
    .await;
    // Throttled last: after a 429 the daemon holds every request to that upstream back.
    for (d, status, code) in [
        (&missing, 404, "BLOB_UNKNOWN"),
        (&broken, 502, "UNAVAILABLE"),
        (&slow, 504, "UNAVAILABLE"),
        (&throttled, 429, "TOOMANYREQUESTS"),
    ] {
        let resp = get(&cache.url(&blob_path(d))).await;
        assert_eq!(resp.status(), status, "{d}");
        if status == 429 {
            assert_eq!(header(&resp, "retry-after"), "7");
        }
        let text = String::from_utf8(body(resp).await.unwrap().to_vec()).unwrap();
        assert!(text.contains(code), "{text}");
    }
    // Nothing closed means the daemon is down: it still answers.
    assert_eq!(get(&cache.url("/healthz")).await.status(), 200);
}

#[tokio::test]
async fn upstream_down_fails_cleanly_and_cached_blobs_survive_restart() {
    let up = FakeUpstream::start().await;
    let content = data(300_000, 11);
    let d = up.blob(content.clone(), Behavior::default());
    let cache = TestDaemon::start(&up.url()).await;
    assert_eq!(
        body(get(&cache.url(&blob_path(&d))).await).await.unwrap()[..],
        content[..]
    );
    let dir = cache.stop().await;
    drop(up);
    // Restart on the same store, upstream gone: the blob is a hit; an unknown one is a 502.
    let cache = TestDaemon::start_in(dir, "http://127.0.0.1:9", |_| {}).await;
    let hit = get(&cache.url(&blob_path(&d))).await;
    assert_eq!(hit.status(), 200);
    assert_eq!(body(hit).await.unwrap()[..], content[..]);
    let head = request("HEAD", &cache.url(&blob_path(&d)), &[]).await;
    assert_eq!(header(&head, "content-length"), content.len().to_string());
    let miss = get(&cache.url(&blob_path(&stampede_oci::Digest::of(b"other")))).await;
    assert_eq!(miss.status(), 502);
}

#[tokio::test]
async fn head_of_a_miss_asks_upstream_without_filling() {
    let up = FakeUpstream::start().await;
    let d = up.blob(data(5000, 12), Behavior::default());
    let cache = TestDaemon::start(&up.url()).await;
    let head = request("HEAD", &cache.url(&blob_path(&d)), &[]).await;
    assert_eq!(head.status(), 200);
    assert_eq!(header(&head, "content-length"), "5000");
    assert_eq!(header(&head, "docker-content-digest"), d.to_string());
    assert_eq!(
        (
            up.count(Method::HEAD, &d.to_string()),
            up.count(Method::GET, &d.to_string())
        ),
        (1, 0)
    );
    assert!(!cache.daemon.app().store.contains(&d));
}

#[tokio::test]
async fn bearer_token_flow_is_followed_and_token_reused() {
    let up = FakeUpstream::start().await;
    up.require_token();
    let a = up.blob(data(1000, 13), Behavior::default());
    let b = up.blob(data(1000, 14), Behavior::default());
    let cache = TestDaemon::start(&up.url()).await;
    assert_eq!(
        body(get(&cache.url(&blob_path(&a))).await)
            .await
            .unwrap()
            .len(),
        1000
    );
    assert_eq!(
        body(get(&cache.url(&blob_path(&b))).await)
            .await
            .unwrap()
            .len(),
        1000
    );
    // One token for the repository scope, fetched anonymously; reused for the second blob.
    assert_eq!(up.token_requests(), vec![None]);
}

#[tokio::test]
async fn upstream_retry_after_is_honoured_then_requests_resume() {
    const RETRY_AFTER_SECS: u64 = 3;
    let up = FakeUpstream::start().await;
    let throttled = up.blob(
        data(10, 20),
        Behavior {
            status: Some(http::StatusCode::TOO_MANY_REQUESTS),
            retry_after_secs: Some(RETRY_AFTER_SECS),
            ..Behavior::default()
        },
    );
    let other = up.blob(data(10, 21), Behavior::default());
    let cache = TestDaemon::start(&up.url()).await;
    assert_eq!(get(&cache.url(&blob_path(&throttled))).await.status(), 429);
    // Inside the Retry-After window (seconds, so the next request lands in it even on a loaded
    // machine) nothing is sent upstream, whatever the blob.
    let held = get(&cache.url(&blob_path(&other))).await;
    assert_eq!(held.status(), 429);
    let secs: u64 = header(&held, "retry-after").parse().unwrap();
    assert!((1..=RETRY_AFTER_SECS).contains(&secs), "{secs}");
    assert_eq!(up.count(Method::GET, &other.to_string()), 0);
    // Once the window passes, requests go upstream again: the first to get through is served,
    // and none of those held back before it reached the upstream.
    up.set_behavior(&throttled, Behavior::default());
    let mut held_while_waiting = 0;
    let served = within(async {
        loop {
            let resp = get(&cache.url(&blob_path(&other))).await;
            if resp.status() == 200 {
                return body(resp).await.unwrap();
            }
            assert_eq!(resp.status(), 429);
            held_while_waiting += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert_eq!(served.len(), 10);
    assert_eq!(up.count(Method::GET, &other.to_string()), 1);
    assert_eq!(
        body(get(&cache.url(&blob_path(&throttled))).await)
            .await
            .unwrap()
            .len(),
        10
    );
    let metrics = String::from_utf8(
        body(get(&cache.url("/metrics")).await)
            .await
            .unwrap()
            .to_vec(),
    )
    .unwrap();
    // The 429 that opened the window and every request held back in it (the one above and
    // those made while waiting for the window to pass).
    let throttled = format!(
        "cache_daemon_upstream_throttled_total {}\n",
        2 + held_while_waiting
    );
    assert!(metrics.contains(&throttled), "{throttled}in {metrics}");
}
