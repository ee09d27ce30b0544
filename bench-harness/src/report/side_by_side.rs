//! Targets side by side, as a node operator asks "is this cache better than what I would pick
//! instead?": per variant and target (and per arrival wave, so a cold first wave and a warm
//! second one read apart) the pull and time-to-first-byte percentiles, the longest first-byte
//! lag (how long any node waited for a blob's bytes after another already had them), when the
//! wave's last pod was ready; per burst the registry's own counts (GETs per
//! blob, bytes in image copies, the shaped link's kernel byte count); and each target's ratio to
//! cache-daemon. Computed from stored data only: merged histograms, per-repetition wave
//! records, registry totals. `section.rs` turns this into tables.

use std::time::Duration;

use crate::result::{RegistryTotals, RunResult, SeriesResult};
use crate::run::recorder::{Phase, Summary, WaveData};
use crate::scenario::{Arrival, TargetKind};

/// Every side-by-side figure of a run, or nothing when fewer than two targets recorded data.
#[derive(Debug, Clone, PartialEq)]
pub struct SideBySide {
    /// In the result's order.
    pub variants: Vec<VariantRows>,
}

/// One variant's targets.
#[derive(Debug, Clone, PartialEq)]
pub struct VariantRows {
    pub variant: String,
    /// The baseline for ratios: the variant's first cache-daemon target, if any.
    pub baseline: Option<String>,
    /// One per target that recorded data, in the result's order.
    pub targets: Vec<TargetRow>,
}

/// One target of a variant.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetRow {
    pub target: String,
    /// Per wave (one entry, wave 0, without waves).
    pub waves: Vec<WaveRow>,
    /// What the registry served per burst, when it counted.
    pub upstream: Option<Upstream>,
    /// Median over repetitions of the time until every pod of the burst was ready; `None` when
    /// failures kept the median repetition from ever getting there.
    pub all_ready: Option<Duration>,
}

/// One wave of a target.
#[derive(Debug, Clone, PartialEq)]
pub struct WaveRow {
    /// Wave number, from 0, and when it was scheduled, from the epoch.
    pub wave: u32,
    pub at: Duration,
    /// Its pods' pull and time to first byte, all repetitions merged; TTFB is empty when the
    /// client does not report it.
    pub pull: Summary,
    pub ttfb: Summary,
    /// Median over repetitions of the longest first-byte lag of any puller of any blob in the
    /// wave ([`WaveData::first_byte_lag`]); `None` when not observed.
    pub first_byte_lag: Option<Duration>,
    /// Median over repetitions of the time from the wave's start until its last pod was ready;
    /// `None` when failures kept the median repetition from getting there.
    pub all_ready: Option<Duration>,
}

/// The registry's own counts for a target, per burst.
#[derive(Debug, Clone, PartialEq)]
pub struct Upstream {
    /// Blob GETs per blob: mean, smallest and largest over every blob of every repetition.
    pub gets_per_blob: (f64, u64, u64),
    /// Median over repetitions of the bytes the registry sent, in copies of the compressed image.
    pub image_copies: Option<f64>,
    /// Median over repetitions of the bytes the registry sent.
    pub bytes: u64,
    /// Median over repetitions of the requests it answered.
    pub requests: u64,
    /// Median over repetitions of the shaped link's bytes (kernel count), in image copies.
    pub link_image_copies: Option<f64>,
}

impl SideBySide {
    /// The figures of `r`, or `None` when fewer than two targets of a variant recorded data.
    pub fn of(r: &RunResult) -> Option<Self> {
        let mut variants = Vec::new();
        for v in &r.scenario.variants {
            let targets: Vec<TargetRow> = r
                .series
                .iter()
                .filter(|s| s.variant == v.name && s.data.repetitions().next().is_some())
                .map(|s| TargetRow::of(r, s))
                .collect();
            if targets.len() < 2 {
                continue;
            }
            let baseline = r
                .scenario
                .targets
                .iter()
                .find(|t| {
                    matches!(t.kind, TargetKind::CacheDaemon { .. })
                        && targets.iter().any(|row| row.target == t.name)
                })
                .map(|t| t.name.clone());
            variants.push(VariantRows {
                variant: v.name.clone(),
                baseline,
                targets,
            });
        }
        (!variants.is_empty()).then_some(Self { variants })
    }

    /// Whether the scenario has several arrival waves (rows are then per wave).
    pub fn has_waves(r: &RunResult) -> bool {
        matches!(&r.scenario.arrival, Arrival::Waves { waves } if waves.len() > 1)
    }
}

