//! The devnet: the whole network on one machine, through a storage request's life.
//!
//! anvil runs our marketplace with the Solidity verifier generated from the halo2
//! verifying key, mining a block a second. On loopback run a client, `hosts` hosts, a
//! spare host and a validator, each a [`codex::Node`] in this process with its own store,
//! libp2p swarm, REST API and account. The client encrypts a file as it uploads it
//! ([`codex::node::Handle::add_encrypted`]: the hosts only ever see ciphertext) and
//! requests storage (K, M) through the REST API; each host fills a slot with a real
//! proof over the ciphertext; proofs are submitted over several periods; the client
//! drops its own copy; one host is killed; the validator marks its missing proofs until
//! the contract frees the slot; the spare host rebuilds that slot from the surviving
//! ones (lazy repair), proves and refills it; the client downloads the file from the
//! network, decrypts it with its key and checks it byte for byte (and that without the
//! key the node serves ciphertext that holds none of the file's text); the clock is
//! moved to the request's end, the hosts are paid and the client withdraws.
//!
//! Every step is checked: [`run`] returns an error naming the first that failed.
//!
//! [`keep_running`] sets up the same network and leaves it running, without the
//! scenario, for a user (or a test) to drive through the nodes' REST APIs; it hands
//! over where everything is as [`Endpoints`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use codex::crypto::{NewKey, Secret};
use codex::market::alloy::primitives::{Address, B256, U256};
use codex::market::alloy::providers::DynProvider;
use codex::market::deploy::{Deployment, mint, signing_provider};
use codex::market::{
    LocalChain, Marketplace, MarketplaceConfig, RequestId, SlotId, SlotState, TokenSource,
    VerifierSource, deploy,
};
use codex::node::market::{EthKey, MarketConfig};
use codex::node::validator::ValidatorConfig;
use codex::proofs::prover::compile_verifier;
use codex::proofs::{Prover, Srs};
use codex::{Node, NodeConfig};
use futures::TryStreamExt;
use rand::{RngCore, SeedableRng, rngs::StdRng};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Written through the file every [`MARKER_EVERY`] bytes: found in no byte the network
/// serves without the key.
const MARKER: &[u8] = b"codex-devnet-plaintext-marker";
const MARKER_EVERY: usize = 50_000;

/// What the devnet runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// Hosts that take the request's slots (K + M of them are needed).
    pub hosts: usize,
    /// Data slots.
    pub k: u64,
    /// Parity slots (the request's tolerance).
    pub m: u64,
    /// Bytes of the file uploaded.
    pub file_size: usize,
    /// Seconds per proof period.
    pub period: u64,
    /// Seconds after a period during which a missing proof can be marked.
    pub timeout: u64,
    /// Periods with proofs from every host before one is killed.
    pub periods_before_kill: usize,
    /// Where the nodes keep their stores (a temporary directory when `None`).
    pub work_dir: Option<PathBuf>,
    /// Where proving keys and the compiled verifier are cached between runs.
    pub proof_cache: PathBuf,
    /// The chain: anvil started here (default), or one the user runs.
    pub chain: ChainSource,
}

/// Where the devnet's chain comes from.
#[derive(Clone, Debug, Default)]
pub enum ChainSource {
    /// anvil, started by the devnet with a block a second; its accounts pay.
    #[default]
    Anvil,
    /// A chain the user runs (`--eth-provider URL --eth-private-key KEY`): the
    /// contracts are deployed there from `key`'s account, which also gives every
    /// node's fresh account [`ChainSource::NODE_ETHER_WEI`] for gas. The devnet's
    /// periods assume blocks of a few seconds at most (`--period` for slower chains).
    External {
        /// JSON-RPC URL.
        url: String,
        /// The funding account's key (hex, or a file holding it with mode 0600).
        key: EthKey,
    },
}

impl ChainSource {
    /// What a node's account is given for gas on an external chain: 0.1 ether.
    pub const NODE_ETHER_WEI: u128 = 100_000_000_000_000_000;
}

impl Default for Options {
    fn default() -> Self {
        Options {
            hosts: 5,
            k: 3,
            m: 2,
            file_size: 4 << 20,
            period: 20,
            timeout: 10,
            periods_before_kill: 2,
            work_dir: None,
            proof_cache: PathBuf::from("target/devnet-proof-keys"),
            chain: ChainSource::Anvil,
        }
    }
}

/// What a run measured.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Wall time of each phase, in order.
    pub phases: Vec<(String, Duration)>,
    /// The timeline as printed.
    pub timeline: Vec<String>,
}

