//! What a node operator hits on first use (issue 17), each against the real parts where the
//! problem involves them: operator tools aimed at another daemon's store, tag revalidation that
//! spends the registry's pull quota, the default upstream's credentials, a config without a
//! default upstream or with a URL lacking its scheme, schema 1 manifests, provenance of filled
//! blobs (and caller checks switched on over a store filled without them), and the tools' own
//! words (plural counts, the upstream a prefetch really used, blobs left in quarantine).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use stampede_oci::Digest;

use crate::common::real::{
    free_port, have, output_within, private_registry, push_layout, run_within, verify_dir_pull,
    write_layout, DaemonBinary, Registry,
};

const TOOL_LIMIT: Duration = Duration::from_secs(60);

/// Runs the `cache-daemon` binary as a tool: exit code, stdout, stderr.
fn tool(args: &[&str]) -> (i32, String, String) {
    let out = output_within(DaemonBinary::command().args(args), TOOL_LIMIT);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Writes a daemon config file at `path`; `extra` is appended as is.
fn config(path: &Path, port: u16, admin: &str, root: &Path, extra: &str) {
    std::fs::write(
        path,
        format!(
            "listen = \"127.0.0.1:{port}\"\nadmin_listen = \"{admin}\"\nroot = \"{}\"\n{extra}",
            root.display()
        ),
    )
    .unwrap();
}

/// Requests by the daemon (its `User-Agent`) in a docker-registry access log, by method and a
/// path fragment.
fn daemon_requests(log: &Path, method: &str, path: &str) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&format!("\"{method} {path}")) && l.contains("cache-daemon/"))
        .count()
}

/// `skopeo copy` of `reference` (`host:port/repo:tag`) into `dir:`, without credentials.
fn skopeo_copy(reference: &str, dest: &Path) -> std::process::Output {
    output_within(
        Command::new("skopeo")
            .args(["copy", "-q", "--src-tls-verify=false", "--src-no-creds"])
            .arg(format!("docker://{reference}"))
            .arg(format!("dir:{}", dest.display())),
        TOOL_LIMIT,
    )
}

fn stored_blob(root: &Path, d: &Digest) -> PathBuf {
    root.join("blobs/sha256").join(&d.hex()[..2]).join(d.hex())
}

