//! `cargo run --release -p codex-devnet`: the whole network on one machine, through a
//! storage request's life (see the crate's documentation); prints a timeline and exits
//! non-zero if any step fails.

use std::path::PathBuf;

use clap::Parser;

/// Runs anvil, deploys the contracts, and runs a client, hosts, a spare host and a
/// validator on loopback through an encrypted upload, request, proofs, a killed host,
/// slashing, repair, download and decryption, and payout.
#[derive(Debug, Parser)]
#[command(name = "codex-devnet")]
struct Args {
    /// Hosts taking slots (at least K + M).
    #[arg(long, default_value_t = 5)]
    hosts: usize,
    /// Data slots.
    #[arg(long, default_value_t = 3)]
    k: u64,
    /// Parity slots.
    #[arg(long, default_value_t = 2)]
    m: u64,
    /// Size of the file uploaded (encrypted), in bytes.
    #[arg(long, default_value_t = 4 << 20)]
    file_size: usize,
    /// Seconds per proof period.
    #[arg(long, default_value_t = 20)]
    period: u64,
    /// Where proving keys and the compiled verifier are cached between runs.
    #[arg(long, default_value = "target/devnet-proof-keys")]
    proof_cache: PathBuf,
    /// Keep the nodes' stores here (a temporary directory otherwise).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Run on this chain (JSON-RPC URL) instead of starting anvil: the contracts are
    /// deployed there and every node's fresh account funded from --eth-private-key.
    #[arg(long = "eth-provider", requires = "eth_private_key")]
    eth_provider: Option<String>,
    /// The key of the account that deploys and funds (hex, or a file holding it with
    /// mode 0600); it needs about 0.1 ether per node plus the deployment's gas.
    #[arg(
        long = "eth-private-key",
        requires = "eth_provider",
        hide_env_values = true
    )]
    eth_private_key: Option<String>,
    /// Log filter for the nodes (`warn`, `info`, `codex=debug`, ...).
    #[arg(long, default_value = "warn", env = "CODEX_LOG")]
    log_level: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&args.log_level)?)
        .with_writer(std::io::stderr)
        .init();
    let opts = codex_devnet::Options {
        hosts: args.hosts,
        k: args.k,
        m: args.m,
        file_size: args.file_size,
        period: args.period,
        timeout: (args.period / 2).max(1),
        work_dir: args.work_dir,
        proof_cache: args.proof_cache,
        chain: match (args.eth_provider, args.eth_private_key) {
            (Some(url), Some(key)) => codex_devnet::ChainSource::External {
                url,
                key: codex::node::market::EthKey::parse(&key)?,
            },
            _ => codex_devnet::ChainSource::Anvil,
        },
        ..codex_devnet::Options::default()
    };
    let report = codex_devnet::run(&opts, &|line| println!("{line}")).await;
    match report {
        Ok(r) => {
            println!("\nwall time per phase:");
            for (name, d) in &r.phases {
                println!("    {name:<40} {:>7.1} s", d.as_secs_f64());
            }
            Ok(())
        }
        Err(e) => {
            eprintln!("devnet FAILED: {e:#}");
            std::process::exit(1);
        }
    }
}
