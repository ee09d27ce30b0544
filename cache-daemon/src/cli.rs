//! Command-line flags, environment variables and the config file, merged (flags and env win
//! over the file, the file over defaults) and validated into a [`Config`] before anything binds.
//! Every serve flag has an environment variable (`CACHE_DAEMON_*`) so a DaemonSet can set it.
//!
//! Commands: `serve` (the default), and the operator tools `ls`, `pin`, `unpin`, `prefetch`,
//! `gc`, `verify`, which talk to the running daemon's admin endpoint or, when no daemon holds the
//! store, work on the stopped store directly (`tool.rs`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use stampede_oci::auth::{Credentials, DockerConfig, DockerConfigError};
use stampede_oci::{Digest, Endpoint, ImageRef, Platform};

use crate::cluster::membership::{self, Member, PeerSource};
use crate::cluster::signing::MIN_SECRET_BYTES;
use crate::config::{
    AccessConfig, Budget, Config, PinRequest, PinTarget, ServerConfig, StoreConfig, UpstreamConfig,
    DEFAULT_ADMIN_LISTEN, DEFAULT_HIGH_WATERMARK, DEFAULT_LISTEN, DEFAULT_LOW_WATERMARK,
    DEFAULT_MAX_CONNECTIONS, DEFAULT_TAG_TTL, DEFAULT_UPSTREAM_CONCURRENCY,
};
use crate::config::{
    ClusterConfig, ClusterSecret, DEFAULT_PEER_CONNECT_TIMEOUT, DEFAULT_PEER_IDLE_TIMEOUT,
    DEFAULT_PEER_MAX_CONNECTIONS, DEFAULT_PEER_RESPONSE_TIMEOUT,
};
use crate::config::{DEFAULT_ACCESS_ALLOW_TTL, DEFAULT_ACCESS_DENY_TTL, DEFAULT_ACCESS_GRACE};
use crate::config_file::{AccessEntry, FileConfig, FileError};

/// Default store directory.
pub const DEFAULT_ROOT: &str = "/var/lib/cache-daemon";

/// A node-local, content-addressed OCI blob cache for containerd, CRI-O/podman and dockerd:
/// each digest is fetched upstream once, and every waiting reader streams it as it lands.
#[derive(Debug, Parser)]
#[command(name = "cache-daemon", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// Serve (when no command is given).
    #[command(flatten)]
    pub serve: ServeArgs,
    /// An operator tool instead of serving.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve as a registry mirror (the default).
    Serve(Box<ServeArgs>),
    /// List cached blobs: digest, size, media type, repositories and tags, last access, pinned.
    Ls(LsArgs),
    /// Pin an image (manifest, config, layers) or a digest so it is never evicted; an image not
    /// yet cached is fetched first.
    Pin(PinArgs),
    /// Remove pins by the target they were made with.
    Unpin(UnpinArgs),
    /// Fetch an image into the cache ahead of a burst.
    Prefetch(PrefetchArgs),
    /// Run eviction now, down to the low watermark (or --target-bytes).
    Gc(GcArgs),
    /// Rehash every cached blob; quarantine any that does not match its digest.
    Verify(VerifyArgs),
}

