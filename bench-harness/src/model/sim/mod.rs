//! One modelled burst of one (variant, target): a discrete-event loop over node groups, the
//! registry and the target, with every transfer a flow in the [`Fabric`].
//!
//! Nodes that arrive at the same moments with the same pods are one *group* and move in lockstep,
//! so a burst of 5,000 nodes is one group whose links stand for 5,000 NICs, disks and CPUs. A
//! group splits when its nodes stop being alike: the registry admits only part of its requests
//! (the rest get 429 and retry after `Retry-After`), or nginx's lock lets one of them stream the
//! fill while the others wait. Each node of a group pulls as kubelet and containerd do: pulls
//! queued per node (`max_parallel_image_pulls`), per image the manifest requests one after the
//! other, then the config, then the layers `max_concurrent_downloads` at a time; once every layer
//! is fetched, the layers are unpacked one after the other in manifest order on the node's CPU
//! (as the harness and `ctr pull` do); the container starts when every image of the pod is there
//! and is ready at the first probe after `init`.
//!
//! Targets, as they behave:
//! - direct: every node GETs every blob from the registry (registry egress, node link, disk,
//!   hashing on the node's CPU).
//! - per-node cache: the same path plus the cache's cost on the node (disk and hashing twice,
//!   its request overhead and stream limit).
//! - shared cache-daemon: one fill per blob from the registry; readers stream it as it lands
//!   (cut-through: a reader is held to the fill's pace once it has caught up).
//! - nginx: one fill per blob; the first requester streams it, the others get nothing until the
//!   fill completes and they look again (`cache.lock_poll`).
//! - distribution's proxy: no coalescing: every miss while the blob is not yet stored is its
//!   own upstream GET; once one completes the blob is served from the proxy's store.
//! - cluster: one registry copy per blob, fetched as stripes by their owners (`cluster.stripe`),
//!   passed on node to node cut-through with at most `cluster.fan_out` children per node: a
//!   node receives all stripes at once, each from a parent whose uplink is shared by `fan_out`
//!   children, and every node uploads about one copy (the cohort that triggered the fill
//!   uploads `(n - 1) / n`). The tree's depth adds `hop_latency` per level to the first byte.

mod cache;
mod split;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet, VecDeque};
use std::time::Duration;

use super::fabric::{Fabric, FabricEvent, FlowId, FlowSpec, LinkId, UNLIMITED};
use super::image::Image;
use super::profile::{CtrCosts, Profile};
use super::registry::{Bucket, Served};
use crate::run::recorder::{FailureKind, LayerTimes, PodTimes, PullTimes, Recorder, RunKey};
use crate::scenario::{Placement, PullerKind, Scenario, Target, TargetKind, Variant};

/// Attempts per request when the registry answers 429, as the harness's client makes them.
const MAX_THROTTLED_ATTEMPTS: u32 = 5;
/// Longest Retry-After honoured, as the harness's client caps it.
const MAX_RETRY_AFTER: f64 = 30.0;
/// Pods are scheduled on this grid (an offset moves at most half of it), so that nodes of a
/// ramp arriving within one step move together as one group instead of one group each: a
/// 5,000-node ramp over a minute is then about 600 groups, not 5,000. Bursts, and waves at
/// multiples of 100 ms, are unchanged.
pub const ARRIVAL_GRID: Duration = Duration::from_millis(100);
/// Events after which a burst is abandoned as runaway (a bug, not a scenario).
const MAX_EVENTS: u64 = 50_000_000;

/// What one burst needs: the scenario, the profile, every variant's image, and the (variant,
/// target) pulled.
#[derive(Debug, Clone, Copy)]
pub struct Setup<'a> {
    pub scenario: &'a Scenario,
    pub profile: &'a Profile,
    pub images: &'a BTreeMap<String, Image>,
    pub variant: &'a Variant,
    pub target: &'a Target,
}

/// What one burst produced.
#[derive(Debug)]
pub struct Outcome {
    /// Per-pod and per-layer recordings, as a measured burst has them.
    pub recorder: Recorder,
    pub served: Served,
    /// Bytes each node uploaded to peers, mean (cluster mode; 0 otherwise).
    pub upload_bytes_per_node: f64,
    pub events: u64,
}

/// Why a burst cannot be modelled.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A scenario field the model cannot express.
    #[error("{field}: {why}")]
    Unsupported { field: String, why: String },
    /// The loop ran away.
    #[error("modelled burst of {variant}/{target} did not settle after {MAX_EVENTS} events")]
    Runaway { variant: String, target: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    Direct,
    PerNodeCache,
    SharedCache,
    Nginx,
    Distribution,
    Cluster,
}

