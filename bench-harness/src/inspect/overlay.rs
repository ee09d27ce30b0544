//! The image's filesystem as its layers build it, one layer's members at a time
//! ([`Overlay::apply`]), with the OCI changeset rules the unpacker applies: a later entry at the
//! same path replaces the earlier one, `.wh.<name>` deletes `<name>` (and all under it) from
//! lower layers, `.wh..wh..opq` hides everything lower in its directory. Whiteouts only ever
//! touch lower layers; a rewrite of a path in the same layer replaces it too.
//!
//! What it yields ([`Overlay::finish`]) is the cost of that history: the regular files visible
//! at the end, and every regular file shipped for nothing, either overwritten by a later entry
//! or deleted by a whiteout, with the layer that shipped it and the layer that removed it.
//! Sizes are file content bytes (uncompressed). Only paths and sizes are kept, never content.

use std::collections::BTreeMap;

use super::scan::{Member, MemberKind};

/// A count of regular files and their content bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Count {
    pub files: u64,
    pub bytes: u64,
}

impl Count {
    /// Counts one more file of `bytes`.
    pub(super) fn add(&mut self, bytes: u64) {
        self.files += 1;
        self.bytes += bytes;
    }
}

/// How a shipped file came to be invisible.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Removal {
    /// A later entry (or a later entry of the same layer) at the same path, or a non-directory
    /// replacing its directory.
    Overwritten,
    /// A whiteout or an opaque directory marker in a later layer.
    Deleted,
}

/// A regular file that was shipped but is not in the final filesystem.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeadFile {
    pub path: String,
    pub size_bytes: u64,
    /// The layer that shipped it (0-based, base first).
    pub layer: usize,
    /// The layer whose entry removed it.
    pub removed_by: usize,
    pub how: Removal,
}

/// A regular file of the final filesystem.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VisibleFile {
    pub path: String,
    pub size_bytes: u64,
    /// The layer it comes from.
    pub layer: usize,
}

/// Per layer: what it shipped for nothing, and what it removed from below.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct LayerWaste {
    /// Files this layer ships that are not in the final filesystem.
    pub wasted: Count,
    /// Files (of lower layers, or earlier in this one) this layer's entries overwrite.
    pub overwrites: Count,
    /// Files of lower layers this layer's whiteouts delete.
    pub deletes: Count,
}

/// What the layers add up to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OverlayResult {
    /// Regular files in the final filesystem.
    pub visible: Count,
    /// Every regular file of the final filesystem.
    pub visible_files: Vec<VisibleFile>,
    /// Every file shipped for nothing, in the order they were removed.
    pub dead: Vec<DeadFile>,
    pub layers: Vec<LayerWaste>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Node {
    layer: usize,
    dir: bool,
    file_bytes: Option<u64>,
}

/// The filesystem being built.
#[derive(Debug, Default)]
pub struct Overlay {
    /// Path to what is there; a `BTreeMap` so a directory's contents are one range.
    nodes: BTreeMap<String, Node>,
    result: OverlayResult,
}

impl Overlay {
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies layer `layer`'s members, in archive order. Layers must be applied base first,
    /// each once.
    pub fn apply(&mut self, layer: usize, members: &[Member]) {
        if self.result.layers.len() <= layer {
            self.result.layers.resize(layer + 1, LayerWaste::default());
        }
        for m in members {
            match m.kind {
                MemberKind::Whiteout => self.remove(&m.path, layer, Removal::Deleted),
                MemberKind::Opaque => self.remove_under(&m.path, layer, Removal::Deleted),
                MemberKind::Dir => {
                    match self.nodes.get(&m.path).copied() {
                        Some(n) if n.dir => continue,
                        Some(n) => self.kill(m.path.clone(), n, layer, Removal::Overwritten),
                        None => {}
                    }
                    self.nodes.insert(
                        m.path.clone(),
                        Node {
                            layer,
                            dir: true,
                            file_bytes: None,
                        },
                    );
                }
                MemberKind::File
                | MemberKind::Symlink
                | MemberKind::HardLink
                | MemberKind::Other => {
                    // Nothing can be under a non-directory, whether its directory was declared
                    // or only implied by the paths below it.
                    self.remove_under(&m.path, layer, Removal::Overwritten);
                    if let Some(n) = self.nodes.get(&m.path).copied() {
                        self.kill(m.path.clone(), n, layer, Removal::Overwritten);
                    }
                    self.nodes.insert(
                        m.path.clone(),
                        Node {
                            layer,
                            dir: false,
                            file_bytes: (m.kind == MemberKind::File).then_some(m.size_bytes),
                        },
                    );
                }
            }
        }
    }

    /// The final filesystem and the waste on the way.
    pub fn finish(mut self) -> OverlayResult {
        for (path, n) in self.nodes {
            if let Some(bytes) = n.file_bytes {
                self.result.visible.add(bytes);
                self.result.visible_files.push(VisibleFile {
                    path,
                    size_bytes: bytes,
                    layer: n.layer,
                });
            }
        }
        self.result
    }

