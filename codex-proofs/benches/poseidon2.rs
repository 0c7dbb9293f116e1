//! Poseidon2 permutations per second (hand-written over halo2curves' `Fr`, eight at once
//! on AVX-512 IFMA where the CPU has it, and Plonky3's),
//! and slot building in MB/s of slot data on one and two threads.

use std::time::Duration;

use bytes::Bytes;
use codex_proofs::poseidon2::{self, Plonky3, to_bn254};
use codex_proofs::slot::{SlotGeometry, SlotTree};
use codex_proofs::{Fe, hash_bytes};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rand::{RngCore, SeedableRng, rngs::StdRng};

const BS: usize = 65536;
/// Blocks in the benchmarked slot (2 MiB).
const BLOCKS: u64 = 32;
const PERMS: u64 = 1000;

fn permutations(c: &mut Criterion) {
    let mut g = c.benchmark_group("permutation");
    g.throughput(Throughput::Elements(PERMS));
    g.measurement_time(Duration::from_secs(5));
    g.bench_function("halo2curves", |b| {
        let mut s = [Fe::from_u64(1), Fe::from_u64(2), Fe::from_u64(3)];
        b.iter(|| {
            for _ in 0..PERMS {
                poseidon2::permute(&mut s);
            }
            s
        })
    });
    let p3 = Plonky3::new();
    g.bench_function("plonky3", |b| {
        let mut s = [1, 2, 3].map(|x| to_bn254(Fe::from_u64(x)));
        b.iter(|| {
            for _ in 0..PERMS {
                p3.permute_bn254(&mut s);
            }
            s
        })
    });
    // Eight permutations per call on AVX-512 IFMA, counted as eight.
    let mut probe = [[Fe::ZERO; 3]; 8];
    if poseidon2::permute8(&mut probe).is_some() {
        g.bench_function("avx512 ifma, 8 lanes", |b| {
            let mut s = [[Fe::from_u64(1), Fe::from_u64(2), Fe::from_u64(3)]; 8];
            b.iter(|| {
                for _ in 0..PERMS / 8 {
                    poseidon2::permute8(&mut s);
                }
                s[0]
            })
        });
    } else {
        eprintln!("permutation/avx512 ifma: this CPU has no AVX-512 IFMA");
    }
    g.finish();

    let mut g = c.benchmark_group("cell");
    let cell = vec![0x5au8; 2048];
    g.throughput(Throughput::Bytes(2048));
    g.bench_function("sponge 2 KiB", |b| b.iter(|| hash_bytes(&cell)));
    let cells = vec![0x5au8; 2048 * 8];
    g.throughput(Throughput::Bytes(2048 * 8));
    g.bench_function("hash_cells, 8 x 2 KiB", |b| {
        b.iter(|| poseidon2::hash_cells(&cells, 2048))
    });
    g.finish();
}

fn slot_building(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(1);
    let blocks: Vec<Bytes> = (0..BLOCKS)
        .map(|_| {
            let mut d = vec![0u8; BS];
            rng.fill_bytes(&mut d);
            Bytes::from(d)
        })
        .collect();
    let geometry = SlotGeometry {
        num_slots: 1,
        slot_blocks: BLOCKS,
        pad_blocks: 0,
        block_size: BS as u32,
    };
    let mut g = c.benchmark_group("slot building");
    g.throughput(Throughput::Bytes(BLOCKS * BS as u64));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(20));
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("pool");
        g.bench_function(format!("{threads} thread(s)"), |b| {
            b.iter(|| {
                pool.install(|| {
                    SlotTree::build(&geometry, 0, 16, |idx| {
                        Ok(idx
                            .iter()
                            .map(|&i| Some(blocks[i as usize].clone()))
                            .collect())
                    })
                    .expect("slot")
                    .root()
                })
            })
        });
    }
    g.finish();
}

criterion_group!(benches, permutations, slot_building);
criterion_main!(benches);
