//! `result.json` against its committed JSON Schema, and back: what is written validates, and
//! reading it back gives the same histograms, count for count.

use bench_harness::result::{RunResult, FILE_NAME};
use bench_harness::run::recorder::{LayerPhase, Phase};
use hdrhistogram::Histogram;

use crate::common::{crate_dir, sample_result};

pub fn validator() -> jsonschema::Validator {
    let text = std::fs::read_to_string(crate_dir().join("schema/result.schema.json")).unwrap();
    let schema: serde_json::Value = serde_json::from_str(&text).unwrap();
    jsonschema::meta::validate(&schema).expect("schema is a valid draft 2020-12 schema");
    jsonschema::validator_for(&schema).unwrap()
}

pub fn errors(validator: &jsonschema::Validator, doc: &serde_json::Value) -> Vec<String> {
    validator
        .iter_errors(doc)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

fn pairs(h: &Histogram<u64>) -> Vec<(u64, u64)> {
    h.iter_recorded()
        .map(|v| (v.value_iterated_to(), v.count_at_value()))
        .collect()
}

#[test]
fn written_result_validates_against_the_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = sample_result().write(dir.path()).unwrap();
    assert_eq!(path, dir.path().join(FILE_NAME));
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let validator = validator();
    let errs = errors(&validator, &doc);
    assert!(errs.is_empty(), "{}", errs.join("\n"));

    // The schema is not vacuous: breaking the document breaks validation.
    type Breakage = (&'static str, fn(&mut serde_json::Value));
    let breakages: [Breakage; 5] = [
        ("version", |d| d["schema_version"] = 2.into()),
        ("histogram", |d| {
            d["series"][0]["phases"]["pull"]["histogram"] = "xyz".into()
        }),
        ("failure kind", |d| {
            d["series"][0]["failures"]["flaky"] = 1.into()
        }),
        ("missing phase", |d| {
            d["series"][0]["phases"]
                .as_object_mut()
                .unwrap()
                .remove("ttfb");
        }),
        ("slo", |d| d["slo"][0]["observed_bytes"] = 1.into()),
    ];
    for (what, breaks) in breakages {
        let mut broken = doc.clone();
        breaks(&mut broken);
        assert!(
            !errors(&validator, &broken).is_empty(),
            "schema accepted a broken {what}"
        );
    }
}

#[test]
fn loading_gives_back_the_same_histograms() {
    let original = sample_result();
    let dir = tempfile::tempdir().unwrap();
    let path = original.write(dir.path()).unwrap();
    let loaded = RunResult::load(&path).unwrap();
    assert_eq!(loaded, original);

    for (a, b) in original.series.iter().zip(&loaded.series) {
        for p in Phase::ALL {
            assert_eq!(pairs(&a.data.merged(p)), pairs(&b.data.merged(p)), "{p}");
            for ((ra, da), (rb, db)) in a.data.repetitions().zip(b.data.repetitions()) {
                assert_eq!(ra, rb);
                assert_eq!(pairs(da.phase(p)), pairs(db.phase(p)), "{p} rep {ra}");
            }
        }
        for p in LayerPhase::ALL {
            assert_eq!(
                pairs(&a.data.merged_layer(p)),
                pairs(&b.data.merged_layer(p)),
                "{p}"
            );
        }
    }

    // The stored merged histogram is the sum of the stored repetitions.
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let stored = bench_harness::result::decode_histogram(
        doc["series"][0]["phases"]["end_to_end"]["histogram"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        pairs(&stored),
        pairs(&loaded.series[0].data.merged(Phase::EndToEnd))
    );
}

#[test]
fn loading_refuses_other_schema_versions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    std::fs::write(&path, r#"{"schema_version": 2}"#).unwrap();
    let err = RunResult::load(&path).unwrap_err();
    assert!(err.to_string().contains("has schema_version 2;"), "{err}");
    assert!(!err.to_string().contains("Some("), "{err}");
}

#[test]
fn cpu_use_per_repetition_validates_and_reads_back() {
    let mut r = sample_result();
    let cpu = bench_harness::run::host::CpuUse {
        mean_busy: 0.95,
        saturated_fraction: 0.5,
        samples: 12,
        own_cpu_seconds: 1.25,
    };
    r.series[0].cpu.insert(1, cpu);
    let dir = tempfile::tempdir().unwrap();
    let path = r.write(dir.path()).unwrap();
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(doc["series"][0]["repetitions"][1]["cpu"]["samples"], 12);
    assert!(doc["series"][0]["repetitions"][0].get("cpu").is_none());
    let validator = validator();
    let errs = errors(&validator, &doc);
    assert!(errs.is_empty(), "{}", errs.join("\n"));
    let mut broken = doc.clone();
    broken["series"][0]["repetitions"][1]["cpu"]["mean_busy"] = 1.5.into();
    assert!(
        !errors(&validator, &broken).is_empty(),
        "busy above 1 validates"
    );

    let back = RunResult::load(&path).unwrap();
    assert_eq!(back.series[0].cpu.get(&1), Some(&cpu));
    let bound = back.host_bound();
    assert_eq!(bound.len(), 1);
    assert_eq!(
        (bound[0].variant.as_str(), bound[0].repetition),
        (back.series[0].variant.as_str(), 1)
    );
}
