//! A streaming OCI registry client over HTTP/1.1, plain or TLS (rustls: system roots plus an
//! optional extra CA file), with the token flow: on `401` it follows the `WWW-Authenticate`
//! challenge, fetches a bearer token (anonymously or with credentials, see `auth.rs` for where
//! credentials may go), caches it per registry and scope until it expires, and retries once.
//! Redirects (blob storage backends) are followed, dropping `Authorization` when the host changes.
//!
//! Bodies are returned unread as [`Incoming`]: callers stream them. Only token responses and
//! manifests (bounded by [`read_body_limited`]) are ever collected in memory.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue, AUTHORIZATION, LOCATION, USER_AGENT, WWW_AUTHENTICATE};
use http::uri::{Authority, Scheme};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::auth::{realm_is_trusted, Challenge, Credentials, Token, TokenResponse};

/// Redirect hops followed before giving up.
const MAX_REDIRECTS: usize = 5;
/// Largest token response read, in bytes.
const MAX_TOKEN_RESPONSE_BYTES: usize = 1024 * 1024;

/// How the client connects. Every field has a working default.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// TCP (and TLS) connect timeout.
    pub connect_timeout: Duration,
    /// Time allowed from sending a request to receiving response headers.
    pub response_timeout: Duration,
    /// PEM file of extra CA certificates trusted besides the system roots.
    pub extra_ca_file: Option<PathBuf>,
    /// `User-Agent` header.
    pub user_agent: String,
    /// Idle keep-alive connections kept per host.
    pub max_idle_per_host: usize,
    /// Token realm hosts trusted with credentials beyond the same-domain rule.
    pub trusted_realm_hosts: Vec<String>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            response_timeout: Duration::from_secs(30),
            extra_ca_file: None,
            user_agent: concat!("stampede/", env!("CARGO_PKG_VERSION")).to_owned(),
            max_idle_per_host: 64,
            trusted_realm_hosts: Vec::new(),
        }
    }
}

/// A registry the client talks to: where it is and how to prove who we are.
#[derive(Debug, Clone)]
pub struct Endpoint {
    scheme: Scheme,
    authority: Authority,
    credentials: Option<Credentials>,
}

impl Endpoint {
    /// Parses `http[s]://host[:port]` (a trailing `/` is allowed, a path is not).
    ///
    /// # Errors
    /// [`ClientError::Url`] for anything else.
    pub fn parse(url: &str) -> Result<Self, ClientError> {
        let bad = || ClientError::Url {
            url: url.to_owned(),
        };
        let uri: Uri = url.parse().map_err(|_| bad())?;
        let scheme = uri.scheme().cloned().ok_or_else(bad)?;
        if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
            return Err(bad());
        }
        let authority = uri.authority().cloned().ok_or_else(bad)?;
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(bad());
        }
        Ok(Self {
            scheme,
            authority,
            credentials: None,
        })
    }

    /// The same endpoint, authenticating with `credentials`.
    pub fn with_credentials(mut self, credentials: Option<Credentials>) -> Self {
        self.credentials = credentials;
        self
    }

    /// Whether requests to this endpoint carry credentials of their own (content fetched with
    /// them may be private).
    pub fn has_credentials(&self) -> bool {
        self.credentials.is_some()
    }

    /// `host[:port]`.
    pub fn authority(&self) -> &str {
        self.authority.as_str()
    }

    /// `http` or `https`.
    pub fn scheme(&self) -> &str {
        self.scheme.as_str()
    }

    /// `scheme://authority`.
    pub fn base_url(&self) -> String {
        format!("{}://{}", self.scheme, self.authority)
    }

    fn uri(&self, path_and_query: &str) -> Result<Uri, ClientError> {
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path_and_query)
            .build()
            .map_err(|_| ClientError::Url {
                url: format!("{}{}", self.base_url(), path_and_query),
            })
    }
}

