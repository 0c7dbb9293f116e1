//! `codex-devnet --keep-running` as a user's script drives it: the process prints where
//! its nodes are and `ready`, every node answers on its REST API, and a signal stops the
//! nodes and the anvil the devnet started, with exit code 0 and nothing left behind.
//! The smallest network: a client, one host, the spare and the validator.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use codex::market::alloy::primitives::{Address, B256};
use codex::market::alloy::signers::local::PrivateKeySigner;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_codex-devnet");

/// A devnet process, killed when dropped so that a failed assertion leaves none behind;
/// its stdout's lines come on a channel, its stderr is kept for the failure message.
struct Devnet {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: Arc<Mutex<String>>,
}

impl Drop for Devnet {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Devnet {
    fn spawn(extra: &[&str]) -> anyhow::Result<Self> {
        let cache = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("proof-keys");
        let mut child = Command::new(BIN)
            .args(["--keep-running", "--hosts", "1", "--proof-cache"])
            .arg(&cache)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().context("no stdout")?;
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().context("no stderr")?;
        let kept = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if let Ok(mut s) = kept.lock() {
                    s.push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            }
        });
        Ok(Devnet {
            child,
            lines,
            stderr,
        })
    }

    fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The lines printed up to `ready`.
    fn until_ready(&self, limit: Duration) -> anyhow::Result<Vec<String>> {
        let deadline = Instant::now() + limit;
        let mut lines = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line == "ready" => return Ok(lines),
                Ok(line) => lines.push(line),
                Err(e) => bail!(
                    "no `ready` within {limit:?} ({e}); stdout: {lines:?}; stderr:\n{}",
                    self.stderr()
                ),
            }
        }
    }

    /// Sends `signal` (`INT`, `TERM`) and waits for the exit.
    fn stop(&mut self, signal: &str, limit: Duration) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()?;
        ensure!(status.success(), "kill -{signal} failed");
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait()? {
                ensure!(
                    status.success(),
                    "the devnet exited with {status} after SIG{signal}; stderr:\n{}",
                    self.stderr()
                );
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "the devnet did not exit within {limit:?} of SIG{signal}; stderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// What the devnet printed before `ready`, parsed.
#[derive(Debug, Default)]
struct Printed {
    apis: Vec<(String, String)>,
    chain: String,
    marketplace: Address,
    keys: Vec<(String, Address, B256)>,
}

fn parse(lines: &[String]) -> anyhow::Result<Printed> {
    let mut p = Printed::default();
    for line in lines {
        let fields: Vec<&str> = line.split(' ').collect();
        match fields.as_slice() {
            ["api", name, url] => p.apis.push((name.to_string(), url.to_string())),
            ["chain", url] => p.chain = url.to_string(),
            ["marketplace", address] => p.marketplace = address.parse()?,
            ["token", address] => {
                address.parse::<Address>()?;
            }
            ["key", name, address, secret] => {
                p.keys
                    .push((name.to_string(), address.parse()?, secret.parse()?));
            }
            _ => bail!("unexpected line on stdout: {line:?}"),
        }
    }
    Ok(p)
}

/// A JSON-RPC call to the chain.
async fn rpc(
    http: &reqwest::Client,
    url: &str,
    method: &str,
    params: Value,
) -> anyhow::Result<Value> {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    let r: Value = http.post(url).json(&body).send().await?.json().await?;
    r.get("result")
        .cloned()
        .with_context(|| format!("{method}: {r}"))
}

async fn get(http: &reqwest::Client, url: &str) -> anyhow::Result<Value> {
    let r = http.get(url).send().await?;
    ensure!(r.status().is_success(), "GET {url}: {}", r.status());
    Ok(r.json().await?)
}

/// Checks what a ready devnet printed against the nodes and the chain; returns the
/// nodes' data directories.
async fn check_ready(http: &reqwest::Client, p: &Printed) -> anyhow::Result<Vec<PathBuf>> {
    let names: Vec<&str> = p.apis.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["client", "host0", "spare", "validator"]);
    let key_names: Vec<&str> = p.keys.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(key_names, names);
    let mut peers = Vec::new();
    let mut repos = Vec::new();
    for (name, url) in &p.apis {
        let info = get(http, &format!("{url}/debug/info")).await?;
        let repo = PathBuf::from(info["repo"].as_str().context("repo")?);
        ensure!(repo.is_dir(), "{name}'s data directory {repo:?} is missing");
        repos.push(repo);
        if name != "validator" {
            // The validator runs without libp2p; every other node has a peer id.
            let id = info["id"].as_str().context("id")?.to_string();
            ensure!(!id.is_empty(), "{name} has no peer id: {info}");
            let text = http
                .get(format!("{url}/peerid"))
                .send()
                .await?
                .text()
                .await?;
            assert_eq!(text, id, "{name}: /peerid and /debug/info disagree");
            peers.push(id);
        }
    }
    let mut distinct = peers.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 3, "peer ids not distinct: {peers:?}");
    // The host offers storage, the spare does not; the validator answers as one.
    let offered = |i: usize| {
        let url = format!("{}/sales/availability", p.apis[i].1);
        async move { anyhow::Ok(get(http, &url).await?.as_array().map_or(0, Vec::len)) }
    };
    assert_eq!(offered(1).await?, 1, "host0's availabilities");
    assert_eq!(offered(2).await?, 0, "the spare's availabilities");
    let validation = get(http, &format!("{}/validation", p.apis[3].1)).await?;
    ensure!(validation.is_object(), "GET /validation: {validation}");
    // Each key is its account's, and the account holds ether for gas.
    for (name, address, secret) in &p.keys {
        let signer = PrivateKeySigner::from_bytes(secret)?;
        assert_eq!(signer.address(), *address, "{name}'s key");
        let balance = rpc(http, &p.chain, "eth_getBalance", json!([address, "latest"])).await?;
        ensure!(balance != "0x0", "{name}'s account holds no ether");
    }
    let code = rpc(
        http,
        &p.chain,
        "eth_getCode",
        json!([p.marketplace, "latest"]),
    )
    .await?;
    ensure!(
        code.as_str().is_some_and(|c| c.len() > 2),
        "no marketplace at {}",
        p.marketplace
    );
    Ok(repos)
}

