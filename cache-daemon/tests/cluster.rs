//! Cluster mode end to end: several real `cache-daemon` binaries on loopback ports, each with
//! its own peer port, in front of Debian's real `docker-registry`, pulled through by real
//! `skopeo` (one per node) or plain HTTP; registry requests counted from its own access log.
//! The corrupting peer is an in-process fake (a registry cannot be made to lie).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::StatusCode;

use cache_daemon::cluster::membership::{Member, PeerSource};
use cache_daemon::cluster::rendezvous;
use cache_daemon::cluster::signing::Signer;
use cache_daemon::cluster::stripe::{self, STRIPE_BYTES};
use cache_daemon::config::{ClusterConfig, ClusterSecret};
use stampede_oci::Digest;

use crate::common::real::{
    free_port, have, push_layout, run_within, verify_dir_pull, write_layout, DaemonBinary, Image,
    Registry,
};
use crate::common::upstream::{Behavior, FakeUpstream};
use crate::common::{blob_path, body, get, metrics, request, TestDaemon};

/// Bytes of the large layer's content: three stripes (16 + 16 + 2 MiB, before gzip, which
/// does not shrink pseudo-random bytes).
const BIG_LAYER_BYTES: usize = 34 << 20;

/// One node: a daemon binary with a mirror port and a peer port.
struct Node {
    daemon: Option<DaemonBinary>,
    port: u16,
    admin: u16,
    peer: Member,
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
    // STAMPEDE_CLUSTER_NODES runs it with more nodes, to look at the upload distribution.
    let nodes_wanted = std::env::var("STAMPEDE_CLUSTER_NODES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4usize);
    #[allow(non_snake_case)]
    let NODES = nodes_wanted;
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
    let mut sorted = uploads.clone();
    sorted.sort_by(f64::total_cmp);
    eprintln!("image {image_bytes} bytes; per-node upload, in image copies, sorted: {sorted:.2?}");
    for n in &nodes {
        eprintln!(
            "node {}: redirects {}, fallbacks {}",
            n.peer,
            n.metric("cache_daemon_peer_redirects_total"),
            ["connect", "timeout", "broken", "refused", "unusable"]
                .iter()
                .map(|r| n.metric(&format!(
                    "cache_daemon_cluster_fallbacks_total{{reason=\"{r}\"}}"
                )))
                .sum::<f64>()
        );
    }
    assert!(uploads.iter().all(|u| *u <= 2.5), "{uploads:?}");
    assert!(
        uploads.iter().sum::<f64>() >= (NODES - 1) as f64 * 0.9,
        "{uploads:?}"
    );
    // `ls` names where each blob came from: every node took bytes from peers, but for one that
    // owns every stripe of the big layer (1 run in 16 with 4 nodes and 3 stripes: ownership
    // follows the random ports), which fetched them all itself.
    let owns_all =
        |n: &Node| (0..3u32).all(|s| rendezvous::rank(&peers, &image.layers[0], s)[0] == n.peer);
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
                && (source.contains("peer") || owns_all(n)),
            "node {}: source {source:?}",
            n.peer
        );
    }
}

// In-process nodes, for the faults a real registry cannot make: a corrupting peer, an upstream
// that ignores `Range`, forged and replayed signatures.

const SECRET: &[u8] = b"in-process-cluster-secret-32-byt";

fn cluster_config(me: Member, members: Vec<Member>) -> ClusterConfig {
    ClusterConfig {
        listen: me.addr(),
        advertise: me,
        peers: PeerSource::Static(members),
        secret: ClusterSecret(SECRET.to_vec()),
        connect_timeout: Duration::from_millis(200),
        response_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(2),
        max_connections: 64,
    }
}

async fn node(upstream: &str, me: Member, members: &[Member]) -> TestDaemon {
    let members = members.to_vec();
    TestDaemon::start_in(tempfile::tempdir().unwrap(), upstream, move |c| {
        c.cluster = Some(cluster_config(me, members));
    })
    .await
}

fn member() -> Member {
    Member::from(std::net::SocketAddr::from(([127, 0, 0, 1], free_port())))
}