/// One request to a registry.
#[derive(Debug, Clone)]
pub struct RegistryRequest {
    /// `GET` or `HEAD` for pulls.
    pub method: Method,
    /// Path and query, e.g. `/v2/test/app/blobs/sha256:...`.
    pub path_and_query: String,
    /// Token scope, e.g. `repository:test/app:pull`; `None` for `/v2/`.
    pub scope: Option<String>,
    /// Extra headers (`Accept`, `Range`).
    pub headers: HeaderMap,
}

impl RegistryRequest {
    /// `method` on `path_and_query` for repository `repo` (scope `repository:<repo>:pull`).
    pub fn pull(method: Method, repo: &str, path_and_query: String) -> Self {
        Self {
            method,
            path_and_query,
            scope: Some(format!("repository:{repo}:pull")),
            headers: HeaderMap::new(),
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: http::header::HeaderName, value: HeaderValue) -> Self {
        self.headers.insert(name, value);
        self
    }
}

/// Why a request got no response.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The URL is not an `http[s]://host[:port]` registry URL.
    #[error("invalid registry URL {url:?}")]
    Url {
        /// The URL given.
        url: String,
    },
    /// The TLS configuration could not be built.
    #[error("TLS setup: {what}")]
    Tls {
        /// What failed.
        what: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Could not connect, or the connection failed before a response.
    #[error("request to {authority} failed")]
    Transport {
        /// The host we were talking to.
        authority: String,
        /// Whether it failed while connecting (nothing was sent).
        connect: bool,
        /// The cause.
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    /// No response headers within the configured time.
    #[error("{authority} sent no response within {timeout:?}")]
    Timeout {
        /// The host we were talking to.
        authority: String,
        /// The limit that passed.
        timeout: Duration,
    },
    /// The token endpoint refused or failed.
    #[error("token request to {realm} answered {status}")]
    TokenStatus {
        /// Token endpoint.
        realm: String,
        /// Its status.
        status: StatusCode,
    },
    /// The token endpoint's answer was not a token.
    #[error("token response from {realm} is unreadable")]
    TokenBody {
        /// Token endpoint.
        realm: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A redirect chain was too long or pointed nowhere.
    #[error("bad redirect from {uri}")]
    Redirect {
        /// Where the chain broke.
        uri: String,
    },
}

impl ClientError {
    /// Whether the registry could not be reached or did not answer in time (as opposed to
    /// answering badly); callers serving through outages treat these alike.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Transport { .. } | Self::Timeout { .. })
    }

    /// Whether it was a timeout.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout { .. })
    }
}

type TokenKey = (String, String);
type Http = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The registry client; cheap to clone (connection pool and token cache are shared).
#[derive(Clone)]
pub struct RegistryClient {
    http: Http,
    config: Arc<ClientConfig>,
    /// Authorization values per (authority, scope). A std `Mutex` is right here: it is held only
    /// to clone or insert a small value, never across an `.await`.
    tokens: Arc<Mutex<HashMap<TokenKey, Token>>>,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClient").finish_non_exhaustive()
    }
}

