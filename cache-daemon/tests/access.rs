//! Caller checks ("private images stay private"): with `check_callers` on, content of a
//! repository whose upstream the daemon holds credentials for is served only to callers whose
//! own `Authorization` the upstream accepts for that repository. The in-test upstream grants
//! tokens per repository and counts the daemon's `HEAD`s (the daemon's own fills are `GET`s, so
//! every `HEAD` here is a caller check); the end-to-end test puts skopeo, the real daemon and
//! Debian's docker-registry behind htpasswd together.

use std::process::Command;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use http::{Method, StatusCode};

use cache_daemon::Config;
use stampede_oci::auth::Credentials;
use stampede_oci::Endpoint;

use crate::common::upstream::{Behavior, FakeUpstream, Gate};
use crate::common::{body, first_chunk, header, request, TestDaemon};

const ALICE: &str = "Bearer alice-token";
const BOB: &str = "Bearer bob-token";
const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

/// A token-protected upstream where alice may pull `team/a` and bob `team/b`, each holding one
/// blob found only there, and a manifest `team/a:v1`.
struct Private {
    upstream: FakeUpstream,
    blob_a: stampede_oci::Digest,
    blob_b: stampede_oci::Digest,
}

impl Private {
    async fn start() -> Self {
        let upstream = FakeUpstream::start().await;
        upstream.require_token();
        upstream.grant(ALICE, "team/a");
        upstream.grant(BOB, "team/b");
        let blob_a = upstream.blob_in("team/a", crate::common::data(40_000, 1));
        let blob_b = upstream.blob_in("team/b", crate::common::data(50_000, 2));
        upstream.manifest(
            "team/a",
            Some("v1"),
            MANIFEST_TYPE,
            br#"{"schemaVersion":2}"#.to_vec(),
        );
        Self {
            upstream,
            blob_a,
            blob_b,
        }
    }

    /// A daemon holding credentials for the upstream, with caller checks as `tweak` leaves them
    /// (on, unless it turns them off).
    async fn daemon(&self, tweak: impl FnOnce(&mut Config)) -> TestDaemon {
        let dir = tempfile::tempdir().unwrap();
        let url = self.upstream.url();
        TestDaemon::start_in(dir, &url, |c| {
            c.upstream.default = Some(Endpoint::parse(&url).unwrap().with_credentials(Some(
                Credentials::Basic {
                    username: "node".into(),
                    password: "node-secret".into(),
                },
            )));
            c.access.check_callers = true;
            tweak(c);
        })
        .await
    }

    fn heads(&self) -> usize {
        self.upstream.count(Method::HEAD, "/v2/")
    }
}

/// Waits (bounded) until the daemon has recorded that `digest` was fetched through repository
/// `repo` of the upstream `ns` names (the default upstream for `None`): a task woken by the
/// fill's commit records it, racing the response's last byte, and the next caller's check
/// depends on it.
async fn settle(d: &TestDaemon, digest: &stampede_oci::Digest, ns: Option<&str>, repo: &str) {
    let app = d.daemon.app();
    let label = app
        .upstreams
        .repo_label(ns, &stampede_oci::RepoName::parse(repo).unwrap());
    crate::common::eventually(|| app.store.seen_under(digest, &label)).await;
}

async fn status_as(url: &str, auth: Option<&str>) -> (StatusCode, String, String) {
    let headers: Vec<(&str, &str)> = auth.map(|a| ("authorization", a)).into_iter().collect();
    let resp = request("GET", url, &headers).await;
    let status = resp.status();
    let challenge = header(&resp, "www-authenticate").to_owned();
    let text = String::from_utf8_lossy(&body(resp).await.unwrap()).into_owned();
    (status, challenge, text)
}

