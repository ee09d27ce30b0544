//! The committed reference results under `results/` rendered again, checked for what a reader
//! of them hit: capacity and cache savings per arrival wave (a cold wave and a warm one sixty
//! seconds later, not one epoch across both), chart labels that fit left of their bars (widths
//! estimated from the font's glyph advances), the platform manifest a node pulls from a
//! multi-platform image, and why `compare`'s p50 of a run is not the report's.

use std::path::PathBuf;
use std::time::Duration;

use bench_harness::compare::{self, Input, Metric, Pairing, Settings};
use bench_harness::report::capacity::Capacity;
use bench_harness::report::side_by_side::SideBySide;
use bench_harness::report::svg::{text_width, FONT_PX};
use bench_harness::report::{self, section};
use bench_harness::result::RunResult;
use bench_harness::run::recorder::Phase;

use crate::common::crate_dir;

fn results_dir() -> PathBuf {
    crate_dir().join("../results")
}

fn load(name: &str) -> RunResult {
    RunResult::load(&results_dir().join(name).join("result.json")).unwrap()
}

fn secs(d: Option<Duration>) -> f64 {
    d.expect("reached").as_secs_f64()
}

#[test]
fn peers_capacity_and_savings_are_per_wave() {
    let r = load("peers-cold-burst");
    let c = Capacity::of(&r);
    let series = |target: &str| c.series.iter().find(|s| s.target == target).unwrap();
    let (cache, direct) = (series("cache-daemon"), series("direct"));
    assert_eq!(cache.waves.len(), 2);
    assert_eq!(cache.waves[1].at, Duration::from_secs(60));

    // Per wave, time to all ready agrees with the side-by-side table's "all ready after"
    // (computed from each wave's last ready pod, not from its end-to-end histogram).
    let sbs = SideBySide::of(&r).unwrap();
    for s in &c.series {
        let row = sbs.variants[0]
            .targets
            .iter()
            .find(|t| t.target == s.target)
            .unwrap();
        for (w, sw) in s.waves.iter().zip(&row.waves) {
            let (a, b) = (secs(w.time_to_ready[2].median()), secs(sw.all_ready));
            assert!(
                (a - b).abs() <= 0.002 * b + 0.001,
                "{} wave {}: {a} vs {b}",
                s.target,
                w.wave
            );
        }
    }

    // The cold wave is 15x apart, not the 81 s -> 61 s (-25 %) of an epoch across both waves.
    let saving = |wave: u32| {
        c.savings
            .iter()
            .find(|s| s.target == "cache-daemon" && s.wave.map(|w| w.0) == Some(wave))
            .unwrap()
    };
    let (d, o) = saving(0).time_to_ready[1];
    assert!(secs(d) / secs(o) > 10.0, "{d:?} vs {o:?}");
    let (d, o) = saving(1).time_to_ready[1];
    assert!(secs(d) > 15.0 && secs(o) < 2.0, "{d:?} vs {o:?}");
    assert!(c.savings.iter().all(|s| s.wave.is_some()));

    // Mean bandwidth over the cold wave's active time, not over the whole minute: one image
    // (63.6 MB) in under 3 s is well above 100 Mbit/s (it read 8 Mbit/s).
    let cold = cache.waves[0].egress.as_ref().unwrap();
    let mbit = cold.traffic.unwrap().mean_bytes_per_sec * 8.0 / 1e6;
    assert!(mbit > 100.0, "{mbit} Mbit/s");
    assert!((cold.image_copies().unwrap() - 1.0).abs() < 0.01);
    // The warm wave sends next to nothing through the cache, and 8 copies direct.
    let warm = cache.waves[1].egress.as_ref().unwrap();
    assert!(warm.image_copies().unwrap() < 0.01);
    let warm_direct = direct.waves[1].egress.as_ref().unwrap();
    assert!((warm_direct.image_copies().unwrap() - 8.0).abs() < 0.05);

    let md = report::markdown(&r);
    assert!(md.contains("| app | cache-daemon | 2 at 60.0 s |"), "{md}");
    assert!(md.contains("Per arrival wave"), "{md}");
}

#[test]
fn a_burst_without_waves_keeps_whole_burst_capacity() {
    let c = Capacity::of(&load("quickstart"));
    assert!(c.series.iter().all(|s| s.waves.is_empty()));
    assert!(c.savings.iter().all(|s| s.wave.is_none()));
}

/// Right-aligned chart labels of an HTML report: anchor x and the text shown.
fn bar_labels(html: &str) -> Vec<(f64, String)> {
    html.split("<text ")
        .skip(1)
        .filter(|t| t.contains("text-anchor=\"end\" class=\"bar-label\""))
        .map(|t| {
            let x: f64 = t["x=\"".len()..]
                .split('"')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            let body = &t[t.find('>').unwrap() + 1..t.find("</text>").unwrap()];
            let shown = body.split("</title>").last().unwrap();
            let shown = shown
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&quot;", "\"")
                .replace("&#39;", "'")
                .replace("&amp;", "&");
            (x, shown)
        })
        .collect()
}

