//! `kind = "kubernetes"`: a target that is a real cluster, reached through a kubeconfig. The
//! harness starts no node of its own for it: at the epoch `run` creates the burst's pods on the
//! cluster (`crate::kubernetes`) and records what the cluster reports.
//!
//! What it owns: the target's settings ([`KubeTarget`]) and their value checks ([`problems`]):
//! a burst arrival, variants the cluster can pull (by name: `[variants.registry]` with
//! `mirror = false`; or pushed by the harness to `push_to`; no sidecars), one scenario node per
//! pinned cluster node, a namespace and node names Kubernetes accepts, a registry URL. Shape mistakes (a kubernetes field on another kind, a missing
//! `kubeconfig`) are `file.rs`'s.

use std::path::PathBuf;
use std::time::Duration;

use super::{Arrival, ImageSource, Scenario, TargetKind};
use crate::kubernetes::registry::PushTarget;

/// `[[targets]] kind = "kubernetes"`: where the cluster is and how its pods are placed.
///
/// The pods: one Deployment per variant, `nodes * pods_per_node` replicas placed by the
/// scheduler; with `pin_nodes`, one Deployment per variant and pinned node, `pods_per_node`
/// replicas on each (the scenario's `nodes` must then be the number of pinned nodes).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KubeTarget {
    /// The kubeconfig (its current context). [`Scenario::load`] makes a relative path relative
    /// to the scenario file's directory.
    pub kubeconfig: PathBuf,
    /// Where the pods go; the context's namespace when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Node names (`kubernetes.io/hostname`) to pin the pods to; empty: the scheduler places
    /// them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pin_nodes: Vec<String>,
    /// The container's command, for images without a default one or whose default exits.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// How long the pods may take to become ready before the burst fails (default 10 minutes).
    #[serde(
        default,
        with = "super::opt_span_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
    /// The registry the cluster pulls from (`http://HOST:PORT` or `https://HOST:PORT`): variants
    /// the harness makes (synthetic, layout, mirrored) are pushed there with skopeo before the
    /// epoch, as `HOST:PORT/stampede/<variant>:<digest prefix>`, the same bytes a namespace
    /// target of the scenario pulls from the embedded registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub push_to: Option<String>,
    /// That registry's access log (docker-registry's or nginx's), readable by the harness: what
    /// it served after each epoch is the burst's registry count (bytes, GETs per blob, image
    /// copies in the report). [`Scenario::load`] makes a relative path relative to the
    /// scenario file's directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registry_log: Option<PathBuf>,
}

/// Every value problem of the scenario's kubernetes targets.
pub(super) fn problems(s: &Scenario, problem: &mut impl FnMut(String, String)) {
    for (i, t) in s.targets.iter().enumerate() {
        let TargetKind::Kubernetes(k) = &t.kind else {
            continue;
        };
        let at = |field: &str| format!("targets[{i}].{field}");
        if !matches!(s.arrival, Arrival::Burst) {
            problem(
                at("kind"),
                "a kubernetes target creates every pod at the epoch: it runs arrival.mode = \"burst\" only".into(),
            );
        }
        if t.nodes.is_some() {
            problem(
                at("nodes"),
                "not a setting of kind = \"kubernetes\": the cluster's scheduler places the pods (or pin them with pin_nodes)".into(),
            );
        }
        if let Some(ns) = k.namespace.as_ref().filter(|ns| !is_dns_label(ns)) {
            problem(
                at("namespace"),
                format!("{ns:?} is not a namespace name (lowercase letters, digits and '-', at most 63)"),
            );
        }
        for (j, node) in k.pin_nodes.iter().enumerate() {
            if node.is_empty() || node.len() > 253 || node.chars().any(char::is_whitespace) {
                problem(
                    at(&format!("pin_nodes[{j}]")),
                    format!("{node:?} is not a node name"),
                );
            }
        }
        if !k.pin_nodes.is_empty() && s.nodes as usize != k.pin_nodes.len() {
            problem(
                at("pin_nodes"),
                format!(
                    "names {} node(s) but the scenario has nodes = {}; each scenario node is one pinned cluster node",
                    k.pin_nodes.len(),
                    s.nodes
                ),
            );
        }
        if k.timeout == Some(Duration::ZERO) {
            problem(at("timeout"), "must be more than 0".into());
        }
        if let Some(Err(e)) = k.push_to.as_deref().map(PushTarget::parse) {
            problem(at("push_to"), e);
        }
        variants(s, i, k.push_to.is_some(), problem);
    }
}

