//! The fabric: links with a capacity and the flows crossing them, rates shared max-min fairly by
//! progressive filling. It knows nothing of nodes, images or registries; `sim/` decides which
//! links a transfer crosses.
//!
//! A flow is a *class* of `count` identical transfers (one per node of a node group): each member
//! moves `remaining` more bytes at `rate`, and puts `weight * rate` on every link it crosses. A
//! link's capacity is its total over the instances it stands for (a node group's NICs together),
//! so a class of 5,000 nodes costs what one flow costs and rates are recomputed over classes,
//! not over nodes.
//!
//! A flow may follow a leader (cut-through: a reader of a fill in progress). While it has caught
//! up with its leader it cannot go faster than the leader, so progressive filling freezes it when
//! the leader freezes; once behind, it goes at its own share until it catches up again
//! ([`Fabric::next_event`] reports the catch-up).

/// Relative slack under which a link counts as saturated and two positions as equal.
const EPSILON: f64 = 1e-9;

/// Bytes per second standing in for "no limit" on a flow's own rate.
pub const UNLIMITED: f64 = 1e15;

/// A link, by index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LinkId(pub u32);

/// A flow, by index (reused after the flow is removed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowId(pub u32);

#[derive(Debug, Clone)]
struct Link {
    /// Bytes per second over all the instances it stands for.
    capacity: f64,
    residual: f64,
    demand: f64,
    /// The settle round that last listed this link.
    mark: u64,
    /// Bytes carried so far (all flows, all members).
    carried: f64,
}

/// What a new flow is.
#[derive(Debug, Clone)]
pub struct FlowSpec {
    /// Identical members (nodes) moving the same bytes at the same rate. Positive.
    pub count: f64,
    /// Bytes each member moves.
    pub bytes: f64,
    /// Links crossed, with the load one byte per second of one member puts on each.
    pub links: Vec<(LinkId, f64)>,
    /// Highest rate of one member, bytes per second.
    pub cap: f64,
    /// A flow this one cannot overtake (cut-through), if any.
    pub leader: Option<FlowId>,
}

#[derive(Debug, Clone)]
struct Flow {
    spec: FlowSpec,
    /// Bytes each member has moved.
    done: f64,
    rate: f64,
    frozen: bool,
    /// Index of this flow in `Fabric::active`.
    slot: usize,
}

/// What happens next in the fabric if nothing else changes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FabricEvent {
    /// The flow moves its last byte after this many seconds.
    Completes(FlowId, f64),
    /// The follower reaches its leader's position after this many seconds.
    CatchesUp(FlowId, f64),
}

/// Links and the flows on them.
#[derive(Debug, Default)]
pub struct Fabric {
    links: Vec<Link>,
    flows: Vec<Option<Flow>>,
    free: Vec<u32>,
    active: Vec<u32>,
    dirty: bool,
    /// Settle rounds so far (marks which links a round listed).
    round: u64,
}

impl Fabric {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a link of `capacity` bytes per second (`f64::INFINITY`: unlimited).
    pub fn link(&mut self, capacity: f64) -> LinkId {
        self.links.push(Link {
            capacity,
            residual: 0.0,
            demand: 0.0,
            mark: 0,
            carried: 0.0,
        });
        LinkId(u32::try_from(self.links.len() - 1).unwrap_or(u32::MAX))
    }

    /// Changes a link's capacity (a node group splitting hands part of its NICs to the new
    /// group).
    pub fn set_capacity(&mut self, link: LinkId, capacity: f64) {
        self.links[link.0 as usize].capacity = capacity;
        self.dirty = true;
    }

    /// Bytes a link has carried so far.
    pub fn carried(&self, link: LinkId) -> f64 {
        self.links[link.0 as usize].carried
    }

    pub fn start(&mut self, spec: FlowSpec) -> FlowId {
        let flow = Flow {
            spec,
            done: 0.0,
            rate: 0.0,
            frozen: false,
            slot: self.active.len(),
        };
        self.dirty = true;
        let id = self.free.pop().unwrap_or_else(|| {
            self.flows.push(None);
            u32::try_from(self.flows.len() - 1).unwrap_or(u32::MAX)
        });
        self.flows[id as usize] = Some(flow);
        self.active.push(id);
        FlowId(id)
    }

