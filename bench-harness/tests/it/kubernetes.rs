//! The `kubernetes` target against a real cluster (`stampede_lab::KubeBed`: Kubernetes v1.20.2,
//! containerd 1.6, one node): a burst of 5 replicas of a new image records every phase from the
//! epoch, with kubelet's own pull time; bad input (a kubeconfig that reaches no cluster, a user
//! without rights in the namespace, an image that does not exist) gives a plain error and leaves
//! no pod behind. Skipped (with a message) when the bed's binaries are not built, unless real
//! parts are required.

use std::path::Path;
use std::time::Duration;

use bench_harness::kubernetes::{burst, KubeBurstConfig, KubeTargetError};
use bench_harness::run::recorder::{Phase, Recorder, RunKey};
use stampede_lab::KubeBed;

fn config(kubeconfig: &Path, image: &str, replicas: u32) -> KubeBurstConfig {
    KubeBurstConfig {
        kubeconfig: kubeconfig.to_owned(),
        namespace: Some("default".into()),
        images: vec![("app".into(), image.to_owned())],
        replicas,
        nodes: vec!["node1".into()],
        command: vec!["sleep".into(), "3600".into()],
        deadline: Duration::from_secs(180),
    }
}

fn run(
    bed: &KubeBed,
    config: &KubeBurstConfig,
) -> Result<bench_harness::kubernetes::KubeBurst, KubeTargetError> {
    bed.within(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(burst(config))
    })
    .unwrap()
}

fn burst_pods(bed: &KubeBed) -> String {
    bed.kubectl(&[
        "get",
        "pods",
        "-A",
        "-l",
        "stampede.dev/burst",
        "-o",
        "name",
    ])
    .unwrap()
}

#[test]
fn a_burst_on_a_real_node_records_every_phase_and_cleans_up() {
    let Some(bed) = KubeBed::for_tests() else {
        return;
    };
    let image = bed.push_app("burst", "1", 4).unwrap();
    let seen = run(&bed, &config(&bed.kubeconfig(), &image, 5)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(seen.pods.len(), 5, "{seen:?}");
    for (pod, m) in &seen.pods {
        eprintln!(
            "{pod}: scheduled {:?} pulling {:?} pulled {:?} (kubelet {:?}) started {:?} ready {:?}",
            m.scheduled, m.pulling, m.pulled, m.kubelet_pull, m.started, m.ready
        );
    }
    for (pod, m) in &seen.pods {
        assert_eq!(m.node.as_deref(), Some("node1"), "{pod}");
        let t = m
            .pod_times()
            .unwrap_or_else(|| panic!("{pod} not ready: {m:?}"));
        assert!(
            t.scheduled <= t.started && t.started <= t.ready,
            "{pod}: {t:?}"
        );
        assert!(m.pulled.is_some(), "{pod}: no Pulled event: {m:?}");
    }
    // The node pulled the new image once; kubelet said how long it took.
    let pulls = seen.kubelet_pulls();
    assert!(!pulls.is_empty(), "no pull reported by kubelet: {seen:?}");
    assert!(pulls
        .iter()
        .all(|d| *d > Duration::ZERO && *d < Duration::from_secs(180)));

    let mut recorder = Recorder::new(RunKey {
        variant: "app".into(),
        target: "kubernetes".into(),
        repetition: 0,
    });
    seen.record(&mut recorder);
    let recorded = recorder.data();
    assert_eq!(recorded.ready_pods(), 5);
    assert_eq!(recorded.failed_pods(), 0);
    for phase in [
        Phase::Queue,
        Phase::Pull,
        Phase::StartToReady,
        Phase::EndToEnd,
    ] {
        assert_eq!(recorded.phase(phase).len(), 5, "{phase:?}");
    }
    assert!(
        recorded.phase(Phase::Pull).max() > 0,
        "some pod waited for the pull"
    );
    assert!(
        burst_pods(&bed).trim().is_empty(),
        "pods left: {}",
        burst_pods(&bed)
    );

    // An image that does not exist: a plain error naming it, and no pod left.
    let missing = format!("{}/no-such-image:1", stampede_lab::kubernetes::REGISTRY);
    let err = run(&bed, &config(&bed.kubeconfig(), &missing, 2)).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, KubeTargetError::Pull { .. }), "{text}");
    assert!(
        text.contains("cannot pull its image") && text.contains("no-such-image"),
        "{text}"
    );
    assert!(
        burst_pods(&bed).trim().is_empty(),
        "pods left: {}",
        burst_pods(&bed)
    );

    // A user without rights in the namespace (a service account nobody bound a role to).
    let forbidden = bed.dir().join("nobody.kubeconfig");
    bed.kubectl(&["create", "serviceaccount", "nobody"])
        .unwrap();
    let secret = bed
        .kubectl(&[
            "get",
            "serviceaccount",
            "nobody",
            "-o",
            "jsonpath={.secrets[0].name}",
        ])
        .unwrap();
    let token = bed
        .kubectl(&[
            "get",
            "secret",
            secret.trim(),
            "-o",
            "jsonpath={.data.token}",
        ])
        .unwrap();
    let token = String::from_utf8(
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, token.trim()).unwrap(),
    )
    .unwrap();
    let admin = std::fs::read_to_string(bed.kubeconfig()).unwrap();
    let (head, _) = admin.split_once("users:").unwrap();
    std::fs::write(
        &forbidden,
        format!("{head}users:\n- name: admin\n  user: {{token: {token}}}\ncontexts:\n- name: bed\n  context: {{cluster: bed, user: admin}}\ncurrent-context: bed\n"),
    )
    .unwrap();
    let err = run(&bed, &config(&forbidden, &image, 1)).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, KubeTargetError::Forbidden { .. }), "{text}");
    assert!(
        text.contains("may not") && text.contains("namespace default"),
        "{text}"
    );

    // A kubeconfig whose server does not answer.
    let unreachable = bed.dir().join("unreachable.kubeconfig");
    std::fs::write(
        &unreachable,
        admin.replace("https://10.200.0.2:6443", "https://10.200.0.2:6999"),
    )
    .unwrap();
    let err = run(&bed, &config(&unreachable, &image, 1)).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("https://10.200.0.2:6999 cannot be reached"),
        "{text}"
    );
    assert!(
        burst_pods(&bed).trim().is_empty(),
        "pods left: {}",
        burst_pods(&bed)
    );
}
