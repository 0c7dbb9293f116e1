//! The Lagrange basis of `2^k` G1 points: an inverse FFT over the group, its scalar
//! multiplications run in batch-affine lockstep.
//!
//! Every point the FFT multiplies by a twiddle costs a chain of ~128 doublings (GLV
//! halves the 254-bit scalar) and ~43 additions (width-5 NAFs). Three things make that
//! cheaper than one projective [`curve::mul`] per butterfly:
//! - **Affine coordinates with one inversion per batch.** A few hundred butterflies
//!   run the double-and-add in lockstep (every chain doubles at the same step; the
//!   chains whose digit is nonzero add a table point) and each step's slopes share one
//!   field inversion (Montgomery's trick): an affine doubling then costs ~5M + 2S and
//!   an addition ~5M + 1S, against halo2curves' complete projective formulas (6M + 2S
//!   + a multiplication by 3b, and 11M to 12M).
//! - **Radix 4.** Two layers at once: with `W` the twiddle of the outer layer, the four
//!   outputs of inputs `a, b, c, d` are `a ± W²b ± (Wc + W³d)` and `a ∓ W²b ± I(Wc −
//!   W³d)` (`I` the fourth root of unity), so the four products share three doubling
//!   chains (`W²b`, and the two two-term sums) instead of four.
//! - **`1/n` folded in.** The last stage multiplies by `W^i/n` instead of `W^i` and
//!   scales its fourth input alone, instead of a scalar multiplication of every
//!   output.
//!
//! Cases the affine formulas do not cover (the point at infinity, two points with the
//! same `x`) go through halo2curves' projective arithmetic, so the result is the exact
//! Lagrange basis for any input.

use halo2curves_axiom::bn256::{Fq, Fr, G1, G1Affine};
use halo2curves_axiom::ff::{Field, PrimeField, WithSmallOrderMulGroup};
use halo2curves_axiom::group::Curve;
use halo2curves_axiom::group::prime::PrimeCurveAffine;
use rayon::prelude::*;

use super::curve;

/// Radix-4 groups (four points each) per lockstep batch: enough that a batch's field
/// inversions are a few percent of its work, few enough that its tables stay in L2.
const GROUPS: usize = 256;
/// wNAF digit positions of a GLV half (below 2^128).
const DIGITS: usize = 130;
/// The scalars of a radix-4 group with twiddle `W`: `1, W², W, W³, IW, −IW³`.
const SCALARS: usize = 6;

/// The Lagrange basis `L_i = (1/n) Σ_j ω^(-ij)·g_j` of `g` over halo2's domain of size
/// `n = 2^k`: the same points as halo2's `g_to_lagrange`, by a radix-4 inverse FFT
/// (after one radix-2 layer when `k` is odd) on rayon whose scalar multiplications run
/// in batch-affine lockstep (see the module docs) and skip the unit twiddles. Cost:
/// about `n·(3⌊k/2⌋ + 1)/4` chains of ~128 affine doublings (~17 µs each) and
/// `n·(5⌊k/2⌋ + 1)/4` products of ~43 affine additions (~5 µs): on two cores with
/// `asm`, about 49 s at k = 19 and 2 s at k = 15 (a projective GLV multiplication per
/// butterfly took 85 s and 4 s). Memory: `g`, the result, `n/2` twiddles and a few
/// MiB per thread.
pub(crate) fn lagrange_basis(g: &[G1Affine], k: u32) -> Vec<G1Affine> {
    let n = 1usize << k;
    assert_eq!(g.len(), n, "lagrange_basis takes 2^k points");
    let n_inv = Fr::TWO_INV.pow_vartime([u64::from(k)]);
    if k == 1 {
        let (x, y) = (g[0].to_curve(), g[1].to_curve());
        let mut out = [G1Affine::identity(); 2];
        G1::batch_normalize(
            &[curve::mul(&(x + y), &n_inv), curve::mul(&(x - y), &n_inv)],
            &mut out,
        );
        return out.to_vec();
    }
    let tw = Twiddles::new(k);
    let mut a: Vec<G1Affine> = (0..n)
        .into_par_iter()
        .map(|i| g[i.reverse_bits() >> (usize::BITS - k)])
        .collect();
    // The quarter size of the next radix-4 stage (whose layers are `2h` and `4h` long).
    let mut h = 1;
    if k % 2 == 1 {
        // The first layer's twiddles are all 1: `(x, y) → (x + y, x − y)`.
        a.par_chunks_mut(2 * 4 * GROUPS).for_each(|chunk| {
            let (mut x, mut y): (Vec<G1Affine>, Vec<G1Affine>) =
                chunk.chunks_exact(2).map(|p| (p[0], p[1])).unzip();
            butterflies(&mut x, &mut y, &mut Vec::new());
            for (p, (x, y)) in chunk.chunks_exact_mut(2).zip(x.into_iter().zip(y)) {
                p[0] = x;
                p[1] = y;
            }
        });
        h = 2;
    }
    while 4 * h <= n {
        let scale = (4 * h == n).then_some(n_inv);
        stage(&mut a, h, &tw, scale);
        h *= 4;
    }
    a
}

