//! The scenario file's shape as TOML writes it: flat tables with optional fields, every table
//! `deny_unknown_fields`, so serde reports unknown keys and wrong types with their line. Turning
//! the shape into the typed [`Scenario`] (which field goes with which kind or mode, defaults that
//! depend on other fields) happens here too, collecting every problem; value checks live in
//! `validate.rs`.

use stampede_oci::Platform;

use std::path::PathBuf;

use super::{
    Arrival, ImageSource, KubeTarget, LayoutSource, Network, Placement, Problems, Readiness,
    RegistrySource, Runtime, Scenario, Slo, Target, TargetKind, Variant, Wave,
};
use crate::image::remote::RegistryAccess;
use crate::image::SyntheticImage;
use crate::registry::RegistryModel;
use crate::scenario::units::Span;

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ScenarioFile {
    name: Option<String>,
    #[serde(default)]
    description: String,
    nodes: u32,
    pods_per_node: u32,
    #[serde(default = "one")]
    repetitions: u32,
    #[serde(default)]
    seed: u64,
    platform: Option<String>,
    #[serde(default)]
    arrival: ArrivalFile,
    variants: Vec<VariantFile>,
    targets: Vec<TargetFile>,
    #[serde(default)]
    registry: RegistryModel,
    #[serde(default)]
    network: Network,
    #[serde(default)]
    runtime: Runtime,
    #[serde(default)]
    readiness: Readiness,
    #[serde(default)]
    slo: Slo,
    model_profile: Option<PathBuf>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ArrivalFile {
    #[serde(default)]
    mode: ArrivalMode,
    over: Option<Span>,
    waves: Option<Vec<Wave>>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
enum ArrivalMode {
    #[default]
    Burst,
    Ramp,
    Waves,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct VariantFile {
    name: String,
    synthetic: Option<SyntheticImage>,
    registry: Option<RegistryFile>,
    layout: Option<LayoutSource>,
    #[serde(default)]
    sidecars: Vec<String>,
}

/// `[variants.registry]` as written; [`RegistrySource`] once checked. Flat (no `flatten`), so
/// `deny_unknown_fields` keeps reporting typos with their line.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistryFile {
    image: String,
    #[serde(default = "yes")]
    mirror: bool,
    #[serde(default)]
    insecure: bool,
    ca_file: Option<PathBuf>,
    docker_config: Option<PathBuf>,
    username: Option<String>,
    password_env: Option<String>,
    /// Refused with a pointer to `password_env`: secrets never live in scenario files.
    password: Option<serde::de::IgnoredAny>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetFile {
    kind: KindFile,
    name: Option<String>,
    url: Option<String>,
    placement: Option<Placement>,
    nodes: Option<u32>,
    kill_owner_after: Option<Span>,
    kubeconfig: Option<PathBuf>,
    namespace: Option<String>,
    pin_nodes: Option<Vec<String>>,
    command: Option<Vec<String>>,
    timeout: Option<Span>,
    push_to: Option<String>,
    registry_log: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
enum KindFile {
    Direct,
    CacheDaemon,
    Mirror,
    DistributionProxy,
    Nginx,
    Kubernetes,
}

fn one() -> u32 {
    1
}

fn yes() -> bool {
    true
}

impl ArrivalMode {
    fn name(self) -> &'static str {
        match self {
            Self::Burst => "burst",
            Self::Ramp => "ramp",
            Self::Waves => "waves",
        }
    }
}

impl KindFile {
    fn name(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::CacheDaemon => "cache-daemon",
            Self::Mirror => "mirror",
            Self::DistributionProxy => "distribution-proxy",
            Self::Nginx => "nginx",
            Self::Kubernetes => "kubernetes",
        }
    }
}

impl ScenarioFile {
    /// The typed scenario, or every problem: those of shape found here (a field that does not go
    /// with its kind or mode) and those of value from [`Scenario::validate`]. Where a shape
    /// problem leaves a gap, a valid placeholder stands in so the value checks still run without
    /// reporting the same mistake twice.
    pub(super) fn into_scenario(self, default_name: &str) -> Result<Scenario, Problems> {
        let mut problems = Problems::default();
        let name = self.name.unwrap_or_else(|| default_name.to_owned());
        let platform = match self.platform {
            None => Platform::host(),
            Some(p) => Platform::parse(&p).unwrap_or_else(|| {
                problems.add(
                    "platform",
                    format!(
                        "{p:?} is not a platform; write os/arch[/variant], e.g. \"linux/amd64\""
                    ),
                );
                Platform::host()
            }),
        };
        let arrival = self.arrival.into_arrival(&mut problems);
        let variants = self
            .variants
            .into_iter()
            .enumerate()
            .map(|(i, v)| v.into_variant(i, &mut problems))
            .collect();
        let targets = self
            .targets
            .into_iter()
            .enumerate()
            .map(|(i, t)| t.into_target(i, &mut problems))
            .collect();
        let scenario = Scenario {
            name,
            description: self.description,
            nodes: self.nodes,
            pods_per_node: self.pods_per_node,
            repetitions: self.repetitions,
            seed: self.seed,
            platform,
            arrival,
            variants,
            targets,
            registry: self.registry,
            network: self.network,
            runtime: self.runtime,
            readiness: self.readiness,
            slo: self.slo,
            model_profile: self.model_profile,
        };
        problems.0.extend(scenario.validate());
        problems.0.is_empty().then_some(scenario).ok_or(problems)
    }
}

impl ArrivalFile {
    fn into_arrival(self, problems: &mut Problems) -> Arrival {
        let mode = self.mode.name();
        if self.mode != ArrivalMode::Ramp && self.over.is_some() {
            problems.add(
                "arrival.over",
                format!("only for mode = \"ramp\", not \"{mode}\""),
            );
        }
        if self.mode != ArrivalMode::Waves && self.waves.is_some() {
            problems.add(
                "arrival.waves",
                format!("only for mode = \"waves\", not \"{mode}\""),
            );
        }
        match self.mode {
            ArrivalMode::Burst => Arrival::Burst,
            ArrivalMode::Ramp => match self.over {
                Some(over) => Arrival::Ramp { over: over.0 },
                None => {
                    problems.add("arrival.over", "required for mode = \"ramp\"");
                    Arrival::Burst
                }
            },
            ArrivalMode::Waves => match self.waves {
                Some(waves) => Arrival::Waves { waves },
                None => {
                    problems.add(
                        "arrival.waves",
                        "required for mode = \"waves\" (one [[arrival.waves]] table per wave)",
                    );
                    Arrival::Burst
                }
            },
        }
    }
}

impl VariantFile {
    fn into_variant(self, index: usize, problems: &mut Problems) -> Variant {
        let given: Vec<&str> = [
            ("synthetic", self.synthetic.is_some()),
            ("registry", self.registry.is_some()),
            ("layout", self.layout.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect();
        if given.len() > 1 {
            problems.add(
                format!("variants[{index}]"),
                format!(
                    "has {} image sources ({}); give exactly one",
                    given.len(),
                    given.join(", ")
                ),
            );
        }
        let source = if let Some(spec) = self.synthetic {
            ImageSource::Synthetic(spec)
        } else if let Some(r) = self.registry {
            if r.password.is_some() {
                problems.add(
                    format!("variants[{index}].registry.password"),
                    "never write a password in a scenario file: put it in an environment variable and name that variable with password_env",
                );
            }
            ImageSource::Registry(RegistrySource {
                image: r.image,
                mirror: r.mirror,
                access: RegistryAccess {
                    insecure: r.insecure,
                    ca_file: r.ca_file,
                    docker_config: r.docker_config,
                    username: r.username,
                    password_env: r.password_env,
                },
            })
        } else if let Some(l) = self.layout {
            ImageSource::Layout(l)
        } else {
            problems.add(
                format!("variants[{index}]"),
                "needs an image source: a [variants.synthetic], [variants.registry] or [variants.layout] table",
            );
            // A placeholder the value checks pass, so the mistake is reported once.
            ImageSource::Layout(LayoutSource {
                path: PathBuf::from("."),
                tag: None,
            })
        };
        Variant {
            name: self.name,
            source,
            sidecars: self.sidecars,
        }
    }
}

impl TargetFile {
    fn into_target(mut self, index: usize, problems: &mut Problems) -> Target {
        self.refuse_foreign(index, problems);
        if self.kind == KindFile::Nginx && self.placement == Some(Placement::Cluster) {
            problems.add(
                format!("targets[{index}].placement"),
                "nginx runs \"shared\" (one for all nodes) or \"per-node\"; \"cluster\" is cache-daemon's mode",
            );
        }
        let kind = match self.kind {
            KindFile::Direct => TargetKind::Direct,
            KindFile::CacheDaemon => TargetKind::CacheDaemon {
                placement: self.placement.unwrap_or_default(),
            },
            KindFile::Mirror => match self.url {
                Some(url) => TargetKind::Mirror { url },
                None => {
                    problems.add(
                        format!("targets[{index}].url"),
                        "required for kind = \"mirror\"",
                    );
                    TargetKind::Direct
                }
            },
            KindFile::DistributionProxy => TargetKind::DistributionProxy,
            KindFile::Nginx => TargetKind::Nginx {
                placement: match self.placement {
                    Some(Placement::PerNode) => Placement::PerNode,
                    _ => Placement::Shared,
                },
            },
            KindFile::Kubernetes => self.kube(index, problems),
        };
        if self.nodes == Some(0) {
            problems.add(
                format!("targets[{index}].nodes"),
                "must be at least 1 (leave it out for every node)",
            );
        }
        let cluster = matches!(
            kind,
            TargetKind::CacheDaemon {
                placement: Placement::Cluster
            }
        );
        if self.kill_owner_after.is_some() && !cluster {
            problems.add(
                format!("targets[{index}].kill_owner_after"),
                "only a cache-daemon target with placement = \"cluster\" has stripe owners to kill",
            );
        }
        Target {
            name: self.name.unwrap_or_else(|| self.kind.name().to_owned()),
            kind,
            nodes: self.nodes,
            kill_owner_after: self.kill_owner_after.map(|s| s.0),
        }
    }

    /// A problem for each field set that does not go with the target's kind.
    fn refuse_foreign(&self, index: usize, problems: &mut Problems) {
        let kube = self.kind == KindFile::Kubernetes;
        let cache = matches!(self.kind, KindFile::CacheDaemon | KindFile::Nginx);
        let foreign = [
            ("url", self.url.is_some() && self.kind != KindFile::Mirror),
            ("placement", self.placement.is_some() && !cache),
            ("kubeconfig", self.kubeconfig.is_some() && !kube),
            ("namespace", self.namespace.is_some() && !kube),
            ("pin_nodes", self.pin_nodes.is_some() && !kube),
            ("command", self.command.is_some() && !kube),
            ("timeout", self.timeout.is_some() && !kube),
            ("push_to", self.push_to.is_some() && !kube),
            ("registry_log", self.registry_log.is_some() && !kube),
        ];
        for (field, _) in foreign.into_iter().filter(|(_, refused)| *refused) {
            problems.add(
                format!("targets[{index}].{field}"),
                format!("not a setting of kind = \"{}\"", self.kind.name()),
            );
        }
    }

    /// `kind = "kubernetes"`'s settings; `kubeconfig` is required.
    fn kube(&mut self, index: usize, problems: &mut Problems) -> TargetKind {
        let kubeconfig = self.kubeconfig.take().unwrap_or_else(|| {
            problems.add(
                format!("targets[{index}].kubeconfig"),
                "required for kind = \"kubernetes\": the kubeconfig file whose current context reaches the cluster",
            );
            PathBuf::new()
        });
        TargetKind::Kubernetes(KubeTarget {
            kubeconfig,
            namespace: self.namespace.take(),
            pin_nodes: self.pin_nodes.take().unwrap_or_default(),
            command: self.command.take().unwrap_or_default(),
            timeout: self.timeout.map(|s| s.0),
            push_to: self.push_to.take(),
            registry_log: self.registry_log.take(),
        })
    }
}
