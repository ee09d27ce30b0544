//! Finding the programs the lab runs, and saying which Debian package to install when one is
//! missing. Programs are looked up on this process's `PATH` once per start and then run by their
//! full path, so a caller that narrows `PATH` (a test simulating a machine without nginx) sees
//! exactly what that machine would.

use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;

use crate::error::LabError;

/// The Debian package that ships `program` (`"nginx"` for nginx, `"iproute2"` for `ip` and
/// `tc`); the program's own name when we know of no other.
pub fn debian_package(program: &str) -> &'static str {
    match program {
        "docker-registry" => "docker-registry",
        "nginx" => "nginx",
        "skopeo" => "skopeo",
        "umoci" => "umoci",
        "containerd" | "ctr" | "containerd-shim-runc-v2" => "containerd",
        "podman" => "podman",
        "ip" | "tc" => "iproute2",
        "curl" => "curl",
        "wrk" => "wrk",
        "runc" => "runc",
        "systemd-analyze" => "systemd",
        "chromium" => "chromium",
        "busybox" => "busybox",
        _ => "the package that provides it",
    }
}

/// The full path of `program` on `PATH`.
///
/// # Errors
/// [`LabError::Missing`] naming the package to install.
pub fn find(program: &str) -> Result<PathBuf, LabError> {
    let missing = || LabError::Missing {
        program: program.to_owned(),
        package: debian_package(program),
    };
    let path = std::env::var_os("PATH").ok_or_else(missing)?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .ok_or_else(missing)
}

/// Whether this process runs as root (effective user id 0).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Fails with [`LabError::NotRoot`] unless root, naming `what` needed it.
///
/// # Errors
/// Not root.
pub fn require_root(what: &str) -> Result<(), LabError> {
    if is_root() {
        Ok(())
    } else {
        Err(LabError::NotRoot {
            what: what.to_owned(),
        })
    }
}

/// Whether a test that needs real parts must fail rather than skip when they are missing:
/// `STAMPEDE_REQUIRE_REAL=1` (set by `.ci/run`).
pub fn real_parts_required() -> bool {
    std::env::var("STAMPEDE_REQUIRE_REAL").as_deref() == Ok("1")
}

/// For tests: whether `program` is on `PATH`. When it is not, the test skips (false, with a
/// message naming the package), or panics when [`real_parts_required`].
pub fn have_or_skip(program: &str) -> bool {
    match find(program) {
        Ok(_) => true,
        Err(missing) => {
            assert!(
                !real_parts_required(),
                "{program} is required (STAMPEDE_REQUIRE_REAL=1): {missing}"
            );
            eprintln!("SKIPPED: {missing}");
            false
        }
    }
}

/// For tests: whether this process is root; `why` says what needs it. When not, the test
/// skips, or panics when [`real_parts_required`].
pub fn root_or_skip(why: &str) -> bool {
    if is_root() {
        return true;
    }
    assert!(
        !real_parts_required(),
        "root is required (STAMPEDE_REQUIRE_REAL=1): {why}"
    );
    eprintln!("SKIPPED: {why} needs root");
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_program_names_its_package() {
        for (program, package) in [
            ("nginx", "nginx"),
            ("docker-registry", "docker-registry"),
            ("ctr", "containerd"),
            ("tc", "iproute2"),
        ] {
            assert_eq!(debian_package(program), package);
        }
        let err = find("stampede-no-such-program").unwrap_err();
        assert_eq!(
            err.to_string(),
            "`stampede-no-such-program` is not installed: apt-get install -y the package that provides it"
        );
    }

    #[test]
    fn finds_a_program_every_machine_has() {
        let sh = find("sh").unwrap();
        assert!(sh.is_absolute(), "{}", sh.display());
    }
}
