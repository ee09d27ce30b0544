//! [`Fabric`]: many nodes and one registry, each in a network namespace of its own, joined by
//! veth pairs to a bridge in a hub namespace, every link shaped with `tc tbf` in both directions
//! (the kernel here has tbf but no netem: see `../shared/testbed.md`, section 8, "Many nodes on
//! one bridge"). The tbf on an endpoint's own end of the veth shapes what it uploads, the tbf on
//! the hub's end shapes what it downloads, so no ifb is needed.
//!
//! ```text
//!   registry ns            hub ns                 node ns (one per node; services alike)
//!   veth0 10.232.0.1 ─── reg ┐                ┌── n0 ─── veth0 10.232.1.1
//!   (tbf: upload)   (tbf: download)  br0  (tbf: download) (tbf: upload)
//!                            └──── ... ───────┴── n1 ─── veth0 10.232.1.2
//! ```
//!
//! The fabric is not joined to the host's namespace: its addresses (`10.232.0.0/16`) are
//! private to its bridge, so fabrics of concurrent processes never collide whatever the host
//! routes. Code of this process reaches it only through an [`Endpoint`]: a program run inside
//! ([`Endpoint::command`], `ip netns exec`), or a socket created inside ([`Endpoint::within`],
//! [`Endpoint::bind`], [`Endpoint::connect`]) that keeps its namespace from any thread.
//!
//! The kernel's byte counters of every link are read in one pass from the hub's side
//! ([`Fabric::link_bytes`] once, [`LinkCounters`] on a clock): what the hub's end transmitted is what the endpoint downloaded, what
//! it received is what the endpoint uploaded, both counted after the shaping, as the link
//! carried them (Ethernet, IP and TCP headers included).
//!
//! Namespaces are named `stampede-fab-<pid>-<n>-<role>`; dropping the fabric kills whatever still
//! runs inside and deletes them (the veths and qdiscs go with them), and fabrics of a process
//! that is gone are swept on the next create. Needs root and iproute2.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::error::LabError;
use crate::link_counters::LinkCounters;
use crate::namespace;
use crate::netns::Shaping;
use crate::program::{find, require_root};

/// Namespace name prefix of every fabric; the owner's PID follows.
pub const FABRIC_PREFIX: &str = "stampede-fab-";
/// Most nodes one fabric holds: a Linux bridge takes at most 1024 ports, one is the registry's.
pub const MAX_NODES: usize = 1000;
/// The interface name of an endpoint's end of its link, inside its namespace.
pub const ENDPOINT_IF: &str = "veth0";
/// The registry's address on every fabric.
pub const REGISTRY_IP: Ipv4Addr = Ipv4Addr::new(10, 232, 0, 1);
/// Node 0's address; node `i` has this plus `i`.
const FIRST_NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 232, 1, 1);
/// The fabric's prefix length (`10.232.0.0/16`).
const PREFIX_LEN: u8 = 16;
/// Queueing allowed in each tbf before it drops (`latency`).
const TBF_LATENCY: &str = "100ms";
/// How long connecting inside a namespace may take before it fails.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Distinguishes the fabrics one process creates.
static NEXT_ID: AtomicU32 = AtomicU32::new(0);

/// What to build: how many nodes and services, and each link's rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FabricConfig {
    /// Nodes, 1 to [`MAX_NODES`].
    pub nodes: usize,
    /// Every node's link, each direction; `None`: unshaped.
    pub node_link: Option<Shaping>,
    /// The registry's link, each direction; `None`: unshaped.
    pub registry_link: Option<Shaping>,
    /// Service namespaces besides the nodes (a cache shared by every node), 0 to
    /// [`MAX_SERVICES`], each on a link shaped like a node's.
    pub services: usize,
}

/// Most service endpoints a fabric holds.
pub const MAX_SERVICES: usize = 8;

/// One namespace on the fabric, a node, a service or the registry, and its link to the hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    netns: String,
    ip: Ipv4Addr,
    hub_if: String,
    shaping: Option<Shaping>,
}

/// The kernel's byte counts of one link since it was made, after shaping.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkBytes {
    /// Bytes the endpoint sent over its link (the hub's end received them).
    pub upload_bytes: u64,
    /// Bytes the endpoint received over its link (the hub's end sent them).
    pub download_bytes: u64,
}

/// Every link's [`LinkBytes`], read in one pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FabricBytes {
    /// The registry's link.
    pub registry: LinkBytes,
    /// Node `i`'s link at index `i`.
    pub nodes: Vec<LinkBytes>,
    /// Service `i`'s link at index `i`.
    pub services: Vec<LinkBytes>,
}

