//! End to end with real parts: Debian's `docker-registry` upstream holding an image pushed by
//! `skopeo`, the real `cache-daemon` binary in front of it, and concurrent `skopeo copy` pulls
//! through the daemon, digests checked on disk and upstream requests counted from the registry's
//! own access log.

use std::process::Command;
use std::time::Duration;

use crate::common::real::{
    free_port, have, output_within, run, verify_dir_pull, write_layout, DaemonBinary, Registry,
};

const PULLERS: usize = 4;

#[test]
fn skopeo_pulls_through_the_daemon_fetch_each_blob_upstream_once() {
    if !have("docker-registry") || !have("skopeo") {
        return;
    }
    let registry = Registry::start(None);
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    let image = write_layout(&layout, "v1", &[1 << 20, 3 << 20, 512 << 10], 40);
    let reg = format!("127.0.0.1:{}", registry.port);
    run(Command::new("skopeo").args([
        "copy",
        "-q",
        "--dest-tls-verify=false",
        &format!("oci:{}:v1", layout.display()),
        &format!("docker://{reg}/test/app:v1"),
    ]));
    // The same blobs under a second repository, with Docker schema2 media types.
    run(Command::new("skopeo").args([
        "copy",
        "-q",
        "--format",
        "v2s2",
        "--dest-tls-verify=false",
        &format!("oci:{}:v1", layout.display()),
        &format!("docker://{reg}/test/app-docker:v1"),
    ]));

    let port = free_port();
    let store = work.path().join("store");
    let mut cmd = DaemonBinary::command();
    // No admin port: its default is the fixed 127.0.0.1:5051, which a daemon of another test
    // running at the same time would already hold.
    cmd.args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--admin-listen", "off"])
        .arg("--root")
        .arg(&store)
        .args(["--upstream", &registry.url()]);
    let daemon = DaemonBinary::start_with(cmd, port, &work.path().join("daemon.log"));
    let before = registry.count("GET", "/blobs/");

    // Each pull runs on its own thread under `output_within`: its output is read as it comes,
    // and it is killed if it overruns, so a failed assertion never leaves a skopeo running.
    let pull = |repo: &str, n: usize| -> Vec<std::thread::JoinHandle<std::process::Output>> {
        (0..n)
            .map(|i| {
                let mut cmd = Command::new("skopeo");
                cmd.args([
                    "copy",
                    "-q",
                    "--src-tls-verify=false",
                    &format!("docker://127.0.0.1:{port}/{repo}:v1"),
                    &format!(
                        "dir:{}",
                        work.path()
                            .join(format!("{}-{i}", repo.replace('/', "_")))
                            .display()
                    ),
                ]);
                std::thread::spawn(move || output_within(&mut cmd, Duration::from_secs(120)))
            })
            .collect()
    };
    for child in pull("test/app", PULLERS) {
        let out = child.join().expect("skopeo pull thread");
        assert!(
            out.status.success(),
            "skopeo pull failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for i in 0..PULLERS {
        // Config + 3 layers, each hashed against its name.
        assert_eq!(
            verify_dir_pull(&work.path().join(format!("test_app-{i}"))),
            4
        );
    }
    for d in image.layers.iter().chain([&image.config]) {
        assert_eq!(
            registry.count("GET", &d.to_string()),
            1,
            "upstream GETs of {d}"
        );
    }
    assert_eq!(registry.count("GET", "/blobs/") - before, 4);

    // Another repository with the same blobs: served from the shared store, no blob GETs.
    for child in pull("test/app-docker", 2) {
        let out = child.join().expect("skopeo pull thread");
        assert!(
            out.status.success(),
            "skopeo pull failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(verify_dir_pull(&work.path().join("test_app-docker-0")), 4);
    assert_eq!(registry.count("GET", "/blobs/") - before, 4);

    // SIGTERM: graceful exit with status 0.
    let status = daemon.terminate();
    assert!(status.success(), "cache-daemon exited with {status}");
}

/// A private upstream (docker-registry behind htpasswd) whose credentials come from a docker
/// credential helper named in `credHelpers`: the daemon runs the helper at start, pulls through
/// it work, the helper's secret is never logged, and a helper that is not installed stops the
/// start with a message naming it.
#[test]
fn credentials_from_a_docker_credential_helper_reach_a_private_upstream() {
    use std::os::unix::fs::PermissionsExt as _;
    if !have("docker-registry") || !have("skopeo") {
        return;
    }
    const USER: &str = "node";
    const PASSWORD: &str = "helper-Secret-2207";
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    let image = write_layout(&layout, "v1", &[256 << 10, 64 << 10], 7);
    // Pushed into an open registry, then the same storage served behind htpasswd.
    let (private, addr) =
        crate::common::real::private_registry(work.path(), &layout, &[(USER, PASSWORD)]);

    // The helper answers docker's protocol for this registry only, and records that it ran.
    let bin = work.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let helper = bin.join("docker-credential-stampede-test");
    let ran = work.path().join("helper-ran");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 9\nserver=$(cat)\necho \"$server\" >> {ran}\n\
             if [ \"$server\" = \"{addr}\" ]; then\n  echo '{{\"ServerURL\":\"{addr}\",\"Username\":\"{USER}\",\"Secret\":\"{PASSWORD}\"}}'\n\
             else\n  echo 'credentials not found in native keychain'; exit 1\nfi\n",
            ran = ran.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let docker_config = work.path().join("config.json");
    std::fs::write(
        &docker_config,
        format!(r#"{{"credHelpers":{{"{addr}":"stampede-test"}}}}"#),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );

    let port = free_port();
    let log = work.path().join("daemon.log");
    let daemon = |config: &std::path::Path| {
        let mut cmd = DaemonBinary::command();
        cmd.args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--admin-listen", "off"])
            .arg("--root")
            .arg(work.path().join("store"))
            .args(["--upstream", &format!("http://{addr}")])
            .arg("--docker-config")
            .arg(config)
            .env("PATH", &path);
        cmd
    };
    let running = DaemonBinary::start_with(daemon(&docker_config), port, &log);
    assert_eq!(
        std::fs::read_to_string(&ran).unwrap().trim(),
        addr.to_string()
    );
    let dest = work.path().join("pulled");
    let out = crate::common::real::output_within(
        Command::new("skopeo").args([
            "copy",
            "-q",
            "--src-tls-verify=false",
            &format!("docker://127.0.0.1:{port}/private/app:v1"),
            &format!("dir:{}", dest.display()),
        ]),
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "pull through the daemon: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(&log).unwrap()
    );
    assert_eq!(verify_dir_pull(&dest), 1 + image.layers.len());
    // The registry served every blob to the daemon once, authorized by the helper's credentials.
    let access = std::fs::read_to_string(private.log_path()).unwrap();
    let served = access
        .lines()
        .filter(|l| {
            l.contains("\"GET /v2/private/app/blobs/")
                && l.contains("HTTP/1.1\" 200 ")
                && l.ends_with(&format!("\"cache-daemon/{}\"", env!("CARGO_PKG_VERSION")))
        })
        .count();
    assert_eq!(served, 1 + image.layers.len(), "{access}");
    assert!(access.contains("msg=\"authorized request\""), "{access}");
    running.terminate();
    assert!(!std::fs::read_to_string(&log).unwrap().contains(PASSWORD));

    // A helper that is not installed: the daemon does not start, and says which.
    let missing = work.path().join("missing.json");
    std::fs::write(
        &missing,
        format!(r#"{{"credHelpers":{{"{addr}":"not-installed"}}}}"#),
    )
    .unwrap();
    let missing_log = work.path().join("missing.log");
    // A daemon that wrongly starts is killed on drop when the assertion fails.
    let mut refused = DaemonBinary::spawn(daemon(&missing), port, &missing_log);
    let status = refused
        .exited_within(Duration::from_secs(10))
        .expect("cache-daemon started with a missing credential helper");
    assert!(!status.success());
    let text = std::fs::read_to_string(&missing_log).unwrap();
    assert!(
        text.contains("docker-credential-not-installed") && text.contains("not installed"),
        "{text}"
    );
}
