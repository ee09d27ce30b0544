//! Real parts for end-to-end tests of image sources: Debian's `docker-registry` (distribution,
//! started through the workspace's lab crate) on a free loopback port, plain, behind htpasswd
//! basic auth, behind token auth with a small in-test token server (ES256 JWTs, as distribution
//! verifies them), or over TLS with a CA made in the test; `umoci` to build images offline and
//! `skopeo` to push them.
//!
//! When a program is missing, tests skip with a message, unless `STAMPEDE_REQUIRE_REAL=1` (set by
//! `.ci/run`), in which case they fail: CI must never pass by skipping.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::Full;

/// The token service name the registry and the token server agree on.
pub const TOKEN_SERVICE: &str = "stampede-test-registry";
/// The token issuer the registry trusts.
const TOKEN_ISSUER: &str = "stampede-test-token-server";

pub use stampede_lab::have_or_skip as have;

/// A free loopback port (bound then released; the tiny race is acceptable in tests).
pub fn free_port() -> u16 {
    stampede_lab::probe::free_loopback_addr()
        .unwrap_or_else(|e| panic!("{e}"))
        .port()
}

/// Runs a command, panicking with its output if it fails; returns stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// How a registry authenticates.
#[derive(Debug, Clone)]
pub enum Auth {
    /// Anyone may pull and push.
    None,
    /// `auth: htpasswd` with this file.
    Htpasswd(PathBuf),
    /// `auth: token` against `realm`, trusting the token server's certificate.
    Token {
        /// The token endpoint URL.
        realm: String,
        /// PEM certificate of the token signing key.
        cert: PathBuf,
    },
}

