//! bench-harness integration tests, in one binary: each module drives a part of the library
//! in-process over loopback, with its own temp dir and servers on port 0.
//!
//! - [`registry`]: the embedded registry serving generated images, and its accounting.

mod registry;