/// Flags of `serve`. All optional here so the config file can supply them.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// TOML config file with any of these settings, registries with credentials, and pins.
    #[arg(long, env = "CACHE_DAEMON_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on for registry clients [default: 127.0.0.1:5050].
    #[arg(long, env = "CACHE_DAEMON_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Address of the admin endpoint (inventory, pins, prefetch, gc, verify), or `off`
    /// [default: 127.0.0.1:5051].
    #[arg(long, env = "CACHE_DAEMON_ADMIN_LISTEN")]
    pub admin_listen: Option<String>,
    /// Store directory (blobs, metadata, state, temp files) [default: /var/lib/cache-daemon].
    #[arg(long, env = "CACHE_DAEMON_ROOT")]
    pub root: Option<PathBuf>,
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
    /// A docker `config.json` supplying upstream credentials by registry host: `credHelpers`
    /// (its `docker-credential-<name>` is run at start), `auths`, then `credsStore`.
    #[arg(long, env = "CACHE_DAEMON_DOCKER_CONFIG")]
    pub docker_config: Option<PathBuf>,
    /// How long a tag's digest is reused before asking upstream again [default: 30s].
    #[arg(long, env = "CACHE_DAEMON_TAG_TTL", value_parser = humantime::parse_duration)]
    pub tag_ttl: Option<Duration>,
    /// Upstream connect timeout [default: 10s].
    #[arg(long, env = "CACHE_DAEMON_CONNECT_TIMEOUT", value_parser = humantime::parse_duration)]
    pub connect_timeout: Option<Duration>,
    /// Upstream response-header timeout [default: 30s].
    #[arg(long, env = "CACHE_DAEMON_RESPONSE_TIMEOUT", value_parser = humantime::parse_duration)]
    pub response_timeout: Option<Duration>,
    /// Longest pause allowed between upstream body bytes during a fill [default: 60s].
    #[arg(long, env = "CACHE_DAEMON_BODY_IDLE_TIMEOUT", value_parser = humantime::parse_duration)]
    pub body_idle_timeout: Option<Duration>,
    /// Extra CA certificates (PEM) for upstream TLS, besides the system roots.
    #[arg(long, env = "CACHE_DAEMON_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// Upstream requests in flight at once per upstream; more queue [default: 32].
    #[arg(long, env = "CACHE_DAEMON_UPSTREAM_CONCURRENCY")]
    pub upstream_concurrency: Option<usize>,
    /// Byte budget of the store, e.g. `50GiB` [default: unlimited].
    #[arg(long, env = "CACHE_DAEMON_MAX_BYTES")]
    pub max_bytes: Option<String>,
    /// Eviction starts above this fraction of --max-bytes [default: 0.9].
    #[arg(long, env = "CACHE_DAEMON_HIGH_WATERMARK")]
    pub high_watermark: Option<f64>,
    /// Eviction stops at this fraction of --max-bytes [default: 0.8].
    #[arg(long, env = "CACHE_DAEMON_LOW_WATERMARK")]
    pub low_watermark: Option<f64>,
    /// Blobs committed more recently than this are never evicted [default: 0s].
    #[arg(long, env = "CACHE_DAEMON_MIN_AGE", value_parser = humantime::parse_duration)]
    pub min_age: Option<Duration>,
    /// Rehash committed blobs as they are served: a blob that no longer matches its digest is
    /// cut off, quarantined and fetched again on the next request. Costs a sha256 pass per hit.
    #[arg(long, env = "CACHE_DAEMON_VERIFY_ON_READ")]
    pub verify_on_read: bool,
    /// Connections served at once [default: 4096].
    #[arg(long, env = "CACHE_DAEMON_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// How long shutdown waits for responses in flight [default: 10s].
    #[arg(long, env = "CACHE_DAEMON_SHUTDOWN_GRACE", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Option<Duration>,
    /// How long a client has to send request headers before it is disconnected [default: 30s].
    #[arg(long, env = "CACHE_DAEMON_HEADER_READ_TIMEOUT", value_parser = humantime::parse_duration)]
    pub header_read_timeout: Option<Duration>,
    /// How long a response write may stay blocked (the client reads nothing) before the
    /// connection is closed [default: 60s].
    #[arg(long, env = "CACHE_DAEMON_CLIENT_WRITE_TIMEOUT", value_parser = humantime::parse_duration)]
    pub client_write_timeout: Option<Duration>,
    /// Log format [default: text].
    #[arg(long, env = "CACHE_DAEMON_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Serve content of repositories whose upstream the daemon holds credentials for only to
    /// callers whose own credentials the upstream accepts (one HEAD per caller and repository
    /// per --access-allow-ttl) [default: off: anyone reaching the port reads the cache].
    #[arg(long, env = "CACHE_DAEMON_CHECK_CALLERS")]
    pub check_callers: bool,
    /// How long an "allowed" caller check is reused [default: 60s].
    #[arg(long, env = "CACHE_DAEMON_ACCESS_ALLOW_TTL", value_parser = humantime::parse_duration)]
    pub access_allow_ttl: Option<Duration>,
    /// How long a "denied" caller check is reused [default: 5s].
    #[arg(long, env = "CACHE_DAEMON_ACCESS_DENY_TTL", value_parser = humantime::parse_duration)]
    pub access_deny_ttl: Option<Duration>,
    /// How long past its TTL an "allowed" check still serves while the upstream cannot be
    /// asked [default: 5m].
    #[arg(long, env = "CACHE_DAEMON_ACCESS_GRACE", value_parser = humantime::parse_duration)]
    pub access_grace: Option<Duration>,
    /// Cluster mode: serve peers on this address (a port of its own), so the nodes share one
    /// registry fetch per stripe [default: off]. Needs a member list and --cluster-secret-file.
    #[arg(long, env = "CACHE_DAEMON_PEER_LISTEN")]
    pub peer_listen: Option<SocketAddr>,
    /// This node's peer address as the other members reach it (and list it), when it differs
    /// from --peer-listen (e.g. --peer-listen 0.0.0.0:5052 --peer-advertise $(POD_IP):5052).
    #[arg(long, env = "CACHE_DAEMON_PEER_ADVERTISE")]
    pub peer_advertise: Option<SocketAddr>,
    /// The cluster's members: IP:PORT peer addresses, comma-separated (this node may be listed).
    #[arg(long, env = "CACHE_DAEMON_PEERS", value_delimiter = ',')]
    pub peers: Vec<String>,
    /// The cluster's members: every address NAME resolves to, at PORT; resolved again every
    /// 10 s (a Kubernetes headless Service over the DaemonSet's pods).
    #[arg(long, env = "CACHE_DAEMON_PEERS_DNS")]
    pub peers_dns: Option<String>,
    /// The cluster's members: a file with one IP:PORT per line (# comments), re-read when it
    /// changes.
    #[arg(long, env = "CACHE_DAEMON_PEERS_FILE")]
    pub peers_file: Option<PathBuf>,
    /// The cluster's members: every address of the Kubernetes Service's Endpoints, ready or
    /// not, at PORT (NAMESPACE/SERVICE:PORT), read with the pod's service account (RBAC: get
    /// endpoints) every 10 s. Needs no cluster DNS.
    #[arg(long, env = "CACHE_DAEMON_PEERS_KUBERNETES")]
    pub peers_kubernetes: Option<String>,
    /// File holding the cluster secret (at least 16 bytes; surrounding whitespace ignored) that
    /// signs peer requests. Every member must have the same.
    #[arg(long, env = "CACHE_DAEMON_CLUSTER_SECRET_FILE")]
    pub cluster_secret_file: Option<PathBuf>,
}

