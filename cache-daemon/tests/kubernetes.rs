//! `deploy/kubernetes/daemonset.yaml` applied to a real Kubernetes (v1.20.2, containerd 1.6:
//! `stampede_lab::KubeBed`), changed only in the parameters deploy/README.md names
//! (`lab/kubernetes/deploy.sh`). On one node: the DaemonSet's pod becomes Ready; its init
//! container writes the node's hosts.toml; kubelet pulls a workload's image through the cache,
//! and the upstream registry sees one GET per blob, all of them from the cache, for every pod of
//! the node. On three nodes (each its own network and mount namespace), cluster mode with its
//! members from the API server: a cold rollout that lands pods on every node costs the registry
//! one copy of the image, and the nodes served each other the rest.
//! Skipped (with a message) when the bed's binaries are not built, unless real parts are
//! required.

use std::time::{Duration, Instant};

use stampede_lab::kubernetes::{NODE, REGISTRY};
use stampede_lab::{AccessCounts, AccessEntry, AccessLog, KubeBed, RequestKind};

/// Replicas of the workload, all on the one node.
const REPLICAS: u32 = 3;

/// A Deployment of `replicas` pods of `image`, pinned to `node` when given.
fn deployment(name: &str, image: &str, node: Option<&str>, replicas: u32) -> String {
    let selector = node.map_or_else(String::new, |node| {
        format!(r#""nodeSelector": {{"kubernetes.io/hostname": "{node}"}},"#)
    });
    format!(
        r#"{{"apiVersion": "apps/v1", "kind": "Deployment",
  "metadata": {{"name": "{name}", "namespace": "default"}},
  "spec": {{"replicas": {replicas}, "selector": {{"matchLabels": {{"app": "{name}"}}}},
    "template": {{"metadata": {{"labels": {{"app": "{name}"}}}},
      "spec": {{"automountServiceAccountToken": false, "terminationGracePeriodSeconds": 0,
        {selector}
        "containers": [{{"name": "app", "image": "{image}", "command": ["sleep", "3600"]}}]}}}}}}}}"#
    )
}

