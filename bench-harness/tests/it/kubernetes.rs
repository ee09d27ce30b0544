//! The `kubernetes` target against a real cluster (`stampede_lab::KubeBed`: Kubernetes v1.20.2,
//! containerd 1.6, one node): a burst of 5 replicas of a new image records every phase from the
//! epoch, with kubelet's own pull time; bad input (a kubeconfig that reaches no cluster, a user
//! without rights in the namespace, an image that does not exist) gives a plain error and leaves
//! no pod behind. A scenario file with a `kind = "kubernetes"` target runs through the
//! binary's `run` (inside the bed's network namespace, where its API server is) and its
//! result.json has every phase for all 5 pods of each variant, one of them an OCI layout the
//! harness pushes to the bed's registry (`push_to`), with the registry's counts read from its
//! access log (`registry_log`); a kubeconfig that cannot be read stops `run`
//! before anything is prepared (no bed needed). Skipped (with a message) when the bed's binaries
//! are not built, unless real parts are required.

use std::path::Path;
use std::time::Duration;

use bench_harness::kubernetes::{burst, KubeBurstConfig, KubeTargetError};
use bench_harness::result::RunResult;
use bench_harness::run::recorder::{Phase, Recorder, RunKey};
use stampede_lab::KubeBed;

use crate::common::child::Child;

const BIN: &str = env!("CARGO_BIN_EXE_bench-harness");

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

/// A scenario file whose one target is the bed's cluster: 5 pods of `image` pinned to its node,
/// and, with `pushed = (layout, registry log)`, 5 of a second variant, the OCI layout the
/// harness pushes to the bed's registry, whose access log it reads.
fn cluster_scenario(
    dir: &Path,
    kubeconfig: &Path,
    image: &str,
    pushed: Option<(&Path, &Path)>,
) -> std::path::PathBuf {
    let path = dir.join("cluster.toml");
    let (variant, push) = pushed.map_or_else(Default::default, |(layout, log)| {
        (
            format!(
                "[[variants]]\nname = \"pushed\"\n[variants.layout]\npath = \"{}\"\ntag = \"app\"\n",
                layout.display()
            ),
            format!(
                "push_to = \"http://{}\"\nregistry_log = \"{}\"\n",
                stampede_lab::kubernetes::REGISTRY,
                log.display()
            ),
        )
    });
    std::fs::write(
        &path,
        format!(
            r#"name = "cluster"
nodes = 1
pods_per_node = 5

[[variants]]
name = "app"
[variants.registry]
image = "{image}"
mirror = false
insecure = true
{variant}
[[targets]]
name = "bed"
kind = "kubernetes"
kubeconfig = "{}"
namespace = "default"
pin_nodes = ["{}"]
command = ["sleep", "3600"]
timeout = "3m"
{push}"#,
            kubeconfig.display(),
            stampede_lab::kubernetes::NODE
        ),
    )
    .unwrap();
    path
}

