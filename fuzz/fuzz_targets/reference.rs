//! stampede-oci's parsers for digests, repository names, references and image references.
//!
//! Properties: whatever parses displays back and re-parses to an equal value; a digest displays
//! back to exactly its input and its hex is 64 lowercase hex characters (safe as a file name);
//! a repository name is its input, within the length limit, with no empty, `.` or `..`
//! component; a reference that is a digest came from a string with `:`; content hashed with
//! `Digest::of` verifies against that digest.

#![no_main]

use libfuzzer_sys::fuzz_target;
use stampede_oci::reference::MAX_NAME_BYTES;
use stampede_oci::{Digest, ImageRef, Reference, RepoName, Verifier};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        let d = Digest::of(data);
        let mut v = Verifier::new(d.clone());
        v.update(data);
        assert_eq!(v.finish().expect("own digest verifies"), d);
        return;
    };

    if let Ok(d) = Digest::parse(s) {
        assert_eq!(d.to_string(), s);
        assert_eq!(Digest::parse(&d.to_string()).as_ref(), Ok(&d));
        assert_eq!(d.hex().len(), 64);
        assert!(d
            .hex()
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
    }

    if let Ok(n) = RepoName::parse(s) {
        assert_eq!(n.as_str(), s);
        assert!(s.len() <= MAX_NAME_BYTES);
        assert!(!s.split('/').any(|c| c.is_empty() || c == "." || c == ".."));
        assert_eq!(RepoName::parse(&n.to_string()).as_ref(), Ok(&n));
    }

    if let Ok(r) = Reference::parse(s) {
        assert_eq!(r.to_string(), s);
        assert_eq!(Reference::parse(&r.to_string()).as_ref(), Ok(&r));
        assert_eq!(matches!(r, Reference::Digest(_)), s.contains(':'));
    }

    if let Ok(i) = ImageRef::parse(s) {
        let shown = i.to_string();
        let again = ImageRef::parse(&shown).unwrap_or_else(|e| panic!("{s:?} -> {shown:?}: {e}"));
        assert_eq!(again, i, "{s:?} -> {shown:?}");
        assert_eq!(again.to_string(), shown);
        assert!(i.tag.is_some() || i.digest.is_some());
        match (&i.digest, i.reference()) {
            (Some(d), Reference::Digest(r)) => assert_eq!(*d, r),
            (None, Reference::Tag(t)) => assert_eq!(Some(t), i.tag.clone()),
            (d, r) => panic!("{s:?}: digest {d:?} but reference {r:?}"),
        }
    }
});
