//! One layer blob read once, as a stream: its digest verified as the compressed bytes pass,
//! decompressed with the unpacker's decoder, its tar stream hashed (the diff ID) and read member
//! by member into a compact list of what the layer ships ([`Member`]: cleaned path, kind, size;
//! contents are skipped). Names are cleaned and whiteouts classified by the unpacker's own rules
//! (`crate::nodes::unpack::name`), so what is counted is what a node applies; what the members do
//! to lower layers is `overlay.rs`'s business.

use std::io::{self, BufRead, BufReader, Read, Write};

use stampede_oci::digest::Hasher;
use stampede_oci::{Compression, Digest, DigestMismatch, Verifier};

use crate::nodes::unpack::name::{clean, split_parent, whiteout, Whiteout};
use crate::nodes::unpack::stream::LayerStream;
use crate::nodes::unpack::{Refusal, DEFAULT_DECODE_BUFFER_BYTES, DEFAULT_READ_BUFFER_BYTES};

/// What a tar member is, as far as the image's filesystem goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberKind {
    File,
    Dir,
    Symlink,
    /// A hard link (ships no bytes of its own).
    HardLink,
    /// `.wh.<name>`: the member's path is what it deletes from lower layers.
    Whiteout,
    /// `.wh..wh..opq`: the member's path is the directory whose lower contents it hides.
    Opaque,
    /// A device node, fifo or other special file.
    Other,
}

/// One member of a layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Cleaned path relative to the root (`usr/bin/app`); for a whiteout, the path it deletes;
    /// for an opaque marker, its directory (empty for the root).
    pub path: String,
    pub kind: MemberKind,
    /// File content bytes (0 for everything but regular files).
    pub size_bytes: u64,
}

/// What one pass over a layer found.
#[derive(Debug, Clone)]
pub struct LayerScan {
    /// The compression the blob was read with (from its media type, else sniffed).
    pub compression: Compression,
    /// Bytes of the blob (compressed, as stored and downloaded).
    pub compressed_bytes: u64,
    /// Bytes of the tar stream, headers, padding and trailer included.
    pub uncompressed_bytes: u64,
    /// sha256 of the tar stream: the layer's diff ID.
    pub diff_id: Digest,
    /// The members, in archive order (PAX global headers and AUFS metadata left out).
    pub members: Vec<Member>,
}

/// Why a layer could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// The blob does not hash to its digest.
    #[error(transparent)]
    Digest(#[from] DigestMismatch),
    /// The blob is corrupt, truncated or not a (compressed) tar.
    #[error("read layer stream after {members} members")]
    Read {
        members: usize,
        #[source]
        source: io::Error,
    },
    /// A member's name would escape the root or is a malformed whiteout (the unpacker refuses
    /// such layers too).
    #[error("member #{index} {name:?}: {reason}")]
    Refused {
        index: usize,
        name: String,
        reason: Refusal,
    },
}

/// Hands out `inner`'s bytes while feeding a verifier and, optionally, a copy to `tee`.
struct Verified<'a, R> {
    inner: R,
    verifier: Verifier,
    tee: Option<&'a mut (dyn Write + Send)>,
}

impl<R: Read> Read for Verified<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.verifier.update(&buf[..n]);
        if let Some(tee) = self.tee.as_mut() {
            tee.write_all(&buf[..n])?;
        }
        Ok(n)
    }
}

/// Hashes the bytes it hands out.
struct Hashed<R> {
    inner: R,
    hasher: Hasher,
}

