//! Pulls done by real clients, so a comparison of targets does not rest on the harness's own
//! client alone (`[runtime] puller`):
//!
//! - `skopeo`: `skopeo copy docker://<target>/<repo>:<tag> dir:<node>/skopeo-<n>` over plain HTTP
//!   (`--src-tls-verify=false`), for the node's platform. skopeo verifies every digest; the
//!   node then unpacks the layers it wrote, as it does after its own pulls.
//! - `ctr`: `ctr images pull --plain-http` against a containerd of the node's own (its content
//!   store and snapshots under the node's directory, started before the burst), which unpacks as
//!   it pulls, so the pull includes the unpack and the node unpacks nothing itself. With
//!   `unpack = false`, `ctr content fetch` instead.
//!
//! With nodes in namespaces both run inside the node's namespace (`ip netns exec`), so their
//! traffic crosses the node's shaped link; containerd's socket is a file, reachable from here.
//!
//! Only the whole pull is observed: a real client reports neither its first byte nor per-layer
//! fetch times, so those stay empty for it (the report says so rather than inventing them), and
//! node links to a shared target are not paced (the harness cannot slow a client it does not
//! own). A failed pull is data: its kind is guessed from the client's error text and its last
//! lines kept as the message.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use stampede_lab::{Containerd, LabError};
use stampede_oci::manifest::descriptor_digest;
use stampede_oci::{Compression, Digest, Endpoint, Manifest, Platform, Reference, RepoName};

use crate::nodes::pull::{LayerFetch, PullError, PullRecord};
use crate::run::recorder::FailureKind;
use crate::scenario::PullerKind;

/// The containerd namespace pulls land in.
const CTR_NAMESPACE: &str = "stampede";
/// Bytes of a failed client's stderr kept in the failure message.
const STDERR_TAIL_BYTES: usize = 600;

/// How a node's real client is set up.
#[derive(Debug, Clone)]
pub struct RealPullerConfig {
    pub client: PullerKind,
    /// Where the node pulls from (registry, cache or peer); plain HTTP.
    pub endpoint: Endpoint,
    /// The node's directory: pulls (and containerd's root) go under it.
    pub dir: PathBuf,
    pub platform: Platform,
    /// Whether the image is unpacked (`ctr`: `images pull` rather than `content fetch`).
    pub unpack: bool,
    /// The node's network namespace, with nodes in namespaces: the client (and for `ctr` the
    /// node's containerd) runs inside it (`ip netns exec`).
    pub netns: Option<String>,
}

/// Why a real client could not be set up for a node.
#[derive(Debug, thiserror::Error)]
pub enum RealPullerError {
    /// The program is missing (the message names the Debian package) or containerd did not
    /// start.
    #[error("set up {client} for node {node}")]
    Lab {
        /// `skopeo` or `ctr`.
        client: &'static str,
        node: u32,
        #[source]
        source: LabError,
    },
    /// `puller = "harness"` is not a real client.
    #[error("puller \"harness\" is the harness's own client, not a real one")]
    NotReal,
}

/// The program a real client needs.
#[derive(Debug)]
enum Client {
    Skopeo(PathBuf),
    Ctr(Containerd),
}

/// One node's real client.
#[derive(Debug)]
pub struct RealPuller {
    client: Client,
    config: RealPullerConfig,
    pulls: AtomicU32,
}

impl RealPuller {
    /// Finds the client (and for `ctr` starts the node's containerd, blocking up to 20 s).
    ///
    /// # Errors
    /// [`RealPullerError`] naming the node and the cause.
    pub fn new(node: u32, config: RealPullerConfig) -> Result<Self, RealPullerError> {
        let lab = |client, source| RealPullerError::Lab {
            client,
            node,
            source,
        };
        let client = match config.client {
            PullerKind::Harness => return Err(RealPullerError::NotReal),
            PullerKind::Skopeo => {
                Client::Skopeo(stampede_lab::find("skopeo").map_err(|e| lab("skopeo", e))?)
            }
            PullerKind::Ctr => Client::Ctr(
                Containerd::start_in(&config.dir.join("containerd"), config.netns.as_deref())
                    .map_err(|e| lab("ctr", e))?,
            ),
        };
        Ok(Self {
            client,
            config,
            pulls: AtomicU32::new(0),
        })
    }

