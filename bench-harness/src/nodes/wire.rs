//! [`WireSampler`]: truth at the wire. On a thread of its own it reads the kernel's byte
//! counters of every link on the fabric (the hub's `/proc/net/dev`, kept open:
//! `stampede_lab::LinkCounters`) on the burst's grid of [`SAMPLE_INTERVAL`], and at the end turns
//! the reads into [`WireTotals`]: what each node, service and the registry uploaded and
//! downloaded during the burst, and the registry's egress and ingress and the nodes' summed
//! upload and download as series on the burst's clock (bucket `i` covers `[i, i+1)` intervals
//! from the epoch).
//!
//! Each read carries the time the kernel produced it (the midpoint of clock readings taken just
//! around the read), and bytes counted between two reads are spread over the time actually
//! elapsed between them, never over the nominal interval: on a loaded host a read comes tens of
//! milliseconds late, and a nominal interval would show a 50 Mbit/s link at 53-64 Mbit/s.
//!
//! The counters are taken after the `tbf` shaping, so over any span `T` a link carries at most
//! `rate x T + burst` (the tbf's bucket, 10 ms of its rate): a 100 ms bucket never exceeds the
//! rate by more than 10 %. They include Ethernet, IP and TCP headers, so they run a few percent
//! above the payload the registry's own accounting counts.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use stampede_lab::{Fabric, FabricBytes, LinkBytes, LinkCounters};

/// How often the counters are read.
pub const SAMPLE_INTERVAL: Duration = Duration::from_millis(100);

/// What one link carried during a burst.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LinkTotals {
    /// Bytes the endpoint sent.
    pub upload_bytes: u64,
    /// Bytes the endpoint received.
    pub download_bytes: u64,
}

/// What every link carried during a burst, as the kernel counted it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WireTotals {
    /// Length of one series bucket, milliseconds.
    pub interval_ms: u64,
    pub registry: LinkTotals,
    /// Node `i`'s link at index `i`.
    pub nodes: Vec<LinkTotals>,
    /// Service namespaces' links (a shared cache), in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<LinkTotals>,
    /// Bytes the registry sent per bucket.
    pub registry_egress: Vec<u64>,
    /// Bytes the registry received per bucket.
    pub registry_ingress: Vec<u64>,
    /// Bytes all nodes sent per bucket (to peers, to a shared cache, requests).
    pub nodes_upload: Vec<u64>,
    /// Bytes all nodes received per bucket.
    pub nodes_download: Vec<u64>,
    /// The longest a counter read took, microseconds: a read's time is known to half of it.
    /// Absent in results made before reads were timed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_read_span_us: Option<u64>,
}

/// One read of the counters: when (from the epoch), how long it took, what they said.
type Sample = (Duration, Duration, FabricBytes);

/// A running sampler: a thread of its own that reads the counters on the burst's 100 ms grid.
/// [`WireSampler::finish`] stops it after a last read; dropping it (a burst stopped by SIGINT)
/// stops it too, so no thread outlives the burst holding the fabric's counters open.
#[derive(Debug)]
pub struct WireSampler {
    /// Dropping it wakes the thread, which then ends without another read.
    stop: mpsc::Sender<()>,
    thread: Option<JoinHandle<Vec<Sample>>>,
}

impl WireSampler {
    /// Starts sampling `fabric` now (the first read is the baseline), timing from `epoch`.
    pub fn start(fabric: Arc<Fabric>, epoch: Instant) -> Self {
        let (stop, stopped) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("wire-sampler".into())
            .spawn(move || match LinkCounters::open(&fabric) {
                // The fabric itself is not kept: the counters hold the hub open.
                Ok(counters) => sample(counters, epoch, &stopped),
                Err(error) => {
                    tracing::warn!(%error, "cannot open the link counters");
                    Vec::new()
                }
            });
        let thread = thread
            .inspect_err(|error| tracing::warn!(%error, "cannot start the link counter thread"))
            .ok();
        Self { stop, thread }
    }

