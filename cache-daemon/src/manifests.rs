//! Manifests and tags. A manifest by digest is content-addressed: fetched once, verified against
//! its digest, kept in the blob store forever (until evicted) with its media type. A tag is
//! resolved upstream and its digest used for a short TTL; concurrent resolutions of the same tag
//! (or fetches of the same manifest digest) share one upstream request, so a burst of tag HEADs
//! costs one upstream GET per TTL. When the upstream is unreachable, throttling or failing, a tag
//! whose manifest is in the store is served stale, with a warning.
//!
//! Manifests are small (at most [`MAX_MANIFEST_BYTES`]), so unlike blobs they are held in memory
//! while being answered. This module never streams blobs; `fill.rs` does.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::{BoxFuture, FutureExt, Shared};
use http::header::CONTENT_TYPE;
use http::{Method, StatusCode};

use stampede_oci::client::{read_body_limited, BodyError};
use stampede_oci::manifest::{
    essence, is_manifest_type, MAX_MANIFEST_BYTES, OCI_INDEX, OCI_MANIFEST,
};
use stampede_oci::{Digest, Endpoint, Manifest, Reference, RepoName};

use crate::error::{Error, ErrorReply, Fault};
use crate::metrics::{Metrics, Outcome};
use crate::store::{page_cache, BlobMeta, BlobStore};
use crate::upstream::{retry_after, status_error, Upstreams};

/// A manifest ready to serve.
#[derive(Debug, Clone)]
pub struct ManifestAnswer {
    /// Its digest.
    pub digest: Digest,
    /// Its media type (`Content-Type`).
    pub media_type: String,
    /// Its bytes, exactly as the upstream sent them.
    pub bytes: Bytes,
    /// How it was obtained, for metrics.
    pub outcome: Outcome,
}

type TagKey = (String, RepoName, String);
type FetchKey = (String, RepoName, String);
type FetchResult = Result<Fetched, ErrorReply>;

#[derive(Debug, Clone)]
struct Fetched {
    digest: Digest,
    media_type: String,
    bytes: Bytes,
}

#[derive(Debug, Clone)]
struct TagEntry {
    digest: Digest,
    resolved_at: Instant,
}

/// The manifest side of the cache.
pub struct Manifests {
    store: Arc<BlobStore>,
    upstreams: Arc<Upstreams>,
    metrics: Arc<Metrics>,
    tag_ttl: Duration,
    /// std `Mutex`es: held only to read or update a map entry, never across `.await`.
    tags: Mutex<HashMap<TagKey, TagEntry>>,
    in_flight: Mutex<HashMap<FetchKey, Shared<BoxFuture<'static, FetchResult>>>>,
}

impl std::fmt::Debug for Manifests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manifests")
            .field("tag_ttl", &self.tag_ttl)
            .finish_non_exhaustive()
    }
}

impl Manifests {
    /// A manifest cache over `store`, resolving tags for `tag_ttl`.
    pub fn new(
        store: Arc<BlobStore>,
        upstreams: Arc<Upstreams>,
        metrics: Arc<Metrics>,
        tag_ttl: Duration,
    ) -> Self {
        Self {
            store,
            upstreams,
            metrics,
            tag_ttl,
            tags: Mutex::new(HashMap::new()),
            in_flight: Mutex::new(HashMap::new()),
        }
    }

    /// The manifest `reference` of `repo` at `endpoint`.
    ///
    /// # Errors
    /// What the client should be told: unknown manifest, upstream failure with no stale copy.
    pub async fn get(
        self: &Arc<Self>,
        endpoint: &Endpoint,
        repo: &RepoName,
        reference: &Reference,
        label: &str,
    ) -> Result<ManifestAnswer, ErrorReply> {
        let answer = self.get_inner(endpoint, repo, reference, label).await?;
        if let Reference::Tag(tag) = reference {
            self.store
                .note_tag(&answer.digest, &format!("{label}:{tag}"));
        }
        Ok(answer)
    }

