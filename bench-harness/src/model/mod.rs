//! The fleet model: the same scenario files, run through a discrete-event, flow-level model
//! instead of real bytes, so "what happens at 500, 1,000, 5,000 nodes" has an answer on a
//! 2-core machine. A modelled run writes the same `result.json` (marked with
//! [`ModelFacts`](crate::result::ModelFacts): modelled, with its profile) and the same reports,
//! so `report` and `compare` work on it and against measured runs.
//!
//! # Layout
//! - [`profile`]: the machine profile (TOML): per-byte and per-request costs of a node type and
//!   of caches, cluster mode's stripe size and fan-out.
//! - [`image`]: blob sizes and compression from a synthetic spec, a layout or a measured result;
//!   no image byte is generated.
//! - [`fabric`]: links and flows, rates shared max-min fairly by progressive filling over flow
//!   classes (a node group's flows are one class), cut-through followers held to their leader.
//! - [`registry`]: the registry's token bucket (429 + Retry-After) and what it served, counted
//!   as the embedded registry counts it.
//! - [`sim`]: one burst: node groups, kubelet's and containerd's concurrency, unpack, readiness,
//!   and each target's behaviour (direct, per-node cache, shared cache, nginx's lock,
//!   distribution's proxy, cluster mode); `sim/cache.rs` the caches' fills and readers,
//!   `sim/split.rs` a node group splitting.
//! - [`against`]: validation: a measured run's scenario modelled again, side by side with the
//!   measurement, error in percent.
//! - [`scaling`]: the same across sizes: one scenario measured at several node counts, one
//!   table of the model's errors per size.
//! - [`calibrate`]: a profile measured on this machine from short real runs of the harness's
//!   own unpack and hashing code; [`ctr_calibration`] the same for containerd's `ctr`.
//! - [`args`]: the `model` and `calibrate` commands' flags.
//!
//! # One modelled run
//! `args::ModelArgs` -> scenario (with `--set`) + [`profile::Profile`] -> [`image::images`] ->
//! per (variant, target) [`sim::burst`] -> recorder and registry totals -> [`RunResult`] with
//! `model` set -> `result.json` and the reports, exactly as a measured run writes them. What it
//! does not model: bench-harness/README.md, "Fleet model".

pub mod against;
pub mod args;
pub mod calibrate;
pub mod ctr_calibration;
pub mod fabric;
pub mod image;
pub mod profile;
pub mod registry;
pub mod scaling;
pub mod sim;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Instant, SystemTime};

pub use args::{CalibrateArgs, ModelArgs};
pub use profile::{Profile, ProfileError};

use crate::result::{ImageFacts, ModelFacts, RunFacts, RunResult};
use crate::run::recorder::Recordings;
use crate::scenario::Scenario;
use stampede_lab::Machine;

/// Why a model could not run.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Profile(#[from] ProfileError),
    /// An image's sizes are unknown.
    #[error(transparent)]
    Image(#[from] image::ImageError),
    /// The scenario has something the model cannot express (the message names the field).
    #[error("the model cannot run scenario {scenario}")]
    Sim {
        scenario: String,
        #[source]
        source: sim::SimError,
    },
}

/// What a modelled run needs besides the scenario.
#[derive(Debug, Clone)]
pub struct Inputs<'a> {
    pub profile: &'a Profile,
    /// The profile file as given, for the result.
    pub profile_path: Option<&'a Path>,
    /// Image facts of a measured run, used for exact blob sizes.
    pub measured_images: Option<&'a BTreeMap<String, ImageFacts>>,
    /// Where `git` is asked for the revision.
    pub workspace: &'a Path,
}

/// Models every (variant, target) of `scenario` once (the model is deterministic, so one
/// repetition; the result's scenario says `repetitions = 1`) and returns the result, marked
/// modelled.
///
/// # Errors
/// [`ModelError`] naming the profile, the image or the scenario field at fault.
pub fn run(scenario: &Scenario, inputs: &Inputs<'_>) -> Result<RunResult, ModelError> {
    let clock = Instant::now();
    let started_at = SystemTime::now();
    let sim_error = |source| ModelError::Sim {
        scenario: scenario.name.clone(),
        source,
    };
    for (index, t) in scenario.targets.iter().enumerate() {
        sim::check_target(t, index).map_err(sim_error)?;
    }
    let images = image::images(scenario, inputs.measured_images)?;
    let mut recordings = Recordings::new();
    let mut totals = Vec::new();
    let mut events = 0;
    let mut warnings = Vec::new();
    if scenario.repetitions > 1 {
        warnings.push(format!(
            "modelled: one repetition instead of {} (the model is deterministic; repetitions would be identical)",
            scenario.repetitions
        ));
    }
    if scenario.runtime.puller == crate::scenario::PullerKind::Ctr && inputs.profile.ctr.is_none() {
        warnings.push(format!(
            "modelled: the scenario pulls with ctr but profile {} has no [ctr] costs (bench-harness calibrate measures them where containerd is installed); modelled with the harness client's costs",
            inputs.profile.name
        ));
    }
    for v in &scenario.variants {
        for t in &scenario.targets {
            let out = sim::burst(sim::Setup {
                scenario,
                profile: inputs.profile,
                images: &images,
                variant: v,
                target: t,
            })
            .map_err(sim_error)?;
            events += out.events;
            if out.upload_bytes_per_node > 0.0 {
                warnings.push(format!(
                    "modelled {}/{}: each node uploaded {:.1} MB to peers on average",
                    v.name,
                    t.name,
                    out.upload_bytes_per_node / 1e6
                ));
            }
            totals.push((v.name.clone(), t.name.clone(), out.served.totals()));
            recordings.add(out.recorder);
        }
    }
    let mut effective = scenario.clone();
    effective.repetitions = 1;
    let mut result = RunResult::new(
        RunFacts {
            scenario: effective,
            started_at,
            duration: clock.elapsed(),
            machine: Machine::collect(inputs.workspace),
            warnings,
        },
        recordings,
    );
    for (v, t, total) in totals {
        if let Some(s) = result.series_mut(&v, &t) {
            s.registry.insert(0, total);
        }
    }
    for (name, img) in &images {
        result.images.insert(
            name.clone(),
            ImageFacts {
                compressed_bytes: img.pull_bytes(),
                details: serde_json::json!({
                    "modelled": true,
                    "layers": img.blobs.iter().filter(|b| b.layer).map(|b| serde_json::json!({
                        "key": b.key,
                        "compressed_bytes": b.bytes,
                        "uncompressed_bytes": b.uncompressed_bytes,
                        "compression": b.compression.name(),
                    })).collect::<Vec<_>>(),
                }),
            },
        );
    }
    result.evaluate_slo();
    result.model = Some(ModelFacts {
        profile: inputs.profile.name.clone(),
        profile_path: inputs.profile_path.map(|p| p.display().to_string()),
        profile_values: serde_json::to_value(inputs.profile).unwrap_or_default(),
        events,
        compute_us: crate::run::recorder::micros(clock.elapsed()),
    });
    Ok(result)
}
