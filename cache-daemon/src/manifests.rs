//! Manifests and tags. A manifest by digest is content-addressed: fetched once, verified against
//! its digest, kept in the blob store forever (until evicted) with its media type. A tag is
//! resolved upstream and its digest used for a short TTL; concurrent resolutions of the same tag
//! (or fetches of the same manifest digest) share one upstream request, so a burst of tag HEADs
//! costs one upstream request per TTL. A tag whose last manifest is still in the store is
//! revalidated with a `HEAD` (its `Docker-Content-Digest` compared with the digest held): a
//! registry such as Docker Hub counts manifest GETs against the node's pull quota and HEADs not,
//! so the cache must not spend that quota faster than the node would alone. The manifest is
//! fetched with a `GET` only when the digest changed or the upstream sent none. When the
//! upstream is unreachable, throttling or failing, a tag whose manifest is in the store is served
//! stale, with a warning.
//!
//! Manifests are small (at most [`MAX_MANIFEST_BYTES`](stampede_oci::manifest::MAX_MANIFEST_BYTES)), so unlike blobs they are held in memory
//! while being answered. This module never streams blobs; `fill.rs` does.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::{BoxFuture, FutureExt, Shared};
use http::{Method, StatusCode};

use stampede_oci::manifest::{is_manifest_type, OCI_INDEX, OCI_MANIFEST};
use stampede_oci::manifest_get::{self, ManifestGetError, ReceivedManifest};
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
    /// The tag's upstream `HEAD` named the manifest the store holds: served from the store.
    revalidated: bool,
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
    /// What each tag (`registry/repo:tag`) named when the daemon started, from the store's
    /// records: a tag not yet resolved since then is revalidated against it (a `HEAD`), without
    /// scanning the store on the request path.
    tags_at_start: HashMap<String, Digest>,
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
    /// A manifest cache over `store`, resolving tags for `tag_ttl`; reads the store's tag records
    /// once (in memory, no I/O).
    pub fn new(
        store: Arc<BlobStore>,
        upstreams: Arc<Upstreams>,
        metrics: Arc<Metrics>,
        tag_ttl: Duration,
    ) -> Self {
        Self {
            tags_at_start: store.tags_held(),
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
        if answer.outcome != Outcome::Hit {
            // Fetched now (a hit recorded it already): the repository it came from, as for
            // blobs in `fill.rs`.
            self.store.lookup(&answer.digest, Some(label));
        }
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
                if let Some(answer) = self.stored(digest, Some(label)).await? {
                    return Ok(answer);
                }
                let (fetched, outcome) = self.fetch(endpoint, repo, reference, None).await;
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
                        if let Some(answer) = self.stored(&entry.digest, Some(label)).await? {
                            return Ok(answer);
                        }
                    }
                }
                // The digest this tag last named (in memory, else as the store recorded it before
                // the start): revalidated with a HEAD while the store holds it.
                let last = known
                    .as_ref()
                    .map(|e| e.digest.clone())
                    .or_else(|| self.tags_at_start.get(&format!("{label}:{tag}")).cloned())
                    .filter(|d| self.store.contains(d));
                let (fetched, outcome) = self.fetch(endpoint, repo, reference, last).await;
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
                            Some(digest) => match self.stored(&digest, Some(label)).await? {
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
        repo_label: Option<&str>,
    ) -> Result<Option<ManifestAnswer>, ErrorReply> {
        let Some(open) = self
            .store
            .open_blob(digest, repo_label)
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

    /// One upstream fetch per key at a time; every caller gets the same result. `held`: the
    /// digest a tag last named, whose manifest the store holds (revalidated with a `HEAD`).
    async fn fetch(
        self: &Arc<Self>,
        endpoint: &Endpoint,
        repo: &RepoName,
        reference: &Reference,
        held: Option<Digest>,
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
                        let result = this.fetch_upstream(&endpoint, &repo, &reference, held.as_ref()).await.map_err(|e| {
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

    /// A tag's `HEAD` upstream: the stored manifest when the upstream's `Docker-Content-Digest`
    /// is `held`; `None` when the digest changed, is absent, or the manifest left the store (the
    /// caller then GETs it).
    ///
    /// # Errors
    /// The upstream failed or does not know the tag, as for a `GET`.
    async fn revalidate(
        &self,
        endpoint: &Endpoint,
        repo: &RepoName,
        reference: &Reference,
        held: &Digest,
    ) -> Result<Option<Fetched>, Error> {
        let answer = self
            .upstreams
            .manifest(endpoint, repo, reference, Method::HEAD)
            .await?;
        let resp = answer.response;
        if resp.status() != StatusCode::OK {
            return Err(status_error(
                endpoint,
                resp.status(),
                retry_after(&resp),
                Error::ManifestUnknown(reference.to_string()),
            ));
        }
        let named = manifest_get::declared_digest(resp.headers());
        if named.as_ref() != Some(held) {
            tracing::debug!(%repo, %reference, %held, named = named.as_ref().map(ToString::to_string), "tag revalidation: digest changed or not given; fetching the manifest");
            return Ok(None);
        }
        // A stored copy that cannot be read is fetched again, like one that was evicted.
        let stored = self.stored(held, None).await.unwrap_or_else(|reply| {
            tracing::warn!(digest = %held, error = reply.message, "cannot read the stored manifest of a revalidated tag; fetching it");
            None
        });
        Ok(stored.map(|a| Fetched {
            digest: a.digest,
            media_type: a.media_type,
            bytes: a.bytes,
            revalidated: true,
        }))
    }

    async fn fetch_upstream(
        &self,
        endpoint: &Endpoint,
        repo: &RepoName,
        reference: &Reference,
        held: Option<&Digest>,
    ) -> Result<Fetched, Error> {
        if let (Reference::Tag(_), Some(held)) = (reference, held) {
            if let Some(fetched) = self.revalidate(endpoint, repo, reference, held).await? {
                return Ok(fetched);
            }
        }
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
        let received = manifest_get::receive(resp, reference)
            .await
            .map_err(|e| self.refused(endpoint, repo, reference, e))?;
        let media_type = received
            .declared_type()
            .map_or_else(|| guess_media_type(&received.bytes), str::to_owned);
        let ReceivedManifest { digest, bytes, .. } = received;
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
            revalidated: false,
        })
    }

    /// The daemon's error for a manifest answer [`manifest_get::receive`] refused.
    fn refused(
        &self,
        endpoint: &Endpoint,
        repo: &RepoName,
        reference: &Reference,
        e: ManifestGetError,
    ) -> Error {
        match e {
            ManifestGetError::TooLarge { limit_bytes } => Error::ManifestTooLarge { limit_bytes },
            ManifestGetError::Read(source) => Error::UpstreamUnreachable {
                upstream: endpoint.base_url(),
                source,
            },
            ManifestGetError::Schema1 { media_type } => {
                tracing::info!(%repo, %reference, upstream = %endpoint.base_url(), "manifest is Docker schema 1; refused as unsupported");
                Error::ManifestSchema1 {
                    repo: format!("{}/{repo}", endpoint.authority()),
                    reference: reference.to_string(),
                    media_type,
                }
            }
            ManifestGetError::Mismatch { expected, actual } => {
                self.metrics.manifest_mismatch();
                tracing::warn!(%repo, %reference, upstream = %endpoint.base_url(), %expected, %actual, "upstream manifest does not match its digest");
                Error::ManifestMismatch {
                    upstream: endpoint.base_url(),
                }
            }
        }
    }
}

impl Fetched {
    fn answer(self, outcome: Outcome) -> ManifestAnswer {
        ManifestAnswer {
            digest: self.digest,
            media_type: self.media_type,
            bytes: self.bytes,
            outcome: if self.revalidated {
                Outcome::Hit
            } else {
                outcome
            },
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
