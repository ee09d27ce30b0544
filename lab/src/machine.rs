//! Facts about the machine a run or bench happened on, for `result.json`, report headers and
//! bench summaries: cores, CPU model, SHA extensions, memory, kernel, the load at the start, the
//! git revision of the workspace, and the versions of the real parts. Read from `/proc`, `git`
//! and the programs themselves; every fact but the core count may be missing (not Linux, no git),
//! and then is `None`. The one machine-facts type of the workspace.
//!
//! This module only collects; it does not judge whether the machine was the bottleneck (the
//! harness's warnings do that).

use std::path::Path;
use std::process::Command;

/// The machine a run happened on.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Machine {
    /// Logical CPUs available to this process.
    pub cores: u32,
    /// CPU model name (`/proc/cpuinfo`).
    pub cpu_model: Option<String>,
    /// Physical memory in bytes (`/proc/meminfo` `MemTotal`).
    pub memory_bytes: Option<u64>,
    /// Operating system (`linux`, ...).
    pub os: String,
    /// CPU architecture (`x86_64`, `aarch64`, ...).
    pub arch: String,
    /// Kernel release (`/proc/sys/kernel/osrelease`).
    pub kernel: Option<String>,
    /// `git rev-parse HEAD` of the workspace.
    pub git_revision: Option<String>,
    /// Whether tracked files had uncommitted changes.
    pub git_dirty: Option<bool>,
    /// Whether the CPU has the SHA extensions (sha256 runs several times faster with them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha_ni: Option<bool>,
    /// 1, 5 and 15 minute load averages when the facts were collected, as `/proc/loadavg`
    /// writes them (`"0.52 0.61 0.40"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_average: Option<String>,
}

impl Machine {
    /// Collects the facts; `workspace` is where `git` is asked for the revision. Blocking: reads
    /// `/proc` and runs `git` twice, so call it outside the burst.
    pub fn collect(workspace: &Path) -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Self {
            cores: std::thread::available_parallelism()
                .map_or(1, |n| u32::try_from(n.get()).unwrap_or(u32::MAX)),
            cpu_model: cpu_model(&cpuinfo),
            memory_bytes: memory_bytes(&meminfo),
            os: std::env::consts::OS.to_owned(),
            arch: std::env::consts::ARCH.to_owned(),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .ok()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty()),
            git_revision: git(workspace, &["rev-parse", "HEAD"]).map(|s| s.trim().to_owned()),
            git_dirty: git(
                workspace,
                &["status", "--porcelain", "--untracked-files=no"],
            )
            .map(|s| !s.trim().is_empty()),
            sha_ni: sha_ni(&cpuinfo),
            load_average: load_average(),
        }
    }

    /// Memory in GiB, 0 when unknown.
    pub fn memory_gib(&self) -> f64 {
        self.memory_bytes
            .map_or(0.0, |b| b as f64 / (1u64 << 30) as f64)
    }
}

/// The 1, 5 and 15 minute load averages now (`"0.52 0.61 0.40"`).
pub fn load_average() -> Option<String> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let fields: Vec<&str> = text.split_whitespace().take(3).collect();
    (fields.len() == 3).then(|| fields.join(" "))
}

/// The 1-minute load average now, 0 when unknown.
pub fn load_1m() -> f64 {
    load_average()
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// The first non-empty line a program prints for `args` (nginx and wrk print versions on
/// stderr; wrk appends its copyright), or `None` when it does not run.
pub fn program_version(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(|l| l.split(" Copyright").next().unwrap_or_default().to_owned())
}

fn sha_ni(cpuinfo: &str) -> Option<bool> {
    let flags = cpuinfo.lines().find(|l| l.starts_with("flags"))?;
    Some(flags.split_whitespace().any(|f| f == "sha_ni"))
}

fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| matches!(k.trim(), "model name" | "Model" | "cpu model"))
        .map(|(_, v)| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

fn memory_bytes(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line
        .trim_start_matches("MemTotal:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    kib.checked_mul(1024)
}

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        let cpuinfo = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) CPU @ 2.20GHz\n";
        assert_eq!(
            cpu_model(cpuinfo).as_deref(),
            Some("Intel(R) Xeon(R) CPU @ 2.20GHz")
        );
        assert_eq!(cpu_model(""), None);
        let meminfo = "MemTotal:        8048064 kB\nMemFree:          123 kB\n";
        assert_eq!(memory_bytes(meminfo), Some(8_048_064 * 1024));
        assert_eq!(memory_bytes("nothing"), None);
        assert_eq!(sha_ni("flags\t: fpu sse sha_ni avx\n"), Some(true));
        assert_eq!(sha_ni("flags\t: fpu sse\n"), Some(false));
        assert_eq!(sha_ni(""), None);
    }

    #[test]
    fn collects_at_least_cores_and_platform() {
        let m = Machine::collect(Path::new(env!("CARGO_MANIFEST_DIR")));
        assert!(m.cores >= 1);
        assert!(!m.os.is_empty() && !m.arch.is_empty());
    }
}
