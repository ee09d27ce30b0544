//! bench-harness: simulates a burst scale-out (N nodes x M pods pulling the same images at the
//! same moment) against a registry, a node cache or any mirror, and records queue, pull, unpack
//! and readiness latency from the burst epoch in HDR histograms.
//!
//! # Layout
//! - [`units`]: byte sizes, bandwidths, durations as scenario files write them.
//! - [`scenario`]: the scenario file: parsing, validation, overrides.
//! - [`image`]: images on disk as OCI layouts: synthetic ones (spec, deterministic generation),
//!   imported layouts, and real-registry images mirrored into the cache.
//! - [`remote`]: a real registry as a source: endpoint, TLS, credentials.
//! - [`inspect`]: what an image costs to pull and start, read from its layers; two compared.
//! - [`registry`]: the embedded registry: serves generated images with the scenario's bandwidth,
//!   latency and throttling, and counts what it serves.
//! - [`unpack`]: decompress and untar layers into a snapshot directory, safely.
//! - [`pull`]: the harness's own OCI client pull into a node's content store.
//! - [`recorder`]: per-phase HDR histograms and timelines.
//! - [`result`]: `result.json`, its versioned schema.
//! - [`report`]: `report.md` and the self-contained `report.html` (inline SVG charts) from a
//!   result, capacity answers, and the comparison's Markdown and HTML.
//! - [`compare`]: differences between runs or variants with bootstrap confidence intervals over
//!   repetitions, and regression gates.
//! - [`target`]: what nodes pull through (direct, cache-daemon per node or shared, a mirror, a
//!   peer).
//! - [`kubernetes`]: the `kubernetes` target: real pods on a real cluster through a kubeconfig,
//!   their milestones from the API server's pods and events.
//! - [`peer`]: the peers the harness starts itself: distribution's proxy mode and an nginx cache.
//! - [`origin`]: the embedded registry as every target's upstream, on loopback or behind a
//!   kernel-shaped link in its own network namespace.
//! - [`real_puller`]: node pulls done by real clients (skopeo, ctr).
//! - [`node`]: a simulated node: content store, kubelet's pull queue, one shared pull per image.
//! - [`nodes`]: nodes as network namespaces (`[network] nodes = "namespaces"`): the fabric of
//!   kernel-shaped links, the harness's client inside each node, cache processes inside the
//!   nodes, the links' byte counters and each cache process's CPU and memory.
//! - [`container`]: the container start model (file reads, init, readiness probe).
//! - [`host`]: CPU use during a burst, for the host-bound warning.
//! - [`variant_image`]: each variant's image made ready: generated, imported, mirrored or resolved.
//! - [`run`]: a whole scenario run and each burst in it.
//! - [`model`]: the fleet model: the same scenarios through a discrete-event, flow-level model
//!   (`bench-harness model`), calibrated by a machine profile (`bench-harness calibrate`).
//! - [`cli`]: flags into settings.
//!
//! # One pod's path
//! `run::run` -> burst epoch -> pod task sleeps to its scheduled offset -> `node::Node::images`
//! (the variant's image, then its sidecars'; for each, the first pod of the node: queue slot ->
//! `pull::Puller::pull` (or a real client through `real_puller`) -> `unpack` per layer) ->
//! `container::start` -> milestones to the burst's `recorder::Recorder` -> `result` -> `report`
//! (later `bench-harness report` re-renders from `result.json`, and `bench-harness compare`
//! sets two results side by side through `compare`).

#![forbid(unsafe_code)]

pub mod cli;
pub mod compare;
pub mod container;
pub mod host;
pub mod image;
pub mod inspect;
pub mod kubernetes;
pub mod model;
pub mod node;
pub mod nodes;
pub mod origin;
pub mod peer;
pub mod pull;
pub mod real_puller;
pub mod recorder;
pub mod registry;
pub mod remote;
pub mod report;
pub mod result;
pub mod run;
pub mod scenario;
pub mod target;
pub mod units;
pub mod unpack;
pub mod variant_image;
