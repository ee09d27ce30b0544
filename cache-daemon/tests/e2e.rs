//! End to end with real parts: Debian's `docker-registry` upstream holding an image pushed by
//! `skopeo`, the real `cache-daemon` binary in front of it, and concurrent `skopeo copy` pulls
//! through the daemon, digests checked on disk and upstream requests counted from the registry's
//! own access log.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::real::{
    free_port, have, run, verify_dir_pull, wait_http, write_layout, Registry,
};

const PULLERS: usize = 4;

struct DaemonProcess(std::process::Child);

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

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
    let mut daemon = DaemonProcess(
        Command::new(env!("CARGO_BIN_EXE_cache-daemon"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--root")
            .arg(&store)
            .args(["--upstream", &registry.url()])
            .stderr(std::fs::File::create(work.path().join("daemon.log")).unwrap())
            .spawn()
            .expect("start cache-daemon"),
    );
    wait_http(
        &format!("http://127.0.0.1:{port}/healthz"),
        Duration::from_secs(10),
    );
    let before = registry.count("GET", "/blobs/");

    let pull = |repo: &str, n: usize| -> Vec<std::process::Child> {
        (0..n)
            .map(|i| {
                Command::new("skopeo")
                    .args([
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
                    ])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect()
    };
    for child in pull("test/app", PULLERS) {
        let out = child.wait_with_output().unwrap();
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
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "skopeo pull failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(verify_dir_pull(&work.path().join("test_app-docker-0")), 4);
    assert_eq!(registry.count("GET", "/blobs/") - before, 4);

    // SIGTERM: graceful exit with status 0.
    run(Command::new("kill").args(["-TERM", &daemon.0.id().to_string()]));
    let status = daemon.0.wait().unwrap();
    assert!(status.success(), "cache-daemon exited with {status}");
}
