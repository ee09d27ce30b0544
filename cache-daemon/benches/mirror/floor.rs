//! The floor of a verified cold fill: the least work any cache that verifies what it serves
//! must do for one cold blob and one client, done by the simplest program that does it, so the
//! cold scenario can say how far each cache is above it on this machine.
//!
//! One thread, blocking calls, no HTTP library: it takes one client's GET, asks the origin for
//! the blob, and for every socket read of at most [`READ_BYTES`] (one receive copy) hashes the
//! bytes (one sha256), writes them to a temp file (one write) and sends the new range to the
//! client with `sendfile` (one kernel send, as the daemon and nginx do); at the end it `fsync`s
//! the file and checks the digest. It keeps nothing, answers nothing else, handles no error
//! beyond saying what went wrong, and speaks only the HTTP/1.1 the bench's own client and the
//! origin use. Its CPU time is its thread's, from `/proc/thread-self/schedstat` (nanoseconds on
//! a CPU, softirq work done on its behalf included, as for the targets' processes).

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{bail, Context as _};

use stampede_oci::digest::Hasher;
use stampede_oci::Digest;

/// Bytes one socket read takes at most (about what hyper's reads reach off a fast link).
pub const READ_BYTES: usize = 512 * 1024;
/// Longest any socket call may block.
const IO_LIMIT: Duration = Duration::from_secs(60);
/// Longest a request or response head may be.
const HEAD_LIMIT: usize = 16 * 1024;

/// What one floor fill did.
#[derive(Debug, Clone, Copy)]
pub struct FloorFill {
    /// Bytes received, hashed, written and sent.
    pub bytes: u64,
    /// CPU seconds of the floor's thread from the client's request to the verified, synced file.
    pub cpu_secs: f64,
}

/// A floor server waiting for its one client.
#[derive(Debug)]
pub struct Floor {
    /// Where the client connects.
    pub addr: SocketAddr,
    thread: JoinHandle<anyhow::Result<FloorFill>>,
}

impl Floor {
    /// Listens on a free loopback port; the fill of `path` from `origin` (expected to be
    /// `digest`) starts when the client's GET comes, into a temp file under `dir`.
    ///
    /// # Errors
    /// No port can be bound.
    pub fn start(
        origin: SocketAddr,
        path: &str,
        digest: Digest,
        dir: &Path,
    ) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").context("bind the floor's port")?;
        let addr = listener.local_addr()?;
        let (path, dir) = (path.to_owned(), dir.to_owned());
        let thread = std::thread::Builder::new()
            .name("floor".into())
            .spawn(move || serve_one(&listener, origin, &path, &digest, &dir))?;
        Ok(Self { addr, thread })
    }

    /// Waits for the fill to end.
    ///
    /// # Errors
    /// The fill failed; the error says where.
    pub fn finish(self) -> anyhow::Result<FloorFill> {
        match self.thread.join() {
            Ok(result) => result,
            Err(_) => bail!("the floor's thread panicked"),
        }
    }
}

/// CPU seconds this thread has been on a CPU.
fn thread_cpu_secs() -> anyhow::Result<f64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat")
        .context("read /proc/thread-self/schedstat")?;
    let ns: u64 = s
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .context("/proc/thread-self/schedstat has no CPU time")?;
    Ok(ns as f64 / 1e9)
}

/// Reads from `stream` into `buf` until a blank line ends an HTTP head; returns the head's
/// length and the bytes read.
fn read_head(stream: &mut TcpStream, buf: &mut [u8], who: &str) -> anyhow::Result<(usize, usize)> {
    let limit = HEAD_LIMIT.min(buf.len());
    let mut have = 0;
    loop {
        if let Some(end) = buf[..have].windows(4).position(|w| w == b"\r\n\r\n") {
            return Ok((end + 4, have));
        }
        if have >= limit {
            bail!("{who} sent a head longer than {limit} bytes");
        }
        let n = stream
            .read(&mut buf[have..limit])
            .with_context(|| format!("read {who}'s head"))?;
        if n == 0 {
            bail!("{who} closed the connection before its head ended");
        }
        have += n;
    }
}

/// The status code and `Content-Length` of a response head.
fn parse_response(head: &[u8]) -> anyhow::Result<(u16, Option<u64>)> {
    let head = std::str::from_utf8(head).context("the origin's head is not text")?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .context("the origin's status line has no status code")?;
    let len = lines.find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse().ok())
            .flatten()
    });
    Ok((status, len))
}

fn serve_one(
    listener: &TcpListener,
    origin: SocketAddr,
    path: &str,
    digest: &Digest,
    dir: &Path,
) -> anyhow::Result<FloorFill> {
    let (mut client, _) = listener.accept().context("accept the client")?;
    client.set_read_timeout(Some(IO_LIMIT))?;
    client.set_write_timeout(Some(IO_LIMIT))?;
    let mut buf = vec![0u8; READ_BYTES];
    read_head(&mut client, &mut buf, "the client")?;
    let cpu_start = thread_cpu_secs()?;

    let mut upstream = TcpStream::connect_timeout(&origin, IO_LIMIT)
        .with_context(|| format!("connect to the origin at {origin}"))?;
    upstream.set_read_timeout(Some(IO_LIMIT))?;
    upstream.set_nodelay(true)?;
    write!(
        upstream,
        "GET {path} HTTP/1.1\r\nHost: {origin}\r\nConnection: close\r\n\r\n"
    )
    .context("send the GET to the origin")?;
    let (head_len, have) = read_head(&mut upstream, &mut buf, "the origin")?;
    let (status, len) = parse_response(&buf[..head_len])?;
    if status != 200 {
        bail!("the origin answered {status} for {path}");
    }
    let len = len.context("the origin's 200 has no Content-Length")?;
    write!(client, "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n")
        .context("send the head to the client")?;

    let file = tempfile::tempfile_in(dir).context("create the floor's temp file")?;
    let mut hasher = Hasher::new();
    buf.copy_within(head_len..have, 0);
    let mut n = have - head_len;
    let (mut got, mut sent) = (0u64, 0u64);
    loop {
        if got + n as u64 > len {
            bail!("the origin sent more than its Content-Length of {len} bytes");
        }
        hasher.update(&buf[..n]);
        (&file)
            .write_all(&buf[..n])
            .context("write the temp file")?;
        got += n as u64;
        while sent < got {
            let mut at = sent;
            let want = usize::try_from(got - sent).unwrap_or(usize::MAX);
            let k = rustix::fs::sendfile(&client, &file, Some(&mut at), want)
                .context("sendfile to the client")?;
            if k == 0 {
                bail!("the client took no more bytes");
            }
            sent += k as u64;
        }
        if got == len {
            break;
        }
        n = upstream.read(&mut buf).context("read the origin's body")?;
        if n == 0 {
            bail!("the origin closed the connection after {got} of {len} bytes");
        }
    }
    file.sync_all().context("fsync the temp file")?;
    if hasher.finish() != *digest {
        bail!("the bytes the origin sent do not match {digest}");
    }
    Ok(FloorFill {
        bytes: got,
        cpu_secs: thread_cpu_secs()? - cpu_start,
    })
}
