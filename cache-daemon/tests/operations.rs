//! What node operators rely on: the byte budget with LRU eviction and pins, eviction never
//! cutting a reader, state surviving restarts, tags served stale through an outage even after a
//! restart, credentials going only where they may, and the operator tools (`ls`, `pin`,
//! `prefetch`, `gc --dry-run`, `verify`) against a running daemon and a stopped store.

use std::process::Command;
use std::time::Duration;

use http::Method;
use stampede_oci::auth::Credentials;
use stampede_oci::manifest::{DOCKER_CONFIG, DOCKER_LAYER_GZIP, DOCKER_MANIFEST};
use stampede_oci::{Digest, Endpoint};

use crate::common::upstream::{Behavior, FakeUpstream};
use crate::common::{blob_path, metrics};
use crate::common::{body, data, eventually, first_chunk, get, rest, within, TestDaemon};

const MIB: usize = 1 << 20;

/// A Docker manifest for `config` and `layers` under `repo:tag`; returns its digest.
fn image(up: &FakeUpstream, tag: &str, config: &Digest, layers: &[(Digest, usize)]) -> Digest {
    let layers: Vec<String> = layers
        .iter()
        .map(|(d, size)| {
            format!(r#"{{"mediaType":"{DOCKER_LAYER_GZIP}","size":{size},"digest":"{d}"}}"#)
        })
        .collect();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}","config":{{"mediaType":"{DOCKER_CONFIG}","size":2,"digest":"{config}"}},"layers":[{}]}}"#,
        layers.join(",")
    );
    up.manifest("test/app", Some(tag), DOCKER_MANIFEST, manifest)
}

#[tokio::test]
async fn budget_evicts_least_recently_used_unpinned_blobs() {
    let up = FakeUpstream::start().await;
    let blobs: Vec<Digest> = (0..5u8)
        .map(|i| up.blob(data(MIB, 30 + i), Behavior::default()))
        .collect();
    let cache = TestDaemon::start_in(tempfile::tempdir().unwrap(), &up.url(), |c| {
        c.store.budget = Some(cache_daemon::config::Budget {
            max_bytes: 4 * MIB as u64,
            high_watermark: 0.9,
            low_watermark: 0.5,
            min_age: Duration::ZERO,
        });
    })
    .await;
    let app = cache.daemon.app().clone();
    for d in &blobs[..3] {
        assert_eq!(
            body(get(&cache.url(&blob_path(d))).await)
                .await
                .unwrap()
                .len(),
            MIB
        );
    }
    // Pin blob 0 (the least recently used), touch blob 1 so blob 2 becomes older than it.
    let pinned = cache_daemon::admin::pin(
        &app,
        &cache_daemon::cli::parse_pin_target(&blobs[0].to_string(), None).unwrap(),
    )
    .await
    .unwrap();
    assert!(pinned.digests.contains(&blobs[0]));
    body(get(&cache.url(&blob_path(&blobs[1]))).await)
        .await
        .unwrap();
    // A fourth: 4 MiB > 3.6 MiB high watermark; eviction in the background brings usage down
    // to the 2 MiB low watermark. Recency, oldest first: 0 (pinned), 2, 1, 3 -> 2 and 1 go.
    body(get(&cache.url(&blob_path(&blobs[3]))).await)
        .await
        .unwrap();
    eventually(|| app.store.usage().0 <= 2 * MIB as u64).await;
    // A fifth fits under the high watermark: nothing more goes.
    body(get(&cache.url(&blob_path(&blobs[4]))).await)
        .await
        .unwrap();
    let kept: Vec<bool> = blobs.iter().map(|d| app.store.contains(d)).collect();
    assert_eq!(kept, [true, false, false, true, true]);
    let m = metrics(&cache).await;
    assert!(m.contains("cache_daemon_evictions_total 2"), "{m}");
    assert!(
        m.contains(&format!("cache_daemon_evicted_bytes_total {}", 2 * MIB)),
        "{m}"
    );
    assert!(
        m.contains(&format!("cache_daemon_pinned_bytes {MIB}")),
        "{m}"
    );
    // An evicted blob is simply fetched again.
    assert_eq!(
        body(get(&cache.url(&blob_path(&blobs[2]))).await)
            .await
            .unwrap()
            .len(),
        MIB
    );
    assert_eq!(up.count(Method::GET, &blobs[2].to_string()), 2);
}

