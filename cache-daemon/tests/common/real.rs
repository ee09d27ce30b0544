//! Real parts for end-to-end tests: Debian's `docker-registry` (distribution) on a free loopback
//! port with its access log captured, `skopeo` to push and pull, a small OCI image layout writer
//! so tests need no network and no prebuilt image, the `cache-daemon` binary run from a config
//! file, `containerd` on a temp root with `ctr`, and `podman` on temp storage. The registry and
//! containerd come from the workspace's lab crate (`stampede_lab`), as the benchmarks' and the
//! harness's do. Every process started here is stopped by a `Drop` guard, and every wait is
//! bounded.
//!
//! When a program is missing, tests skip with a message, unless `STAMPEDE_REQUIRE_REAL=1` (set by
//! `.ci/run`), in which case they fail: CI must never pass by skipping.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flate2::write::GzEncoder;
use stampede_oci::Digest;

pub use stampede_lab::have_or_skip as have;

/// A free loopback port (bound then released; the tiny race is acceptable in tests).
pub fn free_port() -> u16 {
    stampede_lab::probe::free_loopback_addr()
        .unwrap_or_else(|e| panic!("{e}"))
        .port()
}

/// A running `docker-registry serve` (`stampede_lab`), stopped on drop.
pub struct Registry {
    registry: stampede_lab::DockerRegistry,
    pub port: u16,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Registry {
    /// A plain registry with filesystem storage, or a pull-through proxy of `proxy_of`.
    pub fn start(proxy_of: Option<&str>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
        let storage = dir.path().join("data");
        let config = match proxy_of {
            Some(url) => stampede_lab::RegistryConfig::proxy(addr, storage, url),
            None => stampede_lab::RegistryConfig::plain(addr, storage),
        };
        let registry = stampede_lab::DockerRegistry::start(dir.path(), &config, None)
            .unwrap_or_else(|e| panic!("{e}"));
        Self {
            port: addr.port(),
            log: registry.log_path().to_owned(),
            registry,
            _dir: dir,
        }
    }

    pub fn url(&self) -> String {
        self.registry.url()
    }

    /// Access-log requests with this method whose line contains `needle`.
    pub fn count(&self, method: &str, needle: &str) -> usize {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .filter(|l| {
                stampede_lab::AccessEntry::parse(l).is_some_and(|e| e.method == method)
                    && l.contains(needle)
            })
            .count()
    }
}

/// Runs a command, panicking with its output if it fails.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What was written into an OCI layout.
pub struct Image {
    pub layers: Vec<Digest>,
    pub config: Digest,
}

/// Writes an OCI image layout at `dir` with `tag` and one gzip layer per entry of `layer_bytes`,
/// each holding one file of pseudo-random content.
pub fn write_layout(dir: &Path, tag: &str, layer_bytes: &[usize], seed: u8) -> Image {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| -> Digest {
        let d = Digest::of(bytes);
        std::fs::write(blobs.join(d.hex()), bytes).unwrap();
        d
    };
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    let mut descriptors = Vec::new();
    for (i, &size) in layer_bytes.iter().enumerate() {
        let mut tar = tar::Builder::new(Vec::new());
        let content = super::data(size, seed.wrapping_add(i as u8));
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_cksum();
        tar.append_data(&mut header, format!("data/layer{i}.bin"), &content[..])
            .unwrap();
        let tar = tar.into_inner().unwrap();
        diff_ids.push(Digest::of(&tar).to_string());
        let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let gz = gz.finish().unwrap();
        let d = put(&gz);
        descriptors.push(format!(
            r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{d}","size":{}}}"#,
            gz.len()
        ));
        layers.push(d);
    }
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{"Cmd":["/bin/sh"]}},"rootfs":{{"type":"layers","diff_ids":[{}]}}}}"#,
        diff_ids
            .iter()
            .map(|d| format!("\"{d}\""))
            .collect::<Vec<_>>()
            .join(",")
    );
    let config_digest = put(config.as_bytes());
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[{}]}}"#,
        config.len(),
        descriptors.join(",")
    );
    let manifest_digest = put(manifest.as_bytes());
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    std::fs::write(
        dir.join("index.json"),
        format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{manifest_digest}","size":{},"annotations":{{"org.opencontainers.image.ref.name":"{tag}"}}}}]}}"#,
            manifest.len()
        ),
    )
    .unwrap();
    Image {
        layers,
        config: config_digest,
    }
}