    /// Checks that the programs `client` needs are installed (and for `ctr`, that we are root:
    /// containerd's snapshotter mounts).
    ///
    /// # Errors
    /// [`LabError::Missing`] naming the package, [`LabError::NotRoot`].
    pub fn check(client: PullerKind) -> Result<(), LabError> {
        let programs: &[&str] = match client {
            PullerKind::Harness => &[],
            PullerKind::Skopeo => &["skopeo"],
            PullerKind::Ctr => {
                stampede_lab::program::require_root("puller = \"ctr\" (a containerd per node)")?;
                &["containerd", "ctr"]
            }
        };
        programs
            .iter()
            .try_for_each(|p| stampede_lab::find(p).map(|_| ()))
    }

    /// Pulls `repo:reference` with the real client. The record has the pull's start and end;
    /// no first byte, and per-layer fetch times of zero (not observed).
    ///
    /// # Errors
    /// [`PullError`] with a kind guessed from the client's error and its last stderr lines.
    pub async fn pull(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<PullRecord, PullError> {
        let image = match reference {
            Reference::Tag(t) => format!("{}/{repo}:{t}", self.config.endpoint.authority()),
            Reference::Digest(d) => format!("{}/{repo}@{d}", self.config.endpoint.authority()),
        };
        let n = self.pulls.fetch_add(1, Ordering::Relaxed);
        match &self.client {
            Client::Skopeo(program) => self.skopeo(program, &image, n).await,
            Client::Ctr(containerd) => self.ctr(containerd, &image).await,
        }
    }

    async fn skopeo(&self, program: &Path, image: &str, n: u32) -> Result<PullRecord, PullError> {
        let out = self.config.dir.join(format!("skopeo-{n}"));
        let p = &self.config.platform;
        let mut cmd = match &self.config.netns {
            Some(ns) => {
                let mut c = tokio::process::Command::new("ip");
                c.args(["netns", "exec", ns]).arg(program);
                c
            }
            None => tokio::process::Command::new(program),
        };
        cmd.args(["--override-os", &p.os, "--override-arch", &p.architecture]);
        if let Some(variant) = &p.variant {
            cmd.args(["--override-variant", variant]);
        }
        cmd.args(["copy", "--quiet", "--src-tls-verify=false"])
            .arg(format!("docker://{image}"))
            .arg(format!("dir:{}", out.display()));
        let what = format!("skopeo copy docker://{image}");
        let started = Instant::now();
        run_client(cmd, &what).await?;
        let fetched = Instant::now();
        let bytes = tokio::fs::read(out.join("manifest.json"))
            .await
            .map_err(|e| PullError::other(&what, e))?;
        let parsed = Manifest::parse(None, &bytes).map_err(|e| PullError::other(&what, e))?;
        let Manifest::Image(manifest) = parsed else {
            let why = "wrote an index, not the node's platform manifest";
            return Err(PullError::other(&what, why));
        };
        let mut layers = Vec::with_capacity(manifest.layers().len());
        let mut bytes_fetched = manifest.config().size();
        for d in manifest.layers() {
            let digest = descriptor_digest(d).map_err(|e| PullError::other(&what, e))?;
            bytes_fetched += d.size();
            layers.push(LayerFetch {
                path: out.join(digest.hex()),
                digest,
                size_bytes: d.size(),
                compression: Compression::from_media_type(d.media_type().as_ref())
                    .unwrap_or(Compression::Gzip),
                fetch: Duration::ZERO,
                verify: Duration::ZERO,
                started,
                first_byte: None,
                cached: false,
            });
        }
        Ok(PullRecord {
            started,
            first_byte: None,
            fetched,
            manifest_digest: Digest::of(&bytes),
            layers,
            bytes_fetched,
            throttled: 0,
            unpacked_by_client: false,
            blob_timings: Vec::new(),
        })
    }

    async fn ctr(&self, containerd: &Containerd, image: &str) -> Result<PullRecord, PullError> {
        let mut cmd = tokio::process::Command::from(containerd.ctr(CTR_NAMESPACE));
        let sub: &[&str] = if self.config.unpack {
            &["images", "pull"]
        } else {
            &["content", "fetch"]
        };
        cmd.args(sub)
            .args([
                "--plain-http",
                "--platform",
                &self.config.platform.to_string(),
            ])
            .arg(image);
        let what = format!("ctr {} {image}", sub.join(" "));
        let started = Instant::now();
        run_client(cmd, &what).await?;
        let fetched = Instant::now();
        let mut ls = tokio::process::Command::from(containerd.ctr(CTR_NAMESPACE));
        ls.args(["images", "ls", &format!("name=={image}")]);
        let listed = run_client(ls, "ctr images ls").await?;
        let manifest_digest = listed
            .lines()
            .nth(1)
            .and_then(|l| l.split_whitespace().nth(2))
            .and_then(|d| Digest::parse(d).ok())
            .ok_or_else(|| {
                PullError::other(&what, format!("`ctr images ls` does not list it: {listed}"))
            })?;
        Ok(PullRecord {
            started,
            first_byte: None,
            fetched,
            manifest_digest,
            layers: Vec::new(),
            bytes_fetched: 0,
            throttled: 0,
            unpacked_by_client: self.config.unpack,
            blob_timings: Vec::new(),
        })
    }
}

/// Runs a client to completion (killed if the pull is abandoned) and returns its stdout.
async fn run_client(mut cmd: tokio::process::Command, what: &str) -> Result<String, PullError> {
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| PullError::other(what, format!("start: {e}")))?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let tail = tail(stderr.trim(), STDERR_TAIL_BYTES);
    Err(PullError::new(
        failure_kind(tail),
        what,
        format!("exited with {}: {tail}", out.status),
    ))
}

