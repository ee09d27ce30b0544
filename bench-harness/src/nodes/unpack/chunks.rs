//! Decoding on a thread of its own: the decoder fills fixed-size chunks of uncompressed tar
//! and hands them over a bounded channel to the thread applying entries, which returns each
//! chunk for reuse. Decompression then overlaps file creation, as containerd's does when it
//! pipes layers through `unpigz`.
//!
//! Owns the hand-off and its bounds: at most [`CHUNKS_IN_FLIGHT`] + 2 chunks exist, so
//! memory stays `(CHUNKS_IN_FLIGHT + 2) x chunk size` whatever the layer. Knows nothing of
//! compression formats ([`super::stream`]) or of tar.

use std::io::{self, Read};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::time::{Duration, Instant};

/// Chunks decoded ahead of the applier, at most.
pub(super) const CHUNKS_IN_FLIGHT: usize = 4;

/// A filled chunk: the buffer (always full length) and how many bytes of it are data.
type Chunk = (Vec<u8>, usize);

/// The decoder's end: fills chunks from `source` until it ends, fails, or the applier hangs
/// up, then gives `source` back (with its counters).
pub(super) fn decode_into<R: Read>(mut source: R, to: Handoff, chunk_bytes: usize) -> R {
    let Handoff { filled, empty } = to;
    loop {
        let mut chunk = empty.try_recv().unwrap_or_else(|_| vec![0; chunk_bytes]);
        let mut len = 0;
        let outcome = loop {
            match source.read(&mut chunk[len..]) {
                Ok(0) => break Ok(()),
                Ok(n) => {
                    len += n;
                    if len == chunk.len() {
                        break Ok(());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        let sent = match outcome {
            Ok(()) if len == 0 => break, // end of stream: hanging up tells the applier
            Ok(()) => filled.send(Ok((chunk, len))),
            Err(e) => {
                // Hand over what was decoded before the failure, so the applier gets as far
                // as the stream allows and reports the failure where it happened.
                if len > 0 && filled.send(Ok((chunk, len))).is_err() {
                    break;
                }
                let _ = filled.send(Err(e));
                break;
            }
        };
        if sent.is_err() {
            break; // the applier stopped (an error of its own): stop decoding
        }
    }
    source
}

/// The decoder thread's side of the channels.
#[derive(Debug)]
pub(super) struct Handoff {
    filled: SyncSender<io::Result<Chunk>>,
    empty: Receiver<Vec<u8>>,
}

/// The applier's side: reads the decoded stream chunk by chunk.
#[derive(Debug)]
pub(super) struct Chunks {
    filled: Receiver<io::Result<Chunk>>,
    empty: Sender<Vec<u8>>,
    current: Vec<u8>,
    len: usize,
    pos: usize,
    /// Time spent blocked waiting for the decoder.
    waited: Duration,
}

/// A connected pair: give the [`Handoff`] to the decoder thread, read from [`Chunks`].
pub(super) fn channel() -> (Handoff, Chunks) {
    let (filled_tx, filled_rx) = mpsc::sync_channel(CHUNKS_IN_FLIGHT);
    let (empty_tx, empty_rx) = mpsc::channel();
    (
        Handoff {
            filled: filled_tx,
            empty: empty_rx,
        },
        Chunks {
            filled: filled_rx,
            empty: empty_tx,
            current: Vec::new(),
            len: 0,
            pos: 0,
            waited: Duration::ZERO,
        },
    )
}

impl Chunks {
    /// Time the reader spent blocked waiting for the decoder so far.
    pub(super) fn waited(&self) -> Duration {
        self.waited
    }
}

impl Read for Chunks {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.len {
            let started = Instant::now();
            let next = self.filled.recv();
            self.waited += started.elapsed();
            match next {
                Ok(Ok((chunk, len))) => {
                    let spent = std::mem::replace(&mut self.current, chunk);
                    if !spent.is_empty() {
                        let _ = self.empty.send(spent); // the decoder may be gone: fine
                    }
                    self.len = len;
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                // The decoder hung up: the stream ended (a failure would have been sent).
                Err(mpsc::RecvError) => return Ok(0),
            }
        }
        let n = buf.len().min(self.len - self.pos);
        buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Yields `total` bytes counting up, `step` at a time, then optionally fails.
    struct Source {
        next: usize,
        total: usize,
        step: usize,
        fail_at_end: bool,
    }

    impl Read for Source {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.next == self.total {
                return if self.fail_at_end {
                    Err(io::Error::new(io::ErrorKind::InvalidData, "corrupt"))
                } else {
                    Ok(0)
                };
            }
            let n = buf.len().min(self.step).min(self.total - self.next);
            for b in &mut buf[..n] {
                *b = (self.next % 251) as u8;
                self.next += 1;
            }
            Ok(n)
        }
    }

    #[test]
    fn chunks_carry_the_stream_in_order_and_then_its_end_or_failure() {
        for (total, step, fail_at_end) in [(0, 7, false), (100_000, 777, false), (5000, 64, true)] {
            let source = Source {
                next: 0,
                total,
                step,
                fail_at_end,
            };
            let (handoff, mut chunks) = channel();
            let got = std::thread::scope(|s| {
                let decoder = s.spawn(move || decode_into(source, handoff, 4096));
                let mut out = Vec::new();
                let result = chunks.read_to_end(&mut out).map(|_| out);
                drop(chunks);
                decoder.join().unwrap();
                result
            });
            match got {
                Ok(out) => {
                    assert!(!fail_at_end);
                    assert_eq!(out.len(), total);
                    assert!(out.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));
                }
                Err(e) => {
                    assert!(fail_at_end, "{e}");
                    assert_eq!(e.kind(), io::ErrorKind::InvalidData);
                }
            }
        }
    }

    #[test]
    fn the_decoder_stops_when_the_reader_hangs_up() {
        let source = Source {
            next: 0,
            total: usize::MAX,
            step: 4096,
            fail_at_end: false,
        };
        let (handoff, mut chunks) = channel();
        let decoded = std::thread::scope(|s| {
            let decoder = s.spawn(move || decode_into(source, handoff, 4096));
            let mut first = [0u8; 10];
            chunks.read_exact(&mut first).unwrap();
            drop(chunks);
            decoder.join().unwrap().next
        });
        assert!(decoded <= (CHUNKS_IN_FLIGHT + 2) * 4096, "{decoded}");
    }
}