/// `ω^m` for `m < n`, `ω` the inverse of halo2's `n`-th root of unity; `n/2` of them
/// stored (`ω^(m + n/2) = −ω^m`).
struct Twiddles {
    n: usize,
    half: Vec<Fr>,
}

impl Twiddles {
    fn new(k: u32) -> Self {
        let n = 1usize << k;
        let mut omega_inv = Fr::ROOT_OF_UNITY_INV;
        for _ in k..Fr::S {
            omega_inv = omega_inv.square();
        }
        const CHUNK: usize = 4096;
        let half = n / 2;
        let half: Vec<Fr> = (0..half.div_ceil(CHUNK))
            .into_par_iter()
            .flat_map_iter(|c| {
                let start = c * CHUNK;
                let mut w = omega_inv.pow_vartime([start as u64]);
                (start..(start + CHUNK).min(half)).map(move |_| {
                    let out = w;
                    w *= omega_inv;
                    out
                })
            })
            .collect();
        Self { n, half }
    }

    fn get(&self, m: usize) -> Fr {
        let m = m % self.n;
        match self.half.get(m) {
            Some(w) => *w,
            None => -self.half[m - self.n / 2],
        }
    }
}

/// Two FFT layers, `2h` and `4h` long, over `a`; with `scale`, every output is also
/// multiplied by it.
fn stage(a: &mut [G1Affine], h: usize, tw: &Twiddles, scale: Option<Fr>) {
    let len = 4 * h;
    if h >= GROUPS {
        a.par_chunks_mut(len).for_each(|block| {
            let (q01, q23) = block.split_at_mut(2 * h);
            let (q0, q1) = q01.split_at_mut(h);
            let (q2, q3) = q23.split_at_mut(h);
            q0.par_chunks_mut(GROUPS)
                .zip(q1.par_chunks_mut(GROUPS))
                .zip(q2.par_chunks_mut(GROUPS).zip(q3.par_chunks_mut(GROUPS)))
                .enumerate()
                .for_each(|(c, ((x0, x1), (x2, x3)))| {
                    let js: Vec<usize> = (c * GROUPS..c * GROUPS + x0.len()).collect();
                    groups([x0, x1, x2, x3], &js, h, tw, scale);
                });
        });
    } else {
        // Small blocks: a batch gathers the groups of several.
        a.par_chunks_mut(4 * GROUPS).for_each(|chunk| {
            let m = chunk.len() / 4;
            let mut q: [Vec<G1Affine>; 4] = std::array::from_fn(|_| Vec::with_capacity(m));
            for block in chunk.chunks_exact(len) {
                for (i, qi) in q.iter_mut().enumerate() {
                    qi.extend_from_slice(&block[i * h..(i + 1) * h]);
                }
            }
            let js: Vec<usize> = (0..m).map(|g| g % h).collect();
            let [q0, q1, q2, q3] = &mut q;
            groups([q0, q1, q2, q3], &js, h, tw, scale);
            for (b, block) in chunk.chunks_exact_mut(len).enumerate() {
                for (i, qi) in q.iter().enumerate() {
                    block[i * h..(i + 1) * h].copy_from_slice(&qi[b * h..(b + 1) * h]);
                }
            }
        });
    }
}

