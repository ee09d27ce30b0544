//! A real registry as an image source: how to reach it ([`RegistryAccess`]: plain HTTP or TLS
//! with an extra CA file) and who we are there (anonymous, a docker `config.json`, or a user name
//! with the password in an environment variable), resolved into a [`Remote`] when a run or an
//! inspection starts, never when a scenario is parsed. A password is never written in a scenario
//! or on a command line, and nothing here logs or stores it ([`stampede_oci::auth::Credentials`]
//! redacts itself in `Debug`; where credentials may be sent is `stampede_oci::auth`'s rule). No
//! network I/O.

use std::path::{Path, PathBuf};

use stampede_oci::auth::{Credentials, DockerConfig, DockerConfigError};
use stampede_oci::{ClientConfig, ClientError, Endpoint, ImageRef, RegistryClient};

/// How to reach a registry and authenticate to it, as a scenario's `[variants.registry]` or
/// `inspect`'s flags give it. Every field is optional: the default is anonymous HTTPS with the
/// system's CA roots.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct RegistryAccess {
    /// Talk plain HTTP instead of HTTPS (a registry on loopback or in a test).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
    /// PEM file of extra CA certificates to trust (a registry with a private or self-signed CA).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// A docker `config.json` giving the registry host's credentials: its `credHelpers` entry
    /// for the host (a `docker-credential-<name>` program is run), else its `auths` entry, else
    /// its `credsStore` helper.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub docker_config: Option<PathBuf>,
    /// User name; the password is read from the environment variable `password_env`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Name of the environment variable holding the password (or token) for `username`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
}

/// A registry resolved for use: endpoint (with credentials, when any) and client settings.
#[derive(Debug, Clone)]
pub struct Remote {
    /// The image reference, normalised.
    pub reference: ImageRef,
    /// The registry's API endpoint, carrying the credentials.
    pub endpoint: Endpoint,
    /// Extra CA file, for the client and for a cache-daemon in front of the registry.
    pub ca_file: Option<PathBuf>,
    /// Where the credentials came from, for the report (never the secret): `"anonymous"`,
    /// `"docker config ~/.docker/config.json"`, `"user bench, password from $REG_PASSWORD"`.
    pub credentials_from: String,
}

/// Why a registry source could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// `username` is given without `password_env`, or the other way round.
    #[error("username and password_env go together (the password is read from the environment variable password_env names)")]
    HalfCredentials,
    #[error("give either docker_config or username/password_env, not both")]
    TwoCredentialSources,
    #[error("insecure (plain HTTP) and ca_file (for TLS) do not go together")]
    InsecureWithCa,
    #[error("environment variable {0} (password_env) is not set or is empty")]
    PasswordUnset(String),
    #[error(transparent)]
    DockerConfig(#[from] DockerConfigError),
    #[error("ca_file {0} does not exist")]
    CaFile(PathBuf),
    /// The registry host does not make an endpoint URL.
    #[error("registry {registry}")]
    Endpoint {
        registry: String,
        #[source]
        source: ClientError,
    },
}

impl RegistryAccess {
    /// Checks the fields go together, without touching the environment or the disk.
    ///
    /// # Errors
    /// [`RemoteError::HalfCredentials`], [`RemoteError::TwoCredentialSources`] or
    /// [`RemoteError::InsecureWithCa`].
    pub fn check(&self) -> Result<(), RemoteError> {
        if self.username.is_some() != self.password_env.is_some() {
            return Err(RemoteError::HalfCredentials);
        }
        if self.docker_config.is_some() && self.username.is_some() {
            return Err(RemoteError::TwoCredentialSources);
        }
        if self.insecure && self.ca_file.is_some() {
            return Err(RemoteError::InsecureWithCa);
        }
        Ok(())
    }

