//! Unpack benchmark: our streaming unpack against GNU tar on the same layer, side by side in
//! one run. Generates a deterministic layer of many files (random and text-like content),
//! compresses it to `.tar.gz` and `.tar.zst`, then for several repetitions runs, in rotating
//! order, our `unpack_layer_file` (with and without its decoder thread) and `tar -xzf`,
//! `zstd -dc | tar -x` and `tar -xf` on the matching blob. Each run goes into a fresh empty
//! directory on the same filesystem, after a `sync` so that no run pays for the previous
//! run's writeback. Prints medians, throughput of the uncompressed stream, CPU time, the
//! ratios, the machine, and the peak RSS of this process during the timed runs.
//!
//! Output trees are only removed at the end (the work dir is a temp dir): on ext4 without a
//! journal, creating inodes is slow for a minute after many deletions (the allocator skips
//! recently deleted inodes one by one), which would otherwise dominate both sides. For the
//! same reason, leave a minute between runs. Disk needed: about `8 x (REPS + 1) x MIB` MiB.
//!
//! Run: `cargo bench -p bench-harness --bench unpack`. Knobs (environment):
//! `UNPACK_BENCH_MIB` (layer size, default 100), `UNPACK_BENCH_REPS` (default 7),
//! `UNPACK_BENCH_LAYER` (an existing plain tar to use instead of the generated layer).

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bench_harness::unpack::{
    unpack_layer_file, Compression, DecodeThread, LayerStats, UnpackOptions,
};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

const MIB: u64 = 1024 * 1024;
const SEED: u64 = 0x5eed_2024;
/// Large files (shared-library-like) in the layer, each this size.
const LARGE_FILES: usize = 5;
const LARGE_FILE_BYTES: usize = 4 * MIB as usize;
/// The other files are log-uniform between these sizes.
const SMALL_MIN_BYTES: f64 = 256.0;
const SMALL_MAX_BYTES: f64 = 256.0 * 1024.0;
const DIRS: usize = 64;

fn main() -> io::Result<()> {
    let layer_mib = env_u64("UNPACK_BENCH_MIB", 100);
    let reps = env_u64("UNPACK_BENCH_REPS", 7) as usize;
    let work = tempfile::Builder::new()
        .prefix("stampede-unpack-bench")
        .tempdir()?;
    let target_tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let same_fs = fs::metadata(work.path())?.dev() == fs::metadata(target_tmp)?.dev();

    println!("# Unpack benchmark");
    print_machine();
    println!(
        "work dir {} (same filesystem as {}: {same_fs}); blobs and every output dir live in it",
        work.path().display(),
        target_tmp.display()
    );

    let generated = Instant::now();
    let tar = match std::env::var_os("UNPACK_BENCH_LAYER") {
        Some(given) => PathBuf::from(given),
        None => {
            let tar = work.path().join("layer.tar");
            generate_layer(&tar, layer_mib * MIB)?;
            tar
        }
    };
    let layer = shape_of(&tar)?;
    let gz = work.path().join("layer.tar.gz");
    let zst = work.path().join("layer.tar.zst");
    compress_gzip(&tar, &gz)?;
    compress_zstd(&tar, &zst)?;
    let tar_bytes = fs::metadata(&tar)?.len();
    println!(
        "layer {}: {} files, {} dirs, {} symlinks, {} hard links; tar {:.1} MiB, gzip -6 {:.1} \
         MiB, zstd -3 {:.1} MiB (prepared in {:.1?})",
        tar.display(),
        layer.files,
        layer.dirs,
        layer.symlinks,
        layer.hard_links,
        tar_bytes as f64 / MIB as f64,
        fs::metadata(&gz)?.len() as f64 / MIB as f64,
        fs::metadata(&zst)?.len() as f64 / MIB as f64,
        generated.elapsed()
    );
    println!("loadavg before: {}", read_trimmed("/proc/loadavg"));

    let pairs = [
        Pair {
            label: "gzip",
            blob: &gz,
            compression: Compression::Gzip,
            theirs_label: "tar -xzf",
            theirs: &|blob, dir| sh(&format!("tar -xzf {} -C {}", q(blob), q(dir))),
        },
        Pair {
            label: "zstd",
            blob: &zst,
            compression: Compression::Zstd,
            theirs_label: "zstd -dc | tar -x",
            theirs: &|blob, dir| sh(&format!("zstd -qdc {} | tar -x -C {}", q(blob), q(dir))),
        },
        Pair {
            label: "none",
            blob: &tar,
            compression: Compression::None,
            theirs_label: "tar -xf",
            theirs: &|blob, dir| sh(&format!("tar -xf {} -C {}", q(blob), q(dir))),
        },
    ];

    // Check once that both sides produce the same tree before timing anything.
    check_same_trees(&pairs, work.path())?;

    reset_peak_rss();
    let rows = measure(&pairs, reps, work.path())?;
    let peak_rss_kib = stampede_lab::process::status_kib(std::process::id(), "VmHWM").unwrap_or(0);

    print_table(&rows, reps, tar_bytes, peak_rss_kib);
    println!("loadavg after: {}", read_trimmed("/proc/loadavg"));
    Ok(())
}

