//! The harness's own OCI client pull, as a node's container runtime does it: resolve the tag,
//! pick the node's platform from an index (a missing platform is a reported failure naming what
//! the index has), fetch and verify the config, then fetch every layer with the runtime's download
//! concurrency into the node's content store, verifying each digest as bytes stream to disk.
//!
//! It times, it does not judge: the caller turns the returned instants into phases from the burst
//! epoch. Layers already in the node's content store (a base layer shared with another image) are
//! not fetched again, as containerd would not. Unpacking is `unpack/`'s job.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::{self, StreamExt, TryStreamExt};
use http::{header::RETRY_AFTER, Method, StatusCode};
use http_body_util::BodyExt;
use oci_spec::image::ImageManifest;
use tokio::io::{AsyncWriteExt as _, BufWriter};

use crate::registry::shaping::ByteBucket;
use crate::run::recorder::{BlobFirstByte, FailureKind};
use stampede_oci::manifest::{descriptor_digest, select_platform};
use stampede_oci::manifest_get::{self, ManifestGetError, ReceivedManifest};
use stampede_oci::{
    ClientError, Compression, Digest, Endpoint, Manifest, Platform, Reference, RegistryClient,
    RegistryRequest, RepoName, Verifier,
};

/// Attempts per request when the registry answers 429 (Retry-After is honoured between them).
const MAX_THROTTLED_ATTEMPTS: u32 = 5;
/// Longest Retry-After honoured; longer waits are capped to keep scenarios bounded.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);
/// Bytes gathered before a write to the content file.
const WRITE_BUFFER_BYTES: usize = 1024 * 1024;

/// Why a pull failed, with what we were doing.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {detail}")]
pub struct PullError {
    /// The kind, for counting.
    pub kind: FailureKind,
    /// What we were doing (`GET manifest test/app:v1`).
    pub what: String,
    /// Why it failed.
    pub detail: String,
}

impl PullError {
    /// A failure of `kind` while doing `what`, because of `detail`.
    pub(crate) fn new(
        kind: FailureKind,
        what: impl Into<String>,
        detail: impl std::fmt::Display,
    ) -> Self {
        Self {
            kind,
            what: what.into(),
            detail: detail.to_string(),
        }
    }

    /// A failure of kind [`FailureKind::Other`].
    pub(crate) fn other(what: impl Into<String>, detail: impl std::fmt::Display) -> Self {
        Self::new(FailureKind::Other, what, detail)
    }
}

/// How a node pulls.
#[derive(Debug, Clone)]
pub struct PullerConfig {
    /// Where to send requests (registry, node cache or mirror).
    pub endpoint: Endpoint,
    /// The node's content store directory (`<dir>/<hex>` per blob).
    pub content_dir: PathBuf,
    /// Layers downloaded at once per image (containerd's default is 3).
    pub max_concurrent_downloads: usize,
    pub platform: Platform,
    /// Longest pause allowed inside a body.
    pub body_idle_timeout: Duration,
    /// The node's link, when the target sits across it and the client must pace what it
    /// receives (a shared cache or mirror); `None` when the registry already shapes it.
    pub link: Option<Arc<ByteBucket>>,
}

/// One fetched layer and its timings.
#[derive(Debug, Clone)]
pub struct LayerFetch {
    pub digest: Digest,
    /// Its compressed size, in bytes.
    pub size_bytes: u64,
    pub compression: Compression,
    /// Where it is in the content store.
    pub path: PathBuf,
    /// Request sent to last byte written (zero if it was already in the store).
    pub fetch: Duration,
    /// Time spent hashing, inside `fetch`.
    pub verify: Duration,
    /// When the request was sent.
    pub started: Instant,
    /// When the first body byte arrived.
    pub first_byte: Option<Instant>,
    /// Already in the node's content store: not fetched.
    pub cached: bool,
}

/// A completed pull.
#[derive(Debug, Clone)]
pub struct PullRecord {
    /// When the pull began (after any queueing).
    pub started: Instant,
    /// When the first body byte of any blob arrived.
    pub first_byte: Option<Instant>,
    /// When every layer was fetched and verified.
    pub fetched: Instant,
    /// The image manifest pulled (after platform selection).
    pub manifest_digest: Digest,
    /// Layers in order, base first.
    pub layers: Vec<LayerFetch>,
    /// Blob body bytes received (config and layers).
    pub bytes_fetched: u64,
    /// 429 answers waited out.
    pub throttled: u32,
    /// The client unpacked the image itself as it pulled (`ctr`), so `fetched` includes the
    /// unpack and the node must not unpack again.
    pub unpacked_by_client: bool,
    /// Every blob fetched (the config, then each layer not already in the store) with when it
    /// was asked for and its first body byte arrived; empty when the client does not observe it.
    pub blob_timings: Vec<BlobFirstByte<Instant>>,
}

