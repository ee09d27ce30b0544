//! The operator tools' client of a running daemon's admin endpoint (`tool.rs` decides when a
//! tool goes through one): where its address came from, proof that the daemon behind it serves
//! the store the operator named (`GET /admin/store`, see `store/identity.rs`), the JSON calls,
//! and errors that say how to give the right address when nothing answers. It never opens a
//! store.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::store::identity::{self, StoreIdentity};
use crate::tool::ToolError;

/// A running daemon's admin endpoint, and how the tool came to it (for the hint when nothing
/// answers there).
#[derive(Debug, Clone)]
pub struct AdminClient {
    /// `http://host:port`, no trailing `/`.
    url: String,
    /// Where the address came from.
    source: AdminSource,
}

/// Where an admin address came from.
#[derive(Debug, Clone)]
enum AdminSource {
    /// `--admin`.
    Flag,
    /// The configured (or default) `admin_listen` of the daemon holding `root`.
    Config {
        /// The store the daemon holds.
        root: PathBuf,
        /// The config file given, if any.
        config: Option<PathBuf>,
    },
}

impl AdminClient {
    /// The endpoint given with `--admin`.
    pub fn from_flag(url: &str) -> Self {
        Self {
            url: url.trim_end_matches('/').to_owned(),
            source: AdminSource::Flag,
        }
    }

    /// The configured `admin_listen` (`host:port`) of the daemon that holds the store at `root`,
    /// as read from `config` (or the default when `None`).
    pub fn from_config(addr: std::net::SocketAddr, root: &Path, config: Option<&Path>) -> Self {
        Self {
            url: format!("http://{addr}"),
            source: AdminSource::Config {
                root: root.to_owned(),
                config: config.map(Path::to_owned),
            },
        }
    }

    /// Asks the daemon which store it serves, and refuses unless it is `root`.
    ///
    /// # Errors
    /// [`ToolError::WrongStore`] naming both stores; [`ToolError::Admin`] when nothing answers;
    /// [`ToolError::Refused`] when the daemon does not say (an older version).
    pub async fn confirm_store(&self, root: &Path) -> Result<(), ToolError> {
        let theirs: StoreIdentity = match self.call(Method::GET, "/admin/store").await {
            Ok(identity) => identity,
            Err(ToolError::Refused(message)) => {
                return Err(ToolError::Refused(format!(
                    "the daemon on the admin endpoint {} does not say which store it serves ({message}); \
                     it may be an older cache-daemon, so nothing was done to {}",
                    self.url,
                    root.display()
                )))
            }
            Err(e) => return Err(e),
        };
        let wanted_root = root.canonicalize().unwrap_or_else(|_| root.to_owned());
        let wanted_id = identity::read_id(root).map_err(|e| {
            ToolError::Refused(format!(
                "read the store id {}: {e}",
                root.join("store-id").display()
            ))
        })?;
        let same = match &wanted_id {
            Some(id) => *id == theirs.id,
            None => wanted_root == theirs.root,
        };
        if same {
            return Ok(());
        }
        Err(ToolError::WrongStore {
            url: self.url.clone(),
            serves: theirs.root,
            serves_id: theirs.id,
            wanted: wanted_root,
            wanted_id: wanted_id.unwrap_or_else(|| "none yet".to_owned()),
        })
    }

    /// Sends `method path_and_query` and decodes the JSON answer.
    ///
    /// # Errors
    /// [`ToolError::Admin`] when nothing answers or the answer is not JSON;
    /// [`ToolError::Refused`] with the daemon's message for a non-2xx status.
    pub async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path_and_query: &str,
    ) -> Result<T, ToolError> {
        let base = self.url.as_str();
        let url = format!("{base}{path_and_query}");
        let admin_err = |message: String| ToolError::Admin {
            url: base.to_owned(),
            message,
        };
        let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let req = Request::builder()
            .method(method)
            .uri(&url)
            .body(Empty::new())
            .map_err(|e| admin_err(e.to_string()))?;
        let resp = client.request(req).await.map_err(|e| {
            if e.is_connect() {
                self.unreachable(&e)
            } else {
                admin_err(stampede_oci::error_chain(&e))
            }
        })?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| admin_err(e.to_string()))?
            .to_bytes();
        if !status.is_success() {
            let message = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["errors"][0]["message"].as_str().map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
            return Err(ToolError::Refused(format!("{status}: {message}")));
        }
        serde_json::from_slice(&body).map_err(|e| admin_err(format!("unexpected answer: {e}")))
    }

    /// Nothing listens on the admin address: say where the address came from and how to give the
    /// right one.
    fn unreachable(&self, e: &dyn std::error::Error) -> ToolError {
        let reason = stampede_oci::error_chain(e);
        let hint = match &self.source {
            AdminSource::Flag => {
                "check --admin: it takes the daemon's admin_listen address, e.g. http://127.0.0.1:5051"
                    .to_owned()
            }
            AdminSource::Config { root, config } => format!(
                "a daemon holds the store {} but does not answer on {}, {}; \
                 give --admin http://<its admin_listen>, or --config <its config file>",
                root.display(),
                self.url,
                match config {
                    Some(path) => format!("the admin_listen set in {}", path.display()),
                    None => "the default admin_listen (no --config given)".to_owned(),
                }
            ),
        };
        ToolError::Admin {
            url: self.url.clone(),
            message: format!("no daemon answers ({reason}); {hint}"),
        }
    }
}