struct Timeline<'a> {
    start: Instant,
    lines: Vec<String>,
    out: &'a (dyn Fn(&str) + Sync),
    phases: Vec<(String, Duration)>,
    phase_start: Instant,
}

impl<'a> Timeline<'a> {
    fn new(out: &'a (dyn Fn(&str) + Sync)) -> Self {
        Timeline {
            start: Instant::now(),
            lines: Vec::new(),
            out,
            phases: Vec::new(),
            phase_start: Instant::now(),
        }
    }

    fn say(&mut self, text: impl AsRef<str>) {
        let line = format!(
            "[{:>6.1}s] {}",
            self.start.elapsed().as_secs_f64(),
            text.as_ref()
        );
        (self.out)(&line);
        self.lines.push(line);
    }

    /// Ends the current phase, named `name`.
    fn phase(&mut self, name: &str) {
        let d = self.phase_start.elapsed();
        self.phases.push((name.to_string(), d));
        self.phase_start = Instant::now();
    }
}

/// One participant: its node and its account.
struct Participant {
    name: String,
    node: Option<Node>,
    account: Address,
    /// The account's private key (printed by [`keep_running`] for the user's tools).
    secret: B256,
    api: String,
}

/// What [`set_up`] made: the chain, the contracts and the running nodes.
struct Network {
    /// The anvil the devnet started (none on a user's chain).
    anvil: Option<LocalChain>,
    chain_url: String,
    /// A provider signing with the deploying account.
    funder: DynProvider,
    config: MarketplaceConfig,
    deployment: Deployment,
    /// The client, the hosts, the spare host and the validator, in that order.
    people: Vec<Participant>,
    http: reqwest::Client,
    /// The marketplace as the client's node sees it.
    market: Arc<dyn Marketplace>,
    who: Vec<(String, Address)>,
    start_balances: Vec<U256>,
    /// What each host offers (`POST /sales/availability`).
    availability: Value,
    /// The nodes' stores when no work directory was given; last, so that it is removed
    /// after everything else is dropped.
    _temp: tempfile::TempDir,
}

impl Network {
    fn endpoints(&self) -> Endpoints {
        Endpoints {
            apis: self
                .people
                .iter()
                .map(|p| (p.name.clone(), p.api.clone()))
                .collect(),
            chain: self.chain_url.clone(),
            marketplace: self.deployment.marketplace,
            token: self.deployment.token,
            keys: self
                .people
                .iter()
                .map(|p| (p.name.clone(), p.account, p.secret))
                .collect(),
        }
    }

