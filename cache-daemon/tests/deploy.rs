//! What `deploy/` and `docker-compose.yml` ship, checked without a cluster: every YAML and TOML
//! file parses; the DaemonSet runs the daemon non-root on the host's loopback with probes,
//! resource limits and a hostPath store; its ConfigMap carries the committed files byte for byte;
//! its init container's script writes exactly the committed hosts.toml files, for exactly the
//! registries the daemon's config routes; every shipped daemon config is accepted by the daemon's
//! own parser; the systemd unit passes `systemd-analyze verify`; the compose file validates with
//! `docker compose config` (or Debian's `docker-compose`) and wires registry, cache and harness
//! together. The real pulls through these files are in `clients.rs`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use yaml_rust2::Yaml;

use cache_daemon::cli::ServeArgs;
use cache_daemon::config_file::FileConfig;
use cache_daemon::Config;

use crate::common::real::{deploy_dir, have, output_within, run_within};
use crate::common::shipped::{
    configmap_entry, container, env, manifests, object, write_hosts, write_hosts_with,
    yaml_documents,
};

fn workspace() -> PathBuf {
    deploy_dir().parent().unwrap().to_owned()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Every file under `dir`, recursively, as paths relative to `dir`.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            if entry.file_type().unwrap().is_dir() {
                stack.push(entry.path());
            } else {
                out.push(entry.path().strip_prefix(dir).unwrap().to_owned());
            }
        }
    }
    out.sort();
    out
}

/// A config file the way `cache-daemon --config FILE` reads it: the file parser, then the
/// merge and validation `serve` does before binding.
fn daemon_accepts(path: &Path) -> Config {
    FileConfig::parse(&read(path), path).unwrap_or_else(|e| panic!("{e}"));
    ServeArgs {
        config: Some(path.to_owned()),
        ..ServeArgs::default()
    }
    .into_settings()
    .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    .config
}

/// The ConfigMap's config.toml, accepted by the daemon.
fn configmap_config() -> Config {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, configmap_entry("config.toml")).unwrap();
    daemon_accepts(&path)
}

fn strs(y: &Yaml) -> Vec<&str> {
    y.as_vec()
        .map(|v| v.iter().filter_map(Yaml::as_str).collect())
        .unwrap_or_default()
}

#[test]
fn every_yaml_and_toml_file_in_deploy_parses() {
    let root = deploy_dir();
    let mut checked = 0;
    for rel in files_under(&root) {
        let path = root.join(&rel);
        let name = rel.to_string_lossy();
        if name.ends_with(".yaml") || name.ends_with(".yml") {
            assert!(!yaml_documents(&path).is_empty(), "{name} is empty");
            checked += 1;
        } else if name.ends_with(".toml") || name.ends_with(".conf") {
            read(&path)
                .parse::<toml::Table>()
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            checked += 1;
        }
    }
    let compose = workspace().join("docker-compose.yml");
    assert!(!yaml_documents(&compose).is_empty());
    // daemonset.yaml, 4 hosts.toml, the registries.conf snippet, 2 daemon configs, the scenario.
    assert!(checked >= 9, "only {checked} files checked");
}

