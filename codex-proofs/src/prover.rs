//! Proving and verifying storage proofs: KZG parameters, keys cached on disk, proofs as
//! bytes, and the Solidity verifier for the EVM.
//!
//! Proofs use SHPLONK with a Keccak transcript, so the same bytes verify here and in the
//! generated Solidity contract (whose calldata is the three public inputs as 32-byte
//! big-endian words followed by the proof, see [`Proof::calldata`]).

use std::fs;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use halo2_proofs::SerdeFormat;
use halo2_proofs::plonk::{
    ProvingKey, VerifyingKey, create_proof, keygen_pk, keygen_vk, verify_proof,
};
use halo2_proofs::poly::commitment::{Params, ParamsProver};
use halo2_proofs::poly::kzg::commitment::{KZGCommitmentScheme, ParamsKZG};
use halo2_proofs::poly::kzg::multiopen::{ProverSHPLONK, VerifierSHPLONK};
use halo2_proofs::poly::kzg::strategy::SingleStrategy;
use halo2_proofs::transcript::{TranscriptReadBuffer, TranscriptWriterBuffer};
use halo2curves_axiom::bn256::{Bn256, Fr, G1Affine};
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;
use sha2::{Digest, Sha256};
use snark_verifier_sdk::snark_verifier::loader::evm::encode_calldata;
use snark_verifier_sdk::snark_verifier::loader::native::NativeLoader;
use snark_verifier_sdk::snark_verifier::system::halo2::transcript::evm::EvmTranscript;
use snark_verifier_sdk::{CircuitExt, SHPLONK};

use crate::circuit::StorageCircuit;
use crate::error::{Error, Result};
use crate::field::Fe;
use crate::sampler::ProofInput;

/// Bumped whenever the circuit's layout changes, so cached keys of an older layout are
/// never used.
pub const CIRCUIT_VERSION: u32 = 2;

impl CircuitExt<Fr> for StorageCircuit {
    fn num_instance(&self) -> Vec<usize> {
        vec![3]
    }

    fn instances(&self) -> Vec<Vec<Fr>> {
        vec![self.public_inputs()]
    }
}

/// The KZG parameters (halo2's `ParamsKZG` over BN254): the powers of tau in G1, their
/// Lagrange basis, and tau in G2.
pub type KzgParams = ParamsKZG<Bn256>;

/// `log2` of the number of rows that `params` serve.
pub fn params_k(params: &KzgParams) -> u32 {
    params.k()
}

/// Where the KZG parameters (the structured reference string) come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Srs {
    /// A deterministic local setup: fine for development and tests, **insecure** for
    /// real use: its secret follows from a fixed seed, so anyone can forge proofs.
    Development,
    /// Parameters from a file: either a powers-of-tau ceremony file in snarkjs's
    /// `.ptau` format (recognised by its magic bytes; imported and verified with
    /// [`crate::ptau::import_params`], and with a cache directory the result is cached
    /// there under a digest of the file), or halo2 `ParamsKZG` parameters as written by
    /// `codex-node params import`. A file for a larger `k` is downsized.
    File(PathBuf),
}

impl Srs {
    /// Whether proofs made with these parameters can be forged (the development setup).
    pub fn is_forgeable(&self) -> bool {
        matches!(self, Srs::Development)
    }
}

fn io_error(path: &Path, e: std::io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source: e,
    }
}

/// The parameters for `2^k` rows: [`Srs::Development`] generated from a fixed seed, or
/// read from a file ([`Srs::File`]: a `.ptau` is imported and verified, halo2
/// parameters are read with every point checked to be on the curve). Development
/// parameters and imported ceremony files are cached in `cache_dir` when given (a
/// development setup at k = 19, for 100 samples, takes about a minute on two cores;
/// importing a ceremony file computes the Lagrange basis, seconds at k = 15 and minutes
/// at k = 19).
///
/// # Errors
/// [`Error::Io`] for files that cannot be read or written, [`Error::Params`] for a file
/// that is not a params file or holds too few powers, the errors of
/// [`crate::ptau::import_params`] for a ceremony file that fails a check.
pub fn load_params(srs: &Srs, k: u32, cache_dir: Option<&Path>) -> Result<ParamsKZG<Bn256>> {
    match srs {
        Srs::Development => {
            let cached = cache_dir.map(|d| d.join(format!("srs-dev-k{k}.bin")));
            if let Some(path) = &cached
                && let Ok(params) = read_params(path)
                && params.k() == k
            {
                return Ok(params);
            }
            let params = ParamsKZG::<Bn256>::setup(k, ChaCha20Rng::seed_from_u64(0xC0DE_C0DE));
            if let Some(path) = &cached {
                write_params(path, &params)?;
            }
            Ok(params)
        }
        Srs::File(path) if is_ptau(path)? => {
            let cached = match cache_dir {
                Some(dir) => Some(dir.join(format!("params-ptau-{}-k{k}.bin", file_digest(path)?))),
                None => None,
            };
            if let Some(cached) = &cached
                && let Ok(params) = read_params(cached)
                && params.k() == k
            {
                return Ok(params);
            }
            let params = crate::ptau::import_params(path, k)?;
            if let Some(cached) = &cached {
                write_params(cached, &params)?;
            }
            Ok(params)
        }
        Srs::File(path) => {
            let mut params = read_params(path)?;
            if params.k() < k {
                return Err(Error::Params {
                    path: path.clone(),
                    reason: format!("it holds 2^{} powers, the circuit needs 2^{k}", params.k()),
                });
            }
            if params.k() > k {
                params.downsize(k);
            }
            Ok(params)
        }
    }
}

