//! The embedded registry (being written). [`model`] describes its bandwidth, latency and
//! throttling.

pub mod model;

pub use model::{RegistryModel, Throttle};
