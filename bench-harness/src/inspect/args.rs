//! `bench-harness inspect`'s flags, turned into inputs and [`InspectOptions`] once, then run:
//! one image gives its cost table (or JSON), two give both and their comparison. `main.rs` only
//! prints what [`InspectArgs::run`] returns.

use std::path::PathBuf;

use stampede_oci::Platform;

use super::{diff, diff_table, image_table, inspect, ImageInput, InputContext, InspectOptions};
use super::{InspectError, DEFAULT_BANDWIDTH, DEFAULT_TOP_FILES};
use crate::image::remote::RegistryAccess;
use crate::scenario::units::Bandwidth;
use crate::scenario::Scenario;

/// `bench-harness inspect IMAGE [OTHER]`. The registry flags apply to references; a scenario's
/// registry variant brings its own settings.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// The image, and optionally a second one to compare it with. An image is one of:
    /// `oci:DIR[:TAG]` or a plain directory (an OCI image layout); `variant:NAME` (a variant of
    /// `--scenario`); `[docker://]REGISTRY/REPO[:TAG|@sha256:DIGEST]` (a registry reference,
    /// e.g. `docker://127.0.0.1:5000/library/app:v1`).
    #[arg(required = true, num_args = 1..=2, value_name = "IMAGE")]
    pub images: Vec<String>,
    /// Scenario file whose variants `variant:NAME` names (its platform is then the default).
    #[arg(long)]
    pub scenario: Option<PathBuf>,
    /// Platform to pick from an index, `os/arch[/variant]` (default: the scenario's, else the
    /// host's).
    #[arg(long)]
    pub platform: Option<String>,
    /// Bandwidth the pull prediction assumes: `200Mbit`, `1Gbit`, `25MB/s`.
    #[arg(long, default_value = DEFAULT_BANDWIDTH)]
    pub bandwidth: Bandwidth,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
    /// How many largest and wasted files to list.
    #[arg(long, default_value_t = DEFAULT_TOP_FILES)]
    pub top: usize,
    /// Skip the unpack measurement (no unpack time is predicted then).
    #[arg(long)]
    pub no_measure: bool,
    /// Registry: plain HTTP instead of HTTPS.
    #[arg(long)]
    pub insecure: bool,
    /// Registry: PEM file of extra CA certificates to trust.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// Registry: docker config.json giving the credentials (`credHelpers`, `auths`, `credsStore`).
    #[arg(long)]
    pub docker_config: Option<PathBuf>,
    /// Registry: user name; the password is read from the variable `--password-env` names.
    #[arg(long)]
    pub username: Option<String>,
    /// Registry: environment variable holding the password (never the password itself).
    #[arg(long)]
    pub password_env: Option<String>,
    /// Cache of generated images, for synthetic variants.
    #[arg(long, env = "STAMPEDE_IMAGE_CACHE")]
    pub image_cache: Option<PathBuf>,
    /// Where sample layers and the unpack measurement go (default: the system temp dir).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
}

impl InspectArgs {
    /// Inspects the image(s) and renders the result.
    ///
    /// # Errors
    /// [`InspectError`]: a bad flag or argument, or anything [`inspect`] refuses.
    pub async fn run(self) -> Result<String, InspectError> {
        let scenario = self
            .scenario
            .as_ref()
            .map(|p| Scenario::load(p, &[]))
            .transpose()?;
        let platform = match &self.platform {
            Some(p) => Platform::parse(p).ok_or_else(|| InspectError::Input {
                arg: p.clone(),
                why: "--platform: write os/arch[/variant]".to_owned(),
            })?,
            None => scenario
                .as_ref()
                .map_or_else(Platform::host, |s| s.platform.clone()),
        };
        let access = RegistryAccess {
            insecure: self.insecure,
            ca_file: self.ca_file.clone(),
            docker_config: self.docker_config.clone(),
            username: self.username.clone(),
            password_env: self.password_env.clone(),
        };
        access.check()?;
        let image_cache = self
            .image_cache
            .clone()
            .unwrap_or_else(crate::cli::default_image_cache);
        let ctx = InputContext {
            scenario: scenario.as_ref(),
            access: &access,
            image_cache: &image_cache,
        };
        let inputs = self
            .images
            .iter()
            .map(|arg| ImageInput::parse(arg, ctx))
            .collect::<Result<Vec<_>, _>>()?;
        let options = InspectOptions {
            platform,
            bandwidth: self.bandwidth,
            top_files: self.top,
            measure_unpack: !self.no_measure,
            work_dir: self
                .work_dir
                .clone()
                .unwrap_or_else(|| std::env::temp_dir().join("stampede-inspect")),
        };
        let mut costs = Vec::with_capacity(inputs.len());
        for input in &inputs {
            costs.push(inspect(input, &options).await?);
        }
        let text = match costs.as_slice() {
            [one] if self.json => to_json(one),
            [one] => image_table(one),
            [a, b] => {
                let d = diff(a, b);
                if self.json {
                    to_json(&serde_json::json!({ "a": a, "b": b, "diff": d }))
                } else {
                    format!("{}\n{}\n{}", image_table(a), image_table(b), diff_table(&d))
                }
            }
            _ => unreachable!("clap takes one or two images"),
        };
        Ok(text)
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).expect("inspect results serialize")
}
