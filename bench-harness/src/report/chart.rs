//! Which charts a run report has and what each plots, drawn from the stored histograms and
//! timelines: per phase CDFs (one line per variant and target), pods ready over time since the
//! burst epoch, registry egress and requests over time, and per-layer stacked bars of fetch,
//! verify, decompress and apply. Each [`Figure`] carries its SVG, a title and a "how to read
//! this" line.
//!
//! Drawing primitives live in `svg.rs`; where the figures go, in `run.rs`. Nothing here re-samples: CDFs
//! walk the histograms' recorded values, timelines the stored ready offsets, traffic the
//! registry's stored buckets.

use hdrhistogram::Histogram;

use super::capacity::registry_series;
use super::document::Figure;
use super::human;
use super::svg::{Axis, Bar, LegendEntry, Line, LineChart, Rule, StackedBars, Style};
use crate::registry::accounting::Series as TrafficSeries;
use crate::result::{RunResult, SeriesResult};
use crate::run::recorder::{LayerPhase, LayerSums, Phase};

/// A SLO or link limit is drawn only if it is within this factor of the data, so a generous
/// limit does not squash the curves against the axis.
const RULE_REACH: f64 = 1.5;

/// The unit a time axis uses: ms below a second of data, else s.
#[derive(Debug, Clone, Copy)]
struct TimeScale {
    us_per_unit: f64,
    unit: &'static str,
}

impl TimeScale {
    fn for_max_us(max_us: f64) -> Self {
        let (us_per_unit, unit) = if max_us < 1e6 {
            (1e3, "ms")
        } else {
            (1e6, "s")
        };
        Self { us_per_unit, unit }
    }

    fn of(self, us: f64) -> f64 {
        us / self.us_per_unit
    }
}

fn series_label(s: &SeriesResult) -> String {
    format!("{} / {}", s.variant, s.target)
}

fn recorded(r: &RunResult) -> impl Iterator<Item = (usize, &SeriesResult)> {
    r.series
        .iter()
        .enumerate()
        .filter(|(_, s)| s.data.repetitions().next().is_some())
}

/// One CDF per pod phase with a line per (variant, target), merged over repetitions; the SLO
/// limits on `end_to_end` and `pull` as vertical rules.
pub fn phase_cdfs(r: &RunResult) -> Vec<Figure> {
    let mut out = Vec::new();
    for phase in Phase::ALL {
        let hists: Vec<(usize, &SeriesResult, Histogram<u64>)> = recorded(r)
            .map(|(i, s)| (i, s, s.data.merged(phase)))
            .filter(|(_, _, h)| !h.is_empty())
            .collect();
        if hists.is_empty() {
            continue;
        }
        let counts_failures = phase != Phase::Ttfb;
        let limit = match phase {
            Phase::EndToEnd => r.scenario.slo.p95_ready.map(|d| (d, 95.0, "SLO p95 ready")),
            Phase::Pull => r.scenario.slo.p99_pull.map(|d| (d, 99.0, "SLO p99 pull")),
            _ => None,
        };
        let data_max_us = hists.iter().map(|(_, _, h)| h.max()).max().unwrap_or(0) as f64;
        // The limit is drawn (and the axis reaches it) only when it is near the data.
        let limit = limit.filter(|(d, _, _)| d.as_micros() as f64 <= data_max_us * RULE_REACH);
        let max_us = data_max_us.max(limit.map_or(0.0, |(d, _, _)| d.as_micros() as f64));
        let scale = TimeScale::for_max_us(max_us);
        let (phase_title, phase_axis) = phase_words(phase);
        let x = Axis::from_zero(format!("{phase_axis} ({})", scale.unit), scale.of(max_us));
        let lines = hists
            .iter()
            .map(|(i, s, h)| {
                let failed = if counts_failures {
                    s.data.failed_pods()
                } else {
                    0
                };
                Line {
                    label: series_label(s),
                    style: Style { color: *i, dash: 0 },
                    step: true,
                    points: cdf_points(h, failed, scale, x.max()),
                }
            })
            .collect();
        let rules = limit.map_or_else(Vec::new, |(limit, q, name)| {
            let at = scale.of(limit.as_micros() as f64);
            let label = format!("{name} {}", human::duration(limit));
            vec![Rule::X(at, label), Rule::Y(q, format!("{q:.0} %"))]
        });
        let title = format!("{phase_title} CDF");
        let chart = LineChart {
            title: title.clone(),
            x,
            y: Axis::fixed("pods (%)", 0.0, 100.0, 20.0),
            lines,
            rules,
            legend: Vec::new(),
        };
        let failures_note = if counts_failures {
            " Failed pods count as never done, so a curve that ends below 100 % shows failures."
        } else {
            " Only pods whose node fetched a blob have a time to first byte."
        };
        out.push(Figure {
            id: format!("cdf-{}", phase.name()),
            title,
            how_to_read: format!(
                "A point (x, y) means y % of the pods had {} {phase_title} of at most x; further left is faster, and the gap between curves at 95 % is the p95 difference.{failures_note}",
                if matches!(phase, Phase::Unpack | Phase::EndToEnd) { "an" } else { "a" },
            ),
            svg: chart.render(),
        });
    }
    out
}

