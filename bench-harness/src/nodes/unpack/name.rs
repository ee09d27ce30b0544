//! Archive member names: lexical cleaning of tar member and link names into paths relative to
//! the snapshot root, the whiteout naming convention, and the lexical check of symlink targets.
//!
//! Pure byte work, no I/O: what a name *resolves* to on disk (symlinks met on the way) is
//! [`super::root`]'s business.

use super::Refusal;

/// Prefix of a whiteout file: `.wh.<name>` deletes `<name>` from lower layers.
const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// Whiteout metadata prefix (AUFS); such entries carry no change and are skipped.
const WHITEOUT_META_PREFIX: &[u8] = b".wh..wh.";
/// The opaque-directory marker: hides every lower-layer entry of its directory.
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";

/// Cleans a member name into `out`: components joined by `/`, without empty, `.` or `..`
/// components and without leading or trailing slashes. An empty result is the root itself.
///
/// `..` is applied lexically (`a/../b` is `b`), as containerd's `filepath.Clean` does.
///
/// # Errors
/// [`Refusal::AbsoluteName`] for a name starting with `/`; [`Refusal::EscapingName`] when a
/// `..` climbs above the root.
pub(crate) fn clean(raw: &[u8], out: &mut Vec<u8>) -> Result<(), Refusal> {
    out.clear();
    if raw.first() == Some(&b'/') {
        return Err(Refusal::AbsoluteName);
    }
    for component in raw.split(|b| *b == b'/') {
        match component {
            b"" | b"." => {}
            b".." => {
                if out.is_empty() {
                    return Err(Refusal::EscapingName);
                }
                let cut = out.iter().rposition(|b| *b == b'/').unwrap_or(0);
                out.truncate(cut);
            }
            name => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(name);
            }
        }
    }
    Ok(())
}

/// Splits a cleaned, non-empty name into its parent (possibly empty: the root) and base name.
pub(crate) fn split_parent(clean: &[u8]) -> (&[u8], &[u8]) {
    match clean.iter().rposition(|b| *b == b'/') {
        Some(i) => (&clean[..i], &clean[i + 1..]),
        None => (&[], clean),
    }
}

/// What a base name means in the whiteout convention.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Whiteout<'a> {
    /// An ordinary name: not a whiteout.
    None,
    /// `.wh..wh..opq`: the directory is opaque.
    Opaque,
    /// `.wh.<name>`: delete `<name>` from the lower layers.
    Remove(&'a [u8]),
    /// `.wh..wh.<other>`: AUFS metadata, no change to apply.
    Meta,
}

/// Classifies a base name.
///
/// # Errors
/// [`Refusal::InvalidWhiteout`] for `.wh.` followed by nothing, `.` or `..`.
pub(crate) fn whiteout(base: &[u8]) -> Result<Whiteout<'_>, Refusal> {
    if base == OPAQUE_MARKER {
        return Ok(Whiteout::Opaque);
    }
    if base.starts_with(WHITEOUT_META_PREFIX) {
        return Ok(Whiteout::Meta);
    }
    match base.strip_prefix(WHITEOUT_PREFIX) {
        None => Ok(Whiteout::None),
        Some(b"" | b"." | b"..") => Err(Refusal::InvalidWhiteout),
        Some(name) => Ok(Whiteout::Remove(name)),
    }
}

/// Whether a symlink living in `parent` (a cleaned name) with this target stays inside the
/// root. Absolute targets are resolved as if the root were `/` (chroot semantics), so they
/// always do; a relative target must not climb above the root from `parent`.
///
/// The check is lexical and so conservative: `a -> sub/../..` is refused at the top even if
/// `sub` would later turn out to be a symlink elsewhere.
pub(super) fn symlink_stays_inside(parent: &[u8], target: &[u8]) -> bool {
    if target.first() == Some(&b'/') {
        return true;
    }
    let mut depth = if parent.is_empty() {
        0usize
    } else {
        parent.split(|b| *b == b'/').count()
    };
    for component in target.split(|b| *b == b'/') {
        match component {
            b"" | b"." => {}
            b".." => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => return false,
            },
            _ => depth += 1,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_normalises_or_refuses_names() {
        let cases: &[(&str, Result<&str, Refusal>)] = &[
            ("etc/passwd", Ok("etc/passwd")),
            ("./etc/passwd", Ok("etc/passwd")),
            ("etc/", Ok("etc")),
            ("./", Ok("")),
            (".", Ok("")),
            ("a//b/./c/", Ok("a/b/c")),
            ("a/../b", Ok("b")),
            ("a/b/../../c", Ok("c")),
            ("a/..", Ok("")),
            ("..", Err(Refusal::EscapingName)),
            ("../etc/passwd", Err(Refusal::EscapingName)),
            ("a/../../etc", Err(Refusal::EscapingName)),
            ("./../x", Err(Refusal::EscapingName)),
            ("/etc/passwd", Err(Refusal::AbsoluteName)),
            ("/", Err(Refusal::AbsoluteName)),
            ("..foo/bar..", Ok("..foo/bar..")),
        ];
        let mut out = Vec::new();
        for (raw, want) in cases {
            let got =
                clean(raw.as_bytes(), &mut out).map(|()| String::from_utf8(out.clone()).unwrap());
            assert_eq!(
                got.as_deref().map_err(Clone::clone),
                *want,
                "clean({raw:?})"
            );
        }
    }

    #[test]
    fn split_parent_separates_the_base_name() {
        assert_eq!(split_parent(b"a/b/c"), (&b"a/b"[..], &b"c"[..]));
        assert_eq!(split_parent(b"c"), (&b""[..], &b"c"[..]));
    }

    #[test]
    fn whiteout_classifies_base_names() {
        let cases: &[(&str, Result<Whiteout<'_>, Refusal>)] = &[
            ("passwd", Ok(Whiteout::None)),
            (".wh.passwd", Ok(Whiteout::Remove(b"passwd"))),
            (".wh..wh..opq", Ok(Whiteout::Opaque)),
            (".wh..wh.plnk", Ok(Whiteout::Meta)),
            (".wh.", Err(Refusal::InvalidWhiteout)),
            (".wh..", Err(Refusal::InvalidWhiteout)),
            (".wh...", Err(Refusal::InvalidWhiteout)),
            (".whx", Ok(Whiteout::None)),
        ];
        for (base, want) in cases {
            assert_eq!(whiteout(base.as_bytes()), *want, "whiteout({base:?})");
        }
    }

    #[test]
    fn symlink_targets_climbing_above_the_root_are_outside() {
        let cases: &[(&str, &str, bool)] = &[
            ("usr/bin", "python3", true),
            ("usr/bin", "/usr/bin/python3", true),
            ("", "/", true),
            ("", "/../../etc", true),
            ("usr/bin", "../lib/x", true),
            ("usr/bin", "../../x", true),
            ("usr/bin", "../../../x", false),
            ("", "..", false),
            ("", "../..", false),
            ("", "sub/../..", false),
            ("a", "sub/../..", true),
            ("a", "./.", true),
        ];
        for (parent, target, inside) in cases {
            assert_eq!(
                symlink_stays_inside(parent.as_bytes(), target.as_bytes()),
                *inside,
                "{parent:?} -> {target:?}"
            );
        }
    }
}