#[derive(Debug, Clone, Copy)]
struct NodeLinks {
    down: LinkId,
    up: LinkId,
    disk: LinkId,
    cpu: LinkId,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct PodEntry {
    scheduled: f64,
    wave: u32,
    per_node: u32,
}

#[derive(Debug, Clone)]
enum ImageState {
    Queued,
    Pulling,
    Present(PullTimes),
}

#[derive(Debug, Clone)]
struct Pull {
    started: f64,
    first_byte: Option<f64>,
    next_layer: usize,
    fetching: u32,
    unfetched: usize,
    unpacking: usize,
    config_done: bool,
    /// When the layers' unpack was queued (each layer's unpack time counts from its turn).
    unpack_from: f64,
    requested: Vec<f64>,
    fetched_at: Vec<f64>,
}

#[derive(Debug, Clone)]
struct Group {
    nodes: f64,
    links: NodeLinks,
    images: Vec<Option<ImageState>>,
    queue: VecDeque<usize>,
    pulling: u32,
    pulls: Vec<Option<Pull>>,
    waiting_pods: Vec<PodEntry>,
    have: HashSet<String>,
    unpack_queue: VecDeque<(usize, usize)>,
    unpack_busy: bool,
    failed: bool,
}

/// One node group's fetch of one blob of one pod image: indices into `groups`, `pod_images`
/// and that image's `blobs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fetch {
    group: usize,
    image: usize,
    blob: usize,
}

impl Fetch {
    fn new(group: usize, image: usize, blob: usize) -> Self {
        Self { group, image, blob }
    }

    fn in_group(self, group: usize) -> Self {
        Self { group, ..self }
    }
}

/// One node group's manifest request `step` (0: the first) for one pod image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Step {
    group: usize,
    image: usize,
    step: u32,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Event {
    Arrive(usize, PodEntry),
    /// A manifest GET to the registry, and its attempt.
    Manifest(Step, u32),
    ManifestDone(Step),
    /// A blob GET to the registry, and its attempt.
    BlobRequest(Fetch, u32),
    BlobStart(Fetch),
    FillRequest(usize),
    FillStart(usize),
    Serve(Fetch),
}

impl Event {
    fn group(&self) -> Option<usize> {
        match *self {
            Self::Arrive(group, _) => Some(group),
            Self::Manifest(m, _) | Self::ManifestDone(m) => Some(m.group),
            Self::BlobRequest(f, _) | Self::BlobStart(f) | Self::Serve(f) => Some(f.group),
            Self::FillRequest(_) | Self::FillStart(_) => None,
        }
    }