/// A built fabric; see the module doc. Deleted on drop.
#[derive(Debug)]
pub struct Fabric {
    hub: String,
    registry: Endpoint,
    nodes: Vec<Endpoint>,
    services: Vec<Endpoint>,
}

impl Fabric {
    /// Builds the hub, the registry's namespace and `config.nodes` node namespaces, links and
    /// shapes them. Takes a few `ip`/`tc` batches, not one command per interface.
    ///
    /// # Errors
    /// [`LabError::NotRoot`], [`LabError::Missing`] (`ip`, `tc`: iproute2),
    /// [`LabError::FabricSize`], or the failing `ip`/`tc` batch; whatever was created is removed
    /// again.
    pub fn create(config: FabricConfig) -> Result<Self, LabError> {
        require_root("nodes in network namespaces")?;
        find("ip")?;
        find("tc")?;
        if config.nodes == 0 || config.nodes > MAX_NODES || config.services > MAX_SERVICES {
            return Err(LabError::FabricSize {
                nodes: config.nodes,
                services: config.services,
                max: MAX_NODES,
                max_services: MAX_SERVICES,
            });
        }
        namespace::sweep_stale(FABRIC_PREFIX);
        let base = format!(
            "{FABRIC_PREFIX}{}-{}",
            std::process::id(),
            NEXT_ID.fetch_add(1, Ordering::Relaxed)
        );
        let nodes = (0..config.nodes)
            .map(|i| Endpoint {
                netns: format!("{base}-n{i}"),
                ip: Ipv4Addr::from(u32::from(FIRST_NODE_IP) + i as u32),
                hub_if: format!("n{i}"),
                shaping: config.node_link,
            })
            .collect();
        let services = (0..config.services)
            .map(|i| Endpoint {
                netns: format!("{base}-s{i}"),
                ip: Ipv4Addr::from(u32::from(REGISTRY_IP) + 1 + i as u32),
                hub_if: format!("s{i}"),
                shaping: config.node_link,
            })
            .collect();
        let fabric = Self {
            hub: format!("{base}-hub"),
            registry: Endpoint {
                netns: format!("{base}-reg"),
                ip: REGISTRY_IP,
                hub_if: "reg".into(),
                shaping: config.registry_link,
            },
            nodes,
            services,
        };
        // From here on, `fabric`'s Drop removes whatever part was made.
        fabric.build()?;
        Ok(fabric)
    }

    fn endpoints(&self) -> impl Iterator<Item = &Endpoint> {
        std::iter::once(&self.registry)
            .chain(&self.services)
            .chain(&self.nodes)
    }

    fn build(&self) -> Result<(), LabError> {
        let mut namespaces = vec![format!("netns add {}", self.hub)];
        namespaces.extend(self.endpoints().map(|e| format!("netns add {}", e.netns)));
        batch("ip", None, &namespaces)?;
        let veths: Vec<String> = self
            .endpoints()
            .map(|e| {
                format!(
                    "link add {ENDPOINT_IF} netns {} type veth peer name {} netns {}",
                    e.netns, e.hub_if, self.hub
                )
            })
            .collect();
        batch("ip", None, &veths)?;
        let mut hub = vec![
            "link set lo up".to_owned(),
            "link add br0 type bridge".to_owned(),
            "link set br0 up".to_owned(),
        ];
        let mut hub_tc = Vec::new();
        for e in self.endpoints() {
            hub.push(format!("link set {} master br0", e.hub_if));
            hub.push(format!("link set {} up", e.hub_if));
            hub_tc.extend(e.shaping.map(|s| tbf_line(&e.hub_if, s)));
        }
        batch("ip", Some(&self.hub), &hub)?;
        if !hub_tc.is_empty() {
            batch("tc", Some(&self.hub), &hub_tc)?;
        }
        for e in self.endpoints() {
            let lines = [
                "link set lo up".to_owned(),
                format!("addr add {}/{PREFIX_LEN} dev {ENDPOINT_IF}", e.ip),
                format!("link set {ENDPOINT_IF} up"),
            ];
            batch("ip", Some(&e.netns), &lines)?;
            if let Some(s) = e.shaping {
                batch("tc", Some(&e.netns), &[tbf_line(ENDPOINT_IF, s)])?;
            }
        }
        Ok(())
    }

    /// The registry's endpoint.
    pub fn registry(&self) -> &Endpoint {
        &self.registry
    }

    /// Every node, node `i` at index `i`.
    pub fn nodes(&self) -> &[Endpoint] {
        &self.nodes
    }

    /// Every service endpoint, service `i` at index `i`.
    pub fn services(&self) -> &[Endpoint] {
        &self.services
    }

    /// The hub's namespace name (holds the bridge and the hub's end of every link).
    pub fn hub(&self) -> &str {
        &self.hub
    }

