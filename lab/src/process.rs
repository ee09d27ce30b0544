//! Child processes the lab starts, and their end. A [`Proc`] is stopped by PID on drop: SIGTERM,
//! a bounded wait, then SIGKILL to it, and SIGKILL to every descendant it left behind (nginx
//! workers, containerd shims). Panics unwind through these guards and a dropped future drops
//! them, so a failed run leaves nothing behind. Nothing here is ever found or killed by name.
//!
//! Also [`run`], for short commands (`ip`, `tc`) that must finish before we go on.

use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{kill_process, Pid, Signal};

use crate::error::LabError;

/// How long a stopped process gets to exit on SIGTERM before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(3);
/// Poll interval while waiting for a process to exit.
const STOP_POLL: Duration = Duration::from_millis(20);

/// A child process, stopped on drop.
#[derive(Debug)]
pub struct Proc {
    name: String,
    child: Child,
}

impl Proc {
    /// Spawns `cmd` with stdin closed and stdout and stderr written to `log` (created or
    /// truncated). `name` says what it is in messages (`nginx (peer)`).
    ///
    /// # Errors
    /// [`LabError::Io`] when the log cannot be created, [`LabError::Spawn`] when the program
    /// cannot be started.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Result<Self, LabError> {
        let out = std::fs::File::create(log).map_err(LabError::io("create log", log))?;
        let err = out.try_clone().map_err(LabError::io("open log", log))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|source| LabError::Spawn {
                what: format!("{name}: {cmd:?}"),
                source,
            })?;
        Ok(Self {
            name: name.to_owned(),
            child,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What it is, as given to [`Proc::spawn`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its exit status, if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Stops the process and its descendants; see the module doc.
    pub fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        if self.exited().is_some() {
            return;
        }
        let pid = self.child.id();
        let descendants = descendants(pid);
        signal(pid, Signal::TERM);
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline && self.exited().is_none() {
            std::thread::sleep(STOP_POLL);
        }
        if self.exited().is_none() {
            tracing::warn!(name = %self.name, pid, "ignored SIGTERM; killing");
            self.child.kill().ok();
            self.child.wait().ok();
        }
        for d in descendants {
            if is_alive(d) {
                signal(d, Signal::KILL);
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

/// Sends `sig` to `pid`, ignoring a process that is already gone.
pub(crate) fn signal(pid: u32, sig: Signal) {
    if let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) {
        kill_process(pid, sig).ok();
    }
}

/// Sends SIGKILL to `pid` (a process found through a namespace, not one we spawned).
pub fn kill(pid: u32) {
    signal(pid, Signal::KILL);
}

/// CPU time a process has used, from `/proc/<pid>/stat`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTimes {
    /// `utime + stime`: the process itself, every thread.
    pub own: Duration,
    /// `cutime + cstime`: its children that it waited for.
    pub children: Duration,
}

/// The CPU time `pid` has used (`std::process::id()` for this process); `None` once it is gone.
pub fn cpu_times(pid: u32) -> Option<CpuTimes> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command (in parentheses, possibly with spaces) comes the state, field 3;
    // utime, stime, cutime, cstime are fields 14 to 17.
    let rest = stat.rsplit_once(") ")?.1;
    let field = |n: usize| -> Option<u64> { rest.split(' ').nth(n - 3)?.parse().ok() };
    let per_second = rustix::param::clock_ticks_per_second().max(1);
    let time = |ticks: u64| Duration::from_nanos(ticks.saturating_mul(1_000_000_000) / per_second);
    Some(CpuTimes {
        own: time(field(14)? + field(15)?),
        children: time(field(16)? + field(17)?),
    })
}

/// A `kB` field of `/proc/<pid>/status` (`VmRSS`, `VmHWM`), in KiB; `None` when the process or
/// the field is gone.
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Whether `pid` is a live process (a zombie counts as gone).
pub fn is_alive(pid: u32) -> bool {
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

/// Runs a short command to completion and returns its standard output.
///
/// # Errors
/// [`LabError::Spawn`] when it cannot start, [`LabError::Command`] (with its stderr) when it
/// exits non-zero.
pub fn run(program: &str, args: &[&str]) -> Result<String, LabError> {
    let command = format!("{program} {}", args.join(" "));
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| LabError::Spawn {
            what: command.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(LabError::Command {
            command,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process_cpu_and_memory() {
        let me = std::process::id();
        let before = cpu_times(me).unwrap();
        let start = Instant::now();
        let mut x = 0u64;
        while start.elapsed() < Duration::from_millis(50) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        std::hint::black_box(x);
        assert!(cpu_times(me).unwrap().own >= before.own);
        assert!(status_kib(me, "VmHWM").unwrap() >= status_kib(me, "VmRSS").unwrap() / 2);
        assert!(status_kib(me, "NoSuchField").is_none());
        assert!(cpu_times(u32::MAX).is_none());
    }

    #[test]
    fn dropping_a_proc_stops_it_and_its_children() {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "sleep 600 & sleep 600"]);
        let proc = Proc::spawn("sleeper", cmd, &dir.path().join("log")).unwrap();
        let pid = proc.pid();
        let start = Instant::now();
        let children = loop {
            let c = descendants(pid);
            if !c.is_empty() || start.elapsed() > Duration::from_secs(5) {
                break c;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        assert!(!children.is_empty());
        drop(proc);
        assert!(!is_alive(pid));
        let start = Instant::now();
        while children.iter().any(|c| is_alive(*c)) && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(children.iter().all(|c| !is_alive(*c)), "{children:?}");
    }

    #[test]
    fn a_failed_command_reports_its_stderr() {
        let err = run("sh", &["-c", "echo nope >&2; exit 3"]).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }
}