impl<R: Read> Read for Hashed<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Reads layer blob `blob`, which must hash to `digest`, compressed as `compression` (sniffed
/// from its first bytes when `None`); every compressed byte is also written to `tee` when given
/// (to keep a sample for the unpack measurement). Blocking: run it on the blocking pool.
///
/// # Errors
/// [`ScanError`]: a digest mismatch, a corrupt stream, or a member the unpacker would refuse.
pub fn scan_layer<R: Read + Send>(
    blob: R,
    digest: &Digest,
    compression: Option<Compression>,
    tee: Option<&mut (dyn Write + Send)>,
) -> Result<LayerScan, ScanError> {
    let read_err = |members| move |source| ScanError::Read { members, source };
    let mut verified = BufReader::with_capacity(
        DEFAULT_READ_BUFFER_BYTES,
        Verified {
            inner: blob,
            verifier: Verifier::new(digest.clone()),
            tee,
        },
    );
    let compression = match compression {
        Some(c) => c,
        None => Compression::sniff(verified.fill_buf().map_err(read_err(0))?),
    };
    let mut stream =
        LayerStream::new(&mut verified, compression, 64 * 1024).map_err(read_err(0))?;
    let mut hashed = Hashed {
        inner: &mut stream,
        hasher: Hasher::new(),
    };
    let members = {
        let decoded = BufReader::with_capacity(DEFAULT_DECODE_BUFFER_BYTES, &mut hashed);
        let mut archive = tar::Archive::new(decoded);
        let mut members = Vec::new();
        let mut cleaned = Vec::new();
        for (index, entry) in archive.entries().map_err(read_err(0))?.enumerate() {
            let entry = entry.map_err(read_err(members.len()))?;
            if let Some(m) = member(index, &entry, &mut cleaned)? {
                members.push(m);
            }
        }
        // The rest of the tar stream (trailer, padding) belongs to the diff ID.
        io::copy(&mut archive.into_inner(), &mut io::sink()).map_err(read_err(members.len()))?;
        members
    };
    let diff_id = std::mem::take(&mut hashed.hasher).finish();
    let uncompressed_bytes = stream.uncompressed_bytes();
    drop(stream);
    // Bytes after the compressed stream's end still belong to the blob's digest.
    io::copy(&mut verified, &mut io::sink()).map_err(read_err(members.len()))?;
    let verifier = verified.into_inner().verifier;
    let compressed_bytes = verifier.bytes();
    verifier.finish()?;
    Ok(LayerScan {
        compression,
        compressed_bytes,
        uncompressed_bytes,
        diff_id,
        members,
    })
}

/// The member `entry` describes, or `None` for members that change nothing.
fn member<R: Read>(
    index: usize,
    entry: &tar::Entry<'_, R>,
    cleaned: &mut Vec<u8>,
) -> Result<Option<Member>, ScanError> {
    use tar::EntryType as T;
    let raw = entry.path_bytes();
    let refused = |reason| ScanError::Refused {
        index,
        name: String::from_utf8_lossy(&raw).into_owned(),
        reason,
    };
    let kind = match entry.header().entry_type() {
        T::Regular | T::Continuous | T::GNUSparse => MemberKind::File,
        T::Directory => MemberKind::Dir,
        T::Symlink => MemberKind::Symlink,
        T::Link => MemberKind::HardLink,
        T::XGlobalHeader => return Ok(None),
        _ => MemberKind::Other,
    };
    // Absolute names are read as relative to the root, as tar -x and most runtimes do.
    let slashes = raw.iter().take_while(|&&c| c == b'/').count();
    clean(&raw[slashes..], cleaned).map_err(refused)?;
    let (parent, base) = split_parent(cleaned);
    let (kind, path) = match whiteout(base).map_err(refused)? {
        Whiteout::None => (kind, cleaned.as_slice()),
        Whiteout::Meta => return Ok(None),
        Whiteout::Opaque => (MemberKind::Opaque, parent),
        Whiteout::Remove(_) => {
            let mut target = parent.to_vec();
            if !target.is_empty() {
                target.push(b'/');
            }
            target.extend_from_slice(&base[b".wh.".len()..]);
            return Ok(Some(Member {
                path: String::from_utf8_lossy(&target).into_owned(),
                kind: MemberKind::Whiteout,
                size_bytes: 0,
            }));
        }
    };
    if path.is_empty() && kind != MemberKind::Dir && kind != MemberKind::Opaque {
        return Err(refused(Refusal::ReplacesRoot));
    }
    Ok(Some(Member {
        path: String::from_utf8_lossy(path).into_owned(),
        kind,
        size_bytes: if kind == MemberKind::File {
            entry.size()
        } else {
            0
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tar with names written raw into the headers (the `tar` builder would clean them).
    fn tar_of(members: &[(&str, tar::EntryType, usize)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind, size) in members {
            let mut h = tar::Header::new_gnu();
            h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
            h.set_entry_type(*kind);
            h.set_size(*size as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append(&h, vec![b'x'; *size].as_slice()).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn members_are_cleaned_classified_and_the_stream_hashed() {
        use tar::EntryType as T;
        let tar = tar_of(&[
            ("./etc/", T::Directory, 0),
            ("./etc/passwd", T::Regular, 10),
            ("usr/lib/.wh.libold.so", T::Regular, 0),
            ("var/cache/.wh..wh..opq", T::Regular, 0),
            (".wh..wh.plnk", T::Regular, 0),
            ("a//b/../c", T::Regular, 3),
        ]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let blob = gz.finish().unwrap();
        let mut copy = Vec::new();
        let scan = scan_layer(blob.as_slice(), &Digest::of(&blob), None, Some(&mut copy)).unwrap();
        assert_eq!(copy, blob, "the tee sees every compressed byte");
        assert_eq!(scan.compression, Compression::Gzip);
        assert_eq!(scan.diff_id, Digest::of(&tar));
        assert_eq!(scan.uncompressed_bytes, tar.len() as u64);
        assert_eq!(scan.compressed_bytes, blob.len() as u64);
        let got: Vec<(&str, MemberKind, u64)> = scan
            .members
            .iter()
            .map(|m| (m.path.as_str(), m.kind, m.size_bytes))
            .collect();
        assert_eq!(
            got,
            [
                ("etc", MemberKind::Dir, 0),
                ("etc/passwd", MemberKind::File, 10),
                ("usr/lib/libold.so", MemberKind::Whiteout, 0),
                ("var/cache", MemberKind::Opaque, 0),
                ("a/c", MemberKind::File, 3),
            ]
        );
    }

    #[test]
    fn a_wrong_digest_or_an_escaping_name_is_an_error() {
        let tar = tar_of(&[("f", tar::EntryType::Regular, 5)]);
        let wrong = Digest::of(b"something else");
        assert!(matches!(
            scan_layer(tar.as_slice(), &wrong, Some(Compression::None), None),
            Err(ScanError::Digest(_))
        ));
        let evil = tar_of(&[("../../etc/x", tar::EntryType::Regular, 0)]);
        let err = scan_layer(evil.as_slice(), &Digest::of(&evil), None, None).unwrap_err();
        assert!(matches!(err, ScanError::Refused { index: 0, .. }), "{err}");
    }
}
