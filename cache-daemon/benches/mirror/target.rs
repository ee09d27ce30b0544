//! The things measured, each started fresh (empty cache, new port, own temp dir) for every
//! measurement and stopped after it: our `cache-daemon` binary, nginx with the test bed's
//! `proxy_cache_lock` config (lock timeout and age raised to 600 s; manifests by digest cached
//! too, so the manifest comparison is cache against cache), distribution in proxy mode, and
//! "direct", the origin itself with no cache in between. The peers' configurations and process
//! guards are `stampede_lab`'s; a peer whose program is not installed is reported and skipped.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use stampede_lab::probe::{free_loopback_addr, wait_ready};
use stampede_lab::{DockerRegistry, NginxCache, NginxConfig, Proc, RegistryConfig};

/// Which server answers the clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// This crate's daemon.
    Daemon,
    /// Another cache-daemon build (`MIRROR_BASELINE_BIN`, an older commit's), measured beside
    /// this one for a before/after in one run; skipped unless that is set.
    Baseline,
    /// nginx 1.22 `proxy_cache` + `proxy_cache_lock`.
    Nginx,
    /// distribution 2.8 `proxy.remoteurl`.
    Distribution,
    /// The origin registry, no cache.
    Direct,
}

impl Kind {
    /// Every kind, daemon first.
    pub const ALL: [Kind; 5] = [
        Kind::Daemon,
        Kind::Baseline,
        Kind::Nginx,
        Kind::Distribution,
        Kind::Direct,
    ];

    /// Name in reports and in `MIRROR_TARGETS`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Daemon => "cache-daemon",
            Kind::Baseline => "cache-daemon-baseline",
            Kind::Nginx => "nginx",
            Kind::Distribution => "distribution",
            Kind::Direct => "direct",
        }
    }

    /// The program it needs, if any beyond the origin.
    fn program(self) -> Option<&'static str> {
        match self {
            Kind::Daemon | Kind::Baseline | Kind::Direct => None,
            Kind::Nginx => Some("nginx"),
            Kind::Distribution => Some("docker-registry"),
        }
    }

    /// Whether it can run here; prints why not, naming the package to install.
    pub fn available(self) -> bool {
        if self == Kind::Baseline && std::env::var_os(BASELINE_BIN).is_none() {
            eprintln!("mirror: {} skipped: {BASELINE_BIN} is not set", self.name());
            return false;
        }
        match self.program().map(stampede_lab::find) {
            Some(Err(e)) => {
                eprintln!("mirror: {} skipped: {e}", self.name());
                false
            }
            _ => true,
        }
    }
}

/// The process behind a started target.
#[derive(Debug)]
enum Server {
    Daemon(Proc),
    Nginx(NginxCache),
    Distribution(DockerRegistry),
}

/// A started target.
#[derive(Debug)]
pub struct Target {
    /// Where clients connect.
    pub addr: SocketAddr,
    server: Option<Server>,
    _dir: tempfile::TempDir,
}

/// The environment variable naming the [`Kind::Baseline`] binary.
const BASELINE_BIN: &str = "MIRROR_BASELINE_BIN";

/// How long a target gets to answer after start.
const START_LIMIT: Duration = Duration::from_secs(20);

/// A free loopback port (bound, then released).
///
/// # Errors
/// No port could be bound.
pub fn free_addr() -> anyhow::Result<SocketAddr> {
    Ok(free_loopback_addr()?)
}

impl Target {
    /// Starts `kind` in front of `origin` (for [`Kind::Direct`], `origin` is the target), with
    /// its state under a new temp dir in `work`.
    ///
    /// # Errors
    /// It does not start or answer within 20 s.
    pub fn start(kind: Kind, origin: SocketAddr, work: &Path) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix(kind.name())
            .tempdir_in(work)?;
        let d = dir.path();
        let (server, addr) = tokio::task::block_in_place(|| -> anyhow::Result<_> {
            Ok(match kind {
                Kind::Direct => (None, origin),
                Kind::Daemon | Kind::Baseline => {
                    let addr = free_addr()?;
                    let mut cmd = match std::env::var_os(BASELINE_BIN) {
                        Some(bin) if kind == Kind::Baseline => Command::new(bin),
                        _ => Command::new(env!("CARGO_BIN_EXE_cache-daemon")),
                    };
                    cmd.arg("--listen")
                        .arg(addr.to_string())
                        .arg("--root")
                        .arg(d.join("store"))
                        .arg("--upstream")
                        .arg(format!("http://{origin}"));
                    let log = d.join("daemon.log");
                    let mut proc = Proc::spawn(kind.name(), cmd, &log)?;
                    wait_ready(&mut proc, addr, &log, START_LIMIT)?;
                    (Some(Server::Daemon(proc)), addr)
                }
                Kind::Nginx => {
                    // With sendfile, as nginx is deployed to serve files (issue 18 compares
                    // CPU per GB against that).
                    let config = NginxConfig {
                        sendfile: true,
                        ..NginxConfig::new(free_addr()?, origin, d)
                    };
                    let cache = NginxCache::start(config)?;
                    let addr = cache.addr();
                    (Some(Server::Nginx(cache)), addr)
                }
                Kind::Distribution => {
                    let config = RegistryConfig::proxy(
                        free_addr()?,
                        d.join("data"),
                        &format!("http://{origin}"),
                    );
                    let registry = DockerRegistry::start(d, &config, None)?;
                    (Some(Server::Distribution(registry)), config.addr)
                }
            })
        })?;
        Ok(Self {
            addr,
            server,
            _dir: dir,
        })
    }

    /// The process serving requests (nginx: the master; its workers are its children).
    pub fn pid(&self) -> Option<u32> {
        self.server.as_ref().map(|s| match s {
            Server::Daemon(p) => p.pid(),
            Server::Nginx(n) => n.pid(),
            Server::Distribution(r) => r.pid(),
        })
    }

    /// Stops it and removes its state.
    pub fn stop(self) {
        drop(self.server);
    }
}
