//! The TOML config file (`--config`): every flag, plus per-registry upstreams with credentials
//! and declared pins. Unknown keys and bad values are refused with the file name and line
//! number. This module only reads and checks the file's shape; `cli.rs` merges it with flags and
//! environment variables (flags win) and validates the result before anything binds.
//!
//! ```toml
//! listen = "0.0.0.0:5050"
//! admin_listen = "127.0.0.1:5051"
//! root = "/var/lib/cache-daemon"
//! upstream = "https://registry-1.docker.io"
//! max_bytes = "50GiB"
//! high_watermark = 0.9
//! low_watermark = 0.8
//! min_age = "1h"
//! verify_on_read = false
//! docker_config = "/root/.docker/config.json"
//!
//! [registries."ghcr.io"]
//! url = "https://ghcr.io"
//! username = "me"
//! password_file = "/etc/cache-daemon/ghcr-token"
//!
//! [[pins]]
//! image = "ghcr.io/acme/api:v1.42.0"
//! platform = "linux/amd64"
//!
//! [access]
//! check_callers = true   # private repositories only to callers the upstream accepts
//! allow_ttl = "60s"
//! deny_ttl = "5s"
//! grace = "5m"
//!
//! # cluster mode (off unless peer_listen is set)
//! peer_listen = "0.0.0.0:5052"
//! peer_advertise = "10.0.0.5:5052"
//! peers = ["10.0.0.5:5052", "10.0.0.6:5052"]   # or peers_dns = "name:5052", peers_file = "/path", or peers_kubernetes = "ns/svc:5052"
//! cluster_secret_file = "/etc/cache-daemon/cluster-secret"
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The file's shape. Every field is optional; absent ones fall back to flags or defaults.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Mirror listen address.
    pub listen: Option<SocketAddr>,
    /// Admin listen address, or `"off"`.
    pub admin_listen: Option<String>,
    /// Store directory.
    pub root: Option<PathBuf>,
    /// Default upstream URL.
    #[serde(default, deserialize_with = "de_upstream_url")]
    pub upstream: Option<String>,
    /// Forward unlisted registries to `https://<ns>`.
    pub allow_any_registry: Option<bool>,
    /// Tag TTL.
    #[serde(default, deserialize_with = "de_duration")]
    pub tag_ttl: Option<Duration>,
    /// Upstream connect timeout.
    #[serde(default, deserialize_with = "de_duration")]
    pub connect_timeout: Option<Duration>,
    /// Upstream response-header timeout.
    #[serde(default, deserialize_with = "de_duration")]
    pub response_timeout: Option<Duration>,
    /// Longest pause between upstream body bytes.
    #[serde(default, deserialize_with = "de_duration")]
    pub body_idle_timeout: Option<Duration>,
    /// Extra CA file for upstream TLS.
    pub ca_file: Option<PathBuf>,
    /// Connections served at once.
    pub max_connections: Option<usize>,
    /// Graceful shutdown grace period.
    #[serde(default, deserialize_with = "de_duration")]
    pub shutdown_grace: Option<Duration>,
    /// Time a client has to send request headers.
    #[serde(default, deserialize_with = "de_duration")]
    pub header_read_timeout: Option<Duration>,
    /// Time a response write may stay blocked before the connection is closed.
    #[serde(default, deserialize_with = "de_duration")]
    pub client_write_timeout: Option<Duration>,
    /// `"text"` or `"json"`.
    #[serde(default, deserialize_with = "de_log_format")]
    pub log_format: Option<String>,
    /// Byte budget, e.g. `"50GiB"`.
    #[serde(default, deserialize_with = "de_byte_size")]
    pub max_bytes: Option<u64>,
    /// Eviction starts above this fraction of `max_bytes`.
    #[serde(default, deserialize_with = "de_fraction")]
    pub high_watermark: Option<f64>,
    /// Eviction stops at this fraction of `max_bytes`.
    #[serde(default, deserialize_with = "de_fraction")]
    pub low_watermark: Option<f64>,
    /// Blobs younger than this are not evicted.
    #[serde(default, deserialize_with = "de_duration")]
    pub min_age: Option<Duration>,
    /// Rehash committed blobs as they are served.
    pub verify_on_read: Option<bool>,
    /// Requests in flight at once per upstream.
    pub upstream_concurrency: Option<usize>,
    /// Token realm hosts trusted with credentials beyond the same-domain rule.
    pub trusted_token_hosts: Option<Vec<String>>,
    /// A docker `config.json` whose `auths` supply credentials by registry host.
    pub docker_config: Option<PathBuf>,
    /// Upstreams by registry host (as containerd names it in `?ns=`).
    #[serde(default)]
    pub registries: BTreeMap<String, RegistryEntry>,
    /// Content that is never evicted.
    #[serde(default)]
    pub pins: Vec<PinEntry>,
    /// Caller checks.
    #[serde(default)]
    pub access: AccessEntry,
    /// Cluster mode: where this node serves peers.
    pub peer_listen: Option<SocketAddr>,
    /// This node's peer address as the others reach it.
    pub peer_advertise: Option<SocketAddr>,
    /// Members, `IP:PORT` each.
    pub peers: Option<Vec<String>>,
    /// Members from DNS, `NAME:PORT`.
    pub peers_dns: Option<String>,
    /// Members from a watched file.
    pub peers_file: Option<PathBuf>,
    /// Members from a Kubernetes Service's Endpoints, `NAMESPACE/SERVICE:PORT`.
    pub peers_kubernetes: Option<String>,
    /// File holding the cluster secret.
    pub cluster_secret_file: Option<PathBuf>,
    /// Peer connect timeout (default 200ms).
    #[serde(default, deserialize_with = "de_duration")]
    pub peer_connect_timeout: Option<Duration>,
    /// Longest pause between a peer's body bytes (default 3s).
    #[serde(default, deserialize_with = "de_duration")]
    pub peer_idle_timeout: Option<Duration>,
    /// Connections the peer port serves at once (default 256).
    pub peer_max_connections: Option<usize>,
}