    fn with_group(mut self, g: usize) -> Self {
        match &mut self {
            Self::Arrive(group, _) => *group = g,
            Self::Manifest(m, _) | Self::ManifestDone(m) => m.group = g,
            Self::BlobRequest(f, _) | Self::BlobStart(f) | Self::Serve(f) => f.group = g,
            Self::FillRequest(_) | Self::FillStart(_) => {}
        }
        self
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Timer {
    at: f64,
    seq: u64,
    event: Event,
}

impl Eq for Timer {}
impl PartialOrd for Timer {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Timer {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.at.total_cmp(&other.at).then(self.seq.cmp(&other.seq))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    Blob(Fetch),
    Unpack(Fetch),
    Fill(usize),
}

impl Owner {
    fn group(&self) -> Option<usize> {
        match self {
            Self::Blob(f) | Self::Unpack(f) => Some(f.group),
            Self::Fill(_) => None,
        }
    }
}

/// A waiter on a cache fill.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Waiter {
    fetch: Fetch,
    since: f64,
    /// Streams the fill as it lands (cache-daemon readers, nginx's lock holder) rather than
    /// waiting for it to complete (nginx's other requesters).
    streams: bool,
    /// Part of the cohort whose request started the fill (cluster upload weight).
    cohort: bool,
}

#[derive(Debug, Clone)]
struct Fill {
    key: String,
    bytes: f64,
    flow: Option<FlowId>,
    waiters: Vec<Waiter>,
    stripes: u64,
}

/// Per-node rates, in bytes per second (CPU costs in core-seconds per byte).
#[derive(Debug, Clone, Copy)]
struct Rates {
    down: f64,
    up: f64,
    disk: f64,
    cores: f64,
    hash_cost: f64,
    node_stream: f64,
    cache_stream: f64,
}

/// Pods arriving on a node: ((offset in ns, wave), pods).
type Arrival = ((u64, u32), u32);

/// One burst in progress.
struct Sim<'a> {
    setup: Setup<'a>,
    via: Via,
    pod_images: Vec<&'a Image>,
    rates: Rates,
    fabric: Fabric,
    egress: LinkId,
    cache_serve: LinkId,
    host_cpu: Option<LinkId>,
    now: f64,
    seq: u64,
    timers: BinaryHeap<Reverse<Timer>>,
    groups: Vec<Group>,
    owners: HashMap<FlowId, Owner>,
    bucket: Option<Bucket>,
    retry_after: f64,
    served: Served,
    fills: Vec<Fill>,
    fill_of: HashMap<String, usize>,
    present: HashSet<String>,
    recorder: Recorder,
    cluster_depth: f64,
    /// Readers whose flow starts at a later moment (first byte after the tree's hops): when,
    /// whose, the flow.
    delayed: Vec<(f64, Fetch, FlowSpec)>,
}

/// Models one burst.
///
/// # Errors
/// [`SimError::Unsupported`] naming a field the model cannot express, or
/// [`SimError::Runaway`].
pub fn burst(setup: Setup<'_>) -> Result<Outcome, SimError> {
    let mut sim = Sim::new(setup)?;
    sim.schedule_arrivals();
    let events = sim.run()?;
    let upload_bytes_per_node = sim.upload_per_node();
    Ok(Outcome {
        recorder: sim.recorder,
        served: sim.served,
        upload_bytes_per_node,
        events,
    })
}

/// Whether the model can express `target` (`targets[index]`), checked before anything else so a
/// target it refuses (a mirror it did not start, a real cluster) is named first.
///
/// # Errors
/// [`SimError::Unsupported`] naming the field.
pub fn check_target(target: &Target, index: usize) -> Result<(), SimError> {
    via(target, index).map(drop)
}

fn via(target: &Target, index: usize) -> Result<Via, SimError> {
    Ok(match &target.kind {
        TargetKind::Direct => Via::Direct,
        TargetKind::CacheDaemon { placement } => match placement {
            Placement::PerNode => Via::PerNodeCache,
            Placement::Shared => Via::SharedCache,
            Placement::Cluster => Via::Cluster,
        },
        TargetKind::Nginx {
            placement: Placement::Shared,
        } => Via::Nginx,
        TargetKind::Nginx { .. } => {
            return Err(SimError::Unsupported {
                field: format!("targets[{index}].placement"),
                why: "the model has nginx as one cache in front of all nodes; nginx on every node is not modelled".into(),
            })
        }
        TargetKind::DistributionProxy => Via::Distribution,
        TargetKind::Kubernetes(_) => {
            return Err(SimError::Unsupported {
                field: format!("targets[{index}].kind"),
                why: "\"kubernetes\" is a real cluster that `bench-harness run` measures through its API; the model does not know that cluster's nodes, runtime or registry, so it cannot predict it. Model the nodes as the kind of cache they pull through (direct, cache-daemon, nginx, distribution-proxy), or run the scenario against the cluster".into(),
            })
        }
        TargetKind::Mirror { .. } => {
            return Err(SimError::Unsupported {
                field: format!("targets[{index}].kind"),
                why: "\"mirror\" is a mirror the harness did not start, so the model does not know how it behaves; model it as the kind it is (cache-daemon, nginx, distribution-proxy)".into(),
            })
        }
    })
}

/// Bytes a kernel-shaped (`tc tbf`) link is charged per byte of TCP payload: at MTU 1500 each
/// 1448-byte segment travels with 66 bytes of Ethernet (14), IPv4 (20) and TCP headers with
/// timestamps (32), and tbf charges every segment's headers, GSO or not. Protocol arithmetic,
/// not a fitted constant: a 20 Mbit/s tbf carries 19.1 Mbit/s of bodies.
pub const TBF_FRAMING: f64 = 1514.0 / 1448.0;

/// Everything one shared cache serves per second: its CPU's rate (`cache.serve_rate`), and, with
/// nodes in network namespaces, its own link too: the harness puts a shared cache in a service
/// namespace whose link is shaped like a node's (`registry.node_link`, `src/nodes/mod.rs`), so
/// every stream it serves crosses that one link.
fn shared_cache_rate(sc: &Scenario, p: &Profile) -> f64 {
    let cpu = p.cache.serve_rate.bytes_per_sec as f64;
    if sc.network.namespaces() {
        cpu.min(node_link_rate(sc))
    } else {
        cpu
    }
}

/// Body bytes per second of a node's link: nodes as tasks pace `node_link` in user space on
/// body bytes; as network namespaces it is a tbf.
fn node_link_rate(sc: &Scenario) -> f64 {
    let link = rate(sc.registry.node_link);
    if sc.network.namespaces() {
        link / TBF_FRAMING
    } else {
        link
    }
}

/// The profile's `[ctr]` costs when the scenario pulls with `ctr`; otherwise (another puller,
/// or a profile without them) the node's own costs apply.
pub fn ctr_costs<'p>(sc: &Scenario, p: &'p Profile) -> Option<&'p CtrCosts> {
    (sc.runtime.puller == PullerKind::Ctr)
        .then_some(p.ctr.as_ref())
        .flatten()
}

