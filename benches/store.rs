//! codex-store: blocks per second into and out of the sled store (64 KiB blocks).

use codex_core::Block;
use codex_core::prelude::*;
use codex_store::{SledStore, StoreConfig};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rand::{RngCore, SeedableRng, rngs::StdRng};

const BLOCKS: usize = 1024; // 64 MiB per iteration

fn blocks(seed: u64) -> Vec<Block> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..BLOCKS)
        .map(|_| {
            let mut d = vec![0u8; 65536];
            rng.fill_bytes(&mut d);
            Block::new(d)
        })
        .collect()
}

fn store(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SledStore::open(dir.path(), StoreConfig::default()).expect("open");
    let mut g = c.benchmark_group("sled store, 64 KiB blocks");
    g.throughput(Throughput::Elements(BLOCKS as u64));
    g.sample_size(10);
    let mut seed = 0;
    g.bench_function("put (session batches of 16)", |b| {
        b.iter_batched(
            || {
                seed += 1;
                blocks(seed)
            },
            |bs| {
                rt.block_on(async {
                    let s = store.begin().await.expect("begin");
                    for chunk in bs.chunks(16) {
                        store
                            .session_put_blocks(s, chunk.to_vec())
                            .await
                            .expect("put");
                    }
                    store.commit(s, None).await.expect("commit");
                })
            },
            criterion::BatchSize::PerIteration,
        )
    });
    let stored = blocks(u64::MAX);
    rt.block_on(async {
        for b in &stored {
            store.put_block(b.clone()).await.expect("put");
        }
    });
    g.bench_function("get (checksum-checked, 8 concurrent)", |b| {
        b.iter(|| {
            rt.block_on(async {
                use futures::StreamExt;
                futures::stream::iter(stored.iter())
                    .map(|b| store.get_block(b.cid()))
                    .buffered(8)
                    .for_each(|r| async move {
                        r.expect("get");
                    })
                    .await
            })
        })
    });
    g.finish();
}

criterion_group!(benches, store);
criterion_main!(benches);
