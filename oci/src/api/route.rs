//! The pull API's paths (`/v2/`, `/v2/<name>/manifests/<reference>`, `/v2/<name>/blobs/<digest>`)
//! parsed into a [`Route`]. The last two components are the kind and the reference, so a name
//! may contain `blobs` or `manifests` as components. Queries are the caller's business.

use crate::{Digest, DigestError, Reference, ReferenceError, RepoName};

/// A pull API endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/v2/`: the API version check.
    Base,
    /// `/v2/<name>/manifests/<tag|digest>`.
    Manifest {
        /// Repository.
        repo: RepoName,
        /// Tag or digest.
        reference: Reference,
    },
    /// `/v2/<name>/blobs/<digest>`.
    Blob {
        /// Repository.
        repo: RepoName,
        /// Blob digest.
        digest: Digest,
    },
}

/// Why a path is not a route of the pull API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// Not a pull API path (tag lists, uploads, anything else).
    #[error("no such endpoint")]
    Unknown,
    /// The repository name breaks the grammar (the name, cut to 160 characters).
    #[error("invalid repository name {0:?}")]
    Name(String),
    /// The blob digest is malformed or of an unsupported algorithm.
    #[error("invalid blob digest")]
    Digest(#[source] DigestError),
    /// The manifest reference is neither a tag nor a digest.
    #[error("invalid manifest reference")]
    Reference(#[source] ReferenceError),
}

impl Route {
    /// Parses a request path (without its query).
    ///
    /// # Errors
    /// [`RouteError`] saying which part is wrong.
    pub fn parse(path: &str) -> Result<Self, RouteError> {
        if path == "/v2/" || path == "/v2" {
            return Ok(Self::Base);
        }
        let rest = path.strip_prefix("/v2/").ok_or(RouteError::Unknown)?;
        let mut parts = rest.rsplitn(3, '/');
        let (Some(last), Some(kind), Some(name)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(RouteError::Unknown);
        };
        match kind {
            "manifests" => Ok(Self::Manifest {
                repo: repo(name)?,
                reference: Reference::parse(last).map_err(RouteError::Reference)?,
            }),
            "blobs" => Ok(Self::Blob {
                repo: repo(name)?,
                digest: Digest::parse(last).map_err(RouteError::Digest)?,
            }),
            _ => Err(RouteError::Unknown),
        }
    }
}

fn repo(name: &str) -> Result<RepoName, RouteError> {
    RepoName::parse(name).map_err(|_| RouteError::Name(name.chars().take(160).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let d = format!("sha256:{}", "a".repeat(64));
        let repo = |s: &str| RepoName::parse(s).unwrap();
        let ok = [
            ("/v2/".to_owned(), Route::Base),
            ("/v2".to_owned(), Route::Base),
            (
                "/v2/stampede/full/manifests/latest".to_owned(),
                Route::Manifest {
                    repo: repo("stampede/full"),
                    reference: Reference::Tag("latest".into()),
                },
            ),
            (
                format!("/v2/a/manifests/{d}"),
                Route::Manifest {
                    repo: repo("a"),
                    reference: Reference::parse(&d).unwrap(),
                },
            ),
            (
                format!("/v2/a/blobs/x/blobs/{d}"),
                Route::Blob {
                    repo: repo("a/blobs/x"),
                    digest: Digest::parse(&d).unwrap(),
                },
            ),
            (
                "/v2/a/blobs/b/manifests/v1".to_owned(),
                Route::Manifest {
                    repo: repo("a/blobs/b"),
                    reference: Reference::Tag("v1".into()),
                },
            ),
        ];
        for (path, want) in ok {
            assert_eq!(Route::parse(&path), Ok(want), "{path}");
        }
        type Check = fn(&RouteError) -> bool;
        let refused: [(&str, Check); 10] = [
            ("/v2/A/manifests/v1", |e| matches!(e, RouteError::Name(_))),
            ("/v2//manifests/v1", |e| matches!(e, RouteError::Name(_))),
            ("/v2/a/manifests/.v1", |e| {
                matches!(e, RouteError::Reference(ReferenceError::Tag(_)))
            }),
            ("/v2/a/manifests/sha256:zz", |e| {
                matches!(e, RouteError::Reference(ReferenceError::Digest(_)))
            }),
            ("/v2/a/blobs/sha256:zz", |e| {
                matches!(e, RouteError::Digest(DigestError::Malformed(_)))
            }),
            ("/v2/a/blobs/latest", |e| matches!(e, RouteError::Digest(_))),
            ("/v2/a/tags/list", |e| *e == RouteError::Unknown),
            ("/v2/a/blobs/uploads/", |e| *e == RouteError::Unknown),
            ("/v2/manifests/v1", |e| *e == RouteError::Unknown),
            ("/metrics", |e| *e == RouteError::Unknown),
        ];
        for (path, want) in refused {
            let got = Route::parse(path).unwrap_err();
            assert!(want(&got), "{path}: {got}");
        }
    }
}