/// Where the operator tools find the store: the config file (for its root, admin address and
/// upstreams), or explicit flags.
#[derive(Debug, Clone, Default, Args)]
pub struct StoreArgs {
    /// The daemon's config file.
    #[arg(long, env = "CACHE_DAEMON_CONFIG")]
    pub config: Option<PathBuf>,
    /// Store directory.
    #[arg(long, env = "CACHE_DAEMON_ROOT")]
    pub root: Option<PathBuf>,
    /// Admin endpoint of the running daemon, e.g. `http://127.0.0.1:5051`; when absent, the
    /// stopped store is used directly, or the configured admin address if a daemon holds it.
    #[arg(long)]
    pub admin: Option<String>,
    /// Default upstream URL (for prefetch and pin on a stopped store).
    #[arg(long, env = "CACHE_DAEMON_UPSTREAM")]
    pub upstream: Option<String>,
}

/// `ls`.
#[derive(Debug, Clone, Args)]
pub struct LsArgs {
    /// Where the store is.
    #[command(flatten)]
    pub store: StoreArgs,
    /// JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `pin`.
#[derive(Debug, Clone, Args)]
pub struct PinArgs {
    /// Where the store is.
    #[command(flatten)]
    pub store: StoreArgs,
    /// An image reference (`registry/repo:tag`, `@sha256:...`) or a digest.
    pub target: String,
    /// For an index, pin only this platform (`os/arch[/variant]`); default: every platform.
    #[arg(long)]
    pub platform: Option<String>,
}

/// `unpin`.
#[derive(Debug, Clone, Args)]
pub struct UnpinArgs {
    /// Where the store is.
    #[command(flatten)]
    pub store: StoreArgs,
    /// The target as it was pinned.
    pub target: String,
}

/// `prefetch`.
#[derive(Debug, Clone, Args)]
pub struct PrefetchArgs {
    /// Where the store is.
    #[command(flatten)]
    pub store: StoreArgs,
    /// An image reference.
    pub image: String,
    /// For an index, fetch only this platform; default: every platform.
    #[arg(long)]
    pub platform: Option<String>,
}

/// `gc`.
#[derive(Debug, Clone, Args)]
pub struct GcArgs {
    /// Where the store is.
    #[command(flatten)]
    pub store: StoreArgs,
    /// Only show what would be evicted.
    #[arg(long)]
    pub dry_run: bool,
    /// Evict down to this many bytes instead of the low watermark, e.g. `10GiB`.
    #[arg(long)]
    pub target_bytes: Option<String>,
}

/// `verify`.
#[derive(Debug, Clone, Args)]
pub struct VerifyArgs {
    /// Where the store is.
    #[command(flatten)]
    pub store: StoreArgs,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// A setting that does not make a valid configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file is unusable.
    #[error(transparent)]
    File(#[from] FileError),
    /// A URL is not `http[s]://host[:port]`.
    #[error("{setting} = {url:?}: {problem}")]
    Url {
        /// Which setting.
        setting: String,
        /// The value given.
        url: String,
        /// What is wrong, in words (`config_file::url_problem`).
        problem: String,
    },
    /// `--registry` is not `HOST=URL`.
    #[error("--registry {0:?}: expected HOST=URL, e.g. docker.io=https://registry-1.docker.io")]
    Registry(String),
    /// No way to reach any registry.
    #[error("no upstream: set upstream (--upstream URL), a registry (--registry HOST=URL) or allow_any_registry")]
    NoUpstream,
    /// A value is out of range.
    #[error("{setting}: {problem}")]
    Invalid {
        /// Which setting.
        setting: String,
        /// What is wrong.
        problem: String,
    },
    /// A credential could not be read.
    #[error("credentials for {registry}: {problem}")]
    Credentials {
        /// Which registry.
        registry: String,
        /// What is wrong (never the secret itself).
        problem: String,
    },
    /// The docker config is unusable.
    #[error(transparent)]
    DockerConfig(#[from] DockerConfigError),
}

fn invalid(setting: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        setting: setting.to_owned(),
        problem: problem.into(),
    }
}

/// Everything `serve` needs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The daemon's configuration.
    pub config: Config,
    /// How to log.
    pub log_format: LogFormat,
}

/// Parses a byte size such as `50GiB`.
///
/// # Errors
/// A message saying how to write one.
pub fn parse_bytes(setting: &str, s: &str) -> Result<u64, ConfigError> {
    s.parse::<stampede_oci::ByteSize>()
        .map(|b| b.0)
        .map_err(|_| {
            invalid(
                setting,
                format!("{s:?} is not a byte size; write e.g. 50GiB, 500MB"),
            )
        })
}

impl ServeArgs {
    /// Merges flags, environment and the config file (flags win), and validates.
    ///
    /// # Errors
    /// [`ConfigError`] naming the setting at fault.
    pub fn into_settings(self) -> Result<Settings, ConfigError> {
        let file = match &self.config {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        let root = self
            .root
            .clone()
            .or(file.root.clone())
            .unwrap_or_else(|| PathBuf::from(DEFAULT_ROOT));
        let admin_listen = parse_admin(
            self.admin_listen
                .as_deref()
                .or(file.admin_listen.as_deref()),
        )?;
        let log_format = log_format(self.log_format, file.log_format.as_deref())?;
        let upstream = upstream_config(&self, &file)?;
        let store = store_config(&self, &file, root)?;
        let server = server_config(&self, &file, admin_listen)?;
        let pins = file
            .pins
            .iter()
            .enumerate()
            .map(|(i, p)| {
                pin_request(
                    &format!("pins[{i}]"),
                    p.image.as_deref(),
                    p.digest.as_deref(),
                    p.platform.as_deref(),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Settings {
            config: Config {
                server,
                store,
                upstream,
                pins,
                access: access_config(&self, &file.access)?,
                cluster: cluster_config(&self, &file)?,
            },
            log_format,
        })
    }
}

/// `log_format` from the flag, else the file (`"text"` or `"json"`), else text.
fn log_format(flag: Option<LogFormat>, file: Option<&str>) -> Result<LogFormat, ConfigError> {
    match (flag, file) {
        (Some(f), _) => Ok(f),
        (None, None | Some("text")) => Ok(LogFormat::Text),
        (None, Some("json")) => Ok(LogFormat::Json),
        (None, Some(other)) => Err(invalid(
            "log_format",
            format!("{other:?}: expected \"text\" or \"json\""),
        )),
    }
}

/// The store under `root`: its budget (watermarks checked even without one) and read checks.
fn store_config(
    args: &ServeArgs,
    file: &FileConfig,
    root: PathBuf,
) -> Result<StoreConfig, ConfigError> {
    // Watermarks are checked even without a budget: a wrong pair is a mistake whenever
    // max_bytes is added later.
    let high = args
        .high_watermark
        .or(file.high_watermark)
        .unwrap_or(DEFAULT_HIGH_WATERMARK);
    let low = args
        .low_watermark
        .or(file.low_watermark)
        .unwrap_or(DEFAULT_LOW_WATERMARK);
    if !(high > 0.0 && high <= 1.0) {
        return Err(invalid(
            "high_watermark",
            format!("{high} must be in (0, 1]"),
        ));
    }
    if !(low >= 0.0 && low < high) {
        return Err(invalid(
            "low_watermark",
            format!("{low} must be in [0, high_watermark = {high})"),
        ));
    }
    let max_bytes = match args.max_bytes.as_deref() {
        Some(s) => Some(parse_bytes("max_bytes", s)?),
        None => file.max_bytes,
    };
    let budget = max_bytes.map(|max_bytes| Budget {
        max_bytes,
        high_watermark: high,
        low_watermark: low,
        min_age: args.min_age.or(file.min_age).unwrap_or_default(),
    });
    Ok(StoreConfig {
        root,
        budget,
        verify_on_read: args.verify_on_read || file.verify_on_read.unwrap_or(false),
    })
}

/// The listener's settings: addresses, connection limit, grace and client timeouts.
fn server_config(
    args: &ServeArgs,
    file: &FileConfig,
    admin_listen: Option<SocketAddr>,
) -> Result<ServerConfig, ConfigError> {
    let max_connections = args
        .max_connections
        .or(file.max_connections)
        .unwrap_or(DEFAULT_MAX_CONNECTIONS);
    if max_connections == 0 {
        return Err(invalid("max_connections", "must be greater than zero"));
    }
    let header_read_timeout = args
        .header_read_timeout
        .or(file.header_read_timeout)
        .unwrap_or(crate::config::DEFAULT_HEADER_READ_TIMEOUT);
    if header_read_timeout.is_zero() {
        return Err(invalid("header_read_timeout", "must be greater than zero"));
    }
    let client_write_timeout = args
        .client_write_timeout
        .or(file.client_write_timeout)
        .unwrap_or(crate::config::DEFAULT_CLIENT_WRITE_TIMEOUT);
    if client_write_timeout.is_zero() {
        return Err(invalid("client_write_timeout", "must be greater than zero"));
    }
    Ok(ServerConfig {
        listen: args
            .listen
            .or(file.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("default address parses")),
        admin_listen,
        max_connections,
        shutdown_grace: args
            .shutdown_grace
            .or(file.shutdown_grace)
            .unwrap_or(Duration::from_secs(10)),
        header_read_timeout,
        client_write_timeout,
    })
}

fn access_config(args: &ServeArgs, file: &AccessEntry) -> Result<AccessConfig, ConfigError> {
    let config = AccessConfig {
        check_callers: args.check_callers || file.check_callers.unwrap_or(false),
        allow_ttl: args
            .access_allow_ttl
            .or(file.allow_ttl)
            .unwrap_or(DEFAULT_ACCESS_ALLOW_TTL),
        deny_ttl: args
            .access_deny_ttl
            .or(file.deny_ttl)
            .unwrap_or(DEFAULT_ACCESS_DENY_TTL),
        grace: args
            .access_grace
            .or(file.grace)
            .unwrap_or(DEFAULT_ACCESS_GRACE),
    };
    if config.allow_ttl.is_zero() {
        return Err(invalid(
            "access.allow_ttl",
            "must be greater than zero (every request would cost an upstream HEAD and the grace would never apply)",
        ));
    }
    Ok(config)
}

/// Cluster mode from flags and file: off unless `peer_listen` is set; then exactly one member
/// source and a readable, non-empty secret are required.
fn cluster_config(
    args: &ServeArgs,
    file: &FileConfig,
) -> Result<Option<ClusterConfig>, ConfigError> {
    let listen = args.peer_listen.or(file.peer_listen);
    let advertise = args.peer_advertise.or(file.peer_advertise);
    let peers: Vec<String> = if args.peers.is_empty() {
        file.peers.clone().unwrap_or_default()
    } else {
        args.peers.clone()
    };
    let dns = args.peers_dns.clone().or(file.peers_dns.clone());
    let peers_file = args.peers_file.clone().or(file.peers_file.clone());
    let kubernetes = args
        .peers_kubernetes
        .clone()
        .or(file.peers_kubernetes.clone());
    let secret_file = args
        .cluster_secret_file
        .clone()
        .or(file.cluster_secret_file.clone());
    let Some(listen) = listen else {
        let stray = [
            (advertise.is_some(), "peer_advertise"),
            (!peers.is_empty(), "peers"),
            (dns.is_some(), "peers_dns"),
            (peers_file.is_some(), "peers_file"),
            (kubernetes.is_some(), "peers_kubernetes"),
            (secret_file.is_some(), "cluster_secret_file"),
        ];
        if let Some((_, name)) = stray.iter().find(|(set, _)| *set) {
            return Err(invalid(
                name,
                "cluster settings need peer_listen (--peer-listen ADDR) to turn cluster mode on",
            ));
        }
        return Ok(None);
    };
    let advertise = match advertise {
        Some(a) if membership::reachable(&a) => Member::from(a),
        Some(a) => {
            return Err(invalid(
                "peer_advertise",
                format!("{a} cannot be reached by peers (port 0, an unspecified, multicast or broadcast address)"),
            ))
        }
        None if membership::reachable(&listen) => Member::from(listen),
        None => {
            return Err(invalid(
                "peer_listen",
                format!("{listen} is not an address peers can reach; set peer_advertise (--peer-advertise IP:PORT) to this node's address"),
            ))
        }
    };
    let source = peer_source(peers, dns, peers_file, kubernetes)?;
    let secret = cluster_secret(secret_file)?;
    let max_connections = file
        .peer_max_connections
        .unwrap_or(DEFAULT_PEER_MAX_CONNECTIONS);
    if max_connections == 0 {
        return Err(invalid("peer_max_connections", "must be greater than zero"));
    }
    Ok(Some(ClusterConfig {
        listen,
        advertise,
        peers: source,
        secret,
        connect_timeout: file
            .peer_connect_timeout
            .unwrap_or(DEFAULT_PEER_CONNECT_TIMEOUT),
        response_timeout: DEFAULT_PEER_RESPONSE_TIMEOUT,
        idle_timeout: file.peer_idle_timeout.unwrap_or(DEFAULT_PEER_IDLE_TIMEOUT),
        max_connections,
    }))
}

/// The one member source among `peers`, `peers_dns`, `peers_file` and `peers_kubernetes`.
fn peer_source(
    peers: Vec<String>,
    dns: Option<String>,
    peers_file: Option<PathBuf>,
    kubernetes: Option<String>,
) -> Result<PeerSource, ConfigError> {
    let member_error = |setting: &str, e: membership::MemberError| invalid(setting, e.to_string());
    let sources = [
        !peers.is_empty(),
        dns.is_some(),
        peers_file.is_some(),
        kubernetes.is_some(),
    ];
    if sources.iter().filter(|set| **set).count() > 1 {
        return Err(invalid(
            "peers",
            "give only one of peers, peers_dns, peers_file and peers_kubernetes",
        ));
    }
    if let Some(service) = kubernetes {
        let service = crate::cluster::endpoints::parse(&service)
            .map_err(|e| member_error("peers_kubernetes", e))?;
        return Ok(PeerSource::Kubernetes(service));
    }
    let source = match (!peers.is_empty(), dns, peers_file) {
        (true, None, None) => PeerSource::Static(
            membership::parse_list(peers.iter().map(String::as_str))
                .map_err(|e| member_error("peers", e))?,
        ),
        (false, Some(dns), None) => {
            let (name, port) = membership::parse_dns(&dns).map_err(|e| member_error("peers_dns", e))?;
            PeerSource::Dns { name, port }
        }
        (false, None, Some(path)) => {
            let text = std::fs::read_to_string(&path).map_err(|e| {
                invalid("peers_file", format!("read {}: {e}", path.display()))
            })?;
            membership::parse_file_text(&text).map_err(|e| {
                invalid("peers_file", format!("{}: {e}", path.display()))
            })?;
            PeerSource::File(path)
        }
        (false, None, None) => {
            return Err(invalid(
                "peer_listen",
                "cluster mode needs its members: peers (--peers ADDR[,ADDR...]), peers_dns (--peers-dns NAME:PORT), peers_file (--peers-file PATH) or peers_kubernetes (--peers-kubernetes NAMESPACE/SERVICE:PORT)",
            ))
        }
        _ => {
            return Err(invalid(
                "peers",
                "give only one of peers, peers_dns, peers_file and peers_kubernetes",
            ))
        }
    };
    Ok(source)
}

/// The cluster secret from its file: at least [`MIN_SECRET_BYTES`] once trimmed.
fn cluster_secret(secret_file: Option<PathBuf>) -> Result<ClusterSecret, ConfigError> {
    let Some(secret_file) = secret_file else {
        return Err(invalid(
            "cluster_secret_file",
            "cluster mode needs the cluster secret (--cluster-secret-file PATH)",
        ));
    };
    let secret = std::fs::read(&secret_file).map_err(|e| {
        invalid(
            "cluster_secret_file",
            format!("read {}: {e}", secret_file.display()),
        )
    })?;
    let secret = secret.trim_ascii().to_vec();
    if secret.len() < MIN_SECRET_BYTES {
        return Err(invalid(
            "cluster_secret_file",
            format!(
                "{} holds {} bytes; the cluster secret must be at least {MIN_SECRET_BYTES} (e.g. head -c 32 /dev/urandom | base64)",
                secret_file.display(),
                secret.len()
            ),
        ));
    }
    Ok(ClusterSecret(secret))
}

fn parse_admin(value: Option<&str>) -> Result<Option<SocketAddr>, ConfigError> {
    match value {
        Some("off") => Ok(None),
        Some(s) => s
            .parse()
            .map(Some)
            .map_err(|_| invalid("admin_listen", format!("{s:?} is not host:port or \"off\""))),
        None => Ok(Some(
            DEFAULT_ADMIN_LISTEN
                .parse()
                .expect("default address parses"),
        )),
    }
}

fn endpoint(setting: &str, url: &str) -> Result<Endpoint, ConfigError> {
    Endpoint::parse(url).map_err(|_| ConfigError::Url {
        setting: setting.to_owned(),
        url: url.to_owned(),
        problem: crate::config_file::url_problem(url),
    })
}

fn upstream_config(args: &ServeArgs, file: &FileConfig) -> Result<UpstreamConfig, ConfigError> {
    let creds = DockerCreds(
        match args
            .docker_config
            .as_deref()
            .or(file.docker_config.as_deref())
        {
            Some(path) => Some(DockerConfig::load(path)?),
            None => None,
        },
    );
    let default = args
        .upstream
        .as_deref()
        .or(file.upstream.as_deref())
        .map(|u| endpoint("upstream", u))
        .transpose()?
        .map(|e| -> Result<Endpoint, ConfigError> {
            let c = creds.for_host(e.authority())?;
            Ok(e.with_credentials(c))
        })
        .transpose()?;
    let registries = named_registries(args, file, &creds)?;
    // The default upstream is usually one of the named registries too (`upstream =
    // "https://registry-1.docker.io"` beside `[registries."docker.io"]` holding the Docker Hub
    // login): requests that name no registry (dockerd, podman, CRI-O send no `?ns=`) use that
    // entry's credentials, as `?ns=docker.io` ones do.
    let default = default.map(|d| {
        if d.has_credentials() {
            return d;
        }
        registries
            .values()
            .find(|e| e.has_credentials() && e.base_url() == d.base_url())
            .map_or(d, Clone::clone)
    });
    let allow_any_registry = args.allow_any_registry || file.allow_any_registry.unwrap_or(false);
    if default.is_none() && registries.is_empty() && !allow_any_registry {
        return Err(ConfigError::NoUpstream);
    }
    let concurrency = args
        .upstream_concurrency
        .or(file.upstream_concurrency)
        .unwrap_or(DEFAULT_UPSTREAM_CONCURRENCY);
    if concurrency == 0 {
        return Err(invalid("upstream_concurrency", "must be greater than zero"));
    }
    Ok(UpstreamConfig {
        default,
        registries,
        allow_any_registry,
        connect_timeout: args
            .connect_timeout
            .or(file.connect_timeout)
            .unwrap_or(Duration::from_secs(10)),
        response_timeout: args
            .response_timeout
            .or(file.response_timeout)
            .unwrap_or(Duration::from_secs(30)),
        body_idle_timeout: args
            .body_idle_timeout
            .or(file.body_idle_timeout)
            .unwrap_or(Duration::from_secs(60)),
        tag_ttl: args.tag_ttl.or(file.tag_ttl).unwrap_or(DEFAULT_TAG_TTL),
        ca_file: args.ca_file.clone().or(file.ca_file.clone()),
        concurrency,
        trusted_token_hosts: file.trusted_token_hosts.clone().unwrap_or_default(),
        any_credentials: if allow_any_registry {
            creds.every_registry()?
        } else {
            BTreeMap::new()
        },
    })
}

/// The credentials a docker `config.json` gives, by registry host (none without one).
struct DockerCreds(Option<DockerConfig>);

impl DockerCreds {
    fn for_host(&self, host: &str) -> Result<Option<Credentials>, DockerConfigError> {
        Ok(match &self.0 {
            Some(config) => config.credentials_for(host)?.map(|f| f.credentials),
            None => None,
        })
    }

    /// Every registry the file names with its credentials (for `allow_any_registry`).
    fn every_registry(&self) -> Result<BTreeMap<String, Credentials>, DockerConfigError> {
        let mut all = BTreeMap::new();
        if let Some(config) = &self.0 {
            for host in config.named_registries() {
                if let Some(found) = config.credentials_for(&host)? {
                    all.insert(host, found.credentials);
                }
            }
        }
        Ok(all)
    }
}

/// The upstreams named by host: the file's `[registries]` (with their own login, else the
/// docker config's), then `--registry HOST=URL` flags (the docker config's login).
fn named_registries(
    args: &ServeArgs,
    file: &FileConfig,
    creds: &DockerCreds,
) -> Result<BTreeMap<String, Endpoint>, ConfigError> {
    let mut registries = BTreeMap::new();
    for (host, entry) in &file.registries {
        let e = endpoint(&format!("registries.{host:?}.url"), &entry.url)?;
        let login = match &entry.username {
            Some(username) => Some(Credentials::Basic {
                username: username.clone(),
                password: read_secret(
                    host,
                    entry.password_file.as_deref(),
                    entry.password_env.as_deref(),
                )?,
            }),
            None if entry.password_file.is_some() || entry.password_env.is_some() => {
                return Err(ConfigError::Credentials {
                    registry: host.clone(),
                    problem: "a password without a username".into(),
                })
            }
            None => match creds.for_host(host)? {
                Some(c) => Some(c),
                None => creds.for_host(e.authority())?,
            },
        };
        registries.insert(host.clone(), e.with_credentials(login));
    }
    for entry in &args.registries {
        let (host, url) = entry
            .split_once('=')
            .ok_or_else(|| ConfigError::Registry(entry.clone()))?;
        if host.is_empty() {
            return Err(ConfigError::Registry(entry.clone()));
        }
        let e = endpoint("--registry", url)?;
        let login = match creds.for_host(host)? {
            Some(c) => Some(c),
            None => creds.for_host(e.authority())?,
        };
        registries.insert(host.to_owned(), e.with_credentials(login));
    }
    Ok(registries)
}

fn read_secret(
    registry: &str,
    file: Option<&Path>,
    env: Option<&str>,
) -> Result<String, ConfigError> {
    let problem = |p: String| ConfigError::Credentials {
        registry: registry.to_owned(),
        problem: p,
    };
    match (file, env) {
        (Some(path), None) => std::fs::read_to_string(path)
            .map(|s| s.lines().next().unwrap_or("").trim().to_owned())
            .map_err(|e| problem(format!("read password_file {}: {e}", path.display()))),
        (None, Some(var)) => std::env::var(var)
            .map_err(|_| problem(format!("environment variable {var} is not set"))),
        (None, None) => Err(problem(
            "username without password_file or password_env".into(),
        )),
        (Some(_), Some(_)) => Err(problem(
            "give password_file or password_env, not both".into(),
        )),
    }
}

/// Parses what to pin.
///
/// # Errors
/// [`ConfigError::Invalid`] for a bad reference, digest or platform.
pub fn pin_request(
    setting: &str,
    image: Option<&str>,
    digest: Option<&str>,
    platform: Option<&str>,
) -> Result<PinRequest, ConfigError> {
    let target = match (image, digest) {
        (Some(i), None) => {
            PinTarget::Image(ImageRef::parse(i).map_err(|e| invalid(setting, e.to_string()))?)
        }
        (None, Some(d)) => {
            PinTarget::Digest(Digest::parse(d).map_err(|e| invalid(setting, e.to_string()))?)
        }
        _ => return Err(invalid(setting, "give exactly one of image or digest")),
    };
    let platform = platform
        .map(|p| {
            Platform::parse(p)
                .ok_or_else(|| invalid(setting, format!("platform {p:?} is not os/arch[/variant]")))
        })
        .transpose()?;
    Ok(PinRequest { target, platform })
}

/// Parses a pin target as the operator writes it: a digest, or an image reference.
///
/// # Errors
/// [`ConfigError::Invalid`] when it is neither.
pub fn parse_pin_target(target: &str, platform: Option<&str>) -> Result<PinRequest, ConfigError> {
    if target.starts_with("sha256:") {
        pin_request("target", None, Some(target), platform)
    } else {
        pin_request("target", Some(target), None, platform)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, String> {
        let cli = Cli::try_parse_from(std::iter::once("cache-daemon").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        cli.serve
            .into_settings()
            .map(|s| s.config)
            .map_err(|e| e.to_string())
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
            "--max-bytes",
            "1GiB",
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
        assert_eq!(c.store.budget.unwrap().max_bytes, 1 << 30);
        assert_eq!(
            c.server.admin_listen,
            Some("127.0.0.1:5051".parse().unwrap())
        );
        for (args, needle) in [
            (vec![], "no upstream"),
            (vec!["--upstream", "ftp://x"], "upstream"),
            (vec!["--registry", "docker.io"], "HOST=URL"),
            (
                vec!["--upstream", "http://x", "--max-connections", "0"],
                "greater than zero",
            ),
            (
                vec!["--upstream", "http://x", "--tag-ttl", "soon"],
                "tag-ttl",
            ),
            (
                vec!["--upstream", "http://x", "--max-bytes", "lots"],
                "byte size",
            ),
            (
                vec![
                    "--upstream",
                    "http://x",
                    "--max-bytes",
                    "1GiB",
                    "--low-watermark",
                    "0.95",
                ],
                "low_watermark",
            ),
            (
                // Checked without a budget too.
                vec![
                    "--upstream",
                    "http://x",
                    "--high-watermark",
                    "0.5",
                    "--low-watermark",
                    "0.9",
                ],
                "low_watermark",
            ),
            (
                vec!["--upstream", "http://x", "--admin-listen", "nowhere"],
                "admin_listen",
            ),
        ] {
            let err = parse(&args).unwrap_err();
            assert!(err.contains(needle), "{args:?}: {err}");
        }
    }

    #[test]
    fn caller_checks_are_off_by_default_and_set_by_file_or_flags() {
        let c = parse(&["--upstream", "http://x"]).unwrap();
        assert_eq!(c.access, AccessConfig::default());
        assert!(!c.access.check_callers);

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "upstream = \"http://x\"\n[access]\ncheck_callers = true\nallow_ttl = \"2m\"\ngrace = \"10s\"\n",
        )
        .unwrap();
        let file = file.to_str().unwrap();
        let c = parse(&["--config", file]).unwrap();
        assert!(c.access.check_callers);
        assert_eq!(c.access.allow_ttl, Duration::from_secs(120));
        assert_eq!(c.access.deny_ttl, DEFAULT_ACCESS_DENY_TTL);
        assert_eq!(c.access.grace, Duration::from_secs(10));
        let c = parse(&["--config", file, "--access-allow-ttl", "30s"]).unwrap();
        assert_eq!(c.access.allow_ttl, Duration::from_secs(30));

        let c = parse(&["--upstream", "http://x", "--check-callers"]).unwrap();
        assert!(c.access.check_callers);
        let err = parse(&["--upstream", "http://x", "--access-allow-ttl", "0s"]).unwrap_err();
        assert!(err.contains("access.allow_ttl"), "{err}");
        std::fs::write(
            dir.path().join("bad.toml"),
            "upstream = \"http://x\"\n[access]\ncheck_caller = true\n",
        )
        .unwrap();
        let err = parse(&["--config", dir.path().join("bad.toml").to_str().unwrap()]).unwrap_err();
        assert!(err.contains("line 3"), "{err}");
    }

    #[test]
    fn config_file_supplies_what_flags_do_not_and_flags_win() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("token");
        std::fs::write(&secret, "s3cret\n").unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            format!(
                r#"
upstream = "http://127.0.0.1:5000"
tag_ttl = "1m"
admin_listen = "off"
[registries."reg.example"]
url = "https://reg.example"
username = "me"
password_file = "{}"
[[pins]]
image = "reg.example/app:v1"
platform = "linux/arm64"
"#,
                secret.display()
            ),
        )
        .unwrap();
        let f = file.to_str().unwrap();
        let c = parse(&["--config", f, "--tag-ttl", "2s"]).unwrap();
        assert_eq!(c.upstream.tag_ttl, Duration::from_secs(2));
        assert_eq!(c.server.admin_listen, None);
        assert_eq!(c.pins.len(), 1);
        let debug = format!("{:?}", c.upstream.registries["reg.example"]);
        assert!(debug.contains("me") && !debug.contains("s3cret"), "{debug}");
        std::fs::write(
            &file,
            "upstream = \"http://x\"\n[registries.\"r\"]\nurl = \"http://r\"\nusername = \"me\"\n",
        )
        .unwrap();
        assert!(parse(&["--config", f])
            .unwrap_err()
            .contains("password_file or password_env"));
    }

    #[test]
    fn client_timeouts_default_file_and_flag() {
        let c = parse(&["--upstream", "http://x"]).unwrap();
        assert_eq!(c.server.header_read_timeout, Duration::from_secs(30));
        assert_eq!(c.server.client_write_timeout, Duration::from_secs(60));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "upstream = \"http://x\"\nheader_read_timeout = \"5s\"\nclient_write_timeout = \"7s\"\n",
        )
        .unwrap();
        let f = file.to_str().unwrap();
        let c = parse(&["--config", f]).unwrap();
        assert_eq!(c.server.header_read_timeout, Duration::from_secs(5));
        assert_eq!(c.server.client_write_timeout, Duration::from_secs(7));
        let c = parse(&[
            "--config",
            f,
            "--header-read-timeout",
            "2s",
            "--client-write-timeout",
            "3s",
        ])
        .unwrap();
        assert_eq!(c.server.header_read_timeout, Duration::from_secs(2));
        assert_eq!(c.server.client_write_timeout, Duration::from_secs(3));
        for (flag, key) in [
            ("--header-read-timeout", "header_read_timeout"),
            ("--client-write-timeout", "client_write_timeout"),
        ] {
            let err = parse(&["--upstream", "http://x", flag, "0s"]).unwrap_err();
            assert!(err.contains(key), "{err}");
        }
    }

    #[test]
    fn the_default_upstream_takes_the_credentials_of_its_named_registry() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "s3cret\n").unwrap();
        let write = |url: &str| {
            std::fs::write(
                &file,
                format!(
                    "upstream = \"https://registry-1.docker.io\"\n\
                     [registries.\"docker.io\"]\nurl = \"{url}\"\nusername = \"me\"\n\
                     password_file = \"{}\"\n",
                    secret.display()
                ),
            )
            .unwrap();
        };
        write("https://registry-1.docker.io");
        let c = parse(&["--config", file.to_str().unwrap()]).unwrap();
        assert!(c.upstream.default.unwrap().has_credentials());
        assert!(c.upstream.registries["docker.io"].has_credentials());
        // Credentials for another URL are not the default's.
        write("https://mirror.example");
        let c = parse(&["--config", file.to_str().unwrap()]).unwrap();
        assert!(!c.upstream.default.unwrap().has_credentials());
    }

    #[test]
    fn a_missing_default_upstream_is_warned_about_and_a_bad_flag_url_explained() {
        let c = parse(&["--registry", "docker.io=https://registry-1.docker.io"]).unwrap();
        let warnings = c.upstream.warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("no default upstream"),
            "{}",
            warnings[0]
        );
        assert!(warnings[0].contains("docker.io"), "{}", warnings[0]);
        let c = parse(&["--upstream", "http://x", "--registry", "docker.io=http://y"]).unwrap();
        assert!(c.upstream.warnings().is_empty());
        let err = parse(&["--upstream", "127.0.0.1:15000"]).unwrap_err();
        assert!(
            err.contains("upstream = \"127.0.0.1:15000\"") && err.contains("a scheme is needed"),
            "{err}"
        );
    }
}
