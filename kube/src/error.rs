//! [`KubeError`]: why a Kubernetes API request could not be made or was refused. Messages are
//! plain words for an operator: what we tried, and the API server's own message when it gave one.

use std::path::PathBuf;

/// Why a Kubernetes API operation failed.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// The kubeconfig or service account files could not be read or make no sense.
    #[error("{}: {what}", path.display())]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        what: String,
    },
    /// Not running in a pod: the in-cluster environment is missing.
    #[error("not in a Kubernetes pod: {0} is not set (the kubelet sets it in every container)")]
    NotInCluster(&'static str),
    /// The TLS settings could not be built from the credentials.
    #[error("TLS settings from {what}: {message}")]
    Tls {
        /// Which credential.
        what: &'static str,
        /// What rustls said.
        message: String,
    },
    /// No answer from the API server.
    #[error("the Kubernetes API server {server} cannot be reached: {message}")]
    Unreachable {
        /// The server URL.
        server: String,
        /// What the connection said.
        message: String,
    },
    /// The API server answered with an error status.
    #[error("{method} {path}: the API server answered {status}: {message}")]
    Status {
        /// The request's method.
        method: String,
        /// The request's path.
        path: String,
        /// The HTTP status.
        status: u16,
        /// The API server's message (its Status object's `message`), or the body.
        message: String,
    },
    /// The answer was not the JSON expected.
    #[error("{path}: the API server's answer is not JSON: {message}")]
    Decode {
        /// The request's path.
        path: String,
        /// What the parser said.
        message: String,
    },
}

impl KubeError {
    /// The HTTP status of a [`KubeError::Status`].
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}
