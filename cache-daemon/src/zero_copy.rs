//! Blob bytes sent by the kernel (`sendfile(2)`) on connections that hyper serves. hyper owns
//! HTTP here as everywhere (request parsing, keep-alive, HEAD, `Content-Length` and chunked
//! framing, closing a connection whose body failed), but its body API only carries bytes in
//! memory, so every byte of a hit used to be copied out of the page cache into the daemon and
//! back into the socket. This module lets a body hand hyper a stand-in instead.
//!
//! Each connection has a [`Lane`], shared by its socket ([`KernelSend`], the I/O hyper writes
//! to) and the bodies of its responses, which find it through a task-local that [`serve`] sets
//! around the connection's task (hyper polls a connection's bodies inside that task). A body
//! with a file span to send calls [`span_frame`]: the span is queued on the lane and hyper gets
//! a data frame of the same length that points into a static stand-in region and is never read.
//! hyper frames it like any other data, so the `Content-Length` count, chunk sizes and the
//! back-pressure of its write buffer stay hyper's. It writes with `writev` and keeps body frames
//! as they are (`http1::Builder::writev(true)`, which [`crate::server`] sets: the alternative
//! strategy would copy the stand-in into its buffer), so [`KernelSend`] sees the stand-in's own
//! slice, recognises it by its address, and sends the lane's first span from its file with
//! `sendfile` instead; a partial send is a partial write, which hyper resumes like any other.
//! Spans are queued and sent in the same order, since one connection writes one response at a
//! time; a stand-in whose length differs from the span it should stand for fails the write
//! (and so the connection) rather than send the wrong bytes.
//!
//! What it does not decide: which bytes may go out, and when (`body.rs` keeps the rules about a
//! fill's last byte and `verify_on_read`), or whether a span's pages are in the page cache
//! (`body.rs` asks `store::page_cache` first, so a runtime thread does not wait on the disk).
//! Bytes sent here are counted as served when the kernel took them, not when queued.

use std::collections::VecDeque;
use std::fs::File;
use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

use crate::metrics::{Metrics, Source};

/// Longest span one stand-in frame covers, in bytes. No memory is behind it (the stand-in
/// region is never written or read, so its pages are never touched); hyper queues one frame at a
/// time once it holds more than [`crate::server::HTTP_BUF_BYTES`], and the kernel takes what
/// the socket's send buffer has room for per call.
pub const SPAN_BYTES: usize = 1 << 20;

/// Shortest span worth sending this way, in bytes. Below it, copying costs less than what the
/// kernel path adds: the response head written apart from the body (one more system call), the
/// page-cache probes and the `sendfile` call. Bodies copy shorter spans (small blobs, short
/// ranges, the tail of a blob) as before.
pub const MIN_SPAN_BYTES: usize = 16 * 1024;

/// What stand-in frames point into. Only its address matters.
static STAND_IN: [u8; SPAN_BYTES] = [0; SPAN_BYTES];

/// Whether `slice` is (part of) a stand-in frame.
fn is_stand_in(slice: &[u8]) -> bool {
    !slice.is_empty() && STAND_IN.as_ptr_range().contains(&slice.as_ptr())
}

/// Bytes of a file the kernel is to send next on a connection.
#[derive(Debug)]
struct Span {
    file: Arc<File>,
    offset: u64,
    len: usize,
    source: Source,
    metrics: Arc<Metrics>,
}

/// One connection's queue of spans, in the order their stand-ins were handed to hyper.
#[derive(Debug, Clone, Default)]
pub struct Lane(Arc<Mutex<VecDeque<Span>>>);

impl Lane {
    // A std `Mutex`: the connection's body and socket are polled by one task, so it is never
    // contended, and it is never held across an await or a system call.
    fn queue(&self) -> std::sync::MutexGuard<'_, VecDeque<Span>> {
        self.0.lock().expect("lane mutex poisoned")
    }

    /// The first span: its file, offset and length.
    fn first(&self) -> Option<(Arc<File>, u64, usize)> {
        self.queue()
            .front()
            .map(|s| (s.file.clone(), s.offset, s.len))
    }

    /// `sent` bytes of the first span went out: count them and move on.
    fn sent(&self, sent: usize) {
        let mut q = self.queue();
        let Some(span) = q.front_mut() else { return };
        span.metrics.sent_by_kernel(span.source, sent as u64);
        span.offset += sent as u64;
        span.len -= sent;
        if span.len == 0 {
            q.pop_front();
        }
    }
}

tokio::task_local! {
    static LANE: Lane;
}

/// Runs a connection's future (`conn`) with `lane` as the lane its response bodies queue spans
/// on; `lane` must be the one its [`KernelSend`] was built with.
pub fn serve<F: Future>(lane: Lane, conn: F) -> impl Future<Output = F::Output> {
    LANE.scope(lane, conn)
}

/// Whether the caller runs on a connection whose socket sends spans ([`serve`]).
pub fn available() -> bool {
    LANE.try_with(|_| ()).is_ok()
}

