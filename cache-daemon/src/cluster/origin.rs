//! The stripes this node fetches from the registry for the cluster: one flight per (digest,
//! stripe), so however many peers (and this node's own blob fill) ask for a stripe at once, the
//! registry gets one ranged `GET` for it. The stripe's bytes land in an unlinked scratch file
//! in the store's `tmp/` that readers follow as it grows (the same [`Flight`] machinery as blob
//! fills: progress, in-memory window, a `Drop` guard that fails readers if the task dies).
//! A finished stripe is kept for [`KEEP_FOR`] (at most [`KEEP_BYTES`] in all), so peers that
//! arrive late or resume after a failure do not cost another registry fetch.
//!
//! An upstream that ignores `Range` answers stripe 0 with `200` and the whole blob: the flight
//! keeps all of it and is marked `whole`, so askers take the whole blob from this one owner
//! instead of asking for further stripes (one registry copy, not one per stripe). A `200` for a
//! later stripe is refused at once (only its first bytes were read), since taking it would
//! cost a whole copy per stripe.
//!
//! Nothing here is verified: a stripe cannot be checked alone. The node that assembles the
//! blob hashes it whole and commits only on a match.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Response, StatusCode};
use hyper::body::Incoming;

use stampede_oci::{Digest, Endpoint, RepoName};

use crate::fill;
use crate::fill::writer::Next;
use crate::flight::{Claim, FillFailure, FillGuard, Flight, Flights, Started};
use crate::metrics::Metrics;
use crate::store::BlobStore;
use crate::upstream::{content_range, retry_after, Answer, Upstreams};

use super::stripe::Stripe;

/// How long a finished stripe stays readable for late peers.
pub const KEEP_FOR: Duration = Duration::from_secs(120);
/// Most bytes of finished stripes kept at once; the oldest go first.
pub const KEEP_BYTES: u64 = 1 << 30;

/// What a stripe flight holds, known once the registry answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StripeInfo {
    /// Blob offset of the scratch file's first byte.
    pub base_bytes: u64,
    /// Bytes the file will hold.
    pub len_bytes: u64,
    /// The blob's length.
    pub total_bytes: u64,
    /// The registry ignored `Range`: the file holds the whole blob.
    pub whole: bool,
}

/// A stripe flight to read: running or finished.
#[derive(Debug, Clone)]
pub struct Held {
    /// The flight (progress, window).
    pub flight: Arc<Flight>,
    /// Its scratch file.
    pub file: Arc<File>,
    /// What it holds.
    pub info: StripeInfo,
}

type Key = (Digest, u32);

/// This node's stripe fills. std `Mutex`es: held to look up or insert, never across `.await`.
#[derive(Debug)]
pub struct Origin {
    flights: Arc<Flights>,
    info: Mutex<HashMap<Key, StripeInfo>>,
    kept: Mutex<VecDeque<(Key, Held, Instant)>>,
    store: Arc<BlobStore>,
    upstreams: Arc<Upstreams>,
    metrics: Arc<Metrics>,
}

impl Origin {
    /// Stripe fills writing scratch files into `store`'s `tmp/`, fetching through `upstreams`.
    pub fn new(store: Arc<BlobStore>, upstreams: Arc<Upstreams>, metrics: Arc<Metrics>) -> Self {
        Self {
            flights: Arc::new(Flights::default()),
            info: Mutex::new(HashMap::new()),
            kept: Mutex::new(VecDeque::new()),
            store,
            upstreams,
            metrics,
        }
    }

    /// Stripe `index` of `digest`: a kept one, the running fill, or a new fill (the registry
    /// asked once, by a spawned task that outlives the caller). Returns once the registry has
    /// answered.
    ///
    /// # Errors
    /// The [`FillFailure`] when the registry refused or could not be reached.
    pub async fn open(
        self: &Arc<Self>,
        digest: &Digest,
        index: u32,
        endpoint: &Endpoint,
        repo: &RepoName,
    ) -> Result<Held, FillFailure> {
        if let Some(held) = self.kept(digest, index) {
            return Ok(held);
        }
        let flight = match self.flights.claim_stripe(digest, index) {
            Claim::Leader(guard) => {
                let flight = guard.flight().clone();
                let job = (guard, index, endpoint.clone(), repo.clone());
                tokio::spawn(self.clone().fill(job));
                flight
            }
            Claim::Follower(f) => f,
            Claim::Cached => unreachable!("stripes are never cached"),
        };
        let started = flight.wait_started().await?;
        let info = self
            .info
            .lock()
            .expect("origin mutex poisoned")
            .get(&(digest.clone(), index))
            .copied()
            .ok_or(FillFailure::Abandoned)?;
        Ok(Held {
            file: started.file.clone(),
            flight,
            info,
        })
    }

