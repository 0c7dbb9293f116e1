//! A local chain for tests, the devnet and anyone embedding the SDK: anvil from
//! the project's `node_modules` on 127.0.0.1 and a free port, stopped on drop.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use alloy::primitives::{Address, B256, U256, keccak256};
use alloy::providers::ext::AnvilApi;
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::signers::local::PrivateKeySigner;

use crate::error::{Error, Result};

/// Environment variable naming the anvil binary to use instead of the one in `node_modules`.
pub const ANVIL_ENV: &str = "CODEX_ANVIL";

/// Blocks mined by [`LocalChain::start`] before it returns: the proof clock reads
/// `blockhash` up to 256 blocks back, so the marketplace cannot be deployed earlier.
pub const READY_BLOCKS: u64 = 300;

/// Ether given to each account from [`LocalChain::account`] (1000 ETH).
pub const ACCOUNT_ETHER: u128 = 1000 * 1_000_000_000_000_000_000;

/// A running anvil. Dropping it kills the process.
#[derive(Debug)]
pub struct LocalChain {
    child: Child,
    port: u16,
    url: reqwest_url::Url,
    provider: DynProvider,
}

mod reqwest_url {
    pub use alloy::transports::http::reqwest::Url;
}

/// Where the project's anvil is: `$CODEX_ANVIL`, or `node_modules` at the
/// workspace root (installed by `scripts/setup.sh`).
pub fn anvil_path() -> PathBuf {
    if let Some(p) = std::env::var_os(ANVIL_ENV) {
        return PathBuf::from(p);
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let platform = match (std::env::consts::OS, std::env::consts::ARCH) {
        ("linux", "aarch64") => "linux-arm64",
        ("macos", "aarch64") => "darwin-arm64",
        ("macos", _) => "darwin-amd64",
        ("windows", _) => "win32-amd64",
        _ => "linux-amd64",
    };
    workspace
        .join("node_modules/@foundry-rs")
        .join(format!("anvil-{platform}"))
        .join("bin")
        .join(if cfg!(windows) { "anvil.exe" } else { "anvil" })
}

fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| Error::LocalChain {
        message: "no free port on 127.0.0.1".into(),
        source: Some(Box::new(e)),
    })?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| Error::LocalChain {
            message: "no free port on 127.0.0.1".into(),
            source: Some(Box::new(e)),
        })
}

impl LocalChain {
    /// Starts anvil and mines [`READY_BLOCKS`] blocks, so the marketplace can be deployed.
    ///
    /// # Errors
    /// [`Error::AnvilNotFound`] without the binary, [`Error::LocalChain`] when it
    /// does not start or answer within 20 s.
    pub async fn start() -> Result<Self> {
        let chain = Self::start_empty().await?;
        chain.mine(READY_BLOCKS).await?;
        Ok(chain)
    }

    /// Starts anvil at block 0 (the marketplace cannot be deployed before block 257).
    ///
    /// # Errors
    /// As [`LocalChain::start`].
    pub async fn start_empty() -> Result<Self> {
        Self::start_empty_with(None).await
    }

    /// Starts anvil mining a block every `seconds` (not on each transaction), so that
    /// block numbers and timestamps move with the wall clock as on a real chain, and
    /// mines [`READY_BLOCKS`] blocks at once.
    ///
    /// # Errors
    /// As [`LocalChain::start`].
    pub async fn start_with_block_time(seconds: u64) -> Result<Self> {
        let chain = Self::start_empty_with(Some(seconds.max(1))).await?;
        chain.mine(READY_BLOCKS).await?;
        Ok(chain)
    }

    /// Starts anvil with a genesis block numbered `history` (as a chain with that many
    /// blocks behind it looks to a client: queries from block 0 span them all; their
    /// logs are empty) and mines [`READY_BLOCKS`] blocks.
    ///
    /// # Errors
    /// As [`LocalChain::start`].
    pub async fn start_with_history(history: u64) -> Result<Self> {
        let chain = Self::start_at(None, Some(history)).await?;
        chain.mine(READY_BLOCKS).await?;
        Ok(chain)
    }

    /// Starts anvil as a live chain with `history` blocks behind it: the genesis block
    /// numbered `history` (as [`LocalChain::start_with_history`]), a block mined every
    /// `block_secs` (as [`LocalChain::start_with_block_time`]), and [`READY_BLOCKS`]
    /// mined at once.
    ///
    /// # Errors
    /// As [`LocalChain::start`].
    pub async fn start_live(history: u64, block_secs: u64) -> Result<Self> {
        let chain = Self::start_at(Some(block_secs.max(1)), Some(history)).await?;
        chain.mine(READY_BLOCKS).await?;
        Ok(chain)
    }

