//! The capacity planner's answers, computed from a [`RunResult`]: per (variant, target) the
//! time until 50, 95 and 100 % of the pods are ready (per repetition, typical and worst),
//! registry egress per repetition and per pod, its peak and mean bandwidth and peak request
//! rate from the registry's time series, and what each cache or mirror target saves in egress
//! and time against the direct pulls of the same variant.
//!
//! A scenario with several arrival waves is answered per wave ([`WaveCapacity`]): a cold first
//! wave and a warm second one sixty seconds later are different questions, and figures counted
//! from the epoch across both (time to 95 % ready, mean bandwidth over the whole minute) answer
//! neither. Per wave, time to ready counts from the wave's start over the wave's pods (every
//! pod of a wave is scheduled at its `at`, so a pod's end-to-end time is its time from the
//! wave's start), and egress is what the registry sent from the wave's start until the next
//! wave's, its mean bandwidth over the wave's start to its last byte.
//!
//! The registry's time series is read from each repetition's stored totals
//! ([`registry_series`]). This module only computes; `section.rs` turns it into tables.

use std::time::Duration;

use crate::registry::accounting::Series as TrafficSeries;
use crate::result::{
    quantile_with_failures, RegistryTotals, RunResult, SeriesResult, READY_FRACTIONS,
};
use crate::run::recorder::WaveData;
use crate::scenario::TargetKind;

/// Every capacity answer of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct Capacity {
    /// One per (variant, target) with at least one repetition, in the result's order.
    pub series: Vec<SeriesCapacity>,
    /// One per (variant, non-direct target) whose variant also ran direct.
    pub savings: Vec<CacheSaving>,
}

/// What one (variant, target) needed.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesCapacity {
    pub variant: String,
    pub target: String,
    pub pods_per_repetition: u64,
    /// Time to 50 %, 95 %, 100 % ready ([`READY_FRACTIONS`]).
    pub time_to_ready: [ReadyTimes; 3],
    /// Registry egress, when the run recorded registry totals.
    pub egress: Option<Egress>,
    /// Per arrival wave when the scenario has several (then the reports show these instead of
    /// the whole-burst figures); empty otherwise.
    pub waves: Vec<WaveCapacity>,
}

/// What one arrival wave of one (variant, target) needed.
#[derive(Debug, Clone, PartialEq)]
pub struct WaveCapacity {
    /// Wave number, from 0, and when it was scheduled, from the epoch.
    pub wave: u32,
    pub at: Duration,
    /// Time from the wave's start until 50 %, 95 %, 100 % of the wave's pods were ready.
    pub time_to_ready: [ReadyTimes; 3],
    /// What the registry sent from the wave's start until the next wave's (or the end), when
    /// it recorded a time series; `pods` is the wave's pods.
    pub egress: Option<Egress>,
}

/// Time from the burst epoch until `fraction` of the scheduled pods were ready, per repetition.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadyTimes {
    /// 0..=1.
    pub fraction: f64,
    /// Per repetition in order; `None` when failures kept that fraction from ever being ready.
    pub per_repetition: Vec<Option<Duration>>,
}

/// Registry egress of one (variant, target).
#[derive(Debug, Clone, PartialEq)]
pub struct Egress {
    /// Response body bytes per repetition, in repetition order.
    pub per_repetition_bytes: Vec<u64>,
    /// Bytes one node downloads to pull the image (compressed), if known.
    pub image_bytes: Option<u64>,
    /// Pods scheduled per repetition (for bytes per pod).
    pub pods: u64,
    pub traffic: Option<Traffic>,
}

/// Peaks and means from the registry's time series, worst repetition for peaks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Traffic {
    /// Width of one time-series bucket: peaks are averages over this window.
    pub bucket: Duration,
    /// Highest egress of any bucket, bytes per second.
    pub peak_bytes_per_sec: f64,
    /// Egress over the active period (epoch to the last bucket with bytes), bytes per second,
    /// mean over repetitions.
    pub mean_bytes_per_sec: f64,
    /// Highest request rate of any bucket, requests per second.
    pub peak_requests_per_sec: f64,
    /// Requests answered 429, all repetitions.
    pub throttled: u64,
}

/// What one cache or mirror target saved against direct pulls of the same variant (typical
/// repetition: mean egress, median times).
#[derive(Debug, Clone, PartialEq)]
pub struct CacheSaving {
    pub variant: String,
    /// The cache or mirror target.
    pub target: String,
    /// The direct target it is measured against.
    pub direct: String,
    /// Mean registry egress per repetition direct, and through the target, in bytes.
    pub egress_bytes: Option<(f64, f64)>,
    /// Median time to 50, 95, 100 % ready direct and through the target.
    pub time_to_ready: [(Option<Duration>, Option<Duration>); 3],
    /// The arrival wave (number from 0, start) this saving is for; `None` for the whole burst.
    pub wave: Option<(u32, Duration)>,
}

