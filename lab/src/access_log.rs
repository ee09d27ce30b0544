//! The access logs of the real servers, read as registry-side truth: distribution writes Apache
//! combined lines (`127.0.0.1 - - [date] "GET /v2/app/blobs/sha256:... HTTP/1.1" 200 21524541
//! "" "UA"`) between its logrus lines, and the nginx configuration here writes the same shape
//! with the cache status and upstream address appended (`... "UA" cache=MISS
//! up=10.231.4.1:5000`). Lines of any other shape are skipped.
//!
//! An [`AccessLog`] is read from a byte offset taken before a measurement, so one server's log
//! can be counted per burst; [`AccessCounts`] sums requests by [`RequestKind`] and blob digest,
//! and body bytes. Servers log a request when it ends, so [`AccessLog::wait_quiet`] waits for the
//! log to stop growing before counting.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use stampede_oci::api::RequestKind;
use stampede_oci::api::Route;

/// The digest of a `/v2/<name>/blobs/<digest>` path (as [`Route`] parses it), query ignored.
pub fn blob_digest(path: &str) -> Option<&str> {
    let path = path.split('?').next().unwrap_or(path);
    matches!(Route::parse(path), Ok(Route::Blob { .. }))
        .then(|| path.rsplit_once('/').map(|(_, digest)| digest))
        .flatten()
}

/// One access-log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessEntry {
    /// The client address as logged.
    pub client: String,
    /// The HTTP method.
    pub method: String,
    /// The request target, query included.
    pub path: String,
    /// The answer's status.
    pub status: u16,
    /// Body bytes sent (`-` counts as 0).
    pub bytes: u64,
    /// nginx's `$upstream_cache_status` (`MISS`, `HIT`, ...), when logged.
    pub cache_status: Option<String>,
    /// nginx's `$upstream_addr`, when logged and the request went upstream (`None` for an answer
    /// from the cache).
    pub upstream: Option<String>,
}

impl AccessEntry {
    /// Parses one line; `None` for anything that is not an access-log line.
    pub fn parse(line: &str) -> Option<Self> {
        let (client, rest) = line.split_once(' ')?;
        if client.is_empty() || !rest.starts_with("- ") {
            return None;
        }
        let (_, rest) = rest.split_once("] \"")?;
        let (request, rest) = rest.split_once('"')?;
        let mut request = request.split(' ');
        let (method, path) = (request.next()?, request.next()?);
        let mut fields = rest.split_whitespace();
        let status = fields.next()?.parse().ok()?;
        let bytes = match fields.next()? {
            "-" => 0,
            n => n.parse().ok()?,
        };
        // `key=value` fields after the last quoted field (the user agent), as nginx logs here.
        let tail = rest.rsplit_once('"').map_or("", |(_, t)| t);
        let field = |key: &str| {
            tail.split_whitespace()
                .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
                .filter(|v| !v.is_empty() && *v != "-")
                .map(str::to_owned)
        };
        Some(Self {
            client: client.to_owned(),
            method: method.to_owned(),
            path: path.to_owned(),
            status,
            bytes,
            cache_status: field("cache"),
            upstream: field("up"),
        })
    }

    /// What the request asked for.
    pub fn kind(&self) -> RequestKind {
        RequestKind::of(&self.method, &self.path)
    }
}

/// What one blob digest saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlobCounts {
    /// GETs answered 200 or 206.
    pub gets: u64,
    /// HEADs answered 200.
    pub heads: u64,
    /// Body bytes sent.
    pub bytes: u64,
}

/// Requests counted by kind and blob, and bytes, over some access-log entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessCounts {
    /// Requests by kind, any status.
    pub requests: BTreeMap<RequestKind, u64>,
    /// All body bytes sent.
    pub bytes_out: u64,
    /// Per blob digest, successful requests only.
    pub blobs: BTreeMap<String, BlobCounts>,
}

