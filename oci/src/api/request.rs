//! What a request to a registry asked for, as counted: by the embedded registry's accounting and
//! by the readers of real servers' access logs in `lab`, so both speak of the same kinds.

use super::route::Route;

/// What a request asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RequestKind {
    /// `GET|HEAD /v2/`.
    Ping,
    /// `GET /v2/<name>/manifests/<ref>`.
    ManifestGet,
    /// `HEAD /v2/<name>/manifests/<ref>`.
    ManifestHead,
    /// `GET /v2/<name>/blobs/<digest>`.
    BlobGet,
    /// `HEAD /v2/<name>/blobs/<digest>`.
    BlobHead,
    /// Anything else: uploads, tag lists, other methods, malformed names.
    Other,
}

impl RequestKind {
    /// `ping`, `manifest_get`, `manifest_head`, `blob_get`, `blob_head`, `other`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ping => "ping",
            Self::ManifestGet => "manifest_get",
            Self::ManifestHead => "manifest_head",
            Self::BlobGet => "blob_get",
            Self::BlobHead => "blob_head",
            Self::Other => "other",
        }
    }

    /// The kind of a request with `method` (its name, `GET`) whose path parsed to `route`.
    pub fn of_route(method: &str, route: Option<&Route>) -> Self {
        let (get, head) = (method == "GET", method == "HEAD");
        match (route, get, head) {
            (Some(Route::Base), true, _) | (Some(Route::Base), _, true) => Self::Ping,
            (Some(Route::Manifest { .. }), true, _) => Self::ManifestGet,
            (Some(Route::Manifest { .. }), _, true) => Self::ManifestHead,
            (Some(Route::Blob { .. }), true, _) => Self::BlobGet,
            (Some(Route::Blob { .. }), _, true) => Self::BlobHead,
            _ => Self::Other,
        }
    }

    /// The kind of `method path` (a query string is ignored).
    pub fn of(method: &str, path: &str) -> Self {
        let path = path.split('?').next().unwrap_or(path);
        Self::of_route(method, Route::parse(path).ok().as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        let blob = format!("/v2/a/blobs/sha256:{}", "0".repeat(64));
        let cases = [
            ("GET", "/v2/", RequestKind::Ping),
            ("HEAD", "/v2", RequestKind::Ping),
            ("GET", "/v2/a/manifests/v1", RequestKind::ManifestGet),
            (
                "HEAD",
                "/v2/a/b/manifests/v1?ns=x",
                RequestKind::ManifestHead,
            ),
            ("GET", blob.as_str(), RequestKind::BlobGet),
            ("HEAD", blob.as_str(), RequestKind::BlobHead),
            ("DELETE", blob.as_str(), RequestKind::Other),
            ("POST", "/v2/a/blobs/uploads/", RequestKind::Other),
            ("GET", "/v2/_catalog", RequestKind::Other),
            ("GET", "/v2/A/manifests/v1", RequestKind::Other),
            ("GET", "/metrics", RequestKind::Other),
        ];
        for (method, path, kind) in cases {
            assert_eq!(RequestKind::of(method, path), kind, "{method} {path}");
        }
    }
}