impl RegistryClient {
    /// Builds a client with its own connection pool.
    ///
    /// # Errors
    /// [`ClientError::Tls`] when the extra CA file cannot be read or parsed.
    pub fn new(config: ClientConfig) -> Result<Self, ClientError> {
        let tls = tls_config(&config)?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(config.connect_timeout));
        http.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let http = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(config.max_idle_per_host)
            .pool_idle_timeout(Duration::from_secs(60))
            .build(https);
        Ok(Self {
            http,
            config: Arc::new(config),
            tokens: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    /// Sends `req` to `endpoint`, doing the token dance and following redirects. Any status is
    /// returned as a response (a 404 is not an error here); the body is not read.
    ///
    /// # Errors
    /// [`ClientError`] when no response was had: transport failures, timeouts, token failures.
    pub async fn send(
        &self,
        endpoint: &Endpoint,
        req: &RegistryRequest,
    ) -> Result<Response<Incoming>, ClientError> {
        let uri = endpoint.uri(&req.path_and_query)?;
        let scope = req.scope.clone().unwrap_or_default();
        let key = (endpoint.authority().to_owned(), scope.clone());
        let mut auth = self.cached_auth(&key);
        let mut retried = false;
        loop {
            let resp = self
                .send_following(&req.method, uri.clone(), &req.headers, auth.clone())
                .await?;
            if resp.status() != StatusCode::UNAUTHORIZED || retried {
                return Ok(resp);
            }
            retried = true;
            let challenge = resp
                .headers()
                .get(WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .and_then(Challenge::parse);
            let (value, use_until) = match challenge {
                Some(Challenge::Bearer {
                    realm,
                    service,
                    scope: challenged,
                }) => {
                    let scope = challenged.unwrap_or_else(|| scope.clone());
                    let token = self
                        .fetch_token(endpoint, &realm, service.as_deref(), &scope)
                        .await?;
                    (format!("Bearer {}", token.value), token.use_until)
                }
                Some(Challenge::Basic) => match endpoint
                    .credentials
                    .as_ref()
                    .and_then(Credentials::basic_header)
                {
                    Some(basic) => (basic, Instant::now() + Duration::from_secs(3600)),
                    None => return Ok(resp),
                },
                None => return Ok(resp),
            };
            let value = HeaderValue::from_str(&value).map_err(|e| ClientError::TokenBody {
                realm: endpoint.base_url(),
                source: Box::new(e),
            })?;
            self.tokens
                .lock()
                .expect("token cache mutex poisoned")
                .insert(
                    key.clone(),
                    Token {
                        value: value.to_str().unwrap_or_default().to_owned(),
                        use_until,
                    },
                );
            auth = Some(value);
        }
    }

    /// Sends `req` to `endpoint` with exactly `authorization` (someone else's credential,
    /// passed through as given) or none: no token flow, no token cache. Redirects are followed
    /// as [`RegistryClient::send`] follows them (at most 5 hops, `authorization` sent only to
    /// the original host), so the answer is the final one; a chain that is too long or points
    /// nowhere is an error, never an answer. For asking the registry what *that* credential
    /// may do.
    ///
    /// # Errors
    /// [`ClientError`] when no final response was had: transport failures, timeouts, bad
    /// redirects.
    pub async fn send_once(
        &self,
        endpoint: &Endpoint,
        req: &RegistryRequest,
        authorization: Option<&HeaderValue>,
    ) -> Result<Response<Incoming>, ClientError> {
        let uri = endpoint.uri(&req.path_and_query)?;
        self.send_following(&req.method, uri, &req.headers, authorization.cloned())
            .await
    }

    fn cached_auth(&self, key: &TokenKey) -> Option<HeaderValue> {
        let mut tokens = self.tokens.lock().expect("token cache mutex poisoned");
        match tokens.get(key) {
            Some(t) if t.use_until > Instant::now() => HeaderValue::from_str(&t.value).ok(),
            Some(_) => {
                tokens.remove(key);
                None
            }
            None => None,
        }
    }

    async fn send_following(
        &self,
        method: &Method,
        mut uri: Uri,
        headers: &HeaderMap,
        auth: Option<HeaderValue>,
    ) -> Result<Response<Incoming>, ClientError> {
        let origin = uri.authority().cloned();
        let mut method = method.clone();
        for _ in 0..=MAX_REDIRECTS {
            let same_host = uri.authority() == origin.as_ref();
            let mut builder = Request::builder().method(method.clone()).uri(uri.clone());
            for (name, value) in headers {
                builder = builder.header(name, value);
            }
            builder = builder.header(USER_AGENT, self.config.user_agent.as_str());
            if let (true, Some(a)) = (same_host, &auth) {
                builder = builder.header(AUTHORIZATION, a.clone());
            }
            let request = builder
                .body(Full::new(Bytes::new()))
                .map_err(|_| ClientError::Url {
                    url: uri.to_string(),
                })?;
            let resp = self.request(request).await?;
            if !resp.status().is_redirection() || resp.status() == StatusCode::NOT_MODIFIED {
                return Ok(resp);
            }
            let location = resp
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| ClientError::Redirect {
                    uri: uri.to_string(),
                })?;
            uri = resolve(&uri, location).ok_or_else(|| ClientError::Redirect {
                uri: uri.to_string(),
            })?;
            if resp.status() == StatusCode::SEE_OTHER && method != Method::HEAD {
                method = Method::GET;
            }
        }
        Err(ClientError::Redirect {
            uri: uri.to_string(),
        })
    }

    async fn request(
        &self,
        request: Request<Full<Bytes>>,
    ) -> Result<Response<Incoming>, ClientError> {
        let authority = request
            .uri()
            .authority()
            .map(ToString::to_string)
            .unwrap_or_default();
        let timeout = self.config.response_timeout;
        match tokio::time::timeout(timeout, self.http.request(request)).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(source)) => Err(ClientError::Transport {
                authority,
                connect: source.is_connect(),
                source,
            }),
            Err(_) => Err(ClientError::Timeout { authority, timeout }),
        }
    }