    /// Stops every node that still runs (each joins its tasks), then the anvil the
    /// devnet started; the first error, once everything was stopped.
    async fn shut_down(mut self, tl: &mut Timeline<'_>) -> anyhow::Result<()> {
        let mut first_error = None;
        for p in &mut self.people {
            if let Some(node) = p.node.take()
                && let Err(e) = node.shutdown().await
            {
                tl.say(format!("{} did not stop cleanly: {e}", p.name));
                first_error
                    .get_or_insert(anyhow::Error::from(e).context(format!("stopping {}", p.name)));
            }
        }
        tl.say("every node stopped");
        if let Some(chain) = self.anvil.take() {
            // Dropping it stops anvil and waits for it to exit.
            drop(chain);
            tl.say("anvil stopped");
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// Where to reach the network [`keep_running`] holds up.
///
/// [`Endpoints::lines`] is what `codex-devnet --keep-running` prints on stdout once the
/// network is ready, one item a line, its fields separated by single spaces:
///
/// ```text
/// api client http://127.0.0.1:41234/api/codex/v1
/// api host0 http://127.0.0.1:41235/api/codex/v1
/// ...
/// api spare http://127.0.0.1:41240/api/codex/v1
/// api validator http://127.0.0.1:41241/api/codex/v1
/// chain http://127.0.0.1:38545
/// marketplace 0x<address>
/// token 0x<address>
/// key client 0x<address> 0x<private key, 64 hex digits>
/// ...
/// ready
/// ```
#[derive(Clone, Debug)]
pub struct Endpoints {
    /// Each node's name and REST API base URL, in the order client, `host0`..,
    /// spare, validator.
    pub apis: Vec<(String, String)>,
    /// The chain's JSON-RPC URL.
    pub chain: String,
    /// The marketplace contract.
    pub marketplace: Address,
    /// The ERC-20 token the marketplace pays in (`TestToken`: anyone may mint).
    pub token: Address,
    /// Each node's account: its name, address and private key (an anvil development
    /// key, or a fresh key funded from the user's account on an external chain).
    pub keys: Vec<(String, Address, B256)>,
}

impl Endpoints {
    /// The lines `codex-devnet --keep-running` prints, `ready` last (see [`Endpoints`]).
    pub fn lines(&self) -> Vec<String> {
        let mut lines: Vec<String> = self
            .apis
            .iter()
            .map(|(name, url)| format!("api {name} {url}"))
            .collect();
        lines.push(format!("chain {}", self.chain));
        lines.push(format!("marketplace {}", self.marketplace));
        lines.push(format!("token {}", self.token));
        for (name, address, secret) in &self.keys {
            lines.push(format!("key {name} {address} {secret}"));
        }
        lines.push("ready".into());
        lines
    }
}

async fn get_json(http: &reqwest::Client, url: &str) -> anyhow::Result<Value> {
    let r = http.get(url).send().await?;
    let status = r.status();
    let text = r.text().await?;
    ensure!(status.is_success(), "GET {url}: {status} {text}");
    Ok(serde_json::from_str(&text)?)
}

/// A time limit for a step: `check` fails with what was awaited once it has passed.
struct Deadline {
    what: &'static str,
    limit: Duration,
    start: Instant,
}

impl Deadline {
    fn new(what: &'static str, limit: Duration) -> Self {
        Deadline {
            what,
            limit,
            start: Instant::now(),
        }
    }

    /// Sleeps half a second, or fails when the time is up.
    async fn tick(&self) -> anyhow::Result<()> {
        if self.start.elapsed() > self.limit {
            bail!("timed out after {:?} waiting for {}", self.limit, self.what);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        Ok(())
    }
}

/// The sale of `api`'s host in `state` (any state when `None`), if there is one.
async fn sale_in(http: &reqwest::Client, api: &str, state: &str) -> anyhow::Result<Option<Value>> {
    let sales = get_json(http, &format!("{api}/sales/slots")).await?;
    Ok(sales
        .as_array()
        .and_then(|a| a.iter().find(|s| s["state"] == state).cloned()))
}

fn tokens(v: U256) -> String {
    // Group the digits in threes: balances are large integers of the test token.
    let s = v.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push('_');
        }
        out.push(c);
    }
    out
}

/// Sends `to` [`ChainSource::NODE_ETHER_WEI`] from `funder`'s account and waits for
/// the receipt.
async fn fund(funder: &DynProvider, to: Address) -> anyhow::Result<()> {
    use codex::market::alloy::network::TransactionBuilder;
    use codex::market::alloy::providers::Provider;
    let tx = codex::market::alloy::rpc::types::TransactionRequest::default()
        .with_to(to)
        .with_value(U256::from(ChainSource::NODE_ETHER_WEI));
    let receipt = funder
        .send_transaction(tx)
        .await
        .context("funding a node's account")?
        .get_receipt()
        .await
        .context("funding a node's account")?;
    ensure!(receipt.status(), "the transfer to {to} failed");
    Ok(())
}

async fn balances(
    tl: &mut Timeline<'_>,
    market: &dyn Marketplace,
    who: &[(String, Address)],
    start: &[U256],
    title: &str,
) -> anyhow::Result<Vec<U256>> {
    tl.say(format!("balances ({title}), change since the start:"));
    let mut now = Vec::new();
    for (i, (name, account)) in who.iter().enumerate() {
        let b = market.balance_of(*account).await?;
        let s = start.get(i).copied().unwrap_or(b);
        let delta = if b >= s {
            format!("+{}", tokens(b - s))
        } else {
            format!("-{}", tokens(s - b))
        };
        tl.say(format!("    {name:<10} {:>28}  {delta:>22}", tokens(b)));
        now.push(b);
    }
    Ok(now)
}

/// Sets the network up: the proving keys and the verifier, the chain and the contracts,
/// the nodes (each with a funded account holding test tokens), and an availability on
/// every host but the spare. The end of phase "nodes".
async fn set_up(opts: &Options, tl: &mut Timeline<'_>) -> anyhow::Result<Network> {
    let temp = tempfile::tempdir()?;
    let dir = opts.work_dir.clone().unwrap_or_else(|| temp.path().into());
    std::fs::create_dir_all(&opts.proof_cache)?;

    // --- Keys and the verifier.
    let cache = opts.proof_cache.clone();
    let (bytecode, zkey_hash) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let (prover, _) = Prover::new(&Srs::Development, 5, Some(&cache))?;
        let bytecode = compile_verifier(&prover.solidity_verifier(), Some(&cache))?;
        Ok((bytecode, prover.verifying_key_digest().to_string()))
    })
    .await??;
    tl.say(format!(
        "proving keys ready (halo2, 5 samples); Solidity verifier compiled: {} bytes",
        bytecode.len()
    ));

