//! cache-daemon: a node-local, content-addressed OCI blob cache that containerd (hosts.toml),
//! CRI-O/podman (registries.conf) and dockerd (`registry-mirrors`) use as a registry mirror.
//! Each digest is fetched upstream once however many clients want it, and every waiting client
//! streams the bytes as they land. Content is verified against its sha256 before it is ever
//! served as complete.
//!
//! # Layout
//! - [`cli`] / [`config_file`] / [`config`]: flags, env vars and the TOML file, merged and
//!   validated into per-component configs.
//! - [`server`]: accept loop, connection limit, graceful shutdown; builds the daemon.
//! - [`write_deadline`]: client connections whose writes give up when the client stops reading.
//! - [`zero_copy`]: client connections on which the kernel sends blob bytes from their file
//!   (`sendfile`) in place of stand-in frames the bodies hand hyper.
//! - [`route`]: method + path + query parsed into a [`route::Route`]; pure. The pull API's
//!   grammar and the `Range` header are `stampede_oci::api`'s.
//! - [`tool`] / [`admin_client`]: the operator tools, on a stopped store or through a running
//!   daemon's admin endpoint (whose daemon must prove it serves the store named).
//! - [`handler`]: dispatch; the only place that combines store, flights, manifests, upstreams.
//! - [`access`]: caller checks (off by default): the caller's own credentials tried upstream
//!   before private content is served.
//! - [`store`]: committed blobs on disk (layout, index), commit by fsync + rename.
//! - [`flight`]: single-flight and fan-out of fills in progress.
//! - [`fill`]: one upstream fill: fetch, hash, write, verify, commit or fail; `fill::writer`
//!   is the store's write path (frames batched, one write and one hash per batch).
//! - [`cluster`]: cluster mode (off by default): members, rendezvous ownership of 16 MiB
//!   stripes, the peer port, signed peer requests, and the miss path fed by the stripes' owners.
//! - [`body`]: response bodies from committed files and from growing fills.
//! - [`passthrough`]: misses streamed from upstream without storing, while the store is full.
//! - [`manifests`]: manifests by digest (kept) and tags (TTL, coalesced, stale on outage).
//! - [`upstream`]: which registry a request means, and the calls to it.
//! - [`metrics`]: Prometheus counters and gauges.
//! - [`error`]: errors, their HTTP status and OCI code, in one place.
//!
//! # A blob request's path
//! `server` -> `handler::App::handle` -> `route::Route::parse` -> (with caller checks on:
//! `access::Access::admit`, allowed or refused) -> store hit? `body::from_file`, whose cached
//! spans go to hyper as stand-ins that `zero_copy::KernelSend` sends with `sendfile`.
//! Miss: `flight::Flights::claim` -> leader spawns `fill::run` (upstream GET -> batches to the
//! `fill::writer` thread: temp file write, followers told, hash -> verify ->
//! `store::BlobStore::commit`), and leader and followers alike answer with
//! `body::from_flight`, which reads the temp file as it grows and sends its last byte only after
//! the commit.
//!
//! In cluster mode the miss path is the same, except where the fill's bytes come from:
//! `fill::run` asks `cluster::Cluster::open`, which ranks the live members for stripe 0
//! (`cluster::rendezvous`) and asks its owner over the peer port (`cluster::client`, signed by
//! `cluster::signing`). The owner's `cluster::server` answers from its store, its stripe fill
//! (`cluster::origin`: one ranged registry `GET` per stripe, whoever asks) or, past the fan-out
//! bound, with a redirect to a node already receiving the stripe. `cluster::fetch` hands each
//! stripe's bytes to the fill's writer (which hashes them) as they arrive, stripe after stripe, falling
//! back to the next candidate and then the registry; the fill verifies and commits as above.

#![forbid(unsafe_code)]

pub mod access;
pub mod admin;
pub mod admin_client;
pub mod body;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod config_file;
pub mod error;
pub mod fill;
pub mod flight;
pub mod handler;
pub mod manifests;
pub mod metrics;
pub mod passthrough;
pub mod route;
pub mod server;
pub mod store;
pub mod tool;
pub mod upstream;
pub mod write_deadline;
pub mod zero_copy;

pub use config::Config;
pub use server::{start, Daemon, StartError};
