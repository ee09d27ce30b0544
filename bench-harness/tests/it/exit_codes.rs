//! The binary's exit codes, as a CI pipeline sees them: `run` exits 1 when an SLO is missed;
//! `report` re-renders a stored result and exits 1 when it missed an SLO, 0 when it passed;
//! `compare` exits 1 when a regression gate is crossed and 0 when it is not; errors (a missing
//! file, a malformed flag) exit 2.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use crate::common::child::Child;
use crate::common::{sample_result, synthetic_run, SyntheticSeries};

const BIN: &str = env!("CARGO_BIN_EXE_bench-harness");
const DEADLINE: Duration = Duration::from_secs(300);

/// Runs the binary with `args`, its output read as it comes, killing it if it outlives
/// [`DEADLINE`].
fn bench(args: &[&str], cwd: &Path) -> Output {
    Child::spawn(
        Command::new(BIN)
            .args(args)
            .current_dir(cwd)
            .env("RUST_LOG", "warn"),
    )
    .output_within(DEADLINE, &format!("bench-harness {args:?}"))
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("exited, not killed")
}

fn text(out: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn report_exits_1_on_a_missed_slo_and_0_when_all_passed() {
    let dir = tempfile::tempdir().unwrap();
    let missed = dir.path().join("missed");
    let path = sample_result().write(&missed).unwrap();
    assert!(
        !sample_result().passed(),
        "the sample misses p95 ready in full/direct"
    );
    let out = bench(&["report", path.to_str().unwrap()], dir.path());
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert!(missed.join("report.md").is_file() && missed.join("report.html").is_file());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("SLO"),
        "{}",
        text(&out)
    );

    let passed = dir.path().join("passed");
    let mut result = synthetic_run(
        &[SyntheticSeries {
            variant: "full",
            end_to_end_ms: 500,
            egress_bytes: 1_000,
        }],
        2,
        1,
    );
    result.scenario.slo.p95_ready = Some(Duration::from_secs(60));
    result.evaluate_slo();
    assert!(result.passed() && !result.slo.is_empty());
    let path = result.write(&passed).unwrap();
    let elsewhere = dir.path().join("rendered");
    let out = bench(
        &[
            "report",
            path.to_str().unwrap(),
            "--out",
            elsewhere.to_str().unwrap(),
        ],
        dir.path(),
    );
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(elsewhere.join("report.html").is_file());
}

#[test]
fn errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let out = bench(&["report", "no/such/result.json"], dir.path());
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("read result"),
        "{}",
        text(&out)
    );

    let garbage = dir.path().join("garbage.json");
    std::fs::write(&garbage, "{ not json").unwrap();
    let out = bench(&["report", garbage.to_str().unwrap()], dir.path());
    assert_eq!(code(&out), 2, "{}", text(&out));

    let result = sample_result().write(&dir.path().join("r")).unwrap();
    let r = result.to_str().unwrap();
    for args in [
        vec!["compare", r, r, "--fail-if-slower", "p95:end_to_end"],
        vec!["compare", r],
        vec!["compare", r, "--variants", "full"],
        vec!["compare", r, "--variants", "full,huge"],
    ] {
        let out = bench(&args, dir.path());
        assert_eq!(code(&out), 2, "{args:?}\n{}", text(&out));
    }
}

#[test]
fn compare_exits_1_when_a_gate_is_crossed_and_0_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let series = |ms| SyntheticSeries {
        variant: "full",
        end_to_end_ms: ms,
        egress_bytes: 1_000_000,
    };
    let base = synthetic_run(&[series(1_000)], 6, 1)
        .write(&dir.path().join("base"))
        .unwrap();
    let slow = synthetic_run(&[series(1_400)], 6, 2)
        .write(&dir.path().join("slow"))
        .unwrap();
    let (base, slow) = (base.to_str().unwrap(), slow.to_str().unwrap());
    let out_dir = dir.path().join("cmp");
    let out = bench(
        &[
            "compare",
            base,
            slow,
            "--fail-if-slower",
            "p95:end_to_end:10%",
            "--out",
            out_dir.to_str().unwrap(),
        ],
        dir.path(),
    );
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert!(out_dir.join("compare.md").is_file() && out_dir.join("compare.html").is_file());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("FAIL"),
        "{}",
        text(&out)
    );

    let out = bench(
        &[
            "compare",
            slow,
            base,
            "--fail-if-slower",
            "p95:end_to_end:10%",
        ],
        dir.path(),
    );
    assert_eq!(code(&out), 0, "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("# Comparison:"),
        "Markdown on stdout: {stdout}"
    );
}

#[test]
fn run_exits_1_when_a_scenario_slo_is_missed() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("strict.toml");
    std::fs::write(
        &scenario,
        r#"
name = "strict"
nodes = 2
pods_per_node = 1
seed = 3
platform = "linux/amd64"

[[variants]]
name = "tiny"
[[variants.synthetic.layers]]
size = "64KiB"
files = 4

[[targets]]
kind = "direct"

[readiness]
probe_period = "50ms"

[slo]
p95_ready = "1ms"
"#,
    )
    .unwrap();
    let out_dir = dir.path().join("out");
    let out = bench(
        &[
            "run",
            scenario.to_str().unwrap(),
            "--out",
            out_dir.to_str().unwrap(),
            "--image-cache",
            dir.path().join("images").to_str().unwrap(),
            "--work-dir",
            dir.path().join("work").to_str().unwrap(),
            "--no-progress",
        ],
        dir.path(),
    );
    assert_eq!(code(&out), 1, "{}", text(&out));
    for file in ["result.json", "report.md", "report.html"] {
        assert!(out_dir.join(file).is_file(), "{file} missing");
    }
    let md = std::fs::read_to_string(out_dir.join("report.md")).unwrap();
    assert!(
        md.contains("| p95 ready | tiny | direct | 1.0 ms |"),
        "{md}"
    );
    assert!(md.contains("**FAIL**"), "{md}");
}
