//! Whether a server stays responsive while loaded: a thread polls a health path on fresh
//! connections and keeps the slowest answer, on a thread of its own so the load client's busy
//! runtime does not delay it. What the server costs (memory, descriptors) is sampled by
//! `mirror/rss.rs`, re-exported here.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Time between two health polls.
const POLL_EVERY: Duration = Duration::from_millis(50);

pub use crate::rss::{fds, Peaks, Sampler};

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
