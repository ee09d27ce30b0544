//! The daemon's request errors and, in one place, how each becomes an HTTP status and an OCI
//! error code. Errors are classified by who is at fault: the client (4xx), the upstream registry
//! (502/504, or its own 404/429 passed on), or us (500). Internal detail never reaches a 5xx body;
//! it goes to the log.

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;

use stampede_oci::api::RangeError;
use stampede_oci::Digest;

/// Who caused an error; decides the log level and the metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The client asked for something malformed or missing.
    Downstream,
    /// The origin registry failed or refused.
    Upstream,
    /// Our own disk or logic failed.
    Internal,
}

/// Why a request could not be answered with content.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `<name>` breaks the distribution grammar.
    #[error("invalid repository name {0:?}")]
    NameInvalid(String),
    /// The digest is malformed.
    #[error("invalid digest {0:?}")]
    DigestInvalid(String),
    /// The digest algorithm is not supported.
    #[error("unsupported digest algorithm {0:?}")]
    Unsupported(String),
    /// The tag or reference is malformed.
    #[error("invalid manifest reference {0:?}")]
    ReferenceInvalid(String),
    /// The path is not part of the pull API.
    #[error("no such endpoint")]
    NotFound,
    /// Only GET and HEAD are served.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The `ns` query is not a plain `host[:port]`.
    #[error("invalid ns {0:?}: expected a registry host[:port]")]
    NsInvalid(String),
    /// The `ns` query names a registry this cache is not configured for.
    #[error("registry {0:?} is not configured on this cache")]
    RegistryNotConfigured(String),
    /// The blob does not exist upstream.
    #[error("blob {0} unknown")]
    BlobUnknown(Digest),
    /// The manifest does not exist upstream.
    #[error("manifest {0} unknown")]
    ManifestUnknown(String),
    /// The `Range` header cannot be satisfied or parsed.
    #[error("range not satisfiable{}", len_bytes.map_or_else(|| " (malformed bytes range)".to_owned(), |n| format!(" for a blob of {n} bytes")))]
    RangeNotSatisfiable {
        /// Size of the blob, when known (a malformed range is refused before it is looked up).
        len_bytes: Option<u64>,
    },
    /// The manifest is larger than we accept.
    #[error("manifest exceeds {limit_bytes} bytes")]
    ManifestTooLarge {
        /// The limit.
        limit_bytes: u64,
    },
    /// The upstream holds the manifest only as Docker schema 1, which this cache does not serve
    /// (its digest covers the payload without its signatures, not the bytes sent). Answered 400
    /// `MANIFEST_INVALID`, as distribution answers it with schema 1 disabled, so the client falls
    /// back to the registry itself instead of being told the upstream broke.
    #[error("manifest {reference} of {repo} exists upstream only as a Docker schema 1 manifest ({media_type}), which this cache does not support; pull it from the registry directly, or push it again as a schema 2 or OCI image")]
    ManifestSchema1 {
        /// `registry/repository`.
        repo: String,
        /// The tag or digest asked for.
        reference: String,
        /// The media type the upstream declared.
        media_type: String,
    },
    /// The upstream's manifest does not match the digest it was asked for or claimed.
    #[error("upstream {upstream} sent a manifest that does not match its digest")]
    ManifestMismatch {
        /// Which upstream.
        upstream: String,
    },
    /// The upstream refused our credentials.
    #[error("upstream {upstream} denied access ({status})")]
    UpstreamDenied {
        /// Which upstream.
        upstream: String,
        /// Its status.
        status: StatusCode,
    },
    /// The upstream is rate-limiting us.
    #[error("upstream {upstream} is throttling")]
    UpstreamThrottled {
        /// Which upstream.
        upstream: String,
        /// Its `Retry-After`, if any.
        retry_after: Option<Duration>,
    },
    /// The upstream answered `503` with a `Retry-After`: it is down for a known while.
    #[error("upstream {upstream} is unavailable")]
    UpstreamUnavailable {
        /// Which upstream.
        upstream: String,
        /// Its `Retry-After`.
        retry_after: Option<Duration>,
    },
    /// The upstream answered with an unexpected status.
    #[error("upstream {upstream} answered {status}")]
    UpstreamStatus {
        /// Which upstream.
        upstream: String,
        /// Its status.
        status: StatusCode,
    },
    /// The upstream could not be reached or broke the connection.
    #[error("upstream {upstream} unreachable")]
    UpstreamUnreachable {
        /// Which upstream.
        upstream: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The upstream did not answer in time.
    #[error("upstream {upstream} timed out")]
    UpstreamTimeout {
        /// Which upstream.
        upstream: String,
    },
    /// A fill of this blob failed (upstream error or digest mismatch); the next request retries.
    #[error("fill of {digest} failed: {reason}")]
    FillFailed {
        /// The blob.
        digest: Digest,
        /// What went wrong, for the log.
        reason: String,
    },
    /// Caller checks: the caller presented no credential, or one the upstream refused for this
    /// repository.
    #[error("{}", if *presented { format!("the upstream refused the presented credentials for {repo}") } else { format!("{repo} is private: present credentials the upstream accepts for it") })]
    CallerUnauthorized {
        /// `registry/repository`.
        repo: String,
        /// Whether the caller sent an `Authorization` header.
        presented: bool,
        /// 401 (a challenge goes with it) or 403 (the upstream gave none).
        status: StatusCode,
    },
    /// Caller checks: the upstream could not be asked and no recent decision allows the caller.
    #[error("cannot check the caller's access to {repo} with upstream {upstream} ({reason}), and no recent decision allows it")]
    CallerUnverifiable {
        /// `registry/repository`.
        repo: String,
        /// Which upstream.
        upstream: String,
        /// What went wrong asking it.
        reason: String,
    },
    /// Disk or other local failure.
    #[error("{what}")]
    Internal {
        /// What we were doing.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Wraps a local I/O failure with what we were doing.
    pub fn internal(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Internal {
            what: what.into(),
            source,
        }
    }

    /// Who is at fault.
    pub fn fault(&self) -> Fault {
        match self {
            Self::NameInvalid(_)
            | Self::NsInvalid(_)
            | Self::DigestInvalid(_)
            | Self::Unsupported(_)
            | Self::ReferenceInvalid(_)
            | Self::NotFound
            | Self::MethodNotAllowed
            | Self::RegistryNotConfigured(_)
            | Self::RangeNotSatisfiable { .. }
            | Self::BlobUnknown(_)
            | Self::ManifestUnknown(_)
            | Self::ManifestSchema1 { .. }
            | Self::CallerUnauthorized { .. } => Fault::Downstream,
            Self::ManifestTooLarge { .. }
            | Self::ManifestMismatch { .. }
            | Self::UpstreamDenied { .. }
            | Self::UpstreamThrottled { .. }
            | Self::UpstreamUnavailable { .. }
            | Self::UpstreamStatus { .. }
            | Self::UpstreamUnreachable { .. }
            | Self::UpstreamTimeout { .. }
            | Self::FillFailed { .. }
            | Self::CallerUnverifiable { .. } => Fault::Upstream,
            Self::Internal { .. } => Fault::Internal,
        }
    }

    /// The HTTP status the client gets.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NameInvalid(_)
            | Self::NsInvalid(_)
            | Self::DigestInvalid(_)
            | Self::ReferenceInvalid(_) => StatusCode::BAD_REQUEST,
            Self::Unsupported(_) | Self::ManifestSchema1 { .. } => StatusCode::BAD_REQUEST,
            Self::NotFound | Self::BlobUnknown(_) | Self::ManifestUnknown(_) => {
                StatusCode::NOT_FOUND
            }
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::RegistryNotConfigured(_) | Self::UpstreamDenied { .. } => StatusCode::FORBIDDEN,
            Self::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            Self::ManifestTooLarge { .. } | Self::ManifestMismatch { .. } => {
                StatusCode::BAD_GATEWAY
            }
            Self::UpstreamThrottled { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::UpstreamUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::UpstreamStatus { .. }
            | Self::UpstreamUnreachable { .. }
            | Self::FillFailed { .. } => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            Self::CallerUnauthorized { status, .. } => *status,
            Self::CallerUnverifiable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The OCI distribution error code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NameInvalid(_) | Self::NsInvalid(_) => "NAME_INVALID",
            Self::DigestInvalid(_) => "DIGEST_INVALID",
            Self::ReferenceInvalid(_) => "MANIFEST_INVALID",
            Self::Unsupported(_) | Self::MethodNotAllowed => "UNSUPPORTED",
            Self::NotFound => "NAME_UNKNOWN",
            Self::RegistryNotConfigured(_) | Self::UpstreamDenied { .. } => "DENIED",
            Self::BlobUnknown(_) => "BLOB_UNKNOWN",
            Self::ManifestUnknown(_) => "MANIFEST_UNKNOWN",
            Self::RangeNotSatisfiable { .. } => "RANGE_INVALID",
            Self::ManifestTooLarge { .. }
            | Self::ManifestMismatch { .. }
            | Self::ManifestSchema1 { .. } => "MANIFEST_INVALID",
            Self::UpstreamThrottled { .. } => "TOOMANYREQUESTS",
            Self::UpstreamStatus { .. }
            | Self::UpstreamUnavailable { .. }
            | Self::UpstreamUnreachable { .. }
            | Self::UpstreamTimeout { .. }
            | Self::FillFailed { .. }
            | Self::Internal { .. }
            | Self::CallerUnverifiable { .. } => "UNAVAILABLE",
            Self::CallerUnauthorized {
                presented: false, ..
            } => "UNAUTHORIZED",
            Self::CallerUnauthorized {
                presented: true, ..
            } => "DENIED",
        }
    }

    /// The message the client sees: the error itself for client and upstream faults (they name
    /// only what the client sent or which upstream failed), a fixed text for internal ones.
    pub fn public_message(&self) -> String {
        match self.fault() {
            Fault::Internal => "internal error; see the cache-daemon log".to_owned(),
            _ => self.to_string(),
        }
    }

    /// `Retry-After` to send, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::UpstreamThrottled { retry_after, .. }
            | Self::UpstreamUnavailable { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The OCI error JSON body.
    pub fn body(&self) -> Bytes {
        self.reply().body()
    }

    /// What the client is told, detached from the error's causes (cheap to clone and share
    /// with every request coalesced onto one upstream call).
    pub fn reply(&self) -> ErrorReply {
        ErrorReply {
            status: self.status(),
            code: self.code(),
            message: self.public_message(),
            retry_after: self.retry_after(),
            fault: self.fault(),
            complete_length: match self {
                Self::RangeNotSatisfiable { len_bytes } => *len_bytes,
                _ => None,
            },
        }
    }
}

/// The client-facing part of an [`Error`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorReply {
    /// HTTP status.
    pub status: StatusCode,
    /// OCI error code.
    pub code: &'static str,
    /// Safe message.
    pub message: String,
    /// `Retry-After` to send.
    pub retry_after: Option<Duration>,
    /// Who caused it.
    pub fault: Fault,
    /// For a 416: the blob's length, sent as `Content-Range: bytes */<len>` (RFC 9110).
    pub complete_length: Option<u64>,
}

