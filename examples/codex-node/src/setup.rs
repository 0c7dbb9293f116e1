//! The trusted setup from the command line: `params import|verify` turns a
//! powers-of-tau ceremony file into the prover's parameters and checks them, `ceremony
//! new|contribute|verify` runs a ceremony of our own in snarkjs's `.ptau` format.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use clap::Subcommand;
use codex::proofs::ptau::{self, Ptau};
use codex::proofs::{Prover, Srs, prover};

use crate::spinner;

/// `codex-node params ...`
#[derive(Subcommand, Debug)]
pub enum ParamsCommand {
    /// Import a powers-of-tau ceremony file (snarkjs `.ptau`, e.g. the Perpetual Powers
    /// of Tau or Hermez files, or one from `codex-node ceremony`) as proving parameters
    /// for circuits of up to 2^K rows: the points are checked (on the curve, in the
    /// subgroup, the generators, tau in G2 against tau in G1, the powers by a pairing
    /// check) before the parameters are written. Prints the parameters' digest.
    Import {
        /// The ceremony file.
        ptau: PathBuf,
        /// log2 of the circuit's rows: 15 for 5 samples, 19 for 100 (the file's power
        /// must be at least this).
        #[arg(long)]
        k: u32,
        /// Where to write the parameters (halo2's format; pass it to --circuit-params).
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Check a parameters file (from `params import`): the generators, tau in G2
    /// against tau in G1, the powers and the Lagrange basis. Prints the parameters'
    /// digest, and with --samples the verifying key digest a marketplace records as its
    /// zkeyHash.
    Verify {
        /// The parameters file.
        params: PathBuf,
        /// Also print the verifying key digest of the circuit for this many samples.
        #[arg(long)]
        samples: Option<usize>,
    },
}

/// `codex-node ceremony ...`
#[derive(Subcommand, Debug)]
pub enum CeremonyCommand {
    /// Start a ceremony: a `.ptau` of power P (up to 2^P constraints) with no
    /// contribution yet, as `snarkjs powersoftau new bn128 P` makes it.
    New {
        /// The power (the file holds 2^(P+1) - 1 powers of tau in G1).
        #[arg(long)]
        power: u32,
        /// The file to write.
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Add a contribution: a fresh secret (from the OS's randomness, mixed with
    /// --entropy-file when given) multiplied into every point, with the proof of
    /// knowledge and hash chain that `snarkjs powersoftau verify` checks. The secret is
    /// forgotten when the command ends. Prints the contribution's hash.
    Contribute {
        /// The ceremony file so far.
        input: PathBuf,
        /// The file with this contribution added.
        output: PathBuf,
        /// A file of extra entropy (any bytes).
        #[arg(long)]
        entropy_file: Option<PathBuf>,
        /// The contributor's name, recorded in the file.
        #[arg(long, default_value = "codex-node")]
        name: String,
    },
    /// Verify a ceremony file as `snarkjs powersoftau verify` does: every
    /// contribution's hash chain and proof of knowledge, and that the points are
    /// consistent powers of one secret.
    Verify {
        /// The ceremony file.
        file: PathBuf,
    },
}

/// Runs a `params` command.
pub fn params(command: ParamsCommand) -> anyhow::Result<()> {
    match command {
        ParamsCommand::Import { ptau, k, output } => {
            let t = Instant::now();
            let s = spinner(format!(
                "importing and checking {} for 2^{k} rows",
                ptau.display()
            ));
            let params = ptau::import_params(&ptau, k)
                .with_context(|| format!("{} is refused", ptau.display()))?;
            prover::write_params(&output, &params)?;
            s.finish_and_clear();
            eprintln!(
                "imported and checked in {:.1?}; parameters for 2^{k} rows written to {}",
                t.elapsed(),
                output.display()
            );
            println!("{}", prover::params_file_digest(&params));
            Ok(())
        }
        ParamsCommand::Verify { params, samples } => {
            let s = spinner(format!("checking {}", params.display()));
            let p = prover::read_params(&params)?;
            ptau::verify_params(&p).with_context(|| format!("{} is refused", params.display()))?;
            s.finish_and_clear();
            eprintln!(
                "{}: parameters for 2^{} rows, every check passed",
                params.display(),
                prover::params_k(&p)
            );
            println!("params digest: {}", prover::params_file_digest(&p));
            if let Some(samples) = samples {
                let s = spinner(format!("making the keys for {samples} samples"));
                let (prover, _) = Prover::new(&Srs::File(params.clone()), samples, None)?;
                s.finish_and_clear();
                println!(
                    "verifying key digest (zkeyHash) for {samples} samples: {}",
                    prover.verifying_key_digest()
                );
            }
            Ok(())
        }
    }
}

/// Runs a `ceremony` command.
pub fn ceremony(command: CeremonyCommand) -> anyhow::Result<()> {
    match command {
        CeremonyCommand::New { power, output } => {
            let s = spinner(format!("writing a power-{power} ceremony file"));
            Ptau::new(power)?.write(&output)?;
            s.finish_and_clear();
            eprintln!(
                "{} started (power {power}). Next: codex-node ceremony contribute {} OUT.ptau",
                output.display(),
                output.display()
            );
            Ok(())
        }
        CeremonyCommand::Contribute {
            input,
            output,
            entropy_file,
            name,
        } => {
            let entropy = match &entropy_file {
                Some(path) => read(path)?,
                None => Vec::new(),
            };
            let t = Instant::now();
            let s = spinner(format!("reading {}", input.display()));
            let before = Ptau::read(&input)?;
            s.set_message(format!(
                "contributing to {} (power {}, {} contributions so far)",
                input.display(),
                before.power(),
                before.contributions().len()
            ));
            let after = before.contribute(&name, &entropy)?;
            s.set_message(format!("writing {}", output.display()));
            after.write(&output)?;
            s.finish_and_clear();
            eprintln!(
                "contribution {} added in {:.1?}; written to {}",
                after.contributions().len(),
                t.elapsed(),
                output.display()
            );
            if let Some(c) = after.contributions().last() {
                println!(
                    "contribution {} ({}): response hash\n{}",
                    after.contributions().len(),
                    c.name(),
                    ptau::format_hash(c.response_hash())
                );
            }
            Ok(())
        }
        CeremonyCommand::Verify { file } => {
            let t = Instant::now();
            let s = spinner(format!("verifying {}", file.display()));
            let ceremony = Ptau::read(&file)?;
            let report = ceremony
                .verify()
                .with_context(|| format!("{} is refused", file.display()))?;
            s.finish_and_clear();
            println!("{report}");
            eprintln!("{} verified in {:.1?}", file.display(), t.elapsed());
            Ok(())
        }
    }
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}
