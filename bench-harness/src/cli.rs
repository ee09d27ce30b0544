//! Command-line interface: raw flags become validated settings for one command. `main.rs` prints
//! the error chain once and maps outcomes to exit codes (0 pass, 1 SLO missed, 2 error).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::run::RunOptions;
use crate::scenario::{Override, Scenario, ScenarioError};

/// Simulates burst scale-out image pulls (N nodes x M pods) against a registry, a node cache or
/// any mirror, and reports queue, pull, unpack and readiness latency from the burst epoch.
#[derive(Debug, Parser)]
#[command(name = "bench-harness", version)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a scenario file and write result.json and report.md.
    Run(RunArgs),
    /// Explain what an image costs to pull and start, or what changed between two images.
    Inspect(crate::inspect::InspectArgs),
}

/// `bench-harness run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The scenario file (TOML), e.g. scenarios/quickstart.toml.
    pub scenario: PathBuf,
    /// Write the results into exactly this directory.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Results root: runs go to `<results>/runs/<scenario>-<UTC time>/` unless --out is given.
    #[arg(long, default_value = "results")]
    pub results: PathBuf,
    /// Run only these targets (by name); repeatable.
    #[arg(long = "target")]
    pub targets: Vec<String>,
    /// Override a scenario field: `--set nodes=8`, `--set registry.egress=100Mbit`; repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Cache of generated images (default: $STAMPEDE_IMAGE_CACHE, else ~/.cache/stampede/images).
    #[arg(long, env = "STAMPEDE_IMAGE_CACHE")]
    pub image_cache: Option<PathBuf>,
    /// Where node directories live during bursts (default: the system temp dir).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Never draw the progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

/// Why the flags do not make a runnable command.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// An override is malformed.
    #[error("--set {raw:?}")]
    Override {
        /// The flag value.
        raw: String,
        /// The cause.
        #[source]
        source: crate::scenario::OverrideError,
    },
    /// The scenario is unreadable or invalid.
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    /// `--target` names a target the scenario does not have.
    #[error("--target {name:?}: the scenario has targets {}", available.join(", "))]
    UnknownTarget {
        /// The name given.
        name: String,
        /// The scenario's targets.
        available: Vec<String>,
    },
}

impl RunArgs {
    /// Loads the scenario with overrides and target selection, and the run options.
    ///
    /// # Errors
    /// [`CliError`] naming the flag or the scenario problem.
    pub fn into_settings(self) -> Result<(Scenario, RunOptions), CliError> {
        let overrides = self
            .overrides
            .iter()
            .map(|raw| {
                Override::parse(raw).map_err(|source| CliError::Override {
                    raw: raw.clone(),
                    source,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut scenario = Scenario::load(&self.scenario, &overrides)?;
        if !self.targets.is_empty() {
            let available: Vec<String> = scenario.targets.iter().map(|t| t.name.clone()).collect();
            if let Some(name) = self.targets.iter().find(|n| !available.contains(n)) {
                return Err(CliError::UnknownTarget {
                    name: name.clone(),
                    available,
                });
            }
            scenario.targets.retain(|t| self.targets.contains(&t.name));
        }
        let image_cache = self.image_cache.unwrap_or_else(default_image_cache);
        let work_root = self
            .work_dir
            .unwrap_or_else(|| std::env::temp_dir().join("stampede-work"));
        Ok((
            scenario,
            RunOptions {
                results_root: self.results,
                out_dir: self.out,
                image_cache,
                work_root,
                workspace: std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
                progress: !self.no_progress,
            },
        ))
    }
}

/// `$XDG_CACHE_HOME/stampede/images`, else `~/.cache/stampede/images`.
pub(crate) fn default_image_cache() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("stampede").join("images")
}
