//! [`LinkCounters`]: the kernel's byte counters of every link of a [`Fabric`], open for reads
//! repeated many times a second, each read stamped with the moment the kernel produced it.
//!
//! The counters live in the hub namespace's `/proc/net/dev`. The file is opened once, from a
//! short-lived thread inside the hub; an open `/proc/net` file keeps the namespace it was opened
//! in, so every later read (seek to 0, read again) comes from the hub whatever thread makes it,
//! with no thread started and no namespace entered per read. Each read is timed by the clock
//! readings just before and just after it ([`CounterRead::at`] is their midpoint,
//! [`CounterRead::span`] their distance), so a reader that is scheduled late on a busy host
//! stamps the counters with the moment they were read, not the moment it got around to looking
//! at the result.
//!
//! What the hub's end of a link transmitted is what its endpoint downloaded, what it received
//! is what the endpoint uploaded; both are counted after the `tbf` on the sending end, so they
//! are what the link carried (Ethernet, IP and TCP headers included). The open file holds a
//! reference to the hub namespace: drop the counters before the fabric so the hub goes with it.

use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::time::{Duration, Instant};

use crate::error::LabError;
use crate::fabric::{Fabric, FabricBytes, LinkBytes};
use crate::namespace;

/// Room for `/proc/net/dev` of a full fabric (about 130 bytes per interface).
const INITIAL_CAPACITY: usize = 64 * 1024;

/// One read of every link's counters; see the module doc.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterRead {
    /// Midpoint of the clock readings just before and just after the read.
    pub at: Instant,
    /// How long the read took, clock reading to clock reading: the most `at` can be off by is
    /// half of it.
    pub span: Duration,
    /// The counters.
    pub bytes: FabricBytes,
}

/// The hub's `/proc/net/dev`, open, and which interface is whose; see the module doc.
#[derive(Debug)]
pub struct LinkCounters {
    dev: File,
    hub: String,
    registry: String,
    nodes: Vec<String>,
    services: Vec<String>,
    text: String,
}

impl LinkCounters {
    /// Opens the counters of `fabric`'s links (one short-lived thread inside its hub).
    ///
    /// # Errors
    /// [`LabError::Socket`] when the hub cannot be entered or its counters opened.
    pub fn open(fabric: &Fabric) -> Result<Self, LabError> {
        let dev = namespace::within(fabric.hub(), "open link counters", || {
            File::open("/proc/thread-self/net/dev")
        })?;
        let name = |e: &crate::fabric::Endpoint| e.hub_if().to_owned();
        Ok(Self {
            dev,
            hub: fabric.hub().to_owned(),
            registry: name(fabric.registry()),
            nodes: fabric.nodes().iter().map(name).collect(),
            services: fabric.services().iter().map(name).collect(),
            text: String::with_capacity(INITIAL_CAPACITY),
        })
    }

    /// Reads every link's counters now.
    ///
    /// # Errors
    /// [`LabError::Socket`] when the read fails or an interface is missing from it.
    pub fn read(&mut self) -> Result<CounterRead, LabError> {
        self.text.clear();
        let before = Instant::now();
        let read = self
            .dev
            .seek(SeekFrom::Start(0))
            .and_then(|_| self.dev.read_to_string(&mut self.text));
        let after = Instant::now();
        read.map_err(|source| self.error(source))?;
        let span = after.saturating_duration_since(before);
        let counters = parse_net_dev(&self.text);
        let of = |name: &str| {
            counters
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, c)| LinkBytes {
                    // The hub's end received what the endpoint uploaded, and the reverse.
                    upload_bytes: c.rx_bytes,
                    download_bytes: c.tx_bytes,
                })
                .ok_or_else(|| self.error(std::io::Error::other(format!("no interface {name}"))))
        };
        let bytes = FabricBytes {
            registry: of(&self.registry)?,
            nodes: self.nodes.iter().map(|n| of(n)).collect::<Result<_, _>>()?,
            services: self
                .services
                .iter()
                .map(|n| of(n))
                .collect::<Result<_, _>>()?,
        };
        Ok(CounterRead {
            at: before + span / 2,
            span,
            bytes,
        })
    }

    fn error(&self, source: std::io::Error) -> LabError {
        LabError::Socket {
            what: format!("read link counters in namespace {}", self.hub),
            source,
        }
    }
}

/// One interface's counters from `/proc/net/dev`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DevCounters {
    rx_bytes: u64,
    tx_bytes: u64,
}

/// `/proc/net/dev`: two header lines, then `name: rx_bytes rx_packets ... (8 receive fields)
/// tx_bytes ...`.
fn parse_net_dev(text: &str) -> Vec<(&str, DevCounters)> {
    text.lines()
        .skip(2)
        .filter_map(|line| {
            let (name, fields) = line.split_once(':')?;
            let fields: Vec<u64> = fields
                .split_whitespace()
                .map(|f| f.parse().ok())
                .collect::<Option<_>>()?;
            Some((
                name.trim(),
                DevCounters {
                    rx_bytes: *fields.first()?,
                    tx_bytes: *fields.get(8)?,
                },
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_proc_net_dev() {
        let text = "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    lo:       0       0    0    0    0     0          0         0        0       0    0    0    0     0       0          0\n    n0: 1234       4    0    0    0     0          0         0      344       4    0    0    0     0       0          0\n   reg:      90       1    0    0    0     0          0         0 98765432101 3    0    0    0     0       0          0\n";
        let c = parse_net_dev(text);
        assert_eq!(c.len(), 3);
        assert_eq!(
            c[1],
            (
                "n0",
                DevCounters {
                    rx_bytes: 1234,
                    tx_bytes: 344
                }
            )
        );
        assert_eq!(c[2].1.tx_bytes, 98_765_432_101);
        assert!(parse_net_dev("garbage\nlines\nx: 1 2").is_empty());
    }
}
