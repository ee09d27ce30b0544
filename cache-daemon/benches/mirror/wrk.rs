//! Runs `wrk` (Debian's 4.1) against one URL and reads its result from a Lua `done` hook that
//! prints one machine-readable line, so nothing depends on wrk's human output format.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context as _};

/// The Lua hook: one line `MIRROR <duration_us> <requests> <bytes> <errors> <p50_us> <p99_us>`.
const SCRIPT: &str = r#"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("MIRROR %d %d %d %d %d %d\n", summary.duration, summary.requests,
    summary.bytes, e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50.0), latency:percentile(99.0)))
end
"#;

/// One wrk run's outcome.
#[derive(Debug, Clone, Copy)]
pub struct WrkResult {
    /// Completed requests per second.
    pub requests_per_s: f64,
    /// Response bytes per second (headers included, as wrk counts them).
    pub bytes_per_s: f64,
    /// Connect, read, write, timeout errors and non-2xx/3xx answers.
    pub errors: u64,
    /// Median latency.
    pub p50: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct WrkSpec {
    /// Server.
    pub addr: SocketAddr,
    /// Path.
    pub path: String,
    /// Open connections (`-c`).
    pub connections: usize,
    /// Threads (`-t`).
    pub threads: usize,
    /// Run length (`-d`).
    pub duration: Duration,
}

/// Runs wrk; blocking (call from `spawn_blocking`).
///
/// # Errors
/// wrk is missing, fails, or prints no result line.
pub fn run(spec: &WrkSpec, work: &Path) -> anyhow::Result<WrkResult> {
    let script = work.join("mirror-done.lua");
    if !script.exists() {
        std::fs::write(&script, SCRIPT)?;
    }
    let out = Command::new("wrk")
        .arg(format!("-t{}", spec.threads))
        .arg(format!("-c{}", spec.connections))
        .arg(format!("-d{}s", spec.duration.as_secs().max(1)))
        .arg("--timeout")
        .arg("10s")
        .arg("-H")
        .arg(format!("Accept: {}", crate::client::MANIFEST_ACCEPT))
        .arg("-s")
        .arg(&script)
        .arg(format!("http://{}{}", spec.addr, spec.path))
        .output()
        .context("run wrk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(line) = text.lines().find(|l| l.starts_with("MIRROR ")) else {
        bail!(
            "wrk printed no result ({}): {} {}",
            out.status,
            text,
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let f: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse::<f64>().unwrap_or(0.0))
        .collect();
    if f.len() != 6 || f[0] <= 0.0 {
        bail!("unexpected wrk result line: {line}");
    }
    let secs = f[0] / 1e6;
    Ok(WrkResult {
        requests_per_s: f[1] / secs,
        bytes_per_s: f[2] / secs,
        errors: f[3] as u64,
        p50: Duration::from_micros(f[4] as u64),
        p99: Duration::from_micros(f[5] as u64),
    })
}
