//! Flags of `bench-harness model` and `bench-harness calibrate`, and what they resolve to. The
//! binary's `main.rs` only dispatches; this file loads the scenario, the profile or the measured
//! result, runs the model and writes its outputs.

use std::path::{Path, PathBuf};

use crate::result::RunResult;
use crate::scenario::{Override, Scenario};

use super::{against, calibrate, Inputs, Profile};

/// Where the committed profile of this repository's development machine lives, relative to
/// the working directory (the workspace root, as for `--results`).
pub const DEFAULT_PROFILE: &str = "scenarios/profiles/this-machine.toml";

/// `bench-harness model`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  bench-harness model scenarios/planner-500-nodes.toml\n  bench-harness model scenarios/quickstart.toml --set nodes=5000 --out /tmp/q5000\n  bench-harness model --against results/quickstart/result.json"
)]
pub struct ModelArgs {
    /// The scenario file (TOML). Not with --against, which takes the measured run's scenario.
    #[arg(required_unless_present = "against", conflicts_with = "against")]
    pub scenario: Option<PathBuf>,
    /// Model a measured run's scenario again and print model and measurement side by side
    /// (pull p50 and p95, all ready, registry bytes, peak egress) with the error in percent.
    #[arg(long, value_name = "RESULT.json")]
    pub against: Option<PathBuf>,
    /// The machine profile (TOML), written by `bench-harness calibrate` or by hand. Default: the
    /// scenario's `model_profile`, else scenarios/profiles/this-machine.toml.
    #[arg(long)]
    pub profile: Option<PathBuf>,
    /// Override a scenario field: `--set nodes=5000`; repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Write result.json and the reports into exactly this directory.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Results root: modelled runs go to `<results>/runs/<scenario>-model-<UTC time>/` unless
    /// --out is given.
    #[arg(long, default_value = "results")]
    pub results: PathBuf,
}

/// `bench-harness calibrate`.
#[derive(Debug, clap::Args)]
pub struct CalibrateArgs {
    /// Write the profile here (default: print it).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The profile's name.
    #[arg(long, default_value = "this-machine")]
    pub name: String,
    /// Bytes of content in each sample layer.
    #[arg(long, default_value = "32MiB")]
    pub layer_size: crate::scenario::units::ByteSize,
    /// Where sample layers and unpacked trees go (removed afterwards).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
}

/// What `model` did, for `main.rs` to print.
#[derive(Debug)]
pub struct Modelled {
    /// The modelled result.
    pub result: RunResult,
    /// Where it and its reports were written.
    pub dir: PathBuf,
    /// With --against: the side-by-side table (Markdown).
    pub against: Option<String>,
}

impl ModelArgs {
    /// Runs the model and writes result.json and the reports (and, with --against,
    /// `against.md`).
    ///
    /// # Errors
    /// A missing or invalid profile, scenario or result, a scenario field the model cannot
    /// express, or a file that cannot be written; each message names the file or field.
    pub fn run(self) -> anyhow::Result<Modelled> {
        let overrides = self
            .overrides
            .iter()
            .map(|raw| Override::parse(raw))
            .collect::<Result<Vec<_>, _>>()?;
        let measured = match &self.against {
            Some(path) => Some(RunResult::load(path)?),
            None => None,
        };
        let (scenario, workspace) = match (&measured, &self.scenario) {
            (Some(m), _) => {
                let text = toml::to_string(&m.scenario)?;
                let s = Scenario::parse(&text, &format!("{}.toml", m.scenario.name), &overrides)?;
                (s, PathBuf::from("."))
            }
            (None, Some(path)) => (
                Scenario::load(path, &overrides)?,
                path.parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .map_or_else(|| PathBuf::from("."), Path::to_path_buf),
            ),
            (None, None) => anyhow::bail!("give a scenario file or --against RESULT.json"),
        };
        let profile_path = self
            .profile
            .clone()
            .or_else(|| scenario.model_profile.clone())
            .unwrap_or_else(|| PathBuf::from(DEFAULT_PROFILE));
        let profile = Profile::load(&profile_path)?;
        let inputs = Inputs {
            profile: &profile,
            profile_path: Some(&profile_path),
            measured_images: measured.as_ref().map(|m| &m.images),
            workspace: &workspace,
        };
        let result = super::run(&scenario, &inputs)?;
        let dir = self.out.unwrap_or_else(|| {
            RunResult::run_dir(
                &self.results,
                &format!("{}-model", scenario.name),
                result.started_at,
            )
        });
        result.write(&dir)?;
        crate::report::write_all(&result, &dir)?;
        let against = match &measured {
            Some(m) => {
                let table = against::markdown(&against::rows(&result, m), m, &profile);
                let path = dir.join(against::FILE_NAME);
                std::fs::write(&path, &table)
                    .map_err(|e| anyhow::anyhow!("write {}: {e}", path.display()))?;
                Some(table)
            }
            None => None,
        };
        Ok(Modelled {
            result,
            dir,
            against,
        })
    }
}

impl CalibrateArgs {
    /// Measures this machine and writes (or returns) the profile as TOML.
    ///
    /// # Errors
    /// When a sample cannot be generated, unpacked or written.
    pub async fn run(self) -> anyhow::Result<String> {
        let profile = calibrate::measure(&calibrate::Settings {
            name: self.name,
            layer_bytes: self.layer_size.0,
            work_dir: self.work_dir,
        })
        .await?;
        let text = calibrate::to_toml(&profile)?;
        if let Some(path) = &self.out {
            std::fs::write(path, &text)
                .map_err(|e| anyhow::anyhow!("write {}: {e}", path.display()))?;
        }
        Ok(text)
    }
}