#[test]
fn daemonset_runs_non_root_on_the_host_loopback_with_probes_limits_and_a_hostpath_store() {
    let docs = manifests();
    let ds = object(&docs, "DaemonSet");
    let ns = object(&docs, "Namespace")["metadata"]["name"]
        .as_str()
        .unwrap();
    assert_eq!(ds["metadata"]["namespace"].as_str(), Some(ns));
    assert_eq!(
        object(&docs, "ConfigMap")["metadata"]["namespace"].as_str(),
        Some(ns)
    );
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(
        pod["hostNetwork"].as_bool(),
        Some(true),
        "containerd reaches the cache on the host's loopback"
    );
    let label = "app.kubernetes.io/name";
    assert_eq!(
        ds["spec"]["selector"]["matchLabels"][label].as_str(),
        ds["spec"]["template"]["metadata"]["labels"][label].as_str()
    );

    let config = configmap_config();
    let listen = config.server.listen;
    assert!(listen.ip().is_loopback(), "mirror on loopback: {listen}");
    let admin = config.server.admin_listen.expect("admin endpoint on");
    assert!(admin.ip().is_loopback(), "admin on loopback only: {admin}");

    let daemon = container(ds, "cache-daemon");
    let port = &daemon["ports"][0];
    assert_eq!(port["containerPort"].as_i64(), Some(listen.port().into()));
    assert_eq!(port["hostPort"].as_i64(), Some(listen.port().into()));
    // Startup and readiness ask the mirror port itself; liveness asks the admin port, whose own
    // connection cap keeps it answering when the mirror port is full (a full mirror port makes
    // the pod unready, never restarted).
    for (probe, addr) in [
        ("startupProbe", listen),
        ("readinessProbe", listen),
        ("livenessProbe", admin),
    ] {
        let get = &daemon[probe]["httpGet"];
        assert_eq!(get["path"].as_str(), Some("/healthz"), "{probe}");
        assert_eq!(get["port"].as_i64(), Some(addr.port().into()), "{probe}");
        assert_eq!(
            get["host"].as_str(),
            Some(addr.ip().to_string().as_str()),
            "{probe} must reach the loopback address the daemon listens on"
        );
    }

    // Non-root where the store allows: the daemon as uid 65532 with nothing extra; the two
    // init containers are root but keep only what they need.
    let sc = &daemon["securityContext"];
    assert_eq!(sc["runAsNonRoot"].as_bool(), Some(true));
    assert!(sc["runAsUser"].as_i64().is_some_and(|u| u > 0));
    assert_eq!(sc["readOnlyRootFilesystem"].as_bool(), Some(true));
    for c in ["store-owner", "containerd-hosts", "cache-daemon"] {
        let sc = &container(ds, c)["securityContext"];
        assert_eq!(sc["allowPrivilegeEscalation"].as_bool(), Some(false), "{c}");
        assert_eq!(strs(&sc["capabilities"]["drop"]), vec!["ALL"], "{c}");
        assert!(
            strs(&sc["capabilities"]["add"])
                .iter()
                .all(|cap| *cap == "CHOWN"),
            "{c}"
        );
        let res = &container(ds, c)["resources"];
        for kind in ["requests", "limits"] {
            for what in ["cpu", "memory"] {
                assert!(!res[kind][what].is_badvalue(), "{c} has no {kind}.{what}");
            }
        }
    }
    // The store-owner init container hands the store to the daemon's user.
    let chown = strs(&container(ds, "store-owner")["command"]).join(" ");
    assert!(
        chown.contains(&format!(
            "chown {uid}:{uid} {root}",
            uid = sc["runAsUser"].as_i64().unwrap(),
            root = config.store.root.display()
        )),
        "{chown}"
    );

    // The store is a hostPath at the config's root, mounted there in the daemon.
    let volumes: BTreeMap<&str, &Yaml> = pod["volumes"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|v| (v["name"].as_str().unwrap(), v))
        .collect();
    let mount_of = |c: &Yaml, path: &str| -> String {
        c["volumeMounts"]
            .as_vec()
            .unwrap()
            .iter()
            .find(|m| m["mountPath"].as_str() == Some(path))
            .and_then(|m| m["name"].as_str())
            .unwrap_or_else(|| panic!("nothing mounted at {path}"))
            .to_owned()
    };
    let root = config.store.root.to_str().unwrap();
    let store = volumes[mount_of(daemon, root).as_str()];
    assert_eq!(store["hostPath"]["path"].as_str(), Some(root));
    assert_eq!(
        store["hostPath"]["type"].as_str(),
        Some("DirectoryOrCreate")
    );
    let certs = volumes[mount_of(
        container(ds, "containerd-hosts"),
        "/host/etc/containerd/certs.d",
    )
    .as_str()];
    assert_eq!(
        certs["hostPath"]["path"].as_str(),
        Some("/etc/containerd/certs.d")
    );

    // The daemon reads the ConfigMap's config.toml.
    let args = strs(&daemon["args"]);
    let config_arg = args
        .iter()
        .position(|a| *a == "--config")
        .map(|i| args[i + 1])
        .expect("--config");
    let config_dir = Path::new(config_arg).parent().unwrap().to_str().unwrap();
    assert_eq!(
        volumes[mount_of(daemon, config_dir).as_str()]["configMap"]["name"].as_str(),
        object(&docs, "ConfigMap")["metadata"]["name"].as_str()
    );
}