    /// Takes a last sample, stops, and sums up the burst.
    pub async fn finish(self) -> WireTotals {
        self.stop.send(()).ok();
        let samples = match self.thread {
            Some(thread) => tokio::task::spawn_blocking(move || thread.join().unwrap_or_default())
                .await
                .unwrap_or_default(),
            None => Vec::new(),
        };
        totals(&samples)
    }
}

/// The sampler thread: reads now, then on every tick of the grid `epoch + k * interval` that is
/// still ahead, until told to stop (one last read) or dropped (none). A tick missed because the
/// thread ran late is skipped, not made up: each read carries its own time.
fn sample(mut counters: LinkCounters, epoch: Instant, stop: &mpsc::Receiver<()>) -> Vec<Sample> {
    let mut samples = Vec::new();
    let mut read = |samples: &mut Vec<Sample>| match counters.read() {
        Ok(r) => samples.push((r.at.saturating_duration_since(epoch), r.span, r.bytes)),
        Err(error) => tracing::warn!(%error, "reading link counters failed"),
    };
    loop {
        read(&mut samples);
        let now = Instant::now();
        match stop.recv_timeout(next_tick(epoch, now, SAMPLE_INTERVAL) - now) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) => {
                read(&mut samples);
                return samples;
            }
            Err(RecvTimeoutError::Disconnected) => return samples,
        }
    }
}

/// The first instant of the grid `epoch + k * interval` (k any integer) after `now`.
fn next_tick(epoch: Instant, now: Instant, interval: Duration) -> Instant {
    let step = interval.as_nanos().max(1);
    if now < epoch {
        let ahead = (epoch - now).as_nanos();
        // Ticks before the epoch lie at epoch - k * interval.
        return epoch - Duration::from_nanos(((ahead - 1) / step * step) as u64);
    }
    let since = (now - epoch).as_nanos();
    epoch + Duration::from_nanos(((since / step + 1) * step) as u64)
}

/// The burst's totals and series from samples in time order (the first is the baseline).
fn totals(samples: &[Sample]) -> WireTotals {
    let interval_ms = SAMPLE_INTERVAL.as_millis() as u64;
    let (Some((_, _, first)), Some((_, _, last))) = (samples.first(), samples.last()) else {
        return WireTotals {
            interval_ms,
            ..WireTotals::default()
        };
    };
    let link = |a: &LinkBytes, b: &LinkBytes| LinkTotals {
        upload_bytes: b.upload_bytes.saturating_sub(a.upload_bytes),
        download_bytes: b.download_bytes.saturating_sub(a.download_bytes),
    };
    let links = |a: &[LinkBytes], b: &[LinkBytes]| -> Vec<LinkTotals> {
        a.iter().zip(b).map(|(a, b)| link(a, b)).collect()
    };
    let mut out = WireTotals {
        interval_ms,
        registry: link(&first.registry, &last.registry),
        nodes: links(&first.nodes, &last.nodes),
        services: links(&first.services, &last.services),
        max_read_span_us: samples.iter().map(|s| s.1.as_micros() as u64).max(),
        ..WireTotals::default()
    };
    for pair in samples.windows(2) {
        let ((from, _, a), (to, _, b)) = (&pair[0], &pair[1]);
        let r = link(&a.registry, &b.registry);
        let n = links(&a.nodes, &b.nodes);
        let up = n.iter().map(|l| l.upload_bytes).sum();
        let down = n.iter().map(|l| l.download_bytes).sum();
        let spans = [
            (&mut out.registry_egress, r.upload_bytes),
            (&mut out.registry_ingress, r.download_bytes),
            (&mut out.nodes_upload, up),
            (&mut out.nodes_download, down),
        ];
        for (series, bytes) in spans {
            spread(series, *from, *to, bytes, interval_ms);
        }
    }
    out
}

