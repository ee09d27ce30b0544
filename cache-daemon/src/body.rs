//! Response bodies. The data path of the daemon: committed blobs are streamed from their file in
//! chunks, and responses following a fill send what the writer has written (from the flight's
//! in-memory window of recent frames, or the growing temp file), waiting on the flight's
//! progress for more.
//!
//! The rule that keeps clients safe: while a fill runs, a response never sends its own last byte.
//! That byte goes out only after the blob's digest verified and it was committed; if the fill
//! fails instead, the stream ends with an error and hyper closes the connection before
//! `Content-Length` is reached, so no client takes unverified bytes as a complete blob.
//! (Without a known length the body is chunked, and the terminating chunk plays that role.)
//!
//! On a client connection (`zero_copy`), bytes that are in a file and in the page cache are not
//! copied at all: a body hands hyper a stand-in frame and the kernel sends the span from the file
//! ([`kernel_span`]). That covers hits, ranges of hits and every byte a fill has written (the
//! in-memory window included: sending from the temp file's cached pages costs less than copying
//! the window's frame). Bytes not known to be cached are read (on the blocking pool if need be)
//! and copied as before; so is everything when a body is not polled on a client connection.
//!
//! With `verify_on_read`, a whole committed blob is rehashed as it is sent
//! ([`from_file_verified`]) and its last chunk goes out only once the digest matched; a blob
//! that no longer matches (bit rot, a hand edit) is cut short and quarantined.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::stream;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::Frame;

use crate::flight::{FillState, Flight, WINDOW_BYTES};
use crate::metrics::{Metrics, Source};
use crate::store::read_checks::FileIdentity;
use crate::store::{page_cache, BlobStore};
use crate::zero_copy;
use stampede_oci::{Digest, Verifier};

/// The body type of every response.
pub type Body = BoxBody<Bytes, io::Error>;

/// Largest chunk read and sent at once, in bytes. Bounds memory per response: a response holds
/// at most one chunk plus what hyper queues (at most [`crate::server::HTTP_BUF_BYTES`] more), so
/// 256 clients of a hot blob cost about 256 x 192 KiB. Larger chunks do not pay off once reads
/// come from the page cache inline: daemon CPU per GiB served was the same at 64, 128 and
/// 256 KiB.
pub const CHUNK_BYTES: usize = 128 * 1024;

/// A body of known small bytes.
pub fn full(bytes: Bytes) -> Body {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

/// An empty body.
pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// Where the bytes of a span the kernel may send come from.
#[derive(Clone, Copy)]
struct SpanAt<'a> {
    file: &'a Arc<File>,
    pos: u64,
    /// Bytes left to send from `pos`.
    left_bytes: u64,
    /// The bytes were written moments ago (a fill's last [`WINDOW_BYTES`]): their pages are in
    /// the page cache, so asking costs two system calls for nothing.
    fresh: bool,
}

/// At most [`zero_copy::SPAN_BYTES`] of the span's bytes as a stand-in frame the kernel sends
/// (`zero_copy`), counted for `source` when sent; `None` when this response is not on a client
/// connection, the span is shorter than [`zero_copy::MIN_SPAN_BYTES`] or its pages are not
/// known to be cached (the caller reads and copies them instead).
fn kernel_span(at: SpanAt<'_>, source: Source, metrics: &Arc<Metrics>) -> Option<Bytes> {
    let len = usize::try_from(at.left_bytes)
        .unwrap_or(usize::MAX)
        .min(zero_copy::SPAN_BYTES);
    if len < zero_copy::MIN_SPAN_BYTES || !zero_copy::available() {
        return None;
    }
    if !at.fresh && !page_cache::holds(at.file, at.pos, len) {
        return None;
    }
    zero_copy::span_frame(at.file, at.pos, len, source, metrics)
}

fn read_at(file: &File, offset: u64, len: usize) -> io::Result<Bytes> {
    let mut buf = BytesMut::zeroed(len);
    file.read_exact_at(&mut buf, offset)?;
    Ok(buf.freeze())
}

/// Streams bytes `[start, end)` of a committed blob: sent by the kernel from the file where the
/// page cache holds them and the response is on a client connection (`zero_copy`); otherwise
/// each chunk is read inline when the page cache holds it (a memory copy) and on the blocking
/// pool if not: a committed file may have left the page cache, and a runtime thread never waits
/// on the disk.
pub fn from_file(file: Arc<File>, start: u64, end: u64, metrics: Arc<Metrics>) -> Body {
    file_counted(file, (start, end), metrics, Source::Cache)
}