    // --- The chain.
    let (anvil, url, deployer) = match &opts.chain {
        ChainSource::Anvil => {
            let chain = LocalChain::start_with_block_time(1).await?;
            let deployer = chain.account(0).await?;
            let url = chain.url().to_string();
            (Some(chain), url, deployer)
        }
        ChainSource::External { url, key } => (None, url.clone(), key.signer().clone()),
    };
    let funder = signing_provider(&url, &deployer)?;
    let mut config = MarketplaceConfig::default();
    config.proofs.zkey_hash = zkey_hash;
    config.proofs.period = opts.period;
    config.proofs.timeout = opts.timeout;
    config.proofs.downtime = 16;
    let d = deploy(
        &funder,
        &config,
        TokenSource::TestToken,
        VerifierSource::Halo2Bytecode(bytecode),
    )
    .await
    .context("deploying the contracts")?;
    tl.say(format!(
        "{} on {}; marketplace {} (periods of {} s, timeout {} s, {} slashes free a slot), token {}, verifier {}",
        if anvil.is_some() { "anvil (a block a second)" } else { "the chain" },
        url,
        d.marketplace,
        opts.period,
        opts.timeout,
        config.collateral.max_number_of_slashes,
        d.token,
        d.verifier
    ));
    tl.phase("chain and contracts");

    // --- The nodes: client 1, hosts 2.., spare, validator.
    let names: Vec<String> = std::iter::once("client".to_string())
        .chain((0..opts.hosts).map(|i| format!("host{i}")))
        .chain(["spare".to_string(), "validator".to_string()])
        .collect();
    let mut people: Vec<Participant> = Vec::new();
    let mut boot = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let signer = match &anvil {
            Some(chain) => chain.account(1 + i as u64).await?,
            None => {
                let signer = codex::market::alloy::signers::local::PrivateKeySigner::random();
                fund(&funder, signer.address()).await?;
                signer
            }
        };
        let account = signer.address();
        let secret = signer.to_bytes();
        let p = signing_provider(&url, &signer)?;
        mint(&p, d.token, account, U256::from(10u64).pow(U256::from(15))).await?;
        let mut mc = MarketConfig::new(
            url.clone(),
            d.marketplace,
            EthKey::from_signer(signer),
            Srs::Development,
        );
        mc.proof_cache_dir = Some(opts.proof_cache.clone());
        let validator = name == "validator";
        let node = Node::start(NodeConfig {
            data_dir: dir.join(name),
            api_port: 0,
            network: (!validator).then(|| codex::net::NetConfig {
                listen_addrs: vec!["/ip4/127.0.0.1/tcp/0".parse().expect("a valid multiaddr")],
                bootstrap: boot.clone(),
                ..codex::net::NetConfig::default()
            }),
            marketplace: Some(mc),
            validator: validator.then(ValidatorConfig::default),
            ..NodeConfig::default()
        })
        .await
        .with_context(|| format!("starting {name}"))?;
        if i == 0 {
            boot = node.addresses().await?;
        }
        people.push(Participant {
            name: name.clone(),
            api: node.api_url(),
            account,
            secret,
            node: Some(node),
        });
    }
    let http = reqwest::Client::new();
    let market = people[0]
        .node
        .as_ref()
        .and_then(|n| n.market())
        .context("the client has no marketplace")?
        .client()
        .clone();
    let who: Vec<(String, Address)> = people.iter().map(|p| (p.name.clone(), p.account)).collect();
    tl.say(format!(
        "started on loopback: a client, {} hosts, a spare host and a validator (each with a store, libp2p, REST API and account)",
        opts.hosts
    ));
    let start_balances = balances(tl, &market, &who, &[], "start").await?;

    let availability = json!({
        "totalSize": "100000000", "duration": 7200,
        "minPricePerBytePerSecond": "1", "totalCollateral": "100000000000000",
    });
    for p in &people[1..=opts.hosts] {
        let r = http
            .post(format!("{}/sales/availability", p.api))
            .json(&availability)
            .send()
            .await?;
        ensure!(
            r.status() == 201,
            "{}: availability: {}",
            p.name,
            r.text().await?
        );
    }
    tl.say(format!(
        "{} hosts offer storage (POST /sales/availability)",
        opts.hosts
    ));
    tl.phase("nodes");
    Ok(Network {
        anvil,
        chain_url: url,
        funder,
        config,
        deployment: d,
        people,
        http,
        market,
        who,
        start_balances,
        availability,
        _temp: temp,
    })
}

