//! Command-line interface: raw flags become validated settings for one command (`run`,
//! `report`, `compare`); `main.rs` dispatches them and maps outcomes to exit codes.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use clap::{Parser, Subcommand};

use crate::compare::{Gate, Pairing, Quantile, Settings as CompareSettings};
use crate::result::{ResultError, RunResult};
use crate::run::recorder::Phase;
use crate::run::{RunOptions, LOGS_DIR};
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
    /// Run a scenario file and write result.json, report.md and report.html.
    Run(RunArgs),
    /// Explain what an image costs to pull and start, or what changed between two images.
    Inspect(crate::inspect::InspectArgs),
    /// Re-render report.md and report.html from a stored result.json (exit 1 if it missed an SLO).
    Report(ReportArgs),
    /// Compare runs, variants or targets: differences of p50/p95/p99 per phase with bootstrap
    /// confidence intervals over repetitions; exit 1 when a --fail-if-slower gate is crossed, 3
    /// when a gate was not judged because its series were host-bound.
    Compare(CompareArgs),
    /// Model a scenario (or a measured run's, with --against) with the fleet model instead of
    /// real bytes: the same result.json and reports, marked modelled.
    Model(crate::model::ModelArgs),
    /// Measure this machine's profile for the fleet model (hash, decompress, unpack, disk,
    /// request overhead) from short real runs.
    Calibrate(crate::model::CalibrateArgs),
}

/// `bench-harness report`.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// A result.json written by `bench-harness run`.
    pub result: PathBuf,
    /// Write report.md and report.html into this directory (default: next to the result).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// `bench-harness compare`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit codes: 0 no gate crossed; 1 a gate crossed; 2 an error; 3 no gate crossed, but a gate was not judged because its pair has host-bound repetitions (the host's CPUs were saturated; see --judge-host-bound).\n\nExamples:\n  bench-harness compare base/result.json new/result.json --fail-if-slower p95:end_to_end:10%\n  bench-harness compare run/result.json --variants full,slim --fail-if-slower p95:end_to_end:0%\n  bench-harness compare run/result.json --targets direct,cache-daemon --out cmp/"
)]
pub struct CompareArgs {
    /// The baseline result.json, then optionally the candidate's. With one file, name what to
    /// compare within it with --variants or --targets.
    #[arg(num_args = 1..=2, required = true, value_name = "RESULT")]
    pub results: Vec<PathBuf>,
    /// Compare variant BASELINE against variant CANDIDATE, per target.
    #[arg(long, value_name = "BASELINE,CANDIDATE", conflicts_with = "targets")]
    pub variants: Option<String>,
    /// Compare target BASELINE against target CANDIDATE, per variant.
    #[arg(long, value_name = "BASELINE,CANDIDATE")]
    pub targets: Option<String>,
    /// Phases to compare (default: end_to_end, pull, unpack, queue, ttfb, start_to_ready).
    #[arg(long, value_delimiter = ',', value_name = "PHASE,...", value_parser = parse_phase)]
    pub phases: Vec<Phase>,
    /// Quantiles to compare per phase.
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "Q,...",
        default_value = "p50,p95,p99"
    )]
    pub quantiles: Vec<Quantile>,
    /// Exit 1 when the candidate is significantly slower at QUANTILE of PHASE by more than
    /// LIMIT (a percentage of the baseline, `10%`, or a duration, `200ms`); repeatable.
    #[arg(long = "fail-if-slower", value_name = "QUANTILE:PHASE:LIMIT")]
    pub gates: Vec<Gate>,
    /// Judge gates on pairs with host-bound repetitions too. Without it such gates are not
    /// judged and, if no other gate is crossed, compare exits 3.
    #[arg(long)]
    pub judge_host_bound: bool,
    /// Bootstrap resamples per row.
    #[arg(long, default_value_t = crate::compare::DEFAULT_RESAMPLES)]
    pub resamples: u32,
    /// Confidence level of the intervals.
    #[arg(long, default_value_t = 0.95)]
    pub confidence: f64,
    /// Seed of the bootstrap RNG (same inputs and seed, same intervals).
    #[arg(long, default_value_t = crate::compare::DEFAULT_SEED)]
    pub seed: u64,
    /// Write compare.md and compare.html into this directory; without it the Markdown goes to
    /// stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

fn parse_phase(raw: &str) -> Result<Phase, String> {
    Phase::from_name(raw.trim()).ok_or_else(|| {
        format!(
            "{raw:?} is not a phase; phases are {}",
            Phase::ALL.map(Phase::name).join(", ")
        )
    })
}

/// A loaded result and the name the output gives it.
#[derive(Debug)]
pub struct NamedResult {
    /// The path as given.
    pub name: String,
    pub result: RunResult,
}

/// A run ready to start: what `run` flags resolve to.
#[derive(Debug)]
pub struct RunJob {
    /// The scenario, overrides applied and targets selected.
    pub scenario: Scenario,
    /// What the runner needs besides the scenario.
    pub options: RunOptions,
    /// The run directory: `result.json`, the reports and the peers' logs go there.
    pub dir: PathBuf,
}

