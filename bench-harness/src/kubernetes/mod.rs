//! The `kubernetes` target: a burst of real pods on a real cluster, reached through a
//! kubeconfig. At the epoch it creates one Deployment per variant image (and per node when the
//! pods are pinned), `replicas` pods each; it watches the pods and their events until every pod
//! is ready or has failed, and records each pod's milestones from the epoch into the burst's
//! [`Recorder`]: queue (created to scheduled), pull (kubelet's `Pulling` to `Pulled`, beside
//! kubelet's own reported pull time), start and ready. Then it deletes what it created, also
//! when the burst failed.
//!
//! What it owns: the Deployments' shape ([`deployment`]), the watch loop, clean-up, and the
//! errors an operator can act on (a kubeconfig that does not reach a cluster, a namespace
//! without rights, an image that cannot be pulled). What it does not: the API client
//! (`stampede_kube`), the milestone bookkeeping ([`milestones`]), the histograms, the registry
//! the cluster pulls from (pushing the harness's images there and reading its access log:
//! [`registry`]).
//!
//! Every object carries the label `stampede.dev/burst=<id>`; clean-up deletes by that label, so
//! nothing else in the namespace is touched.

pub mod milestones;
pub mod registry;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use stampede_kube::{Access, KubeClient, KubeError, Watch};

use crate::run::recorder::{FailureKind, Recorder};
use milestones::Milestones;

/// The label every object of a burst carries.
pub const BURST_LABEL: &str = "stampede.dev/burst";
/// How long the pods may take to become ready (or fail) before the burst gives up.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(600);
/// How long clean-up waits for the burst's pods to be gone.
const CLEANUP_LIMIT: Duration = Duration::from_secs(120);

/// What one burst creates.
#[derive(Debug, Clone)]
pub struct KubeBurstConfig {
    /// The kubeconfig (its current context).
    pub kubeconfig: PathBuf,
    /// Where the pods go; the context's namespace when `None`.
    pub namespace: Option<String>,
    /// `(variant, image)` pairs: one Deployment each (per node when pinned).
    pub images: Vec<(String, String)>,
    /// Pods per Deployment.
    pub replicas: u32,
    /// Nodes to pin the pods to (`kubernetes.io/hostname`), `replicas` on each; empty: the
    /// scheduler places them.
    pub nodes: Vec<String>,
    /// The containers' command (images without a default one, or to keep them running).
    pub command: Vec<String>,
    /// Give up on pods not settled by then.
    pub deadline: Duration,
}

/// What a burst saw, pod by pod.
#[derive(Debug, Clone, Default)]
pub struct KubeBurst {
    /// Each pod's milestones, by pod name.
    pub pods: BTreeMap<String, Milestones>,
}

impl KubeBurst {
    /// Records every pod into `recorder`: ready pods' phases, failed pods by kind.
    pub fn record(&self, recorder: &mut Recorder) {
        for m in self.pods.values() {
            match (m.pod_times(), &m.failed) {
                (Some(t), _) => recorder.pod(&t),
                (None, Some((kind, _))) => recorder.failed(*kind),
                (None, None) => recorder.failed(FailureKind::Timeout),
            }
        }
    }

    /// kubelet's reported pull times, for pods whose node pulled.
    pub fn kubelet_pulls(&self) -> Vec<Duration> {
        self.pods.values().filter_map(|m| m.kubelet_pull).collect()
    }
}

/// Why a burst on a cluster could not be run.
#[derive(Debug, thiserror::Error)]
pub enum KubeTargetError {
    /// The kubeconfig cannot be used, or the cluster does not answer (the message carries the
    /// cause, so it is not also a source: an error chain would say it twice).
    #[error("kubernetes target: {0}")]
    Cluster(KubeError),
    #[error("kubernetes target: the kubeconfig's user may not create Deployments in namespace {namespace}: {message}")]
    Forbidden {
        namespace: String,
        /// The API server's words.
        message: String,
    },
    #[error("kubernetes target: namespace {0} does not exist")]
    NoNamespace(String),
    /// A pod's image could not be pulled (the pods were deleted).
    #[error("kubernetes target: pod {pod} cannot pull its image: {message}")]
    Pull {
        /// The first pod that failed.
        pod: String,
        /// kubelet's words.
        message: String,
    },
    /// A variant's image is not one the cluster can pull by name (validation refuses such a
    /// scenario; this guards scenarios built in code).
    #[error("kubernetes target: variant {variant} has no image the cluster can pull by name; give it [variants.registry] with mirror = false, or give the target push_to")]
    NotNamed { variant: String },
    /// The variant's image could not be pushed to the cluster's registry.
    #[error("kubernetes target: variant {variant}")]
    Push {
        variant: String,
        #[source]
        source: registry::PushError,
    },
    /// Pods were still not ready at the deadline (they were deleted).
    #[error("kubernetes target: {pending} of {total} pods not ready within {deadline:?}")]
    Deadline {
        /// Pods not settled.
        pending: usize,
        /// Pods in the burst.
        total: usize,
        deadline: Duration,
    },
}

