//! Real container clients pulling through the real `cache-daemon` binary with the configuration
//! `deploy/` ships: `ctr` (containerd on a temp root) with the hosts.toml that the DaemonSet's
//! init container writes, and `podman` with the CRI-O/podman registries.conf snippet. The
//! upstream is Debian's `docker-registry` holding an image pushed by `skopeo`; its access log
//! shows which client fetched what, and the daemon's `/metrics` and `ls` show what it served.
//!
//! The shipped files are used as they are, except for what a test on a shared machine must
//! change: the registry host (a loopback port instead of docker.io) and the daemon's ports and
//! store. Each substitution is spelled out where it is made.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::data;
use crate::common::real::{
    deploy_dir, find_files, free_port, have, push_layout, run_within, write_layout, Containerd,
    DaemonBinary, Image, Podman, Registry,
};
use crate::common::shipped::{daemon_config, write_hosts};

/// Layer sizes of the test image (content bytes before gzip).
const LAYERS: [usize; 3] = [1 << 20, 2 << 20, 300 << 10];
/// Longest a single pull may take.
const PULL_LIMIT: Duration = Duration::from_secs(120);

/// A registry holding `test/app:v1`, and the image's digests.
fn registry_with_image(work: &Path, seed: u8) -> (Registry, Image) {
    let registry = Registry::start(None);
    let layout = work.join("layout");
    let image = write_layout(&layout, "v1", &LAYERS, seed);
    push_layout(&layout, &format!("127.0.0.1:{}/test/app:v1", registry.port));
    (registry, image)
}

/// Starts the daemon from `config`, written under `work`.
fn start_daemon(work: &Path, config: &toml::Table, port: u16) -> DaemonBinary {
    let path = work.join("config.toml");
    std::fs::write(&path, toml::to_string(config).unwrap()).unwrap();
    DaemonBinary::start(&path, port, &work.join("daemon.log"))
}

/// Upstream access-log lines after the push whose user agent is not the daemon's: a client that
/// fell back to the registry itself would show up here.
fn upstream_requests_not_from_daemon(registry: &Registry, after_line: usize) -> Vec<String> {
    std::fs::read_to_string(&registry.log)
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("127.0.0.1 - - ["))
        .skip(after_line)
        .filter(|l| !l.contains("\"cache-daemon/"))
        .map(str::to_owned)
        .collect()
}

fn access_lines(registry: &Registry) -> usize {
    std::fs::read_to_string(&registry.log)
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("127.0.0.1 - - ["))
        .count()
}

/// Each layer's file under `dir` (a snapshotter or storage root) holds the bytes the layout put
/// in it: the client unpacked what it pulled.
fn assert_unpacked(dir: &Path, seed: u8) {
    for (i, &size) in LAYERS.iter().enumerate() {
        let name = format!("layer{i}.bin");
        let files = find_files(dir, &name);
        assert!(
            !files.is_empty(),
            "no unpacked {name} under {}",
            dir.display()
        );
        for f in files {
            assert!(
                std::fs::read(&f).unwrap() == data(size, seed.wrapping_add(i as u8)),
                "{} differs from the image's layer {i}",
                f.display()
            );
        }
    }
}

fn assert_each_blob_fetched_once(registry: &Registry, image: &Image) {
    for d in image.layers.iter().chain([&image.config]) {
        assert_eq!(
            registry.count("GET", &d.to_string()),
            1,
            "upstream GETs of {d}"
        );
    }
}