/// A running `docker-registry serve` (`stampede_lab`), stopped on drop.
pub struct Registry {
    registry: stampede_lab::DockerRegistry,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Registry {
    /// Starts a registry storing under `storage` (registries may share one), with `auth`, over
    /// TLS when `tls` is given.
    pub fn start(storage: &Path, auth: &Auth, tls: Option<&Tls>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let config = stampede_lab::RegistryConfig {
            http_secret: Some("stampede-test".into()),
            tls: tls.map(|t| stampede_lab::RegistryTls {
                certificate: t.cert.clone(),
                key: t.key.clone(),
            }),
            auth: match auth {
                Auth::None => stampede_lab::RegistryAuth::None,
                Auth::Htpasswd(file) => stampede_lab::RegistryAuth::Htpasswd(file.clone()),
                Auth::Token { realm, cert } => stampede_lab::RegistryAuth::Token {
                    realm: realm.clone(),
                    service: TOKEN_SERVICE.to_owned(),
                    issuer: TOKEN_ISSUER.to_owned(),
                    root_cert_bundle: cert.clone(),
                },
            },
            ..stampede_lab::RegistryConfig::plain(addr, storage)
        };
        let registry = stampede_lab::DockerRegistry::start(dir.path(), &config, None)
            .unwrap_or_else(|e| panic!("{e}"));
        Self {
            log: registry.log_path().to_owned(),
            registry,
            _dir: dir,
        }
    }

    /// `127.0.0.1:<port>`, as image references write the registry.
    pub fn host(&self) -> String {
        self.registry.host()
    }

    /// Access-log requests with this method whose line contains `needle`.
    pub fn count(&self, method: &str, needle: &str) -> usize {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .filter(|l| {
                stampede_lab::AccessEntry::parse(l).is_some_and(|e| e.method == method)
                    && l.contains(needle)
            })
            .count()
    }
}

/// A CA and a server certificate for 127.0.0.1 / localhost, as PEM files.
pub struct Tls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Tls {
    /// Generates them under `dir`.
    pub fn generate(dir: &Path) -> Self {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "stampede test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "127.0.0.1");
        let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
        let tls = Self {
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server-key.pem"),
        };
        std::fs::write(&tls.ca, ca.pem()).unwrap();
        std::fs::write(&tls.cert, cert.pem()).unwrap();
        std::fs::write(&tls.key, key.serialize_pem()).unwrap();
        tls
    }
}

/// Writes an htpasswd file with one bcrypt entry, as `htpasswd -B` does.
pub fn htpasswd(dir: &Path, user: &str, password: &str) -> PathBuf {
    let hash = bcrypt::hash_with_result(password, 5)
        .unwrap()
        .format_for_version(bcrypt::Version::TwoY);
    let path = dir.join("htpasswd");
    std::fs::write(&path, format!("{user}:{hash}\n")).unwrap();
    path
}

/// A token server for distribution's `auth: token`: answers `GET /token?service=..&scope=..`
/// with an ES256 JWT granting the asked scopes when the Basic credentials match, 401 otherwise.
pub struct TokenServer {
    pub addr: SocketAddr,
    /// PEM certificate of the signing key (the registry's `rootcertbundle`).
    pub cert: PathBuf,
    /// Token requests with valid credentials.
    pub granted: Arc<AtomicUsize>,
    /// Token requests refused.
    pub refused: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

struct Signer {
    key: ring::signature::EcdsaKeyPair,
    kid: String,
    user: String,
    password: String,
}

impl TokenServer {
    /// Starts on a free loopback port, accepting `user`/`password`; files go under `dir`.
    pub async fn start(dir: &Path, user: &str, password: &str) -> Self {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, TOKEN_ISSUER);
        let cert = params.self_signed(&key).unwrap();
        let cert_path = dir.join("token-signing.pem");
        std::fs::write(&cert_path, cert.pem()).unwrap();
        let signer = Arc::new(Signer {
            key: ring::signature::EcdsaKeyPair::from_pkcs8(
                &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                &key.serialize_der(),
                &ring::rand::SystemRandom::new(),
            )
            .unwrap(),
            kid: libtrust_key_id(&key.public_key_der()),
            user: user.to_owned(),
            password: password.to_owned(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (granted, refused) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let counters = (granted.clone(), refused.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (signer, counters) = (signer.clone(), counters.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let answer = answer(&signer, &req, &counters);
                        async move { Ok::<_, Infallible>(answer) }
                    });
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await
                        .ok();
                });
            }
        });
        Self {
            addr,
            cert: cert_path,
            granted,
            refused,
            task,
        }
    }

    /// The realm URL to configure in the registry.
    pub fn realm(&self) -> String {
        format!("http://{}/token", self.addr)
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn answer<B>(
    signer: &Signer,
    req: &http::Request<B>,
    (granted, refused): &(Arc<AtomicUsize>, Arc<AtomicUsize>),
) -> http::Response<Full<Bytes>> {
    let expected = format!(
        "Basic {}",
        STANDARD.encode(format!("{}:{}", signer.user, signer.password))
    );
    let authorized = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .is_some_and(|v| v.as_bytes() == expected.as_bytes());
    if !authorized {
        refused.fetch_add(1, Ordering::SeqCst);
        return http::Response::builder()
            .status(401)
            .body(Full::new(Bytes::from_static(b"{\"errors\":[]}")))
            .unwrap();
    }
    granted.fetch_add(1, Ordering::SeqCst);
    let query = req.uri().query().unwrap_or("");
    let access: Vec<serde_json::Value> = query
        .split('&')
        .filter_map(|kv| kv.strip_prefix("scope="))
        .map(percent_decode)
        .filter_map(|scope| {
            let mut parts = scope.splitn(3, ':');
            let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
            Some(serde_json::json!({
                "type": kind,
                "name": name,
                "actions": actions.split(',').collect::<Vec<_>>(),
            }))
        })
        .collect();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = serde_json::json!({ "typ": "JWT", "alg": "ES256", "kid": signer.kid });
    let claims = serde_json::json!({
        "iss": TOKEN_ISSUER,
        "sub": signer.user,
        "aud": TOKEN_SERVICE,
        "exp": now + 300,
        "nbf": now - 10,
        "iat": now,
        "jti": format!("{now}-{}", granted.load(Ordering::SeqCst)),
        "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = signer
        .key
        .sign(&ring::rand::SystemRandom::new(), signing_input.as_bytes())
        .unwrap();
    let token = format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signature.as_ref())
    );
    let body = serde_json::json!({ "token": token, "access_token": token, "expires_in": 300 });
    http::Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

/// libtrust's key ID, which distribution uses to find a token's signing key among the
/// `rootcertbundle` certificates: base32 of the first 240 bits of sha256(SPKI DER), in 12 groups
/// of 4 joined by `:`.
fn libtrust_key_id(spki_der: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let hash = ring::digest::digest(&ring::digest::SHA256, spki_der);
    let bits = &hash.as_ref()[..30];
    let mut out = String::new();
    let (mut buffer, mut count) = (0u32, 0);
    for &b in bits {
        buffer = (buffer << 8) | u32::from(b);
        count += 8;
        while count >= 5 {
            count -= 5;
            out.push(ALPHABET[((buffer >> count) & 31) as usize] as char);
        }
    }
    out.as_bytes()
        .chunks(4)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join(":")
}

/// Builds an OCI layout with umoci at `dir`, tagged `tag`, of two layers: the base ships
/// `etc/config` (3 bytes), `usr/bin/app` (5,000) and `var/cache/a` (3,000); the second rewrites
/// `usr/bin/app` (6,000) and deletes `var/cache/a` (a whiteout).
pub fn umoci_image(dir: &Path, tag: &str) -> PathBuf {
    let layout = dir.join("umoci-layout");
    let bundle = dir.join("umoci-bundle");
    let image = format!("{}:{tag}", layout.display());
    run(Command::new("umoci")
        .args(["init", "--layout"])
        .arg(&layout));
    run(Command::new("umoci").args(["new", "--image", &image]));
    run(Command::new("umoci")
        .args(["unpack", "--rootless", "--image", &image])
        .arg(&bundle));
    let rootfs = bundle.join("rootfs");
    for d in ["etc", "usr/bin", "var/cache"] {
        std::fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    std::fs::write(rootfs.join("etc/config"), b"v1\n").unwrap();
    std::fs::write(rootfs.join("usr/bin/app"), pseudo_random(5_000, 1)).unwrap();
    std::fs::write(rootfs.join("var/cache/a"), pseudo_random(3_000, 2)).unwrap();
    let repack = || {
        run(Command::new("umoci")
            .args(["repack", "--refresh-bundle", "--image", &image])
            .arg(&bundle));
    };
    repack();
    std::fs::write(rootfs.join("usr/bin/app"), pseudo_random(6_000, 3)).unwrap();
    std::fs::remove_file(rootfs.join("var/cache/a")).unwrap();
    repack();
    layout
}

fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s as u8
        })
        .collect()
}

/// `skopeo copy` from `src` to `docker://dest` over plain HTTP (`--all` copies every platform).
pub fn skopeo_push(src: &str, dest: &str, all: bool) {
    let mut cmd = Command::new("skopeo");
    cmd.args(["copy", "-q", "--dest-tls-verify=false"]);
    if all {
        cmd.arg("--all");
    }
    run(cmd.arg(src).arg(format!("docker://{dest}")));
}
