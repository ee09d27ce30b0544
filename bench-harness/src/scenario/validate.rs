//! Value checks on a typed [`Scenario`]: ranges, unique names, sane image specs, SLOs. Every
//! problem is collected, each with the field path a user would look for (`targets[1].url`,
//! `variants[0].synthetic.layers[2].files`). Also the softer [`warnings`]: allowed, but probably
//! not meant. Shape mistakes (unknown fields, a field that does not go with its kind) are caught
//! earlier, in `file.rs`.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use stampede_oci::reference::is_tag;
use stampede_oci::{Compression, ImageRef, Platform};

use super::units::Span;
use super::{
    Arrival, ImageSource, Placement, PullerKind, RegistrySource, Scenario, TargetKind, Variant,
    MAX_CTR_NODES, MAX_PODS,
};

/// One thing wrong with a scenario.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where: a dotted field path with array indices, `targets[1].url`.
    pub path: String,
    /// What is wrong, and what would be right.
    pub message: String,
}

/// Every problem found in a scenario; displays one per line.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    pub(crate) fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "  {p}")?;
        }
        Ok(())
    }
}

/// Every problem of `s`, in the order of the file's sections.
pub(super) fn problems(s: &Scenario) -> Vec<Problem> {
    let mut found = Problems::default();
    name_and_counts(s, &mut found);
    arrival(s, &mut found);
    variants(s, &mut found);
    for (i, v) in s.variants.iter().enumerate() {
        sidecars(s, i, v, &mut found);
    }
    targets(s, &mut found);
    super::kube::problems(s, &mut |path, message| found.add(path, message));
    runtime(s, &mut found);
    limits(s, &mut found);
    found.0
}

/// The run's name, and the counts that must be at least 1.
fn name_and_counts(s: &Scenario, found: &mut Problems) {
    let name_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if s.name.is_empty() || !s.name.chars().all(name_char) {
        found.add(
            "name",
            format!(
                "{:?}: write letters, digits, '.', '_' or '-' (it names the run directory)",
                s.name
            ),
        );
    }
    for (field, value) in [
        ("nodes", s.nodes),
        ("pods_per_node", s.pods_per_node),
        ("repetitions", s.repetitions),
        (
            "runtime.max_concurrent_downloads",
            s.runtime.max_concurrent_downloads,
        ),
    ] {
        if value == 0 {
            found.add(field, "must be at least 1");
        }
    }
}

/// `arrival`, and the pods it adds up to.
fn arrival(s: &Scenario, found: &mut Problems) {
    match &s.arrival {
        Arrival::Burst => {}
        Arrival::Ramp { over } => {
            if over.is_zero() {
                found.add(
                    "arrival.over",
                    "must be positive (for pods all at once, use mode = \"burst\")",
                );
            }
        }
        Arrival::Waves { waves } => {
            if waves.is_empty() {
                found.add("arrival.waves", "needs at least one wave");
            }
            let mut previous = Duration::ZERO;
            for (i, w) in waves.iter().enumerate() {
                if w.pods_per_node == 0 {
                    found.add(
                        format!("arrival.waves[{i}].pods_per_node"),
                        "must be at least 1",
                    );
                }
                if w.at < previous {
                    found.add(
                        format!("arrival.waves[{i}].at"),
                        format!(
                            "{} is before the previous wave's {}; waves must be in order",
                            Span(w.at),
                            Span(previous)
                        ),
                    );
                }
                previous = previous.max(w.at);
            }
        }
    }
    let total_pods = s.total_pods_u64();
    if total_pods > MAX_PODS {
        found.add(
            "nodes",
            format!("{total_pods} pods in total is more than the {MAX_PODS} a run can simulate"),
        );
    }
}

