//! Real images end to end: an image built offline with `umoci` and a two-platform index crafted
//! here are pushed with `skopeo` into Debian's `docker-registry`, which is then also served
//! behind htpasswd basic auth, behind token auth (Bearer, with an in-test token server), and over
//! TLS with a CA made in the test. A scenario pulls them (mirrored once into the embedded
//! registry, and straight from the registries), the umoci layout itself and a synthetic image,
//! directly and through a cache-daemon; its result and report show every source's digest.
//! `inspect` reads the same image from each registry and from the layout alike.
//!
//! Skipped with a message when docker-registry, skopeo or umoci is missing, unless
//! `STAMPEDE_REQUIRE_REAL=1`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use bench_harness::image::remote::RegistryAccess;
use bench_harness::inspect::{inspect, ImageInput, InspectError, InspectOptions};
use bench_harness::result::RunResult;
use bench_harness::run::recorder::FailureKind;
use bench_harness::run::{run, RunOptions, LOGS_DIR};
use bench_harness::scenario::Scenario;
use stampede_oci::{Compression, Digest, ImageRef, Platform};

use crate::common::layout::{Entry, LayoutBuilder};
use crate::common::real::{
    have, htpasswd, skopeo_push, umoci_image, Auth, Registry, Tls, TokenServer,
};

const TEST_TIMEOUT: Duration = Duration::from_secs(240);
const USER: &str = "bench";
const BASIC_PASSWORD: &str = "basic-Secret-4711";
const TOKEN_PASSWORD: &str = "token-Secret-0815";

/// Registries holding `test/app:v1` (the umoci image) and `test/wrongarch:v1` (arm64 and s390x
/// only), all over one storage directory.
struct Real {
    dir: tempfile::TempDir,
    layout: PathBuf,
    /// The umoci image's manifest digest, as its layout's index.json names it.
    app_digest: Digest,
    /// The two-platform index's digest.
    wrongarch_digest: Digest,
    plain: Registry,
    basic: Registry,
    token: Registry,
    tls: Registry,
    token_server: TokenServer,
    ca: PathBuf,
    docker_config: PathBuf,
}

async fn setup() -> Option<Real> {
    if !(have("docker-registry") && have("skopeo") && have("umoci")) {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let token_server = TokenServer::start(dir.path(), USER, TOKEN_PASSWORD).await;
    let (realm, token_cert) = (token_server.realm(), token_server.cert.clone());
    let root = dir.path().to_owned();
    let setup = tokio::task::spawn_blocking(move || {
        let layout = umoci_image(&root, "v1");
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
        let app_digest = Digest::parse(index["manifests"][0]["digest"].as_str().unwrap()).unwrap();

        let wrongarch = root.join("wrongarch");
        let mut b = LayoutBuilder::new(&wrongarch);
        let base = b.layer(&[Entry::File("bin/tool", 1_000)], Compression::Gzip);
        let arm = b.image("linux/arm64/v8", std::slice::from_ref(&base));
        let s390x = b.image("linux/s390x", &[base]);
        let multi = b.index(&[(&arm, "linux/arm64/v8"), (&s390x, "linux/s390x")]);
        b.tag("v1", &multi);

        let storage = root.join("storage");
        let plain = Registry::start(&storage, &Auth::None, None);
        skopeo_push(
            &format!("oci:{}:v1", layout.display()),
            &format!("{}/test/app:v1", plain.host()),
            false,
        );
        skopeo_push(
            &format!("oci:{}:v1", wrongarch.display()),
            &format!("{}/test/wrongarch:v1", plain.host()),
            true,
        );
        let basic = Registry::start(
            &storage,
            &Auth::Htpasswd(htpasswd(&root, USER, BASIC_PASSWORD)),
            None,
        );
        let token = Registry::start(
            &storage,
            &Auth::Token {
                realm,
                cert: token_cert,
            },
            None,
        );
        let tls_files = Tls::generate(&root);
        let tls = Registry::start(&storage, &Auth::None, Some(&tls_files));
        let docker_config = root.join("docker-config.json");
        let auth =
            base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{BASIC_PASSWORD}"));
        std::fs::write(
            &docker_config,
            format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, basic.host()),
        )
        .unwrap();
        (
            layout,
            app_digest,
            multi.digest,
            plain,
            basic,
            token,
            tls,
            tls_files.ca,
            docker_config,
        )
    });
    let (layout, app_digest, wrongarch_digest, plain, basic, token, tls, ca, docker_config) =
        setup.await.unwrap();
    Some(Real {
        dir,
        layout,
        app_digest,
        wrongarch_digest,
        plain,
        basic,
        token,
        tls,
        token_server,
        ca,
        docker_config,
    })
}