/// Runs the devnet; `out` receives each line of the timeline as it happens.
///
/// # Errors
/// The first step that failed, with what was expected.
pub async fn run(opts: &Options, out: &(dyn Fn(&str) + Sync)) -> anyhow::Result<Report> {
    let mut tl = Timeline::new(out);
    let slots = (opts.k + opts.m) as usize;
    ensure!(
        opts.hosts >= slots,
        "{} hosts cannot hold K + M = {slots} slots",
        opts.hosts
    );
    let net = set_up(opts, &mut tl).await?;
    // The rest (the temporary directory) stays in `net`, dropped after the nodes.
    let Network {
        anvil,
        funder,
        config,
        mut people,
        http,
        market,
        who,
        start_balances,
        availability,
        ..
    } = net;
    let spare = opts.hosts + 1;

    // --- Upload (encrypted by the client's node) and request.
    let mut file = vec![0u8; opts.file_size];
    StdRng::seed_from_u64(2026).fill_bytes(&mut file);
    // A marker through the file, to look for in what the network serves without the key.
    for at in (0..file.len().saturating_sub(MARKER.len())).step_by(MARKER_EVERY) {
        file[at..at + MARKER.len()].copy_from_slice(MARKER);
    }
    let sha = Sha256::digest(&file);
    let client_api = people[0].api.clone();
    let client = people[0]
        .node
        .as_ref()
        .context("the client is not running")?;
    let source = futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from(file.clone()))]);
    let options = codex::node::data::UploadOptions {
        filename: Some("devnet-secret.bin".into()),
        mimetype: Some("application/octet-stream".into()),
        ..Default::default()
    };
    let (added, key) = client
        .add_encrypted(source, options, NewKey::Random)
        .await
        .context("encrypted upload")?;
    let cid = added.cid.to_string();
    let ciphertext_size = added.manifest.dataset_size;
    tl.say(format!(
        "client encrypted and uploaded {} bytes (sha256 {:x}) as {ciphertext_size} bytes of ciphertext: {cid}; the key stays with the client",
        file.len(),
        sha
    ));
    let body = json!({
        "duration": "3600", "proofProbability": "1", "pricePerBytePerSecond": "1",
        "collateralPerByte": "1", "expiry": "900", "nodes": slots, "tolerance": opts.m,
    });
    let r = http
        .post(format!("{client_api}/storage/request/{cid}"))
        .json(&body)
        .send()
        .await?;
    ensure!(
        r.status().is_success(),
        "storage request: {}",
        r.text().await?
    );
    let purchase = r.text().await?;
    tl.say(format!(
        "client requested storage (POST /storage/request): {slots} slots, K = {}, M = {}, 1 token per byte per second, 1 token of collateral per byte, 3600 s; purchase {purchase}",
        opts.k, opts.m
    ));
    let url = format!("{client_api}/storage/purchases/{purchase}");
    let deadline = Deadline::new("the request to be submitted", Duration::from_secs(300));
    let p = loop {
        let p = get_json(&http, &url).await?;
        match p["state"].as_str() {
            Some("pending") => deadline.tick().await?,
            Some("errored") => bail!("purchase errored: {}", p["error"]),
            _ => break p,
        }
    };
    let t = &p["timingsMs"];
    tl.say(format!(
        "client: erasure coding {} ms, slot trees {} ms, requestStorage {} ms; request {}",
        t["erasure"], t["slots"], t["request"], p["requestId"]
    ));
    let verifiable = p["verifiableCid"]
        .as_str()
        .context("no verifiable CID")?
        .to_string();
    let request_id: codex::market::alloy::primitives::B256 =
        p["requestId"].as_str().context("no request id")?.parse()?;
    let request_id = RequestId(request_id);
    tl.phase("upload, erasure coding, slots, request");

    // --- Hosts fill the slots.
    let mut holder = vec![usize::MAX; slots];
    let mut reported = vec![false; opts.hosts + 1];
    let deadline = Deadline::new("every slot to be filled", Duration::from_secs(600));
    while holder.contains(&usize::MAX) {
        for (i, p) in people.iter().enumerate().take(opts.hosts + 1).skip(1) {
            if reported[i] {
                continue;
            }
            if let Some(s) = sale_in(&http, &p.api, "SaleProving").await? {
                let index = s["slotIndex"].as_u64().context("slot index")? as usize;
                let t = &s["timingsMs"];
                tl.say(format!(
                    "{} filled slot {index} with a real proof: download {} ms, slot root {} ms, prove {} ms, fillSlot {} ms",
                    p.name, t["download"], t["slotRoot"], t["prove"], t["fill"]
                ));
                ensure!(
                    index < slots && holder[index] == usize::MAX,
                    "slot {index} filled twice"
                );
                holder[index] = i;
                reported[i] = true;
            }
        }
        if holder.contains(&usize::MAX) {
            deadline.tick().await?;
        }
    }
    let deadline = Deadline::new("the request to start", Duration::from_secs(60));
    while get_json(&http, &url).await?["state"] != "started" {
        deadline.tick().await?;
    }
    tl.say("every slot filled: the request started");
    let filled_balances = balances(&mut tl, &market, &who, &start_balances, "slots filled").await?;
    tl.phase("filling");

    // --- The client drops its copy: from now on the data lives on the hosts only.
    let list = get_json(&http, &format!("{client_api}/data")).await?;
    for m in list["content"].as_array().into_iter().flatten() {
        if let Some(c) = m["cid"].as_str() {
            let r = http.delete(format!("{client_api}/data/{c}")).send().await?;
            ensure!(r.status().is_success(), "delete {c}: {}", r.status());
        }
    }
    tl.say("client deleted its local copy: the file now lives only on the hosts");

    // --- Proofs over several periods.
    let first_period = market.current_period().await?;
    let mut seen: Vec<Vec<u64>> = vec![Vec::new(); opts.hosts + 1];
    let deadline = Deadline::new(
        "proofs from every host in later periods",
        Duration::from_secs(opts.period * (opts.periods_before_kill as u64 + 3) + 60),
    );
    loop {
        let mut done = true;
        for (i, p) in people.iter().enumerate() {
            if !holder.contains(&i) {
                continue;
            }
            let Some(s) = sale_in(&http, &p.api, "SaleProving").await? else {
                bail!("{} stopped proving", p.name);
            };
            let periods: Vec<u64> = s["proofPeriods"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_u64)
                .collect();
            for q in &periods {
                if !seen[i].contains(q) {
                    tl.say(format!(
                        "{} proved slot {} in period {q}",
                        p.name, s["slotIndex"]
                    ));
                    seen[i].push(*q);
                }
            }
            done &=
                periods.iter().filter(|q| **q >= first_period).count() >= opts.periods_before_kill;
        }
        if done {
            break;
        }
        deadline.tick().await?;
    }
    tl.phase("proving");

    // --- Kill the host of slot 0.
    let victim = holder[0];
    let victim_name = people[victim].name.clone();
    if let Some(node) = people[victim].node.take() {
        // Its swarm, API and sales stop: it neither serves its slot nor proves again.
        node.shutdown().await?;
    }
    let slot0 = SlotId::new(request_id, 0);
    tl.say(format!("{victim_name} (slot 0) killed"));
    // The spare host offers storage now (so it did not take a slot at the start).
    let r = http
        .post(format!("{}/sales/availability", people[spare].api))
        .json(&availability)
        .send()
        .await?;
    ensure!(r.status() == 201, "spare availability: {}", r.text().await?);
    tl.say("spare host offers storage");
    let validator_api = people[spare + 1].api.clone();
    let slashes = u64::from(config.collateral.max_number_of_slashes);
    let mut marks = 0usize;
    let deadline = Deadline::new(
        "the validator to mark missing proofs until the slot is freed",
        Duration::from_secs(opts.period * (slashes + 4) + 60),
    );
    let mut freed = false;
    loop {
        // The slot's state first: the marks read after it include the one that freed it.
        freed = freed
            || matches!(
                market.slot_state(slot0).await?,
                SlotState::Repair | SlotState::Free
            );
        let v = get_json(&http, &format!("{validator_api}/validation")).await?;
        let mine: Vec<&Value> = v["markedMissing"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|m| m["slotId"] == slot0.to_string())
            .collect();
        for m in mine.iter().skip(marks) {
            tl.say(format!(
                "validator marked the proof of slot 0 missing for period {}: {victim_name} slashed",
                m["period"]
            ));
        }
        marks = mine.len();
        if freed {
            break;
        }
        deadline.tick().await?;
    }
    ensure!(
        marks >= 1,
        "slot 0 was freed, but not by the validator's marks"
    );
    tl.say(format!(
        "slot 0 freed after {slashes} missed proofs ({marks} marked by the validator): it is in Repair, {victim_name} lost its collateral"
    ));
    tl.phase("slashing");

    // --- The spare host repairs and refills.
    let spare_api = people[spare].api.clone();
    let deadline = Deadline::new(
        "the spare host to repair and refill slot 0",
        Duration::from_secs(300),
    );
    let sale = loop {
        if let Some(s) = sale_in(&http, &spare_api, "SaleProving").await? {
            break s;
        }
        deadline.tick().await?;
    };
    let t = &sale["timingsMs"];
    ensure!(
        sale["slotIndex"] == 0 && sale["repair"] == true && t["repair"].is_u64(),
        "the spare should have rebuilt slot 0 by erasure decoding: {sale}"
    );
    tl.say(format!(
        "spare rebuilt slot 0 from the {} surviving slots (erasure decoding over the network) in {} ms, slot root {} ms, prove {} ms, fillSlot {} ms",
        slots - 1,
        t["repair"],
        t["slotRoot"],
        t["prove"],
        t["fill"]
    ));
    ensure!(
        market.get_host(slot0).await? == Some(people[spare].account),
        "slot 0 is not the spare's"
    );
    // Lazy repair fetched the other slots to rebuild slot 0; once the fill proved it
    // the spare keeps slot 0 alone, as much as a host of one slot.
    let used = |i: usize| {
        let handle = people[i].node.as_ref().map(|n| n.handle());
        async move {
            anyhow::Ok(
                handle
                    .context("a running node")?
                    .space()
                    .await?
                    .quota_used_bytes,
            )
        }
    };
    let deadline = Deadline::new("the spare to keep slot 0 alone", Duration::from_secs(60));
    let (kept, one_slot) = loop {
        let (kept, one_slot) = (used(spare).await?, used(holder[1]).await?);
        if kept <= one_slot * 3 / 2 {
            break (kept, one_slot);
        }
        deadline.tick().await?;
    };
    tl.say(format!(
        "the spare deleted the other slots' blocks: it stores {kept} bytes, a host of one slot {one_slot}"
    ));
    tl.phase("repair");

    // --- The client downloads the file from the network and decrypts it.
    let client = people[0]
        .node
        .as_ref()
        .context("the client is not running")?;
    let verifiable_cid: codex::core::Cid = verifiable.parse()?;
    let fetched = client
        .fetch_stream(verifiable_cid)
        .await
        .context("fetching the dataset from the hosts")?;
    let opened = client
        .decrypt(fetched, Secret::Key(key.clone()))
        .await
        .context("decrypting the dataset")?;
    let name = opened.metadata.as_ref().and_then(|m| m.filename.clone());
    let parts: Vec<bytes::Bytes> = opened
        .stream
        .try_collect()
        .await
        .context("decrypting the dataset's blocks")?;
    let got = parts.concat();
    ensure!(
        got.len() == file.len() && got == file,
        "the downloaded and decrypted file differs ({} bytes, sha256 {:x})",
        got.len(),
        Sha256::digest(&got)
    );
    ensure!(
        name.as_deref() == Some("devnet-secret.bin"),
        "the file's name was not kept in the ciphertext: {name:?}"
    );
    tl.say(format!(
        "client downloaded the ciphertext from the hosts and decrypted it: {} bytes, sha256 {:x}, named {}: identical",
        got.len(),
        Sha256::digest(&got),
        name.as_deref().unwrap_or_default()
    ));
    // Without the key the node serves the ciphertext; with it (REST), the file.
    let r = http
        .get(format!("{client_api}/data/{verifiable}/network/stream"))
        .send()
        .await?;
    ensure!(r.status().is_success(), "download: {}", r.status());
    let served = r.bytes().await?;
    ensure!(
        served.len() as u64 == ciphertext_size
            && !served.windows(MARKER.len()).any(|w| w == MARKER),
        "without the key the node should serve {ciphertext_size} bytes of ciphertext without the file's marker ({} bytes served)",
        served.len()
    );
    let r = http
        .get(format!("{client_api}/data/{verifiable}/network/stream"))
        .header("X-Codex-Key", key.to_hex())
        .send()
        .await?;
    ensure!(
        r.status().is_success(),
        "download with the key: {}",
        r.status()
    );
    ensure!(
        r.bytes().await? == file,
        "GET with X-Codex-Key did not give the file back"
    );
    tl.say(format!(
        "without the key the client's node serves the {} bytes of ciphertext (none of the file's markers); with X-Codex-Key, the file",
        served.len()
    ));
    tl.phase("download");

    // --- The end of the request: payouts and the client's withdrawal.
    let end = market.request_end(request_id).await?;
    let now = market.timestamp().await?;
    let moved = match &anvil {
        Some(chain) => chain
            .increase_time(end.saturating_sub(now) + 1)
            .await
            .is_ok(),
        // A development chain (anvil, hardhat) moves its clock when asked.
        None => codex::market::alloy::providers::Provider::raw_request::<_, Value>(
            &funder,
            "evm_increaseTime".into(),
            (end.saturating_sub(now) + 1,),
        )
        .await
        .is_ok(),
    };
    if moved {
        tl.say("clock moved to the request's end");
    } else {
        tl.say(format!(
            "the chain does not move its clock: waiting {} s for the request's end",
            end.saturating_sub(now)
        ));
        while market.timestamp().await? <= end {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    holder[0] = spare;
    let deadline = Deadline::new("every host to be paid", Duration::from_secs(120));
    for &i in &holder {
        while sale_in(&http, &people[i].api, "SaleFinished")
            .await?
            .is_none()
        {
            deadline.tick().await?;
        }
    }
    tl.say("every host that held a slot to the end was paid (freeSlot)");
    // A sale that is over deletes the data it fetched.
    let deadline = Deadline::new(
        "the hosts to delete their slots' data",
        Duration::from_secs(60),
    );
    for &i in &holder {
        let api = &people[i].api;
        while get_json(&http, &format!("{api}/data")).await?["content"]
            .as_array()
            .is_none_or(|c| !c.is_empty())
        {
            deadline.tick().await?;
        }
    }
    tl.say("the paid hosts deleted the data they stored for the request");
    let deadline = Deadline::new("the client's withdrawal", Duration::from_secs(60));
    while get_json(&http, &url).await?["state"] != "finished" {
        deadline.tick().await?;
    }
    tl.say("purchase finished: the client withdrew what it was owed");
    let end_balances = balances(&mut tl, &market, &who, &start_balances, "end").await?;
    tl.phase("payout");

    // --- What must hold.
    ensure!(
        end_balances[victim] < start_balances[victim]
            && end_balances[victim] == filled_balances[victim],
        "{victim_name} should have lost its collateral and earned nothing"
    );
    for &i in &holder {
        ensure!(
            end_balances[i] > start_balances[i],
            "{} was not paid",
            people[i].name
        );
    }
    ensure!(
        end_balances[spare + 1] > start_balances[spare + 1],
        "the validator got no reward"
    );
    for p in people.iter_mut() {
        if let Some(n) = p.node.take() {
            n.shutdown().await?;
        }
    }
    tl.say("devnet finished: every step checked");
    drop(anvil);
    Ok(Report {
        phases: tl.phases,
        timeline: tl.lines,
    })
}

/// Sets the network up as [`run`] does (chain and contracts, nodes with funded
/// accounts, the hosts' availabilities; the spare host offers nothing) and, instead of
/// the scenario, keeps it up for the user to drive through the nodes' REST APIs until
/// `stop` completes; then stops every node and the anvil it started.
///
/// `out` receives the timeline of the set-up; `ready` the network's [`Endpoints`] once
/// every node answers. `opts.k`, `opts.m` and `opts.file_size` are not used (the user's
/// requests choose their own). When `stop` completes during the set-up, what was
/// started is stopped and an error returned.
///
/// # Errors
/// The first step of the set-up that failed, or the first node that did not stop
/// cleanly.
pub async fn keep_running(
    opts: &Options,
    out: &(dyn Fn(&str) + Sync),
    ready: &(dyn Fn(&Endpoints) + Sync),
    stop: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let mut tl = Timeline::new(out);
    let mut stop = std::pin::pin!(stop);
    let net = tokio::select! {
        net = set_up(opts, &mut tl) => net?,
        () = &mut stop => bail!("stopped before the network was ready"),
    };
    ready(&net.endpoints());
    tl.say("ready: the network runs until stopped");
    stop.await;
    tl.say("stopping");
    net.shut_down(&mut tl).await
}

/// Where the devnet caches proving keys by default: `target/devnet-proof-keys` under
/// `root`.
pub fn default_cache(root: &Path) -> PathBuf {
    root.join("target").join("devnet-proof-keys")
}
