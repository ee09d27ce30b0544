//! What `inspect` is pointed at and how its blobs are read. An argument is parsed once into an
//! [`ImageInput`]: an OCI layout (`oci:DIR[:TAG]`, or a directory path), a scenario variant
//! (`variant:NAME`), or a registry reference (`[docker://]REGISTRY/REPO[:TAG|@DIGEST]`). Opening
//! it ([`ImageInput::open`]) resolves the tag, picks the platform (an index without it is an
//! error naming what it has) and yields the descriptors plus a [`Blobs`] to stream layers from:
//! files of a layout, or bodies from a registry, never whole in memory.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use stampede_oci::client::read_body_limited;
use stampede_oci::manifest::{select_platform, MAX_MANIFEST_BYTES};
use stampede_oci::{
    ClientConfig, Digest, Endpoint, ImageRef, Manifest, Platform, Reference, RegistryClient,
    RegistryRequest, RepoName,
};

use super::InspectError;
use crate::image::generate::generate;
use crate::image::layout_image::{Descriptor, LayoutImage};
use crate::image::remote::RegistryAccess;
use crate::image::{import_layout, SyntheticImage};
use crate::nodes::pull::{FetchedManifest, Puller, PullerConfig};
use crate::scenario::{ImageSource, Scenario};

/// Chunks in flight between a registry body and the blocking scanner.
const CHANNEL_CHUNKS: usize = 16;
/// Longest pause allowed inside a blob body.
const BODY_IDLE: Duration = Duration::from_secs(120);

/// An image to inspect, parsed from the command line.
#[derive(Debug, Clone, PartialEq)]
pub enum ImageInput {
    /// An OCI image layout directory, and the tag of the entry to read.
    Layout {
        path: PathBuf,
        /// `org.opencontainers.image.ref.name` of the entry; `None`: the only one.
        tag: Option<String>,
    },
    /// An image in a registry.
    Registry {
        reference: ImageRef,
        access: RegistryAccess,
    },
    /// A scenario's synthetic variant, generated (or found) in the image cache.
    Synthetic {
        variant: String,
        spec: SyntheticImage,
        seed: u64,
        cache: PathBuf,
    },
}

/// What an argument is read against.
#[derive(Debug, Clone, Copy)]
pub struct InputContext<'a> {
    /// The scenario `variant:NAME` refers to.
    pub scenario: Option<&'a Scenario>,
    /// Registry access for plain references (variants bring their own).
    pub access: &'a RegistryAccess,
    /// Where synthetic variants are generated.
    pub image_cache: &'a Path,
}

/// An image opened for one platform.
#[derive(Debug)]
pub struct Opened {
    /// What the tag or reference resolved to.
    pub top: Descriptor,
    /// Every platform the top lists.
    pub listed: Vec<Platform>,
    pub platform: Platform,
    pub manifest: Descriptor,
    pub config: Descriptor,
    /// Its layers, base first.
    pub layers: Vec<Descriptor>,
    pub blobs: Blobs,
}

/// Where an opened image's blobs are read from.
#[derive(Debug, Clone)]
pub enum Blobs {
    /// Files of an OCI layout.
    Disk(LayoutImage),
    Remote(Repository),
}

/// A repository in a registry, and the client to reach it.
#[derive(Debug, Clone)]
pub struct Repository {
    client: RegistryClient,
    endpoint: Endpoint,
    repo: RepoName,
}

