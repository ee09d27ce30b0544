//! The three loads, each on a freshly started target (empty cache, own port and directory):
//! - [`held`]: many connections opened and held idle in keep-alive after one small request;
//! - [`burst`]: many small requests (manifests by digest and small blobs, all cached) from a
//!   bounded number of keep-alive connections, timed per request;
//! - [`slow`]: slow readers of one large uncached blob, then one fast reader, timed against a
//!   single reader of the same blob on another fresh target.
//!
//! Every scenario samples the server's memory and descriptors and polls its health path
//! throughout (`watch.rs`). Scenarios only measure; `main` takes medians and prints.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinSet;

use crate::target::{Kind, Target};
use crate::watch::{Health, HealthPoller, Peaks, Sampler};

/// Bound on any one phase of a scenario.
const PHASE_LIMIT: Duration = Duration::from_secs(300);
/// How long held connections are held before they close.
const HOLD: Duration = Duration::from_secs(3);
/// A slow reader reads this many bytes, then sleeps [`SLOW_PAUSE`]: 40 KiB/s.
const SLOW_READ_BYTES: usize = 4096;
const SLOW_PAUSE: Duration = Duration::from_millis(100);
/// A slow reader's socket receive buffer: the kernel does not read ahead for it by megabytes.
const SLOW_RCVBUF_BYTES: u32 = 16 * 1024;
/// How long the slow readers run before the fast reader starts.
const SLOW_HEAD_START: Duration = Duration::from_millis(500);

/// Shared setup.
#[derive(Debug)]
pub struct Bed {
    /// Scratch directory for the targets' state.
    pub work: PathBuf,
    /// The origin registry.
    pub origin: SocketAddr,
}

/// One thing a client asks for, with its expected size.
#[derive(Debug, Clone)]
pub struct Wanted {
    /// Request path.
    pub path: String,
    /// Expected body length.
    pub len: u64,
}

/// The health path of a target: the daemon's `/healthz`; nginx has none, so `/v2/`, which it
/// passes to the origin.
fn health_path(kind: Kind) -> &'static str {
    match kind {
        Kind::Daemon => "/healthz",
        _ => "/v2/",
    }
}

fn pid(target: &Target) -> anyhow::Result<u32> {
    target.pid().context("target without a process")
}

/// A keep-alive client connection.
async fn connect(
    addr: SocketAddr,
) -> anyhow::Result<hyper::client::conn::http1::SendRequest<Empty<Bytes>>> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(send)
}

/// GETs `w` on `send` and reads the body; fails on a wrong status or length.
async fn fetch(
    send: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    w: &Wanted,
) -> anyhow::Result<()> {
    send.ready().await?;
    // distribution answers 404 for an OCI manifest the client did not say it accepts.
    let req = Request::get(&w.path)
        .header("host", "load")
        .header("accept", crate::data::MANIFEST_TYPE)
        .body(Empty::new())?;
    let resp = send.send_request(req).await?;
    if resp.status() != StatusCode::OK {
        bail!("{}: {}", w.path, resp.status());
    }
    let mut body = resp.into_body();
    let mut got = 0u64;
    while let Some(frame) = body.frame().await {
        if let Some(d) = frame?.data_ref() {
            got += d.len() as u64;
        }
    }
    if got != w.len {
        bail!("{}: {got} bytes, expected {}", w.path, w.len);
    }
    Ok(())
}

/// GETs each of `warm` once, so it is cached.
async fn warm(addr: SocketAddr, warm: &[Wanted]) -> anyhow::Result<()> {
    let mut send = connect(addr).await?;
    for w in warm {
        fetch(&mut send, w).await?;
    }
    Ok(())
}

/// One run of [`held`].
#[derive(Debug, Clone, Copy)]
pub struct HeldRun {
    /// Time to open them all, each answered once.
    pub open: Duration,
    /// Descriptors of the server before.
    pub base_fds: usize,
    /// Peaks while opening and holding.
    pub peaks: Peaks,
    /// Health while opening and holding.
    pub health: Health,
}

/// Opens `n` connections, each GETs `small` once and then idles, holds them for [`HOLD`].
pub async fn held(bed: &Bed, kind: Kind, n: usize, small: &Wanted) -> anyhow::Result<HeldRun> {
    let target = Target::start(kind, bed.origin, &bed.work)?;
    let (addr, pid) = (target.addr, pid(&target)?);
    warm(addr, std::slice::from_ref(small)).await?;
    let base_fds = crate::watch::fds(pid);
    let sampler = Sampler::start(pid);
    let health = HealthPoller::start(addr, health_path(kind));
    let start = Instant::now();
    let mut opening = JoinSet::new();
    for _ in 0..n {
        let small = small.clone();
        opening.spawn(async move {
            let mut send = connect(addr).await?;
            fetch(&mut send, &small).await?;
            anyhow::Ok(send)
        });
    }
    let held = tokio::time::timeout(PHASE_LIMIT, opening.join_all())
        .await
        .context("opening connections timed out")?
        .into_iter()
        .collect::<anyhow::Result<Vec<_>>>()?;
    let open = start.elapsed();
    tokio::time::sleep(HOLD).await;
    let peaks = sampler.stop();
    let health = health.stop();
    drop(held);
    target.stop();
    Ok(HeldRun {
        open,
        base_fds,
        peaks,
        health,
    })
}