/// Fails unless our unpacker and the system's tar produce the same tree from every layer.
fn check_same_trees(pairs: &[Pair<'_>], work: &Path) -> io::Result<()> {
    for pair in pairs {
        let ours = work.join(format!("check-{}-ours", pair.label));
        let theirs = work.join(format!("check-{}-theirs", pair.label));
        fs::create_dir(&ours)?;
        fs::create_dir(&theirs)?;
        unpack_layer_file(
            pair.blob,
            pair.compression,
            &ours,
            &UnpackOptions::default(),
        )
        .map_err(io::Error::other)?;
        (pair.theirs)(pair.blob, &theirs)?;
        let (a, b) = (summarize(&ours)?, summarize(&theirs)?);
        assert_eq!(a, b, "{}: our tree differs from tar's", pair.label);
    }
    Ok(())
}

/// Times every (layer, unpacker) combination `reps` times; the medians, one row each.
fn measure(pairs: &[Pair<'_>], reps: usize, work: &Path) -> io::Result<Vec<Row>> {
    // Every (layer, unpacker) combination runs once per repetition, in an order rotated each
    // time, so that load from elsewhere drifting during the run hits all of them alike.
    let mut runs: Vec<(&Pair<'_>, Side)> = Vec::new();
    for pair in pairs {
        runs.push((
            pair,
            Side::Ours {
                decode_thread: true,
            },
        ));
        if pair.compression != Compression::None {
            runs.push((
                pair,
                Side::Ours {
                    decode_thread: false,
                },
            ));
        }
        runs.push((pair, Side::Theirs));
    }
    let mut samples: Vec<Vec<Sample>> = runs.iter().map(|_| Vec::new()).collect();
    for rep in 0..reps {
        for k in 0..runs.len() {
            let i = (rep * 3 + k) % runs.len();
            let (pair, side) = runs[i];
            let dir = work.join(format!("out-{rep}-{i}"));
            fs::create_dir(&dir)?;
            sync()?;
            let cpu = CpuTime::now();
            let started = Instant::now();
            let sample = match side {
                Side::Ours { decode_thread } => {
                    let opts = UnpackOptions {
                        decode_thread: if decode_thread {
                            DecodeThread::Always
                        } else {
                            DecodeThread::Never
                        },
                        ..UnpackOptions::default()
                    };
                    let stats = unpack_layer_file(pair.blob, pair.compression, &dir, &opts)
                        .map_err(io::Error::other)?;
                    Sample {
                        wall: started.elapsed(),
                        cpu: CpuTime::now().own_since(&cpu),
                        stats: Some(stats),
                    }
                }
                Side::Theirs => {
                    (pair.theirs)(pair.blob, &dir)?;
                    Sample {
                        wall: started.elapsed(),
                        cpu: CpuTime::now().children_since(&cpu),
                        stats: None,
                    }
                }
            };
            samples[i].push(sample);
        }
    }
    let rows: Vec<Row> = runs
        .iter()
        .zip(samples)
        .map(|((pair, side), samples)| Row::new(pair, *side, samples))
        .collect();
    Ok(rows)
}

/// Prints the medians as a Markdown table, with how to read it.
fn print_table(rows: &[Row], reps: usize, tar_bytes: u64, peak_rss_kib: u64) {
    println!();
    println!("{reps} repetitions of every combination, in rotating order:");
    println!();
    println!("| layer | unpacker | wall | MiB/s | CPU | decompress / apply | speedup vs tar |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for row in rows {
        let theirs = rows
            .iter()
            .find(|r| r.layer == row.layer && r.side == Side::Theirs)
            .map_or(row.wall, |r| r.wall);
        let split = row.split.map_or("".into(), |(decompress, apply)| {
            format!("{:.0} / {:.0} ms", ms(decompress), ms(apply))
        });
        println!(
            "| {} | {} | {:.0} ms | {:.0} | {:.0} ms | {} | {:.2}x |",
            row.layer,
            row.unpacker,
            ms(row.wall),
            mib_per_s(tar_bytes, row.wall),
            ms(row.cpu),
            split,
            theirs.as_secs_f64() / row.wall.as_secs_f64(),
        );
    }
    println!();
    println!(
        "Medians. MiB/s: uncompressed tar stream per wall second. CPU: user + system \
         time (ours: this process, all threads; theirs: the shell and all it waited for), 10 ms \
         ticks. decompress / apply: as reported in LayerStats (they overlap with a decoder \
         thread)."
    );
    println!();
    println!(
        "peak RSS of the bench process during the timed runs: {:.1} MiB (layer {:.0} MiB uncompressed)",
        peak_rss_kib as f64 / 1024.0,
        tar_bytes as f64 / MIB as f64
    );
}

/// Who unpacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Ours { decode_thread: bool },
    Theirs,
}

/// One timed unpack.
struct Sample {
    wall: Duration,
    cpu: Duration,
    stats: Option<LayerStats>,
}

/// Medians of one side on one layer.
struct Row {
    layer: &'static str,
    side: Side,
    unpacker: String,
    wall: Duration,
    cpu: Duration,
    /// Median decompress and apply times from [`LayerStats`] (ours only).
    split: Option<(Duration, Duration)>,
}

impl Row {
    fn new(pair: &Pair<'_>, side: Side, samples: Vec<Sample>) -> Self {
        let unpacker = match side {
            Side::Ours {
                decode_thread: true,
            } if pair.compression != Compression::None => "ours, decoder thread".to_owned(),
            Side::Ours { .. } => "ours, one thread".to_owned(),
            Side::Theirs => format!("`{}`", pair.theirs_label),
        };
        let stats: Vec<LayerStats> = samples.iter().filter_map(|s| s.stats.clone()).collect();
        Self {
            layer: pair.label,
            side,
            unpacker,
            wall: median(&mut samples.iter().map(|s| s.wall).collect::<Vec<_>>()),
            cpu: median(&mut samples.iter().map(|s| s.cpu).collect::<Vec<_>>()),
            split: (!stats.is_empty()).then(|| split(&stats)),
        }
    }
}

/// CPU time of this process and of its waited-for children (`stampede_lab`).
struct CpuTime(stampede_lab::process::CpuTimes);

impl CpuTime {
    fn now() -> Self {
        Self(stampede_lab::process::cpu_times(std::process::id()).unwrap_or_default())
    }

    fn own_since(&self, earlier: &Self) -> Duration {
        self.0.own.saturating_sub(earlier.0.own)
    }

    fn children_since(&self, earlier: &Self) -> Duration {
        self.0.children.saturating_sub(earlier.0.children)
    }
}

/// One comparison: our unpack of `blob` against an external command doing the same.
struct Pair<'a> {
    label: &'static str,
    blob: &'a Path,
    compression: Compression,
    theirs_label: &'static str,
    theirs: &'a dyn Fn(&Path, &Path) -> io::Result<()>,
}

#[derive(Debug, Default)]
struct LayerShape {
    files: usize,
    dirs: usize,
    symlinks: usize,
    hard_links: usize,
}

/// Counts the members of the tar at `path` by kind, streaming.
fn shape_of(path: &Path) -> io::Result<LayerShape> {
    let mut shape = LayerShape::default();
    let mut archive = tar::Archive::new(io::BufReader::new(File::open(path)?));
    for entry in archive.entries()? {
        match entry?.header().entry_type() {
            tar::EntryType::Directory => shape.dirs += 1,
            tar::EntryType::Symlink => shape.symlinks += 1,
            tar::EntryType::Link => shape.hard_links += 1,
            tar::EntryType::Regular | tar::EntryType::Continuous => shape.files += 1,
            _ => {}
        }
    }
    Ok(shape)
}

/// Writes a deterministic tar of about `target_bytes` of file data to `path`, streaming.
fn generate_layer(path: &Path, target_bytes: u64) -> io::Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let words: Vec<Vec<u8>> = (0..512)
        .map(|_| {
            let len = rng.random_range(2..11);
            (0..len).map(|_| rng.random_range(b'a'..=b'z')).collect()
        })
        .collect();
    let mut builder =
        tar::Builder::new(BufWriter::with_capacity(MIB as usize, File::create(path)?));
    let header = |kind: tar::EntryType, size: u64, mode: u32| {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(mode);
        h.set_mtime(1_700_000_000);
        h
    };
    for d in 0..DIRS {
        let mut h = header(tar::EntryType::Directory, 0, 0o755);
        builder.append_data(&mut h, format!("usr/share/d{d:02}/"), io::empty())?;
    }
    let mut data = Vec::with_capacity(LARGE_FILE_BYTES);
    let mut written = 0u64;
    let mut index = 0usize;
    while written < target_bytes {
        let size = if index < LARGE_FILES {
            LARGE_FILE_BYTES
        } else {
            let log = rng.random_range(SMALL_MIN_BYTES.ln()..SMALL_MAX_BYTES.ln());
            log.exp() as usize
        };
        data.clear();
        // A third of the files (and the first large one) are incompressible, like already
        // compressed assets; the rest are text-like and compress about 3x with gzip.
        if index == 0 || (index >= LARGE_FILES && rng.random_ratio(1, 3)) {
            data.resize(size, 0);
            rng.fill_bytes(&mut data);
        } else {
            while data.len() < size {
                data.extend_from_slice(&words[rng.random_range(0..words.len())]);
                data.push(if rng.random_ratio(1, 12) { b'\n' } else { b' ' });
            }
            data.truncate(size);
        }
        let mode = if index.is_multiple_of(7) {
            0o755
        } else {
            0o644
        };
        let name = format!("usr/share/d{:02}/f{index:05}.dat", index % DIRS);
        let mut h = header(tar::EntryType::Regular, size as u64, mode);
        builder.append_data(&mut h, &name, data.as_slice())?;
        written += size as u64;
        if index.is_multiple_of(50) {
            let mut h = header(tar::EntryType::Symlink, 0, 0o777);
            builder.append_link(
                &mut h,
                format!("usr/share/d{:02}/link{index:05}", index % DIRS),
                format!("f{index:05}.dat"),
            )?;
            let mut h = header(tar::EntryType::Link, 0, 0o644);
            builder.append_link(
                &mut h,
                format!("usr/share/d{:02}/hard{index:05}", index % DIRS),
                &name,
            )?;
        }
        index += 1;
    }
    builder.into_inner()?.flush()
}

