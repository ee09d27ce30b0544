//! [`NodeCaches`]: the cache processes a target runs inside the nodes' namespaces, started fresh
//! for a burst and stopped by PID after it.
//!
//! - `cache-daemon`, `placement = "per-node"`: the real `cache-daemon` binary in every node's
//!   namespace, serving the node's pulls on that namespace's loopback and filling from the
//!   registry over the node's link.
//! - `placement = "cluster"`: the same, plus cluster mode: every daemon serves peers on its
//!   node's address (`--peer-listen`, `--peer-advertise`), knows every member from the static
//!   list `--peers` (itself included, as a headless Service lists every pod), and shares one
//!   secret file (`--cluster-secret-file`, 32 random bytes, hex, made per burst).
//! - `placement = "shared"`: one `cache-daemon` in the service namespace, on its own link, for
//!   every node.
//! - `nginx`, per node or shared: what an operator would run instead (`proxy_cache_lock`), the
//!   configuration `stampede_lab::NginxConfig` has.
//!
//! Each process writes one log of its own (nginx: its access and error logs), kept with the run
//! as `logs/<target>-<variant>-rep<N>.<who>.*` ([`NodeCaches::log_files`]). Their PIDs, CPU and
//! memory over the burst go into `result.json` ([`CacheProcessFacts`]). The `cache-daemon`
//! binary is found by [`cache_daemon_binary`].

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use stampede_lab::probe::wait_ready_in;
use stampede_lab::{Endpoint, Fabric, LabError, NginxCache, NginxConfig, Proc};

use super::usage::{self, ProcessUsage, UsageStart};
use crate::scenario::Placement;

/// The port a cache serves pulls on, in its namespace (each namespace has its own ports).
pub const CACHE_PORT: u16 = 5050;
/// The cache-daemon's admin port, on its namespace's loopback.
pub const ADMIN_PORT: u16 = 5051;
/// The cache-daemon's peer port in cluster mode, on its node's address.
pub const PEER_PORT: u16 = 5052;
/// How long a cache process gets to answer after start.
const START_LIMIT: Duration = Duration::from_secs(30);
/// Environment variable naming the `cache-daemon` binary to run.
pub const BINARY_ENV: &str = "STAMPEDE_CACHE_DAEMON";

/// Which cache a target runs in the nodes: our `cache-daemon` binary or nginx `proxy_cache`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheKind {
    CacheDaemon(Placement),
    Nginx(Placement),
}

/// What one cache process was, for `result.json`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CacheProcessFacts {
    /// Where it ran: `node-<n>` or `shared`.
    pub who: String,
    /// `cache-daemon` or `nginx`.
    pub program: String,
    /// Its process id (nginx: the master; its workers are counted with it).
    pub pid: u32,
    /// Its log files, relative to the run directory's `logs/`.
    pub logs: Vec<String>,
    /// CPU seconds from the burst epoch to the end of the burst (user + system, all threads and
    /// child processes).
    pub cpu_seconds: f64,
    /// Peak resident memory, bytes (`VmHWM`; nginx: master and workers added).
    pub peak_rss_bytes: u64,
}

/// Why the caches could not start.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The `cache-daemon` binary is nowhere to be found.
    #[error("the cache-daemon binary is not beside bench-harness, not named by ${BINARY_ENV} and not on PATH: build it with `cargo build -p cache-daemon` (`--release` for benchmarks)")]
    Binary,
    /// A process could not be started or did not answer.
    #[error(transparent)]
    Lab(#[from] LabError),
}

/// One running cache process.
#[derive(Debug)]
struct CacheProcess {
    who: String,
    /// Its namespace and where it answers there.
    netns: String,
    addr: SocketAddr,
    server: Server,
    /// Log files and the suffix each is kept under.
    logs: Vec<(PathBuf, &'static str)>,
    start: Option<UsageStart>,
}

impl CacheProcess {
    /// Its log files and the names they are kept under: `<stem>.<who>.<suffix>`.
    fn log_files<'a>(&'a self, stem: &'a str) -> impl Iterator<Item = (&'a Path, String)> + 'a {
        self.logs
            .iter()
            .map(move |(from, suffix)| (from.as_path(), format!("{stem}.{}.{suffix}", self.who)))
    }
}

#[derive(Debug)]
enum Server {
    Daemon(Proc),
    Nginx(NginxCache),
}

impl Server {
    fn pid(&self) -> u32 {
        match self {
            Self::Daemon(p) => p.pid(),
            Self::Nginx(n) => n.pid(),
        }
    }

