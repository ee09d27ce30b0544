//! [`Access`]: where the API server is and how we prove who we are. From a kubeconfig (the
//! current context's cluster and user: `certificate-authority(-data)`, `client-certificate(-data)`
//! with `client-key(-data)`, or `token`/`tokenFile`) or from the service account every pod gets
//! (`KUBERNETES_SERVICE_HOST`/`_PORT`, the token and CA under
//! `/var/run/secrets/kubernetes.io/serviceaccount`). Exec and auth-provider plugins are not
//! supported and are named as such.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use yaml_rust2::{Yaml, YamlLoader};

use crate::error::KubeError;

/// The service account directory in every pod that mounts its token.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// How requests prove who they are.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// A client certificate and its key, PEM.
    ClientCertificate {
        /// The certificate chain.
        cert_pem: Vec<u8>,
        /// The private key.
        key_pem: Vec<u8>,
    },
    /// A bearer token, fixed.
    Token(String),
    /// A bearer token read from this file before every request (projected service account
    /// tokens are rotated by the kubelet).
    TokenFile(PathBuf),
    /// Nothing.
    Anonymous,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::ClientCertificate { .. } => "ClientCertificate",
            Self::Token(_) => "Token",
            Self::TokenFile(_) => "TokenFile",
            Self::Anonymous => "Anonymous",
        })
    }
}

/// An API server and the credentials to use there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// `https://host:port`, no trailing slash.
    pub server: String,
    /// The CA certificates (PEM) the server's certificate must chain to.
    pub ca_pem: Vec<u8>,
    /// Who we are.
    pub credentials: Credentials,
    /// The context's namespace, or the pod's; `default` when neither says.
    pub namespace: String,
}

impl Access {
    /// The current context of the kubeconfig at `path`.
    ///
    /// # Errors
    /// [`KubeError::Config`] naming the file and what is missing or unsupported.
    pub fn from_kubeconfig(path: &Path) -> Result<Self, KubeError> {
        let bad = |what: String| KubeError::Config {
            path: path.to_owned(),
            what,
        };
        let text =
            std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
        let docs =
            YamlLoader::load_from_str(&text).map_err(|e| bad(format!("not YAML or JSON: {e}")))?;
        let doc = docs
            .first()
            .ok_or_else(|| bad("the file is empty".to_owned()))?;
        let current = doc["current-context"]
            .as_str()
            .ok_or_else(|| bad("no current-context".to_owned()))?;
        let context = named(doc, "contexts", current)
            .map(|c| &c["context"])
            .ok_or_else(|| bad(format!("context {current:?} is not in contexts")))?;
        let cluster_name = context["cluster"]
            .as_str()
            .ok_or_else(|| bad(format!("context {current:?} names no cluster")))?;
        let cluster = named(doc, "clusters", cluster_name)
            .map(|c| &c["cluster"])
            .ok_or_else(|| bad(format!("cluster {cluster_name:?} is not in clusters")))?;
        let server = cluster["server"]
            .as_str()
            .ok_or_else(|| bad(format!("cluster {cluster_name:?} has no server")))?;
        if !server.starts_with("https://") {
            return Err(bad(format!(
                "cluster {cluster_name:?}: server {server:?} is not an https:// URL"
            )));
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        let ca_pem = data_or_file(cluster, "certificate-authority", dir).map_err(&bad)?;
        let ca_pem = ca_pem.ok_or_else(|| {
            bad(format!(
                "cluster {cluster_name:?} has no certificate-authority(-data); this client does not skip verification"
            ))
        })?;
        let user = match context["user"].as_str() {
            Some(name) => named(doc, "users", name)
                .map(|u| &u["user"])
                .ok_or_else(|| bad(format!("user {name:?} is not in users")))?,
            None => &Yaml::BadValue,
        };
        let credentials = credentials(user, dir).map_err(&bad)?;
        let namespace = context["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_owned();
        Ok(Self {
            server: server.trim_end_matches('/').to_owned(),
            ca_pem,
            credentials,
            namespace,
        })
    }

    /// The pod's own service account, as every in-cluster client finds it.
    ///
    /// # Errors
    /// [`KubeError::NotInCluster`] outside a pod, [`KubeError::Config`] when the service
    /// account's files cannot be read (`automountServiceAccountToken: false`).
    pub fn in_cluster() -> Result<Self, KubeError> {
        Self::in_cluster_from(Path::new(SERVICE_ACCOUNT_DIR))
    }

    /// [`Access::in_cluster`] with the service account files in `dir`.
    ///
    /// # Errors
    /// As [`Access::in_cluster`].
    pub fn in_cluster_from(dir: &Path) -> Result<Self, KubeError> {
        let host = std::env::var("KUBERNETES_SERVICE_HOST")
            .map_err(|_| KubeError::NotInCluster("KUBERNETES_SERVICE_HOST"))?;
        let port = std::env::var("KUBERNETES_SERVICE_PORT")
            .map_err(|_| KubeError::NotInCluster("KUBERNETES_SERVICE_PORT"))?;
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path).map_err(|e| KubeError::Config {
                what: format!(
                    "cannot read the service account's {name}: {e} (is automountServiceAccountToken off?)"
                ),
                path,
            })
        };
        let ca_pem = read("ca.crt")?;
        read("token")?;
        let namespace = read("namespace")
            .map(|n| String::from_utf8_lossy(&n).trim().to_owned())
            .unwrap_or_else(|_| "default".to_owned());
        Ok(Self {
            server: format!("https://{host}:{port}"),
            ca_pem,
            credentials: Credentials::TokenFile(dir.join("token")),
            namespace,
        })
    }
}

