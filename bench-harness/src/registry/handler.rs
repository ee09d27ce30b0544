//! Answers one request to the embedded registry: throttling first, then the route, then the
//! catalog; headers wait out the model's latency; bodies are metered (see `body.rs`). The only
//! place that combines catalog, shaping and accounting, and the one place that maps outcomes to
//! HTTP status codes and OCI error codes.
//!
//! This module does not accept connections (see `server.rs`).

use std::io::SeekFrom;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{
    HeaderValue, ACCEPT_RANGES, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG, RANGE,
    RETRY_AFTER,
};
use http::{Method, Request, Response, StatusCode};
use stampede_oci::api::{ByteRange, RangeError, RequestKind, Route, RouteError};
use stampede_oci::manifest::OCTET_STREAM;
use stampede_oci::Digest;
use stampede_oci::ReferenceError;
use tokio::io::AsyncSeekExt;
use tokio::time::Instant;

use super::accounting::{Accounting, BodyKind, ListenerId};
use super::body::{self, Meter, ResponseBody, Source};
use super::catalog::{Catalog, Missing};
use super::model::RegistryModel;
use super::shaping::{RequestBucket, Shaper};

/// The header naming a served object's digest.
const DOCKER_CONTENT_DIGEST: &str = "docker-content-digest";
/// The header every distribution registry sends.
const API_VERSION: &str = "docker-distribution-api-version";

/// An answer that is not the content asked for, with its OCI error code.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ErrorAnswer {
    NameUnknown,
    ManifestUnknown,
    BlobUnknown,
    NameInvalid,
    DigestInvalid,
    TagInvalid,
    /// For a blob of this many bytes.
    RangeInvalid(u64),
    /// An endpoint this registry does not have.
    NoEndpoint,
    /// A method other than GET or HEAD.
    Method,
    /// Retry after this many seconds.
    TooManyRequests(u64),
    /// Our fault (a layout file went missing); details only in the log.
    Internal,
}

impl ErrorAnswer {
    fn status(&self) -> StatusCode {
        match self {
            Self::NameUnknown | Self::ManifestUnknown | Self::BlobUnknown | Self::NoEndpoint => {
                StatusCode::NOT_FOUND
            }
            Self::NameInvalid | Self::DigestInvalid | Self::TagInvalid => StatusCode::BAD_REQUEST,
            Self::RangeInvalid(_) => StatusCode::RANGE_NOT_SATISFIABLE,
            Self::Method => StatusCode::METHOD_NOT_ALLOWED,
            Self::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::NameUnknown => "NAME_UNKNOWN",
            Self::ManifestUnknown => "MANIFEST_UNKNOWN",
            Self::BlobUnknown => "BLOB_UNKNOWN",
            Self::NameInvalid => "NAME_INVALID",
            Self::DigestInvalid => "DIGEST_INVALID",
            Self::TagInvalid => "TAG_INVALID",
            Self::RangeInvalid(_) => "RANGE_INVALID",
            Self::NoEndpoint | Self::Method => "UNSUPPORTED",
            Self::TooManyRequests(_) => "TOOMANYREQUESTS",
            Self::Internal => "UNKNOWN",
        }
    }

    fn message(&self) -> &'static str {
        match self {
            Self::NameUnknown => "repository name not known to registry",
            Self::ManifestUnknown => "manifest unknown",
            Self::BlobUnknown => "blob unknown to registry",
            Self::NameInvalid => "invalid repository name",
            Self::DigestInvalid => "provided digest did not match uploaded content",
            Self::TagInvalid => "invalid tag",
            Self::RangeInvalid(_) => "requested range not satisfiable",
            Self::NoEndpoint => "the endpoint is not supported by this registry",
            Self::Method => "the operation is unsupported",
            Self::TooManyRequests(_) => "too many requests",
            Self::Internal => "internal error",
        }
    }

    /// The OCI error document.
    fn document(&self) -> Bytes {
        let doc = serde_json::json!({
            "errors": [{ "code": self.code(), "message": self.message() }]
        });
        Bytes::from(doc.to_string())
    }
}