/// `[[variants]]`: names, and each image source.
fn variants(s: &Scenario, found: &mut Problems) {
    if s.variants.is_empty() {
        found.add("variants", "needs at least one [[variants]] table");
    }
    let mut seen = BTreeSet::new();
    for (i, v) in s.variants.iter().enumerate() {
        if !is_repo_component(&v.name) {
            found.add(
                format!("variants[{i}].name"),
                format!(
                    "{:?}: write [a-z0-9][a-z0-9._-]* (it becomes a repository name)",
                    v.name
                ),
            );
        }
        if !seen.insert(v.name.as_str()) {
            found.add(
                format!("variants[{i}].name"),
                format!("{:?} is used by an earlier variant", v.name),
            );
        }
        match &v.source {
            ImageSource::Synthetic(spec) => {
                for p in spec.problems().0 {
                    found.add(format!("variants[{i}].synthetic.{}", p.path), p.message);
                }
            }
            ImageSource::Registry(r) => registry(r, &format!("variants[{i}].registry"), found),
            ImageSource::Layout(l) => {
                if l.path.as_os_str().is_empty() {
                    found.add(
                        format!("variants[{i}].layout.path"),
                        "must name the layout directory",
                    );
                }
                if let Some(tag) = l.tag.as_deref().filter(|t| !is_tag(t)) {
                    found.add(
                        format!("variants[{i}].layout.tag"),
                        format!("{tag:?} is not a tag ([A-Za-z0-9_][A-Za-z0-9._-]{{0,127}})"),
                    );
                }
            }
        }
    }
}

/// `[[targets]]`: names, mirror URLs, peers in front of variants pulled straight.
fn targets(s: &Scenario, found: &mut Problems) {
    if s.targets.is_empty() {
        found.add("targets", "needs at least one [[targets]] table");
    }
    let mut seen = BTreeSet::new();
    for (i, t) in s.targets.iter().enumerate() {
        if !is_repo_component(&t.name) {
            found.add(
                format!("targets[{i}].name"),
                format!("{:?}: write [a-z0-9][a-z0-9._-]*", t.name),
            );
        }
        if !seen.insert(t.name.as_str()) {
            found.add(
                format!("targets[{i}].name"),
                format!(
                    "{:?} is used by an earlier target; give each target of the same kind a name",
                    t.name
                ),
            );
        }
        if let TargetKind::Mirror { url } = &t.kind {
            if let Err(why) = check_url(url) {
                found.add(format!("targets[{i}].url"), format!("{url:?}: {why}"));
            }
        }
        if matches!(
            t.kind,
            TargetKind::DistributionProxy | TargetKind::Nginx { .. }
        ) {
            for v in s.variants.iter().filter(|v| pulled_straight(v)) {
                found.add(
                    format!("targets[{i}].kind"),
                    format!(
                        "{} is started in front of the embedded registry, but variant {} is pulled straight from a real registry (mirror = false); set mirror = true",
                        t.kind.name(),
                        v.name
                    ),
                );
            }
        }
    }
}

/// `[runtime] puller` and `[network]`: what each puller and nodes in namespaces can do.
fn runtime(s: &Scenario, found: &mut Problems) {
    if s.runtime.puller != PullerKind::Harness {
        for (i, v) in s.variants.iter().enumerate() {
            if pulled_straight(v) {
                found.add(
                    format!("variants[{i}].registry.mirror"),
                    format!(
                        "puller = \"{}\" pulls from the embedded registry or a target in front of it, without credentials; set mirror = true",
                        s.runtime.puller.name()
                    ),
                );
            }
        }
    }
    network(s, found);
    if s.runtime.puller == PullerKind::Ctr && s.total_nodes() > MAX_CTR_NODES {
        found.add(
            "runtime.puller",
            format!(
                "\"ctr\" runs one containerd per node; this scenario has {} nodes, at most {MAX_CTR_NODES} are allowed",
                s.total_nodes()
            ),
        );
    }
}

