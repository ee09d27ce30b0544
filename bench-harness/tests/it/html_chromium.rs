//! The HTML reports in real headless Chromium (Debian's `chromium`): each renders from
//! `file://` without a console error, an exception or any network request, every chart is an
//! SVG with data points, and a full-page screenshot is written under the target directory for
//! review. The checker itself is tested too: pages that fetch from the network, log an error or
//! throw must be caught.
//!
//! Skips with a message when Chromium is missing, unless `STAMPEDE_REQUIRE_REAL=1`.

use std::path::{Path, PathBuf};

use bench_harness::compare::{self, Input, Pairing, Settings};
use bench_harness::report;
use bench_harness::result::RunResult;
use serde_json::Value;

use crate::common::chromium::{file_url, find_or_skip, Browser, PageVisit};
use crate::common::{crate_dir, sample_result, synthetic_run, SyntheticSeries};

/// Per figure: its id, SVGs, data points drawn, rendered size, caption, "how to read" line and
/// axis labels; and whether the page has any script.
const FIGURE_CHECK: &str = r#"(() => {
  const figures = [...document.querySelectorAll('figure.chart-figure')].map(f => {
    const svg = f.querySelector('svg');
    const box = svg ? svg.getBoundingClientRect() : { width: 0, height: 0 };
    const points = [...f.querySelectorAll('svg [data-points]')]
      .reduce((n, e) => n + Number(e.getAttribute('data-points')), 0);
    return {
      id: f.id,
      svgs: f.querySelectorAll('svg').length,
      points,
      width: box.width,
      height: box.height,
      caption: !!f.querySelector('figcaption'),
      how: !!f.querySelector('p.how'),
      axis_labels: f.querySelectorAll('text.axis-label').length,
    };
  });
  return { figures, scripts: document.scripts.length, title: document.title };
})()"#;

fn screenshot_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("report-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Loads `html` from a file in a temp dir, checks it, saves the screenshot as `name.png`.
fn check_page(browser: &mut Browser, name: &str, html: &str, min_figures: usize) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("{name}.html"));
    std::fs::write(&path, html).unwrap();
    let visit = browser.visit(&file_url(&path), FIGURE_CHECK);
    let shot = screenshot_dir().join(format!("{name}.png"));
    std::fs::write(&shot, &visit.screenshot).unwrap();
    eprintln!("{name}: screenshot for review at {}", shot.display());

    let problems = visit.problems();
    assert!(problems.is_empty(), "{name}:\n{}", problems.join("\n"));
    assert!(
        visit.screenshot.starts_with(b"\x89PNG") && visit.screenshot.len() > 10_000,
        "{name}: screenshot is not a real PNG ({} bytes)",
        visit.screenshot.len()
    );
    let checks = &visit.checks;
    assert_eq!(checks["scripts"], 0, "{name}: the report has no script");
    let figures = checks["figures"].as_array().expect("figures");
    assert!(
        figures.len() >= min_figures,
        "{name}: {} figures, expected at least {min_figures}: {checks:#}",
        figures.len()
    );
    for f in figures {
        let id = &f["id"];
        assert!(f["svgs"].as_u64() >= Some(1), "{name} {id}: no svg");
        assert!(
            f["points"].as_u64() > Some(0),
            "{name} {id}: no data points"
        );
        assert!(
            f["width"].as_f64() > Some(300.0) && f["height"].as_f64() > Some(80.0),
            "{name} {id}: rendered {}x{}",
            f["width"],
            f["height"]
        );
        assert_eq!(f["caption"], true, "{name} {id}: no caption");
        assert_eq!(f["how"], true, "{name} {id}: no how-to-read line");
        assert!(
            f["axis_labels"].as_u64() >= Some(1),
            "{name} {id}: no axis label"
        );
    }
}

fn quickstart_reference() -> Option<RunResult> {
    let path = crate_dir().join("../results/quickstart/result.json");
    path.exists()
        .then(|| RunResult::load(&path).expect("reference result loads"))
}

#[test]
fn html_reports_render_offline_without_errors_and_every_chart_has_data() {
    let Some(exe) = find_or_skip("html_reports_render_offline") else {
        return;
    };
    let mut browser = Browser::launch(&exe);
    // Sample: 2 variants x 2 targets -> 2 ready, 6 CDFs, 1 layer chart, 2 x 3 traffic charts.
    check_page(
        &mut browser,
        "report-sample",
        &report::html(&sample_result()),
        15,
    );
    if let Some(reference) = quickstart_reference() {
        check_page(
            &mut browser,
            "report-quickstart",
            &report::html(&reference),
            15,
        );
    }
    let run = synthetic_run(
        &[
            SyntheticSeries {
                variant: "full",
                end_to_end_ms: 1_000,
                egress_bytes: 40_000_000,
            },
            SyntheticSeries {
                variant: "slim",
                end_to_end_ms: 700,
                egress_bytes: 10_000_000,
            },
        ],
        6,
        3,
    );
    let input = Input {
        name: "synthetic",
        result: &run,
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
    check_page(
        &mut browser,
        "compare-variants",
        &report::comparison::html(&c),
        1,
    );
}

fn visit_page(browser: &mut Browser, dir: &Path, name: &str, body: &str) -> PageVisit {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!("<!DOCTYPE html><html><body><p>probe</p>{body}</body></html>"),
    )
    .unwrap();
    browser.visit(&file_url(&path), "document.title")
}

#[test]
fn page_checker_catches_network_requests_console_errors_and_exceptions() {
    let Some(exe) = find_or_skip("page_checker_catches") else {
        return;
    };
    let mut browser = Browser::launch(&exe);
    let dir = tempfile::tempdir().unwrap();

    let clean = visit_page(&mut browser, dir.path(), "clean.html", "");
    assert!(clean.problems().is_empty(), "{:?}", clean.problems());
    assert_eq!(clean.checks, Value::String(String::new()));

    let fetch = visit_page(
        &mut browser,
        dir.path(),
        "fetch.html",
        r#"<img src="http://127.0.0.1:9/pixel.png" alt="">"#,
    );
    assert!(
        fetch
            .requests
            .iter()
            .any(|u| u == "http://127.0.0.1:9/pixel.png"),
        "an <img> from the network must be seen: {:?}",
        fetch.problems()
    );

    let logged = visit_page(
        &mut browser,
        dir.path(),
        "console.html",
        r#"<script>console.error("boom from the page")</script>"#,
    );
    assert!(
        logged
            .console_errors
            .iter()
            .any(|e| e.contains("boom from the page")),
        "{:?}",
        logged.problems()
    );

    let thrown = visit_page(
        &mut browser,
        dir.path(),
        "throw.html",
        r#"<script>throw new Error("thrown by the page")</script>"#,
    );
    assert!(
        thrown
            .exceptions
            .iter()
            .any(|e| e.contains("thrown by the page")),
        "{:?}",
        thrown.problems()
    );
}

#[test]
fn report_pages_forbid_fetches_even_if_content_slips_in() {
    // The report's Content-Security-Policy is the second line of defence: if a scenario
    // description ever carried markup, escaping stops it; if markup were injected anyway, the
    // policy blocks the fetch, and the blocked attempt is a console error the test above fails.
    let html = report::html(&sample_result());
    assert!(html.contains("Content-Security-Policy"));
    assert!(!html.contains("<script"), "the report needs no script");
    for scheme in ["http://", "https://", "//fonts", "url("] {
        assert!(!html.contains(scheme), "report contains {scheme:?}");
    }
}
