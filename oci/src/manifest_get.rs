//! The manifest GET, as both binaries send it and check its answer: the request with the
//! `Accept` list of every manifest kind this project reads, and the answer's body read whole (at
//! most [`MAX_MANIFEST_BYTES`]), refused when it is Docker schema 1, and its digest checked
//! against the digest the reference names or, for a tag, the `Docker-Content-Digest` the
//! registry sent.
//!
//! It does not send anything: the daemon sends through its per-upstream limits and Retry-After
//! windows, the harness through its 429 retries, both with [`crate::RegistryClient`]. Nor does it
//! judge the status: callers class a non-200 answer their own way before handing the body here.

use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue, ACCEPT, CONTENT_TYPE};
use http::Method;

use crate::client::{read_body_limited, BodyError, RegistryRequest};
use crate::digest::Digest;
use crate::manifest::{
    essence, is_manifest_type, is_schema1, DOCKER_MANIFEST_V1_SIGNED, MANIFEST_ACCEPT,
    MAX_MANIFEST_BYTES,
};
use crate::reference::{Reference, RepoName};

/// The header a registry names a manifest's (or blob's) digest in.
pub const DOCKER_CONTENT_DIGEST: &str = "docker-content-digest";

/// The `GET` (or `HEAD`) of manifest `reference` in `repo`, accepting every manifest and index
/// kind this project reads.
pub fn request(method: Method, repo: &RepoName, reference: &Reference) -> RegistryRequest {
    RegistryRequest::pull(
        method,
        repo.as_str(),
        format!("/v2/{repo}/manifests/{reference}"),
    )
    .header(ACCEPT, HeaderValue::from_static(MANIFEST_ACCEPT))
}

/// The digest an answer's `Docker-Content-Digest` names, if it names a usable one.
pub fn declared_digest(headers: &HeaderMap) -> Option<Digest> {
    headers
        .get(DOCKER_CONTENT_DIGEST)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| Digest::parse(v).ok())
}

/// A manifest body as received and checked.
#[derive(Debug, Clone)]
pub struct ReceivedManifest {
    /// The document, byte for byte.
    pub bytes: Bytes,
    /// The `Content-Type` it was served with, without parameters, if any.
    pub content_type: Option<String>,
    /// Its digest, equal to the one the reference or `Docker-Content-Digest` named (when one
    /// did).
    pub digest: Digest,
}

impl ReceivedManifest {
    /// The served `Content-Type` when it names a manifest or index type.
    pub fn declared_type(&self) -> Option<&str> {
        self.content_type.as_deref().filter(|t| is_manifest_type(t))
    }
}

/// Why a manifest answer's body was refused.
#[derive(Debug, thiserror::Error)]
pub enum ManifestGetError {
    /// The body is larger than [`MAX_MANIFEST_BYTES`].
    #[error("manifest body exceeds {limit_bytes} bytes")]
    TooLarge {
        /// The limit.
        limit_bytes: u64,
    },
    /// The connection failed mid-body.
    #[error("read manifest body")]
    Read(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Docker schema 1: its digest is over the payload without the JWS signatures, so the bytes
    /// never match it. Said as what it is rather than as a mismatch.
    #[error("manifest is Docker schema 1 ({media_type}), which is not supported")]
    Schema1 {
        /// The type it was served as, or schema 1's signed type when the body said so.
        media_type: String,
    },
    /// The body does not hash to the digest the reference or the registry named.
    #[error("manifest hashed to {actual}, expected {expected}")]
    Mismatch {
        /// The digest named.
        expected: Digest,
        /// The body's digest.
        actual: Digest,
    },
}

/// Reads the body of `resp`, the answer to a manifest GET of `reference`, and checks it: size,
/// schema 1, and digest (against `reference` when it is a digest, else against the answer's
/// `Docker-Content-Digest` when it sent one).
///
/// # Errors
/// [`ManifestGetError`], by what was wrong.
pub async fn receive<B>(
    resp: http::Response<B>,
    reference: &Reference,
) -> Result<ReceivedManifest, ManifestGetError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let content_type = resp
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|t| essence(t).to_owned());
    let declared = declared_digest(resp.headers());
    let bytes = read_body_limited(resp.into_body(), MAX_MANIFEST_BYTES)
        .await
        .map_err(|e| match e {
            BodyError::TooLarge { limit_bytes } => ManifestGetError::TooLarge { limit_bytes },
            BodyError::Read(source) => ManifestGetError::Read(source),
        })?;
    check(bytes, content_type, reference, declared)
}

