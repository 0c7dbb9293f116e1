//! Round trips through a real store and every way a dataset can be tampered with.

use std::sync::Arc;

use bytes::Bytes;
use codex_core::Manifest;
use codex_crypto::{
    Cipher, Error, KdfParams, Key, Metadata, NewKey, Secret, TAG_LEN, decrypt, encrypt, new_dataset,
};
use codex_store::dataset::{AddOptions, DatasetReader, add_stream};
use codex_store::{MemoryStore, StoreConfig};
use futures::{StreamExt, TryStreamExt};
use rand::{RngCore, SeedableRng};

const BS: usize = 65536;

fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

/// The bytes as a stream of uneven pieces.
fn pieces(
    data: &[u8],
    piece: usize,
) -> impl futures::Stream<Item = std::io::Result<Bytes>> + Send + Unpin + 'static {
    let chunks: Vec<_> = data
        .chunks(piece.max(1))
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    futures::stream::iter(chunks)
}

fn meta() -> Metadata {
    Metadata {
        filename: Some("secret report.pdf".into()),
        mimetype: Some("application/pdf".into()),
    }
}

/// Encrypts `data` into ciphertext blocks and the manifest a store would keep.
async fn seal(data: &[u8], key: &NewKey) -> anyhow::Result<(Key, Manifest, Vec<Bytes>)> {
    let (k, params) = new_dataset(key)?;
    let cipher = Arc::new(Cipher::new(&k, &params)?);
    let ct: Vec<Bytes> = encrypt(pieces(data, 10_007), cipher, &meta(), BS)?
        .try_collect()
        .await?;
    let all = ct.concat();
    let blocks: Vec<Bytes> = all.chunks(BS).map(Bytes::copy_from_slice).collect();
    let mut manifest = Manifest::new(
        codex_core::Cid::from_sha256(codex_core::codec::ROOT, [0; 32]),
        BS as u32,
        all.len() as u64,
    );
    manifest.encryption = Some(params);
    Ok((k, manifest, blocks))
}

/// Decrypts blocks; returns the plaintext produced before the first error, and it.
async fn open(
    key: &Key,
    manifest: &Manifest,
    blocks: Vec<Bytes>,
) -> Result<(Vec<u8>, Option<Error>), Error> {
    let params = manifest.encryption.as_ref().ok_or(Error::NotEncrypted)?;
    let cipher = Arc::new(Cipher::new(key, params)?);
    let source = futures::stream::iter(blocks.into_iter().map(Ok::<_, std::io::Error>));
    let opened = decrypt(source, cipher, manifest).await?;
    let mut out = Vec::new();
    let mut stream = opened.stream;
    while let Some(item) = stream.next().await {
        match item {
            Ok(b) => out.extend_from_slice(&b),
            Err(e) => return Ok((out, Some(e))),
        }
    }
    assert_eq!(out.len() as u64, opened.size);
    Ok((out, None))
}

