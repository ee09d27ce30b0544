//! What was run, for the top of the run report: the modelled-run note, the facts (when, how
//! long, which machine and revision, pods, variants, targets, registry, runtime, readiness),
//! the warnings to read before the numbers, and where each image came from.
//!
//! Everything here is read from the result as stored; `run.rs` places it in the header.

use super::human;
use super::section::scheduled_pods;
use super::table::{Cell, Emphasis, Table};
use crate::result::RunResult;
use crate::scenario::units::Span;
use crate::scenario::{Arrival, ImageSource, Placement, PullerKind, Scenario, TargetKind};

/// One line of run facts: a label and its value.
pub type Fact = (&'static str, Cell);

/// For a modelled run, the line that says so (and with what profile); `None` when measured.
pub fn modelled(r: &RunResult) -> Option<String> {
    let m = r.model.as_ref()?;
    Some(format!(
        "these numbers come from the fleet model (bench-harness model), not from a measured burst; machine profile {}{}. See bench-harness/README.md (Fleet model) for what it models and where it misses.",
        m.profile,
        m.profile_path
            .as_deref()
            .map_or_else(String::new, |p| format!(" ({p})"))
    ))
}

/// The run's facts for the top of a report: when, how long, where, what was run.
pub fn facts(r: &RunResult) -> Vec<Fact> {
    let sc = &r.scenario;
    let m = &r.machine;
    let mut machine = vec![human::count(m.cores, "core")];
    machine.extend(m.cpu_model.clone());
    machine.extend(m.memory_bytes.map(|b| format!("{} RAM", human::bytes(b))));
    machine.push(format!("{} {}", m.os, m.arch));
    machine.extend(m.kernel.as_ref().map(|k| format!("kernel {k}")));
    let revision = match (&m.git_revision, m.git_dirty) {
        (Some(rev), Some(true)) => {
            Cell::with(format!("{rev} (uncommitted changes)"), Emphasis::Code)
        }
        (Some(rev), _) => Cell::with(rev.clone(), Emphasis::Code),
        (None, _) => Cell::from("unknown"),
    };
    let started = humantime::format_rfc3339_seconds(r.started_at).to_string();
    vec![
        ("started", started.into()),
        ("duration", human::duration(r.duration).into()),
        ("machine", machine.join(", ").into()),
        ("revision", revision),
        ("pods", pods_line(sc).into()),
        ("variants", variants_line(r).into()),
        ("targets", targets_line(sc).into()),
        ("registry", registry_line(sc).into()),
        ("runtime", runtime_line(sc).into()),
        ("readiness", readiness_line(sc).into()),
    ]
}

/// What the reader must know before trusting the numbers: the run's own warnings (host-bound
/// bursts, error samples, scenario warnings), then one line per (variant, target) with failed
/// pods.
pub fn warnings(r: &RunResult) -> Vec<String> {
    let mut out = r.warnings.clone();
    for s in &r.series {
        let failures = s.data.failures();
        if failures.is_empty() {
            continue;
        }
        let kinds: Vec<String> = failures.iter().map(|(k, n)| format!("{k} {n}")).collect();
        out.push(format!(
            "errors: {} of {} failed in {}/{} ({})",
            s.data.failed_pods(),
            human::count(scheduled_pods(s), "pod"),
            s.variant,
            s.target,
            kinds.join(", ")
        ));
    }
    out
}

/// Where each variant's image came from, for variants not generated here (a real registry or an
/// OCI layout): the source, its digests, and who served it. `None` when every image is synthetic.
pub fn image_sources(r: &RunResult) -> Option<Table> {
    let sourced: Vec<_> = r
        .images
        .iter()
        .filter(|(_, f)| f.details["source"].is_object())
        .collect();
    if sourced.is_empty() {
        return None;
    }
    let mut t = Table::text_then_numbers(
        &[
            "variant",
            "source",
            "digest",
            "platform manifest",
            "served by",
        ],
        &["layer bytes"],
    );
    for (variant, facts) in sourced {
        let s = &facts.details["source"];
        let text = |key: &str| s[key].as_str().unwrap_or("").to_owned();
        let code = |key: &str| match text(key).as_str() {
            "" => Cell::from("-"),
            t => Cell::with(t, Emphasis::Code),
        };
        let (source, served) = match text("kind").as_str() {
            "registry" if s["mirrored"] == true => (
                format!("registry {}", text("reference")),
                "embedded registry (mirrored once)",
            ),
            "registry" => (
                format!("registry {}", text("reference")),
                "the real registry (no registry-side accounting)",
            ),
            "layout" => (
                match text("tag").as_str() {
                    "" => format!("OCI layout {}", text("path")),
                    tag => format!("OCI layout {} tag {tag}", text("path")),
                },
                "embedded registry",
            ),
            kind => (kind.to_owned(), "embedded registry"),
        };
        t.row([
            variant.clone().into(),
            source.into(),
            code("digest"),
            platform_manifest(&facts.details, &r.scenario.platform),
            served.into(),
            human::bytes(facts.compressed_bytes).into(),
        ]);
    }
    Some(t)
}

/// The manifest the nodes pull for their platform: the source's `platform_digest` when it
/// recorded one, else the entry of the image's `platforms` that runs on `platform` (synthetic
/// images list every platform they were generated for). A plain manifest is its own.
fn platform_manifest(details: &serde_json::Value, platform: &stampede_oci::Platform) -> Cell {
    if let Some(d) = details["source"]["platform_digest"].as_str() {
        return Cell::with(d, Emphasis::Code);
    }
    let index = details["top"]["media_type"]
        .as_str()
        .is_some_and(|m| m.contains("index") || m.contains("manifest.list"));
    let chosen = details["platforms"].as_array().and_then(|all| {
        all.iter().find(|p| {
            serde_json::from_value::<stampede_oci::Platform>(p["platform"].clone())
                .is_ok_and(|p| p.runs_on(platform))
        })
    });
    match chosen.and_then(|p| p["manifest"]["digest"].as_str()) {
        Some(d) if index => Cell::with(d, Emphasis::Code),
        _ if !index && details["top"].is_object() => Cell::from("the image is one manifest"),
        _ => Cell::from("-"),
    }
}

fn pods_line(sc: &Scenario) -> String {
    let shape = match &sc.arrival {
        Arrival::Burst | Arrival::Ramp { .. } => format!(
            "{} x {} = {} per repetition",
            human::count(sc.nodes, "node"),
            human::count(sc.pods_per_node, "pod"),
            sc.total_pods()
        ),
        Arrival::Waves { .. } => format!(
            "{} on {} per repetition",
            human::count(sc.total_pods(), "pod"),
            human::count(sc.total_nodes(), "node")
        ),
    };
    format!(
        "{shape}, {}, {}, seed {}, {}",
        sc.arrival,
        human::count(sc.repetitions, "repetition"),
        sc.seed,
        sc.platform
    )
}

fn variants_line(r: &RunResult) -> String {
    r.scenario
        .variants
        .iter()
        .map(|v| {
            let size = r
                .images
                .get(&v.name)
                .filter(|i| i.compressed_bytes > 0)
                .map_or_else(String::new, |i| {
                    format!(", {} to pull", human::bytes(i.compressed_bytes))
                });
            let sidecars = if v.sidecars.is_empty() {
                String::new()
            } else {
                let per_pod = r
                    .pod_image_bytes(&v.name)
                    .map_or_else(String::new, |b| format!(", {} per pod", human::bytes(b)));
                format!(", with sidecars {}{per_pod}", v.sidecars.join(", "))
            };
            let source = match &v.source {
                ImageSource::Synthetic(spec) => {
                    let (layers, compression) = (spec.layers.len(), spec.compression.name());
                    let s = if layers == 1 { "" } else { "s" };
                    format!("{layers} {compression} layer{s}")
                }
                ImageSource::Registry(src) => format!("registry {}", src.image),
                ImageSource::Layout(src) => format!("OCI layout {}", src.path.display()),
            };
            format!("{} ({source}{size}{sidecars})", v.name)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn targets_line(sc: &Scenario) -> String {
    sc.targets
        .iter()
        .map(|t| {
            let what = match &t.kind {
                TargetKind::Direct => "straight from the registry",
                TargetKind::CacheDaemon { placement } => match placement {
                    Placement::Shared => "one cache-daemon shared by all nodes",
                    Placement::PerNode => "a cache-daemon per node",
                    Placement::Cluster => "a cache-daemon per node in cluster mode",
                },
                TargetKind::Mirror { url } => &format!("mirror at {url}"),
                TargetKind::DistributionProxy => "Docker Distribution pull-through proxy",
                TargetKind::Nginx {
                    placement: Placement::PerNode,
                } => "an nginx caching proxy per node",
                TargetKind::Nginx { .. } => "nginx caching proxy",
                TargetKind::Kubernetes(k) => match &k.namespace {
                    Some(ns) => &format!("real pods on a Kubernetes cluster, namespace {ns}"),
                    None => "real pods on a Kubernetes cluster",
                },
            };
            format!("{} ({what})", t.name)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn registry_line(sc: &Scenario) -> String {
    let reg = &sc.registry;
    let [egress, link] = [reg.egress, reg.node_link]
        .map(|b| b.map_or_else(|| "unlimited".to_owned(), |b| b.to_string()));
    let throttle = match &reg.throttle {
        Some(t) => format!(
            "throttled above {} req/s (burst {})",
            t.requests_per_second, t.burst
        ),
        None => "no throttling".to_owned(),
    };
    let kernel = reg.netns_rate.map_or_else(String::new, |r| {
        format!(", behind a {r} tc tbf-shaped link in its own network namespace")
    });
    format!(
        "egress {egress}, node link {link}, latency {}, {throttle}{kernel}",
        Span(reg.latency.0)
    )
}

fn runtime_line(sc: &Scenario) -> String {
    let rt = &sc.runtime;
    let pulls = match rt.parallel_image_pulls_limit() {
        Some(1) => "serialized image pulls".to_owned(),
        Some(n) => format!("{n} parallel image pulls"),
        None => "unlimited parallel image pulls".to_owned(),
    };
    format!(
        "{} concurrent layer downloads, {pulls}, unpack {}, pulled by {}",
        rt.max_concurrent_downloads,
        if rt.unpack { "on" } else { "off" },
        match rt.puller {
            PullerKind::Harness => "the harness's client",
            PullerKind::Skopeo => "skopeo copy",
            PullerKind::Ctr => "ctr images pull",
        }
    )
}

fn readiness_line(sc: &Scenario) -> String {
    let rd = &sc.readiness;
    format!(
        "reads {} of files, init {}, probe every {} from {}",
        human::percent(rd.read_fraction),
        Span(rd.init),
        Span(rd.probe_period),
        Span(rd.probe_initial_delay)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_names_the_shaped_link_and_the_puller() {
        let base = "nodes = 2\npods_per_node = 1\n[[variants]]\nname = \"app\"\n[[variants.synthetic.layers]]\nsize = \"1MiB\"\nfiles = 4\n[[targets]]\nkind = \"direct\"\n";
        let plain = Scenario::parse(base, "test", &[]).unwrap();
        assert!(!registry_line(&plain).contains("tbf"));
        assert!(runtime_line(&plain).ends_with("pulled by the harness's client"));
        let shaped = Scenario::parse(
            &format!(
                "{base}[registry]\nnetns_rate = \"200Mbit\"\n[runtime]\npuller = \"skopeo\"\n"
            ),
            "test",
            &[],
        )
        .unwrap();
        assert!(
            registry_line(&shaped)
                .ends_with("behind a 200Mbit tc tbf-shaped link in its own network namespace"),
            "{}",
            registry_line(&shaped)
        );
        assert!(runtime_line(&shaped).ends_with("pulled by skopeo copy"));
    }
}
