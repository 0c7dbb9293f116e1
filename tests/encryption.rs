//! End-to-end encryption through a real node: sled store, REST on loopback, and a
//! second node that fetches the ciphertext over libp2p and decrypts it.

use std::path::Path;

use bytes::Bytes;
use codex::crypto::{Error as CryptoError, NewKey, Secret};
use codex::{Node, NodeConfig};
use futures::TryStreamExt;
use rand::{RngCore, SeedableRng, rngs::StdRng};
use reqwest::StatusCode;
use serde_json::Value;

const MARKER: &[u8] = b"PLAINTEXT-MARKER-a7f3c9e1";

async fn start(dir: &Path, keep_keys: bool) -> anyhow::Result<Node> {
    Ok(Node::start(NodeConfig {
        data_dir: dir.to_path_buf(),
        api_port: 0,
        network: None,
        keep_keys,
        ..NodeConfig::default()
    })
    .await?)
}

/// Random bytes with the marker every 50 000 bytes.
fn marked(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    for at in (0..len.saturating_sub(MARKER.len())).step_by(50_000) {
        v[at..at + MARKER.len()].copy_from_slice(MARKER);
    }
    v
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Every file under `dir`, read whole.
fn files(dir: &Path) -> anyhow::Result<Vec<(std::path::PathBuf, Vec<u8>)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            out.extend(files(&path)?);
        } else {
            let bytes = std::fs::read(&path)?;
            out.push((path, bytes));
        }
    }
    Ok(out)
}

