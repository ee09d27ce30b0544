//! [`KubeBed`]: a real Kubernetes v1.20.2 (etcd, API server, controller-manager, scheduler, and
//! one or more nodes of containerd 1.6 and kubelet) with an upstream registry, for tests that
//! need real pods. The control plane and the registry share a private network namespace; each
//! node has its own network namespace (its IP on a bridge there) and its own mount namespace
//! (its own `/var/lib/kubelet`, `/var/log/pods`, `/var/lib/cache-daemon`,
//! `/etc/containerd/certs.d`), as machines of a cluster do. The bed itself is the shell scripts in
//! `lab/kubernetes/` (a person runs the same ones by hand; `lab/kubernetes/README.md`): this file
//! starts them, holds the bed for the test's life and tears it down on drop, so there is one
//! definition of the bed, not two.
//!
//! The Kubernetes binaries are built once from Debian's source package into a cache outside the
//! repository ([`cache_dir`], filled by `lab/kubernetes/build.sh`, about 6 minutes on 2 cores).
//! [`KubeBed::for_tests`] skips a test when the cache is empty, unless real parts are required
//! (CI), where it builds it first.
//!
//! The nodes mount over fixed paths of the machine and take fixed cgroup names, so one bed runs
//! on a machine at a time: [`KubeBed::start`] waits for a machine-wide lock. A bed whose owner process died
//! (SIGINT, SIGKILL) is torn down by the next `up.sh`; one that a panic unwinds through is torn
//! down by drop.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::LabError;
use crate::program::real_parts_required;

/// Where `build.sh` keeps the binaries unless `STAMPEDE_KUBE_CACHE` says otherwise.
pub const DEFAULT_CACHE_DIR: &str = "/var/cache/stampede/kubernetes";
/// The first node's name (the only one of a one-node bed); the others are `node2`, `node3`...
pub const NODE: &str = "node1";
/// The API server's IP on the bed's network (port 6443), in [`KubeBed::netns`].
pub const API_IP: &str = "10.200.0.2";
/// Most nodes a bed runs (`up.sh` refuses more).
pub const MAX_NODES: usize = 9;
/// The upstream registry inside the bed (plain HTTP): images named `10.200.0.1:5000/...`.
pub const REGISTRY: &str = "10.200.0.1:5000";
/// The machine-wide lock that lets one bed run at a time.
const LOCK: &str = "/tmp/stampede-kube.lock";

/// The build cache directory.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("STAMPEDE_KUBE_CACHE")
        .map_or_else(|| PathBuf::from(DEFAULT_CACHE_DIR), PathBuf::from)
}

/// Whether the cache holds every binary the bed runs.
pub fn built() -> bool {
    let c = cache_dir();
    [
        "bin/kube-apiserver",
        "bin/kube-controller-manager",
        "bin/kube-scheduler",
        "bin/kubelet",
        "root/usr/bin/etcd",
        "root/usr/bin/kubectl",
        "root/bin/busybox",
    ]
    .iter()
    .all(|p| c.join(p).is_file())
}

/// The scripts' directory, `lab/kubernetes/`.
pub fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("kubernetes")
}

/// Runs `lab/kubernetes/build.sh` (nothing to do when [`built`]).
///
/// # Errors
/// [`LabError::Command`] with the script's message.
pub fn build() -> Result<(), LabError> {
    script("build.sh", &[&cache_dir().to_string_lossy()]).map(drop)
}

fn script(name: &str, args: &[&str]) -> Result<String, LabError> {
    crate::process::run(&scripts().join(name).to_string_lossy(), args)
}

/// The IP of node `i` (1-based) on the bed's network.
pub fn node_ip(i: usize) -> String {
    format!("10.200.0.{}", 10 + i)
}

/// A running test bed; torn down on drop.
#[derive(Debug)]
pub struct KubeBed {
    dir: PathBuf,
    nodes: usize,
    /// Held for the bed's life: one bed per machine.
    _lock: File,
}

impl KubeBed {
    /// For tests: a started one-node bed, or `None` (the test skips, with a message) when this
    /// process is not root or the binaries are not built. When real parts are required
    /// (`STAMPEDE_REQUIRE_REAL=1`), builds them first and panics on any failure instead.
    ///
    /// # Panics
    /// Real parts required and the bed could not be built or started.
    pub fn for_tests() -> Option<Self> {
        Self::for_tests_with(1)
    }

    /// [`KubeBed::for_tests`] with `nodes` nodes.
    ///
    /// # Panics
    /// Real parts required and the bed could not be built or started.
    pub fn for_tests_with(nodes: usize) -> Option<Self> {
        if !crate::program::root_or_skip("a Kubernetes test bed (network namespace, containerd)") {
            return None;
        }
        if !built() {
            if !real_parts_required() {
                eprintln!(
                    "SKIPPED: the Kubernetes test bed's binaries are not in {} (run lab/kubernetes/build.sh once, about 6 minutes)",
                    cache_dir().display()
                );
                return None;
            }
            if let Err(e) = build() {
                panic!("build the Kubernetes test bed (STAMPEDE_REQUIRE_REAL=1): {e}");
            }
        }
        match Self::start(nodes) {
            Ok(bed) => Some(bed),
            Err(e) => panic!("start the Kubernetes test bed: {e}"),
        }
    }

