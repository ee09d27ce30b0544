//! Response bodies of the embedded registry: every body byte leaves in chunks that first pass
//! the [`Shaper`] and are then counted by the [`Accounting`] as they are handed to the
//! connection, for blobs (streamed from their files), manifests, pings and error documents alike;
//! a client that goes away is charged only for what was sent. What to send is not decided here.

use std::io;
use std::sync::Arc;

use bytes::Bytes;
use http_body::Frame;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, StreamBody};
use tokio::io::AsyncReadExt;
use tokio::time::Instant;

use super::accounting::{Accounting, BodyKind, ListenerId};
use super::shaping::Shaper;

/// The body type of every response.
pub type ResponseBody = UnsyncBoxBody<Bytes, io::Error>;

/// Where a body's bytes come from.
#[derive(Debug)]
pub enum Source {
    /// A blob file, positioned at the first byte to send.
    File(tokio::fs::File),
    /// Bytes in memory (manifests, small documents).
    Memory(Bytes),
}

/// Who pays for a body's bytes: the limits it passes and the counters it lands in.
#[derive(Debug, Clone)]
pub struct Meter {
    pub shaper: Arc<Shaper>,
    pub accounting: Arc<Accounting>,
    /// The listener the response leaves through.
    pub listener: ListenerId,
    pub body: BodyKind,
}

/// A body with no bytes (HEAD answers).
pub fn empty() -> ResponseBody {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// A body of `length_bytes` from `source`, shaped and counted by `meter`.
pub fn metered(source: Source, length_bytes: u64, meter: Meter) -> ResponseBody {
    let outgoing = Outgoing {
        source,
        remaining_bytes: length_bytes,
        meter,
    };
    let stream = futures_util::stream::unfold(outgoing, |mut outgoing| async move {
        let chunk = outgoing.next_chunk().await?;
        Some((chunk.map(Frame::data), outgoing))
    });
    StreamBody::new(stream).boxed_unsync()
}

#[derive(Debug)]
struct Outgoing {
    source: Source,
    remaining_bytes: u64,
    meter: Meter,
}

impl Outgoing {
    /// The next chunk once the limits allow it; `None` at the end. After an error, the end.
    async fn next_chunk(&mut self) -> Option<io::Result<Bytes>> {
        if self.remaining_bytes == 0 {
            return None;
        }
        let n = self
            .remaining_bytes
            .min(self.meter.shaper.chunk_bytes() as u64) as usize;
        let chunk = match &mut self.source {
            Source::Memory(bytes) => bytes.split_to(n.min(bytes.len())),
            Source::File(file) => {
                let mut buf = vec![0; n];
                if let Err(e) = file.read_exact(&mut buf).await {
                    self.remaining_bytes = 0;
                    return Some(Err(e));
                }
                Bytes::from(buf)
            }
        };
        if chunk.len() != n {
            self.remaining_bytes = 0;
            return Some(Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "body source shorter than its length",
            )));
        }
        let m = &self.meter;
        m.shaper.pass(m.listener, n as u64).await;
        m.accounting
            .body_sent(m.listener, &m.body, n as u64, Instant::now());
        self.remaining_bytes -= n as u64;
        Some(Ok(chunk))
    }
}
