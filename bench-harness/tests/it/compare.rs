//! `compare` on synthetic results with a known difference: the difference is found and marked
//! significant, identical inputs show none, gates fail only on a significant slowdown beyond
//! their limit, few repetitions are said out loud, and the same seed gives the same intervals.

use bench_harness::compare::{
    compare, CompareError, Comparison, Input, Metric, Pairing, Settings, Verdict,
};
use bench_harness::result::RunResult;
use bench_harness::run::recorder::Phase;

use crate::common::{synthetic_run, SyntheticSeries};

fn full(end_to_end_ms: u64) -> SyntheticSeries {
    SyntheticSeries {
        variant: "full",
        end_to_end_ms,
        egress_bytes: 40_000_000,
    }
}

fn run(series: &[SyntheticSeries], repetitions: u32, seed: u64) -> RunResult {
    synthetic_run(series, repetitions, seed)
}

fn settings(gates: &[&str]) -> Settings {
    Settings {
        gates: gates.iter().map(|g| g.parse().unwrap()).collect(),
        ..Settings::default()
    }
}

fn runs(a: &RunResult, b: &RunResult, s: &Settings) -> Result<Comparison, CompareError> {
    compare(
        &Input {
            name: "a.json",
            result: a,
        },
        &Input {
            name: "b.json",
            result: b,
        },
        &Pairing::SameSeries,
        s,
    )
}

fn verdict(c: &Comparison, phase: Phase, q: &str) -> Verdict {
    c.pairs[0]
        .differences
        .iter()
        .find(|d| {
            d.metric
                == Metric::Phase {
                    phase,
                    quantile: q.parse().unwrap(),
                }
        })
        .unwrap()
        .verdict
}

#[test]
fn a_known_slowdown_is_significant_at_every_quantile() {
    let a = run(&[full(1_000)], 8, 1);
    let b = run(&[full(1_300)], 8, 2);
    let c = runs(&a, &b, &settings(&[])).unwrap();
    assert_eq!(c.pairs.len(), 1);
    assert_eq!(c.pairs[0].label, "full / direct");
    for phase in [Phase::EndToEnd, Phase::Pull, Phase::Unpack] {
        for q in ["p50", "p95", "p99"] {
            assert_eq!(verdict(&c, phase, q), Verdict::Higher, "{q} {phase}");
        }
    }
    let d = c.pairs[0]
        .differences
        .iter()
        .find(|d| d.metric.name() == "p95 end_to_end")
        .unwrap();
    let r = d.relative.unwrap();
    assert!((0.2..0.4).contains(&r), "about +30 %: {r}");
    let (lo, hi) = d.interval.unwrap().relative.unwrap();
    assert!(lo > 0.0 && lo < r && r < hi, "{lo} {r} {hi}");
    // The reverse direction is significantly faster.
    let back = runs(&b, &a, &settings(&[])).unwrap();
    assert_eq!(verdict(&back, Phase::EndToEnd, "p95"), Verdict::Lower);
}

#[test]
fn identical_results_show_no_significant_difference() {
    let a = run(&[full(1_000)], 8, 1);
    let c = runs(&a, &a.clone(), &settings(&["p95:end_to_end:0%"])).unwrap();
    for d in &c.pairs[0].differences {
        assert!(
            matches!(d.verdict, Verdict::NotSignificant),
            "{}: {:?} {:?}",
            d.metric.name(),
            d.verdict,
            d.interval
        );
        assert_eq!(d.estimate, 0.0, "{}", d.metric.name());
    }
    assert!(c.passed());
    // Two runs of the same thing with different noise: still no verdict either way.
    let again = run(&[full(1_000)], 8, 99);
    let c = runs(&a, &again, &settings(&[])).unwrap();
    for phase in [Phase::EndToEnd, Phase::Pull] {
        assert_eq!(
            verdict(&c, phase, "p95"),
            Verdict::NotSignificant,
            "{phase}"
        );
    }
}

#[test]
fn gates_fail_only_on_a_significant_slowdown_beyond_the_limit() {
    let a = run(&[full(1_000)], 8, 1);
    let b = run(&[full(1_300)], 8, 2);
    let crossed = runs(&a, &b, &settings(&["p95:end_to_end:10%"])).unwrap();
    assert!(!crossed.passed());
    assert_eq!(crossed.gates.len(), 1);
    assert!(crossed.gates[0].crossed);
    let generous = runs(&a, &b, &settings(&["p95:end_to_end:50%", "p50:pull:1m"])).unwrap();
    assert!(generous.passed(), "{:?}", generous.gates);
    let faster = runs(&b, &a, &settings(&["p95:end_to_end:0%"])).unwrap();
    assert!(faster.passed());
    // A gated phase or quantile not in the settings is compared anyway.
    let only_pull = Settings {
        phases: vec![Phase::Pull],
        ..settings(&["p90:end_to_end:10%"])
    };
    let c = runs(&a, &b, &only_pull).unwrap();
    assert!(!c.passed());
    assert!(c.pairs[0]
        .differences
        .iter()
        .any(|d| d.metric.name() == "p90 end_to_end"));
}

