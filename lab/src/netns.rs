//! A network namespace for an upstream, joined to the host's namespace by a veth pair whose
//! namespace end is shaped with `tc tbf` (the kernel here has tbf, htb and ingress but no netem:
//! see `../shared/testbed.md`, section 8). Everything the upstream sends to the host crosses the
//! tbf qdisc, so every client in the host namespace, a cache's fill or a node's direct pull,
//! reaches the upstream over one kernel-shaped link.
//!
//! A server can run inside with [`ShapedLink::command`] (`ip netns exec`), or stay in this
//! process with its listeners bound inside: [`ShapedLink::bind`] binds on a short-lived thread
//! inside the namespace ([`namespace::within`]) and returns the listener, which keeps the
//! namespace it was created in.
//!
//! The namespace (and with it the veth pair and qdisc) is deleted on drop, after killing whatever
//! still runs inside. Names carry this process's PID, and namespaces left by a process that is
//! gone (killed with SIGKILL) are swept on the next create. Needs root.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use crate::error::LabError;
use crate::namespace;
use crate::process::run;
use crate::program::{find, require_root};

/// The shaping applied to the upstream's egress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shaping {
    /// Token bucket rate, bits per second (`tc tbf rate <n>bit`).
    pub rate_bits_per_sec: u64,
}

/// Smallest tbf bucket, in bytes: a few full-size frames.
const MIN_BURST_BYTES: u64 = 32 * 1024;
/// Queueing allowed in the tbf before it drops (`latency`).
const TBF_LATENCY: &str = "100ms";

impl Shaping {
    /// The tbf bucket: 10 ms worth of the rate (256 KB at 200 Mbit/s, as the test bed measured),
    /// at least [`MIN_BURST_BYTES`].
    pub fn burst_bytes(&self) -> u64 {
        (self.rate_bits_per_sec / 8 / 100).max(MIN_BURST_BYTES)
    }
}

/// A namespace joined to the host by a shaped veth pair; see the module doc.
#[derive(Debug)]
pub struct ShapedLink {
    netns: String,
    host_if: String,
    ns_if: String,
    upstream_ip: Ipv4Addr,
    host_ip: Ipv4Addr,
    shaping: Shaping,
}

/// Serialises subnet choice and creation within this process (tests create links in parallel).
static CREATE: Mutex<()> = Mutex::new(());
/// Distinguishes the links one process creates.
static NEXT_ID: AtomicU32 = AtomicU32::new(0);

impl ShapedLink {
    /// Creates namespace `<prefix><pid>-<n>`, the veth pair, the addresses and the tbf qdisc.
    /// `prefix` names what the namespace is for (`stampede-up-`); it must end in `-`.
    ///
    /// # Errors
    /// [`LabError::NotRoot`], [`LabError::Missing`] (`ip`, `tc`: iproute2), [`LabError::NoSubnet`],
    /// or the failing `ip`/`tc` command; whatever was created is removed again.
    pub fn create(prefix: &str, shaping: Shaping) -> Result<Self, LabError> {
        require_root("a shaped network namespace")?;
        find("ip")?;
        find("tc")?;
        let _serial = CREATE
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        namespace::sweep_stale(prefix);
        let pid = std::process::id();
        let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let subnet = free_subnet(pid + n)?;
        // Interface names are at most 15 bytes: "st" + h|u + hex pid padded to 6 (pids fit in
        // 22 bits, so no two (pid, n) pairs collide) + hex n.
        let id = format!("{pid:06x}{n:x}");
        let link = Self {
            netns: format!("{prefix}{pid}-{n}"),
            host_if: format!("sth{id}"),
            ns_if: format!("stu{id}"),
            upstream_ip: Ipv4Addr::new(10, 231, subnet, 1),
            host_ip: Ipv4Addr::new(10, 231, subnet, 2),
            shaping,
        };
        // From here on, `link`'s Drop removes whatever part was made.
        link.build()?;
        Ok(link)
    }

