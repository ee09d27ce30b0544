//! What `deploy/` ships, read the way a cluster reads it: the DaemonSet manifest's documents,
//! its ConfigMap entries (the daemon's config.toml, containerd's hosts.toml template and the
//! script that renders it), the init container's environment, and the hosts.toml files that
//! script writes when run exactly as the init container runs it.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use yaml_rust2::{Yaml, YamlLoader};

use super::real::{deploy_dir, output_within};

/// Every YAML document in `path`.
pub fn yaml_documents(path: &Path) -> Vec<Yaml> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path:?}: {e}"));
    YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The documents of `deploy/kubernetes/daemonset.yaml`.
pub fn manifests() -> Vec<Yaml> {
    yaml_documents(&deploy_dir().join("kubernetes/daemonset.yaml"))
}

/// The one document of `kind`.
pub fn object<'a>(docs: &'a [Yaml], kind: &str) -> &'a Yaml {
    let found: Vec<&Yaml> = docs
        .iter()
        .filter(|d| d["kind"].as_str() == Some(kind))
        .collect();
    assert_eq!(found.len(), 1, "exactly one {kind} in daemonset.yaml");
    found[0]
}

/// An entry of the cache-daemon ConfigMap.
pub fn configmap_entry(key: &str) -> String {
    object(&manifests(), "ConfigMap")["data"][key]
        .as_str()
        .unwrap_or_else(|| panic!("ConfigMap has no {key}"))
        .to_owned()
}

/// A container (init or main) of the DaemonSet's pod by name.
pub fn container<'a>(daemonset: &'a Yaml, name: &str) -> &'a Yaml {
    let spec = &daemonset["spec"]["template"]["spec"];
    spec["initContainers"]
        .as_vec()
        .into_iter()
        .chain(spec["containers"].as_vec())
        .flatten()
        .find(|c| c["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no container {name}"))
}

/// An environment variable's value in a container.
pub fn env<'a>(container: &'a Yaml, name: &str) -> &'a str {
    container["env"]
        .as_vec()
        .into_iter()
        .flatten()
        .find(|e| e["name"].as_str() == Some(name))
        .and_then(|e| e["value"].as_str())
        .unwrap_or_else(|| panic!("no env {name}"))
}

/// Runs the ConfigMap's `write-hosts.sh` with the ConfigMap's template into `certs_dir`, as the
/// `containerd-hosts` init container does, with its `MIRROR` and `REGISTRIES` set to these
/// values. Returns the script's output (stdout and stderr) and whether it succeeded.
pub fn write_hosts(certs_dir: &Path, mirror: &str, registries: &str) -> (bool, String) {
    write_hosts_with("sh", certs_dir, mirror, registries)
}

/// [`write_hosts`] with another shell, e.g. `busybox` (`busybox sh`), the init container's.
pub fn write_hosts_with(
    shell: &str,
    certs_dir: &Path,
    mirror: &str,
    registries: &str,
) -> (bool, String) {
    let mount = tempfile::tempdir().unwrap();
    for key in ["write-hosts.sh", "hosts.toml.tmpl"] {
        std::fs::write(mount.path().join(key), configmap_entry(key)).unwrap();
    }
    let mut cmd = Command::new(shell);
    if shell == "busybox" {
        cmd.arg("sh");
    }
    let out = output_within(
        cmd.arg(mount.path().join("write-hosts.sh"))
            .arg(mount.path().join("hosts.toml.tmpl"))
            .arg(certs_dir)
            .env("MIRROR", mirror)
            .env("REGISTRIES", registries),
        Duration::from_secs(10),
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The ConfigMap's config.toml as a table, with `listen`, `admin_listen` and `root` pointed at
/// a test's port, admin port and directory (the only settings a node fixes that a test cannot).
pub fn daemon_config(port: u16, admin_port: u16, root: &Path) -> toml::Table {
    let mut table: toml::Table = configmap_entry("config.toml")
        .parse()
        .expect("config.toml is TOML");
    for (key, value) in [
        ("listen", format!("127.0.0.1:{port}")),
        ("admin_listen", format!("127.0.0.1:{admin_port}")),
        ("root", root.display().to_string()),
    ] {
        let old = table.insert(key.to_owned(), toml::Value::String(value));
        assert!(old.is_some(), "the shipped config sets {key}");
    }
    table
}
