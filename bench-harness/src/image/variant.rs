//! Each variant's image made ready for bursts, whatever its source: generated, imported in place,
//! mirrored into the cache, or only resolved (`mirror = false`: nodes pull it straight from the
//! real registry); and the facts `result.json` records about it (its source, the digest the
//! reference resolved to, the bytes a node downloads). Serving and pulling are not done here.

use std::path::Path;
use std::time::Instant;

use serde_json::{json, Value};
use stampede_oci::{Platform, ReferenceError};

use crate::image::generate::{generate, GenerateError};
use crate::image::layout_image::LayoutImage;
use crate::image::mirror::{mirror, resolve_remote, MirrorError};
use crate::image::remote::{Remote, RemoteError};
use crate::image::{import_layout, ImportError};
use crate::result::ImageFacts;
use crate::scenario::{ImageSource, LayoutSource, RegistrySource, Scenario, Variant};

/// Where nodes pull a variant's image from.
#[derive(Debug, Clone)]
pub enum PullFrom {
    /// The embedded registry, which serves this layout under the variant's repository.
    Embedded(LayoutImage),
    /// A real registry, straight (`mirror = false`).
    Remote(Remote),
}

/// A variant's image, ready.
#[derive(Debug, Clone)]
pub struct VariantImage {
    pub pull: PullFrom,
    /// What `result.json` records about it.
    pub facts: ImageFacts,
    /// Things the report should say (a platform the image lacks).
    pub warnings: Vec<String>,
}

/// Why a variant's image could not be made ready.
#[derive(Debug, thiserror::Error)]
pub enum VariantImageError {
    #[error(transparent)]
    Generate(#[from] GenerateError),
    #[error(transparent)]
    Import(#[from] ImportError),
    #[error("image reference")]
    Reference(#[from] ReferenceError),
    /// The registry access could not be resolved (credentials, CA file).
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error(transparent)]
    Mirror(#[from] MirrorError),
    /// A blocking task died.
    #[error("image preparation task")]
    Task(#[from] tokio::task::JoinError),
}

/// Makes every variant of `scenario` ready, in order, using `cache` for generated and mirrored
/// images.
///
/// # Errors
/// The first variant that fails, with its name.
pub async fn prepare_all(
    scenario: &Scenario,
    cache: &Path,
) -> Result<Vec<VariantImage>, (String, VariantImageError)> {
    let mut out = Vec::with_capacity(scenario.variants.len());
    for variant in &scenario.variants {
        let t = Instant::now();
        let image = prepare(scenario, variant, cache)
            .await
            .map_err(|e| (variant.name.clone(), e))?;
        tracing::info!(
            variant = %variant.name,
            compressed_bytes = image.facts.compressed_bytes,
            elapsed_ms = t.elapsed().as_millis() as u64,
            "image ready"
        );
        out.push(image);
    }
    Ok(out)
}

/// Makes `variant`'s image ready.
pub async fn prepare(
    scenario: &Scenario,
    variant: &Variant,
    cache: &Path,
) -> Result<VariantImage, VariantImageError> {
    let platform = &scenario.platform;
    match &variant.source {
        ImageSource::Synthetic(spec) => {
            let (spec, seed, cache) = (spec.clone(), scenario.seed, cache.to_owned());
            let image =
                tokio::task::spawn_blocking(move || generate(&spec, seed, &cache)).await??;
            let source = json!({ "kind": "synthetic", "digest": image.top.digest });
            Ok(VariantImage {
                facts: ImageFacts {
                    compressed_bytes: image.totals.compressed_bytes,
                    details: details(&image, source),
                },
                pull: PullFrom::Embedded(image.layout_image()),
                warnings: Vec::new(),
            })
        }
        ImageSource::Layout(LayoutSource { path, tag }) => {
            let (dir, tag_owned) = (path.clone(), tag.clone());
            let import = move || import_layout(&dir, tag_owned.as_deref());
            let image = tokio::task::spawn_blocking(import).await??;
            let source = json!({ "kind": "layout", "path": path, "tag": tag });
            Ok(held(variant, image, source, platform, None))
        }
        ImageSource::Registry(r) => registry(variant, r, platform, cache).await,
    }
}

async fn registry(
    variant: &Variant,
    source: &RegistrySource,
    platform: &Platform,
    cache: &Path,
) -> Result<VariantImage, VariantImageError> {
    let reference = source.reference()?;
    let remote = source.access.resolve(&reference)?;
    if source.mirror {
        let m = mirror(&remote, platform, cache).await?;
        let source = json!({
            "kind": "registry",
            "reference": reference.to_string(),
            "mirrored": true,
            "credentials": remote.credentials_from,
            "fetched_bytes": m.fetched_bytes,
        });
        return Ok(held(variant, m.image, source, platform, m.platform_missing));
    }
    let r = resolve_remote(&remote, platform).await?;
    let details = json!({
        "source": {
            "kind": "registry",
            "reference": reference.to_string(),
            "mirrored": false,
            "credentials": remote.credentials_from,
            "digest": r.digest,
            "platform_digest": r.platform_digest,
            "media_type": r.media_type,
        },
        "listed": r.listed.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "config_bytes": r.config_bytes,
    });
    let warnings = r
        .platform_missing
        .iter()
        .map(|why| platform_warning(variant, &reference.to_string(), why))
        .collect();
    Ok(VariantImage {
        facts: ImageFacts {
            compressed_bytes: r.layer_bytes,
            details,
        },
        pull: PullFrom::Remote(remote),
        warnings,
    })
}

/// A layout-held image (imported or mirrored): facts and warnings for the nodes' platform.
fn held(
    variant: &Variant,
    image: LayoutImage,
    mut source: Value,
    platform: &Platform,
    missing: Option<String>,
) -> VariantImage {
    let chosen = image.select(platform);
    source["digest"] = json!(image.top.digest);
    source["platform_digest"] = json!(chosen.as_ref().ok().map(|p| &p.manifest.digest));
    let compressed_bytes = chosen.as_ref().map_or(0, |p| LayoutImage::layer_bytes(p));
    let missing = missing.or_else(|| chosen.as_ref().err().map(ToString::to_string));
    let what = source["reference"]
        .as_str()
        .or(source["path"].as_str())
        .unwrap_or_default()
        .to_owned();
    let mut warnings: Vec<String> = missing
        .iter()
        .map(|why| platform_warning(variant, &what, why))
        .collect();
    if let Ok(p) = &chosen {
        if !p.platform.runs_on(platform) {
            warnings.push(platform_warning(
                variant,
                &what,
                &format!(
                    "a single-platform manifest for {}, not {platform}",
                    p.platform
                ),
            ));
        }
    }
    VariantImage {
        facts: ImageFacts {
            compressed_bytes,
            details: details(&image, source),
        },
        pull: PullFrom::Embedded(image),
        warnings,
    }
}

fn platform_warning(variant: &Variant, what: &str, why: &str) -> String {
    format!(
        "variant {}: {what}: {why}; every pull will fail as platform_missing",
        variant.name
    )
}

/// The image as JSON, with `source` saying where it came from.
fn details(image: &impl serde::Serialize, source: Value) -> Value {
    let mut details = serde_json::to_value(image).unwrap_or_default();
    if let Value::Object(map) = &mut details {
        map.insert("source".to_owned(), source);
    }
    details
}