#[tokio::test]
async fn eviction_never_cuts_a_reader_of_the_victim() {
    let up = FakeUpstream::start().await;
    let content = data(4 * MIB, 40);
    let d = up.blob(content.clone(), Behavior::default());
    let cache = TestDaemon::start(&up.url()).await;
    let app = cache.daemon.app().clone();
    body(get(&cache.url(&blob_path(&d))).await).await.unwrap();
    // A reader starts streaming the committed blob, then the blob is evicted under it.
    let mut reader = get(&cache.url(&blob_path(&d))).await.into_body();
    let first = first_chunk(&mut reader).await;
    let report = cache_daemon::admin::gc(&app, Some(0), false).await;
    assert_eq!(report.victims, vec![d.clone()]);
    assert!(!app.store.layout().blob_path(&d).exists());
    assert_eq!(rest(reader, first.to_vec()).await.unwrap(), content);
}

#[tokio::test]
async fn known_tags_are_served_stale_through_an_outage_even_after_restart() {
    let up = FakeUpstream::start().await;
    let config = up.blob(b"{}".to_vec(), Behavior::default());
    let layer = up.blob(data(1000, 41), Behavior::default());
    let manifest = image(&up, "v1", &config, &[(layer.clone(), 1000)]);
    let cache = TestDaemon::start_in(tempfile::tempdir().unwrap(), &up.url(), |c| {
        c.upstream.tag_ttl = Duration::from_millis(1);
    })
    .await;
    let resp = get(&cache.url("/v2/test/app/manifests/v1")).await;
    assert_eq!(resp.status(), 200);
    body(get(&cache.url(&blob_path(&layer))).await)
        .await
        .unwrap();
    let dir = cache.stop().await;
    let url = up.url();
    // Upstream gone (connections refused; its port held so no other test's server takes it);
    // a restarted daemon still answers the tag and the blob.
    let _port = up.close_keeping_port().await;
    let addr = url.trim_start_matches("http://");
    assert!(
        std::net::TcpListener::bind(addr).is_err(),
        "another server could take the closed upstream's port {addr}"
    );
    let cache = TestDaemon::start_in(dir, &url, |c| {
        c.upstream.connect_timeout = Duration::from_millis(500);
    })
    .await;
    let stale = get(&cache.url("/v2/test/app/manifests/v1")).await;
    assert_eq!(stale.status(), 200);
    assert_eq!(
        crate::common::header(&stale, "docker-content-digest"),
        manifest.to_string()
    );
    assert_eq!(get(&cache.url(&blob_path(&layer))).await.status(), 200);
    assert_eq!(
        get(&cache.url("/v2/test/app/manifests/unknown"))
            .await
            .status(),
        502
    );
    assert!(metrics(&cache)
        .await
        .contains("cache_daemon_stale_serves_total 1"));
}

#[tokio::test]
async fn credentials_reach_the_registry_and_its_realm_and_nowhere_else() {
    let secret = Credentials::Basic {
        username: "me".into(),
        password: "s3cret".into(),
    };
    let basic = secret.basic_header().unwrap();
    // Trusted: the realm is on the registry's own host.
    let up = FakeUpstream::start().await;
    up.require_token();
    let d = up.blob(data(100, 42), Behavior::default());
    let cache = TestDaemon::start_in(tempfile::tempdir().unwrap(), &up.url(), |c| {
        c.upstream.default = Some(
            Endpoint::parse(&up.url())
                .unwrap()
                .with_credentials(Some(secret.clone())),
        );
    })
    .await;
    assert_eq!(get(&cache.url(&blob_path(&d))).await.status(), 200);
    assert_eq!(up.token_requests(), vec![Some(basic.clone())]);

    // Untrusted: the realm is another host (`localhost` is not `127.0.0.1`): asked anonymously.
    let elsewhere = FakeUpstream::start().await;
    let up = FakeUpstream::start().await;
    up.require_token();
    up.set_realm(&format!(
        "{}/token",
        elsewhere.url().replace("127.0.0.1", "localhost")
    ));
    let d = up.blob(data(100, 43), Behavior::default());
    let cache = TestDaemon::start_in(tempfile::tempdir().unwrap(), &up.url(), |c| {
        c.upstream.default = Some(
            Endpoint::parse(&up.url())
                .unwrap()
                .with_credentials(Some(secret.clone())),
        );
    })
    .await;
    let resp = get(&cache.url(&blob_path(&d))).await;
    assert_eq!(elsewhere.token_requests(), vec![None]);
    assert!(up.token_requests().is_empty());
    // The anonymous token is the fake's only token, so the pull still works.
    assert_eq!(resp.status(), 200);
}

