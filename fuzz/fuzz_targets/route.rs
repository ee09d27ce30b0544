//! `Route::parse` on arbitrary method, path and query, and `ByteRange::parse` + `resolve` on an
//! arbitrary `Range` value and blob length.
//!
//! Properties: only GET/HEAD parse, anything else is a 405; every refusal is a 4xx; a parsed
//! blob or manifest route displays back to exactly the path it came from (nothing was decoded,
//! dropped or normalised on the way), and the blob's store path stays under the store's
//! `blobs/` with only normal components; a resolved range is a non-empty span inside the blob,
//! and every range refusal is a 416.

#![no_main]

use std::path::{Component, Path, PathBuf};

use cache_daemon::route::{Parsed, Route};
use cache_daemon::store::layout::Layout;
use http::Method;
use libfuzzer_sys::fuzz_target;
use stampede_oci::api::ByteRange;

/// The input, one field per line so seeds and regression files stay readable:
/// method, path, query (absent when the line is missing), `Range` value, blob length.
#[derive(Debug)]
struct Input<'a> {
    method: &'a [u8],
    path: &'a str,
    query: Option<&'a str>,
    range: &'a str,
    len_bytes: u64,
}

impl<'a> Input<'a> {
    fn split(data: &'a [u8]) -> Option<Self> {
        let mut lines = data.splitn(5, |&b| b == b'\n');
        let method = lines.next()?;
        let path = std::str::from_utf8(lines.next()?).ok()?;
        let query = lines.next().map(std::str::from_utf8).transpose().ok()?;
        let range = lines.next().map_or(Ok(""), std::str::from_utf8).ok()?;
        let len_bytes = lines.next().map_or(0, |l| {
            let mut buf = [0u8; 8];
            let n = l.len().min(8);
            buf[..n].copy_from_slice(&l[..n]);
            u64::from_le_bytes(buf)
        });
        Some(Self {
            method,
            path,
            query,
            range,
            len_bytes,
        })
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(input) = Input::split(data) else {
        return;
    };
    check_route(&input);
    check_range(input.range, input.len_bytes);
});

fn check_route(input: &Input<'_>) {
    let Ok(method) = Method::from_bytes(input.method) else {
        return;
    };
    let served = method == Method::GET || method == Method::HEAD;
    match Route::parse(&method, input.path, input.query) {
        Err(e) => {
            let status = e.status().as_u16();
            assert!((400..500).contains(&status), "{e}: {status}");
            if !served {
                assert_eq!(status, 405, "{method}");
            }
        }
        Ok(Parsed { route, head }) => {
            assert!(served, "{method} parsed");
            assert_eq!(head, method == Method::HEAD);
            let path = input.path;
            match route {
                Route::Base => assert!(path == "/v2" || path == "/v2/"),
                Route::Health => assert_eq!(path, "/healthz"),
                Route::Metrics => {
                    assert_eq!(path, "/metrics");
                    assert!(!head);
                }
                Route::Blob { repo, digest, ns } => {
                    assert_eq!(path, format!("/v2/{repo}/blobs/{digest}"));
                    assert!(ns.is_none_or(|n| !n.is_empty()));
                    let root = PathBuf::from("/store");
                    let file = Layout::new(root.clone()).blob_path(&digest);
                    assert!(file.starts_with(root.join("blobs")), "{}", file.display());
                    assert!(only_normal(file.strip_prefix(&root).unwrap()));
                }
                Route::Manifest {
                    repo,
                    reference,
                    ns,
                } => {
                    assert_eq!(path, format!("/v2/{repo}/manifests/{reference}"));
                    assert!(ns.is_none_or(|n| !n.is_empty()));
                    assert!(!repo
                        .as_str()
                        .split('/')
                        .any(|c| c.is_empty() || c == "." || c == ".."));
                }
            }
        }
    }
}

fn only_normal(p: &Path) -> bool {
    p.components().all(|c| matches!(c, Component::Normal(_)))
}

fn check_range(value: &str, len_bytes: u64) {
    match ByteRange::parse(value) {
        Err(e) => assert_eq!(cache_daemon::error::Error::from(e).status().as_u16(), 416),
        Ok(None) => {}
        Ok(Some(range)) => {
            if let ByteRange::From {
                first,
                last: Some(last),
            } = range
            {
                assert!(first <= last);
            }
            match range.resolve(len_bytes) {
                Ok((start, end)) => {
                    assert!(
                        start < end && end <= len_bytes,
                        "{value} on {len_bytes}: {start}..{end}"
                    );
                    if let ByteRange::From { first, .. } = range {
                        assert_eq!(start, first);
                    }
                }
                Err(e) => assert_eq!(cache_daemon::error::Error::from(e).status().as_u16(), 416),
            }
        }
    }
}
