//! Importing an OCI image layout made elsewhere (`skopeo copy ... oci:DIR:tag`, `umoci`, `docker
//! buildx --output type=oci` unpacked) as a [`LayoutImage`], in place: nothing is copied. The tag
//! picks the `index.json` entry (`org.opencontainers.image.ref.name`); without one the layout must
//! hold one image. Manifests, indexes and configs are read, bounded and verified; layer blobs are
//! only checked for presence and size (pullers and `inspect` verify them as they stream). An
//! index's platforms whose manifest is not in the layout are listed but not held.

use std::path::{Path, PathBuf};

use stampede_oci::layout::{LayoutError, OciLayout};
use stampede_oci::manifest::{descriptor_digest, descriptor_platform, MAX_MANIFEST_BYTES};
use stampede_oci::{Digest, Manifest, Platform};

use super::layout_image::{Descriptor, LayoutImage, PlatformManifest};

/// Why a layout could not be imported.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The layout itself is unreadable, or a manifest in it is bad.
    #[error("import OCI layout {dir}")]
    Layout {
        dir: PathBuf,
        #[source]
        source: LayoutError,
    },
    /// A blob a held manifest needs is missing or has the wrong size.
    #[error("import OCI layout {dir}: blob {digest} ({size_bytes} bytes) is missing or has another size at {path}")]
    MissingBlob {
        dir: PathBuf,
        digest: Digest,
        /// The size its descriptor gives.
        size_bytes: u64,
        /// Where it should be.
        path: PathBuf,
    },
    /// An image config is unreadable, not JSON of a config, or does not match its digest.
    #[error("import OCI layout {dir}: image config {digest}: {problem}")]
    Config {
        dir: PathBuf,
        digest: Digest,
        problem: String,
    },
}

/// Describes the image tagged `tag` (or the only image) in the layout at `dir`.
pub fn import_layout(dir: &Path, tag: Option<&str>) -> Result<LayoutImage, ImportError> {
    let layout_err = layout_error(dir);
    let layout = OciLayout::open(dir).map_err(layout_err)?;
    let entry = layout.resolve(tag).map_err(layout_err)?.clone();
    let (bytes, top_manifest) = layout
        .read_manifest(&entry.digest, Some(&entry.media_type))
        .map_err(layout_err)?;
    let top = Descriptor {
        digest: entry.digest.clone(),
        media_type: media_type_of(&entry.media_type, &bytes),
        size_bytes: bytes.len() as u64,
    };
    let mut listed = Vec::new();
    let mut platforms = Vec::new();
    match top_manifest {
        Manifest::Image(_) => {
            let held = platform_manifest(&layout, top.clone(), None)?;
            listed.push(held.platform.clone());
            platforms.push(held);
        }
        Manifest::Index(index) => {
            for d in index.manifests() {
                let digest = descriptor_digest(d).map_err(|source| {
                    let path = layout.blob_path(&entry.digest);
                    layout_err(LayoutError::Descriptor { path, source })
                })?;
                let declared = descriptor_platform(d);
                let media_type = d.media_type().to_string();
                if !layout.has_blob(&digest, d.size()) {
                    listed.extend(declared);
                    continue;
                }
                let (child_bytes, child) = layout
                    .read_manifest(&digest, Some(&media_type))
                    .map_err(layout_err)?;
                if !matches!(child, Manifest::Image(_)) {
                    // A nested index (rare): listed by its declared platform, not held.
                    listed.extend(declared);
                    continue;
                }
                let descriptor = Descriptor {
                    digest,
                    media_type: media_type_of(&media_type, &child_bytes),
                    size_bytes: child_bytes.len() as u64,
                };
                let held = platform_manifest(&layout, descriptor, declared)?;
                listed.push(held.platform.clone());
                platforms.push(held);
            }
        }
    }
    Ok(LayoutImage {
        layout_dir: dir.to_owned(),
        top,
        listed,
        platforms,
    })
}

/// How a failure of the layout at `dir` is reported.
fn layout_error(dir: &Path) -> impl Fn(LayoutError) -> ImportError + Copy + '_ {
    move |source| ImportError::Layout {
        dir: dir.to_owned(),
        source,
    }
}

/// The media type to serve a manifest with: the pointing descriptor's, else the document's own
/// `mediaType`, else OCI by shape.
fn media_type_of(declared: &str, bytes: &[u8]) -> String {
    if stampede_oci::manifest::is_manifest_type(declared) {
        return declared.to_owned();
    }
    #[derive(serde::Deserialize)]
    struct Shape {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
        manifests: Option<serde::de::IgnoredAny>,
    }
    match serde_json::from_slice::<Shape>(bytes) {
        Ok(Shape {
            media_type: Some(t),
            ..
        }) if stampede_oci::manifest::is_manifest_type(&t) => t,
        Ok(Shape {
            manifests: Some(_), ..
        }) => stampede_oci::manifest::OCI_INDEX.to_owned(),
        _ => stampede_oci::manifest::OCI_MANIFEST.to_owned(),
    }
}