#[test]
fn a_scenario_with_a_kubernetes_target_runs_through_run() {
    let Some(bed) = KubeBed::for_tests() else {
        return;
    };
    let image = bed.push_app("scenario", "1", 4).unwrap();
    // An image only the harness has (an OCI layout of busybox and 3 MiB), pushed by it.
    let layout = bed.dir().join("images/pushed");
    let busybox = stampede_lab::kubernetes::cache_dir().join("root/bin/busybox");
    let built = std::process::Command::new(stampede_lab::kubernetes::scripts().join("images.sh"))
        .args([
            "app".as_ref(),
            layout.as_os_str(),
            busybox.as_os_str(),
            "3".as_ref(),
        ])
        .output()
        .unwrap();
    assert!(built.status.success(), "{built:?}");
    let dir = tempfile::tempdir().unwrap();
    let scenario = cluster_scenario(
        dir.path(),
        &bed.kubeconfig(),
        &image,
        Some((&layout.join("oci"), &bed.registry_log())),
    );
    let out_dir = dir.path().join("out");
    let mut cmd = bed.command(BIN);
    cmd.arg("run")
        .arg(&scenario)
        .arg("--out")
        .arg(&out_dir)
        .arg("--image-cache")
        .arg(dir.path().join("images"))
        .arg("--work-dir")
        .arg(dir.path().join("work"))
        .arg("--no-progress")
        .env("RUST_LOG", "info");
    let out = Child::spawn(&mut cmd).output_within(Duration::from_secs(300), "bench-harness run");
    let text = format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");

    let result = RunResult::load(&out_dir.join("result.json")).unwrap();
    let series = result.series("app", "bed").expect("the kubernetes series");
    assert_eq!(series.pods_per_repetition, 5);
    let rep = series.data.repetition(0).expect("repetition 0");
    assert_eq!(rep.ready_pods(), 5, "{text}");
    assert_eq!(rep.failed_pods(), 0, "{text}");
    for phase in [
        Phase::Queue,
        Phase::Pull,
        Phase::StartToReady,
        Phase::EndToEnd,
    ] {
        assert_eq!(rep.phase(phase).len(), 5, "{phase:?}");
    }
    assert!(
        rep.phase(Phase::Pull).max() > 0,
        "some pod waited for the pull"
    );
    assert!(rep.phase(Phase::EndToEnd).min() > 0);
    // kubelet's own pull time, stored beside the event times: the node pulled the new image.
    let pulls = series.kubelet_pulls.get(&0).expect("kubelet's pull times");
    assert!(
        !pulls.is_empty()
            && pulls
                .iter()
                .all(|d| *d > Duration::ZERO && *d < Duration::from_secs(180)),
        "{pulls:?}"
    );
    // The pushed variant ran too; the registry's access log says what it served after each
    // epoch: the pushed image's layer (3 MiB and busybox) at least once, and the first
    // variant's blobs too (both images were new to the node).
    let pushed = result.series("pushed", "bed").expect("the pushed series");
    let rep = pushed.data.repetition(0).expect("repetition 0");
    assert_eq!(rep.ready_pods(), 5, "{text}");
    let served = &pushed.registry[&0];
    assert!(served.bytes_out >= 3 << 20, "{served:?}");
    assert!(
        !served.blob_gets.is_empty() && served.blob_gets.values().all(|n| *n >= 1),
        "{served:?}"
    );
    let first = &series.registry[&0];
    assert!(
        first.bytes_out >= 4 << 20 && !first.blob_gets.is_empty(),
        "{first:?}"
    );
    let raw = std::fs::read_to_string(out_dir.join("result.json")).unwrap();
    assert!(raw.contains("\"kubelet_pull_us\""), "{raw}");
    let doc: serde_json::Value = serde_json::from_str(&raw).unwrap();
    let problems = crate::result_schema::errors(&crate::result_schema::validator(), &doc);
    assert!(problems.is_empty(), "{problems:#?}");
    let md = std::fs::read_to_string(out_dir.join("report.md")).unwrap();
    assert!(md.contains("real pods on a Kubernetes cluster"), "{md}");
    assert!(md.contains("Pulls as kubelet reported them"), "{md}");
    assert!(
        burst_pods(&bed).trim().is_empty(),
        "pods left: {}",
        burst_pods(&bed)
    );
}

#[test]
fn a_missing_kubeconfig_stops_run_before_anything_is_prepared() {
    let dir = tempfile::tempdir().unwrap();
    // The registry named is never asked: the kubeconfig is read first.
    let scenario = cluster_scenario(
        dir.path(),
        &dir.path().join("no-such.kubeconfig"),
        "10.255.255.1:5000/app:1",
        None,
    );
    let out = Child::spawn(
        std::process::Command::new(BIN)
            .arg("run")
            .arg(&scenario)
            .arg("--out")
            .arg(dir.path().join("out"))
            .arg("--no-progress"),
    )
    .output_within(Duration::from_secs(60), "bench-harness run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("target bed: kubernetes target: ")
            && stderr.contains("no-such.kubeconfig: cannot read it")
            && stderr.matches("cannot read it").count() == 1,
        "{stderr}"
    );
    assert!(!dir.path().join("out/result.json").exists());
}
