//! bench-harness: simulates a burst scale-out (N nodes x M pods pulling the same images at the
//! same moment) against a registry, a node cache or any mirror, and records queue, pull, unpack
//! and readiness latency from the burst epoch in HDR histograms.
//!
//! # Layout
//! The folders follow a run, in order:
//! - [`scenario`]: the scenario file: parsing, validation, overrides, the pod schedule;
//!   `scenario::units` for byte sizes, bandwidths and durations as the file writes them.
//! - [`image`]: images on disk as OCI layouts: synthetic ones (spec, deterministic generation),
//!   imported layouts, real-registry images mirrored into the cache (`image::remote`: endpoint,
//!   TLS, credentials); `image::variant` makes each variant's image ready.
//! - [`registry`]: the embedded registry: serves the images with the scenario's bandwidth,
//!   latency and throttling, and counts what it serves; `registry::origin` starts it on
//!   loopback or behind a kernel-shaped link in its own network namespace.
//! - [`target`]: what nodes pull through, set up per burst (direct, cache-daemon per node,
//!   shared or as a cluster, a mirror); `target::peer` for the peers the harness starts itself
//!   (distribution's proxy mode, an nginx cache).
//! - [`kubernetes`]: a burst on a real cluster through a kubeconfig: a Deployment created or
//!   scaled at the epoch, its pods' milestones from the API server's pods and events.
//! - [`nodes`]: a node and its pulls: `nodes::node` (content store, kubelet's pull queue, one
//!   shared pull per image), `nodes::pull` (the harness's own OCI client), `nodes::real_puller`
//!   (skopeo, ctr), `nodes::unpack` (layers into a snapshot, safely), `nodes::container` (file
//!   reads, init, readiness probe); and nodes as network namespaces (the fabric of shaped links,
//!   the client inside each node, cache processes inside the nodes, link counters, their CPU,
//!   and the faults a scenario injects there: a cluster owner killed mid-burst).
//! - [`run`]: a whole scenario run, and each burst in it in three steps: deploy (target and
//!   nodes), pod (one task per pod of the schedule), record (milestones into the burst's
//!   `run::recorder::Recorder`, per-phase HDR histograms); `run::host` for the host's CPU.
//! - [`result`]: `result.json`, its versioned schema: what a run hands back.
//! - [`report`]: `report.md` and the self-contained `report.html` (inline SVG charts) from a
//!   result, capacity answers, and the comparison's Markdown and HTML.
//! - [`compare`]: differences between runs or variants with bootstrap confidence intervals over
//!   repetitions, and regression gates.
//! - [`inspect`]: what an image costs to pull and start, read from its layers; two compared.
//! - [`model`]: the fleet model: the same scenarios through a discrete-event, flow-level model
//!   (`bench-harness model`), calibrated by a machine profile (`bench-harness calibrate`).
//! - [`cli`]: flags into settings (`main.rs` dispatches them and writes the files).
//!
//! # One scenario run
//! `main` -> `cli::RunArgs::into_job` (scenario with `--set` overrides, validated; the run
//! directory) -> [`run::run`]: every peer and real client checked -> nodes' namespaces when
//! asked -> `image::variant::prepare_all` (generate, import, mirror or resolve each variant's
//! image) -> `registry::origin::Origin::start` serves them -> for each repetition, variant and
//! target, one burst:
//! - deploy: `target::Deployment::up` (caches or peers fresh for this burst), each node's
//!   puller, `nodes::node::Node`s, the epoch set;
//! - pod: every pod of `scenario::Scenario::schedule` is a task that sleeps to its offset from
//!   the epoch -> `nodes::node::Node::images` (the variant's image, then its sidecars'; for each,
//!   the first pod of the node takes a queue slot -> `nodes::pull::Puller::pull` or a real
//!   client -> `nodes::unpack` per layer; the node's other pods wait for that pull) ->
//!   `nodes::container::start` -> the pod's milestones;
//! - record: once every pod is done, the milestones into the burst's `Recorder`; the
//!   registry's accounting, the links' and the host's counters beside them; the target down.
//!
//! -> the recorders merged into a [`result::RunResult`] (SLOs evaluated) -> back in `main`:
//! `result.json`, then [`report`]'s `report.md` and `report.html`. Later, `bench-harness report`
//! re-renders them from `result.json`, and `bench-harness compare` sets two results side by side
//! through [`compare`].

#![forbid(unsafe_code)]

pub mod cli;
pub mod compare;
pub mod image;
pub mod inspect;
pub mod kubernetes;
pub mod model;
pub mod nodes;
pub mod registry;
pub mod report;
pub mod result;
pub mod run;
pub mod scenario;
pub mod target;