/// `[access]`: checking callers' own credentials before private content is served.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessEntry {
    /// Check callers against the upstream (default false).
    pub check_callers: Option<bool>,
    /// Reuse of an "allowed" decision.
    #[serde(default, deserialize_with = "de_duration")]
    pub allow_ttl: Option<Duration>,
    /// Reuse of a "denied" decision.
    #[serde(default, deserialize_with = "de_duration")]
    pub deny_ttl: Option<Duration>,
    /// How long past `allow_ttl` an "allowed" decision serves while the upstream cannot be asked.
    #[serde(default, deserialize_with = "de_duration")]
    pub grace: Option<Duration>,
}

/// One registry's upstream and credentials.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryEntry {
    /// `http[s]://host[:port]`.
    #[serde(deserialize_with = "de_registry_url")]
    pub url: String,
    /// User name for basic auth or the token flow.
    pub username: Option<String>,
    /// File holding the password or access token (first line, trimmed).
    pub password_file: Option<PathBuf>,
    /// Environment variable holding the password or access token.
    pub password_env: Option<String>,
}

/// A declared pin: an image reference or a digest.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinEntry {
    /// `registry/repo:tag` or `registry/repo@sha256:...`.
    pub image: Option<String>,
    /// `sha256:...` of any blob or manifest.
    pub digest: Option<String>,
    /// For an index: pin only this platform (`os/arch[/variant]`).
    pub platform: Option<String>,
}

/// Why the config file is unusable.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// Unreadable.
    #[error("read config file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Not the expected TOML; the message names the line and column.
    #[error("config file {path}, line {line}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

impl FileConfig {
    /// Reads and parses `path`.
    ///
    /// # Errors
    /// [`FileError`] with the line number of the first problem.
    pub fn load(path: &Path) -> Result<Self, FileError> {
        let text = std::fs::read_to_string(path).map_err(|source| FileError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses `text`, naming `path` in errors.
    ///
    /// # Errors
    /// [`FileError::Parse`] with the line number of the first problem.
    pub fn parse(text: &str, path: &Path) -> Result<Self, FileError> {
        toml::from_str(text).map_err(|e: toml::de::Error| {
            let line = e.span().map_or(0, |s| {
                text[..s.start.min(text.len())].matches('\n').count() + 1
            });
            FileError::Parse {
                path: path.to_owned(),
                line,
                message: e.message().to_owned(),
            }
        })
    }
}

fn de_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let s = <String as serde::Deserialize>::deserialize(d)?;
    humantime::parse_duration(&s).map(Some).map_err(|e| {
        serde::de::Error::custom(format!(
            "invalid duration {s:?} ({e}); write e.g. \"30s\", \"5m\""
        ))
    })
}

// Values are checked while the file is parsed, so a bad one is reported with its line; `cli.rs`
// checks what spans settings (low below high) after merging with flags.

fn de_byte_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let s = <String as serde::Deserialize>::deserialize(d)?;
    s.parse::<stampede_oci::ByteSize>()
        .map(|b| Some(b.0))
        .map_err(|_| {
            serde::de::Error::custom(format!(
                "{s:?} is not a byte size; write e.g. \"50GiB\", \"500MB\""
            ))
        })
}

/// What is wrong with a registry URL that is not `http[s]://host[:port]`, in words for the
/// operator: a missing scheme (`127.0.0.1:5000`) is named as such.
pub fn url_problem(url: &str) -> String {
    const EXPECTED: &str = "expected http://host[:port] or https://host[:port]";
    if !url.contains("://") {
        return format!(
            "a scheme is needed: write \"http://{url}\" (plain HTTP) or \"https://{url}\"; {EXPECTED}"
        );
    }
    match stampede_oci::Endpoint::parse(url) {
        Ok(_) => String::new(),
        Err(_) => format!("{EXPECTED}, with no path or query"),
    }
}