/// Every file in a `skopeo copy ... dir:` output named by a digest hashes to its name; returns
/// how many were checked.
pub fn verify_dir_pull(dir: &Path) -> usize {
    let mut checked = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Ok(d) = Digest::parse(&format!("sha256:{name}")) {
            let bytes = std::fs::read(entry.path()).unwrap();
            assert_eq!(
                Digest::of(&bytes),
                d,
                "{} does not match its digest",
                entry.path().display()
            );
            checked += 1;
        }
    }
    checked
}

/// The workspace's `deploy/` directory.
pub fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("cache-daemon sits in the workspace")
        .join("deploy")
}

/// Runs a command to completion within `limit`, panicking with its output if it fails or
/// overruns (the command is killed then). Returns stdout.
pub fn run_within(cmd: &mut Command, limit: Duration) -> String {
    let out = output_within(cmd, limit);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command within `limit` and returns its output whatever its status; panics (after
/// killing it) when it overruns.
pub fn output_within(cmd: &mut Command, limit: Duration) -> std::process::Output {
    use std::io::Read as _;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {cmd:?}: {e}"));
    let drain = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            r.read_to_end(&mut buf).ok();
            buf
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let stderr = drain(Box::new(child.stderr.take().expect("piped stderr")));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for child") {
            break status;
        }
        if start.elapsed() > limit {
            child.kill().ok();
            child.wait().ok();
            let err = stderr.join().unwrap_or_default();
            panic!(
                "{cmd:?} did not finish within {limit:?}: {}",
                String::from_utf8_lossy(&err)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    std::process::Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

/// Pushes the OCI layout at `layout` (tag `v1`) to `reference` (`host:port/repo:tag`) over plain
/// HTTP with skopeo.
pub fn push_layout(layout: &Path, reference: &str) {
    run_within(
        Command::new("skopeo").args([
            "copy",
            "-q",
            "--dest-tls-verify=false",
            &format!("oci:{}:v1", layout.display()),
            &format!("docker://{reference}"),
        ]),
        Duration::from_secs(60),
    );
}

/// Sends SIGTERM, waits up to `grace`, then SIGKILL.
fn stop(child: &mut Child, grace: Duration) {
    if child.try_wait().ok().flatten().is_some() {
        return;
    }
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .ok();
    let start = Instant::now();
    while start.elapsed() < grace {
        if child.try_wait().ok().flatten().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().ok();
    child.wait().ok();
}

/// A private upstream: `layout`'s `v1` pushed as `private/app:v1` into an open registry, whose
/// storage is then served behind htpasswd with `users` (name, password). Returns the running
/// registry and its address.
pub fn private_registry(
    work: &Path,
    layout: &Path,
    users: &[(&str, &str)],
) -> (stampede_lab::DockerRegistry, std::net::SocketAddr) {
    let storage = work.join("storage");
    {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
        let open = stampede_lab::DockerRegistry::start(
            &work.join("open"),
            &stampede_lab::RegistryConfig::plain(addr, &storage),
            None,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        push_layout(layout, &format!("{addr}/private/app:v1"));
        open.stop();
    }
    let lines: String = users
        .iter()
        .map(|(user, password)| {
            let hash = bcrypt::hash_with_result(password, 5)
                .unwrap()
                .format_for_version(bcrypt::Version::TwoY);
            format!("{user}:{hash}\n")
        })
        .collect();
    let htpasswd = work.join("htpasswd");
    std::fs::write(&htpasswd, lines).unwrap();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut config = stampede_lab::RegistryConfig::plain(addr, &storage);
    config.auth = stampede_lab::RegistryAuth::Htpasswd(htpasswd);
    let private = stampede_lab::DockerRegistry::start(&work.join("private"), &config, None)
        .unwrap_or_else(|e| panic!("{e}"));
    (private, addr)
}

/// The real `cache-daemon` binary serving from a config file, stopped on drop.
pub struct DaemonBinary {
    child: Child,
    /// The mirror port (`listen` in the config).
    pub port: u16,
    /// Its stderr.
    pub log: PathBuf,
}

impl DaemonBinary {
    /// The `cache-daemon` binary, as a command to add arguments (and environment) to.
    pub fn command() -> Command {
        Command::new(env!("CARGO_BIN_EXE_cache-daemon"))
    }

    /// Starts `cmd` (from [`DaemonBinary::command`]) with its stderr in `log`, without waiting
    /// for it to serve: a test of a refused start watches [`DaemonBinary::exited_within`].
    pub fn spawn(mut cmd: Command, port: u16, log: &Path) -> Self {
        let child = cmd
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .expect("start cache-daemon");
        Self {
            child,
            port,
            log: log.to_owned(),
        }
    }

    /// Starts `cmd` and waits for `/healthz` on `port`; a daemon that exits first (a taken
    /// port, a refused config) fails the test at once with its log, instead of after the limit.
    pub fn start_with(cmd: Command, port: u16, log: &Path) -> Self {
        const LIMIT: Duration = Duration::from_secs(30);
        let mut daemon = Self::spawn(cmd, port, log);
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let start = Instant::now();
        loop {
            if stampede_lab::probe::status(addr, "/healthz").is_some() {
                return daemon;
            }
            if let Some(status) = daemon.child.try_wait().expect("cache-daemon status") {
                let log = std::fs::read_to_string(&daemon.log).unwrap_or_default();
                panic!("cache-daemon on port {port} exited ({status}) before serving:\n{log}");
            }
            if start.elapsed() >= LIMIT {
                let log = std::fs::read_to_string(&daemon.log).unwrap_or_default();
                panic!(
                    "cache-daemon on port {port} did not answer /healthz within {LIMIT:?}:\n{log}"
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts `cache-daemon --config <config>` and waits for `/healthz` on `port`.
    pub fn start(config: &Path, port: u16, log: &Path) -> Self {
        let mut cmd = Self::command();
        cmd.arg("--config").arg(config);
        Self::start_with(cmd, port, log)
    }

    /// Its exit status if it exits within `limit`; `None` while it still runs.
    pub fn exited_within(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().expect("cache-daemon status") {
                return Some(s);
            }
            if start.elapsed() >= limit {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Its process id, for reading `/proc/<pid>/status` and `/proc/<pid>/fd`.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The value of one series in `/metrics`, e.g. `cache_daemon_fills_total{result="committed"}`;
    /// 0 when absent.
    pub fn metric(&self, series: &str) -> f64 {
        let text = run_within(
            Command::new("curl").args(["-sf", "--max-time", "5", &self.url("/metrics")]),
            Duration::from_secs(10),
        );
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .map_or(0.0, |v| v.trim().parse().expect("metric value"))
    }

    /// Kills it with SIGKILL, as a crash or the OOM killer would (no shutdown, nothing saved),
    /// and returns its exit status.
    pub fn kill(mut self) -> std::process::ExitStatus {
        self.child.kill().ok();
        self.child.wait().expect("cache-daemon status")
    }

    /// Stops it with SIGTERM and returns its exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        stop(&mut self.child, Duration::from_secs(15));
        self.child.wait().expect("cache-daemon status")
    }
}

impl Drop for DaemonBinary {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// `containerd` on a temp root (`stampede_lab`), stopped on drop together with any shim it
/// started.
pub struct Containerd {
    containerd: stampede_lab::Containerd,
    /// The root directory (content, snapshots, metadata).
    pub root: PathBuf,
    _dir: tempfile::TempDir,
}

impl Containerd {
    /// Starts containerd and waits until `ctr version` answers.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let containerd =
            stampede_lab::Containerd::start(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        Self {
            root: containerd.root().join("root"),
            containerd,
            _dir: dir,
        }
    }

    /// `ctr --address <socket> -n <namespace>`, ready for a subcommand.
    pub fn ctr(&self, namespace: &str) -> Command {
        self.containerd.ctr(namespace)
    }
}

/// `podman` with its own storage (vfs), run and tmp dirs under a temp dir, and the given
/// registries.conf as its only registry configuration.
pub struct Podman {
    dir: tempfile::TempDir,
    registries_conf: PathBuf,
}

impl Podman {
    /// Podman reading `registries_conf` (through `CONTAINERS_REGISTRIES_CONF`).
    pub fn new(registries_conf: &Path) -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            registries_conf: registries_conf.to_owned(),
        }
    }

    /// The storage root (`--root`).
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// `podman` with the temp storage flags, ready for a subcommand.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new("podman");
        cmd.env("CONTAINERS_REGISTRIES_CONF", &self.registries_conf)
            .arg("--root")
            .arg(self.root())
            .arg("--runroot")
            .arg(self.dir.path().join("run"))
            .arg("--tmpdir")
            .arg(self.dir.path().join("tmp"))
            .args([
                "--storage-driver",
                "vfs",
                "--events-backend",
                "none",
                "--cgroup-manager",
                "cgroupfs",
            ]);
        cmd
    }
}

/// Files named `name` anywhere under `dir`.
pub fn find_files(dir: &Path, name: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file() && entry.file_name() == name {
                found.push(entry.path());
            }
        }
    }
    found
}
