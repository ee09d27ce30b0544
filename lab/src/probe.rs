//! Waiting until a server answers HTTP: a plain `GET /v2/` over a fresh TCP connection, any
//! status counts, every attempt and the whole wait bounded. While waiting, the server's process
//! is watched, so one that exits (a port taken, a bad config) fails at once with its log instead
//! of after the timeout. Blocking; async callers run it on a blocking thread.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::error::LabError;
use crate::process::Proc;

/// Longest wait for one connect or one answer.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause between attempts.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// The HTTP status `addr` answers `GET path` with, if it answers within [`ATTEMPT_TIMEOUT`].
pub fn status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect_timeout(&addr, ATTEMPT_TIMEOUT).ok()?;
    stream.set_read_timeout(Some(ATTEMPT_TIMEOUT)).ok()?;
    stream.set_write_timeout(Some(ATTEMPT_TIMEOUT)).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 64];
    let mut got = 0;
    // "HTTP/1.1 200" is 12 bytes; read until we have them or the peer closes.
    while got < 12 {
        match stream.read(&mut head[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    std::str::from_utf8(&head[..got])
        .ok()?
        .strip_prefix("HTTP/1.")?
        .get(2..5)?
        .parse()
        .ok()
}

/// Waits until `proc` answers `GET /v2/` on `addr`.
///
/// # Errors
/// [`LabError::Exited`] when the process exits first, [`LabError::NotReady`] when it does not
/// answer within `limit`; both name `log`.
pub fn wait_ready(
    proc: &mut Proc,
    addr: SocketAddr,
    log: &Path,
    limit: Duration,
) -> Result<(), LabError> {
    wait_ready_in(proc, None, addr, log, limit)
}

/// As [`wait_ready`], asking from inside network namespace `netns` when given (a server in a
/// node's namespace that listens on that namespace's loopback).
///
/// # Errors
/// As [`wait_ready`]; [`LabError::Socket`] when the namespace cannot be entered.
pub fn wait_ready_in(
    proc: &mut Proc,
    netns: Option<&str>,
    addr: SocketAddr,
    log: &Path,
    limit: Duration,
) -> Result<(), LabError> {
    let ask = || match netns {
        None => Ok(status(addr, "/v2/")),
        Some(ns) => crate::namespace::within(ns, "probe", || Ok(status(addr, "/v2/"))),
    };
    let start = Instant::now();
    loop {
        if let Some(status) = proc.exited() {
            return Err(LabError::Exited {
                what: proc.name().to_owned(),
                status,
                log: log.to_owned(),
            });
        }
        if ask()?.is_some() {
            return Ok(());
        }
        if start.elapsed() >= limit {
            return Err(LabError::NotReady {
                what: proc.name().to_owned(),
                addr,
                waited: limit,
                log: log.to_owned(),
            });
        }
        std::thread::sleep(RETRY_PAUSE);
    }
}

/// A free port on 127.0.0.1 (bound, then released: another process could take it in between,
/// which a server then reports by exiting, and [`wait_ready`] by failing at once).
///
/// Each pick is recorded in a machine-wide directory and not handed out again for two minutes,
/// so suites running side by side do not pick the same port in the moment between a pick and
/// its server's bind (a cluster test lost a daemon to that at load 30).
///
/// The port is picked at random below the kernel's ephemeral range
/// (`/proc/sys/net/ipv4/ip_local_port_range`), where neither outgoing connections nor other
/// processes' `:0` binds are given ports: a suite running beside another (or beside a burst's
/// thousands of client connections) then loses a released port only to another random pick,
/// not to the kernel's allocator, which hands out recently released ports readily. Falls back
/// to `:0` when that range is too small or nothing in it binds.
///
/// # Errors
/// [`LabError::Socket`] when no port can be bound.
pub fn free_loopback_addr() -> Result<SocketAddr, LabError> {
    const LOWEST_PORT: u16 = 10_000;
    const TRIES: u32 = 64;
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    if ephemeral_low > LOWEST_PORT + 1_000 {
        let span = u64::from(ephemeral_low - LOWEST_PORT);
        for attempt in 0..TRIES {
            let port = LOWEST_PORT + u16::try_from(random(attempt) % span).unwrap_or(0);
            if let Ok(listener) = std::net::TcpListener::bind(("127.0.0.1", port)) {
                if let Ok(addr) = listener.local_addr() {
                    if reserve(port) {
                        return Ok(addr);
                    }
                }
            }
        }
    }
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(|source| LabError::Socket {
            what: "bind 127.0.0.1:0 to find a free port".into(),
            source,
        })?;
    listener.local_addr().map_err(|source| LabError::Socket {
        what: "read a bound port".into(),
        source,
    })
}

/// Where picks are recorded machine-wide, one empty file per port.
const RESERVATIONS: &str = "/tmp/stampede-port-picks";
/// How long a pick keeps the port from other picks: far longer than any server takes to bind
/// a port it was given, far shorter than the range takes to run out.
const RESERVED_FOR: std::time::Duration = std::time::Duration::from_secs(120);

/// Records `port` as picked, unless another process (another suite beside this one) picked it
/// within [`RESERVED_FOR`]: a random pick is then lost only to a server that did not come from
/// a pick at all. A reservation that cannot be recorded (read-only `/tmp`) does not block the
/// pick.
fn reserve(port: u16) -> bool {
    let dir = std::path::Path::new(RESERVATIONS);
    if std::fs::create_dir_all(dir).is_err() {
        return true;
    }
    let file = dir.join(port.to_string());
    let fresh = || {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&file)
    };
    match fresh() {
        Ok(_) => true,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let stale = std::fs::metadata(&file)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > RESERVED_FOR);
            // Of two processes both finding it stale, only one re-creates it.
            stale && std::fs::remove_file(&file).is_ok() && fresh().is_ok()
        }
        Err(_) => true,
    }
}

/// A different pseudo-random number on every call (std's per-process random hash keys, the
/// time and a counter), enough to spread port picks; not for anything secret.
fn random(salt: u32) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(CALLS.fetch_add(1, Ordering::Relaxed));
    h.write_u32(salt);
    h.write_u32(std::process::id());
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_bindable_and_below_the_ephemeral_range() {
        let low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|r| r.split_whitespace().next()?.parse().ok())
            .unwrap_or(32_768);
        let ports: Vec<u16> = (0..20)
            .map(|_| free_loopback_addr().unwrap().port())
            .collect();
        for p in &ports {
            std::net::TcpListener::bind(("127.0.0.1", *p)).unwrap();
            if low > 11_000 {
                assert!((10_000..low).contains(p), "{p} not below {low}");
            }
        }
        let distinct: std::collections::BTreeSet<_> = ports.iter().collect();
        assert!(distinct.len() > 10, "{ports:?}");
    }

    #[test]
    fn reads_the_status_line() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            // Read the whole request first: closing with unread bytes sends a reset, which can
            // reach the client before the answer does.
            let mut req = Vec::new();
            let mut buf = [0u8; 256];
            while !req.ends_with(b"\r\n\r\n") {
                let n = s.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                req.extend_from_slice(&buf[..n]);
            }
            s.write_all(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n")
                .unwrap();
        });
        assert_eq!(status(addr, "/v2/"), Some(401));
        server.join().unwrap();
        assert_eq!(status(free_loopback_addr().unwrap(), "/v2/"), None);
    }
}
