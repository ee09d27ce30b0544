//! The machine profile: what a node of a given type does per byte and per request, as the model
//! needs it (decompression and unpack rates per compression, hash rate, disk write, client and
//! cache overhead), containerd's `ctr` where it is the puller, and the cluster mode's shape
//! (stripe size, fan-out). A TOML file, measured by `bench-harness calibrate` on the machine it
//! runs on or written by hand for node types one cannot run on; every table refuses unknown
//! keys. This module parses and checks the file; it measures nothing and runs nothing.

use std::path::{Path, PathBuf};

use crate::scenario::units::{Bandwidth, ByteSize, Span};

/// A machine profile.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Name shown in results and reports ("this-machine", "m5.2xlarge", ...).
    pub name: String,
    /// Where the numbers come from (calibrate's command line, a datasheet, ...).
    #[serde(default)]
    pub source: String,
    pub node: NodeCosts,
    /// Decompression and unpack rates by layer compression.
    pub unpack: UnpackRates,
    /// What a cache (cache-daemon, nginx, distribution) costs per stream and in total.
    pub cache: CacheCosts,
    /// Cluster mode's shape.
    #[serde(default)]
    pub cluster: ClusterShape,
    /// containerd's `ctr` as the node's puller (`runtime.puller = "ctr"`, and what kubelet pulls
    /// with), in place of the harness's own client; measured by `calibrate` where containerd
    /// is installed. Absent: a `ctr` scenario is modelled with the harness client's costs, and
    /// the result says so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ctr: Option<CtrCosts>,
}

/// What containerd's `ctr` costs on a node, where it differs from the harness's own client.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CtrCosts {
    /// Time one image pull costs beyond its bytes: starting `ctr`, containerd's resolve,
    /// manifest and config requests, content commits and the image record.
    pub pull_overhead: Span,
    /// Highest rate of one layer download through containerd (fetch, verify, write to its
    /// content store).
    pub stream_rate: Bandwidth,
    /// containerd's unpack into a snapshot, uncompressed bytes per second, decompression and
    /// apply together (gzip layers).
    pub unpack: Bandwidth,
}

/// Per-node costs of the puller.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeCosts {
    /// Cores of a node: hashing and unpacking of all its streams share them (one layer is
    /// unpacked at a time, on one core).
    pub cores: u32,
    /// Set when the modelled nodes are emulated on one host (the harness's own runs): every
    /// node's hashing and unpacking shares this many cores instead of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_host_cores: Option<u32>,
    /// sha256 over downloaded bytes, one core (every blob is verified as it arrives).
    pub hash_rate: Bandwidth,
    /// Sustained write rate of the node's disk (content store and snapshots share it).
    pub disk_write: Bandwidth,
    /// Client time per request beyond the registry's latency (connection, TLS, headers).
    pub request_overhead: Span,
    /// Highest rate one download stream of the client reaches (copy loop, buffers).
    pub stream_rate: Bandwidth,
    /// Uplink of a node, for cluster mode's peer traffic; unset: the scenario's
    /// `registry.node_link`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uplink: Option<Bandwidth>,
}

/// Rates of turning a layer into a snapshot, in uncompressed bytes per second.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnpackRates {
    pub gzip_decompress: Bandwidth,
    pub zstd_decompress: Bandwidth,
    /// Writing tar entries into a snapshot directory.
    pub apply: Bandwidth,
}

/// A cache's costs.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheCosts {
    /// Time a cache adds to a request it answers (lookup, headers), on top of the client's.
    pub request_overhead: Span,
    /// Highest rate one stream through the cache reaches.
    pub stream_rate: Bandwidth,
    /// Everything one shared cache instance serves per second, all streams together (its CPU
    /// or NIC, whichever is lower).
    pub serve_rate: Bandwidth,
    /// How often an nginx `proxy_cache_lock` waiter looks again whether the fill has finished
    /// (nginx: 500 ms).
    #[serde(default = "default_lock_poll")]
    pub lock_poll: Span,
}

/// Cluster mode as the cluster issue builds it: ownership per (digest, stripe) by rendezvous,
/// stripes fetched upstream with `Range`, each owner passing its stripe to at most `fan_out`
/// children who pass it on, cut-through.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterShape {
    pub stripe: ByteSize,
    /// Children a node passes a stripe to.
    pub fan_out: u32,
    /// Latency of one hop between peers (request to first byte).
    pub hop_latency: Span,
}

impl Default for ClusterShape {
    fn default() -> Self {
        Self {
            stripe: ByteSize(32 << 20),
            fan_out: 2,
            hop_latency: Span(std::time::Duration::from_millis(1)),
        }
    }
}

fn default_lock_poll() -> Span {
    Span(std::time::Duration::from_millis(500))
}

