//! Real parts for end-to-end tests: Debian's `docker-registry` (distribution) started on a free
//! loopback port with its access log captured, `skopeo` to push and pull, and a small OCI image
//! layout writer so tests need no network and no prebuilt image.
//!
//! When a program is missing, tests skip with a message, unless `STAMPEDE_REQUIRE_REAL=1` (set by
//! `.ci/run`), in which case they fail: CI must never pass by skipping.

use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flate2::write::GzEncoder;
use stampede_oci::Digest;

/// Whether `program` is on PATH; panics when it is not and real parts are required.
pub fn have(program: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        let hint = match program {
            "docker-registry" => "apt-get install docker-registry",
            "skopeo" => "apt-get install skopeo",
            _ => "install it",
        };
        assert!(
            std::env::var("STAMPEDE_REQUIRE_REAL").as_deref() != Ok("1"),
            "{program} is required (STAMPEDE_REQUIRE_REAL=1) but not installed: {hint}"
        );
        eprintln!("SKIPPED: {program} not installed ({hint})");
    }
    found
}

/// A free loopback port (bound then released; the tiny race is acceptable in tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until `url` answers (any HTTP status), or panics after `limit`.
pub fn wait_http(url: &str, limit: Duration) {
    let start = Instant::now();
    while start.elapsed() < limit {
        let ok = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "--max-time", "1", url])
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{url} did not come up within {limit:?}");
}

/// A running `docker-registry serve`, killed on drop.
pub struct Registry {
    child: Child,
    pub port: u16,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Registry {
    /// A plain registry with filesystem storage, or a pull-through proxy of `proxy_of`.
    pub fn start(proxy_of: Option<&str>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let proxy = proxy_of.map_or(String::new(), |url| format!("proxy:\n  remoteurl: {url}\n"));
        let config = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{proxy}",
            dir.path().join("data").display()
        );
        std::fs::write(dir.path().join("config.yml"), config).unwrap();
        let log = dir.path().join("registry.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start docker-registry");
        wait_http(
            &format!("http://127.0.0.1:{port}/v2/"),
            Duration::from_secs(15),
        );
        Self {
            child,
            port,
            log,
            _dir: dir,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Access-log requests with this method whose path contains `needle`.
    pub fn count(&self, method: &str, needle: &str) -> usize {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .filter(|l| l.starts_with("127.0.0.1 - - ["))
            .filter(|l| l.contains(&format!("\"{method} ")) && l.contains(needle))
            .count()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// Runs a command, panicking with its output if it fails.
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

/// What was written into an OCI layout.
pub struct Image {
    pub layers: Vec<Digest>,
    pub config: Digest,
}

/// Writes an OCI image layout at `dir` with `tag` and one gzip layer per entry of `layer_bytes`,
/// each holding one file of pseudo-random content.
pub fn write_layout(dir: &Path, tag: &str, layer_bytes: &[usize], seed: u8) -> Image {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| -> Digest {
        let d = Digest::of(bytes);
        std::fs::write(blobs.join(d.hex()), bytes).unwrap();
        d
    };
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    let mut descriptors = Vec::new();
    for (i, &size) in layer_bytes.iter().enumerate() {
        let mut tar = tar::Builder::new(Vec::new());
        let content = super::data(size, seed.wrapping_add(i as u8));
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_cksum();
        tar.append_data(&mut header, format!("data/layer{i}.bin"), &content[..])
            .unwrap();
        let tar = tar.into_inner().unwrap();
        diff_ids.push(Digest::of(&tar).to_string());
        let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let gz = gz.finish().unwrap();
        let d = put(&gz);
        descriptors.push(format!(
            r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{d}","size":{}}}"#,
            gz.len()
        ));
        layers.push(d);
    }
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{"Cmd":["/bin/sh"]}},"rootfs":{{"type":"layers","diff_ids":[{}]}}}}"#,
        diff_ids
            .iter()
            .map(|d| format!("\"{d}\""))
            .collect::<Vec<_>>()
            .join(",")
    );
    let config_digest = put(config.as_bytes());
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[{}]}}"#,
        config.len(),
        descriptors.join(",")
    );
    let manifest_digest = put(manifest.as_bytes());
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    std::fs::write(
        dir.join("index.json"),
        format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{manifest_digest}","size":{},"annotations":{{"org.opencontainers.image.ref.name":"{tag}"}}}}]}}"#,
            manifest.len()
        ),
    )
    .unwrap();
    Image {
        layers,
        config: config_digest,
    }
}

/// Every file in a `skopeo copy ... dir:` output named by a digest hashes to its name; returns
/// how many were checked.
pub fn verify_dir_pull(dir: &Path) -> usize {
    let mut checked = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Ok(d) = Digest::parse(&format!("sha256:{name}")) {
            let bytes = std::fs::read(entry.path()).unwrap();
            assert_eq!(
                Digest::of(&bytes),
                d,
                "{} does not match its digest",
                entry.path().display()
            );
            checked += 1;
        }
    }
    checked
}