#[test]
fn configmap_carries_the_committed_files_byte_for_byte() {
    let root = deploy_dir();
    for (key, file) in [
        ("config.toml", "systemd/config.toml"),
        ("hosts.toml.tmpl", "containerd/hosts.toml.tmpl"),
        ("write-hosts.sh", "containerd/write-hosts.sh"),
    ] {
        assert!(
            configmap_entry(key) == read(&root.join(file)),
            "the ConfigMap's {key} differs from deploy/{file}"
        );
    }
}

#[test]
fn init_container_writes_the_committed_hosts_files() {
    let ds_docs = manifests();
    let init = container(object(&ds_docs, "DaemonSet"), "containerd-hosts");
    let (mirror, registries) = (env(init, "MIRROR"), env(init, "REGISTRIES"));
    let dir = tempfile::tempdir().unwrap();
    let (ok, out) = write_hosts(dir.path(), mirror, registries);
    assert!(ok, "{out}");

    let committed = deploy_dir().join("containerd/certs.d");
    let written = files_under(dir.path());
    assert_eq!(written, files_under(&committed));
    for rel in &written {
        assert!(
            read(&dir.path().join(rel)) == read(&committed.join(rel)),
            "{} differs from deploy/containerd/certs.d",
            rel.display()
        );
        let hosts: toml::Table = read(&committed.join(rel)).parse().unwrap();
        let host = &hosts["host"][mirror];
        assert_eq!(
            host["capabilities"].as_array().unwrap(),
            &vec![toml::Value::from("pull"), toml::Value::from("resolve")]
        );
        assert!(hosts["server"].as_str().unwrap().starts_with("https://"));
    }

    // Again over its own files: the same files (a restarted pod rewrites them).
    let (ok, out) = write_hosts(dir.path(), mirror, registries);
    assert!(ok, "{out}");
    assert_eq!(files_under(dir.path()), written);
    // A hosts.toml someone else wrote is left alone; a malformed entry stops the script.
    let foreign = dir.path().join("quay.io/hosts.toml");
    std::fs::write(&foreign, "server = \"https://quay.io\"\n").unwrap();
    let (ok, out) = write_hosts(dir.path(), mirror, registries);
    assert!(ok && out.contains("left as it is"), "{out}");
    assert_eq!(read(&foreign), "server = \"https://quay.io\"\n");
    let (ok, out) = write_hosts(dir.path(), mirror, "docker.io");
    assert!(!ok && out.contains("expected HOST=URL"), "{out}");

    // The init container's shell is busybox's: the same files from it. Skipped with a message
    // when busybox is missing, and a failure under STAMPEDE_REQUIRE_REAL=1 (CI installs it).
    if stampede_lab::have_or_skip("busybox") {
        let dir = tempfile::tempdir().unwrap();
        let (ok, out) = write_hosts_with("busybox", dir.path(), mirror, registries);
        assert!(ok, "{out}");
        assert_eq!(files_under(dir.path()), written);
        for rel in &written {
            assert!(read(&dir.path().join(rel)) == read(&committed.join(rel)));
        }
    }
}

