//! What cache-daemon and bench-harness both speak: the OCI distribution protocol's nouns and a
//! streaming registry client.
//!
//! # Layout
//! - [`api`]: the pull API's request paths ([`api::Route`]), `Range` headers
//!   ([`api::ByteRange`]) and request kinds, parsed once for the daemon, the harness and lab.
//! - [`digest`]: `sha256:` digests, parsing and streaming verification.
//! - [`reference`]: repository names, tags, image references.
//! - [`manifest`]: media types, manifest and index parsing, platform selection, layer compression.
//! - [`manifest_get`]: the manifest GET: its `Accept` list, and its answer's size limit, schema 1
//!   refusal and digest check, for the daemon's upstream fetch and the harness's pull.
//! - [`auth`]: `WWW-Authenticate` challenges, credentials, tokens, and where credentials may go.
//! - [`layout`]: reading OCI image layouts on disk (`skopeo copy ... oci:DIR`, `umoci`).
//! - [`size`]: byte sizes as people write them (`64MiB`, `1.5GB`), one grammar for both binaries.
//! - [`client`]: the HTTP client: token flow, redirects, timeouts; bodies stay streams.
//!
//! A pull of a blob goes: [`reference::ImageRef::parse`] -> [`client::Endpoint`] ->
//! [`client::RegistryClient::send`] (401 -> [`auth::Challenge`] -> token -> retry) ->
//! the caller streams the body through a [`digest::Verifier`].

#![forbid(unsafe_code)]

pub mod api;
pub mod auth;
pub mod client;
pub mod digest;
pub mod layout;
pub mod manifest;
pub mod manifest_get;
pub mod reference;
pub mod size;

pub use client::{ClientConfig, ClientError, Endpoint, RegistryClient, RegistryRequest};
pub use digest::{Digest, DigestError, DigestMismatch, Verifier};
pub use layout::{LayoutError, OciLayout};
pub use manifest::{Compression, Manifest, ManifestError, Platform};
pub use reference::{ImageRef, Reference, ReferenceError, RepoName};
pub use size::{ByteSize, SizeError};

/// `e` and its causes, `a: b: c`, each said once (a cause already in the text is skipped):
/// connection refused, DNS and TLS reasons live in the sources, and logs and reports need them.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}
