//! The store's write path for a fill's bytes, from the network stage to the temp file: a
//! [`Feeder`] on the receiving task holds frames and hands them on in batches, and one blocking
//! writer thread per fill ([`spawn`]) writes each batch with one positional vectored write,
//! keeps its frames in the flight's in-memory window, tells followers, and then hashes it.
//!
//! Why batches: off a slow link every frame is a few KiB (one socket read each), and handing
//! each on woke the writer, and through it every follower, per frame; thread switches and
//! wake-ups were about 40 % of the daemon's CPU in a 200 Mbit/s cold burst. The feeder holds
//! frames until [`HOLD_BYTES`] have come or [`HOLD_TIME`] has passed since the first one held.
//! On a slow link (a batch went on by time, short of its bytes) it lets the bytes gather in the
//! socket for [`SLOW_HOLD_TIME`] rather than asking for them packet by packet, and takes them
//! as one batch of up to [`SLOW_HOLD_BYTES`] ([`Feeder::next_frame`]): fewer, larger batches
//! mean fewer wake-ups of the writer and of every follower, and larger `sendfile` calls to
//! each follower (the cost per call, and per short packet through the kernel, was most of a
//! cold burst's CPU once the bytes themselves were sent by the kernel). Followers of a slow
//! link see a byte at most about [`SLOW_HOLD_TIME`] later than it came.
//!
//! Why the network stage, once the queue is full, waits for [`REFILL_BATCHES`] free places
//! before it hands on again: off a fast link the writer (write and sha256) is slower than the
//! receiving task, so the queue stays full, and every batch the writer took woke the receiving
//! task from the writer's thread to hand on one more, a wake-up across threads per batch.
//! Waiting for half the queue makes that one wake-up per [`REFILL_BATCHES`] batches; the writer
//! still has the other half to work on meanwhile. On the README's 2-vCPU VM this cut the
//! daemon's `futex` calls per cold GiB from about 1,800 to about 700 and its CPU by about 5 %
//! (the loopback pull's wall time rose about as much; the harness's pull time did not move).
//!
//! Why at most [`WRITE_BYTES`] per write: see [`write_all_at`].
//!
//! Why the hash is on the writer thread: it used to have a thread of its own, woken per frame;
//! waking a third thread cost more CPU than the overlap saved. Hashed after followers were
//! told, so they never wait for the hash; only the commit (and so every response's last byte)
//! does. The hash still runs beside the receiving task, not inline with it.
//!
//! Every byte is written once at its own offset, in order; a [`ToWriter::Flush`] answers once
//! every byte handed on before it is in the file. This module does not decide where bytes come
//! from or what a failure means (`fill/mod.rs`, `cluster/`).

use std::error::Error as StdError;
use std::fs::File;
use std::io::{self, IoSlice};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt as _;
use http_body_util::BodyExt;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use stampede_oci::Verifier;

use crate::flight::ProgressWriter;

/// While the writer is behind the network (more batches queued), followers are woken once this
/// many bytes were written since they were last woken; once it has caught up, at once. Each wake
/// comes from the writer's thread to a runtime thread, so waking per batch (a fast link's
/// batches are a few hundred KiB) cost more CPU than it saved latency: at 1 MiB, a cold GiB took
/// about 3 % less of the daemon's CPU (README, issue 18), and a follower of a fast fill sees a
/// byte at most about a millisecond later. A slow link's writer is always caught up.
pub const NOTIFY_BYTES: u64 = 1024 * 1024;
/// Bytes the network stage holds before handing frames to the writer.
pub const HOLD_BYTES: u64 = 64 * 1024;
/// Longest the network stage holds a frame before handing it to the writer.
pub const HOLD_TIME: Duration = Duration::from_millis(2);
/// On a slow link (the last batch went on short of its bytes), the bytes held before handing
/// frames on: a link that brings this much within [`SLOW_HOLD_TIME`] is fast again.
pub const SLOW_HOLD_BYTES: u64 = 1024 * 1024;
/// On a slow link, how long the bytes gather in the socket before they are taken as one batch.
pub const SLOW_HOLD_TIME: Duration = Duration::from_millis(8);
/// Batches queued between the network stage and the writer (each at least [`HOLD_BYTES`]
/// unless [`HOLD_TIME`] sent it early, so a fast link queues a few MiB at most).
const QUEUE_BATCHES: usize = 16;
/// Places that must be free in a full queue before the network stage hands on again.
const REFILL_BATCHES: usize = QUEUE_BATCHES / 2;
/// Most slices one `pwritev` takes (Linux's `IOV_MAX` is 1024).
const MAX_SLICES: usize = 512;
/// Most bytes one `pwritev` takes (a fast link's frames, one socket read each of at most about
/// 400 KiB, are never cut).
pub const WRITE_BYTES: usize = 512 * 1024;

