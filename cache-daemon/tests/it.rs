//! cache-daemon integration tests: one binary, modules by subject, helpers in `common/`.

mod common;

mod bad_input;
mod blobs;
mod clients;
mod deploy;
mod e2e;
mod fuzzing;
mod hostile;
mod manifests;
mod operations;