    /// Stripe `index` of `digest` if this node holds it (kept) or is fetching it, without
    /// starting a fetch.
    pub fn peek(&self, digest: &Digest, index: u32) -> Option<Held> {
        if let Some(held) = self.kept(digest, index) {
            return Some(held);
        }
        let flight = self.flights.get_stripe(digest, index)?;
        let file = flight.started()?.file.clone();
        let info = *self
            .info
            .lock()
            .expect("origin mutex poisoned")
            .get(&(digest.clone(), index))?;
        Some(Held { flight, file, info })
    }

    /// A finished stripe still kept (or a kept whole blob from a registry that ignores ranges).
    fn kept(&self, digest: &Digest, index: u32) -> Option<Held> {
        let now = Instant::now();
        let mut kept = self.kept.lock().expect("origin mutex poisoned");
        while kept.front().is_some_and(|(_, _, until)| *until <= now) {
            if let Some((key, _, _)) = kept.pop_front() {
                self.info
                    .lock()
                    .expect("origin mutex poisoned")
                    .remove(&key);
            }
        }
        kept.iter()
            .find(|((d, i), held, _)| d == digest && (*i == index || held.info.whole))
            .map(|(_, held, _)| held.clone())
    }

    fn keep(&self, key: Key, held: Held) {
        let mut kept = self.kept.lock().expect("origin mutex poisoned");
        kept.push_back((key, held, Instant::now() + KEEP_FOR));
        let mut total: u64 = kept.iter().map(|(_, h, _)| h.info.len_bytes).sum();
        while total > KEEP_BYTES && kept.len() > 1 {
            if let Some((key, old, _)) = kept.pop_front() {
                total -= old.info.len_bytes;
                self.info
                    .lock()
                    .expect("origin mutex poisoned")
                    .remove(&key);
            }
        }
    }

    async fn fill(self: Arc<Self>, job: (FillGuard, u32, Endpoint, RepoName)) {
        let (guard, index, endpoint, repo) = job;
        let digest = guard.flight().digest().clone();
        let key = (digest.clone(), index);
        match self.fetch(&guard, index, &endpoint, &repo).await {
            Ok(held) => {
                tracing::debug!(%digest, stripe = index, bytes = held.info.len_bytes, whole = held.info.whole, "stripe fetched for the cluster");
                // Kept before the flight leaves the map, so no request sees neither.
                self.keep(key, held);
                guard.done();
            }
            Err(failure) => {
                tracing::warn!(%digest, stripe = index, upstream = %endpoint.base_url(), %failure, "stripe fetch failed");
                self.info
                    .lock()
                    .expect("origin mutex poisoned")
                    .remove(&key);
                guard.fail(failure);
            }
        }
    }

    async fn fetch(
        &self,
        guard: &FillGuard,
        index: u32,
        endpoint: &Endpoint,
        repo: &RepoName,
    ) -> Result<Held, FillFailure> {
        let digest = guard.flight().digest().clone();
        let stripe = Stripe::nth(index, None).ok_or(FillFailure::Local)?;
        let answer = self
            .upstreams
            .blob_range(
                endpoint,
                repo,
                &digest,
                stripe.first_bytes..=stripe.end_bytes - 1,
            )
            .await
            .map_err(|e| fill::request_failure(&digest, e))?;
        let info = stripe_info(&answer.response, stripe, &digest, endpoint)?;
        let file = self.scratch_file(&digest).await?;
        self.info
            .lock()
            .expect("origin mutex poisoned")
            .insert((digest.clone(), index), info);
        guard.start(Started {
            file: file.clone(),
            total_bytes: Some(info.len_bytes),
        });
        let written = self.write(answer, &file, guard, info.len_bytes).await?;
        if written != info.len_bytes {
            return Err(FillFailure::Truncated);
        }
        Ok(Held {
            flight: guard.flight().clone(),
            file,
            info,
        })
    }

