//! What the benchmark starts and must take down again: child processes and network namespaces.
//! A [`Proc`] is stopped by PID on drop (SIGTERM, a bounded wait, then SIGKILL to it and to every
//! descendant it left, e.g. nginx workers); a [`ShapedLink`] deletes its namespace (and so its
//! veth pair) on drop, after killing whatever still runs inside. Panics unwind through these
//! guards and an interrupt drops the whole run future, so a failed run leaves nothing behind.
//!
//! This module knows nothing of registries or caches: it runs commands and owns their lifetime.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

/// How long a stopped process gets to exit on SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(3);
/// Poll interval while waiting for a process to exit.
const STOP_POLL: Duration = Duration::from_millis(20);

/// A child process, stopped on drop.
#[derive(Debug)]
pub struct Proc {
    name: String,
    child: Child,
}

impl Proc {
    /// Spawns `cmd` with stdout and stderr appended to `log`.
    ///
    /// # Errors
    /// The log cannot be created or the program cannot be started.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> anyhow::Result<Self> {
        let out =
            std::fs::File::create(log).with_context(|| format!("create {}", log.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("start {name}: {cmd:?}"))?;
        Ok(Self {
            name: name.to_owned(),
            child,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails if the process has already exited (it could not bind, bad config, ...).
    ///
    /// # Errors
    /// It exited, with its status.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited early with {status}", self.name);
        }
        Ok(())
    }

    /// Stops the process and its descendants; see the module doc.
    pub fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let pid = self.child.id();
        let descendants = descendants(pid);
        signal("TERM", pid);
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(STOP_POLL);
        }
        if !matches!(self.child.try_wait(), Ok(Some(_))) {
            eprintln!("mirror: {} ignored SIGTERM; killing", self.name);
            self.child.kill().ok();
            self.child.wait().ok();
        }
        for d in descendants {
            if is_alive(d) {
                signal("KILL", d);
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

fn signal(sig: &str, pid: u32) {
    Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .ok();
}

fn is_alive(pid: u32) -> bool {
    // A zombie still has a /proc entry but state Z; it is gone for our purposes.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
        .unwrap_or(false)
}

/// Every live process whose ancestry leads to `root` (not `root` itself), from `/proc/*/stat`.
pub fn descendants(root: u32) -> Vec<u32> {
    let mut parent_of = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // Fields after the parenthesised command: state, ppid, ...
            let ppid = stat
                .rsplit_once(") ")
                .and_then(|(_, rest)| rest.split(' ').nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if let Some(ppid) = ppid {
                parent_of.push((pid, ppid));
            }
        }
    }
    let mut found = vec![root];
    let mut i = 0;
    // Bounded: each pass adds only pids not yet found, and there are finitely many.
    while i < found.len() {
        let p = found[i];
        for &(pid, ppid) in &parent_of {
            if ppid == p && !found.contains(&pid) {
                found.push(pid);
            }
        }
        i += 1;
    }
    found.remove(0);
    found
}

/// Runs a short command to completion.
///
/// # Errors
/// It could not start or exited non-zero; the error carries its stderr.
pub fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("run {program} {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether `program` is on PATH.
pub fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The shaping applied to the upstream's egress.
#[derive(Debug, Clone, Copy)]
pub struct Shaping {
    /// Token bucket rate in Mbit/s (`tc tbf rate`).
    pub rate_mbit: u32,
}

/// A network namespace for the upstream, joined to the host namespace by a veth pair whose
/// namespace end is shaped with `tc tbf`. The host end carries `host_ip`; inside, the upstream
/// listens on `upstream_ip`. Caches and clients stay in the host namespace.
#[derive(Debug)]
pub struct ShapedLink {
    /// Namespace name (`ip netns exec <name> ...`).
    pub netns: String,
    host_if: String,
    /// The upstream's address, inside the namespace.
    pub upstream_ip: String,
    /// The host end's address; the upstream sees requests from it.
    pub host_ip: String,
}

/// Names this process's namespaces start with; stale ones from dead runs are swept.
const NETNS_PREFIX: &str = "mirror-bench-";

impl ShapedLink {
    /// Creates the namespace, veth pair, addresses and the tbf qdisc.
    ///
    /// # Errors
    /// Any `ip`/`tc` step fails (not root, no veth support); what was created is removed.
    pub fn create(shaping: Shaping) -> anyhow::Result<Self> {
        sweep_stale_namespaces();
        let pid = std::process::id();
        let subnet = free_subnet()?;
        let link = Self {
            netns: format!("{NETNS_PREFIX}{pid}"),
            host_if: format!("mbh{pid}"),
            upstream_ip: format!("10.231.{subnet}.1"),
            host_ip: format!("10.231.{subnet}.2"),
        };
        // From here on, `link`'s Drop removes whatever part was made.
        let ns_if = format!("mbu{pid}");
        let ns = link.netns.as_str();
        run("ip", &["netns", "add", ns])?;
        run(
            "ip",
            &[
                "link",
                "add",
                &link.host_if,
                "type",
                "veth",
                "peer",
                "name",
                &ns_if,
            ],
        )?;
        run("ip", &["link", "set", &ns_if, "netns", ns])?;
        run(
            "ip",
            &[
                "addr",
                "add",
                &format!("{}/24", link.host_ip),
                "dev",
                &link.host_if,
            ],
        )?;
        run("ip", &["link", "set", &link.host_if, "up"])?;
        run(
            "ip",
            &[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{}/24", link.upstream_ip),
                "dev",
                &ns_if,
            ],
        )?;
        run("ip", &["-n", ns, "link", "set", "lo", "up"])?;
        run("ip", &["-n", ns, "link", "set", &ns_if, "up"])?;
        run(
            "tc",
            &[
                "-n",
                ns,
                "qdisc",
                "replace",
                "dev",
                &ns_if,
                "root",
                "tbf",
                "rate",
                &format!("{}mbit", shaping.rate_mbit),
                "burst",
                "256kb",
                "latency",
                "100ms",
            ],
        )?;
        Ok(link)
    }

    /// A command that runs `program` inside the namespace (`ip netns exec` execs it, so the
    /// child's PID is the program's).
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.netns, program]);
        cmd
    }
}

