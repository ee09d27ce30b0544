//! Request routing: method, path and query parsed once into a [`Route`], then dispatched by
//! `handler.rs`. Pure: no I/O, no state. Anything malformed becomes the [`Error`] the client
//! will see (`NAME_INVALID`, `DIGEST_INVALID`, ...).

use http::Method;
use percent_encoding::percent_decode_str;

use stampede_oci::{Digest, DigestError, Reference, ReferenceError, RepoName};

use crate::error::Error;

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `GET|HEAD /v2/`: API version check.
    Base,
    /// `GET|HEAD /v2/<name>/manifests/<reference>`.
    Manifest {
        /// Repository.
        repo: RepoName,
        /// Tag or digest.
        reference: Reference,
        /// Origin registry from containerd's `?ns=` query, if given.
        ns: Option<String>,
    },
    /// `GET|HEAD /v2/<name>/blobs/<digest>`.
    Blob {
        /// Repository (used only to ask the upstream; blobs are shared across repositories).
        repo: RepoName,
        /// The blob.
        digest: Digest,
        /// Origin registry from `?ns=`, if given.
        ns: Option<String>,
    },
    /// `GET /metrics`: Prometheus text.
    Metrics,
    /// `GET /healthz`: liveness and readiness.
    Health,
}

/// A parsed request: the route and whether only headers are wanted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// What is asked for.
    pub route: Route,
    /// `HEAD`: headers only.
    pub head: bool,
}

impl Route {
    /// Parses `method` + `path` (+ raw `query`).
    ///
    /// # Errors
    /// The client-facing [`Error`] for an unknown path, a disallowed method or malformed parts.
    pub fn parse(method: &Method, path: &str, query: Option<&str>) -> Result<Parsed, Error> {
        let head = match *method {
            Method::GET => false,
            Method::HEAD => true,
            _ => return Err(Error::MethodNotAllowed),
        };
        let route = match path {
            "/v2" | "/v2/" => Self::Base,
            "/metrics" if !head => Self::Metrics,
            "/healthz" => Self::Health,
            _ => {
                let rest = path.strip_prefix("/v2/").ok_or(Error::NotFound)?;
                let mut parts = rest.rsplitn(3, '/');
                let (Some(last), Some(kind), Some(name)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    return Err(Error::NotFound);
                };
                let ns = query.and_then(ns_param);
                match kind {
                    "manifests" => Self::Manifest {
                        repo: parse_name(name)?,
                        reference: Reference::parse(last).map_err(reference_error)?,
                        ns,
                    },
                    "blobs" => Self::Blob {
                        repo: parse_name(name)?,
                        digest: Digest::parse(last).map_err(digest_error)?,
                        ns,
                    },
                    _ => return Err(Error::NotFound),
                }
            }
        };
        Ok(Parsed { route, head })
    }
}

fn parse_name(name: &str) -> Result<RepoName, Error> {
    RepoName::parse(name).map_err(|_| Error::NameInvalid(name.chars().take(160).collect()))
}

fn digest_error(e: DigestError) -> Error {
    match e {
        DigestError::Malformed(s) => Error::DigestInvalid(s),
        DigestError::Unsupported(s) => Error::Unsupported(s),
    }
}

fn reference_error(e: ReferenceError) -> Error {
    match e {
        ReferenceError::Digest(d) => digest_error(d),
        ReferenceError::Tag(s) | ReferenceError::Name(s) | ReferenceError::Registry(s) => {
            Error::ReferenceInvalid(s)
        }
    }
}

/// The decoded `ns` query parameter, if present and non-empty.
fn ns_param(query: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == "ns")
            .then(|| percent_decode_str(v).decode_utf8_lossy().into_owned())
            .filter(|v| !v.is_empty())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest() -> String {
        format!("sha256:{}", "ab".repeat(32))
    }

    #[test]
    fn parse_table() {
        let d = digest();
        let ok: Vec<(Method, String, Option<&str>, Route, bool)> = vec![
            (Method::GET, "/v2/".into(), None, Route::Base, false),
            (Method::HEAD, "/v2".into(), None, Route::Base, true),
            (Method::GET, "/metrics".into(), None, Route::Metrics, false),
            (Method::GET, "/healthz".into(), None, Route::Health, false),
            (
                Method::GET,
                format!("/v2/test/app/blobs/{d}"),
                Some("ns=127.0.0.1%3A5000"),
                Route::Blob {
                    repo: RepoName::parse("test/app").unwrap(),
                    digest: Digest::parse(&d).unwrap(),
                    ns: Some("127.0.0.1:5000".into()),
                },
                false,
            ),
            (
                Method::HEAD,
                "/v2/a/blobs/b/manifests/v1".into(),
                Some("x=1&ns="),
                Route::Manifest {
                    repo: RepoName::parse("a/blobs/b").unwrap(),
                    reference: Reference::Tag("v1".into()),
                    ns: None,
                },
                true,
            ),
            (
                Method::GET,
                format!("/v2/library/alpine/manifests/{d}"),
                None,
                Route::Manifest {
                    repo: RepoName::parse("library/alpine").unwrap(),
                    reference: Reference::parse(&d).unwrap(),
                    ns: None,
                },
                false,
            ),
        ];
        for (method, path, query, route, head) in ok {
            let got = Route::parse(&method, &path, query).unwrap_or_else(|e| panic!("{path}: {e}"));
            assert_eq!(got, Parsed { route, head }, "{path}");
        }
    }

    #[test]
    fn refusals_table() {
        let d = digest();
        let cases: Vec<(Method, String, &str)> = vec![
            (Method::POST, "/v2/".into(), "UNSUPPORTED"),
            (Method::DELETE, format!("/v2/a/blobs/{d}"), "UNSUPPORTED"),
            (Method::GET, "/v2/a/blobs/x".into(), "DIGEST_INVALID"),
            (Method::GET, format!("/v2/Upper/blobs/{d}"), "NAME_INVALID"),
            (
                Method::GET,
                format!("/v2/../../etc/blobs/{d}"),
                "NAME_INVALID",
            ),
            (
                Method::GET,
                format!("/v2/a/%2e%2e/blobs/{d}"),
                "NAME_INVALID",
            ),
            (
                Method::GET,
                "/v2/a/blobs/sha256:../../etc/passwd".into(),
                "NAME_UNKNOWN",
            ),
            (Method::GET, "/v2/a/blobs/md5:abc".into(), "UNSUPPORTED"),
            (
                Method::GET,
                "/v2/a/manifests/-bad".into(),
                "MANIFEST_INVALID",
            ),
            (Method::GET, "/v2/a/tags/list".into(), "NAME_UNKNOWN"),
            (Method::GET, "/v2/blobs".into(), "NAME_UNKNOWN"),
            (Method::GET, "/etc/passwd".into(), "NAME_UNKNOWN"),
            (Method::HEAD, "/metrics".into(), "NAME_UNKNOWN"),
        ];
        for (method, path, code) in cases {
            let err = Route::parse(&method, &path, None).expect_err(&path);
            assert_eq!(err.code(), code, "{method} {path}: {err}");
        }
    }
}
