//! Registry authentication facts: `WWW-Authenticate` challenges, credentials (explicit, from a
//! docker `config.json` or from the credential helpers it names), bearer tokens with their expiry, and the trust rule that decides where
//! credentials may be sent.
//!
//! The trust rule: credentials go to the registry host itself, and to a token realm only when the
//! realm is on the same trust boundary, meaning the same host, or a host under the same registrable
//! domain (`registry-1.docker.io` and `auth.docker.io` share `docker.io`), or a host the operator
//! listed explicitly. An `https` registry never sends credentials to an `http` realm. Anything else
//! gets an anonymous token request. This module does no network I/O; `client.rs` does. The only process it starts is a
//! credential helper a docker config names.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
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
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not the expected JSON.
    #[error("parse docker config {path}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// An `auth` entry is not base64 of `user:password`.
    #[error("docker config {path}: the auth entry for {registry} is not base64 of user:password")]
    Entry {
        /// The file.
        path: PathBuf,
        /// The registry key whose entry is bad.
        registry: String,
    },
    /// A credential helper named by `credHelpers` or `credsStore` could not be used.
    #[error("docker config {path}: credential helper `{program}` for {registry}: {problem}")]
    Helper {
        /// The file naming the helper.
        path: PathBuf,
        /// The helper program (`docker-credential-<name>`).
        program: String,
        /// The registry whose credentials were asked for.
        registry: String,
        /// What went wrong: not installed, failed with its message, timed out, bad output.
        problem: String,
    },
}

#[derive(serde::Deserialize)]
struct DockerConfigFile {
    #[serde(default)]
    auths: HashMap<String, DockerAuthEntry>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: HashMap<String, String>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

#[derive(serde::Deserialize)]
struct DockerAuthEntry {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
    identitytoken: Option<String>,
}

/// How long a credential helper may take before it is killed (a helper that prompts, say for a
/// GPG passphrase, would otherwise hang the caller).
pub const DEFAULT_HELPER_TIMEOUT: Duration = Duration::from_secs(30);

/// A docker `config.json`: inline `auths`, per-registry `credHelpers` and the default
/// `credsStore`, keys normalised to the bare host (`https://index.docker.io/v1/` becomes
/// `docker.io`).
///
/// [`DockerConfig::credentials_for`] looks a registry up the way docker does, except that an
/// inline entry is not hidden by `credsStore`: a `credHelpers` entry for the registry decides
/// alone (its helper's "not found" means anonymous); otherwise an `auths` entry with credentials;
/// otherwise the `credsStore` helper. Helpers are run as `docker-credential-<name> get` with the
/// server address on stdin (docker's protocol: `https://index.docker.io/v1/` for Docker Hub, the
/// host otherwise) and answer `{"Username": ..., "Secret": ...}`; a `<token>` user name means the
/// secret is an identity (refresh) token.
#[derive(Debug, Clone)]
pub struct DockerConfig {
    path: PathBuf,
    auths: HashMap<String, Credentials>,
    helpers: HashMap<String, String>,
    store: Option<String>,
    search_path: Option<Vec<PathBuf>>,
    helper_timeout: Duration,
    /// Helper answers by registry host: each helper runs at most once per host.
    answered: Arc<Mutex<HashMap<String, Option<FoundCredentials>>>>,
}

/// Credentials found for a registry, and where from (for reports; never the secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundCredentials {
    /// The credentials.
    pub credentials: Credentials,
    /// `docker config <path>` or `credential helper docker-credential-<name> (docker config <path>)`.
    pub from: String,
}