    /// Every namespace of the fabric: hub, registry, nodes.
    pub fn namespaces(&self) -> Vec<&str> {
        std::iter::once(self.hub.as_str())
            .chain(self.endpoints().map(Endpoint::netns))
            .collect()
    }

    /// Every link's byte counters, read from the hub's side in one pass. For reads repeated
    /// on a clock, open [`LinkCounters`] once instead.
    ///
    /// # Errors
    /// [`LabError::Socket`] when the hub cannot be entered or its counters read, or an
    /// interface is missing from them.
    pub fn link_bytes(&self) -> Result<FabricBytes, LabError> {
        LinkCounters::open(self)?.read().map(|r| r.bytes)
    }
}

impl Drop for Fabric {
    fn drop(&mut self) {
        // Endpoints first: a process inside is killed before its link goes.
        for e in self.endpoints() {
            namespace::delete(&e.netns);
        }
        namespace::delete(&self.hub);
    }
}

impl Endpoint {
    /// The namespace's name (`ip netns exec <name> ...`).
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// Its address on the fabric.
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// The name of the hub's end of its link, in the hub's namespace.
    pub fn hub_if(&self) -> &str {
        &self.hub_if
    }

    /// Its link's rate, each direction; `None` when unshaped.
    pub fn shaping(&self) -> Option<Shaping> {
        self.shaping
    }

    /// A command that runs `program` (a full path) inside the namespace. `ip netns exec` execs
    /// it, so the child's PID is the program's.
    pub fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.netns]).arg(program);
        cmd
    }

    /// Runs `f` on a short-lived thread inside the namespace; a socket `f` creates keeps the
    /// namespace. `what` names the operation for the error.
    ///
    /// # Errors
    /// [`LabError::Socket`] when the namespace cannot be entered or `f` fails.
    pub fn within<T: Send>(
        &self,
        what: &str,
        f: impl FnOnce() -> std::io::Result<T> + Send,
    ) -> Result<T, LabError> {
        namespace::within(&self.netns, what, f)
    }

    /// A TCP listener on this endpoint's address and `port` (0: any free one).
    ///
    /// # Errors
    /// [`LabError::Socket`] when the namespace cannot be entered or the address bound.
    pub fn bind(&self, port: u16) -> Result<TcpListener, LabError> {
        let addr = SocketAddr::from((self.ip, port));
        self.within(&format!("bind {addr}"), || TcpListener::bind(addr))
    }

    /// A TCP connection from inside this endpoint to `addr`, within [`CONNECT_TIMEOUT`].
    ///
    /// # Errors
    /// [`LabError::Socket`] when the namespace cannot be entered or the connection fails.
    pub fn connect(&self, addr: SocketAddr) -> Result<TcpStream, LabError> {
        self.within(&format!("connect to {addr}"), || {
            TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
        })
    }
}

/// A `tc qdisc replace ... tbf` line for `dev` at `shaping`.
fn tbf_line(dev: &str, shaping: Shaping) -> String {
    format!(
        "qdisc replace dev {dev} root tbf rate {}bit burst {} latency {TBF_LATENCY}",
        shaping.rate_bits_per_sec,
        shaping.burst_bytes()
    )
}

/// Runs `program [-n netns] -batch -` with `lines` on standard input: one process for many
/// `ip` or `tc` commands. The batch stops at the first failing line, whose error it prints.
fn batch(program: &str, netns: Option<&str>, lines: &[String]) -> Result<(), LabError> {
    use std::io::Write as _;
    let mut args: Vec<&str> = Vec::new();
    if let Some(ns) = netns {
        args.extend(["-n", ns]);
    }
    args.extend(["-batch", "-"]);
    let command = format!("{program} {}", args.join(" "));
    let mut child = Command::new(program)
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| LabError::Spawn {
            what: command.clone(),
            source,
        })?;
    let input = lines.join("\n") + "\n";
    if let Some(mut stdin) = child.stdin.take() {
        // A write error means the batch exited early; its status and stderr say why.
        stdin.write_all(input.as_bytes()).ok();
    }
    let out = child.wait_with_output().map_err(|source| LabError::Spawn {
        what: command.clone(),
        source,
    })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(LabError::Command {
            command,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tbf_lines_carry_rate_and_burst() {
        let s = Shaping {
            rate_bits_per_sec: 50_000_000,
        };
        assert_eq!(
            tbf_line("n3", s),
            "qdisc replace dev n3 root tbf rate 50000000bit burst 62500 latency 100ms"
        );
    }

    #[test]
    fn a_failed_batch_reports_the_line() {
        let err = batch("sh", None, &["x".into()]).unwrap_err();
        assert!(err.to_string().starts_with("sh -batch - failed"), "{err}");
    }
}
