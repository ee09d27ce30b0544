//! Request routing: method, path and query parsed once into a [`Route`], then dispatched by
//! `handler.rs`. The pull API's grammar is `stampede_oci::api`'s; this thin layer adds the
//! daemon's endpoints (`/metrics`, `/healthz`), containerd's `?ns=` and the client's error. Pure: no I/O, no state. Anything malformed becomes the [`Error`] the client
//! will see (`NAME_INVALID`, `DIGEST_INVALID`, ...).

use http::Method;
use percent_encoding::percent_decode_str;

use stampede_oci::api::{Route as ApiRoute, RouteError};
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
    /// Parses `method` + `path` (+ raw `query`). The pull API's paths are
    /// [`stampede_oci::api::Route`]'s grammar; this adds the daemon's own endpoints, the `ns`
    /// query and the client-facing error of each refusal.
    ///
    /// # Errors
    /// The client-facing [`Error`] for an unknown path, a disallowed method or malformed parts.
    pub fn parse(method: &Method, path: &str, query: Option<&str>) -> Result<Parsed, Error> {
        let head = match *method {
            Method::GET => false,
            Method::HEAD => true,
            _ => return Err(Error::MethodNotAllowed),
        };
        let ns = || query.and_then(ns_param).map(checked_ns).transpose();
        let route = match path {
            "/metrics" if !head => Self::Metrics,
            "/healthz" => Self::Health,
            _ => match ApiRoute::parse(path).map_err(route_error)? {
                ApiRoute::Base => Self::Base,
                ApiRoute::Manifest { repo, reference } => Self::Manifest {
                    repo,
                    reference,
                    ns: ns()?,
                },
                ApiRoute::Blob { repo, digest } => Self::Blob {
                    repo,
                    digest,
                    ns: ns()?,
                },
            },
        };
        Ok(Parsed { route, head })
    }
}

fn route_error(e: RouteError) -> Error {
    match e {
        RouteError::Unknown => Error::NotFound,
        RouteError::Name(name) => Error::NameInvalid(name),
        RouteError::Digest(d) | RouteError::Reference(ReferenceError::Digest(d)) => digest_error(d),
        RouteError::Reference(
            ReferenceError::Tag(s) | ReferenceError::Name(s) | ReferenceError::Registry(s),
        ) => Error::ReferenceInvalid(s),
    }
}

fn digest_error(e: DigestError) -> Error {
    match e {
        DigestError::Malformed(s) => Error::DigestInvalid(s),
        DigestError::Unsupported(s) => Error::Unsupported(s),
    }
}

/// Longest `ns` accepted: a DNS name (253) and a port.
const MAX_NS_CHARS: usize = 253 + 6;

/// `ns` when it is a plain `host[:port]` (a DNS name or IPv4 address, or a bracketed IPv6
/// address): no path, user info or other punctuation, so that it names one registry and a
/// repository label built from it cannot be spelled two ways.
///
/// # Errors
/// [`Error::NsInvalid`] otherwise.
fn checked_ns(ns: String) -> Result<String, Error> {
    let (host, port) = match ns.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((v6, after))
                if !v6.is_empty()
                    && v6
                        .chars()
                        .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.') =>
            {
                match after {
                    "" => (None, None),
                    p => (None, Some(p.strip_prefix(':'))),
                }
            }
            _ => return Err(ns_invalid(&ns)),
        },
        None => match ns.split_once(':') {
            Some((h, p)) => (Some(h), Some(Some(p))),
            None => (Some(ns.as_str()), None),
        },
    };
    let host_ok = host.is_none_or(|h| {
        !h.is_empty()
            && h.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            })
    });
    let port_ok = port.is_none_or(|p| {
        p.is_some_and(|p| !p.is_empty() && p.len() <= 5 && p.chars().all(|c| c.is_ascii_digit()))
    });
    if host_ok && port_ok && ns.len() <= MAX_NS_CHARS {
        Ok(ns)
    } else {
        Err(ns_invalid(&ns))
    }
}

fn ns_invalid(ns: &str) -> Error {
    Error::NsInvalid(ns.chars().take(160).collect())
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
            (
                Method::GET,
                format!("/v2/a/blobs/{d}?ns=reg/team"),
                "NAME_INVALID",
            ),
            (Method::GET, "/v2/blobs".into(), "NAME_UNKNOWN"),
            (Method::GET, "/etc/passwd".into(), "NAME_UNKNOWN"),
            (Method::HEAD, "/metrics".into(), "NAME_UNKNOWN"),
        ];
        for (method, path, code) in cases {
            let (path, query) = match path.split_once('?') {
                Some((p, q)) => (p.to_owned(), Some(q)),
                None => (path.clone(), None),
            };
            let err = Route::parse(&method, &path, query).expect_err(&path);
            assert_eq!(err.code(), code, "{method} {path}: {err}");
        }
    }

    /// `ns` names one registry as `host[:port]`; anything that could alias a repository label
    /// (`reg/team` + `app` is `reg` + `team/app`) or smuggle other parts is refused.
    #[test]
    fn ns_must_be_a_plain_host_and_port() {
        for good in [
            "docker.io",
            "registry-1.docker.io",
            "127.0.0.1:5000",
            "localhost",
            "localhost:5000",
            "[::1]:5000",
            "[::1]",
            "my-registry.example.com",
        ] {
            assert_eq!(checked_ns(good.to_owned()).unwrap(), good, "{good}");
        }
        for bad in [
            "reg/team",
            "reg:5000/team",
            "user@reg",
            "reg:",
            "reg:http",
            "reg:123456",
            ":5000",
            "reg..example",
            ".reg",
            "-reg.example",
            "reg example",
            "reg?x",
            "reg#x",
            "[::1",
            "[]:1",
            "[::1]x",
            "reg\\team",
            "re%2fg",
        ] {
            let err = checked_ns(bad.to_owned()).expect_err(bad);
            assert_eq!(err.code(), "NAME_INVALID", "{bad}");
            assert_eq!(err.status(), http::StatusCode::BAD_REQUEST, "{bad}");
        }
        let long = format!("{}.example", "a".repeat(300));
        assert!(checked_ns(long).is_err());
    }
}