impl DockerConfig {
    /// Reads and checks the file; runs no helper yet.
    ///
    /// # Errors
    /// [`DockerConfigError`] when the file is unreadable or malformed.
    pub fn load(path: &Path) -> Result<Self, DockerConfigError> {
        let text = std::fs::read(path).map_err(|source| DockerConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let file: DockerConfigFile =
            serde_json::from_slice(&text).map_err(|source| DockerConfigError::Parse {
                path: path.to_owned(),
                source,
            })?;
        let mut auths = HashMap::new();
        for (key, entry) in file.auths {
            if let Some(creds) = auth_entry(path, &key, entry)? {
                auths.insert(normalise_registry_key(&key), creds);
            }
        }
        Ok(Self {
            path: path.to_owned(),
            auths,
            helpers: file
                .cred_helpers
                .into_iter()
                .filter(|(_, h)| !h.is_empty())
                .map(|(k, h)| (normalise_registry_key(&k), h))
                .collect(),
            store: file.creds_store.filter(|s| !s.is_empty()),
            search_path: None,
            helper_timeout: DEFAULT_HELPER_TIMEOUT,
            answered: Arc::default(),
        })
    }

    /// Looks helpers up in these directories instead of `$PATH`.
    #[must_use]
    pub fn with_helper_search_path(mut self, dirs: Vec<PathBuf>) -> Self {
        self.search_path = Some(dirs);
        self
    }

    /// Kills a helper that has not answered after `timeout` (default [`DEFAULT_HELPER_TIMEOUT`]).
    #[must_use]
    pub fn with_helper_timeout(mut self, timeout: Duration) -> Self {
        self.helper_timeout = timeout;
        self
    }

    /// Every registry the file names (inline `auths` entries with credentials and `credHelpers`
    /// keys), sorted. Registries that only `credsStore` knows are not listed.
    pub fn named_registries(&self) -> Vec<String> {
        let mut all: Vec<String> = self
            .auths
            .keys()
            .chain(self.helpers.keys())
            .cloned()
            .collect();
        all.sort();
        all.dedup();
        all
    }

    /// The file this was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The credentials for `registry` (a host, optionally with port; `docker.io` for Docker
    /// Hub), running a credential helper if the file says so; `None` when there are none.
    /// Blocks for as long as the helper runs (at most the helper timeout); a helper's answer
    /// for a host is remembered, so asking again (or through a clone) does not run it again.
    ///
    /// # Errors
    /// [`DockerConfigError::Helper`] when a helper is missing, fails, times out or answers
    /// something that is not its JSON.
    pub fn credentials_for(
        &self,
        registry: &str,
    ) -> Result<Option<FoundCredentials>, DockerConfigError> {
        let host = normalise_registry_key(registry);
        let helper = match self.helpers.get(&host) {
            Some(h) => Some(h),
            None => {
                if let Some(c) = self.auths.get(&host) {
                    return Ok(Some(FoundCredentials {
                        credentials: c.clone(),
                        from: format!("docker config {}", self.path.display()),
                    }));
                }
                self.store.as_ref()
            }
        };
        let Some(helper) = helper else {
            return Ok(None);
        };
        if let Some(known) = self
            .answered
            .lock()
            .expect("helper answers poisoned")
            .get(&host)
        {
            return Ok(known.clone());
        }
        let program = format!("docker-credential-{helper}");
        let server = if host == crate::reference::DOCKER_HUB {
            "https://index.docker.io/v1/".to_owned()
        } else {
            host.clone()
        };
        let err = |problem: String| DockerConfigError::Helper {
            path: self.path.clone(),
            program: program.clone(),
            registry: host.clone(),
            problem,
        };
        let found = run_helper(
            &program,
            self.search_path.as_deref(),
            &server,
            self.helper_timeout,
        )
        .map_err(err)?;
        let found = found.map(|credentials| FoundCredentials {
            credentials,
            from: format!(
                "credential helper {program} (docker config {})",
                self.path.display()
            ),
        });
        self.answered
            .lock()
            .expect("helper answers poisoned")
            .insert(host, found.clone());
        Ok(found)
    }
}

fn auth_entry(
    path: &Path,
    key: &str,
    entry: DockerAuthEntry,
) -> Result<Option<Credentials>, DockerConfigError> {
    if let Some(token) = entry.identitytoken.filter(|t| !t.is_empty()) {
        return Ok(Some(Credentials::IdentityToken {
            identity_token: token,
        }));
    }
    if let Some(auth) = entry.auth.filter(|a| !a.is_empty()) {
        let bad = || DockerConfigError::Entry {
            path: path.to_owned(),
            registry: key.to_owned(),
        };
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|_| bad())?;
        let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
        let (username, password) = decoded.split_once(':').ok_or_else(bad)?;
        return Ok(Some(Credentials::Basic {
            username: username.to_owned(),
            password: password.to_owned(),
        }));
    }
    Ok(match (entry.username, entry.password) {
        (Some(username), Some(password)) => Some(Credentials::Basic { username, password }),
        _ => None,
    })
}

/// What a helper's `get` prints.
#[derive(serde::Deserialize)]
struct HelperAnswer {
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret")]
    secret: String,
}

