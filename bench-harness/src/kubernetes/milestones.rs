//! What one real pod went through, as the harness saw it from the API server: the first time
//! each milestone was observed (its pod object or its events), as an offset from the burst epoch,
//! and kubelet's own reported pull duration. Pure bookkeeping: [`Milestones::pod`] and
//! [`Milestones::event`] take the API's JSON, no I/O.
//!
//! Observation times, not the API's timestamps: Kubernetes 1.20 stamps conditions and kubelet's
//! events to the second, which would round away most of a burst; watching the changes as they
//! arrive costs the watch's own delay (milliseconds on a local API server) instead. kubelet's
//! `Successfully pulled image "X" in 181.96ms` is exact and is kept beside the event times.

use std::time::Duration;

use serde_json::Value;

use crate::run::recorder::{FailureKind, PodTimes, PullTimes};

/// One pod's milestones, offsets from the epoch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Milestones {
    /// The node it was bound to.
    pub node: Option<String>,
    /// First seen (created by its ReplicaSet).
    pub created: Option<Duration>,
    /// `PodScheduled` became true.
    pub scheduled: Option<Duration>,
    /// kubelet's `Pulling` event.
    pub pulling: Option<Duration>,
    /// kubelet's `Pulled` event.
    pub pulled: Option<Duration>,
    /// The pull time kubelet reported in its `Pulled` event (`None` when the image was already
    /// on the node).
    pub kubelet_pull: Option<Duration>,
    /// The image was already present on the node (`Pulled` said so).
    pub image_present: bool,
    /// A container was first seen running.
    pub started: Option<Duration>,
    /// `Ready` became true.
    pub ready: Option<Duration>,
    /// Why it will not become ready (an image that cannot be pulled), and kubelet's words.
    pub failed: Option<(FailureKind, String)>,
}

fn first(slot: &mut Option<Duration>, at: Duration) {
    slot.get_or_insert(at);
}

impl Milestones {
    /// Takes what a pod object says, seen at `at`.
    pub fn pod(&mut self, pod: &Value, at: Duration) {
        first(&mut self.created, at);
        if let Some(node) = pod["spec"]["nodeName"].as_str() {
            self.node.get_or_insert_with(|| node.to_owned());
        }
        let conditions = pod["status"]["conditions"].as_array().into_iter().flatten();
        for c in conditions {
            if c["status"].as_str() != Some("True") {
                continue;
            }
            match c["type"].as_str() {
                Some("PodScheduled") => first(&mut self.scheduled, at),
                Some("Ready") => first(&mut self.ready, at),
                _ => {}
            }
        }
        let statuses = pod["status"]["containerStatuses"]
            .as_array()
            .into_iter()
            .flatten();
        for s in statuses {
            if !s["state"]["running"].is_null() {
                first(&mut self.started, at);
            }
            let reason = s["state"]["waiting"]["reason"].as_str().unwrap_or("");
            if matches!(
                reason,
                "ErrImagePull" | "ImagePullBackOff" | "InvalidImageName"
            ) && self.failed.is_none()
            {
                let message = s["state"]["waiting"]["message"].as_str().unwrap_or(reason);
                self.failed = Some((pull_failure(message), message.to_owned()));
            }
        }
    }

    /// Takes one of kubelet's events about this pod, seen at `at`.
    pub fn event(&mut self, event: &Value, at: Duration) {
        let message = event["message"].as_str().unwrap_or("");
        match event["reason"].as_str() {
            Some("Scheduled") => first(&mut self.scheduled, at),
            Some("Pulling") => first(&mut self.pulling, at),
            Some("Pulled") => {
                first(&mut self.pulled, at);
                if message.contains("already present on machine") {
                    self.image_present = true;
                } else if self.kubelet_pull.is_none() {
                    self.kubelet_pull = kubelet_pull_time(message);
                }
            }
            Some("Started") => first(&mut self.started, at),
            Some("Failed") if message.contains("pull") && self.failed.is_none() => {
                self.failed = Some((pull_failure(message), message.to_owned()));
            }
            _ => {}
        }
    }

    /// Whether nothing more is to be waited for: ready, or failed.
    pub fn settled(&self) -> bool {
        self.ready.is_some() || self.failed.is_some()
    }

