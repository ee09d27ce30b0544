//! What a request to the embedded registry asks for: the pull API's paths parsed once into a
//! [`Route`], and `Range` headers parsed into a [`ByteRange`]. Pure functions, table-tested;
//! no I/O, no knowledge of what the registry holds.

use stampede_oci::{Digest, DigestError, Reference, ReferenceError, RepoName};

/// A pull API endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/v2/`
    Ping,
    /// `/v2/<name>/manifests/<tag|digest>`
    Manifest {
        /// Repository.
        repo: RepoName,
        /// Tag or digest.
        reference: Reference,
    },
    /// `/v2/<name>/blobs/<digest>`
    Blob {
        /// Repository.
        repo: RepoName,
        /// Blob digest.
        digest: Digest,
    },
}

/// Why a path is not a route we serve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// Not a pull API path (tags lists, uploads, anything else).
    #[error("no such endpoint")]
    Unknown,
    /// The repository name breaks the grammar.
    #[error("invalid repository name")]
    NameInvalid,
    /// The digest is malformed or of an unsupported algorithm.
    #[error("invalid digest")]
    DigestInvalid,
    /// The tag breaks the grammar.
    #[error("invalid tag")]
    TagInvalid,
}

impl Route {
    /// Parses a request path (without query). Whichever of `/manifests/` and `/blobs/` comes
    /// last splits name from reference, so names may contain those words as components.
    ///
    /// # Errors
    /// [`RouteError`] saying which part is wrong.
    pub fn parse(path: &str) -> Result<Self, RouteError> {
        if path == "/v2/" || path == "/v2" {
            return Ok(Self::Ping);
        }
        let rest = path.strip_prefix("/v2/").ok_or(RouteError::Unknown)?;
        let manifests = rest.rfind("/manifests/");
        let blobs = rest.rfind("/blobs/");
        match (manifests, blobs) {
            (Some(m), b) if b.is_none_or(|b| m > b) => {
                let repo = repo(&rest[..m])?;
                let reference =
                    Reference::parse(&rest[m + "/manifests/".len()..]).map_err(|e| match e {
                        ReferenceError::Digest(_) => RouteError::DigestInvalid,
                        _ => RouteError::TagInvalid,
                    })?;
                Ok(Self::Manifest { repo, reference })
            }
            (_, Some(b)) => {
                let repo = repo(&rest[..b])?;
                let digest = Digest::parse(&rest[b + "/blobs/".len()..])
                    .map_err(|_: DigestError| RouteError::DigestInvalid)?;
                Ok(Self::Blob { repo, digest })
            }
            _ => Err(RouteError::Unknown),
        }
    }
}

fn repo(name: &str) -> Result<RepoName, RouteError> {
    RepoName::parse(name).map_err(|_| RouteError::NameInvalid)
}

/// What part of a blob a `Range` header asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// No usable range: send everything with 200 (absent, malformed and multi-range headers
    /// are ignored, as RFC 9110 allows).
    Full,
    /// Bytes `start..=end` (inclusive, `end` clamped to the last byte): answer 206.
    Partial {
        /// First byte.
        start: u64,
        /// Last byte, inclusive.
        end: u64,
    },
    /// A well-formed range that misses the blob: answer 416.
    Unsatisfiable,
}

impl ByteRange {
    /// Parses `bytes=N-`, `bytes=N-M` or `bytes=-S` against a blob of `size_bytes`.
    pub fn parse(header: Option<&str>, size_bytes: u64) -> Self {
        let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
            return Self::Full;
        };
        if spec.contains(',') {
            return Self::Full;
        }
        let Some((first, last)) = spec.trim().split_once('-') else {
            return Self::Full;
        };
        let number = |s: &str| -> Option<u64> {
            let s = s.trim();
            (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .then(|| s.parse().ok())
                .flatten()
        };
        match (first.trim().is_empty(), number(first), number(last)) {
            // bytes=-S: the last S bytes.
            (true, _, Some(suffix)) => {
                if suffix == 0 || size_bytes == 0 {
                    Self::Unsatisfiable
                } else {
                    Self::Partial {
                        start: size_bytes.saturating_sub(suffix),
                        end: size_bytes - 1,
                    }
                }
            }
            (false, Some(start), None) if last.trim().is_empty() => {
                Self::from_bounds(start, u64::MAX, size_bytes)
            }
            (false, Some(start), Some(end)) if end >= start => {
                Self::from_bounds(start, end, size_bytes)
            }
            _ => Self::Full,
        }
    }

