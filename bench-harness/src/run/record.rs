//! The record step of a burst: once every pod is done, their outcomes go into the burst's
//! [`Recorder`]. A ready pod's milestones are recorded as its phases; the images a node pulled
//! are recorded once for that node (their layers, and their blobs' first bytes in the wave of
//! the node's first ready pod), however many of its pods waited for them; a failed pod is
//! counted by kind in its wave, and its message kept once as a sample. No I/O, no timing.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use crate::nodes::node::ImageOnNode;
use crate::run::pod::PodOutcome;
use crate::run::recorder::{BlobFirstByte, Recorder, RunKey};
use crate::scenario::{PodSlot, Variant};

/// Records the outcomes of the pods of one burst of `variant` (the `key`'s): the recorder (every
/// pod's phases, every node's layers and blobs, failures by kind) and each distinct failure
/// message, in the order the pods are scheduled.
pub(super) fn record(
    key: RunKey,
    variant: &Variant,
    outcomes: Vec<PodOutcome>,
) -> (Recorder, Vec<String>) {
    let mut images = NodeImages {
        variant,
        recorded: HashSet::new(),
        wave_blobs: BTreeMap::new(),
    };
    let mut recorder = Recorder::new(key);
    let mut errors = Vec::new();
    for outcome in outcomes {
        match outcome {
            PodOutcome::Ready {
                node,
                slot,
                times,
                images: pulled,
            } => {
                recorder.pod(&times);
                images.record(&mut recorder, node, slot, &pulled);
            }
            PodOutcome::Failed {
                slot,
                kind,
                message,
            } => {
                recorder.failed_in_wave(slot.wave, slot.offset, kind);
                if !errors.contains(&message) {
                    errors.push(message);
                }
            }
        }
    }
    for (wave, (scheduled, blobs)) in images.wave_blobs {
        recorder.wave_blobs(wave, scheduled, &blobs);
    }
    (recorder, errors)
}

/// The images nodes pulled, each recorded once per node.
struct NodeImages<'a> {
    variant: &'a Variant,
    /// (node, image position) already recorded.
    recorded: HashSet<(u32, usize)>,
    /// Per wave: its first recorded pod's scheduled offset, and its blobs' first bytes.
    wave_blobs: BTreeMap<u32, (Duration, Vec<BlobFirstByte>)>,
}

impl NodeImages<'_> {
    /// Records the images of a ready pod on `node` that the node has not had recorded yet, in
    /// the pod's wave (every pod has the same images, in the same order).
    fn record(
        &mut self,
        recorder: &mut Recorder,
        node: u32,
        slot: PodSlot,
        images: &[std::sync::Arc<ImageOnNode>],
    ) {
        for (i, image) in images.iter().enumerate() {
            if !self.recorded.insert((node, i)) {
                continue;
            }
            // Image 0 is the variant's own, then its sidecars in order.
            let name = match i.checked_sub(1) {
                None => self.variant.name.as_str(),
                Some(k) => self.variant.sidecars.get(k).map_or("?", String::as_str),
            };
            for (position, l) in image.layers.iter().enumerate() {
                if image.layers_timed {
                    recorder.layer(name, position, l);
                } else {
                    recorder.layer_unpacked(name, position, l);
                }
            }
            let (_, blobs) = self
                .wave_blobs
                .entry(slot.wave)
                .or_insert((slot.offset, Vec::new()));
            blobs.extend(image.blob_timings.iter().cloned());
        }
    }
}