/// A stand-in data frame for `len` bytes (1 to [`SPAN_BYTES`]) of `file` at `offset`, which the
/// connection's socket sends from the file, counting them for `source`, when they are written.
/// `None` when the caller is not on such a connection: it sends the bytes itself.
///
/// The file must hold the span: a file that ends before it fails the response.
pub fn span_frame(
    file: &Arc<File>,
    offset: u64,
    len: usize,
    source: Source,
    metrics: &Arc<Metrics>,
) -> Option<Bytes> {
    debug_assert!(len > 0 && len <= SPAN_BYTES, "span of {len} bytes");
    let len = len.min(SPAN_BYTES);
    LANE.try_with(|lane| {
        lane.queue().push_back(Span {
            file: file.clone(),
            offset,
            len,
            source,
            metrics: metrics.clone(),
        });
        Bytes::from_static(&STAND_IN[..len])
    })
    .ok()
}

/// A client connection's socket that sends stand-in frames' spans from their files (module doc)
/// and writes everything else as it is.
#[derive(Debug)]
pub struct KernelSend {
    tcp: TcpStream,
    lane: Lane,
}

impl KernelSend {
    /// Wraps `tcp`; responses on it queue their spans on `lane`.
    pub fn new(tcp: TcpStream, lane: Lane) -> Self {
        Self { tcp, lane }
    }

    /// Sends from the lane's first span, which a stand-in of `stand_in_len` bytes stands for.
    fn poll_span(&self, cx: &mut Context<'_>, stand_in_len: usize) -> Poll<io::Result<usize>> {
        let Some((file, offset, len)) = self.lane.first() else {
            return Poll::Ready(Err(out_of_step(format!(
                "a {stand_in_len}-byte stand-in frame with no file span queued"
            ))));
        };
        if len != stand_in_len {
            return Poll::Ready(Err(out_of_step(format!(
                "a {stand_in_len}-byte stand-in frame for a {len}-byte file span"
            ))));
        }
        loop {
            ready!(self.tcp.poll_write_ready(cx))?;
            let mut at = offset;
            let sent = self.tcp.try_io(Interest::WRITABLE, || {
                rustix::fs::sendfile(&self.tcp, &*file, Some(&mut at), len).map_err(io::Error::from)
            });
            match sent {
                Ok(0) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("blob file ends before byte {}", offset + len as u64),
                    )))
                }
                Ok(n) => {
                    self.lane.sent(n);
                    return Poll::Ready(Ok(n));
                }
                // Readiness was stale: `try_io` cleared it, so the next poll waits.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

fn out_of_step(what: String) -> io::Error {
    io::Error::other(format!("zero-copy send out of step: {what}"))
}

impl AsyncRead for KernelSend {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for KernelSend {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if is_stand_in(buf) {
            return this.poll_span(cx, buf.len());
        }
        Pin::new(&mut this.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let first = bufs.iter().position(|b| !b.is_empty());
        match bufs.iter().position(|b| is_stand_in(b)) {
            None => Pin::new(&mut this.tcp).poll_write_vectored(cx, bufs),
            Some(i) if Some(i) == first => this.poll_span(cx, bufs[i].len()),
            // Everything before the stand-in first (the response head, a chunk size line).
            Some(i) => Pin::new(&mut this.tcp).poll_write_vectored(cx, &bufs[..i]),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        (accepted.unwrap().0, client.unwrap())
    }

    #[tokio::test]
    async fn stand_ins_become_their_file_spans_in_order_and_the_rest_is_written_as_is() {
        let mut file = tempfile::tempfile().unwrap();
        let content: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        file.write_all(&content).unwrap();
        let file = Arc::new(file);
        let metrics = Arc::new(Metrics::new());
        let (server, mut client) = pair().await;
        let lane = Lane::default();
        let mut socket = KernelSend::new(server, lane.clone());
        let (first, second) = serve(lane, async {
            assert!(available());
            (
                span_frame(&file, 10, 40_000, Source::Cache, &metrics).unwrap(),
                span_frame(&file, 60_000, 30_000, Source::Cache, &metrics).unwrap(),
            )
        })
        .await;
        assert!(is_stand_in(&first) && !is_stand_in(b"head"));
        let writer = tokio::spawn(async move {
            for part in [
                Bytes::from_static(b"head\r\n"),
                first,
                Bytes::from_static(b"|"),
                second,
            ] {
                socket.write_all(&part).await.unwrap();
            }
        });
        let mut got = vec![0u8; 6 + 40_000 + 1 + 30_000];
        client.read_exact(&mut got).await.unwrap();
        writer.await.unwrap();
        let mut want = b"head\r\n".to_vec();
        want.extend_from_slice(&content[10..40_010]);
        want.push(b'|');
        want.extend_from_slice(&content[60_000..90_000]);
        assert!(got == want);
        assert!(metrics
            .render(0, 0, 0)
            .contains("cache_daemon_sent_by_kernel_bytes_total 70000"));
        // Off a served connection there is no lane: the caller sends bytes itself.
        assert!(!available());
        assert!(span_frame(&file, 0, 10, Source::Cache, &metrics).is_none());
    }

    #[tokio::test]
    async fn a_stand_in_without_its_span_fails_the_write() {
        let (server, _client) = pair().await;
        let mut socket = KernelSend::new(server, Lane::default());
        let err = socket
            .write_all(&STAND_IN[..100])
            .await
            .expect_err("nothing queued");
        assert!(err.to_string().contains("out of step"), "{err}");
    }
}
