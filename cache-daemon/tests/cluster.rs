//! Cluster mode end to end: several real `cache-daemon` binaries on loopback ports, each with
//! its own peer port, in front of Debian's real `docker-registry`, pulled through by real
//! `skopeo` (one per node) or plain HTTP; registry requests counted from its own access log.
//! The corrupting peer is an in-process fake (a registry cannot be made to lie).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cache_daemon::cluster::membership::Member;
use cache_daemon::cluster::rendezvous;
use cache_daemon::cluster::stripe::{self, STRIPE_BYTES};
use stampede_oci::Digest;

use crate::common::real::{
    free_port, have, push_layout, run_within, verify_dir_pull, write_layout, DaemonBinary, Image,
    Registry,
};

/// Bytes of the large layer's content: three stripes (16 + 16 + 2 MiB, before gzip, which
/// does not shrink pseudo-random bytes).
const BIG_LAYER_BYTES: usize = 34 << 20;

/// One node: a daemon binary with a mirror port and a peer port.
struct Node {
    daemon: Option<DaemonBinary>,
    port: u16,
    admin: u16,
    peer: Member,
    root: PathBuf,
}

impl Node {
    fn metric(&self, series: &str) -> f64 {
        self.daemon.as_ref().expect("node running").metric(series)
    }
}

/// A cluster's shared parts: a work dir, the secret and the peer addresses chosen up front.
struct Fabric {
    work: tempfile::TempDir,
    secret: PathBuf,
}

impl Fabric {
    fn new() -> Self {
        let work = tempfile::tempdir().unwrap();
        let secret = work.path().join("cluster-secret");
        std::fs::write(&secret, "a-test-cluster-secret-of-32-bytes\n").unwrap();
        Self { work, secret }
    }

    fn peers(n: usize) -> Vec<Member> {
        (0..n)
            .map(|_| Member::from(std::net::SocketAddr::from(([127, 0, 0, 1], free_port()))))
            .collect()
    }

    /// Starts node `i` of `peers`, its members given by `members` (flag and value).
    fn start(&self, i: usize, peer: Member, registry: &Registry, members: &[&str]) -> Node {
        let port = free_port();
        let admin = free_port();
        let root = self.work.path().join(format!("node{i}"));
        let mut cmd = DaemonBinary::command();
        cmd.args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
            .arg("--root")
            .arg(&root)
            .args(["--upstream", &registry.url()])
            .args(["--peer-listen", &peer.to_string()])
            .arg("--cluster-secret-file")
            .arg(&self.secret)
            .args(members)
            .env("RUST_LOG", "info,cache_daemon::cluster=debug");
        let log = self.work.path().join(format!("node{i}.log"));
        let daemon = DaemonBinary::start_with(cmd, port, &log);
        Node {
            daemon: Some(daemon),
            port,
            admin,
            peer,
            root,
        }
    }
}

fn pushed_image(registry: &Registry, dir: &Path, seed: u8) -> Image {
    let layout = dir.join(format!("layout{seed}"));
    let image = write_layout(&layout, "v1", &[BIG_LAYER_BYTES, 1 << 20, 200 << 10], seed);
    push_layout(&layout, &format!("127.0.0.1:{}/test/app:v1", registry.port));
    image
}

