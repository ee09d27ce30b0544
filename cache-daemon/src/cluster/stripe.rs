//! Stripe arithmetic: a blob is cut into stripes of [`STRIPE_BYTES`] (the last one shorter; a
//! blob smaller than one stripe is one stripe), and each stripe has its own owner in the cluster.
//! Pure: offsets in, offsets out.
//!
//! Why 16 MiB: large enough that a stripe's own costs (one ranged registry request with its
//! token and TLS round trips, one peer request, one rendezvous ranking) stay under 1 % of its
//! transfer time on a 1 Gbit/s link; small enough that a 3 GB layer has about 180 stripes, so
//! its registry fetches and first uploads spread over about 180 owners instead of a few, and a
//! killed owner costs the burst one stripe (16 MiB) fetched again, not a whole layer. The
//! README works through the numbers for a 3 GB layer and 1,000 nodes.

/// Bytes per stripe (the last stripe of a blob may be shorter).
pub const STRIPE_BYTES: u64 = 16 << 20;

/// One stripe of a blob: its index and the blob bytes it covers, `[first_bytes, end_bytes)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Stripe {
    /// Position in the blob, from 0.
    pub index: u32,
    /// Offset of its first byte in the blob.
    pub first_bytes: u64,
    /// Offset just past its last byte in the blob.
    pub end_bytes: u64,
}

impl Stripe {
    /// Stripe `index` of a blob of `total_bytes`, or `None` when the blob has no such stripe.
    /// `total_bytes` unknown (`None`): the stripe as if the blob were long enough.
    pub fn nth(index: u32, total_bytes: Option<u64>) -> Option<Self> {
        let first_bytes = u64::from(index).checked_mul(STRIPE_BYTES)?;
        let mut end_bytes = first_bytes.checked_add(STRIPE_BYTES)?;
        if let Some(total) = total_bytes {
            if first_bytes >= total && !(index == 0 && total == 0) {
                return None;
            }
            end_bytes = end_bytes.min(total);
        }
        Some(Self {
            index,
            first_bytes,
            end_bytes,
        })
    }

    /// The stripe holding byte `offset_bytes`.
    pub fn at(offset_bytes: u64, total_bytes: Option<u64>) -> Option<Self> {
        let index = u32::try_from(offset_bytes / STRIPE_BYTES).ok()?;
        Self::nth(index, total_bytes)
    }

    /// Its length in bytes.
    pub fn len_bytes(&self) -> u64 {
        self.end_bytes - self.first_bytes
    }

    /// Whether it is the blob's last stripe.
    pub fn is_last(&self, total_bytes: u64) -> bool {
        self.end_bytes >= total_bytes
    }
}

/// How many stripes a blob of `total_bytes` has (a blob of 0 bytes has one, empty).
pub fn count(total_bytes: u64) -> u64 {
    total_bytes.div_ceil(STRIPE_BYTES).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = STRIPE_BYTES;

    #[test]
    fn stripes_cover_a_blob_once_in_order() {
        for total in [0, 1, S - 1, S, S + 1, 3 * S, 3 * S + 7] {
            let mut next = 0;
            for i in 0..count(total) {
                let s = Stripe::nth(u32::try_from(i).unwrap(), Some(total)).unwrap();
                assert_eq!(s.first_bytes, next, "total {total} stripe {i}");
                assert!(s.len_bytes() <= S);
                next = s.end_bytes;
                assert_eq!(s.is_last(total), i + 1 == count(total));
            }
            assert_eq!(next, total, "total {total}");
            let past = u32::try_from(count(total)).unwrap();
            assert_eq!(Stripe::nth(past, Some(total)), None, "total {total}");
        }
    }

    #[test]
    fn small_blob_is_one_stripe_and_offsets_find_their_stripe() {
        assert_eq!(count(1000), 1);
        assert_eq!(Stripe::nth(0, Some(1000)).unwrap().end_bytes, 1000);
        let cases = [(0, 0), (S - 1, 0), (S, 1), (2 * S + 5, 2)];
        for (offset, index) in cases {
            assert_eq!(
                Stripe::at(offset, Some(3 * S)).unwrap().index,
                index,
                "{offset}"
            );
        }
        assert_eq!(Stripe::at(3 * S, Some(3 * S)), None);
        // Unknown length: full-sized stripes.
        assert_eq!(Stripe::nth(1, None).unwrap().end_bytes, 2 * S);
    }
}
