//! The uncompressed tar stream of one layer blob: a large read buffer around the blob, the
//! decoder for its compression, and counters for compressed bytes, uncompressed bytes and the
//! time spent inside the decoder.
//!
//! Knows nothing of tar or of the filesystem under the root. Memory is bounded by the read
//! buffer and the decoder's window (gzip 32 KiB; zstd up to 128 MiB for frames that ask for
//! it, the decoder's default limit), never by the size of the layer.

use std::io::{self, BufRead, BufReader, Read};
use std::time::{Duration, Instant};

use flate2::bufread::MultiGzDecoder;
use stampede_oci::Compression;

/// A reader that counts the bytes it hands out.
#[derive(Debug)]
struct Counted<R> {
    inner: R,
    bytes: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
}

/// The decoder for one compression over a buffered blob (gzip boxed: its state is large).
enum Decoder<R: BufRead> {
    Plain(R),
    Gzip(Box<MultiGzDecoder<R>>),
    Zstd(zstd::stream::read::Decoder<'static, R>),
}

impl<R: BufRead> Decoder<R> {
    fn get_ref(&self) -> &R {
        match self {
            Self::Plain(r) => r,
            Self::Gzip(d) => d.get_ref(),
            Self::Zstd(d) => d.get_ref(),
        }
    }
}

impl<R: BufRead> Read for Decoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Plain(r) => r.read(buf),
            Self::Gzip(d) => d.read(buf),
            Self::Zstd(d) => d.read(buf),
        }
    }
}

/// The uncompressed tar stream of a layer, with its counters.
pub(crate) struct LayerStream<R: Read> {
    decoder: Decoder<BufReader<Counted<R>>>,
    uncompressed_bytes: u64,
    decompress: Duration,
}

impl<R: Read> LayerStream<R> {
    /// Wraps `blob` (compressed as `compression`) behind a read buffer of `buffer_bytes`.
    ///
    /// # Errors
    /// The zstd decoder cannot be created (allocation failure in libzstd).
    pub(crate) fn new(blob: R, compression: Compression, buffer_bytes: usize) -> io::Result<Self> {
        let buffered = BufReader::with_capacity(
            buffer_bytes.max(8 * 1024),
            Counted {
                inner: blob,
                bytes: 0,
            },
        );
        let decoder = match compression {
            Compression::None => Decoder::Plain(buffered),
            Compression::Gzip => Decoder::Gzip(Box::new(MultiGzDecoder::new(buffered))),
            Compression::Zstd => Decoder::Zstd(zstd::stream::read::Decoder::with_buffer(buffered)?),
        };
        Ok(Self {
            decoder,
            uncompressed_bytes: 0,
            decompress: Duration::ZERO,
        })
    }

    /// Bytes read from the blob so far (compressed).
    pub(crate) fn compressed_bytes(&self) -> u64 {
        self.decoder.get_ref().get_ref().bytes
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

impl<R: Read> Read for LayerStream<R> {
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
