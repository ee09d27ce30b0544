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
//! - `report_golden`: the Markdown and HTML reports and the comparison match their golden files.
//! - `compare`: bootstrap comparisons find known differences and not noise; gates.
//! - `exit_codes`: the binary's exit codes for `run`, `report` and `compare`.
//! - `messages`: plain-words messages (missing files, schema versions, missed SLOs, `inspect`
//!   help) and host-bound runs surfaced by `report` and `compare` (exit 3 unless judged).
//! - `report_reference`: the committed reference results re-rendered: capacity per wave, chart
//!   labels that fit their boxes, platform manifests, why compare's p50 differs.
//! - `html_chromium`: the HTML reports in headless Chromium: no errors, no fetches, charts with
//!   data, screenshots.
//! - `platform`: a single-platform image for another platform fails every pull.
//! - `namespaces`: nodes as network namespaces: the links' kernel counters, cache processes
//!   inside the nodes (per node, shared, cluster, nginx), cleanup after a run and SIGINT, the
//!   message without root.
//! - `peers`: distribution's proxy mode and nginx started by the harness, counted by the
//!   registry behind them (and by nginx's own log); a missing peer program; the registry behind
//!   a tbf-shaped namespace; skopeo and ctr as pullers.
//! - `model`: the fleet model's properties for any parameters, its result contract, bad input.

// A test body reads top to bottom as one scenario: the size limits (clippy.toml) are for non-test code.
#![allow(clippy::too_many_lines, clippy::too_many_arguments)]

#[path = "../common/mod.rs"]
mod common;

mod burst;
mod compare;
mod exit_codes;
mod html_chromium;
mod inspect;
mod kubernetes;
mod messages;
mod model;
mod namespaces;
mod peers;
mod platform;
mod real_images;
mod registry;
mod report_golden;
mod report_reference;
mod result_schema;
mod scenario_files;
