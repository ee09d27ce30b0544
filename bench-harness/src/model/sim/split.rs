//! A node group splitting: when the registry admits only some of a group's requests, or nginx's
//! lock singles one node out, those nodes stop moving in lockstep with the rest and become a
//! group of their own, in the same state: their share of the group's links, a copy of every flow,
//! timer, fill wait and delayed start the group had.

use super::*;

impl Sim<'_> {
    /// Moves `nodes` of group `g` into a new group in the same state (its flows, timers and
    /// waits copied), and returns the new group.
    pub(super) fn split(&mut self, g: usize, nodes: f64) -> usize {
        let old_nodes = self.groups[g].nodes;
        let keep = old_nodes - nodes;
        let mut new = self.groups[g].clone();
        new.nodes = nodes;
        new.links = self.node_links(nodes);
        let old = self.groups[g].links;
        let r = self.rates;
        self.fabric.set_capacity(old.down, r.down * keep);
        self.fabric.set_capacity(old.up, r.up * keep);
        self.fabric.set_capacity(old.disk, r.disk * keep);
        if self.host_cpu.is_none() {
            self.fabric.set_capacity(old.cpu, r.cores * keep);
        }
        self.groups[g].nodes = keep;
        let links = new.links;
        self.groups.push(new);
        let ng = self.groups.len() - 1;
        let moved = [
            (old.down, links.down),
            (old.up, links.up),
            (old.disk, links.disk),
            (old.cpu, links.cpu),
        ];
        let map = |l: LinkId| moved.iter().find(|(o, _)| *o == l).map_or(l, |(_, n)| *n);
        let owned: Vec<(FlowId, Owner)> = self
            .owners
            .iter()
            .filter(|(_, o)| o.group() == Some(g))
            .map(|(f, o)| (*f, *o))
            .collect();
        for (flow, owner) in owned {
            let copy = self.fabric.clone_flow(flow, nodes, map);
            self.fabric.set_count(flow, keep);
            let moved = match owner {
                Owner::Blob(f) => Owner::Blob(f.in_group(ng)),
                Owner::Unpack(f) => Owner::Unpack(f.in_group(ng)),
                Owner::Fill(fill) => Owner::Fill(fill),
            };
            self.owners.insert(copy, moved);
        }
        let copies: Vec<(f64, Event)> = self
            .timers
            .iter()
            .filter(|Reverse(t)| t.event.group() == Some(g))
            .map(|Reverse(t)| (t.at, t.event.with_group(ng)))
            .collect();
        for (at, e) in copies {
            self.at(at, e);
        }
        for fill in &mut self.fills {
            let extra: Vec<Waiter> = fill
                .waiters
                .iter()
                .filter(|w| w.fetch.group == g)
                .map(|w| Waiter {
                    fetch: w.fetch.in_group(ng),
                    ..*w
                })
                .collect();
            fill.waiters.extend(extra);
        }
        let delayed: Vec<_> = self
            .delayed
            .iter()
            .filter(|d| d.1.group == g)
            .map(|d| {
                let mut spec = d.2.clone();
                spec.count = nodes;
                spec.links = spec.links.iter().map(|(l, w)| (map(*l), *w)).collect();
                (d.0, d.1.in_group(ng), spec)
            })
            .collect();
        for d in &mut self.delayed {
            if d.1.group == g {
                d.2.count = keep;
            }
        }
        self.delayed.extend(delayed);
        ng
    }
}