    fn build(&self) -> Result<(), LabError> {
        let ns = self.netns.as_str();
        let (host_if, ns_if) = (self.host_if.as_str(), self.ns_if.as_str());
        let host_cidr = format!("{}/24", self.host_ip);
        let ns_cidr = format!("{}/24", self.upstream_ip);
        let rate = format!("{}bit", self.shaping.rate_bits_per_sec);
        let burst = self.shaping.burst_bytes().to_string();
        run("ip", &["netns", "add", ns])?;
        run(
            "ip",
            &[
                "link", "add", host_if, "type", "veth", "peer", "name", ns_if,
            ],
        )?;
        run("ip", &["link", "set", ns_if, "netns", ns])?;
        run("ip", &["addr", "add", &host_cidr, "dev", host_if])?;
        run("ip", &["link", "set", host_if, "up"])?;
        run("ip", &["-n", ns, "addr", "add", &ns_cidr, "dev", ns_if])?;
        run("ip", &["-n", ns, "link", "set", "lo", "up"])?;
        run("ip", &["-n", ns, "link", "set", ns_if, "up"])?;
        run(
            "tc",
            &[
                "-n",
                ns,
                "qdisc",
                "replace",
                "dev",
                ns_if,
                "root",
                "tbf",
                "rate",
                &rate,
                "burst",
                &burst,
                "latency",
                TBF_LATENCY,
            ],
        )?;
        Ok(())
    }

    /// The namespace's name (`ip netns exec <name> ...`).
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// The upstream's address, inside the namespace.
    pub fn upstream_ip(&self) -> Ipv4Addr {
        self.upstream_ip
    }

    /// The host end's address; the upstream sees host-namespace clients coming from it.
    pub fn host_ip(&self) -> Ipv4Addr {
        self.host_ip
    }

    /// The shaping applied.
    pub fn shaping(&self) -> Shaping {
        self.shaping
    }

    /// A command that runs `program` (a full path) inside the namespace. `ip netns exec` execs
    /// it, so the child's PID is the program's.
    pub fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.netns]).arg(program);
        cmd
    }

    /// A TCP listener on the upstream address and `port` (0: any free one), created inside the
    /// namespace and returned to this process: a server in this process then serves from behind
    /// the shaped link.
    ///
    /// # Errors
    /// [`LabError::Socket`] when the namespace cannot be entered or the address bound.
    pub fn bind(&self, port: u16) -> Result<TcpListener, LabError> {
        let addr = SocketAddr::from((self.upstream_ip, port));
        namespace::within(&self.netns, &format!("bind {addr}"), || {
            TcpListener::bind(addr)
        })
    }

    /// Bytes the tbf qdisc has sent so far (`tc -s qdisc show`): the kernel's own count of what
    /// crossed the shaped link toward the host.
    ///
    /// # Errors
    /// `tc` fails or prints no `Sent` line.
    pub fn sent_bytes(&self) -> Result<u64, LabError> {
        let out = run(
            "tc",
            &["-s", "-n", &self.netns, "qdisc", "show", "dev", &self.ns_if],
        )?;
        parse_sent_bytes(&out).ok_or_else(|| LabError::Socket {
            what: format!("read tbf statistics of {}", self.netns),
            source: std::io::Error::other(format!("no `Sent N bytes` in: {out}")),
        })
    }
}

fn parse_sent_bytes(tc_output: &str) -> Option<u64> {
    tc_output.lines().find_map(|l| {
        l.trim()
            .strip_prefix("Sent ")?
            .split(' ')
            .next()?
            .parse()
            .ok()
    })
}

impl Drop for ShapedLink {
    fn drop(&mut self) {
        namespace::delete(&self.netns);
        // Normally gone with the namespace; removes the host end if creation stopped halfway.
        Command::new("ip")
            .args(["link", "del", &self.host_if])
            .stderr(Stdio::null())
            .status()
            .ok();
    }
}

/// A `10.231.N.0/24` not already routed on the host, starting the search at `seed`.
fn free_subnet(seed: u32) -> Result<u8, LabError> {
    let routes = run("ip", &["-4", "route", "show"])?;
    (0..250)
        .map(|i| ((seed + i) % 250 + 1) as u8)
        .find(|n| !routes.contains(&format!("10.231.{n}.")))
        .ok_or(LabError::NoSubnet)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_is_ten_milliseconds_of_rate() {
        let s = Shaping {
            rate_bits_per_sec: 200_000_000,
        };
        assert_eq!(s.burst_bytes(), 250_000);
        let slow = Shaping {
            rate_bits_per_sec: 1_000_000,
        };
        assert_eq!(slow.burst_bytes(), MIN_BURST_BYTES);
    }

    #[test]
    fn reads_tbf_statistics() {
        let out = "qdisc tbf 8001: root refcnt 2 rate 200Mbit burst 250000b lat 100ms \n Sent 67392810 bytes 45011 pkt (dropped 0, overlimits 3011 requeues 0) \n backlog 0b 0p requeues 0\n";
        assert_eq!(parse_sent_bytes(out), Some(67_392_810));
        assert_eq!(parse_sent_bytes("qdisc noqueue 0: root"), None);
    }
}
