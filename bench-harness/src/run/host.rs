//! How busy the host's CPUs were during a burst, from `/proc/stat`. The harness measures the
//! machine it runs on: when the CPUs stay saturated, the figures say more about the host than
//! about the registry or the cache, and the report must say so. Beside it, the CPU time of the
//! harness's own process over the same span.
//!
//! A burst whose CPUs averaged [`HOST_BOUND_BUSY`] or more is host-bound: `result.json` keeps
//! each repetition's [`CpuUse`], the run's warnings carry one line per such burst
//! ([`HostBound::warning`]), `run` repeats them on the terminal, and `compare` marks the series
//! and will not let a gate judge them unless told to. Results written before the CPU use was
//! stored carry only the warning; [`HostBound::from_warning`] reads it back.

use std::time::Duration;

use tokio::sync::oneshot;

/// Sampling period.
const SAMPLE_EVERY: Duration = Duration::from_millis(200);
/// Mean busy fraction above which a burst is called host-bound.
pub const HOST_BOUND_BUSY: f64 = 0.90;

/// CPU time counters (jiffies) from the first line of `/proc/stat`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct CpuTimes {
    busy: u64,
    total: u64,
}

fn read_cpu_times() -> Option<CpuTimes> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    parse_cpu_line(text.lines().next()?)
}

/// `cpu  user nice system idle iowait irq softirq steal ...`
fn parse_cpu_line(line: &str) -> Option<CpuTimes> {
    let mut fields = line.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let v: Vec<u64> = fields
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    if v.len() < 5 {
        return None;
    }
    let idle = v[3] + v[4];
    let total: u64 = v.iter().sum();
    Some(CpuTimes {
        busy: total - idle,
        total,
    })
}

/// The fraction of CPU time busy between two reads; `None` unless both were read and time
/// passed.
fn busy_between(a: Option<CpuTimes>, b: Option<CpuTimes>) -> Option<f64> {
    let (a, b) = (a?, b?);
    (b.total > a.total).then(|| (b.busy - a.busy) as f64 / (b.total - a.total) as f64)
}

/// CPU use over a burst.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CpuUse {
    /// Mean fraction of all CPUs busy, 0..=1.
    pub mean_busy: f64,
    /// Fraction of samples with CPUs more than 95 % busy.
    pub saturated_fraction: f64,
    pub samples: u32,
    /// CPU seconds this process (the harness) used meanwhile, every thread.
    #[serde(default)]
    pub own_cpu_seconds: f64,
}

impl CpuUse {
    /// Whether the burst was limited by the host's CPUs.
    pub fn host_bound(&self) -> bool {
        self.samples > 0 && self.mean_busy >= HOST_BOUND_BUSY
    }
}

/// One burst (a repetition of a (variant, target)) the host's CPUs bound.
#[derive(Debug, Clone, PartialEq)]
pub struct HostBound {
    pub variant: String,
    pub target: String,
    pub repetition: u32,
    /// Mean fraction of all CPUs busy during the burst, 0..=1.
    pub mean_busy: f64,
}

/// What every host-bound warning starts with.
const WARNING_PREFIX: &str = "host-bound: repetition ";

impl HostBound {
    /// The run's warning for this burst: `host-bound: repetition 0 of full/direct: the host's
    /// CPUs were 97% busy on average during the burst, ...`.
    pub fn warning(&self) -> String {
        format!(
            "{WARNING_PREFIX}{} of {}/{}: the host's CPUs were {:.0}% busy on average during the burst, so its figures measure this machine more than the registry or the cache",
            self.repetition,
            self.variant,
            self.target,
            self.mean_busy * 100.0
        )
    }

    /// Reads back a warning [`HostBound::warning`] wrote (the only record of host-bound bursts
    /// in results written before the CPU use was stored); `None` for any other warning.
    pub fn from_warning(warning: &str) -> Option<Self> {
        let rest = warning.strip_prefix(WARNING_PREFIX)?;
        let (repetition, rest) = rest.split_once(" of ")?;
        let (series, rest) = rest.split_once(": the host's CPUs were ")?;
        let (variant, target) = series.split_once('/')?;
        let (percent, _) = rest.split_once('%')?;
        Some(Self {
            variant: variant.to_owned(),
            target: target.to_owned(),
            repetition: repetition.parse().ok()?,
            mean_busy: percent.parse::<f64>().ok()? / 100.0,
        })
    }
}

/// A running sampler; [`CpuSampler::finish`] stops it and summarises.
#[derive(Debug)]
pub struct CpuSampler {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<CpuUse>,
}

impl CpuSampler {
    /// Starts sampling every 200 ms.
    pub fn start() -> Self {
        let (stop, mut stopped) = oneshot::channel();
        let own = || {
            stampede_lab::process::cpu_times(std::process::id()).map_or(Duration::ZERO, |c| c.own)
        };
        let own_start = own();
        let task = tokio::spawn(async move {
            let first = read_cpu_times();
            let mut prev = first;
            let mut busy_sum = 0.0;
            let mut saturated = 0u32;
            let mut samples = 0u32;
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    () = tokio::time::sleep(SAMPLE_EVERY) => {}
                }
                let now = read_cpu_times();
                if let Some(f) = busy_between(prev, now) {
                    busy_sum += f;
                    samples += 1;
                    if f > 0.95 {
                        saturated += 1;
                    }
                }
                prev = now;
            }
            let per_sample = busy_sum / f64::from(samples.max(1));
            CpuUse {
                // Over the whole span when both ends were read, else the samples' mean.
                mean_busy: busy_between(first, prev).unwrap_or(per_sample),
                saturated_fraction: f64::from(saturated) / f64::from(samples.max(1)),
                samples,
                own_cpu_seconds: own().saturating_sub(own_start).as_secs_f64(),
            }
        });
        Self { stop, task }
    }

    pub async fn finish(self) -> CpuUse {
        self.stop.send(()).ok();
        self.task.await.unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_stat_cpu_line() {
        let t = parse_cpu_line("cpu  100 5 50 800 40 1 2 2 0 0").unwrap();
        assert_eq!(
            t,
            CpuTimes {
                busy: 160,
                total: 1000
            }
        );
        assert!(parse_cpu_line("cpu0 1 2 3 4 5").is_none());
        assert!(parse_cpu_line("cpu  x").is_none());
    }

    #[test]
    fn host_bound_warnings_read_back() {
        let b = HostBound {
            variant: "full".into(),
            target: "cache-daemon".into(),
            repetition: 3,
            mean_busy: 0.97,
        };
        assert_eq!(HostBound::from_warning(&b.warning()), Some(b));
        assert_eq!(
            HostBound::from_warning("target nginx not run: no nginx"),
            None
        );
        assert_eq!(
            HostBound::from_warning("host-bound: CPU above 90 % for 12 s of the run"),
            None
        );
    }

    #[tokio::test]
    async fn samples_the_real_host() {
        let s = CpuSampler::start();
        tokio::time::sleep(Duration::from_millis(450)).await;
        let u = s.finish().await;
        assert!(u.samples >= 1, "{u:?}");
        assert!((0.0..=1.0).contains(&u.mean_busy), "{u:?}");
    }
}