/// `[registry] throttle`, `[readiness]` and `[slo]` values.
fn limits(s: &Scenario, found: &mut Problems) {
    if let Some(throttle) = &s.registry.throttle {
        if !(throttle.requests_per_second.is_finite() && throttle.requests_per_second > 0.0) {
            found.add(
                "registry.throttle.requests_per_second",
                format!("{} must be a positive number", throttle.requests_per_second),
            );
        }
    }
    let fraction = s.readiness.read_fraction;
    if !(0.0..=1.0).contains(&fraction) {
        found.add(
            "readiness.read_fraction",
            format!("{fraction} is not in [0, 1]"),
        );
    }
    for (field, value) in [
        ("readiness.probe_period", Some(s.readiness.probe_period)),
        ("slo.p95_ready", s.slo.p95_ready),
        ("slo.p99_pull", s.slo.p99_pull),
    ] {
        if value.is_some_and(|d| d.is_zero()) {
            found.add(field, "must be positive");
        }
    }
}

/// `[network]`: what nodes in namespaces cannot do. (The placements only they can run are
/// [`run_problems`]: the fleet model runs those with nodes as tasks too.)
fn network(s: &Scenario, found: &mut Problems) {
    if !s.network.namespaces() {
        return;
    }
    for (i, t) in s.targets.iter().enumerate() {
        let why = match t.kind {
            TargetKind::DistributionProxy => "distribution-proxy runs on the host's loopback, which nodes in namespaces cannot reach; compare against nginx or cache-daemon, or use [network] nodes = \"tasks\"",
            TargetKind::Mirror { .. } => "a mirror the harness did not start cannot be reached from nodes in namespaces (their network is a bridge of their own); use it with [network] nodes = \"tasks\"",
            _ => continue,
        };
        found.add(format!("targets[{i}].kind"), why);
    }
    for (i, v) in s.variants.iter().enumerate() {
        if pulled_straight(v) {
            found.add(
                format!("variants[{i}].registry.mirror"),
                "nodes in namespaces reach only the embedded registry (their network is a bridge of their own); set mirror = true",
            );
        }
    }
    if s.total_nodes() as usize > stampede_lab::fabric::MAX_NODES {
        found.add(
            "nodes",
            format!(
                "nodes in namespaces share one bridge, which takes at most {} nodes; this scenario has {}",
                stampede_lab::fabric::MAX_NODES,
                s.total_nodes()
            ),
        );
    }
}

/// `variants[i].sidecars`: each names another variant, once; the pod's images all come from the
/// embedded registry, so that in every burst they reach the node through the same target (a
/// `mirror = false` variant is pulled straight from its own registry instead).
fn sidecars(s: &Scenario, i: usize, v: &Variant, found: &mut Problems) {
    if !v.sidecars.is_empty() && pulled_straight(v) {
        found.add(
            format!("variants[{i}].sidecars"),
            format!(
                "variant {} is pulled straight from its registry (mirror = false), but a pod's images must all come through the burst's target from the embedded registry; set mirror = true",
                v.name
            ),
        );
    }
    let mut seen = BTreeSet::new();
    for (j, name) in v.sidecars.iter().enumerate() {
        let path = format!("variants[{i}].sidecars[{j}]");
        if !seen.insert(name.as_str()) {
            found.add(path, format!("{name:?} is listed twice"));
        } else if *name == v.name {
            found.add(
                path,
                format!("{name:?} is this variant itself; name other variants (its own image is pulled anyway)"),
            );
        } else {
            match s.variant(name) {
                None => {
                    let names: Vec<&str> = s.variants.iter().map(|o| o.name.as_str()).collect();
                    found.add(
                        path,
                        format!(
                            "{name:?} is not a variant of this scenario (variants: {})",
                            names.join(", ")
                        ),
                    );
                }
                Some(other) if pulled_straight(other) => found.add(
                    path,
                    format!(
                        "variant {name} is pulled straight from its registry (mirror = false), but a sidecar's image must come through the burst's target from the embedded registry like the main image; set mirror = true on {name}"
                    ),
                ),
                Some(_) => {}
            }
        }
    }
}