fn tool(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cache-daemon"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_tools_work_online_and_on_a_stopped_store() {
    let up = FakeUpstream::start().await;
    let config = up.blob(b"{}".to_vec(), Behavior::default());
    let layers: Vec<(Digest, usize)> = (0..2u8)
        .map(|i| (up.blob(data(2000, 50 + i), Behavior::default()), 2000))
        .collect();
    let manifest = image(&up, "v1", &config, &layers);
    let cache = TestDaemon::start_in(tempfile::tempdir().unwrap(), &up.url(), |c| {
        c.server.admin_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let admin = cache.daemon.admin_url().unwrap();
    let image_ref = format!("{}/test/app:v1", up.url().trim_start_matches("http://"));
    let root = cache.dir.path().join("store");
    let root = root.to_str().unwrap().to_owned();

    // Online: prefetch through the admin endpoint fetches every blob once.
    let (code, out, err) = within(tokio::task::spawn_blocking({
        let (admin, image_ref) = (admin.clone(), image_ref.clone());
        move || tool(&["prefetch", &image_ref, "--admin", &admin])
    }))
    .await
    .unwrap();
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("2 blobs") || out.contains("3 blobs"), "{out}");
    for (d, _) in &layers {
        assert_eq!(up.count(Method::GET, &d.to_string()), 1);
        assert!(cache.daemon.app().store.contains(d));
    }
    // A second prefetch fetches nothing.
    let (_, out, _) = within(tokio::task::spawn_blocking({
        let (admin, image_ref) = (admin.clone(), image_ref.clone());
        move || tool(&["prefetch", &image_ref, "--admin", &admin])
    }))
    .await
    .unwrap();
    assert!(out.contains("0 fetched now"), "{out}");
    // Pin the image online (the admin is on a random port here, so it is named explicitly;
    // without --admin a tool finds the store locked and uses the configured admin address).
    let (code, out, err) = within(tokio::task::spawn_blocking({
        let (admin, image_ref) = (admin.clone(), image_ref.clone());
        move || tool(&["pin", &image_ref, "--admin", &admin])
    }))
    .await
    .unwrap();
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("4 digests"), "{out}");
    let (code, out, _) = within(tokio::task::spawn_blocking({
        let admin = admin.clone();
        move || tool(&["ls", "--json", "--admin", &admin])
    }))
    .await
    .unwrap();
    assert_eq!(code, 0);
    let items: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(items.len(), 4);
    let m = items
        .iter()
        .find(|i| i["digest"] == manifest.to_string())
        .unwrap();
    assert_eq!(m["media_type"], DOCKER_MANIFEST);
    assert_eq!(m["pinned"], true);
    assert!(
        m["tags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t.as_str().unwrap().ends_with("/test/app:v1")),
        "{m}"
    );

    // The admin API takes its parameters in the query: a JSON body or a misspelt parameter is
    // refused with 400, naming what the endpoint takes, and nothing runs.
    let gc_url = format!("{admin}/admin/gc");
    let misspelt = format!("{gc_url}?dryrun=1&target_bytes=0");
    let bad_value = format!("{gc_url}?dry_run=maybe");
    let body_json = r#"{"dry_run":true,"target_bytes":0}"#;
    for (args, needle) in [
        (
            vec![
                "-H",
                "content-type: application/json",
                "-d",
                body_json,
                gc_url.as_str(),
            ],
            "no request body",
        ),
        (vec![misspelt.as_str()], "unknown parameter \\\"dryrun"),
        (vec![bad_value.as_str()], "expected true or false"),
    ] {
        let out = Command::new("curl")
            .args(["-sS", "-X", "POST", "-w", "\n%{http_code}"])
            .args(&args)
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(text.ends_with("\n400"), "{args:?}: {text}");
        assert!(text.contains(needle), "{args:?}: {text}");
    }
    assert_eq!(cache.daemon.app().store.inventory().len(), 4);

    // Stopped store: gc --dry-run lists nothing (all pinned), verify finds a corrupted blob.
    let dir = cache.stop().await;
    let (code, out, err) = tool(&["gc", "--dry-run", "--target-bytes", "0", "--root", &root]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("would evict 0 blobs"), "{out}");
    let (code, _, _) = tool(&["unpin", &image_ref, "--root", &root]);
    assert_eq!(code, 0);
    let (code, out, _) = tool(&["gc", "--dry-run", "--target-bytes", "0", "--root", &root]);
    assert_eq!(code, 0);
    assert!(out.contains("would evict 4 blobs"), "{out}");
    let victim = dir
        .path()
        .join("store/blobs/sha256")
        .join(&layers[0].0.hex()[..2])
        .join(layers[0].0.hex());
    std::fs::write(&victim, b"corrupted").unwrap();
    let (code, out, _) = tool(&["verify", "--root", &root]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("quarantined {}", layers[0].0)),
        "{out}"
    );
    let (code, out, _) = tool(&["ls", "--root", &root]);
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 1 + 3, "{out}");
    assert!(
        out.contains("DIGEST") && out.contains("LAST ACCESS"),
        "{out}"
    );
    // Bad input: a clear error, exit 2.
    let (code, _, err) = tool(&["pin", "Not A Ref", "--root", &root]);
    assert_eq!(code, 2);
    assert!(err.contains("target"), "{err}");
    drop(dir);
}