    /// Starts a bed of `nodes` nodes (1 to [`MAX_NODES`]) in a new directory under `/tmp` named
    /// by this process's PID, after waiting for any other bed on the machine to end.
    ///
    /// # Errors
    /// The lock file cannot be opened, or `up.sh` failed (it tore down what it started; its
    /// logs are kept beside the bed's directory, in `<dir>.logs`; it refuses a node count out of
    /// range).
    pub fn start(nodes: usize) -> Result<Self, LabError> {
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(LOCK)
            .map_err(LabError::io("open the test bed lock", LOCK))?;
        lock.lock().map_err(LabError::io("lock", LOCK))?;
        let dir = PathBuf::from(format!(
            "/tmp/stampede-kube-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos())
        ));
        let owner = std::process::id().to_string();
        script(
            "up.sh",
            &[&dir.to_string_lossy(), &owner, &nodes.to_string()],
        )?;
        Ok(Self {
            dir,
            nodes,
            _lock: lock,
        })
    }

    /// The bed's directory (`logs/`, `pki/`, `registry/`, one `nodeI/` per node, ...).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The control plane's network namespace (the API server, the registry), a file to give
    /// `nsenter --net=`.
    pub fn netns(&self) -> PathBuf {
        self.dir.join("netns")
    }

    /// The nodes' names, `node1` to `nodeN`.
    pub fn nodes(&self) -> Vec<String> {
        (1..=self.nodes).map(|i| format!("node{i}")).collect()
    }

    /// A node's network namespace (its host network: the cache DaemonSet's `127.0.0.1:5050`).
    pub fn node_netns(&self, node: &str) -> PathBuf {
        self.dir.join(node).join("netns")
    }

    /// A command running `program` inside `node`'s network namespace (add its arguments).
    pub fn node_command(&self, node: &str, program: &str) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.node_netns(node).display()))
            .arg(program);
        cmd
    }

    /// The admin kubeconfig (the API server at `https://10.200.0.2:6443`, reachable only inside
    /// [`KubeBed::netns`]).
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("pki/admin.kubeconfig")
    }

    /// The upstream registry's log (its access log lines among them).
    pub fn registry_log(&self) -> PathBuf {
        self.dir.join("logs/registry.log")
    }

    /// A node's containerd registry host directory (its `/etc/containerd/certs.d`).
    pub fn certs_dir(&self, node: &str) -> PathBuf {
        self.dir.join(node).join("host/etc-containerd-certs.d")
    }

    /// A command running `program` inside the control plane's network namespace (add its
    /// arguments).
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.netns().display()))
            .arg(program);
        cmd
    }

    /// Runs `f` on a fresh thread inside the bed's network namespace (where the API server and
    /// the registry are) and returns its result; sockets it creates stay in that namespace.
    ///
    /// # Errors
    /// [`LabError::Socket`] when the namespace cannot be entered.
    pub fn within<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, LabError> {
        let path = self.netns();
        crate::namespace::within_at(&path, &path.display().to_string(), "run code", || Ok(f()))
    }

    /// Runs kubectl (the admin's) with `args`, returning its standard output.
    ///
    /// # Errors
    /// [`LabError::Command`] with kubectl's message.
    pub fn kubectl(&self, args: &[&str]) -> Result<String, LabError> {
        crate::process::run(&self.dir.join("bin/k").to_string_lossy(), args)
    }

    /// Applies `deploy/kubernetes/daemonset.yaml` with the bed's parameters
    /// (`lab/kubernetes/deploy.sh`) and waits until the DaemonSet is ready. `binary` is the
    /// cache-daemon executable packed into its image.
    ///
    /// # Errors
    /// [`LabError::Command`] with the script's message.
    pub fn deploy_cache(&self, binary: &Path) -> Result<(), LabError> {
        script(
            "deploy.sh",
            &[&self.dir.to_string_lossy(), &binary.to_string_lossy()],
        )
        .map(drop)
    }

    /// Builds a busybox image with one more layer of `mib` MiB of random bytes and pushes it to
    /// the bed's registry as `repo:tag`; returns its name for a pod spec
    /// (`10.200.0.1:5000/repo:tag`).
    ///
    /// # Errors
    /// [`LabError::Command`] when the image cannot be built or pushed.
    pub fn push_app(&self, repo: &str, tag: &str, mib: u32) -> Result<String, LabError> {
        let dir = self.dir.join("images").join(format!("app-{repo}-{tag}"));
        let busybox = cache_dir().join("root/bin/busybox");
        script(
            "images.sh",
            &[
                "app",
                &dir.to_string_lossy(),
                &busybox.to_string_lossy(),
                &mib.to_string(),
            ],
        )?;
        let name = format!("{REGISTRY}/{repo}:{tag}");
        let out = self
            .command("skopeo")
            .args(["copy", "-q", "--dest-tls-verify=false"])
            .arg(format!("oci:{}/oci:app", dir.display()))
            .arg(format!("docker://{name}"))
            .stdin(Stdio::null())
            .output()
            .map_err(|source| LabError::Spawn {
                what: format!("skopeo copy to {name}"),
                source,
            })?;
        if !out.status.success() {
            return Err(LabError::Command {
                command: format!("skopeo copy to {name}"),
                status: out.status,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        Ok(name)
    }
}

impl Drop for KubeBed {
    fn drop(&mut self) {
        let keep = std::env::var("STAMPEDE_KEEP_BED").as_deref() == Ok("1");
        let dir = self.dir.to_string_lossy().into_owned();
        let args: &[&str] = if keep { &[&dir, "--keep"] } else { &[&dir] };
        if let Err(e) = script("down.sh", args) {
            eprintln!("tear down the Kubernetes test bed {dir}: {e}");
        }
    }
}