/// A manifest or index as fetched: its bytes, parsed form, digest and served media type.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    /// The document, byte for byte.
    pub bytes: Bytes,
    /// The `Content-Type` it was served with (without parameters), if any.
    pub media_type: Option<String>,
    /// Its digest (verified against the reference or `Docker-Content-Digest`).
    pub digest: Digest,
    pub manifest: Manifest,
}

/// The image manifest a pull installs.
struct Resolved {
    digest: Digest,
    image: Box<ImageManifest>,
    /// The reference named this manifest itself, not an index: nothing has checked yet that
    /// it is for the node's platform.
    single_platform: bool,
}

/// A node's puller; cheap to clone.
#[derive(Debug, Clone)]
pub struct Puller {
    client: RegistryClient,
    config: Arc<PullerConfig>,
}

impl Puller {
    /// A puller with its own client (connection pool), as each node has its own runtime.
    pub fn new(client: RegistryClient, config: PullerConfig) -> Self {
        Self {
            client,
            config: Arc::new(config),
        }
    }

    /// Pulls `repo:reference` into the content store.
    ///
    /// # Errors
    /// [`PullError`] with its kind; the content store keeps whatever verified blobs landed.
    pub async fn pull(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<PullRecord, PullError> {
        let started = Instant::now();
        let mut throttled = 0;
        let resolved = self.resolve(repo, reference, &mut throttled).await?;
        let config_digest = descriptor_digest(resolved.image.config())
            .map_err(|e| PullError::other("read manifest", e))?;
        let (config, t) = self
            .blob(
                repo,
                &config_digest,
                resolved.image.config().size(),
                Compression::None,
            )
            .await?;
        throttled += t;
        if resolved.single_platform {
            // A manifest without an index is one platform's image; its config says which.
            // containerd refuses one built for another platform, and so does a node here.
            self.check_config_platform(&config.path, &format!("pull {repo}:{reference}"))
                .await?;
        }
        let (layers, waits): (Vec<LayerFetch>, Vec<u32>) = self
            .fetch_layers(repo, &resolved.image)
            .await?
            .into_iter()
            .unzip();
        // The config, then each layer; those already in the store were not fetched.
        let blobs = || {
            std::iter::once(&config)
                .chain(&layers)
                .filter(|b| !b.cached)
        };
        Ok(PullRecord {
            started,
            first_byte: blobs().filter_map(|b| b.first_byte).min(),
            fetched: Instant::now(),
            manifest_digest: resolved.digest,
            bytes_fetched: blobs().map(|b| b.size_bytes).sum(),
            throttled: throttled + waits.iter().sum::<u32>(),
            unpacked_by_client: false,
            blob_timings: blobs()
                .filter_map(|b| {
                    Some(BlobFirstByte {
                        digest: b.digest.clone(),
                        requested: b.started,
                        first_byte: b.first_byte?,
                    })
                })
                .collect(),
            layers,
        })
    }

    /// The image manifest `reference` stands for on the node's platform: the one it names, or
    /// the platform's entry of the index it names. 429s waited out are added to `throttled`.
    async fn resolve(
        &self,
        repo: &RepoName,
        reference: &Reference,
        throttled: &mut u32,
    ) -> Result<Resolved, PullError> {
        let fetched = self.manifest(repo, reference, throttled).await?;
        let index = match fetched.manifest {
            Manifest::Image(image) => {
                return Ok(Resolved {
                    digest: fetched.digest,
                    image,
                    single_platform: true,
                })
            }
            Manifest::Index(index) => index,
        };
        let chosen = select_platform(&index, &self.config.platform).map_err(|e| {
            PullError::new(
                FailureKind::PlatformMissing,
                format!("pull {repo}:{reference}"),
                e,
            )
        })?;
        let digest = descriptor_digest(chosen).map_err(|e| PullError::other("read index", e))?;
        let child = self
            .manifest(repo, &Reference::Digest(digest.clone()), throttled)
            .await?;
        match child.manifest {
            Manifest::Image(image) => Ok(Resolved {
                digest,
                image,
                single_platform: false,
            }),
            Manifest::Index(_) => Err(PullError::other(
                format!("pull {repo}@{digest}"),
                "an index points at another index",
            )),
        }
    }

    /// Fetches every layer of `image` (at most `max_concurrent_downloads` at once), in
    /// manifest order, each with the 429s it waited out.
    async fn fetch_layers(
        &self,
        repo: &RepoName,
        image: &ImageManifest,
    ) -> Result<Vec<(LayerFetch, u32)>, PullError> {
        let layers: Vec<_> = image
            .layers()
            .iter()
            .map(|d| {
                let digest =
                    descriptor_digest(d).map_err(|e| PullError::other("read manifest", e))?;
                let compression = Compression::from_media_type(d.media_type().as_ref())
                    .unwrap_or(Compression::Gzip);
                Ok((digest, d.size(), compression))
            })
            .collect::<Result<_, PullError>>()?;
        stream::iter(layers)
            .map(|(digest, size, compression)| async move {
                self.blob(repo, &digest, size, compression).await
            })
            .buffered(self.config.max_concurrent_downloads.max(1))
            .try_collect()
            .await
    }

    /// Fails as [`FailureKind::PlatformMissing`] when the image config at `path` declares a
    /// platform the nodes cannot run. A config naming no platform passes.
    async fn check_config_platform(
        &self,
        path: &std::path::Path,
        what: &str,
    ) -> Result<(), PullError> {
        let bytes = tokio::fs::read(path)
            .await
            .map_err(|e| PullError::other(format!("read config {}", path.display()), e))?;
        match Platform::of_config(&bytes) {
            Some(built) if !built.runs_on(&self.config.platform) => Err(PullError::new(
                FailureKind::PlatformMissing,
                what,
                format!(
                    "the image is a single-platform manifest for {built}; the nodes are {}",
                    self.config.platform
                ),
            )),
            _ => Ok(()),
        }
    }

    /// Fetches the manifest or index `reference` names in `repo`, as it is served (no platform
    /// is picked), verifying its digest against the reference or `Docker-Content-Digest`.
    ///
    /// # Errors
    /// [`PullError`] with its kind.
    pub async fn fetch_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<FetchedManifest, PullError> {
        self.manifest(repo, reference, &mut 0).await
    }

    async fn manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        throttled: &mut u32,
    ) -> Result<FetchedManifest, PullError> {
        let what = format!("GET manifest {repo}:{reference}");
        let req = manifest_get::request(Method::GET, repo, reference);
        let (resp, t) = self.send(&req, &what).await?;
        *throttled += t;
        let ReceivedManifest {
            bytes,
            content_type,
            digest,
        } = manifest_get::receive(resp, reference).await.map_err(|e| {
            let kind = match &e {
                ManifestGetError::Read(_) => FailureKind::Connect,
                ManifestGetError::Mismatch { .. } => FailureKind::DigestMismatch,
                ManifestGetError::TooLarge { .. } | ManifestGetError::Schema1 { .. } => {
                    FailureKind::Other
                }
            };
            PullError::new(kind, &what, stampede_oci::error_chain(&e))
        })?;
        let manifest = Manifest::parse(content_type.as_deref(), &bytes)
            .map_err(|e| PullError::other(&what, e))?;
        Ok(FetchedManifest {
            bytes,
            media_type: content_type,
            digest,
            manifest,
        })
    }