impl Drop for ShapedLink {
    fn drop(&mut self) {
        delete_namespace(&self.netns);
        // Normally gone with the namespace; removes the host end if creation stopped halfway.
        Command::new("ip")
            .args(["link", "del", &self.host_if])
            .stderr(Stdio::null())
            .status()
            .ok();
    }
}

fn delete_namespace(name: &str) {
    if let Ok(pids) = run("ip", &["netns", "pids", name]) {
        for pid in pids.split_whitespace() {
            if let Ok(pid) = pid.parse::<u32>() {
                signal("KILL", pid);
            }
        }
    }
    Command::new("ip")
        .args(["netns", "del", name])
        .stderr(Stdio::null())
        .status()
        .ok();
}

/// Deletes `mirror-bench-<pid>` namespaces whose process is gone (a run killed with SIGKILL).
fn sweep_stale_namespaces() {
    let Ok(list) = run("ip", &["netns", "list"]) else {
        return;
    };
    for line in list.lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        if let Some(pid) = name
            .strip_prefix(NETNS_PREFIX)
            .and_then(|p| p.parse::<u32>().ok())
        {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                eprintln!("mirror: removing stale namespace {name}");
                delete_namespace(name);
            }
        }
    }
}

/// A `10.231.N.0/24` not already routed on the host.
fn free_subnet() -> anyhow::Result<u32> {
    let routes = run("ip", &["-4", "route", "show"])?;
    (1..250)
        .map(|n| (std::process::id() + n) % 250 + 1)
        .find(|n| !routes.contains(&format!("10.231.{n}.")))
        .context("no free 10.231.N.0/24 subnet")
}