/// Radix-4 groups `(x0[g], x1[g], x2[g], x3[g])` with twiddle indices `js[g]` (below
/// `h`), in place.
fn groups(x: [&mut [G1Affine]; 4], js: &[usize], h: usize, tw: &Twiddles, scale: Option<Fr>) {
    let [x0, x1, x2, x3] = x;
    let m = js.len();
    let stride = tw.n / (4 * h);
    let quarter = tw.n / 4;
    // In early stages the groups of a batch share their twiddles: recode each once.
    let per_j = h < m;
    let distinct: Vec<usize> = if per_j { (0..h).collect() } else { js.to_vec() };
    let key = |g: usize| if per_j { js[g] } else { g };
    let scalars: Vec<Fr> = distinct
        .iter()
        .flat_map(|&j| {
            let w = j * stride;
            let s = [
                Fr::ONE,
                tw.get(2 * w),
                tw.get(w),
                tw.get(3 * w),
                tw.get(w + quarter),
                -tw.get(3 * w + quarter),
            ];
            s.map(|v| scale.map_or(v, |c| v * c))
        })
        .collect();
    let recoded: Vec<Option<Recoded>> = scalars.iter().map(Recoded::new).collect();

    let mut pre = Vec::new();
    // Unscaled groups with `W = 1`: `P = b` and `U = c + d` need no multiplication, `V
    // = I·(c − d)` one.
    let trivial: Vec<usize> = match scale {
        Some(_) => Vec::new(),
        None => (0..m).filter(|&g| js[g] == 0).collect(),
    };
    if !trivial.is_empty() {
        let mut c: Vec<G1Affine> = trivial.iter().map(|&g| x2[g]).collect();
        let mut d: Vec<G1Affine> = trivial.iter().map(|&g| x3[g]).collect();
        butterflies(&mut c, &mut d, &mut pre);
        for (i, &g) in trivial.iter().enumerate() {
            x2[g] = c[i];
            x3[g] = d[i];
        }
    }

    let mut bases = Vec::with_capacity(4 * m);
    let mut jobs = Vec::with_capacity(4 * m);
    // Where each job's result goes: (group, slice).
    let mut dest: Vec<(usize, u8)> = Vec::with_capacity(4 * m);
    let mut base = |p: G1Affine| {
        bases.push(p);
        (bases.len() - 1) as u32
    };
    for g in 0..m {
        let r = (key(g) * SCALARS) as u32;
        if scale.is_none() && js[g] == 0 {
            jobs.push(Job::one(base(x3[g]), r + 4));
            dest.push((g, 3));
            continue;
        }
        if scale.is_some() {
            jobs.push(Job::one(base(x0[g]), r));
            dest.push((g, 0));
        }
        let (b, c, d) = (base(x1[g]), base(x2[g]), base(x3[g]));
        jobs.push(Job::one(b, r + 1));
        dest.push((g, 1));
        jobs.push(Job::two(c, r + 2, d, r + 3));
        dest.push((g, 2));
        jobs.push(Job::two(c, r + 4, d, r + 5));
        dest.push((g, 3));
    }
    let out = run_jobs(&bases, &scalars, &recoded, &jobs);
    for (p, &(g, s)) in out.into_iter().zip(&dest) {
        match s {
            0 => x0[g] = p,
            1 => x1[g] = p,
            2 => x2[g] = p,
            _ => x3[g] = p,
        }
    }
    // Now (a, P, U, V): a ± P, then (a + P) ± U and (a − P) ± V.
    butterflies(x0, x1, &mut pre);
    butterflies(x0, x2, &mut pre);
    butterflies(x1, x3, &mut pre);
}