    /// Sends with 429 retries; returns the response and how many 429s were waited out.
    async fn send(
        &self,
        req: &RegistryRequest,
        what: &str,
    ) -> Result<(http::Response<hyper::body::Incoming>, u32), PullError> {
        let mut throttled = 0;
        loop {
            let resp = self
                .client
                .send(&self.config.endpoint, req)
                .await
                .map_err(|e| client_error(what, e))?;
            let status = resp.status();
            if status == StatusCode::TOO_MANY_REQUESTS {
                throttled += 1;
                if throttled >= MAX_THROTTLED_ATTEMPTS {
                    return Err(PullError::new(
                        FailureKind::Throttled,
                        what,
                        format!("still 429 after {throttled} attempts"),
                    ));
                }
                let wait = resp
                    .headers()
                    .get(RETRY_AFTER)
                    .and_then(|v| v.to_str().ok()?.trim().parse().ok())
                    .map_or(Duration::from_secs(1), Duration::from_secs)
                    .min(MAX_RETRY_AFTER);
                tokio::time::sleep(wait).await;
                continue;
            }
            if !status.is_success() {
                let kind = if status.is_server_error() {
                    FailureKind::Http5xx
                } else {
                    FailureKind::Http4xx
                };
                return Err(PullError::new(kind, what, format!("answered {status}")));
            }
            return Ok((resp, throttled));
        }
    }