/// What a kubernetes target leaves out: warm nodes after the first repetition.
pub(super) fn warnings(s: &Scenario) -> Vec<String> {
    s.targets
        .iter()
        .filter(|t| matches!(t.kind, TargetKind::Kubernetes(_)) && s.repetitions > 1)
        .map(|t| format!(
            "target {}: its pods pull with imagePullPolicy IfNotPresent, so repetitions after the first find the image on the cluster's nodes that pulled it (warm pulls) unless it is removed from them in between",
            t.name
        ))
        .collect()
}

/// The cluster pulls each variant itself, by name: a real registry's image not mirrored
/// through the harness, or any image once the harness pushes it (`push_to`); one image per pod.
fn variants(s: &Scenario, target: usize, pushed: bool, problem: &mut impl FnMut(String, String)) {
    for (j, v) in s.variants.iter().enumerate() {
        let named = matches!(&v.source, ImageSource::Registry(r) if !r.mirror);
        if !named && !pushed {
            problem(
                format!("variants[{j}]"),
                format!(
                    "targets[{target}] is a kubernetes cluster, which pulls variant {} itself by name: give it [variants.registry] image = \"<an image the cluster can pull>\" and mirror = false, or give the target push_to = \"http://HOST:PORT\" (the registry the cluster pulls from) for the harness to push it there",
                    v.name
                ),
            );
        }
        if !v.sidecars.is_empty() {
            problem(
                format!("variants[{j}].sidecars"),
                format!("targets[{target}] is a kubernetes cluster, whose pods run one container here; leave sidecars out"),
            );
        }
    }
}

/// A DNS-1123 label: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters.
fn is_dns_label(s: &str) -> bool {
    let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| ok(c) || c == '-')
        && s.starts_with(ok)
        && s.ends_with(ok)
}

#[cfg(test)]
mod tests {
    use super::super::{Scenario, ScenarioError, TargetKind};

    const VARIANT: &str = "[[variants]]\nname = \"app\"\n[variants.registry]\nimage = \"10.0.0.1:5000/app:1\"\nmirror = false\ninsecure = true\n";

    fn problems(text: &str) -> Vec<String> {
        match Scenario::parse(text, "k.toml", &[]) {
            Err(ScenarioError::Invalid { problems, .. }) => {
                problems.0.iter().map(ToString::to_string).collect()
            }
            other => panic!("expected problems, got {other:?}"),
        }
    }

    #[test]
    fn a_kubernetes_target_parses_and_serializes_back() {
        let text = format!("nodes = 1\npods_per_node = 5\n{VARIANT}[[targets]]\nname = \"lab\"\nkind = \"kubernetes\"\nkubeconfig = \"admin.kubeconfig\"\nnamespace = \"bench\"\npin_nodes = [\"node1\"]\ncommand = [\"sleep\", \"3600\"]\ntimeout = \"3m\"\n");
        let mut s = Scenario::parse(&text, "k.toml", &[]).unwrap();
        s.anchor_paths(std::path::Path::new("/scenarios"));
        let TargetKind::Kubernetes(k) = &s.targets[0].kind else {
            panic!("{:?}", s.targets[0].kind);
        };
        assert_eq!(
            k.kubeconfig,
            std::path::Path::new("/scenarios/admin.kubeconfig")
        );
        assert_eq!(k.namespace.as_deref(), Some("bench"));
        assert_eq!(k.pin_nodes, ["node1"]);
        assert_eq!(k.command, ["sleep", "3600"]);
        assert_eq!(k.timeout, Some(std::time::Duration::from_secs(180)));
        let json = serde_json::to_value(&s.targets[0]).unwrap();
        assert_eq!(json["kind"], "kubernetes");
        assert_eq!(json["kubeconfig"], "/scenarios/admin.kubeconfig");
        assert_eq!(json["timeout"], "3m");
        assert!(s.warnings().iter().all(|w| !w.contains("IfNotPresent")));
        let twice = Scenario::parse(
            &text.replace("pods_per_node = 5", "pods_per_node = 5\nrepetitions = 2"),
            "k.toml",
            &[],
        )
        .unwrap();
        assert!(
            twice
                .warnings()
                .iter()
                .any(|w| w
                    .starts_with("target lab: its pods pull with imagePullPolicy IfNotPresent")),
            "{:?}",
            twice.warnings()
        );
    }

