//! bench-harness integration tests, one binary: each module drives a part of the library
//! in-process over loopback, with its own temp dir and servers on port 0. Helpers live in
//! `tests/common/`.
//!
//! - `registry`: the embedded registry serving generated images, and its accounting.
//! - `scenario_files`: every committed scenario parses and validates.
//! - `result_schema`: `result.json` validates against the committed schema and round-trips.
//! - `report_golden`: the Markdown report matches its golden file.
//! - `inspect`: `inspect` on crafted layouts reports exact numbers; A/B diffs; missing platforms.
//! - `real_images`: images built with umoci, pushed with skopeo into docker-registry (plain,
//!   htpasswd, token auth, TLS), pulled by a scenario and read by `inspect`.

#[path = "../common/mod.rs"]
mod common;

mod burst;
mod inspect;
mod real_images;
mod registry;
mod report_golden;
mod result_schema;
mod scenario_files;