/// A scalar's GLV halves in width-5 NAF, least significant digit first, signs folded
/// in: `s·p = Σ_i d0[i]·2^i·p + Σ_i d1[i]·2^i·endo(p)`.
struct Recoded {
    digits: [[i8; DIGITS]; 2],
}

impl Recoded {
    /// `None` if a GLV half does not fit (it always does; the job then goes through
    /// [`curve::mul`]).
    fn new(s: &Fr) -> Option<Self> {
        let (k1, neg1, k2, neg2) = curve::decompose(s)?;
        let mut digits = [[0i8; DIGITS]; 2];
        // curve::mul: k·p = k1·(±p) + k2·(∓endo(p)).
        wnaf5(k1, if neg1 { -1 } else { 1 }, &mut digits[0])?;
        wnaf5(k2, if neg2 { 1 } else { -1 }, &mut digits[1])?;
        Some(Self { digits })
    }
}

/// Writes the width-5 NAF of `v` ([`curve::wnaf5`]) times `sign` into `out`; `None`
/// if it has more than [`DIGITS`] digits.
fn wnaf5(v: u128, sign: i8, out: &mut [i8; DIGITS]) -> Option<()> {
    let (digits, len) = curve::wnaf5([v as u64, (v >> 64) as u64, 0, 0]);
    for (o, d) in out
        .iter_mut()
        .zip(digits.get(..len).filter(|_| len <= DIGITS)?)
    {
        *o = d * sign;
    }
    Some(())
}

/// `Σ scalar·base` over one or two terms, bases and scalars by index.
#[derive(Clone, Copy)]
struct Job {
    terms: [(u32, u32); 2],
    len: u8,
}

impl Job {
    fn one(base: u32, scalar: u32) -> Self {
        Self {
            terms: [(base, scalar); 2],
            len: 1,
        }
    }

    fn two(b0: u32, s0: u32, b1: u32, s1: u32) -> Self {
        Self {
            terms: [(b0, s0), (b1, s1)],
            len: 2,
        }
    }
}

/// Every job's sum, in lockstep: the chains double together at each digit position,
/// then add their table points one term half at a time.
fn run_jobs(
    bases: &[G1Affine],
    scalars: &[Fr],
    recoded: &[Option<Recoded>],
    jobs: &[Job],
) -> Vec<G1Affine> {
    let mut pre = Vec::new();
    let tables = odd_multiples(bases, &mut pre);
    let zeta = Fq::ZETA;
    let mut acc = vec![G1Affine::identity(); jobs.len()];
    let mut live = vec![false; jobs.len()];
    let mut adds: Vec<(u32, Fq, Fq)> = Vec::with_capacity(jobs.len());
    for t in (0..DIGITS).rev() {
        double(&mut acc, &live, &mut pre);
        for slot in 0..4 {
            let (term, half) = (slot / 2, slot % 2);
            adds.clear();
            for (i, job) in jobs.iter().enumerate() {
                if usize::from(job.len) <= term {
                    continue;
                }
                let (b, s) = job.terms[term];
                let Some(r) = &recoded[s as usize] else {
                    continue;
                };
                let d = r.digits[half][t];
                if d == 0 {
                    continue;
                }
                let Some(table) = &tables[b as usize] else {
                    continue;
                };
                let e = &table[usize::from(d.unsigned_abs() / 2)];
                let x = if half == 1 { e.x * zeta } else { e.x };
                let y = if d < 0 { -e.y } else { e.y };
                adds.push((i as u32, x, y));
            }
            add(&mut acc, &mut live, &mut adds, &mut pre);
        }
    }
    // Jobs with a scalar the recoding refused (never, in practice).
    for (i, job) in jobs.iter().enumerate() {
        let terms = &job.terms[..usize::from(job.len)];
        if terms.iter().any(|&(_, s)| recoded[s as usize].is_none()) {
            let sum: G1 = terms
                .iter()
                .map(|&(b, s)| curve::mul(&bases[b as usize].to_curve(), &scalars[s as usize]))
                .sum();
            acc[i] = sum.to_affine();
        }
    }
    acc
}