/// Runs `<program> get` with `server` on stdin. `Ok(None)` when the helper says it has no
/// credentials for the server; `Err` with a message that never contains the secret.
fn run_helper(
    program: &str,
    search_path: Option<&[PathBuf]>,
    server: &str,
    timeout: Duration,
) -> Result<Option<Credentials>, String> {
    use std::io::{Read as _, Write as _};
    use std::process::{Command, Stdio};

    let not_installed =
        || format!("not installed (no `{program}` on the PATH); install it or remove the entry");
    let exe = match search_path {
        Some(dirs) => dirs
            .iter()
            .map(|d| d.join(program))
            .find(|p| p.is_file())
            .ok_or_else(not_installed)?,
        None => PathBuf::from(program),
    };
    let spawn = || {
        Command::new(&exe)
            .arg("get")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
    };
    // ETXTBSY (26): the helper was just written and another thread forked meanwhile; brief.
    let mut attempt = 0;
    let mut child = loop {
        match spawn() {
            Err(e) if e.raw_os_error() == Some(26) && attempt < 5 => {
                attempt += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            other => {
                break other.map_err(|e| match e.kind() {
                    std::io::ErrorKind::NotFound => not_installed(),
                    _ => format!("cannot start it: {e}"),
                })?
            }
        }
    };
    // Readers on their own threads, so a chatty helper never blocks on a full pipe.
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut out = Vec::new();
            if let Some(mut p) = pipe {
                // At most 1 MiB: an answer is a few hundred bytes.
                let _ = p.by_ref().take(1 << 20).read_to_end(&mut out);
            }
            out
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
    if let Some(mut stdin) = child.stdin.take() {
        // A helper that exits without reading gives EPIPE; its exit status tells the rest.
        let _ = stdin.write_all(server.as_bytes());
    }
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "no answer after {} s; killed (does it prompt for a passphrase?)",
                    timeout.as_secs_f64()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(format!("wait for it: {e}")),
        }
    };
    let out = stdout.join().unwrap_or_default();
    let err = stderr.join().unwrap_or_default();
    if !status.success() {
        let message = String::from_utf8_lossy(if out.is_empty() { &err } else { &out })
            .trim()
            .to_owned();
        // docker-credential-helpers' answer for an unknown server.
        if message.contains("credentials not found") {
            return Ok(None);
        }
        return Err(format!("failed ({status}): {message}"));
    }
    let answer: HelperAnswer = serde_json::from_slice(&out).map_err(|e| {
        format!("answered something that is not {{\"Username\", \"Secret\"}} JSON: {e}")
    })?;
    Ok(Some(if answer.username == "<token>" {
        Credentials::IdentityToken {
            identity_token: answer.secret,
        }
    } else {
        Credentials::Basic {
            username: answer.username,
            password: answer.secret,
        }
    }))
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

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("stampede-auth-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn docker_config_entries() {
        let dir = temp_dir("entries");
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
        let config = DockerConfig::load(&path).unwrap();
        let creds = |r: &str| config.credentials_for(r).unwrap().map(|f| f.credentials);
        assert_eq!(
            creds("docker.io"),
            Some(Credentials::Basic {
                username: "user".into(),
                password: "pa:ss".into()
            })
        );
        assert_eq!(
            config
                .credentials_for("index.docker.io")
                .unwrap()
                .unwrap()
                .from,
            format!("docker config {}", path.display())
        );
        assert!(matches!(
            creds("ghcr.io"),
            Some(Credentials::IdentityToken { .. })
        ));
        assert_eq!(creds("empty.example"), None);
        assert_eq!(creds("other.example"), None);
        assert!(!format!("{:?}", creds("docker.io")).contains("pa:ss"));
        std::fs::write(&path, r#"{"auths":{"x":{"auth":"!!"}}}"#).unwrap();
        assert!(matches!(
            DockerConfig::load(&path),
            Err(DockerConfigError::Entry { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A docker config in its own temp dir naming scripted credential helpers in `bin/`:
    /// `good` speaks docker's protocol for two servers (and logs every server it is asked about
    /// to `calls`), `broken` fails, `hang` never answers, `garbage` prints no JSON, `nope` is not
    /// installed. The directory is removed on drop.
    struct HelperFixture {
        dir: PathBuf,
        /// The config.json.
        path: PathBuf,
        /// One line per server the `good` helper was asked about.
        calls: PathBuf,
        config: DockerConfig,
    }

    impl HelperFixture {
        fn new(name: &str) -> Self {
            let dir = temp_dir(name);
            let bin = dir.join("bin");
            let calls = dir.join("calls");
            Self::write_helpers(&bin, &calls);
            let path = dir.join("config.json");
            std::fs::write(
                &path,
                r#"{
              "auths": {"inline.example": {"auth": "YTpi"}, "both.example": {"auth": "YTpi"}},
              "credHelpers": {
                "reg.example:5000": "good", "both.example": "good",
                "https://index.docker.io/v1/": "good", "broken.example": "broken",
                "hang.example": "hang", "garbage.example": "garbage", "missing.example": "nope"
              },
              "credsStore": "good"
            }"#,
            )
            .unwrap();
            let config = DockerConfig::load(&path)
                .unwrap()
                .with_helper_search_path(vec![bin])
                .with_helper_timeout(Duration::from_millis(300));
            Self {
                dir,
                path,
                calls,
                config,
            }
        }

        /// The `docker-credential-*` scripts, in `bin`.
        fn write_helpers(bin: &Path, calls: &Path) {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::create_dir_all(bin).unwrap();
            let script = |name: &str, body: &str| {
                let p = bin.join(format!("docker-credential-{name}"));
                std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
            };
            // Answers only what docker would ask for, and only to `get`.
            script(
                "good",
                &format!(
                    r#"[ "$1" = get ] || exit 9
server=$(cat)
echo "$server" >> {}
case "$server" in
  reg.example:5000) echo '{{"ServerURL":"reg.example:5000","Username":"u","Secret":"s3cret"}}' ;;
  https://index.docker.io/v1/) echo '{{"ServerURL":"https://index.docker.io/v1/","Username":"<token>","Secret":"refresh"}}' ;;
  *) echo "credentials not found in native keychain"; exit 1 ;;
esac"#,
                    calls.display()
                ),
            );
            script("broken", "echo 'error: keyring is locked' >&2; exit 3");
            script("hang", "exec sleep 10");
            script("garbage", "cat >/dev/null; echo hello");
        }

        /// The servers the `good` helper was asked about, sorted.
        fn asked(&self) -> Vec<String> {
            let mut asked: Vec<String> = std::fs::read_to_string(&self.calls)
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect();
            asked.sort();
            asked
        }
    }

    impl Drop for HelperFixture {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    #[test]
    fn credential_helpers_are_run_with_docker_s_protocol() {
        let fixture = HelperFixture::new("helpers");
        let config = &fixture.config;
        let found = |r: &str| config.credentials_for(r).unwrap();
        let helper = found("reg.example:5000").unwrap();
        assert_eq!(
            helper.credentials,
            Credentials::Basic {
                username: "u".into(),
                password: "s3cret".into()
            }
        );
        assert_eq!(
            helper.from,
            format!(
                "credential helper docker-credential-good (docker config {})",
                fixture.path.display()
            )
        );
        assert_eq!(
            found("docker.io").unwrap().credentials,
            Credentials::IdentityToken {
                identity_token: "refresh".into()
            }
        );
        // credHelpers decides alone; its "not found" is anonymous, not the inline entry.
        assert_eq!(found("both.example"), None);
        // An inline entry is used before credsStore; credsStore answers for the rest.
        assert_eq!(
            found("inline.example").unwrap().credentials,
            Credentials::Basic {
                username: "a".into(),
                password: "b".into()
            }
        );
        assert_eq!(found("other.example"), None);
        // Each host's helper ran once, however often it was asked (and through a clone).
        let again = config.clone();
        assert_eq!(
            again.credentials_for("reg.example:5000").unwrap(),
            Some(helper.clone())
        );
        assert_eq!(found("other.example"), None);
        assert_eq!(
            fixture.asked(),
            [
                "both.example",
                "https://index.docker.io/v1/",
                "other.example",
                "reg.example:5000"
            ]
        );
        assert_eq!(
            config.named_registries(),
            [
                "both.example",
                "broken.example",
                "docker.io",
                "garbage.example",
                "hang.example",
                "inline.example",
                "missing.example",
                "reg.example:5000"
            ]
        );
    }

    #[test]
    fn credential_helper_failures_are_named_in_plain_words() {
        let fixture = HelperFixture::new("helper-failures");
        let config = &fixture.config;
        let problem = |r: &str| match config.credentials_for(r) {
            Err(DockerConfigError::Helper {
                program, problem, ..
            }) => format!("{program}: {problem}"),
            other => panic!("{r}: {other:?}"),
        };
        assert_eq!(
            problem("broken.example"),
            "docker-credential-broken: failed (exit status: 3): error: keyring is locked"
        );
        let started = Instant::now();
        assert!(problem("hang.example").contains("no answer after 0.3 s; killed"));
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(problem("garbage.example").contains("is not {\"Username\", \"Secret\"} JSON"));
        assert_eq!(
            problem("missing.example"),
            "docker-credential-nope: not installed (no `docker-credential-nope` on the PATH); install it or remove the entry"
        );
        let full = config
            .credentials_for("missing.example")
            .unwrap_err()
            .to_string();
        assert!(full.contains("for missing.example"), "{full}");
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