/// What the network stage hands the writer.
#[derive(Debug)]
enum ToWriter {
    /// The next bytes of the blob, in order, to write right after the previous ones.
    Frames(Vec<Bytes>),
    /// Answer with the bytes written so far once everything before this is in the file.
    Flush(oneshot::Sender<u64>),
}

/// What the writer thread leaves: the bytes written (or why it stopped) and the hash of them,
/// when it was given a verifier.
#[derive(Debug)]
pub struct Written {
    /// Bytes in the file, or the write error that stopped the writer.
    pub result: io::Result<u64>,
    /// The running hash of every byte written, not yet finished.
    pub verifier: Option<Verifier>,
}

/// Starts the writer thread for `file` (written from byte 0), reporting to `progress` and
/// hashing into `verifier` when given one. The writer ends once the [`Feeder`] is finished or
/// dropped; join the handle for what it wrote.
pub fn spawn(
    file: Arc<File>,
    progress: ProgressWriter,
    verifier: Option<Verifier>,
) -> (Feeder, JoinHandle<Written>) {
    let (tx, rx) = mpsc::channel(QUEUE_BATCHES);
    let handle = tokio::task::spawn_blocking(move || {
        let mut writer = Writer {
            file,
            progress,
            verifier,
            written: 0,
            notified: 0,
        };
        let result = writer.run(rx);
        Written {
            result,
            verifier: writer.verifier,
        }
    });
    (Feeder::new(tx), handle)
}

/// What [`Feeder::next_frame`] got from a body.
#[derive(Debug)]
pub enum Next {
    /// The next data bytes.
    Data(Bytes),
    /// The body ended.
    End,
    /// The body failed.
    Broken(Box<dyn StdError + Send + Sync>),
    /// No frame came within the idle timeout.
    Idle,
    /// The writer stopped (its own error says why): the fill cannot go on.
    Stopped,
}

/// The network stage's end of the writer: holds frames and hands them on in batches.
#[derive(Debug)]
pub struct Feeder {
    tx: mpsc::Sender<ToWriter>,
    held: Vec<Bytes>,
    held_bytes: u64,
    /// When the oldest frame held came: it goes to the writer by [`HOLD_TIME`] after.
    held_since: Option<Instant>,
    /// Bytes pushed (held or handed on), in order: the blob offset the next frame starts at.
    received_bytes: u64,
    /// Where the bytes end, when known.
    end_bytes: Option<u64>,
    /// The last batch went on by time, short of its bytes ([`HOLD_BYTES`], or
    /// [`SLOW_HOLD_BYTES`] once slow): the link is slow.
    slow: bool,
}

/// `body`'s next frame if it is ready now, or once the connection's task has had a turn to
/// read the socket (it reads only when asked); `None` when nothing more has arrived.
async fn ready_frame<B>(body: &mut B) -> Option<Option<Result<http_body::Frame<Bytes>, B::Error>>>
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    for _ in 0..2 {
        if let Some(got) = body.frame().now_or_never() {
            return Some(got);
        }
        tokio::task::yield_now().await;
    }
    None
}

impl Feeder {
    /// A feeder handing batches to `tx`, the writer's queue.
    fn new(tx: mpsc::Sender<ToWriter>) -> Self {
        Self {
            tx,
            held: Vec::new(),
            held_bytes: 0,
            held_since: None,
            received_bytes: 0,
            end_bytes: None,
            slow: false,
        }
    }

    /// Bytes held before they go on: [`HOLD_BYTES`], or [`SLOW_HOLD_BYTES`] on a slow link.
    fn hold_bytes(&self) -> u64 {
        if self.slow {
            SLOW_HOLD_BYTES
        } else {
            HOLD_BYTES
        }
    }

