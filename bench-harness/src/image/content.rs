//! What goes inside a synthetic layer: how a layer's bytes are split into file sizes, and the
//! deterministic bytes of each file. Every value is a pure function of the seed, the layer and
//! file index, and the spec, computed with integer arithmetic and IEEE basic operations only (no
//! `ln`/`exp` from the platform's libm, whose last bits differ between machines), so the same
//! inputs give the same bytes on any machine. No I/O: tar, compression and files are
//! `generate.rs`'s.

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2::{Digest as _, Sha256};

use super::spec::FileSizes;

/// Content is made of blocks of this many bytes: the first part of each block is repetitive
/// text, the rest random, in the proportion of the layer's compressibility. 4 KiB keeps the text
/// of consecutive blocks well inside gzip's 32 KiB window, so the text part compresses to almost
/// nothing and the random part not at all.
pub const BLOCK_BYTES: usize = 4096;

/// Sigma of the log-normal file size distribution (the spec's documented value).
const LOGNORMAL_SIGMA: f64 = 1.5;

/// The repetitive text that makes up the compressible part of each block.
const TEXT_LINE: &[u8] =
    b"lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt\n";

/// The 32-byte seed of a ChaCha stream, derived by hashing a domain label and the indices, so
/// that streams for different files (and for sizes vs contents) never overlap.
pub fn stream_seed(domain: &str, seed: u64, layer: usize, file: u64) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(domain.as_bytes());
    h.update([0]);
    h.update(seed.to_le_bytes());
    h.update((layer as u64).to_le_bytes());
    h.update(file.to_le_bytes());
    h.finalize().into()
}

/// File sizes in bytes for one layer: `files` sizes summing exactly to `total_bytes`.
///
/// `Equal` gives every file `total / files` bytes, the remainder spread one byte each over the
/// first files. `Lognormal` draws weights `exp(sigma * z)` with `z` approximately standard normal
/// (Irwin-Hall: the sum of 12 uniforms minus 6) and apportions the total by largest remainder.
///
/// `files` must be at least 1 (the spec's validation guarantees it).
pub fn file_sizes(
    distribution: FileSizes,
    total_bytes: u64,
    files: u32,
    seed: u64,
    layer: usize,
) -> Vec<u64> {
    let n = u64::from(files.max(1));
    match distribution {
        FileSizes::Equal => (0..n)
            .map(|i| total_bytes / n + u64::from(i < total_bytes % n))
            .collect(),
        FileSizes::Lognormal => {
            let mut rng = ChaCha8Rng::from_seed(stream_seed("file-sizes", seed, layer, 0));
            // Integer weights, so the apportioning below is exact and platform-independent.
            let weights: Vec<u64> = (0..n)
                .map(|_| {
                    let z = (0..12).map(|_| unit(&mut rng)).sum::<f64>() - 6.0;
                    // exp(1.5 * 6) ~ 8103, so weights stay below 2^40 and their sum below 2^72
                    // fits a u128 product with any u64 total.
                    (exp(LOGNORMAL_SIGMA * z) * 65536.0) as u64 + 1
                })
                .collect();
            apportion(total_bytes, &weights)
        }
    }
}

/// Splits `total` in proportion to `weights` exactly: floors first, then one more byte each to
/// the largest remainders (ties to the lower index).
fn apportion(total: u64, weights: &[u64]) -> Vec<u64> {
    let sum: u128 = weights.iter().map(|&w| u128::from(w)).sum();
    let mut sizes = Vec::with_capacity(weights.len());
    let mut remainders = Vec::with_capacity(weights.len());
    for (i, &w) in weights.iter().enumerate() {
        let product = u128::from(total) * u128::from(w);
        sizes.push((product / sum) as u64);
        remainders.push((product % sum, i));
    }
    let short = total - sizes.iter().sum::<u64>();
    remainders.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for &(_, i) in remainders.iter().take(short as usize) {
        sizes[i] += 1;
    }
    sizes
}

/// A uniform value in [0, 1) from the top 53 bits of a u64 (exact in f64).
fn unit(rng: &mut ChaCha8Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// `e^x` from basic operations only: a Taylor series on `x / 1024`, then ten squarings.
/// Accurate to a few ulps over the range used here, and bit-identical everywhere.
fn exp(x: f64) -> f64 {
    let y = x / 1024.0;
    let mut term = 1.0;
    let mut sum = 1.0;
    for k in 1..=12 {
        term = term * y / f64::from(k);
        sum += term;
    }
    for _ in 0..10 {
        sum *= sum;
    }
    sum
}

/// The bytes of one file, produced block by block.
pub struct FileContent {
    rng: ChaCha8Rng,
    /// The compressible prefix of every block: tagged text lines.
    text: Box<[u8]>,
    text_bytes: usize,
    remaining_bytes: u64,
    /// One block, generated whole so the random stream never depends on read sizes.
    block: Box<[u8]>,
    block_used: usize,
}

impl std::fmt::Debug for FileContent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileContent")
            .field("text_bytes", &self.text_bytes)
            .field("remaining_bytes", &self.remaining_bytes)
            .finish_non_exhaustive()
    }
}

