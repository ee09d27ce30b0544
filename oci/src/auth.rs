//! Registry authentication facts: `WWW-Authenticate` challenges, credentials (explicit or from a
//! docker `config.json`), bearer tokens with their expiry, and the trust rule that decides where
//! credentials may be sent.
//!
//! The trust rule: credentials go to the registry host itself, and to a token realm only when the
//! realm is on the same trust boundary, meaning the same host, or a host under the same registrable
//! domain (`registry-1.docker.io` and `auth.docker.io` share `docker.io`), or a host the operator
//! listed explicitly. An `https` registry never sends credentials to an `http` realm. Anything else
//! gets an anonymous token request. This module does no network I/O; `client.rs` does.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine as _;

/// Tokens without `expires_in` live this long (the token spec's default).
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);
/// Tokens are dropped this long before they expire, so a request never races the expiry.
const TOKEN_EXPIRY_MARGIN: Duration = Duration::from_secs(5);

/// One parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// `Bearer realm=...,service=...,scope=...`: get a token from `realm`.
    Bearer {
        /// Token endpoint URL.
        realm: String,
        /// `service` parameter to pass back.
        service: Option<String>,
        /// `scope` parameter the registry asked for.
        scope: Option<String>,
    },
    /// `Basic realm=...`: send credentials directly.
    Basic,
}

impl Challenge {
    /// Parses the first Bearer or Basic challenge from a header value; `None` if there is none.
    pub fn parse(header: &str) -> Option<Self> {
        let header = header.trim();
        let (scheme, rest) = header
            .split_once(char::is_whitespace)
            .unwrap_or((header, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            return Some(Self::Basic);
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let params = parse_params(rest);
        Some(Self::Bearer {
            realm: params.get("realm")?.clone(),
            service: params.get("service").cloned(),
            scope: params.get("scope").cloned(),
        })
    }
}

/// `key=value` or `key="quoted \" value"`, comma separated. Keys are lowercased.
fn parse_params(s: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.peek().copied() {
                if c == ',' {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        out.insert(key.trim().to_ascii_lowercase(), value.trim().to_owned());
    }
    out
}

/// What a puller can prove itself with. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(untagged)]
pub enum Credentials {
    /// Username and password (or a personal access token as password).
    Basic {
        /// User name.
        username: String,
        /// Password or token.
        password: String,
    },
    /// An OAuth2 refresh token from `docker login` (`identitytoken` in config.json).
    IdentityToken {
        /// The refresh token.
        identity_token: String,
    },
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Basic { username, .. } => write!(f, "Basic({username}, <redacted>)"),
            Self::IdentityToken { .. } => f.write_str("IdentityToken(<redacted>)"),
        }
    }
}

impl Credentials {
    /// The `Authorization: Basic ...` value, for Basic credentials.
    pub fn basic_header(&self) -> Option<String> {
        match self {
            Self::Basic { username, password } => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
            )),
            Self::IdentityToken { .. } => None,
        }
    }
}

/// Why a docker `config.json` could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DockerConfigError {
    /// The file could not be read.
    #[error("read docker config {path}")]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not the expected JSON.
    #[error("parse docker config {path}")]
    Parse {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// An `auth` entry is not base64 of `user:password`.
    #[error("docker config {path}: the auth entry for {registry} is not base64 of user:password")]
    Entry {
        /// The file.
        path: std::path::PathBuf,
        /// The registry key whose entry is bad.
        registry: String,
    },
}

#[derive(serde::Deserialize)]
struct DockerConfigFile {
    #[serde(default)]
    auths: HashMap<String, DockerAuthEntry>,
}

#[derive(serde::Deserialize)]
struct DockerAuthEntry {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
    identitytoken: Option<String>,
}