fn compress_gzip(from: &Path, to: &Path) -> io::Result<()> {
    let mut encoder = flate2::write::GzEncoder::new(
        BufWriter::with_capacity(MIB as usize, File::create(to)?),
        flate2::Compression::default(),
    );
    io::copy(&mut File::open(from)?, &mut encoder)?;
    encoder.finish()?.flush()
}

fn compress_zstd(from: &Path, to: &Path) -> io::Result<()> {
    let out = BufWriter::with_capacity(MIB as usize, File::create(to)?);
    let mut encoder = zstd::stream::write::Encoder::new(out, 3)?;
    io::copy(&mut File::open(from)?, &mut encoder)?;
    encoder.finish()?.flush()
}

/// Files, directories, symlinks and total file bytes under `dir`: enough to tell two trees
/// apart cheaply.
fn summarize(dir: &Path) -> io::Result<(u64, u64, u64, u64)> {
    let (mut files, mut dirs, mut links, mut bytes) = (0, 0, 0, 0);
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in fs::read_dir(&d)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                dirs += 1;
                pending.push(entry.path());
            } else if kind.is_symlink() {
                links += 1;
            } else {
                files += 1;
                bytes += entry.metadata()?.len();
            }
        }
    }
    Ok((files, dirs, links, bytes))
}