    /// An unlinked scratch file in the store's `tmp/`: readers hold the open file, and the
    /// disk space goes with the last of them.
    async fn scratch_file(&self, digest: &Digest) -> Result<Arc<File>, FillFailure> {
        let store = self.store.clone();
        let d = digest.clone();
        let file = tokio::task::spawn_blocking(move || {
            let temp = store.create_temp(&d)?;
            std::fs::remove_file(&temp.path)?;
            Ok::<_, std::io::Error>(temp.file)
        })
        .await
        .map_err(|_| FillFailure::Local)?
        .map_err(|e| {
            tracing::error!(%digest, error = %e, "cannot create a stripe scratch file");
            FillFailure::Local
        })?;
        Ok(file)
    }

    /// Writes the registry's `answer` (at most `len_bytes`) to a stripe's scratch `file`
    /// through the fill's writer, which tells the stripe's readers. Returns the bytes written.
    async fn write(
        &self,
        answer: Answer,
        file: &Arc<File>,
        guard: &FillGuard,
        len_bytes: u64,
    ) -> Result<u64, FillFailure> {
        let digest = guard.flight().digest();
        let (mut feeder, writer) = fill::writer::spawn(file.clone(), guard.progress_writer(), None);
        feeder.expect_end(Some(len_bytes));
        let mut body = answer.response.into_body();
        let idle = self.upstreams.body_idle_timeout;
        let pumped = loop {
            let data = match feeder.next_frame(&mut body, idle).await {
                Next::Data(data) => data,
                Next::Idle => break Err(FillFailure::Timeout),
                Next::End => break Ok(()),
                Next::Broken(_) => break Err(FillFailure::Truncated),
                Next::Stopped => break Err(FillFailure::Local),
            };
            self.metrics.upstream_bytes(data.len() as u64);
            let room = len_bytes - feeder.received_bytes();
            if data.len() as u64 > room || !feeder.push(data).await {
                break Err(FillFailure::Local);
            }
        };
        feeder.finish().await;
        drop(answer.slot);
        let written = writer.await.map_err(|_| FillFailure::Local)?;
        let written = written.result.map_err(|e| {
            tracing::error!(%digest, error = %e, "write to a stripe scratch file failed");
            FillFailure::Local
        })?;
        pumped.map(|()| written)
    }
}

/// What the registry's answer to a stripe request holds: the stripe (`206` from its first
/// byte), or, for stripe 0 only, the whole blob (`200`: the registry ignores `Range`).
fn stripe_info(
    resp: &Response<Incoming>,
    stripe: Stripe,
    digest: &Digest,
    endpoint: &Endpoint,
) -> Result<StripeInfo, FillFailure> {
    match resp.status() {
        StatusCode::PARTIAL_CONTENT => {
            let range = content_range(resp)
                .filter(|r| r.first_bytes == stripe.first_bytes)
                .ok_or(FillFailure::Truncated)?;
            let total_bytes = range.complete_bytes.ok_or(FillFailure::Truncated)?;
            Ok(StripeInfo {
                base_bytes: stripe.first_bytes,
                len_bytes: range.last_bytes - range.first_bytes + 1,
                total_bytes,
                whole: false,
            })
        }
        StatusCode::OK if stripe.index == 0 => {
            let total_bytes = fill::content_length(resp).ok_or(FillFailure::Truncated)?;
            tracing::info!(%digest, upstream = %endpoint.base_url(), "upstream ignores Range: this node serves the whole blob to the cluster");
            Ok(StripeInfo {
                base_bytes: 0,
                len_bytes: total_bytes,
                total_bytes,
                whole: true,
            })
        }
        StatusCode::OK => {
            tracing::warn!(%digest, stripe = stripe.index, upstream = %endpoint.base_url(), "upstream ignored Range for a later stripe; refused rather than fetching the whole blob again");
            Err(FillFailure::Status {
                status: StatusCode::RANGE_NOT_SATISFIABLE.as_u16(),
                retry_after: None,
            })
        }
        status => Err(FillFailure::Status {
            status: status.as_u16(),
            retry_after: retry_after(resp),
        }),
    }
}
