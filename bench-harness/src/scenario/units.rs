//! Quantities as scenario files write them: byte sizes (`"64MiB"`, `"1.5GB"`, `1024`),
//! bandwidths (`"200Mbit"`, `"25MB/s"`, `"1Gbps"`) and durations (`"250ms"`, `"2m"`).
//!
//! Each type parses from a string (or a bare integer for bytes) and prints back in a form that
//! parses to the same value. This module does no I/O.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A count of bytes: the workspace's one byte-size grammar, `stampede_oci::size`.
pub use stampede_oci::ByteSize;

/// A rate in bytes per second. Accepts bit rates with decimal prefixes (`"200Mbit"`, `"1gbit"`,
/// `"100kbit"`) and byte rates (`"25MB/s"`, `"10MiB/s"`). `"Mbps"` is refused as ambiguous.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bandwidth {
    /// Bytes per second; never zero.
    pub bytes_per_sec: u64,
}

/// A duration written as humantime (`"1s"`, `"250ms"`, `"2m 30s"`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Span(pub Duration);

/// Why a quantity did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {input:?}: {hint}")]
pub struct UnitError {
    what: &'static str,
    input: String,
    hint: &'static str,
}

fn split_number(s: &str) -> Option<(f64, &str)> {
    let s = s.trim();
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let n: f64 = s[..end].parse().ok()?;
    (n.is_finite() && n >= 0.0).then_some((n, s[end..].trim()))
}

impl FromStr for Bandwidth {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || {
            UnitError {
            what: "bandwidth",
            input: s.to_owned(),
            hint: "write bits as 200Mbit, 1Gbit, 500kbit or bytes as 25MB/s, 10MiB/s (\"Mbps\" is refused: tc reads it as bytes, people as bits)",
        }
        };
        let (n, unit) = split_number(s).ok_or_else(err)?;
        let bytes_per_sec = if let Some(bytes_unit) = unit.strip_suffix("/s") {
            n * format!("1{bytes_unit}")
                .parse::<ByteSize>()
                .map_err(|_| err())?
                .0 as f64
        } else {
            let mult = match unit.to_ascii_lowercase().as_str() {
                "bit" => 1.0,
                "kbit" => 1e3,
                "mbit" => 1e6,
                "gbit" => 1e9,
                _ => return Err(err()),
            };
            n * mult / 8.0
        };
        let bytes_per_sec = bytes_per_sec.round();
        if !(1.0..=u64::MAX as f64).contains(&bytes_per_sec) {
            return Err(err());
        }
        Ok(Self {
            bytes_per_sec: bytes_per_sec as u64,
        })
    }
}

impl FromStr for Span {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        humantime::parse_duration(s.trim())
            .map(Self)
            .map_err(|_| UnitError {
                what: "duration",
                input: s.to_owned(),
                hint: "write e.g. 0s, 250ms, 30s, 2m",
            })
    }
}

impl fmt::Display for Bandwidth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bits = self.bytes_per_sec.saturating_mul(8);
        for (per, unit) in [(1_000_000_000, "Gbit"), (1_000_000, "Mbit"), (1000, "kbit")] {
            if bits.is_multiple_of(per) {
                return write!(f, "{}{unit}", bits / per);
            }
        }
        write!(f, "{}B/s", self.bytes_per_sec)
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

struct QuantityVisitor<T>(std::marker::PhantomData<T>, &'static str);

impl<T: FromStr<Err = UnitError>> serde::de::Visitor<'_> for QuantityVisitor<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.1)
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<T, E> {
        v.parse().map_err(E::custom)
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<T, E> {
        self.visit_str(&v.to_string())
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<T, E> {
        if v < 0 {
            return Err(E::custom(format!("{v} is negative")));
        }
        self.visit_str(&v.to_string())
    }
}

/// `Debug` as `Display`, and serde as the string form (`expecting` names it in errors).
macro_rules! quantity_traits {
    ($($t:ty: $expecting:literal),*) => {$(
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{self}")
            }
        }
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_str(QuantityVisitor(std::marker::PhantomData, $expecting))
            }
        }
    )*};
}
quantity_traits!(
    Bandwidth: "a bandwidth such as \"200Mbit\"",
    Span: "a duration such as \"30s\""
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bandwidths() {
        let cases = [
            ("200Mbit", Some(25_000_000)),
            ("200mbit", Some(25_000_000)),
            ("1Gbps", None),
            ("1gbit", Some(125_000_000)),
            ("100kbit", Some(12_500)),
            ("25MB/s", Some(25_000_000)),
            ("10MiB/s", Some(10 << 20)),
            ("0Mbit", None),
            ("fast", None),
        ];
        for (s, want) in cases {
            assert_eq!(
                s.parse::<Bandwidth>().ok().map(|b| b.bytes_per_sec),
                want,
                "{s}"
            );
        }
        let b: Bandwidth = "200Mbit".parse().unwrap();
        assert_eq!(b.to_string(), "200Mbit");
        assert_eq!(b.to_string().parse::<Bandwidth>().unwrap(), b);
    }

    #[test]
    fn spans() {
        assert_eq!(
            "250ms".parse::<Span>().unwrap().0,
            Duration::from_millis(250)
        );
        assert_eq!(
            "2m 30s".parse::<Span>().unwrap().0,
            Duration::from_secs(150)
        );
        assert!("soon".parse::<Span>().is_err());
        let s = Span(Duration::from_millis(1500));
        assert_eq!(s.to_string().parse::<Span>().unwrap(), s);
    }

    #[test]
    fn serde_accepts_strings_and_integers() {
        #[derive(serde::Deserialize)]
        struct T {
            a: ByteSize,
            b: ByteSize,
            c: Bandwidth,
            d: Span,
        }
        let t: T = toml::from_str("a = 1024\nb = \"1KiB\"\nc = \"8kbit\"\nd = \"1s\"").unwrap();
        assert_eq!(
            (t.a.0, t.b.0, t.c.bytes_per_sec, t.d.0),
            (1024, 1024, 1000, Duration::from_secs(1))
        );
    }
}