impl From<RouteError> for ErrorAnswer {
    fn from(e: RouteError) -> Self {
        match e {
            RouteError::Unknown => Self::NoEndpoint,
            RouteError::Name(_) => Self::NameInvalid,
            RouteError::Digest(_) | RouteError::Reference(ReferenceError::Digest(_)) => {
                Self::DigestInvalid
            }
            RouteError::Reference(_) => Self::TagInvalid,
        }
    }
}

/// A body to send: where its bytes are, how many, and what they are.
#[derive(Debug)]
struct Content {
    source: Source,
    len: u64,
    kind: BodyKind,
}

/// Where a response goes and whether it carries a body: the listener the request arrived on
/// (whose node link meters the body), and whether the request was a `HEAD`.
#[derive(Debug, Clone, Copy)]
struct Reply {
    listener: ListenerId,
    head: bool,
}

/// Everything a request needs; shared by every connection of every listener.
#[derive(Debug)]
pub struct Handler {
    catalog: Arc<Catalog>,
    shaper: Arc<Shaper>,
    accounting: Arc<Accounting>,
    throttle: Option<RequestBucket>,
    /// `Retry-After` seconds on a 429.
    retry_after_secs: u64,
    latency: Duration,
}

impl Handler {
    /// A handler enforcing `model` for `nodes` node listeners.
    pub fn new(
        model: &RegistryModel,
        nodes: usize,
        catalog: Arc<Catalog>,
        accounting: Arc<Accounting>,
    ) -> Self {
        let retry_after_secs = model.throttle.as_ref().map_or(0, |t| {
            let d = t.retry_after.0;
            d.as_secs() + u64::from(d.subsec_nanos() > 0)
        });
        Self {
            catalog,
            shaper: Arc::new(Shaper::new(model, nodes)),
            accounting,
            throttle: model.throttle.as_ref().map(RequestBucket::new),
            retry_after_secs,
            latency: model.latency.0,
        }
    }

    /// Answers `req`, which arrived on `listener`. Never fails: every outcome is a response.
    pub async fn handle<B>(&self, listener: ListenerId, req: Request<B>) -> Response<ResponseBody> {
        let arrived = Instant::now();
        let reply = Reply {
            listener,
            head: req.method() == Method::HEAD,
        };
        let response = match &self.throttle {
            Some(bucket) if !bucket.try_take(arrived) => {
                self.accounting.throttled(listener, arrived);
                self.error(reply, &ErrorAnswer::TooManyRequests(self.retry_after_secs))
            }
            _ => match self.serve(reply, &req, arrived).await {
                Ok(response) => response,
                Err(answer) => self.error(reply, &answer),
            },
        };
        if !self.latency.is_zero() {
            tokio::time::sleep_until(arrived + self.latency).await;
        }
        response
    }

    async fn serve<B>(
        &self,
        reply: Reply,
        req: &Request<B>,
        arrived: Instant,
    ) -> Result<Response<ResponseBody>, ErrorAnswer> {
        let method = req.method();
        let head = reply.head;
        let readable = head || method == Method::GET;
        let route = Route::parse(req.uri().path());
        let kind = RequestKind::of_route(method.as_str(), route.as_ref().ok());
        self.accounting.request(reply.listener, kind, arrived);
        let route = route?;
        if !readable {
            return Err(ErrorAnswer::Method);
        }
        match route {
            Route::Base => {
                let (builder, content) = json_document(StatusCode::OK, Bytes::from_static(b"{}"));
                Ok(self.respond(builder, reply, content))
            }
            Route::Manifest { repo, reference } => {
                let (digest, entry) =
                    self.catalog
                        .manifest(&repo, &reference)
                        .map_err(|missing| match missing {
                            Missing::Repo => ErrorAnswer::NameUnknown,
                            Missing::Object => ErrorAnswer::ManifestUnknown,
                        })?;
                let len = entry.bytes.len() as u64;
                let builder = Response::builder()
                    .status(StatusCode::OK)
                    .header(CONTENT_TYPE, entry.media_type.as_str())
                    .header(CONTENT_LENGTH, len)
                    .header(DOCKER_CONTENT_DIGEST, digest.to_string())
                    .header(ETAG, format!("\"{digest}\""));
                let body = BodyKind::Manifest(digest);
                self.accounting.served(&body, head, false);
                let content = Content {
                    source: Source::Memory(entry.bytes.clone()),
                    len,
                    kind: body,
                };
                Ok(self.respond(builder, reply, content))
            }
            Route::Blob { repo, digest } => {
                let range = req.headers().get(RANGE).and_then(|v| v.to_str().ok());
                self.blob(reply, &repo, digest, range).await
            }
        }
    }

