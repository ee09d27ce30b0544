//! bench-harness integration tests, one binary: the scenario files parse, `result.json`
//! validates against the committed schema and round-trips, the Markdown report matches its
//! golden file. Helpers live in `tests/common/`.

#[path = "../common/mod.rs"]
mod common;

mod report_golden;
mod result_schema;
mod scenario_files;