/// [`from_file`] for a cluster peer: the same bytes, counted as [`Source::Peer`].
pub fn file_to_peer(file: Arc<File>, start: u64, end: u64, metrics: Arc<Metrics>) -> Body {
    file_counted(file, (start, end), metrics, Source::Peer)
}

fn file_counted(
    file: Arc<File>,
    (start, end): (u64, u64),
    metrics: Arc<Metrics>,
    source: Source,
) -> Body {
    let chunks = stream::unfold((file, start), move |(file, pos)| {
        let metrics = metrics.clone();
        async move {
            if pos >= end {
                return None;
            }
            let at = SpanAt {
                file: &file,
                pos,
                left_bytes: end - pos,
                fresh: false,
            };
            if let Some(frame) = kernel_span(at, source, &metrics) {
                let next = pos + frame.len() as u64;
                return Some((Ok(Frame::data(frame)), (file, next)));
            }
            let len = usize::try_from(end - pos)
                .unwrap_or(usize::MAX)
                .min(CHUNK_BYTES);
            let read = page_cache::read_at(&file, pos, len, false).await;
            match read {
                Ok(bytes) => {
                    let next = pos + bytes.len() as u64;
                    metrics.served(source, bytes.len() as u64);
                    Some((Ok(Frame::data(bytes)), (file, next)))
                }
                // Ending the stream with an error makes hyper close the connection short.
                Err(e) => Some((Err(e), (file, end))),
            }
        }
    });
    StreamBody::new(chunks).boxed()
}

/// What a `verify_on_read` body checks a committed blob against, and where a mismatch goes.
#[derive(Debug, Clone)]
pub struct ReadCheck {
    /// The digest the blob must hash to.
    pub digest: Digest,
    /// The file's identity, remembered as verified on a match (`store::read_checks`).
    pub identity: FileIdentity,
    /// Where a mismatching blob is quarantined.
    pub store: Arc<BlobStore>,
}

/// Streams a whole committed blob of `size_bytes`, hashing it as it goes, and sends the last
/// chunk only if the digest matches. On a mismatch the blob is quarantined in the check's
/// store (so the next request fetches it anew), counted, and the response cut short; on a
/// match the file (the check's `identity`) is remembered as verified, so ranges of it skip
/// their rehash for a while (`store::read_checks`). Hashing runs inline, a chunk at a time,
/// like the copy it follows.
pub fn from_file_verified(
    file: Arc<File>,
    size_bytes: u64,
    check: ReadCheck,
    metrics: Arc<Metrics>,
) -> Body {
    let ReadCheck {
        digest,
        identity,
        store,
    } = check;
    struct Check {
        file: Arc<File>,
        pos: u64,
        verifier: Verifier,
        store: Arc<BlobStore>,
        metrics: Arc<Metrics>,
    }
    impl Check {
        fn send(&self, at: u64, chunk: Bytes) -> Bytes {
            send_read(&self.file, at, chunk, &self.metrics)
        }
    }
    let check = Check {
        file,
        pos: 0,
        verifier: Verifier::new(digest),
        store,
        metrics,
    };
    let chunks = stream::unfold(Some(check), move |check| async move {
        let mut c = check?;
        let mut chunk = Bytes::new();
        if c.pos < size_bytes {
            let len = usize::try_from(size_bytes - c.pos)
                .unwrap_or(usize::MAX)
                .min(CHUNK_BYTES);
            chunk = match page_cache::read_at(&c.file, c.pos, len, false).await {
                Ok(bytes) => bytes,
                Err(e) => return Some((Err(e), None)),
            };
            c.verifier.update(&chunk);
            let at = c.pos;
            c.pos += chunk.len() as u64;
            if c.pos < size_bytes {
                let frame = c.send(at, chunk);
                return Some((Ok(Frame::data(frame)), Some(c)));
            }
        }
        // The last chunk (or an empty blob): only if the whole blob matched.
        let Check {
            file,
            verifier,
            store,
            metrics,
            ..
        } = c;
        let digest = verifier.expected().clone();
        if verifier.finish().is_err() {
            metrics.read_mismatch();
            let d = digest.clone();
            tokio::task::spawn_blocking(move || store.quarantine(&d))
                .await
                .ok();
            let err =
                io::Error::other(format!("committed blob {digest} does not match its digest"));
            return Some((Err(err), None));
        }
        store.read_checks().note_verified(&digest, identity);
        if chunk.is_empty() {
            return None;
        }
        let last = size_bytes - chunk.len() as u64;
        let frame = send_read(&file, last, chunk, &metrics);
        Some((Ok(Frame::data(frame)), None))
    });
    StreamBody::new(chunks).boxed()
}