    async fn start_empty_with(block_time: Option<u64>) -> Result<Self> {
        Self::start_at(block_time, None).await
    }

    async fn start_at(block_time: Option<u64>, genesis_number: Option<u64>) -> Result<Self> {
        let path = anvil_path();
        if !path.exists() {
            return Err(Error::AnvilNotFound { path });
        }
        let mut last = None;
        // The port is free when chosen; another process may take it before anvil
        // binds it, so try a few.
        for _ in 0..3 {
            match Self::spawn(&path, block_time, genesis_number).await {
                Ok(chain) => return Ok(chain),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::LocalChain {
            message: "anvil did not start".into(),
            source: None,
        }))
    }

    async fn spawn(
        path: &Path,
        block_time: Option<u64>,
        genesis_number: Option<u64>,
    ) -> Result<Self> {
        let port = free_port()?;
        let port_arg = port.to_string();
        let block_time_arg = block_time.map(|s| s.to_string());
        // A genesis file for a chain that starts past block 0; anvil reads it at start
        // (removed once anvil answers, or fails).
        let genesis = match genesis_number {
            Some(n) => {
                let file = std::env::temp_dir().join(format!(
                    "codex-anvil-genesis-{}-{port}.json",
                    std::process::id()
                ));
                let json = serde_json::json!({
                    "config": {"chainId": 31337},
                    "number": format!("{n:#x}"),
                    "timestamp": "0x0",
                    "gasLimit": "0x1c9c380",
                    "difficulty": "0x0",
                    "baseFeePerGas": "0x3b9aca00",
                    "alloc": {},
                });
                std::fs::write(&file, json.to_string()).map_err(|e| Error::LocalChain {
                    message: format!("cannot write {}", file.display()),
                    source: Some(Box::new(e)),
                })?;
                Some(file)
            }
            None => None,
        };
        let genesis_arg = genesis.as_ref().map(|f| f.display().to_string());
        let result = Self::spawn_with(path, port, &port_arg, block_time_arg, genesis_arg).await;
        if let Some(f) = genesis {
            let _ = std::fs::remove_file(f);
        }
        result
    }

