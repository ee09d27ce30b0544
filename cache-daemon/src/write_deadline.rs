//! A client connection whose writes give up when the client stops reading: a write that makes
//! no progress for the configured time fails with `TimedOut`, which ends the connection (hyper
//! drops it, and with it the connection slot, the open blob and any fill follower). Without
//! it, a client that requests a blob and never reads holds one of `max_connections` for as long
//! as the TCP connection lives; a few thousand such clients would lock every pod on the node out
//! of the mirror. Reads pass through untouched (slow request heads are bounded by hyper's header
//! read timeout). Time is counted only while a write is blocked, from its first `Pending`, and
//! starts again after every write that made progress, so a slow but steady reader is never cut.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// `inner` with a stall limit on its writes.
#[derive(Debug)]
pub struct WriteDeadline<S> {
    inner: S,
    limit: Duration,
    /// Armed while a write is blocked; cleared by any progress.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<S> WriteDeadline<S> {
    /// Wraps `inner`; a write blocked for `limit` fails.
    pub fn new(inner: S, limit: Duration) -> Self {
        Self {
            inner,
            limit,
            stalled: None,
        }
    }

    /// Passes a write's outcome on; while it is blocked, fails it once the limit has passed.
    fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        outcome: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match outcome {
            Poll::Ready(r) => {
                self.stalled = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                let limit = self.limit;
                let sleep = self
                    .stalled
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                match sleep.as_mut().poll(cx) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("client read nothing for {limit:?}; closing"),
                    ))),
                }
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteDeadline<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let outcome = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.watch(cx, outcome)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let outcome = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.watch(cx, outcome)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let outcome = Pin::new(&mut this.inner).poll_flush(cx);
        this.watch(cx, outcome)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let outcome = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.watch(cx, outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_blocked_write_fails_after_the_limit_and_progress_restarts_the_clock() {
        // A pipe with room for 64 bytes whose reader takes nothing until told to.
        let (client, mut reader) = tokio::io::duplex(64);
        let mut w = WriteDeadline::new(client, Duration::from_secs(5));
        let writer = tokio::spawn(async move {
            // Blocks after 64 bytes (clock armed at t=0) until the reader frees room at t=4.
            w.write_all(&[1; 96]).await.unwrap();
            // The buffer is full again: blocked from t=4, so it fails at t=9, not at t=5.
            let blocked = tokio::time::Instant::now();
            let err = w.write_all(&[2; 1]).await.unwrap_err();
            (err.kind(), blocked.elapsed())
        });
        tokio::time::sleep(Duration::from_secs(4)).await;
        let mut got = [0u8; 32];
        reader.read_exact(&mut got).await.unwrap();
        let (kind, waited) = writer.await.unwrap();
        assert_eq!(kind, io::ErrorKind::TimedOut);
        assert_eq!(waited, Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_reader_that_keeps_up_is_never_cut() {
        let (client, mut reader) = tokio::io::duplex(64);
        let mut w = WriteDeadline::new(client, Duration::from_secs(5));
        let writer = tokio::spawn(async move { w.write_all(&[7; 4096]).await });
        // 32 bytes every 4 s: each write waits less than the limit, the whole far more.
        let mut total = 0;
        let mut buf = [0u8; 32];
        while total < 4096 {
            tokio::time::sleep(Duration::from_secs(4)).await;
            match reader.read(&mut buf).await.unwrap() {
                0 => break,
                n => total += n,
            }
        }
        writer.await.unwrap().unwrap();
        assert_eq!(total, 4096);
    }
}
