//! RELIABILITY.md and the READMEs are kept true by the tests they name. Every citation is
//! resolved against what cargo actually runs, not against what files happen to exist:
//!
//! - `` `module::test` ``, where `module` is an integration-test module: `module` must be
//!   declared in its test binary's root (`tests/it.rs`: with `autotests = false`, a module left
//!   out of it is never compiled) or be a test binary of its own (`fuzzing`), and `test` must be
//!   a function there carrying a test attribute (`#[test]`, `#[tokio::test]`).
//! - `` `path::tests::test` `` (and `` `path::tests` ``): a unit test in `src/path.rs` or
//!   `src/path/mod.rs` of a workspace crate, inside its `mod tests`, with a test attribute.
//! - `` `tests/....rs` `` and `` `src/....rs` ``: the file exists, and a test file is compiled
//!   into a test binary (reached through `mod` declarations from the binary's root).
//! - `--bench name`: a bench some crate's manifest declares.
//!
//! A renamed, deleted or unregistered test fails here instead of leaving a document claiming
//! coverage nobody runs. [`problems`] takes the sources through a reader, so the checker itself
//! is tested on modified copies (a module dropped from `it.rs`) without touching the real files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Crates whose tests documents cite, relative to the workspace root.
const CRATES: [&str; 4] = ["cache-daemon", "bench-harness", "oci", "lab"];