    async fn fetch_token(
        &self,
        endpoint: &Endpoint,
        realm: &str,
        service: Option<&str>,
        scope: &str,
    ) -> Result<Token, ClientError> {
        let realm_uri: Uri = realm.parse().map_err(|_| ClientError::Url {
            url: realm.to_owned(),
        })?;
        let realm_host = realm_uri.host().unwrap_or_default();
        let trusted = realm_is_trusted(
            endpoint.scheme(),
            endpoint.authority.host(),
            realm_uri.scheme_str().unwrap_or_default(),
            realm_host,
            &self.config.trusted_realm_hosts,
        );
        let credentials = endpoint.credentials.as_ref().filter(|_| trusted);
        if endpoint.credentials.is_some() && !trusted {
            tracing::warn!(registry = %endpoint.authority(), realm_host, "token realm is outside the registry's trust boundary; asking for an anonymous token");
        }
        let mut query = Vec::new();
        if let Some(s) = service {
            query.push(("service", s));
        }
        if !scope.is_empty() {
            query.push(("scope", scope));
        }
        let request = match credentials {
            Some(Credentials::IdentityToken { identity_token }) => {
                let mut form = query.clone();
                form.extend([
                    ("grant_type", "refresh_token"),
                    ("client_id", "stampede"),
                    ("refresh_token", identity_token.as_str()),
                ]);
                Request::post(realm_uri.clone())
                    .header(
                        http::header::CONTENT_TYPE,
                        "application/x-www-form-urlencoded",
                    )
                    .header(USER_AGENT, self.config.user_agent.as_str())
                    .body(Full::new(Bytes::from(encode_form(&form))))
            }
            basic => {
                let sep = if realm_uri.query().is_some() {
                    '&'
                } else {
                    '?'
                };
                let url = if query.is_empty() {
                    realm.to_owned()
                } else {
                    format!("{realm}{sep}{}", encode_form(&query))
                };
                let mut b = Request::get(url).header(USER_AGENT, self.config.user_agent.as_str());
                if let Some(h) = basic.and_then(Credentials::basic_header) {
                    b = b.header(AUTHORIZATION, h);
                }
                b.body(Full::new(Bytes::new()))
            }
        }
        .map_err(|_| ClientError::Url {
            url: realm.to_owned(),
        })?;
        let resp = self.request(request).await?;
        if !resp.status().is_success() {
            return Err(ClientError::TokenStatus {
                realm: realm.to_owned(),
                status: resp.status(),
            });
        }
        let body = read_body_limited(resp.into_body(), MAX_TOKEN_RESPONSE_BYTES as u64)
            .await
            .map_err(|source| ClientError::TokenBody {
                realm: realm.to_owned(),
                source: Box::new(source),
            })?;
        let parsed: TokenResponse =
            serde_json::from_slice(&body).map_err(|source| ClientError::TokenBody {
                realm: realm.to_owned(),
                source: Box::new(source),
            })?;
        parsed
            .into_token(Instant::now())
            .ok_or_else(|| ClientError::TokenBody {
                realm: realm.to_owned(),
                source: "no token in response".into(),
            })
    }
}