#[test]
fn operator_tools_refuse_a_daemon_that_serves_another_store() {
    let work = tempfile::tempdir().unwrap();
    let (root_a, root_b) = (work.path().join("store-a"), work.path().join("store-b"));
    let (admin_a, admin_b) = (free_port(), free_port());
    let start = |name: &str, root: &Path, admin: u16| {
        let port = free_port();
        let file = work.path().join(format!("{name}.toml"));
        config(
            &file,
            port,
            &format!("127.0.0.1:{admin}"),
            root,
            "upstream = \"http://127.0.0.1:9\"\n",
        );
        DaemonBinary::start(&file, port, &work.path().join(format!("{name}.log")))
    };
    let _a = start("a", &root_a, admin_a);
    let _b = start("b", &root_b, admin_b);
    let (canon_a, canon_b) = (
        root_a.canonicalize().unwrap(),
        root_b.canonicalize().unwrap(),
    );
    let b = root_b.to_str().unwrap();

    // B's store, but the admin address the tool is led to is A's (as the default address is
    // when daemon A listens on it): refused, naming both stores, nothing done.
    let misled = work.path().join("misled.toml");
    config(
        &misled,
        free_port(),
        &format!("127.0.0.1:{admin_a}"),
        &root_b,
        "upstream = \"http://127.0.0.1:9\"\n",
    );
    let misled = misled.to_str().unwrap();
    let url_a = format!("http://127.0.0.1:{admin_a}");
    for args in [
        vec!["ls", "--config", misled],
        vec!["gc", "--dry-run", "--target-bytes", "0", "--config", misled],
        vec!["ls", "--root", b, "--admin", &url_a],
    ] {
        let (code, out, err) = tool(&args);
        assert_eq!(code, 2, "{args:?} must be refused: {out}{err}");
        for needle in [
            format!("serves the store {}", canon_a.display()),
            format!("not {}", canon_b.display()),
            "--admin".to_owned(),
        ] {
            assert!(err.contains(&needle), "{args:?}: {needle:?} not in {err}");
        }
        assert!(out.is_empty(), "{args:?} printed {out}");
    }

    // The daemon that does hold B's store answers for it.
    let url_b = format!("http://127.0.0.1:{admin_b}");
    let (code, out, err) = tool(&["ls", "--root", b, "--admin", &url_b]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("DIGEST"), "{out}");

    // Nothing listens where the config points: say so, and how to give the right address.
    let silent = work.path().join("silent.toml");
    let nobody = free_port();
    config(
        &silent,
        free_port(),
        &format!("127.0.0.1:{nobody}"),
        &root_b,
        "upstream = \"http://127.0.0.1:9\"\n",
    );
    let (code, _, err) = tool(&["ls", "--config", silent.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    for needle in [
        "no daemon answers",
        "refused",
        "--admin",
        "--config",
        &format!("a daemon holds the store {}", root_b.display()),
    ] {
        assert!(err.contains(needle), "{needle:?} not in {err}");
    }
    let (code, _, err) = tool(&["ls", "--admin", &format!("http://127.0.0.1:{nobody}")]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("no daemon answers") && err.contains("check --admin"),
        "{err}"
    );
}

#[test]
fn tags_are_revalidated_with_head_and_fetched_only_when_they_change() {
    if !have("docker-registry") || !have("skopeo") {
        return;
    }
    let registry = Registry::start(None);
    let work = tempfile::tempdir().unwrap();
    let upstream_ref = format!("127.0.0.1:{}/app:v1", registry.port);
    write_layout(&work.path().join("one"), "v1", &[4096], 1);
    push_layout(&work.path().join("one"), &upstream_ref);
    let root = work.path().join("store");
    let file = work.path().join("cache.toml");
    let port = free_port();
    config(
        &file,
        port,
        "off",
        &root,
        &format!("upstream = \"{}\"\ntag_ttl = \"1s\"\n", registry.url()),
    );
    let inspect = || {
        run_within(
            Command::new("skopeo")
                .args(["inspect", "--raw", "--tls-verify=false", "--no-creds"])
                .arg(format!("docker://127.0.0.1:{port}/app:v1")),
            TOOL_LIMIT,
        )
    };
    let gets = || daemon_requests(&registry.log, "GET", "/v2/app/manifests/v1");
    let heads = || daemon_requests(&registry.log, "HEAD", "/v2/app/manifests/v1");
    let past_ttl = || std::thread::sleep(Duration::from_millis(1300));

    let daemon = DaemonBinary::start(&file, port, &work.path().join("cache.log"));
    let first = inspect();
    for _ in 0..2 {
        past_ttl();
        assert_eq!(inspect(), first);
    }
    // One GET for the first resolution; every later one past the TTL is a HEAD.
    assert_eq!((gets(), heads()), (1, 2), "{}", registry.log.display());

    // After a restart the store still knows what the tag named: a HEAD again, no GET.
    daemon.terminate();
    let daemon = DaemonBinary::start(&file, port, &work.path().join("cache2.log"));
    assert_eq!(inspect(), first);
    assert_eq!((gets(), heads()), (1, 3));

    // The tag moves upstream: the HEAD names another digest, so the manifest is fetched.
    write_layout(&work.path().join("two"), "v1", &[4096], 2);
    push_layout(&work.path().join("two"), &upstream_ref);
    past_ttl();
    let second = inspect();
    assert_ne!(second, first, "the moved tag must be served");
    assert_eq!((gets(), heads()), (2, 4));
    daemon.terminate();
}

#[test]
fn requests_without_ns_use_the_credentials_of_the_default_upstreams_registry_entry() {
    if !have("docker-registry") || !have("skopeo") {
        return;
    }
    const USER: &str = "node";
    const PASSWORD: &str = "node-Secret-2291";
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    let image = write_layout(&layout, "v1", &[64 << 10], 3);
    let (_private, addr) = private_registry(work.path(), &layout, &[(USER, PASSWORD)]);
    let secret = work.path().join("password");
    std::fs::write(&secret, format!("{PASSWORD}\n")).unwrap();
    // The deploy/README.md shape: a default upstream, and its registry's section holding the
    // login. Clients that send no `?ns=` (dockerd, podman, CRI-O; skopeo here) must get it too.
    let file = work.path().join("cache.toml");
    let port = free_port();
    config(
        &file,
        port,
        "off",
        &work.path().join("store"),
        &format!(
            "upstream = \"http://{addr}\"\n[registries.\"{addr}\"]\nurl = \"http://{addr}\"\n\
             username = \"{USER}\"\npassword_file = \"{}\"\n",
            secret.display()
        ),
    );
    let daemon = DaemonBinary::start(&file, port, &work.path().join("cache.log"));
    let dest = work.path().join("pulled");
    let out = skopeo_copy(&format!("127.0.0.1:{port}/private/app:v1"), &dest);
    assert!(
        out.status.success(),
        "pull without ns through the daemon: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(&daemon.log).unwrap_or_default()
    );
    assert_eq!(verify_dir_pull(&dest), 1 + image.layers.len());
    daemon.terminate();
}

#[test]
fn a_config_without_default_upstream_warns_and_a_url_without_scheme_is_explained() {
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("cache.toml");
    let port = free_port();
    config(
        &file,
        port,
        "off",
        &work.path().join("store"),
        "[registries.\"docker.io\"]\nurl = \"http://127.0.0.1:9\"\n",
    );
    let log = work.path().join("cache.log");
    let daemon = DaemonBinary::start(&file, port, &log);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("no default upstream") && text.contains("docker.io"),
        "{text}"
    );
    // What the warning is about: a request naming no registry is refused.
    let status = stampede_lab::probe::status(
        std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        "/v2/library/alpine/manifests/latest",
    );
    assert_eq!(status, Some(403));
    daemon.terminate();

    let bad = work.path().join("bad.toml");
    config(
        &bad,
        free_port(),
        "off",
        &work.path().join("store2"),
        "upstream = \"127.0.0.1:15000\"\n",
    );
    let mut cmd = DaemonBinary::command();
    cmd.arg("--config").arg(&bad);
    let bad_log = work.path().join("bad.log");
    let mut refused = DaemonBinary::spawn(cmd, 0, &bad_log);
    let status = refused.exited_within(Duration::from_secs(20));
    assert_eq!(status.and_then(|s| s.code()), Some(2));
    let text = std::fs::read_to_string(&bad_log).unwrap();
    for needle in [
        "line 4",
        "upstream = \"127.0.0.1:15000\"",
        "a scheme is needed",
        "\"http://127.0.0.1:15000\"",
    ] {
        assert!(text.contains(needle), "{needle:?} not in {text}");
    }
}

#[tokio::test]
async fn a_schema1_manifest_is_refused_as_unsupported_not_blamed_on_the_upstream() {
    use crate::common::upstream::FakeUpstream;
    use crate::common::{body, request, TestDaemon};
    use base64::Engine as _;
    const SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

    // A signed schema 1 manifest as distribution stores it: the payload, then the signatures
    // spliced in before its closing brace; `formatLength` and `formatTail` say how to undo that.
    let head = "{\n   \"schemaVersion\": 1,\n   \"name\": \"test/old\",\n   \"tag\": \"v1\",\n   \"architecture\": \"amd64\",\n   \"fsLayers\": [],\n   \"history\": []";
    let tail = "\n}";
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let protected = b64.encode(format!(
        r#"{{"formatLength":{},"formatTail":"{}","time":"2016-01-01T00:00:00Z"}}"#,
        head.len(),
        b64.encode(tail)
    ));
    let signed = format!(
        "{head},\n   \"signatures\": [\n      {{\n         \"header\": {{\"alg\": \"ES256\"}},\n         \"signature\": \"c2lnbmF0dXJl\",\n         \"protected\": \"{protected}\"\n      }}\n   ]{tail}"
    );
    let up = FakeUpstream::start().await;
    up.manifest("test/old", Some("v1"), SIGNED, signed.clone());
    // The upstream names the payload's digest, which the whole body does not hash to.
    let payload = crate::common::upstream::schema1_payload_digest(SIGNED, signed.as_bytes());
    assert_eq!(
        payload,
        Some(Digest::of(format!("{head}{tail}").as_bytes()))
    );
    assert_ne!(payload, Some(Digest::of(signed.as_bytes())));
    // Unsigned schema 1 declared as plain JSON is recognised by its schemaVersion.
    up.manifest(
        "test/old",
        Some("plain"),
        "application/json",
        format!("{head}{tail}"),
    );

    let cache = TestDaemon::start(&up.url()).await;
    for tag in ["v1", "plain"] {
        let resp = request(
            "GET",
            &cache.url(&format!("/v2/test/old/manifests/{tag}")),
            &[],
        )
        .await;
        let status = resp.status();
        let text = String::from_utf8_lossy(&body(resp).await.unwrap()).into_owned();
        assert_eq!(status, 400, "{tag}: {text}");
        assert!(
            text.contains("MANIFEST_INVALID")
                && text.contains("schema 1")
                && text.contains("does not support"),
            "{tag}: {text}"
        );
        assert!(!text.contains("does not match its digest"), "{text}");
    }
    cache.stop().await;
}

#[test]
fn fills_record_their_repository_so_checks_switched_on_later_need_no_second_download() {
    if !have("docker-registry") || !have("skopeo") {
        return;
    }
    let registry = Registry::start(None);
    let work = tempfile::tempdir().unwrap();
    let image = write_layout(&work.path().join("layout"), "v1", &[96 << 10, 8 << 10], 5);
    push_layout(
        &work.path().join("layout"),
        &format!("127.0.0.1:{}/team/app:v1", registry.port),
    );
    let root = work.path().join("store");
    let daemon = |check: bool| {
        let port = free_port();
        let file = work.path().join(format!("cache-{check}.toml"));
        config(
            &file,
            port,
            "off",
            &root,
            &format!(
                "upstream = \"{}\"\n[access]\ncheck_callers = {check}\n",
                registry.url()
            ),
        );
        let log = work.path().join(format!("cache-{check}.log"));
        (DaemonBinary::start(&file, port, &log), port)
    };
    let blobs: Vec<Digest> = image
        .layers
        .iter()
        .cloned()
        .chain([image.config.clone()])
        .collect();

    // Filled with caller checks off, never hit since.
    let (open, port) = daemon(false);
    let out = skopeo_copy(
        &format!("127.0.0.1:{port}/team/app:v1"),
        &work.path().join("a"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    open.terminate();

    // `ls` says where each filled blob came from.
    let (code, out, err) = tool(&["ls", "--root", root.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let seen_as = format!("127.0.0.1:{}/team/app", registry.port);
    for d in &blobs {
        let short: String = d.to_string().chars().take(19).collect();
        let line = out
            .lines()
            .find(|l| l.starts_with(&short))
            .unwrap_or_else(|| panic!("{d} not listed:\n{out}"));
        assert!(line.contains(&seen_as), "{line}");
    }

    // Checks on over the same store: the held blobs are served, not fetched again.
    let (checking, port) = daemon(true);
    let dest = work.path().join("b");
    let out = skopeo_copy(&format!("127.0.0.1:{port}/team/app:v1"), &dest);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(&checking.log).unwrap_or_default()
    );
    assert_eq!(verify_dir_pull(&dest), blobs.len());
    for d in &blobs {
        assert_eq!(
            daemon_requests(&registry.log, "GET", &format!("/v2/team/app/blobs/{d}")),
            1,
            "{d} fetched again"
        );
    }
    checking.terminate();
}

#[test]
fn tool_messages_count_in_words_name_the_real_upstream_and_keep_quarantined_blobs_in_view() {
    if !have("docker-registry") || !have("skopeo") {
        return;
    }
    let registry = Registry::start(None);
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    let image = write_layout(&layout, "v1", &[16 << 10], 7);
    push_layout(
        &layout,
        &format!("127.0.0.1:{}/demo/other:v2", registry.port),
    );
    let root = work.path().join("store");
    let root_arg = root.to_str().unwrap();
    let upstream = registry.url();
    std::fs::create_dir_all(root.join("blobs")).unwrap();

    // A name without a registry means the configured upstream, not docker.io.
    let (code, out, err) = tool(&[
        "prefetch",
        "demo/other:v2",
        "--root",
        root_arg,
        "--upstream",
        &upstream,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!(
            "prefetched demo/other:v2 from {upstream}: 1 manifest, 2 blobs, 2 fetched now"
        )),
        "{out}"
    );
    assert!(!out.contains("docker.io"), "{out}");

    let layer = image.layers[0].to_string();
    let (code, out, err) = tool(&["pin", &layer, "--root", root_arg]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("(1 digest)"), "{out}");
    let (code, out, err) = tool(&["unpin", &layer, "--root", root_arg]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("(1 pin)"), "{out}");

    // A corrupted layer is quarantined by one verify and still shown by the next.
    let path = stored_blob(&root, &image.layers[0]);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[0] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    let (code, out, _) = tool(&["verify", "--root", root_arg]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("quarantined {layer}")), "{out}");
    let (code, out, _) = tool(&["verify", "--root", root_arg]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("still in quarantine {layer}")),
        "{out}"
    );
    assert!(
        out.contains("verified 2 blobs (") && out.contains("1 in quarantine from before"),
        "{out}"
    );
}