/// A chunk of a committed blob that was just read (and hashed) at `at`: sent by the kernel from
/// the file's pages it was read from when the response is on a client connection, which spares
/// the copy out of the daemon; as the bytes read otherwise.
fn send_read(file: &Arc<File>, at: u64, chunk: Bytes, metrics: &Arc<Metrics>) -> Bytes {
    let frame = (chunk.len() >= zero_copy::MIN_SPAN_BYTES)
        .then(|| zero_copy::span_frame(file, at, chunk.len(), Source::Cache, metrics))
        .flatten();
    match frame {
        Some(frame) => frame,
        None => {
            metrics.served(Source::Cache, chunk.len() as u64);
            chunk
        }
    }
}

/// Counts a response as a fill waiter while it lives.
struct Waiter(Arc<Metrics>);

impl Waiter {
    fn new(metrics: Arc<Metrics>) -> Self {
        metrics.fill_waiter(1);
        Self(metrics)
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        self.0.fill_waiter(-1);
    }
}

struct Follow {
    flight: Arc<Flight>,
    progress: tokio::sync::watch::Receiver<crate::flight::Progress>,
    file: Arc<File>,
    pos: u64,
    /// Exclusive end of the response; `None` for a whole blob of unknown length.
    end: Option<u64>,
    _waiter: Waiter,
}

/// Streams bytes `[start, end)` of a blob whose fill is in progress, as they land. `end` is
/// `None` when the whole blob is wanted and its length is unknown.
///
/// On a client connection, every written byte is sent by the kernel from the temp file, whose
/// pages were written moments ago and are in the page cache (checked per span). Otherwise bytes
/// still in the flight's in-memory window are sent as the upstream's own frames, and older ones
/// are read from the growing file inline: a memory copy of at most [`CHUNK_BYTES`], not disk
/// I/O.
pub fn from_flight(
    flight: Arc<Flight>,
    file: Arc<File>,
    start: u64,
    end: Option<u64>,
    metrics: Arc<Metrics>,
) -> Body {
    follow(
        flight,
        FlightFile {
            file,
            base_bytes: 0,
        },
        (start, end),
        metrics,
        Some(Source::Upstream),
    )
}

/// A flight's file and the offset in the blob of its first byte (a stripe's file starts at the
/// stripe's first byte).
#[derive(Debug, Clone)]
pub struct FlightFile {
    /// The file the flight writes.
    pub file: Arc<File>,
    /// Blob offset of the file's byte 0.
    pub base_bytes: u64,
}

/// Streams blob bytes `[start, end)` of a flight (a blob fill, or a stripe fill whose file
/// begins at `file.base_bytes`) to a cluster peer, counted as [`Source::Peer`]. Unlike
/// [`from_flight`] it does not hold back the last byte until the blob verifies: the peer
/// hashes the whole blob itself and commits nothing that does not match, and holding back
/// would stall every stripe but the last until the whole blob is in. A failed flight still
/// cuts the stream short.
pub fn to_peer(
    flight: Arc<Flight>,
    file: FlightFile,
    start: u64,
    end: u64,
    metrics: Arc<Metrics>,
) -> Body {
    follow(
        flight,
        file,
        (start, Some(end)),
        metrics,
        Some(Source::Peer),
    )
}

/// Blob bytes `[start, end)` of this node's own stripe fill, for its own blob fill to read:
/// as [`to_peer`], but not counted as served (nothing leaves the node).
pub fn from_stripe(
    flight: Arc<Flight>,
    file: FlightFile,
    start: u64,
    end: u64,
    metrics: Arc<Metrics>,
) -> Body {
    follow(flight, file, (start, Some(end)), metrics, None)
}