/// With `upstream_concurrency = 1`, a second fill waits for the first one's slot instead of
/// failing: it is queued (the `upstream_waiting` gauge says so, and the upstream has not seen
/// it), then runs once the first fill ends; both clients get their whole blob.
#[tokio::test]
async fn upstream_requests_beyond_the_limit_queue_instead_of_failing() {
    use crate::common::upstream::Gate;
    let up = FakeUpstream::start().await;
    let first = data(256 * 1024, 81);
    let second = data(64 * 1024, 82);
    let gate = Gate::new(64 * 1024);
    let a = up.blob(
        first.clone(),
        Behavior {
            gate: Some(gate.clone()),
            ..Behavior::default()
        },
    );
    let b = up.blob(second.clone(), Behavior::default());
    let cache = TestDaemon::start_in(tempfile::tempdir().unwrap(), &up.url(), |c| {
        c.upstream.concurrency = 1;
    })
    .await;
    let mut holder = get(&cache.url(&blob_path(&a))).await.into_body();
    let head = first_chunk(&mut holder).await;
    let waiting = tokio::spawn({
        let url = cache.url(&blob_path(&b));
        async move { body(get(&url).await).await.unwrap() }
    });
    let mut text = String::new();
    for _ in 0..200 {
        text = metrics(&cache).await;
        if text.contains("cache_daemon_upstream_waiting 1") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(text.contains("cache_daemon_upstream_waiting 1"), "{text}");
    assert_eq!(up.count(Method::GET, &b.to_string()), 0, "queued, not sent");
    gate.open();
    let got = within(rest(holder, head.to_vec())).await.unwrap();
    assert!(got[..] == first[..]);
    let got = within(waiting).await.unwrap();
    assert!(got[..] == second[..]);
    assert_eq!(up.count(Method::GET, &b.to_string()), 1);
    assert!(metrics(&cache)
        .await
        .contains("cache_daemon_upstream_waiting 0"));
}

/// Pinning an index: one chosen platform pins that platform's manifest, config and layers and
/// not the other's; a platform the index lacks is the operator's mistake (404 naming the
/// platforms it has), not an upstream failure.
#[tokio::test]
async fn pinning_an_index_for_one_platform_pins_only_its_content() {
    use stampede_oci::manifest::OCI_INDEX;
    let up = FakeUpstream::start().await;
    let mut children = Vec::new();
    let mut layers_of = Vec::new();
    for (i, platform) in [("amd64", None), ("arm64", Some("v8"))].iter().enumerate() {
        let config = up.blob(format!("{{\"n\":{i}}}").into_bytes(), Behavior::default());
        let layer = up.blob(data(3000, 60 + i as u8), Behavior::default());
        let m = image(
            &up,
            &format!("only-{}", platform.0),
            &config,
            &[(layer.clone(), 3000)],
        );
        let variant = platform
            .1
            .map_or_else(String::new, |v| format!(r#","variant":"{v}""#));
        children.push(format!(
            r#"{{"mediaType":"{DOCKER_MANIFEST}","size":{},"digest":"{m}","platform":{{"os":"linux","architecture":"{}"{variant}}}}}"#,
            up.manifest_len("test/app", &m),
            platform.0
        ));
        layers_of.push((config, layer));
    }
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{}]}}"#,
        children.join(",")
    );
    up.manifest("test/app", Some("multi"), OCI_INDEX, index);
    let cache = TestDaemon::start(&up.url()).await;
    let target = format!("{}/test/app:multi", up.url().trim_start_matches("http://"));
    let app = cache.daemon.app().clone();

    let request = cache_daemon::cli::parse_pin_target(&target, Some("linux/arm64")).unwrap();
    let pin = within(cache_daemon::admin::pin(&app, &request))
        .await
        .unwrap();
    let (arm_config, arm_layer) = &layers_of[1];
    let (amd_config, amd_layer) = &layers_of[0];
    assert!(pin.digests.contains(arm_layer) && pin.digests.contains(arm_config));
    assert!(!pin.digests.contains(amd_layer) && !pin.digests.contains(amd_config));
    assert!(app.store.contains(arm_layer));
    assert_eq!(up.count(Method::GET, &amd_layer.to_string()), 0);

    let request = cache_daemon::cli::parse_pin_target(&target, Some("linux/s390x")).unwrap();
    let err = within(cache_daemon::admin::pin(&app, &request))
        .await
        .unwrap_err();
    assert_eq!(err.status, http::StatusCode::NOT_FOUND);
    assert!(
        err.message.ends_with("it has: linux/amd64, linux/arm64/v8"),
        "{}",
        err.message
    );
    assert_eq!(app.store.pins().len(), 1);
}
