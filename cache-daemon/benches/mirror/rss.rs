//! Resident memory of a server while it works: a sampling thread sums `VmRSS` over a process and
//! its descendants (nginx's workers) every few milliseconds and keeps the peak; `VmHWM` gives the
//! kernel's own peak for a single process. Only `/proc` is read.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use stampede_lab::process::{descendants, status_kib};

/// Time between samples.
const SAMPLE_EVERY: Duration = Duration::from_millis(10);

/// A running sampler; [`RssSampler::stop`] returns the peak.
#[derive(Debug)]
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<u64>,
}

impl RssSampler {
    /// Starts sampling `pid` and the descendants it has now.
    pub fn start(pid: u32) -> Self {
        let mut pids = vec![pid];
        pids.extend(descendants(pid));
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peak = 0u64;
            while !flag.load(Ordering::Relaxed) {
                let sum: u64 = pids.iter().filter_map(|&p| status_kib(p, "VmRSS")).sum();
                peak = peak.max(sum * 1024);
                std::thread::sleep(SAMPLE_EVERY);
            }
            peak
        });
        Self { stop, thread }
    }

    /// Stops sampling; the peak summed RSS in bytes.
    pub fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or(0)
    }
}

/// `VmHWM` (peak RSS) of one process, in bytes.
pub fn high_water_bytes(pid: u32) -> Option<u64> {
    status_kib(pid, "VmHWM").map(|k| k * 1024)
}
