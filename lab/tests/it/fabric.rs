//! [`Fabric`]: three nodes and a registry on a bridge reach each other, each link is shaped and
//! its kernel counters see what crossed it, and nothing is left once the fabric is dropped.

use std::io::{Read as _, Write as _};
use std::process::Command;
use std::time::{Duration, Instant};

use stampede_lab::{find, root_or_skip, Fabric, FabricConfig, Proc, Shaping};

const NODE_RATE_BITS: u64 = 20_000_000;
/// 2.5 MB at 20 Mbit/s: one second on the wire.
const PAYLOAD_BYTES: usize = 2_500_000;

fn namespaces() -> String {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn three_nodes_reach_each_other_over_shaped_links_and_leave_nothing_behind() {
    if !root_or_skip("a fabric of network namespaces") || !stampede_lab::have_or_skip("tc") {
        return;
    }
    let fabric = Fabric::create(FabricConfig {
        nodes: 3,
        node_link: Some(Shaping {
            rate_bits_per_sec: NODE_RATE_BITS,
        }),
        registry_link: Some(Shaping {
            rate_bits_per_sec: 4 * NODE_RATE_BITS,
        }),
        services: 1,
    })
    .unwrap();
    let names: Vec<String> = fabric.namespaces().iter().map(|s| s.to_string()).collect();
    assert_eq!(
        names.len(),
        6,
        "hub, registry, a service, 3 nodes: {names:?}"
    );
    let listed = namespaces();
    for n in &names {
        assert!(n.contains(&std::process::id().to_string()), "{n}");
        assert!(listed.contains(n.as_str()), "{n} not in {listed}");
    }

    // Every node reaches the registry: each sends its index and reads it back.
    let registry = fabric.registry().bind(0).unwrap();
    let registry_addr = registry.local_addr().unwrap();
    assert_eq!(registry_addr.ip(), fabric.registry().ip());
    let echo = std::thread::spawn(move || {
        for _ in 0..3 {
            let (mut s, peer) = registry.accept().unwrap();
            let mut b = [0u8; 1];
            s.read_exact(&mut b).unwrap();
            s.write_all(&b).unwrap();
            let std::net::IpAddr::V4(v4) = peer.ip() else {
                panic!("{peer}")
            };
            assert_eq!(v4.octets()[..3], [10, 232, 1], "{peer}");
        }
    });
    for (i, node) in fabric.nodes().iter().enumerate() {
        let mut s = node.connect(registry_addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(&[i as u8]).unwrap();
        let mut b = [0u8; 1];
        s.read_exact(&mut b).unwrap();
        assert_eq!(b[0], i as u8);
    }
    echo.join().unwrap();
    assert_eq!(
        fabric.services()[0].ip(),
        std::net::Ipv4Addr::new(10, 232, 0, 2)
    );

    // Node 0 uploads to node 1: its link's rate bounds the transfer, and the counters of both
    // links see the bytes.
    let (n0, n1, n2) = (&fabric.nodes()[0], &fabric.nodes()[1], &fabric.nodes()[2]);
    let before = fabric.link_bytes().unwrap();
    let server = n0.bind(0).unwrap();
    let server_addr = server.local_addr().unwrap();
    let sender = std::thread::spawn(move || {
        let (mut s, _) = server.accept().unwrap();
        s.write_all(&vec![7u8; PAYLOAD_BYTES]).unwrap();
    });
    let mut s = n1.connect(server_addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let start = Instant::now();
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    let elapsed = start.elapsed();
    sender.join().unwrap();
    assert_eq!(got.len(), PAYLOAD_BYTES);
    let wire = Duration::from_secs_f64(PAYLOAD_BYTES as f64 * 8.0 / NODE_RATE_BITS as f64);
    // Never faster than the shaped rate allows (less one tbf bucket and the first window).
    assert!(
        elapsed >= wire.mul_f64(0.8),
        "{PAYLOAD_BYTES} bytes in {elapsed:?} over a {NODE_RATE_BITS} bit/s link (at least {wire:?})"
    );
    let after = fabric.link_bytes().unwrap();
    let delta = |i: usize| {
        (
            after.nodes[i].upload_bytes - before.nodes[i].upload_bytes,
            after.nodes[i].download_bytes - before.nodes[i].download_bytes,
        )
    };
    eprintln!(
        "{PAYLOAD_BYTES} bytes in {elapsed:?}; node 0 (up, down) {:?}, node 1 {:?}",
        delta(0),
        delta(1)
    );
    let payload = PAYLOAD_BYTES as u64;
    // Headers add a few percent; ACKs flow the other way.
    let within_overhead = |b: u64| b >= payload && b <= payload + payload / 10;
    assert!(
        within_overhead(delta(0).0),
        "node 0 uploaded {:?}",
        delta(0)
    );
    assert!(
        within_overhead(delta(1).1),
        "node 1 downloaded {:?}",
        delta(1)
    );
    assert!(delta(1).0 < payload / 10, "node 1's ACKs: {:?}", delta(1));
    assert!(delta(2).1 < 64 * 1024, "node 2 saw {:?}", delta(2));
    assert_eq!(after.services.len(), 1);

    // A program runs inside a node, and dropping the fabric kills it.
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = n2.command(&find("sleep").unwrap());
    cmd.arg("600");
    let sleeper = Proc::spawn("sleep", cmd, &dir.path().join("sleep.log")).unwrap();
    let pid = sleeper.pid();
    let start = Instant::now();
    let inside = loop {
        let out = Command::new("ip")
            .args(["netns", "pids", n2.netns()])
            .output()
            .unwrap();
        let pids = String::from_utf8_lossy(&out.stdout).into_owned();
        if pids.split_whitespace().any(|p| p == pid.to_string()) || start.elapsed().as_secs() > 5 {
            break pids;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        inside.split_whitespace().any(|p| p == pid.to_string()),
        "{pid} not in {inside}"
    );
    std::mem::forget(sleeper); // the fabric, not the guard, must end it

    drop(fabric);
    let listed = namespaces();
    for n in &names {
        assert!(!listed.contains(n.as_str()), "{n} left behind: {listed}");
    }
    let start = Instant::now();
    while stampede_lab::process::is_alive(pid) && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!stampede_lab::process::is_alive(pid), "{pid} still runs");
}

#[test]
fn a_fabric_without_nodes_is_refused() {
    if !root_or_skip("a fabric of network namespaces") || !stampede_lab::have_or_skip("tc") {
        return;
    }
    let err = Fabric::create(FabricConfig {
        nodes: 0,
        node_link: None,
        registry_link: None,
        services: 0,
    })
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "a fabric holds 1 to 1000 nodes and at most 8 services, not 0 nodes and 0 services"
    );
}
