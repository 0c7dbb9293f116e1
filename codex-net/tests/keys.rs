//! Node keys in files, as Codex keeps them (`--net-privkey`): secp256k1 keys in
//! libp2p's `PrivateKey` protobuf load with the expected peer id, nodes with such keys
//! exchange blocks, and bad files give typed errors.

use std::path::Path;
use std::sync::Arc;

use codex_core::BlockStore;
use codex_net::{Download, Error, KeyType, Network, PeerId, Transports};
use libp2p::identity;

mod common;
use common::{listen_addr, mem, put_dataset, random};

/// A secp256k1 secret below the curve order.
const SECRET: [u8; 32] = [
    0x35, 0x8f, 0x15, 0xdb, 0x8c, 0x20, 0x14, 0xd5, 0x70, 0xe8, 0xe3, 0xa6, 0x22, 0x45, 0x4e, 0x22,
    0x73, 0x97, 0x5a, 0x3c, 0xca, 0x44, 0x3e, 0xc0, 0xc4, 0x53, 0x75, 0xb1, 0x3d, 0x38, 0x1d, 0x18,
];

/// libp2p's `PrivateKey` protobuf written by hand: field 1 (varint) the key type,
/// field 2 (length-delimited) the key's bytes.
fn private_key_protobuf(key_type: u8, data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x08, key_type, 0x12, data.len() as u8];
    out.extend_from_slice(data);
    out
}

/// The peer id of `SECRET` through libp2p's secp256k1 API.
fn expected_peer_id() -> anyhow::Result<PeerId> {
    let secret = identity::secp256k1::SecretKey::try_from_bytes(SECRET)?;
    let public = identity::secp256k1::Keypair::from(secret).public().clone();
    Ok(identity::PublicKey::from(public).to_peer_id())
}

fn mode(path: &Path) -> anyhow::Result<u32> {
    use std::os::unix::fs::PermissionsExt;
    Ok(std::fs::metadata(path)?.permissions().mode() & 0o777)
}

/// A hand-written secp256k1 key file loads with the peer id libp2p gives its secret,
/// through `load_key` and through the builder; a secp256k1 peer id is the identity
/// multihash of the 33-byte compressed public key (`16Uiu2...`).
#[tokio::test]
async fn a_secp256k1_key_file_in_codex_format_loads() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("key");
    std::fs::write(&path, private_key_protobuf(2, &SECRET))?;
    let expected = expected_peer_id()?;
    assert!(expected.to_string().starts_with("16Uiu2"), "{expected}");

    let key = codex_net::load_key(&path)?;
    assert_eq!(key.key_type(), identity::KeyType::Secp256k1);
    assert_eq!(key.public().to_peer_id(), expected);
    // The type asked for applies to new keys only: the file's key wins.
    let again = codex_net::load_or_create_key_with(&path, KeyType::Ed25519)?;
    assert_eq!(again.public().to_peer_id(), expected);

    let net = Network::builder(mem())
        .key_file(&path)
        .listen([])
        .start()
        .await?;
    assert_eq!(net.peer_id(), expected);
    net.shutdown().await;
    Ok(())
}

/// A new key of each type: created with mode 0600 in Codex's encoding (secp256k1: type
/// 2 and the 32-byte secret), the same peer id at the next load.
#[test]
fn new_keys_are_written_in_codex_format_with_mode_0600() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    for (key_type, code, data_len) in [
        (KeyType::Secp256k1, 2u8, 32usize),
        (KeyType::Ed25519, 1, 64),
    ] {
        let path = dir.path().join("sub").join(key_type.name());
        let key = codex_net::load_or_create_key_with(&path, key_type)?;
        assert_eq!(mode(&path)?, 0o600);
        let bytes = std::fs::read(&path)?;
        assert_eq!(bytes[..4], [0x08, code, 0x12, data_len as u8], "{key_type}");
        assert_eq!(bytes.len(), 4 + data_len);
        let back = codex_net::load_key(&path)?;
        assert_eq!(back.public(), key.public());
    }
    // Nothing but the two keys is left in the directory (no temporary files).
    assert_eq!(std::fs::read_dir(dir.path().join("sub"))?.count(), 2);
    Ok(())
}

