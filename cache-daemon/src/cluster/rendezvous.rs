//! Rendezvous (highest-random-weight) hashing: every node ranks the live members for a piece of
//! content (a digest and a stripe) by a weight that depends only on the member's address and
//! the piece, and the highest weight owns it. Every node with the same member list computes the
//! same owner without talking to anyone, and when a member comes or goes, only the pieces whose
//! top-ranked member it is (or becomes) move: every other piece keeps its owner.
//!
//! The weight is the first 8 bytes of `sha256(member || 0 || digest || 0 || stripe)`, so it is
//! the same on every architecture and no member can choose an address that wins everything.
//! Pure; `membership.rs` supplies the members.

use sha2::{Digest as _, Sha256};

use stampede_oci::Digest;

use super::membership::Member;

/// The weight of `member` for stripe `stripe` of `digest`.
pub fn weight(member: &Member, digest: &Digest, stripe: u32) -> u64 {
    let mut h = Sha256::new();
    h.update(member.to_string().as_bytes());
    h.update([0]);
    h.update(digest.to_string().as_bytes());
    h.update([0]);
    h.update(stripe.to_be_bytes());
    let out = h.finalize();
    u64::from_be_bytes(out[..8].try_into().expect("sha256 is 32 bytes"))
}

/// `members` ordered by their weight for (`digest`, `stripe`), highest first: the owner, then
/// the candidates a requester falls back to, in order. Ties (astronomically unlikely) break by
/// address so the order is total.
pub fn rank(members: &[Member], digest: &Digest, stripe: u32) -> Vec<Member> {
    let mut ranked: Vec<(u64, Member)> = members
        .iter()
        .map(|m| (weight(m, digest, stripe), *m))
        .collect();
    ranked.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    ranked.into_iter().map(|(_, m)| m).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(n: u8) -> Vec<Member> {
        (1..=n)
            .map(|i| Member::from(std::net::SocketAddr::from(([10, 0, 0, i], 5052))))
            .collect()
    }

    fn owners(members: &[Member], pieces: u32) -> Vec<Member> {
        (0..pieces)
            .map(|p| {
                let d = Digest::of(&p.to_be_bytes());
                rank(members, &d, p % 7)[0]
            })
            .collect()
    }

    #[test]
    fn a_departed_member_moves_only_its_own_pieces() {
        let all = members(8);
        let before = owners(&all, 2000);
        let gone = all[3];
        let rest: Vec<Member> = all.iter().copied().filter(|m| *m != gone).collect();
        let after = owners(&rest, 2000);
        let mut moved = 0;
        for (b, a) in before.iter().zip(&after) {
            if *b == gone {
                moved += 1;
                assert_ne!(*a, gone);
            } else {
                assert_eq!(a, b, "a piece not owned by the departed member moved");
            }
        }
        // The departed member owned about 1/8 of the pieces.
        assert!((150..350).contains(&moved), "{moved} moved");
    }

    #[test]
    fn a_joining_member_takes_only_pieces_it_now_owns() {
        let old = members(8);
        let mut new = old.clone();
        let joined = Member::from(std::net::SocketAddr::from(([10, 0, 0, 99], 5052)));
        new.push(joined);
        for (b, a) in owners(&old, 2000).iter().zip(&owners(&new, 2000)) {
            assert!(a == b || *a == joined, "a piece moved between old members");
        }
    }

    #[test]
    fn ranking_ignores_list_order_and_spreads_ownership() {
        let mut m = members(5);
        let d = Digest::of(b"layer");
        let first = rank(&m, &d, 3);
        m.reverse();
        assert_eq!(rank(&m, &d, 3), first);
        assert_eq!(first.len(), 5);
        let mut counts = std::collections::HashMap::new();
        for owner in owners(&m, 1000) {
            *counts.entry(owner).or_insert(0) += 1;
        }
        assert_eq!(counts.len(), 5);
        assert!(
            counts.values().all(|c| (120..280).contains(c)),
            "{counts:?}"
        );
    }
}