#[test]
fn variants_and_targets_compare_within_one_run() {
    let r = run(
        &[
            full(1_000),
            SyntheticSeries {
                variant: "slim",
                end_to_end_ms: 600,
                egress_bytes: 10_000_000,
            },
        ],
        6,
        4,
    );
    let input = Input {
        name: "run.json",
        result: &r,
    };
    let pairing = Pairing::Variants {
        baseline: "full".into(),
        candidate: "slim".into(),
    };
    let c = compare(&input, &input, &pairing, &settings(&["p95:end_to_end:0%"])).unwrap();
    assert_eq!(c.pairs[0].label, "full / direct \u{2192} slim / direct");
    assert_eq!(verdict(&c, Phase::EndToEnd, "p95"), Verdict::Lower);
    let egress = c.pairs[0]
        .differences
        .iter()
        .find(|d| d.metric == Metric::Egress)
        .unwrap();
    assert_eq!(egress.verdict, Verdict::Lower);
    assert!(c.passed(), "slim is faster: the gate holds");
    assert!(c.notes.is_empty(), "{:?}", c.notes);

    let unknown = Pairing::Targets {
        baseline: "direct".into(),
        candidate: "nginx".into(),
    };
    let err = compare(&input, &input, &unknown, &settings(&[])).unwrap_err();
    assert!(
        matches!(&err, CompareError::Unknown { what: "target", name, .. } if name == "nginx"),
        "{err}"
    );
    assert!(err.to_string().contains("it has direct"), "{err}");
}

#[test]
fn few_repetitions_are_flagged_and_one_has_no_verdict() {
    let a = run(&[full(1_000)], 3, 1);
    let b = run(&[full(1_300)], 3, 2);
    let c = runs(&a, &b, &settings(&[])).unwrap();
    assert!(
        c.notes.iter().any(|n| n.starts_with("Only 3 repetitions")),
        "{:?}",
        c.notes
    );
    let markdown = bench_harness::report::comparison::markdown(&c);
    assert!(markdown.contains("Only 3 repetitions"), "{markdown}");

    let one_a = run(&[full(1_000)], 1, 1);
    let one_b = run(&[full(1_300)], 1, 2);
    let c = runs(&one_a, &one_b, &settings(&[])).unwrap();
    assert!(c.pairs[0]
        .differences
        .iter()
        .all(|d| d.verdict == Verdict::TooFewRepetitions && d.interval.is_none()));
    assert!(c.notes.iter().any(|n| n.contains("no confidence interval")));
    let err = runs(&one_a, &one_b, &settings(&["p95:end_to_end:10%"])).unwrap_err();
    assert!(
        matches!(
            err,
            CompareError::TooFewRepetitions {
                baseline: 1,
                candidate: 1,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn the_same_seed_gives_the_same_intervals() {
    let a = run(&[full(1_000)], 6, 1);
    let b = run(&[full(1_100)], 6, 2);
    let first = runs(&a, &b, &settings(&[])).unwrap();
    assert_eq!(first, runs(&a, &b, &settings(&[])).unwrap());
    let other_seed = Settings {
        seed: 2,
        ..settings(&[])
    };
    assert_ne!(first, runs(&a, &b, &other_seed).unwrap());
}

#[test]
fn runs_with_different_scenarios_say_so() {
    let a = run(&[full(1_000)], 4, 1);
    let mut b = run(&[full(1_000)], 4, 2);
    b.scenario.nodes = 8;
    let c = runs(&a, &b, &settings(&[])).unwrap();
    assert!(
        c.notes
            .iter()
            .any(|n| n.contains("differ in: nodes, seed.")),
        "{:?}",
        c.notes
    );
}

#[test]
fn settings_out_of_range_are_refused() {
    let a = run(&[full(1_000)], 4, 1);
    for (settings, want) in [
        (
            Settings {
                confidence: 1.0,
                ..Settings::default()
            },
            "confidence 1 is not between 0 and 1",
        ),
        (
            Settings {
                resamples: 10,
                ..Settings::default()
            },
            "10 resamples are too few",
        ),
    ] {
        let err = runs(&a, &a, &settings).unwrap_err();
        assert!(err.to_string().contains(want), "{err}");
    }
}
