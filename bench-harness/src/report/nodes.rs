//! The report's sections for nodes in namespaces (`[network] nodes = "namespaces"`): what every
//! link carried by the kernel's count (the registry's egress beside its own accounting, each
//! node's download and upload, a shared cache's upload) and what every cache process cost (CPU
//! seconds, peak memory, CPU per GB pulled, beside the harness's own CPU and the host's). One row
//! per (variant, target), means over repetitions. Results without these measurements (nodes as
//! tasks, older results) have no such section.
//!
//! The tables and their captions live here once; `run.rs` places them in the report.

use super::document::Block;
use super::human;
use super::table::{Cell, Table};
use crate::result::{RegistryTotals, RunResult, SeriesResult};

/// The sections (heading, how to read it, table), in order; none when no repetition was
/// measured at the wire.
pub fn sections(r: &RunResult) -> Vec<Block> {
    let sections = [
        (links(r), "Links (kernel counters)", "What each veth link carried during a repetition, counted by the kernel after its tbf shaping (Ethernet, IP and TCP headers included), mean over repetitions. The registry's own count of response bodies is beside its wire egress. Node columns are per node: the median node and the busiest; copies are of the compressed image."),
        (processes(r), "Cache processes", "Every cache process of the target, from the burst epoch to its end (user + system CPU with its children, as /proc counts it; peak resident memory is VmHWM), mean over repetitions. CPU per GB divides by the bytes all nodes downloaded over their links. The harness's own process (embedded registry, every node's client, unpacking) and the host's CPUs are beside it: a host near 100 % busy measured this machine, not the links."),
    ];
    let blocks = sections.into_iter().filter_map(|(table, heading, how)| {
        Some([
            Block::heading(2, heading),
            Block::text(how),
            Block::Table(table?),
        ])
    });
    blocks.flatten().collect()
}

