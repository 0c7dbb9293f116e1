//! `cargo run --release -p codex-devnet`: the whole network on one machine, through a
//! storage request's life (see the crate's documentation); prints a timeline and exits
//! non-zero if any step fails. With `--keep-running` it sets the network up and keeps it
//! running for the user until Ctrl-C or SIGTERM.

use std::io::Write;
use std::path::PathBuf;

use clap::Parser;

/// Runs anvil, deploys the contracts, and runs a client, hosts, a spare host and a
/// validator on loopback through an encrypted upload, request, proofs, a killed host,
/// slashing, repair, download and decryption, and payout.
///
/// With --keep-running: sets the network up and keeps it running for you to drive
/// through the nodes' REST APIs (with curl, say) instead of running the scenario.
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
    /// Set the network up (chain and contracts, nodes with funded accounts, an
    /// availability on every host; the spare offers nothing) and keep it running,
    /// without the scenario, until Ctrl-C or SIGTERM, which stop every node (waiting
    /// for proofs under way; a second signal stops at once) and the anvil started
    /// (exit code 0). Once ready it prints on stdout, one a line: `api
    /// NAME URL` for each node (client, host0.., spare, validator), `chain URL`,
    /// `marketplace ADDRESS`, `token ADDRESS`, `key NAME ADDRESS PRIVATE_KEY` for each
    /// node's account, then `ready`; the timeline goes to stderr. --k, --m and
    /// --file-size are not used.
    #[arg(long)]
    keep_running: bool,
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
    if args.keep_running {
        // Installed before the set-up: a signal during it stops what was started.
        let signals = signals()?;
        let ready = |e: &codex_devnet::Endpoints| {
            let mut stdout = std::io::stdout().lock();
            for line in e.lines() {
                // Flushed line by line, for a parent process reading a pipe.
                let _ = writeln!(stdout, "{line}").and_then(|()| stdout.flush());
            }
        };
        let timeline = |line: &str| eprintln!("{line}");
        let stop = signalled(signals.clone(), 1);
        let finished = tokio::select! {
            r = codex_devnet::keep_running(&opts, &timeline, &ready, stop) => Some(r),
            () = signalled(signals, 2) => None,
        };
        // On a second signal the network was dropped with the future: each node's tasks
        // were told to stop and anvil was stopped; proofs under way are not waited for.
        let Some(result) = finished else {
            eprintln!("stopped at once");
            std::process::exit(0);
        };
        if let Err(e) = result {
            eprintln!("devnet FAILED: {e:#}");
            std::process::exit(1);
        }
        return Ok(());
    }
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

/// Counts SIGINT (Ctrl-C) and SIGTERM signals; the handlers are installed at once.
fn signals() -> anyhow::Result<tokio::sync::watch::Receiver<u32>> {
    let (count, signals) = tokio::sync::watch::channel(0u32);
    let bump = move || {
        count.send_modify(|n| *n += 1);
        if *count.borrow() == 1 {
            eprintln!(
                "stopping: waiting for the nodes (a proof under way takes seconds); Ctrl-C again to stop at once"
            );
        }
    };
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    Some(()) = interrupt.recv() => bump(),
                    Some(()) = terminate.recv() => bump(),
                    else => break,
                }
            }
        });
    }
    #[cfg(not(unix))]
    tokio::spawn(async move {
        while tokio::signal::ctrl_c().await.is_ok() {
            bump();
        }
    });
    Ok(signals)
}

/// Completes once `times` signals have come.
async fn signalled(mut signals: tokio::sync::watch::Receiver<u32>, times: u32) {
    if signals.wait_for(|n| *n >= times).await.is_err() {
        // No more signals can come.
        std::future::pending::<()>().await;
    }
}
