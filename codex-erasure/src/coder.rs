//! One column at a time: the synchronous Reed-Solomon work, without a store or a
//! runtime. A column is one codeword: K data shards and M parity shards, all the same
//! length (a block each in a dataset). The dataset functions of the crate root call these
//! on the rayon pool; call them directly to code your own shards.
//!
//! A coder holds megabytes of work space: pass the same `&mut Option<_>` to successive
//! calls, or use the `_cached` forms, which keep one per thread.

use std::cell::RefCell;

use bytes::Bytes;
use reed_solomon_simd::{ReedSolomonDecoder, ReedSolomonEncoder};

use crate::error::{Error, Result};

thread_local! {
    // A coder holds megabytes of work space: made once per thread, not once per column.
    // Coding runs on the rayon pool, so there are as many as it has threads.
    static ENCODER: RefCell<Option<ReedSolomonEncoder>> = const { RefCell::new(None) };
    static DECODER: RefCell<Option<ReedSolomonDecoder>> = const { RefCell::new(None) };
}

/// [`encode_column`] with the calling thread's encoder, kept between calls.
///
/// # Errors
/// As [`encode_column`].
pub fn encode_column_cached(m: usize, data: &[Bytes], shard_bytes: usize) -> Result<Vec<Bytes>> {
    ENCODER.with_borrow_mut(|enc| encode_column(enc, m, data, shard_bytes))
}

/// [`decode_column`] with the calling thread's decoder, kept between calls.
///
/// # Errors
/// As [`decode_column`].
///
/// # Panics
/// As [`decode_column`].
pub fn decode_column_cached(
    k: usize,
    column: u64,
    shards: &[Option<Bytes>],
    shard_bytes: usize,
) -> Result<Vec<Bytes>> {
    DECODER.with_borrow_mut(|dec| decode_column(dec, k, column, shards, shard_bytes))
}

/// Computes the M parity shards of one column from its K data shards (K = `data.len()`,
/// each `shard_bytes` long). `encoder` is reused between calls when given and filled in
/// when `None`.
///
/// # Errors
/// [`Error::Codec`] when reed-solomon-simd refuses the shards: K and M beyond its limits
/// (see [`crate::check_params`]), a shard that is not `shard_bytes` long, or
/// `shard_bytes` that is 0 or odd.
pub fn encode_column(
    encoder: &mut Option<ReedSolomonEncoder>,
    m: usize,
    data: &[Bytes],
    shard_bytes: usize,
) -> Result<Vec<Bytes>> {
    let k = data.len();
    let enc = match encoder {
        Some(enc) => {
            enc.reset(k, m, shard_bytes)?;
            enc
        }
        None => encoder.insert(ReedSolomonEncoder::new(k, m, shard_bytes)?),
    };
    for shard in data {
        enc.add_original_shard(shard)?;
    }
    let result = enc.encode()?;
    Ok(result
        .recovery_iter()
        .map(codex_core::buffers::copy)
        .collect())
}

/// Rebuilds the K data shards of one column from any K of its K+M shards
/// (`shards[row]`, `None` where missing). Data shards that are present are returned as
/// they are.
///
/// `column` only names the column in errors.
///
/// # Errors
/// [`Error::NotEnoughShards`] (naming `column`) when fewer than K are present;
/// [`Error::Codec`] for shards the library refuses (as in [`encode_column`]).
///
/// # Panics
/// If `shards` has fewer than `k` entries.
pub fn decode_column(
    decoder: &mut Option<ReedSolomonDecoder>,
    k: usize,
    column: u64,
    shards: &[Option<Bytes>],
    shard_bytes: usize,
) -> Result<Vec<Bytes>> {
    let m = shards.len() - k;
    let present = shards.iter().filter(|s| s.is_some()).count();
    if present < k {
        return Err(Error::NotEnoughShards {
            column,
            present,
            needed: k,
        });
    }
    if shards[..k].iter().all(Option::is_some) {
        return Ok(shards[..k].iter().flatten().cloned().collect());
    }
    let dec = match decoder {
        Some(dec) => {
            dec.reset(k, m, shard_bytes)?;
            dec
        }
        None => decoder.insert(ReedSolomonDecoder::new(k, m, shard_bytes)?),
    };
    for (row, shard) in shards.iter().enumerate() {
        if let Some(s) = shard {
            if row < k {
                dec.add_original_shard(row, s)?;
            } else {
                dec.add_recovery_shard(row - k, s)?;
            }
        }
    }
    let result = dec.decode()?;
    (0..k)
        .map(|row| match &shards[row] {
            Some(s) => Ok(s.clone()),
            None => result
                .restored_original(row)
                .map(codex_core::buffers::copy)
                .ok_or(Error::NotEnoughShards {
                    column,
                    present,
                    needed: k,
                }),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_k_of_k_plus_m_rebuild_the_data() {
        let (k, m, bs) = (4, 3, 128);
        let data: Vec<Bytes> = (0..k)
            .map(|i| Bytes::from(vec![i as u8 * 17 + 1; bs]))
            .collect();
        let parity = encode_column(&mut None, m, &data, bs).expect("encode");
        let all: Vec<Bytes> = data.iter().chain(parity.iter()).cloned().collect();
        // Every subset of exactly K shards.
        for mask in 0u32..(1 << (k + m)) {
            if mask.count_ones() as usize != k {
                continue;
            }
            let shards: Vec<Option<Bytes>> = (0..k + m)
                .map(|i| (mask & (1 << i) != 0).then(|| all[i].clone()))
                .collect();
            assert_eq!(
                decode_column(&mut None, k, 0, &shards, bs).expect("decode"),
                data
            );
        }
        let mut shards: Vec<Option<Bytes>> = all.iter().cloned().map(Some).collect();
        for s in shards.iter_mut().take(m + 1) {
            *s = None;
        }
        match decode_column(&mut None, k, 7, &shards, bs) {
            Err(Error::NotEnoughShards {
                column,
                present,
                needed,
            }) => assert_eq!((column, present, needed), (7, 3, 4)),
            other => panic!("expected NotEnoughShards, got {other:?}"),
        }
    }

    #[test]
    fn k_equal_one_and_m_greater_than_k() {
        let data = vec![Bytes::from(vec![5u8; 64])];
        let parity = encode_column(&mut None, 3, &data, 64).expect("encode");
        assert_eq!(parity.len(), 3);
        let shards = vec![None, None, Some(parity[1].clone()), None];
        assert_eq!(
            decode_column(&mut None, 1, 0, &shards, 64).expect("decode"),
            data
        );
    }
}
