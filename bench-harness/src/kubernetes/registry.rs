//! The registry a cluster pulls from, seen from the harness: images the harness makes
//! (synthetic, imported or mirrored, held in an OCI layout) pushed there before the epoch, so
//! that the cluster and a namespace emulation pull the same bytes ([`push`]); and what that
//! registry served after the epoch, read from its access log and counted as the embedded
//! registry counts its own ([`served_since`]), so reports show registry bytes and image copies
//! for a cluster too.
//!
//! It does not talk to the cluster, and it counts only what the access log says (a
//! docker-registry's or an nginx's combined-format lines): no bandwidth over time.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;

use stampede_lab::{AccessEntry, AccessLog, RequestKind};
use stampede_oci::Digest;

use crate::image::layout::{
    DescriptorDoc, IndexDoc, INDEX_FILE, OCI_LAYOUT_CONTENT, OCI_LAYOUT_FILE,
};
use crate::image::LayoutImage;
use crate::registry::accounting::{AccountingSnapshot, ObjectCounts};

/// A registry URL a scenario names (`http://10.200.0.1:5000`): its host (with port) and
/// whether it speaks TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushTarget {
    /// `host[:port]`, the first part of the image names.
    pub host: String,
    /// `https` (true) or `http`.
    pub tls: bool,
}

impl PushTarget {
    /// Parses `http://HOST[:PORT]` or `https://HOST[:PORT]` (nothing after the authority).
    ///
    /// # Errors
    /// A plain sentence saying what is expected.
    pub fn parse(url: &str) -> Result<Self, String> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(format!(
                "{url:?} is not a registry URL: give http://HOST:PORT or https://HOST:PORT"
            ));
        };
        let host = rest.strip_suffix('/').unwrap_or(rest);
        if host.is_empty() || host.contains(['/', '?', '#', '@', ' ']) {
            return Err(format!(
                "{url:?}: give only the registry's scheme, host and port (http://HOST:PORT); images are pushed as HOST:PORT/stampede/<variant>"
            ));
        }
        Ok(Self {
            host: host.to_owned(),
            tls,
        })
    }

    /// The name the cluster pulls `variant`'s image by: `HOST/stampede/<variant>:<digest
    /// prefix>`, so a changed image gets a new tag and an unchanged one is pushed once.
    pub fn image_name(&self, variant: &str, image: &LayoutImage) -> String {
        let hex = image.top.digest.to_string();
        let hex = hex.rsplit(':').next().unwrap_or(&hex);
        format!(
            "{}/stampede/{}:{}",
            self.host,
            variant.to_ascii_lowercase(),
            &hex[..hex.len().min(16)]
        )
    }
}

/// Why an image could not be pushed.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// skopeo could not be started, or its source layout not written.
    #[error("push {name} with skopeo")]
    Spawn {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("push {name} with skopeo: {stderr}")]
    Failed { name: String, stderr: String },
}

/// Pushes `image` (every platform of an index when its layout holds them all; digests
/// unchanged) as `name` with skopeo; blobs the registry has already are not sent again. skopeo
/// reads it through a small layout of its own in the temporary directory (an `index.json`
/// naming only this image, its blobs a link to the image's), whatever names the image's own
/// layout uses.
///
/// # Errors
/// [`PushError`] with skopeo's message, or the temporary layout's I/O error.
pub async fn push(image: &LayoutImage, name: &str, tls: bool) -> Result<(), PushError> {
    let dir = std::env::temp_dir().join(format!(
        "stampede-push-{}-{}",
        std::process::id(),
        image.top.digest.to_string().replace(':', "-")
    ));
    let out = match single_image_layout(image, &dir) {
        Ok(()) => run_skopeo(image, &dir, name, tls).await,
        Err(source) => Err(PushError::Spawn {
            name: name.to_owned(),
            source,
        }),
    };
    let _ = std::fs::remove_dir_all(&dir);
    out
}

/// `dir` as an OCI layout holding `image` alone, tagged `push`.
fn single_image_layout(image: &LayoutImage, dir: &Path) -> std::io::Result<()> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join(OCI_LAYOUT_FILE), OCI_LAYOUT_CONTENT)?;
    let index = IndexDoc::tagged(DescriptorDoc::of(&image.top, None), "push");
    std::fs::write(dir.join(INDEX_FILE), serde_json::to_vec(&index)?)?;
    std::os::unix::fs::symlink(
        std::path::absolute(image.layout_dir.join("blobs"))?,
        dir.join("blobs"),
    )
}