    async fn spawn_with(
        path: &Path,
        port: u16,
        port_arg: &str,
        block_time_arg: Option<String>,
        genesis_arg: Option<String>,
    ) -> Result<Self> {
        let mut args = vec![
            "--host",
            "127.0.0.1",
            "--port",
            port_arg,
            "--quiet",
            // States past the ones kept in memory are dropped, not written under
            // ~/.foundry (a killed anvil leaves them there: gigabytes per long chain).
            "--max-persisted-states",
            "0",
        ];
        if let Some(b) = &block_time_arg {
            args.extend(["--block-time", b.as_str()]);
        }
        if let Some(g) = &genesis_arg {
            args.extend(["--init", g.as_str()]);
        }
        let child = anvil_command(path, &args)
            .spawn()
            .map_err(|e| Error::LocalChain {
                message: format!("cannot run {}", path.display()),
                source: Some(Box::new(e)),
            })?;
        let url: reqwest_url::Url =
            format!("http://127.0.0.1:{port}")
                .parse()
                .map_err(|e| Error::InvalidInput {
                    what: "rpc url",
                    message: format!("{e}"),
                })?;
        let provider = ProviderBuilder::new().connect_http(url.clone()).erased();
        let mut chain = LocalChain {
            child,
            port,
            url,
            provider,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = chain.child.try_wait() {
                return Err(Error::LocalChain {
                    message: format!("anvil exited with {status}"),
                    source: None,
                });
            }
            if chain.provider.get_block_number().await.is_ok() {
                return Ok(chain);
            }
            if Instant::now() > deadline {
                return Err(Error::LocalChain {
                    message: format!("anvil did not answer on port {} within 20 s", chain.port),
                    source: None,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The HTTP endpoint, `http://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        self.url.as_str().trim_end_matches('/')
    }

    /// The port anvil listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A provider without a wallet, for reads and anvil's controls.
    pub fn provider(&self) -> &DynProvider {
        &self.provider
    }

    /// A provider that signs with `signer` (see [`crate::deploy::signing_provider`]).
    pub fn provider_for(&self, signer: &PrivateKeySigner) -> DynProvider {
        crate::deploy::signing_provider_at(self.url.clone(), signer)
    }

    /// Account `index`: a key derived from the index (the same on every run),
    /// given [`ACCOUNT_ETHER`] for gas.
    ///
    /// # Errors
    /// [`Error::Rpc`] when anvil does not take the balance.
    pub async fn account(&self, index: u64) -> Result<PrivateKeySigner> {
        let signer = dev_signer(index)?;
        self.provider
            .anvil_set_balance(signer.address(), U256::from(ACCOUNT_ETHER))
            .await
            .map_err(|e| Error::rpc("anvil_setBalance", e))?;
        Ok(signer)
    }

    /// Mines `blocks` blocks, one second apart.
    ///
    /// # Errors
    /// [`Error::Rpc`].
    pub async fn mine(&self, blocks: u64) -> Result<()> {
        self.provider
            .anvil_mine(Some(blocks), None)
            .await
            .map_err(|e| Error::rpc("anvil_mine", e))
    }

    /// Moves the clock forward by `seconds` (takes effect with the next block).
    ///
    /// # Errors
    /// [`Error::Rpc`].
    pub async fn increase_time(&self, seconds: u64) -> Result<()> {
        self.provider
            .anvil_increase_time(seconds)
            .await
            .map(|_| ())
            .map_err(|e| Error::rpc("evm_increaseTime", e))
    }

    /// Sets the timestamp of the next block (it must be later than the latest one).
    ///
    /// # Errors
    /// [`Error::Rpc`], also when `timestamp` is not in the future of the chain.
    pub async fn set_next_block_timestamp(&self, timestamp: u64) -> Result<()> {
        self.provider
            .anvil_set_next_block_timestamp(timestamp)
            .await
            .map_err(|e| Error::rpc("evm_setNextBlockTimestamp", e))
    }

    /// Mines one block at `timestamp`.
    ///
    /// # Errors
    /// [`Error::Rpc`].
    pub async fn mine_at(&self, timestamp: u64) -> Result<()> {
        self.set_next_block_timestamp(timestamp).await?;
        self.mine(1).await
    }

    /// The latest block's number.
    ///
    /// # Errors
    /// [`Error::Rpc`].
    pub async fn block_number(&self) -> Result<u64> {
        self.provider
            .get_block_number()
            .await
            .map_err(|e| Error::rpc("eth_blockNumber", e))
    }

    /// The latest block's timestamp.
    ///
    /// # Errors
    /// [`Error::Rpc`].
    pub async fn timestamp(&self) -> Result<u64> {
        latest_timestamp(&self.provider).await
    }

    /// The Ether balance of an account.
    ///
    /// # Errors
    /// [`Error::Rpc`].
    pub async fn ether_balance(&self, account: Address) -> Result<U256> {
        self.provider
            .get_balance(account)
            .await
            .map_err(|e| Error::rpc("eth_getBalance", e))
    }
}

impl Drop for LocalChain {
    fn drop(&mut self) {
        if cfg!(unix) {
            // Closing the watchdog's stdin makes it stop anvil and exit.
            drop(self.child.stdin.take());
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// On Unix anvil runs under a small `sh` watchdog that stops it when its stdin
/// (a pipe from this process) closes: on drop, and also when this process dies
/// without unwinding (killed by a signal, `abort`), so no anvil outlives its test.
#[cfg(unix)]
fn anvil_command(path: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(r#""$0" "$@" </dev/null >/dev/null 2>&1 & pid=$!; trap 'kill $pid 2>/dev/null; wait $pid' EXIT; read _ || true"#)
        .arg(path)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

#[cfg(not(unix))]
fn anvil_command(path: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(path);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

/// The key of development account `index` (the same on every run; never use it
/// on a public chain).
///
/// # Errors
/// [`Error::InvalidInput`] in the (astronomically unlikely) case that the derived
/// bytes are not a valid key.
pub fn dev_signer(index: u64) -> Result<PrivateKeySigner> {
    let mut seed = b"codex-market development account".to_vec();
    seed.extend_from_slice(&index.to_be_bytes());
    let key: B256 = keccak256(&seed);
    PrivateKeySigner::from_bytes(&key).map_err(|e| Error::InvalidInput {
        what: "development key",
        message: e.to_string(),
    })
}

pub(crate) async fn latest_timestamp(provider: &DynProvider) -> Result<u64> {
    let block = provider
        .get_block_by_number(alloy::eips::BlockNumberOrTag::Latest)
        .await
        .map_err(|e| Error::rpc("eth_getBlockByNumber", e))?
        .ok_or_else(|| Error::UnexpectedValue {
            what: "latest block",
            value: "none".into(),
        })?;
    Ok(block.header.timestamp)
}