impl ImageInput {
    /// Parses a command-line image argument.
    ///
    /// # Errors
    /// [`InspectError::Input`] for a `variant:` without a scenario or naming no variant, or a
    /// reference that does not parse.
    pub fn parse(arg: &str, ctx: InputContext<'_>) -> Result<Self, InspectError> {
        let bad = |why: String| InspectError::Input {
            arg: arg.to_owned(),
            why,
        };
        if let Some(rest) = arg.strip_prefix("oci:") {
            let (path, tag) = split_layout_tag(rest);
            return Ok(Self::Layout {
                path: crate::image::remote::expand_home(Path::new(path)),
                tag,
            });
        }
        if let Some(name) = arg.strip_prefix("variant:") {
            let scenario = ctx
                .scenario
                .ok_or_else(|| bad("variant:NAME needs --scenario FILE".to_owned()))?;
            let variant = scenario.variant(name).ok_or_else(|| {
                bad(format!(
                    "the scenario has variants {}",
                    scenario
                        .variants
                        .iter()
                        .map(|v| v.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
            return match &variant.source {
                ImageSource::Synthetic(spec) => Ok(Self::Synthetic {
                    variant: name.to_owned(),
                    spec: spec.clone(),
                    seed: scenario.seed,
                    cache: ctx.image_cache.to_owned(),
                }),
                ImageSource::Layout(l) => Ok(Self::Layout {
                    path: l.path.clone(),
                    tag: l.tag.clone(),
                }),
                ImageSource::Registry(r) => Ok(Self::Registry {
                    reference: r.reference().map_err(|e| bad(e.to_string()))?,
                    access: r.access.clone(),
                }),
            };
        }
        let looks_like_path = ["/", "./", "../", "~/"].iter().any(|p| arg.starts_with(p))
            || arg == "."
            || Path::new(arg).is_dir();
        if looks_like_path {
            return Ok(Self::Layout {
                path: crate::image::remote::expand_home(Path::new(arg)),
                tag: None,
            });
        }
        let reference = arg.strip_prefix("docker://").unwrap_or(arg);
        let reference = ImageRef::parse(reference).map_err(|e| {
            bad(format!(
                "{e}; write oci:DIR[:TAG], a layout directory, variant:NAME or REGISTRY/REPO[:TAG]"
            ))
        })?;
        Ok(Self::Registry {
            reference,
            access: ctx.access.clone(),
        })
    }

    /// The input as a user would write it.
    pub fn describe(&self) -> String {
        match self {
            Self::Layout { path, tag: None } => format!("oci:{}", path.display()),
            Self::Layout { path, tag: Some(t) } => format!("oci:{}:{t}", path.display()),
            Self::Registry { reference, .. } => reference.to_string(),
            Self::Synthetic { variant, .. } => format!("variant:{variant} (synthetic)"),
        }
    }

    /// Resolves the image and picks `platform`.
    ///
    /// # Errors
    /// [`InspectError`]: an unreadable layout, a registry failure, or a missing platform.
    pub async fn open(&self, platform: &Platform) -> Result<Opened, InspectError> {
        match self {
            Self::Layout { path, tag } => {
                let (path, tag) = (path.clone(), tag.clone());
                let image =
                    tokio::task::spawn_blocking(move || import_layout(&path, tag.as_deref()))
                        .await
                        .map_err(InspectError::Task)??;
                opened_layout(image, platform)
            }
            Self::Synthetic {
                spec, seed, cache, ..
            } => {
                let (spec, seed, cache) = (spec.clone(), *seed, cache.clone());
                let image = tokio::task::spawn_blocking(move || generate(&spec, seed, &cache))
                    .await
                    .map_err(InspectError::Task)??;
                opened_layout(image.layout_image(), platform)
            }
            Self::Registry { reference, access } => {
                opened_remote(reference, access, platform).await
            }
        }
    }
}

/// `DIR[:TAG]`: a tag is what follows the last `:` after the last `/`, when it is a tag.
fn split_layout_tag(s: &str) -> (&str, Option<String>) {
    let last_slash = s.rfind('/').map_or(0, |i| i + 1);
    match s[last_slash..].rfind(':') {
        Some(i) => {
            let tag = &s[last_slash + i + 1..];
            if stampede_oci::reference::is_tag(tag) {
                (&s[..last_slash + i], Some(tag.to_owned()))
            } else {
                (s, None)
            }
        }
        None => (s, None),
    }
}

fn opened_layout(image: LayoutImage, platform: &Platform) -> Result<Opened, InspectError> {
    let chosen = image.select(platform)?.clone();
    Ok(Opened {
        top: image.top.clone(),
        listed: image.listed.clone(),
        platform: chosen.platform,
        manifest: chosen.manifest,
        config: chosen.config,
        layers: chosen.layers,
        blobs: Blobs::Disk(image),
    })
}

async fn opened_remote(
    reference: &ImageRef,
    access: &RegistryAccess,
    platform: &Platform,
) -> Result<Opened, InspectError> {
    let remote = access.resolve(reference)?;
    let client = remote
        .client(ClientConfig {
            response_timeout: Duration::from_secs(120),
            ..ClientConfig::default()
        })
        .map_err(InspectError::Client)?;
    let puller = Puller::new(
        client.clone(),
        PullerConfig {
            endpoint: remote.endpoint.clone(),
            content_dir: std::env::temp_dir(),
            max_concurrent_downloads: 1,
            platform: platform.clone(),
            body_idle_timeout: BODY_IDLE,
            link: None,
        },
    );
    let repo = &reference.repo;
    let fetch = |source| InspectError::Fetch {
        reference: reference.to_string(),
        source,
    };
    let top = puller
        .fetch_manifest(repo, &reference.reference())
        .await
        .map_err(fetch)?;
    let top_descriptor = descriptor(&top);
    let (listed, manifest, image) = match top.manifest {
        Manifest::Index(index) => {
            let chosen = select_platform(&index, platform)?;
            let digest = stampede_oci::manifest::descriptor_digest(chosen)?;
            let child = puller
                .fetch_manifest(repo, &Reference::Digest(digest))
                .await
                .map_err(fetch)?;
            let listed = index
                .manifests()
                .iter()
                .filter_map(stampede_oci::manifest::descriptor_platform)
                .collect();
            let child_descriptor = descriptor(&child);
            let Manifest::Image(m) = child.manifest else {
                return Err(InspectError::Input {
                    arg: reference.to_string(),
                    why: "its index points at another index".into(),
                });
            };
            (listed, child_descriptor, m)
        }
        Manifest::Image(m) => (Vec::new(), top_descriptor.clone(), m),
    };
    let config = Descriptor::of(image.config())?;
    let layers = image
        .layers()
        .iter()
        .map(Descriptor::of)
        .collect::<Result<Vec<_>, _>>()?;
    let blobs = Blobs::Remote(Repository {
        client,
        endpoint: remote.endpoint.clone(),
        repo: repo.clone(),
    });
    // A plain manifest names its platform only in its config.
    let config_bytes = blobs.read_small(&config).await?;
    let platform = Platform::of_config(&config_bytes).unwrap_or_else(|| platform.clone());
    let listed = if listed.is_empty() {
        vec![platform.clone()]
    } else {
        listed
    };
    Ok(Opened {
        top: top_descriptor,
        listed,
        platform,
        manifest,
        config,
        layers,
        blobs,
    })
}

fn descriptor(m: &FetchedManifest) -> Descriptor {
    Descriptor {
        digest: m.digest.clone(),
        media_type: m.media_type.clone().unwrap_or_default(),
        size_bytes: m.bytes.len() as u64,
    }
}

/// A blob body as a blocking reader: chunks arrive over a bounded channel from the task that
/// reads the body, so the scanner never holds more than [`CHANNEL_CHUNKS`] chunks.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
    current: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current = self.current.slice(n..);
        Ok(n)
    }
}

impl Blobs {
    /// Runs `f` on the blocking pool over a reader of blob `d`'s bytes, streamed.
    ///
    /// # Errors
    /// [`InspectError`] when the blob cannot be opened or requested; `f`'s own error otherwise.
    pub async fn with_reader<T, F>(&self, d: &Descriptor, f: F) -> Result<T, InspectError>
    where
        T: Send + 'static,
        F: FnOnce(Box<dyn Read + Send>) -> Result<T, InspectError> + Send + 'static,
    {
        match self {
            Self::Disk(image) => {
                let path = image.blob_path(&d.digest);
                tokio::task::spawn_blocking(move || {
                    let file = std::fs::File::open(&path)
                        .map_err(InspectError::io(format!("open blob {}", path.display())))?;
                    f(Box::new(file))
                })
                .await
                .map_err(InspectError::Task)?
            }
            Self::Remote(r) => {
                let (mut body, _) = r.get(&d.digest).await?;
                let (tx, rx) = tokio::sync::mpsc::channel(CHANNEL_CHUNKS);
                let scanner = tokio::task::spawn_blocking(move || {
                    f(Box::new(ChannelReader {
                        rx,
                        current: Bytes::new(),
                    }))
                });
                loop {
                    let item = match tokio::time::timeout(BODY_IDLE, body.frame()).await {
                        Err(_) => Err(std::io::Error::other("body stalled")),
                        Ok(None) => break,
                        Ok(Some(Err(e))) => Err(std::io::Error::other(e)),
                        Ok(Some(Ok(frame))) => match frame.into_data() {
                            Ok(data) => Ok(data),
                            Err(_) => continue,
                        },
                    };
                    let failed = item.is_err();
                    if tx.send(item).await.is_err() || failed {
                        // The scanner stopped early (its error is reported), or the body broke.
                        break;
                    }
                }
                drop(tx);
                scanner.await.map_err(InspectError::Task)?
            }
        }
    }

    /// Reads a small blob (a config) whole, bounded by [`MAX_MANIFEST_BYTES`], and checks its
    /// digest.
    ///
    /// # Errors
    /// [`InspectError`] when it cannot be read, is too large or does not match.
    pub async fn read_small(&self, d: &Descriptor) -> Result<Vec<u8>, InspectError> {
        let refused = |why: String| InspectError::Io {
            what: format!("read config {}", d.digest),
            source: std::io::Error::other(why),
        };
        if d.size_bytes > MAX_MANIFEST_BYTES {
            let size = d.size_bytes;
            return Err(refused(format!(
                "{size} bytes is more than the {MAX_MANIFEST_BYTES} read"
            )));
        }
        let digest = d.digest.clone();
        let bytes = match self {
            Self::Disk(image) => {
                let path = image.blob_path(&d.digest);
                std::fs::read(&path)
                    .map_err(InspectError::io(format!("read blob {}", path.display())))?
            }
            Self::Remote(r) => {
                let (body, what) = r.get(&digest).await?;
                read_body_limited(body, MAX_MANIFEST_BYTES)
                    .await
                    .map_err(|source| InspectError::Body { what, source })?
                    .to_vec()
            }
        };
        let actual = Digest::of(&bytes);
        if actual != digest {
            return Err(refused(format!("content hashes to {actual}")));
        }
        Ok(bytes)
    }
}

impl Repository {
    /// GETs a blob: its body, and the request as errors name it.
    async fn get(&self, digest: &Digest) -> Result<(Incoming, String), InspectError> {
        let repo = &self.repo;
        let what = format!("GET blob {repo}@{digest}");
        let path = format!("/v2/{repo}/blobs/{digest}");
        let req = RegistryRequest::pull(Method::GET, repo.as_str(), path);
        let resp = self.client.send(&self.endpoint, &req).await;
        let resp = resp.map_err(|source| InspectError::Request {
            what: what.clone(),
            source,
        })?;
        if !resp.status().is_success() {
            let status = resp.status();
            return Err(InspectError::Status { what, status });
        }
        Ok((resp.into_body(), what))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_parse_into_inputs() {
        let access = RegistryAccess::default();
        let ctx = InputContext {
            scenario: None,
            access: &access,
            image_cache: Path::new("/cache"),
        };
        let cases = [
            (
                "oci:/tmp/app:v1",
                ImageInput::Layout {
                    path: "/tmp/app".into(),
                    tag: Some("v1".into()),
                },
            ),
            (
                "oci:/tmp/a:b/app",
                ImageInput::Layout {
                    path: "/tmp/a:b/app".into(),
                    tag: None,
                },
            ),
            (
                "./layouts/app",
                ImageInput::Layout {
                    path: "./layouts/app".into(),
                    tag: None,
                },
            ),
            (
                "docker://127.0.0.1:5000/test/app:v1",
                ImageInput::Registry {
                    reference: ImageRef::parse("127.0.0.1:5000/test/app:v1").unwrap(),
                    access: access.clone(),
                },
            ),
            (
                "alpine",
                ImageInput::Registry {
                    reference: ImageRef::parse("docker.io/library/alpine:latest").unwrap(),
                    access: access.clone(),
                },
            ),
        ];
        for (arg, want) in cases {
            assert_eq!(ImageInput::parse(arg, ctx).unwrap(), want, "{arg}");
        }
        let err = ImageInput::parse("variant:full", ctx)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--scenario"), "{err}");
        let err = ImageInput::parse("Bad/Name", ctx).unwrap_err().to_string();
        assert!(err.contains("oci:DIR"), "{err}");
    }
}
