//! CPU time used by a process (or a process and its descendants), from `utime + stime` in `/proc/<pid>/stat`
//! (threads included), so a measurement can say what the target's processes used.

use std::time::Duration;

use stampede_lab::process::{cpu_times, descendants};

fn own(pid: u32) -> Duration {
    cpu_times(pid).map_or(Duration::ZERO, |t| t.own)
}

/// Whose CPU time to count.
#[derive(Debug, Clone, Copy)]
pub enum Counted {
    /// Nothing (a target without a process of its own).
    Nothing,
    /// A process and its descendants (nginx master and workers).
    Tree(u32),
}

/// A reading of CPU time for a set of processes.
#[derive(Debug, Clone)]
pub struct CpuClock {
    roots: Vec<Counted>,
    start: Vec<Duration>,
}

fn tree_time(counted: Counted) -> Duration {
    match counted {
        Counted::Nothing => Duration::ZERO,
        Counted::Tree(pid) => std::iter::once(pid).chain(descendants(pid)).map(own).sum(),
    }
}

impl CpuClock {
    /// Starts counting for each entry.
    pub fn start(roots: Vec<Counted>) -> Self {
        let start = roots.iter().map(|r| tree_time(*r)).collect();
        Self { roots, start }
    }

    /// CPU seconds each tree used since [`CpuClock::start`], in root order.
    pub fn read(&self) -> Vec<f64> {
        self.roots
            .iter()
            .zip(&self.start)
            .map(|(r, s)| tree_time(*r).saturating_sub(*s).as_secs_f64())
            .collect()
    }
}
