//! Images on disk: synthetic ones (the spec a scenario writes, [`spec`]; the bytes inside their
//! layers, [`content`]; the OCI layout they are written as, [`layout`]; their deterministic,
//! cached generation, [`generate`]), OCI layouts made elsewhere ([`import`]), and images of real
//! registries fetched once into the cache ([`mirror`]), reached through [`remote`] (endpoint,
//! TLS, credentials). Each ends as a [`LayoutImage`]; [`variant`] makes each scenario variant's
//! image ready for the bursts that way, or only resolves it when nodes pull it straight from a
//! real registry. Serving them is `crate::registry`'s business.

pub mod content;
pub mod generate;
pub mod import;
pub mod layout;
pub mod layout_image;
pub mod mirror;
pub mod remote;
pub mod spec;
pub mod variant;

pub use generate::{
    cache_key, generate, GenerateError, GeneratedImage, GeneratedLayer, PlatformImage, Totals,
    GENERATOR_VERSION,
};
pub use import::{import_layout, ImportError};
pub use layout_image::{Descriptor, LayoutImage, PlatformManifest};
pub use mirror::{mirror, MirrorError, MirroredImage};
pub use spec::{FileSizes, LayerSpec, ManifestFormat, SpecError, SyntheticImage};
