//! The validated configuration, one sub-config per component. Built by `cli.rs` from flags,
//! environment variables and (later) a config file; each component takes its own part by value.
//! Nothing here touches the network or the disk.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use stampede_oci::{Digest, Endpoint, ImageRef, Platform};

/// Everything the daemon needs to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where and how to accept clients.
    pub server: ServerConfig,
    /// The on-disk blob store.
    pub store: StoreConfig,
    /// The origin registries.
    pub upstream: UpstreamConfig,
    /// Content declared pinned in the config file; resolved and fetched at start.
    pub pins: Vec<PinRequest>,
    /// Whether callers' own credentials are checked before private content is served.
    pub access: AccessConfig,
}

/// Caller checks (`access.rs`): before content of a repository whose upstream the daemon holds
/// credentials for is served, the caller's own `Authorization` is tried upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessConfig {
    /// Check callers at all (off: anyone who reaches the port reads whatever is cached).
    pub check_callers: bool,
    /// How long an "allowed" answer for (caller, upstream, repository) is reused.
    pub allow_ttl: Duration,
    /// How long a "denied" or "not found" answer is reused.
    pub deny_ttl: Duration,
    /// How long past `allow_ttl` an "allowed" answer still serves while the upstream cannot be
    /// asked (unreachable, timing out, failing, throttling).
    pub grace: Duration,
}

/// Default reuse of an "allowed" decision.
pub const DEFAULT_ACCESS_ALLOW_TTL: Duration = Duration::from_secs(60);
/// Default reuse of a "denied" decision: short, so a caller just granted rights waits little.
pub const DEFAULT_ACCESS_DENY_TTL: Duration = Duration::from_secs(5);
/// Default grace for "allowed" decisions during an upstream outage.
pub const DEFAULT_ACCESS_GRACE: Duration = Duration::from_secs(300);

impl Default for AccessConfig {
    fn default() -> Self {
        Self {
            check_callers: false,
            allow_ttl: DEFAULT_ACCESS_ALLOW_TTL,
            deny_ttl: DEFAULT_ACCESS_DENY_TTL,
            grace: DEFAULT_ACCESS_GRACE,
        }
    }
}

/// Something to pin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinRequest {
    /// An image or a digest.
    pub target: PinTarget,
    /// For an index: only this platform; `None`: every platform.
    pub platform: Option<Platform>,
}

/// What a pin names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinTarget {
    /// An image: its manifest (or index and platform manifests), configs and layers.
    Image(ImageRef),
    /// One digest (a manifest's children are included when the manifest is cached).
    Digest(Digest),
}

impl std::fmt::Display for PinTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Image(i) => write!(f, "{i}"),
            Self::Digest(d) => write!(f, "{d}"),
        }
    }
}

/// Listener and connection limits.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on for registry clients.
    pub listen: SocketAddr,
    /// Address of the admin endpoint; `None` disables it.
    pub admin_listen: Option<SocketAddr>,
    /// Connections the mirror listener serves at once; further ones wait in the accept queue.
    pub max_connections: usize,
    /// How long graceful shutdown waits for in-flight responses before closing them.
    pub shutdown_grace: Duration,
    /// How long a client has to send a request's headers (slowloris bound); also bounds how
    /// long an unread request body may keep a connection open.
    pub header_read_timeout: Duration,
    /// How long a response write may stay blocked (the client reads nothing) before the
    /// connection is closed.
    pub client_write_timeout: Duration,
}

/// The content-addressed store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Root directory; `blobs/`, `meta/`, `tmp/`, `state/` live under it.
    pub root: PathBuf,
    /// The byte budget; `None` keeps everything.
    pub budget: Option<Budget>,
    /// Rehash committed blobs as they are served, cutting a response whose blob no longer
    /// matches its digest and quarantining the blob (off by default: it costs a sha256 pass
    /// per hit).
    pub verify_on_read: bool,
}

/// How much the store may hold, and how eviction behaves.
#[derive(Debug, Clone, PartialEq)]
pub struct Budget {
    /// Most bytes of committed blobs to keep.
    pub max_bytes: u64,
    /// Eviction starts when usage exceeds this fraction of `max_bytes` (0 < high <= 1).
    pub high_watermark: f64,
    /// Eviction stops when usage is at most this fraction of `max_bytes` (0 <= low < high).
    pub low_watermark: f64,
    /// Blobs committed more recently than this are not evicted.
    pub min_age: Duration,
}

impl Budget {
    /// Bytes above which eviction starts.
    pub fn high_bytes(&self) -> u64 {
        (self.max_bytes as f64 * self.high_watermark) as u64
    }

    /// Bytes eviction brings usage down to.
    pub fn low_bytes(&self) -> u64 {
        (self.max_bytes as f64 * self.low_watermark) as u64
    }
}

