//! bench-harness: simulates a burst scale-out (N nodes x M pods pulling the same images at the
//! same moment) against a registry, a node cache or any mirror, and records queue, pull, unpack
//! and readiness latency from the burst epoch in HDR histograms.
//!
//! # Layout
//! - [`units`]: byte sizes, bandwidths, durations as scenario files write them.
//! - [`scenario`]: the scenario file: parsing, validation, overrides.
//! - [`image`]: synthetic images: the spec and its deterministic generation into an OCI layout.
//! - [`registry`]: the embedded registry: serves generated images with the scenario's bandwidth,
//!   latency and throttling, and counts what it serves.
//! - [`unpack`]: decompress and untar layers into a snapshot directory, safely.
//! - [`machine`]: facts about the machine a run measured (cores, CPU, kernel, git revision).
//! - [`pull`]: the harness's own OCI client pull into a node's content store.
//! - [`recorder`]: per-phase HDR histograms and timelines.
//! - [`result`]: `result.json`, its versioned schema.
//! - [`report`]: Markdown (and later HTML) from a result.

#![forbid(unsafe_code)]

pub mod image;
pub mod machine;
pub mod pull;
pub mod recorder;
pub mod registry;
pub mod report;
pub mod result;
pub mod scenario;
pub mod units;
pub mod unpack;
