//! The things measured, each started fresh (empty cache, new port, own temp dir) for every
//! measurement and stopped after it: our `cache-daemon` binary, nginx with the test bed's
//! `proxy_cache_lock` config (lock timeout and age raised to 600 s; manifests by digest cached
//! too, so the manifest comparison is cache against cache), distribution in proxy mode, and
//! "direct", the origin itself with no cache in between. A peer whose program is not installed
//! is reported and skipped.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Context as _;

use crate::client;
use crate::lab::{have, Proc};

/// Which server answers the clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// This crate's daemon.
    Daemon,
    /// nginx 1.22 `proxy_cache` + `proxy_cache_lock`.
    Nginx,
    /// distribution 2.8 `proxy.remoteurl`.
    Distribution,
    /// The origin registry, no cache.
    Direct,
}

impl Kind {
    /// Every kind, daemon first.
    pub const ALL: [Kind; 4] = [Kind::Daemon, Kind::Nginx, Kind::Distribution, Kind::Direct];

    /// Name in reports and in `MIRROR_TARGETS`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Daemon => "cache-daemon",
            Kind::Nginx => "nginx",
            Kind::Distribution => "distribution",
            Kind::Direct => "direct",
        }
    }

    /// The program it needs, if any beyond the origin.
    fn program(self) -> Option<&'static str> {
        match self {
            Kind::Daemon | Kind::Direct => None,
            Kind::Nginx => Some("nginx"),
            Kind::Distribution => Some("docker-registry"),
        }
    }

    /// Whether it can run here; prints why not.
    pub fn available(self) -> bool {
        match self.program() {
            Some(p) if !have(p) => {
                eprintln!("mirror: {} skipped: `{p}` is not installed", self.name());
                false
            }
            _ => true,
        }
    }
}

/// A started target.
#[derive(Debug)]
pub struct Target {
    /// Where clients connect.
    pub addr: SocketAddr,
    proc: Option<Proc>,
    _dir: tempfile::TempDir,
}

/// A free loopback port (bound, then released).
///
/// # Errors
/// No port could be bound.
pub fn free_addr() -> anyhow::Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

impl Target {
    /// Starts `kind` in front of `origin` (for [`Kind::Direct`], `origin` is the target), with
    /// its state under a new temp dir in `work`.
    ///
    /// # Errors
    /// It does not start or answer within 20 s.
    pub async fn start(kind: Kind, origin: SocketAddr, work: &Path) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix(kind.name())
            .tempdir_in(work)?;
        let (proc, addr) = match kind {
            Kind::Direct => (None, origin),
            Kind::Daemon => {
                let addr = free_addr()?;
                let mut cmd = Command::new(env!("CARGO_BIN_EXE_cache-daemon"));
                cmd.arg("--listen")
                    .arg(addr.to_string())
                    .arg("--root")
                    .arg(dir.path().join("store"))
                    .arg("--upstream")
                    .arg(format!("http://{origin}"));
                let log = dir.path().join("daemon.log");
                (Some(Proc::spawn(kind.name(), cmd, &log)?), addr)
            }
            Kind::Nginx => {
                let addr = free_addr()?;
                let conf = write_nginx_conf(dir.path(), addr, origin)?;
                let mut cmd = Command::new("nginx");
                cmd.arg("-c")
                    .arg(&conf)
                    .arg("-p")
                    .arg(dir.path())
                    .args(["-g", "daemon off;"]);
                let log = dir.path().join("logs/stdout.log");
                (Some(Proc::spawn(kind.name(), cmd, &log)?), addr)
            }
            Kind::Distribution => {
                let addr = free_addr()?;
                let config = dir.path().join("config.yml");
                std::fs::write(
                    &config,
                    format!(
                        "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\nproxy:\n  remoteurl: http://{origin}\n",
                        dir.path().join("data").display()
                    ),
                )?;
                let mut cmd = Command::new("docker-registry");
                cmd.arg("serve").arg(&config);
                let log = dir.path().join("registry.log");
                (Some(Proc::spawn(kind.name(), cmd, &log)?), addr)
            }
        };
        let mut target = Self {
            addr,
            proc,
            _dir: dir,
        };
        client::wait_ready(addr, Duration::from_secs(20))
            .await
            .with_context(|| format!("{} did not come up", kind.name()))?;
        if let Some(p) = target.proc.as_mut() {
            p.check_running()?;
        }
        Ok(target)
    }

    /// The process serving requests (nginx: the master; its workers are its children).
    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(Proc::pid)
    }

    /// Stops it and removes its state.
    pub fn stop(self) {
        if let Some(p) = self.proc {
            p.stop();
        }
    }
}

/// The test bed's nginx blob cache (section 5) with the lock timeout and age raised, plus a
/// cached location for manifests by digest (content-addressed, so caching is safe).
fn write_nginx_conf(
    dir: &Path,
    listen: SocketAddr,
    origin: SocketAddr,
) -> anyhow::Result<std::path::PathBuf> {
    for sub in ["cache", "tmp", "logs"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    let d = dir.display();
    let conf = format!(
        r#"user root;
worker_processes 2;
error_log {d}/logs/error.log info;
pid {d}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
  access_log {d}/logs/access.log;
  client_body_temp_path {d}/tmp/body;
  proxy_temp_path       {d}/tmp/proxy;
  fastcgi_temp_path     {d}/tmp/fastcgi;
  uwsgi_temp_path       {d}/tmp/uwsgi;
  scgi_temp_path        {d}/tmp/scgi;
  proxy_cache_path {d}/cache levels=1:2 keys_zone=blobs:10m max_size=10g inactive=7d use_temp_path=off;
  map $uri $blob_digest {{ "~/blobs/(?<d>sha256:[0-9a-f]{{64}})$" $d; default $uri; }}
  upstream reg {{ server {origin}; keepalive 16; }}
  server {{
    listen {listen};
    client_max_body_size 0;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_set_header Host $http_host;
    location ~ "^/v2/.+/blobs/sha256:[0-9a-f]{{64}}$" {{
      proxy_pass http://reg;
      proxy_cache blobs;
      proxy_cache_key $blob_digest;
      proxy_cache_valid 200 7d;
      proxy_cache_lock on;
      proxy_cache_lock_timeout 600s;
      proxy_cache_lock_age 600s;
      proxy_ignore_headers Cache-Control Expires Set-Cookie;
      add_header X-Cache-Status $upstream_cache_status always;
    }}
    location ~ "^/v2/.+/manifests/sha256:[0-9a-f]{{64}}$" {{
      proxy_pass http://reg;
      proxy_cache blobs;
      proxy_cache_valid 200 7d;
      proxy_cache_lock on;
      proxy_cache_lock_timeout 600s;
      proxy_cache_lock_age 600s;
      proxy_ignore_headers Cache-Control Expires Set-Cookie;
      add_header X-Cache-Status $upstream_cache_status always;
    }}
    location /v2/ {{
      proxy_pass http://reg;
    }}
  }}
}}
"#
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf)?;
    Ok(path)
}