fn registry(r: &RegistrySource, path: &str, found: &mut Problems) {
    if let Err(e) = ImageRef::parse(&r.image) {
        found.add(
            format!("{path}.image"),
            format!(
                "{:?}: {e}; write registry/repo:tag or registry/repo@sha256:<hex>",
                r.image
            ),
        );
    }
    if let Err(e) = r.access.check() {
        found.add(path, e.to_string());
    }
    if let Some(var) = &r.access.password_env {
        let mut chars = var.chars();
        let valid = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            found.add(
                format!("{path}.password_env"),
                format!("{var:?} is not an environment variable name (the password goes in the variable, not here)"),
            );
        }
    }
    if let Some(user) = r
        .access
        .username
        .as_deref()
        .filter(|u| u.is_empty() || u.contains(':'))
    {
        found.add(
            format!("{path}.username"),
            format!("{user:?}: must be non-empty and without ':'"),
        );
    }
}

pub(super) fn warnings(s: &Scenario) -> Vec<String> {
    let mut out = Vec::new();
    for v in &s.variants {
        match &v.source {
            ImageSource::Synthetic(spec) => {
                let has_platform = spec
                    .platforms
                    .iter()
                    .filter_map(|p| Platform::parse(p))
                    .any(|p| p.runs_on(&s.platform));
                if !has_platform {
                    out.push(format!(
                        "variant {}: the image has no {} manifest (it has {}); every pull will fail as platform_missing",
                        v.name,
                        s.platform,
                        spec.platforms.join(", ")
                    ));
                }
                if spec.compression == Compression::None && spec.level.is_some() {
                    out.push(format!(
                        "variant {}: level is ignored for compression = \"none\"",
                        v.name
                    ));
                }
            }
            ImageSource::Registry(r) if !r.mirror => out.push(format!(
                "variant {}: nodes pull straight from {} (mirror = false): registry-side accounting (egress, requests, blob GETs) is unavailable for it, and [registry] egress, latency and throttle do not apply (node_link is paced by the nodes)",
                v.name, r.image
            )),
            ImageSource::Registry(_) | ImageSource::Layout(_) => {}
        }
        if pulled_straight(v) && s.registry.netns_rate.is_some() {
            out.push(format!(
                "variant {}: registry.netns_rate shapes only the embedded registry's link; this variant is pulled straight from its registry",
                v.name
            ));
        }
    }
    out.extend(super::kube::warnings(s));
    out
}

/// Whether nodes pull `v` straight from a real registry (`mirror = false`), not from the
/// embedded one.
fn pulled_straight(v: &Variant) -> bool {
    matches!(&v.source, ImageSource::Registry(r) if !r.mirror)
}

/// `[a-z0-9][a-z0-9._-]*`: a repository path component, lower case.
fn is_repo_component(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
}

fn check_url(url: &str) -> Result<(), &'static str> {
    let uri: http::Uri = url.parse().map_err(|_| "not a URL")?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err("write http://host[:port] or https://host[:port]");
    }
    if uri.authority().is_none() {
        return Err("has no host");
    }
    Ok(())
}

/// What only `run` refuses: a target that puts a process inside every node (cache-daemon in
/// cluster mode, nginx per node) needs nodes in namespaces. `bench-harness model` runs the same
/// scenario either way, so this is checked by `run` before anything is built, not at load.
pub(super) fn run_problems(s: &Scenario) -> Vec<Problem> {
    if s.network.namespaces() {
        return Vec::new();
    }
    s.targets
        .iter()
        .enumerate()
        .filter_map(|(i, t)| {
            let (TargetKind::CacheDaemon { placement } | TargetKind::Nginx { placement }) = t.kind
            else {
                return None;
            };
            let inside_every_node = placement == Placement::Cluster
                || matches!(t.kind, TargetKind::Nginx { placement: Placement::PerNode });
            inside_every_node.then(|| Problem {
                path: format!("targets[{i}].placement"),
                message: format!(
                    "{} with placement = \"{}\" runs a process inside every node, so `run` needs [network] nodes = \"namespaces\" (or model the scenario with `bench-harness model`)",
                    t.kind.name(),
                    placement.name()
                ),
            })
        })
        .collect()
}