/// The checks of [`receive`] on a body in hand.
fn check(
    bytes: Bytes,
    content_type: Option<String>,
    reference: &Reference,
    declared: Option<Digest>,
) -> Result<ReceivedManifest, ManifestGetError> {
    let declared_type = content_type.as_deref().filter(|t| is_manifest_type(t));
    if declared_type.is_none() && is_schema1(content_type.as_deref(), &bytes) {
        return Err(ManifestGetError::Schema1 {
            media_type: content_type.unwrap_or_else(|| DOCKER_MANIFEST_V1_SIGNED.to_owned()),
        });
    }
    let actual = Digest::of(&bytes);
    let expected = match reference {
        Reference::Digest(d) => Some(d.clone()),
        Reference::Tag(_) => declared,
    };
    if let Some(expected) = expected.filter(|e| *e != actual) {
        return Err(ManifestGetError::Mismatch { expected, actual });
    }
    Ok(ReceivedManifest {
        bytes,
        content_type,
        digest: actual,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{DOCKER_MANIFEST_V1, OCI_MANIFEST};

    const BODY: &[u8] =
        br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}"#;

    fn answer(
        content_type: Option<&str>,
        digest_header: Option<&str>,
        body: &'static [u8],
    ) -> http::Response<http_body_util::Full<Bytes>> {
        let mut b = http::Response::builder();
        if let Some(t) = content_type {
            b = b.header(CONTENT_TYPE, t);
        }
        if let Some(d) = digest_header {
            b = b.header(DOCKER_CONTENT_DIGEST, d);
        }
        b.body(http_body_util::Full::new(Bytes::from_static(body)))
            .unwrap()
    }

    fn tag() -> Reference {
        Reference::Tag("v1".into())
    }

    #[tokio::test]
    async fn a_body_is_checked_against_the_digest_the_reference_names() {
        let right = Reference::Digest(Digest::of(BODY));
        let got = receive(answer(Some(OCI_MANIFEST), None, BODY), &right)
            .await
            .unwrap();
        assert_eq!(got.digest, Digest::of(BODY));
        assert_eq!(got.bytes, BODY);
        assert_eq!(got.declared_type(), Some(OCI_MANIFEST));

        let wrong = Reference::Digest(Digest::of(b"other"));
        let e = receive(answer(Some(OCI_MANIFEST), None, BODY), &wrong)
            .await
            .unwrap_err();
        assert!(
            matches!(&e, ManifestGetError::Mismatch { expected, actual }
                if *expected == Digest::of(b"other") && *actual == Digest::of(BODY)),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_tag_is_checked_against_docker_content_digest_when_sent() {
        let other = Digest::of(b"other").to_string();
        let e = receive(answer(None, Some(&other), BODY), &tag())
            .await
            .unwrap_err();
        assert!(matches!(e, ManifestGetError::Mismatch { .. }), "{e}");
        let own = Digest::of(BODY).to_string();
        assert!(receive(answer(None, Some(&own), BODY), &tag())
            .await
            .is_ok());
        // No header, or one that is not a digest: nothing to check against.
        assert!(receive(answer(None, None, BODY), &tag()).await.is_ok());
        assert!(receive(answer(None, Some("junk"), BODY), &tag())
            .await
            .is_ok());
    }

    #[tokio::test]
    async fn content_type_parameters_are_dropped() {
        let got = receive(
            answer(
                Some("application/vnd.oci.image.manifest.v1+json; charset=utf-8"),
                None,
                BODY,
            ),
            &tag(),
        )
        .await
        .unwrap();
        assert_eq!(got.content_type.as_deref(), Some(OCI_MANIFEST));
        let plain = receive(answer(Some("application/json"), None, BODY), &tag())
            .await
            .unwrap();
        assert_eq!(plain.declared_type(), None);
    }

    #[tokio::test]
    async fn schema1_is_refused_by_type_or_by_body() {
        let e = receive(answer(Some(DOCKER_MANIFEST_V1), None, b"{}"), &tag())
            .await
            .unwrap_err();
        assert!(
            matches!(&e, ManifestGetError::Schema1 { media_type } if media_type == DOCKER_MANIFEST_V1),
            "{e}"
        );
        let e = receive(answer(None, None, br#"{"schemaVersion":1}"#), &tag())
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "manifest is Docker schema 1 ({DOCKER_MANIFEST_V1_SIGNED}), which is not supported"
            )
        );
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_refused() {
        static BIG: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
        let big = BIG.get_or_init(|| vec![b' '; usize::try_from(MAX_MANIFEST_BYTES).unwrap() + 1]);
        let e = receive(answer(Some(OCI_MANIFEST), None, big), &tag())
            .await
            .unwrap_err();
        assert!(
            matches!(e, ManifestGetError::TooLarge { limit_bytes } if limit_bytes == MAX_MANIFEST_BYTES),
            "{e}"
        );
    }

    #[test]
    fn the_request_accepts_every_manifest_kind() {
        let repo = RepoName::parse("library/app").unwrap();
        let req = request(Method::GET, &repo, &tag());
        assert_eq!(req.path_and_query, "/v2/library/app/manifests/v1");
        assert_eq!(req.method, Method::GET);
        assert_eq!(
            req.headers.get(ACCEPT).unwrap().to_str().unwrap(),
            MANIFEST_ACCEPT
        );
    }
}