/// The registry time series stored in a repetition's totals, if any. With nodes in namespaces
/// the bytes are the wire's (the kernel's count on the registry's link, which never outruns the
/// shaping) and the requests the registry's own, moved into the wire's buckets.
pub fn registry_series(t: &RegistryTotals) -> Option<TrafficSeries> {
    let accounted = t
        .snapshot
        .as_ref()
        .and_then(|s| s.get("series"))
        .and_then(|v| serde_json::from_value::<TrafficSeries>(v.clone()).ok())
        .filter(|s| s.bucket_ms > 0);
    let Some(wire) = t.wire.as_ref().filter(|w| w.interval_ms > 0) else {
        return accounted;
    };
    let rebucket = |counts: &[u64], from_ms: u64| {
        let mut out = vec![0; wire.registry_egress.len()];
        for (i, c) in counts.iter().enumerate() {
            let b = (i as u64 * from_ms / wire.interval_ms) as usize;
            if b >= out.len() {
                out.resize(b + 1, 0);
            }
            out[b] += c;
        }
        out
    };
    let (requests, throttled) = accounted.map_or_else(Default::default, |a| {
        (
            rebucket(&a.requests, a.bucket_ms),
            rebucket(&a.throttled, a.bucket_ms),
        )
    });
    Some(TrafficSeries {
        bucket_ms: wire.interval_ms,
        bytes_out: wire.registry_egress.clone(),
        requests,
        throttled,
    })
}

/// Bytes the registry sent in a repetition: the wire's count with nodes in namespaces, else the
/// registry's own count of response bodies.
pub fn registry_egress_bytes(t: &RegistryTotals) -> u64 {
    t.wire
        .as_ref()
        .map_or(t.bytes_out, |w| w.registry.upload_bytes)
}

impl Capacity {
    pub fn of(r: &RunResult) -> Self {
        let series: Vec<SeriesCapacity> = r
            .series
            .iter()
            .filter(|s| s.data.repetitions().next().is_some())
            .map(|s| SeriesCapacity::of(r, s))
            .collect();
        let is_direct = |target: &str| match r.scenario.target(target) {
            Some(t) => matches!(t.kind, TargetKind::Direct),
            None => target == "direct",
        };
        let mut savings = Vec::new();
        for other in series.iter().filter(|s| !is_direct(&s.target)) {
            // The first direct target of the variant is the baseline.
            let Some(direct) = series
                .iter()
                .find(|s| s.variant == other.variant && is_direct(&s.target))
            else {
                continue;
            };
            let saving = |d: (&Option<Egress>, &[ReadyTimes; 3]),
                          o: (&Option<Egress>, &[ReadyTimes; 3]),
                          wave: Option<(u32, Duration)>| CacheSaving {
                variant: other.variant.clone(),
                target: other.target.clone(),
                direct: direct.target.clone(),
                egress_bytes: d
                    .0
                    .as_ref()
                    .zip(o.0.as_ref())
                    .map(|(d, o)| (d.mean_bytes(), o.mean_bytes())),
                time_to_ready: std::array::from_fn(|i| (d.1[i].median(), o.1[i].median())),
                wave,
            };
            if other.waves.is_empty() {
                savings.push(saving(
                    (&direct.egress, &direct.time_to_ready),
                    (&other.egress, &other.time_to_ready),
                    None,
                ));
                continue;
            }
            for w in &other.waves {
                let Some(dw) = direct.waves.iter().find(|d| d.wave == w.wave) else {
                    continue;
                };
                savings.push(saving(
                    (&dw.egress, &dw.time_to_ready),
                    (&w.egress, &w.time_to_ready),
                    Some((w.wave, w.at)),
                ));
            }
        }
        Self { series, savings }
    }
}

impl SeriesCapacity {
    fn of(r: &RunResult, s: &SeriesResult) -> Self {
        let time_to_ready = READY_FRACTIONS.map(|fraction| ReadyTimes {
            fraction,
            per_repetition: s
                .data
                .repetitions()
                .map(|(_, rep)| rep.timeline(s.pods_per_repetition).time_to(fraction))
                .collect(),
        });
        let egress = (!s.registry.is_empty()).then(|| Egress {
            per_repetition_bytes: s.registry.values().map(|t| t.bytes_out).collect(),
            image_bytes: r.pod_image_bytes(&s.variant),
            pods: s.pods_per_repetition,
            traffic: traffic(s.registry.values()),
        });
        let waves = if super::side_by_side::SideBySide::has_waves(r) {
            WaveCapacity::all(r, s)
        } else {
            Vec::new()
        };
        Self {
            variant: s.variant.clone(),
            target: s.target.clone(),
            pods_per_repetition: s.pods_per_repetition,
            time_to_ready,
            egress,
            waves,
        }
    }
}