/// Reads image manifest `manifest` and its config, and checks its layers are present.
fn platform_manifest(
    layout: &OciLayout,
    manifest: Descriptor,
    declared: Option<Platform>,
) -> Result<PlatformManifest, ImportError> {
    let layout_err = layout_error(layout.root());
    let (_, parsed) = layout
        .read_manifest(&manifest.digest, Some(&manifest.media_type))
        .map_err(layout_err)?;
    let Manifest::Image(image) = parsed else {
        unreachable!("callers pass image manifests only");
    };
    let descriptor = |d: &oci_spec::image::Descriptor| {
        Descriptor::of(d).map_err(|source| {
            let path = layout.blob_path(&manifest.digest);
            layout_err(LayoutError::Descriptor { path, source })
        })
    };
    let config = descriptor(image.config())?;
    let layers = image
        .layers()
        .iter()
        .map(descriptor)
        .collect::<Result<Vec<_>, _>>()?;
    for blob in std::iter::once(&config).chain(&layers) {
        if !layout.has_blob(&blob.digest, blob.size_bytes) {
            return Err(ImportError::MissingBlob {
                dir: layout.root().to_owned(),
                digest: blob.digest.clone(),
                size_bytes: blob.size_bytes,
                path: layout.blob_path(&blob.digest),
            });
        }
    }
    let platform = match declared {
        Some(p) => p,
        None => config_platform(layout, &config)?,
    };
    Ok(PlatformManifest {
        platform,
        manifest,
        config,
        layers,
    })
}

/// The platform an image config declares.
fn config_platform(layout: &OciLayout, config: &Descriptor) -> Result<Platform, ImportError> {
    let problem = |problem: String| ImportError::Config {
        dir: layout.root().to_owned(),
        digest: config.digest.clone(),
        problem,
    };
    if config.size_bytes > MAX_MANIFEST_BYTES {
        return Err(problem(format!(
            "{} bytes is more than the {MAX_MANIFEST_BYTES} read",
            config.size_bytes
        )));
    }
    let bytes = std::fs::read(layout.blob_path(&config.digest))
        .map_err(|e| problem(format!("read: {e}")))?;
    let actual = Digest::of(&bytes);
    if actual != config.digest {
        return Err(problem(format!("content hashes to {actual}")));
    }
    Platform::of_config(&bytes).ok_or_else(|| {
        problem("not an image config: not JSON, or it names no os and architecture".to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::generate;
    use crate::image::layout::LAYOUT_TAG;
    use crate::image::spec::{FileSizes, LayerSpec, ManifestFormat, SyntheticImage};
    use crate::scenario::units::ByteSize;

    fn spec(platforms: &[&str]) -> SyntheticImage {
        SyntheticImage {
            layers: vec![LayerSpec {
                size: ByteSize(10_000),
                files: 3,
                file_sizes: FileSizes::Equal,
                compressibility: 0.5,
            }],
            compression: stampede_oci::Compression::Gzip,
            level: Some(1),
            platforms: platforms.iter().map(|p| (*p).to_owned()).collect(),
            format: ManifestFormat::Oci,
        }
    }

    #[test]
    fn a_generated_layout_imports_as_what_the_generator_describes() {
        let dir = tempfile::tempdir().unwrap();
        for platforms in [&["linux/amd64"][..], &["linux/amd64", "linux/arm64/v8"]] {
            let generated = generate(&spec(platforms), 1, dir.path()).unwrap();
            let imported = import_layout(&generated.layout_dir, Some(LAYOUT_TAG)).unwrap();
            assert_eq!(imported, generated.layout_image());
            assert_eq!(
                import_layout(&generated.layout_dir, None).unwrap(),
                imported
            );
        }
    }

    #[test]
    fn missing_tags_and_blobs_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let generated = generate(&spec(&["linux/amd64"]), 2, dir.path()).unwrap();
        let err = import_layout(&generated.layout_dir, Some("v9")).unwrap_err();
        let chain = format!("{:#}", anyhow::Error::from(err));
        assert!(
            chain.contains("no image tagged \"v9\"; it has: latest"),
            "{chain}"
        );
        let layer = &generated.layers[0];
        std::fs::remove_file(generated.blob_path(&layer.digest)).unwrap();
        let err = import_layout(&generated.layout_dir, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains(&layer.digest.to_string()), "{err}");
        let err = import_layout(dir.path(), None).unwrap_err();
        let chain = format!("{:#}", anyhow::Error::from(err));
        assert!(chain.contains("is not an OCI image layout"), "{chain}");
    }
}
