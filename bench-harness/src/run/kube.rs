//! One burst of a `kubernetes` target: no harness node and no embedded registry take part. The
//! variant's image (a real registry's, by name: validation saw to it) goes to the cluster as
//! the burst's pods (`crate::kubernetes::burst`: one Deployment per pinned node, or one for the
//! scheduler to place), and the pods' milestones from the epoch go into the burst's recorder,
//! as a harness burst's do, with kubelet's own reported pull times beside them. The host's CPU
//! is sampled around it like any burst's. An image the harness made (synthetic, layout,
//! mirrored) is first pushed to the registry the target names (`push_to`); when the target
//! gives that registry's access log (`registry_log`), what it served after the epoch is the
//! burst's registry count, else the registry counts nothing (the harness does not run it).
//!
//! A burst the cluster cannot run (no cluster, no rights, an image it cannot pull, pods not
//! ready in time) stops the run with the module's plain error; its pods are deleted first.

use std::time::Duration;

use crate::image::variant::PullFrom;
use crate::kubernetes::registry::{log_offset, push, served_since, PushTarget};
use crate::kubernetes::{burst, KubeBurstConfig, KubeTargetError, DEFAULT_DEADLINE};
use crate::run::burst::{Burst, BurstOutput};
use crate::run::host::CpuSampler;
use crate::run::recorder::{Recorder, RunKey};
use crate::run::RunError;
use crate::scenario::{KubeTarget, Scenario, TargetKind};

/// Reads every kubernetes target's kubeconfig before anything is prepared, so a missing or
/// unusable one stops the run at once with its plain message.
///
/// # Errors
/// [`RunError::Kubernetes`] naming the target.
pub(super) fn check_kubeconfigs(scenario: &Scenario) -> Result<(), Box<RunError>> {
    for t in &scenario.targets {
        if let TargetKind::Kubernetes(k) = &t.kind {
            stampede_kube::Access::from_kubeconfig(&k.kubeconfig).map_err(|e| {
                Box::new(RunError::Kubernetes {
                    target: t.name.clone(),
                    source: Box::new(KubeTargetError::Cluster(e)),
                })
            })?;
        }
    }
    Ok(())
}

impl Burst<'_> {
    /// Runs this burst's pods on the cluster `k` names and records them.
    ///
    /// # Errors
    /// [`RunError::Kubernetes`] with the cluster's reason.
    pub(super) async fn run_on_cluster(&self, k: &KubeTarget) -> Result<BurstOutput, RunError> {
        let s = self.stage.scenario;
        let failed = |source| RunError::Kubernetes {
            target: self.target.name.clone(),
            source: Box::new(source),
        };
        let image = self.cluster_image(k).await.map_err(failed)?;
        let config = self.cluster_config(k, image);
        let pods = u64::from(config.replicas) * config.nodes.len().max(1) as u64;
        let offset = k.registry_log.as_deref().map(log_offset);
        let cpu = CpuSampler::start();
        let outcome = burst(&config).await;
        let cpu = cpu.finish().await;
        let registry = match (&k.registry_log, offset) {
            (Some(log), Some(offset)) if outcome.is_ok() => Some(served_since(log, offset).await),
            _ => None,
        };
        for _ in 0..pods.min(u64::from(s.total_pods())) {
            self.stage.progress.pod_done();
        }
        let seen = outcome.map_err(failed)?;
        let key = RunKey {
            variant: self.variant.name.clone(),
            target: self.target.name.clone(),
            repetition: self.repetition,
        };
        let mut recorder = Recorder::new(key.clone());
        seen.record(&mut recorder);
        let pulls = seen.kubelet_pulls();
        Ok(BurstOutput {
            key,
            recorder,
            registry,
            link_bytes: None,
            wire: None,
            caches: Vec::new(),
            cpu,
            errors: Vec::new(),
            kubelet_pulls: pulls,
        })
    }

    /// The name the cluster pulls the variant's image by: a real registry's as it is, or the
    /// harness's own pushed to `push_to` first.
    async fn cluster_image(&self, k: &KubeTarget) -> Result<String, KubeTargetError> {
        let not_named = || KubeTargetError::NotNamed {
            variant: self.variant.name.clone(),
        };
        match &self.image.pull {
            PullFrom::Remote(remote) => Ok(remote.reference.to_string()),
            PullFrom::Embedded(layout) => {
                let to = k.push_to.as_deref().ok_or_else(not_named)?;
                let to = PushTarget::parse(to).map_err(|_| not_named())?;
                let name = to.image_name(&self.variant.name, layout);
                push(layout, &name, to.tls)
                    .await
                    .map_err(|source| KubeTargetError::Push {
                        variant: self.variant.name.clone(),
                        source,
                    })?;
                Ok(name)
            }
        }
    }

    /// What the cluster is asked for: the variant's image, `pods_per_node` pods on each pinned
    /// node, or every pod of the scenario for the scheduler to place.
    fn cluster_config(&self, k: &KubeTarget, image: String) -> KubeBurstConfig {
        let s = self.stage.scenario;
        let replicas = if k.pin_nodes.is_empty() {
            s.total_pods()
        } else {
            s.pods_per_node
        };
        KubeBurstConfig {
            kubeconfig: k.kubeconfig.clone(),
            namespace: k.namespace.clone(),
            images: vec![(self.variant.name.clone(), image)],
            replicas,
            nodes: k.pin_nodes.clone(),
            command: k.command.clone(),
            deadline: k
                .timeout
                .unwrap_or(DEFAULT_DEADLINE)
                .max(Duration::from_secs(1)),
        }
    }
}