fn check_url<E: serde::de::Error>(key: &str, url: String) -> Result<String, E> {
    match stampede_oci::Endpoint::parse(&url) {
        Ok(_) => Ok(url),
        Err(_) => Err(E::custom(format!("{key} = {url:?}: {}", url_problem(&url)))),
    }
}

fn de_upstream_url<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s = <String as serde::Deserialize>::deserialize(d)?;
    check_url("upstream", s).map(Some)
}

fn de_registry_url<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = <String as serde::Deserialize>::deserialize(d)?;
    check_url("url", s)
}

fn de_log_format<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s = <String as serde::Deserialize>::deserialize(d)?;
    match s.as_str() {
        "text" | "json" => Ok(Some(s)),
        _ => Err(serde::de::Error::custom(format!(
            "{s:?}: expected \"text\" or \"json\""
        ))),
    }
}

fn de_fraction<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    let v = <f64 as serde::Deserialize>::deserialize(d)?;
    if (0.0..=1.0).contains(&v) {
        Ok(Some(v))
    } else {
        Err(serde::de::Error::custom(format!(
            "{v} is not a fraction of max_bytes between 0 and 1"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_file_parses() {
        let text = r#"
listen = "0.0.0.0:5050"
root = "/var/lib/cache-daemon"
upstream = "https://registry-1.docker.io"
tag_ttl = "45s"
max_bytes = "50GiB"
high_watermark = 0.9
verify_on_read = true

[registries."ghcr.io"]
url = "https://ghcr.io"
username = "me"
password_env = "GHCR_TOKEN"

[[pins]]
image = "ghcr.io/acme/api:v1"
platform = "linux/amd64"
"#;
        let f = FileConfig::parse(text, Path::new("c.toml")).unwrap();
        assert_eq!(f.tag_ttl, Some(Duration::from_secs(45)));
        assert_eq!(f.max_bytes, Some(50 << 30));
        assert_eq!(f.verify_on_read, Some(true));
        assert_eq!(
            f.registries["ghcr.io"].password_env.as_deref(),
            Some("GHCR_TOKEN")
        );
        assert_eq!(f.pins[0].platform.as_deref(), Some("linux/amd64"));
    }

    #[test]
    fn a_url_without_a_scheme_is_refused_with_its_key_line_and_fix() {
        let cases = [
            (
                "root = \"/r\"\nupstream = \"127.0.0.1:15000\"\n",
                2,
                "upstream",
            ),
            (
                "[registries.\"r.example\"]\nusername = \"u\"\nurl = \"127.0.0.1:15000\"\n",
                3,
                "url",
            ),
        ];
        for (text, line, key) in cases {
            let err = FileConfig::parse(text, Path::new("c.toml")).unwrap_err();
            let msg = err.to_string();
            assert!(
                matches!(err, FileError::Parse { line: l, .. } if l == line),
                "{text:?}: {msg}"
            );
            for needle in [
                &format!("{key} = \"127.0.0.1:15000\""),
                "a scheme is needed",
                "\"http://127.0.0.1:15000\"",
                "c.toml",
            ] {
                assert!(msg.contains(needle), "{needle:?} not in {msg}");
            }
        }
        let path = url_problem("ftp://x/y");
        assert!(path.starts_with("expected http://host"), "{path}");
    }

    #[test]
    fn mistakes_are_refused_with_their_line() {
        let cases = [
            (
                "listen = \"127.0.0.1:5050\"\nlisten_port = 5\n",
                2,
                "unknown field",
            ),
            ("tag_ttl = \"soon\"\n", 1, "invalid duration"),
            (
                "\n\n[registries.\"x\"]\nurl = \"http://x\"\npassword = \"in the clear\"\n",
                5,
                "unknown field",
            ),
            ("max_connections = \"many\"\n", 1, "invalid type"),
            (
                "root = \"/r\"\nmax_bytes = \"lots\"\n",
                2,
                "is not a byte size",
            ),
            (
                "\nlog_format = \"xml\"\n",
                2,
                "expected \"text\" or \"json\"",
            ),
            ("high_watermark = 1.5\n", 1, "between 0 and 1"),
            ("\n\n\nlow_watermark = -0.1\n", 4, "between 0 and 1"),
        ];
        for (text, line, needle) in cases {
            let err = FileConfig::parse(text, Path::new("c.toml")).unwrap_err();
            let msg = err.to_string();
            assert!(
                matches!(err, FileError::Parse { line: l, .. } if l == line),
                "{text:?}: {msg}"
            );
            assert!(msg.contains(needle) && msg.contains("c.toml"), "{msg}");
        }
    }
}