/// Mean of `f` over the repetitions of `s` that were measured at the wire.
fn mean(s: &SeriesResult, f: impl Fn(&RegistryTotals) -> Option<f64>) -> Option<f64> {
    let values: Vec<f64> = s.registry.values().filter_map(f).collect();
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// The `q` quantile (0..=1) of `values`, nearest rank.
fn quantile(mut values: Vec<u64>, q: f64) -> Option<u64> {
    values.sort_unstable();
    let i = ((values.len() as f64 - 1.0) * q).round() as usize;
    values.get(i).copied()
}

fn copies(bytes: f64, image: Option<u64>) -> String {
    match image {
        Some(i) if i > 0 => format!("{} ({:.2} x)", human::bytes(bytes as u64), bytes / i as f64),
        _ => human::bytes(bytes as u64),
    }
}

fn links(r: &RunResult) -> Option<Table> {
    let mut t = Table::text_then_numbers(
        &["variant", "target"],
        &[
            "registry egress (wire)",
            "registry's own count",
            "peak registry egress",
            "node download, median",
            "node upload, median",
            "node upload, max",
            "shared cache upload",
        ],
    );
    let mut any = false;
    for s in &r.series {
        let image = r.pod_image_bytes(&s.variant);
        let wire = |f: &dyn Fn(&crate::nodes::WireTotals) -> Option<u64>| {
            mean(s, |t| t.wire.as_ref().and_then(f).map(|b| b as f64))
        };
        let Some(egress) = wire(&|w| Some(w.registry.upload_bytes)) else {
            continue;
        };
        any = true;
        let node = |pick: fn(&crate::nodes::wire::LinkTotals) -> u64, q: f64| {
            wire(&move |w| quantile(w.nodes.iter().map(pick).collect(), q))
        };
        let peak = mean(s, |t| {
            let w = t.wire.as_ref()?;
            let max = w.registry_egress.iter().max()?;
            Some(*max as f64 * 1000.0 / w.interval_ms.max(1) as f64)
        });
        let runs_shared = s
            .registry
            .values()
            .any(|t| t.cache_processes.iter().any(|p| p.who == "shared"));
        let shared =
            wire(&|w| runs_shared.then(|| w.services.iter().map(|l| l.upload_bytes).sum()));
        let or_dash = |v: Option<f64>, f: &dyn Fn(f64) -> String| v.map_or("-".to_owned(), f);
        t.row([
            s.variant.clone().into(),
            s.target.clone().into(),
            copies(egress, image).into(),
            or_dash(mean(s, |t| Some(t.bytes_out as f64)), &|b| copies(b, image)).into(),
            or_dash(peak, &human::bandwidth).into(),
            or_dash(node(|l| l.download_bytes, 0.5), &|b| copies(b, image)).into(),
            or_dash(node(|l| l.upload_bytes, 0.5), &|b| copies(b, image)).into(),
            or_dash(node(|l| l.upload_bytes, 1.0), &|b| copies(b, image)).into(),
            or_dash(shared, &|b| copies(b, image)).into(),
        ]);
    }
    any.then_some(t)
}

fn processes(r: &RunResult) -> Option<Table> {
    let mut t = Table::text_then_numbers(
        &["variant", "target", "processes"],
        &[
            "cache CPU",
            "busiest process CPU",
            "peak RSS, largest",
            "cache CPU per GB pulled",
            "harness CPU per GB pulled",
            "host CPU busy",
        ],
    );
    let mut any = false;
    for s in &r.series {
        if !s.registry.values().any(|t| t.wire.is_some()) {
            continue;
        }
        any = true;
        let pulled_gb = |t: &RegistryTotals| {
            let w = t.wire.as_ref()?;
            let bytes: u64 = w.nodes.iter().map(|l| l.download_bytes).sum();
            (bytes > 0).then_some(bytes as f64 / 1e9)
        };
        let cpu = |t: &RegistryTotals| t.cache_processes.iter().map(|p| p.cpu_seconds).sum();
        let first = s.registry.values().find(|t| !t.cache_processes.is_empty());
        let label = first.map_or_else(
            || "none".to_owned(),
            |t| {
                format!(
                    "{} x {}",
                    t.cache_processes.len(),
                    t.cache_processes[0].program
                )
            },
        );
        let has_caches = first.is_some();
        let busiest = |t: &RegistryTotals| {
            let cpu = t.cache_processes.iter().map(|p| p.cpu_seconds);
            cpu.reduce(f64::max)
        };
        let largest = |t: &RegistryTotals| {
            let rss = t.cache_processes.iter().map(|p| p.peak_rss_bytes);
            rss.max().map(|b| b as f64)
        };
        let cache_per_gb = |t: &RegistryTotals| Some(cpu(t) / pulled_gb(t)?);
        let harness_per_gb = |t: &RegistryTotals| Some(t.cpu?.harness_cpu_seconds / pulled_gb(t)?);
        let seconds =
            |v: Option<f64>| Cell::from(v.map_or("-".to_owned(), |v| format!("{v:.2} s")));
        let dash_or =
            |v: Option<f64>, f: fn(f64) -> String| Cell::from(v.map_or("-".to_owned(), f));
        t.row([
            s.variant.clone().into(),
            s.target.clone().into(),
            label.into(),
            seconds(mean(s, |t| has_caches.then(|| cpu(t)))),
            seconds(mean(s, busiest)),
            dash_or(mean(s, largest), |b| human::bytes(b as u64)),
            seconds(mean(s, |t| has_caches.then(|| cache_per_gb(t))?)),
            seconds(mean(s, harness_per_gb)),
            dash_or(mean(s, |t| t.cpu.map(|c| c.host_busy)), human::percent),
        ]);
    }
    any.then_some(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank() {
        assert_eq!(quantile(vec![5, 1, 3], 0.5), Some(3));
        assert_eq!(quantile(vec![5, 1, 3, 9], 1.0), Some(9));
        assert_eq!(quantile(vec![], 0.5), None);
    }
}