    /// Longest a frame is held: [`HOLD_TIME`], or [`SLOW_HOLD_TIME`] on a slow link.
    fn hold_time(&self) -> Duration {
        if self.slow {
            SLOW_HOLD_TIME
        } else {
            HOLD_TIME
        }
    }

    /// Bytes pushed so far (held or handed on).
    pub fn received_bytes(&self) -> u64 {
        self.received_bytes
    }

    /// The blob's bytes end at `end_bytes` (when known): once they are all in, nothing is held
    /// back waiting for more.
    pub fn expect_end(&mut self, end_bytes: Option<u64>) {
        self.end_bytes = end_bytes;
    }

    /// The next data frame of `body`, waiting at most `idle` for it. While frames are held, it
    /// hands them on by [`HOLD_TIME`] after the first one came.
    ///
    /// On a slow link (the last batch went on by time, short of its bytes) it does not ask
    /// for frames as they come: it lets the link's bytes gather in the socket until the batch
    /// is due ([`SLOW_HOLD_TIME`] after its first frame), then takes what has arrived without
    /// waiting, and hands the batch on once nothing more is ready (or [`SLOW_HOLD_BYTES`] are
    /// held: the link is fast again). Asked for frame by frame, a slow link's connection would wake two
    /// tasks per packet; this way one socket read takes what a few milliseconds brought. A fast
    /// link fills a batch before it is due and is never made to wait.
    pub async fn next_frame<B>(&mut self, body: &mut B, idle: Duration) -> Next
    where
        B: http_body::Body<Data = Bytes> + Unpin,
        B::Error: Into<Box<dyn StdError + Send + Sync>>,
    {
        let idle_until = Instant::now() + idle;
        loop {
            let got = match self.held_since.map(|since| since + self.hold_time()) {
                Some(due) if self.slow && self.end_bytes != Some(self.received_bytes) => {
                    tokio::time::sleep_until(due).await;
                    ready_frame(body).await
                }
                Some(due) => tokio::time::timeout_at(due.min(idle_until), body.frame())
                    .await
                    .ok(),
                None => match tokio::time::timeout_at(idle_until, body.frame()).await {
                    Ok(got) => Some(got),
                    Err(_) => return Next::Idle,
                },
            };
            let Some(got) = got else {
                // Nothing more by the time the held frames are due.
                if !self.hand_on().await {
                    return Next::Stopped;
                }
                continue;
            };
            match got {
                None => return Next::End,
                Some(Err(e)) => return Next::Broken(e.into()),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        return Next::Data(data);
                    }
                }
            }
        }
    }

    /// Appends the next bytes of the blob, handing the held batch on once it has
    /// [`HOLD_BYTES`] ([`SLOW_HOLD_BYTES`] on a slow link). `false`: the writer stopped (its own error says why).
    pub async fn push(&mut self, data: Bytes) -> bool {
        if data.is_empty() {
            return true;
        }
        let len = data.len() as u64;
        self.received_bytes += len;
        self.held_bytes += len;
        self.held.push(data);
        self.held_since.get_or_insert_with(Instant::now);
        if self.held_bytes >= self.hold_bytes() {
            return self.hand_on().await;
        }
        true
    }

    /// Hands the held frames to the writer now. `false`: the writer stopped.
    pub async fn hand_on(&mut self) -> bool {
        if self.held.is_empty() {
            return true;
        }
        let frames = std::mem::take(&mut self.held);
        self.slow = self.held_bytes < self.hold_bytes();
        self.held_bytes = 0;
        self.held_since = None;
        // A full queue (the writer is behind): wait until REFILL_BATCHES places are free, so
        // that the writer thread wakes this task once per REFILL_BATCHES batches it takes, not
        // once per batch (see the module doc). The places not used now go back to the queue.
        let wanted = if self.tx.capacity() == 0 {
            REFILL_BATCHES
        } else {
            1
        };
        let Ok(mut places) = self.tx.reserve_many(wanted).await else {
            return false;
        };
        match places.next() {
            Some(place) => {
                place.send(ToWriter::Frames(frames));
                true
            }
            None => false,
        }
    }

    /// Waits until every byte pushed so far is in the file; `false` when the writer stopped
    /// before.
    pub async fn flush(&mut self) -> bool {
        if !self.hand_on().await {
            return false;
        }
        let (tx, rx) = oneshot::channel();
        if self.tx.send(ToWriter::Flush(tx)).await.is_err() {
            return false;
        }
        rx.await.is_ok_and(|written| written == self.received_bytes)
    }

    /// Hands on what is held and lets the writer end once it has written it.
    pub async fn finish(mut self) {
        // A writer that stopped says why when joined.
        self.hand_on().await;
    }
}