impl AccessCounts {
    /// Counts `entries`.
    pub fn of<'a>(entries: impl IntoIterator<Item = &'a AccessEntry>) -> Self {
        let mut c = Self::default();
        for e in entries {
            let kind = e.kind();
            *c.requests.entry(kind).or_default() += 1;
            c.bytes_out += e.bytes;
            let ok = (200..300).contains(&e.status);
            if let (Some(digest), true) = (blob_digest(&e.path), ok) {
                let b = c.blobs.entry(digest.to_owned()).or_default();
                match kind {
                    RequestKind::BlobGet => b.gets += 1,
                    RequestKind::BlobHead => b.heads += 1,
                    _ => {}
                }
                b.bytes += e.bytes;
            }
        }
        c
    }

    /// Requests of `kind`.
    pub fn count(&self, kind: RequestKind) -> u64 {
        self.requests.get(&kind).copied().unwrap_or(0)
    }

    /// Successful GETs of blob `digest`.
    pub fn blob_gets(&self, digest: &str) -> u64 {
        self.blobs.get(digest).map_or(0, |b| b.gets)
    }

    /// All requests.
    pub fn total(&self) -> u64 {
        self.requests.values().sum()
    }
}

/// How long the log must stay unchanged before it counts as quiet.
pub const QUIET: Duration = Duration::from_millis(1500);

/// A server's access log on disk.
#[derive(Debug, Clone)]
pub struct AccessLog {
    path: PathBuf,
}

impl AccessLog {
    /// The log at `path` (which may not exist yet).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its current length: pass it to [`AccessLog::since`] to read only what comes after.
    pub fn offset(&self) -> u64 {
        std::fs::metadata(&self.path).map_or(0, |m| m.len())
    }

    /// Every access-log entry written at or after byte `offset` (an unreadable log has none).
    pub fn since(&self, offset: u64) -> Vec<AccessEntry> {
        use std::io::{Read as _, Seek as _, SeekFrom};
        // Only the part written since: earlier bursts' lines are not read again.
        let mut text = Vec::new();
        if let Ok(mut f) = std::fs::File::open(&self.path) {
            if f.seek(SeekFrom::Start(offset)).is_ok() {
                let _ = f.read_to_end(&mut text);
            }
        }
        String::from_utf8_lossy(&text)
            .lines()
            .filter_map(AccessEntry::parse)
            .collect()
    }

    /// The counts of every entry written at or after byte `offset`.
    pub fn counts_since(&self, offset: u64) -> AccessCounts {
        AccessCounts::of(&self.since(offset))
    }

