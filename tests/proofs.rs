//! Upload -> erasure coding -> slot trees -> sampler -> circuit-input JSON, natively
//! checked, on a real node.

use bytes::Bytes;
use codex::{Node, NodeConfig};
use codex_proofs::{ProofInput, SlotGeometry, build_slot_tree, entropy_from_challenge};
use rand::{RngCore, SeedableRng, rngs::StdRng};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sampled_proof_input_checks_and_tampering_breaks_it() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let node = Node::start(NodeConfig {
        data_dir: dir.path().to_path_buf(),
        api_port: 0,
        network: None,
        ..NodeConfig::default()
    })
    .await?;
    let mut bytes = vec![0u8; 7 * 65536 + 5];
    StdRng::seed_from_u64(3).fill_bytes(&mut bytes);
    let body = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from(bytes))]);
    let cid = node.upload(body, Default::default()).await?;
    let (protected_cid, _) = node.erasure_encode(cid, 3, 2).await?;
    let (verifiable_cid, verifiable, verify_root) =
        node.make_verifiable(protected_cid, None).await?;
    let store = node.store();
    assert_eq!(
        codex_core::Manifest::decode(store.get_block(&verifiable_cid).await?.data())?,
        verifiable
    );
    let v = verifiable
        .protection
        .as_ref()
        .and_then(|p| p.verification.clone())
        .ok_or_else(|| anyhow::anyhow!("not verifiable"))?;
    assert_eq!(v.verify_root, verify_root);
    assert_eq!(v.slot_roots.len(), 5);

    // Every slot leaf was stored with its proof, readable without rebuilding.
    let geometry = SlotGeometry::new(&verifiable)?;
    let slot_index = 1u64;
    let tree = build_slot_tree(&**store, &verifiable, slot_index, 8).await?;
    assert_eq!(tree.root_cid(), v.slot_roots[slot_index as usize]);
    for leaf in tree.leaf_metas() {
        let stored = store
            .get_leaf_meta(&v.slot_roots[slot_index as usize], leaf.index)
            .await?;
        assert_eq!(stored, leaf);
    }

    // Sample the slot and check the input natively, through its JSON.
    let mut blocks = Vec::new();
    for i in 0..geometry.slot_blocks {
        let (b, _) = store
            .get_leaf(&verifiable.tree_cid, geometry.block_index(slot_index, i))
            .await?;
        blocks.push((!b.is_empty()).then(|| b.into_data()));
    }
    let roots = v
        .slot_roots
        .iter()
        .map(codex_proofs::slot::cid_element)
        .collect::<Result<Vec<_>, _>>()?;
    let entropy = entropy_from_challenge(&[7u8; 32]);
    let input = ProofInput::new(entropy, &roots, slot_index, &tree, 5, |i| {
        Ok(blocks[i as usize].clone())
    })?;
    let json = input.to_json();
    let parsed = ProofInput::from_json(&json)?;
    assert_eq!(parsed, input);
    let indices = parsed.check()?;
    assert_eq!(indices.len(), 5);

    let mut bad = input.clone();
    bad.samples[0].cell_data[3] = codex_proofs::Fe::from_u64(0xdead_beef);
    assert!(
        bad.check().is_err(),
        "a changed cell byte must break the path"
    );
    let mut bad = input.clone();
    bad.entropy = codex_proofs::Fe::from_u64(1_234_567);
    assert!(bad.check().is_err(), "another entropy samples other cells");

    // One call from an uploaded (plain) dataset: erasure coding, then slots.
    let (_, from_plain, _) = node.make_verifiable(cid, Some((3, 2))).await?;
    assert_eq!(
        from_plain, verifiable,
        "the same dataset, the same verifiable manifest"
    );

    // Deleting the dataset removes its slot leaves too.
    store.delete_dataset(&verifiable_cid).await?;
    assert!(
        store
            .get_leaf_meta(&v.slot_roots[slot_index as usize], 0)
            .await
            .is_err()
    );
    node.shutdown().await?;
    Ok(())
}
