//! Debian's `docker-registry` (distribution 2.8): a plain origin with filesystem storage, or a
//! pull-through proxy of another registry (`proxy.remoteurl`), optionally behind htpasswd or
//! token auth or TLS. [`RegistryConfig`] renders the YAML the test bed used (access log on,
//! upload purging off); [`DockerRegistry::start`] writes it into a directory, starts the server
//! (inside a shaped namespace when given one), and waits until it answers.
//!
//! Known behaviour worth stating where it is started: in proxy mode distribution does not
//! coalesce concurrent misses, and even a single cold pull fetches each blob twice upstream (one
//! stream for the client, one background fill of its store); see `../shared/testbed.md`.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::access_log::AccessLog;
use crate::error::LabError;
use crate::netns::ShapedLink;
use crate::probe::wait_ready;
use crate::process::Proc;
use crate::program::find;

/// How long a registry gets to answer after start.
pub const START_LIMIT: Duration = Duration::from_secs(20);

/// How a registry authenticates clients.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum RegistryAuth {
    /// Anyone may pull and push.
    #[default]
    None,
    /// `auth: htpasswd` with this bcrypt file.
    Htpasswd(PathBuf),
    /// `auth: token` (Bearer).
    Token {
        /// The token endpoint URL.
        realm: String,
        /// The service name tokens are issued for.
        service: String,
        /// The issuer tokens must name.
        issuer: String,
        /// PEM certificate(s) of the token signing key.
        root_cert_bundle: PathBuf,
    },
}

/// Certificate and key for serving HTTPS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryTls {
    /// PEM certificate chain.
    pub certificate: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// What a registry is: where it listens and stores, and what it fronts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryConfig {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Filesystem storage root (registries may share one).
    pub storage: PathBuf,
    /// Pull-through proxy of this registry URL (`http://host:port`); `None` for a plain one.
    pub proxy_of: Option<String>,
    /// `http.secret`; needed only when several instances share uploads.
    pub http_secret: Option<String>,
    /// Serve HTTPS with this certificate.
    pub tls: Option<RegistryTls>,
    /// Client authentication.
    pub auth: RegistryAuth,
}

impl RegistryConfig {
    /// A plain registry on `addr` storing under `storage`.
    pub fn plain(addr: SocketAddr, storage: impl Into<PathBuf>) -> Self {
        Self {
            addr,
            storage: storage.into(),
            proxy_of: None,
            http_secret: None,
            tls: None,
            auth: RegistryAuth::None,
        }
    }

    /// A pull-through proxy of `upstream` (`http://host:port`) on `addr`, caching under
    /// `storage`.
    pub fn proxy(addr: SocketAddr, storage: impl Into<PathBuf>, upstream: &str) -> Self {
        Self {
            proxy_of: Some(upstream.to_owned()),
            ..Self::plain(addr, storage)
        }
    }

    /// The `config.yml` text.
    pub fn yaml(&self) -> String {
        let mut y = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  maintenance:\n    uploadpurging:\n      enabled: false\nhttp:\n  addr: {}\n",
            self.storage.display(),
            self.addr
        );
        if let Some(secret) = &self.http_secret {
            let _ = writeln!(y, "  secret: {secret}");
        }
        if let Some(tls) = &self.tls {
            let _ = write!(
                y,
                "  tls:\n    certificate: {}\n    key: {}\n",
                tls.certificate.display(),
                tls.key.display()
            );
        }
        match &self.auth {
            RegistryAuth::None => {}
            RegistryAuth::Htpasswd(file) => {
                let _ = write!(
                    y,
                    "auth:\n  htpasswd:\n    realm: stampede\n    path: {}\n",
                    file.display()
                );
            }
            RegistryAuth::Token {
                realm,
                service,
                issuer,
                root_cert_bundle,
            } => {
                let _ = write!(
                    y,
                    "auth:\n  token:\n    realm: {realm}\n    service: {service}\n    issuer: {issuer}\n    rootcertbundle: {}\n",
                    root_cert_bundle.display()
                );
            }
        }
        if let Some(upstream) = &self.proxy_of {
            let _ = write!(y, "proxy:\n  remoteurl: {upstream}\n");
        }
        y
    }
}

/// A running `docker-registry serve`, stopped on drop.
#[derive(Debug)]
pub struct DockerRegistry {
    proc: Proc,
    addr: SocketAddr,
    log: PathBuf,
}

impl DockerRegistry {
    /// Writes `dir/config.yml` from `config`, starts the registry (inside `netns` when given;
    /// its address must then be the namespace's) with its output in `dir/registry.log`, and
    /// waits until it answers.
    ///
    /// # Errors
    /// [`LabError::Missing`] (`docker-registry`), [`LabError::Io`] for the config,
    /// [`LabError::Exited`] or [`LabError::NotReady`] naming the log.
    pub fn start(
        dir: &Path,
        config: &RegistryConfig,
        netns: Option<&ShapedLink>,
    ) -> Result<Self, LabError> {
        let program = find("docker-registry")?;
        std::fs::create_dir_all(dir).map_err(LabError::io("create", dir))?;
        let file = dir.join("config.yml");
        std::fs::write(&file, config.yaml())
            .map_err(LabError::io("write registry config", &file))?;
        let mut cmd = match netns {
            Some(link) => link.command(&program),
            None => Command::new(&program),
        };
        cmd.arg("serve").arg(&file);
        let log = dir.join("registry.log");
        let what = if config.proxy_of.is_some() {
            "docker-registry (proxy)"
        } else {
            "docker-registry"
        };
        let mut proc = Proc::spawn(what, cmd, &log)?;
        wait_ready(&mut proc, config.addr, &log, START_LIMIT)?;
        Ok(Self {
            proc,
            addr: config.addr,
            log,
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `host:port`, as image references write a registry.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// `http://host:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Its log: logrus lines and Apache access-log lines mixed.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Its access log (the same file; other lines are skipped when reading).
    pub fn access_log(&self) -> AccessLog {
        AccessLog::new(&self.log)
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Stops it (as dropping does).
    pub fn stop(self) {
        self.proc.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_config_names_its_upstream() {
        let addr: SocketAddr = "127.0.0.1:5001".parse().unwrap();
        let y = RegistryConfig::proxy(addr, "/tmp/x/data", "http://10.231.4.1:5000").yaml();
        assert!(y.contains("http:\n  addr: 127.0.0.1:5001\n"), "{y}");
        assert!(y.contains("rootdirectory: /tmp/x/data\n"), "{y}");
        assert!(
            y.ends_with("proxy:\n  remoteurl: http://10.231.4.1:5000\n"),
            "{y}"
        );
        assert!(y.contains("accesslog:\n    disabled: false"), "{y}");
        let plain = RegistryConfig {
            http_secret: Some("s".into()),
            auth: RegistryAuth::Htpasswd("/h".into()),
            ..RegistryConfig::plain(addr, "/d")
        }
        .yaml();
        assert!(!plain.contains("proxy:"), "{plain}");
        assert!(plain.contains("  secret: s\n"), "{plain}");
        assert!(
            plain.contains("htpasswd:\n    realm: stampede\n    path: /h\n"),
            "{plain}"
        );
    }
}