impl WaveCapacity {
    /// One per wave `s` recorded, in wave order.
    fn all(r: &RunResult, s: &SeriesResult) -> Vec<Self> {
        let numbers = s.data.wave_numbers();
        let starts: Vec<u64> = numbers
            .iter()
            .map(|w| s.data.merged_wave(*w).map_or(0, |d| d.at_us))
            .collect();
        numbers
            .iter()
            .enumerate()
            .map(|(i, &wave)| {
                let (from_us, until_us) = (starts[i], starts.get(i + 1).copied());
                let reps: Vec<&WaveData> = s
                    .data
                    .repetitions()
                    .filter_map(|(_, rep)| rep.waves().get(&wave))
                    .collect();
                let time_to_ready = READY_FRACTIONS.map(|fraction| ReadyTimes {
                    fraction,
                    per_repetition: reps
                        .iter()
                        .map(|w| quantile_with_failures(&w.end_to_end, w.failed_pods, fraction))
                        .collect(),
                });
                let windows: Vec<(TrafficSeries, u64)> = s
                    .registry
                    .values()
                    .filter_map(registry_series)
                    .map(|series| window(&series, from_us, until_us))
                    .collect();
                let pods = reps
                    .iter()
                    .map(|w| w.ready_pods + w.failed_pods)
                    .max()
                    .unwrap_or(0);
                let egress = (!windows.is_empty()).then(|| Egress {
                    per_repetition_bytes: windows.iter().map(|(_, b)| *b).collect(),
                    image_bytes: r.pod_image_bytes(&s.variant),
                    pods,
                    traffic: traffic_of(&windows),
                });
                Self {
                    wave,
                    at: Duration::from_micros(from_us),
                    time_to_ready,
                    egress,
                }
            })
            .collect()
    }
}

/// The buckets of `series` from `from_us` until `until_us` (the end without it), as a series
/// of its own starting at `from_us`, and the bytes they hold.
fn window(series: &TrafficSeries, from_us: u64, until_us: Option<u64>) -> (TrafficSeries, u64) {
    let bucket_us = series.bucket_ms * 1000;
    let len = series.bytes_out.len();
    let bucket = |us: u64| {
        usize::try_from(us / bucket_us)
            .unwrap_or(usize::MAX)
            .min(len)
    };
    let first = bucket(from_us);
    let end = until_us.map_or(len, bucket).max(first);
    let slice = |v: &[u64]| v.get(first..end.min(v.len())).unwrap_or_default().to_vec();
    let out = TrafficSeries {
        bucket_ms: series.bucket_ms,
        bytes_out: slice(&series.bytes_out),
        requests: slice(&series.requests),
        throttled: slice(&series.throttled),
    };
    let bytes = out.bytes_out.iter().sum();
    (out, bytes)
}

fn traffic<'a>(totals: impl Iterator<Item = &'a RegistryTotals>) -> Option<Traffic> {
    let all: Vec<(TrafficSeries, u64)> = totals
        .filter_map(|t| registry_series(t).map(|s| (s, registry_egress_bytes(t))))
        .collect();
    traffic_of(&all)
}

/// Peaks and means over time series (one per repetition, with the bytes each counts); the mean
/// bandwidth of each is over its first bucket to its last bucket with bytes.
fn traffic_of(all: &[(TrafficSeries, u64)]) -> Option<Traffic> {
    let bucket_ms = all.iter().map(|(s, _)| s.bucket_ms).max()?;
    let per_sec = |count: u64, s: &TrafficSeries| count as f64 * 1000.0 / s.bucket_ms as f64;
    let peak = |counts: fn(&TrafficSeries) -> &[u64]| {
        let peaks = all
            .iter()
            .map(|(s, _)| per_sec(counts(s).iter().copied().max().unwrap_or(0), s));
        peaks.fold(0.0, f64::max)
    };
    let means: Vec<f64> = all
        .iter()
        .filter_map(|(s, bytes_out)| {
            let last = s.bytes_out.iter().rposition(|b| *b > 0)?;
            Some(*bytes_out as f64 * 1000.0 / ((last as u64 + 1) * s.bucket_ms) as f64)
        })
        .collect();
    Some(Traffic {
        bucket: Duration::from_millis(bucket_ms),
        peak_bytes_per_sec: peak(|s| &s.bytes_out),
        mean_bytes_per_sec: crate::compare::mean(&means),
        peak_requests_per_sec: peak(|s| &s.requests),
        throttled: all
            .iter()
            .map(|(s, _)| s.throttled.iter().sum::<u64>())
            .sum(),
    })
}

