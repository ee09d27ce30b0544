//! nginx 1.22 as a registry blob cache, configured as `../shared/testbed.md` (section 5) measured
//! it: `proxy_cache` keyed by the blob digest alone (so the same blob under two repositories is
//! one entry), `proxy_cache_lock on` to coalesce concurrent misses into one upstream GET, with
//! the lock timeout and age raised from their 5 s defaults to 600 s (with the defaults, a waiter
//! goes upstream itself after 5 s, uncached, and a lock older than 5 s lets one more request
//! through). Manifests by digest are cached the same way; manifests by tag, tag lists and the
//! `/v2/` ping pass through uncached.
//!
//! Known behaviour: lock waiters do not stream. They get nothing until the leader has the whole
//! object in the cache (nginx polls the lock about every 500 ms), so their time to first byte is
//! the leader's whole download. The access log appends `cache=$upstream_cache_status
//! up=$upstream_addr`, so its own view of what went upstream can be counted.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::access_log::AccessLog;
use crate::error::LabError;
use crate::probe::wait_ready_in;
use crate::process::Proc;
use crate::program::find;

/// How long nginx gets to answer after start.
pub const START_LIMIT: Duration = Duration::from_secs(20);
/// Lock timeout and age: long enough that no waiter ever bypasses the lock.
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(600);

/// What an nginx cache is: where it listens, what it fronts, where it keeps its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NginxConfig {
    /// Where it listens.
    pub listen: SocketAddr,
    /// The registry it caches (`host:port`, plain HTTP).
    pub upstream: SocketAddr,
    /// Its prefix directory: config, cache, temp files, logs and pid file live under it.
    pub dir: PathBuf,
    /// Worker processes.
    pub workers: u32,
    /// `sendfile on` (and `tcp_nopush on`): cached files sent by the kernel, as nginx is usually
    /// deployed. Off by default, as in nginx's own defaults and the test bed's config.
    pub sendfile: bool,
}

impl NginxConfig {
    /// A cache on `listen` in front of `upstream`, state under `dir`, two workers.
    pub fn new(listen: SocketAddr, upstream: SocketAddr, dir: impl Into<PathBuf>) -> Self {
        Self {
            listen,
            upstream,
            dir: dir.into(),
            workers: 2,
            sendfile: false,
        }
    }

    /// The access log's path.
    pub fn access_log(&self) -> PathBuf {
        self.dir.join("logs/access.log")
    }

    /// The error log's path.
    pub fn error_log(&self) -> PathBuf {
        self.dir.join("logs/error.log")
    }

    /// The `nginx.conf` text.
    pub fn text(&self) -> String {
        let d = self.dir.display();
        let (listen, upstream, workers) = (self.listen, self.upstream, self.workers);
        let sendfile = if self.sendfile {
            "\n  sendfile on;\n  tcp_nopush on;"
        } else {
            ""
        };
        let lock = LOCK_TIMEOUT.as_secs();
        let cached = format!(
            "      proxy_pass http://reg;
      proxy_cache blobs;
      proxy_cache_valid 200 7d;
      proxy_cache_lock on;
      proxy_cache_lock_timeout {lock}s;
      proxy_cache_lock_age {lock}s;
      proxy_ignore_headers Cache-Control Expires Set-Cookie;
      add_header X-Cache-Status $upstream_cache_status always;"
        );
        format!(
            r#"user root;
worker_processes {workers};
error_log {d}/logs/error.log info;
pid {d}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
  log_format stampede '$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent" cache=$upstream_cache_status up=$upstream_addr';
  access_log {d}/logs/access.log stampede;{sendfile}
  client_body_temp_path {d}/tmp/body;
  proxy_temp_path       {d}/tmp/proxy;
  fastcgi_temp_path     {d}/tmp/fastcgi;
  uwsgi_temp_path       {d}/tmp/uwsgi;
  scgi_temp_path        {d}/tmp/scgi;
  proxy_cache_path {d}/cache levels=1:2 keys_zone=blobs:10m max_size=10g inactive=7d use_temp_path=off;
  # Blobs are keyed by digest only: the same blob under another repository is the same entry.
  map $uri $blob_digest {{ "~/blobs/(?<d>sha256:[0-9a-f]{{64}})$" $d; default $uri; }}
  upstream reg {{ server {upstream}; keepalive 16; }}
  server {{
    listen {listen};
    client_max_body_size 0;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_set_header Host $http_host;
    location ~ "^/v2/.+/blobs/sha256:[0-9a-f]{{64}}$" {{
      proxy_cache_key $blob_digest;
{cached}
    }}
    location ~ "^/v2/.+/manifests/sha256:[0-9a-f]{{64}}$" {{
{cached}
    }}
    location /v2/ {{
      proxy_pass http://reg;
    }}
  }}
}}
"#
        )
    }

    /// Creates the prefix directories and writes `nginx.conf`; returns its path.
    ///
    /// # Errors
    /// [`LabError::Io`].
    pub fn write(&self) -> Result<PathBuf, LabError> {
        for sub in ["cache", "tmp", "logs"] {
            let d = self.dir.join(sub);
            std::fs::create_dir_all(&d).map_err(LabError::io("create", &d))?;
        }
        let path = self.dir.join("nginx.conf");
        std::fs::write(&path, self.text()).map_err(LabError::io("write nginx config", &path))?;
        Ok(path)
    }
}