/// One run of [`burst`].
#[derive(Debug, Clone)]
pub struct BurstRun {
    /// Requests answered correctly.
    pub requests: usize,
    /// Wall time of the burst.
    pub took: Duration,
    /// Latencies, sorted.
    pub latencies: Vec<Duration>,
    /// Peaks during the burst.
    pub peaks: Peaks,
    /// Health during the burst.
    pub health: Health,
}

/// Warms `mix`, then sends `requests` GETs cycling through it over `connections` keep-alive
/// connections, each sending its share one after another.
pub async fn burst(
    bed: &Bed,
    kind: Kind,
    requests: usize,
    connections: usize,
    mix: &[Wanted],
) -> anyhow::Result<BurstRun> {
    let target = Target::start(kind, bed.origin, &bed.work)?;
    let (addr, pid) = (target.addr, pid(&target)?);
    warm(addr, mix).await?;
    // nginx answers the first requests after a fill from its cache only once the entry is
    // written; a second pass makes both sides equally hot.
    warm(addr, mix).await?;
    let mix: Arc<[Wanted]> = mix.into();
    let sampler = Sampler::start(pid);
    let health = HealthPoller::start(addr, health_path(kind));
    let start = Instant::now();
    let mut clients = JoinSet::new();
    for c in 0..connections {
        let share = requests / connections + usize::from(c < requests % connections);
        let mix = mix.clone();
        clients.spawn(async move {
            let mut send = connect(addr).await?;
            let mut latencies = Vec::with_capacity(share);
            for r in 0..share {
                let w = &mix[(c * 7 + r * 13) % mix.len()];
                let t = Instant::now();
                fetch(&mut send, w).await?;
                latencies.push(t.elapsed());
            }
            anyhow::Ok(latencies)
        });
    }
    let all = tokio::time::timeout(PHASE_LIMIT, clients.join_all())
        .await
        .context("burst timed out")?;
    let took = start.elapsed();
    let peaks = sampler.stop();
    let health = health.stop();
    target.stop();
    let mut latencies = Vec::with_capacity(requests);
    for l in all {
        latencies.extend(l?);
    }
    latencies.sort();
    Ok(BurstRun {
        requests: latencies.len(),
        took,
        latencies,
        peaks,
        health,
    })
}

/// One run of [`slow`].
#[derive(Debug, Clone, Copy)]
pub struct SlowRun {
    /// One reader alone on a fresh target: time for the whole uncached blob.
    pub alone: Duration,
    /// The fast reader among the slow ones: from its request to its last byte.
    pub fast: Duration,
    /// The most any slow reader had read when the fast one finished.
    pub slow_max_bytes: u64,
    /// Server memory before the readers came.
    pub base_rss_bytes: u64,
    /// Peaks while the slow readers were connected.
    pub peaks: Peaks,
    /// Health meanwhile.
    pub health: Health,
}

/// Reads a response at [`SLOW_READ_BYTES`] per [`SLOW_PAUSE`] until it ends or is aborted.
async fn slow_reader(addr: SocketAddr, path: String, read: Arc<AtomicU64>) -> anyhow::Result<()> {
    let socket = TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(SLOW_RCVBUF_BYTES)?;
    let mut s = socket.connect(addr).await?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: load\r\n\r\n").as_bytes())
        .await?;
    let mut buf = vec![0u8; SLOW_READ_BYTES];
    loop {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        read.fetch_add(n as u64, Ordering::Relaxed);
        tokio::time::sleep(SLOW_PAUSE).await;
    }
}

/// The uncached `big` blob: first one reader alone on a fresh target; then, on another fresh
/// target, `readers` slow readers and, [`SLOW_HEAD_START`] later, one fast reader.
pub async fn slow(bed: &Bed, kind: Kind, readers: usize, big: &Wanted) -> anyhow::Result<SlowRun> {
    let alone = {
        let target = Target::start(kind, bed.origin, &bed.work)?;
        let start = Instant::now();
        let mut send = connect(target.addr).await?;
        tokio::time::timeout(PHASE_LIMIT, fetch(&mut send, big))
            .await
            .context("single reader timed out")??;
        let took = start.elapsed();
        target.stop();
        took
    };
    let target = Target::start(kind, bed.origin, &bed.work)?;
    let (addr, pid) = (target.addr, pid(&target)?);
    let base_rss_bytes = stampede_lab::process::status_kib(pid, "VmRSS").unwrap_or(0) * 1024;
    let sampler = Sampler::start(pid);
    let health = HealthPoller::start(addr, health_path(kind));
    let progress: Vec<Arc<AtomicU64>> = (0..readers).map(|_| Arc::default()).collect();
    let mut slow = JoinSet::new();
    for read in &progress {
        slow.spawn(slow_reader(addr, big.path.clone(), read.clone()));
    }
    tokio::time::sleep(SLOW_HEAD_START).await;
    let start = Instant::now();
    let mut send = connect(addr).await?;
    tokio::time::timeout(PHASE_LIMIT, fetch(&mut send, big))
        .await
        .context("fast reader timed out")??;
    let fast = start.elapsed();
    let slow_max_bytes = progress
        .iter()
        .map(|p| p.load(Ordering::Relaxed))
        .max()
        .unwrap_or(0);
    // Keep them connected a moment after the fill, then check none failed.
    tokio::time::sleep(Duration::from_secs(1)).await;
    if let Some(ended) = slow.try_join_next() {
        ended?.context("a slow reader failed")?;
    }
    let peaks = sampler.stop();
    let health = health.stop();
    drop(slow);
    target.stop();
    Ok(SlowRun {
        alone,
        fast,
        slow_max_bytes,
        base_rss_bytes,
        peaks,
        health,
    })
}