    async fn blob(
        &self,
        reply: Reply,
        repo: &stampede_oci::RepoName,
        digest: Digest,
        range: Option<&str>,
    ) -> Result<Response<ResponseBody>, ErrorAnswer> {
        let entry = self
            .catalog
            .blob(repo, &digest)
            .map_err(|missing| match missing {
                Missing::Repo => ErrorAnswer::NameUnknown,
                Missing::Object => ErrorAnswer::BlobUnknown,
            })?;
        let size = entry.size_bytes;
        // A malformed or multi-range header is ignored: the whole blob (RFC 9110 allows it).
        let requested = range.and_then(|r| ByteRange::parse(r).ok().flatten());
        let (status, start, len) = match requested.map(|r| r.resolve(size)) {
            None => (StatusCode::OK, 0, size),
            Some(Ok((start, end))) => (StatusCode::PARTIAL_CONTENT, start, end - start),
            Some(Err(RangeError::Unsatisfiable { .. } | RangeError::Malformed)) => {
                return Err(ErrorAnswer::RangeInvalid(size))
            }
        };
        let mut builder = Response::builder()
            .status(status)
            .header(CONTENT_TYPE, OCTET_STREAM)
            .header(CONTENT_LENGTH, len)
            .header(DOCKER_CONTENT_DIGEST, digest.to_string())
            .header(ACCEPT_RANGES, "bytes")
            .header(ETAG, format!("\"{digest}\""));
        if status == StatusCode::PARTIAL_CONTENT {
            builder = builder.header(
                CONTENT_RANGE,
                format!("bytes {start}-{}/{size}", start + len - 1),
            );
        }
        let head = reply.head;
        let source = if head {
            Source::Memory(Bytes::new())
        } else {
            let open = async {
                let mut file = tokio::fs::File::open(&entry.path).await?;
                if start > 0 {
                    file.seek(SeekFrom::Start(start)).await?;
                }
                Ok::<_, std::io::Error>(file)
            };
            match open.await {
                Ok(file) => Source::File(file),
                Err(error) => {
                    tracing::warn!(%digest, path = %entry.path.display(), %error, "blob file unreadable");
                    return Err(ErrorAnswer::Internal);
                }
            }
        };
        let body = BodyKind::Blob(digest);
        self.accounting
            .served(&body, head, status == StatusCode::PARTIAL_CONTENT);
        let content = Content {
            source,
            len,
            kind: body,
        };
        Ok(self.respond(builder, reply, content))
    }

    /// Finishes a response: an empty body for HEAD, else a metered one.
    fn respond(
        &self,
        builder: http::response::Builder,
        reply: Reply,
        content: Content,
    ) -> Response<ResponseBody> {
        let body = if reply.head {
            body::empty()
        } else {
            body::metered(
                content.source,
                content.len,
                Meter {
                    shaper: self.shaper.clone(),
                    accounting: self.accounting.clone(),
                    listener: reply.listener,
                    body: content.kind,
                },
            )
        };
        builder
            .header(API_VERSION, "registry/2.0")
            .body(body)
            .expect("response headers are valid")
    }

    fn error(&self, reply: Reply, answer: &ErrorAnswer) -> Response<ResponseBody> {
        self.accounting.error(answer.code());
        let (mut builder, content) = json_document(answer.status(), answer.document());
        match answer {
            ErrorAnswer::TooManyRequests(secs) => {
                builder = builder.header(RETRY_AFTER, HeaderValue::from(*secs));
            }
            ErrorAnswer::RangeInvalid(size) => {
                builder = builder.header(CONTENT_RANGE, format!("bytes */{size}"));
            }
            _ => {}
        }
        self.respond(builder, reply, content)
    }
}

/// A small JSON document (the ping answer, an error) with its status.
fn json_document(status: StatusCode, doc: Bytes) -> (http::response::Builder, Content) {
    let len = doc.len() as u64;
    let builder = Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "application/json")
        .header(CONTENT_LENGTH, len);
    let content = Content {
        source: Source::Memory(doc),
        len,
        kind: BodyKind::Other,
    };
    (builder, content)
}
