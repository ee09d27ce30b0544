//! [`WireSampler`]: truth at the wire. Every [`SAMPLE_INTERVAL`] of a burst it reads the
//! kernel's byte counters of every link on the fabric (one read of the hub's
//! `/proc/net/dev`, `stampede_lab::Fabric::link_bytes`), and at the end turns the samples into
//! [`WireTotals`]: what each node, service and the registry uploaded and downloaded during the
//! burst, and the registry's egress and ingress and the nodes' summed upload and download as
//! series on the burst's clock (bucket `i` covers `[i, i+1)` intervals from the epoch; bytes
//! counted between two reads are spread over the time between them).
//!
//! The counters are taken after the `tbf` shaping, so a series never exceeds the link's rate by
//! more than a bucket's worth; they include Ethernet, IP and TCP headers, so they run a few
//! percent above the payload the registry's own accounting counts. This file samples and sums;
//! the report draws.

use std::sync::Arc;
use std::time::{Duration, Instant};

use stampede_lab::{Fabric, FabricBytes, LinkBytes};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

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
    /// The registry's link.
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
}

/// A running sampler; [`WireSampler::finish`] stops it, and so does dropping it (a burst
/// stopped by SIGINT), so no task outlives the burst holding the fabric.
#[derive(Debug)]
pub struct WireSampler {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Vec<(Duration, FabricBytes)>>>,
}

impl WireSampler {
    /// Starts sampling `fabric` now (the first sample is the baseline), timing from `epoch`.
    pub fn start(fabric: Arc<Fabric>, epoch: Instant) -> Self {
        let (stop, mut stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut tick = tokio::time::interval(SAMPLE_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let done = tokio::select! {
                    _ = tick.tick() => false,
                    _ = &mut stopped => true,
                };
                let f = fabric.clone();
                // Timed where the counters were read, not when the answer got back to this
                // task: on a busy host the blocking pool can hold a read back for a while.
                let read = tokio::task::spawn_blocking(move || {
                    f.link_bytes()
                        .map(|b| (Instant::now().saturating_duration_since(epoch), b))
                })
                .await;
                match read {
                    Ok(Ok((at, bytes))) => samples.push((at, bytes)),
                    Ok(Err(error)) => tracing::warn!(%error, "reading link counters failed"),
                    Err(error) => tracing::warn!(%error, "link counter task failed"),
                }
                if done {
                    return samples;
                }
            }
        });
        Self {
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Takes a last sample, stops, and sums up the burst.
    pub async fn finish(mut self) -> WireTotals {
        if let Some(stop) = self.stop.take() {
            stop.send(()).ok();
        }
        let samples = match self.task.take() {
            Some(task) => task.await.unwrap_or_default(),
            None => Vec::new(),
        };
        totals(&samples)
    }
}

impl Drop for WireSampler {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// The burst's totals and series from samples in time order (the first is the baseline).
fn totals(samples: &[(Duration, FabricBytes)]) -> WireTotals {
    let interval_ms = SAMPLE_INTERVAL.as_millis() as u64;
    let (Some((_, first)), Some((_, last))) = (samples.first(), samples.last()) else {
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
        ..WireTotals::default()
    };
    for pair in samples.windows(2) {
        let ((from, a), (to, b)) = (&pair[0], &pair[1]);
        let r = link(&a.registry, &b.registry);
        let n = links(&a.nodes, &b.nodes);
        let spans = [
            (&mut out.registry_egress, r.upload_bytes),
            (&mut out.registry_ingress, r.download_bytes),
            (
                &mut out.nodes_upload,
                n.iter().map(|l| l.upload_bytes).sum(),
            ),
            (
                &mut out.nodes_download,
                n.iter().map(|l| l.download_bytes).sum(),
            ),
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
            (ms(0), bytes(1_000, &[(10, 500), (20, 600)])),
            (ms(150), bytes(11_000, &[(110, 5_500), (20, 5_600)])),
            (ms(260), bytes(21_000, &[(210, 10_500), (120, 10_600)])),
            (ms(270), bytes(21_500, &[(210, 10_750), (120, 10_850)])),
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
        assert_eq!(totals(&[]).nodes, Vec::new());
    }
}
