//! The Markdown report of a fixed result matches `tests/golden/report.md`. On a mismatch the
//! test prints a unified diff; `UPDATE_GOLDEN=1 cargo test -p bench-harness report` rewrites
//! the golden file after an intended change.

use bench_harness::report;

use crate::common::{crate_dir, sample_result};

fn check_golden(name: &str, rendered: &str) {
    let path = crate_dir().join("tests/golden").join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1") {
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
