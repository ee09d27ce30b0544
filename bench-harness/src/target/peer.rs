//! The peers a node operator would pick instead of our cache, started and stopped by the harness
//! itself so the comparison is one run on one machine: Debian's `docker-registry` (distribution
//! 2.8) in pull-through proxy mode, and nginx `proxy_cache` with `proxy_cache_lock` (lock timeout
//! and age raised to 600 s, blobs keyed by digest). Both come from `stampede_lab` with the
//! configurations `../shared/testbed.md` measured; each is started fresh for a burst, with its
//! config and state in the burst's temp dir, in front of the embedded registry's shared
//! listener, as one instance for all nodes (like a shared cache-daemon), and stopped by PID.
//!
//! A missing program is found before any burst ([`PeerKind::check`]): the error names the
//! Debian package, and the runner skips that target while the others run. This module does not
//! pull and does not count: the registry behind the peer counts what it was asked for.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use stampede_lab::probe::free_loopback_addr;
use stampede_lab::{DockerRegistry, LabError, NginxCache, NginxConfig, RegistryConfig};

use crate::scenario::TargetKind;

/// A peer cache the harness can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerKind {
    /// distribution 2.8 `proxy.remoteurl`.
    DistributionProxy,
    /// nginx 1.22 `proxy_cache` + `proxy_cache_lock`.
    Nginx,
}

impl PeerKind {
    /// The peer a target kind names, if it names one.
    pub fn of(kind: &TargetKind) -> Option<Self> {
        match kind {
            TargetKind::DistributionProxy => Some(Self::DistributionProxy),
            TargetKind::Nginx { .. } => Some(Self::Nginx),
            TargetKind::Direct
            | TargetKind::CacheDaemon { .. }
            | TargetKind::Mirror { .. }
            | TargetKind::Kubernetes(_) => None,
        }
    }

    pub fn program(self) -> &'static str {
        match self {
            Self::DistributionProxy => "docker-registry",
            Self::Nginx => "nginx",
        }
    }

    /// Whether its program is installed.
    ///
    /// # Errors
    /// [`LabError::Missing`], naming the Debian package.
    pub fn check(self) -> Result<(), LabError> {
        stampede_lab::find(self.program()).map(|_| ())
    }
}

#[derive(Debug)]
enum Server {
    Distribution(DockerRegistry),
    Nginx(NginxCache),
}

/// A running peer, stopped on drop.
#[derive(Debug)]
pub struct Peer {
    server: Server,
    addr: SocketAddr,
    logs: Vec<(PathBuf, &'static str)>,
}

impl Peer {
    /// Starts `kind` on a free loopback port in front of `upstream` (plain HTTP), with its
    /// config, store and logs under `dir`, and waits until it answers. Blocking: up to 20 s.
    ///
    /// # Errors
    /// [`LabError`]: the program is missing, the config cannot be written, or the server exits
    /// or does not answer (the error names its log).
    pub fn start(kind: PeerKind, upstream: SocketAddr, dir: &Path) -> Result<Self, LabError> {
        let addr = free_loopback_addr()?;
        let (server, logs) = match kind {
            PeerKind::DistributionProxy => {
                let config =
                    RegistryConfig::proxy(addr, dir.join("data"), &format!("http://{upstream}"));
                let registry = DockerRegistry::start(dir, &config, None)?;
                let log = registry.log_path().to_owned();
                (Server::Distribution(registry), vec![(log, "log")])
            }
            PeerKind::Nginx => {
                let config = NginxConfig::new(addr, upstream, dir);
                let logs = vec![
                    (config.access_log(), "access.log"),
                    (config.error_log(), "error.log"),
                ];
                (Server::Nginx(NginxCache::start(config)?), logs)
            }
        };
        Ok(Self { server, addr, logs })
    }

    /// `http://127.0.0.1:<port>`: where nodes pull.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Its log files and the names they are kept under (`Deployment::keep_logs`): `<stem>.log`
    /// (distribution: one log) or `<stem>.access.log` and `<stem>.error.log` (nginx).
    pub fn log_files<'a>(&'a self, stem: &'a str) -> impl Iterator<Item = (&'a Path, String)> + 'a {
        self.logs
            .iter()
            .map(move |(from, suffix)| (from.as_path(), format!("{stem}.{suffix}")))
    }

    /// Stops it (as dropping does): SIGTERM by PID, then SIGKILL to it and its children.
    pub fn stop(self) {
        match self.server {
            Server::Distribution(r) => r.stop(),
            Server::Nginx(n) => n.stop(),
        }
    }
}