/// The writer thread's state.
struct Writer {
    file: Arc<File>,
    progress: ProgressWriter,
    verifier: Option<Verifier>,
    written: u64,
    notified: u64,
}

impl Writer {
    /// Writes batches until the feeder is gone. Returns the bytes written.
    fn run(&mut self, mut rx: mpsc::Receiver<ToWriter>) -> io::Result<u64> {
        let mut next = rx.blocking_recv();
        while let Some(msg) = next {
            let frames = match msg {
                ToWriter::Frames(frames) => frames,
                ToWriter::Flush(done) => {
                    self.tell(true);
                    done.send(self.written).ok();
                    next = rx.blocking_recv();
                    continue;
                }
            };
            write_all_at(&self.file, &frames, self.written)?;
            self.progress.remember(self.written, frames.iter().cloned());
            self.written += frames.iter().map(|f| f.len() as u64).sum::<u64>();
            let more = rx.try_recv().ok();
            // Every NOTIFY_BYTES, or caught up with the network: followers have it all now.
            self.tell(more.is_none());
            // Hashed after followers were told: they never wait for the hash.
            if let Some(v) = self.verifier.as_mut() {
                for frame in &frames {
                    v.update(frame);
                }
            }
            next = match more {
                Some(more) => Some(more),
                None => rx.blocking_recv(),
            };
        }
        Ok(self.written)
    }

    /// Reports the bytes written, waking followers when `caught_up` or when
    /// [`NOTIFY_BYTES`] have been written since they were last woken.
    fn tell(&mut self, caught_up: bool) {
        let wake = caught_up || self.written - self.notified >= NOTIFY_BYTES;
        self.progress.wrote(self.written, wake);
        if wake {
            self.notified = self.written;
        }
    }
}

