//! The fuzz targets (`fuzz/`) build with the stable toolchain, every committed regression input
//! still passes, and a bounded fuzzing run of each target finds no crash. Runs `fuzz/run`, which
//! has its own workspace and target dir, so the outer cargo's environment is scrubbed first.
//! A test binary of its own (see Cargo.toml), so it never runs beside the timing-bound tests.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Fuzzing time per target.
const FUZZ_SECONDS: u32 = 10;
/// Build (cold: the whole daemon with instrumentation) plus three bounded runs.
const DEADLINE: Duration = Duration::from_secs(20 * 60);

#[test]
fn fuzz_targets_build_and_run_bounded_without_a_crash() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned();
    let script = root.join("fuzz/run");
    assert!(script.is_file(), "{} missing", script.display());
    let mut cmd = Command::new(&script);
    cmd.arg("--seconds")
        .arg(FUZZ_SECONDS.to_string())
        .current_dir(&root)
        .stdin(Stdio::null());
    // The outer `cargo test` sets these for its own build; the nested build must not inherit
    // them (target dir, flags, the package being tested, jobserver).
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        if (k.starts_with("CARGO") && k != "CARGO_HOME")
            || k.starts_with("RUSTC")
            || k == "RUSTFLAGS"
            || k == "RUSTDOCFLAGS"
            || k == "MAKEFLAGS"
            || k == "MFLAGS"
        {
            cmd.env_remove(&key);
        }
    }
    let started = Instant::now();
    let mut run = FuzzRun(cmd.spawn().expect("start fuzz/run"));
    let status = loop {
        if let Some(status) = run.0.try_wait().expect("wait for fuzz/run") {
            break status;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "fuzz/run still running after {DEADLINE:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    eprintln!("fuzz/run took {:?}", started.elapsed());
    assert!(
        status.success(),
        "fuzz/run failed ({status}): a regression input fails again or a crash was found; its \
         output above names the input"
    );
}

/// `fuzz/run` and what it started (cargo, the fuzz targets), killed on drop if still running:
/// after an overrun or any panic of the test.
struct FuzzRun(std::process::Child);

impl Drop for FuzzRun {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let started = stampede_lab::process::descendants(self.0.id());
            self.0.kill().ok();
            self.0.wait().ok();
            for pid in started {
                stampede_lab::process::kill(pid);
            }
        }
    }
}