/// One Deployment of a burst: `name`, `replicas` pods of `image`, pinned to `node` if given.
pub fn deployment(
    burst: &str,
    name: &str,
    image: &str,
    node: Option<&str>,
    config: &KubeBurstConfig,
) -> Value {
    let labels = json!({ BURST_LABEL: burst, "stampede.dev/deployment": name });
    let mut container = json!({"name": "pod", "image": image, "imagePullPolicy": "IfNotPresent"});
    if !config.command.is_empty() {
        container["command"] = json!(config.command);
    }
    let mut spec = json!({
        "automountServiceAccountToken": false,
        "enableServiceLinks": false,
        "terminationGracePeriodSeconds": 0,
        "containers": [container],
    });
    if let Some(node) = node {
        spec["nodeSelector"] = json!({ "kubernetes.io/hostname": node });
    }
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": config.replicas,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": spec},
        },
    })
}

/// Runs one burst: creates the Deployments at the epoch (now), watches until every pod settled
/// or the deadline, deletes everything it created, and returns what it saw.
///
/// # Errors
/// [`KubeTargetError`]: the cluster is unreachable or refuses, an image cannot be pulled, the
/// deadline passed. Whatever was created is deleted first.
pub async fn burst(config: &KubeBurstConfig) -> Result<KubeBurst, KubeTargetError> {
    let access = Access::from_kubeconfig(&config.kubeconfig).map_err(KubeTargetError::Cluster)?;
    let namespace = config
        .namespace
        .clone()
        .unwrap_or_else(|| access.namespace.clone());
    let client = KubeClient::new(access).map_err(KubeTargetError::Cluster)?;
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let id = format!("b{}-{}", std::process::id(), millis % 100_000_000);
    let api = Api {
        client,
        namespace,
        id,
    };
    let outcome = api.run(config).await;
    let cleaned = api.clean_up().await;
    let seen = outcome?;
    cleaned?;
    Ok(seen)
}

/// The burst's view of the API: one namespace, one burst label.
struct Api {
    client: KubeClient,
    namespace: String,
    id: String,
}

impl Api {
    fn selector(&self) -> String {
        format!("labelSelector={BURST_LABEL}%3D{}", self.id)
    }

    async fn run(&self, config: &KubeBurstConfig) -> Result<KubeBurst, KubeTargetError> {
        let ns = &self.namespace;
        // Start watching before creating anything: list for a resource version, watch from it.
        let pods_path = format!("/api/v1/namespaces/{ns}/pods?{}", self.selector());
        let events_path =
            format!("/api/v1/namespaces/{ns}/events?fieldSelector=involvedObject.kind%3DPod");
        let timeout = config.deadline.as_secs().max(1);
        let mut pod_watch = self.watch_from_now(&pods_path, timeout).await?;
        let mut event_watch = self.watch_from_now(&events_path, timeout).await?;

        let epoch = Instant::now();
        let total = self.create_all(config).await?;
        let mut seen = KubeBurst::default();
        let deadline = tokio::time::sleep(config.deadline);
        tokio::pin!(deadline);
        loop {
            let settled = seen.pods.values().filter(|m| m.settled()).count();
            if seen.pods.len() >= total && settled == seen.pods.len() {
                break;
            }
            if let Some((pod, m)) = seen.pods.iter().find(|(_, m)| m.failed.is_some()) {
                let message = m.failed.as_ref().map(|f| f.1.clone()).unwrap_or_default();
                return Err(KubeTargetError::Pull {
                    pod: pod.clone(),
                    message,
                });
            }
            tokio::select! {
                () = &mut deadline => {
                    let pending = total.saturating_sub(settled);
                    return Err(KubeTargetError::Deadline { pending, total, deadline: config.deadline });
                }
                ev = pod_watch.next() => match ev.map_err(KubeTargetError::Cluster)? {
                    Some(ev) => {
                        let name = ev["object"]["metadata"]["name"].as_str().unwrap_or("").to_owned();
                        if !name.is_empty() && ev["type"].as_str() != Some("DELETED") {
                            seen.pods.entry(name).or_default().pod(&ev["object"], epoch.elapsed());
                        }
                    }
                    None => return Err(self.ended("pods")),
                },
                ev = event_watch.next() => match ev.map_err(KubeTargetError::Cluster)? {
                    Some(ev) => {
                        let name = ev["object"]["involvedObject"]["name"].as_str().unwrap_or("");
                        if let Some(m) = seen.pods.get_mut(name) {
                            m.event(&ev["object"], epoch.elapsed());
                        }
                    }
                    None => return Err(self.ended("events")),
                },
            }
        }
        Ok(seen)
    }