    /// Resolves the access for `reference`: reads the password's environment variable or the
    /// docker config, and builds the endpoint (`https://<host>` or `http://<host>`, Docker Hub
    /// at `registry-1.docker.io`). A docker config without an entry for the host means
    /// anonymous access, as with `docker pull`.
    ///
    /// # Errors
    /// [`RemoteError`] for fields that do not go together, an unset password variable, an
    /// unreadable docker config, a missing CA file or a host that makes no URL.
    pub fn resolve(&self, reference: &ImageRef) -> Result<Remote, RemoteError> {
        self.check()?;
        let ca_file = self.ca_file.as_deref().map(expand_home);
        if let Some(ca) = ca_file.as_ref().filter(|ca| !ca.is_file()) {
            return Err(RemoteError::CaFile(ca.clone()));
        }
        let (credentials, credentials_from) = match (&self.username, &self.password_env) {
            (Some(username), Some(var)) => {
                let password = std::env::var(var)
                    .ok()
                    .filter(|p| !p.is_empty())
                    .ok_or_else(|| RemoteError::PasswordUnset(var.clone()))?;
                (
                    Some(Credentials::Basic {
                        username: username.clone(),
                        password,
                    }),
                    format!("user {username}, password from ${var}"),
                )
            }
            _ => match &self.docker_config {
                Some(path) => {
                    let path = expand_home(path);
                    match DockerConfig::load(&path)?.credentials_for(&reference.registry)? {
                        Some(found) => (Some(found.credentials), found.from),
                        None => (
                            None,
                            format!(
                                "anonymous (docker config {} has no entry for {})",
                                path.display(),
                                reference.registry
                            ),
                        ),
                    }
                }
                None => (None, "anonymous".to_owned()),
            },
        };
        let scheme = if self.insecure { "http" } else { "https" };
        let endpoint = Endpoint::parse(&format!("{scheme}://{}", reference.registry_host()))
            .map_err(|source| RemoteError::Endpoint {
                registry: reference.registry.clone(),
                source,
            })?
            .with_credentials(credentials);
        Ok(Remote {
            reference: reference.clone(),
            endpoint,
            ca_file,
            credentials_from,
        })
    }
}

impl Remote {
    /// A client for this registry built from `base` settings and the extra CA file.
    ///
    /// # Errors
    /// [`ClientError::Tls`] when the CA file cannot be read.
    pub fn client(&self, base: ClientConfig) -> Result<RegistryClient, ClientError> {
        RegistryClient::new(ClientConfig {
            extra_ca_file: self.ca_file.clone().or(base.extra_ca_file),
            ..base
        })
    }
}

/// `~/x` as `$HOME/x`; anything else unchanged.
pub fn expand_home(path: &Path) -> PathBuf {
    match (path.strip_prefix("~"), std::env::var_os("HOME")) {
        (Ok(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => path.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference() -> ImageRef {
        ImageRef::parse("127.0.0.1:5000/test/app:v1").unwrap()
    }

    #[test]
    fn fields_that_do_not_go_together_are_refused() {
        let cases = [
            (
                RegistryAccess {
                    username: Some("u".into()),
                    ..Default::default()
                },
                "go together",
            ),
            (
                RegistryAccess {
                    password_env: Some("P".into()),
                    ..Default::default()
                },
                "go together",
            ),
            (
                RegistryAccess {
                    username: Some("u".into()),
                    password_env: Some("P".into()),
                    docker_config: Some("c.json".into()),
                    ..Default::default()
                },
                "not both",
            ),
            (
                RegistryAccess {
                    insecure: true,
                    ca_file: Some("ca.pem".into()),
                    ..Default::default()
                },
                "do not go together",
            ),
        ];
        for (access, needle) in cases {
            let err = access.check().unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
        }
    }

    #[test]
    fn credentials_come_from_the_environment_and_never_show() {
        let var = "STAMPEDE_REMOTE_UNIT_TEST_PASSWORD";
        let access = RegistryAccess {
            insecure: true,
            username: Some("bench".into()),
            password_env: Some(var.into()),
            ..Default::default()
        };
        std::env::remove_var(var);
        let err = access.resolve(&reference()).unwrap_err().to_string();
        assert!(err.contains(var), "{err}");
        std::env::set_var(var, "s3cret-value");
        let remote = access.resolve(&reference()).unwrap();
        std::env::remove_var(var);
        assert_eq!(remote.endpoint.base_url(), "http://127.0.0.1:5000");
        assert_eq!(
            remote.credentials_from,
            format!("user bench, password from ${var}")
        );
        let shown = format!("{remote:?}");
        assert!(!shown.contains("s3cret-value"), "{shown}");
    }

    #[test]
    fn docker_config_entries_are_found_by_registry_host() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        // "user:pa55" in base64.
        std::fs::write(
            &path,
            r#"{"auths":{"http://127.0.0.1:5000":{"auth":"dXNlcjpwYTU1"}}}"#,
        )
        .unwrap();
        let access = RegistryAccess {
            docker_config: Some(path.clone()),
            ..Default::default()
        };
        let remote = access.resolve(&reference()).unwrap();
        assert_eq!(remote.endpoint.base_url(), "https://127.0.0.1:5000");
        assert!(remote.credentials_from.starts_with("docker config"));
        let other = access
            .resolve(&ImageRef::parse("ghcr.io/o/r:1").unwrap())
            .unwrap();
        assert!(other
            .credentials_from
            .starts_with("anonymous (docker config"));
        assert!(!format!("{remote:?}").contains("pa55"));
    }
}