impl ReadyTimes {
    /// The median over repetitions, a repetition that never got there counting as the longest
    /// ([`median`](super::side_by_side::median)).
    pub fn median(&self) -> Option<Duration> {
        super::side_by_side::median(self.per_repetition.clone())
    }

    /// The slowest repetition; `None` when any repetition never got there.
    pub fn worst(&self) -> Option<Duration> {
        self.per_repetition
            .iter()
            .copied()
            .collect::<Option<Vec<_>>>()?
            .into_iter()
            .max()
    }

    pub fn never(&self) -> usize {
        self.per_repetition.iter().filter(|d| d.is_none()).count()
    }
}

impl Egress {
    pub fn mean_bytes(&self) -> f64 {
        if self.per_repetition_bytes.is_empty() {
            return 0.0;
        }
        self.per_repetition_bytes.iter().sum::<u64>() as f64
            / self.per_repetition_bytes.len() as f64
    }

    pub fn max_bytes(&self) -> u64 {
        self.per_repetition_bytes.iter().copied().max().unwrap_or(0)
    }

    /// Mean bytes per scheduled pod.
    pub fn per_pod_bytes(&self) -> f64 {
        if self.pods == 0 {
            0.0
        } else {
            self.mean_bytes() / self.pods as f64
        }
    }

    /// Mean egress in image copies (egress / compressed image size), if the size is known.
    pub fn image_copies(&self) -> Option<f64> {
        self.image_bytes.map(|b| self.mean_bytes() / b as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Option<Duration> {
        Some(Duration::from_millis(n))
    }

    #[test]
    fn median_and_worst_treat_never_as_longest() {
        // (per repetition, median, worst)
        type Case<'a> = (&'a [Option<Duration>], Option<Duration>, Option<Duration>);
        let cases: [Case<'_>; 5] = [
            (&[], None, None),
            (&[ms(3), ms(1), ms(2)], ms(2), ms(3)),
            (&[ms(4), ms(2)], ms(3), ms(4)),
            (&[ms(1), None, ms(2)], ms(2), None),
            (&[ms(1), None], None, None),
        ];
        for (per_repetition, median, worst) in cases {
            let t = ReadyTimes {
                fraction: 0.95,
                per_repetition: per_repetition.to_vec(),
            };
            assert_eq!(t.median(), median, "{per_repetition:?}");
            assert_eq!(t.worst(), worst, "{per_repetition:?}");
        }
    }

    #[test]
    fn traffic_peaks_come_from_the_busiest_bucket() {
        let totals = |bytes: Vec<u64>, requests: Vec<u64>| RegistryTotals {
            bytes_out: bytes.iter().sum(),
            snapshot: Some(serde_json::json!({"series": {
                "bucket_ms": 100,
                "bytes_out": bytes,
                "requests": requests,
                "throttled": [0, 1, 0, 0],
            }})),
            ..Default::default()
        };
        let a = totals(vec![1_000, 5_000, 0, 0], vec![3, 1, 0, 0]);
        let b = totals(vec![2_000, 2_000, 2_000, 0], vec![1, 1, 1, 0]);
        let t = traffic([&a, &b].into_iter()).unwrap();
        assert_eq!(t.bucket, Duration::from_millis(100));
        assert_eq!(t.peak_bytes_per_sec, 50_000.0);
        assert_eq!(t.peak_requests_per_sec, 30.0);
        assert_eq!(t.throttled, 2);
        // a: 6000 B over 200 ms; b: 6000 B over 300 ms.
        assert_eq!(t.mean_bytes_per_sec, (30_000.0 + 20_000.0) / 2.0);
        assert!(traffic([&RegistryTotals::default()].into_iter()).is_none());
    }

    #[test]
    fn a_wave_window_holds_the_buckets_from_its_start_to_the_next() {
        let series = TrafficSeries {
            bucket_ms: 100,
            bytes_out: vec![1, 2, 3, 4, 5, 0],
            requests: vec![1, 1, 1, 1, 1, 1],
            throttled: vec![0; 6],
        };
        let (w, bytes) = window(&series, 200_000, Some(400_000));
        assert_eq!((w.bytes_out, bytes), (vec![3, 4], 7));
        let (w, bytes) = window(&series, 400_000, None);
        assert_eq!((w.bytes_out.clone(), bytes), (vec![5, 0], 5));
        // Mean over the window's start to its last byte: 5 bytes in its first 100 ms.
        let t = traffic_of(&[(w, bytes)]).unwrap();
        assert_eq!(t.mean_bytes_per_sec, 50.0);
        // A window past the series is empty, not a panic.
        assert_eq!(window(&series, 900_000, None).1, 0);
    }
}