/// A phase's name in a chart's title, and what its axis measures.
fn phase_words(phase: Phase) -> (&'static str, &'static str) {
    match phase {
        Phase::Queue => ("queue time", "scheduled to pull start"),
        Phase::Pull => ("pull time", "pull start to layers fetched"),
        Phase::Unpack => ("unpack time", "layers fetched to unpacked"),
        Phase::StartToReady => ("start-to-ready time", "container start to ready"),
        Phase::EndToEnd => ("end-to-end time (scheduled to ready)", "scheduled to ready"),
        Phase::Ttfb => ("time to first byte", "pull start to first blob byte"),
    }
}

/// Step points of the CDF of `h` in percent of `h.len() + failed`, starting at (0, 0) and
/// ending at `x_end`.
fn cdf_points(h: &Histogram<u64>, failed: u64, scale: TimeScale, x_end: f64) -> Vec<(f64, f64)> {
    let total = (h.len() + failed) as f64;
    let mut seen = 0u64;
    let steps = h.iter_recorded().map(|v| {
        seen += v.count_at_value();
        (
            scale.of(v.value_iterated_to() as f64),
            seen as f64 * 100.0 / total,
        )
    });
    held(steps, x_end)
}

/// (0, 0), then `points`, then the last value held until `x_end`.
fn held(points: impl Iterator<Item = (f64, f64)>, x_end: f64) -> Vec<(f64, f64)> {
    let mut out = vec![(0.0, 0.0)];
    out.extend(points);
    out.push((x_end, out[out.len() - 1].1));
    out
}

/// Per variant: pods ready over time since the burst epoch, a line per target and repetition.
pub fn ready_over_time(r: &RunResult) -> Vec<Figure> {
    let mut out = Vec::new();
    for (variant, series) in by_variant(r) {
        let max_us = series
            .iter()
            .flat_map(|(_, s)| s.data.repetitions())
            .filter_map(|(_, d)| d.ready_offsets_us().last().copied())
            .max()
            .unwrap_or(0) as f64;
        if max_us == 0.0 {
            continue;
        }
        let scale = TimeScale::for_max_us(max_us);
        let x = Axis::from_zero(
            format!("time since burst epoch ({})", scale.unit),
            scale.of(max_us),
        );
        let mut lines = Vec::new();
        let mut reps = 0;
        for (i, s) in &series {
            for (k, (rep, data)) in s.data.repetitions().enumerate() {
                reps = reps.max(k + 1);
                let pods = data.timeline(s.pods_per_repetition).pods() as f64;
                let offsets = data.ready_offsets_us().iter().enumerate();
                let ready =
                    offsets.map(|(n, us)| (scale.of(*us as f64), (n + 1) as f64 * 100.0 / pods));
                lines.push(Line {
                    label: format!("{} rep {rep}", series_label(s)),
                    style: Style { color: *i, dash: k },
                    step: true,
                    points: held(ready, x.max()),
                });
            }
        }
        let legend = legend_with_repetitions(&series, reps);
        let title = format!("Pods ready over time: {variant}");
        out.push(Figure {
            id: format!("ready-{variant}"),
            title: title.clone(),
            how_to_read: "Share of the scheduled pods ready at each moment after the burst epoch; read across at 50 % or 95 % for the time to that share. Each repetition is its own line; failed pods never count as ready.".to_owned(),
            svg: LineChart {
                title,
                x,
                y: Axis::fixed("pods ready (%)", 0.0, 100.0, 20.0),
                lines,
                rules: vec![Rule::Y(95.0, "95 % ready".to_owned())],
                legend,
            }
            .render(),
        });
    }
    out
}