/// `skopeo copy` of the image through `port` into `dir`, started, not waited for.
fn skopeo_pull(port: u16, dir: &Path) -> std::process::Child {
    Command::new("skopeo")
        .args([
            "copy",
            "-q",
            "--src-tls-verify=false",
            &format!("docker://127.0.0.1:{port}/test/app:v1"),
            &format!("dir:{}", dir.display()),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start skopeo")
}

/// Waits for a pull within `limit`; its success and stderr.
fn finish(mut child: std::process::Child, limit: Duration) -> (bool, String) {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                std::io::Read::read_to_string(&mut e, &mut err).ok();
            }
            return (status.success(), err);
        }
        if start.elapsed() > limit {
            child.kill().ok();
            child.wait().ok();
            return (false, format!("did not finish within {limit:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Registry `GET`s of blob `d` (each stripe request is one).
fn gets(registry: &Registry, d: &Digest) -> usize {
    registry.count("GET", &format!("/blobs/{d}"))
}

fn stripes_of(path: &Path) -> usize {
    let len = std::fs::metadata(path).unwrap().len();
    usize::try_from(stripe::count(len)).unwrap()
}

#[test]
fn a_cold_burst_costs_the_registry_one_get_per_stripe_and_every_pull_verifies() {
    if !have("docker-registry") || !have("skopeo") {
        return;
    }
    const NODES: usize = 4;
    let registry = Registry::start(None);
    let fabric = Fabric::new();
    let image = pushed_image(&registry, fabric.work.path(), 60);
    let peers = Fabric::peers(NODES);
    let list = peers
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let nodes: Vec<Node> = (0..NODES)
        .map(|i| fabric.start(i, peers[i], &registry, &["--peers", &list]))
        .collect();

    let pulls: Vec<_> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| skopeo_pull(n.port, &fabric.work.path().join(format!("pull{i}"))))
        .collect();
    for (i, p) in pulls.into_iter().enumerate() {
        let (ok, err) = finish(p, Duration::from_secs(120));
        assert!(ok, "pull through node {i} failed: {err}");
        assert_eq!(
            verify_dir_pull(&fabric.work.path().join(format!("pull{i}"))),
            4
        );
    }
    // One registry GET per stripe of every blob, however many nodes pulled it.
    let big = fabric.work.path().join("pull0").join(image.layers[0].hex());
    assert_eq!(stripes_of(&big), 3);
    for d in image.layers.iter().chain([&image.config]) {
        let path = fabric.work.path().join("pull0").join(d.hex());
        assert_eq!(
            gets(&registry, d),
            stripes_of(&path),
            "registry GETs of {d}"
        );
    }
    // Bytes came from peers, and every node uploaded some but not a whole image per peer.
    let image_bytes: f64 = image
        .layers
        .iter()
        .chain([&image.config])
        .map(|d| {
            std::fs::metadata(fabric.work.path().join("pull0").join(d.hex()))
                .unwrap()
                .len() as f64
        })
        .sum();
    let mut uploads = Vec::new();
    for n in &nodes {
        let peer_in = n.metric("cache_daemon_fill_source_bytes_total{source=\"peer\"}");
        let up = n.metric("cache_daemon_served_bytes_total{source=\"peer\"}");
        assert!(peer_in > 0.0, "node {} took nothing from peers", n.peer);
        uploads.push(up / image_bytes);
    }
    eprintln!("per-node upload, in image copies: {uploads:?}");
    assert!(uploads.iter().all(|u| *u <= 2.5), "{uploads:?}");
    assert!(
        uploads.iter().sum::<f64>() >= (NODES - 1) as f64 * 0.9,
        "{uploads:?}"
    );
    // `ls` names where each blob came from: every node took bytes from peers.
    for n in &nodes {
        let ls = run_within(
            DaemonBinary::command().arg("ls").args([
                "--json",
                "--admin",
                &format!("http://127.0.0.1:{}", n.admin),
            ]),
            Duration::from_secs(20),
        );
        let items: Vec<serde_json::Value> = serde_json::from_str(&ls).unwrap();
        let big = items
            .iter()
            .find(|i| i["digest"] == image.layers[0].to_string())
            .unwrap_or_else(|| panic!("big layer not listed by {}: {ls}", n.peer));
        let source = big["source"].as_str().unwrap_or("");
        assert!(
            source
                .split('+')
                .all(|s| ["local", "peer", "registry"].contains(&s))
                && source.contains("peer"),
            "node {}: source {source:?}",
            n.peer
        );
    }
}