    fn program(&self) -> &'static str {
        match self {
            Self::Daemon(_) => "cache-daemon",
            Self::Nginx(_) => "nginx",
        }
    }
}

/// A started server and its log files, each with the suffix it is kept under.
type Started = (Server, Vec<(PathBuf, &'static str)>);

/// The cache processes of one burst; dropping stops them (blocking): SIGTERM by PID, then
/// SIGKILL to stragglers and their children.
#[derive(Debug)]
pub struct NodeCaches {
    processes: Vec<CacheProcess>,
    /// Where node `n` pulls: `http://addr:port`.
    pub urls: Vec<String>,
}

/// Where to start the caches and what they fill from.
#[derive(Debug, Clone)]
pub struct CacheSpec {
    pub kind: CacheKind,
    pub fabric: Arc<Fabric>,
    /// The registry's address on the fabric.
    pub upstream: SocketAddr,
    /// The burst's directory: stores, configs and logs go under it.
    pub work: PathBuf,
}

/// Where one cache process goes: its namespace, who it serves (`node-3`, `shared`) and its
/// listening address.
#[derive(Debug)]
struct Placed<'a> {
    place: &'a Endpoint,
    who: String,
    listen: SocketAddr,
}

impl NodeCaches {
    /// Starts the caches `spec` names and waits until each answers. Blocking.
    ///
    /// # Errors
    /// [`CacheError::Binary`], or [`LabError`]: a program is missing, a directory cannot be
    /// made, or a process exits or does not answer (the error names its log).
    pub fn start(spec: CacheSpec) -> Result<Self, CacheError> {
        create_dir(&spec.work)?;
        let nodes = spec.fabric.nodes();
        let shared = match spec.kind {
            CacheKind::CacheDaemon(placement) => placement == Placement::Shared,
            CacheKind::Nginx(placement) => placement != Placement::PerNode,
        };
        let places = if shared {
            let svc = spec
                .fabric
                .services()
                .first()
                .ok_or_else(|| LabError::Socket {
                    what: "find the service namespace of a shared cache".into(),
                    source: std::io::Error::other("the fabric was built without one"),
                })?;
            let listen = SocketAddr::from((svc.ip(), CACHE_PORT));
            vec![Placed {
                place: svc,
                who: "shared".to_owned(),
                listen,
            }]
        } else {
            let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, CACHE_PORT));
            let node = |(n, place)| Placed {
                place,
                who: format!("node-{n}"),
                listen,
            };
            nodes.iter().enumerate().map(node).collect()
        };
        let cluster = (spec.kind == CacheKind::CacheDaemon(Placement::Cluster))
            .then(|| cluster_flags(nodes, &spec.work))
            .transpose()?;
        let mut caches = Self {
            processes: Vec::new(),
            urls: Vec::new(),
        };
        if let Some(at) = places.first() {
            caches.urls = vec![format!("http://{}", at.listen); nodes.len()];
        }
        for at in places {
            let (server, logs) = match spec.kind {
                CacheKind::CacheDaemon(_) => spawn_daemon(&spec, &at, cluster.as_ref())?,
                CacheKind::Nginx(_) => start_nginx(&spec, &at)?,
            };
            caches.processes.push(CacheProcess {
                who: at.who,
                netns: at.place.netns().to_owned(),
                addr: at.listen,
                server,
                logs,
                start: None,
            });
        }
        for p in &mut caches.processes {
            if let Server::Daemon(proc) = &mut p.server {
                // nginx was waited for as it started.
                wait_ready_in(proc, Some(&p.netns), p.addr, &p.logs[0].0, START_LIMIT)?;
            }
        }
        Ok(caches)
    }

    /// The process id of node `n`'s own cache process; `None` for a shared cache.
    pub fn node_pid(&self, n: u32) -> Option<u32> {
        let who = format!("node-{n}");
        self.processes
            .iter()
            .find(|p| p.who == who)
            .map(|p| p.server.pid())
    }

    /// Marks the burst's start: CPU used from here on is the burst's.
    pub fn burst_started(&mut self) {
        for p in &mut self.processes {
            p.start = usage::start(p.server.pid());
        }
    }

    /// Each process's facts, CPU counted since [`NodeCaches::burst_started`]; call before
    /// stopping them. `logs` are the names [`NodeCaches::logs`] gives with `stem`.
    pub fn facts(&self, stem: &str) -> Vec<CacheProcessFacts> {
        self.processes
            .iter()
            .map(|p| {
                let used = p
                    .start
                    .as_ref()
                    .map_or_else(ProcessUsage::default, usage::since);
                CacheProcessFacts {
                    who: p.who.clone(),
                    program: p.server.program().to_owned(),
                    pid: p.server.pid(),
                    logs: p.log_files(stem).map(|(_, name)| name).collect(),
                    cpu_seconds: used.cpu_seconds,
                    peak_rss_bytes: used.peak_rss_bytes,
                }
            })
            .collect()
    }

    /// Every process's log files and the names they are kept under
    /// (`Deployment::keep_logs`): `<stem>.<who>.<suffix>`.
    pub fn log_files<'a>(&'a self, stem: &'a str) -> impl Iterator<Item = (&'a Path, String)> + 'a {
        self.processes.iter().flat_map(move |p| p.log_files(stem))
    }
}