/// Reads every registry's credentials from a docker `config.json` (`auths` only; credential
/// helpers are not run). Keys are normalised to the bare host (`https://index.docker.io/v1/`
/// becomes `docker.io`).
///
/// # Errors
/// [`DockerConfigError`] when the file is unreadable or malformed.
pub fn load_docker_config(path: &Path) -> Result<HashMap<String, Credentials>, DockerConfigError> {
    let text = std::fs::read(path).map_err(|source| DockerConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let file: DockerConfigFile =
        serde_json::from_slice(&text).map_err(|source| DockerConfigError::Parse {
            path: path.to_owned(),
            source,
        })?;
    let mut out = HashMap::new();
    for (key, entry) in file.auths {
        let host = normalise_registry_key(&key);
        let creds = if let Some(token) = entry.identitytoken.filter(|t| !t.is_empty()) {
            Credentials::IdentityToken {
                identity_token: token,
            }
        } else if let Some(auth) = entry.auth.filter(|a| !a.is_empty()) {
            let bad = || DockerConfigError::Entry {
                path: path.to_owned(),
                registry: key.clone(),
            };
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .map_err(|_| bad())?;
            let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
            let (username, password) = decoded.split_once(':').ok_or_else(bad)?;
            Credentials::Basic {
                username: username.to_owned(),
                password: password.to_owned(),
            }
        } else if let (Some(username), Some(password)) = (entry.username, entry.password) {
            Credentials::Basic { username, password }
        } else {
            continue;
        };
        out.insert(host, creds);
    }
    Ok(out)
}

/// `https://index.docker.io/v1/` -> `docker.io`; `http://host:5000/x` -> `host:5000`.
pub fn normalise_registry_key(key: &str) -> String {
    let no_scheme = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = no_scheme.split('/').next().unwrap_or(no_scheme);
    match host {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            crate::reference::DOCKER_HUB.to_owned()
        }
        h => h.to_owned(),
    }
}

/// Whether credentials for a registry at `registry_scheme://registry_host` may be sent to a
/// token realm at `realm_scheme://realm_host`. Hosts are without port; see the module docs.
pub fn realm_is_trusted(
    registry_scheme: &str,
    registry_host: &str,
    realm_scheme: &str,
    realm_host: &str,
    extra_trusted: &[String],
) -> bool {
    if registry_scheme.eq_ignore_ascii_case("https") && !realm_scheme.eq_ignore_ascii_case("https")
    {
        return false;
    }
    let registry_host = registry_host.to_ascii_lowercase();
    let realm_host = realm_host.to_ascii_lowercase();
    if registry_host == realm_host
        || extra_trusted
            .iter()
            .any(|h| h.eq_ignore_ascii_case(&realm_host))
    {
        return true;
    }
    match (
        registrable_domain(&registry_host),
        registrable_domain(&realm_host),
    ) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// The last two DNS labels (three under common two-level public suffixes such as `co.uk`);
/// `None` for IP literals and single-label hosts, which only ever match exactly.
fn registrable_domain(host: &str) -> Option<String> {
    if host.parse::<std::net::IpAddr>().is_ok() || host.starts_with('[') {
        return None;
    }
    let labels: Vec<&str> = host.split('.').filter(|l| !l.is_empty()).collect();
    if labels.len() < 2 {
        return None;
    }
    let second = labels[labels.len() - 2];
    let tld = labels[labels.len() - 1];
    let take = if tld.len() == 2
        && matches!(
            second,
            "co" | "com" | "net" | "org" | "gov" | "edu" | "ac" | "ne" | "or"
        ) {
        3
    } else {
        2
    };
    if labels.len() < take {
        return None;
    }
    Some(labels[labels.len() - take..].join("."))
}

/// A bearer token and when to stop using it.
#[derive(Clone)]
pub struct Token {
    /// The token itself.
    pub value: String,
    /// When it stops being used (expiry minus a safety margin).
    pub use_until: Instant,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("use_until", &self.use_until)
            .finish_non_exhaustive()
    }
}

