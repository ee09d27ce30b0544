//! `--set key.path=value` overrides: parsing one and applying it to the scenario document. The
//! value is a TOML literal (`8`, `true`, `"x"`, `[1, 2]`), else a plain string (`100Mbit`). Paths
//! are dotted keys with optional array indices, as validation reports them (`targets[1].url`).
//! The scenario's fields are not known here: the shape's `deny_unknown_fields` refuses a key it
//! does not have, and the error then names the override.

use std::fmt;

use super::file::ScenarioFile;

/// One `--set key.path=value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    raw: String,
    path: Vec<Segment>,
    value: toml::Value,
}

#[derive(Debug, Clone, PartialEq)]
struct Segment {
    key: String,
    index: Option<usize>,
}

/// Why an override could not be parsed or applied.
#[derive(Debug, thiserror::Error)]
pub enum OverrideError {
    /// Not `key.path=value` with a well-formed path.
    #[error(
        "--set {raw:?}: expected key.path=value, e.g. nodes=8 or targets[1].url=http://m:5000"
    )]
    Syntax { raw: String },
    /// A path segment other than the last names something that is not a table.
    #[error("--set {raw}: {path} is not a table")]
    NotATable {
        raw: String,
        /// The path up to the offending segment.
        path: String,
    },
    /// An index past the end of an array, or an index on something that is not an array.
    #[error("--set {raw}: {path} has no entry {index} ({len} entries)")]
    NoSuchEntry {
        raw: String,
        /// The path of the array.
        path: String,
        index: usize,
        /// Entries the array has (0 if it is not an array).
        len: usize,
    },
    /// With the override applied, the document no longer has the scenario's shape (an unknown
    /// key, a wrong type).
    #[error("--set {raw}")]
    Rejected {
        raw: String,
        #[source]
        source: Box<toml::de::Error>,
    },
}

impl Override {
    /// Parses `key.path=value`.
    ///
    /// # Errors
    /// [`OverrideError::Syntax`] without `=`, with an empty key or segment, or a malformed index.
    pub fn parse(raw: &str) -> Result<Self, OverrideError> {
        let syntax = || OverrideError::Syntax {
            raw: raw.to_owned(),
        };
        let (key, value) = raw.split_once('=').ok_or_else(syntax)?;
        let path = key
            .trim()
            .split('.')
            .map(|s| Segment::parse(s).ok_or_else(syntax))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            raw: raw.to_owned(),
            path,
            value: literal(value.trim()),
        })
    }

    /// Sets the value in `doc` (creating missing tables on the way) and deserializes the
    /// document into the file's shape again.
    pub(super) fn apply(&self, doc: &mut toml::Table) -> Result<ScenarioFile, OverrideError> {
        self.set(doc)?;
        toml::Value::Table(doc.clone())
            .try_into()
            .map_err(|source| OverrideError::Rejected {
                raw: self.raw.clone(),
                source: Box::new(source),
            })
    }

    fn set(&self, doc: &mut toml::Table) -> Result<(), OverrideError> {
        let (last, parents) = self
            .path
            .split_last()
            .ok_or_else(|| OverrideError::Syntax {
                raw: self.raw.clone(),
            })?;
        let mut table = doc;
        let mut walked = String::new();
        for seg in parents {
            walked.push_str(&seg.to_string());
            let slot = match seg.index {
                None => table
                    .entry(seg.key.clone())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new())),
                Some(index) => self.element(table, seg, index, &walked)?,
            };
            table = match slot {
                toml::Value::Table(t) => t,
                _ => {
                    return Err(OverrideError::NotATable {
                        raw: self.raw.clone(),
                        path: walked,
                    })
                }
            };
            walked.push('.');
        }
        walked.push_str(&last.to_string());
        match last.index {
            None => {
                table.insert(last.key.clone(), self.value.clone());
            }
            Some(index) => *self.element(table, last, index, &walked)? = self.value.clone(),
        }
        Ok(())
    }

    /// Entry `index` of the array `seg.key` in `table`.
    fn element<'t>(
        &self,
        table: &'t mut toml::Table,
        seg: &Segment,
        index: usize,
        walked: &str,
    ) -> Result<&'t mut toml::Value, OverrideError> {
        let missing = |len| OverrideError::NoSuchEntry {
            raw: self.raw.clone(),
            path: walked
                .rsplit_once('[')
                .map_or(walked, |(head, _)| head)
                .to_owned(),
            index,
            len,
        };
        match table.get_mut(&seg.key) {
            Some(toml::Value::Array(items)) => {
                let len = items.len();
                items.get_mut(index).ok_or_else(|| missing(len))
            }
            _ => Err(missing(0)),
        }
    }
}

