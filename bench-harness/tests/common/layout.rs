//! Crafted OCI image layouts for tests: layers made of exactly the tar members a test names
//! (files of given sizes, directories, whiteouts, opaque markers), compressed as asked, written
//! with their configs, manifests, indexes and `index.json` tags. Deterministic: the same members
//! and compression give the same digests, so images built in one layout share base layers by
//! digest like real ones do.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use stampede_oci::{Compression, Digest};

/// One tar member of a crafted layer.
#[derive(Debug, Clone, Copy)]
pub enum Entry<'a> {
    /// A directory.
    Dir(&'a str),
    /// A regular file of this many bytes (content derived from its path).
    File(&'a str, usize),
    /// `.wh.<name>` in the parent directory: deletes `path` from lower layers.
    Whiteout(&'a str),
    /// `<dir>/.wh..wh..opq`: hides everything lower layers put in `dir`.
    Opaque(&'a str),
}

/// A layer blob written into the layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    pub digest: Digest,
    pub diff_id: Digest,
    pub compressed_bytes: u64,
    pub uncompressed_bytes: u64,
    pub media_type: &'static str,
}

/// A manifest or index written into the layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Doc {
    pub digest: Digest,
    pub size_bytes: u64,
    pub media_type: &'static str,
}

/// A layout being written.
pub struct LayoutBuilder {
    dir: PathBuf,
    tags: Vec<(String, Doc)>,
}

impl LayoutBuilder {
    /// Starts a layout at `dir` (created).
    pub fn new(dir: &Path) -> Self {
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        Self {
            dir: dir.to_owned(),
            tags: Vec::new(),
        }
    }

    fn put(&self, bytes: &[u8]) -> Digest {
        let d = Digest::of(bytes);
        std::fs::write(self.dir.join("blobs/sha256").join(d.hex()), bytes).unwrap();
        d
    }

    /// Writes a layer of `entries`, in order.
    pub fn layer(&self, entries: &[Entry<'_>], compression: Compression) -> Layer {
        let mut tar = tar::Builder::new(Vec::new());
        for e in entries {
            let (name, kind, size) = match *e {
                Entry::Dir(p) => (format!("{p}/"), tar::EntryType::Directory, 0),
                Entry::File(p, size) => (p.to_owned(), tar::EntryType::Regular, size),
                Entry::Whiteout(p) => {
                    let (parent, base) = p.rsplit_once('/').map_or(("", p), |(a, b)| (a, b));
                    let name = if parent.is_empty() {
                        format!(".wh.{base}")
                    } else {
                        format!("{parent}/.wh.{base}")
                    };
                    (name, tar::EntryType::Regular, 0)
                }
                Entry::Opaque(dir) => (format!("{dir}/.wh..wh..opq"), tar::EntryType::Regular, 0),
            };
            let mut h = tar::Header::new_ustar();
            h.set_path(&name).unwrap();
            h.set_entry_type(kind);
            h.set_size(size as u64);
            h.set_mode(if kind == tar::EntryType::Directory {
                0o755
            } else {
                0o644
            });
            h.set_mtime(0);
            h.set_cksum();
            tar.append(&h, content(&name, size).as_slice()).unwrap();
        }
        let tar = tar.into_inner().unwrap();
        let (blob, media_type) = match compression {
            Compression::None => (tar.clone(), "application/vnd.oci.image.layer.v1.tar"),
            Compression::Gzip => {
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                gz.write_all(&tar).unwrap();
                (
                    gz.finish().unwrap(),
                    "application/vnd.oci.image.layer.v1.tar+gzip",
                )
            }
            Compression::Zstd => (
                zstd::encode_all(tar.as_slice(), 3).unwrap(),
                "application/vnd.oci.image.layer.v1.tar+zstd",
            ),
        };
        Layer {
            digest: self.put(&blob),
            diff_id: Digest::of(&tar),
            compressed_bytes: blob.len() as u64,
            uncompressed_bytes: tar.len() as u64,
            media_type,
        }
    }

    /// Writes the config and manifest of an image for `platform` (`os/arch[/variant]`).
    pub fn image(&self, platform: &str, layers: &[Layer]) -> Doc {
        let mut parts = platform.split('/');
        let (os, arch, variant) = (parts.next().unwrap(), parts.next().unwrap(), parts.next());
        let variant = variant.map_or(String::new(), |v| format!(r#","variant":"{v}""#));
        let diff_ids: Vec<String> = layers
            .iter()
            .map(|l| format!("\"{}\"", l.diff_id))
            .collect();
        let config = format!(
            r#"{{"architecture":"{arch}","os":"{os}"{variant},"config":{{"Cmd":["/bin/sh"]}},"rootfs":{{"type":"layers","diff_ids":[{}]}}}}"#,
            diff_ids.join(",")
        );
        let config_digest = self.put(config.as_bytes());
        let layer_docs: Vec<String> = layers
            .iter()
            .map(|l| {
                format!(
                    r#"{{"mediaType":"{}","digest":"{}","size":{}}}"#,
                    l.media_type, l.digest, l.compressed_bytes
                )
            })
            .collect();
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[{}]}}"#,
            config.len(),
            layer_docs.join(",")
        );
        Doc {
            digest: self.put(manifest.as_bytes()),
            size_bytes: manifest.len() as u64,
            media_type: "application/vnd.oci.image.manifest.v1+json",
        }
    }

    /// Writes an index over `(manifest, platform)` pairs.
    pub fn index(&self, manifests: &[(&Doc, &str)]) -> Doc {
        let entries: Vec<String> = manifests
            .iter()
            .map(|(m, platform)| {
                let mut parts = platform.split('/');
                let (os, arch) = (parts.next().unwrap(), parts.next().unwrap());
                let variant = parts
                    .next()
                    .map_or(String::new(), |v| format!(r#","variant":"{v}""#));
                format!(
                    r#"{{"mediaType":"{}","digest":"{}","size":{},"platform":{{"architecture":"{arch}","os":"{os}"{variant}}}}}"#,
                    m.media_type, m.digest, m.size_bytes
                )
            })
            .collect();
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{}]}}"#,
            entries.join(",")
        );
        Doc {
            digest: self.put(index.as_bytes()),
            size_bytes: index.len() as u64,
            media_type: "application/vnd.oci.image.index.v1+json",
        }
    }

    /// Tags `top` in `index.json` (rewritten with every tag so far).
    pub fn tag(&mut self, tag: &str, top: &Doc) {
        self.tags.push((tag.to_owned(), top.clone()));
        let entries: Vec<String> = self
            .tags
            .iter()
            .map(|(t, d)| {
                format!(
                    r#"{{"mediaType":"{}","digest":"{}","size":{},"annotations":{{"org.opencontainers.image.ref.name":"{t}"}}}}"#,
                    d.media_type, d.digest, d.size_bytes
                )
            })
            .collect();
        std::fs::write(
            self.dir.join("index.json"),
            format!(
                r#"{{"schemaVersion":2,"manifests":[{}]}}"#,
                entries.join(",")
            ),
        )
        .unwrap();
    }
}

/// File content: half derived from the path (compressible), half pseudo-random.
fn content(name: &str, size: usize) -> Vec<u8> {
    let mut state = Digest::of(name.as_bytes()).hex().as_bytes()[..8]
        .iter()
        .fold(0x9e37_79b9_7f4a_7c15_u64, |s, b| {
            s.rotate_left(5) ^ u64::from(*b)
        });
    (0..size)
        .map(|i| {
            if i % 2 == 0 {
                name.as_bytes()[i / 2 % name.len()]
            } else {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            }
        })
        .collect()
}
