//! Synthetic images: the spec a scenario writes ([`spec`]), the bytes inside their layers
//! ([`content`]), the OCI layout they are written as ([`layout`]), and their deterministic,
//! cached generation ([`generate`]).
//!
//! Serving them is the embedded registry's business (`crate::registry`).

pub mod content;
pub mod generate;
pub mod layout;
pub mod spec;

pub use generate::{
    cache_key, generate, Descriptor, GenerateError, GeneratedImage, GeneratedLayer, PlatformImage,
    Totals, GENERATOR_VERSION,
};
pub use spec::{FileSizes, LayerSpec, ManifestFormat, SpecError, SyntheticImage};