    #[test]
    fn kubernetes_settings_are_checked_with_their_paths() {
        let text = format!("nodes = 2\npods_per_node = 5\n[arrival]\nmode = \"ramp\"\nover = \"1s\"\n{VARIANT}[[variants]]\nname = \"gen\"\n[variants.synthetic]\nlayers = [{{ size = \"1MiB\", files = 1 }}]\n[[targets]]\nkind = \"kubernetes\"\nnamespace = \"Not_A_Name\"\npin_nodes = [\"node1\"]\nnodes = 1\ntimeout = \"0s\"\n[[targets]]\nkind = \"direct\"\nkubeconfig = \"k\"\npin_nodes = []\n");
        let got = problems(&text);
        for want in [
            "targets[0].kubeconfig: required for kind = \"kubernetes\"",
            "targets[1].kubeconfig: not a setting of kind = \"direct\"",
            "targets[1].pin_nodes: not a setting of kind = \"direct\"",
            "targets[0].kind: a kubernetes target creates every pod at the epoch: it runs arrival.mode = \"burst\" only",
            "targets[0].nodes: not a setting of kind = \"kubernetes\"",
            "targets[0].namespace: \"Not_A_Name\" is not a namespace name",
            "targets[0].pin_nodes: names 1 node(s) but the scenario has nodes = 2",
            "targets[0].timeout: must be more than 0",
            "variants[1]: targets[0] is a kubernetes cluster, which pulls variant gen itself by name",
        ] {
            assert!(
                got.iter().any(|p| p.starts_with(want)),
                "missing {want:?} in:\n{}",
                got.join("\n")
            );
        }
        assert!(
            !got.iter().any(|p| p.starts_with("variants[0]")),
            "a registry variant with mirror = false is what the cluster pulls: {got:?}"
        );
    }

    #[test]
    fn a_pushed_variant_needs_a_registry_url() {
        let base = "nodes = 1\npods_per_node = 2\n[[variants]]\nname = \"gen\"\n[variants.synthetic]\nlayers = [{ size = \"1MiB\", files = 1 }]\n[[targets]]\nkind = \"kubernetes\"\nkubeconfig = \"k\"\n";
        let pushed = format!(
            "{base}push_to = \"http://10.200.0.1:5000\"\nregistry_log = \"registry.log\"\n"
        );
        let mut s = Scenario::parse(&pushed, "k.toml", &[]).unwrap();
        s.anchor_paths(std::path::Path::new("/bed"));
        let TargetKind::Kubernetes(k) = &s.targets[0].kind else {
            panic!("{:?}", s.targets[0].kind);
        };
        assert_eq!(k.push_to.as_deref(), Some("http://10.200.0.1:5000"));
        assert_eq!(
            k.registry_log.as_deref(),
            Some(std::path::Path::new("/bed/registry.log"))
        );
        let got = problems(&format!("{base}push_to = \"10.200.0.1:5000\"\n"));
        assert!(
            got.iter()
                .any(|p| p
                    .starts_with("targets[0].push_to: \"10.200.0.1:5000\" is not a registry URL")),
            "{got:?}"
        );
        let got = problems(base);
        assert!(
            got.iter()
                .any(|p| p.starts_with("variants[0]: ") && p.contains("push_to")),
            "{got:?}"
        );
    }
}
