//! Repository names, tags and image references, validated by the OCI distribution grammar.
//!
//! - [`RepoName`]: `<name>` in `/v2/<name>/...`, e.g. `library/alpine`.
//! - [`Reference`]: what follows `/manifests/`, a tag or a digest.
//! - [`ImageRef`]: what users type, `registry/repo:tag@digest`, with Docker's normalisation
//!   (`alpine` is `docker.io/library/alpine:latest`).
//!
//! This module does no I/O.

use std::fmt;
use std::str::FromStr;

use crate::digest::{Digest, DigestError};

/// Longest repository name accepted, in bytes (distribution's `NameTotalLengthMax`).
pub const MAX_NAME_BYTES: usize = 255;
/// Longest tag accepted, in bytes.
pub const MAX_TAG_BYTES: usize = 128;
/// Docker Hub's name as users write it.
pub const DOCKER_HUB: &str = "docker.io";
/// The host that actually serves Docker Hub's registry API.
pub const DOCKER_HUB_HOST: &str = "registry-1.docker.io";

/// A repository name valid under the distribution-spec grammar
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(String);

/// Why a name, tag or reference was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    /// The repository name breaks the grammar or is too long.
    #[error("invalid repository name {0:?}")]
    Name(String),
    /// The tag breaks `[a-zA-Z0-9_][a-zA-Z0-9._-]{{0,127}}`.
    #[error("invalid tag {0:?}")]
    Tag(String),
    /// The digest part is not a usable digest.
    #[error(transparent)]
    Digest(#[from] DigestError),
    /// The registry host part is empty or has characters no host has.
    #[error("invalid registry host {0:?}")]
    Registry(String),
}

fn short(s: &str) -> String {
    s.chars().take(160).collect()
}

impl RepoName {
    /// Validates `s` as a repository name.
    ///
    /// # Errors
    /// [`ReferenceError::Name`] when it breaks the grammar or exceeds [`MAX_NAME_BYTES`].
    pub fn parse(s: &str) -> Result<Self, ReferenceError> {
        if s.is_empty() || s.len() > MAX_NAME_BYTES || !s.split('/').all(is_path_component) {
            return Err(ReferenceError::Name(short(s)));
        }
        Ok(Self(s.to_owned()))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn is_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: ".", "_", "__" or "-+", followed by an alphanumeric.
        let start = i;
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < b.len() && b[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
        if i == start || i >= b.len() || !alnum(b[i]) {
            return false;
        }
    }
    true
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl fmt::Debug for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}
impl FromStr for RepoName {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// A manifest reference: a tag, or a digest.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Reference {
    /// A mutable tag such as `v1`.
    Tag(String),
    /// An immutable content digest.
    Digest(Digest),
}

impl Reference {
    /// Parses a tag or a digest (anything containing `:` is taken as a digest).
    ///
    /// # Errors
    /// [`ReferenceError::Tag`] or [`ReferenceError::Digest`].
    pub fn parse(s: &str) -> Result<Self, ReferenceError> {
        if s.contains(':') {
            Ok(Self::Digest(Digest::parse(s)?))
        } else if is_tag(s) {
            Ok(Self::Tag(s.to_owned()))
        } else {
            Err(ReferenceError::Tag(short(s)))
        }
    }
}

/// `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`
pub fn is_tag(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_TAG_BYTES
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b[1..]
            .iter()
            .all(|&x| x.is_ascii_alphanumeric() || matches!(x, b'.' | b'_' | b'-'))
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tag(t) => f.write_str(t),
            Self::Digest(d) => write!(f, "{d}"),
        }
    }
}
impl fmt::Debug for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// A full image reference: `registry/repo[:tag][@digest]`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    /// Registry as written (`docker.io`, `127.0.0.1:5000`, `ghcr.io`).
    pub registry: String,
    /// Repository within the registry.
    pub repo: RepoName,
    /// Tag, if given (`latest` is filled in when neither tag nor digest is given).
    pub tag: Option<String>,
    /// Digest, if given; it wins over the tag when pulling.
    pub digest: Option<Digest>,
}