    /// Lists `path` for a resource version and watches it from there.
    async fn watch_from_now(&self, path: &str, timeout: u64) -> Result<Watch, KubeTargetError> {
        let listed = self.classified(self.client.get(path).await)?;
        let since = listed["metadata"]["resourceVersion"].as_str().unwrap_or("");
        let from = format!("{path}&resourceVersion={since}&timeoutSeconds={timeout}");
        self.classified(self.client.watch(&from).await)
    }

    /// Creates every Deployment; returns how many pods they make.
    async fn create_all(&self, config: &KubeBurstConfig) -> Result<usize, KubeTargetError> {
        let path = format!("/apis/apps/v1/namespaces/{}/deployments", self.namespace);
        let nodes: Vec<Option<&str>> = if config.nodes.is_empty() {
            vec![None]
        } else {
            config.nodes.iter().map(|n| Some(n.as_str())).collect()
        };
        let mut pods = 0;
        for (i, (_variant, image)) in config.images.iter().enumerate() {
            for (j, node) in nodes.iter().enumerate() {
                let name = format!("stampede-{}-{i}-{j}", self.id);
                let body = deployment(&self.id, &name, image, *node, config);
                self.classified(self.client.post(&path, &body).await)?;
                pods += config.replicas as usize;
            }
        }
        Ok(pods)
    }

    /// Deletes the burst's Deployments and pods and waits (bounded) until its pods are gone.
    async fn clean_up(&self) -> Result<(), KubeTargetError> {
        let ns = &self.namespace;
        let sel = self.selector();
        let now = json!({"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0, "propagationPolicy": "Background"});
        let deployments = format!("/apis/apps/v1/namespaces/{ns}/deployments?{sel}");
        let pods = format!("/api/v1/namespaces/{ns}/pods?{sel}");
        let ignore_gone = |r: Result<Value, KubeError>| match r {
            Err(e) if e.status() == Some(404) => Ok(()),
            r => self.classified(r).map(drop),
        };
        ignore_gone(self.client.delete(&deployments, Some(&now)).await)?;
        let start = Instant::now();
        loop {
            ignore_gone(self.client.delete(&pods, Some(&now)).await)?;
            let left = self.classified(self.client.get(&pods).await)?;
            if left["items"].as_array().is_none_or(Vec::is_empty) {
                return Ok(());
            }
            if start.elapsed() > CLEANUP_LIMIT {
                return Err(KubeTargetError::Cluster(KubeError::Status {
                    method: "DELETE".into(),
                    path: pods,
                    status: 0,
                    message: format!("pods still listed {CLEANUP_LIMIT:?} after deletion"),
                }));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// An API answer, its error in the words an operator can act on.
    fn classified<T>(&self, r: Result<T, KubeError>) -> Result<T, KubeTargetError> {
        r.map_err(|e| match e {
            KubeError::Status {
                status: 403,
                message,
                ..
            } => KubeTargetError::Forbidden {
                namespace: self.namespace.clone(),
                message,
            },
            KubeError::Status {
                status: 404,
                ref message,
                ..
            } if message.contains("namespaces") && message.contains("not found") => {
                KubeTargetError::NoNamespace(self.namespace.clone())
            }
            e => KubeTargetError::Cluster(e),
        })
    }

    fn ended(&self, what: &str) -> KubeTargetError {
        KubeTargetError::Cluster(KubeError::Unreachable {
            server: self.client.access().server.clone(),
            message: format!(
                "the watch of {what} in namespace {} ended early",
                self.namespace
            ),
        })
    }
}
