//! The manifest handling the daemon does on upstream bytes: the media type guessed when the
//! upstream's `Content-Type` names none (`manifests::guess_media_type`), `Manifest::parse` with
//! and without a declared type, the children a pin fetches, platform selection in an index and
//! the platform an image config declares.
//!
//! Properties: the guessed type is always a manifest type, and parsing with it reads the
//! document as the same kind (image or index) as parsing with no type; every child digest is a
//! valid digest that displays back to itself; a selected platform entry runs on the wanted
//! platform; a config's platform has a non-empty OS and architecture.

#![no_main]

use cache_daemon::manifests::guess_media_type;
use libfuzzer_sys::fuzz_target;
use stampede_oci::manifest::{
    descriptor_platform, is_manifest_type, select_platform, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST,
    OCI_INDEX, OCI_MANIFEST,
};
use stampede_oci::{Digest, Manifest, Platform};

/// Content types an upstream might send; the first input byte picks one.
const CONTENT_TYPES: &[Option<&str>] = &[
    None,
    Some(OCI_MANIFEST),
    Some(OCI_INDEX),
    Some(DOCKER_MANIFEST),
    Some(DOCKER_MANIFEST_LIST),
    Some("application/vnd.oci.image.index.v1+json; charset=utf-8"),
    Some("application/json"),
    Some(""),
];

#[derive(Debug, PartialEq, Eq)]
enum Kind {
    Image,
    Index,
    Invalid,
}

fn kind(r: &Result<Manifest, stampede_oci::ManifestError>) -> Kind {
    match r {
        Ok(Manifest::Image(_)) => Kind::Image,
        Ok(Manifest::Index(_)) => Kind::Index,
        Err(_) => Kind::Invalid,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, bytes)) = data.split_first() else {
        return;
    };
    let content_type = CONTENT_TYPES[usize::from(pick) % CONTENT_TYPES.len()];

    let guessed = guess_media_type(bytes);
    assert!(is_manifest_type(&guessed), "{guessed:?}");
    let undeclared = Manifest::parse(None, bytes);
    assert_eq!(
        kind(&Manifest::parse(Some(&guessed), bytes)),
        kind(&undeclared),
        "guessed {guessed:?}"
    );

    let parsed = Manifest::parse(content_type, bytes);
    if let Ok(m) = &parsed {
        if let Ok(children) = m.children() {
            for (d, _) in children {
                assert_eq!(Digest::parse(&d.to_string()).as_ref(), Ok(&d));
            }
        }
        if let Manifest::Index(index) = m {
            for wanted in [
                Platform::host(),
                Platform::parse("linux/arm64/v8").expect("valid"),
            ] {
                if let Ok(d) = select_platform(index, &wanted) {
                    let p = descriptor_platform(d).expect("selected entries name a platform");
                    assert!(p.runs_on(&wanted), "{p} on {wanted}");
                }
            }
        }
    }

    if let Some(p) = Platform::of_config(bytes) {
        assert!(!p.os.is_empty() && !p.architecture.is_empty());
        assert!(p.variant.as_deref().is_none_or(|v| !v.is_empty()));
    }
});