    async fn get_inner(
        self: &Arc<Self>,
        endpoint: &Endpoint,
        repo: &RepoName,
        reference: &Reference,
        label: &str,
    ) -> Result<ManifestAnswer, ErrorReply> {
        match reference {
            Reference::Digest(digest) => {
                if let Some(answer) = self.stored(digest, label).await? {
                    return Ok(answer);
                }
                let (fetched, outcome) = self.fetch(endpoint, repo, reference).await;
                fetched.map(|f| f.answer(outcome))
            }
            Reference::Tag(tag) => {
                let key = (endpoint.base_url(), repo.clone(), tag.clone());
                let known = self
                    .tags
                    .lock()
                    .expect("tags mutex poisoned")
                    .get(&key)
                    .cloned();
                if let Some(entry) = &known {
                    if entry.resolved_at.elapsed() < self.tag_ttl {
                        if let Some(answer) = self.stored(&entry.digest, label).await? {
                            return Ok(answer);
                        }
                    }
                }
                let (fetched, outcome) = self.fetch(endpoint, repo, reference).await;
                match fetched {
                    Ok(f) => Ok(f.answer(outcome)),
                    Err(reply)
                        if reply.fault == Fault::Upstream
                            && reply.status != StatusCode::NOT_FOUND =>
                    {
                        // The last digest this tag resolved to: in memory, else as the store
                        // recorded it (which survives restarts).
                        let last = known
                            .map(|e| e.digest)
                            .or_else(|| self.store.find_tag(&format!("{label}:{tag}")));
                        match last {
                            Some(digest) => match self.stored(&digest, label).await? {
                                Some(answer) => {
                                    self.metrics.stale_serve();
                                    tracing::warn!(%repo, tag, %digest, upstream = %endpoint.base_url(), error = reply.message, "upstream failed; serving the last known manifest for this tag (stale)");
                                    Ok(answer)
                                }
                                None => Err(reply),
                            },
                            None => Err(reply),
                        }
                    }
                    Err(reply) => Err(reply),
                }
            }
        }
    }

    async fn stored(
        &self,
        digest: &Digest,
        repo_label: &str,
    ) -> Result<Option<ManifestAnswer>, ErrorReply> {
        let Some(open) = self
            .store
            .open_blob(digest, Some(repo_label))
            .await
            .map_err(|e| Error::internal("open manifest", e).reply())?
        else {
            return Ok(None);
        };
        let size = open.size_bytes;
        let file = open.file.clone();
        let len = usize::try_from(size).unwrap_or(0);
        let bytes = page_cache::read_at(&file, 0, len, true)
            .await
            .map_err(|e| Error::internal("read manifest", e).reply())?;
        // verify_on_read: a manifest is read whole, so it is checked before anything is sent;
        // a corrupted one is quarantined and fetched again, as a miss.
        if self.store.verify_on_read() && Digest::of(&bytes) != *digest {
            self.metrics.read_mismatch();
            let (store, d) = (self.store.clone(), digest.clone());
            tokio::task::spawn_blocking(move || store.quarantine(&d))
                .await
                .ok();
            return Ok(None);
        }
        Ok(Some(ManifestAnswer {
            digest: digest.clone(),
            media_type: open.media_type.unwrap_or_else(|| guess_media_type(&bytes)),
            bytes,
            outcome: Outcome::Hit,
        }))
    }

    /// One upstream fetch per key at a time; every caller gets the same result.
    async fn fetch(
        self: &Arc<Self>,
        endpoint: &Endpoint,
        repo: &RepoName,
        reference: &Reference,
    ) -> (FetchResult, Outcome) {
        let key = (endpoint.base_url(), repo.clone(), reference.to_string());
        let (fut, outcome) = {
            let mut in_flight = self
                .in_flight
                .lock()
                .expect("manifest flights mutex poisoned");
            match in_flight.get(&key) {
                Some(f) => (f.clone(), Outcome::Coalesced),
                None => {
                    let this = self.clone();
                    let (endpoint, repo, reference, key2) = (
                        endpoint.clone(),
                        repo.clone(),
                        reference.clone(),
                        key.clone(),
                    );
                    let fut = async move {
                        let result = this.fetch_upstream(&endpoint, &repo, &reference).await.map_err(|e| {
                            if e.fault() != Fault::Downstream {
                                tracing::warn!(%repo, %reference, upstream = %endpoint.base_url(), error = %stampede_oci::error_chain(&e), "manifest fetch failed");
                            }
                            e.reply()
                        });
                        if let (Ok(f), Reference::Tag(tag)) = (&result, &reference) {
                            this.tags.lock().expect("tags mutex poisoned").insert(
                                (endpoint.base_url(), repo.clone(), tag.clone()),
                                TagEntry {
                                    digest: f.digest.clone(),
                                    resolved_at: Instant::now(),
                                },
                            );
                        }
                        this.in_flight.lock().expect("manifest flights mutex poisoned").remove(&key2);
                        result
                    }
                    .boxed()
                    .shared();
                    in_flight.insert(key, fut.clone());
                    (fut, Outcome::Miss)
                }
            }
        };
        (fut.await, outcome)
    }