/// Series with data grouped by variant, in the result's order, each with its colour index.
fn by_variant(r: &RunResult) -> Vec<(String, Vec<(usize, &SeriesResult)>)> {
    let mut groups: Vec<(String, Vec<(usize, &SeriesResult)>)> = Vec::new();
    for (i, s) in recorded(r) {
        match groups.iter_mut().find(|(v, _)| *v == s.variant) {
            Some((_, group)) => group.push((i, s)),
            None => groups.push((s.variant.clone(), vec![(i, s)])),
        }
    }
    groups
}

/// One entry per series (its colour) and, with several repetitions, one per repetition (its
/// dash, in grey).
fn legend_with_repetitions(series: &[(usize, &SeriesResult)], reps: usize) -> Vec<LegendEntry> {
    let mut legend: Vec<LegendEntry> = series
        .iter()
        .map(|(i, s)| LegendEntry {
            label: series_label(s),
            style: Style { color: *i, dash: 0 },
        })
        .collect();
    if reps > 1 {
        legend.extend((0..reps).map(|k| LegendEntry {
            label: format!("repetition {k}"),
            style: Style { color: 7, dash: k },
        }));
    }
    legend
}

/// What a registry traffic chart plots per bucket: egress rate (Mbit/s), egress since the
/// epoch (MB), or requests per second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TrafficView {
    Bandwidth,
    Cumulative,
    Requests,
}

/// One repetition's registry time series in a traffic chart: the series' colour, the
/// repetition's dash (its position).
struct TrafficRun<'a> {
    style: Style,
    repetition: u32,
    series: &'a SeriesResult,
    data: TrafficSeries,
}

/// Per variant: registry egress rate, cumulative egress and request rate over time, a line
/// per target and repetition, from the registry's stored time series.
pub fn registry_traffic(r: &RunResult) -> Vec<Figure> {
    let mut out = Vec::new();
    for (variant, series) in by_variant(r) {
        let mut runs = Vec::new();
        for (i, s) in &series {
            for (k, (rep, totals)) in s.registry.iter().enumerate() {
                if let Some(data) = registry_series(totals) {
                    runs.push(TrafficRun {
                        style: Style { color: *i, dash: k },
                        repetition: *rep,
                        series: s,
                        data,
                    });
                }
            }
        }
        if runs.is_empty() {
            continue;
        }
        let reps = runs.iter().map(|t| t.style.dash + 1).max().unwrap_or(0);
        let legend = legend_with_repetitions(&series, reps);
        for view in [
            TrafficView::Bandwidth,
            TrafficView::Cumulative,
            TrafficView::Requests,
        ] {
            out.push(traffic_figure(r, &variant, view, &runs, legend.clone()));
        }
    }
    out
}