    /// Removes a flow (finished or abandoned). Followers of it go on alone.
    pub fn remove(&mut self, id: FlowId) {
        if let Some(f) = self.flows[id.0 as usize].take() {
            self.free.push(id.0);
            self.active.swap_remove(f.slot);
            if let Some(&moved) = self.active.get(f.slot) {
                if let Some(m) = self.flows[moved as usize].as_mut() {
                    m.slot = f.slot;
                }
            }
            self.dirty = true;
        }
    }

    pub fn exists(&self, id: FlowId) -> bool {
        self.flows.get(id.0 as usize).is_some_and(Option::is_some)
    }

    /// Changes the members of a flow (a node group split off some of its nodes).
    pub fn set_count(&mut self, id: FlowId, count: f64) {
        if let Some(f) = self.flows[id.0 as usize].as_mut() {
            f.spec.count = count;
            self.dirty = true;
        }
    }

    /// A copy of a flow with `count` members and every link mapped through `map`, at the same
    /// progress.
    pub fn clone_flow(&mut self, id: FlowId, count: f64, map: impl Fn(LinkId) -> LinkId) -> FlowId {
        let old = self.flow(id).clone();
        let mut spec = old.spec;
        spec.count = count;
        spec.links = spec.links.into_iter().map(|(l, w)| (map(l), w)).collect();
        let new = self.start(spec);
        if let Some(f) = self.flows[new.0 as usize].as_mut() {
            f.done = old.done;
        }
        new
    }

    fn flow(&self, id: FlowId) -> &Flow {
        self.flows[id.0 as usize]
            .as_ref()
            .expect("fabric flow used after removal")
    }

    /// Moves every flow forward by `dt` seconds at its current rate.
    pub fn advance(&mut self, dt: f64) {
        if dt <= 0.0 {
            return;
        }
        self.settle();
        for &i in &self.active {
            let f = self.flows[i as usize].as_mut().expect("active flow exists");
            let moved = (f.rate * dt).min(f.spec.bytes - f.done).max(0.0);
            f.done += moved;
            for (l, w) in &f.spec.links {
                self.links[l.0 as usize].carried += moved * w * f.spec.count;
            }
        }
    }

    /// The soonest completion or catch-up, if any flow moves.
    pub fn next_event(&mut self) -> Option<FabricEvent> {
        self.settle();
        let mut best: Option<FabricEvent> = None;
        let mut consider = |e: FabricEvent, t: f64| {
            let current = match best {
                Some(FabricEvent::Completes(_, b) | FabricEvent::CatchesUp(_, b)) => b,
                None => f64::INFINITY,
            };
            if t < current {
                best = Some(e);
            }
        };
        for &i in &self.active {
            let f = self.flows[i as usize].as_ref().expect("active flow exists");
            let left = f.spec.bytes - f.done;
            if left <= f.spec.bytes * EPSILON {
                consider(FabricEvent::Completes(FlowId(i), 0.0), 0.0);
                continue;
            }
            if f.rate > 0.0 {
                let t = left / f.rate;
                consider(FabricEvent::Completes(FlowId(i), t), t);
            }
            if let Some(leader) = f
                .spec
                .leader
                .and_then(|l| self.flows[l.0 as usize].as_ref())
            {
                let gap = leader.done - f.done;
                if gap > f.spec.bytes * EPSILON && f.rate > leader.rate {
                    let t = gap / (f.rate - leader.rate);
                    consider(FabricEvent::CatchesUp(FlowId(i), t), t);
                }
            }
        }
        best
    }

    /// Whether `id` has caught up with its leader (and so is held to its pace).
    fn tied(&self, f: &Flow) -> Option<u32> {
        let l = f.spec.leader?;
        let leader = self.flows[l.0 as usize].as_ref()?;
        let unfinished = leader.done < leader.spec.bytes * (1.0 - EPSILON);
        (unfinished && leader.done - f.done <= f.spec.bytes.max(1.0) * 1e-7).then_some(l.0)
    }