/// Whether the file at `path` starts with snarkjs's magic bytes `ptau`.
fn is_ptau(path: &Path) -> Result<bool> {
    use std::io::Read;
    let mut magic = [0u8; 4];
    let mut file = fs::File::open(path).map_err(|e| io_error(path, e))?;
    match file.read_exact(&mut magic) {
        Ok(()) => Ok(&magic == b"ptau"),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(io_error(path, e)),
    }
}

/// SHA-256 of a whole file, as 16 hex digits (a cache key).
fn file_digest(path: &Path) -> Result<String> {
    let mut file = fs::File::open(path).map_err(|e| io_error(path, e))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(|e| io_error(path, e))?;
    Ok(hex::encode(&hasher.finalize()[..8]))
}

/// Writes `params` to `path` in halo2's raw format (what [`Srs::File`] reads),
/// atomically.
///
/// # Errors
/// [`Error::Io`].
pub fn write_params(path: &Path, params: &ParamsKZG<Bn256>) -> Result<()> {
    let mut bytes = Vec::new();
    params.write(&mut bytes).map_err(|e| io_error(path, e))?;
    write_atomically(path, &bytes)
}

/// The SHA-256 digest of `params` in their file form, as `0x` and 64 hex digits: what
/// `codex-node params import` prints, to compare parameters across machines.
pub fn params_file_digest(params: &ParamsKZG<Bn256>) -> String {
    let mut bytes = Vec::new();
    // Writing to memory cannot fail.
    let _ = params.write(&mut bytes);
    format!("0x{}", hex::encode(Sha256::digest(&bytes)))
}

/// Reads halo2 parameters from `path`, checking that every point is on the curve (a
/// truncated or corrupt file is an error, never a panic).
///
/// # Errors
/// [`Error::Io`] when the file cannot be opened, [`Error::Params`] when it is not a
/// parameters file.
pub fn read_params(path: &Path) -> Result<ParamsKZG<Bn256>> {
    let file = fs::File::open(path).map_err(|e| io_error(path, e))?;
    ParamsKZG::<Bn256>::read_custom(&mut BufReader::new(file), SerdeFormat::RawBytes).map_err(|e| {
        Error::Params {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }
    })
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
    }
    // A name of its own per writer: tests and processes may fill the same cache at once.
    static WRITERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp-{}-{n}", std::process::id()));
    let mut f = BufWriter::new(fs::File::create(&tmp).map_err(|e| io_error(&tmp, e))?);
    f.write_all(bytes).map_err(|e| io_error(&tmp, e))?;
    f.into_inner()
        .map_err(|e| io_error(&tmp, e.into_error()))?
        .sync_all()
        .map_err(|e| io_error(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| io_error(path, e))
}

/// A proof with the public inputs it proves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proof {
    /// The public inputs `[entropy, dataSetRoot, slotIndex]`.
    pub public_inputs: [Fe; 3],
    /// The proof (SHPLONK, Keccak transcript).
    pub bytes: Vec<u8>,
}

impl Proof {
    /// The generated Solidity verifier's calldata: the public inputs as 32-byte
    /// big-endian words, then the proof.
    pub fn calldata(&self) -> Vec<u8> {
        calldata(&self.public_inputs, &self.bytes)
    }
}

/// The Solidity verifier's calldata for `public_inputs` and `proof`.
pub fn calldata(public_inputs: &[Fe; 3], proof: &[u8]) -> Vec<u8> {
    encode_calldata(&[public_inputs.map(|x| x.to_fr()).to_vec()], proof)
}

/// The keys for one circuit size, and the parameters they were made with.
#[derive(Debug)]
pub struct Prover {
    params: ParamsKZG<Bn256>,
    pk: ProvingKey<G1Affine>,
    samples: usize,
    vk_digest: String,
}