#[tokio::test]
async fn round_trips_through_a_store_at_block_boundaries() -> anyhow::Result<()> {
    let store = Arc::new(MemoryStore::new(StoreConfig::default()));
    let seg = BS - TAG_LEN;
    let header = meta().encode()?.len();
    for len in [
        0,
        1,
        65_535,
        65_536,
        65_537,
        seg - header,
        seg - header + 1,
        3 * seg,
    ] {
        let data = random(len, len as u64);
        let (key, params) = new_dataset(&NewKey::Random)?;
        let cipher = Arc::new(Cipher::new(&key, &params)?);
        let ct = encrypt(pieces(&data, 7_777), Arc::clone(&cipher), &meta(), BS)?;
        let options = AddOptions {
            encryption: Some(params.clone()),
            ..AddOptions::default()
        };
        let added = add_stream(&*store, ct, options).await?;
        assert_eq!(added.manifest.encryption.as_ref(), Some(&params));
        assert_eq!(added.manifest.filename, None, "the name stays encrypted");
        // Each block holds one segment: the ciphertext is the plaintext plus the
        // metadata plus one tag per block.
        let blocks = added.manifest.blocks_count() as usize;
        assert_eq!(blocks, (len + header).div_ceil(seg).max(1), "len {len}");
        assert_eq!(
            added.manifest.dataset_size as usize,
            len + header + blocks * TAG_LEN
        );

        let reader = DatasetReader::open(Arc::clone(&store), added.cid, None).await?;
        let opened = decrypt(reader, cipher, &added.manifest).await?;
        assert_eq!(opened.metadata, meta());
        assert_eq!(opened.size, len as u64);
        let back: Vec<Bytes> = opened.stream.try_collect().await?;
        assert!(back.concat() == data, "len {len}: the bytes differ");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_mib_round_trip_through_a_store() -> anyhow::Result<()> {
    let store = Arc::new(MemoryStore::new(StoreConfig {
        quota_max_bytes: 1 << 30,
        ..StoreConfig::default()
    }));
    let data = random(100 << 20, 100);
    let (key, params) = new_dataset(&NewKey::Random)?;
    let cipher = Arc::new(Cipher::new(&key, &params)?);
    let ct = encrypt(
        pieces(&data, 1 << 20),
        Arc::clone(&cipher),
        &Metadata::default(),
        BS,
    )?;
    let options = AddOptions {
        encryption: Some(params),
        ..AddOptions::default()
    };
    let added = add_stream(&*store, ct, options).await?;
    // No block of the store holds plaintext: a 32-byte piece of the file is in none.
    let marker = &data[50 << 20..(50 << 20) + 32];
    let reader = DatasetReader::open(Arc::clone(&store), added.cid, None).await?;
    let ciphertext: Vec<Bytes> = reader.try_collect().await?;
    assert!(!ciphertext.concat().windows(32).any(|w| w == marker));

    let reader = DatasetReader::open(Arc::clone(&store), added.cid, None).await?;
    let opened = decrypt(reader, cipher, &added.manifest).await?;
    assert_eq!(opened.size, data.len() as u64);
    let back: Vec<Bytes> = opened.stream.try_collect().await?;
    assert!(back.concat() == data);
    Ok(())
}

#[tokio::test]
async fn a_wrong_key_or_passphrase_is_refused_as_such() -> anyhow::Result<()> {
    let data = random(200_000, 1);
    let (_, manifest, blocks) = seal(&data, &NewKey::Random).await?;
    let err = open(&Key::generate(), &manifest, blocks)
        .await
        .expect_err("wrong key");
    assert!(matches!(err, Error::WrongKey), "{err}");

    let params = KdfParams {
        memory_kib: 1024,
        iterations: 1,
        parallelism: 1,
    };
    let (key, manifest, blocks) = seal(
        &data,
        &NewKey::Passphrase {
            passphrase: "correct horse".into(),
            params,
        },
    )
    .await?;
    let enc = manifest.encryption.clone().expect("encrypted");
    let derived = Secret::Passphrase("correct horse".into()).key_for(&enc)?;
    assert_eq!(derived, key);
    let wrong = Secret::Passphrase("battery staple".into()).key_for(&enc)?;
    let err = Cipher::new(&wrong, &enc).expect_err("wrong passphrase");
    assert!(matches!(err, Error::WrongKey), "{err}");
    let (back, err) = open(&derived, &manifest, blocks).await?;
    assert!(err.is_none() && back == data);

    // A passphrase for a dataset with a random key, and parameters out of bounds.
    let (_, random_manifest, _) = seal(&data, &NewKey::Random).await?;
    let enc = random_manifest.encryption.expect("encrypted");
    let err = Secret::Passphrase("x".into())
        .key_for(&enc)
        .expect_err("no kdf");
    assert!(matches!(err, Error::NeedsKey), "{err}");
    let mut greedy = manifest.encryption.clone().expect("encrypted");
    if let Some(kdf) = greedy.kdf.as_mut() {
        kdf.memory_kib = 4 << 20;
    }
    let err = Secret::Passphrase("x".into())
        .key_for(&greedy)
        .expect_err("4 GiB");
    assert!(matches!(err, Error::Kdf(_)), "{err}");
    Ok(())
}

#[tokio::test]
async fn altered_swapped_foreign_and_cut_blocks_are_each_refused() -> anyhow::Result<()> {
    let data = random(10 * BS, 2);
    let (key, manifest, blocks) = seal(&data, &NewKey::Given(Key::generate())).await?;
    assert_eq!(blocks.len(), 11);
    let seg = BS - TAG_LEN;

    // A flipped bit in block 3: blocks 0-2 are read, nothing of block 3.
    let mut flipped = blocks.clone();
    let mut b = flipped[3].to_vec();
    b[100] ^= 0x20;
    flipped[3] = b.into();
    let (got, err) = open(&key, &manifest, flipped).await?;
    assert!(matches!(err, Some(Error::Tampered { index: 3 })), "{err:?}");
    assert!(got.len() <= 3 * seg && data.starts_with(&got));

    // A flipped bit in block 0 is an error before any plaintext.
    let mut flipped = blocks.clone();
    let mut b = flipped[0].to_vec();
    b[0] ^= 1;
    flipped[0] = b.into();
    let err = open(&key, &manifest, flipped).await.expect_err("block 0");
    assert!(matches!(err, Error::Tampered { index: 0 }), "{err}");

    // Blocks 2 and 5 swapped.
    let mut swapped = blocks.clone();
    swapped.swap(2, 5);
    let (_, err) = open(&key, &manifest, swapped).await?;
    assert!(
        matches!(
            err,
            Some(Error::Misplaced {
                index: 2,
                belongs_at: 5
            })
        ),
        "{err:?}"
    );

    // Block 4 of another dataset under the same key.
    let (_, _, other) = seal(&data, &NewKey::Given(key.clone())).await?;
    let mut foreign = blocks.clone();
    foreign[4] = other[4].clone();
    let (_, err) = open(&key, &manifest, foreign).await?;
    assert!(matches!(err, Some(Error::Tampered { index: 4 })), "{err:?}");

    // The last block dropped, with a manifest rewritten to the shorter size.
    let mut cut_manifest = manifest.clone();
    cut_manifest.dataset_size = (10 * BS) as u64;
    let (_, err) = open(&key, &cut_manifest, blocks[..10].to_vec()).await?;
    assert!(matches!(err, Some(Error::Truncated { got: 10 })), "{err:?}");

    // The bytes stop early under the true manifest.
    let (_, err) = open(&key, &manifest, blocks[..7].to_vec()).await?;
    assert!(matches!(err, Some(Error::Truncated { got: 7 })), "{err:?}");

    // A block the source cannot give (a store's missing leaf): its error, as it was.
    let params = manifest.encryption.clone().expect("encrypted");
    let cipher = Arc::new(Cipher::new(&key, &params)?);
    let failing = futures::stream::iter(blocks.clone().into_iter().enumerate().map(|(i, b)| {
        if i == 6 {
            Err(std::io::Error::other("not found: tree[6]"))
        } else {
            Ok(b)
        }
    }));
    let opened = decrypt(failing, cipher, &manifest).await?;
    let items: Vec<_> = opened.stream.collect().await;
    let err = items
        .iter()
        .find_map(|r| r.as_ref().err())
        .expect("an error");
    assert!(
        matches!(err, Error::Source(_)) && err.to_string().contains("tree[6]"),
        "{err}"
    );
    let good: usize = items
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .map(Bytes::len)
        .sum();
    assert!(good <= 6 * seg, "nothing of block 6 or later");

    // Untouched, it opens.
    let (back, err) = open(&key, &manifest, blocks).await?;
    assert!(err.is_none() && back == data);
    Ok(())
}

#[test]
fn keys_and_metadata_are_checked() {
    let key = Key::generate();
    assert_eq!(
        Key::from_hex(&format!("{}\n", key.to_hex())).ok(),
        Some(key.clone())
    );
    assert!(matches!(Key::from_hex("abc"), Err(Error::InvalidKey(_))));
    assert!(matches!(
        Key::from_hex(&"zz".repeat(32)),
        Err(Error::InvalidKey(_))
    ));
    assert_eq!(format!("{key:?}"), "Key(..)");

    let long = Metadata {
        filename: Some("x".repeat(2000)),
        mimetype: None,
    };
    assert!(matches!(
        long.encode(),
        Err(Error::NameTooLong("file name"))
    ));
    let m = meta();
    let mut bytes = m.encode().expect("encode");
    let n = bytes.len();
    bytes.extend_from_slice(b"file bytes");
    assert_eq!(Metadata::decode(&bytes).expect("decode"), (m, n));
    assert!(matches!(
        Metadata::decode(&[9, 0, 0]),
        Err(Error::Format(_))
    ));
    assert!(matches!(
        encrypt(
            pieces(b"x", 1),
            Arc::new(
                Cipher::new(
                    &key,
                    &new_dataset(&NewKey::Given(key.clone())).expect("new").1
                )
                .expect("cipher")
            ),
            &Metadata::default(),
            1024
        ),
        Err(Error::BlockSize(1024))
    ));
}
