//! The asking side of the miss path: a blob fill in cluster mode takes the blob stripe by
//! stripe, in order, from each stripe's owner (rendezvous over the live members), and hands
//! every frame to the fill's writer and hasher at once (cut-through: its own readers, and any
//! peer it passes the stripe on to, see the bytes as they land). While one stripe streams, the
//! next stripe's request is already open, so its owner is fetching it from the registry before
//! it is needed.
//!
//! When a source fails (no connection within the connect timeout, no byte within the idle
//! timeout, a broken or unfitting answer), the fill goes on from the byte it has: the next
//! candidate in the stripe's ranking, up to [`CANDIDATES`] of them, and then the registry with
//! `Range` for the rest of that stripe; further stripes go back to their owners. A registry that
//! ignores that range hands the rest of the blob to the fill's own resume logic (`fill.rs`),
//! which compares what it already has. The fill hashes every byte in order and commits only on
//! a digest match; on a mismatch, every peer that sent bytes is marked bad
//! ([`super::Cluster::mismatch`]) and the digest is fetched from the registry directly for a
//! while.

use std::sync::Arc;

use http::StatusCode;
use http_body_util::BodyExt;
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::JoinHandle;

use stampede_oci::{Digest, Endpoint, RepoName};

use crate::body::{self, Body, FlightFile};
use crate::error::PeerFailure;
use crate::fill::writer::Next;
use crate::fill::Transfer;
use crate::flight::FillFailure;
use crate::metrics::FillSource;
use crate::upstream::content_range;

use super::client::PieceRequest;
use super::membership::Member;
use super::rendezvous;
use super::stripe::Stripe;
use super::Cluster;

/// Members asked for one stripe, in ranking order, before the registry.
pub const CANDIDATES: usize = 2;

/// Where a piece's bytes come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum From {
    /// This node's own stripe fill.
    Local,
    /// A member's peer port.
    Peer(Member),
    /// The registry, asked by this fill.
    Registry,
}

/// An open stream of blob bytes `[first_bytes, end_bytes)`.
pub struct Piece {
    body: Body,
    first_bytes: u64,
    end_bytes: u64,
    total_bytes: u64,
    whole: bool,
    from: From,
    /// The registry slot, for a piece from the registry.
    _slot: Option<OwnedSemaphorePermit>,
}

impl std::fmt::Debug for Piece {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Piece")
            .field("first_bytes", &self.first_bytes)
            .field("end_bytes", &self.end_bytes)
            .field("from", &self.from)
            .finish_non_exhaustive()
    }
}

/// Which blob, and where its owners fetch it from.
#[derive(Debug, Clone)]
struct Want {
    cluster: Arc<Cluster>,
    digest: Digest,
    endpoint: Endpoint,
    ns: Option<String>,
    repo: RepoName,
}

/// How a cluster feed ended.
#[derive(Debug, PartialEq, Eq)]
pub enum FeedEnd {
    /// Every byte was handed on (or the writer stopped; it says why).
    Complete,
    /// The registry must supply the rest from the fill's offset (it ignored a stripe range).
    Registry,
}

/// A blob fill's bytes from the cluster. Made by [`Cluster::open`] once the first stripe's
/// answer said how long the blob is.
#[derive(Debug)]
pub struct Feed {
    want: Want,
    total_bytes: u64,
    whole: bool,
    first: Option<Piece>,
    /// Members whose bytes went into this fill.
    contributors: Vec<Member>,
    /// (stripe, member) pairs that failed in this fill, not asked again for that stripe.
    tried: Vec<(u32, Member)>,
    /// Which kinds of source supplied bytes: local, peer, registry.
    took: [bool; 3],
}

impl Cluster {
    /// A cluster feed for `digest`, or `None` when the fill should go to the registry itself:
    /// no other live member, a digest that recently failed with peer bytes, an upstream peers
    /// cannot name, or no candidate for the first stripe answered.
    pub async fn open(
        self: &Arc<Self>,
        digest: &Digest,
        endpoint: &Endpoint,
        repo: &RepoName,
    ) -> Option<Feed> {
        if self.membership.live().len() < 2 || self.direct_only(digest) {
            return None;
        }
        let ns = self.upstreams.ns_of(endpoint)?;
        let want = Want {
            cluster: self.clone(),
            digest: digest.clone(),
            endpoint: endpoint.clone(),
            ns,
            repo: repo.clone(),
        };
        let mut tried = Vec::new();
        let first = want.ask_members(0, None, false, &mut tried).await?;
        Some(Feed {
            want,
            total_bytes: first.total_bytes,
            whole: first.whole,
            first: Some(first),
            contributors: Vec::new(),
            tried,
            took: [false; 3],
        })
    }
}

