//! The committed artifacts are what the pinned solc makes of the committed sources.

use std::path::Path;
use std::process::Command;

#[test]
fn committed_artifacts_match_a_fresh_compile() {
    let market = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = tempfile::tempdir().unwrap();
    let status = Command::new("node")
        .arg(market.join("scripts/compile.js"))
        .arg("--out")
        .arg(out.path())
        .status()
        .expect("node is required (scripts/setup.sh installs solc)");
    assert!(status.success(), "compile.js failed");
    let names = |dir: &Path| {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".json"))
            .collect();
        v.sort();
        v
    };
    let committed = market.join("artifacts");
    assert_eq!(
        names(&committed),
        names(out.path()),
        "artifact set differs: run `node codex-market/scripts/compile.js`"
    );
    for name in names(out.path()) {
        let fresh = std::fs::read(out.path().join(&name)).unwrap();
        let old = std::fs::read(committed.join(&name)).unwrap();
        assert!(
            fresh == old,
            "artifacts/{name} is stale: run `node codex-market/scripts/compile.js` and commit it"
        );
    }
}
