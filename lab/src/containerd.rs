//! `containerd` on its own root, state directory and socket (the CRI plugin off), for `ctr` to
//! pull through: what a node's container runtime is, started by hand as `../shared/testbed.md`
//! (section 6) does. Stopped on drop together with any shim it started (shims re-parent
//! themselves away from containerd, so they are found by the socket path on their command line,
//! never by name alone).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::LabError;
use crate::process::{kill, Proc};
use crate::program::find;

/// How long containerd gets to answer `ctr version` after start.
pub const START_LIMIT: Duration = Duration::from_secs(20);

/// A running containerd, stopped on drop.
#[derive(Debug)]
pub struct Containerd {
    proc: Proc,
    socket: PathBuf,
    root: PathBuf,
    ctr: PathBuf,
    /// The network namespace containerd and every `ctr` run in, when given.
    netns: Option<String>,
    /// Holds the state directory and the socket: short, under `/tmp`.
    _run: tempfile::TempDir,
}

impl Containerd {
    /// Starts containerd with its content and snapshots under `root` (created) and its state
    /// and socket in a new short directory under `/tmp`, and waits until `ctr version` answers.
    /// Its log is `root/containerd.log`.
    ///
    /// # Errors
    /// [`LabError::Missing`] (`containerd`, `ctr`), [`LabError::Io`], [`LabError::Exited`] when
    /// it exits, [`LabError::Socket`] when it does not answer within [`START_LIMIT`].
    pub fn start(root: &Path) -> Result<Self, LabError> {
        Self::start_in(root, None)
    }

    /// As [`Containerd::start`], with containerd and every [`Containerd::ctr`] command run inside
    /// network namespace `netns` when given (`ip netns exec`): a node's runtime pulling over
    /// the node's own link. The socket is a file, reachable from any namespace.
    ///
    /// # Errors
    /// As [`Containerd::start`].
    pub fn start_in(root: &Path, netns: Option<&str>) -> Result<Self, LabError> {
        let program = find("containerd")?;
        let ctr = find("ctr")?;
        std::fs::create_dir_all(root).map_err(LabError::io("create", root))?;
        let run = tempfile::Builder::new()
            .prefix("ctrd")
            .tempdir_in("/tmp")
            .map_err(LabError::io("create a state directory in", "/tmp"))?;
        let socket = run.path().join("containerd.sock");
        let config = format!(
            "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\n[grpc]\n  address = \"{socket}\"\n\n[plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"{opt}\"\n",
            root = root.join("root").display(),
            state = run.path().join("state").display(),
            socket = socket.display(),
            opt = root.join("opt").display(),
        );
        let file = root.join("config.toml");
        std::fs::write(&file, config).map_err(LabError::io("write containerd config", &file))?;
        let log = root.join("containerd.log");
        let mut cmd = in_netns(netns, &program);
        cmd.arg("--config").arg(&file);
        let proc = Proc::spawn("containerd", cmd, &log)?;
        let mut c = Self {
            proc,
            socket,
            root: root.to_owned(),
            ctr,
            netns: netns.map(str::to_owned),
            _run: run,
        };
        c.wait_ready(&log)?;
        Ok(c)
    }

    fn wait_ready(&mut self, log: &Path) -> Result<(), LabError> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.proc.exited() {
                return Err(LabError::Exited {
                    what: "containerd".into(),
                    status,
                    log: log.to_owned(),
                });
            }
            if self.socket.exists() {
                let up = self
                    .ctr_command()
                    .args(["--timeout", "1s", "version"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
                if up {
                    return Ok(());
                }
            }
            if start.elapsed() > START_LIMIT {
                return Err(LabError::Socket {
                    what: format!(
                        "containerd did not answer on {} within {START_LIMIT:?}; see {}",
                        self.socket.display(),
                        log.display()
                    ),
                    source: std::io::Error::from(std::io::ErrorKind::TimedOut),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn ctr_command(&self) -> Command {
        let mut cmd = in_netns(self.netns.as_deref(), &self.ctr);
        cmd.arg("--address").arg(&self.socket);
        cmd
    }

    /// `ctr --address <socket> -n <namespace>`, ready for a subcommand.
    pub fn ctr(&self, namespace: &str) -> Command {
        let mut cmd = self.ctr_command();
        cmd.args(["-n", namespace]);
        cmd
    }

    /// The gRPC socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Content, snapshots and metadata live under `<root>/root`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Its log.
    pub fn log_path(&self) -> PathBuf {
        self.root.join("containerd.log")
    }

    /// Shims started by this containerd: their command line names its socket.
    fn shims(&self) -> Vec<u32> {
        let socket = self.socket.to_string_lossy().into_owned();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let cmdline = String::from_utf8_lossy(&cmdline);
                cmdline.contains("containerd-shim") && cmdline.contains(&socket)
            })
            .collect()
    }
}

/// `program`, or `ip netns exec <netns> program` when `netns` is given.
fn in_netns(netns: Option<&str>, program: &Path) -> Command {
    match netns {
        Some(ns) => {
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", ns]).arg(program);
            cmd
        }
        None => Command::new(program),
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let shims = self.shims();
        // `proc` is stopped when the struct's fields drop, right after this.
        for pid in shims {
            kill(pid);
        }
    }
}