impl ImageRef {
    /// Parses with Docker's normalisation: a first component is a registry only if it contains
    /// `.` or `:` or is `localhost`; otherwise the registry is `docker.io`, and a single-component
    /// name on Docker Hub gets the `library/` prefix.
    ///
    /// # Errors
    /// [`ReferenceError`] naming the part that is invalid.
    pub fn parse(s: &str) -> Result<Self, ReferenceError> {
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (r, Some(Digest::parse(d)?)),
            None => (s, None),
        };
        let (registry, path) = match rest.split_once('/') {
            Some((first, path))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_owned(), path)
            }
            _ => (DOCKER_HUB.to_owned(), rest),
        };
        if registry.is_empty()
            || !registry
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
        {
            return Err(ReferenceError::Registry(short(&registry)));
        }
        let last_slash = path.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match path[last_slash..].rfind(':') {
            Some(i) => {
                let tag = &path[last_slash + i + 1..];
                if !is_tag(tag) {
                    return Err(ReferenceError::Tag(short(tag)));
                }
                (&path[..last_slash + i], Some(tag.to_owned()))
            }
            None => (path, None),
        };
        let name = if registry == DOCKER_HUB && !name.contains('/') {
            format!("library/{name}")
        } else {
            name.to_owned()
        };
        let tag = if tag.is_none() && digest.is_none() {
            Some("latest".to_owned())
        } else {
            tag
        };
        Ok(Self {
            registry,
            repo: RepoName::parse(&name)?,
            tag,
            digest,
        })
    }

    /// What to ask `/manifests/` for: the digest when pinned, else the tag.
    pub fn reference(&self) -> Reference {
        match (&self.digest, &self.tag) {
            (Some(d), _) => Reference::Digest(d.clone()),
            (None, Some(t)) => Reference::Tag(t.clone()),
            (None, None) => Reference::Tag("latest".to_owned()),
        }
    }

    /// The host that serves this registry's API (`docker.io` is served by
    /// `registry-1.docker.io`).
    pub fn registry_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_HOST
        } else {
            &self.registry
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repo)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}
impl fmt::Debug for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}
impl FromStr for ImageRef {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_names() {
        let long = "a".repeat(256);
        let cases = [
            ("library/alpine", true),
            ("a", true),
            ("test/app", true),
            ("a.b_c__d---e/f0", true),
            ("a___b", false),
            ("a..b", false),
            ("A/b", false),
            ("a/", false),
            ("/a", false),
            ("a//b", false),
            ("-a", false),
            ("a-", false),
            ("..", false),
            ("a/../b", false),
            ("a/%2e%2e", false),
            ("", false),
            (long.as_str(), false),
        ];
        for (name, ok) in cases {
            assert_eq!(RepoName::parse(name).is_ok(), ok, "{name}");
        }
    }

    #[test]
    fn references() {
        assert_eq!(Reference::parse("v1").unwrap(), Reference::Tag("v1".into()));
        assert!(matches!(
            Reference::parse(&format!("sha256:{}", "0".repeat(64))),
            Ok(Reference::Digest(_))
        ));
        assert!(Reference::parse(".v1").is_err());
        assert!(Reference::parse(&"a".repeat(129)).is_err());
        assert!(matches!(
            Reference::parse("sha256:zz"),
            Err(ReferenceError::Digest(_))
        ));
    }

    #[test]
    fn image_refs_normalise_like_docker() {
        let d = format!("sha256:{}", "a".repeat(64));
        let cases = [
            ("alpine", "docker.io/library/alpine:latest"),
            ("user/app:1.2", "docker.io/user/app:1.2"),
            ("127.0.0.1:5000/test/app:v1", "127.0.0.1:5000/test/app:v1"),
            ("localhost/app", "localhost/app:latest"),
            ("ghcr.io/o/r", "ghcr.io/o/r:latest"),
        ];
        for (input, want) in cases {
            assert_eq!(ImageRef::parse(input).unwrap().to_string(), want, "{input}");
        }
        let pinned = ImageRef::parse(&format!("registry:5000/x@{d}")).unwrap();
        assert_eq!(pinned.registry, "registry:5000");
        assert_eq!(pinned.tag, None);
        assert!(matches!(pinned.reference(), Reference::Digest(_)));
        assert_eq!(
            ImageRef::parse("alpine").unwrap().registry_host(),
            DOCKER_HUB_HOST
        );
        assert!(ImageRef::parse("Bad/Name").is_err());
        assert!(ImageRef::parse("x:5000/a:b:c").is_err());
    }
}