/// A running nginx master (its workers are its children), stopped on drop.
#[derive(Debug)]
pub struct NginxCache {
    proc: Proc,
    config: NginxConfig,
}

impl NginxCache {
    /// Writes the config, starts `nginx -g 'daemon off;'` with its stdout and stderr in
    /// `<dir>/logs/stdout.log`, and waits until it answers.
    ///
    /// # Errors
    /// [`LabError::Missing`] (`nginx`), [`LabError::Io`], [`LabError::Exited`] or
    /// [`LabError::NotReady`] naming the error log.
    pub fn start(config: NginxConfig) -> Result<Self, LabError> {
        Self::start_in(config, None)
    }

    /// As [`NginxCache::start`], inside network namespace `netns` when given (`ip netns exec`;
    /// `config.listen` is then an address of that namespace, and readiness is asked from there).
    ///
    /// # Errors
    /// As [`NginxCache::start`].
    pub fn start_in(config: NginxConfig, netns: Option<&str>) -> Result<Self, LabError> {
        let program = find("nginx")?;
        let conf = config.write()?;
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(program);
                c
            }
            None => Command::new(program),
        };
        cmd.arg("-c")
            .arg(&conf)
            .arg("-p")
            .arg(&config.dir)
            .args(["-g", "daemon off;"]);
        let stdout = config.dir.join("logs/stdout.log");
        let mut proc = Proc::spawn("nginx (cache)", cmd, &stdout)?;
        wait_ready_in(
            &mut proc,
            netns,
            config.listen,
            &config.error_log(),
            START_LIMIT,
        )?;
        Ok(Self { proc, config })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.config.listen
    }

    /// `http://host:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.config.listen)
    }

    /// Its configuration.
    pub fn config(&self) -> &NginxConfig {
        &self.config
    }

    /// Its access log.
    pub fn access_log(&self) -> AccessLog {
        AccessLog::new(self.config.access_log())
    }

    /// The master's process id.
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Stops it (as dropping does); the workers go with the master.
    pub fn stop(self) {
        self.proc.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sendfile_is_off_unless_asked_for() {
        let mut c = NginxConfig::new(
            "127.0.0.1:5002".parse().unwrap(),
            "10.231.4.1:5000".parse().unwrap(),
            "/tmp/n",
        );
        assert!(!c.text().contains("sendfile"));
        c.sendfile = true;
        let t = c.text();
        assert!(t.contains("\n  sendfile on;\n  tcp_nopush on;\n"), "{t}");
    }

    #[test]
    fn config_coalesces_by_digest_with_raised_lock_limits() {
        let c = NginxConfig::new(
            "127.0.0.1:5002".parse().unwrap(),
            "10.231.4.1:5000".parse().unwrap(),
            "/tmp/n",
        );
        let t = c.text();
        for needle in [
            "listen 127.0.0.1:5002;",
            "server 10.231.4.1:5000; keepalive 16;",
            "proxy_cache_key $blob_digest;",
            "proxy_cache_lock on;",
            "proxy_cache_lock_timeout 600s;",
            "proxy_cache_lock_age 600s;",
            "access_log /tmp/n/logs/access.log stampede;",
            "cache=$upstream_cache_status up=$upstream_addr",
        ] {
            assert!(t.contains(needle), "missing {needle:?} in\n{t}");
        }
        assert_eq!(
            t.matches("proxy_cache_lock on;").count(),
            2,
            "blobs and manifests"
        );
    }
}
