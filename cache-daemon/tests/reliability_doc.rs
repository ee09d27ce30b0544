//! RELIABILITY.md is kept true by the tests it names: every `module::test` it cites must exist
//! as a test function in `cache-daemon/tests/<module>.rs`, and every bench it cites must be
//! registered in the crate's manifest. A renamed or deleted test fails here instead of leaving
//! the document claiming coverage nobody runs.

use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// Every `` `word::word` `` span in `text` whose first part is a test module of this crate.
fn cited_tests(text: &str, modules: &[String]) -> Vec<(String, String)> {
    let mut cited = Vec::new();
    for span in text.split('`').skip(1).step_by(2) {
        let Some((module, name)) = span.split_once("::") else {
            continue;
        };
        let is_word = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        };
        if is_word(module) && is_word(name) && modules.iter().any(|m| m == module) {
            cited.push((module.to_owned(), name.to_owned()));
        }
    }
    cited
}

#[test]
fn every_test_reliability_md_names_exists() {
    let root = workspace();
    let doc = std::fs::read_to_string(root.join("RELIABILITY.md")).expect("RELIABILITY.md");
    let tests_dir = root.join("cache-daemon/tests");
    let modules: Vec<String> = std::fs::read_dir(&tests_dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".rs").map(str::to_owned)
        })
        .collect();
    let cited = cited_tests(&doc, &modules);
    assert!(
        cited.len() >= 20,
        "RELIABILITY.md should name the tests behind its rows; found {}",
        cited.len()
    );
    let mut missing = Vec::new();
    for (module, name) in &cited {
        let source = std::fs::read_to_string(tests_dir.join(format!("{module}.rs"))).unwrap();
        if !source.contains(&format!("fn {name}(")) {
            missing.push(format!("{module}::{name}"));
        }
    }
    assert!(
        missing.is_empty(),
        "RELIABILITY.md names tests that do not exist: {missing:?}"
    );
    let manifest = std::fs::read_to_string(root.join("cache-daemon/Cargo.toml")).unwrap();
    for bench in doc.split("--bench ").skip(1) {
        let name: String = bench
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
            .collect();
        assert!(
            manifest.contains(&format!("name = \"{name}\"")),
            "RELIABILITY.md cites `--bench {name}`, which cache-daemon does not declare"
        );
    }
}

#[test]
fn citations_are_found_only_for_test_modules() {
    let modules = vec!["blobs".to_owned()];
    let text = "`blobs::digest_mismatch_commits_nothing` and `store::verify` and `blobs::Not_A_Fn`";
    assert_eq!(
        cited_tests(text, &modules),
        vec![(
            "blobs".to_owned(),
            "digest_mismatch_commits_nothing".to_owned()
        )]
    );
}
