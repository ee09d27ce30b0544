//! What the binary tells a user in plain words: a missing result file is called missing, a
//! result of another schema names its version without Rust Debug text, a missed SLO is named,
//! `inspect --help` lists the image forms it reads; and host-bound runs are not silent: `report`
//! (like `run`) warns on stderr, `compare` repeats the warning, marks the rows, and leaves its
//! gates unjudged with exit 3 unless `--judge-host-bound` asks for a verdict.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use bench_harness::compare::{self, Input, Pairing, Settings};
use bench_harness::result::RunResult;
use bench_harness::run::host::{CpuUse, HostBound};

use crate::common::{sample_result, synthetic_run, SyntheticSeries};

const BIN: &str = env!("CARGO_BIN_EXE_bench-harness");
const DEADLINE: Duration = Duration::from_secs(120);

/// Runs the binary with `args` in `cwd`, killing it if it outlives [`DEADLINE`].
fn bench(args: &[&str], cwd: &Path) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .current_dir(cwd)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > DEADLINE {
            child.kill().unwrap();
            panic!("bench-harness {args:?} did not finish within {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("exited, not killed")
}

/// Debug renderings that must never reach a user.
fn assert_no_debug_text(text: &str) {
    for debug in ["Some(", "None", "Ok(", "Err(", "{ ", "\\\""] {
        assert!(!text.contains(debug), "Debug text {debug:?} in:\n{text}");
    }
}

#[test]
fn compare_of_a_missing_file_says_the_file_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let out = bench(&["compare", "/nonexistent/result.json"], dir.path());
    let err = stderr(&out);
    assert_eq!(code(&out), 2, "{err}");
    assert!(
        err.contains("read result /nonexistent/result.json: the file does not exist"),
        "{err}"
    );
    assert!(!err.contains("--variants"), "{err}");
    assert_no_debug_text(&err);
}

#[test]
fn a_result_of_another_schema_names_its_version_plainly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("result.json");
    for (json, want) in [
        ("{\"schema_version\": 99}", "has schema_version 99;"),
        ("{\"scenario\": {}}", "has no schema_version;"),
    ] {
        std::fs::write(&path, json).unwrap();
        let out = bench(&["report", path.to_str().unwrap()], dir.path());
        let err = stderr(&out);
        assert_eq!(code(&out), 2, "{err}");
        assert!(
            err.contains(want) && err.contains("this build reads schema_version 1"),
            "{err}"
        );
        assert_no_debug_text(&err);
    }
}

#[test]
fn a_missed_slo_is_named_with_its_series_limit_and_observation() {
    let dir = tempfile::tempdir().unwrap();
    let result = sample_result();
    let missed: Vec<_> = result.slo.iter().filter(|o| !o.pass).collect();
    assert!(
        !missed.is_empty(),
        "the sample misses p95 ready in full/direct"
    );
    let path = result.write(dir.path()).unwrap();
    let out = bench(&["report", path.to_str().unwrap()], dir.path());
    let err = stderr(&out);
    assert_eq!(code(&out), 1, "{err}");
    assert!(
        err.contains(&format!("{} SLOs missed", missed.len())),
        "{err}"
    );
    assert!(!err.contains("(s)"), "{err}");
    // One line per miss naming the objective and series, with the scenario's 3 s limit.
    for o in &missed {
        let start = format!("p95 ready of {}/{}: ", o.variant, o.target);
        let line = err
            .lines()
            .find(|l| l.trim_start().starts_with(&start))
            .unwrap_or_else(|| panic!("no line naming {start:?} in:\n{err}"));
        assert!(line.ends_with(", limit 3.00 s"), "{line}");
    }
    // One miss reads singular.
    let mut one = result.clone();
    let first_miss = one.slo.iter().position(|o| !o.pass).unwrap();
    for (i, o) in one.slo.iter_mut().enumerate() {
        o.pass = o.pass || i != first_miss;
    }
    let path = one.write(&dir.path().join("one")).unwrap();
    let err = stderr(&bench(&["report", path.to_str().unwrap()], dir.path()));
    assert!(err.contains("bench-harness: 1 SLO missed"), "{err}");
}

#[test]
fn inspect_help_lists_the_image_forms_it_reads() {
    let dir = tempfile::tempdir().unwrap();
    let out = bench(&["inspect", "--help"], dir.path());
    let help = stdout(&out);
    assert_eq!(code(&out), 0, "{help}");
    for form in [
        "oci:DIR[:TAG]",
        "variant:NAME",
        "docker://",
        "REGISTRY/REPO",
    ] {
        assert!(help.contains(form), "{form} missing from:\n{help}");
    }
}

#[test]
fn counts_of_one_are_singular_in_reports_and_comparisons() {
    let dir = tempfile::tempdir().unwrap();
    let one = synthetic_run(&[full(1_000)], 1, 1);
    let report = bench_harness::report::markdown(&one);
    assert!(report.contains(", 1 repetition, seed"), "{report}");
    assert!(!report.contains("1 repetitions"), "{report}");
    let path = one.write(dir.path()).unwrap();
    let out = bench(
        &["compare", path.to_str().unwrap(), path.to_str().unwrap()],
        dir.path(),
    );
    let text = stdout(&out);
    assert!(text.contains("1 repetition, "), "{text}");
    assert!(!text.contains("1 repetitions"), "{text}");
}