    /// A follower reached its leader: puts it exactly at the leader's position (so rounding
    /// cannot leave it a hair behind) and marks the rates stale.
    pub fn snap_to_leader(&mut self, id: FlowId) {
        let leader_done = self.flows[id.0 as usize]
            .as_ref()
            .and_then(|f| f.spec.leader)
            .and_then(|l| self.flows[l.0 as usize].as_ref())
            .map(|l| l.done);
        if let (Some(done), Some(f)) = (leader_done, self.flows[id.0 as usize].as_mut()) {
            f.done = done.min(f.spec.bytes);
        }
        self.dirty = true;
    }

    /// Recomputes rates if anything changed: progressive filling, every unfrozen flow's rate
    /// rising together until a link saturates or a flow reaches its cap, then freezing those
    /// flows (and any follower held to a frozen leader) and going on with the rest.
    fn settle(&mut self) {
        if !self.dirty {
            return;
        }
        self.dirty = false;
        self.round += 1;
        let links = self.reset_for_filling();
        let ties = self.ties();
        let mut freezing = vec![false; self.flows.len()];
        let mut level = 0.0_f64;
        let mut unfrozen = self.active.len();
        let mut touched: Vec<usize> = Vec::new();
        while unfrozen > 0 {
            let inc = self.increment(&links, level);
            level += inc;
            for &l in &links {
                let l = &mut self.links[l as usize];
                if l.demand > 0.0 {
                    l.residual -= l.demand * inc;
                }
            }
            touched.clear();
            self.saturated_flows(level, &mut touched, &mut freezing);
            self.held_followers(&ties, &mut touched, &mut freezing);
            if touched.is_empty() && inc == 0.0 {
                // Nothing can rise and nothing froze: stop rather than loop.
                break;
            }
            for &i in &touched {
                freezing[i] = false;
                self.freeze(i, level);
                unfrozen -= 1;
            }
        }
        for &i in &self.active {
            let f = self.flows[i as usize].as_mut().expect("active flow exists");
            if !f.frozen {
                f.rate = level;
            }
        }
    }

    /// Unfreezes every active flow at rate 0, and gives every link some flow crosses its full
    /// capacity as residual and the flows' summed weights as demand. Returns those links, each
    /// once.
    fn reset_for_filling(&mut self) -> Vec<u32> {
        let mut links: Vec<u32> = Vec::new();
        for &i in &self.active {
            let f = self.flows[i as usize].as_mut().expect("active flow exists");
            f.frozen = false;
            f.rate = 0.0;
            for (l, _) in &f.spec.links {
                let link = &mut self.links[l.0 as usize];
                if link.mark != self.round {
                    link.mark = self.round;
                    links.push(l.0);
                }
            }
        }
        for &l in &links {
            let link = &mut self.links[l as usize];
            link.residual = link.capacity;
            link.demand = 0.0;
        }
        for &i in &self.active {
            let f = self.flows[i as usize].as_ref().expect("active flow exists");
            for (l, w) in &f.spec.links {
                self.links[l.0 as usize].demand += w * f.spec.count;
            }
        }
        links
    }

    /// Followers held to a leader: (follower, leader), flow indices.
    fn ties(&self) -> Vec<(u32, u32)> {
        self.active
            .iter()
            .filter_map(|&i| {
                let f = self.flows[i as usize].as_ref().expect("active flow exists");
                Some((i, self.tied(f)?))
            })
            .collect()
    }

    /// How far every unfrozen flow's rate can rise together from `level` before a link
    /// saturates or a flow reaches its cap.
    fn increment(&self, links: &[u32], level: f64) -> f64 {
        let mut inc = f64::INFINITY;
        for &l in links {
            let l = &self.links[l as usize];
            if l.demand > 0.0 && l.capacity.is_finite() {
                inc = inc.min(l.residual.max(0.0) / l.demand);
            }
        }
        for &i in &self.active {
            let f = self.flows[i as usize].as_ref().expect("active flow exists");
            if !f.frozen {
                inc = inc.min((f.spec.cap - level).max(0.0));
            }
        }
        if inc.is_finite() {
            inc
        } else {
            UNLIMITED - level
        }
    }

    /// Marks (in `touched` and `freezing`) the unfrozen flows on a saturated link or at their
    /// cap at `level`.
    fn saturated_flows(&self, level: f64, touched: &mut Vec<usize>, freezing: &mut [bool]) {
        for &i in &self.active {
            let f = self.flows[i as usize].as_ref().expect("active flow exists");
            if f.frozen {
                continue;
            }
            let at_cap = f.spec.cap <= level * (1.0 + EPSILON);
            let saturated = f.spec.links.iter().any(|(l, _)| {
                let l = &self.links[l.0 as usize];
                l.capacity.is_finite() && l.residual <= l.capacity * EPSILON
            });
            if at_cap || saturated || level >= UNLIMITED {
                touched.push(i as usize);
                freezing[i as usize] = true;
            }
        }
    }