/// After the devnet exited: no node's API answers and their data directories are gone.
async fn check_stopped(http: &reqwest::Client, p: &Printed, repos: &[PathBuf]) {
    for (name, url) in &p.apis {
        let r = http.get(format!("{url}/debug/info")).send().await;
        assert!(
            r.as_ref().is_err_and(reqwest::Error::is_connect),
            "{name} still answers: {r:?}"
        );
    }
    for repo in repos {
        assert!(!repo.exists(), "{repo:?} was left behind");
    }
}

fn client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()?)
}

/// The devnet starts its own anvil; Ctrl-C (SIGINT) stops the nodes and that anvil.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_running_with_its_own_anvil_stops_on_sigint() -> anyhow::Result<()> {
    let mut devnet = Devnet::spawn(&[])?;
    let printed = parse(&devnet.until_ready(Duration::from_secs(600))?)?;
    let http = client()?;
    let repos = check_ready(&http, &printed).await?;
    devnet.stop("INT", Duration::from_secs(60))?;
    check_stopped(&http, &printed, &repos).await;
    let r = rpc(&http, &printed.chain, "eth_chainId", json!([])).await;
    assert!(r.is_err(), "the devnet's anvil still answers: {r:?}");
    Ok(())
}

/// On the user's chain (`--eth-provider`, `--eth-private-key`) the devnet starts no
/// anvil; SIGTERM stops its nodes and leaves the user's chain running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_running_on_a_given_chain_stops_on_sigterm() -> anyhow::Result<()> {
    let chain = codex::market::LocalChain::start_with_block_time(1).await?;
    let funder = chain.account(0).await?;
    let key = funder.to_bytes().to_string();
    let mut devnet = Devnet::spawn(&["--eth-provider", chain.url(), "--eth-private-key", &key])?;
    let printed = parse(&devnet.until_ready(Duration::from_secs(600))?)?;
    assert_eq!(printed.chain, chain.url());
    let http = client()?;
    let repos = check_ready(&http, &printed).await?;
    devnet.stop("TERM", Duration::from_secs(60))?;
    check_stopped(&http, &printed, &repos).await;
    rpc(&http, chain.url(), "eth_chainId", json!([]))
        .await
        .context("the user's chain stopped with the devnet")?;
    Ok(())
}