/// How long the last setup took, and whether keys came from the cache.
#[derive(Clone, Copy, Debug)]
pub struct SetupReport {
    /// Time to obtain the parameters.
    pub params: Duration,
    /// Time to generate or read the keys.
    pub keys: Duration,
    /// Whether the proving key was read from the cache.
    pub cached: bool,
}

impl Prover {
    /// Keys for `samples` samples over `srs`. With `cache_dir`, development parameters
    /// and the proving key are cached there, keyed by the circuit version, the number of
    /// samples, `k` and a digest of the parameters; keygen for 5 samples takes under a
    /// second, for 100 about 15 s.
    ///
    /// # Errors
    /// As [`load_params`]; [`Error::Io`] for the cache; [`Error::Plonk`] if keygen fails.
    pub fn new(srs: &Srs, samples: usize, cache_dir: Option<&Path>) -> Result<(Self, SetupReport)> {
        let samples = samples.max(1);
        let k = StorageCircuit::k_for(samples);
        let t = Instant::now();
        let params = load_params(srs, k, cache_dir)?;
        let params_time = t.elapsed();
        let t = Instant::now();
        let shape = StorageCircuit::placeholder(samples);
        let key_path = cache_dir.map(|d| {
            d.join(format!(
                "pk-v{CIRCUIT_VERSION}-s{samples}-k{k}-{}.bin",
                params_digest(&params)
            ))
        });
        if let Some(path) = &key_path
            && let Ok(file) = fs::File::open(path)
            && let Ok(pk) = ProvingKey::<G1Affine>::read::<_, StorageCircuit>(
                &mut BufReader::new(file),
                SerdeFormat::RawBytesUnchecked,
                (),
            )
        {
            let prover = Prover::from_parts(params, pk, samples);
            return Ok((
                prover,
                SetupReport {
                    params: params_time,
                    keys: t.elapsed(),
                    cached: true,
                },
            ));
        }
        let vk = keygen_vk(&params, &shape).map_err(plonk)?;
        let pk = keygen_pk(&params, vk, &shape).map_err(plonk)?;
        if let Some(path) = &key_path {
            let mut bytes = Vec::new();
            pk.write(&mut bytes, SerdeFormat::RawBytesUnchecked)
                .map_err(|e| io_error(path, e))?;
            write_atomically(path, &bytes)?;
        }
        Ok((
            Prover::from_parts(params, pk, samples),
            SetupReport {
                params: params_time,
                keys: t.elapsed(),
                cached: false,
            },
        ))
    }

    fn from_parts(params: ParamsKZG<Bn256>, pk: ProvingKey<G1Affine>, samples: usize) -> Self {
        let vk_digest = verifying_key_digest(&params, pk.get_vk());
        Prover {
            params,
            pk,
            samples,
            vk_digest,
        }
    }

    /// The digest of what a verifier checks proofs against: SHA-256 over the verifying
    /// key (halo2's raw format, which holds the circuit's fixed and permutation
    /// commitments, made with the parameters' powers of tau) and the parameters' `G2`
    /// and `tau·G2`, as `0x` and 64 hex digits. It goes in the marketplace's
    /// `zkeyHash`, and a host refuses to sell when its own differs: proofs made with
    /// other keys or parameters would be rejected on chain.
    pub fn verifying_key_digest(&self) -> &str {
        &self.vk_digest
    }

    /// The number of samples the keys are for.
    pub fn samples(&self) -> usize {
        self.samples
    }

    /// `log2` of the circuit's rows.
    pub fn k(&self) -> u32 {
        self.params.k()
    }

    /// The verifying key.
    pub fn verifying_key(&self) -> &VerifyingKey<G1Affine> {
        self.pk.get_vk()
    }

