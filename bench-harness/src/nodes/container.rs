//! The container start model, after an image is unpacked on a node: the application reads a
//! fraction of the image's files (for real, from the node's snapshot), initialises for a fixed
//! time, and turns ready at the first readiness probe after that (kubelet's probe period and
//! initial delay). Init and probe waits are computed, not slept: nothing else depends on them,
//! and sleeping would only stretch the run.
//!
//! Which files: every regular file of the snapshot in sorted path order, taking an evenly spaced
//! subset of `ceil(read_fraction * count)`, so runs and variants are comparable.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::scenario::Readiness;

/// Bytes read per `read` call while reading image files.
const READ_BUFFER_BYTES: usize = 256 * 1024;

/// The files a container reads at start, chosen once per node and image.
#[derive(Debug, Clone, Default)]
pub struct StartFiles {
    /// Absolute paths inside the node's snapshot.
    pub paths: Vec<PathBuf>,
    /// Regular files in the snapshot.
    pub total_files: u64,
}

impl StartFiles {
    /// Lists `rootfs` and picks the files to read. Blocking.
    ///
    /// # Errors
    /// The snapshot cannot be listed.
    pub fn choose(rootfs: &Path, readiness: &Readiness) -> std::io::Result<Self> {
        let mut all = Vec::new();
        let mut stack = vec![rootfs.to_owned()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir)? {
                let entry = entry?;
                let kind = entry.file_type()?;
                if kind.is_dir() {
                    stack.push(entry.path());
                } else if kind.is_file() {
                    all.push(entry.path());
                }
            }
        }
        all.sort();
        let total_files = all.len() as u64;
        // At most one file per file in the snapshot: `all` is not empty when `want` is not 0.
        let want = readiness.files_to_read(total_files);
        let step = total_files as f64 / want as f64;
        let paths = (0..want)
            .map(|i| all[((i as f64 * step) as usize).min(all.len() - 1)].clone())
            .collect();
        Ok(Self { paths, total_files })
    }
}

/// Reads every chosen file to the end and returns the bytes read. Blocking.
///
/// # Errors
/// A file cannot be read.
pub fn read_files(files: &StartFiles) -> std::io::Result<u64> {
    let mut buf = vec![0u8; READ_BUFFER_BYTES];
    let mut total = 0u64;
    for path in &files.paths {
        let mut f = std::fs::File::open(path)?;
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            total += n as u64;
        }
    }
    Ok(total)
}

/// Starts a container at `started` (an offset from `epoch`): reads its files now, then computes
/// when init completes and when the first passing probe comes. Returns the ready offset.
///
/// # Errors
/// Reading the files failed.
pub async fn start(
    files: std::sync::Arc<StartFiles>,
    readiness: &Readiness,
    epoch: Instant,
    started: Duration,
) -> std::io::Result<Duration> {
    tokio::task::spawn_blocking(move || read_files(&files))
        .await
        .map_err(std::io::Error::other)??;
    let init_done = epoch.elapsed() + readiness.init;
    Ok(readiness.ready_offset(started, init_done))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readiness(read_fraction: f64) -> Readiness {
        Readiness {
            read_fraction,
            init: Duration::from_millis(300),
            probe_period: Duration::from_secs(1),
            probe_initial_delay: Duration::ZERO,
        }
    }

    #[test]
    fn chooses_an_even_sorted_subset() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..10 {
            let sub = dir.path().join(format!("d{}", i % 2));
            std::fs::create_dir_all(&sub).unwrap();
            std::fs::write(sub.join(format!("f{i}")), vec![b'x'; i + 1]).unwrap();
        }
        let files = StartFiles::choose(dir.path(), &readiness(0.3)).unwrap();
        assert_eq!(files.total_files, 10);
        assert_eq!(files.paths.len(), 3);
        let mut sorted = files.paths.clone();
        sorted.sort();
        assert_eq!(sorted, files.paths);
        assert_eq!(
            StartFiles::choose(dir.path(), &readiness(0.0))
                .unwrap()
                .paths
                .len(),
            0
        );
        let all = StartFiles::choose(dir.path(), &readiness(1.0)).unwrap();
        assert_eq!(read_files(&all).unwrap(), (1..=10).sum::<u64>());
    }

    #[tokio::test]
    async fn ready_at_the_first_probe_after_init() {
        let dir = tempfile::tempdir().unwrap();
        let files = std::sync::Arc::new(StartFiles::choose(dir.path(), &readiness(0.5)).unwrap());
        let epoch = Instant::now();
        let ready = start(files, &readiness(0.5), epoch, Duration::ZERO)
            .await
            .unwrap();
        // Init takes 300 ms; the probe at 0 s fails, the one at 1 s passes.
        assert_eq!(ready, Duration::from_secs(1));
    }
}
