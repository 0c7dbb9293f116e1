//! codex-core: chunking + block hashing + the SHA-256 tree, the CPU work of an upload.

use codex_core::{Block, Chunker, DEFAULT_BLOCK_SIZE, MerkleTree};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rand::{RngCore, SeedableRng, rngs::StdRng};

fn chunk_hash_tree(c: &mut Criterion) {
    let mut data = vec![0u8; 64 << 20];
    StdRng::seed_from_u64(7).fill_bytes(&mut data);
    let mut g = c.benchmark_group("core");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.sample_size(10);
    g.bench_function("chunk+hash+tree 64MiB (1 core)", |b| {
        b.iter(|| {
            let cids: Vec<_> = Chunker::new(&data[..], DEFAULT_BLOCK_SIZE)
                .map(|blk| *Block::new(blk.expect("read")).cid())
                .collect();
            MerkleTree::from_cids(&cids).expect("tree").root()
        })
    });
    g.bench_function("chunk+hash+tree 64MiB (rayon)", |b| {
        use rayon::prelude::*;
        b.iter(|| {
            let cids: Vec<_> = data
                .par_chunks(DEFAULT_BLOCK_SIZE)
                .map(|blk| *Block::new(blk.to_vec()).cid())
                .collect();
            MerkleTree::from_cids(&cids).expect("tree").root()
        })
    });
    g.finish();

    let leaves: Vec<[u8; 32]> = (0..16384u64)
        .map(|i| codex_core::cid::sha256(&i.to_le_bytes()))
        .collect();
    let mut g = c.benchmark_group("tree");
    g.throughput(Throughput::Elements(leaves.len() as u64));
    g.bench_function("build 16384 leaves (1 GiB dataset)", |b| {
        b.iter(|| MerkleTree::new(leaves.clone()).expect("tree").root())
    });
    let tree = MerkleTree::new(leaves.clone()).expect("tree");
    g.bench_function("prove+verify all 16384 leaves", |b| {
        b.iter(|| {
            for (i, l) in leaves.iter().enumerate() {
                assert!(tree.proof(i as u64).expect("proof").verify(l, &tree.root()));
            }
        })
    });
    g.finish();
}

criterion_group!(benches, chunk_hash_tree);
criterion_main!(benches);