#[tokio::test]
async fn peer_requests_without_the_secret_get_401_and_are_counted() {
    let up = FakeUpstream::start().await;
    let data = crate::common::data(100_000, 7);
    let d = up.blob(data.clone(), Behavior::default());
    let me = member();
    let a = node(&up.url(), me, &[me]).await;
    let path = format!("/peer/v1/stripes/0/{d}?repo=test%2Fapp");
    let url = format!("http://{me}{path}");
    let range = ("range", "bytes=0-");
    let now = SystemTime::now();
    let (ts, sig) = Signer::new(SECRET).sign("GET", &path, now);
    let (other_ts, other_sig) = Signer::new(b"another-secret-16-bytes").sign("GET", &path, now);
    let (old_ts, old_sig) = Signer::new(SECRET).sign("GET", &path, now - Duration::from_secs(120));
    let cases: [(&[(&str, &str)], u16); 5] = [
        (&[range], 401),
        (
            &[
                range,
                ("stampede-timestamp", &other_ts),
                ("stampede-signature", &other_sig),
            ],
            401,
        ),
        (
            &[
                range,
                ("stampede-timestamp", &old_ts),
                ("stampede-signature", &old_sig),
            ],
            401,
        ),
        (
            &[
                range,
                ("stampede-timestamp", &ts),
                ("stampede-signature", "00"),
            ],
            401,
        ),
        (
            &[
                range,
                ("stampede-timestamp", &ts),
                ("stampede-signature", &sig),
            ],
            206,
        ),
    ];
    for (i, (headers, want)) in cases.iter().enumerate() {
        let resp = request("GET", &url, headers).await;
        assert_eq!(resp.status().as_u16(), *want, "case {i}");
        let got = body(resp).await.unwrap();
        if *want == 206 {
            assert_eq!(&got[..], &data[..], "a signed request gets the stripe");
        }
    }
    let m = metrics(&a).await;
    for line in [
        "cache_daemon_peer_requests_rejected_total{reason=\"unsigned\"} 1",
        "cache_daemon_peer_requests_rejected_total{reason=\"bad_signature\"} 2",
        "cache_daemon_peer_requests_rejected_total{reason=\"expired\"} 1",
    ] {
        assert!(m.contains(line), "missing {line} in\n{m}");
    }
    // The peer port is not the mirror: a registry path there is refused too.
    let resp = request("GET", &format!("http://{me}/v2/test/app/blobs/{d}"), &[]).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    a.stop().await;
}

/// A peer that answers every stripe request with the right headers and wrong bytes.
async fn corrupting_peer(listener: tokio::net::TcpListener, len: usize) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |_req| async move {
                let garbage = Bytes::from(vec![0x5a; len]);
                let resp = http::Response::builder()
                    .status(206)
                    .header("content-range", format!("bytes 0-{}/{len}", len - 1))
                    .header("content-length", len)
                    .body(http_body_util::Full::new(garbage))
                    .unwrap();
                Ok::<_, std::convert::Infallible>(resp)
            });
            hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await
                .ok();
        });
    }
}

#[tokio::test]
async fn a_peer_sending_corrupt_bytes_is_caught_marked_bad_and_nothing_corrupt_is_committed() {
    let up = FakeUpstream::start().await;
    let me = member();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let liar = Member::from(listener.local_addr().unwrap());
    // A blob whose only stripe the lying peer owns.
    let (data, d) = (0u8..=255)
        .map(|seed| {
            let data = crate::common::data(300_000, seed);
            let d = Digest::of(&data);
            (data, d)
        })
        .find(|(_, d)| rendezvous::rank(&[me, liar], d, 0)[0] == liar)
        .expect("some blob is owned by the liar");
    up.blob(data.clone(), Behavior::default());
    let fake = tokio::spawn(corrupting_peer(listener, data.len()));
    let a = node(&up.url(), me, &[me, liar]).await;

    // The first pull is cut short: its bytes came from the liar and failed the digest.
    let resp = get(&a.url(&blob_path(&d))).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        body(resp).await.is_err(),
        "a corrupt blob was served as complete"
    );
    assert!(
        !a.daemon.app().store.contains(&d),
        "a corrupt blob was committed"
    );
    let m = metrics(&a).await;
    assert!(
        m.contains("cache_daemon_cluster_fallbacks_total{reason=\"mismatch\"} 1"),
        "{m}"
    );
    assert!(m.contains("cache_daemon_cluster_bad_peers 1"), "{m}");
    assert_eq!(up.count(http::Method::GET, &d.to_string()), 0);

    // The retry goes to the registry, and the liar is not asked again.
    let resp = get(&a.url(&blob_path(&d))).await;
    assert_eq!(&body(resp).await.unwrap()[..], &data[..]);
    assert_eq!(up.count(http::Method::GET, &d.to_string()), 1);
    assert!(a.daemon.app().store.contains(&d));
    fake.abort();
    a.stop().await;
}