/// A counter of a node's cache (0 when absent), read on its own loopback.
fn node_metric(bed: &KubeBed, node: &str, series: &str) -> u64 {
    let out = bed
        .node_command(node, "curl")
        .args(["-sf", "http://127.0.0.1:5050/metrics"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn daemonset_serves_kubelet_pulls_on_a_real_node() {
    let Some(bed) = KubeBed::for_tests() else {
        return;
    };
    bed.deploy_cache(env!("CARGO_BIN_EXE_cache-daemon").as_ref())
        .unwrap_or_else(|e| panic!("{e}"));

    // The DaemonSet's pod is Ready on the node.
    let ready = bed
        .kubectl(&[
            "-n",
            "cache-daemon",
            "get",
            "pods",
            "-l",
            "app.kubernetes.io/name=cache-daemon",
            "-o",
            r#"jsonpath={range .items[*]}{.spec.nodeName} {.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}"#,
        ])
        .unwrap();
    assert_eq!(ready.trim(), "node1 True", "DaemonSet pods: {ready}");

    // Its init container wrote the node's hosts.toml for the bed's registry (and the others).
    let hosts = bed.certs_dir(NODE).join(REGISTRY).join("hosts.toml");
    let text =
        std::fs::read_to_string(&hosts).unwrap_or_else(|e| panic!("read {}: {e}", hosts.display()));
    assert!(text.starts_with("# Written by cache-daemon"), "{text}");
    assert!(
        text.contains(&format!("server = \"http://{REGISTRY}\"")),
        "{text}"
    );
    assert!(text.contains("[host.\"http://127.0.0.1:5050\"]"), "{text}");
    for registry in ["docker.io", "ghcr.io", "quay.io", "registry.k8s.io"] {
        assert!(
            bed.certs_dir(NODE)
                .join(registry)
                .join("hosts.toml")
                .is_file(),
            "{registry}"
        );
    }

    // Its members came from the API server (the Service's Endpoints, read with the pod's
    // service account through the kubernetes Service IP): the list changed from empty to this
    // node, and no refresh failed.
    let logs = bed
        .kubectl(&[
            "-n",
            "cache-daemon",
            "logs",
            "ds/cache-daemon",
            "-c",
            "cache-daemon",
        ])
        .unwrap();
    assert!(logs.contains("cluster member list changed"), "{logs}");
    assert!(!logs.contains("could not be refreshed"), "{logs}");

    // A workload's image, new to the node, pulled by kubelet for every replica.
    let image = bed.push_app("app", "1", 8).unwrap();
    let log = AccessLog::new(bed.registry_log());
    let before = log.offset();
    let spec = bed.dir().join("workload.json");
    std::fs::write(&spec, deployment("through-cache", &image, None, REPLICAS)).unwrap();
    bed.kubectl(&["apply", "-f", &spec.to_string_lossy()])
        .unwrap();
    bed.kubectl(&[
        "rollout",
        "status",
        "deployment/through-cache",
        "--timeout=180s",
    ])
    .unwrap_or_else(|e| panic!("workload did not become ready: {e}"));
    log.wait_quiet(Duration::from_millis(500), Duration::from_secs(10));

    // The registry saw each blob once, and every request came from the cache.
    let log_bytes = std::fs::read(bed.registry_log()).unwrap();
    let since_push = String::from_utf8_lossy(&log_bytes[usize::try_from(before).unwrap()..]);
    let app_lines: Vec<&str> = since_push
        .lines()
        .filter(|l| l.contains("/v2/app/") && AccessEntry::parse(l).is_some())
        .collect();
    assert!(!app_lines.is_empty(), "the registry saw no pull of {image}");
    for line in &app_lines {
        assert!(
            line.contains("cache-daemon/"),
            "a request reached the registry from elsewhere than the cache: {line}"
        );
    }
    let counts = log.counts_since(before);
    assert_eq!(counts.blobs.len(), 2, "config and layer: {counts:?}");
    for (digest, c) in &counts.blobs {
        assert_eq!(c.gets, 1, "blob {digest} fetched {} times", c.gets);
    }
    assert!(counts.count(RequestKind::BlobGet) == 2, "{counts:?}");

    // The cache counts the same: bytes from upstream at least the 8 MiB layer.
    let metrics = bed
        .node_command(NODE, "curl")
        .args(["-sf", "http://127.0.0.1:5050/metrics"])
        .output()
        .unwrap();
    let metrics = String::from_utf8_lossy(&metrics.stdout);
    let upstream_bytes: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("cache_daemon_served_bytes_total{source=\"upstream\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no upstream bytes in the cache's metrics:\n{metrics}"));
    assert!(
        upstream_bytes >= 8 << 20,
        "{upstream_bytes} bytes from upstream"
    );

    // kubelet reported the pull for the pods.
    let events = bed
        .kubectl(&[
            "get",
            "events",
            "--field-selector",
            "reason=Pulled",
            "-o",
            "jsonpath={range .items[*]}{.message}{\"\\n\"}{end}",
        ])
        .unwrap();
    assert!(
        events.contains(&format!("Successfully pulled image \"{image}\"")),
        "{events}"
    );
    wait_for("workload pods listed", Duration::from_secs(5), || {
        bed.kubectl(&["get", "pods", "-l", "app=through-cache", "-o", "name"])
            .is_ok_and(|o| o.lines().count() == REPLICAS as usize)
    });
}

#[test]
fn cluster_mode_rollout_on_three_nodes_costs_the_registry_one_copy() {
    let Some(bed) = KubeBed::for_tests_with(3) else {
        return;
    };
    bed.deploy_cache(env!("CARGO_BIN_EXE_cache-daemon").as_ref())
        .unwrap_or_else(|e| panic!("{e}"));
    let nodes = bed.nodes();
    let ready = bed
        .kubectl(&[
            "-n",
            "cache-daemon",
            "get",
            "pods",
            "-o",
            r#"jsonpath={range .items[*]}{.spec.nodeName}={.status.conditions[?(@.type=="Ready")].status} {end}"#,
        ])
        .unwrap();
    for node in &nodes {
        assert!(ready.contains(&format!("{node}=True")), "{node}: {ready}");
    }
    // Every daemon lists all three members (from the Service's Endpoints) before the rollout,
    // so all agree on each stripe's owner.
    let pods = bed
        .kubectl(&["-n", "cache-daemon", "get", "pods", "-o", "name"])
        .unwrap();
    for pod in pods.lines() {
        wait_for(
            &format!("{pod} sees 3 members"),
            Duration::from_secs(60),
            || {
                bed.kubectl(&["-n", "cache-daemon", "logs", pod, "-c", "cache-daemon"])
                    .is_ok_and(|l| l.contains("\"members\":3"))
            },
        );
    }

    // A new ~41 MiB image (three 16 MiB stripes), 2 pods on each node at once.
    let image = bed.push_app("cluster", "1", 40).unwrap();
    let log = AccessLog::new(bed.registry_log());
    let before = log.offset();
    for (i, node) in nodes.iter().enumerate() {
        let spec = bed.dir().join(format!("rollout-{i}.json"));
        std::fs::write(
            &spec,
            deployment(&format!("rollout-{i}"), &image, Some(node), 2),
        )
        .unwrap();
        bed.kubectl(&["apply", "-f", &spec.to_string_lossy()])
            .unwrap();
    }
    for i in 0..nodes.len() {
        bed.kubectl(&[
            "rollout",
            "status",
            &format!("deployment/rollout-{i}"),
            "--timeout=240s",
        ])
        .unwrap_or_else(|e| panic!("rollout-{i} did not become ready: {e}"));
    }
    log.wait_quiet(Duration::from_millis(500), Duration::from_secs(10));

    // The registry sent each blob's bytes once, in all: one copy of the image for 3 nodes.
    let entries: Vec<AccessEntry> = log
        .since(before)
        .into_iter()
        .filter(|e| e.path.starts_with("/v2/cluster/"))
        .collect();
    let counts = AccessCounts::of(&entries);
    assert_eq!(counts.blobs.len(), 2, "config and layer: {counts:?}");
    let layer = counts
        .blobs
        .iter()
        .max_by_key(|(_, b)| b.bytes)
        .map(|(d, _)| d.clone())
        .unwrap();
    let blob_file = |digest: &str| {
        let hex = digest.trim_start_matches("sha256:");
        let dir = bed
            .dir()
            .join("registry/data/docker/registry/v2/blobs/sha256");
        std::fs::metadata(dir.join(&hex[..2]).join(hex).join("data"))
            .unwrap_or_else(|e| panic!("blob {digest} in the registry's store: {e}"))
            .len()
    };
    let image_bytes: u64 = counts.blobs.keys().map(|d| blob_file(d)).sum();
    let sent: u64 = counts.blobs.values().map(|b| b.bytes).sum();
    assert_eq!(
        sent, image_bytes,
        "the registry sent {sent} blob bytes for a {image_bytes}-byte image: {counts:?}"
    );
    assert!(
        counts.blobs[&layer].gets >= 3,
        "the layer was fetched by stripes: {counts:?}"
    );
    let log_bytes = std::fs::read(bed.registry_log()).unwrap();
    let since = String::from_utf8_lossy(&log_bytes[usize::try_from(before).unwrap()..]);
    for line in since.lines().filter(|l| l.contains("/v2/cluster/blobs/")) {
        assert!(
            line.contains("cache-daemon/"),
            "a blob request reached the registry from elsewhere than a cache: {line}"
        );
    }

    // Every node pulled it; the nodes served each other what they did not fetch themselves.
    let from_peers: u64 = nodes
        .iter()
        .map(|n| node_metric(&bed, n, "cache_daemon_served_bytes_total{source=\"peer\"} "))
        .sum();
    let from_upstream: u64 = nodes
        .iter()
        .map(|n| {
            node_metric(
                &bed,
                n,
                "cache_daemon_served_bytes_total{source=\"upstream\"} ",
            )
        })
        .sum();
    eprintln!("registry sent {sent} bytes ({image_bytes}-byte image); the caches counted {from_upstream} bytes served with source upstream, {from_peers} with source peer");
    assert!(
        from_peers >= image_bytes,
        "two of the three nodes got most of the image from peers: {from_peers} bytes"
    );
}
