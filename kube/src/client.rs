//! [`KubeClient`]: JSON requests to the API server and line-delimited watch streams, over
//! hyper with rustls (the cluster's CA only; the client certificate when the credentials are
//! one). Every request is bounded in time except a watch, which the server ends itself after
//! `timeoutSeconds`. Answers are `serde_json::Value`: callers read the fields they need.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf as _, Bytes, BytesMut};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::access::{Access, Credentials};
use crate::error::KubeError;

/// How long a connection to the API server may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a request (not a watch) may take, answer read included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

type Http = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A client of one API server; cheap to clone.
#[derive(Clone)]
pub struct KubeClient {
    http: Http,
    access: Arc<Access>,
}

impl std::fmt::Debug for KubeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeClient")
            .field("server", &self.access.server)
            .finish_non_exhaustive()
    }
}

impl KubeClient {
    /// A client for `access`.
    ///
    /// # Errors
    /// [`KubeError::Tls`] when the CA or the client certificate cannot be used.
    pub fn new(access: Access) -> Result<Self, KubeError> {
        let tls = tls_config(&access)?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        http.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .wrap_connector(http);
        let http = Client::builder(TokioExecutor::new()).build(https);
        Ok(Self {
            http,
            access: Arc::new(access),
        })
    }

    /// The access this client uses.
    pub fn access(&self) -> &Access {
        &self.access
    }

    /// `GET path` (`/api/v1/namespaces/x/endpoints/y`), the answer as JSON.
    ///
    /// # Errors
    /// [`KubeError::Unreachable`], [`KubeError::Status`] or [`KubeError::Decode`].
    pub async fn get(&self, path: &str) -> Result<Value, KubeError> {
        self.request(Method::GET, path, None).await
    }

    /// `POST path` with `body` (an object to create).
    ///
    /// # Errors
    /// As [`KubeClient::get`].
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, KubeError> {
        self.request(Method::POST, path, Some(body)).await
    }

    /// `DELETE path` (with `body`, a `DeleteOptions`, if given).
    ///
    /// # Errors
    /// As [`KubeClient::get`].
    pub async fn delete(&self, path: &str, body: Option<&Value>) -> Result<Value, KubeError> {
        self.request(Method::DELETE, path, body).await
    }