#[tokio::test]
async fn an_upstream_ignoring_range_costs_one_get_and_one_owner_serves_the_whole_blob() {
    let up = FakeUpstream::start().await;
    // Two stripes' worth.
    let data = crate::common::data(usize::try_from(STRIPE_BYTES).unwrap() + 300_000, 9);
    let d = up.blob(
        data.clone(),
        Behavior {
            ignore_range: true,
            ..Behavior::default()
        },
    );
    let (ma, mb) = (member(), member());
    let a = node(&up.url(), ma, &[ma, mb]).await;
    let b = node(&up.url(), mb, &[ma, mb]).await;
    let (url_a, url_b) = (a.url(&blob_path(&d)), b.url(&blob_path(&d)));
    let (ra, rb) = tokio::join!(get(&url_a), get(&url_b));
    let (ba, bb) = tokio::join!(body(ra), body(rb));
    assert_eq!(&ba.unwrap()[..], &data[..]);
    assert_eq!(&bb.unwrap()[..], &data[..]);
    assert_eq!(
        up.count(http::Method::GET, &d.to_string()),
        1,
        "the whole blob went upstream more than once"
    );
    a.stop().await;
    b.stop().await;
}

/// The value of `series` in a Prometheus text, 0 when absent.
fn series(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |v| v.trim().parse().expect("metric value"))
}

/// The fan-out bound holds even when every node asks at once, before any child has had its
/// first byte: the owner's registry answer is held back, so the requesters past the first two
/// are redirected to children whose own fills have not started yet. Those children wait for
/// their fills' first answer and pass the stripe on; before, they refused, and the refused
/// requesters were served by the owner past its bound (5 uploads of the blob here, not 2).
#[tokio::test]
async fn no_node_uploads_a_stripe_to_more_than_two_peers_when_all_ask_at_once() {
    const NODES: usize = 6;
    let up = FakeUpstream::start().await;
    let data = crate::common::data(1 << 20, 21);
    let d = up.blob(
        data.clone(),
        Behavior {
            header_delay: Duration::from_millis(1500),
            ..Behavior::default()
        },
    );
    let members: Vec<Member> = (0..NODES).map(|_| member()).collect();
    let mut nodes = Vec::new();
    for m in &members {
        nodes.push(node(&up.url(), *m, &members).await);
    }
    let pulls = nodes.iter().map(|n| async {
        let resp = get(&n.url(&blob_path(&d))).await;
        body(resp).await
    });
    for (i, got) in futures_util::future::join_all(pulls)
        .await
        .into_iter()
        .enumerate()
    {
        assert_eq!(&got.unwrap()[..], &data[..], "node {i}'s blob");
    }
    assert_eq!(up.count(http::Method::GET, &d.to_string()), 1);
    let blob = data.len() as f64;
    let mut uploads = Vec::new();
    let mut redirects = 0.0;
    for n in &nodes {
        let m = metrics(n).await;
        uploads.push(series(&m, "cache_daemon_served_bytes_total{source=\"peer\"}") / blob);
        redirects += series(&m, "cache_daemon_peer_redirects_total");
    }
    eprintln!("uploads per node, in copies of the blob: {uploads:.2?}; redirects {redirects}");
    // Every other node got the blob once, from someone; nobody sent it more than twice.
    let total: f64 = uploads.iter().sum();
    assert!(
        total >= (NODES - 1) as f64 - 0.01,
        "{total} copies uploaded in all"
    );
    assert!(uploads.iter().all(|u| *u <= 2.0 + 1e-9), "{uploads:.2?}");
    assert!(redirects >= 3.0, "{redirects} redirects");
    for n in nodes {
        n.stop().await;
    }
}