/// The entry named `name` in the list `key` of a kubeconfig.
fn named<'a>(doc: &'a Yaml, key: &str, name: &str) -> Option<&'a Yaml> {
    doc[key]
        .as_vec()?
        .iter()
        .find(|e| e["name"].as_str() == Some(name))
}

/// `KEY-data` (base64) or `KEY` (a file, relative to the kubeconfig's directory).
fn data_or_file(map: &Yaml, key: &str, dir: &Path) -> Result<Option<Vec<u8>>, String> {
    if let Some(data) = map[format!("{key}-data").as_str()].as_str() {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .map_err(|e| format!("{key}-data is not base64: {e}"))?;
        return Ok(Some(bytes));
    }
    match map[key].as_str() {
        Some(file) => {
            let path = dir.join(file);
            std::fs::read(&path)
                .map(Some)
                .map_err(|e| format!("{key} {}: {e}", path.display()))
        }
        None => Ok(None),
    }
}

fn credentials(user: &Yaml, dir: &Path) -> Result<Credentials, String> {
    for unsupported in ["exec", "auth-provider"] {
        if !user[unsupported].is_badvalue() {
            return Err(format!(
                "the user's {unsupported} plugin is not supported; give a client certificate or a token"
            ));
        }
    }
    let cert = data_or_file(user, "client-certificate", dir)?;
    let key = data_or_file(user, "client-key", dir)?;
    match (cert, key) {
        (Some(cert_pem), Some(key_pem)) => {
            return Ok(Credentials::ClientCertificate { cert_pem, key_pem })
        }
        (Some(_), None) => return Err("client-certificate without client-key".to_owned()),
        (None, Some(_)) => return Err("client-key without client-certificate".to_owned()),
        (None, None) => {}
    }
    if let Some(token) = user["token"].as_str() {
        return Ok(Credentials::Token(token.trim().to_owned()));
    }
    if let Some(file) = user["tokenFile"].as_str() {
        return Ok(Credentials::TokenFile(dir.join(file)));
    }
    Ok(Credentials::Anonymous)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    const CA: &str = "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg=="; // "-----BEGIN CERTIFICATE-----\n"

    #[test]
    fn reads_the_current_context_with_a_token() {
        let (_d, path) = write(&format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: b\n\
             clusters:\n- name: c\n  cluster: {{server: 'https://10.0.0.1:6443/', certificate-authority-data: {CA}}}\n\
             users:\n- name: u\n  user: {{token: abc}}\n\
             contexts:\n- name: a\n  context: {{cluster: x, user: y}}\n- name: b\n  context: {{cluster: c, user: u, namespace: bench}}\n"
        ));
        let a = Access::from_kubeconfig(&path).unwrap();
        assert_eq!(a.server, "https://10.0.0.1:6443");
        assert_eq!(a.namespace, "bench");
        assert_eq!(a.credentials, Credentials::Token("abc".into()));
        assert!(a.ca_pem.starts_with(b"-----BEGIN CERTIFICATE-----"));
    }

    #[test]
    fn bad_kubeconfigs_say_what_is_wrong() {
        for (text, says) in [
            ("", "the file is empty"),
            ("kind: Config\n", "no current-context"),
            ("current-context: a\ncontexts: []\n", "context \"a\" is not in contexts"),
            (
                "current-context: a\ncontexts: [{name: a, context: {cluster: c}}]\nclusters: [{name: c, cluster: {server: 'http://x'}}]\n",
                "is not an https:// URL",
            ),
            (
                "current-context: a\ncontexts: [{name: a, context: {cluster: c}}]\nclusters: [{name: c, cluster: {server: 'https://x'}}]\n",
                "has no certificate-authority",
            ),
            (
                "current-context: a\ncontexts: [{name: a, context: {cluster: c, user: u}}]\nclusters: [{name: c, cluster: {server: 'https://x', certificate-authority-data: AA==}}]\nusers: [{name: u, user: {exec: {command: aws}}}]\n",
                "exec plugin is not supported",
            ),
        ] {
            let (_d, path) = write(text);
            let e = Access::from_kubeconfig(&path).unwrap_err().to_string();
            assert!(e.contains(says), "{text:?}: {e}");
            assert!(e.starts_with(&path.display().to_string()), "{e}");
        }
        let e = Access::from_kubeconfig(Path::new("/nonexistent/kubeconfig")).unwrap_err();
        assert!(e.to_string().contains("cannot read it"), "{e}");
    }
}