async fn upload_encrypted(
    client: &reqwest::Client,
    node: &Node,
    data: &[u8],
    passphrase: Option<&str>,
) -> anyhow::Result<(String, String)> {
    let mut req = client
        .post(format!("{}/data?encrypt=true", node.api_url()))
        .header("Content-Type", "application/x-secret")
        .header(
            "Content-Disposition",
            "attachment; filename=\"secret-plan.txt\"",
        )
        .body(data.to_vec());
    if let Some(p) = passphrase {
        req = req.header("X-Codex-Passphrase", p);
    }
    let res = req.send().await?;
    assert_eq!(res.status(), StatusCode::OK, "{}", res.text().await?);
    let json: Value = res.json().await?;
    let cid = json["cid"].as_str().unwrap_or_default().to_string();
    let key = json["key"].as_str().unwrap_or_default().to_string();
    assert!(cid.starts_with("zDvZRwz") && key.len() == 64, "{json}");
    Ok((cid, key))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_hold_only_ciphertext_and_the_key_alone_reads_it() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let node = start(dir.path(), false).await?;
    let client = reqwest::Client::new();
    let data = marked(3 << 20, 1);
    let (cid, key) = upload_encrypted(&client, &node, &data, None).await?;

    // The manifest names no file and no type; the plain GET serves ciphertext.
    let list: Value = client
        .get(format!("{}/data", node.api_url()))
        .send()
        .await?
        .json()
        .await?;
    let listed = list.to_string();
    assert!(!listed.contains("secret-plan"), "{listed}");
    let res = client
        .get(format!("{}/data/{cid}", node.api_url()))
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::OK);
    let ciphertext = res.bytes().await?;
    assert!(ciphertext.len() > data.len());
    assert!(!contains(&ciphertext, MARKER));
    assert!(!contains(&ciphertext, &data[1_000_000..1_000_032]));

    // Nothing of the plaintext, its name or the key is on disk.
    node.shutdown().await?;
    let key_bytes = codex::crypto::Key::from_hex(&key)?.as_bytes().to_vec();
    for (path, bytes) in files(dir.path())? {
        assert!(!contains(&bytes, MARKER), "marker in {}", path.display());
        assert!(
            !contains(&bytes, b"secret-plan"),
            "name in {}",
            path.display()
        );
        assert!(!contains(&bytes, &key_bytes), "key in {}", path.display());
        assert!(
            !contains(&bytes, key.as_bytes()),
            "key in {}",
            path.display()
        );
    }

    // After a restart the key opens it, with its name and type.
    let node = start(dir.path(), false).await?;
    let res = client
        .get(format!("{}/data/{cid}", node.api_url()))
        .header("X-Codex-Key", &key)
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::OK);
    let headers = res.headers().clone();
    assert_eq!(headers["content-length"].to_str()?, data.len().to_string());
    assert_eq!(
        headers["content-type"].to_str()?,
        "application/octet-stream"
    );
    assert_eq!(
        headers["x-codex-mimetype"].to_str()?,
        "application/x-secret"
    );
    assert_eq!(
        headers["content-disposition"].to_str()?,
        "attachment; filename=\"secret-plan.txt\""
    );
    assert!(res.bytes().await?[..] == data[..], "decrypted bytes differ");

    // A wrong key is refused as such, before any byte; a malformed one is a 400.
    let wrong = codex::crypto::Key::generate().to_hex();
    let res = client
        .get(format!("{}/data/{cid}", node.api_url()))
        .header("X-Codex-Key", wrong)
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(res.text().await?.starts_with("wrong key"));
    let res = client
        .get(format!("{}/data/{cid}", node.api_url()))
        .header("X-Codex-Key", "beef")
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    // This node keeps no keys.
    let res = client
        .get(format!("{}/data/{cid}?decrypt=true", node.api_url()))
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert!(res.text().await?.contains("keeps no key"));

    // A plain dataset asked to decrypt: a 400 that says so.
    let res = client
        .post(format!("{}/data", node.api_url()))
        .body(vec![1u8; 1000])
        .send()
        .await?;
    let plain = res.text().await?;
    let res = client
        .get(format!("{}/data/{plain}", node.api_url()))
        .header("X-Codex-Key", &key)
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert!(res.text().await?.contains("not encrypted"));

    // A passphrase: the right one opens it, a wrong one is a wrong key.
    let small = marked(70_000, 2);
    let (pcid, _) = upload_encrypted(&client, &node, &small, Some("correct horse")).await?;
    for (pass, status) in [
        ("correct horse", StatusCode::OK),
        ("battery staple", StatusCode::FORBIDDEN),
    ] {
        let res = client
            .get(format!("{}/data/{pcid}", node.api_url()))
            .header("X-Codex-Passphrase", pass)
            .send()
            .await?;
        assert_eq!(res.status(), status, "passphrase {pass}");
        if status == StatusCode::OK {
            assert!(res.bytes().await?[..] == small[..]);
        }
    }

    // Zero bytes: refused plain (Codex's rule), a dataset when encrypted.
    let res = client
        .post(format!("{}/data", node.api_url()))
        .body(Vec::new())
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let (ecid, ekey) = upload_encrypted(&client, &node, &[], None).await?;
    let res = client
        .get(format!("{}/data/{ecid}", node.api_url()))
        .header("X-Codex-Key", ekey)
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.bytes().await?.is_empty());
    node.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_key_opens_the_dataset_and_its_protected_version() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let node = start(dir.path(), true).await?;
    let client = reqwest::Client::new();
    let data = marked(5 * 65536 + 7, 3);
    let (cid, key) = upload_encrypted(&client, &node, &data, None).await?;
    let res = client
        .get(format!("{}/data/{cid}?decrypt=true", node.api_url()))
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.bytes().await?[..] == data[..]);

    // The key file is the owner's alone.
    let keys = dir.path().join("keys");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&keys)?.permissions().mode() & 0o777,
            0o600
        );
    }
    assert!(std::fs::read_to_string(&keys)?.contains(&key));

    // Erasure coding works on the ciphertext; the kept key opens the protected dataset.
    let (protected_cid, protected) = node.erasure_encode(cid.parse()?, 2, 1).await?;
    assert!(protected.is_protected() && protected.is_encrypted());
    let kept = node.kept_key(&protected).await?;
    assert_eq!(kept.map(|k| k.to_hex()), Some(key));
    let res = client
        .get(format!(
            "{}/data/{protected_cid}?decrypt=true",
            node.api_url()
        ))
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.bytes().await?[..] == data[..]);

    node.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_fetches_the_ciphertext_and_the_owner_decrypts_it() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let net = |bootstrap: Vec<codex_net::Multiaddr>| -> anyhow::Result<_> {
        Ok(Some(codex_net::NetConfig {
            listen_addrs: vec!["/ip4/127.0.0.1/tcp/0".parse()?],
            bootstrap,
            ..codex_net::NetConfig::default()
        }))
    };
    let a = Node::start(NodeConfig {
        data_dir: dir.path().join("a"),
        api_port: 0,
        network: net(vec![])?,
        ..NodeConfig::default()
    })
    .await?;
    let data = marked(4 << 20, 4);
    let source = futures::stream::iter(
        data.chunks(100_000)
            .map(|c| Ok::<_, std::io::Error>(Bytes::copy_from_slice(c)))
            .collect::<Vec<_>>(),
    );
    let options = codex::node::UploadOptions {
        filename: Some("plan.txt".into()),
        ..Default::default()
    };
    let (added, key) = a
        .add_encrypted(
            source,
            options,
            NewKey::Passphrase {
                passphrase: "hunter2".into(),
                params: codex::crypto::KdfParams::default(),
            },
        )
        .await?;

    let a_net = a.network().ok_or_else(|| anyhow::anyhow!("no network"))?;
    let info = a_net.info().await?;
    let a_addr = info
        .listen_addrs
        .first()
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("not listening"))?
        .with(codex_net::Protocol::P2p(a_net.peer_id()));
    let b = Node::start(NodeConfig {
        data_dir: dir.path().join("b"),
        api_port: 0,
        network: net(vec![a_addr])?,
        ..NodeConfig::default()
    })
    .await?;

    // B fetches it over libp2p: what it stores is ciphertext.
    let fetched = b.fetch_stream(added.cid).await?;
    let ciphertext: Vec<Bytes> = fetched.stream.try_collect().await?;
    assert!(!contains(&ciphertext.concat(), MARKER));

    // With the passphrase (or the key) the owner reads it back from B.
    let read = b.read(added.cid).await?;
    let opened = b
        .decrypt(read, Secret::Passphrase("hunter2".into()))
        .await?;
    assert_eq!(opened.size, data.len() as u64);
    assert_eq!(
        opened.metadata.and_then(|m| m.filename).as_deref(),
        Some("plan.txt")
    );
    let back: Vec<Bytes> = opened.stream.try_collect().await?;
    assert!(back.concat() == data);

    // The REST stream from the network decrypts with the key; a wrong one is refused.
    let client = reqwest::Client::new();
    let url = format!("{}/data/{}/network/stream", b.api_url(), added.cid);
    let res = client
        .get(&url)
        .header("X-Codex-Key", key.to_hex())
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.bytes().await?[..] == data[..]);
    let wrong = b
        .decrypt(
            b.read(added.cid).await?,
            Secret::Passphrase("hunter3".into()),
        )
        .await
        .expect_err("wrong passphrase");
    assert!(
        matches!(wrong, codex::Error::Crypto(CryptoError::WrongKey)),
        "{wrong}"
    );
    b.shutdown().await?;
    a.shutdown().await?;
    Ok(())
}