/// Writes `frames` one after another at `offset` of `file`, at most [`WRITE_BYTES`] per
/// `pwritev` call.
///
/// Why the limit: the page cache sizes the folios it allocates for a write by the write's length
/// (as far as the offset is aligned). On the 2-vCPU VM of the README's measurements, 512 MiB
/// written to a new file in aligned 1 MiB writes took 0.75-0.85 CPU-s and in 64-384 KiB writes
/// 0.12-0.16 (unaligned 1 MiB writes, which get small folios: 0.15; 512 KiB writes: 0.18-0.27),
/// most likely because large free blocks are the ones the guest had handed back to the host.
/// A slow link's batches reach [`SLOW_HOLD_BYTES`], so their writes are cut. A limit of
/// 256 KiB, which cut a fast link's frames in two, measured no better.
fn write_all_at(file: &File, frames: &[Bytes], mut offset: u64) -> io::Result<()> {
    let limit = WRITE_BYTES;
    // Frames cut to at most `limit` bytes each, so that a call of whole slices never needs to
    // take more than `limit`.
    let mut slices: Vec<IoSlice<'_>> = frames
        .iter()
        .flat_map(|f| f.chunks(limit))
        .filter(|f| !f.is_empty())
        .map(IoSlice::new)
        .collect();
    let mut left = &mut slices[..];
    while !left.is_empty() {
        let mut take = 0;
        let mut take_bytes = 0;
        while take < left.len().min(MAX_SLICES)
            && (take == 0 || take_bytes + left[take].len() <= limit)
        {
            take_bytes += left[take].len();
            take += 1;
        }
        match rustix::io::pwritev(file, &left[..take], offset) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "the temp file took no bytes",
                ))
            }
            Ok(n) => {
                offset += n as u64;
                IoSlice::advance_slices(&mut left, n);
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt as _;

    use crate::flight::{Claim, FillGuard, Flights};
    use stampede_oci::Digest;

    /// The fill of `digest`, led by the caller (its own flights).
    fn lead(digest: &Digest) -> FillGuard {
        let flights = Arc::new(Flights::default());
        let Claim::Leader(guard) = flights.claim(digest, || false) else {
            panic!("first claim leads");
        };
        guard
    }

    /// A new unlinked file for the writer to fill.
    fn temp_file() -> Arc<File> {
        Arc::new(tempfile::tempfile().unwrap())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batches_land_in_order_hashed_and_flushed() {
        let content: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
        let digest = Digest::of(&content);
        let guard = lead(&digest);
        let file = temp_file();
        let (mut feeder, writer) = spawn(
            file.clone(),
            guard.progress_writer(),
            Some(Verifier::new(digest.clone())),
        );
        // Frames of uneven sizes, some below the hold, some above it; a flush in the middle.
        let mut at = 0;
        for (i, size) in [1, 700, 5_000, 90_000, 3, 40_000]
            .iter()
            .cycle()
            .enumerate()
        {
            if at == content.len() {
                break;
            }
            let end = (at + size).min(content.len());
            assert!(feeder.push(Bytes::copy_from_slice(&content[at..end])).await);
            at = end;
            if i == 7 {
                assert!(feeder.flush().await, "flush answers with every byte pushed");
                let mut have = vec![0; at];
                file.read_exact_at(&mut have, 0).unwrap();
                assert!(have == content[..at]);
                assert_eq!(guard.flight().progress().written_bytes, at as u64);
            }
        }
        assert_eq!(feeder.received_bytes(), content.len() as u64);
        feeder.finish().await;
        let written = writer.await.unwrap();
        assert_eq!(written.result.unwrap(), content.len() as u64);
        assert!(written.verifier.unwrap().finish().is_ok());
        let mut have = vec![0; content.len()];
        file.read_exact_at(&mut have, 0).unwrap();
        assert!(have == content);
        assert_eq!(
            guard.flight().progress().written_bytes,
            content.len() as u64
        );
        guard.done();
    }

    #[test]
    fn writes_are_cut_to_the_write_limit_and_land_whole() {
        let sizes = [3, WRITE_BYTES * 2 + 5, 700, WRITE_BYTES, 1];
        let total = sizes.iter().sum::<usize>() + 100_000;
        let content: Vec<u8> = (0..total).map(|i| (i % 251) as u8).collect();
        let mut frames = Vec::new();
        let mut at = 0;
        for size in sizes {
            frames.push(Bytes::copy_from_slice(&content[at..at + size]));
            at += size;
        }
        frames.push(Bytes::copy_from_slice(&content[at..]));
        let file = tempfile::tempfile().unwrap();
        write_all_at(&file, &frames, 10).unwrap();
        let mut have = vec![0; content.len()];
        file.read_exact_at(&mut have, 10).unwrap();
        assert!(have == content);
    }

    // Real time: the clock cannot be paused while the writer's blocking thread runs.
    #[tokio::test]
    async fn a_slow_link_is_taken_in_larger_batches() {
        let guard = lead(&Digest::of(b"slow link"));
        let (mut feeder, writer) = spawn(temp_file(), guard.progress_writer(), None);
        let (tx, rx) = mpsc::channel::<Result<hyper::body::Frame<Bytes>, io::Error>>(4);
        let mut body = http_body_util::StreamBody::new(Box::pin(stream_of(rx)));
        let idle = Duration::from_secs(30);
        let frame = |n: usize| Bytes::from(vec![7u8; n]);
        // A fast link: a batch of HOLD_BYTES goes on at once.
        assert!(feeder.push(frame(HOLD_BYTES as usize)).await);
        assert_eq!(feeder.held_bytes, 0);
        assert!(!feeder.slow);
        // A few bytes, then nothing within HOLD_TIME: they go on by time, and the link is slow.
        assert!(feeder.push(frame(10)).await);
        tx.send(Ok(hyper::body::Frame::data(frame(20))))
            .await
            .unwrap();
        let started = Instant::now();
        let Next::Data(data) = feeder.next_frame(&mut body, idle).await else {
            panic!("a frame was ready");
        };
        assert!(feeder.push(data).await);
        let next = tokio::time::timeout(SLOW_HOLD_TIME * 4, feeder.next_frame(&mut body, idle));
        assert!(next.await.is_err(), "nothing more came");
        assert_eq!(feeder.held_bytes, 0, "the held bytes went on by time");
        assert!(feeder.slow);
        assert!(started.elapsed() >= HOLD_TIME);
        // Slow: HOLD_BYTES and more are held (up to SLOW_HOLD_BYTES), for SLOW_HOLD_TIME.
        assert!(feeder.push(frame(HOLD_BYTES as usize * 2)).await);
        assert_eq!(feeder.held_bytes, HOLD_BYTES * 2, "held, not handed on");
        let held_at = Instant::now();
        let next = tokio::time::timeout(SLOW_HOLD_TIME * 4, feeder.next_frame(&mut body, idle));
        assert!(next.await.is_err(), "nothing more came");
        assert_eq!(feeder.held_bytes, 0, "handed on once due");
        assert!(held_at.elapsed() >= SLOW_HOLD_TIME);
        // A link that brings SLOW_HOLD_BYTES within the hold is fast again.
        assert!(feeder.push(frame(SLOW_HOLD_BYTES as usize)).await);
        assert_eq!(feeder.held_bytes, 0);
        assert!(!feeder.slow);
        drop(tx);
        feeder.finish().await;
        let written = writer.await.unwrap().result.unwrap();
        assert_eq!(written, HOLD_BYTES * 3 + 30 + SLOW_HOLD_BYTES);
        guard.done();
    }

    #[tokio::test]
    async fn a_full_queue_is_refilled_only_once_half_of_it_is_free() {
        let (tx, mut rx) = mpsc::channel(QUEUE_BATCHES);
        let mut feeder = Feeder::new(tx);
        let batch = || Bytes::from(vec![1u8; HOLD_BYTES as usize]);
        for _ in 0..QUEUE_BATCHES {
            assert!(feeder.push(batch()).await, "room in the queue");
        }
        // The queue is full: the next batch waits until REFILL_BATCHES places are free.
        let mut next = Box::pin(feeder.push(batch()));
        assert!(next.as_mut().now_or_never().is_none());
        for taken in 1..=REFILL_BATCHES {
            assert!(matches!(rx.recv().await, Some(ToWriter::Frames(_))));
            let handed_on = next.as_mut().now_or_never();
            if taken < REFILL_BATCHES {
                assert!(
                    handed_on.is_none(),
                    "handed on after only {taken} places were free"
                );
            } else {
                assert_eq!(handed_on, Some(true));
            }
        }
        drop(next);
        // One batch went in; the places it did not use are free again.
        assert_eq!(feeder.tx.capacity(), REFILL_BATCHES - 1);
        assert_eq!(
            feeder.received_bytes(),
            HOLD_BYTES * (QUEUE_BATCHES as u64 + 1)
        );
        // A writer that is gone stops the feeder.
        drop(rx);
        assert!(!feeder.push(batch()).await);
    }

    /// A stream of the frames sent on `rx`.
    fn stream_of<T: Send + 'static>(rx: mpsc::Receiver<T>) -> impl futures_util::Stream<Item = T> {
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|t| (t, rx)) })
    }

    #[tokio::test]
    async fn held_frames_go_to_the_writer_within_the_hold_time_while_the_body_waits() {
        let guard = lead(&Digest::of(b"slow"));
        let (mut feeder, writer) = spawn(temp_file(), guard.progress_writer(), None);
        let mut progress = guard.flight().subscribe();
        assert!(feeder.push(Bytes::from_static(b"few bytes")).await);
        // A body that sends nothing more for a while: the held bytes must not wait for it.
        let mut body = http_body_util::StreamBody::new(futures_util::stream::pending::<
            Result<hyper::body::Frame<Bytes>, io::Error>,
        >());
        let started = Instant::now();
        let waited = tokio::spawn(async move {
            let next = feeder
                .next_frame(&mut body, Duration::from_millis(300))
                .await;
            (feeder, next)
        });
        progress
            .wait_for(|p| p.written_bytes == 9)
            .await
            .expect("followers told");
        assert!(started.elapsed() < Duration::from_millis(250));
        let (feeder, next) = waited.await.unwrap();
        assert!(matches!(next, Next::Idle), "{next:?}");
        feeder.finish().await;
        assert_eq!(writer.await.unwrap().result.unwrap(), 9);
        guard.done();
    }
}
