//! The origin: Debian's `docker-registry` (distribution 2.8) serving the test blobs from one
//! filesystem store, started once on the host's loopback (unshaped) and once inside the shaped
//! namespace. Upstream requests are counted from its Apache-style access log lines
//! (`<client-ip> - - [date] "GET /v2/.../blobs/sha256:... HTTP/1.1" 200 ...`), from a byte offset
//! taken before each measurement.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use stampede_oci::Digest;

use crate::client;
use crate::lab::{Proc, ShapedLink};

/// How long the access log must stay unchanged before counting (requests are logged when they
/// end, and distribution's proxy finishes background fills after its clients).
const LOG_QUIET: Duration = Duration::from_millis(1500);
/// Bound on waiting for the log to go quiet.
const LOG_QUIET_LIMIT: Duration = Duration::from_secs(60);

/// A running origin registry.
#[derive(Debug)]
pub struct Origin {
    proc: Proc,
    /// Where it listens.
    pub addr: SocketAddr,
    log: PathBuf,
}

impl Origin {
    /// Starts `docker-registry serve` on `addr` over the store at `data`, inside `link`'s
    /// namespace when given.
    ///
    /// # Errors
    /// It does not start or answer within 20 s.
    pub async fn start(
        dir: &Path,
        data: &Path,
        addr: SocketAddr,
        link: Option<&ShapedLink>,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let config = dir.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\n  fields:\n    service: upstream\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  maintenance:\n    uploadpurging:\n      enabled: false\nhttp:\n  addr: {addr}\n",
                data.display()
            ),
        )?;
        let mut cmd = match link {
            Some(link) => link.command("docker-registry"),
            None => Command::new("docker-registry"),
        };
        cmd.arg("serve").arg(&config);
        let log = dir.join("registry.log");
        let mut proc = Proc::spawn("docker-registry (origin)", cmd, &log)?;
        client::wait_ready(addr, Duration::from_secs(20))
            .await
            .with_context(|| format!("origin registry; see {}", log.display()))?;
        proc.check_running()?;
        Ok(Self { proc, addr, log })
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Current length of the access log; pass it to [`Origin::count_since`].
    pub fn log_offset(&self) -> u64 {
        std::fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0)
    }

    /// Waits (bounded) until the log has not grown for a while.
    pub async fn wait_quiet(&self) {
        let start = Instant::now();
        let mut last = (self.log_offset(), Instant::now());
        while start.elapsed() < LOG_QUIET_LIMIT {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = self.log_offset();
            if now != last.0 {
                last = (now, Instant::now());
            } else if last.1.elapsed() >= LOG_QUIET {
                return;
            }
        }
    }

    /// Access-log requests since `offset` with `method` whose path ends with `digest`.
    pub fn count_since(&self, offset: u64, method: &str, digest: &Digest) -> usize {
        let text = std::fs::read(&self.log).unwrap_or_default();
        let start = usize::try_from(offset).unwrap_or(0).min(text.len());
        let needle_method = format!("\"{method} /v2/");
        let needle_digest = format!("/blobs/{digest} ");
        String::from_utf8_lossy(&text[start..])
            .lines()
            .filter(|l| l.contains(" - - ["))
            .filter(|l| l.contains(&needle_method) && l.contains(&needle_digest))
            .count()
    }

    /// Stops it.
    pub fn stop(self) {
        self.proc.stop();
    }
}