#[test]
fn init_container_mirrors_exactly_the_registries_the_config_routes() {
    let docs = manifests();
    let init = container(object(&docs, "DaemonSet"), "containerd-hosts");
    let config = configmap_config();
    assert_eq!(
        env(init, "MIRROR"),
        format!("http://{}", config.server.listen)
    );
    let listed: BTreeMap<String, String> = env(init, "REGISTRIES")
        .split_whitespace()
        .map(|e| {
            let (host, url) = e.split_once('=').unwrap();
            (host.to_owned(), url.to_owned())
        })
        .collect();
    let routed: BTreeMap<String, String> = config
        .upstream
        .registries
        .iter()
        .map(|(host, e)| (host.clone(), e.base_url()))
        .collect();
    assert_eq!(listed, routed);
}

#[test]
fn shipped_daemon_configs_are_accepted_by_the_daemon() {
    let root = deploy_dir();
    // The node config (systemd and the ConfigMap): loopback only, the store where the unit's
    // StateDirectory and the DaemonSet's hostPath put it, Docker Hub for clients without ?ns=.
    for config in [
        daemon_accepts(&root.join("systemd/config.toml")),
        configmap_config(),
    ] {
        assert_eq!(
            config.server.listen,
            "127.0.0.1:5050".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            config.server.admin_listen,
            Some("127.0.0.1:5051".parse().unwrap())
        );
        assert_eq!(config.store.root, Path::new("/var/lib/cache-daemon"));
        assert!(config.store.budget.is_some(), "a node store needs a budget");
        assert_eq!(
            config.upstream.default.as_ref().map(|e| e.base_url()),
            Some(config.upstream.registries["docker.io"].base_url())
        );
    }
    // The compose cache: reachable from the other containers, filling from the registry service.
    let compose = daemon_accepts(&root.join("compose/cache-daemon.toml"));
    assert!(compose.server.listen.ip().is_unspecified());
    assert_eq!(
        compose.upstream.default.map(|e| e.base_url()).as_deref(),
        Some("http://registry:5000")
    );
}

#[test]
fn crio_snippet_mirrors_the_registry_the_default_upstream_names() {
    let conf: toml::Table = read(&deploy_dir().join("crio/registries.conf.d/cache-daemon.conf"))
        .parse()
        .unwrap();
    let registries = conf["registry"].as_array().unwrap();
    assert_eq!(registries.len(), 1);
    let registry = &registries[0];
    assert_eq!(registry["prefix"].as_str(), Some("docker.io"));
    let mirror = &registry["mirror"].as_array().unwrap()[0];
    let config = configmap_config();
    assert_eq!(
        mirror["location"].as_str(),
        Some(config.server.listen.to_string().as_str())
    );
    assert_eq!(mirror["insecure"].as_bool(), Some(true));
    // CRI-O sends no ?ns=, so the daemon answers it from its default upstream: that must be
    // the registry this snippet mirrors.
    assert_eq!(
        config.upstream.default.map(|e| e.base_url()),
        Some(config.upstream.registries["docker.io"].base_url())
    );
}

#[test]
fn systemd_unit_verifies_and_runs_the_daemon_hardened() {
    let unit = read(&deploy_dir().join("systemd/cache-daemon.service"));
    let exec = "ExecStart=/usr/local/bin/cache-daemon --config /etc/cache-daemon/config.toml";
    assert_eq!(unit.matches(exec).count(), 1, "{exec}");
    for line in [
        "DynamicUser=yes",
        "StateDirectory=cache-daemon",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=",
    ] {
        assert!(unit.lines().any(|l| l == line), "missing {line}");
    }
    // StateDirectory=cache-daemon is /var/lib/cache-daemon: the config's store root.
    assert_eq!(
        daemon_accepts(&deploy_dir().join("systemd/config.toml"))
            .store
            .root,
        Path::new("/var/lib/cache-daemon")
    );
    if !have("systemd-analyze") {
        return;
    }
    // verify needs ExecStart's program to exist: point it at the binary under test.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("cache-daemon.service");
    std::fs::write(
        &copy,
        unit.replace(
            "/usr/local/bin/cache-daemon",
            env!("CARGO_BIN_EXE_cache-daemon"),
        ),
    )
    .unwrap();
    let out = output_within(
        Command::new("systemd-analyze").arg("verify").arg(&copy),
        Duration::from_secs(30),
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && !text.contains("cache-daemon.service"),
        "systemd-analyze verify: {text}"
    );
}

