//! CIDs from outside: the binary form (block-exchange messages, manifests) and the text
//! form (REST path parameters, the CLI). A parsed CID must print and re-encode to
//! itself.
#![no_main]

use codex_core::Cid;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(cid) = Cid::from_bytes(data) {
        assert_eq!(cid.to_bytes(), data, "binary form is canonical");
        check(&cid);
    }
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(cid) = text.parse::<Cid>()
    {
        check(&cid);
    }
});

fn check(cid: &Cid) {
    assert_eq!(Cid::from_bytes(&cid.to_bytes()).ok().as_ref(), Some(cid));
    assert_eq!(cid.to_string().parse::<Cid>().ok().as_ref(), Some(cid));
    let _ = (
        cid.codec(),
        cid.hash_code(),
        cid.digest32(),
        cid.multihash_bytes(),
    );
    let _ = cid.matches(b"hello");
}