#[test]
fn chart_labels_fit_their_boxes_in_every_reference_report() {
    let mut checked = 0;
    for name in [
        "quickstart",
        "peers-cold-burst",
        "peers-cold-burst-ctr",
        "peers-cold-burst-skopeo",
    ] {
        let html = report::html(&load(name));
        for (x, shown) in bar_labels(&html) {
            let width = text_width(&shown, FONT_PX);
            assert!(
                x - width >= 0.0,
                "{name}: label {shown:?} is {width:.1} wide but ends at x = {x}: clipped"
            );
            checked += 1;
        }
        // The label the issue saw clipped to "p / distribution-proxy...".
        if name == "peers-cold-burst" {
            assert!(
                html.contains(">app / distribution-proxy (288 layer pulls, mean)</text>"),
                "the whole label is drawn"
            );
        }
    }
    assert!(checked > 20, "only {checked} labels found");
}

#[test]
fn images_table_shows_the_platform_manifest_of_a_multi_platform_image() {
    let r = load("quickstart");
    let full = &r.images["full"].details;
    assert_eq!(full["platforms"].as_array().unwrap().len(), 2);
    let amd64 = full["platforms"][0]["manifest"]["digest"].as_str().unwrap();
    let arm64 = full["platforms"][1]["manifest"]["digest"].as_str().unwrap();
    let md = report::markdown(&r);
    let row = md
        .lines()
        .find(|l| l.starts_with("| full | synthetic |"))
        .unwrap();
    assert!(row.contains(&format!("`{amd64}`")), "{row}");
    assert!(!row.contains(arm64), "{row}");
    // A single-manifest image says so instead of a bare dash.
    let md = report::markdown(&load("peers-cold-burst"));
    let row = md
        .lines()
        .find(|l| l.starts_with("| app | synthetic |"))
        .unwrap();
    assert!(row.contains("the image is one manifest"), "{row}");
}

#[test]
fn the_report_says_why_compare_p50_differs_and_both_numbers_are_right() {
    let r = load("quickstart");
    let s = r.series("full", "direct").unwrap();
    // The report pools every pod of every repetition...
    let pooled = s.data.merged(Phase::EndToEnd).value_at_quantile(0.5) as f64;
    // ...compare averages each repetition's own p50.
    let per_rep: Vec<f64> = s
        .data
        .per_repetition(Phase::EndToEnd, 0.5)
        .iter()
        .map(|d| d.as_micros() as f64)
        .collect();
    let mean = per_rep.iter().sum::<f64>() / per_rep.len() as f64;
    let input = Input {
        name: "quickstart",
        result: &r,
    };
    let c = compare::compare(
        &input,
        &input,
        &Pairing::Variants {
            baseline: "full".into(),
            candidate: "slim".into(),
        },
        &Settings::default(),
    )
    .unwrap();
    let row = c.pairs[0]
        .differences
        .iter()
        .find(|d| {
            d.metric
                == Metric::Phase {
                    phase: Phase::EndToEnd,
                    quantile: "p50".parse().unwrap(),
                }
        })
        .unwrap();
    assert_eq!(row.baseline_mean(), mean);
    assert!(
        (pooled - mean).abs() > 1_000.0,
        "the reference run's two p50s differ ({pooled} vs {mean} us)"
    );
    let how = section::summary_how();
    assert!(how.contains("pooled") && how.contains("compare"), "{how}");
    assert!(report::markdown(&r).contains(how));
    assert!(report::comparison::markdown(&c).contains("not the p50 over every pod"));
}

/// Every piece of text Chromium draws outside its box: SVG text beyond its chart's bounds
/// (the chart's own clipping hides it), and table cells, paragraphs and headings whose content
/// is wider than they are.
const CLIPPED_TEXT: &str = r#"(() => {
  const out = [];
  for (const svg of document.querySelectorAll('svg')) {
    const s = svg.getBoundingClientRect();
    for (const t of svg.querySelectorAll('text')) {
      const b = t.getBoundingClientRect();
      if (b.left < s.left - 0.5 || b.right > s.right + 0.5 || b.top < s.top - 0.5 || b.bottom > s.bottom + 0.5)
        out.push((svg.getAttribute('aria-label') || 'svg') + ': ' + t.textContent);
    }
  }
  for (const c of document.querySelectorAll('td, th, p, li, figcaption, h1, h2, h3'))
    if (c.scrollWidth > c.clientWidth + 1) out.push(c.tagName + ': ' + c.textContent.slice(0, 80));
  return out;
})()"#;

#[test]
fn reference_reports_show_no_clipped_text_in_chromium() {
    use crate::common::chromium::{file_url, find_or_skip, Browser};
    let Some(exe) = find_or_skip("reference_reports_show_no_clipped_text") else {
        return;
    };
    let mut browser = Browser::launch(&exe);
    let dir = tempfile::tempdir().unwrap();
    for name in [
        "quickstart",
        "peers-cold-burst",
        "peers-cold-burst-ctr",
        "peers-cold-burst-skopeo",
    ] {
        let out = dir.path().join(name);
        report::write_all(&load(name), &out).unwrap();
        let visit = browser.visit(&file_url(&out.join(report::HTML_FILE_NAME)), CLIPPED_TEXT);
        let clipped = visit.checks.as_array().expect("a list");
        assert!(
            clipped.is_empty(),
            "{name}: text outside its box:\n{clipped:#?}"
        );
    }
}