    /// Removes `path` and everything under it that lower layers put there.
    fn remove(&mut self, path: &str, layer: usize, how: Removal) {
        if let Some(n) = self.nodes.get(path).copied().filter(|n| n.layer < layer) {
            self.nodes.remove(path);
            self.kill(path.to_owned(), n, layer, how);
        }
        self.remove_under(path, layer, how);
    }

    /// Removes what is under directory `dir` (`""`: the root): a whiteout (`Deleted`) only what
    /// lower layers put there; a non-directory replacing the directory (`Overwritten`) all of it.
    fn remove_under(&mut self, dir: &str, layer: usize, how: Removal) {
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        let victims: Vec<(String, Node)> = self
            .nodes
            .range(prefix.clone()..)
            .take_while(|(p, _)| p.starts_with(&prefix))
            .filter(|(_, n)| how == Removal::Overwritten || n.layer < layer)
            .map(|(p, n)| (p.clone(), *n))
            .collect();
        for (p, n) in victims {
            self.nodes.remove(&p);
            self.kill(p, n, layer, how);
        }
    }

    /// Books `n` (already gone from the tree) as removed by `layer`.
    fn kill(&mut self, path: String, n: Node, layer: usize, how: Removal) {
        let Some(bytes) = n.file_bytes else {
            return;
        };
        self.result.layers[n.layer].wasted.add(bytes);
        let killer = &mut self.result.layers[layer];
        match how {
            Removal::Overwritten => killer.overwrites.add(bytes),
            Removal::Deleted => killer.deletes.add(bytes),
        }
        self.result.dead.push(DeadFile {
            path,
            size_bytes: bytes,
            layer: n.layer,
            removed_by: layer,
            how,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(path: &str, kind: MemberKind, size_bytes: u64) -> Member {
        Member {
            path: path.to_owned(),
            kind,
            size_bytes,
        }
    }

    fn file(path: &str, size: u64) -> Member {
        m(path, MemberKind::File, size)
    }

    #[test]
    fn rewrites_whiteouts_and_opaque_dirs_cost_what_they_hide() {
        use MemberKind::*;
        let mut o = Overlay::new();
        o.apply(
            0,
            &[
                m("etc", Dir, 0),
                file("etc/config", 100),
                file("usr/bin/app", 5_000),
                file("usr/lib/libbig.so", 20_000),
                m("var/cache", Dir, 0),
                file("var/cache/a", 3_000),
                file("var/cache/b", 4_000),
                file("opt/tool", 70),
                file("opt/tool", 80), // rewritten within the layer
            ],
        );
        o.apply(
            1,
            &[
                file("usr/bin/app", 6_000),
                m("usr/lib/libbig.so", Whiteout, 0),
                m("var/cache", Opaque, 0),
                file("var/cache/c", 10),
                m("nothing/here", Whiteout, 0),
            ],
        );
        o.apply(
            2,
            &[
                file("etc/config", 100),
                m("var/cache/c", Whiteout, 0),
                m("opt", Whiteout, 0),
            ],
        );
        let r = o.finish();
        let paths: Vec<&str> = r.visible_files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["etc/config", "usr/bin/app"]);
        assert_eq!(
            r.visible,
            Count {
                files: 2,
                bytes: 6_100
            }
        );
        assert_eq!(
            r.layers[0],
            LayerWaste {
                wasted: Count {
                    files: 7,
                    bytes: 5_000 + 20_000 + 3_000 + 4_000 + 100 + 70 + 80
                },
                overwrites: Count {
                    files: 1,
                    bytes: 70
                },
                deletes: Count::default(),
            }
        );
        assert_eq!(
            r.layers[1],
            LayerWaste {
                wasted: Count {
                    files: 1,
                    bytes: 10
                },
                overwrites: Count {
                    files: 1,
                    bytes: 5_000
                },
                deletes: Count {
                    files: 3,
                    bytes: 27_000
                },
            }
        );
        assert_eq!(
            r.layers[2],
            LayerWaste {
                wasted: Count::default(),
                overwrites: Count {
                    files: 1,
                    bytes: 100
                },
                deletes: Count {
                    files: 2,
                    bytes: 10 + 80
                },
            }
        );
    }

    #[test]
    fn a_file_replacing_a_directory_overwrites_its_contents() {
        let mut o = Overlay::new();
        o.apply(0, &[file("d/x", 5), file("d/y", 6)]);
        o.apply(1, &[m("d", MemberKind::Symlink, 0)]);
        let r = o.finish();
        assert_eq!(
            r.layers[1].overwrites,
            Count {
                files: 2,
                bytes: 11
            }
        );
        assert_eq!(r.visible, Count::default());
    }
}