#[test]
fn dockerfile_builds_both_binaries_into_non_root_distroless_images() {
    let text = read(&deploy_dir().join("docker/Dockerfile"));
    let stages: Vec<(&str, &str)> = text
        .lines()
        .filter_map(|l| l.strip_prefix("FROM "))
        .map(|l| {
            let (image, name) = l.split_once(" AS ").expect("every stage is named");
            (image.trim(), name.trim())
        })
        .collect();
    assert_eq!(
        stages,
        vec![
            ("rust:1.95-bookworm", "build"),
            ("gcr.io/distroless/cc-debian12:nonroot", "cache-daemon"),
            ("gcr.io/distroless/cc-debian12:nonroot", "bench-harness"),
        ]
    );
    assert!(text.contains("cargo build --release --locked -p cache-daemon -p bench-harness"));
    // Each runtime stage ends as the non-root user.
    for stage in text.split("\nFROM ").skip(2) {
        assert!(stage.contains("\nUSER 65532:65532\n"), "{stage}");
    }
    let dockerignore = read(&workspace().join(".dockerignore"));
    assert!(dockerignore.lines().any(|l| l == "target/"));
}

/// `docker compose` when the docker CLI has the plugin, else Debian's `docker-compose`.
fn compose_command() -> Option<Command> {
    let plugin = Command::new("docker")
        .args(["compose", "version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if plugin {
        let mut cmd = Command::new("docker");
        cmd.arg("compose");
        return Some(cmd);
    }
    have("docker-compose").then(|| Command::new("docker-compose"))
}

#[test]
fn compose_file_validates_and_wires_registry_cache_and_harness() {
    let ws = workspace();
    let docs = yaml_documents(&ws.join("docker-compose.yml"));
    let services = &docs[0]["services"];
    assert_eq!(services["registry"]["image"].as_str(), Some("registry:2"));

    // Both images come from the Dockerfile's stages of the same name.
    let dockerfile = read(&ws.join("deploy/docker/Dockerfile"));
    for (service, target) in [("cache", "cache-daemon"), ("harness", "bench-harness")] {
        let build = &services[service]["build"];
        assert_eq!(
            build["dockerfile"].as_str(),
            Some("deploy/docker/Dockerfile")
        );
        assert_eq!(build["target"].as_str(), Some(target));
        assert!(dockerfile.contains(&format!(" AS {target}\n")));
    }

    // The cache reads the mounted compose config, which fills from the registry service.
    let bind = |service: &str, inside: &str| -> PathBuf {
        strs(&services[service]["volumes"])
            .iter()
            .find_map(|v| {
                let mut parts = v.split(':');
                let (from, to) = (parts.next()?, parts.next()?);
                (to == inside).then(|| ws.join(from))
            })
            .unwrap_or_else(|| panic!("{service} mounts nothing at {inside}"))
    };
    let command = strs(&services["cache"]["command"]);
    assert_eq!(command[0], "--config");
    let cache_config = daemon_accepts(&bind("cache", command[1]));
    let cache_port = cache_config.server.listen.port();
    assert_eq!(
        cache_config
            .upstream
            .default
            .map(|e| e.base_url())
            .as_deref(),
        Some("http://registry:5000")
    );
    assert!(strs(&services["cache"]["ports"])
        .iter()
        .any(|p| p.ends_with(&format!(":{cache_port}"))));

    // The harness runs the mounted scenario: the seeded image, direct and through the cache.
    let command = strs(&services["harness"]["command"]);
    assert_eq!(command[0], "run");
    let scenario: toml::Table = read(&bind("harness", command[1])).parse().unwrap();
    let targets = scenario["targets"].as_array().unwrap();
    assert!(targets.iter().any(|t| t["kind"].as_str() == Some("direct")));
    assert!(targets.iter().any(|t| t["kind"].as_str() == Some("mirror")
        && t["url"].as_str() == Some(format!("http://cache:{cache_port}").as_str())));
    let image = scenario["variants"][0]["registry"]["image"]
        .as_str()
        .unwrap();
    let seeded = strs(&services["seed"]["command"]);
    assert_eq!(
        seeded.last().copied(),
        Some(format!("docker://{image}").as_str())
    );
    assert!(image.starts_with("registry:5000/"));
    for (service, on, condition) in [
        ("harness", "seed", "service_completed_successfully"),
        ("harness", "cache", "service_healthy"),
        ("cache", "registry", "service_healthy"),
        ("seed", "registry", "service_healthy"),
    ] {
        assert_eq!(
            services[service]["depends_on"][on]["condition"].as_str(),
            Some(condition),
            "{service} -> {on}"
        );
    }

    let Some(mut compose) = compose_command() else {
        return;
    };
    run_within(
        compose
            .current_dir(&ws)
            .args(["-f", "docker-compose.yml", "config", "-q"]),
        Duration::from_secs(60),
    );
}

#[test]
fn cluster_mode_has_a_headless_service_a_secret_the_downward_api_address_and_a_peer_only_policy() {
    let docs = manifests();
    let ds = object(&docs, "DaemonSet");
    let label = "app.kubernetes.io/name";
    let app = ds["spec"]["template"]["metadata"]["labels"][label].as_str();
    let daemon = container(ds, "cache-daemon");

    // The headless Service lists every DaemonSet pod, ready or not, on the peer port.
    let svc = object(&docs, "Service");
    assert_eq!(svc["spec"]["clusterIP"].as_str(), Some("None"));
    assert_eq!(
        svc["spec"]["publishNotReadyAddresses"].as_bool(),
        Some(true)
    );
    assert_eq!(svc["spec"]["selector"][label].as_str(), app);
    let peer_port = svc["spec"]["ports"][0]["port"].as_i64().unwrap();
    let ns = svc["metadata"]["namespace"].as_str().unwrap();
    let name = svc["metadata"]["name"].as_str().unwrap();
    // Members come from that Service's Endpoints through the API server, with the pod's
    // service account, which may get that one object and nothing else; no cluster DNS.
    assert_eq!(
        env(daemon, "CACHE_DAEMON_PEERS_KUBERNETES"),
        format!("{ns}/{name}:{peer_port}")
    );
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["dnsPolicy"].as_str(), Some("Default"));
    assert_eq!(pod["automountServiceAccountToken"].as_bool(), Some(true));
    let account = object(&docs, "ServiceAccount");
    assert_eq!(
        pod["serviceAccountName"].as_str(),
        account["metadata"]["name"].as_str()
    );
    assert_eq!(account["metadata"]["namespace"].as_str(), Some(ns));
    let role = object(&docs, "Role");
    assert_eq!(role["metadata"]["namespace"].as_str(), Some(ns));
    let rules = role["rules"].as_vec().unwrap();
    assert_eq!(rules.len(), 1, "one rule only");
    assert_eq!(rules[0]["resources"][0].as_str(), Some("endpoints"));
    assert!(rules[0]["resources"][1].is_badvalue());
    assert_eq!(rules[0]["resourceNames"][0].as_str(), Some(name));
    assert!(rules[0]["resourceNames"][1].is_badvalue());
    assert_eq!(rules[0]["verbs"][0].as_str(), Some("get"));
    assert!(rules[0]["verbs"][1].is_badvalue(), "get only");
    let binding = object(&docs, "RoleBinding");
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    assert_eq!(binding["subjects"][0]["name"], account["metadata"]["name"]);
    assert_eq!(binding["subjects"][0]["namespace"].as_str(), Some(ns));

    // The advertised address is the pod's IP from the downward API, at the peer port.
    let pod_ip = daemon["env"]
        .as_vec()
        .unwrap()
        .iter()
        .find(|e| e["name"].as_str() == Some("POD_IP"))
        .expect("POD_IP from the downward API");
    assert_eq!(
        pod_ip["valueFrom"]["fieldRef"]["fieldPath"].as_str(),
        Some("status.podIP")
    );
    for var in ["CACHE_DAEMON_PEER_LISTEN", "CACHE_DAEMON_PEER_ADVERTISE"] {
        assert_eq!(env(daemon, var), format!("$(POD_IP):{peer_port}"), "{var}");
    }
    let ports: Vec<i64> = daemon["ports"]
        .as_vec()
        .unwrap()
        .iter()
        .filter_map(|p| p["containerPort"].as_i64())
        .collect();
    assert!(ports.contains(&peer_port), "{ports:?}");

    // The key comes from the Secret, mounted where the flag points.
    let secret = object(&docs, "Secret");
    let key_file = Path::new(env(daemon, "CACHE_DAEMON_CLUSTER_SECRET_FILE"));
    let volume = ds["spec"]["template"]["spec"]["volumes"]
        .as_vec()
        .unwrap()
        .iter()
        .find(|v| v["secret"]["secretName"].as_str() == secret["metadata"]["name"].as_str())
        .expect("a volume of the cluster Secret");
    let mount = daemon["volumeMounts"]
        .as_vec()
        .unwrap()
        .iter()
        .find(|m| m["name"].as_str() == volume["name"].as_str())
        .expect("the Secret mounted in the daemon");
    assert_eq!(
        mount["mountPath"].as_str().map(Path::new),
        key_file.parent()
    );
    let key = key_file.file_name().unwrap().to_str().unwrap();
    assert!(
        !secret["stringData"][key].is_badvalue(),
        "Secret has no {key}"
    );

    // Only the DaemonSet's pods reach the peer port.
    let policy = object(&docs, "NetworkPolicy");
    assert_eq!(
        policy["spec"]["podSelector"]["matchLabels"][label].as_str(),
        app
    );
    let rule = &policy["spec"]["ingress"][0];
    assert_eq!(
        rule["from"][0]["podSelector"]["matchLabels"][label].as_str(),
        app
    );
    assert_eq!(rule["ports"][0]["port"].as_i64(), Some(peer_port));
    assert!(policy["spec"]["ingress"][1].is_badvalue(), "one rule only");

    // The daemon takes these settings as the pod would give them: the shipped empty key is
    // refused with a plain message, a real one is accepted.
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join(key);
    let parse = |secret_value: &str| {
        std::fs::write(&key_path, secret_value).unwrap();
        let mut args = ServeArgs {
            config: None,
            peer_listen: Some(format!("10.1.2.3:{peer_port}").parse().unwrap()),
            peer_advertise: Some(format!("10.1.2.3:{peer_port}").parse().unwrap()),
            peers_kubernetes: Some(env(daemon, "CACHE_DAEMON_PEERS_KUBERNETES").to_owned()),
            cluster_secret_file: Some(key_path.clone()),
            ..ServeArgs::default()
        };
        args.upstream = Some("https://registry-1.docker.io".into());
        args.into_settings()
            .map(|s| s.config)
            .map_err(|e| e.to_string())
    };
    let shipped = secret["stringData"][key].as_str().unwrap();
    let err = parse(shipped).unwrap_err();
    assert!(
        err.contains("cluster_secret_file") && err.contains("at least 16"),
        "{err}"
    );
    let config = parse("a-real-key-of-thirty-two-bytes!!").unwrap();
    let cluster = config.cluster.expect("cluster mode on");
    assert_eq!(
        cluster.advertise.to_string(),
        format!("10.1.2.3:{peer_port}")
    );
}