/// Follows a flight; `count`: what its bytes are counted as served from (`None`: not
/// counted). Only client responses (`Source::Upstream`) hold back their last byte.
fn follow(
    flight: Arc<Flight>,
    file: FlightFile,
    (start, end): (u64, Option<u64>),
    metrics: Arc<Metrics>,
    count: Option<Source>,
) -> Body {
    let hold_last = count == Some(Source::Upstream);
    let FlightFile { file, base_bytes } = file;
    let progress = flight.subscribe();
    let state = Follow {
        flight,
        progress,
        file,
        pos: start,
        end,
        _waiter: Waiter::new(metrics.clone()),
    };
    let chunks = stream::unfold(Some(state), move |state| {
        let metrics = metrics.clone();
        async move {
            let mut s = state?;
            loop {
                let mut p = s.progress.borrow_and_update().clone();
                // Positions below are blob offsets; the file starts at `base_bytes`.
                p.written_bytes += base_bytes;
                let limit = match (&p.state, s.end) {
                    (FillState::Failed(f), _) => {
                        let err =
                            io::Error::other(format!("fill of {} failed: {f}", s.flight.digest()));
                        return Some((Err(err), None));
                    }
                    (FillState::Done, Some(end)) => end,
                    (FillState::Done, None) => p.written_bytes,
                    // Hold back this response's last byte until the digest is verified.
                    (FillState::Running, Some(end)) if hold_last => {
                        p.written_bytes.min(end.saturating_sub(1))
                    }
                    (FillState::Running, Some(end)) => p.written_bytes.min(end),
                    (FillState::Running, None) => p.written_bytes,
                };
                if s.pos < limit {
                    // The file holds blob bytes from `base_bytes` on (a stripe's file starts
                    // mid-blob). Only bytes that leave the node (`count`) may be stand-ins for
                    // the kernel to send: an uncounted body is read in this process.
                    let at = s.pos - base_bytes;
                    let span = SpanAt {
                        file: &s.file,
                        pos: at,
                        left_bytes: limit - s.pos,
                        fresh: p.state == FillState::Running
                            && p.written_bytes - s.pos <= WINDOW_BYTES,
                    };
                    if let Some(frame) =
                        count.and_then(|source| kernel_span(span, source, &metrics))
                    {
                        s.pos += frame.len() as u64;
                        return Some((Ok(Frame::data(frame)), Some(s)));
                    }
                    let len = usize::try_from(limit - s.pos)
                        .unwrap_or(usize::MAX)
                        .min(CHUNK_BYTES);
                    let read = match s.flight.recent(at, len) {
                        Some(bytes) => Ok(bytes),
                        None => read_at(&s.file, at, len),
                    };
                    return match read {
                        Ok(bytes) => {
                            if let Some(source) = count {
                                metrics.served(source, bytes.len() as u64);
                            }
                            s.pos += bytes.len() as u64;
                            Some((Ok(Frame::data(bytes)), Some(s)))
                        }
                        Err(e) => Some((Err(e), None)),
                    };
                }
                if p.state == FillState::Done {
                    return None;
                }
                // The flight owns the sender and `s` holds the flight, so this cannot fail.
                if s.progress.changed().await.is_err() {
                    return Some((Err(io::Error::other("fill vanished")), None));
                }
            }
        }
    });
    StreamBody::new(chunks).boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    #[tokio::test]
    async fn a_committed_file_sent_to_a_peer_by_the_kernel_counts_as_peer_bytes() {
        let mut file = tempfile::tempfile().unwrap();
        let content: Vec<u8> = (0..200_000u32).map(|i| (i % 241) as u8).collect();
        file.write_all(&content).unwrap();
        let file = Arc::new(file);
        let metrics = Arc::new(Metrics::new());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let connect = tokio::net::TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(connect, listener.accept());
        let (mut client, server) = (client.unwrap(), accepted.unwrap().0);
        let lane = zero_copy::Lane::default();
        let mut socket = zero_copy::KernelSend::new(server, lane.clone());
        let (start, end) = (1_000u64, 101_000u64);
        let mut body = file_to_peer(file, start, end, metrics.clone());
        let frames = zero_copy::serve(lane, async {
            let mut frames = Vec::new();
            while let Some(frame) = body.frame().await {
                frames.push(frame.unwrap().into_data().unwrap());
            }
            frames
        })
        .await;
        let writer = tokio::spawn(async move {
            for frame in frames {
                socket.write_all(&frame).await.unwrap();
            }
        });
        let mut got = vec![0u8; 100_000];
        client.read_exact(&mut got).await.unwrap();
        writer.await.unwrap();
        assert!(got[..] == content[1_000..101_000]);
        let text = metrics.render(0, 0, 0);
        assert!(
            text.contains("cache_daemon_served_bytes_total{source=\"peer\"} 100000"),
            "{text}"
        );
        assert!(
            text.contains("cache_daemon_sent_by_kernel_bytes_total 100000"),
            "{text}"
        );
    }
}
