//! [`LayoutImage`]: any image held in an OCI image layout on disk, described by its descriptors:
//! what its tag resolves to (a manifest, or an index listing platforms), and per platform held
//! its manifest, config and layers. Generated, imported and mirrored images all end as one; the
//! embedded registry serves one and `inspect` reads one. A layout may hold fewer platforms than
//! its index lists ([`LayoutImage::listed`] against [`LayoutImage::platforms`]). No I/O.

use std::collections::HashSet;
use std::path::PathBuf;

use stampede_oci::manifest::{DOCKER_MANIFEST_LIST, OCI_INDEX};
use stampede_oci::{Digest, ManifestError, Platform};

use super::layout::blob_path;

/// Content (a manifest, index, config or layer) as a descriptor points at it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Descriptor {
    /// Its digest; also its file name under `blobs/sha256/`.
    pub digest: Digest,
    pub media_type: String,
    pub size_bytes: u64,
}

impl Descriptor {
    /// The descriptor a manifest or an index lists, as ours.
    ///
    /// # Errors
    /// [`ManifestError::Digest`] when its digest is not one we can use.
    pub fn of(d: &oci_spec::image::Descriptor) -> Result<Self, ManifestError> {
        Ok(Self {
            digest: stampede_oci::manifest::descriptor_digest(d)?,
            media_type: d.media_type().to_string(),
            size_bytes: d.size(),
        })
    }
}

/// One platform's image held in a layout.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PlatformManifest {
    /// The platform, from the index entry or else the image config.
    pub platform: Platform,
    pub manifest: Descriptor,
    pub config: Descriptor,
    /// Its layers, base first.
    pub layers: Vec<Descriptor>,
}

/// An image in an OCI image layout.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LayoutImage {
    /// The layout's root directory.
    pub layout_dir: PathBuf,
    /// What the image's tag resolves to: an index (several platforms) or a manifest.
    pub top: Descriptor,
    /// Every platform the top lists (for a plain manifest, its own), present or not.
    pub listed: Vec<Platform>,
    /// The platforms whose manifest, config and layers are in the layout, in index order.
    pub platforms: Vec<PlatformManifest>,
}

impl LayoutImage {
    /// Whether [`LayoutImage::top`] is an index (manifest list).
    pub fn is_index(&self) -> bool {
        matches!(
            stampede_oci::manifest::essence(&self.top.media_type),
            OCI_INDEX | DOCKER_MANIFEST_LIST
        )
    }

    /// The file holding blob `digest` (which may not be part of this image).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        blob_path(&self.layout_dir, digest)
    }

    /// Every manifest and index held, top first, each once.
    pub fn manifests(&self) -> Vec<&Descriptor> {
        let mut seen = HashSet::new();
        std::iter::once(&self.top)
            .chain(self.platforms.iter().map(|p| &p.manifest))
            .filter(|d| seen.insert(&d.digest))
            .collect()
    }

    /// Every config and layer blob held (each once), configs first.
    pub fn blobs(&self) -> Vec<Descriptor> {
        let mut seen = HashSet::new();
        self.platforms
            .iter()
            .map(|p| &p.config)
            .chain(self.platforms.iter().flat_map(|p| &p.layers))
            .filter(|d| seen.insert(d.digest.clone()))
            .cloned()
            .collect()
    }

    /// The platform manifest a node of platform `wanted` would use: from an index, by the rule
    /// [`stampede_oci::manifest::select_platform`] applies; a plain manifest is returned
    /// whatever its platform (its costs can be read and it can be mirrored), but a node's pull
    /// refuses it when its config names another platform, as containerd does.
    ///
    /// # Errors
    /// [`ManifestError::PlatformMissing`] naming every platform listed, when none matches or
    /// the matching one is not held in the layout.
    pub fn select(&self, wanted: &Platform) -> Result<&PlatformManifest, ManifestError> {
        let only = (!self.is_index()).then(|| self.platforms.first()).flatten();
        only.or_else(|| self.platforms.iter().find(|p| p.platform.runs_on(wanted)))
            .ok_or_else(|| ManifestError::PlatformMissing {
                wanted: wanted.to_string(),
                available: self.listed.iter().map(ToString::to_string).collect(),
            })
    }

    /// Compressed layer bytes of `platform`: what a node downloads besides the small documents.
    pub fn layer_bytes(platform: &PlatformManifest) -> u64 {
        platform.layers.iter().map(|l| l.size_bytes).sum()
    }

    /// Bytes a pull of `platform` downloads: the index if any, the manifest, the config and
    /// every layer.
    pub fn pull_bytes(&self, platform: &PlatformManifest) -> u64 {
        let index = if self.is_index() {
            self.top.size_bytes
        } else {
            0
        };
        index
            + platform.manifest.size_bytes
            + platform.config.size_bytes
            + Self::layer_bytes(platform)
    }
}

impl From<&LayoutImage> for LayoutImage {
    fn from(image: &LayoutImage) -> Self {
        image.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(c: char, size: u64, media_type: &str) -> Descriptor {
        Descriptor {
            digest: Digest::parse(&format!("sha256:{}", c.to_string().repeat(64))).unwrap(),
            media_type: media_type.to_owned(),
            size_bytes: size,
        }
    }

    fn platform(p: &str, manifest: char, layers: &[char]) -> PlatformManifest {
        PlatformManifest {
            platform: Platform::parse(p).unwrap(),
            manifest: d(manifest, 10, stampede_oci::manifest::OCI_MANIFEST),
            config: d('c', 5, stampede_oci::manifest::OCI_CONFIG),
            layers: layers
                .iter()
                .map(|c| d(*c, 100, stampede_oci::manifest::OCI_LAYER_GZIP))
                .collect(),
        }
    }

    #[test]
    fn index_with_one_platform_held() {
        let image = LayoutImage {
            layout_dir: PathBuf::from("/x"),
            top: d('1', 300, OCI_INDEX),
            listed: ["linux/amd64", "linux/arm64/v8"]
                .iter()
                .map(|p| Platform::parse(p).unwrap())
                .collect(),
            platforms: vec![platform("linux/arm64/v8", '2', &['a', 'b', 'a'])],
        };
        assert!(image.is_index());
        assert_eq!(image.manifests().len(), 2);
        assert_eq!(image.blobs().len(), 3, "config + two distinct layers");
        let got = image
            .select(&Platform::parse("linux/arm64").unwrap())
            .unwrap();
        assert_eq!(image.pull_bytes(got), 300 + 10 + 5 + 300);
        let err = image
            .select(&Platform::parse("linux/amd64").unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("linux/amd64, linux/arm64/v8"),
            "lists every platform of the index: {err}"
        );
    }
}