    /// Marks the followers held to a leader frozen now (or before): they freeze with it.
    fn held_followers(&self, ties: &[(u32, u32)], touched: &mut Vec<usize>, freezing: &mut [bool]) {
        loop {
            let mut more = false;
            for &(i, l) in ties {
                let leader_frozen = freezing[l as usize]
                    || self.flows[l as usize].as_ref().is_some_and(|f| f.frozen);
                let me = self.flows[i as usize].as_ref().expect("active flow exists");
                if leader_frozen && !me.frozen && !freezing[i as usize] {
                    touched.push(i as usize);
                    freezing[i as usize] = true;
                    more = true;
                }
            }
            if !more {
                break;
            }
        }
    }

    /// Freezes flow `i` at rate `level` and takes its demand off its links.
    fn freeze(&mut self, i: usize, level: f64) {
        let f = self.flows[i].as_mut().expect("active flow exists");
        f.frozen = true;
        f.rate = level;
        for (l, w) in &f.spec.links {
            self.links[l.0 as usize].demand -= w * f.spec.count;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Fabric {
        /// Current rate of one member, bytes per second.
        fn rate(&mut self, id: FlowId) -> f64 {
            self.settle();
            self.flow(id).rate
        }
    }

    fn spec(count: f64, bytes: f64, links: &[LinkId]) -> FlowSpec {
        FlowSpec {
            count,
            bytes,
            links: links.iter().map(|l| (*l, 1.0)).collect(),
            cap: UNLIMITED,
            leader: None,
        }
    }

    #[test]
    fn one_link_is_shared_equally_by_members() {
        let mut f = Fabric::new();
        let egress = f.link(100.0);
        let a = f.start(spec(4.0, 100.0, &[egress]));
        let b = f.start(spec(1.0, 100.0, &[egress]));
        assert!((f.rate(a) - 20.0).abs() < 1e-9);
        assert!((f.rate(b) - 20.0).abs() < 1e-9);
    }

    #[test]
    fn a_narrow_private_link_frees_share_for_the_others() {
        // Max-min: one flow held at 10 by its own link, the other gets the rest.
        let mut f = Fabric::new();
        let egress = f.link(100.0);
        let slow = f.link(10.0);
        let a = f.start(spec(1.0, 100.0, &[egress, slow]));
        let b = f.start(spec(1.0, 100.0, &[egress]));
        assert!((f.rate(a) - 10.0).abs() < 1e-9);
        assert!((f.rate(b) - 90.0).abs() < 1e-9);
    }

    #[test]
    fn a_caught_up_follower_is_held_to_its_leader() {
        let mut f = Fabric::new();
        let upstream = f.link(10.0);
        let downstream = f.link(1000.0);
        let fill = f.start(spec(1.0, 100.0, &[upstream]));
        let mut s = spec(8.0, 100.0, &[downstream]);
        s.leader = Some(fill);
        let reader = f.start(s);
        assert!((f.rate(reader) - 10.0).abs() < 1e-9);
        assert_eq!(f.next_event(), Some(FabricEvent::Completes(fill, 10.0)));
    }

    #[test]
    fn a_late_follower_runs_until_it_catches_up() {
        let mut f = Fabric::new();
        let upstream = f.link(10.0);
        let downstream = f.link(40.0);
        let fill = f.start(spec(1.0, 100.0, &[upstream]));
        f.advance(5.0);
        let mut s = spec(1.0, 100.0, &[downstream]);
        s.leader = Some(fill);
        let reader = f.start(s);
        assert!(f.exists(reader));
        // 50 bytes behind, 30 bytes/s faster: catches up after 5/3 s.
        match f.next_event() {
            Some(FabricEvent::CatchesUp(id, t)) => {
                assert_eq!(id, reader);
                assert!((t - 50.0 / 30.0).abs() < 1e-9, "{t}");
            }
            other => panic!("{other:?}"),
        }
    }
}
