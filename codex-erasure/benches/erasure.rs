//! Erasure coding of a stored 64 MiB dataset (64 KiB blocks) through the whole path:
//! read from the sled store, code, hash, store. Beside it, raw `reed-solomon-simd` on the
//! same shards in memory.

use std::collections::BTreeSet;

use bytes::Bytes;
use codex_core::prelude::*;
use codex_core::{Block, LeafMeta, Manifest, MerkleTree};
use codex_erasure::Layout;
use codex_store::{SledStore, StoreConfig};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use rand::{RngCore, SeedableRng, rngs::StdRng};
use rayon::prelude::*;

const BLOCKS: usize = 1024;
const BS: usize = 65536;

fn blocks(seed: u64) -> Vec<Block> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..BLOCKS)
        .map(|_| {
            let mut d = vec![0u8; BS];
            rng.fill_bytes(&mut d);
            Block::new(d)
        })
        .collect()
}

async fn put_dataset(store: &SledStore, blocks: &[Block]) -> Manifest {
    let tree = MerkleTree::from_cids(blocks.iter().map(Block::cid)).expect("tree");
    let s = store.begin().await.expect("begin");
    for chunk in blocks.chunks(32) {
        store
            .session_put_blocks(s, chunk.to_vec())
            .await
            .expect("put");
    }
    let leaves = (0..blocks.len() as u64)
        .map(|i| LeafMeta {
            index: i,
            block_cid: *blocks[i as usize].cid(),
            proof: tree.proof(i).expect("proof"),
        })
        .collect();
    store
        .session_put_leaves(s, &tree.root_cid(), leaves)
        .await
        .expect("leaves");
    let m = Manifest::new(tree.root_cid(), BS as u32, (blocks.len() * BS) as u64);
    store
        .commit(s, Some(Block::manifest(m.encode())))
        .await
        .expect("commit");
    m
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let data = blocks(1);
    for (k, m) in [(2usize, 1usize), (10, 5), (32, 32)] {
        let mut g = c.benchmark_group(format!("erasure K={k} M={m}, 64 MiB"));
        g.throughput(Throughput::Bytes((BLOCKS * BS) as u64));
        g.sample_size(10);

        let layout = Layout::new(BLOCKS as u64, k, m).expect("layout");
        let zero = Bytes::from(vec![0u8; BS]);
        let columns: Vec<Vec<Bytes>> = (0..layout.steps)
            .map(|c| {
                (0..k)
                    .map(|r| {
                        let i = layout.index(r, c) as usize;
                        data.get(i)
                            .map(|b| b.data().clone())
                            .unwrap_or_else(|| zero.clone())
                    })
                    .collect()
            })
            .collect();
        g.bench_function("raw reed-solomon-simd encode (2 threads)", |b| {
            b.iter(|| {
                columns
                    .par_iter()
                    .map(|col| {
                        codex_erasure::coder::encode_column_cached(m, col, BS).expect("encode")
                    })
                    .count()
            })
        });

        g.bench_function("encode: store -> code -> hash -> store", |b| {
            b.iter_batched(
                || {
                    let dir = tempfile::tempdir().expect("tempdir");
                    let store = SledStore::open(dir.path(), StoreConfig::default()).expect("open");
                    let manifest = rt.block_on(put_dataset(&store, &data));
                    (dir, store, manifest)
                },
                |(_dir, store, manifest)| {
                    rt.block_on(codex_erasure::encode(&store, &manifest, k, m))
                        .expect("encode")
                },
                BatchSize::PerIteration,
            )
        });

        // Decode with M whole data slots lost (or all K when M > K).
        let dir = tempfile::tempdir().expect("tempdir");
        let full = SledStore::open(dir.path().join("full"), StoreConfig::default()).expect("open");
        let plain = rt.block_on(put_dataset(&full, &data));
        let (_, protected) = rt
            .block_on(codex_erasure::encode(&full, &plain, k, m))
            .expect("encode");
        let lost: BTreeSet<u64> = (0..m.min(k)).flat_map(|r| layout.slot(r)).collect();
        let part = SledStore::open(dir.path().join("part"), StoreConfig::default()).expect("open");
        rt.block_on(async {
            part.put_block(Block::manifest(protected.encode()))
                .await
                .expect("manifest");
            for i in (0..protected.blocks_count()).filter(|i| !lost.contains(i)) {
                let (b, p) = full.get_leaf(&protected.tree_cid, i).await.expect("leaf");
                part.put_leaf(&protected.tree_cid, i, b, p)
                    .await
                    .expect("put");
            }
        });
        g.bench_function(format!("decode with {} data slots lost", m.min(k)), |b| {
            b.iter(|| {
                rt.block_on(codex_erasure::decode(&part, &protected))
                    .expect("decode")
            })
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