#[test]
fn ctr_pulls_through_the_daemon_with_the_shipped_hosts_toml() {
    if !["docker-registry", "skopeo", "containerd", "ctr"]
        .iter()
        .all(|p| have(p))
    {
        return;
    }
    let started = Instant::now();
    let work = tempfile::tempdir().unwrap();
    let seed = 70;
    let (registry, image) = registry_with_image(work.path(), seed);
    let host = format!("127.0.0.1:{}", registry.port);
    let pushed = access_lines(&registry);

    // The shipped config with the test registry as the only mirrored registry, and no default
    // upstream: a request without `?ns=<host>` finds no upstream, so a pull that succeeds proves
    // containerd named the registry and the daemon routed by it.
    let port = free_port();
    let mut config = daemon_config(port, free_port(), &work.path().join("store"));
    assert!(
        config.remove("upstream").is_some(),
        "shipped config sets upstream"
    );
    let mut entry = toml::Table::new();
    entry.insert("url".into(), toml::Value::String(registry.url()));
    let mut registries = toml::Table::new();
    registries.insert(host.clone(), toml::Value::Table(entry));
    config.insert("registries".into(), toml::Value::Table(registries));
    let daemon = start_daemon(work.path(), &config, port);

    // hosts.toml as the init container writes it: the ConfigMap's script and template, with
    // MIRROR and REGISTRIES naming the test's daemon and registry instead of 127.0.0.1:5050 and
    // docker.io.
    let certs = work.path().join("certs.d");
    let (ok, out) = write_hosts(
        &certs,
        &daemon.url(""),
        &format!("{host}={}", registry.url()),
    );
    assert!(ok, "write-hosts.sh failed: {out}");
    let hosts_toml = std::fs::read_to_string(certs.join(&host).join("hosts.toml")).unwrap();
    assert!(
        hosts_toml.contains(&format!("[host.\"{}\"]", daemon.url(""))),
        "{hosts_toml}"
    );

    let ctrd = Containerd::start();
    // No --plain-http: the http:// URLs in hosts.toml are all containerd needs, as on a node.
    let pull = |ctrd: &Containerd| {
        run_within(
            ctrd.ctr("test")
                .args(["images", "pull", "--snapshotter", "native", "--hosts-dir"])
                .arg(&certs)
                .arg(format!("{host}/test/app:v1")),
            PULL_LIMIT,
        )
    };
    let out = pull(&ctrd);
    assert!(out.contains("unpacking linux/amd64"), "ctr output: {out}");
    let listed = run_within(
        ctrd.ctr("test").args(["images", "ls", "-q"]),
        Duration::from_secs(20),
    );
    assert!(listed.contains(&format!("{host}/test/app:v1")), "{listed}");
    assert_unpacked(&ctrd.root.join("io.containerd.snapshotter.v1.native"), seed);

    // Everything went through the daemon, each blob fetched upstream once.
    let direct = upstream_requests_not_from_daemon(&registry, pushed);
    assert!(
        direct.is_empty(),
        "containerd reached the registry itself: {direct:#?}"
    );
    assert_each_blob_fetched_once(&registry, &image);
    let blobs = (LAYERS.len() + 1) as f64;
    assert_eq!(
        daemon.metric("cache_daemon_fills_total{result=\"committed\"}"),
        blobs
    );
    assert_eq!(
        daemon.metric("cache_daemon_requests_total{kind=\"blob\",result=\"miss\"}"),
        blobs
    );

    // The inventory records the image under the registry containerd named.
    let ls = run_within(
        Command::new(env!("CARGO_BIN_EXE_cache-daemon"))
            .args(["ls", "--json", "--admin"])
            .arg(format!(
                "http://{}",
                config["admin_listen"].as_str().unwrap()
            )),
        Duration::from_secs(20),
    );
    let items: serde_json::Value = serde_json::from_str(&ls).unwrap();
    let repos: Vec<&str> = items
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|i| i["repos"].as_array().into_iter().flatten())
        .filter_map(|r| r.as_str())
        .collect();
    assert!(repos.contains(&format!("{host}/test/app").as_str()), "{ls}");

    // A second node (a fresh containerd) pulls the same image: all from the cache.
    drop(ctrd);
    let second = Containerd::start();
    pull(&second);
    assert_unpacked(
        &second.root.join("io.containerd.snapshotter.v1.native"),
        seed,
    );
    assert_each_blob_fetched_once(&registry, &image);
    assert_eq!(
        daemon.metric("cache_daemon_requests_total{kind=\"blob\",result=\"hit\"}"),
        blobs
    );
    assert!(upstream_requests_not_from_daemon(&registry, pushed).is_empty());
    drop(second);

    let status = daemon.terminate();
    assert!(status.success(), "cache-daemon exited with {status}");
    eprintln!("ctr through cache-daemon: {:?}", started.elapsed());
}

#[test]
fn podman_pulls_through_the_daemon_with_the_shipped_registries_conf() {
    if !["docker-registry", "skopeo", "podman"]
        .iter()
        .all(|p| have(p))
    {
        return;
    }
    let started = Instant::now();
    let work = tempfile::tempdir().unwrap();
    let seed = 90;
    let (registry, image) = registry_with_image(work.path(), seed);
    let host = format!("127.0.0.1:{}", registry.port);
    let pushed = access_lines(&registry);

    // The shipped config with its default upstream (what clients that send no `?ns=` get, and
    // podman sends none) pointed at the test registry instead of Docker Hub.
    let port = free_port();
    let mut config = daemon_config(port, free_port(), &work.path().join("store"));
    let old = config.insert("upstream".into(), toml::Value::String(registry.url()));
    assert_eq!(
        old.and_then(|v| v.as_str().map(str::to_owned)).as_deref(),
        Some("https://registry-1.docker.io")
    );
    let daemon = start_daemon(work.path(), &config, port);

    // The shipped snippet with docker.io replaced by the test registry and 127.0.0.1:5050 by the
    // test daemon; each line must be there exactly once.
    let shipped =
        std::fs::read_to_string(deploy_dir().join("crio/registries.conf.d/cache-daemon.conf"))
            .unwrap();
    let mut conf = shipped.clone();
    for (from, to) in [
        ("prefix = \"docker.io\"", format!("prefix = \"{host}\"")),
        ("location = \"docker.io\"", format!("location = \"{host}\"")),
        (
            "location = \"127.0.0.1:5050\"",
            format!("location = \"127.0.0.1:{port}\""),
        ),
    ] {
        assert_eq!(shipped.matches(from).count(), 1, "{from} in the snippet");
        conf = conf.replace(from, &to);
    }
    let conf_path = work.path().join("registries.conf");
    std::fs::write(&conf_path, conf).unwrap();

    let podman = Podman::new(&conf_path);
    run_within(
        podman
            .command()
            .args(["pull", "-q"])
            .arg(format!("{host}/test/app:v1")),
        PULL_LIMIT,
    );
    let id = run_within(
        podman
            .command()
            .args(["image", "inspect", "--format", "{{.ID}}"])
            .arg(format!("{host}/test/app:v1")),
        Duration::from_secs(30),
    );
    assert_eq!(
        id.trim(),
        image.config.hex(),
        "podman's image is the pushed one"
    );
    assert_unpacked(&podman.root(), seed);

    // The registry location in the snippet is not marked insecure, so podman could not have
    // fallen back to it over plain HTTP; the log confirms only the daemon fetched.
    let direct = upstream_requests_not_from_daemon(&registry, pushed);
    assert!(
        direct.is_empty(),
        "podman reached the registry itself: {direct:#?}"
    );
    assert_each_blob_fetched_once(&registry, &image);
    let blobs = (LAYERS.len() + 1) as f64;
    assert_eq!(
        daemon.metric("cache_daemon_fills_total{result=\"committed\"}"),
        blobs
    );

    let status = daemon.terminate();
    assert!(status.success(), "cache-daemon exited with {status}");
    eprintln!("podman through cache-daemon: {:?}", started.elapsed());
}
