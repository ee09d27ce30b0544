//! A process a test starts (the bench-harness binary), owned by a guard. Its stdout and stderr
//! are read by threads from the moment it starts, so a child that writes more than a pipe holds
//! never blocks while the test polls it; every wait is bounded. On drop (a passed test, a failed
//! assertion, a panic) the child is killed if it still runs, together with its descendants, the
//! processes the test registered as its own (peers it started that may not be its descendants)
//! and the network namespaces whose names start with a registered prefix: a harness that is
//! killed cannot clean up after itself, so its guard does.

use std::process::{Command, ExitStatus, Output, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A running child and what it leaves behind if it dies without cleaning up.
pub struct Child {
    child: std::process::Child,
    stdout: Option<JoinHandle<Vec<u8>>>,
    stderr: Option<JoinHandle<Vec<u8>>>,
    owned_pids: Vec<u32>,
    netns_prefixes: Vec<String>,
}

fn drain(mut pipe: impl std::io::Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut out = Vec::new();
        pipe.read_to_end(&mut out).ok();
        out
    })
}

impl Child {
    /// Starts `cmd` with stdin closed and stdout and stderr piped into reader threads.
    pub fn spawn(cmd: &mut Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let stdout = child.stdout.take().map(drain);
        let stderr = child.stderr.take().map(drain);
        Self {
            child,
            stdout,
            stderr,
            owned_pids: Vec::new(),
            netns_prefixes: Vec::new(),
        }
    }

    /// The child's process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Kills these processes too when the guard drops, if they still run.
    pub fn owns(&mut self, pids: impl IntoIterator<Item = u32>) {
        self.owned_pids.extend(pids);
    }

    /// Deletes the network namespaces whose names start with `prefix` when the guard drops.
    pub fn owns_netns(&mut self, prefix: impl Into<String>) {
        self.netns_prefixes.push(prefix.into());
    }

    /// The exit status, if the child has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("wait for the child")
    }

    /// Waits up to `limit` for the child to exit (polling, while the reader threads drain its
    /// output); `None` if it is still running then.
    pub fn wait_within(&mut self, limit: Duration) -> Option<ExitStatus> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if started.elapsed() > limit {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits up to `limit` for the child to exit and returns its status and output; panics
    /// naming `what` if it does not (the guard then kills it). The guard's cleanup of what the
    /// test registered waits for the guard's drop, so a test can first assert that the child
    /// cleaned up itself.
    pub fn output_within(&mut self, limit: Duration, what: &str) -> Output {
        let Some(status) = self.wait_within(limit) else {
            panic!("{what} did not finish within {limit:?}");
        };
        let collect = |h: Option<JoinHandle<Vec<u8>>>| {
            h.map(|h| h.join().expect("output reader"))
                .unwrap_or_default()
        };
        Output {
            status,
            stdout: collect(self.stdout.take()),
            stderr: collect(self.stderr.take()),
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let descendants = stampede_lab::process::descendants(self.child.id());
            self.child.kill().ok();
            self.child.wait().ok();
            self.owned_pids.extend(descendants);
        }
        for pid in std::mem::take(&mut self.owned_pids) {
            if stampede_lab::process::is_alive(pid) {
                for child in stampede_lab::process::descendants(pid) {
                    stampede_lab::process::kill(child);
                }
                stampede_lab::process::kill(pid);
            }
        }
        if !self.netns_prefixes.is_empty() {
            let listed = Command::new("ip").args(["netns", "list"]).output();
            let listed = listed
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            for name in listed.lines().filter_map(|l| l.split_whitespace().next()) {
                if self.netns_prefixes.iter().any(|p| name.starts_with(p)) {
                    Command::new("ip")
                        .args(["netns", "del", name])
                        .status()
                        .ok();
                }
            }
        }
    }
}