async fn run_skopeo(
    image: &LayoutImage,
    dir: &Path,
    name: &str,
    tls: bool,
) -> Result<(), PushError> {
    let mut cmd = tokio::process::Command::new("skopeo");
    cmd.args(["copy", "-q", "--preserve-digests"]);
    if image.is_index() && image.platforms.len() == image.listed.len() {
        cmd.arg("--all");
    }
    if !tls {
        cmd.arg("--dest-tls-verify=false");
    }
    let out = cmd
        .arg(format!("oci:{}:push", dir.display()))
        .arg(format!("docker://{name}"))
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|source| PushError::Spawn {
            name: name.to_owned(),
            source,
        })?;
    if !out.status.success() {
        return Err(PushError::Failed {
            name: name.to_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(())
}

/// The access log's end now: what comes after it is the burst's.
pub fn log_offset(log: &Path) -> u64 {
    AccessLog::new(log).offset()
}

/// What the registry served since `offset` of its access log, once the log has been quiet
/// for a moment (a registry writes a line when a response ends), as the embedded registry's
/// counts: requests by kind, body bytes, GETs and bytes per blob and manifest.
pub async fn served_since(log: &Path, offset: u64) -> AccountingSnapshot {
    let log = AccessLog::new(log);
    tokio::task::spawn_blocking(move || {
        log.wait_quiet(
            std::time::Duration::from_millis(500),
            std::time::Duration::from_secs(10),
        );
        snapshot(&log.since(offset))
    })
    .await
    .unwrap_or_default()
}

/// Counts access-log entries as [`AccountingSnapshot`] does.
pub fn snapshot(entries: &[AccessEntry]) -> AccountingSnapshot {
    let mut s = AccountingSnapshot::default();
    for e in entries {
        let kind = e.kind();
        s.requests.count(kind);
        s.bytes_out += e.bytes;
        let is_blob = matches!(kind, RequestKind::BlobGet | RequestKind::BlobHead);
        if is_blob {
            s.body_bytes.blobs += e.bytes;
        } else if matches!(kind, RequestKind::ManifestGet) {
            s.body_bytes.manifests += e.bytes;
        } else {
            s.body_bytes.other += e.bytes;
        }
        if !(200..300).contains(&e.status) {
            continue;
        }
        let path = e.path.split('?').next().unwrap_or(&e.path);
        let Some(digest) = path
            .rsplit_once('/')
            .and_then(|(_, d)| d.parse::<Digest>().ok())
        else {
            continue;
        };
        let map: &mut BTreeMap<Digest, ObjectCounts> = if is_blob {
            &mut s.blobs
        } else {
            &mut s.manifests
        };
        let c = map.entry(digest).or_default();
        match kind {
            RequestKind::BlobGet | RequestKind::ManifestGet => {
                c.gets += 1;
                c.range_gets += u64::from(e.status == 206);
            }
            _ => c.heads += 1,
        }
        c.bytes_out += e.bytes;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_targets_are_plain_registry_urls() {
        assert_eq!(
            PushTarget::parse("http://10.200.0.1:5000").unwrap(),
            PushTarget {
                host: "10.200.0.1:5000".into(),
                tls: false
            }
        );
        assert!(PushTarget::parse("https://reg.example/").unwrap().tls);
        for bad in ["10.200.0.1:5000", "http://", "http://reg/path", "ftp://reg"] {
            let e = PushTarget::parse(bad).unwrap_err();
            assert!(e.contains("http://HOST:PORT"), "{bad}: {e}");
        }
    }

    #[test]
    fn access_log_lines_count_as_the_registry_counts() {
        let d = "sha256:".to_owned() + &"ab".repeat(32);
        let lines = [
            format!("10.200.0.11 - - [07/Dec/2026:16:40:00 +0000] \"GET /v2/app/blobs/{d} HTTP/1.1\" 206 16777216 \"\" \"cache-daemon/0.1\""),
            format!("10.200.0.12 - - [07/Dec/2026:16:40:00 +0000] \"GET /v2/app/blobs/{d} HTTP/1.1\" 206 1000 \"\" \"cache-daemon/0.1\""),
            "10.200.0.12 - - [07/Dec/2026:16:40:00 +0000] \"GET /v2/app/manifests/1 HTTP/1.1\" 200 350 \"\" \"cache-daemon/0.1\"".to_owned(),
            format!("10.200.0.13 - - [07/Dec/2026:16:40:00 +0000] \"GET /v2/app/blobs/{d} HTTP/1.1\" 404 19 \"\" \"x\""),
            "not an access log line".to_owned(),
        ];
        let entries: Vec<AccessEntry> =
            lines.iter().filter_map(|l| AccessEntry::parse(l)).collect();
        let s = snapshot(&entries);
        assert_eq!(s.requests.total, 4);
        assert_eq!(s.requests.blob_get, 3);
        assert_eq!(s.requests.manifest_get, 1);
        assert_eq!(s.bytes_out, 16_777_216 + 1000 + 350 + 19);
        let blob = &s.blobs[&d.parse::<Digest>().unwrap()];
        assert_eq!(
            (blob.gets, blob.range_gets, blob.bytes_out),
            (2, 2, 16_777_216 + 1000)
        );
        assert!(s.manifests.is_empty(), "a tag is not a digest");
    }
}