/// Why a profile could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// The file could not be read.
    #[error("read machine profile {path} (write one with `bench-harness calibrate --out FILE`, or pass --profile)")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Not TOML, an unknown key or a wrong type.
    #[error("parse machine profile {path}")]
    Parse {
        path: PathBuf,
        /// What the parser said (it names the key and the line).
        #[source]
        source: Box<toml::de::Error>,
    },
    /// A value the model cannot use.
    #[error("machine profile {path}: {problem}")]
    Invalid { path: PathBuf, problem: String },
}

impl Profile {
    /// Reads and checks a profile file.
    ///
    /// # Errors
    /// [`ProfileError`] naming the file and, for a bad key or value, the key.
    pub fn load(path: &Path) -> Result<Self, ProfileError> {
        let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and checks profile text; `path` names it in messages.
    ///
    /// # Errors
    /// [`ProfileError::Parse`] or [`ProfileError::Invalid`].
    pub fn parse(text: &str, path: &Path) -> Result<Self, ProfileError> {
        let profile: Self = toml::from_str(text).map_err(|source| ProfileError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })?;
        let invalid = |problem: &str| ProfileError::Invalid {
            path: path.to_owned(),
            problem: problem.to_owned(),
        };
        if profile.cluster.fan_out == 0 {
            return Err(invalid("cluster.fan_out: must be at least 1"));
        }
        if profile.cluster.stripe.0 == 0 {
            return Err(invalid("cluster.stripe: must be positive"));
        }
        if let Some(ctr) = &profile.ctr {
            if ctr.stream_rate.bytes_per_sec == 0 || ctr.unpack.bytes_per_sec == 0 {
                return Err(invalid("ctr.stream_rate and ctr.unpack: must be positive"));
            }
        }
        if profile.name.trim().is_empty() {
            return Err(invalid("name: give the profile a name"));
        }
        Ok(profile)
    }

    /// Decompression rate for `compression`, bytes per second; `None` for uncompressed layers.
    pub fn decompress_rate(&self, compression: stampede_oci::Compression) -> Option<f64> {
        use stampede_oci::Compression as C;
        match compression {
            C::Gzip => Some(self.unpack.gzip_decompress.bytes_per_sec as f64),
            C::Zstd => Some(self.unpack.zstd_decompress.bytes_per_sec as f64),
            C::None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "test"
[node]
cores = 2
hash_rate = "500MB/s"
disk_write = "400MB/s"
request_overhead = "1ms"
stream_rate = "1GB/s"
[unpack]
gzip_decompress = "200MB/s"
zstd_decompress = "600MB/s"
apply = "300MB/s"
[cache]
request_overhead = "1ms"
stream_rate = "1GB/s"
serve_rate = "2GB/s"
"#;

    #[test]
    fn a_complete_profile_parses_with_cluster_defaults() {
        let p = Profile::parse(GOOD, Path::new("p.toml")).unwrap();
        assert_eq!(p.cluster.fan_out, 2);
        assert_eq!(p.cache.lock_poll.0, std::time::Duration::from_millis(500));
        let again = Profile::parse(&toml::to_string(&p).unwrap(), Path::new("q.toml")).unwrap();
        assert_eq!(again, p);
        assert_eq!(p.ctr, None);
        let ctr = format!(
            "{GOOD}[ctr]\npull_overhead = \"300ms\"\nstream_rate = \"80MB/s\"\nunpack = \"60MB/s\"\n"
        );
        let p = Profile::parse(&ctr, Path::new("p.toml")).unwrap();
        let c = p.ctr.as_ref().expect("ctr costs");
        assert_eq!(c.pull_overhead.0, std::time::Duration::from_millis(300));
        assert_eq!(c.unpack.bytes_per_sec, 60_000_000);
        let again = Profile::parse(&toml::to_string(&p).unwrap(), Path::new("q.toml")).unwrap();
        assert_eq!(again, p);
        let err =
            Profile::parse(&ctr.replace("unpack =", "unpak ="), Path::new("p.toml")).unwrap_err();
        assert!(format!("{:#}", anyhow::Error::from(err)).contains("unpak"));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let err =
            Profile::parse(&GOOD.replace("apply =", "aply ="), Path::new("p.toml")).unwrap_err();
        let shown = format!("{:#}", anyhow::Error::from(err));
        assert!(
            shown.contains("p.toml") && shown.contains("aply"),
            "{shown}"
        );
        let err = Profile::parse(
            &format!("{GOOD}[cluster]\nfan_out = 0\n"),
            Path::new("p.toml"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("cluster.fan_out"), "{err}");
        let err = Profile::load(Path::new("/nonexistent/profile.toml")).unwrap_err();
        assert!(
            format!("{err:#}").contains("/nonexistent/profile.toml"),
            "{err}"
        );
    }
}
