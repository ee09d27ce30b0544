//! cache-daemon integration tests: one binary, modules by subject, helpers in `common/`.

// A test body reads top to bottom as one scenario: the size limits (clippy.toml) are for non-test code.
#![allow(clippy::too_many_lines, clippy::too_many_arguments)]

mod common;

mod access;
mod bad_input;
mod blobs;
mod clients;
mod cluster;
mod deploy;
mod e2e;
mod first_use;
mod hostile;
mod kubernetes;
mod load;
mod manifests;
mod node_faults;
mod operations;
mod reliability_doc;
mod upstream_faults;
mod zero_copy;