fn full(end_to_end_ms: u64) -> SyntheticSeries {
    SyntheticSeries {
        variant: "full",
        end_to_end_ms,
        egress_bytes: 40_000_000,
    }
}

/// A synthetic run whose repetitions in `bound` were host-bound (CPUs 97 % busy).
fn host_bound_run(end_to_end_ms: u64, seed: u64, bound: &[u32]) -> RunResult {
    let mut r = synthetic_run(&[full(end_to_end_ms)], 4, seed);
    let s = r.series_mut("full", "direct").unwrap();
    for rep in 0..4 {
        let mean_busy = if bound.contains(&rep) { 0.97 } else { 0.40 };
        s.cpu.insert(
            rep,
            CpuUse {
                mean_busy,
                saturated_fraction: mean_busy,
                samples: 20,
                own_cpu_seconds: 0.5,
            },
        );
    }
    r
}

#[test]
fn report_warns_on_stderr_when_bursts_were_host_bound() {
    let dir = tempfile::tempdir().unwrap();
    let path = host_bound_run(1_000, 1, &[0, 2]).write(dir.path()).unwrap();
    let out = bench(&["report", path.to_str().unwrap()], dir.path());
    let err = stderr(&out);
    assert_eq!(code(&out), 0, "{err}");
    assert!(err.contains("2 of 4 bursts host-bound"), "{err}");
    assert!(err.contains("full/direct repetition 0: 97 % busy"), "{err}");
    assert!(err.contains("full/direct repetition 2: 97 % busy"), "{err}");
    assert!(!err.contains("repetition 1:"), "{err}");

    let quiet = dir.path().join("quiet");
    let path = host_bound_run(1_000, 1, &[]).write(&quiet).unwrap();
    let out = bench(&["report", path.to_str().unwrap()], dir.path());
    assert!(!stderr(&out).contains("host-bound"), "{}", stderr(&out));
}

#[test]
fn compare_will_not_gate_host_bound_series_unless_asked() {
    let dir = tempfile::tempdir().unwrap();
    let base = host_bound_run(1_000, 1, &[1])
        .write(&dir.path().join("base"))
        .unwrap();
    let slower = host_bound_run(1_400, 2, &[])
        .write(&dir.path().join("slower"))
        .unwrap();
    let (base, slower) = (base.to_str().unwrap(), slower.to_str().unwrap());
    let gate = ["--fail-if-slower", "p95:end_to_end:10%"];

    let out = bench(
        &[&["compare", base, slower][..], &gate].concat(),
        dir.path(),
    );
    let (text, err) = (stdout(&out), stderr(&out));
    assert_eq!(code(&out), 3, "{text}\n{err}");
    assert!(
        err.contains("full / direct: host-bound bursts in baseline repetition 1 (1 of 4):"),
        "{err}"
    );
    assert!(err.contains("1 gate not judged"), "{err}");
    assert!(err.contains("--judge-host-bound"), "{err}");
    assert!(text.contains("(host-bound)"), "rows are marked:\n{text}");
    assert!(text.contains("not judged: host-bound"), "{text}");

    let out = bench(
        &[&["compare", base, slower, "--judge-host-bound"][..], &gate].concat(),
        dir.path(),
    );
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("1 regression gate crossed"));
    assert!(stderr(&out).contains("host-bound bursts"), "still warned");

    // Not host-bound: the same gate is judged as before.
    let clean = host_bound_run(1_000, 1, &[])
        .write(&dir.path().join("clean"))
        .unwrap();
    let out = bench(
        &[&["compare", clean.to_str().unwrap(), slower][..], &gate].concat(),
        dir.path(),
    );
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(!stderr(&out).contains("host-bound"), "{}", stderr(&out));
}

#[test]
fn results_without_stored_cpu_use_are_host_bound_by_their_warnings() {
    let mut old = synthetic_run(&[full(1_000)], 4, 1);
    old.warnings.push(
        HostBound {
            variant: "full".into(),
            target: "direct".into(),
            repetition: 2,
            mean_busy: 0.99,
        }
        .warning(),
    );
    assert!(old.series[0].cpu.is_empty());
    let bound = old.host_bound();
    assert_eq!(bound.len(), 1, "{bound:?}");
    assert_eq!((bound[0].repetition, bound[0].mean_busy), (2, 0.99));
    let new = synthetic_run(&[full(1_000)], 4, 2);
    let settings = Settings {
        gates: vec!["p95:end_to_end:10%".parse().unwrap()],
        ..Settings::default()
    };
    let c = compare::compare(
        &Input {
            name: "old.json",
            result: &old,
        },
        &Input {
            name: "new.json",
            result: &new,
        },
        &Pairing::SameSeries,
        &settings,
    )
    .unwrap();
    assert_eq!(c.pairs[0].host_bound[0], vec![2]);
    assert!(c.pairs[0].host_bound[1].is_empty());
    assert!(!c.gates[0].judged && !c.gates[0].crossed);
    assert!(
        c.notes.iter().any(|n| n.contains("host-bound")),
        "{:?}",
        c.notes
    );
}
