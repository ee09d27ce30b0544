//! CPU time used by a process (or a process and its descendants), from `utime + stime` in `/proc/<pid>/stat`
//! (threads included), so a measurement can say where the cores went: the target, the origin,
//! or this process's own clients. On a machine with few cores that sum bounds how fast any
//! pipeline through them can be.

use std::process::Command;

use stampede_lab::process::descendants;

/// Clock ticks per second of `/proc/<pid>/stat` times.
fn ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<f64>()
                .ok()
        })
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

fn ticks(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(") ")?.1;
            // After the command: state is field 3; utime and stime are fields 14 and 15.
            let f: Vec<&str> = rest.split(' ').collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0)
}

/// Whose CPU time to count.
#[derive(Debug, Clone, Copy)]
pub enum Counted {
    /// Nothing (a target without a process of its own).
    Nothing,
    /// One process, all its threads (this process: not its children, the servers).
    Process(u32),
    /// A process and its descendants (nginx master and workers).
    Tree(u32),
}

/// A reading of CPU time for a set of processes.
#[derive(Debug, Clone)]
pub struct CpuClock {
    per_second: f64,
    roots: Vec<Counted>,
    start: Vec<u64>,
}

fn tree_ticks(counted: Counted) -> u64 {
    match counted {
        Counted::Nothing => 0,
        Counted::Process(pid) => ticks(pid),
        Counted::Tree(pid) => std::iter::once(pid)
            .chain(descendants(pid))
            .map(ticks)
            .sum(),
    }
}

impl CpuClock {
    /// Starts counting for each entry.
    pub fn start(roots: Vec<Counted>) -> Self {
        let start = roots.iter().map(|r| tree_ticks(*r)).collect();
        Self {
            per_second: ticks_per_second(),
            roots,
            start,
        }
    }

    /// CPU seconds each tree used since [`CpuClock::start`], in root order.
    pub fn read(&self) -> Vec<f64> {
        self.roots
            .iter()
            .zip(&self.start)
            .map(|(r, s)| tree_ticks(*r).saturating_sub(*s) as f64 / self.per_second)
            .collect()
    }
}