    /// Sends one request and reads the whole answer as JSON.
    ///
    /// # Errors
    /// As [`KubeClient::get`].
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, KubeError> {
        let exchange = async {
            let resp = self.send(method.clone(), path, body).await?;
            let status = resp.status();
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| self.unreachable(&e))?
                .to_bytes();
            Ok::<_, KubeError>((status, bytes))
        };
        let (status, bytes) = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| KubeError::Unreachable {
                server: self.access.server.clone(),
                message: format!("no answer to {method} {path} within {REQUEST_TIMEOUT:?}"),
            })??;
        if !status.is_success() {
            return Err(status_error(&method, path, status, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|e| KubeError::Decode {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }

    /// Starts a watch: `GET path` with `watch=true` added; events arrive as JSON lines
    /// (`{"type": "ADDED", "object": {...}}`) until the server ends the stream.
    ///
    /// # Errors
    /// As [`KubeClient::get`], for the request that opens the stream.
    pub async fn watch(&self, path: &str) -> Result<Watch, KubeError> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let path = format!("{path}{sep}watch=true");
        let resp = tokio::time::timeout(REQUEST_TIMEOUT, self.send(Method::GET, &path, None))
            .await
            .map_err(|_| KubeError::Unreachable {
                server: self.access.server.clone(),
                message: format!("no answer to GET {path} within {REQUEST_TIMEOUT:?}"),
            })??;
        let status = resp.status();
        if !status.is_success() {
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map(http_body_util::Collected::to_bytes)
                .unwrap_or_default();
            return Err(status_error(&Method::GET, &path, status, &bytes));
        }
        Ok(Watch {
            body: resp.into_body(),
            buf: BytesMut::new(),
            path,
        })
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<http::Response<Incoming>, KubeError> {
        let uri = format!("{}{path}", self.access.server);
        let mut req = Request::builder()
            .method(method)
            .uri(&uri)
            .header(http::header::ACCEPT, "application/json")
            .header(http::header::USER_AGENT, "stampede-kube");
        if let Some(token) = self.token()? {
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let body = match body {
            Some(v) => {
                req = req.header(http::header::CONTENT_TYPE, "application/json");
                Full::new(Bytes::from(v.to_string()))
            }
            None => Full::new(Bytes::new()),
        };
        let req = req.body(body).map_err(|e| KubeError::Unreachable {
            server: self.access.server.clone(),
            message: format!("bad request URL {uri}: {e}"),
        })?;
        self.http
            .request(req)
            .await
            .map_err(|e| self.unreachable(&e))
    }

    fn token(&self) -> Result<Option<String>, KubeError> {
        match &self.access.credentials {
            Credentials::Token(t) => Ok(Some(t.clone())),
            Credentials::TokenFile(path) => std::fs::read_to_string(path)
                .map(|t| Some(t.trim().to_owned()))
                .map_err(|e| KubeError::Config {
                    path: path.clone(),
                    what: format!("cannot read the token: {e}"),
                }),
            Credentials::ClientCertificate { .. } | Credentials::Anonymous => Ok(None),
        }
    }

    fn unreachable(&self, e: &dyn std::error::Error) -> KubeError {
        // The chain says why (connection refused, certificate not trusted, ...).
        let mut message = e.to_string();
        let mut source = e.source();
        while let Some(s) = source {
            message.push_str(": ");
            message.push_str(&s.to_string());
            source = s.source();
        }
        KubeError::Unreachable {
            server: self.access.server.clone(),
            message,
        }
    }
}

/// The API server's `Status` message from an error answer, or the body itself.
fn status_error(method: &Method, path: &str, status: StatusCode, body: &[u8]) -> KubeError {
    let message = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| {
            String::from_utf8_lossy(body)
                .trim()
                .chars()
                .take(300)
                .collect()
        });
    KubeError::Status {
        method: method.to_string(),
        path: path.to_owned(),
        status: status.as_u16(),
        message,
    }
}

/// An open watch stream.
#[derive(Debug)]
pub struct Watch {
    body: Incoming,
    buf: BytesMut,
    path: String,
}

impl Watch {
    /// The next event (`{"type": ..., "object": ...}`), or `None` when the server ended the
    /// stream.
    ///
    /// # Errors
    /// [`KubeError::Unreachable`] when the stream broke, [`KubeError::Decode`] for a line that
    /// is not JSON.
    pub async fn next(&mut self) -> Result<Option<Value>, KubeError> {
        loop {
            if let Some(at) = self.buf.iter().position(|b| *b == b'\n') {
                let line = self.buf.split_to(at + 1);
                let line = line.chunk().strip_suffix(b"\n").unwrap_or(line.chunk());
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return serde_json::from_slice(line)
                    .map(Some)
                    .map_err(|e| KubeError::Decode {
                        path: self.path.clone(),
                        message: e.to_string(),
                    });
            }
            match self.body.frame().await {
                None => return Ok(None),
                Some(Err(e)) => {
                    return Err(KubeError::Unreachable {
                        server: String::new(),
                        message: format!("watch {} broke: {e}", self.path),
                    })
                }
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }
}

fn tls_config(access: &Access) -> Result<rustls::ClientConfig, KubeError> {
    let tls = |what: &'static str, message: String| KubeError::Tls { what, message };
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut access.ca_pem.as_slice()) {
        let cert = cert.map_err(|e| tls("the cluster's CA", e.to_string()))?;
        roots
            .add(cert)
            .map_err(|e| tls("the cluster's CA", e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(tls(
            "the cluster's CA",
            "no PEM certificate in it".to_owned(),
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls("protocol versions", e.to_string()))?
        .with_root_certificates(roots);
    match &access.credentials {
        Credentials::ClientCertificate { cert_pem, key_pem } => {
            let chain = rustls_pemfile::certs(&mut cert_pem.as_slice())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| tls("the client certificate", e.to_string()))?;
            let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
                .map_err(|e| tls("the client key", e.to_string()))?
                .ok_or_else(|| tls("the client key", "no PEM private key in it".to_owned()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| tls("the client certificate", e.to_string()))
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}