/// One view of a variant's registry traffic, with its limits as rules where they are near the
/// data.
fn traffic_figure(
    r: &RunResult,
    variant: &str,
    view: TrafficView,
    runs: &[TrafficRun<'_>],
    legend: Vec<LegendEntry>,
) -> Figure {
    let end_s = runs
        .iter()
        .map(|t| (t.data.bytes_out.len() as u64 * t.data.bucket_ms) as f64 / 1e3)
        .fold(0.0, f64::max);
    let bucket_ms = runs.iter().map(|t| t.data.bucket_ms).max().unwrap_or(0);
    let x = Axis::from_zero("time since burst epoch (s)", end_s);
    let lines: Vec<Line> = runs
        .iter()
        .map(|t| traffic_line(t, view, x.max()))
        .collect();
    let mut data_max = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.1))
        .fold(0.0, f64::max);
    let mut rules = Vec::new();
    if view == TrafficView::Bandwidth {
        rules = bandwidth_rules(r, &mut data_max);
    }
    let wire = r.scenario.network.namespaces();
    let (id, title, y_label, how) = match view {
        TrafficView::Bandwidth => (
            "egress",
            format!("Registry egress bandwidth: {variant}"),
            "egress (Mbit/s)",
            format!(
                "Bytes {} in each {bucket_ms} ms bucket, as a rate; a flat top at the limit means the registry's link was the bottleneck. The highest bucket is the peak bandwidth the scale-out needs.",
                if wire {
                    "the kernel counted on the registry's link (after its tbf shaping, headers included)"
                } else {
                    "the registry sent"
                }
            ),
        ),
        TrafficView::Cumulative => (
            "egress-total",
            format!("Registry egress since the burst: {variant}"),
            "egress since epoch (MB)",
            "Bytes the registry has sent since the burst epoch; the final height is the egress one scale-out costs, and a cache's curve stops near one image size.".to_owned(),
        ),
        TrafficView::Requests => (
            "requests",
            format!("Registry requests: {variant}"),
            "requests (per s)",
            format!(
                "Requests the registry received per {bucket_ms} ms bucket, as a rate (throttled ones included); this is what a hosted registry's rate limit sees."
            ),
        ),
    };
    Figure {
        id: format!("{id}-{variant}"),
        title: title.clone(),
        how_to_read: how,
        svg: LineChart {
            title,
            x,
            y: Axis::from_zero(y_label, data_max),
            lines,
            rules,
            legend,
        }
        .render(),
    }
}

/// The registry's egress limit and its shaped link's rate as horizontal rules (Mbit/s), each
/// only when within reach of `data_max`, which grows to include it.
fn bandwidth_rules(r: &RunResult, data_max: &mut f64) -> Vec<Rule> {
    let registry = &r.scenario.registry;
    let link = registry
        .netns_rate
        .filter(|_| r.scenario.network.namespaces());
    let limits = [
        registry
            .egress
            .map(|l| (l.bytes_per_sec, format!("registry egress limit {l}"))),
        link.map(|l| (l.bytes_per_sec, format!("registry link (tbf) {l}"))),
    ];
    let mut rules = Vec::new();
    for (bytes_per_sec, label) in limits.into_iter().flatten() {
        let mbit = bytes_per_sec as f64 * 8.0 / 1e6;
        if mbit <= *data_max * RULE_REACH {
            *data_max = data_max.max(mbit);
            rules.push(Rule::Y(mbit, label));
        }
    }
    rules
}

/// One repetition's line in `view`, held until `x_end`. Rates hold over their bucket (a step
/// from its start); the running total is reached at the bucket's end.
fn traffic_line(t: &TrafficRun<'_>, view: TrafficView, x_end: f64) -> Line {
    let data = &t.data;
    let bucket_s = data.bucket_ms as f64 / 1e3;
    let mut points = Vec::with_capacity(data.bytes_out.len() + 3);
    let mut total = 0u64;
    if view == TrafficView::Cumulative {
        points.push((0.0, 0.0));
    }
    for (b, bytes) in data.bytes_out.iter().enumerate() {
        total += bytes;
        let requests = data.requests.get(b).copied().unwrap_or(0) as f64;
        points.push(match view {
            TrafficView::Bandwidth => (b as f64 * bucket_s, *bytes as f64 * 8.0 / 1e6 / bucket_s),
            TrafficView::Requests => (b as f64 * bucket_s, requests / bucket_s),
            TrafficView::Cumulative => ((b + 1) as f64 * bucket_s, total as f64 / 1e6),
        });
    }
    let end = data.bytes_out.len() as f64 * bucket_s;
    let last = if view == TrafficView::Cumulative {
        total as f64 / 1e6
    } else {
        points.push((end, points.last().map_or(0.0, |p| p.1)));
        points.push((end, 0.0));
        0.0
    };
    points.push((x_end, last));
    Line {
        label: format!("{} rep {}", series_label(t.series), t.repetition),
        style: t.style,
        step: view != TrafficView::Cumulative,
        points,
    }
}