/// The odd multiples `p, 3p, ..., 15p` of each base; `None` for the point at infinity.
fn odd_multiples(bases: &[G1Affine], pre: &mut Vec<Fq>) -> Vec<Option<[G1Affine; 8]>> {
    let live: Vec<bool> = bases.iter().map(|p| !bool::from(p.is_identity())).collect();
    let mut two = bases.to_vec();
    double(&mut two, &live, pre);
    let mut tables: Vec<Option<[G1Affine; 8]>> = bases
        .iter()
        .zip(&live)
        .map(|(p, &l)| l.then_some([*p; 8]))
        .collect();
    let mut acc = bases.to_vec();
    let mut acc_live = live.clone();
    let mut adds: Vec<(u32, Fq, Fq)> = Vec::with_capacity(bases.len());
    for k in 1..8 {
        adds.clear();
        adds.extend(
            (0..bases.len())
                .filter(|&i| live[i])
                .map(|i| (i as u32, two[i].x, two[i].y)),
        );
        add(&mut acc, &mut acc_live, &mut adds, pre);
        for (t, p) in tables.iter_mut().zip(&acc) {
            if let Some(t) = t {
                t[k] = *p;
            }
        }
    }
    tables
}

/// `p ← 2p` for the live points (not the point at infinity), one inversion for all.
/// A live point has `y ≠ 0`: G1 has odd order.
fn double(p: &mut [G1Affine], live: &[bool], pre: &mut Vec<Fq>) {
    pre.clear();
    let mut prod = Fq::ONE;
    for (p, &l) in p.iter().zip(live) {
        pre.push(prod);
        if l {
            prod *= p.y.double();
        }
    }
    let mut inv = prod.invert().unwrap_or(Fq::ZERO);
    for ((p, &l), before) in p.iter_mut().zip(live).zip(pre.iter()).rev() {
        if !l {
            continue;
        }
        let d = p.y.double();
        let d_inv = inv * before;
        inv *= d;
        let xx = p.x.square();
        let lambda = (xx.double() + xx) * d_inv;
        let x3 = lambda.square() - p.x.double();
        p.y = lambda * (p.x - x3) - p.y;
        p.x = x3;
    }
}

/// `acc[i] ← acc[i] + (x, y)` for each `(i, x, y)` in `adds` (each `i` at most once,
/// `(x, y)` not the point at infinity), one inversion for all; `live[i]` says `acc[i]`
/// is not the point at infinity. Sums the chord formula does not cover go through
/// projective arithmetic.
fn add(acc: &mut [G1Affine], live: &mut [bool], adds: &mut [(u32, Fq, Fq)], pre: &mut Vec<Fq>) {
    const DONE: u32 = u32::MAX;
    pre.clear();
    let mut prod = Fq::ONE;
    for e in adds.iter_mut() {
        pre.push(prod);
        let i = e.0 as usize;
        let q = G1Affine { x: e.1, y: e.2 };
        if !live[i] {
            acc[i] = q;
            live[i] = true;
            e.0 = DONE;
            continue;
        }
        let d = q.x - acc[i].x;
        if bool::from(d.is_zero()) {
            acc[i] = (acc[i].to_curve() + q).to_affine();
            live[i] = !bool::from(acc[i].is_identity());
            e.0 = DONE;
            continue;
        }
        prod *= d;
    }
    let mut inv = prod.invert().unwrap_or(Fq::ZERO);
    for (e, before) in adds.iter().zip(pre.iter()).rev() {
        if e.0 == DONE {
            continue;
        }
        let p = &mut acc[e.0 as usize];
        let d = e.1 - p.x;
        let d_inv = inv * before;
        inv *= d;
        let lambda = (e.2 - p.y) * d_inv;
        let x3 = lambda.square() - p.x - e.1;
        p.y = lambda * (p.x - x3) - p.y;
        p.x = x3;
    }
}