fn encode_form(pairs: &[(&str, &str)]) -> String {
    use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", k, utf8_percent_encode(v, NON_ALPHANUMERIC)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Resolves a `Location` header against the request URI (absolute, or absolute-path).
fn resolve(base: &Uri, location: &str) -> Option<Uri> {
    if location.starts_with("http://") || location.starts_with("https://") {
        return location.parse().ok();
    }
    if location.starts_with('/') {
        let mut parts = base.clone().into_parts();
        parts.path_and_query = Some(location.parse().ok()?);
        return Uri::from_parts(parts).ok();
    }
    None
}

fn tls_config(config: &ClientConfig) -> Result<rustls::ClientConfig, ClientError> {
    let tls = |what: &str, e: Box<dyn std::error::Error + Send + Sync>| ClientError::Tls {
        what: what.to_owned(),
        source: e,
    };
    let mut roots = rustls::RootCertStore::empty();
    // Unparseable system certificates are skipped, as every TLS client does; a bad extra CA file
    // is an error because the operator named it.
    for cert in rustls_native_certs::load_native_certs().certs {
        roots.add(cert).ok();
    }
    if let Some(path) = &config.extra_ca_file {
        let file = std::fs::File::open(path)
            .map_err(|e| tls(&format!("open CA file {}", path.display()), Box::new(e)))?;
        let mut found = 0;
        for cert in rustls_pemfile::certs(&mut std::io::BufReader::new(file)) {
            let cert =
                cert.map_err(|e| tls(&format!("read CA file {}", path.display()), Box::new(e)))?;
            roots
                .add(cert)
                .map_err(|e| tls(&format!("add CA from {}", path.display()), Box::new(e)))?;
            found += 1;
        }
        if found == 0 {
            return Err(tls(
                &format!("CA file {}", path.display()),
                "no PEM certificates in file".into(),
            ));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls("protocol versions", Box::new(e)))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Why a bounded body read failed.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The body is larger than allowed.
    #[error("body exceeds {limit_bytes} bytes")]
    TooLarge {
        /// The limit.
        limit_bytes: u64,
    },
    /// The connection failed mid-body.
    #[error("read body")]
    Read(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Collects a body of at most `limit_bytes` into memory (manifests, token responses).
///
/// # Errors
/// [`BodyError::TooLarge`] past the limit; [`BodyError::Read`] on a transport failure.
pub async fn read_body_limited<B>(body: B, limit_bytes: u64) -> Result<Bytes, BodyError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let limited = Limited::new(body, usize::try_from(limit_bytes).unwrap_or(usize::MAX));
    match limited.collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(BodyError::TooLarge { limit_bytes })
        }
        Err(e) => Err(BodyError::Read(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(
            Endpoint::parse("http://127.0.0.1:5000")
                .unwrap()
                .authority(),
            "127.0.0.1:5000"
        );
        assert_eq!(
            Endpoint::parse("https://ghcr.io/").unwrap().base_url(),
            "https://ghcr.io"
        );
        for bad in [
            "ftp://x",
            "127.0.0.1:5000",
            "http://x/v2",
            "http://x?q=1",
            "",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn redirects_resolve() {
        let base: Uri = "http://a:1/v2/x/blobs/sha256:0".parse().unwrap();
        assert_eq!(
            resolve(&base, "/data/1?sig=2").unwrap().to_string(),
            "http://a:1/data/1?sig=2"
        );
        assert_eq!(
            resolve(&base, "https://s3/b").unwrap().to_string(),
            "https://s3/b"
        );
        assert!(resolve(&base, "relative").is_none());
    }

    #[test]
    fn form_encoding() {
        assert_eq!(
            encode_form(&[("scope", "repository:a/b:pull"), ("service", "x y")]),
            "scope=repository%3Aa%2Fb%3Apull&service=x%20y"
        );
    }
}
