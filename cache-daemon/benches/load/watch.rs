//! What a server costs and whether it stays responsive while loaded: a thread samples resident
//! memory and open descriptors of a process and its descendants (nginx's workers), and another
//! polls a health path on fresh connections and keeps the slowest answer. Only `/proc` and
//! loopback sockets are used; both run on threads of their own so the load client's busy runtime
//! does not delay them.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use stampede_lab::process::{descendants, status_kib};

/// Time between two samples of memory and descriptors.
const SAMPLE_EVERY: Duration = Duration::from_millis(20);
/// Time between two health polls.
const POLL_EVERY: Duration = Duration::from_millis(50);

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

/// What the health poller saw.
#[derive(Debug, Clone, Copy, Default)]
pub struct Health {
    /// Polls made.
    pub polls: usize,
    /// Polls without an HTTP 200 within the probe's 2 s.
    pub failures: usize,
    /// The slowest poll.
    pub slowest: Duration,
}

/// A running health poller; [`HealthPoller::stop`] returns what it saw.
#[derive(Debug)]
pub struct HealthPoller {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Health>,
}

impl HealthPoller {
    /// Polls `GET path` on `addr`, a fresh connection each time.
    pub fn start(addr: SocketAddr, path: &'static str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut h = Health::default();
            while !flag.load(Ordering::Relaxed) {
                let start = Instant::now();
                let status = stampede_lab::probe::status(addr, path);
                h.slowest = h.slowest.max(start.elapsed());
                h.polls += 1;
                if status != Some(200) {
                    h.failures += 1;
                }
                std::thread::sleep(POLL_EVERY);
            }
            h
        });
        Self { stop, thread }
    }

    /// Stops polling.
    pub fn stop(self) -> Health {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}
