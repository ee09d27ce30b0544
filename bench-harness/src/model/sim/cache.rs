//! How the coalescing caches (shared cache-daemon, nginx, cluster mode; `mod.rs` says how each
//! behaves) answer a node's blob request: fills shared by blob key across node groups, their
//! waiters and readers. Distribution's proxy does not coalesce: it takes the registry path in
//! `mod.rs` and only uses [`Sim::serve_present`] once a blob is stored.

use super::*;

impl Sim<'_> {
    pub(super) fn cache_request(&mut self, f: Fetch) {
        let key = self.pod_images[f.image].blobs[f.blob].key.clone();
        let lat = self.request_latency();
        if self.present.contains(&key) {
            self.serve_present(f, lat);
            return;
        }
        let fill = match self.fill_of.get(&key) {
            Some(fill) => *fill,
            None => {
                let bytes = self.pod_images[f.image].blobs[f.blob].bytes as f64;
                let stripes = if self.via == Via::Cluster {
                    self.stripes(bytes) as u64
                } else {
                    1
                };
                self.fills.push(Fill {
                    key: key.clone(),
                    bytes,
                    flow: None,
                    waiters: Vec::new(),
                    stripes,
                });
                let fill = self.fills.len() - 1;
                self.fill_of.insert(key, fill);
                let at = self.now + self.setup.profile.cache.request_overhead.0.as_secs_f64();
                self.at(at, Event::FillRequest(fill));
                fill
            }
        };
        let fresh = self.fills[fill].flow.is_none() && self.fills[fill].waiters.is_empty();
        let mut streams = true;
        if self.via == Via::Nginx {
            // The lock holder streams the fill; every other requester waits for it to finish.
            if fresh {
                if self.groups[f.group].nodes > 1.0 {
                    let rest = self.groups[f.group].nodes - 1.0;
                    let waiting = self.split(f.group, rest);
                    self.fills[fill].waiters.push(Waiter {
                        fetch: f.in_group(waiting),
                        since: self.now,
                        streams: false,
                        cohort: false,
                    });
                }
            } else {
                streams = false;
            }
        }
        let waiter = Waiter {
            fetch: f,
            since: self.now,
            streams,
            cohort: fresh,
        };
        match self.fills[fill].flow {
            Some(leader) if streams => {
                let at_hop = lat + self.hops();
                self.follow(waiter, leader, at_hop);
            }
            _ => self.fills[fill].waiters.push(waiter),
        }
    }

    /// How many stripes cluster mode fetches a blob of `bytes` as.
    fn stripes(&self, bytes: f64) -> f64 {
        let stripe = self.setup.profile.cluster.stripe.0.max(1) as f64;
        (bytes / stripe).ceil().max(1.0)
    }

    fn hops(&self) -> f64 {
        if self.via == Via::Cluster {
            self.cluster_depth * self.setup.profile.cluster.hop_latency.0.as_secs_f64()
        } else {
            0.0
        }
    }

    pub(super) fn fill_request(&mut self, f: usize) {
        let stripes = self.fills[f].stripes;
        let admitted = self.tokens(stripes);
        self.served
            .requests("blob_get", stripes, stripes - admitted, self.now);
        if admitted < stripes {
            // The fill's owners retry the whole blob; the throttled stripes' tokens are spent.
            let at = self.now + self.retry_after;
            self.at(at, Event::FillRequest(f));
            return;
        }
        let key = self.fills[f].key.clone();
        self.served.blob_gets(&key, stripes);
        let at = self.now + self.registry_latency();
        self.at(at, Event::FillStart(f));
    }

    pub(super) fn fill_start(&mut self, f: usize) {
        let r = self.rates;
        let stripes = self.fills[f].stripes as f64;
        let cap = if self.via == Via::Cluster {
            stripes * r.node_stream.min(r.down)
        } else {
            r.cache_stream
        };
        let flow = self.fabric.start(FlowSpec {
            count: 1.0,
            bytes: self.fills[f].bytes,
            links: vec![(self.egress, 1.0)],
            cap,
            leader: None,
        });
        self.owners.insert(flow, Owner::Fill(f));
        self.fills[f].flow = Some(flow);
        let (streaming, waiting): (Vec<Waiter>, _) = std::mem::take(&mut self.fills[f].waiters)
            .into_iter()
            .partition(|w| w.streams);
        for w in streaming {
            let at_hop = self.hops();
            self.follow(w, flow, at_hop);
        }
        self.fills[f].waiters = waiting;
    }

    /// A reader streaming a fill in progress, held to its pace (cut-through).
    fn follow(&mut self, w: Waiter, leader: FlowId, delay: f64) {
        let spec = self.reader_spec(w.fetch, Some(leader), w.cohort);
        if delay > 0.0 {
            // The first byte reaches the reader after `delay`; model it as the reader starting
            // late, behind its leader, catching up at its own pace.
            let start = self.now + delay;
            self.delayed.push((start, w.fetch, spec));
            self.at(start, Event::Serve(w.fetch));
            return;
        }
        self.start_blob_flow(w.fetch, spec);
    }

    /// The flow of a group reading a blob from a cache or the cluster, following `leader` (the
    /// fill) when it is in progress; `cohort`: the group whose request started the fill (its
    /// cluster upload weight).
    fn reader_spec(&self, f: Fetch, leader: Option<FlowId>, cohort: bool) -> FlowSpec {
        let blob = &self.pod_images[f.image].blobs[f.blob];
        let l = self.groups[f.group].links;
        let r = self.rates;
        let nodes = self.groups[f.group].nodes;
        let (links, cap) = if self.via == Via::Cluster {
            let stripes = self.stripes(blob.bytes as f64);
            let fan_out = f64::from(self.setup.profile.cluster.fan_out.max(1));
            let upload = if cohort { (nodes - 1.0) / nodes } else { 1.0 };
            (
                vec![
                    (l.down, 1.0),
                    (l.up, upload),
                    (l.disk, 1.0),
                    (l.cpu, r.hash_cost),
                ],
                (stripes * r.up / fan_out)
                    .min(r.node_stream)
                    .min(r.cache_stream),
            )
        } else {
            (
                vec![
                    (self.cache_serve, 1.0),
                    (l.down, 1.0),
                    (l.disk, 1.0),
                    (l.cpu, r.hash_cost),
                ],
                r.node_stream.min(r.cache_stream),
            )
        };
        FlowSpec {
            count: nodes,
            bytes: blob.bytes as f64,
            links,
            cap: if cap.is_finite() { cap } else { UNLIMITED },
            leader,
        }
    }

    /// Serves a blob the cache (or the cluster) holds whole, after `delay`.
    pub(super) fn serve_present(&mut self, f: Fetch, delay: f64) {
        if let Some(pos) = self
            .delayed
            .iter()
            .position(|d| d.1 == f && d.0 <= self.now)
        {
            let (_, f, mut spec) = self.delayed.swap_remove(pos);
            if spec.leader.is_some_and(|l| !self.fabric.exists(l)) {
                spec.leader = None;
            }
            self.start_blob_flow(f, spec);
            return;
        }
        if delay > 0.0 {
            self.at(self.now + delay, Event::Serve(f));
            return;
        }
        let spec = self.reader_spec(f, None, false);
        self.start_blob_flow(f, spec);
    }

    pub(super) fn fill_done(&mut self, f: usize) {
        let key = self.fills[f].key.clone();
        self.present.insert(key.clone());
        self.fill_of.remove(&key);
        self.fills[f].flow = None;
        let waiters = std::mem::take(&mut self.fills[f].waiters);
        let poll = self.setup.profile.cache.lock_poll.0.as_secs_f64();
        for w in waiters {
            if w.streams {
                // A reader still waiting for the fill to start (it finished first): serve whole.
                self.serve_present(w.fetch, 0.0);
            } else {
                // nginx: the waiter looks again every lock_poll after it asked.
                let waited = self.now - w.since;
                let polls = if poll > 0.0 {
                    (waited / poll).ceil()
                } else {
                    0.0
                };
                let at = (w.since + polls * poll).max(self.now);
                self.at(at, Event::Serve(w.fetch));
            }
        }
    }
}