/// Two nodes with secp256k1 identities connect over loopback (Noise takes the key) and
/// one fetches a dataset from the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secp256k1_nodes_connect_and_exchange_blocks() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let start = |store: Arc<dyn BlockStore>, name: &str| {
        Network::builder(store)
            .key_file(dir.path().join(name))
            .key_type(KeyType::Secp256k1)
            .transports(Transports::TCP)
            .listen(["/ip4/127.0.0.1/tcp/0".parse().expect("a multiaddr")])
            .start()
    };
    let (a_store, b_store) = (mem(), mem());
    let a = start(Arc::clone(&a_store), "a").await?;
    let b = start(Arc::clone(&b_store), "b").await?;
    for net in [&a, &b] {
        assert!(net.peer_id().to_string().starts_with("16Uiu2"));
    }
    let data = random(3 * 65536 + 100, 18);
    let (cid, _) = put_dataset(&*a_store, &data).await?;

    let a_addr = listen_addr(&a).await?;
    b.dial(a.peer_id(), vec![a_addr]).await?;
    assert!(b.info().await?.connected.contains(&a.peer_id()));
    let manifest = b.exchange().fetch_manifest(&[a.peer_id()], cid).await?;
    let report = Download::new(&b, Arc::clone(&b_store), &manifest)
        .cid(cid)
        .peers([a.peer_id()])
        .run()
        .await?;
    assert!(report.missing.is_empty(), "{report:?}");
    let mut got = Vec::new();
    for i in 0..manifest.blocks_count() {
        got.extend_from_slice(b_store.get_leaf(&manifest.tree_cid, i).await?.0.data());
    }
    got.truncate(data.len());
    assert!(got == data, "the fetched dataset differs");
    a.shutdown().await;
    b.shutdown().await;
    Ok(())
}

/// Files that hold no key the node takes give typed errors naming the file, from
/// `load_key` and from the builder, and the file is left alone.
#[tokio::test]
async fn bad_key_files_give_typed_errors() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("key");

    std::fs::write(&path, b"not a key")?;
    assert!(matches!(
        codex_net::load_key(&path),
        Err(Error::KeyMalformed { path: p, .. }) if p == path
    ));
    let started = Network::builder(mem())
        .key_file(&path)
        .listen([])
        .start()
        .await;
    let err = started
        .err()
        .ok_or_else(|| anyhow::anyhow!("started with a bad key"))?;
    assert!(matches!(err, Error::KeyMalformed { .. }), "{err}");
    assert!(err.to_string().contains("malformed"), "{err}");
    assert_eq!(std::fs::read(&path)?, b"not a key");

    // A secp256k1 key of the wrong length; the curve order itself (out of range).
    for data in [&SECRET[..31], &ORDER[..]] {
        std::fs::write(&path, private_key_protobuf(2, data))?;
        assert!(matches!(
            codex_net::load_key(&path),
            Err(Error::KeyMalformed { .. })
        ));
    }
    // An empty file.
    std::fs::write(&path, b"")?;
    assert!(matches!(
        codex_net::load_key(&path),
        Err(Error::KeyMalformed { .. })
    ));

    // RSA (type 0) and ECDSA (type 3): well-formed, but not taken.
    for (code, name) in [(0u8, "RSA"), (3, "ECDSA")] {
        std::fs::write(&path, private_key_protobuf(code, &[1, 2, 3]))?;
        let err = codex_net::load_key(&path).err();
        assert!(
            matches!(&err, Some(Error::KeyUnsupported { key_type, name: n, .. })
                if *key_type == i32::from(code) && *n == name),
            "{err:?}"
        );
    }

    // A missing file: load_key reports it (load_or_create_key would create one).
    let missing = dir.path().join("missing");
    assert!(matches!(
        codex_net::load_key(&missing),
        Err(Error::KeyFile { source, .. }) if source.kind() == std::io::ErrorKind::NotFound
    ));
    Ok(())
}

/// secp256k1's group order n: not a valid secret.
const ORDER: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe,
    0xba, 0xae, 0xdc, 0xe6, 0xaf, 0x48, 0xa0, 0x3b, 0xbf, 0xd2, 0x5e, 0x8c, 0xd0, 0x36, 0x41, 0x41,
];