/// `(x[i], y[i]) ← (x[i] + y[i], x[i] − y[i])` for each `i`, one inversion for all (the
/// sum and the difference share their denominator). Pairs the chord formula does not
/// cover go through projective arithmetic.
fn butterflies(x: &mut [G1Affine], y: &mut [G1Affine], pre: &mut Vec<Fq>) {
    let plain = |p: &G1Affine, q: &G1Affine| {
        !bool::from(p.is_identity()) && !bool::from(q.is_identity()) && p.x != q.x
    };
    pre.clear();
    let mut prod = Fq::ONE;
    for (p, q) in x.iter().zip(y.iter()) {
        pre.push(prod);
        if plain(p, q) {
            prod *= q.x - p.x;
        }
    }
    let mut inv = prod.invert().unwrap_or(Fq::ZERO);
    for ((p, q), before) in x.iter_mut().zip(y.iter_mut()).zip(pre.iter()).rev() {
        if !plain(p, q) {
            let (pc, qc) = (p.to_curve(), q.to_curve());
            *p = (pc + qc).to_affine();
            *q = (pc - qc).to_affine();
            continue;
        }
        let d = q.x - p.x;
        let d_inv = inv * before;
        inv *= d;
        let l1 = (q.y - p.y) * d_inv;
        let l2 = -(q.y + p.y) * d_inv;
        let x1 = l1.square() - p.x - q.x;
        let x2 = l2.square() - p.x - q.x;
        let y1 = l1 * (p.x - x1) - p.y;
        let y2 = l2 * (p.x - x2) - p.y;
        *p = G1Affine { x: x1, y: y1 };
        *q = G1Affine { x: x2, y: y2 };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use halo2curves_axiom::group::Group;
    use rand_chacha::ChaCha20Rng;
    use rand_chacha::rand_core::SeedableRng;

    #[test]
    fn lockstep_sums_match_projective_arithmetic() {
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        let p = G1::random(&mut rng);
        // Bases with repeats and opposites (exceptional additions), and infinity.
        let mut bases: Vec<G1Affine> = (0..20).map(|_| G1::random(&mut rng).to_affine()).collect();
        bases.push(p.to_affine());
        bases.push((-p).to_affine());
        bases.push(G1Affine::identity());
        let scalars: Vec<Fr> = (0..20)
            .map(|_| Fr::random(&mut rng))
            .chain([Fr::ONE, -Fr::ONE, Fr::ZERO, Fr::from(3), Fr::ZETA])
            .collect();
        let recoded: Vec<Option<Recoded>> = scalars.iter().map(Recoded::new).collect();
        let mut jobs = Vec::new();
        for b in 0..bases.len() as u32 {
            for s in 0..scalars.len() as u32 {
                jobs.push(Job::one(b, s));
                jobs.push(Job::two(b, s, 20, (s + 1) % scalars.len() as u32));
                jobs.push(Job::two(b, s, 21, s));
            }
        }
        let out = run_jobs(&bases, &scalars, &recoded, &jobs);
        for (job, got) in jobs.iter().zip(out) {
            let want: G1 = job.terms[..usize::from(job.len)]
                .iter()
                .map(|&(b, s)| bases[b as usize] * scalars[s as usize])
                .sum();
            assert_eq!(got, want.to_affine());
        }
    }

    #[test]
    fn butterflies_cover_every_case() {
        let mut rng = ChaCha20Rng::seed_from_u64(6);
        let p = G1::random(&mut rng).to_affine();
        let q = G1::random(&mut rng).to_affine();
        let o = G1Affine::identity();
        let pairs = [(p, q), (p, p), (p, -p), (o, p), (p, o), (o, o), (q, p)];
        let (mut x, mut y): (Vec<G1Affine>, Vec<G1Affine>) = pairs.iter().copied().unzip();
        butterflies(&mut x, &mut y, &mut Vec::new());
        for ((a, b), (s, d)) in pairs.iter().zip(x.iter().zip(&y)) {
            assert_eq!(*s, (a.to_curve() + b).to_affine());
            assert_eq!(*d, (a.to_curve() - b).to_affine());
        }
    }
}
