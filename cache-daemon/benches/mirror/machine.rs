//! The machine a run happened on, as the report states it: CPU model and cores, SHA-NI, memory,
//! kernel, date, load average, and the versions of the peers. Read from `/proc` and the programs
//! themselves; nothing is configured.

use std::process::Command;

/// Facts about this machine at the start of a run.
#[derive(Debug, Clone)]
pub struct Machine {
    /// `model name` from /proc/cpuinfo.
    pub cpu: String,
    /// Online processors.
    pub cores: usize,
    /// Whether the CPU has the SHA extensions.
    pub sha_ni: bool,
    /// MemTotal in GiB.
    pub memory_gib: f64,
    /// Kernel release.
    pub kernel: String,
    /// UTC date and time.
    pub date: String,
    /// 1, 5 and 15 minute load averages.
    pub load: String,
    /// `nginx -v`, `docker-registry --version`, `wrk -v`, first line each.
    pub peers: Vec<String>,
}

impl Machine {
    /// Reads it all.
    pub fn probe() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or("unknown".to_owned(), |(_, v)| v.trim().to_owned());
        let cores = cpuinfo
            .lines()
            .filter(|l| l.starts_with("processor"))
            .count();
        let sha_ni = cpuinfo
            .lines()
            .find(|l| l.starts_with("flags"))
            .is_some_and(|l| l.split_whitespace().any(|f| f == "sha_ni"));
        let memory_gib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find(|l| l.starts_with("MemTotal:"))?
                    .split_whitespace()
                    .nth(1)?
                    .parse::<f64>()
                    .ok()
            })
            .map_or(0.0, |kib| kib / 1048576.0);
        let peers = [
            ("nginx", "-v"),
            ("docker-registry", "--version"),
            ("wrk", "-v"),
        ]
        .iter()
        .filter_map(|(p, flag)| first_line(p, &[flag]))
        // wrk appends its copyright to the version line.
        .map(|l| l.split(" Copyright").next().unwrap_or_default().to_owned())
        .collect();
        Self {
            cpu,
            cores,
            sha_ni,
            memory_gib,
            kernel: read_trim("/proc/sys/kernel/osrelease"),
            date: first_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_default(),
            load: load_average(),
            peers,
        }
    }
}

/// The first three fields of /proc/loadavg.
pub fn load_average() -> String {
    read_trim("/proc/loadavg")
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The 1-minute load average.
pub fn load_1m() -> f64 {
    load_average()
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn read_trim(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// First non-empty line of a command's stdout or stderr (nginx and wrk print versions there).
fn first_line(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_owned)
}