impl ErrorReply {
    /// The OCI error JSON body.
    pub fn body(&self) -> Bytes {
        let body = serde_json::json!({
            "errors": [{ "code": self.code, "message": self.message }]
        });
        Bytes::from(body.to_string())
    }
}

impl From<RangeError> for Error {
    fn from(e: RangeError) -> Self {
        Self::RangeNotSatisfiable {
            len_bytes: match e {
                RangeError::Malformed => None,
                RangeError::Unsatisfiable { len_bytes } => Some(len_bytes),
            },
        }
    }
}

impl From<Error> for ErrorReply {
    fn from(e: Error) -> Self {
        e.reply()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_and_code_table() {
        let d = Digest::of(b"x");
        let cases: Vec<(Error, u16, &str)> = vec![
            (Error::NameInvalid("A".into()), 400, "NAME_INVALID"),
            (Error::NsInvalid("reg/team".into()), 400, "NAME_INVALID"),
            (Error::DigestInvalid("x".into()), 400, "DIGEST_INVALID"),
            (Error::Unsupported("md5".into()), 400, "UNSUPPORTED"),
            (Error::BlobUnknown(d.clone()), 404, "BLOB_UNKNOWN"),
            (Error::ManifestUnknown("v1".into()), 404, "MANIFEST_UNKNOWN"),
            (
                Error::RangeNotSatisfiable { len_bytes: Some(3) },
                416,
                "RANGE_INVALID",
            ),
            (
                Error::ManifestTooLarge { limit_bytes: 4 },
                502,
                "MANIFEST_INVALID",
            ),
            (
                Error::UpstreamThrottled {
                    upstream: "u".into(),
                    retry_after: None,
                },
                429,
                "TOOMANYREQUESTS",
            ),
            (
                Error::UpstreamUnavailable {
                    upstream: "u".into(),
                    retry_after: Some(Duration::from_secs(2)),
                },
                503,
                "UNAVAILABLE",
            ),
            (
                Error::UpstreamTimeout {
                    upstream: "u".into(),
                },
                504,
                "UNAVAILABLE",
            ),
            (
                Error::internal("write", std::io::Error::other("disk on fire")),
                500,
                "UNAVAILABLE",
            ),
            (
                Error::CallerUnauthorized {
                    repo: "r/a".into(),
                    presented: false,
                    status: StatusCode::UNAUTHORIZED,
                },
                401,
                "UNAUTHORIZED",
            ),
            (
                Error::CallerUnauthorized {
                    repo: "r/a".into(),
                    presented: true,
                    status: StatusCode::FORBIDDEN,
                },
                403,
                "DENIED",
            ),
            (
                Error::CallerUnverifiable {
                    repo: "r/a".into(),
                    upstream: "u".into(),
                    reason: "timed out".into(),
                },
                503,
                "UNAVAILABLE",
            ),
        ];
        for (err, status, code) in cases {
            assert_eq!(err.status().as_u16(), status, "{err}");
            assert_eq!(err.code(), code, "{err}");
        }
    }

    #[test]
    fn internal_detail_stays_out_of_the_body() {
        let err = Error::internal(
            "write blob to /var/lib/secret/path",
            std::io::Error::other("disk on fire"),
        );
        let body = String::from_utf8(err.body().to_vec()).unwrap();
        assert!(!body.contains("secret") && !body.contains("fire"), "{body}");
    }
}
