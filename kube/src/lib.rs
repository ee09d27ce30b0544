//! stampede-kube: the little of the Kubernetes API the workspace needs, over the same hyper and
//! rustls stack the registry client uses. The cache daemon lists its cluster peers from a
//! Service's Endpoints with the pod's service account; the load generator creates a Deployment,
//! watches its pods and events and deletes it again, through a kubeconfig.
//!
//! Why not the `kube` crate: it brings k8s-openapi (every API type of one Kubernetes version,
//! a long compile on this project's 2-core machines) and a tower stack, for what here is a
//! handful of JSON GET, POST, PATCH, DELETE and watch requests read as `serde_json::Value`.
//! Reading JSON by field also keeps one client working against any API server version (the
//! test bed runs v1.20).
//!
//! # Layout
//! - [`access`]: [`Access`], where the API server is and how to prove who we are: a kubeconfig's
//!   current context (client certificate or bearer token) or the in-cluster service account.
//! - [`client`]: [`KubeClient`], JSON requests and line-delimited watch streams.
//! - [`error`]: [`KubeError`], in plain words, by what went wrong.
//!
//! # One request
//! [`Access::from_kubeconfig`] -> [`KubeClient::new`] (rustls with the cluster's CA, the client
//! certificate if any) -> [`KubeClient::get`] -> `GET https://server/api/v1/...` with the bearer
//! token if any -> a 2xx body parsed as JSON, anything else a [`KubeError::Status`] carrying the
//! API server's own message.

#![forbid(unsafe_code)]

pub mod access;
pub mod client;
pub mod error;

pub use access::{Access, Credentials};
pub use client::{KubeClient, Watch};
pub use error::KubeError;