fn scenario(r: &Real, password_env: &str) -> Scenario {
    let text = format!(
        r#"
name = "real-images"
nodes = 2
pods_per_node = 1
seed = 3
platform = "linux/amd64"

[[variants]]
name = "plain"
[variants.registry]
image = "{plain}/test/app:v1"
insecure = true

[[variants]]
name = "plain-direct"
[variants.registry]
image = "{plain}/test/app:v1"
insecure = true
mirror = false

[[variants]]
name = "basic"
[variants.registry]
image = "{basic}/test/app:v1"
insecure = true
docker_config = "{docker_config}"

[[variants]]
name = "token"
[variants.registry]
image = "{token}/test/app:v1"
insecure = true
username = "{USER}"
password_env = "{password_env}"
mirror = false

[[variants]]
name = "tls"
[variants.registry]
image = "{tls}/test/app@{digest}"
ca_file = "{ca}"
mirror = false

[[variants]]
name = "layout"
[variants.layout]
path = "{layout}"
tag = "v1"

[[variants]]
name = "synthetic"
[[variants.synthetic.layers]]
size = "64KiB"
files = 4

[[variants]]
name = "wrongarch"
[variants.registry]
image = "{plain}/test/wrongarch:v1"
insecure = true

[[targets]]
kind = "direct"

[[targets]]
name = "shared-cache"
kind = "cache-daemon"
placement = "shared"

[readiness]
probe_period = "20ms"
"#,
        plain = r.plain.host(),
        basic = r.basic.host(),
        token = r.token.host(),
        tls = r.tls.host(),
        docker_config = r.docker_config.display(),
        digest = r.app_digest,
        ca = r.ca.display(),
        layout = r.layout.display(),
    );
    Scenario::parse(&text, "real-images.toml", &[]).unwrap()
}

