//! Request signing between peers: every peer request carries a timestamp and an HMAC-SHA256,
//! keyed with the cluster secret, over its method, path (with query) and that timestamp. A
//! peer serves only requests whose signature matches and whose timestamp is within
//! [`REPLAY_WINDOW`] of its own clock, so a captured request stops working after that window
//! and nobody without the secret can read the cache through the peer port. The comparison is
//! constant-time (`hmac`'s `verify_slice`). Only requests are signed: what a peer sends back is
//! checked against the digest by the node that asked, so bytes need no signature.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Header carrying the request's time, seconds since the Unix epoch.
pub const TIMESTAMP_HEADER: &str = "stampede-timestamp";
/// Header carrying the hex HMAC-SHA256.
pub const SIGNATURE_HEADER: &str = "stampede-signature";
/// How far a request's timestamp may be from the receiver's clock, either way.
pub const REPLAY_WINDOW: Duration = Duration::from_secs(30);

/// The shortest cluster secret accepted, in bytes.
pub const MIN_SECRET_BYTES: usize = 16;

/// Signs and checks peer requests with the cluster secret.
#[derive(Clone)]
pub struct Signer {
    key: Vec<u8>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(<secret>)")
    }
}

/// Why a peer request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Rejection {
    /// It carried no signature or no timestamp.
    #[error("unsigned")]
    Unsigned,
    /// The signature does not match (wrong secret, altered request, malformed header).
    #[error("bad signature")]
    BadSignature,
    /// The timestamp is outside the replay window.
    #[error("timestamp outside the replay window")]
    Expired,
}

/// What a received request offers for checking.
#[derive(Debug, Clone, Copy)]
pub struct Signed<'a> {
    /// Its method.
    pub method: &'a str,
    /// Its path with the query.
    pub path_and_query: &'a str,
    /// The timestamp header, `None` when absent.
    pub timestamp: Option<&'a str>,
    /// The signature header, `None` when absent.
    pub signature: Option<&'a str>,
}

impl Signer {
    /// A signer with `secret` (already checked non-empty by the config).
    pub fn new(secret: &[u8]) -> Self {
        Self {
            key: secret.to_vec(),
        }
    }

    fn mac(&self, method: &str, path_and_query: &str, timestamp: u64) -> Hmac<Sha256> {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes a key of any length");
        mac.update(method.as_bytes());
        mac.update(b"\n");
        mac.update(path_and_query.as_bytes());
        mac.update(b"\n");
        mac.update(timestamp.to_string().as_bytes());
        mac
    }

    /// `(timestamp, signature)` header values for a request sent at `now`.
    pub fn sign(&self, method: &str, path_and_query: &str, now: SystemTime) -> (String, String) {
        let ts = unix_secs(now);
        let sig = self.mac(method, path_and_query, ts).finalize().into_bytes();
        (ts.to_string(), hex::encode(sig))
    }

    /// Checks a request at the receiver's time `now`.
    ///
    /// # Errors
    /// The [`Rejection`].
    pub fn verify(&self, req: Signed<'_>, now: SystemTime) -> Result<(), Rejection> {
        let (Some(ts), Some(sig)) = (req.timestamp, req.signature) else {
            return Err(Rejection::Unsigned);
        };
        let ts: u64 = ts.trim().parse().map_err(|_| Rejection::BadSignature)?;
        let sig = hex::decode(sig.trim()).map_err(|_| Rejection::BadSignature)?;
        self.mac(req.method, req.path_and_query, ts)
            .verify_slice(&sig)
            .map_err(|_| Rejection::BadSignature)?;
        if unix_secs(now).abs_diff(ts) > REPLAY_WINDOW.as_secs() {
            return Err(Rejection::Expired);
        }
        Ok(())
    }
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATH: &str = "/peer/v1/stripes/0/sha256:ab?ns=r&repo=a%2Fb";

    #[test]
    fn accepts_its_own_signature_and_rejects_the_rest() {
        let s = Signer::new(b"0123456789abcdef-secret");
        let now = SystemTime::now();
        let (ts, sig) = s.sign("GET", PATH, now);
        let check = |m: &str, p: &str, ts: Option<&str>, sig: Option<&str>, at: SystemTime| {
            let req = Signed {
                method: m,
                path_and_query: p,
                timestamp: ts,
                signature: sig,
            };
            s.verify(req, at)
        };
        assert_eq!(check("GET", PATH, Some(&ts), Some(&sig), now), Ok(()));
        let cases = [
            (check("GET", PATH, None, None, now), Rejection::Unsigned),
            (
                check("GET", PATH, Some(&ts), None, now),
                Rejection::Unsigned,
            ),
            (
                check("HEAD", PATH, Some(&ts), Some(&sig), now),
                Rejection::BadSignature,
            ),
            (
                check(
                    "GET",
                    "/peer/v1/stripes/1/sha256:ab?ns=r&repo=a%2Fb",
                    Some(&ts),
                    Some(&sig),
                    now,
                ),
                Rejection::BadSignature,
            ),
            (
                check("GET", PATH, Some("12"), Some(&sig), now),
                Rejection::BadSignature,
            ),
            (
                check("GET", PATH, Some(&ts), Some("zz"), now),
                Rejection::BadSignature,
            ),
        ];
        for (i, (got, want)) in cases.into_iter().enumerate() {
            assert_eq!(got, Err(want), "case {i}");
        }
        // Another secret's signature does not verify.
        let (ts2, sig2) = Signer::new(b"another-secret-of-16").sign("GET", PATH, now);
        assert_eq!(
            check("GET", PATH, Some(&ts2), Some(&sig2), now),
            Err(Rejection::BadSignature)
        );
    }

    #[test]
    fn replay_window_bounds_a_captured_request() {
        let s = Signer::new(b"0123456789abcdef-secret");
        let sent = SystemTime::now();
        let (ts, sig) = s.sign("GET", PATH, sent);
        let at = |secs: i64| {
            if secs >= 0 {
                sent + Duration::from_secs(secs.unsigned_abs())
            } else {
                sent - Duration::from_secs(secs.unsigned_abs())
            }
        };
        let w = REPLAY_WINDOW.as_secs() as i64;
        for (offset, ok) in [
            (0, true),
            (w - 1, true),
            (-(w - 1), true),
            (w + 2, false),
            (-(w + 2), false),
        ] {
            let req = Signed {
                method: "GET",
                path_and_query: PATH,
                timestamp: Some(&ts),
                signature: Some(&sig),
            };
            let got = s.verify(req, at(offset));
            assert_eq!(got.is_ok(), ok, "{offset} s later: {got:?}");
            if !ok {
                assert_eq!(got, Err(Rejection::Expired));
            }
        }
    }
}
