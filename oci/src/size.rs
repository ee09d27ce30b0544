//! Byte sizes as people write them in scenario files, daemon flags and config files: `B`,
//! `KB`/`MB`/`GB`/`TB` (powers of 1000) and `KiB`/`MiB`/`GiB`/`TiB` (powers of 1024, `Ki`..`Ti`
//! too), case-insensitive, with an optional fraction and optional space: `"64MiB"`, `"1.5 GB"`,
//! `"512"`. One grammar for both binaries. No I/O.

use std::fmt;
use std::str::FromStr;

/// A count of bytes; parses as above and prints back exactly (`"64MiB"`, `"1000001B"`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub u64);

/// Why a byte size did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid byte size {input:?}: write e.g. 512, 64KiB, 1.5MB, 2GiB")]
pub struct SizeError {
    input: String,
}

impl FromStr for ByteSize {
    type Err = SizeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || SizeError {
            input: s.to_owned(),
        };
        let t = s.trim();
        let end = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let n: f64 = t[..end].parse().map_err(|_| err())?;
        if !n.is_finite() || n < 0.0 {
            return Err(err());
        }
        let mult: f64 = match t[end..].trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1.0,
            "kb" | "k" => 1e3,
            "mb" | "m" => 1e6,
            "gb" | "g" => 1e9,
            "tb" | "t" => 1e12,
            "kib" | "ki" => 1024.0,
            "mib" | "mi" => 1024.0 * 1024.0,
            "gib" | "gi" => 1024.0 * 1024.0 * 1024.0,
            "tib" | "ti" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
            _ => return Err(err()),
        };
        let v = (n * mult).round();
        if v > u64::MAX as f64 {
            return Err(err());
        }
        Ok(Self(v as u64))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u64); 4] = [
            ("TiB", 1 << 40),
            ("GiB", 1 << 30),
            ("MiB", 1 << 20),
            ("KiB", 1 << 10),
        ];
        for (name, size) in UNITS {
            if self.0 >= size && self.0.is_multiple_of(size) {
                return write!(f, "{}{name}", self.0 / size);
            }
        }
        write!(f, "{}B", self.0)
    }
}

impl fmt::Debug for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl ByteSize {
    /// A human-friendly rounded form for reports and listings (`"63.5 MB"`); unlike `Display`,
    /// lossy.
    pub fn human(self) -> String {
        let b = self.0 as f64;
        if b >= 1e9 {
            format!("{:.2} GB", b / 1e9)
        } else if b >= 1e6 {
            format!("{:.1} MB", b / 1e6)
        } else if b >= 1e3 {
            format!("{:.1} kB", b / 1e3)
        } else {
            format!("{} B", self.0)
        }
    }
}

impl serde::Serialize for ByteSize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

struct SizeVisitor;

impl serde::de::Visitor<'_> for SizeVisitor {
    type Value = ByteSize;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a byte size such as \"64MiB\"")
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ByteSize, E> {
        v.parse().map_err(E::custom)
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<ByteSize, E> {
        Ok(ByteSize(v))
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<ByteSize, E> {
        u64::try_from(v)
            .map(ByteSize)
            .map_err(|_| E::custom(format!("{v} is negative")))
    }
}

impl<'de> serde::Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SizeVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_back() {
        let cases = [
            ("512", Some(512)),
            ("64MiB", Some(64 << 20)),
            ("1.5 GB", Some(1_500_000_000)),
            ("2kib", Some(2048)),
            ("50Gi", Some(50 << 30)),
            ("500MB", Some(500_000_000)),
            ("10 B", Some(10)),
            ("-1", None),
            ("1 parsec", None),
            ("", None),
            ("1e3", None),
        ];
        for (s, want) in cases {
            assert_eq!(s.parse::<ByteSize>().ok().map(|b| b.0), want, "{s}");
        }
        for v in [0, 1, 1024, 64 << 20, 1_000_001] {
            let b = ByteSize(v);
            assert_eq!(b.to_string().parse::<ByteSize>().unwrap(), b);
        }
        let e = "fast".parse::<ByteSize>().unwrap_err().to_string();
        assert_eq!(
            e,
            "invalid byte size \"fast\": write e.g. 512, 64KiB, 1.5MB, 2GiB"
        );
    }

    #[test]
    fn serde_takes_strings_and_integers() {
        let v: Vec<ByteSize> = serde_json::from_str("[1024, \"1KiB\"]").unwrap();
        assert_eq!(v, [ByteSize(1024), ByteSize(1024)]);
        assert!(serde_json::from_str::<ByteSize>("-1").is_err());
        assert_eq!(serde_json::to_string(&ByteSize(2048)).unwrap(), "\"2KiB\"");
    }
}