    /// The milestones as the recorder takes them, for a pod that became ready: scheduled is
    /// `PodScheduled` (the epoch-relative queue of the scheduler is in it), the pull runs from
    /// `Pulling` to `Pulled` (containerd's pull includes unpacking, so unpack is 0), started is
    /// the first running container. `None` unless ready.
    pub fn pod_times(&self) -> Option<PodTimes> {
        let ready = self.ready?;
        let scheduled = self.scheduled.or(self.created).unwrap_or_default();
        let started = self.started.unwrap_or(ready);
        let pull = match (self.pulling, self.pulled) {
            (Some(pulling), Some(pulled)) if !self.image_present => {
                Some(PullTimes::one(pulling, None, pulled, pulled))
            }
            _ => None,
        };
        Some(PodTimes {
            scheduled,
            pull,
            started,
            ready,
            wave: 0,
        })
    }
}

/// How a pull failure counts: an image the registry does not have is a 4xx.
fn pull_failure(message: &str) -> FailureKind {
    let m = message.to_ascii_lowercase();
    if m.contains("not found") || m.contains("manifest unknown") || m.contains("invalid") {
        FailureKind::Http4xx
    } else if m.contains("connection refused") || m.contains("no such host") {
        FailureKind::Connect
    } else {
        FailureKind::Other
    }
}

/// kubelet's pull duration from `Successfully pulled image "X" in 181.967949ms` (Kubernetes
/// 1.20 to 1.27; later ones add ` (1.2s including waiting)`, whose first figure is the pull).
pub fn kubelet_pull_time(message: &str) -> Option<Duration> {
    let (_, rest) = message.rsplit_once("\" in ")?;
    go_duration(rest.split_whitespace().next()?)
}

/// A Go `time.Duration` string (`181.967949ms`, `1m2.5s`, `750µs`).
pub fn go_duration(s: &str) -> Option<Duration> {
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let value: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += value * scale;
    }
    Some(Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn reads_kubelets_pull_time() {
        let m = r#"Successfully pulled image "10.200.0.1:5000/app:1" in 181.967949ms"#;
        assert_eq!(
            kubelet_pull_time(m),
            Some(Duration::from_nanos(181_967_949))
        );
        let m = r#"Successfully pulled image "x" in 1m2.5s (1m3s including waiting)"#;
        assert_eq!(kubelet_pull_time(m), Some(Duration::from_millis(62_500)));
        assert_eq!(go_duration("750µs"), Some(Duration::from_micros(750)));
        assert_eq!(
            kubelet_pull_time("Container image \"x\" already present on machine"),
            None
        );
        assert_eq!(go_duration("12 parsecs"), None);
        assert_eq!(go_duration(""), None);
    }

    #[test]
    fn a_pod_that_pulled_gives_every_phase() {
        let mut m = Milestones::default();
        m.pod(&json!({"spec": {}, "status": {}}), MS * 5);
        m.pod(
            &json!({"spec": {"nodeName": "node1"},
                    "status": {"conditions": [{"type": "PodScheduled", "status": "True"}]}}),
            MS * 20,
        );
        m.event(
            &json!({"reason": "Pulling", "message": "Pulling image \"x\""}),
            MS * 40,
        );
        m.event(
            &json!({"reason": "Pulled", "message": "Successfully pulled image \"x\" in 100ms"}),
            MS * 150,
        );
        assert!(!m.settled());
        m.pod(
            &json!({"spec": {"nodeName": "node1"},
                    "status": {"conditions": [{"type": "PodScheduled", "status": "True"},
                                              {"type": "Ready", "status": "True"}],
                               "containerStatuses": [{"state": {"running": {}}}]}}),
            MS * 300,
        );
        assert!(m.settled());
        assert_eq!(m.node.as_deref(), Some("node1"));
        assert_eq!(m.kubelet_pull, Some(MS * 100));
        let t = m.pod_times().unwrap();
        assert_eq!(t.scheduled, MS * 20);
        assert_eq!(
            t.pull,
            Some(PullTimes::one(MS * 40, None, MS * 150, MS * 150))
        );
        assert_eq!((t.started, t.ready), (MS * 300, MS * 300));
    }

    #[test]
    fn an_image_already_there_is_no_pull_and_a_missing_one_is_a_4xx() {
        let mut m = Milestones::default();
        m.event(
            &json!({"reason": "Pulled", "message": "Container image \"x\" already present on machine"}),
            MS,
        );
        m.pod(
            &json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
            MS * 2,
        );
        assert!(m.image_present);
        assert_eq!(m.pod_times().unwrap().pull, None);

        let mut m = Milestones::default();
        m.pod(
            &json!({"status": {"containerStatuses": [{"state": {"waiting": {
                "reason": "ErrImagePull",
                "message": "rpc error: code = NotFound desc = failed to pull and unpack image \"x\": not found"}}}]}}),
            MS,
        );
        assert!(m.settled());
        assert_eq!(m.failed.as_ref().unwrap().0, FailureKind::Http4xx);
        assert!(m.pod_times().is_none());
    }
}
