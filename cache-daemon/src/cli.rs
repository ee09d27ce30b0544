//! Command-line flags and environment variables, and their validation into a [`Config`].
//! Every flag has an environment variable (`CACHE_DAEMON_*`) so a DaemonSet can set it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use stampede_oci::Endpoint;

use crate::config::{
    Config, ServerConfig, StoreConfig, UpstreamConfig, DEFAULT_LISTEN, DEFAULT_MAX_CONNECTIONS,
};

/// A node-local, content-addressed OCI blob cache for containerd, CRI-O/podman and dockerd:
/// each digest is fetched upstream once, and every waiting reader streams it as it lands.
#[derive(Debug, Parser)]
#[command(name = "cache-daemon", version)]
pub struct Cli {
    /// Address to listen on.
    #[arg(long, env = "CACHE_DAEMON_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Store directory (blobs, metadata, temp files).
    #[arg(
        long,
        env = "CACHE_DAEMON_ROOT",
        default_value = "/var/lib/cache-daemon"
    )]
    pub root: PathBuf,
    /// Default upstream registry URL, used when a request names no registry (`?ns=`), e.g.
    /// `https://registry-1.docker.io` or `http://127.0.0.1:5000`.
    #[arg(long, env = "CACHE_DAEMON_UPSTREAM")]
    pub upstream: Option<String>,
    /// Upstream for a registry host as containerd names it in `?ns=`: `HOST=URL`, repeatable,
    /// e.g. `--registry docker.io=https://registry-1.docker.io`.
    #[arg(
        long = "registry",
        env = "CACHE_DAEMON_REGISTRIES",
        value_delimiter = ','
    )]
    pub registries: Vec<String>,
    /// Forward requests for unlisted registries to `https://<ns>`.
    #[arg(long, env = "CACHE_DAEMON_ALLOW_ANY_REGISTRY")]
    pub allow_any_registry: bool,
    /// How long a tag's digest is reused before asking upstream again.
    #[arg(long, env = "CACHE_DAEMON_TAG_TTL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub tag_ttl: Duration,
    /// Upstream connect timeout.
    #[arg(long, env = "CACHE_DAEMON_CONNECT_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,
    /// Upstream response-header timeout.
    #[arg(long, env = "CACHE_DAEMON_RESPONSE_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub response_timeout: Duration,
    /// Longest pause allowed between upstream body bytes during a fill.
    #[arg(long, env = "CACHE_DAEMON_BODY_IDLE_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub body_idle_timeout: Duration,
    /// Extra CA certificates (PEM) for upstream TLS, besides the system roots.
    #[arg(long, env = "CACHE_DAEMON_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// Connections served at once.
    #[arg(long, env = "CACHE_DAEMON_MAX_CONNECTIONS", default_value_t = DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// How long shutdown waits for responses in flight.
    #[arg(long, env = "CACHE_DAEMON_SHUTDOWN_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
    /// Log format.
    #[arg(
        long,
        env = "CACHE_DAEMON_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// A flag value that does not make a valid configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A URL is not `http[s]://host[:port]`.
    #[error("{flag}: {source}")]
    Url {
        /// Which flag.
        flag: &'static str,
        /// The parse error.
        #[source]
        source: stampede_oci::ClientError,
    },
    /// `--registry` is not `HOST=URL`.
    #[error("--registry {0:?}: expected HOST=URL, e.g. docker.io=https://registry-1.docker.io")]
    Registry(String),
    /// No way to reach any registry.
    #[error("no upstream: give --upstream URL, --registry HOST=URL or --allow-any-registry")]
    NoUpstream,
    /// A numeric limit is zero.
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
}

impl Cli {
    /// Validates the flags into a [`Config`].
    ///
    /// # Errors
    /// [`ConfigError`] naming the flag at fault.
    pub fn into_config(self) -> Result<Config, ConfigError> {
        let default = self
            .upstream
            .as_deref()
            .map(|u| {
                Endpoint::parse(u).map_err(|source| ConfigError::Url {
                    flag: "--upstream",
                    source,
                })
            })
            .transpose()?;
        let mut registries = BTreeMap::new();
        for entry in &self.registries {
            let (host, url) = entry
                .split_once('=')
                .ok_or_else(|| ConfigError::Registry(entry.clone()))?;
            if host.is_empty() {
                return Err(ConfigError::Registry(entry.clone()));
            }
            let endpoint = Endpoint::parse(url).map_err(|source| ConfigError::Url {
                flag: "--registry",
                source,
            })?;
            registries.insert(host.to_owned(), endpoint);
        }
        if default.is_none() && registries.is_empty() && !self.allow_any_registry {
            return Err(ConfigError::NoUpstream);
        }
        if self.max_connections == 0 {
            return Err(ConfigError::Zero("--max-connections"));
        }
        Ok(Config {
            server: ServerConfig {
                listen: self.listen,
                max_connections: self.max_connections,
                shutdown_grace: self.shutdown_grace,
            },
            store: StoreConfig {
                root: self.root,
                budget: None,
            },
            upstream: UpstreamConfig {
                default,
                registries,
                allow_any_registry: self.allow_any_registry,
                connect_timeout: self.connect_timeout,
                response_timeout: self.response_timeout,
                body_idle_timeout: self.body_idle_timeout,
                tag_ttl: self.tag_ttl,
                ca_file: self.ca_file,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, String> {
        let cli = Cli::try_parse_from(std::iter::once("cache-daemon").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        cli.into_config().map_err(|e| e.to_string())
    }

    #[test]
    fn flags_table() {
        let c = parse(&[
            "--upstream",
            "http://127.0.0.1:5000",
            "--registry",
            "docker.io=https://registry-1.docker.io",
            "--tag-ttl",
            "5s",
        ])
        .unwrap();
        assert_eq!(
            c.upstream.default.unwrap().base_url(),
            "http://127.0.0.1:5000"
        );
        assert_eq!(
            c.upstream.registries["docker.io"].base_url(),
            "https://registry-1.docker.io"
        );
        assert_eq!(c.upstream.tag_ttl, Duration::from_secs(5));
        for (args, needle) in [
            (vec![], "no upstream"),
            (vec!["--upstream", "ftp://x"], "--upstream"),
            (vec!["--registry", "docker.io"], "HOST=URL"),
            (
                vec!["--upstream", "http://x", "--max-connections", "0"],
                "greater than zero",
            ),
            (
                vec!["--upstream", "http://x", "--tag-ttl", "soon"],
                "tag-ttl",
            ),
        ] {
            let err = parse(&args).unwrap_err();
            assert!(err.contains(needle), "{args:?}: {err}");
        }
    }
}
