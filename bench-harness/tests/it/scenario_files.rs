//! Every committed scenario file parses and validates; the README's main example is the
//! quickstart.

use bench_harness::scenario::Scenario;

use crate::common::scenarios_dir;

#[test]
fn every_scenario_file_parses_and_validates() {
    let mut seen = 0;
    for entry in std::fs::read_dir(scenarios_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let s = Scenario::load(&path, &[]).unwrap_or_else(|e| panic!("{e:#}"));
            assert!(s.validate().is_empty(), "{}", path.display());
            assert!(
                s.warnings().is_empty(),
                "{}: {:?}",
                path.display(),
                s.warnings()
            );
            seen += 1;
        }
    }
    assert!(seen >= 1, "no scenarios/*.toml found");
}

#[test]
fn readme_examples_parse_and_the_main_one_is_the_quickstart() {
    let readme = std::fs::read_to_string(scenarios_dir().join("README.md")).unwrap();
    let quickstart = Scenario::load(&scenarios_dir().join("quickstart.toml"), &[]).unwrap();
    let mut complete = 0;
    let mut found_quickstart = false;
    for rest in readme.split("```toml\n").skip(1) {
        let block = rest.split("```").next().unwrap();
        // Complete scenarios in the README start with their name; the rest are fragments.
        if !block.starts_with("name = ") {
            continue;
        }
        complete += 1;
        let s =
            Scenario::parse(block, "README.md", &[]).unwrap_or_else(|e| panic!("{e:#}\n{block}"));
        if s.name == "quickstart" {
            assert_eq!(
                s, quickstart,
                "README's quickstart differs from scenarios/quickstart.toml"
            );
            found_quickstart = true;
        }
    }
    assert!(
        complete >= 1 && found_quickstart,
        "README has no complete quickstart example"
    );
}

#[test]
fn the_compose_scenario_parses_and_validates() {
    let path = crate::common::crate_dir().join("../deploy/compose/scenario.toml");
    let s = Scenario::load(&path, &[]).unwrap_or_else(|e| panic!("{e:#}"));
    assert!(s.validate().is_empty(), "{:?}", s.validate());
    assert_eq!(s.targets.len(), 2);
}