fn sh(script: &str) -> io::Result<()> {
    let status = Command::new("sh").arg("-c").arg(script).status()?;
    if status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!("`{script}` failed: {status}")))
    }
}

/// Single-quotes a path for `sh -c`.
fn q(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

fn sync() -> io::Result<()> {
    sh("sync")
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// Median decompress and apply times of our runs.
fn split(stats: &[LayerStats]) -> (Duration, Duration) {
    let mut decompress: Vec<_> = stats.iter().map(|s| s.decompress).collect();
    let mut apply: Vec<_> = stats.iter().map(|s| s.apply).collect();
    (median(&mut decompress), median(&mut apply))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn mib_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / MIB as f64 / d.as_secs_f64()
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn read_trimmed(path: &str) -> String {
    fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// Resets `VmHWM` to the current RSS (Linux `clear_refs` value 5), so the peak read later is
/// the peak of the timed runs alone, not of generating and compressing the layer.
fn reset_peak_rss() {
    if fs::write("/proc/self/clear_refs", "5").is_err() {
        println!("(could not reset VmHWM: peak RSS includes layer generation)");
    }
}

fn print_machine() {
    let machine = stampede_lab::Machine::collect(Path::new(env!("CARGO_MANIFEST_DIR")));
    let version = |cmd: &str| {
        Command::new("sh")
            .arg("-c")
            .arg(format!("{cmd} 2>&1 | head -1"))
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    };
    println!(
        "machine: {}, {} cores, {:.0} GiB, kernel {}; {}; {}; date {}",
        machine.cpu_model.as_deref().unwrap_or("unknown"),
        machine.cores,
        machine.memory_bytes.unwrap_or(0) as f64 / f64::from(1u32 << 30),
        machine.kernel.as_deref().unwrap_or("unknown"),
        version("tar --version"),
        version("zstd --version"),
        version("date -u +%Y-%m-%dT%H:%MZ"),
    );
}