/// Polls `cond` every 20 ms for at most `limit`; whether it came true.
fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn killing_a_stripe_owner_mid_burst_fails_no_other_pull() {
    if !have("docker-registry") || !have("skopeo") {
        return;
    }
    const NODES: usize = 4;
    let registry = Registry::start(None);
    let fabric = Fabric::new();
    let image = pushed_image(&registry, fabric.work.path(), 61);
    let peers = Fabric::peers(NODES);
    let list = peers
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let mut nodes: Vec<Node> = (0..NODES)
        .map(|i| fabric.start(i, peers[i], &registry, &["--peers", &list]))
        .collect();
    // The owner of the big layer's second stripe is killed; the others pull.
    let victim_peer = rendezvous::rank(&peers, &image.layers[0], 1)[0];
    let victim = nodes.iter().position(|n| n.peer == victim_peer).unwrap();
    let pulls: Vec<(usize, std::process::Child)> = (0..NODES)
        .filter(|i| *i != victim)
        .map(|i| {
            (
                i,
                skopeo_pull(nodes[i].port, &fabric.work.path().join(format!("pull{i}"))),
            )
        })
        .collect();
    // Mid-burst: as soon as the victim has begun passing bytes on to a peer.
    let uploading = wait_until(Duration::from_secs(60), || {
        nodes[victim].metric("cache_daemon_served_bytes_total{source=\"peer\"}") > 0.0
    });
    nodes[victim].daemon.take().expect("victim running").kill();
    for (i, p) in pulls {
        let (ok, err) = finish(p, Duration::from_secs(120));
        assert!(
            ok,
            "pull through node {i} failed after the owner died: {err}"
        );
        assert_eq!(
            verify_dir_pull(&fabric.work.path().join(format!("pull{i}"))),
            4
        );
    }
    // Fallbacks on the surviving nodes, by cause: the victim's death (no connection, a body
    // broken off), a stall (the peer idle timeout: load, not death), and refusals or answers
    // that do not fit (a parent with no child left to send to, a failed stripe fetch).
    let survivors: Vec<&Node> = nodes.iter().filter(|n| n.daemon.is_some()).collect();
    let count = |reasons: &[&str]| -> usize {
        let total: f64 = survivors
            .iter()
            .flat_map(|n| {
                reasons.iter().map(|r| {
                    n.metric(&format!(
                        "cache_daemon_cluster_fallbacks_total{{reason=\"{r}\"}}"
                    ))
                })
            })
            .sum();
        total as usize
    };
    let deaths = count(&["connect", "broken"]);
    let stalls = count(&["timeout"]);
    let others = count(&["refused", "unusable"]);
    // The big layer's stripes the victim owned: each is fetched again, once, by the next
    // member in its ranking (a single flight there, however many nodes fall back to it).
    let big_stripes = stripes_of(
        &fabric
            .work
            .path()
            .join(format!("pull{}", (victim + 1) % NODES))
            .join(image.layers[0].hex()),
    );
    let victim_owned = (0..big_stripes)
        .filter(|s| {
            rendezvous::rank(&peers, &image.layers[0], u32::try_from(*s).unwrap())[0] == victim_peer
        })
        .count();
    let big = gets(&registry, &image.layers[0]);
    eprintln!(
        "victim uploading when killed: {uploading}; it owned {victim_owned} of {big_stripes} big-layer stripes; \
         survivors' fallbacks: {deaths} from the death, {stalls} stalls, {others} refused/unusable; \
         registry GETs of the big layer: {big}"
    );
    // One GET per stripe, one more per stripe the victim owned, and at most one more per
    // fallback that was not the death's (a stalled or refusing candidate sends its requester on
    // to the next candidate or the registry, which may fetch that stripe again). The death's
    // own fallbacks cost nothing more: they land on the stripe's next member, counted above.
    let bound = big_stripes + victim_owned + stalls + others;
    assert!(
        big <= bound,
        "{big} registry GETs of the big layer; at most {bound} expected \
         ({big_stripes} stripes + {victim_owned} owned by the victim + {stalls} stalls + {others} refusals)"
    );
}