/// The JSON a token endpoint answers with (`token` or `access_token`).
#[derive(Debug, serde::Deserialize)]
pub struct TokenResponse {
    token: Option<String>,
    access_token: Option<String>,
    expires_in: Option<u64>,
}

impl TokenResponse {
    /// Turns the response into a [`Token`] valid from `now`; `None` if it carries no token.
    pub fn into_token(self, now: Instant) -> Option<Token> {
        let value = self.token.or(self.access_token).filter(|t| !t.is_empty())?;
        let lifetime = self
            .expires_in
            .map_or(DEFAULT_TOKEN_LIFETIME, Duration::from_secs)
            .saturating_sub(TOKEN_EXPIRY_MARGIN);
        Some(Token {
            value,
            use_until: now + lifetime,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        let c = Challenge::parse(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#,
        )
        .unwrap();
        assert_eq!(
            c,
            Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/alpine:pull".into()),
            }
        );
        assert_eq!(
            Challenge::parse(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(
            Challenge::parse(r#"bearer realm=http://x/t , scope="a\"b""#),
            Some(Challenge::Bearer {
                realm: "http://x/t".into(),
                service: None,
                scope: Some("a\"b".into())
            })
        );
        assert_eq!(Challenge::parse("Negotiate"), None);
        assert_eq!(Challenge::parse(r#"Bearer service="x""#), None);
    }

    #[test]
    fn trust_boundary() {
        let t =
            |rs, rh, qs, qh| realm_is_trusted(rs, rh, qs, qh, &["tokens.example.net".to_owned()]);
        assert!(t(
            "https",
            "registry-1.docker.io",
            "https",
            "auth.docker.io"
        ));
        assert!(t("https", "ghcr.io", "https", "ghcr.io"));
        assert!(t("http", "127.0.0.1", "http", "127.0.0.1"));
        assert!(t("https", "reg.example.com", "https", "tokens.example.net"));
        assert!(!t(
            "https",
            "registry-1.docker.io",
            "http",
            "auth.docker.io"
        ));
        assert!(!t("https", "reg.example.com", "https", "evil.com"));
        assert!(!t("http", "127.0.0.1", "http", "127.0.0.2"));
        assert!(!t("https", "a.co.uk", "https", "b.co.uk"));
        assert!(t("https", "reg.shop.co.uk", "https", "auth.shop.co.uk"));
    }

    #[test]
    fn docker_config_entries() {
        let dir = std::env::temp_dir().join(format!("stampede-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.json");
        std::fs::write(
            &path,
            r#"{"auths":{
              "https://index.docker.io/v1/":{"auth":"dXNlcjpwYTpzcw=="},
              "ghcr.io":{"identitytoken":"refresh"},
              "empty.example":{}
            }}"#,
        )
        .unwrap();
        let creds = load_docker_config(&path).unwrap();
        assert_eq!(
            creds["docker.io"],
            Credentials::Basic {
                username: "user".into(),
                password: "pa:ss".into()
            }
        );
        assert!(matches!(
            creds["ghcr.io"],
            Credentials::IdentityToken { .. }
        ));
        assert!(!creds.contains_key("empty.example"));
        assert!(!format!("{:?}", creds["docker.io"]).contains("pa:ss"));
        std::fs::write(&path, r#"{"auths":{"x":{"auth":"!!"}}}"#).unwrap();
        assert!(matches!(
            load_docker_config(&path),
            Err(DockerConfigError::Entry { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn token_lifetime() {
        let now = Instant::now();
        let t: TokenResponse =
            serde_json::from_str(r#"{"access_token":"x","expires_in":300}"#).unwrap();
        let t = t.into_token(now).unwrap();
        assert_eq!(t.use_until, now + Duration::from_secs(295));
        let none: TokenResponse = serde_json::from_str(r#"{"token":""}"#).unwrap();
        assert!(none.into_token(now).is_none());
    }
}
