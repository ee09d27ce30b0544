//! The origin: Debian's `docker-registry` (distribution 2.8) serving the test blobs from one
//! filesystem store, started once on the host's loopback (unshaped) and once inside the shaped
//! namespace, through `stampede_lab`.

use std::net::SocketAddr;
use std::path::Path;

use stampede_lab::{DockerRegistry, RegistryConfig, ShapedLink};

/// A running origin registry.
#[derive(Debug)]
pub struct Origin {
    registry: DockerRegistry,
    /// Where it listens.
    pub addr: SocketAddr,
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
        Ok(Self { registry, addr })
    }

    /// `http://addr`.
    pub fn url(&self) -> String {
        self.registry.url()
    }

    /// Stops it.
    pub fn stop(self) {
        self.registry.stop();
    }
}
