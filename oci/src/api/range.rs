//! The `Range` request header for blobs: `bytes=N-`, `bytes=N-M` and `bytes=-S` (suffix).
//! Pure parsing, then resolution against a blob's length; no I/O.
//!
//! Choices (RFC 9110 section 14), one rule per shape; what to answer is the caller's:
//! - a unit other than `bytes`, or a header that is not `<unit>=...`, is ignored (`Ok(None)`):
//!   the whole blob (section 14.2: MUST ignore an unknown unit);
//! - a multi-range request is ignored too (allowed; registry clients never send one);
//! - a malformed `bytes` range (not `N-`, `N-M` or `-S` in digits, or `M < N`) is
//!   [`RangeError::Malformed`]: the daemon answers 416, the embedded registry ignores it;
//! - a well-formed range the blob cannot satisfy (first byte at or past the end, `-0`, any range
//!   of an empty blob) is [`RangeError::Unsatisfiable`]: 416 with `Content-Range: bytes */<len>`;
//! - numbers too large for a u64 are taken as u64::MAX, which is what they mean against any
//!   real blob: a first byte past the end, a last byte clamped to the end, a suffix covering the
//!   whole blob.

/// A byte range as requested, before the blob's length is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// `bytes=N-` or `bytes=N-M` (inclusive `last`).
    From {
        /// First byte.
        first: u64,
        /// Last byte, inclusive; `None` for open-ended.
        last: Option<u64>,
    },
    /// `bytes=-S`: the last `S` bytes.
    Suffix(u64),
}

/// Why a range cannot be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    /// A `bytes` range that is not `N-`, `N-M` or `-S` in digits with `N <= M`.
    #[error("malformed byte range")]
    Malformed,
    /// A well-formed range that selects no byte of a blob of `len_bytes`.
    #[error("range not satisfiable for {len_bytes} bytes")]
    Unsatisfiable {
        /// The blob's length.
        len_bytes: u64,
    },
}

impl ByteRange {
    /// Parses a `Range` header value; `Ok(None)` when it is to be ignored.
    ///
    /// # Errors
    /// [`RangeError::Malformed`] for a malformed `bytes` range.
    pub fn parse(value: &str) -> Result<Option<Self>, RangeError> {
        let Some(spec) = value.trim().strip_prefix("bytes=") else {
            return Ok(None);
        };
        if spec.contains(',') {
            return Ok(None);
        }
        let (a, b) = spec.trim().split_once('-').ok_or(RangeError::Malformed)?;
        let num = |s: &str| -> Result<u64, RangeError> {
            if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
                return Err(RangeError::Malformed);
            }
            // Only digits: the one way to fail is overflow.
            Ok(s.parse().unwrap_or(u64::MAX))
        };
        let (a, b) = (a.trim(), b.trim());
        if a.is_empty() {
            return Ok(Some(Self::Suffix(num(b)?)));
        }
        let first = num(a)?;
        let last = if b.is_empty() { None } else { Some(num(b)?) };
        if last.is_some_and(|l| l < first) {
            return Err(RangeError::Malformed);
        }
        Ok(Some(Self::From { first, last }))
    }

    /// The half-open span `[start, end)` within a blob of `len_bytes`; never empty.
    ///
    /// # Errors
    /// [`RangeError::Unsatisfiable`] when the range starts at or past the end, asks for an
    /// empty suffix, or the blob is empty.
    pub fn resolve(self, len_bytes: u64) -> Result<(u64, u64), RangeError> {
        let unsatisfiable = RangeError::Unsatisfiable { len_bytes };
        match self {
            Self::From { first, last } => {
                if first >= len_bytes {
                    return Err(unsatisfiable);
                }
                let end = last.map_or(len_bytes, |l| l.saturating_add(1).min(len_bytes));
                Ok((first, end))
            }
            // An empty blob satisfies no range, a suffix included (RFC 9110 section 14.1.1);
            // `(0, 0)` here once became `Content-Range: bytes 0-{0 - 1}/0` (found by fuzzing).
            Self::Suffix(0) => Err(unsatisfiable),
            Self::Suffix(_) if len_bytes == 0 => Err(unsatisfiable),
            Self::Suffix(n) => Ok((len_bytes.saturating_sub(n), len_bytes)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_resolve_table() {
        // (header, length, expected span or None for "ignored", Err(malformed?) for a refusal)
        type Want = Result<Option<(u64, u64)>, bool>;
        let cases: &[(&str, u64, Want)] = &[
            ("bytes=0-", 10, Ok(Some((0, 10)))),
            ("bytes=3-", 10, Ok(Some((3, 10)))),
            ("bytes=3-5", 10, Ok(Some((3, 6)))),
            ("bytes=3-500", 10, Ok(Some((3, 10)))),
            ("bytes=-4", 10, Ok(Some((6, 10)))),
            ("bytes=-40", 10, Ok(Some((0, 10)))),
            ("bytes=9-9", 10, Ok(Some((9, 10)))),
            ("bytes=10-", 10, Err(false)),
            ("bytes=5-3", 10, Err(true)),
            ("bytes=-0", 10, Err(false)),
            ("bytes=a-b", 10, Err(true)),
            ("bytes=1", 10, Err(true)),
            ("bytes=+1-2", 10, Err(true)),
            ("bytes=0-1,3-4", 10, Ok(None)),
            ("items=0-1", 10, Ok(None)),
            ("bytes=999999999999999999999-", 10, Err(false)),
            ("bytes=18446744073709551615-", 10, Err(false)),
            ("bytes=-18446744073709551616", 10, Ok(Some((0, 10)))),
            ("bytes=0-18446744073709551616", 10, Ok(Some((0, 10)))),
            ("bytes=18446744073709551616-1", 10, Err(true)),
            ("bytes=", 10, Err(true)),
            ("bytes=-", 10, Err(true)),
            ("bytes=1-2-3", 10, Err(true)),
            ("bytes=-1", 0, Err(false)),
            ("bytes=0-", 0, Err(false)),
            ("bytes=-18446744073709551616", 0, Err(false)),
            ("bytes=\u{0660}-1", 10, Err(true)),
        ];
        for (header, len, want) in cases {
            let got = ByteRange::parse(header).and_then(|r| r.map(|r| r.resolve(*len)).transpose());
            match (got, want) {
                (Ok(g), Ok(w)) => assert_eq!(g, *w, "{header}"),
                (Err(RangeError::Malformed), Err(true)) => {}
                (Err(RangeError::Unsatisfiable { len_bytes }), Err(false)) => {
                    assert_eq!(len_bytes, *len, "{header}");
                }
                (g, w) => panic!("{header}: got {g:?}, want {w:?}"),
            }
        }
    }
}