fn options(dir: &Path) -> RunOptions {
    RunOptions {
        logs_dir: dir.join("out").join(LOGS_DIR),
        image_cache: dir.join("images"),
        work_root: dir.join("work"),
        workspace: dir.to_owned(),
        progress: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scenario_pulls_registry_layout_and_synthetic_variants_and_reports_their_digests() {
    let Some(r) = setup().await else { return };
    let password_env = "STAMPEDE_IT_REAL_TOKEN_PASSWORD";
    std::env::set_var(password_env, TOKEN_PASSWORD);
    let first = scenario(&r, password_env);
    let result = tokio::time::timeout(TEST_TIMEOUT, run(first, options(r.dir.path())))
        .await
        .expect("run timed out")
        .unwrap();

    every_variant_ran_or_missed_its_platform(&result);
    every_source_is_recorded(&result, &r, password_env);
    mirrored_variants_are_counted_and_served_once(&result, &r);
    the_report_names_sources_without_secrets(&result, &r);

    // A second run finds the mirrors in the cache: the real registry sees manifest requests only.
    let before = r.plain.count("GET", "/blobs/");
    let mut again = scenario(&r, password_env);
    again.variants.retain(|v| v.name == "plain");
    again.targets.truncate(1);
    let mut opts = options(r.dir.path());
    opts.logs_dir = r.dir.path().join("out-again").join(LOGS_DIR);
    let again = run(again, opts).await.unwrap();
    assert_eq!(again.images["plain"].details["source"]["fetched_bytes"], 0);
    assert_eq!(r.plain.count("GET", "/blobs/"), before);
    std::env::remove_var(password_env);
}

/// Every variant's pods were ready on both targets, except wrongarch's: its index has no
/// linux/amd64, so every pod fails as platform_missing, and the run says which platforms the
/// index has.
fn every_variant_ran_or_missed_its_platform(result: &RunResult) {
    for variant in [
        "plain",
        "plain-direct",
        "basic",
        "token",
        "tls",
        "layout",
        "synthetic",
    ] {
        for target in ["direct", "shared-cache"] {
            let s = result.series(variant, target).unwrap();
            assert_eq!(
                (
                    s.data.repetition(0).unwrap().ready_pods(),
                    s.data.failed_pods()
                ),
                (2, 0),
                "{variant}/{target}: {:?}\n{:#?}",
                s.data.failures(),
                result.warnings
            );
        }
    }
    // The index has no linux/amd64: every pod fails as platform_missing, and the run says which
    // platforms the index has.
    for target in ["direct", "shared-cache"] {
        let s = result.series("wrongarch", target).unwrap();
        assert_eq!(
            s.data.failures().into_iter().collect::<Vec<_>>(),
            [(FailureKind::PlatformMissing, 2)],
            "wrongarch/{target}"
        );
    }
    assert!(
        result.warnings.iter().any(|w| w.contains("variant wrongarch")
            && w.contains("no manifest for platform linux/amd64; the index has: linux/arm64/v8, linux/s390x")),
        "{:#?}",
        result.warnings
    );
}

/// Every source's resolved digest, kind and credentials (named, never shown) are recorded.
fn every_source_is_recorded(result: &RunResult, r: &Real, password_env: &str) {
    let source = |v: &str| result.images[v].details["source"].clone();
    for v in ["plain", "plain-direct", "basic", "token", "tls", "layout"] {
        assert_eq!(
            source(v)["digest"],
            r.app_digest.to_string(),
            "{v}: {}",
            source(v)
        );
        assert_eq!(
            source(v)["platform_digest"],
            r.app_digest.to_string(),
            "{v}"
        );
        assert!(result.images[v].compressed_bytes > 0, "{v}");
    }
    assert_eq!(
        source("wrongarch")["digest"],
        r.wrongarch_digest.to_string()
    );
    assert!(source("wrongarch")["platform_digest"].is_null());
    assert_eq!(source("plain")["mirrored"], true);
    assert_eq!(source("token")["mirrored"], false);
    assert_eq!(source("layout")["kind"], "layout");
    assert_eq!(source("synthetic")["kind"], "synthetic");
    assert_eq!(
        source("basic")["credentials"],
        format!("docker config {}", r.docker_config.display())
    );
    assert_eq!(
        source("token")["credentials"],
        format!("user {USER}, password from ${password_env}")
    );
    assert_eq!(
        result.images["plain"].compressed_bytes,
        result.images["layout"].compressed_bytes
    );
}

/// Mirrored variants are served (and counted) by the embedded registry; the others are not.
fn mirrored_variants_are_counted_and_served_once(result: &RunResult, r: &Real) {
    for (variant, accounted) in [
        ("plain", true),
        ("basic", true),
        ("layout", true),
        ("plain-direct", false),
        ("token", false),
        ("tls", false),
    ] {
        let s = result.series(variant, "direct").unwrap();
        assert_eq!(!s.registry.is_empty(), accounted, "{variant}");
    }
    // The real registry served each layer once to the mirror (for "plain"; "basic" resolves to
    // the same digest and finds it mirrored), then to the two nodes of the direct target and the
    // shared cache-daemon of the plain-direct variant.
    let layers: Vec<String> = result.images["layout"].details["platforms"][0]["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(layers.len(), 2);
    for layer in &layers {
        assert_eq!(
            r.plain.count("GET", &format!("/v2/test/app/blobs/{layer}")),
            1 + 2 + 1,
            "{layer}"
        );
        assert_eq!(
            r.basic.count("GET", &format!("/v2/test/app/blobs/{layer}")),
            0,
            "the same digest is already mirrored: the cache is keyed by digest"
        );
    }
    // The basic-auth registry resolved the tag for an authenticated client.
    assert!(
        r.basic
            .count("GET", "/v2/test/app/manifests/v1 HTTP/1.1\" 200")
            >= 1,
        "{}",
        std::fs::read_to_string(&r.basic.log).unwrap()
    );
    assert!(
        r.token_server
            .granted
            .load(std::sync::atomic::Ordering::SeqCst)
            >= 3
    );
    assert_eq!(
        r.token_server
            .refused
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );
}

/// The report shows where each image came from; nothing anywhere holds a password; the result
/// validates against the schema.
fn the_report_names_sources_without_secrets(result: &RunResult, r: &Real) {
    let report = bench_harness::report::markdown(result);
    assert!(report.contains("## Images"), "{report}");
    assert!(report.contains(&format!("`{}`", r.app_digest)), "{report}");
    assert!(report.contains("the real registry (no registry-side accounting)"));
    assert!(
        report.contains(&format!("OCI layout {} tag v1", r.layout.display())),
        "{report}"
    );
    let json = result.to_json().unwrap();
    for secret in [BASIC_PASSWORD, TOKEN_PASSWORD] {
        assert!(!json.contains(secret) && !report.contains(secret));
    }
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    let problems = crate::result_schema::errors(&crate::result_schema::validator(), &doc);
    assert!(problems.is_empty(), "{problems:#?}");
}

fn inspect_options(dir: &Path) -> InspectOptions {
    InspectOptions {
        platform: Platform::parse("linux/amd64").unwrap(),
        bandwidth: "100Mbit".parse().unwrap(),
        top_files: 5,
        measure_unpack: true,
        work_dir: dir.join("inspect-work"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_reads_each_registry_like_the_layout() {
    let Some(r) = setup().await else { return };
    let password_env = "STAMPEDE_IT_INSPECT_TOKEN_PASSWORD";
    std::env::set_var(password_env, TOKEN_PASSWORD);
    let options = inspect_options(r.dir.path());
    let layout = ImageInput::Layout {
        path: r.layout.clone(),
        tag: Some("v1".into()),
    };
    let want = inspect(&layout, &options).await.unwrap();
    // The umoci image: the base ships etc/config (3), usr/bin/app (5,000), var/cache/a (3,000);
    // the second layer rewrites usr/bin/app (6,000) and whiteouts var/cache/a.
    assert_eq!(want.digest, r.app_digest);
    assert_eq!(
        (want.totals.visible.files, want.totals.visible.bytes),
        (2, 6_003)
    );
    assert_eq!(
        (want.waste.overwritten.bytes, want.waste.deleted.bytes),
        (5_000, 3_000)
    );

    let registry = |host: String, access: RegistryAccess| ImageInput::Registry {
        reference: ImageRef::parse(&format!("{host}/test/app:v1")).unwrap(),
        access,
    };
    let insecure = RegistryAccess {
        insecure: true,
        ..RegistryAccess::default()
    };
    let inputs = [
        registry(r.plain.host(), insecure.clone()),
        registry(
            r.basic.host(),
            RegistryAccess {
                docker_config: Some(r.docker_config.clone()),
                ..insecure.clone()
            },
        ),
        registry(
            r.token.host(),
            RegistryAccess {
                username: Some(USER.into()),
                password_env: Some(password_env.into()),
                ..insecure.clone()
            },
        ),
        registry(
            r.tls.host(),
            RegistryAccess {
                ca_file: Some(r.ca.clone()),
                ..RegistryAccess::default()
            },
        ),
    ];
    for input in &inputs {
        let got = tokio::time::timeout(TEST_TIMEOUT, inspect(input, &options))
            .await
            .expect("inspect timed out")
            .unwrap_or_else(|e| panic!("{}: {e:#?}", input.describe()));
        assert_eq!(got.digest, want.digest, "{}", input.describe());
        assert_eq!(got.layers, {
            // Predicted unpack times come from separate measurements.
            let mut l = want.layers.clone();
            for (x, y) in l.iter_mut().zip(&got.layers) {
                x.unpack_seconds = y.unpack_seconds;
            }
            l
        });
        assert_eq!(got.totals, want.totals, "{}", input.describe());
        assert_eq!(got.waste, want.waste, "{}", input.describe());
        assert_eq!(got.platforms, ["linux/amd64"]);
        assert_eq!(got.unpack_throughput.len(), 1, "measured on a sample");
    }

    refusals_say_why(&r, &options).await;
    std::env::remove_var(password_env);
}

/// Without the CA, TLS is refused; with a wrong password, the registry says 401 (and the
/// password is not shown); an index without linux/amd64 is refused naming its platforms.
async fn refusals_say_why(r: &Real, options: &InspectOptions) {
    let registry = |host: String, access: RegistryAccess| ImageInput::Registry {
        reference: ImageRef::parse(&format!("{host}/test/app:v1")).unwrap(),
        access,
    };
    let insecure = RegistryAccess {
        insecure: true,
        ..RegistryAccess::default()
    };
    let err = inspect(&registry(r.tls.host(), RegistryAccess::default()), options)
        .await
        .unwrap_err();
    assert!(
        matches!(err, InspectError::Fetch { .. }),
        "TLS without the CA: {err:#?}"
    );
    let wrong_env = "STAMPEDE_IT_WRONG_PASSWORD";
    std::env::set_var(wrong_env, "not-the-password");
    let wrong = RegistryAccess {
        username: Some(USER.into()),
        password_env: Some(wrong_env.into()),
        ..insecure.clone()
    };
    let err = inspect(&registry(r.basic.host(), wrong), options)
        .await
        .unwrap_err();
    let shown = format!("{:#}", anyhow::Error::from(err));
    assert!(shown.contains("401"), "{shown}");
    assert!(!shown.contains("not-the-password"), "{shown}");

    // The index without linux/amd64 is refused naming its platforms.
    let wrongarch = ImageInput::Registry {
        reference: ImageRef::parse(&format!("{}/test/wrongarch:v1", r.plain.host())).unwrap(),
        access: insecure,
    };
    let err = inspect(&wrongarch, options).await.unwrap_err();
    assert!(err.is_platform_missing(), "{err:#?}");
    assert!(
        err.to_string()
            .contains("the index has: linux/arm64/v8, linux/s390x"),
        "{err}"
    );
    std::env::remove_var(wrong_env);
}
