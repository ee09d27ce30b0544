//! The report's section for `kubernetes` targets: the pull times kubelet itself reported (its
//! `Pulled` event, "Successfully pulled image ... in X"), beside the harness's own pull phase
//! (kubelet's `Pulling` to `Pulled` event times, in the phase tables). One row per (variant,
//! target, repetition) that has any; results without a kubernetes target have no such section.

use std::time::Duration;

use super::document::Block;
use super::human;
use super::table::Table;
use crate::result::RunResult;

/// The heading, how to read it and the table; nothing when no kubelet reported a pull.
pub fn sections(r: &RunResult) -> Vec<Block> {
    let mut t = Table::text_then_numbers(
        &["variant", "target", "repetition"],
        &["pulls", "min", "median", "max"],
    );
    for s in &r.series {
        for (rep, pulls) in &s.kubelet_pulls {
            let mut pulls: Vec<Duration> = pulls.clone();
            if pulls.is_empty() {
                continue;
            }
            pulls.sort_unstable();
            t.row([
                s.variant.clone().into(),
                s.target.clone().into(),
                rep.to_string().into(),
                pulls.len().to_string().into(),
                human::duration(pulls[0]).into(),
                human::duration(pulls[(pulls.len() - 1) / 2]).into(),
                human::duration(pulls[pulls.len() - 1]).into(),
            ]);
        }
    }
    if t.is_empty() {
        return Vec::new();
    }
    vec![
        Block::heading(2, "Pulls as kubelet reported them"),
        Block::text("A kubernetes target's pull times in kubelet's own words (its Pulled event), one per pod whose kubelet pulled the image: from the image pull's start in kubelet to its end (containerd's fetch and unpack), without the queueing before it. The pull phase in the tables above runs from kubelet's Pulling event to its Pulled event as the API server stamped them."),
        Block::Table(t),
    ]
}
