//! Flags of `bench-harness model` and `bench-harness calibrate`, and what they resolve to. The
//! binary's `main.rs` only dispatches; this file loads the scenario, the profile or the measured
//! result, runs the model and writes its outputs.

use std::path::{Path, PathBuf};

use crate::result::RunResult;
use crate::scenario::{Override, Scenario};

use super::{against, calibrate, scaling, Inputs, Profile};

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
    /// Repeatable (one scenario measured at several node counts, with --out): each run is
    /// modelled into a folder of its own and `scaling.md` sets them side by side.
    #[arg(long, value_name = "RESULT.json")]
    pub against: Vec<PathBuf>,
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
    pub result: RunResult,
    /// Where it and its reports were written.
    pub dir: PathBuf,
    /// With --against: the side-by-side table (Markdown).
    pub against: Option<String>,
}

impl ModelArgs {
    /// Runs the model and writes result.json and the reports (and, with --against,
    /// `against.md`; with several, each run's in a folder of its own and `scaling.md` across
    /// them).
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
        if self.against.len() > 1 {
            return self.run_scaling(&overrides);
        }
        let measured = self
            .against
            .first()
            .map(|p| RunResult::load(p))
            .transpose()?;
        let (scenario, workspace) = match (&measured, &self.scenario) {
            (Some(m), _) => (measured_scenario(m, &overrides)?, PathBuf::from(".")),
            (None, Some(path)) => (
                Scenario::load(path, &overrides)?,
                path.parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .map_or_else(|| PathBuf::from("."), Path::to_path_buf),
            ),
            (None, None) => anyhow::bail!("give a scenario file or --against RESULT.json"),
        };
        let one = self.model_one(&scenario, measured.as_ref(), &workspace, self.out.clone())?;
        Ok(one.0)
    }

    /// The profile: --profile, else the scenario's `model_profile`, else the default.
    fn profile(&self, scenario: &Scenario) -> anyhow::Result<(Profile, PathBuf)> {
        let path = self
            .profile
            .clone()
            .or_else(|| scenario.model_profile.clone())
            .unwrap_or_else(|| PathBuf::from(DEFAULT_PROFILE));
        Ok((Profile::load(&path)?, path))
    }

    /// Models `scenario` once with its profile (returned too) and writes its result, reports
    /// and (beside a measurement) `against.md` into `dir`, or a fresh run directory.
    fn model_one(
        &self,
        scenario: &Scenario,
        measured: Option<&RunResult>,
        workspace: &Path,
        dir: Option<PathBuf>,
    ) -> anyhow::Result<(Modelled, Profile)> {
        let (profile, profile_path) = self.profile(scenario)?;
        let inputs = Inputs {
            profile: &profile,
            profile_path: Some(&profile_path),
            measured_images: measured.map(|m| &m.images),
            workspace,
        };
        let result = super::run(scenario, &inputs)?;
        let dir = dir.unwrap_or_else(|| {
            RunResult::run_dir(
                &self.results,
                &format!("{}-model", scenario.name),
                result.started_at,
            )
        });
        result.write(&dir)?;
        crate::report::write_all(&result, &dir)?;
        let against = match measured {
            Some(m) => {
                let table = against::markdown(&against::rows(&result, m), m, &profile);
                write(&dir.join(against::FILE_NAME), &table)?;
                Some(table)
            }
            None => None,
        };
        let modelled = Modelled {
            result,
            dir,
            against,
        };
        Ok((modelled, profile))
    }

    /// Several measured runs (one scenario at several node counts): each modelled into
    /// `<out>/<scenario>-<N>-nodes/`, and `<out>/scaling.md` across them. Returns the last run
    /// (its directory, for the report paths printed) with the scaling table as its `against`.
    fn run_scaling(&self, overrides: &[Override]) -> anyhow::Result<Modelled> {
        let Some(out) = self.out.clone() else {
            anyhow::bail!(
                "several --against results need --out DIR (one folder per run goes in it)"
            );
        };
        let mut columns = Vec::new();
        let mut last = None;
        for path in &self.against {
            let measured = RunResult::load(path)?;
            let scenario = measured_scenario(&measured, overrides)?;
            let dir = out.join(format!(
                "{}-{}-nodes",
                scenario.name,
                scenario.total_nodes()
            ));
            let one = self.model_one(&scenario, Some(&measured), Path::new("."), Some(dir))?;
            columns.push(scaling::Column::new(&measured, &one.0.result));
            last = Some(one);
        }
        let Some((mut one, profile)) = last else {
            anyhow::bail!("give a scenario file or --against RESULT.json");
        };
        let table = scaling::markdown(&columns, &profile);
        write(&out.join(scaling::FILE_NAME), &table)?;
        one.against = Some(table);
        Ok(one)
    }
}

/// A measured run's scenario, with `--set` applied.
fn measured_scenario(m: &RunResult, overrides: &[Override]) -> anyhow::Result<Scenario> {
    let text = toml::to_string(&m.scenario)?;
    Ok(Scenario::parse(
        &text,
        &format!("{}.toml", m.scenario.name),
        overrides,
    )?)
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).map_err(|e| anyhow::anyhow!("write {}: {e}", path.display()))
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
            write(path, &text)?;
        }
        Ok(text)
    }
}