    /// Fetches one blob into the content store, verifying it; returns its record and 429 count.
    async fn blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        size_bytes: u64,
        compression: Compression,
    ) -> Result<(LayerFetch, u32), PullError> {
        let path = self.config.content_dir.join(digest.hex());
        let started = Instant::now();
        let done = |first_byte, verify, cached| LayerFetch {
            digest: digest.clone(),
            size_bytes,
            compression,
            path: path.clone(),
            fetch: started.elapsed(),
            verify,
            started,
            first_byte,
            cached,
        };
        if tokio::fs::try_exists(&path).await.unwrap_or(false) {
            return Ok((done(None, Duration::ZERO, true), 0));
        }
        let what = format!("GET blob {repo}@{digest}");
        let req = RegistryRequest::pull(
            Method::GET,
            repo.as_str(),
            format!("/v2/{repo}/blobs/{digest}"),
        );
        let (resp, throttled) = self.send(&req, &what).await?;
        let failed = |e: std::io::Error| PullError::other(&what, e);
        let partial = path.with_extension("partial");
        // tokio's `File` writes on the blocking pool, one write at a time, so the async side
        // never blocks on disk; the buffer gives the file few large writes.
        let file = tokio::fs::File::create(&partial).await.map_err(failed)?;
        let mut writer = BufWriter::with_capacity(WRITE_BUFFER_BYTES, file);
        let mut verifier = Verifier::new(digest.clone());
        let mut verify = Duration::ZERO;
        let mut first_byte = None;
        let mut body = resp.into_body();
        loop {
            let frame = match tokio::time::timeout(self.config.body_idle_timeout, body.frame())
                .await
            {
                Err(_) => return Err(PullError::new(FailureKind::Timeout, &what, "body stalled")),
                Ok(None) => break,
                Ok(Some(Err(e))) => {
                    return Err(PullError::new(
                        FailureKind::Connect,
                        &what,
                        format!("body cut: {e}"),
                    ))
                }
                Ok(Some(Ok(f))) => f,
            };
            if let Ok(data) = frame.into_data() {
                first_byte.get_or_insert_with(Instant::now);
                if let Some(link) = &self.config.link {
                    link.take(data.len() as u64).await;
                }
                let t = Instant::now();
                verifier.update(&data);
                verify += t.elapsed();
                writer.write_all(&data).await.map_err(failed)?;
            }
        }
        writer.flush().await.map_err(failed)?;
        let t = Instant::now();
        let got = verifier.bytes();
        let verified = verifier.finish();
        verify += t.elapsed();
        let mismatch = match verified {
            Err(mismatch) => Some(mismatch.to_string()),
            Ok(_) if got != size_bytes => {
                Some(format!("got {got} bytes, descriptor says {size_bytes}"))
            }
            Ok(_) => None,
        };
        if let Some(detail) = mismatch {
            tokio::fs::remove_file(&partial).await.ok();
            return Err(PullError::new(FailureKind::DigestMismatch, &what, detail));
        }
        tokio::fs::rename(&partial, &path).await.map_err(failed)?;
        Ok((done(first_byte, verify, false), throttled))
    }
}

fn client_error(what: &str, e: ClientError) -> PullError {
    let kind = match &e {
        ClientError::Timeout { .. } => FailureKind::Timeout,
        ClientError::Transport { .. } => FailureKind::Connect,
        ClientError::TokenStatus { status, .. } if status.is_server_error() => FailureKind::Http5xx,
        ClientError::TokenStatus { .. } => FailureKind::Http4xx,
        _ => FailureKind::Other,
    };
    PullError::new(kind, what, stampede_oci::error_chain(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_refused_connection_says_so() {
        // A port nothing listens on: bind, take the port, close.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let endpoint = Endpoint::parse(&format!("http://127.0.0.1:{port}")).unwrap();
        let client = RegistryClient::new(stampede_oci::ClientConfig::default()).unwrap();
        let e = client
            .send(
                &endpoint,
                &stampede_oci::RegistryRequest::pull(http::Method::GET, "x", "/v2/".into()),
            )
            .await
            .unwrap_err();
        let p = client_error("GET /v2/", e);
        assert_eq!(p.kind, FailureKind::Connect);
        assert!(
            p.detail.to_lowercase().contains("connection refused"),
            "{}",
            p.detail
        );
        assert_eq!(p.detail.matches(&format!("127.0.0.1:{port}")).count(), 1);
    }
}
