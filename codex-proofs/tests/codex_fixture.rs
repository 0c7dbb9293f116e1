//! Codex's circuit fixture (`nim-codex/tests/circuits/fixtures/input.json`), rebuilt from
//! the generator that made it (`codex-storage-proofs-circuits/reference/nim/proof_input`:
//! `ENTROPY=1234567 SEED=12345 NSLOTS=11 SLOTINDEX=3 NCELLS=512 NSAMPLES=5`) and checked
//! against the values published from it (reference §9 and §C.7).
//!
//! `tests/fixtures/codex_input.json` is that rebuilt input, checked in so the parser and
//! the native check run on a static file; `fixture_file_is_the_rebuilt_input` proves it
//! is what the generator gives. Set `CODEX_PROOFS_WRITE_FIXTURE=1` to rewrite it.

use std::path::PathBuf;

use bytes::Bytes;
use codex_proofs::slot::SlotGeometry;
use codex_proofs::{Fe, ProofInput, Slots, sponge2};

const SEED: u64 = 12345;
const NSLOTS: u64 = 11;
const SLOT_INDEX: u64 = 3;
const NCELLS: u64 = 512;
const NSAMPLES: usize = 5;
const ENTROPY: u64 = 1_234_567;
const CELL: usize = 2048;
const BLOCK: usize = 65536;

const DATA_SET_ROOT: &str =
    "16074246370508166450132968585287196391860062495017081813239200574579640171677";
const SLOT_ROOT: &str =
    "20744935707483803411869804102043283881376973626291244537230284476834672019997";
const SLOT_PROOF_0: &str =
    "14279309641024220656349577745390262299143357053971618723978902485113885925133";
const CELL_HASH_0: &str =
    "3960646146557122226346780924987761549793705203026743624521046938778516414181";
const INDICES: [u64; 5] = [287, 21, 307, 157, 508];

fn fe(s: &str) -> Fe {
    s.parse().expect("decimal")
}

/// The generator's fake cell (`genFakeCell`, wrapping 64-bit arithmetic).
fn fake_cell(seed: u64, idx: u64) -> Vec<u8> {
    let seed1 = seed.wrapping_add(0xdead_cafe);
    let seed2 = idx.wrapping_add(0x9876_5432);
    let mut state: u64 = 1;
    (0..CELL)
        .map(|_| {
            let a = state
                .wrapping_mul(state.wrapping_add(seed1))
                .wrapping_mul(state.wrapping_add(seed2));
            let b = state.wrapping_mul(state ^ 0x5a5a_5a5a);
            let c = seed1.wrapping_mul(state);
            state = a
                .wrapping_add(b)
                .wrapping_add(c)
                .wrapping_add(seed2.wrapping_add(17));
            state %= 1_698_428_844_001_831;
            state as u8
        })
        .collect()
}

/// Block `b` of slot `k` (per-slot seed `seed + 72 + 1001 k`).
fn fake_block(k: u64, b: u64) -> Bytes {
    let seed = SEED + 72 + 1001 * k;
    let cells = (BLOCK / CELL) as u64;
    Bytes::from(
        (0..cells)
            .flat_map(|c| fake_cell(seed, b * cells + c))
            .collect::<Vec<u8>>(),
    )
}

fn rebuild() -> (Slots, ProofInput) {
    let blocks_per_slot = NCELLS / 32;
    let geometry = SlotGeometry {
        num_slots: NSLOTS,
        slot_blocks: blocks_per_slot,
        pad_blocks: 0,
        block_size: BLOCK as u32,
    };
    let slots = Slots::from_blocks(geometry, fake_block).expect("slots");
    let slot = &slots.slots()[SLOT_INDEX as usize];
    let input = ProofInput::new(
        Fe::from_u64(ENTROPY),
        &slots.slot_roots(),
        SLOT_INDEX,
        slot,
        NSAMPLES,
        |b| Ok(Some(fake_block(SLOT_INDEX, b))),
    )
    .expect("input");
    (slots, input)
}

fn fixture_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/codex_input.json")
}

#[test]
fn rebuilt_fixture_matches_codex() {
    let (slots, input) = rebuild();
    assert_eq!(slots.verify_root(), fe(DATA_SET_ROOT));
    assert_eq!(slots.slot_roots()[SLOT_INDEX as usize], fe(SLOT_ROOT));
    assert_eq!(input.data_set_root, fe(DATA_SET_ROOT));
    assert_eq!(input.slot_root, fe(SLOT_ROOT));
    assert_eq!(input.slot_proof[0], fe(SLOT_PROOF_0));
    assert_eq!(input.slot_proof.len(), 8);
    assert!(input.slot_proof[4..].iter().all(Fe::is_zero));
    assert!(input.slot_proof[..4].iter().all(|x| !x.is_zero()));
    assert_eq!(sponge2(&input.samples[0].cell_data), fe(CELL_HASH_0));
    for s in &input.samples {
        assert_eq!(s.cell_data.len(), 67);
        assert_eq!(s.merkle_paths.len(), 32);
        // 5 block levels + 4 slot levels, then 23 zeros.
        assert!(s.merkle_paths[9..].iter().all(Fe::is_zero));
    }
    assert_eq!(input.check().expect("check"), INDICES);
    assert_eq!(
        ProofInput::from_json(&input.to_json()).expect("parse"),
        input
    );
    if std::env::var_os("CODEX_PROOFS_WRITE_FIXTURE").is_some() {
        std::fs::write(fixture_path(), input.to_json() + "\n").expect("write fixture");
    }
    let file = std::fs::read_to_string(fixture_path()).expect("fixture file");
    assert_eq!(
        ProofInput::from_json(&file).expect("parse fixture"),
        input,
        "tests/fixtures/codex_input.json is not the rebuilt input"
    );
}

#[test]
fn fixture_file_parses_and_checks() {
    let text = std::fs::read_to_string(fixture_path()).expect("fixture file");
    let input = ProofInput::from_json(&text).expect("parse");
    assert_eq!(input.entropy, Fe::from_u64(ENTROPY));
    assert_eq!(input.n_slots_per_data_set, NSLOTS);
    assert_eq!(input.slot_index, SLOT_INDEX);
    assert_eq!(input.n_cells_per_slot, NCELLS);
    assert_eq!(input.samples.len(), NSAMPLES);
    assert_eq!(input.data_set_root, fe(DATA_SET_ROOT));
    assert_eq!(input.slot_root, fe(SLOT_ROOT));
    assert_eq!(input.check().expect("check"), INDICES);
    assert_eq!(
        input.public_inputs(),
        [
            Fe::from_u64(ENTROPY),
            fe(DATA_SET_ROOT),
            Fe::from_u64(SLOT_INDEX)
        ]
    );
    // reference §C.3: the fixture's cells end in two data bytes then the 0x01 marker.
    for s in &input.samples {
        let last = s.cell_data[66].to_limbs();
        assert_eq!(last[0] >> 16, 1, "marker byte");
        assert_eq!(&last[1..], &[0, 0, 0]);
    }
}
