//! What one cache process (with the children it started: nginx's workers) cost over a burst:
//! CPU seconds from `/proc/<pid>/stat` (user + system of every thread, and of children it
//! waited for) since a starting sample, and peak resident memory from `/proc/<pid>/status`
//! (`VmHWM`, added over the process and its live children). Read before the process is stopped;
//! a process that is already gone counts nothing rather than failing the run.

use std::time::Duration;

use stampede_lab::process::{cpu_times, descendants, status_kib};

/// A process's CPU at the start of a burst.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageStart {
    pid: u32,
    cpu: Duration,
}

/// What a process used over a burst.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessUsage {
    /// CPU seconds, user + system, the process and its children.
    pub cpu_seconds: f64,
    /// Peak resident memory, bytes, the process and its children added.
    pub peak_rss_bytes: u64,
}

/// CPU used so far by `pid` and its live descendants (its own threads, and children it
/// waited for).
fn tree_cpu(pid: u32) -> Option<Duration> {
    let own = cpu_times(pid)?;
    let children: Duration = descendants(pid)
        .into_iter()
        .filter_map(cpu_times)
        .map(|c| c.own)
        .sum();
    Some(own.own + own.children + children)
}

/// The starting sample of `pid`; `None` when it is gone.
pub fn start(pid: u32) -> Option<UsageStart> {
    Some(UsageStart {
        pid,
        cpu: tree_cpu(pid)?,
    })
}

/// What the process of `start` used since then, and its peak memory.
pub fn since(start: &UsageStart) -> ProcessUsage {
    let cpu = tree_cpu(start.pid).map_or(Duration::ZERO, |c| c.saturating_sub(start.cpu));
    let peak_kib: u64 = std::iter::once(start.pid)
        .chain(descendants(start.pid))
        .filter_map(|p| status_kib(p, "VmHWM"))
        .sum();
    ProcessUsage {
        cpu_seconds: cpu.as_secs_f64(),
        peak_rss_bytes: peak_kib * 1024,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_this_process_cpu_since_the_start() {
        let me = std::process::id();
        let s = start(me).unwrap();
        let t = std::time::Instant::now();
        let mut x = 0u64;
        while t.elapsed() < Duration::from_millis(30) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        std::hint::black_box(x);
        let used = since(&s);
        assert!(used.cpu_seconds >= 0.0);
        assert!(used.peak_rss_bytes > 1024 * 1024, "{used:?}");
        assert!(start(u32::MAX).is_none());
    }
}
