//! The Markdown and HTML reports of a fixed result match `tests/golden/report.md` and
//! `report.html`, and the comparison of two fixed synthetic results matches `compare.md` and
//! `compare.html`. On a mismatch the test prints a unified diff; `UPDATE_GOLDEN=1 cargo test -p
//! bench-harness golden` rewrites the golden files after an intended change (refused, failing
//! the test, under `STAMPEDE_REQUIRE_REAL=1` or `CI`).

use bench_harness::compare::{self, Input, Pairing, Settings};
use bench_harness::report;
use bench_harness::result::RunResult;

use crate::common::{crate_dir, sample_result, synthetic_run, SyntheticSeries};

fn check_golden(name: &str, rendered: &str) {
    let path = crate_dir().join("tests/golden").join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        // In CI a rewrite would make the check pass whatever was rendered.
        let ci = stampede_lab::real_parts_required()
            || std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
        assert!(
            !ci,
            "UPDATE_GOLDEN=1 is refused in CI (STAMPEDE_REQUIRE_REAL=1 or CI set): golden files \
             are rewritten by hand after an intended change, then reviewed and committed"
        );
        std::fs::write(&path, rendered).unwrap();
        return;
    }
    let golden = std::fs::read_to_string(&path).unwrap_or_default();
    if golden != rendered {
        let diff = similar::TextDiff::from_lines(golden.as_str(), rendered)
            .unified_diff()
            .header(&format!("golden/{name}"), "rendered")
            .to_string();
        panic!(
            "rendered {name} differs from the golden file (rerun with UPDATE_GOLDEN=1 if intended):\n{diff}"
        );
    }
}

#[test]
fn markdown_report_matches_golden() {
    check_golden("report.md", &report::markdown(&sample_result()));
}

#[test]
fn summary_table_matches_golden() {
    check_golden("summary.txt", &report::summary_table(&sample_result()));
}

#[test]
fn html_report_matches_golden() {
    check_golden("report.html", &report::html(&sample_result()));
}

#[test]
fn markdown_report_reads_back_the_same_from_result_json() {
    // `bench-harness report` renders from the stored encodings: the same report as the run's.
    let dir = tempfile::tempdir().unwrap();
    let original = sample_result();
    let loaded = RunResult::load(&original.write(dir.path()).unwrap()).unwrap();
    assert_eq!(report::markdown(&loaded), report::markdown(&original));
    assert_eq!(report::html(&loaded), report::html(&original));
}

fn fixed_comparison() -> compare::Comparison {
    let baseline = synthetic_run(
        &[SyntheticSeries {
            variant: "full",
            end_to_end_ms: 1_000,
            egress_bytes: 40_000_000,
        }],
        6,
        1,
    );
    let candidate = synthetic_run(
        &[SyntheticSeries {
            variant: "full",
            end_to_end_ms: 1_150,
            egress_bytes: 40_000_000,
        }],
        6,
        2,
    );
    compare::compare(
        &Input {
            name: "baseline/result.json",
            result: &baseline,
        },
        &Input {
            name: "candidate/result.json",
            result: &candidate,
        },
        &Pairing::SameSeries,
        &Settings {
            gates: vec![
                "p95:end_to_end:10%".parse().unwrap(),
                "p50:pull:500ms".parse().unwrap(),
            ],
            ..Settings::default()
        },
    )
    .unwrap()
}

#[test]
fn comparison_matches_golden() {
    let c = fixed_comparison();
    check_golden("compare.md", &report::comparison::markdown(&c));
    check_golden("compare.html", &report::comparison::html(&c));
}
