//! Synthetic images: the spec a scenario writes ([`spec`]) and, later, their deterministic
//! generation into an on-disk OCI layout.

pub mod spec;

pub use spec::{FileSizes, LayerSpec, ManifestFormat, SyntheticImage};