impl Feed {
    /// The blob's length.
    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// The kinds of source that supplied bytes, in the order local, peer, registry.
    pub fn sources(&self) -> Vec<&'static str> {
        ["local", "peer", "registry"]
            .into_iter()
            .zip(self.took)
            .filter_map(|(name, took)| took.then_some(name))
            .collect()
    }

    /// Members whose bytes went into the fill so far.
    pub fn contributors(&self) -> &[Member] {
        &self.contributors
    }

    /// Hands the blob's bytes to `sink` in order, from its current offset to the end.
    ///
    /// # Errors
    /// Never yet: a source that fails is replaced by the next; kept as a `Result` so a fault
    /// the fill cannot go on from can end it.
    pub(crate) async fn run(&mut self, sink: &mut Transfer<'_>) -> Result<FeedEnd, FillFailure> {
        let mut current = self.first.take();
        let mut next: Option<(u64, JoinHandle<Option<Piece>>)> = None;
        loop {
            let pos = sink.received_bytes();
            if pos >= self.total_bytes {
                return Ok(FeedEnd::Complete);
            }
            let piece = match current.take().filter(|p| p.first_bytes == pos) {
                Some(p) => Some(p),
                None => match next.take() {
                    Some((at, task)) if at == pos => task.await.ok().flatten(),
                    // A failed piece is resumed before the prefetched next stripe is needed.
                    Some((at, task)) if at > pos => {
                        next = Some((at, task));
                        None
                    }
                    Some((_, task)) => {
                        task.abort();
                        None
                    }
                    None => None,
                },
            };
            let piece = match piece {
                Some(p) => p,
                None => match self.open_at(pos).await {
                    Some(p) => p,
                    None => return Ok(FeedEnd::Registry),
                },
            };
            if !piece.whole && piece.end_bytes < self.total_bytes && next.is_none() {
                let want = self.want.clone();
                let (at, total, tried) = (piece.end_bytes, self.total_bytes, self.tried.clone());
                let task = tokio::spawn(async move {
                    let mut tried = tried;
                    want.ask_members(at, Some(total), false, &mut tried).await
                });
                next = Some((at, task));
            }
            let stripe = Stripe::at(pos, Some(self.total_bytes)).map_or(0, |s| s.index);
            let from = piece.from;
            match self.pump(piece, sink).await {
                Pumped::Done => {}
                Pumped::SinkClosed => return Ok(FeedEnd::Complete),
                Pumped::Failed(failure) => {
                    // Followers have every byte received while the next source is found.
                    sink.hand_on().await;
                    let c = &self.want.cluster;
                    c.metrics.cluster_fallback(failure);
                    tracing::info!(digest = %self.want.digest, offset_bytes = sink.received_bytes(), ?from, %failure, "stripe source failed; going on from the next candidate");
                    match from {
                        From::Peer(m) => {
                            if matches!(
                                failure,
                                PeerFailure::Connect | PeerFailure::Timeout | PeerFailure::Broken
                            ) {
                                c.membership.mark_down(m);
                            }
                            self.tried.push((stripe, m));
                        }
                        From::Local => self.tried.push((stripe, c.membership.me())),
                        // The fill's own resume logic takes it from here.
                        From::Registry => return Ok(FeedEnd::Registry),
                    }
                }
            }
        }
    }

    /// The stripe holding `pos` from its candidates, else the rest of it from the registry.
    async fn open_at(&mut self, pos: u64) -> Option<Piece> {
        let (total, whole) = (self.total_bytes, self.whole);
        if let Some(p) = self
            .want
            .ask_members(pos, Some(total), whole, &mut self.tried)
            .await
        {
            return Some(p);
        }
        self.want.ask_registry(pos, total, whole).await
    }

    async fn pump(&mut self, piece: Piece, sink: &mut Transfer<'_>) -> Pumped {
        let Piece {
            mut body,
            end_bytes,
            from,
            ..
        } = piece;
        let c = &self.want.cluster;
        let idle = match from {
            From::Peer(_) => c.idle_timeout,
            From::Local | From::Registry => c.upstreams.body_idle_timeout,
        };
        let source = match from {
            From::Peer(_) => FillSource::Peer,
            From::Local => FillSource::Local,
            From::Registry => FillSource::Registry,
        };
        let mut counted = false;
        loop {
            let received = sink.received_bytes();
            if received >= end_bytes {
                return Pumped::Done;
            }
            let mut data = match sink.next_frame(&mut body, idle).await {
                Next::Data(data) => data,
                Next::Idle => return Pumped::Failed(PeerFailure::Timeout),
                Next::End | Next::Broken(_) => return Pumped::Failed(PeerFailure::Broken),
                Next::Stopped => return Pumped::SinkClosed,
            };
            let room = usize::try_from(end_bytes - received).unwrap_or(usize::MAX);
            if data.len() > room {
                data.truncate(room);
            }
            let len = data.len() as u64;
            if !sink.push(data).await {
                return Pumped::SinkClosed;
            }
            c.metrics.fill_source(source, len);
            let kind = match source {
                FillSource::Local => 0,
                FillSource::Peer => 1,
                FillSource::Registry => 2,
            };
            self.took[kind] = true;
            if let (From::Peer(m), false) = (from, counted) {
                counted = true;
                if !self.contributors.contains(&m) {
                    self.contributors.push(m);
                }
            }
        }
    }
}