#[test]
fn members_joining_and_leaving_mid_burst_fail_no_pull() {
    if !have("docker-registry") || !have("skopeo") {
        return;
    }
    let registry = Registry::start(None);
    let fabric = Fabric::new();
    let image = pushed_image(&registry, fabric.work.path(), 62);
    let peers = Fabric::peers(4);
    let file = fabric.work.path().join("peers");
    let write = |members: &[Member]| {
        let text: String = members.iter().map(|m| format!("{m}\n")).collect();
        // Written aside and renamed, as a config management tool would.
        let tmp = file.with_extension("new");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &file).unwrap();
    };
    write(&peers[..3]);
    let file_arg = file.to_string_lossy().into_owned();
    let mut nodes: Vec<Node> = (0..3)
        .map(|i| fabric.start(i, peers[i], &registry, &["--peers-file", &file_arg]))
        .collect();
    let mut pulls: Vec<(usize, std::process::Child)> = (0..2)
        .map(|i| {
            (
                i,
                skopeo_pull(nodes[i].port, &fabric.work.path().join(format!("pull{i}"))),
            )
        })
        .collect();
    // Mid-burst: node 3 joins (and pulls), node 2 leaves (stopped, then taken off the list).
    wait_until(Duration::from_secs(60), || {
        nodes[..3]
            .iter()
            .map(|n| n.metric("cache_daemon_served_bytes_total{source=\"peer\"}"))
            .sum::<f64>()
            > 0.0
    });
    write(&peers);
    nodes.push(fabric.start(3, peers[3], &registry, &["--peers-file", &file_arg]));
    pulls.push((
        3,
        skopeo_pull(nodes[3].port, &fabric.work.path().join("pull3")),
    ));
    nodes[2].daemon.take().expect("node 2 running").terminate();
    write(&[peers[0], peers[1], peers[3]]);
    for (i, p) in pulls {
        let (ok, err) = finish(p, Duration::from_secs(120));
        assert!(
            ok,
            "pull through node {i} failed while members changed: {err}"
        );
        assert_eq!(
            verify_dir_pull(&fabric.work.path().join(format!("pull{i}"))),
            4
        );
    }
    // The joined node read the list: it knows three members now.
    assert!(wait_until(Duration::from_secs(10), || {
        nodes[3].metric("cache_daemon_cluster_members") == 3.0
    }));
    assert!(gets(&registry, &image.layers[0]) >= 3);
}

#[test]
fn bad_cluster_settings_are_refused_at_start_with_a_plain_message() {
    let work = tempfile::tempdir().unwrap();
    let secret = work.path().join("secret");
    std::fs::write(&secret, "a-test-cluster-secret-of-32-bytes").unwrap();
    let empty = work.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let bad_file = work.path().join("peers");
    std::fs::write(&bad_file, "127.0.0.1:7001\nnot an address\n").unwrap();
    let s = secret.to_string_lossy().into_owned();
    let e = empty.to_string_lossy().into_owned();
    let f = bad_file.to_string_lossy().into_owned();
    let missing = work.path().join("missing").to_string_lossy().into_owned();
    let me = "127.0.0.1:7001";
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "--peers",
                "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7001",
                "--cluster-secret-file",
                &s,
            ],
            "127.0.0.1:7001 is listed twice",
        ),
        (
            vec!["--peers", "node-b:7002", "--cluster-secret-file", &s],
            "\"node-b:7002\" is not IP:PORT",
        ),
        (
            vec!["--peers", "0.0.0.0:7002", "--cluster-secret-file", &s],
            "cannot be reached",
        ),
        (
            vec!["--peers", "127.0.0.1:7002"],
            "needs the cluster secret",
        ),
        (
            vec![
                "--peers",
                "127.0.0.1:7002",
                "--cluster-secret-file",
                &missing,
            ],
            "read ",
        ),
        (
            vec!["--peers", "127.0.0.1:7002", "--cluster-secret-file", &e],
            "holds 0 bytes",
        ),
        (vec!["--cluster-secret-file", &s], "needs its members"),
        (
            vec!["--peers-dns", "no port", "--cluster-secret-file", &s],
            "is not NAME:PORT",
        ),
        (
            vec!["--peers-file", &f, "--cluster-secret-file", &s],
            "\"not an address\" is not IP:PORT",
        ),
        (
            vec!["--peers-file", &missing, "--cluster-secret-file", &s],
            "peers_file: read",
        ),
        (
            vec![
                "--peers",
                "127.0.0.1:7002",
                "--peers-dns",
                "peers:7002",
                "--cluster-secret-file",
                &s,
            ],
            "give only one of",
        ),
        (
            vec![
                "--peers-kubernetes",
                "cache-daemon-peers:5052",
                "--cluster-secret-file",
                &s,
            ],
            "\"cache-daemon-peers:5052\" is not NAMESPACE/SERVICE:PORT",
        ),
        (
            vec![
                "--peers-kubernetes",
                "cache-daemon/cache-daemon-peers:5052",
                "--peers-dns",
                "peers:7002",
                "--cluster-secret-file",
                &s,
            ],
            "give only one of peers, peers_dns, peers_file and peers_kubernetes",
        ),
    ];
    for (i, (args, want)) in cases.iter().enumerate() {
        let port = free_port();
        let mut cmd = DaemonBinary::command();
        cmd.args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--admin-listen",
            "off",
        ])
        .arg("--root")
        .arg(work.path().join("store"))
        .args(["--upstream", "http://127.0.0.1:1", "--peer-listen", me])
        .args(args);
        let log = work.path().join(format!("case{i}.log"));
        let mut d = DaemonBinary::spawn(cmd, port, &log);
        let status = d
            .exited_within(Duration::from_secs(20))
            .expect("refused at start");
        assert_eq!(status.code(), Some(2), "case {i}");
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.contains(want), "case {i}: want {want:?} in {text}");
        assert!(
            !text.contains("Some(") && !text.contains("panicked"),
            "case {i}: {text}"
        );
    }
    // Cluster settings without --peer-listen are a mistake too.
    let port = free_port();
    let mut cmd = DaemonBinary::command();
    cmd.args([
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--upstream",
        "http://127.0.0.1:1",
    ])
    .arg("--root")
    .arg(work.path().join("store"))
    .args(["--peers", "127.0.0.1:7002"]);
    let log = work.path().join("no-listen.log");
    let mut d = DaemonBinary::spawn(cmd, port, &log);
    assert_eq!(
        d.exited_within(Duration::from_secs(20))
            .and_then(|s| s.code()),
        Some(2)
    );
    assert!(std::fs::read_to_string(&log)
        .unwrap()
        .contains("need peer_listen"));
}