/// Default high watermark.
pub const DEFAULT_HIGH_WATERMARK: f64 = 0.90;
/// Default low watermark.
pub const DEFAULT_LOW_WATERMARK: f64 = 0.80;

/// Origin registries and how to talk to them.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// Used when a request carries no `ns` query, or one not in `registries` while
    /// `ns_fallback` is true.
    pub default: Option<Endpoint>,
    /// Registry host (as containerd writes it in `ns=`, e.g. `docker.io`, `127.0.0.1:5000`) to
    /// upstream endpoint.
    pub registries: BTreeMap<String, Endpoint>,
    /// Send requests whose `ns` names an unlisted registry to `https://<ns>` (off by default:
    /// an open proxy to every registry is a choice the operator makes).
    pub allow_any_registry: bool,
    /// TCP/TLS connect timeout.
    pub connect_timeout: Duration,
    /// Time allowed for upstream response headers.
    pub response_timeout: Duration,
    /// Longest pause allowed between body bytes of an upstream fill.
    pub body_idle_timeout: Duration,
    /// How long a tag's resolved digest is used before asking upstream again.
    pub tag_ttl: Duration,
    /// Extra CA certificates (PEM) trusted for upstream TLS.
    pub ca_file: Option<PathBuf>,
    /// Requests in flight at once per upstream; more wait in a queue.
    pub concurrency: usize,
    /// Token realm hosts trusted with credentials beyond the same-domain rule.
    pub trusted_token_hosts: Vec<String>,
    /// Credentials by registry host for registries reached through `allow_any_registry`.
    pub any_credentials: BTreeMap<String, stampede_oci::auth::Credentials>,
}

/// Default upstream requests in flight per upstream.
pub const DEFAULT_UPSTREAM_CONCURRENCY: usize = 32;

/// Default listen address: a port that does not collide with a registry's usual 5000.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:5050";
/// Default admin address: loopback only, so only the node itself can run the tools.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:5051";
/// Default number of concurrent connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Default [`ServerConfig::header_read_timeout`].
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Default [`ServerConfig::client_write_timeout`].
pub const DEFAULT_CLIENT_WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default tag TTL.
pub const DEFAULT_TAG_TTL: Duration = Duration::from_secs(30);

impl UpstreamConfig {
    /// An upstream config with defaults and only a default registry; handy for tests.
    pub fn with_default(default: Endpoint) -> Self {
        Self {
            default: Some(default),
            registries: BTreeMap::new(),
            allow_any_registry: false,
            connect_timeout: Duration::from_secs(10),
            response_timeout: Duration::from_secs(30),
            body_idle_timeout: Duration::from_secs(60),
            tag_ttl: DEFAULT_TAG_TTL,
            ca_file: None,
            concurrency: DEFAULT_UPSTREAM_CONCURRENCY,
            trusted_token_hosts: Vec::new(),
            any_credentials: BTreeMap::new(),
        }
    }
}

impl UpstreamConfig {
    /// What an operator should hear at start about this upstream setup, one sentence each:
    /// without a default upstream, every request that names no registry (no `?ns=`: dockerd's
    /// `registry-mirrors`, podman and CRI-O mirrors) is refused, and those clients then quietly
    /// pull from the registry themselves.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.default.is_none() {
            let named: Vec<&str> = self.registries.keys().map(String::as_str).collect();
            let by = if named.is_empty() {
                "only registries named by ?ns= (allow_any_registry)".to_owned()
            } else {
                format!("only the registries {}", named.join(", "))
            };
            warnings.push(format!(
                "no default upstream: this cache serves {by}; requests that name no registry \
                 (dockerd registry-mirrors, podman and CRI-O registries.conf mirrors send none) \
                 are refused with 403 and those clients silently pull from the registry \
                 directly. Set upstream (--upstream) to the registry they mirror, e.g. \
                 upstream = \"https://registry-1.docker.io\""
            ));
        }
        warnings
    }
}

impl Config {
    /// A config for tests and embedding: listen on `127.0.0.1:0`, store at `root`, one upstream.
    pub fn for_upstream(root: PathBuf, upstream: Endpoint) -> Self {
        Self {
            server: ServerConfig {
                listen: SocketAddr::from(([127, 0, 0, 1], 0)),
                admin_listen: None,
                max_connections: DEFAULT_MAX_CONNECTIONS,
                shutdown_grace: Duration::from_secs(5),
                header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
                client_write_timeout: DEFAULT_CLIENT_WRITE_TIMEOUT,
            },
            store: StoreConfig {
                root,
                budget: None,
                verify_on_read: false,
            },
            upstream: UpstreamConfig::with_default(upstream),
            pins: Vec::new(),
            access: AccessConfig::default(),
        }
    }
}