    /// Proves `input`, after checking it natively (a wrong input gets the native
    /// check's typed error, not an invalid proof). About 1.7 s for 5 samples on two
    /// cores, about 29 s for 100. CPU-bound: call it off the async executor.
    ///
    /// # Errors
    /// [`Error::SampleCount`] when the input has another number of samples than the
    /// keys; the errors of [`ProofInput::check`]; [`Error::Plonk`] if proving fails.
    pub fn prove(&self, input: &ProofInput) -> Result<Proof> {
        if input.samples.len() != self.samples {
            return Err(Error::SampleCount {
                found: input.samples.len(),
                expected: self.samples,
            });
        }
        input.check()?;
        let circuit = StorageCircuit::new(input)?;
        let instances = circuit.public_inputs();
        let mut transcript =
            EvmTranscript::<G1Affine, NativeLoader, Vec<u8>, Vec<u8>>::init(Vec::new());
        create_proof::<KZGCommitmentScheme<Bn256>, ProverSHPLONK<'_, Bn256>, _, _, _, _>(
            &self.params,
            &self.pk,
            &[circuit],
            &[&[&instances]],
            ChaCha20Rng::from_entropy(),
            &mut transcript,
        )
        .map_err(plonk)?;
        Ok(Proof {
            public_inputs: input.public_inputs(),
            bytes: transcript.finalize(),
        })
    }

    /// Verifies `proof` for `public_inputs` (a few milliseconds).
    ///
    /// # Errors
    /// [`Error::InvalidProof`] when the proof does not verify.
    pub fn verify(&self, public_inputs: &[Fe; 3], proof: &[u8]) -> Result<()> {
        let instances = public_inputs.map(|x| x.to_fr());
        let mut transcript = EvmTranscript::<G1Affine, NativeLoader, &[u8], Vec<u8>>::init(proof);
        verify_proof::<KZGCommitmentScheme<Bn256>, VerifierSHPLONK<'_, Bn256>, _, _, _>(
            self.params.verifier_params(),
            self.pk.get_vk(),
            SingleStrategy::new(&self.params),
            &[&[&instances]],
            &mut transcript,
        )
        .map_err(|_| Error::InvalidProof)
    }

    /// The Solidity source of a verifier contract for these keys (`pragma solidity
    /// 0.8.19`; compile without the optimizer). Its calldata is [`Proof::calldata`]; it
    /// reverts when the proof is invalid.
    pub fn solidity_verifier(&self) -> String {
        snark_verifier_sdk::evm::gen_evm_verifier_sol_code::<StorageCircuit, SHPLONK>(
            &self.params,
            self.pk.get_vk(),
            vec![3],
        )
    }
}

fn plonk(e: halo2_proofs::plonk::Error) -> Error {
    Error::Plonk(e.to_string())
}

/// See [`Prover::verifying_key_digest`].
fn verifying_key_digest(params: &ParamsKZG<Bn256>, vk: &VerifyingKey<G1Affine>) -> String {
    let mut bytes = vk.to_bytes(SerdeFormat::RawBytes);
    for point in [params.g2(), params.s_g2()] {
        bytes.extend_from_slice(halo2curves_axiom::group::GroupEncoding::to_bytes(&point).as_ref());
    }
    format!("0x{}", hex::encode(Sha256::digest(&bytes)))
}

/// A short digest of the parameters that keys depend on.
fn params_digest(params: &ParamsKZG<Bn256>) -> String {
    // The first 8 bytes of the file digest, as cache names had them before.
    params_file_digest(params)[2..18].to_string()
}

/// Compiles a generated verifier with the project's pinned solc 0.8.19 (through
/// `node scripts/compile-verifier.js`, which needs `scripts/setup.sh` to have run `npm
/// ci`), returning the creation bytecode. With `cache_dir`, the bytecode is cached by a
/// digest of the source (compiling takes several seconds).
///
/// # Errors
/// [`Error::Solc`] when node or the compiler fails (with its message), [`Error::Io`] for
/// the cache.
pub fn compile_verifier(source: &str, cache_dir: Option<&Path>) -> Result<Vec<u8>> {
    let digest = hex::encode(&Sha256::digest(source.as_bytes())[..8]);
    let cached = cache_dir.map(|d| d.join(format!("verifier-{digest}.bin")));
    if let Some(path) = &cached
        && let Ok(bytes) = fs::read(path)
    {
        return Ok(bytes);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/compile-verifier.js");
    let script = std::env::var_os("CODEX_COMPILE_VERIFIER")
        .map(PathBuf::from)
        .unwrap_or(script);
    let mut child = std::process::Command::new("node")
        .arg(&script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| Error::Solc(format!("cannot run node {}: {e}", script.display())))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(source.as_bytes())
            .map_err(|e| Error::Solc(format!("writing to solc: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| Error::Solc(format!("waiting for solc: {e}")))?;
    if !out.status.success() {
        return Err(Error::Solc(
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ));
    }
    let bytes = hex::decode(out.stdout.trim_ascii())
        .map_err(|e| Error::Solc(format!("solc printed no bytecode: {e}")))?;
    if let Some(path) = &cached {
        write_atomically(path, &bytes)?;
    }
    Ok(bytes)
}

/// Deploys `bytecode` in an in-process EVM (revm) and calls it with `calldata`; returns
/// the gas of the call (including the 21,000 of a transaction), or the revert.
///
/// # Errors
/// [`Error::EvmRejected`] when deployment or the call reverts or halts.
pub fn evm_call(bytecode: &[u8], calldata: Vec<u8>) -> Result<u64> {
    snark_verifier_sdk::snark_verifier::loader::evm::deploy_and_call(bytecode.to_vec(), calldata)
        .map_err(Error::EvmRejected)
}
