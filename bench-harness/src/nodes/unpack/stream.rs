//! The uncompressed tar stream of one layer blob: a large read buffer around the blob, the
//! decoder for its compression, and counters for compressed bytes, uncompressed bytes and the
//! time spent inside the decoder.
//!
//! Knows nothing of tar or of the filesystem under the root. Memory is bounded by the read
//! buffer and the decoder's window (gzip 32 KiB; zstd up to 128 MiB for frames that ask for
//! it, the decoder's default limit), never by the size of the layer.

use std::io::{self, BufReader, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flate2::bufread::MultiGzDecoder;
use stampede_oci::Compression;

/// A reader that counts the bytes it hands out where the stream can read them.
#[derive(Debug)]
struct Counted<R> {
    inner: R,
    bytes: Arc<AtomicU64>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// The uncompressed tar stream of a layer, with its counters.
pub(crate) struct LayerStream<'r> {
    /// The decoder for the blob's compression over the buffered, counted blob.
    decoder: Box<dyn Read + Send + 'r>,
    compressed_bytes: Arc<AtomicU64>,
    uncompressed_bytes: u64,
    decompress: Duration,
}

impl<'r> LayerStream<'r> {
    /// Wraps `blob` (compressed as `compression`) behind a read buffer of `buffer_bytes`.
    ///
    /// # Errors
    /// The zstd decoder cannot be created (allocation failure in libzstd).
    pub(crate) fn new<R: Read + Send + 'r>(
        blob: R,
        compression: Compression,
        buffer_bytes: usize,
    ) -> io::Result<Self> {
        let compressed_bytes = Arc::new(AtomicU64::new(0));
        let buffered = BufReader::with_capacity(
            buffer_bytes.max(8 * 1024),
            Counted {
                inner: blob,
                bytes: Arc::clone(&compressed_bytes),
            },
        );
        let decoder: Box<dyn Read + Send + 'r> = match compression {
            Compression::None => Box::new(buffered),
            Compression::Gzip => Box::new(MultiGzDecoder::new(buffered)),
            Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(buffered)?),
        };
        Ok(Self {
            decoder,
            compressed_bytes,
            uncompressed_bytes: 0,
            decompress: Duration::ZERO,
        })
    }

    /// Bytes read from the blob so far (compressed).
    pub(crate) fn compressed_bytes(&self) -> u64 {
        self.compressed_bytes.load(Ordering::Relaxed)
    }

    /// Bytes of tar stream produced so far (uncompressed).
    pub(crate) fn uncompressed_bytes(&self) -> u64 {
        self.uncompressed_bytes
    }

    /// Time spent inside the decoder (including reading the blob) so far.
    pub(crate) fn decompress(&self) -> Duration {
        self.decompress
    }
}

impl Read for LayerStream<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let started = Instant::now();
        let result = self.decoder.read(buf);
        self.decompress += started.elapsed();
        if let Ok(n) = result {
            self.uncompressed_bytes += n as u64;
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn every_compression_yields_the_same_bytes_and_counts_them() {
        let plain: Vec<u8> = (0..300_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&plain).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::encode_all(plain.as_slice(), 3).unwrap();
        for (compression, blob) in [
            (Compression::None, plain.clone()),
            (Compression::Gzip, gz),
            (Compression::Zstd, zst),
        ] {
            let mut stream = LayerStream::new(blob.as_slice(), compression, 64 * 1024).unwrap();
            let mut out = Vec::new();
            stream.read_to_end(&mut out).unwrap();
            assert!(out == plain, "{compression:?}");
            assert_eq!(stream.uncompressed_bytes(), plain.len() as u64);
            assert_eq!(
                stream.compressed_bytes(),
                blob.len() as u64,
                "{compression:?}"
            );
        }
    }

    #[test]
    fn truncated_gzip_is_an_error() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&[7u8; 100_000]).unwrap();
        let gz = gz.finish().unwrap();
        let mut stream =
            LayerStream::new(&gz[..gz.len() - 6], Compression::Gzip, 64 * 1024).unwrap();
        assert!(io::copy(&mut stream, &mut io::sink()).is_err());
    }
}
