//! What every named network namespace the lab makes shares: running code inside one from this
//! process, deleting one with whatever still runs in it, and sweeping the ones a dead process
//! left behind. [`crate::netns`] (one shaped link to the host) and [`crate::fabric`] (many nodes
//! on a bridge) build on it; this file creates no namespace itself.
//!
//! Code runs inside a namespace on a short-lived thread: `setns` changes only the calling
//! thread, and the thread ends with the closure, so no other code of this process ever runs in
//! the wrong namespace. A socket keeps the namespace it was created in, so a listener bound or a
//! socket created there serves or connects from inside it for its whole life, from any thread.
//! Files under `/proc/thread-self/net/` (`dev`, the kernel's per-interface byte counters) read on
//! that thread describe the namespace entered.
//!
//! Names the lab gives its namespaces are `<prefix><pid>-<rest>`: the owning process is known
//! from the name, and a namespace whose owner is gone is removed by the next create with that
//! prefix.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::error::LabError;
use crate::process::{kill, run};

/// Runs `f` on a fresh thread that has entered network namespace `netns` (a name under
/// `/run/netns`, as `ip netns add` makes), and returns its result. `what` says what `f` does, for
/// the error (`bind 10.232.0.1:0`).
///
/// # Errors
/// [`LabError::Socket`] when the namespace cannot be opened or entered, or `f` fails.
pub fn within<T: Send>(
    netns: &str,
    what: &str,
    f: impl FnOnce() -> std::io::Result<T> + Send,
) -> Result<T, LabError> {
    within_at(&Path::new("/run/netns").join(netns), netns, what, f)
}

/// [`within`] for a namespace bound at any `path` (one the lab did not name under
/// `/run/netns`, such as the Kubernetes test bed's); `label` names it in errors.
///
/// # Errors
/// [`LabError::Socket`] when the namespace cannot be opened or entered, or `f` fails.
pub fn within_at<T: Send>(
    path: &Path,
    label: &str,
    what: &str,
    f: impl FnOnce() -> std::io::Result<T> + Send,
) -> Result<T, LabError> {
    let fail = |source: std::io::Error| LabError::Socket {
        what: format!("{what} in namespace {label}"),
        source,
    };
    std::thread::scope(|s| {
        s.spawn(|| {
            enter_at(path, label)?;
            // This thread ends with `f`; its namespace change dies with it.
            f().map_err(fail)
        })
        .join()
        .unwrap_or_else(|_| Err(fail(std::io::Error::other("the namespace thread panicked"))))
    })
}

/// Moves the calling thread into network namespace `netns` for the rest of its life. Only for
/// a thread made for that namespace ([`within`]'s, or one that drives a node's runtime): code
/// that runs on a thread later reused elsewhere must not call it.
///
/// # Errors
/// [`LabError::Socket`] when the namespace cannot be opened or entered.
pub fn enter(netns: &str) -> Result<(), LabError> {
    enter_at(&Path::new("/run/netns").join(netns), netns)
}

fn enter_at(path: &Path, label: &str) -> Result<(), LabError> {
    let ns = std::fs::File::open(path).map_err(|source| LabError::Socket {
        what: format!("open {}", path.display()),
        source,
    })?;
    rustix::thread::move_into_link_name_space(
        std::os::fd::AsFd::as_fd(&ns),
        Some(rustix::thread::LinkNameSpaceType::Network),
    )
    .map_err(|e| LabError::Socket {
        what: format!("enter namespace {label}"),
        source: e.into(),
    })
}

/// Kills every process inside `name` (SIGKILL, by the PIDs `ip netns pids` lists) and deletes
/// the namespace, and with it its interfaces and qdiscs. A namespace that does not exist is no
/// error: deletion is best effort and runs from `Drop`.
pub fn delete(name: &str) {
    if let Ok(pids) = run("ip", &["netns", "pids", name]) {
        for pid in pids
            .split_whitespace()
            .filter_map(|p| p.parse::<u32>().ok())
        {
            kill(pid);
        }
    }
    Command::new("ip")
        .args(["netns", "del", name])
        .stderr(Stdio::null())
        .status()
        .ok();
}

/// The PID in a name `<prefix><pid>-...`; `None` for names without `prefix` or a number.
pub(crate) fn owner(name: &str, prefix: &str) -> Option<u32> {
    name.strip_prefix(prefix)?.split('-').next()?.parse().ok()
}

/// Deletes the `<prefix><pid>-...` namespaces whose process is gone.
pub fn sweep_stale(prefix: &str) {
    let Ok(list) = run("ip", &["netns", "list"]) else {
        return;
    };
    for line in list.lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        if let Some(pid) = owner(name, prefix) {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                tracing::warn!(
                    namespace = name,
                    "removing a namespace left by a dead process"
                );
                delete(name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_is_the_pid_after_the_prefix() {
        assert_eq!(owner("stampede-up-123-0", "stampede-up-"), Some(123));
        assert_eq!(owner("stampede-fab-77-2-hub", "stampede-fab-"), Some(77));
        assert_eq!(owner("stampede-fab-77-2-hub", "stampede-up-"), None);
        assert_eq!(owner("stampede-up-x-0", "stampede-up-"), None);
    }

    #[test]
    fn a_missing_namespace_is_a_clear_error() {
        let err = within("stampede-no-such-namespace", "bind", || Ok(())).unwrap_err();
        assert!(
            err.to_string()
                .contains("open /run/netns/stampede-no-such-namespace"),
            "{err}"
        );
    }
}