impl Segment {
    /// `key` or `key[index]`; keys are TOML bare keys (`A-Za-z0-9_-`).
    fn parse(s: &str) -> Option<Self> {
        let (key, index) = match s.strip_suffix(']') {
            Some(head) => {
                let (key, index) = head.split_once('[')?;
                (key, Some(index.parse().ok()?))
            }
            None => (s, None),
        };
        let bare = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
        (!key.is_empty() && key.chars().all(bare)).then(|| Self {
            key: key.to_owned(),
            index,
        })
    }
}

impl fmt::Display for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key)?;
        if let Some(i) = self.index {
            write!(f, "[{i}]")?;
        }
        Ok(())
    }
}

/// `text` as a TOML value if it is one on its own (`8`, `0.5`, `true`, `"s"`, `[1]`, `{a = 1}`),
/// else as a string.
fn literal(text: &str) -> toml::Value {
    match format!("v = {text}").parse::<toml::Table>() {
        Ok(mut t) if t.len() == 1 => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(text.to_owned())),
        _ => toml::Value::String(text.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_toml_literals_or_strings() {
        let cases = [
            ("nodes=8", toml::Value::Integer(8)),
            ("readiness.read_fraction=0.25", toml::Value::Float(0.25)),
            ("runtime.unpack=false", toml::Value::Boolean(false)),
            (
                "registry.egress=100Mbit",
                toml::Value::String("100Mbit".into()),
            ),
            ("arrival.mode=ramp", toml::Value::String("ramp".into())),
            ("name=\"2024\"", toml::Value::String("2024".into())),
            ("description=", toml::Value::String(String::new())),
            ("description=a = b", toml::Value::String("a = b".into())),
            (
                "description=1\nnodes = 3",
                toml::Value::String("1\nnodes = 3".into()),
            ),
        ];
        for (raw, want) in cases {
            assert_eq!(Override::parse(raw).unwrap().value, want, "{raw}");
        }
    }

    #[test]
    fn paths_take_keys_and_indices() {
        let o = Override::parse("targets[1].url=http://m:5000").unwrap();
        assert_eq!(
            o.path,
            vec![
                Segment {
                    key: "targets".into(),
                    index: Some(1)
                },
                Segment {
                    key: "url".into(),
                    index: None
                }
            ]
        );
        assert_eq!(o.value, toml::Value::String("http://m:5000".into()));
        for bad in ["nodes", "=3", "a..b=1", "a[x]=1", "a[1=1", "a b=1", ".a=1"] {
            assert!(
                matches!(Override::parse(bad), Err(OverrideError::Syntax { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn set_creates_tables_and_indexes_arrays() {
        let mut doc: toml::Table =
            "[[targets]]\nkind = \"direct\"\n[[targets]]\nkind = \"mirror\"\nx = 1\n"
                .parse()
                .unwrap();
        Override::parse("slo.p95_ready=30s")
            .unwrap()
            .set(&mut doc)
            .unwrap();
        Override::parse("targets[1].url=http://m")
            .unwrap()
            .set(&mut doc)
            .unwrap();
        assert_eq!(doc["slo"]["p95_ready"].as_str(), Some("30s"));
        assert_eq!(doc["targets"][1]["url"].as_str(), Some("http://m"));

        let err = Override::parse("targets[2].url=x")
            .unwrap()
            .set(&mut doc)
            .unwrap_err();
        assert!(
            matches!(&err, OverrideError::NoSuchEntry { path, index: 2, len: 2, .. } if path == "targets"),
            "{err}"
        );
        let err = Override::parse("targets[1].x.y=1")
            .unwrap()
            .set(&mut doc)
            .unwrap_err();
        assert!(
            matches!(&err, OverrideError::NotATable { path, .. } if path == "targets[1].x"),
            "{err}"
        );
    }
}