fn rate(b: Option<crate::scenario::units::Bandwidth>) -> f64 {
    b.map_or(f64::INFINITY, |b| b.bytes_per_sec as f64)
}

fn dur(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

impl<'a> Sim<'a> {
    fn new(setup: Setup<'a>) -> Result<Self, SimError> {
        let sc = setup.scenario;
        let p = setup.profile;
        let index = sc
            .targets
            .iter()
            .position(|t| t.name == setup.target.name)
            .unwrap_or(0);
        let via = via(setup.target, index)?;
        let pod_images = std::iter::once(&setup.variant.name)
            .chain(&setup.variant.sidecars)
            .map(|name| {
                setup.images.get(name).ok_or_else(|| SimError::Unsupported {
                    field: format!("variants ({name})"),
                    why: "no sizes known for this image".into(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut fabric = Fabric::new();
        // `egress` is paced in user space on body bytes; `netns_rate` is a kernel tbf.
        let egress_cap = rate(sc.registry.egress).min(rate(sc.registry.netns_rate) / TBF_FRAMING);
        let egress = fabric.link(egress_cap);
        let cache_serve = fabric.link(shared_cache_rate(sc, p));
        let host_cpu = p
            .node
            .shared_host_cores
            .map(|c| fabric.link(f64::from(c.max(1))));
        let down = node_link_rate(sc);
        let rates = Rates {
            down,
            up: p.node.uplink.map_or(down, |u| u.bytes_per_sec as f64),
            disk: p.node.disk_write.bytes_per_sec as f64,
            cores: f64::from(p.node.cores.max(1)),
            hash_cost: 1.0 / p.node.hash_rate.bytes_per_sec.max(1) as f64,
            node_stream: ctr_costs(sc, p)
                .map_or(p.node.stream_rate, |c| c.stream_rate)
                .bytes_per_sec as f64,
            cache_stream: p.cache.stream_rate.bytes_per_sec as f64,
        };
        let total_nodes = f64::from(sc.total_nodes().max(1));
        let fan_out = f64::from(p.cluster.fan_out.max(1));
        let cluster_depth = if fan_out <= 1.0 {
            total_nodes - 1.0
        } else {
            (total_nodes.ln() / fan_out.ln()).ceil().max(0.0)
        };
        let throttle = sc.registry.throttle.as_ref();
        Ok(Self {
            setup,
            via,
            pod_images,
            rates,
            fabric,
            egress,
            cache_serve,
            host_cpu,
            now: 0.0,
            seq: 0,
            timers: BinaryHeap::new(),
            groups: Vec::new(),
            owners: HashMap::new(),
            bucket: throttle.map(Bucket::new),
            retry_after: throttle
                .map_or(1.0, |t| t.retry_after.0.as_secs_f64().min(MAX_RETRY_AFTER)),
            served: Served::default(),
            fills: Vec::new(),
            fill_of: HashMap::new(),
            present: HashSet::new(),
            recorder: Recorder::new(RunKey {
                variant: setup.variant.name.clone(),
                target: setup.target.name.clone(),
                repetition: 0,
            }),
            cluster_depth,
            delayed: Vec::new(),
        })
    }

    /// containerd's costs when it is the puller and the profile has them.
    fn ctr(&self) -> Option<&'a CtrCosts> {
        ctr_costs(self.setup.scenario, self.setup.profile)
    }

    fn node_links(&mut self, nodes: f64) -> NodeLinks {
        let r = self.rates;
        NodeLinks {
            down: self.fabric.link(r.down * nodes),
            up: self.fabric.link(r.up * nodes),
            disk: self.fabric.link(r.disk * nodes),
            cpu: match self.host_cpu {
                Some(l) => l,
                None => self.fabric.link(r.cores * nodes),
            },
        }
    }

    fn at(&mut self, at: f64, event: Event) {
        self.seq += 1;
        self.timers.push(Reverse(Timer {
            at,
            seq: self.seq,
            event,
        }));
    }

    /// Groups nodes by their pods' arrival (same offsets on [`ARRIVAL_GRID`] and waves: same
    /// group) and schedules each group's arrivals.
    fn schedule_arrivals(&mut self) {
        let mut per_node: BTreeMap<u32, BTreeMap<(u64, u32), u32>> = BTreeMap::new();
        for slot in self.setup.scenario.schedule() {
            let nanos = u64::try_from(slot.offset.as_nanos()).unwrap_or(u64::MAX);
            let grid = u64::try_from(ARRIVAL_GRID.as_nanos()).unwrap_or(1).max(1);
            let offset = (nanos.saturating_add(grid / 2) / grid).saturating_mul(grid);
            *per_node
                .entry(slot.node)
                .or_default()
                .entry((offset, slot.wave))
                .or_default() += 1;
        }
        let mut signatures: BTreeMap<Vec<Arrival>, u32> = BTreeMap::new();
        for pods in per_node.into_values() {
            *signatures.entry(pods.into_iter().collect()).or_default() += 1;
        }
        for (signature, nodes) in signatures {
            let nodes = f64::from(nodes);
            let links = self.node_links(nodes);
            let images = self.pod_images.len();
            self.groups.push(Group {
                nodes,
                links,
                images: vec![None; images],
                queue: VecDeque::new(),
                pulling: 0,
                pulls: vec![None; images],
                waiting_pods: Vec::new(),
                have: HashSet::new(),
                unpack_queue: VecDeque::new(),
                unpack_busy: false,
                failed: false,
            });
            let group = self.groups.len() - 1;
            for ((offset, wave), per_node) in signature {
                let scheduled = offset as f64 / 1e9;
                let pod = PodEntry {
                    scheduled,
                    wave,
                    per_node,
                };
                self.at(scheduled, Event::Arrive(group, pod));
            }
        }
    }

    fn run(&mut self) -> Result<u64, SimError> {
        let mut events = 0u64;
        loop {
            events += 1;
            if events > MAX_EVENTS {
                return Err(SimError::Runaway {
                    variant: self.setup.variant.name.clone(),
                    target: self.setup.target.name.clone(),
                });
            }
            let timer_at = self.timers.peek().map(|Reverse(t)| t.at);
            let fabric_next = self.fabric.next_event();
            let fabric_at = fabric_next.map(|e| match e {
                FabricEvent::Completes(_, t) | FabricEvent::CatchesUp(_, t) => self.now + t,
            });
            let use_timer = match (timer_at, fabric_at) {
                (None, None) => return Ok(events),
                (Some(t), Some(f)) => t <= f,
                (Some(_), None) => true,
                (None, Some(_)) => false,
            };
            let at = if use_timer { timer_at } else { fabric_at }.unwrap_or(self.now);
            self.advance_to(at);
            if use_timer {
                // Every timer due now, before rates are recomputed once for all of them.
                while let Some(Reverse(t)) = self.timers.peek().copied() {
                    if t.at > at {
                        break;
                    }
                    self.timers.pop();
                    self.handle(t.event);
                }
            } else {
                match fabric_next {
                    Some(FabricEvent::Completes(flow, _)) => self.flow_done(flow),
                    Some(FabricEvent::CatchesUp(flow, _)) => self.fabric.snap_to_leader(flow),
                    None => {}
                }
            }
        }
    }

    fn advance_to(&mut self, at: f64) {
        let dt = at - self.now;
        if dt > 0.0 {
            let before = self.fabric.carried(self.egress);
            self.fabric.advance(dt);
            let sent = self.fabric.carried(self.egress) - before;
            self.served.bytes(sent, self.now, at);
            self.now = at;
        }
    }

    fn handle(&mut self, event: Event) {
        if let Some(g) = event.group().filter(|&g| self.groups[g].failed) {
            if let Event::Arrive(_, pod) = event {
                self.fail_pods(g, &[pod]);
            }
            return;
        }
        match event {
            Event::Arrive(group, pod) => self.arrive(group, pod),
            Event::Manifest(m, attempt) => self.manifest(m, attempt),
            Event::ManifestDone(m) => {
                if m.step + 1 < self.pod_images[m.image].manifest_requests {
                    self.manifest(
                        Step {
                            step: m.step + 1,
                            ..m
                        },
                        1,
                    );
                } else {
                    self.request_blob(Fetch::new(m.group, m.image, 0));
                }
            }
            Event::BlobRequest(f, attempt) => self.registry_blob_request(f, attempt),
            Event::BlobStart(f) => self.start_direct_flow(f),
            Event::FillRequest(fill) => self.fill_request(fill),
            Event::FillStart(fill) => self.fill_start(fill),
            Event::Serve(f) => self.serve_present(f, 0.0),
        }
    }

    // ---- pods and pulls -------------------------------------------------------------------

    fn arrive(&mut self, g: usize, pod: PodEntry) {
        let mut missing = false;
        for i in 0..self.pod_images.len() {
            match self.groups[g].images[i] {
                Some(ImageState::Present(_)) => {}
                Some(_) => missing = true,
                None => {
                    missing = true;
                    self.groups[g].images[i] = Some(ImageState::Queued);
                    self.groups[g].queue.push_back(i);
                }
            }
        }
        if missing {
            self.groups[g].waiting_pods.push(pod);
            self.start_pulls(g);
        } else {
            self.record_pods(g, &[pod], None);
        }
    }

    fn start_pulls(&mut self, g: usize) {
        let runtime = &self.setup.scenario.runtime;
        let limit = runtime.parallel_image_pulls_limit().unwrap_or(u32::MAX);
        while self.groups[g].pulling < limit {
            let Some(i) = self.groups[g].queue.pop_front() else {
                break;
            };
            let image = self.pod_images[i];
            let layers = image.blobs.len();
            let group = &mut self.groups[g];
            group.pulling += 1;
            group.images[i] = Some(ImageState::Pulling);
            group.pulls[i] = Some(Pull {
                started: self.now,
                first_byte: None,
                next_layer: 1,
                fetching: 0,
                unfetched: layers,
                unpacking: 0,
                config_done: false,
                unpack_from: 0.0,
                requested: vec![0.0; layers],
                fetched_at: vec![0.0; layers],
            });
            let overhead = self.ctr().map_or(0.0, |c| c.pull_overhead.0.as_secs_f64());
            let first = Step {
                group: g,
                image: i,
                step: 0,
            };
            if image.manifest_requests == 0 {
                self.request_blob(Fetch::new(g, i, 0));
            } else if overhead > 0.0 {
                // containerd's own cost per pull comes before its first request.
                self.at(self.now + overhead, Event::Manifest(first, 1));
            } else {
                self.manifest(first, 1);
            }
        }
    }

    /// The registry admits part of `wanted` requests from group `g`; the rest are split off
    /// into a new group that retries after Retry-After (or fails after the last attempt).
    /// Returns the group that goes on, if any.
    fn admit(&mut self, g: usize, kind: &str, attempt: u32, retry: Event) -> Option<usize> {
        let wanted = self.groups[g].nodes as u64;
        let admitted = self.tokens(wanted);
        self.served
            .requests(kind, wanted, wanted - admitted, self.now);
        if admitted == wanted {
            return Some(g);
        }
        let (goes_on, throttled) = if admitted == 0 {
            (None, g)
        } else {
            (Some(g), self.split(g, (wanted - admitted) as f64))
        };
        if attempt >= MAX_THROTTLED_ATTEMPTS {
            self.fail_group(throttled);
        } else {
            let at = self.now + self.retry_after;
            self.at(at, retry.with_group(throttled));
        }
        goes_on
    }

    /// Of `wanted` requests now, how many the registry's token bucket admits (all without one).
    fn tokens(&mut self, wanted: u64) -> u64 {
        let now = self.now;
        self.bucket
            .as_mut()
            .map_or(wanted, |b| b.admit(wanted, now))
    }

    fn request_latency(&self) -> f64 {
        let p = self.setup.profile;
        let node = p.node.request_overhead.0.as_secs_f64();
        let cache = p.cache.request_overhead.0.as_secs_f64();
        match self.via {
            Via::Direct => node,
            _ => node + cache,
        }
    }

    fn registry_latency(&self) -> f64 {
        self.setup.scenario.registry.latency.0.as_secs_f64()
    }

    fn manifest(&mut self, m: Step, attempt: u32) {
        let retry = Event::Manifest(m, attempt + 1);
        let Some(group) = self.admit(m.group, "manifest_get", attempt, retry) else {
            return;
        };
        let image = self.pod_images[m.image];
        let each = image.manifest_bytes as f64 / f64::from(image.manifest_requests.max(1));
        self.served
            .bytes(each * self.groups[group].nodes, self.now, self.now);
        let at = self.now + self.request_latency() + self.registry_latency();
        self.at(at, Event::ManifestDone(Step { group, ..m }));
    }

    fn request_blob(&mut self, f: Fetch) {
        let key = self.pod_images[f.image].blobs[f.blob].key.clone();
        if let Some(pull) = self.groups[f.group].pulls[f.image].as_mut() {
            pull.requested[f.blob] = self.now;
            pull.fetching += 1;
        }
        if self.groups[f.group].have.contains(&key) {
            self.blob_fetched(f);
            return;
        }
        match self.via {
            Via::Direct | Via::PerNodeCache => self.registry_blob_request(f, 1),
            Via::SharedCache | Via::Nginx | Via::Cluster => self.cache_request(f),
            Via::Distribution => {
                if self.present.contains(&key) {
                    let lat = self.request_latency();
                    self.serve_present(f, lat);
                } else {
                    self.registry_blob_request(f, 1);
                }
            }
        }
    }

    fn registry_blob_request(&mut self, f: Fetch, attempt: u32) {
        let retry = Event::BlobRequest(f, attempt + 1);
        let Some(g) = self.admit(f.group, "blob_get", attempt, retry) else {
            return;
        };
        let key = &self.pod_images[f.image].blobs[f.blob].key;
        self.served.blob_gets(key, self.groups[g].nodes as u64);
        let at = self.now + self.request_latency() + self.registry_latency();
        self.at(at, Event::BlobStart(f.in_group(g)));
    }

    /// A blob streamed from the registry to every node of the group (direct, per-node cache,
    /// distribution's uncoalesced miss).
    fn start_direct_flow(&mut self, f: Fetch) {
        let blob = &self.pod_images[f.image].blobs[f.blob];
        let l = self.groups[f.group].links;
        let r = self.rates;
        let mut links = vec![(self.egress, 1.0)];
        if self.via == Via::Distribution {
            links.push((self.cache_serve, 1.0));
        }
        // A per-node cache writes and hashes every byte once more on the node.
        let copies = if self.via == Via::PerNodeCache {
            2.0
        } else {
            1.0
        };
        links.extend([
            (l.down, 1.0),
            (l.disk, copies),
            (l.cpu, copies * r.hash_cost),
        ]);
        let cap = if self.via == Via::Direct {
            r.node_stream
        } else {
            r.node_stream.min(r.cache_stream)
        };
        let spec = FlowSpec {
            count: self.groups[f.group].nodes,
            bytes: blob.bytes as f64,
            links,
            cap,
            leader: None,
        };
        self.start_blob_flow(f, spec);
    }

    fn start_blob_flow(&mut self, f: Fetch, spec: FlowSpec) {
        if let Some(pull) = self.groups[f.group].pulls[f.image].as_mut() {
            pull.first_byte.get_or_insert(self.now);
        }
        let flow = self.fabric.start(spec);
        self.owners.insert(flow, Owner::Blob(f));
    }

    // ---- completions ----------------------------------------------------------------------

    fn flow_done(&mut self, flow: FlowId) {
        self.fabric.remove(flow);
        match self.owners.remove(&flow) {
            Some(Owner::Blob(f)) => {
                if self.via == Via::Distribution {
                    let key = self.pod_images[f.image].blobs[f.blob].key.clone();
                    self.present.insert(key);
                }
                self.blob_fetched(f);
            }
            Some(Owner::Unpack(f)) => self.unpacked(f),
            Some(Owner::Fill(fill)) => self.fill_done(fill),
            None => {}
        }
    }

    fn blob_fetched(&mut self, f: Fetch) {
        let (g, i, b) = (f.group, f.image, f.blob);
        let image = self.pod_images[i];
        let blob = &image.blobs[b];
        self.groups[g].have.insert(blob.key.clone());
        let now = self.now;
        let unpack = self.setup.scenario.runtime.unpack;
        let Some(pull) = self.groups[g].pulls[i].as_mut() else {
            return;
        };
        pull.fetching -= 1;
        pull.unfetched -= 1;
        pull.fetched_at[b] = now;
        if b == 0 {
            pull.config_done = true;
        }
        let all_fetched = pull.unfetched == 0;
        if unpack && all_fetched {
            // As the harness and `ctr pull` do: every layer fetched, then unpacked in manifest
            // order, one at a time.
            let layers: Vec<usize> = (0..image.blobs.len())
                .filter(|&b| image.blobs[b].layer)
                .collect();
            pull.unpacking = layers.len();
            pull.unpack_from = now;
            self.groups[g]
                .unpack_queue
                .extend(layers.into_iter().map(|b| (i, b)));
            self.next_unpack(g);
        }
        if !unpack && blob.layer {
            self.record_layer(f, 0.0);
        }
        self.next_layers(g, i);
        self.maybe_pull_done(g, i);
    }

    fn next_layers(&mut self, g: usize, i: usize) {
        let limit = self.setup.scenario.runtime.max_concurrent_downloads.max(1);
        let blobs = self.pod_images[i].blobs.len();
        loop {
            let Some(pull) = self.groups[g].pulls[i].as_mut() else {
                return;
            };
            // The config comes first, alone; then layers, `limit` at a time.
            if !pull.config_done || pull.fetching >= limit || pull.next_layer >= blobs {
                return;
            }
            let b = pull.next_layer;
            pull.next_layer += 1;
            self.request_blob(Fetch::new(g, i, b));
        }
    }

    fn next_unpack(&mut self, g: usize) {
        if self.groups[g].unpack_busy {
            return;
        }
        let Some((i, b)) = self.groups[g].unpack_queue.pop_front() else {
            return;
        };
        let blob = &self.pod_images[i].blobs[b];
        let cost = self.unpack_cost(blob.compression);
        let cpu = self.groups[g].links.cpu;
        let flow = self.fabric.start(FlowSpec {
            count: self.groups[g].nodes,
            bytes: blob.uncompressed_bytes as f64,
            links: vec![(cpu, cost)],
            cap: 1.0 / cost,
            leader: None,
        });
        self.groups[g].unpack_busy = true;
        self.owners.insert(flow, Owner::Unpack(Fetch::new(g, i, b)));
    }

    /// Core-seconds per uncompressed byte to decompress and apply a layer.
    fn unpack_cost(&self, compression: stampede_oci::Compression) -> f64 {
        if let Some(ctr) = self.ctr() {
            return 1.0 / ctr.unpack.bytes_per_sec.max(1) as f64;
        }
        let p = self.setup.profile;
        let apply = 1.0 / p.unpack.apply.bytes_per_sec.max(1) as f64;
        apply
            + p.decompress_rate(compression)
                .map_or(0.0, |r| 1.0 / r.max(1.0))
    }

    fn unpacked(&mut self, f: Fetch) {
        let g = f.group;
        self.groups[g].unpack_busy = false;
        let started = self.groups[g].pulls[f.image]
            .as_ref()
            .map_or(self.now, |p| p.unpack_from);
        let took = self.now - started;
        self.record_layer(f, took);
        let now = self.now;
        if let Some(pull) = self.groups[g].pulls[f.image].as_mut() {
            pull.unpacking -= 1;
            pull.unpack_from = now;
        }
        self.next_unpack(g);
        self.maybe_pull_done(g, f.image);
    }

    fn record_layer(&mut self, f: Fetch, unpack: f64) {
        let blob = &self.pod_images[f.image].blobs[f.blob];
        let Some(pull) = self.groups[f.group].pulls[f.image].as_ref() else {
            return;
        };
        let fetch = pull.fetched_at[f.blob] - pull.requested[f.blob];
        let p = self.setup.profile;
        let dec = p
            .decompress_rate(blob.compression)
            .map_or(0.0, |r| 1.0 / r.max(1.0));
        let apply = 1.0 / p.unpack.apply.bytes_per_sec.max(1) as f64;
        let share = if dec + apply > 0.0 {
            dec / (dec + apply)
        } else {
            0.0
        };
        let times = LayerTimes {
            fetch: dur(fetch),
            verify: Duration::ZERO,
            decompress: dur(unpack * share),
            apply: dur(unpack * (1.0 - share)),
        };
        let name = &self.pod_images[f.image].name;
        for _ in 0..self.groups[f.group].nodes as u64 {
            self.recorder.layer(name, f.blob - 1, &times);
        }
    }

    fn maybe_pull_done(&mut self, g: usize, i: usize) {
        let now = self.now;
        let Some(pull) = self.groups[g].pulls[i].as_ref() else {
            return;
        };
        if pull.unfetched > 0 || pull.unpacking > 0 {
            return;
        }
        let fetched = pull.fetched_at.iter().copied().fold(pull.started, f64::max);
        let times = PullTimes::one(
            dur(pull.started),
            pull.first_byte.map(dur),
            dur(fetched),
            dur(now),
        );
        let group = &mut self.groups[g];
        group.pulls[i] = None;
        group.images[i] = Some(ImageState::Present(times));
        group.pulling -= 1;
        let all_present = group
            .images
            .iter()
            .all(|s| matches!(s, Some(ImageState::Present(_))));
        if all_present && !group.waiting_pods.is_empty() {
            let ready = std::mem::take(&mut group.waiting_pods);
            let pulls = PullTimes::spanning(group.images.iter().filter_map(|s| match s {
                Some(ImageState::Present(t)) => Some(*t),
                _ => None,
            }));
            self.record_pods(g, &ready, pulls);
        }
        self.start_pulls(g);
    }

    fn record_pods(&mut self, g: usize, pods: &[PodEntry], pull: Option<PullTimes>) {
        let readiness = &self.setup.scenario.readiness;
        let nodes = self.groups[g].nodes as u64;
        for pod in pods {
            let scheduled = dur(pod.scheduled);
            let started = dur(self.now.max(pod.scheduled));
            let ready = readiness.ready_offset(started, started + readiness.init);
            let times = PodTimes {
                scheduled,
                pull,
                started,
                ready,
                wave: pod.wave,
            };
            for _ in 0..nodes * u64::from(pod.per_node) {
                self.recorder.pod(&times);
            }
        }
    }

    fn fail_group(&mut self, g: usize) {
        self.groups[g].failed = true;
        let pods = std::mem::take(&mut self.groups[g].waiting_pods);
        self.fail_pods(g, &pods);
        let fabric = &mut self.fabric;
        self.owners.retain(|f, o| {
            let owned = o.group() == Some(g);
            if owned {
                fabric.remove(*f);
            }
            !owned
        });
    }

    fn fail_pods(&mut self, g: usize, pods: &[PodEntry]) {
        let nodes = self.groups[g].nodes as u64;
        for pod in pods {
            for _ in 0..nodes * u64::from(pod.per_node) {
                self.recorder
                    .failed_in_wave(pod.wave, dur(pod.scheduled), FailureKind::Throttled);
            }
        }
    }

    fn upload_per_node(&self) -> f64 {
        if self.via != Via::Cluster {
            return 0.0;
        }
        let nodes: f64 = self.groups.iter().map(|g| g.nodes).sum();
        let up: f64 = self
            .groups
            .iter()
            .map(|g| self.fabric.carried(g.links.up))
            .sum();
        up / nodes.max(1.0)
    }
}
