//! The registry model a scenario writes under `[registry]`: shared egress bandwidth, per-node link
//! bandwidth, added latency per request, throttling, and optionally a kernel-shaped link in front
//! of it all. The embedded registry (`mod.rs`) enforces the first four in its own code; the runner
//! (`run/`) puts the registry behind the shaped link (`netns_rate`). This file only describes them.

use crate::scenario::units::{Bandwidth, Span};

/// How the embedded registry behaves under load.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryModel {
    /// Egress bandwidth shared by every client of the registry. Unset: unlimited.
    pub egress: Option<Bandwidth>,
    /// Bandwidth of each node's own link to the registry (applies to that node's traffic,
    /// including its node-local cache's upstream fetches). Unset: unlimited.
    pub node_link: Option<Bandwidth>,
    /// Latency added to every request before its response headers are sent.
    pub latency: Span,
    /// Throttling: above the rate, requests get `429` with `Retry-After`.
    pub throttle: Option<Throttle>,
    /// When set, the registry listens in its own network namespace, reached over a veth pair
    /// whose namespace end `tc tbf` shapes to this rate: every client and every cache reaches it
    /// over one kernel-shaped link, independent of the harness's own shaping. Needs root.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub netns_rate: Option<Bandwidth>,
}

/// A token-bucket request limit, as hosted registries apply per client.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Throttle {
    /// Sustained requests per second allowed (all clients together).
    pub requests_per_second: f64,
    /// Requests allowed in a burst above the sustained rate.
    #[serde(default = "default_burst")]
    pub burst: u32,
    /// Value of the `Retry-After` header on a 429.
    #[serde(default = "default_retry_after")]
    pub retry_after: Span,
}

fn default_burst() -> u32 {
    10
}

fn default_retry_after() -> Span {
    Span(std::time::Duration::from_secs(1))
}
