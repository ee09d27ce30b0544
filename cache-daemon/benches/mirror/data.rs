//! The test content: incompressible pseudo-random blobs of the sizes the goals name, written to
//! files once per run, and a small OCI image manifest that references some of them. Digests are
//! computed while writing. Nothing here talks to a registry.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use bytes::Bytes;

use stampede_oci::digest::Hasher;
use stampede_oci::Digest;

/// Write buffer size while generating.
const GEN_CHUNK_BYTES: usize = 1 << 20;

/// A blob on disk, ready to push.
#[derive(Debug, Clone)]
pub struct BlobFile {
    /// File holding the bytes.
    pub path: PathBuf,
    /// Its length.
    pub size_bytes: u64,
    /// Its sha256.
    pub digest: Digest,
}

impl BlobFile {
    /// `/v2/<repo>/blobs/<digest>`.
    pub fn path_in(&self, repo: &str) -> String {
        format!("/v2/{repo}/blobs/{}", self.digest)
    }
}

/// Writes `size_bytes` of xorshift output seeded by `seed` to `dir/name`.
///
/// # Errors
/// The file cannot be written.
pub fn random_blob(dir: &Path, name: &str, size_bytes: u64, seed: u64) -> anyhow::Result<BlobFile> {
    let path = dir.join(name);
    let file =
        std::fs::File::create(&path).with_context(|| format!("create {}", path.display()))?;
    let mut out = std::io::BufWriter::with_capacity(GEN_CHUNK_BYTES, file);
    let mut hasher = Hasher::new();
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut buf = vec![0u8; GEN_CHUNK_BYTES];
    let mut left = size_bytes;
    while left > 0 {
        for word in buf.chunks_exact_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            word.copy_from_slice(&state.to_le_bytes());
        }
        let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])?;
        left -= n as u64;
    }
    out.flush()?;
    Ok(BlobFile {
        path,
        size_bytes,
        digest: hasher.finish(),
    })
}

/// Writes `bytes` to `dir/name`.
///
/// # Errors
/// The file cannot be written.
pub fn fixed_blob(dir: &Path, name: &str, bytes: &[u8]) -> anyhow::Result<BlobFile> {
    let path = dir.join(name);
    std::fs::write(&path, bytes).with_context(|| format!("write {}", path.display()))?;
    Ok(BlobFile {
        path,
        size_bytes: bytes.len() as u64,
        digest: Digest::of(bytes),
    })
}

/// The OCI image manifest media type.
pub const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

/// An image manifest with `config` and `layers`; returns its bytes and digest.
pub fn manifest(config: &BlobFile, layers: &[&BlobFile]) -> (Bytes, Digest) {
    let layers = layers
        .iter()
        .map(|l| {
            format!(
                r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{}","size":{}}}"#,
                l.digest, l.size_bytes
            )
        })
        .collect::<Vec<_>>()
        .join(",");
    let text = format!(
        r#"{{"schemaVersion":2,"mediaType":"{MANIFEST_TYPE}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":{}}},"layers":[{layers}]}}"#,
        config.digest, config.size_bytes
    );
    let digest = Digest::of(text.as_bytes());
    (Bytes::from(text), digest)
}