/// Starts one `cache-daemon serve` inside `place` (a member of `cluster`, if given);
/// readiness is checked later, for all at once.
fn spawn_daemon(
    spec: &CacheSpec,
    at: &Placed<'_>,
    cluster: Option<&ClusterFlags>,
) -> Result<Started, CacheError> {
    let (place, who, listen) = (at.place, at.who.as_str(), at.listen);
    let binary = cache_daemon_binary().ok_or(CacheError::Binary)?;
    let dir = spec.work.join(format!("cache-daemon-{who}"));
    create_dir(&dir)?;
    let log = dir.join("cache-daemon.log");
    let mut cmd = place.command(&binary);
    cmd.arg("serve")
        .arg("--listen")
        .arg(listen.to_string())
        .arg("--admin-listen")
        .arg(SocketAddr::from((Ipv4Addr::LOCALHOST, ADMIN_PORT)).to_string())
        .arg("--root")
        .arg(dir.join("store"))
        .arg("--upstream")
        .arg(format!("http://{}", spec.upstream))
        .arg("--shutdown-grace")
        .arg("1s")
        .env("RUST_LOG", "info");
    if let Some(c) = cluster {
        let me = SocketAddr::from((place.ip(), PEER_PORT)).to_string();
        cmd.args([
            "--peer-listen",
            &me,
            "--peer-advertise",
            &me,
            "--peers",
            &c.peers,
        ]);
        cmd.arg("--cluster-secret-file").arg(&c.secret_file);
    }
    let proc = Proc::spawn(&format!("cache-daemon ({who})"), cmd, &log)?;
    Ok((Server::Daemon(proc), vec![(log, "log")]))
}

fn start_nginx(spec: &CacheSpec, at: &Placed<'_>) -> Result<Started, CacheError> {
    let config = NginxConfig::new(
        at.listen,
        spec.upstream,
        spec.work.join(format!("nginx-{}", at.who)),
    );
    let logs = vec![
        (config.access_log(), "access.log"),
        (config.error_log(), "error.log"),
    ];
    let nginx = NginxCache::start_in(config, Some(at.place.netns()))?;
    Ok((Server::Nginx(nginx), logs))
}

fn create_dir(dir: &Path) -> Result<(), LabError> {
    std::fs::create_dir_all(dir).map_err(|source| LabError::Io {
        what: "create",
        path: dir.to_owned(),
        source,
    })
}

/// The flags every member of a cluster shares.
struct ClusterFlags {
    /// `--peers`: every member's peer address, comma-separated.
    peers: String,
    /// `--cluster-secret-file`.
    secret_file: PathBuf,
}

fn cluster_flags(nodes: &[Endpoint], work: &Path) -> Result<ClusterFlags, LabError> {
    use rand::RngCore as _;
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    let secret_file = work.join("cluster.secret");
    std::fs::write(&secret_file, hex::encode(secret)).map_err(|source| LabError::Io {
        what: "write the cluster secret",
        path: secret_file.clone(),
        source,
    })?;
    let peers = nodes
        .iter()
        .map(|n| SocketAddr::from((n.ip(), PEER_PORT)).to_string())
        .collect::<Vec<_>>()
        .join(",");
    Ok(ClusterFlags { peers, secret_file })
}

/// The `cache-daemon` binary: `$STAMPEDE_CACHE_DAEMON`, else the one cargo built beside this
/// program (`target/<profile>/cache-daemon`, also from a test binary in `deps/`), else the first
/// on `PATH`; `None` when there is none.
pub fn cache_daemon_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(BINARY_ENV) {
        return Some(PathBuf::from(path));
    }
    let beside = std::env::current_exe().ok().and_then(|me| {
        me.ancestors()
            .skip(1)
            .take(2)
            .map(|dir| dir.join("cache-daemon"))
            .find(|p| p.is_file())
    });
    beside.or_else(|| stampede_lab::find("cache-daemon").ok())
}