/// Documents whose test citations are checked, relative to the workspace root.
const DOCUMENTS: [&str; 8] = [
    "RELIABILITY.md",
    "README.md",
    "cache-daemon/README.md",
    "bench-harness/README.md",
    "deploy/README.md",
    "fuzz/README.md",
    "scenarios/README.md",
    "results/README.md",
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// Reads a file of the workspace by its path relative to the root; `None` when it is missing.
type Read<'a> = &'a dyn Fn(&Path) -> Option<String>;

/// What cargo compiles into test binaries, found from the manifests and `mod` declarations.
#[derive(Debug, Default)]
struct Suite {
    /// Integration-test module (or single-file test binary) -> its source file.
    modules: BTreeMap<String, PathBuf>,
    /// Every source file compiled into some test binary.
    files: BTreeSet<PathBuf>,
    /// Every bench some manifest declares.
    benches: BTreeSet<String>,
}

/// `mod name;` declarations of a source file, each with its `#[path = "..."]` if it has one.
fn declared_modules(source: &str) -> Vec<(String, Option<String>)> {
    let mut found = Vec::new();
    let mut path = None;
    for line in source.lines().map(str::trim) {
        if let Some(p) = line
            .strip_prefix("#[path = \"")
            .and_then(|rest| rest.strip_suffix("\"]"))
        {
            path = Some(p.to_owned());
            continue;
        }
        let decl = line.strip_prefix("pub ").unwrap_or(line);
        if let Some(name) = decl.strip_prefix("mod ").and_then(|r| r.strip_suffix(';')) {
            found.push((name.trim().to_owned(), path.take()));
        } else if !line.starts_with("#[") && !line.starts_with("//") {
            path = None;
        }
    }
    found
}

/// The `[[test]]` paths of a manifest, and whether cargo also discovers tests on its own.
fn test_targets(manifest: &str) -> (Vec<(String, String)>, bool) {
    let auto = !manifest.contains("autotests = false");
    let mut targets = Vec::new();
    for section in manifest.split("[[test]]").skip(1) {
        let section = section.split("\n[").next().unwrap_or("");
        let value = |key: &str| {
            section.lines().find_map(|l| {
                let v = l.trim().strip_prefix(key)?.trim().strip_prefix('=')?;
                Some(v.trim().trim_matches('"').to_owned())
            })
        };
        if let (Some(name), Some(path)) = (value("name"), value("path")) {
            targets.push((name, path));
        }
    }
    (targets, auto)
}

/// Bench names a manifest declares.
fn declared_benches(manifest: &str) -> Vec<String> {
    manifest
        .split("[[bench]]")
        .skip(1)
        .filter_map(|s| {
            s.lines().find_map(|l| {
                let v = l.trim().strip_prefix("name")?.trim().strip_prefix('=')?;
                Some(v.trim().trim_matches('"').to_owned())
            })
        })
        .collect()
}

impl Suite {
    /// Walks every crate's test binaries from their roots. `list` names the files of a
    /// directory (for cargo's own discovery of `tests/*.rs` and `tests/*/main.rs`).
    fn build(read: Read, list: &dyn Fn(&Path) -> Vec<String>) -> Self {
        let mut suite = Self::default();
        for krate in CRATES {
            let krate = Path::new(krate);
            let Some(manifest) = read(&krate.join("Cargo.toml")) else {
                continue;
            };
            suite.benches.extend(declared_benches(&manifest));
            let (targets, auto) = test_targets(&manifest);
            let mut roots: Vec<(String, PathBuf)> = targets
                .into_iter()
                .map(|(name, path)| (name, krate.join(path)))
                .collect();
            if auto {
                for entry in list(&krate.join("tests")) {
                    if let Some(name) = entry.strip_suffix(".rs") {
                        roots.push((name.to_owned(), krate.join("tests").join(&entry)));
                    } else if read(&krate.join("tests").join(&entry).join("main.rs")).is_some() {
                        roots.push((
                            entry.clone(),
                            krate.join("tests").join(&entry).join("main.rs"),
                        ));
                    }
                }
            }
            for (name, root) in roots {
                let Some(source) = read(&root) else {
                    continue;
                };
                let declared = declared_modules(&source);
                if declared.is_empty() {
                    // A single-file test binary is its own module (`fuzzing::...`).
                    suite.modules.insert(name, root.clone());
                }
                let dir = root.parent().unwrap().to_owned();
                for (module, path) in &declared {
                    if let Some(file) = suite.walk(read, &dir, module, path.as_deref()) {
                        if module != "common" {
                            suite.modules.insert(module.clone(), file);
                        }
                    }
                }
                suite.files.insert(root);
            }
        }
        suite
    }

    /// Adds module `name` declared in a file of `dir` (and what it declares) to `files`.
    fn walk(&mut self, read: Read, dir: &Path, name: &str, path: Option<&str>) -> Option<PathBuf> {
        let candidates = match path {
            Some(p) => vec![normalise(&dir.join(p))],
            None => vec![
                dir.join(format!("{name}.rs")),
                dir.join(name).join("mod.rs"),
            ],
        };
        let (file, source) = candidates
            .into_iter()
            .find_map(|f| read(&f).map(|s| (f, s)))?;
        let child_dir = if file.ends_with("mod.rs") {
            file.parent().unwrap().to_owned()
        } else {
            file.with_extension("")
        };
        for (child, child_path) in declared_modules(&source) {
            self.walk(read, &child_dir, &child, child_path.as_deref());
        }
        self.files.insert(file.clone());
        Some(file)
    }
}

/// `a/b/../c` -> `a/c` (paths here are relative and never climb above the root).
fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Whether `source` defines `fn name` (or `async fn name`) with a test attribute among the
/// attributes and doc comments right above it.
fn is_test_fn(source: &str, name: &str) -> bool {
    let lines: Vec<&str> = source.lines().map(str::trim).collect();
    let sync = format!("fn {name}(");
    let asynchronous = format!("async fn {name}(");
    lines.iter().enumerate().any(|(i, line)| {
        if !(line.starts_with(&sync) || line.starts_with(&asynchronous)) {
            return false;
        }
        lines[..i]
            .iter()
            .rev()
            .take_while(|l| l.starts_with("#[") || l.starts_with("//"))
            .any(|l| *l == "#[test]" || l.starts_with("#[tokio::test"))
    })
}

/// The text of `mod tests { ... }` in `source`, if it has one (from its opening line on).
fn unit_tests(source: &str) -> Option<&str> {
    let at = source.find("\nmod tests {")?;
    Some(&source[at..])
}

fn is_word(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// What is wrong with the test citations of document `doc` (named `name` in messages).
fn problems(name: &str, doc: &str, suite: &Suite, read: Read) -> Vec<String> {
    let mut wrong = Vec::new();
    for span in doc.split('`').skip(1).step_by(2) {
        let parts: Vec<&str> = span.split("::").collect();
        let is_path = span
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_./-".contains(c));
        if is_path && span.ends_with(".rs") && (span.contains("tests/") || span.contains("src/")) {
            let found = std::iter::once(PathBuf::from(span))
                .chain(CRATES.iter().map(|k| Path::new(k).join(span)))
                .find(|p| read(p).is_some());
            match found {
                None => wrong.push(format!("{name} cites `{span}`, which does not exist")),
                Some(p) if span.contains("tests/") && !suite.files.contains(&p) => wrong.push(
                    format!("{name} cites `{span}`, which no test binary compiles"),
                ),
                Some(_) => {}
            }
            continue;
        }
        if parts.len() < 2 || !parts.iter().all(|p| is_word(p)) {
            continue;
        }
        if let Some(at) = parts.iter().position(|p| *p == "tests") {
            if at == 0 {
                continue;
            }
            let module = parts[..at].join("/");
            let test = parts.get(at + 1);
            let found = CRATES.iter().any(|k| {
                [
                    Path::new(k).join("src").join(format!("{module}.rs")),
                    Path::new(k).join("src").join(&module).join("mod.rs"),
                ]
                .iter()
                .filter_map(|f| read(f))
                .any(|source| {
                    unit_tests(&source)
                        .is_some_and(|tests| test.is_none_or(|t| is_test_fn(tests, t)))
                })
            });
            if !found {
                wrong.push(format!(
                    "{name} cites `{span}`, which is not a unit test in any crate's src/{module}.rs"
                ));
            }
            continue;
        }
        if parts.len() != 2 {
            continue;
        }
        let Some(file) = suite.modules.get(parts[0]) else {
            // A test module's file that no binary declares: its tests never run.
            let orphan = CRATES.iter().any(|k| {
                let tests = Path::new(k).join("tests");
                [
                    tests.join(format!("{}.rs", parts[0])),
                    tests.join("it").join(format!("{}.rs", parts[0])),
                ]
                .iter()
                .any(|f| read(f).is_some())
            });
            if orphan {
                wrong.push(format!(
                    "{name} cites `{span}`, but module {} is in no test binary (not in its `mod` list)",
                    parts[0]
                ));
            }
            continue;
        };
        let source = read(file).unwrap_or_default();
        if !is_test_fn(&source, parts[1]) {
            wrong.push(format!(
                "{name} cites `{span}`, which is not a test function in {}",
                file.display()
            ));
        }
    }
    for bench in doc.split("--bench ").skip(1) {
        let bench: String = bench
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
            .collect();
        if !suite.benches.contains(&bench) {
            wrong.push(format!(
                "{name} cites `--bench {bench}`, which no crate declares"
            ));
        }
    }
    wrong
}

/// The integration-test modules `doc` cites tests of.
fn cited_modules(doc: &str, suite: &Suite) -> BTreeSet<String> {
    doc.split('`')
        .skip(1)
        .step_by(2)
        .filter_map(|span| span.split_once("::"))
        .filter(|(m, n)| suite.modules.contains_key(*m) && is_word(n))
        .map(|(m, _)| m.to_owned())
        .collect()
}

fn read_real(rel: &Path) -> Option<String> {
    std::fs::read_to_string(workspace().join(rel)).ok()
}

fn list_real(rel: &Path) -> Vec<String> {
    std::fs::read_dir(workspace().join(rel))
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn every_test_the_documents_name_exists_and_runs() {
    let suite = Suite::build(&read_real, &list_real);
    assert!(
        suite.modules.contains_key("hostile") && suite.modules.contains_key("burst"),
        "the suite was not found: {suite:?}"
    );
    let reliability = read_real(Path::new("RELIABILITY.md")).expect("RELIABILITY.md");
    let cited = cited_modules(&reliability, &suite);
    assert!(
        cited.len() >= 8,
        "RELIABILITY.md should name the tests behind its rows; it names modules {cited:?}"
    );
    let mut wrong = Vec::new();
    for name in DOCUMENTS {
        let doc = read_real(Path::new(name)).unwrap_or_else(|| panic!("{name} is missing"));
        wrong.extend(problems(name, &doc, &suite, &read_real));
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// The checker fails when a module is dropped from `it.rs` (its tests no longer run), though
/// the module's file and functions are all still there.
#[test]
fn a_module_dropped_from_it_rs_fails_the_check() {
    let it_rs = Path::new("cache-daemon/tests/it.rs");
    let real = read_real(it_rs).unwrap();
    assert!(real.contains("\nmod hostile;\n"), "{real}");
    let dropped = real.replace("\nmod hostile;\n", "\n");
    let read = |p: &Path| {
        if p == it_rs {
            Some(dropped.clone())
        } else {
            read_real(p)
        }
    };
    let suite = Suite::build(&read, &list_real);
    let doc = read_real(Path::new("RELIABILITY.md")).unwrap();
    let wrong = problems("RELIABILITY.md", &doc, &suite, &read);
    assert!(
        wrong
            .iter()
            .any(|w| w.contains("`tests/hostile.rs`") || w.contains("hostile::")),
        "dropping `mod hostile;` from it.rs went unnoticed: {wrong:?}"
    );
    let readme = read_real(Path::new("cache-daemon/README.md")).unwrap();
    let wrong = problems("cache-daemon/README.md", &readme, &suite, &read);
    assert!(
        wrong
            .iter()
            .any(|w| w.contains("`tests/hostile.rs`, which no test binary compiles")),
        "{wrong:?}"
    );
    // The unmodified sources pass the same checks.
    let suite = Suite::build(&read_real, &list_real);
    assert!(problems("RELIABILITY.md", &doc, &suite, &read_real).is_empty());
}

#[test]
fn citations_resolve_only_to_test_functions_in_modules_that_run() {
    let files: BTreeMap<PathBuf, &str> = [
        ("cache-daemon/Cargo.toml", "autotests = false\n[[test]]\nname = \"it\"\npath = \"tests/it.rs\"\n[[bench]]\nname = \"load\"\n"),
        ("cache-daemon/tests/it.rs", "mod common;\nmod blobs;\n"),
        ("cache-daemon/tests/common/mod.rs", "pub mod upstream;\n"),
        ("cache-daemon/tests/common/upstream.rs", ""),
        ("cache-daemon/tests/blobs.rs", "/// Doc.\n#[tokio::test(flavor = \"multi_thread\")]\nasync fn fills_once() {}\n\nfn helper() {}\n"),
        ("cache-daemon/tests/stray.rs", "#[test]\nfn never_runs() {}\n"),
        ("cache-daemon/src/store/health.rs", "fn x() {}\n\n#[cfg(test)]\nmod tests {\n    #[test]\n    fn marks_full() {}\n}\n"),
        ("cache-daemon/src/range.rs", "fn untested() {}\n"),
    ]
    .into_iter()
    .map(|(p, s)| (PathBuf::from(p), s))
    .collect();
    let read = |p: &Path| files.get(p).map(|s| (*s).to_owned());
    let suite = Suite::build(&read, &|_| Vec::new());
    let check = |doc: &str| problems("doc", doc, &suite, &read);
    for fine in [
        "`blobs::fills_once`, `store::health::tests::marks_full`, `store::health::tests`",
        "`tests/blobs.rs`, `tests/common/upstream.rs`, `src/range.rs`, `--bench load`",
        "`tests/<module>.rs` is a pattern, not a path",
        "`store::verify` and `blobs::Not_A_Fn` and `unpack::unpack_layer_file` are not citations",
    ] {
        assert_eq!(check(fine), Vec::<String>::new(), "{fine}");
    }
    for (bad, why) in [
        ("`blobs::helper`", "not a test function"),
        ("`blobs::gone`", "not a test function"),
        ("`store::health::tests::gone`", "not a unit test"),
        ("`range::tests`", "not a unit test"),
        ("`tests/stray.rs`", "no test binary compiles"),
        ("`tests/gone.rs`", "does not exist"),
        ("`cache-daemon/src/gone.rs`", "does not exist"),
        ("`stray::never_runs`", "in no test binary"),
        ("`--bench mirror`", "no crate declares"),
    ] {
        let wrong = check(bad);
        assert!(
            wrong.len() == 1 && wrong[0].contains(why),
            "{bad}: {wrong:?}"
        );
    }
    assert!(!suite.modules.contains_key("stray"));
}
