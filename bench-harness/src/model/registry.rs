//! The modelled registry's bookkeeping: its request token bucket (429 with Retry-After above
//! the rate) and what it served, counted the way the embedded registry counts it
//! ([`RegistryTotals`] with a 100 ms time series), so modelled and measured runs report alike.
//! Its egress cap is a link in the fabric; this file only counts.

use std::collections::BTreeMap;

use crate::registry::Throttle;
use crate::result::RegistryTotals;

/// Width of one time-series bucket, as the embedded registry records it.
pub const BUCKET_SECONDS: f64 = 0.1;

/// A token bucket of `burst` requests refilled at `rate` per second, in model time.
#[derive(Debug, Clone)]
pub struct Bucket {
    rate: f64,
    capacity: f64,
    tokens: f64,
    at: f64,
}

impl Bucket {
    /// A full bucket for `throttle`.
    pub fn new(throttle: &Throttle) -> Self {
        let capacity = f64::from(throttle.burst.max(1));
        Self {
            rate: throttle.requests_per_second.max(0.0),
            capacity,
            tokens: capacity,
            at: 0.0,
        }
    }

    /// Of `wanted` requests arriving together at `now`, how many get a token (the rest get 429).
    pub fn admit(&mut self, wanted: u64, now: f64) -> u64 {
        self.tokens = (self.tokens + (now - self.at).max(0.0) * self.rate).min(self.capacity);
        self.at = now;
        let admitted = (self.tokens.floor() as u64).min(wanted);
        self.tokens -= admitted as f64;
        admitted
    }
}

/// What the registry served in one modelled burst.
#[derive(Debug, Clone, Default)]
pub struct Served {
    /// Body bytes per 100 ms bucket.
    bytes: Vec<f64>,
    /// Requests received per bucket (throttled included).
    requests: Vec<u64>,
    /// 429s per bucket.
    throttled: Vec<u64>,
    /// Requests by kind, as the embedded registry names them.
    kinds: BTreeMap<String, u64>,
    /// Blob GETs by key (digest).
    blob_gets: BTreeMap<String, u64>,
}

impl Served {
    /// Counts `count` requests of `kind` (`manifest_get`, `blob_get`) at `now`, of which
    /// `throttled` got 429.
    pub fn requests(&mut self, kind: &str, count: u64, throttled: u64, now: f64) {
        let b = bucket(now);
        grow(&mut self.requests, b);
        grow(&mut self.throttled, b);
        self.requests[b] += count;
        self.throttled[b] += throttled;
        *self.kinds.entry("total".into()).or_default() += count;
        *self.kinds.entry("throttled".into()).or_default() += throttled;
        *self.kinds.entry(kind.into()).or_default() += count - throttled;
    }

    /// Counts `count` served GETs of blob `key`.
    pub fn blob_gets(&mut self, key: &str, count: u64) {
        *self.blob_gets.entry(key.to_owned()).or_default() += count;
    }

    /// Counts `bytes` sent evenly over `[from, to)` seconds (or at `from` when they are equal).
    pub fn bytes(&mut self, bytes: f64, from: f64, to: f64) {
        if bytes <= 0.0 {
            return;
        }
        if to <= from {
            let b = bucket(from);
            grow(&mut self.bytes, b);
            self.bytes[b] += bytes;
            return;
        }
        let rate = bytes / (to - from);
        let (first, last) = (bucket(from), bucket(to));
        grow(&mut self.bytes, last);
        for b in first..=last {
            let start = (b as f64 * BUCKET_SECONDS).max(from);
            let end = ((b + 1) as f64 * BUCKET_SECONDS).min(to);
            self.bytes[b] += rate * (end - start).max(0.0);
        }
    }

    /// The totals a result stores, with a snapshot holding the time series the report charts.
    pub fn totals(&self) -> RegistryTotals {
        let len = self
            .bytes
            .len()
            .max(self.requests.len())
            .max(self.throttled.len());
        let pad = |v: &[u64]| {
            let mut v = v.to_vec();
            v.resize(len, 0);
            v
        };
        let bytes: Vec<u64> = pad(&self
            .bytes
            .iter()
            .map(|b| b.round() as u64)
            .collect::<Vec<_>>());
        let bytes_out: u64 = bytes.iter().sum();
        let snapshot = serde_json::json!({
            "modelled": true,
            "bytes_out": bytes_out,
            "requests": self.kinds,
            "series": {
                "bucket_ms": (BUCKET_SECONDS * 1000.0) as u64,
                "bytes_out": bytes,
                "requests": pad(&self.requests),
                "throttled": pad(&self.throttled),
            },
        });
        RegistryTotals {
            bytes_out,
            requests: self.kinds.clone(),
            blob_gets: self.blob_gets.clone(),
            snapshot: Some(snapshot),
            ..RegistryTotals::default()
        }
    }
}

fn bucket(t: f64) -> usize {
    (t.max(0.0) / BUCKET_SECONDS) as usize
}

fn grow<T: Default + Clone>(v: &mut Vec<T>, index: usize) {
    if v.len() <= index {
        v.resize(index + 1, T::default());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peak_bytes_per_sec(s: &Served) -> f64 {
        s.bytes.iter().copied().fold(0.0, f64::max) / BUCKET_SECONDS
    }

    #[test]
    fn the_bucket_admits_its_burst_then_its_rate() {
        let mut b = Bucket::new(&Throttle {
            requests_per_second: 10.0,
            burst: 5,
            retry_after: crate::scenario::units::Span::default(),
        });
        assert_eq!(b.admit(8, 0.0), 5);
        assert_eq!(b.admit(8, 0.0), 0);
        assert_eq!(b.admit(8, 0.5), 5);
        assert_eq!(b.admit(2, 10.0), 2);
    }

    #[test]
    fn bytes_spread_over_buckets_and_sum_up() {
        let mut s = Served::default();
        s.bytes(1000.0, 0.05, 0.25);
        let t = s.totals();
        assert_eq!(t.bytes_out, 1000);
        assert!((peak_bytes_per_sec(&s) - 5000.0).abs() < 1e-6);
        // Long spans with edges that are not multiples of the bucket lose nothing.
        let mut s = Served::default();
        for (from, to) in [(0.0, 4.3), (4.3, 40.8), (40.8, 40.8), (40.8, 81.37)] {
            s.bytes(1e9, from, to);
        }
        assert!((s.totals().bytes_out as f64 - 4e9).abs() < 1000.0);
    }
}