#[test]
fn an_unresolvable_peers_dns_name_is_a_warning_and_the_node_serves_alone() {
    let work = tempfile::tempdir().unwrap();
    let secret = work.path().join("secret");
    std::fs::write(&secret, "a-test-cluster-secret-of-32-bytes").unwrap();
    let port = free_port();
    let peer = free_port();
    let mut cmd = DaemonBinary::command();
    cmd.args([
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--admin-listen",
        "off",
    ])
    .arg("--root")
    .arg(work.path().join("store"))
    .args(["--upstream", "http://127.0.0.1:1"])
    .args(["--peer-listen", &format!("127.0.0.1:{peer}")])
    .args(["--peers-dns", "no-such-peers.invalid:7002"])
    .arg("--cluster-secret-file")
    .arg(&secret);
    let log = work.path().join("daemon.log");
    let d = DaemonBinary::start_with(cmd, port, &log);
    assert!(wait_until(Duration::from_secs(20), || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("cluster member list could not be refreshed")
    }));
    assert_eq!(d.metric("cache_daemon_cluster_members"), 1.0);
}

#[test]
fn peers_from_kubernetes_outside_a_pod_is_a_plain_warning_and_the_node_serves_alone() {
    let work = tempfile::tempdir().unwrap();
    let secret = work.path().join("secret");
    std::fs::write(&secret, "a-test-cluster-secret-of-32-bytes").unwrap();
    let port = free_port();
    let peer = free_port();
    let mut cmd = DaemonBinary::command();
    cmd.args([
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--admin-listen",
        "off",
    ])
    .arg("--root")
    .arg(work.path().join("store"))
    .args(["--upstream", "http://127.0.0.1:1"])
    .args(["--peer-listen", &format!("127.0.0.1:{peer}")])
    .args(["--peers-kubernetes", "cache-daemon/cache-daemon-peers:5052"])
    .arg("--cluster-secret-file")
    .arg(&secret)
    .env_remove("KUBERNETES_SERVICE_HOST");
    let log = work.path().join("daemon.log");
    let d = DaemonBinary::start_with(cmd, port, &log);
    let said = "list members from Endpoints cache-daemon/cache-daemon-peers:5052: not in a Kubernetes pod: KUBERNETES_SERVICE_HOST is not set";
    assert!(
        wait_until(Duration::from_secs(20), || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains(said)
        }),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert_eq!(d.metric("cache_daemon_cluster_members"), 1.0);
}