impl TargetRow {
    fn of(r: &RunResult, s: &SeriesResult) -> Self {
        let numbers = s.data.wave_numbers();
        let pods = s.pods_per_repetition;
        let times = s
            .data
            .repetitions()
            .map(|(_, rep)| rep.timeline(pods).time_to(1.0));
        let all_ready = median(times.collect());
        let waves = if numbers.is_empty() {
            // A result written before waves were recorded: the whole repetition is one wave.
            vec![WaveRow {
                wave: 0,
                at: Duration::ZERO,
                pull: Summary::of(&s.data.merged(Phase::Pull)),
                ttfb: Summary::of(&s.data.merged(Phase::Ttfb)),
                // Not recorded before waves were.
                first_byte_lag: None,
                all_ready,
            }]
        } else {
            numbers.iter().map(|w| WaveRow::of(s, *w)).collect()
        };
        Self {
            target: s.target.clone(),
            waves,
            upstream: Upstream::of(r, s),
            all_ready,
        }
    }
}

impl WaveRow {
    fn of(s: &SeriesResult, wave: u32) -> Self {
        let merged = s.data.merged_wave(wave).expect("a recorded wave");
        let per_rep = |f: &dyn Fn(&WaveData) -> Option<Duration>| {
            median(
                s.data
                    .repetitions()
                    .map(|(_, rep)| rep.waves().get(&wave).and_then(f))
                    .collect(),
            )
        };
        Self {
            wave,
            at: Duration::from_micros(merged.at_us),
            pull: Summary::of(&merged.pull),
            ttfb: Summary::of(&merged.ttfb),
            first_byte_lag: per_rep(&WaveData::first_byte_lag_max),
            all_ready: per_rep(&WaveData::time_to_all_ready),
        }
    }
}

impl Upstream {
    fn of(r: &RunResult, s: &SeriesResult) -> Option<Self> {
        if s.registry.is_empty() {
            return None;
        }
        let gets: Vec<u64> = s
            .registry
            .values()
            .flat_map(|t| t.blob_gets.values().copied())
            .collect();
        let gets_per_blob = match (gets.iter().min(), gets.iter().max()) {
            (Some(min), Some(max)) => (
                gets.iter().sum::<u64>() as f64 / gets.len() as f64,
                *min,
                *max,
            ),
            _ => (0.0, 0, 0),
        };
        let image = r.pod_image_bytes(&s.variant);
        let median_of =
            |f: fn(&RegistryTotals) -> u64| median_u64(s.registry.values().map(f).collect());
        let bytes = median_of(|t| t.bytes_out);
        let requests = median_of(RegistryTotals::total_requests);
        let links: Vec<u64> = s.registry.values().filter_map(|t| t.link_bytes).collect();
        let link = (!links.is_empty()).then(|| median_u64(links));
        Some(Self {
            gets_per_blob,
            image_copies: image.map(|i| bytes as f64 / i as f64),
            bytes,
            requests,
            link_image_copies: image.zip(link).map(|(i, l)| l as f64 / i as f64),
        })
    }
}

/// The median of per-repetition values, a missing one counting as longer than any (mean of the
/// middle two for an even count); `None` when the median is missing or there is none.
pub fn median(mut v: Vec<Option<Duration>>) -> Option<Duration> {
    v.sort_by_key(|d| d.unwrap_or(Duration::MAX));
    match v.len() {
        0 => None,
        n if n % 2 == 1 => v[n / 2],
        n => Some((v[n / 2 - 1]? + v[n / 2]?) / 2),
    }
}

fn median_u64(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    match v.len() {
        0 => 0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2,
    }
}

/// `a / b` as a ratio, when both are known and `b` is positive.
pub fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Option<Duration> {
        Some(Duration::from_millis(n))
    }

    #[test]
    fn medians_count_missing_as_longest() {
        let cases: [(Vec<Option<Duration>>, Option<Duration>); 5] = [
            (vec![], None),
            (vec![ms(3), ms(1), ms(2)], ms(2)),
            (vec![ms(4), ms(2)], ms(3)),
            (vec![ms(1), None, ms(2)], ms(2)),
            (vec![None, ms(1)], None),
        ];
        for (values, want) in cases {
            assert_eq!(median(values.clone()), want, "{values:?}");
        }
        assert_eq!(median_u64(vec![5, 1, 3, 10]), 4);
        assert_eq!(ratio(Some(3.0), Some(1.5)), Some(2.0));
        assert_eq!(ratio(Some(3.0), Some(0.0)), None);
    }
}
