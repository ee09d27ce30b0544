//! How numbers read in reports: durations in ms or s, sizes in decimal units (kB, MB, GB),
//! bandwidths in bit/s, rates per second, percentages. Every formatter puts the unit on the
//! number, so no cell or tick is ever a bare figure.
//!
//! This module only formats; it does not choose what to show.

use std::time::Duration;

use crate::run::recorder::micros;
use crate::scenario::units::ByteSize;

/// A duration for people: `0.25 ms`, `4.2 ms`, `123 ms`, `1.23 s`, `12.3 s`, `123 s`.
pub fn duration(d: Duration) -> String {
    us(micros(d))
}

/// Microseconds for people, as [`duration`].
pub fn us(us: u64) -> String {
    let ms = us as f64 / 1e3;
    let s = us as f64 / 1e6;
    match us {
        0 => "0 ms".to_owned(),
        1..=999 => format!("{ms:.2} ms"),
        1_000..=9_999 => format!("{ms:.1} ms"),
        10_000..=999_999 => format!("{ms:.0} ms"),
        1_000_000..=9_999_999 => format!("{s:.2} s"),
        10_000_000..=99_999_999 => format!("{s:.1} s"),
        _ => format!("{s:.0} s"),
    }
}

/// Signed microseconds for people (`+1.20 s`, `-35 ms`, `0 ms`).
pub fn signed_us(v: f64) -> String {
    signed(v, v.round() == 0.0, us(v.abs().round() as u64))
}

/// `magnitude` (of `v`) with `v`'s sign, none when it reads as `zero`.
fn signed(v: f64, zero: bool, magnitude: String) -> String {
    if zero {
        magnitude
    } else if v > 0.0 {
        format!("+{magnitude}")
    } else {
        format!("\u{2212}{magnitude}")
    }
}

/// `us` when the histogram had samples, `-` otherwise.
pub fn us_if(count: u64, value_us: u64) -> String {
    if count == 0 {
        "-".to_owned()
    } else {
        us(value_us)
    }
}

/// Bytes in decimal units: `512 B`, `1.5 kB`, `42.4 MB`, `1.20 GB`.
pub fn bytes(b: u64) -> String {
    ByteSize(b).human()
}

/// Signed bytes (`+1.5 MB`, `-42.4 MB`).
pub fn signed_bytes(v: f64) -> String {
    signed(v, v.round() == 0.0, bytes(v.abs().round() as u64))
}

/// A byte rate as bits per second: `800 kbit/s`, `339 Mbit/s`, `1.20 Gbit/s`.
pub fn bandwidth(bytes_per_sec: f64) -> String {
    let bits = bytes_per_sec * 8.0;
    if bits >= 1e9 {
        format!("{:.2} Gbit/s", bits / 1e9)
    } else if bits >= 1e6 {
        format!("{:.0} Mbit/s", bits / 1e6)
    } else if bits >= 1e3 {
        format!("{:.0} kbit/s", bits / 1e3)
    } else {
        format!("{bits:.0} bit/s")
    }
}

/// Requests per second: `0.5 req/s`, `12 req/s`, `1200 req/s`.
pub fn requests_per_second(rate: f64) -> String {
    if rate < 10.0 {
        format!("{rate:.1} req/s")
    } else {
        format!("{rate:.0} req/s")
    }
}

/// A fraction (0..=1) as a whole percentage: `95 %`.
pub fn percent(fraction: f64) -> String {
    format!("{:.0} %", fraction * 100.0)
}

/// A signed fraction as a percentage with one decimal below 10 %: `+4.2 %`, `\u{2212}31 %`.
pub fn signed_percent(fraction: f64) -> String {
    let p = fraction * 100.0;
    let magnitude = if p.abs() < 10.0 {
        format!("{:.1} %", p.abs())
    } else {
        format!("{:.0} %", p.abs())
    };
    signed(p, magnitude.starts_with("0.0 "), magnitude)
}

/// A count with its noun, singular for one: `1 variant`, `2 variants`, `0 repetitions`. Nouns
/// here take a plain `s`.
pub fn count(n: impl Into<u64>, noun: &str) -> String {
    let n = n.into();
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_singular_for_one() {
        assert_eq!(count(1u32, "variant"), "1 variant");
        assert_eq!(count(2u32, "variant"), "2 variants");
        assert_eq!(count(0u64, "repetition"), "0 repetitions");
    }

    #[test]
    fn durations_read_naturally() {
        let cases = [
            (0, "0 ms"),
            (250, "0.25 ms"),
            (4_200, "4.2 ms"),
            (123_400, "123 ms"),
            (1_234_000, "1.23 s"),
            (12_340_000, "12.3 s"),
            (123_400_000, "123 s"),
        ];
        for (v, want) in cases {
            assert_eq!(us(v), want);
        }
    }

    #[test]
    fn signed_values_carry_their_sign_and_unit() {
        assert_eq!(signed_us(1_200_000.0), "+1.20 s");
        assert_eq!(signed_us(-35_000.0), "\u{2212}35 ms");
        assert_eq!(signed_us(0.2), "0 ms");
        assert_eq!(signed_bytes(-42_400_000.0), "\u{2212}42.4 MB");
        assert_eq!(signed_percent(0.042), "+4.2 %");
        assert_eq!(signed_percent(-0.31), "\u{2212}31 %");
        assert_eq!(signed_percent(0.0), "0.0 %");
    }

    #[test]
    fn rates_read_in_bits_and_per_second() {
        let cases = [
            (50.0, "400 bit/s"),
            (100_000.0, "800 kbit/s"),
            (42_350_000.0, "339 Mbit/s"),
            (150_000_000.0, "1.20 Gbit/s"),
        ];
        for (b, want) in cases {
            assert_eq!(bandwidth(b), want);
        }
        assert_eq!(requests_per_second(0.5), "0.5 req/s");
        assert_eq!(requests_per_second(1_200.0), "1200 req/s");
        assert_eq!(percent(0.954), "95 %");
    }
}