    fn from_bounds(start: u64, end: u64, size_bytes: u64) -> Self {
        if start >= size_bytes {
            Self::Unsatisfiable
        } else {
            Self::Partial {
                start,
                end: end.min(size_bytes - 1),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let d = format!("sha256:{}", "a".repeat(64));
        let repo = |s: &str| RepoName::parse(s).unwrap();
        let cases: Vec<(String, Result<Route, RouteError>)> = vec![
            ("/v2/".into(), Ok(Route::Ping)),
            ("/v2".into(), Ok(Route::Ping)),
            (
                "/v2/stampede/full/manifests/latest".into(),
                Ok(Route::Manifest {
                    repo: repo("stampede/full"),
                    reference: Reference::Tag("latest".into()),
                }),
            ),
            (
                format!("/v2/a/manifests/{d}"),
                Ok(Route::Manifest {
                    repo: repo("a"),
                    reference: Reference::parse(&d).unwrap(),
                }),
            ),
            (
                format!("/v2/a/blobs/x/blobs/{d}"),
                Ok(Route::Blob {
                    repo: repo("a/blobs/x"),
                    digest: Digest::parse(&d).unwrap(),
                }),
            ),
            (
                "/v2/a/blobs/b/manifests/v1".into(),
                Ok(Route::Manifest {
                    repo: repo("a/blobs/b"),
                    reference: Reference::Tag("v1".into()),
                }),
            ),
            ("/v2/A/manifests/v1".into(), Err(RouteError::NameInvalid)),
            ("/v2//manifests/v1".into(), Err(RouteError::NameInvalid)),
            ("/v2/a/manifests/.v1".into(), Err(RouteError::TagInvalid)),
            (
                "/v2/a/manifests/sha256:zz".into(),
                Err(RouteError::DigestInvalid),
            ),
            (
                "/v2/a/blobs/sha256:zz".into(),
                Err(RouteError::DigestInvalid),
            ),
            ("/v2/a/blobs/latest".into(), Err(RouteError::DigestInvalid)),
            ("/v2/a/tags/list".into(), Err(RouteError::Unknown)),
            (
                "/v2/a/blobs/uploads/".into(),
                Err(RouteError::DigestInvalid),
            ),
            ("/metrics".into(), Err(RouteError::Unknown)),
        ];
        for (path, want) in cases {
            assert_eq!(Route::parse(&path), want, "{path}");
        }
    }

    #[test]
    fn ranges() {
        use ByteRange::{Full, Partial, Unsatisfiable};
        let cases = [
            (None, 100, Full),
            (Some("bytes=0-"), 100, Partial { start: 0, end: 99 }),
            (Some("bytes=10-19"), 100, Partial { start: 10, end: 19 }),
            (Some("bytes=90-1000"), 100, Partial { start: 90, end: 99 }),
            (Some("bytes=-10"), 100, Partial { start: 90, end: 99 }),
            (Some("bytes=-1000"), 100, Partial { start: 0, end: 99 }),
            (Some("bytes=100-"), 100, Unsatisfiable),
            (Some("bytes=-0"), 100, Unsatisfiable),
            (Some("bytes=0-"), 0, Unsatisfiable),
            (Some("bytes=20-10"), 100, Full),
            (Some("bytes=0-1,5-6"), 100, Full),
            (Some("items=0-1"), 100, Full),
            (Some("bytes=x-1"), 100, Full),
            (Some("bytes=-"), 100, Full),
        ];
        for (header, size, want) in cases {
            assert_eq!(ByteRange::parse(header, size), want, "{header:?} of {size}");
        }
    }
}
