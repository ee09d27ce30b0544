//! What a server costs while it works: a sampling thread sums `VmRSS` and open descriptors over a
//! process and its descendants (nginx's workers) every few milliseconds and keeps the peaks;
//! `VmHWM` gives the kernel's own peak for a single process. Only `/proc` is read. Shared by the
//! mirror and load benches.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use stampede_lab::process::{descendants, status_kib};

/// Time between two samples of memory and descriptors.
const SAMPLE_EVERY: Duration = Duration::from_millis(10);

/// Open descriptors of `pid`; 0 once it is gone.
pub fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Peaks of a server process tree over a sampled period.
#[derive(Debug, Clone, Copy, Default)]
pub struct Peaks {
    /// Summed `VmRSS`, in bytes.
    pub rss_bytes: u64,
    /// Summed open descriptors.
    pub fds: usize,
}

/// A running sampler of a process tree; [`Sampler::stop`] returns the peaks.
#[derive(Debug)]
pub struct Sampler {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Peaks>,
}

impl Sampler {
    /// Samples `pid` and the descendants it has now.
    pub fn start(pid: u32) -> Self {
        let mut pids = vec![pid];
        pids.extend(descendants(pid));
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peaks = Peaks::default();
            let sample = |peaks: &mut Peaks| {
                let rss: u64 = pids.iter().filter_map(|&p| status_kib(p, "VmRSS")).sum();
                let fd: usize = pids.iter().map(|&p| fds(p)).sum();
                peaks.rss_bytes = peaks.rss_bytes.max(rss * 1024);
                peaks.fds = peaks.fds.max(fd);
            };
            while !flag.load(Ordering::Relaxed) {
                sample(&mut peaks);
                std::thread::sleep(SAMPLE_EVERY);
            }
            sample(&mut peaks);
            peaks
        });
        Self { stop, thread }
    }

    /// Stops sampling.
    pub fn stop(self) -> Peaks {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

/// `VmHWM` (peak RSS) of one process, in bytes.
pub fn high_water_bytes(pid: u32) -> Option<u64> {
    status_kib(pid, "VmHWM").map(|k| k * 1024)
}