/// The last `max` bytes of `text`, at a character boundary.
fn tail(text: &str, max: usize) -> &str {
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// A failure kind from a client's error text.
fn failure_kind(stderr: &str) -> FailureKind {
    let s = stderr.to_ascii_lowercase();
    let has = |needles: &[&str]| needles.iter().any(|n| s.contains(n));
    if has(&["429", "toomanyrequests", "too many requests"]) {
        FailureKind::Throttled
    } else if has(&[
        "connection refused",
        "connection reset",
        "no route to host",
        "eof",
    ]) {
        FailureKind::Connect
    } else if has(&["timeout", "timed out", "deadline exceeded"]) {
        FailureKind::Timeout
    } else if has(&["digest", "checksum"])
        && has(&["mismatch", "did not match", "does not match", "invalid"])
    {
        FailureKind::DigestMismatch
    } else if has(&[
        "no image found",
        "no match for platform",
        "choosing an image from manifest list",
    ]) {
        FailureKind::PlatformMissing
    } else if has(&[
        " 500 ",
        " 502 ",
        " 503 ",
        " 504 ",
        "internal server error",
        "bad gateway",
    ]) {
        FailureKind::Http5xx
    } else if has(&[
        "manifest unknown",
        "blob unknown",
        "not found",
        " 404 ",
        "unauthorized",
        " 401 ",
        " 403 ",
    ]) {
        FailureKind::Http4xx
    } else {
        FailureKind::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_errors_are_classified() {
        let cases = [
            ("Error initializing source docker://127.0.0.1:1/a:b: pinging container registry 127.0.0.1:1: Get \"http://127.0.0.1:1/v2/\": dial tcp 127.0.0.1:1: connect: connection refused", FailureKind::Connect),
            ("reading manifest latest in 127.0.0.1:5000/a: manifest unknown: manifest unknown", FailureKind::Http4xx),
            ("ctr: failed to copy: httpReadSeeker: failed open: unexpected status code http://x/v2/a/blobs/sha256:00: 502 Bad Gateway", FailureKind::Http5xx),
            ("writing blob: happened during read: Digest did not match, expected sha256:aa, got sha256:bb", FailureKind::DigestMismatch),
            ("Error choosing an image from manifest list docker://x: no image found in manifest list for architecture amd64, variant \"\", OS linux", FailureKind::PlatformMissing),
            ("something else went wrong", FailureKind::Other),
        ];
        for (text, kind) in cases {
            assert_eq!(failure_kind(text), kind, "{text}");
        }
        assert_eq!(tail("héllo", 4), "llo");
    }
}