#[tokio::test]
async fn a_caller_with_rights_reads_misses_and_hits_and_its_decision_is_reused() {
    let p = Private::start().await;
    let d = p.daemon(|_| {}).await;
    let blob = d.url(&format!("/v2/team/a/blobs/{}", p.blob_a));
    let want = crate::common::data(40_000, 1);

    // Miss: checked with a HEAD of that blob in team/a carrying alice's own token, then filled.
    let (status, _, _) = status_as(&blob, Some(ALICE)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(p.heads(), 1);
    settle(&d, &p.blob_a, None, "team/a").await;
    // Hit, the tag and the manifest it names: the decision for (alice, team/a) is reused.
    let resp = request("GET", &blob, &[("authorization", ALICE)]).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(body(resp).await.unwrap().as_ref(), &want[..]);
    let (status, _, _) = status_as(&d.url("/v2/team/a/manifests/v1"), Some(ALICE)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(p.heads(), 1, "decisions within the TTL make no new HEAD");
    // The fill's GETs: one anonymous (401), one with the daemon's token.
    assert_eq!(p.upstream.count(Method::GET, &p.blob_a.to_string()), 2);

    let metrics = String::from_utf8_lossy(
        &body(request("GET", &d.url("/metrics"), &[]).await)
            .await
            .unwrap(),
    )
    .into_owned();
    assert!(
        metrics
            .contains(r#"cache_daemon_access_checks_total{result="allowed",source="upstream"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"cache_daemon_access_checks_total{result="allowed",source="cache"} 2"#),
        "{metrics}"
    );
    d.stop().await;
}

#[tokio::test]
async fn a_caller_without_rights_gets_the_upstreams_challenge_even_for_cached_content() {
    let p = Private::start().await;
    let d = p.daemon(|_| {}).await;
    let blob = d.url(&format!("/v2/team/a/blobs/{}", p.blob_a));
    // Alice brings the blob to the node.
    assert_eq!(status_as(&blob, Some(ALICE)).await.0, StatusCode::OK);

    // No credentials: 401 with the upstream's realm, scoped to pulling team/a.
    let (status, challenge, text) = status_as(&blob, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        challenge.starts_with(&format!("Bearer realm=\"{}/token\"", p.upstream.url())),
        "{challenge}"
    );
    assert!(
        challenge.contains(r#"scope="repository:team/a:pull""#),
        "{challenge}"
    );
    assert!(text.contains("\"UNAUTHORIZED\""), "{text}");
    // A token without rights to team/a (bob's): refused, and not served from the store.
    let (status, challenge, text) = status_as(&blob, Some(BOB)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(!challenge.is_empty());
    assert!(text.contains("\"DENIED\""), "{text}");
    // Manifests too.
    let (status, _, _) = status_as(&d.url("/v2/team/a/manifests/v1"), Some(BOB)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // The ping tells containers/image clients to send credentials.
    let ping = request("GET", &d.url("/v2/"), &[]).await;
    assert_eq!(
        header(&ping, "docker-distribution-api-version"),
        "registry/2.0"
    );
    let (status, challenge, _) = status_as(&d.url("/v2/"), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(challenge.starts_with("Bearer realm="), "{challenge}");
    assert_eq!(
        status_as(&d.url("/v2/"), Some(ALICE)).await.0,
        StatusCode::OK
    );
    // A denial is reused for its (short) TTL: bob again costs no HEAD.
    let before = p.heads();
    assert_eq!(
        status_as(&blob, Some(BOB)).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(p.heads(), before);

    // A client answers the challenge as it would a registry's: a token from the upstream's
    // realm, for the scope it names, presented to the daemon.
    let (_, challenge, _) = status_as(&blob, None).await;
    let param = |name: &str| {
        challenge
            .split(&format!("{name}=\""))
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap()
            .to_owned()
    };
    let token_url = format!(
        "{}?service={}&scope={}",
        param("realm"),
        param("service"),
        param("scope")
    );
    let token = body(request("GET", &token_url, &[]).await).await.unwrap();
    let token: serde_json::Value = serde_json::from_slice(&token).unwrap();
    let bearer = format!("Bearer {}", token["token"].as_str().unwrap());
    assert_eq!(status_as(&blob, Some(&bearer)).await.0, StatusCode::OK);
    d.stop().await;
}

#[tokio::test]
async fn rights_to_one_repository_do_not_read_another_repositorys_blob_through_it() {
    let p = Private::start().await;
    let d = p.daemon(|_| {}).await;
    // Bob brings team/b's blob to the node; alice is allowed in team/a.
    let through_b = d.url(&format!("/v2/team/b/blobs/{}", p.blob_b));
    assert_eq!(status_as(&through_b, Some(BOB)).await.0, StatusCode::OK);
    assert_eq!(status_as(&through_b, Some(BOB)).await.0, StatusCode::OK);
    let manifest = d.url("/v2/team/a/manifests/v1");
    assert_eq!(status_as(&manifest, Some(ALICE)).await.0, StatusCode::OK);

    // Alice asks for team/b's blob through team/a: checked with a HEAD of that exact blob in
    // team/a, which the upstream does not have there.
    let through_a = d.url(&format!("/v2/team/a/blobs/{}", p.blob_b));
    let (status, _, text) = status_as(&through_a, Some(ALICE)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{text}");
    assert!(text.contains("BLOB_UNKNOWN"), "{text}");
    assert_eq!(
        p.upstream
            .count(Method::HEAD, &format!("/v2/team/a/blobs/{}", p.blob_b)),
        1
    );
    // And through team/b itself she has no rights.
    assert_eq!(
        status_as(&through_b, Some(ALICE)).await.0,
        StatusCode::UNAUTHORIZED
    );
    d.stop().await;
}

#[tokio::test]
async fn a_fill_in_progress_is_followed_only_through_its_own_repository() {
    let p = Private::start().await;
    let d = p.daemon(|_| {}).await;
    p.upstream.grant("Bearer carol-token", "team/b");
    assert_eq!(
        status_as(&d.url("/v2/team/a/manifests/v1"), Some(ALICE))
            .await
            .0,
        StatusCode::OK
    );
    // Bob's fill of team/b's blob stops half-way until the gate opens.
    let gate = Gate::new(25_000);
    p.upstream.set_behavior(
        &p.blob_b,
        Behavior {
            gate: Some(gate.clone()),
            chunk_bytes: 5_000,
            ..Behavior::default()
        },
    );
    let through_b = d.url(&format!("/v2/team/b/blobs/{}", p.blob_b));
    let leader = request("GET", &through_b, &[("authorization", BOB)]).await;
    assert_eq!(leader.status(), StatusCode::OK);
    let mut leader = leader.into_body();
    let first = first_chunk(&mut leader).await;
    let heads = p.heads();

    // Bob again, following his own fill through team/b: his repository decision is enough (the
    // fill proves the blob is in team/b), no new HEAD.
    let follower = request("GET", &through_b, &[("authorization", BOB)]).await;
    assert_eq!(follower.status(), StatusCode::OK);
    assert_eq!(p.heads(), heads);
    // Alice, allowed in team/a, asks for it through team/a while it fills: an exact check,
    // which the upstream answers 404.
    let through_a = d.url(&format!("/v2/team/a/blobs/{}", p.blob_b));
    assert_eq!(
        status_as(&through_a, Some(ALICE)).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        p.upstream
            .count(Method::HEAD, &format!("/v2/team/a/blobs/{}", p.blob_b)),
        1
    );
    gate.open();
    let want = crate::common::data(50_000, 2);
    assert_eq!(body(follower).await.unwrap().as_ref(), &want[..]);
    assert_eq!(
        crate::common::rest(leader, first.to_vec()).await.unwrap(),
        want
    );
    d.stop().await;
}

#[tokio::test]
async fn identical_checks_share_one_head_and_decisions_expire() {
    let p = Private::start().await;
    let ttl = Duration::from_secs(2);
    let d = p
        .daemon(|c| {
            c.access.allow_ttl = ttl;
        })
        .await;
    // The first request's check is held at the upstream while the others arrive.
    let check = p.upstream.hold(Method::HEAD, "/v2/team/a/");
    let manifest = d.url("/v2/team/a/manifests/v1");
    let all = tokio::spawn({
        let manifest = manifest.clone();
        async move { join_all((0..8).map(|_| status_as(&manifest, Some(ALICE)))).await }
    });
    seen(&p.upstream, Method::HEAD, "/v2/team/a/", 1).await;
    // A pause for the other seven to arrive and join it (one that arrives later still makes
    // no HEAD: it finds the decision; both are counted below).
    tokio::time::sleep(Duration::from_millis(500)).await;
    check.open();
    let answers = crate::common::within(all).await.unwrap();
    assert!(
        answers.iter().all(|(s, _, _)| *s == StatusCode::OK),
        "{answers:?}"
    );
    assert_eq!(p.heads(), 1, "eight identical concurrent checks, one HEAD");
    let m = crate::common::metrics(&d).await;
    let count = |source: &str| -> u64 {
        let series =
            format!(r#"cache_daemon_access_checks_total{{result="allowed",source="{source}"}} "#);
        m.lines()
            .find_map(|l| l.strip_prefix(series.as_str()))
            .map_or(0, |n| n.parse().unwrap())
    };
    assert_eq!(count("upstream"), 1, "{m}");
    assert!(count("coalesced") >= 1, "no request shared the check: {m}");
    assert_eq!(count("coalesced") + count("cache"), 7, "{m}");
    tokio::time::sleep(ttl + Duration::from_millis(100)).await;
    assert_eq!(status_as(&manifest, Some(ALICE)).await.0, StatusCode::OK);
    assert_eq!(p.heads(), 2, "an expired decision is asked again");
    d.stop().await;
}

#[tokio::test]
async fn an_unreachable_upstream_serves_only_on_a_recent_allow_within_the_grace() {
    let p = Private::start().await;
    // Seconds each, so the two re-checks below fit inside the grace on a loaded machine.
    let ttl = Duration::from_secs(1);
    let grace = Duration::from_secs(6);
    let response_timeout = Duration::from_secs(1);
    let d = p
        .daemon(|c| {
            c.access.allow_ttl = ttl;
            c.access.grace = grace;
            c.upstream.response_timeout = response_timeout;
        })
        .await;
    let blob = d.url(&format!("/v2/team/a/blobs/{}", p.blob_a));
    // Alice's allow is decided between these two instants.
    let before = Instant::now();
    assert_eq!(status_as(&blob, Some(ALICE)).await.0, StatusCode::OK);
    assert_eq!(status_as(&blob, Some(ALICE)).await.0, StatusCode::OK);
    let decided_by = Instant::now();
    p.upstream.grant("Bearer carol-token", "team/a");
    // The upstream hangs: every answer comes long after the daemon's response timeout.
    let checks = p.upstream.hold(Method::HEAD, "/v2/");
    tokio::time::sleep_until((decided_by + ttl + Duration::from_millis(100)).into()).await;
    // Alice's decision is past its TTL but within the grace: served from the store.
    let (status, _, text) = status_as(&blob, Some(ALICE)).await;
    assert!(
        before.elapsed() < ttl + grace,
        "the machine took {:?} for what the grace ({:?}) had to cover",
        before.elapsed(),
        ttl + grace
    );
    assert_eq!(status, StatusCode::OK, "{text}");
    // Carol has rights but was never checked: no fall-open.
    let (status, _, text) = status_as(&blob, Some("Bearer carol-token")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(text.contains("cannot check the caller"), "{text}");
    // Past the grace, alice too.
    tokio::time::sleep_until((decided_by + ttl + grace + Duration::from_millis(100)).into()).await;
    assert_eq!(
        status_as(&blob, Some(ALICE)).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    checks.open();
    d.stop().await;
}

#[tokio::test]
async fn with_checks_off_or_a_public_upstream_nothing_is_checked() {
    // Off (the default): anyone who reaches the port reads what alice brought.
    let p = Private::start().await;
    let d = p.daemon(|c| c.access.check_callers = false).await;
    let blob = d.url(&format!("/v2/team/a/blobs/{}", p.blob_a));
    assert_eq!(status_as(&blob, Some(ALICE)).await.0, StatusCode::OK);
    assert_eq!(status_as(&blob, None).await.0, StatusCode::OK);
    assert_eq!(status_as(&d.url("/v2/"), None).await.0, StatusCode::OK);
    assert_eq!(p.heads(), 0);
    d.stop().await;

    // On, but the upstream is one the daemon holds no credentials for: public, not checked.
    let public = FakeUpstream::start().await;
    let digest = public.blob(crate::common::data(30_000, 3), Default::default());
    let d = TestDaemon::start_in(tempfile::tempdir().unwrap(), &public.url(), |c| {
        c.access.check_callers = true;
    })
    .await;
    let blob = d.url(&format!("/v2/lib/app/blobs/{digest}"));
    for _ in 0..3 {
        assert_eq!(status_as(&blob, None).await.0, StatusCode::OK);
        settle(&d, &digest, None, "lib/app").await;
    }
    assert_eq!(status_as(&d.url("/v2/"), None).await.0, StatusCode::OK);
    assert_eq!(public.count(Method::HEAD, "/v2/"), 0);
    d.stop().await;
}

/// Real parts: docker-registry behind htpasswd, the daemon binary holding its credentials with
/// `--check-callers`, and skopeo as the caller. Right credentials pull; wrong or none fail; with
/// the mode off, none succeed, which is what the mode prevents.
#[test]
fn skopeo_needs_its_own_credentials_to_pull_a_private_image_through_a_checking_daemon() {
    use crate::common::real::{
        free_port, have, output_within, private_registry, write_layout, DaemonBinary,
    };
    if !have("docker-registry") || !have("skopeo") {
        return;
    }
    // The node's own account (the daemon's credentials) and a pod's.
    const USER: &str = "node";
    const PASSWORD: &str = "node-Secret-4411";
    const POD: &str = "pod";
    const POD_PASSWORD: &str = "pod-Secret-7310";
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    let image = write_layout(&layout, "v1", &[128 << 10, 32 << 10], 9);
    let (private, addr) = private_registry(
        work.path(),
        &layout,
        &[(USER, PASSWORD), (POD, POD_PASSWORD)],
    );

    // The daemon's own credentials, as `docker login` would have written them.
    let auth = Credentials::Basic {
        username: USER.into(),
        password: PASSWORD.into(),
    }
    .basic_header()
    .unwrap();
    let docker_config = work.path().join("config.json");
    std::fs::write(
        &docker_config,
        format!(
            r#"{{"auths":{{"{addr}":{{"auth":"{}"}}}}}}"#,
            auth.trim_start_matches("Basic ")
        ),
    )
    .unwrap();
    let daemon = |check: bool, port: u16| {
        let file = work.path().join(format!("cache-{port}.toml"));
        std::fs::write(
            &file,
            format!(
                "listen = \"127.0.0.1:{port}\"\nadmin_listen = \"off\"\nroot = \"{root}\"\n\
                 upstream = \"http://{addr}\"\ndocker_config = \"{dc}\"\n\
                 [access]\ncheck_callers = {check}\nallow_ttl = \"60s\"\n",
                root = work.path().join("store").display(),
                dc = docker_config.display(),
            ),
        )
        .unwrap();
        DaemonBinary::start(&file, port, &work.path().join(format!("daemon-{port}.log")))
    };
    let inspect = |port: u16, creds: Option<&str>| {
        let mut cmd = Command::new("skopeo");
        cmd.args(["inspect", "--raw", "--tls-verify=false"]);
        match creds {
            Some(c) => cmd.args(["--creds", c]),
            None => cmd.arg("--no-creds"),
        };
        cmd.arg(format!("docker://127.0.0.1:{port}/private/app:v1"));
        output_within(&mut cmd, Duration::from_secs(60))
    };
    let copy = |port: u16, creds: Option<&str>, dest: &str| {
        let mut cmd = Command::new("skopeo");
        cmd.args(["copy", "-q", "--src-tls-verify=false"]);
        match creds {
            Some(c) => cmd.args(["--src-creds", c]),
            None => cmd.arg("--src-no-creds"),
        };
        cmd.arg(format!("docker://127.0.0.1:{port}/private/app:v1"))
            .arg(format!("dir:{}", work.path().join(dest).display()));
        output_within(&mut cmd, Duration::from_secs(60))
    };
    let right = format!("{POD}:{POD_PASSWORD}");
    let wrong = format!("{POD}:not-the-password");

    let port = free_port();
    let checking = daemon(true, port);
    let out = copy(port, Some(&right), "right");
    assert!(
        out.status.success(),
        "pull with the right credentials: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(&checking.log).unwrap()
    );
    assert_eq!(
        crate::common::real::verify_dir_pull(&work.path().join("right")),
        1 + image.layers.len()
    );
    assert!(inspect(port, Some(&right)).status.success());
    // The daemon's checks reached the registry as HEADs (skopeo talks only to the daemon, and
    // the daemon's own fetches are GETs), and the pod's account passed them.
    let heads = |status: &str| {
        std::fs::read_to_string(private.log_path())
            .unwrap()
            .lines()
            .filter(|l| {
                l.contains("\"HEAD /v2/private/app/")
                    && l.contains(&format!("HTTP/1.1\" {status} "))
            })
            .count()
    };
    assert!(heads("200") >= 1);
    assert_eq!(heads("401"), 0);
    // Everything is cached now; still, wrong credentials or none read nothing.
    for (creds, dest) in [(Some(wrong.as_str()), "wrong"), (None, "none")] {
        let out = copy(port, creds, dest);
        assert!(
            !out.status.success(),
            "pull with {dest} credentials succeeded"
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("denied: the upstream refused") || err.contains("authentication required"),
            "{dest}: {err}"
        );
        assert!(
            !inspect(port, creds).status.success(),
            "inspect with {dest} credentials"
        );
    }
    assert!(
        checking.metric(r#"cache_daemon_access_checks_total{result="denied",source="upstream"}"#)
            >= 1.0
    );
    assert!(
        heads("401") >= 1,
        "the registry refused the wrong credentials itself"
    );
    checking.terminate();

    // The same store with the mode off: no credentials needed, which is what the mode prevents.
    let port = free_port();
    let open = daemon(false, port);
    let out = copy(port, None, "pulled-anonymously");
    assert!(
        out.status.success(),
        "pull without credentials, checks off: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    open.terminate();
}

/// A daemon with caller checks on whose default upstream is `url`, public (no credentials).
async fn public_daemon(url: &str, tweak: impl FnOnce(&mut Config)) -> TestDaemon {
    TestDaemon::start_in(tempfile::tempdir().unwrap(), url, |c| {
        c.access.check_callers = true;
        tweak(c);
    })
    .await
}

/// Waits (bounded) until `upstream` has seen `n` requests `method` whose path contains `needle`.
async fn seen(upstream: &FakeUpstream, method: Method, needle: &str, n: usize) {
    crate::common::within(async {
        while upstream.count(method.clone(), needle) < n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn a_redirected_check_is_followed_and_only_a_final_2xx_allows() {
    // A public upstream whose blob of team/a is in the store, recorded under team/a.
    let public = FakeUpstream::start().await;
    let want = crate::common::data(30_000, 4);
    let digest = public.blob_in("team/a", want.clone());
    let d = public_daemon(&public.url(), |_| {}).await;
    let via = |repo: &str| d.url(&format!("/v2/{repo}/blobs/{digest}"));
    assert_eq!(status_as(&via("team/a"), None).await.0, StatusCode::OK);
    settle(&d, &digest, None, "team/a").await;

    // The upstream now redirects every HEAD, unchecked, to a registry that does not hold it
    // (registry.k8s.io does this): the redirect is followed and the final 404 answers.
    let elsewhere = FakeUpstream::start().await;
    public.redirect_heads_to(Some(&elsewhere.url()));
    let (status, _, text) = status_as(&via("team/b"), Some(ALICE)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{text}");
    assert!(text.contains("BLOB_UNKNOWN"), "{text}");
    assert_eq!(
        elsewhere.count(Method::HEAD, &format!("/v2/team/b/blobs/{digest}")),
        1,
        "the check followed the redirect"
    );

    // Followed to a registry that holds it in team/d: a final 200 allows, served from the store.
    elsewhere.blob_in("team/d", want.clone());
    let resp = request("GET", &via("team/d"), &[]).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(body(resp).await.unwrap().as_ref(), &want[..]);

    // A redirect loop is never followed to an answer: no allow, 503 (no earlier decision).
    public.redirect_heads_to(Some(&public.url()));
    let (status, _, text) = status_as(&via("team/c"), None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{text}");
    assert!(text.contains("cannot check the caller"), "{text}");
    assert_eq!(
        public.count(Method::HEAD, &format!("/v2/team/c/blobs/{digest}")),
        6,
        "the first HEAD and five redirect hops"
    );
    d.stop().await;
}

#[tokio::test]
async fn an_upstream_the_content_did_not_come_from_cannot_vouch_for_it() {
    let p = Private::start().await;
    // Another configured upstream, which claims to hold everything (stands in for a host of the
    // attacker's choosing with allow_any_registry).
    let evil = FakeUpstream::start().await;
    let claimed = evil.blob(crate::common::data(40_000, 1), Behavior::default());
    assert_eq!(claimed, p.blob_a);
    let evil_ns = evil.url().trim_start_matches("http://").to_owned();
    let own = evil.blob(crate::common::data(10_000, 9), Behavior::default());
    let d = p
        .daemon(|c| {
            let private = c.upstream.default.clone().unwrap();
            let ns = private.authority().to_owned();
            c.upstream.registries.insert(ns, private);
            c.upstream
                .registries
                .insert(evil_ns.clone(), Endpoint::parse(&evil.url()).unwrap());
        })
        .await;
    // Alice brings team/a's private blob to the node.
    let blob = d.url(&format!("/v2/team/a/blobs/{}", p.blob_a));
    assert_eq!(status_as(&blob, Some(ALICE)).await.0, StatusCode::OK);
    settle(&d, &p.blob_a, None, "team/a").await;

    // Anyone asks for it through the other upstream: 404, the other upstream is not asked and
    // nothing is served from the store.
    let through_evil = d.url(&format!("/v2/x/blobs/{}?ns={evil_ns}", p.blob_a));
    let (status, _, text) = status_as(&through_evil, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{text}");
    assert!(text.contains("BLOB_UNKNOWN"), "{text}");
    assert_eq!(evil.count(Method::HEAD, "/v2/"), 0);
    assert_eq!(evil.count(Method::GET, "/v2/"), 0);

    // Its own content is still cached and served through it.
    let own_url = d.url(&format!("/v2/x/blobs/{own}?ns={evil_ns}"));
    assert_eq!(status_as(&own_url, None).await.0, StatusCode::OK);
    settle(&d, &own, Some(&evil_ns), "x").await;
    assert_eq!(status_as(&own_url, None).await.0, StatusCode::OK);
    d.stop().await;
}

#[tokio::test]
async fn an_ns_that_is_not_a_plain_host_cannot_alias_a_repository() {
    let p = Private::start().await;
    let d = p.daemon(|_| {}).await;
    let registry = p.upstream.url().trim_start_matches("http://").to_owned();
    // Alice may pull repository `b`; bob brings team/b's blob to the node (label
    // `<registry>/team/b`).
    p.upstream.grant(ALICE, "b");
    let in_b = p.upstream.blob_in("b", crate::common::data(20_000, 5));
    let mine = d.url(&format!("/v2/b/blobs/{in_b}"));
    assert_eq!(status_as(&mine, Some(ALICE)).await.0, StatusCode::OK);
    let through_b = d.url(&format!("/v2/team/b/blobs/{}", p.blob_b));
    assert_eq!(status_as(&through_b, Some(BOB)).await.0, StatusCode::OK);
    settle(&d, &in_b, None, "b").await;
    settle(&d, &p.blob_b, None, "team/b").await;

    // `ns=<registry>/team` + `b` spelled `<registry>/team/b`: refused as a bad ns.
    let alias = d.url(&format!("/v2/b/blobs/{}?ns={registry}%2Fteam", p.blob_b));
    let (status, _, text) = status_as(&alias, Some(ALICE)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert!(text.contains("NAME_INVALID"), "{text}");
    // A plain host (the one upstream takes any) labels by the upstream's own authority:
    // team/b's blob through `b` is an exact check, which the upstream answers 404.
    let other = d.url(&format!("/v2/b/blobs/{}?ns=anything.example", p.blob_b));
    assert_eq!(
        status_as(&other, Some(ALICE)).await.0,
        StatusCode::NOT_FOUND
    );
    // And a plain `?ns=<host:port>` keeps working.
    let plain = d.url(&format!("/v2/b/blobs/{in_b}?ns={registry}"));
    assert_eq!(status_as(&plain, Some(ALICE)).await.0, StatusCode::OK);
    d.stop().await;
}

#[tokio::test]
async fn one_callers_throttled_check_does_not_hold_the_upstream_back_for_others() {
    let p = Private::start().await;
    let d = p.daemon(|_| {}).await;
    // Mallory may pull team/x, whose blob the upstream answers 429 + Retry-After: 30.
    p.upstream.grant("Bearer mallory-token", "team/x");
    let x = p.upstream.blob_in("team/x", crate::common::data(1_000, 6));
    p.upstream.set_behavior(
        &x,
        Behavior {
            status: Some(StatusCode::TOO_MANY_REQUESTS),
            retry_after_secs: Some(30),
            ..Behavior::default()
        },
    );
    let mallory = d.url(&format!("/v2/team/x/blobs/{x}"));
    let (status, _, text) = status_as(&mallory, Some("Bearer mallory-token")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{text}");
    // Alice's check and fill still go to the upstream.
    let blob = d.url(&format!("/v2/team/a/blobs/{}", p.blob_a));
    let (status, _, text) = status_as(&blob, Some(ALICE)).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    // The fill went upstream (401 to the untokened GET, then the GET with the daemon's token).
    assert_eq!(
        p.upstream
            .count(Method::GET, &format!("/blobs/{}", p.blob_a)),
        2
    );
    let metrics = String::from_utf8_lossy(
        &body(request("GET", &d.url("/metrics"), &[]).await)
            .await
            .unwrap(),
    )
    .into_owned();
    assert!(
        metrics.contains(r#"cache_daemon_upstream_requests_total{kind="blob",status="4xx"} 1"#),
        "the 429 is counted: {metrics}"
    );
    d.stop().await;
}

#[tokio::test]
async fn caller_checks_in_flight_are_capped_per_upstream() {
    let p = Private::start().await;
    let d = p.daemon(|_| {}).await;
    // Every check is held at the upstream until the count has been read.
    let checks = p.upstream.hold(Method::HEAD, "/v2/");
    let blob = d.url(&format!("/v2/team/a/blobs/{}", p.blob_a));
    // 40 distinct garbage tokens at once: 16 checks reach the upstream, the rest wait.
    let tokens: Vec<String> = (0..40).map(|i| format!("Bearer garbage-{i}")).collect();
    let all = tokio::spawn({
        let blob = blob.clone();
        async move { join_all(tokens.iter().map(|t| status_as(&blob, Some(t)))).await }
    });
    seen(&p.upstream, Method::HEAD, "/v2/", 16).await;
    // Given time, no 17th check reaches the upstream while 16 are held.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(p.heads(), 16, "at most 16 caller checks in flight");
    checks.open();
    let answers = crate::common::within(all).await.unwrap();
    assert!(
        answers
            .iter()
            .all(|(s, _, _)| *s == StatusCode::UNAUTHORIZED),
        "{answers:?}"
    );
    assert_eq!(p.heads(), 40);
    d.stop().await;
}

#[tokio::test]
async fn a_follower_refused_on_its_recheck_gets_the_challenge() {
    let p = Private::start().await;
    let d = p.daemon(|_| {}).await;
    p.upstream.grant("Bearer carol-token", "team/c");
    // A blob in every repository whose fill stops part-way until the gate opens.
    let gate = Gate::new(5_000);
    let want = crate::common::data(20_000, 7);
    let x = p.upstream.blob(
        want.clone(),
        Behavior {
            gate: Some(gate.clone()),
            chunk_bytes: 1_000,
            ..Behavior::default()
        },
    );
    // Bob asks through team/b and carol through team/c; both checks are held at the upstream,
    // so both are misses with no fill yet. Bob's check is answered first and his fill starts;
    // carol's is answered after it (allowed: her rights are judged as it arrived), so she finds
    // his fill and is asked again, now about that exact blob in team/c, with her rights gone.
    let bob_check = p
        .upstream
        .hold(Method::HEAD, &format!("/v2/team/b/blobs/{x}"));
    let carol_check = p
        .upstream
        .hold(Method::HEAD, &format!("/v2/team/c/blobs/{x}"));
    let bob_url = d.url(&format!("/v2/team/b/blobs/{x}"));
    let bob =
        tokio::spawn(async move { request("GET", &bob_url, &[("authorization", BOB)]).await });
    seen(
        &p.upstream,
        Method::HEAD,
        &format!("/v2/team/b/blobs/{x}"),
        1,
    )
    .await;
    let carol_url = d.url(&format!("/v2/team/c/blobs/{x}"));
    let carol =
        tokio::spawn(async move { status_as(&carol_url, Some("Bearer carol-token")).await });
    seen(
        &p.upstream,
        Method::HEAD,
        &format!("/v2/team/c/blobs/{x}"),
        1,
    )
    .await;
    assert!(d.daemon.app().flights.get(&x).is_none());
    bob_check.open();
    let app = d.daemon.app();
    crate::common::eventually(|| app.flights.get(&x).is_some()).await;
    p.upstream.revoke("Bearer carol-token");
    carol_check.open();
    let (status, challenge, text) = crate::common::within(carol).await.unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{text}");
    assert!(
        challenge.contains(r#"scope="repository:team/c:pull""#),
        "the re-check's refusal carries the challenge: {challenge:?}"
    );
    assert_eq!(
        p.upstream
            .count(Method::HEAD, &format!("/v2/team/c/blobs/{x}")),
        2
    );
    gate.open();
    let bob = crate::common::within(bob).await.unwrap();
    assert_eq!(bob.status(), StatusCode::OK);
    assert_eq!(body(bob).await.unwrap().as_ref(), &want[..]);
    d.stop().await;
}