/// A comparison ready to compute: what `compare` flags resolve to.
#[derive(Debug)]
pub struct CompareJob {
    /// The baseline run.
    pub baseline: NamedResult,
    /// The candidate run, when it is another file.
    pub candidate: Option<NamedResult>,
    /// What pairs with what.
    pub pairing: Pairing,
    /// Metrics, gates and bootstrap settings.
    pub settings: CompareSettings,
    /// Where to write compare.md and compare.html, if anywhere.
    pub out: Option<PathBuf>,
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
    /// An override is malformed (its message names the flag).
    #[error(transparent)]
    Override(#[from] crate::scenario::OverrideError),
    /// The scenario is unreadable or invalid.
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    /// A result file could not be loaded.
    #[error(transparent)]
    Result(#[from] ResultError),
    #[error("{flag} {raw:?}: give two names, BASELINE,CANDIDATE")]
    Pair { flag: &'static str, raw: String },
    #[error("one result file: say what to compare within it with --variants BASELINE,CANDIDATE or --targets BASELINE,CANDIDATE, or give a second result file")]
    NothingToCompare,
    #[error("--target {name:?}: the scenario has targets {}", available.join(", "))]
    UnknownTarget {
        name: String,
        /// The scenario's targets.
        available: Vec<String>,
    },
}

impl RunArgs {
    /// Loads the scenario with overrides and target selection, and picks the run options and
    /// the run directory (`--out`, or a new one under `--results` named by scenario and time).
    ///
    /// # Errors
    /// [`CliError`] naming the flag or the scenario problem.
    pub fn into_job(self) -> Result<RunJob, CliError> {
        let overrides = self
            .overrides
            .iter()
            .map(|raw| Override::parse(raw))
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
        scenario.check_runnable(&self.scenario.display().to_string())?;
        let image_cache = self.image_cache.unwrap_or_else(default_image_cache);
        let work_root = self
            .work_dir
            .unwrap_or_else(|| std::env::temp_dir().join("stampede-work"));
        let dir = self.out.unwrap_or_else(|| {
            RunResult::run_dir(&self.results, &scenario.name, SystemTime::now())
        });
        Ok(RunJob {
            options: RunOptions {
                logs_dir: dir.join(LOGS_DIR),
                image_cache,
                work_root,
                // The scenario's own checkout names the revision, wherever the binary runs.
                workspace: std::fs::canonicalize(&self.scenario)
                    .ok()
                    .and_then(|p| p.parent().map(Path::to_path_buf))
                    .or_else(|| std::env::current_dir().ok())
                    .unwrap_or_else(|| PathBuf::from(".")),
                progress: !self.no_progress,
            },
            scenario,
            dir,
        })
    }
}

impl ReportArgs {
    /// Loads the result and picks the output directory (the result's own by default).
    ///
    /// # Errors
    /// [`CliError::Result`] when the file cannot be read or decoded.
    pub fn into_settings(self) -> Result<(RunResult, PathBuf), CliError> {
        let result = RunResult::load(&self.result)?;
        let out = self.out.unwrap_or_else(|| match self.result.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        });
        Ok((result, out))
    }
}

fn split_pair(flag: &'static str, raw: &str) -> Result<(String, String), CliError> {
    match raw.split(',').map(str::trim).collect::<Vec<_>>()[..] {
        [a, b] if !a.is_empty() && !b.is_empty() => Ok((a.to_owned(), b.to_owned())),
        _ => Err(CliError::Pair {
            flag,
            raw: raw.to_owned(),
        }),
    }
}

impl CompareArgs {
    /// Loads the results and resolves the pairing and settings.
    ///
    /// # Errors
    /// [`CliError`] when a file cannot be loaded, `--variants`/`--targets` is malformed, or a
    /// single file comes without either.
    pub fn into_job(self) -> Result<CompareJob, CliError> {
        // Files first: a missing or unreadable file is the problem to report, whatever else the
        // flags say.
        let load = |path: &PathBuf| -> Result<NamedResult, CliError> {
            Ok(NamedResult {
                name: path.display().to_string(),
                result: RunResult::load(path)?,
            })
        };
        let baseline = load(&self.results[0])?;
        let candidate = self.results.get(1).map(load).transpose()?;
        let pairing = match (&self.variants, &self.targets) {
            (Some(v), _) => {
                let (baseline, candidate) = split_pair("--variants", v)?;
                Pairing::Variants {
                    baseline,
                    candidate,
                }
            }
            (None, Some(t)) => {
                let (baseline, candidate) = split_pair("--targets", t)?;
                Pairing::Targets {
                    baseline,
                    candidate,
                }
            }
            (None, None) if candidate.is_none() => return Err(CliError::NothingToCompare),
            (None, None) => Pairing::SameSeries,
        };
        Ok(CompareJob {
            baseline,
            candidate,
            pairing,
            settings: CompareSettings {
                phases: if self.phases.is_empty() {
                    crate::compare::DEFAULT_PHASES.to_vec()
                } else {
                    self.phases
                },
                quantiles: self.quantiles,
                gates: self.gates,
                resamples: self.resamples,
                confidence: self.confidence,
                seed: self.seed,
                judge_host_bound: self.judge_host_bound,
            },
            out: self.out,
        })
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
