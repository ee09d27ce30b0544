//! The registry pull API as both binaries speak it, parsed once: request paths into a
//! [`Route`], `Range` headers into a [`ByteRange`], and what a request was into a
//! [`RequestKind`] for counting. Pure: no I/O, no HTTP types beyond the method's name.
//!
//! The daemon, the harness's embedded registry and the access-log readers in `lab` all use these,
//! each deciding its own answer to a refusal (the daemon answers a malformed range with 416, the
//! embedded registry ignores it, as RFC 9110 allows both).

pub mod range;
pub mod request;
pub mod route;

pub use range::{ByteRange, RangeError};
pub use request::RequestKind;
pub use route::{Route, RouteError};
