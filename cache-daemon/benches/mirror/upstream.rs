//! The origin: Debian's `docker-registry` (distribution 2.8) serving the test blobs from one
//! filesystem store, started once on the host's loopback (unshaped) and once inside the shaped
//! namespace, through `stampede_lab`. Upstream requests are counted from its access log, from a
//! byte offset taken before each measurement.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use stampede_lab::{
    access_log, AccessLog, DockerRegistry, RegistryConfig, RequestKind, ShapedLink,
};
use stampede_oci::Digest;

/// Bound on waiting for the log to go quiet (distribution's proxy finishes background fills
/// after its clients).
const LOG_QUIET_LIMIT: Duration = Duration::from_secs(60);

/// A running origin registry.
#[derive(Debug)]
pub struct Origin {
    registry: DockerRegistry,
    /// Where it listens.
    pub addr: SocketAddr,
    log: AccessLog,
}

impl Origin {
    /// Starts `docker-registry serve` on `addr` over the store at `data`, inside `link`'s
    /// namespace when given.
    ///
    /// # Errors
    /// It does not start or answer within 20 s.
    pub fn start(
        dir: &Path,
        data: &Path,
        addr: SocketAddr,
        link: Option<&ShapedLink>,
    ) -> anyhow::Result<Self> {
        let registry = tokio::task::block_in_place(|| {
            DockerRegistry::start(dir, &RegistryConfig::plain(addr, data), link)
        })?;
        let log = registry.access_log();
        Ok(Self {
            registry,
            addr,
            log,
        })
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.registry.pid()
    }

    /// `http://addr`.
    pub fn url(&self) -> String {
        self.registry.url()
    }

    /// Current length of the access log; pass it to [`Origin::count_since`].
    pub fn log_offset(&self) -> u64 {
        self.log.offset()
    }

    /// Waits (bounded) until the log has not grown for a while.
    pub fn wait_quiet(&self) {
        tokio::task::block_in_place(|| self.log.wait_quiet(access_log::QUIET, LOG_QUIET_LIMIT));
    }

    /// Access-log requests since `offset` with `method` (`GET`, `HEAD`) of blob `digest`.
    pub fn count_since(&self, offset: u64, method: &str, digest: &Digest) -> usize {
        let kind = match method {
            "HEAD" => RequestKind::BlobHead,
            _ => RequestKind::BlobGet,
        };
        let digest = digest.to_string();
        self.log
            .since(offset)
            .iter()
            .filter(|e| e.kind() == kind && access_log::blob_digest(&e.path) == Some(&digest))
            .count()
    }

    /// Stops it.
    pub fn stop(self) {
        self.registry.stop();
    }
}
