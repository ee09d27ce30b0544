//! Content digests: parsing `algorithm:encoded` strings by the OCI grammar, and verifying bytes
//! against a digest as they stream past.
//!
//! Only `sha256` is supported for content; other registered or well-formed algorithms parse as
//! [`DigestError::Unsupported`] so callers can answer `UNSUPPORTED` rather than `DIGEST_INVALID`.
//! This module does no I/O.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

/// Length of a sha256 digest's hex encoding.
const SHA256_HEX_LEN: usize = 64;

/// A validated `sha256:<64 lowercase hex>` content digest.
///
/// Invariant: `hex` is exactly 64 lowercase hexadecimal characters, so it is safe to use as a
/// file name component.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hex: String,
}

/// Why a string is not a usable digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    /// Not of the `algorithm:encoded` grammar, or a sha256 whose encoding is not 64 lowercase hex.
    #[error("malformed digest {0:?}")]
    Malformed(String),
    /// Well-formed, but an algorithm this project does not verify.
    #[error("unsupported digest algorithm {0:?}")]
    Unsupported(String),
}

/// A digest whose bytes did not hash to it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("content hashed to {actual}, expected {expected}")]
pub struct DigestMismatch {
    /// What the content claimed to be.
    pub expected: Digest,
    /// What it hashed to.
    pub actual: Digest,
}

impl Digest {
    /// Parses `sha256:<hex>`.
    ///
    /// # Errors
    /// [`DigestError::Malformed`] for anything outside the OCI digest grammar (including
    /// uppercase sha256 hex), [`DigestError::Unsupported`] for well-formed non-sha256 digests.
    pub fn parse(s: &str) -> Result<Self, DigestError> {
        let malformed = || DigestError::Malformed(truncate(s));
        let (algorithm, encoded) = s.split_once(':').ok_or_else(malformed)?;
        if !is_algorithm(algorithm) || !is_encoded(encoded) {
            return Err(malformed());
        }
        match algorithm {
            "sha256" => {
                if encoded.len() == SHA256_HEX_LEN
                    && encoded
                        .bytes()
                        .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
                {
                    Ok(Self {
                        hex: encoded.to_owned(),
                    })
                } else {
                    Err(malformed())
                }
            }
            "sha512"
                if !(encoded.len() == 128 && encoded.bytes().all(|b| b.is_ascii_hexdigit())) =>
            {
                Err(malformed())
            }
            other => Err(DigestError::Unsupported(truncate(other))),
        }
    }

    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self::from_hasher(Sha256::new_with_prefix(bytes))
    }

    fn from_hasher(hasher: Sha256) -> Self {
        Self {
            hex: hex::encode(hasher.finalize()),
        }
    }

    /// The 64 lowercase hex characters, without the algorithm.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The algorithm name; always `sha256`.
    pub fn algorithm(&self) -> &'static str {
        "sha256"
    }
}

fn truncate(s: &str) -> String {
    // Bad input is echoed in errors; keep it short so a hostile path cannot flood logs.
    s.chars().take(160).collect()
}

/// `algorithm-component (algorithm-separator algorithm-component)*`, components `[a-z0-9]+`,
/// separators `[+._-]`.
fn is_algorithm(s: &str) -> bool {
    !s.is_empty()
        && s.split(['+', '.', '_', '-']).all(|c| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

/// `[a-zA-Z0-9=_-]+`
fn is_encoded(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'=' | b'_' | b'-'))
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Hashes bytes as they stream past and checks them against an expected digest at the end.
#[derive(Clone)]
pub struct Verifier {
    expected: Digest,
    hasher: Sha256,
    bytes: u64,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("expected", &self.expected)
            .field("bytes", &self.bytes)
            .finish()
    }
}

impl Verifier {
    /// Starts verifying content that should hash to `expected`.
    pub fn new(expected: Digest) -> Self {
        Self {
            expected,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// Feeds the next chunk.
    pub fn update(&mut self, chunk: &[u8]) {
        self.hasher.update(chunk);
        self.bytes += chunk.len() as u64;
    }

    /// Bytes fed so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The digest the content should have.
    pub fn expected(&self) -> &Digest {
        &self.expected
    }

    /// Ends verification.
    ///
    /// # Errors
    /// [`DigestMismatch`] when the bytes fed do not hash to the expected digest.
    pub fn finish(self) -> Result<Digest, DigestMismatch> {
        let actual = Digest::from_hasher(self.hasher);
        if actual == self.expected {
            Ok(actual)
        } else {
            Err(DigestMismatch {
                expected: self.expected,
                actual,
            })
        }
    }
}

/// Hashes a stream of bytes whose digest is not known in advance.
#[derive(Clone, Default)]
pub struct Hasher {
    inner: Sha256,
}

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Hasher")
    }
}

impl Hasher {
    /// A hasher over no bytes yet.
    pub fn new() -> Self {
        Self::default()
    }
    /// Feeds the next chunk.
    pub fn update(&mut self, chunk: &[u8]) {
        self.inner.update(chunk);
    }
    /// The digest of everything fed.
    pub fn finish(self) -> Digest {
        Digest::from_hasher(self.inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parse_table() {
        let sha512 = format!("sha512:{}", "a".repeat(128));
        let cases: &[(&str, Result<(), DigestError>)] = &[
            (EMPTY, Ok(())),
            (
                "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
                Err(DigestError::Malformed(String::new())),
            ),
            ("sha256:abc", Err(DigestError::Malformed(String::new()))),
            ("sha256", Err(DigestError::Malformed(String::new()))),
            (":abc", Err(DigestError::Malformed(String::new()))),
            (
                "sha256:../../etc/passwd",
                Err(DigestError::Malformed(String::new())),
            ),
            ("SHA256:abc", Err(DigestError::Malformed(String::new()))),
            ("md5:abcdef", Err(DigestError::Unsupported(String::new()))),
            (&sha512, Err(DigestError::Unsupported(String::new()))),
            ("sha512:abc", Err(DigestError::Malformed(String::new()))),
            (
                "multihash+base58:QmRZxt2b1FVZPNqd8hsiykDL3TdBDeTSPX9Kv46HmX4Gx8",
                Err(DigestError::Unsupported(String::new())),
            ),
        ];
        for (input, want) in cases {
            let got = Digest::parse(input);
            match (got, want) {
                (Ok(d), Ok(())) => assert_eq!(d.to_string(), *input),
                (Err(DigestError::Malformed(_)), Err(DigestError::Malformed(_))) => {}
                (Err(DigestError::Unsupported(_)), Err(DigestError::Unsupported(_))) => {}
                (got, want) => panic!("{input}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn of_and_verifier_agree() {
        assert_eq!(Digest::of(b"").to_string(), EMPTY);
        let d = Digest::of(b"hello world");
        let mut v = Verifier::new(d.clone());
        v.update(b"hello ");
        v.update(b"world");
        assert_eq!(v.bytes(), 11);
        assert_eq!(v.finish().unwrap(), d);
    }

    #[test]
    fn verifier_reports_mismatch() {
        let mut v = Verifier::new(Digest::of(b"a"));
        v.update(b"b");
        let err = v.finish().unwrap_err();
        assert_eq!(err.actual, Digest::of(b"b"));
        assert_eq!(err.expected, Digest::of(b"a"));
    }

    #[test]
    fn serde_round_trip() {
        let d = Digest::of(b"x");
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), d);
        assert!(serde_json::from_str::<Digest>("\"sha256:zz\"").is_err());
    }
}
