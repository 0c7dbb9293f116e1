//! The devnet's scenario in the test suite, with a smaller file: an encrypted upload,
//! request with K = 3, M = 2, five hosts fill their slots with real proofs over the
//! ciphertext, proofs over two periods, a host killed, its missed proofs marked by the
//! validator until the slot is freed, the spare host repairs and refills it, the client
//! downloads the ciphertext from the network and decrypts it byte for byte, payouts and
//! the client's withdrawal. The chain is one the test runs (anvil, a block a second),
//! given to the devnet as a user's chain (`--eth-provider`, `--eth-private-key`): the
//! devnet deploys there and funds fresh accounts from the key.

use std::path::PathBuf;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_devnet_scenario_runs_end_to_end() -> anyhow::Result<()> {
    // The nodes' log goes with the test's output (shown when it fails).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CODEX_LOG")
                .unwrap_or_else(|_| "warn,codex=info".into()),
        )
        .with_test_writer()
        .try_init();
    let chain = codex::market::LocalChain::start_with_block_time(1).await?;
    let funder = chain.account(0).await?;
    let opts = codex_devnet::Options {
        chain: codex_devnet::ChainSource::External {
            url: chain.url().to_string(),
            key: codex::node::market::EthKey::from_signer(funder),
        },
        file_size: 700_000,
        // Debug builds prove in seconds, not the release build's 1.7 s, and the five
        // hosts prove at once on two cores: periods long enough for that.
        period: 45,
        timeout: 20,
        proof_cache: PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("proof-keys"),
        ..codex_devnet::Options::default()
    };
    let report = codex_devnet::run(&opts, &|line| println!("{line}")).await?;
    let names: Vec<&str> = report.phases.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "chain and contracts",
            "nodes",
            "upload, erasure coding, slots, request",
            "filling",
            "proving",
            "slashing",
            "repair",
            "download",
            "payout"
        ]
    );
    for (name, d) in &report.phases {
        println!("{name:<40} {:>7.1} s", d.as_secs_f64());
    }
    Ok(())
}