/// How one piece ended.
enum Pumped {
    Done,
    SinkClosed,
    Failed(PeerFailure),
}

impl Want {
    /// The stripe holding `pos` from the first of its candidates that answers, skipping those
    /// in `tried` (and adding the ones that fail). `total`: the blob's length, once known;
    /// `whole`: the registry ignores ranges, so the piece runs to the blob's end.
    async fn ask_members(
        &self,
        pos: u64,
        total: Option<u64>,
        whole: bool,
        tried: &mut Vec<(u32, Member)>,
    ) -> Option<Piece> {
        let c = &self.cluster;
        let stripe = if whole {
            Stripe::nth(0, total)?
        } else {
            Stripe::at(pos, total)?
        };
        let end = match (whole, total) {
            (true, Some(t)) => Some(t),
            (false, Some(_)) => Some(stripe.end_bytes),
            (_, None) => None,
        };
        let me = c.membership.me();
        let ranked = rendezvous::rank(&c.membership.live(), &self.digest, stripe.index);
        let candidates: Vec<Member> = ranked
            .into_iter()
            .filter(|m| !tried.contains(&(stripe.index, *m)))
            .take(CANDIDATES)
            .collect();
        for m in candidates {
            let got = if m == me {
                self.local(stripe.index, pos, end).await
            } else {
                let req = PieceRequest {
                    digest: self.digest.clone(),
                    stripe: stripe.index,
                    ns: self.ns.clone(),
                    repo: self.repo.clone(),
                    first_bytes: pos,
                    end_bytes: end,
                };
                match c.client.get(m, &req).await {
                    Ok(p) => Ok(Piece {
                        body: p
                            .response
                            .into_body()
                            .map_err(std::io::Error::other)
                            .boxed(),
                        first_bytes: p.first_bytes,
                        end_bytes: p.end_bytes,
                        total_bytes: p.total_bytes,
                        whole: p.whole,
                        from: From::Peer(p.from),
                        _slot: None,
                    }),
                    Err((failure, who)) => {
                        if matches!(failure, PeerFailure::Connect | PeerFailure::Timeout) {
                            c.membership.mark_down(who);
                        }
                        Err(failure)
                    }
                }
            };
            match got {
                Ok(p) => return Some(p),
                Err(failure) => {
                    c.metrics.cluster_fallback(failure);
                    tracing::debug!(digest = %self.digest, stripe = stripe.index, member = %m, %failure, "stripe candidate failed");
                    tried.push((stripe.index, m));
                }
            }
        }
        None
    }

    /// The stripe from this node's own stripe fill.
    async fn local(&self, index: u32, pos: u64, end: Option<u64>) -> Result<Piece, PeerFailure> {
        let c = &self.cluster;
        let held = c
            .origin
            .open(&self.digest, index, &self.endpoint, &self.repo)
            .await
            .map_err(|_| PeerFailure::Refused)?;
        let info = held.info;
        let stop = info.base_bytes + info.len_bytes;
        let end = end.map_or(stop, |e| e.min(stop));
        if pos < info.base_bytes || pos >= end {
            return Err(PeerFailure::Unusable);
        }
        let file = FlightFile {
            file: held.file,
            base_bytes: info.base_bytes,
        };
        Ok(Piece {
            body: body::from_stripe(held.flight, file, pos, end, c.metrics.clone()),
            first_bytes: pos,
            end_bytes: end,
            total_bytes: info.total_bytes,
            whole: info.whole,
            from: From::Local,
            _slot: None,
        })
    }

    /// The rest of the stripe holding `pos` straight from the registry; `None` when it does
    /// not answer with exactly that range.
    async fn ask_registry(&self, pos: u64, total: u64, whole: bool) -> Option<Piece> {
        let c = &self.cluster;
        let end = if whole {
            total
        } else {
            Stripe::at(pos, Some(total))?.end_bytes
        };
        let answer = c
            .upstreams
            .blob_range(&self.endpoint, &self.repo, &self.digest, pos..=end - 1)
            .await
            .ok()?;
        let fits = answer.response.status() == StatusCode::PARTIAL_CONTENT
            && content_range(&answer.response).is_some_and(|r| {
                r.first_bytes == pos && r.last_bytes + 1 == end && r.complete_bytes == Some(total)
            });
        if !fits {
            return None;
        }
        Some(Piece {
            body: answer
                .response
                .into_body()
                .map_err(std::io::Error::other)
                .boxed(),
            first_bytes: pos,
            end_bytes: end,
            total_bytes: total,
            whole,
            from: From::Registry,
            _slot: Some(answer.slot),
        })
    }
}