    async fn fetch_upstream(
        &self,
        endpoint: &Endpoint,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<Fetched, Error> {
        let resp = self
            .upstreams
            .manifest(endpoint, repo, reference, Method::GET)
            .await;
        // The slot is held until the (small) body is read.
        let answer = resp?;
        let (resp, _slot) = (answer.response, answer.slot);
        if resp.status() != StatusCode::OK {
            return Err(status_error(
                endpoint,
                resp.status(),
                retry_after(&resp),
                Error::ManifestUnknown(reference.to_string()),
            ));
        }
        let declared_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(essence)
            .filter(|t| is_manifest_type(t))
            .map(str::to_owned);
        let declared_digest = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| Digest::parse(v).ok());
        let bytes = read_body_limited(resp.into_body(), MAX_MANIFEST_BYTES)
            .await
            .map_err(|e| match e {
                BodyError::TooLarge { limit_bytes } => Error::ManifestTooLarge { limit_bytes },
                BodyError::Read(source) => Error::UpstreamUnreachable {
                    upstream: endpoint.base_url(),
                    source,
                },
            })?;
        let digest = Digest::of(&bytes);
        let expected = match reference {
            Reference::Digest(d) => Some(d),
            Reference::Tag(_) => declared_digest.as_ref(),
        };
        if expected.is_some_and(|e| *e != digest) {
            self.metrics.manifest_mismatch();
            return Err(Error::ManifestMismatch {
                upstream: endpoint.base_url(),
            });
        }
        let media_type = declared_type.unwrap_or_else(|| guess_media_type(&bytes));
        let store = self.store.clone();
        let (d, b, meta) = (
            digest.clone(),
            bytes.clone(),
            BlobMeta {
                media_type: Some(media_type.clone()),
                ..BlobMeta::default()
            },
        );
        let stored = tokio::task::spawn_blocking(move || store.put_small(&d, &b, &meta)).await;
        match stored {
            Ok(Ok(())) => {}
            // The bytes in hand are verified and can still be served; the next request refetches.
            Ok(Err(e)) => tracing::error!(%digest, error = %e, "could not store manifest"),
            Err(e) => tracing::error!(%digest, error = %e, "manifest store task failed"),
        }
        Ok(Fetched {
            digest,
            media_type,
            bytes,
        })
    }
}

impl Fetched {
    fn answer(self, outcome: Outcome) -> ManifestAnswer {
        ManifestAnswer {
            digest: self.digest,
            media_type: self.media_type,
            bytes: self.bytes,
            outcome,
        }
    }
}

/// The media type a manifest declares in its own `mediaType`, or the OCI type its shape says.
/// Used on upstream bytes whose `Content-Type` names no manifest type; public for the fuzz
/// targets.
pub fn guess_media_type(bytes: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Declared {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
    }
    if let Some(t) = serde_json::from_slice::<Declared>(bytes)
        .ok()
        .and_then(|d| d.media_type)
        .filter(|t| is_manifest_type(t))
    {
        return t;
    }
    match Manifest::parse(None, bytes) {
        Ok(Manifest::Index(_)) => OCI_INDEX.to_owned(),
        _ => OCI_MANIFEST.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_type_from_document() {
        assert_eq!(
            guess_media_type(br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json"}"#),
            "application/vnd.docker.distribution.manifest.v2+json"
        );
        assert_eq!(
            guess_media_type(br#"{"schemaVersion":2,"manifests":[]}"#),
            OCI_INDEX
        );
        assert_eq!(guess_media_type(b"{}"), OCI_MANIFEST);
    }
}