impl FileContent {
    /// The content of file `file` of layer `layer`: `size_bytes` long, with `compressibility`
    /// (clamped to 0..=1) of each block repetitive text.
    pub fn new(seed: u64, layer: usize, file: u64, size_bytes: u64, compressibility: f64) -> Self {
        let text_bytes = (compressibility.clamp(0.0, 1.0) * BLOCK_BYTES as f64).round() as usize;
        let mut rng = ChaCha8Rng::from_seed(stream_seed("file-content", seed, layer, file));
        let tag = format!("{:016x}", rng.next_u64());
        let text: Box<[u8]> = tag
            .as_bytes()
            .iter()
            .chain(TEXT_LINE)
            .copied()
            .cycle()
            .take(BLOCK_BYTES)
            .collect();
        Self {
            rng,
            text,
            text_bytes,
            remaining_bytes: size_bytes,
            block: vec![0; BLOCK_BYTES].into_boxed_slice(),
            block_used: BLOCK_BYTES,
        }
    }

    /// Bytes not yet produced.
    pub fn remaining_bytes(&self) -> u64 {
        self.remaining_bytes
    }

    /// Fills as much of `buf` as the file has left; returns the count (0 at the end).
    pub fn fill(&mut self, buf: &mut [u8]) -> usize {
        let want = buf
            .len()
            .min(usize::try_from(self.remaining_bytes).unwrap_or(usize::MAX));
        let mut done = 0;
        while done < want {
            if self.block_used == BLOCK_BYTES {
                if want - done >= BLOCK_BYTES {
                    // Whole blocks go straight into the caller's buffer.
                    make_block(
                        &mut self.rng,
                        &self.text[..self.text_bytes],
                        &mut buf[done..done + BLOCK_BYTES],
                    );
                    done += BLOCK_BYTES;
                    continue;
                }
                make_block(
                    &mut self.rng,
                    &self.text[..self.text_bytes],
                    &mut self.block,
                );
                self.block_used = 0;
            }
            let n = (BLOCK_BYTES - self.block_used).min(want - done);
            buf[done..done + n].copy_from_slice(&self.block[self.block_used..self.block_used + n]);
            self.block_used += n;
            done += n;
        }
        self.remaining_bytes -= done as u64;
        done
    }
}

/// One block: `text`, then random bytes to the block's end.
fn make_block(rng: &mut ChaCha8Rng, text: &[u8], dst: &mut [u8]) {
    let (head, random) = dst.split_at_mut(text.len());
    head.copy_from_slice(text);
    rng.fill_bytes(random);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(mut c: FileContent, buf_bytes: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = vec![0; buf_bytes];
        loop {
            let n = c.fill(&mut buf);
            if n == 0 {
                return out;
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    #[test]
    fn equal_sizes_spread_the_remainder() {
        assert_eq!(file_sizes(FileSizes::Equal, 10, 3, 1, 0), vec![4, 3, 3]);
        assert_eq!(file_sizes(FileSizes::Equal, 2, 4, 1, 0), vec![1, 1, 0, 0]);
        assert_eq!(file_sizes(FileSizes::Equal, 9, 1, 1, 0), vec![9]);
    }

    #[test]
    fn lognormal_sizes_sum_exactly_and_vary() {
        for (total, files) in [(64 << 20, 1000), (1_000_003, 7), (5, 10), (0, 3), (1, 1)] {
            let sizes = file_sizes(FileSizes::Lognormal, total, files, 42, 3);
            assert_eq!(sizes.len(), files as usize);
            assert_eq!(sizes.iter().sum::<u64>(), total, "{total} over {files}");
        }
        let sizes = file_sizes(FileSizes::Lognormal, 64 << 20, 1000, 42, 3);
        let max = *sizes.iter().max().unwrap();
        let min = *sizes.iter().min().unwrap();
        assert!(max > 20 * min, "sigma 1.5 spreads sizes: {min}..{max}");
        assert_eq!(
            sizes,
            file_sizes(FileSizes::Lognormal, 64 << 20, 1000, 42, 3)
        );
        assert_ne!(
            sizes,
            file_sizes(FileSizes::Lognormal, 64 << 20, 1000, 43, 3)
        );
    }

    #[test]
    fn exp_matches_libm_closely() {
        for x in [-9.0, -3.3, -1.0, 0.0, 0.5, 1.0, 4.2, 9.0] {
            let (ours, libm) = (exp(x), f64::exp(x));
            assert!(((ours - libm) / libm).abs() < 1e-9, "{x}: {ours} vs {libm}");
        }
    }

    #[test]
    fn content_is_independent_of_read_sizes() {
        let size = 3 * BLOCK_BYTES as u64 + 1234;
        let whole = read_all(FileContent::new(7, 1, 2, size, 0.3), 1 << 20);
        assert_eq!(whole.len() as u64, size);
        for buf in [1, 511, 4096, 5000] {
            assert_eq!(read_all(FileContent::new(7, 1, 2, size, 0.3), buf), whole);
        }
        assert_ne!(read_all(FileContent::new(7, 1, 3, size, 0.3), 4096), whole);
        // The text share of each block is as asked.
        let text = (0.3 * BLOCK_BYTES as f64).round() as usize;
        assert_eq!(&whole[BLOCK_BYTES..BLOCK_BYTES + text], &whole[..text]);
        assert_eq!(&whole[16..16 + TEXT_LINE.len()], TEXT_LINE);
        let other_seed = read_all(FileContent::new(8, 1, 2, size, 1.0), 4096);
        assert_ne!(&other_seed[..text], &whole[..text]);
    }
}