    /// Waits until the log has not grown for `quiet`, at most `limit`; returns whether it went
    /// quiet. Blocking.
    pub fn wait_quiet(&self, quiet: Duration, limit: Duration) -> bool {
        let start = Instant::now();
        let mut last = (self.offset(), Instant::now());
        while start.elapsed() < limit {
            std::thread::sleep(Duration::from_millis(100));
            let now = self.offset();
            if now != last.0 {
                last = (now, Instant::now());
            } else if last.1.elapsed() >= quiet {
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn parses_distribution_and_nginx_lines() {
        /// method, path prefix, status, bytes, cache status
        type Want<'a> = Option<(&'a str, &'a str, u16, u64, Option<&'a str>)>;
        let cases: [(String, Want<'_>); 5] = [
            (
                format!("127.0.0.1 - - [27/Nov/2026:00:01:31 +0000] \"GET /v2/test/app/blobs/{D} HTTP/1.1\" 200 21524541 \"\" \"Go-http-client/1.1\""),
                Some(("GET", "/v2/test/app/blobs/", 200, 21_524_541, None)),
            ),
            (
                "10.231.7.2 - - [27/Nov/2026:00:01:31 +0000] \"HEAD /v2/test/app/manifests/v1 HTTP/1.1\" 200 0 \"-\" \"skopeo\" cache=-".to_owned(),
                Some(("HEAD", "/v2/test/app/manifests/v1", 200, 0, None)),
            ),
            (
                format!("127.0.0.1 - - [27/Nov/2026:00:01:31 +0000] \"GET /v2/a/blobs/{D}?ns=127.0.0.1%3A5000 HTTP/1.1\" 200 12 \"-\" \"containerd/1.6.20~ds1\" cache=MISS up=10.231.4.1:5000"),
                Some(("GET", "/v2/a/blobs/", 200, 12, Some("MISS"))),
            ),
            (
                "time=\"2026-11-27T00:01:31Z\" level=info msg=\"response completed\" http.request.method=GET".to_owned(),
                None,
            ),
            (
                "127.0.0.1 - - [27/Nov/2026:00:01:31 +0000] \"GET /v2/ HTTP/1.1\" 200 - \"-\" \"curl\"".to_owned(),
                Some(("GET", "/v2/", 200, 0, None)),
            ),
        ];
        for (line, want) in cases {
            let got = AccessEntry::parse(&line);
            match (got, want) {
                (None, None) => {}
                (Some(e), Some((method, path, status, bytes, cache))) => {
                    assert_eq!(e.method, method, "{line}");
                    assert!(e.path.starts_with(path), "{line}");
                    assert_eq!((e.status, e.bytes), (status, bytes), "{line}");
                    assert_eq!(e.cache_status.as_deref(), cache, "{line}");
                    assert_eq!(e.upstream.is_some(), cache.is_some(), "{line}");
                }
                (got, want) => panic!("{line}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn classifies_requests() {
        let blob = format!("/v2/a/b/blobs/{D}");
        let cases = [
            ("GET", "/v2/", RequestKind::Ping),
            ("HEAD", "/v2/", RequestKind::Ping),
            ("GET", "/v2/a/manifests/v1", RequestKind::ManifestGet),
            (
                "HEAD",
                &format!("/v2/a/manifests/{D}"),
                RequestKind::ManifestHead,
            ),
            ("GET", blob.as_str(), RequestKind::BlobGet),
            ("HEAD", blob.as_str(), RequestKind::BlobHead),
            ("POST", "/v2/a/blobs/uploads/", RequestKind::Other),
            ("GET", "/v2/_catalog", RequestKind::Other),
            ("GET", "/metrics", RequestKind::Other),
        ];
        for (method, path, kind) in cases {
            assert_eq!(RequestKind::of(method, path), kind, "{method} {path}");
        }
        assert_eq!(blob_digest(&format!("{blob}?ns=x")), Some(D));
        assert_eq!(blob_digest("/v2/a/blobs/uploads/"), None);
    }

    #[test]
    fn counts_since_an_offset() {
        let dir = tempfile::tempdir().unwrap();
        let log = AccessLog::new(dir.path().join("access.log"));
        let line = |method: &str, path: &str, status: u16, bytes: u64| {
            format!("127.0.0.1 - - [27/Nov/2026:00:01:31 +0000] \"{method} {path} HTTP/1.1\" {status} {bytes} \"\" \"x\"\n")
        };
        let blob = format!("/v2/a/blobs/{D}");
        std::fs::write(log.path(), line("GET", &blob, 200, 10)).unwrap();
        let offset = log.offset();
        let more = [
            line("GET", &blob, 200, 10),
            line("GET", &blob, 404, 50),
            line("HEAD", &blob, 200, 0),
            line("GET", "/v2/a/manifests/v1", 200, 7),
            "level=info msg=noise\n".to_owned(),
        ]
        .concat();
        std::fs::write(
            log.path(),
            format!("{}{more}", std::fs::read_to_string(log.path()).unwrap()),
        )
        .unwrap();
        let c = log.counts_since(offset);
        assert_eq!(c.count(RequestKind::BlobGet), 2);
        assert_eq!(c.count(RequestKind::BlobHead), 1);
        assert_eq!(c.count(RequestKind::ManifestGet), 1);
        assert_eq!(c.total(), 4);
        assert_eq!(c.blob_gets(D), 1, "the 404 is not a served GET");
        assert_eq!(c.bytes_out, 67);
        assert_eq!(log.counts_since(0).blob_gets(D), 2);
    }
}
