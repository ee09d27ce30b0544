//! [`LabError`]: why a real part could not be found, started, configured or read. Each variant
//! says what we were doing and carries the cause; a missing program names the Debian package
//! that provides it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

/// Why a lab operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// A program is not on `PATH`.
    #[error("`{program}` is not installed: apt-get install -y {package}")]
    Missing {
        /// The program looked for.
        program: String,
        /// The Debian package that provides it.
        package: &'static str,
    },
    /// Root is needed (network namespaces, `tc`).
    #[error("{what} needs root (network namespaces and tc qdiscs are privileged); run as root")]
    NotRoot {
        /// What needed it.
        what: String,
    },
    /// A program could not be started.
    #[error("start {what}")]
    Spawn {
        /// The program and what it was for.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A short command exited with a failure.
    #[error("{command} failed ({status}): {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status.
        status: ExitStatus,
        /// Its standard error, trimmed.
        stderr: String,
    },
    /// A server exited before it was ready, or while it should have been serving.
    #[error("{what} exited with {status}; see {}", log.display())]
    Exited {
        /// Which server.
        what: String,
        /// Its exit status.
        status: ExitStatus,
        /// Its log.
        log: PathBuf,
    },
    /// A server did not answer in time.
    #[error("{what} did not answer HTTP on {addr} within {waited:?}; see {}", log.display())]
    NotReady {
        /// Which server.
        what: String,
        /// Where it should listen.
        addr: SocketAddr,
        /// How long we waited.
        waited: Duration,
        /// Its log.
        log: PathBuf,
    },
    /// A file operation failed.
    #[error("{what} {}", path.display())]
    Io {
        /// What we were doing (`write nginx config`).
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A socket could not be bound or read.
    #[error("{what}")]
    Socket {
        /// What we were doing.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A fabric was asked for no nodes, or more nodes or services than it takes.
    #[error("a fabric holds 1 to {max} nodes and at most {max_services} services, not {nodes} nodes and {services} services")]
    FabricSize {
        /// Nodes asked for.
        nodes: usize,
        /// Services asked for.
        services: usize,
        /// The most nodes a fabric holds.
        max: usize,
        /// The most services a fabric holds.
        max_services: usize,
    },
    /// Every candidate subnet for a shaped link is already routed on the host.
    #[error("no free 10.231.N.0/24 subnet for a shaped link")]
    NoSubnet,
}

impl LabError {
    /// A `LabError::Io` for `path`, as a closure for `map_err`.
    pub(crate) fn io(
        what: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { what, path, source }
    }
}