/// Adds `bytes`, counted between two reads at `from` and `to`, to the buckets that span
/// overlaps, in proportion to the overlap: a read that comes late does not pile a bucket and a
/// half into one bucket. Reads before the epoch count as at the epoch.
fn spread(series: &mut Vec<u64>, from: Duration, to: Duration, bytes: u64, interval_ms: u64) {
    let (from, to) = (from.as_micros() as u64, to.as_micros() as u64);
    let width = interval_ms.max(1) * 1000;
    let last = (to.saturating_sub(1) / width) as usize;
    if series.len() <= last {
        series.resize(last + 1, 0);
    }
    if to <= from {
        series[last] += bytes;
        return;
    }
    let first = (from / width) as usize;
    let mut given = 0;
    for (bucket, slot) in series.iter_mut().enumerate().take(last + 1).skip(first) {
        let start = (bucket as u64 * width).max(from);
        let end = ((bucket as u64 + 1) * width).min(to);
        let share = if bucket == last {
            bytes - given
        } else {
            (u128::from(bytes) * u128::from(end - start) / u128::from(to - from)) as u64
        };
        *slot += share;
        given += share;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(registry_up: u64, nodes: &[(u64, u64)]) -> FabricBytes {
        FabricBytes {
            registry: LinkBytes {
                upload_bytes: registry_up,
                download_bytes: registry_up / 50,
            },
            nodes: nodes
                .iter()
                .map(|&(u, d)| LinkBytes {
                    upload_bytes: u,
                    download_bytes: d,
                })
                .collect(),
            services: Vec::new(),
        }
    }

    #[test]
    fn totals_and_series_are_deltas_from_the_baseline() {
        let ms = Duration::from_millis;
        let samples = vec![
            (ms(0), ms(1), bytes(1_000, &[(10, 500), (20, 600)])),
            (ms(150), ms(1), bytes(11_000, &[(110, 5_500), (20, 5_600)])),
            (
                ms(260),
                ms(1),
                bytes(21_000, &[(210, 10_500), (120, 10_600)]),
            ),
            (
                ms(270),
                ms(1),
                bytes(21_500, &[(210, 10_750), (120, 10_850)]),
            ),
        ];
        let t = totals(&samples);
        assert_eq!(t.interval_ms, 100);
        assert_eq!(t.registry.upload_bytes, 20_500);
        assert_eq!(
            t.nodes,
            vec![
                LinkTotals {
                    upload_bytes: 200,
                    download_bytes: 10_250
                },
                LinkTotals {
                    upload_bytes: 100,
                    download_bytes: 10_250
                }
            ]
        );
        // 10 000 bytes over 0-150 ms: 2/3 in bucket 0, 1/3 in bucket 1; 10 000 over 150-260 ms:
        // 50/110 in bucket 1, 60/110 in bucket 2; 500 at 260-270 ms in bucket 2.
        assert_eq!(t.registry_egress, vec![6_666, 3_334 + 4_545, 5_455 + 500]);
        assert_eq!(t.nodes_download, t.registry_egress);
        assert_eq!(t.nodes_upload.iter().sum::<u64>(), 300);
        assert_eq!(
            t.registry_egress.iter().sum::<u64>(),
            t.registry.upload_bytes
        );
        assert_eq!(t.max_read_span_us, Some(1_000));
        assert_eq!(totals(&[]).nodes, Vec::new());
    }

    #[test]
    fn ticks_lie_on_the_epochs_grid() {
        let epoch = Instant::now() + Duration::from_secs(10);
        let ms = Duration::from_millis;
        let tick = |now| next_tick(epoch, now, ms(100));
        assert_eq!(tick(epoch), epoch + ms(100));
        assert_eq!(tick(epoch + ms(1)), epoch + ms(100));
        assert_eq!(tick(epoch + ms(250)), epoch + ms(300));
        assert_eq!(tick(epoch - ms(250)), epoch - ms(200));
        assert_eq!(tick(epoch - ms(200)), epoch - ms(100));
        assert_eq!(tick(epoch - ms(1)), epoch);
    }
}
