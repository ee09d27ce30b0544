//! The machine a bench ran on, as its summary states it: the workspace's machine facts
//! (`stampede_lab::Machine`: CPU, cores, SHA-NI, memory, kernel, load at the start) plus the
//! date and the versions of the real parts the bench measured against.

/// Facts about this machine at the start of a bench.
#[derive(Debug, Clone)]
pub struct Machine {
    /// CPU model, or "unknown".
    pub cpu: String,
    /// Online processors.
    pub cores: u32,
    /// Whether the CPU has the SHA extensions.
    pub sha_ni: bool,
    /// Memory in GiB.
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
        let facts =
            stampede_lab::Machine::collect(std::path::Path::new(env!("CARGO_MANIFEST_DIR")));
        let peers = [
            ("nginx", "-v"),
            ("docker-registry", "--version"),
            ("wrk", "-v"),
        ]
        .iter()
        .filter_map(|(p, flag)| stampede_lab::machine::program_version(p, &[flag]))
        .collect();
        Self {
            cpu: facts
                .cpu_model
                .clone()
                .unwrap_or_else(|| "unknown".to_owned()),
            cores: facts.cores,
            sha_ni: facts.sha_ni.unwrap_or(false),
            memory_gib: facts.memory_gib(),
            kernel: facts.kernel.clone().unwrap_or_default(),
            date: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            load: facts.load_average.clone().unwrap_or_default(),
            peers,
        }
    }
}

/// The first three fields of /proc/loadavg.
pub fn load_average() -> String {
    stampede_lab::machine::load_average().unwrap_or_default()
}

/// The 1-minute load average.
pub fn load_1m() -> f64 {
    stampede_lab::machine::load_1m()
}
