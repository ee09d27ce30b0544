//! stampede-lab: the real parts that benchmarks and tests start and stop, in one place. Debian's
//! `docker-registry` (distribution 2.8) as a plain origin or in pull-through proxy mode, nginx as
//! a digest-keyed blob cache with `proxy_cache_lock`, a network namespace behind a veth pair
//! shaped with `tc tbf`, many node namespaces on a bridge with shaped links, and the guards that
//! take every process and namespace down again. The configurations are the ones
//! `../shared/testbed.md` measured on this kind of machine.
//!
//! It knows nothing of the cache daemon or the load generator: both use it, it uses neither. It
//! runs programs and reads their logs; it does not speak the registry protocol beyond a readiness
//! probe.
//!
//! # Layout
//! - [`program`]: finding a program on `PATH`, or an error naming the Debian package to install;
//!   whether we are root.
//! - [`process`]: [`Proc`], a child process stopped by PID (with its descendants) on drop; short
//!   commands run to completion.
//! - [`probe`]: waiting until a server answers HTTP.
//! - [`namespace`]: entering a named network namespace from this process (on a short-lived
//!   thread), deleting one with what runs inside, sweeping those of dead processes.
//! - [`netns`]: [`ShapedLink`], a namespace joined to the host by a tbf-shaped veth pair, with
//!   listeners bound inside it.
//! - [`fabric`]: [`Fabric`], many node namespaces and a registry namespace on a bridge, each
//!   link tbf-shaped both ways, with the kernel's byte counters of every link.
//! - [`link_counters`]: [`LinkCounters`], a fabric's link counters open for reads on a clock,
//!   each stamped with the moment it was read.
//! - [`access_log`]: the Apache-style access log lines both servers write, parsed and counted by
//!   request kind, digest and bytes.
//! - [`distribution`]: [`DockerRegistry`], plain or proxy, configured from [`RegistryConfig`].
//! - [`nginx`]: [`NginxCache`], the blob cache, configured from [`NginxConfig`].
//! - [`containerd`]: [`Containerd`] on a temp root, for `ctr` pulls.
//! - [`kubernetes`]: [`KubeBed`], a real Kubernetes v1.20.2 of one or more nodes with an upstream registry
//!   in private network and mount namespaces, started and torn down by the scripts in `lab/kubernetes/`.
//! - [`machine`]: [`Machine`], the facts of the machine a run or bench happened on.
//! - [`error`]: [`LabError`], what went wrong and doing what.
//!
//! # One peer's life
//! `program::find("nginx")` -> [`NginxConfig::write`] into a temp dir -> [`NginxCache::start`]
//! ([`Proc::spawn`], then [`probe::wait_ready`]) -> clients pull through it -> its
//! [`AccessLog`] is counted -> drop (SIGTERM by PID, SIGKILL to stragglers and their children).

#![forbid(unsafe_code)]

pub mod access_log;
pub mod containerd;
pub mod distribution;
pub mod error;
pub mod fabric;
pub mod kubernetes;
pub mod link_counters;
pub mod machine;
pub mod namespace;
pub mod netns;
pub mod nginx;
pub mod probe;
pub mod process;
pub mod program;

pub use access_log::{AccessCounts, AccessEntry, AccessLog, BlobCounts, RequestKind};
pub use containerd::Containerd;
pub use distribution::{DockerRegistry, RegistryAuth, RegistryConfig, RegistryTls};
pub use error::LabError;
pub use fabric::{Endpoint, Fabric, FabricBytes, FabricConfig, LinkBytes};
pub use kubernetes::KubeBed;
pub use link_counters::{CounterRead, LinkCounters};
pub use machine::Machine;
pub use netns::{ShapedLink, Shaping};
pub use nginx::{NginxCache, NginxConfig};
pub use process::Proc;
pub use program::{debian_package, find, have_or_skip, is_root, real_parts_required, root_or_skip};