/// Per (variant, target): mean time per layer in fetch, verify, decompress and apply, stacked;
/// then, when the result has them, one bar per layer of each image (in manifest order), so a
/// slow layer stands out.
pub fn layer_phases(r: &RunResult) -> Option<Figure> {
    let rows: Vec<(&SeriesResult, [Histogram<u64>; 4])> = recorded(r)
        .map(|(_, s)| (s, LayerPhase::STACKED.map(|p| s.data.merged_layer(p))))
        .filter(|(_, h)| h.iter().any(|h| !h.is_empty()))
        .collect();
    if rows.is_empty() {
        return None;
    }
    let per_layer: Vec<Vec<LayerSums>> =
        rows.iter().map(|(s, _)| s.data.merged_by_layer()).collect();
    let layer_total = |l: &LayerSums| {
        LayerPhase::STACKED
            .map(|p| l.mean_us(p))
            .iter()
            .sum::<f64>()
    };
    let max_us = rows
        .iter()
        .map(|(_, h)| h.iter().map(Histogram::mean).sum::<f64>())
        .chain(per_layer.iter().flatten().map(layer_total))
        .fold(0.0, f64::max);
    let scale = TimeScale::for_max_us(max_us);
    let mut bars = Vec::new();
    for ((s, h), layers) in rows.iter().zip(&per_layer) {
        bars.push(Bar {
            label: format!("{} ({} layer pulls, mean)", series_label(s), h[0].len()),
            values: h.iter().map(|h| scale.of(h.mean())).collect(),
            tooltips: LayerPhase::STACKED
                .iter()
                .zip(h)
                .map(|(p, h)| {
                    format!(
                        "{p} mean {}, p95 {}",
                        human::us(h.mean().round() as u64),
                        human::us_if(h.len(), h.value_at_quantile(0.95))
                    )
                })
                .collect(),
        });
        for l in layers {
            let size = layer_size(r, &l.image, l.position)
                .map_or_else(String::new, |b| format!(", {}", human::bytes(b)));
            let (label, nodes) = (series_label(s), human::count(l.count, "node"));
            let means = LayerPhase::STACKED.map(|p| l.mean_us(p));
            let tooltip = |(p, mean): (&LayerPhase, f64)| {
                format!("{p} mean {} over {nodes}", human::us(mean.round() as u64))
            };
            bars.push(Bar {
                label: format!("{label}: {} layer {}{size}", l.image, l.position + 1),
                values: means.iter().map(|m| scale.of(*m)).collect(),
                tooltips: LayerPhase::STACKED.iter().zip(means).map(tooltip).collect(),
            });
        }
    }
    let title = "Time per layer by phase".to_owned();
    Some(Figure {
        id: "layers".to_owned(),
        title: title.clone(),
        how_to_read: "For each series, first the mean over every layer pulled in every repetition, then each layer of each image in manifest order (mean over the nodes that pulled it). Phases of a layer overlap in time (decompression streams behind the fetch), so a bar is work per layer, not wall-clock time; hover a segment for its numbers.".to_owned(),
        svg: StackedBars {
            title,
            x: Axis::from_zero(format!("mean time per layer ({})", scale.unit), scale.of(max_us)),
            segments: LayerPhase::STACKED.iter().map(|p| p.name().to_owned()).collect(),
            bars,
        }
        .render(),
    })
}

/// Compressed size of layer `position` of variant `image`, from the image facts when they have
/// it (synthetic images list `layers`, real ones their platform manifests' layers).
fn layer_size(r: &RunResult, image: &str, position: u32) -> Option<u64> {
    let details = &r.images.get(image)?.details;
    let i = position as usize;
    details["layers"][i]["compressed_bytes"]
        .as_u64()
        .or_else(|| details["platforms"][0]["layers"][i]["size_bytes"].as_u64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::recorder::new_histogram;

    #[test]
    fn cdf_counts_failures_in_the_denominator() {
        let mut h = new_histogram();
        // Below 2048 us a 3-digit histogram is exact.
        for v in [100, 200, 300] {
            h.record(v).unwrap();
        }
        let scale = TimeScale::for_max_us(300.0);
        let points = cdf_points(&h, 1, scale, 0.4);
        assert_eq!(
            points,
            [
                (0.0, 0.0),
                (0.1, 25.0),
                (0.2, 50.0),
                (0.3, 75.0),
                (0.4, 75.0)
            ]
        );
    }
}
