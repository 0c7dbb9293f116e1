//! The roles against the in-memory marketplace: the devnet's scenarios (fill, prove,
//! restart, miss, slash, free, repair, pay out; cancellation; failure) with sales,
//! purchasing and the validator as the node runs them, the slot's data behind a
//! stand-in [`SlotHost`]. A ticker mines a block every few milliseconds (the pointer
//! moves as on a live chain); the test moves the clock.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use codex_core::{Cid, codec};
use codex_market::alloy::primitives::{Address, U256};
use codex_market::memory::{EchoVerifier, MemoryMarketplace, ProofVerifier};
use codex_market::{
    Ask, Content, Marketplace, MarketplaceConfig, RequestId, RequestState, SlotId, SlotState,
    StorageRequest, echo_proof, public_inputs,
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::node::purchasing::{self, PurchaseState, Purchases, RequestParams};
use crate::node::validator::{Validation, Validator, ValidatorConfig};

type TestResult = anyhow::Result<()>;

const POLL: Duration = Duration::from_millis(10);
const TOKENS: u64 = 1_000_000_000_000;

fn u(x: u64) -> U256 {
    U256::from(x)
}

/// A host's data as a stand-in: fetching records what was asked, proofs answer the
/// challenge (the proof `EchoVerifier` accepts).
#[derive(Debug, Default)]
struct TestHost {
    fetched: Mutex<Vec<(SlotId, bool)>>,
    datasets: Mutex<HashSet<Cid>>,
    deleted: Mutex<Vec<Cid>>,
    /// Datasets that do not match their requests (as `NodeHost::fetch` finds them).
    unfit: Mutex<HashSet<Cid>>,
    /// The requests vetted, in order.
    vetted: Mutex<Vec<RequestId>>,
}

#[async_trait::async_trait]
impl SlotHost for TestHost {
    async fn check(&self, _: &MarketplaceConfig) -> Result<()> {
        Ok(())
    }

    async fn has_dataset(&self, cid: &Cid) -> bool {
        lock(&self.datasets).contains(cid)
    }

    async fn vet(&self, request: &StorageRequest) -> Result<()> {
        lock(&self.vetted).push(request.id());
        let cid = Cid::from_bytes(&request.content.cid)?;
        if lock(&self.unfit).contains(&cid) {
            return Err(crate::Error::RequestMismatch {
                cid,
                what: "the request has 1 slots, the dataset 3".into(),
            });
        }
        Ok(())
    }

    async fn fetch(&self, request: &StorageRequest, index: u64, repair: bool) -> Result<Fetched> {
        lock(&self.fetched).push((request.slot_id(index), repair));
        let cid = Cid::from_bytes(&request.content.cid)?;
        lock(&self.datasets).insert(cid);
        Ok(Fetched {
            rebuilt: repair,
            timings: vec![(if repair { "repair" } else { "download" }, Duration::ZERO)],
        })
    }

    async fn load(&self, _: &StorageRequest, _: u64) -> Result<()> {
        Ok(())
    }

    async fn prove(
        &self,
        request: &StorageRequest,
        index: u64,
        challenge: [u8; 32],
    ) -> Result<Vec<u8>> {
        Ok(echo_proof(&public_inputs(
            &challenge,
            &request.content.merkle_root,
            index,
        )))
    }

    fn last_prove_ms(&self) -> Option<u64> {
        Some(1)
    }

    async fn filled(&self, _: &StorageRequest, _: u64) {}

    async fn forget(&self, _: SlotId) {}

    async fn delete_dataset(&self, cid: &Cid) -> Result<()> {
        lock(&self.datasets).remove(cid);
        lock(&self.deleted).push(*cid);
        Ok(())
    }
}

/// The chain, its ticker, and the roles started on it.
struct Net {
    chain: MemoryMarketplace,
    config: MarketplaceConfig,
    stop: CancellationToken,
    ticker: JoinHandle<()>,
    started: Instant,
}

impl Net {
    /// A chain that mines a block every 3 ms when `tick`.
    fn new(verifier: impl ProofVerifier + 'static, tick: bool) -> anyhow::Result<Self> {
        // The roles' log, for a failure's story: `RUST_LOG=codex=info`.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let config = MarketplaceConfig::default();
        let chain = MemoryMarketplace::deploy(config.clone(), verifier)?;
        let stop = CancellationToken::new();
        let (c, s) = (chain.clone(), stop.clone());
        let ticker = tokio::spawn(async move {
            while tick && !s.is_cancelled() {
                tokio::time::sleep(Duration::from_millis(3)).await;
                c.mine(1);
            }
        });
        Ok(Net {
            chain,
            config,
            stop,
            ticker,
            started: Instant::now(),
        })
    }

    /// Account `n` with tokens.
    fn account(&self, n: u8) -> MemoryMarketplace {
        let m = self.chain.connect(Address::with_last_byte(n));
        self.chain.mint(m.account(), u(TOKENS));
        m
    }

    fn period_start(&self, period: u64) -> u64 {
        period * self.config.proofs.period
    }

    /// The clock moves to `timestamp` (a block is mined there).
    fn at(&self, timestamp: u64) -> anyhow::Result<()> {
        Ok(self.chain.set_time(timestamp)?)
    }

    async fn balances(&self, who: &[Address]) -> anyhow::Result<Vec<U256>> {
        let mut out = Vec::new();
        for a in who {
            out.push(self.chain.balance_of(*a).await?);
        }
        Ok(out)
    }

    async fn shutdown(self) -> anyhow::Result<Duration> {
        self.stop.cancel();
        self.ticker.await?;
        Ok(self.started.elapsed())
    }
}

/// A host running a [`Seller`].
struct Host {
    market: MemoryMarketplace,
    sales: Arc<Sales>,
    data: Arc<TestHost>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Host {
    /// A seller reading the events from the latest block on.
    async fn start(
        market: MemoryMarketplace,
        sales: Arc<Sales>,
        data: Arc<TestHost>,
    ) -> anyhow::Result<Self> {
        let stop = CancellationToken::new();
        let seller = Seller::new(market.clone(), Arc::clone(&data), Arc::clone(&sales))
            .config(SellerConfig {
                poll_interval: POLL,
                ..SellerConfig::default()
            })
            .from_block(market.block_number().await? + 1);
        let task = tokio::spawn(seller.run(stop.clone()));
        Ok(Host {
            market,
            sales,
            data,
            stop,
            task,
        })
    }

    /// A host offering room for a few slots of 1 KiB.
    async fn offering(market: MemoryMarketplace, sales: Sales) -> anyhow::Result<Self> {
        offer(&market, &sales).await?;
        Host::start(market, Arc::new(sales), Arc::default()).await
    }

    /// Stops the seller; returns once every sale task has ended.
    async fn stop(self) -> anyhow::Result<(MemoryMarketplace, Arc<Sales>, Arc<TestHost>)> {
        self.stop.cancel();
        self.task.await?;
        Ok((self.market, self.sales, self.data))
    }

    /// The sale of this host for a slot of `request`, if it has one: the one running,
    /// or else the one that proved (not an attempt that lost a race).
    fn sale_of(&self, request: RequestId) -> Option<Sale> {
        self.sales
            .sales()
            .into_iter()
            .filter(|s| s.request == request)
            .max_by_key(|s| (!s.state.is_over(), s.proofs))
    }
}

/// `sales` offers room for a few slots of 1 KiB, as `market`'s account.
async fn offer(market: &impl Marketplace, sales: &Sales) -> anyhow::Result<()> {
    let a = Availability::new(
        format!("{}", market.account()),
        100 * 1024,
        7200,
        u(1),
        u(TOKENS / 2),
    )?;
    sales.add_availability(a).await;
    Ok(())
}

/// A seller over any marketplace (e.g. a counted one), reading events from where its
/// book says it stopped, or from the latest block.
fn sell<M: Marketplace + Clone + 'static>(
    market: M,
    sales: &Arc<Sales>,
    data: &Arc<TestHost>,
) -> (CancellationToken, JoinHandle<()>) {
    let stop = CancellationToken::new();
    let seller = Seller::new(market, Arc::clone(data), Arc::clone(sales)).config(SellerConfig {
        poll_interval: POLL,
        ..SellerConfig::default()
    });
    (stop.clone(), tokio::spawn(seller.run(stop)))
}

/// The proofs of [`TestHost`] for the slot and dataset they are for, whatever the
/// challenge: with a ticker mining blocks, the challenge may move between reading it
/// and the proof landing (as on a live chain when the pointer wraps); the test without
/// a ticker checks the challenge too ([`EchoVerifier`]).
fn slot_proofs(proof: &[u8], public_inputs: &[U256; 3]) -> bool {
    let expected = echo_proof(public_inputs);
    proof.len() == expected.len() && proof[32..] == expected[32..]
}

/// Polls `f` every few milliseconds until it gives `Some`, for at most 5 s.
async fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A request from `client` of `slots` slots of 1 KiB for `duration` seconds, with a
/// nonce of its own.
fn request(
    client: Address,
    slots: u64,
    max_slot_loss: u64,
    duration: u64,
    expiry: u64,
) -> StorageRequest {
    let nonce = [slots as u8 * 16 + max_slot_loss as u8; 32];
    StorageRequest {
        client,
        ask: Ask {
            proof_probability: u(1), // a proof every period
            price_per_byte_per_second: u(1),
            collateral_per_byte: u(10),
            slots,
            slot_size: 1024,
            duration,
            max_slot_loss,
        },
        content: Content {
            cid: Cid::for_manifest(b"a verifiable manifest").to_bytes(),
            merkle_root: [5; 32],
        },
        expiry,
        nonce,
    }
}

/// The client buys `request` through purchasing: the purchase's id and its task.
fn buy(
    client: &MemoryMarketplace,
    purchases: &Arc<Purchases>,
    request: StorageRequest,
) -> (String, StorageRequest, JoinHandle<Result<()>>) {
    let params = RequestParams::of(&request);
    let cid = Cid::for_manifest(b"a dataset");
    assert_eq!(cid.codec(), codec::MANIFEST);
    // The purchase's record; the request keeps its own nonce, so that its slots and
    // so the pointers the test sees are the same on every run.
    let (_, id) = purchases.begin(cid, &params, client.account());
    let (c, p, i, r) = (
        client.clone(),
        Arc::clone(purchases),
        id.clone(),
        request.clone(),
    );
    let task = tokio::spawn(async move { purchasing::submit(&c, &p, &i, r, POLL).await });
    (id, request, task)
}

fn validate(market: MemoryMarketplace) -> (Arc<Validation>, CancellationToken, JoinHandle<()>) {
    let validator = Validator::new(market, ValidatorConfig::default()).poll_interval(POLL);
    let state = Arc::clone(validator.validation());
    let stop = CancellationToken::new();
    (state, stop.clone(), tokio::spawn(validator.run(stop)))
}

fn purchase_state(purchases: &Purchases, id: &str) -> Option<PurchaseState> {
    purchases.get(id).map(|p| p.state)
}

/// The devnet's story: three hosts fill a request, prove over periods, one restarts and
/// resumes, one is gone; the validator marks its missed proofs until the slot is
/// freed; a spare host repairs and refills it; at the end every host is paid, the
/// client withdraws, and every balance is as the contract's formulas say.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fill_prove_restart_miss_slash_free_repair_and_pay_out() -> TestResult {
    let net = Net::new(slot_proofs, true)?;
    let period = net.config.proofs.period;
    let client = net.account(1);
    let dir = tempfile::tempdir()?;
    let state_a = dir.path().join("a").join("state.json");
    let mut hosts = vec![
        Host::offering(net.account(2), Sales::open(state_a.clone())).await?,
        Host::offering(net.account(3), Sales::in_memory()).await?,
        Host::offering(net.account(4), Sales::in_memory()).await?,
    ];
    let (validation, stop_validator, validator) = validate(net.account(6));
    let v_account = Address::with_last_byte(6);

    // --- the request, in the first seconds of a period
    let p0 = net.config.period_of(net.chain.now()) + 1;
    let filled_at = net.period_start(p0) + 10;
    net.at(filled_at)?;
    let purchases = Arc::new(Purchases::default());
    let duration = 12 * period;
    let (pid, request, purchase) = buy(
        &client,
        &purchases,
        request(client.account(), 3, 1, duration, 600),
    );
    let id = request.id();
    let ends_at = filled_at + duration;
    wait_for("the request to start", || {
        (purchase_state(&purchases, &pid) == Some(PurchaseState::Started)).then_some(())
    })
    .await;
    let mut indices: Vec<u64> = Vec::new();
    for h in &hosts {
        let sale = wait_for("every host proving", || {
            h.sale_of(id).filter(|s| s.state == SaleState::Proving)
        })
        .await;
        assert_eq!((sale.proofs, sale.repair), (1, false));
        assert_eq!(
            h.market.get_host(sale.slot).await?,
            Some(h.market.account())
        );
        indices.push(sale.slot_index);
    }
    indices.sort_unstable();
    assert_eq!(indices, [0, 1, 2], "one slot each");

    // --- two periods in which every host proves
    let proved_in = |h: &Host, p: u64| h.sale_of(id).is_some_and(|s| s.proof_periods.contains(&p));
    for p in [p0 + 1, p0 + 2] {
        net.at(net.period_start(p) + 10)?;
        for h in &hosts {
            wait_for("a proof in each period", || proved_in(h, p).then_some(())).await;
        }
    }

    // --- host A restarts: its sale resumes from the chain and the saved book
    let (market_a, _, data_a) = hosts.remove(0).stop().await?;
    let restarted = Host::start(market_a, Arc::new(Sales::open(state_a)), data_a).await?;
    let resumed = wait_for("the resumed sale", || restarted.sale_of(id)).await;
    assert_eq!(resumed.state, SaleState::Proving);
    assert!(resumed.reserved);
    assert_eq!(
        resumed.availability,
        format!("{}", restarted.market.account()),
        "the availability it was taken from is kept"
    );
    hosts.insert(0, restarted);

    // --- host C is gone; a spare host starts; A and B prove, the validator marks C's
    // two missed proofs, the slot is freed into Repair
    let slot_c = hosts[2].sale_of(id).map(|s| s.slot).unwrap_or_default();
    let (market_c, ..) = hosts.remove(2).stop().await?;
    let spare = Host::offering(net.account(5), Sales::in_memory()).await?;
    for p in [p0 + 3, p0 + 4] {
        net.at(net.period_start(p) + 10)?;
        for h in &hosts {
            wait_for("A and B prove", || proved_in(h, p).then_some(())).await;
        }
        // the period ends; its missed proof is marked within the timeout
        net.at(net.period_start(p + 1) + 5)?;
        wait_for("the missed proof marked", || {
            validation
                .marked()
                .iter()
                .any(|m| m.slot == slot_c && m.period == p)
                .then_some(())
        })
        .await;
    }
    let refilled_at = net.period_start(p0 + 5) + 5;

    // --- the spare host saw the slot freed, rebuilt it and refilled it
    let d = wait_for("the spare host proving the repaired slot", || {
        spare.sale_of(id).filter(|s| s.state == SaleState::Proving)
    })
    .await;
    assert_eq!((d.slot, d.repair), (slot_c, true));
    assert_eq!(lock(&spare.data.fetched).as_slice(), &[(slot_c, true)]);
    assert_eq!(
        net.chain.get_host(slot_c).await?,
        Some(spare.market.account())
    );
    assert_eq!(net.chain.missing_proofs(slot_c).await?, 0);
    assert_eq!(
        purchase_state(&purchases, &pid),
        Some(PurchaseState::Started),
        "one lost slot is within the tolerance"
    );

    // --- the request ends: every host is paid, the client withdraws
    net.at(ends_at + 1)?;
    for h in hosts.iter().chain([&spare]) {
        wait_for("the payout", || {
            h.sale_of(id).filter(|s| s.state == SaleState::Finished)
        })
        .await;
    }
    purchase.await??;
    assert_eq!(
        purchase_state(&purchases, &pid),
        Some(PurchaseState::Finished)
    );
    assert_eq!(net.chain.request_state(id).await?, RequestState::Finished);
    for h in hosts.iter().chain([&spare]) {
        let a = &h.sales.availabilities()[0];
        assert_eq!(a.free_size, a.total_size, "the space is given back");
        assert_eq!(a.total_remaining_collateral, a.total_collateral);
    }

    // --- balances, as the contract's formulas say
    let ask = &request.ask;
    let (pps, collateral) = (ask.price_per_slot_per_second(), ask.collateral_per_slot());
    let reward = net.config.validator_reward(ask);
    let t = u(TOKENS);
    let earned = u(ends_at - filled_at) * pps;
    let earned_d = u(ends_at - refilled_at) * pps;
    let who = [
        client.account(),
        hosts[0].market.account(),
        hosts[1].market.account(),
        market_c.account(),
        spare.market.account(),
        v_account,
        net.chain.address(),
    ];
    assert_eq!(
        net.balances(&who).await?,
        vec![
            t - earned * u(2) - earned_d,
            t + earned,
            t + earned,
            t - collateral,
            t + earned_d + collateral / u(10),
            t + reward * u(2),
            collateral - reward * u(2) - collateral / u(10),
        ]
    );
    assert_eq!(validation.marked().len(), 2);

    for h in hosts.into_iter().chain([spare]) {
        h.stop().await?;
    }
    stop_validator.cancel();
    validator.await?;
    let took = net.shutdown().await?;
    assert!(took < Duration::from_secs(8), "took {took:?}");
    Ok(())
}

/// A request not filled before its expiry is cancelled: the host that filled a slot
/// proves (proofs checked against the challenge), is paid until the expiry and gets
/// its collateral back; the client withdraws the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_not_filled_in_time_is_cancelled_and_paid_until_expiry() -> TestResult {
    let net = Net::new(EchoVerifier, false)?;
    let client = net.account(1);
    let host = Host::offering(net.account(2), Sales::in_memory()).await?;
    let p0 = net.config.period_of(net.chain.now()) + 1;
    let filled_at = net.period_start(p0) + 10;
    net.at(filled_at)?;
    let purchases = Arc::new(Purchases::default());
    let (pid, request, purchase) = buy(
        &client,
        &purchases,
        request(client.account(), 2, 1, 3600, 300),
    );
    let id = request.id();
    let expires_at = filled_at + 300;
    wait_for("a slot filled", || {
        host.sale_of(id).filter(|s| s.state == SaleState::Proving)
    })
    .await;
    // the slot of a request that has not started is proved too
    net.at(net.period_start(p0 + 1) + 10)?;
    wait_for("a proof", || {
        host.sale_of(id)
            .filter(|s| s.proof_periods.contains(&(p0 + 1)))
    })
    .await;
    assert_eq!(
        purchase_state(&purchases, &pid),
        Some(PurchaseState::Submitted)
    );

    net.at(expires_at + 1)?;
    let sale = wait_for("the payout", || {
        host.sale_of(id).filter(|s| s.state == SaleState::Cancelled)
    })
    .await;
    assert_eq!(sale.error, None);
    purchase.await??;
    assert_eq!(
        purchase_state(&purchases, &pid),
        Some(PurchaseState::Cancelled)
    );
    let paid = u(expires_at - filled_at) * request.ask.price_per_slot_per_second();
    let t = u(TOKENS);
    assert_eq!(
        net.balances(&[client.account(), host.market.account(), net.chain.address()])
            .await?,
        vec![t - paid, t + paid, U256::ZERO]
    );
    host.stop().await?;
    net.shutdown().await?;
    Ok(())
}

/// A request that loses more slots than it tolerates fails: the host that is gone is slashed
/// out, the other one loses its collateral too, the client gets its money back and
/// the purchase ends as an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_loses_too_many_slots_fails() -> TestResult {
    let net = Net::new(slot_proofs, true)?;
    let client = net.account(1);
    let mut hosts = vec![
        Host::offering(net.account(2), Sales::in_memory()).await?,
        Host::offering(net.account(3), Sales::in_memory()).await?,
    ];
    let (validation, stop_validator, validator) = validate(net.account(6));
    let p0 = net.config.period_of(net.chain.now()) + 1;
    net.at(net.period_start(p0) + 10)?;
    let purchases = Arc::new(Purchases::default());
    let (pid, request, purchase) = buy(
        &client,
        &purchases,
        request(client.account(), 2, 0, 3600, 600),
    );
    let id = request.id();
    wait_for("the request to start", || {
        (purchase_state(&purchases, &pid) == Some(PurchaseState::Started)).then_some(())
    })
    .await;
    for h in &hosts {
        wait_for("both hosts proving", || {
            h.sale_of(id).filter(|s| s.state == SaleState::Proving)
        })
        .await;
    }
    // host A is gone: two missed proofs free its slot, and with no loss tolerated the
    // request fails
    let (gone, ..) = hosts.remove(0).stop().await?;
    let b = &hosts[0];
    for p in [p0 + 1, p0 + 2] {
        net.at(net.period_start(p) + 10)?;
        wait_for("B proves", || {
            b.sale_of(id).filter(|s| s.proof_periods.contains(&p))
        })
        .await;
        net.at(net.period_start(p + 1) + 5)?;
        wait_for("the missed proof marked", || {
            validation
                .marked()
                .iter()
                .any(|m| m.period == p)
                .then_some(())
        })
        .await;
    }
    let sale = wait_for("B's sale failed", || {
        b.sale_of(id).filter(|s| s.state == SaleState::Failed)
    })
    .await;
    assert!(sale.error.is_some());
    let a = &b.sales.availabilities()[0];
    assert_eq!(a.free_size, a.total_size, "the space is given back");
    assert_eq!(
        a.total_remaining_collateral,
        a.total_collateral - request.ask.collateral_per_slot(),
        "the collateral is lost"
    );
    purchase.await??;
    let p = purchases.get(&pid);
    assert_eq!(p.as_ref().map(|p| p.state), Some(PurchaseState::Errored));
    assert!(
        p.and_then(|p| p.error)
            .is_some_and(|e| e.contains("failed"))
    );
    assert_eq!(net.chain.request_state(id).await?, RequestState::Failed);

    let (collateral, reward) = (
        request.ask.collateral_per_slot(),
        net.config.validator_reward(&request.ask),
    );
    let t = u(TOKENS);
    assert_eq!(
        net.balances(&[
            client.account(),
            gone.account(),
            b.market.account(),
            Address::with_last_byte(6),
            net.chain.address()
        ])
        .await?,
        vec![
            t,
            t - collateral,
            t - collateral,
            t + reward * u(2),
            collateral * u(2) - reward * u(2)
        ]
    );
    for h in hosts {
        h.stop().await?;
    }
    stop_validator.cancel();
    validator.await?;
    net.shutdown().await?;
    Ok(())
}

/// Stopping a seller stops every sale it runs, at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seller_stops_with_its_token() -> TestResult {
    let net = Net::new(slot_proofs, true)?;
    let host = Host::offering(net.account(2), Sales::in_memory()).await?;
    tokio::time::sleep(POLL * 3).await;
    let t = Instant::now();
    host.stop().await?;
    assert!(t.elapsed() < Duration::from_secs(1));
    net.shutdown().await?;
    Ok(())
}

/// The book survives a restart; a corrupt file is set aside.
#[tokio::test]
async fn availabilities_survive_a_restart_and_a_corrupt_file_is_set_aside() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("sales").join("state.json");
    let sales = Sales::open(path.clone());
    let a = Availability::new("a1".into(), 1000, 3600, u(1), u(500))?;
    sales.add_availability(a.clone()).await;
    assert_eq!(Sales::open(path.clone()).availabilities(), vec![a.clone()]);
    let update = AvailabilityUpdate {
        enabled: Some(false),
        ..AvailabilityUpdate::default()
    };
    assert!(sales.update_availability("nope", &update).await?.is_none());
    sales.update_availability("a1", &update).await?;
    assert!(!Sales::open(path.clone()).availabilities()[0].enabled);
    std::fs::write(&path, b"{ not json")?;
    assert!(Sales::open(path.clone()).availabilities().is_empty());
    assert!(path.with_extension("corrupt").exists());
    Ok(())
}

/// One clock poll drives every held slot: over three periods of one-second blocks, a
/// host holding three slots spends under half a marketplace call per slot per block
/// on them (besides its own clock and event polls, at most 6 a block whatever it
/// holds), and proves each slot in every period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_slots_cost_less_than_one_call_per_slot_per_block() -> TestResult {
    let net = Net::new(slot_proofs, false)?;
    let period = net.config.proofs.period;
    let client = net.account(1);
    let market = codex_market::Metered::new(net.account(2));
    let sales = Arc::new(Sales::in_memory());
    offer(&market, &sales).await?;
    let (stop, task) = sell(market.clone(), &sales, &Arc::default());
    wait_for("the seller's first poll", || sales.events_position()).await;

    let p0 = net.config.period_of(net.chain.now()) + 1;
    net.at(net.period_start(p0) + 10)?;
    let purchases = Arc::new(Purchases::default());
    let mut ids = Vec::new();
    for n in 0..3u8 {
        let mut r = request(client.account(), 1, 0, 12 * period, 600);
        r.nonce = [n; 32];
        let (pid, r, _) = buy(&client, &purchases, r);
        wait_for("the request to start", || {
            (purchase_state(&purchases, &pid) == Some(PurchaseState::Started)).then_some(())
        })
        .await;
        ids.push(r.id());
    }
    let proving = |id: RequestId| {
        sales
            .sales()
            .into_iter()
            .find(|s| s.request == id && s.state == SaleState::Proving)
    };
    for id in &ids {
        wait_for("every slot proving", || proving(*id)).await;
    }

    // Three periods of one-second blocks, each seen by the clock poll.
    let before = market.counts().calls();
    let node_before: u64 = ["next_block", "block_number", "block_hash", "events"]
        .iter()
        .filter_map(|m| market.counts().by_method().get(m).copied())
        .sum();
    let blocks = 3 * period;
    let first = net.period_start(p0 + 1);
    for t in first..first + blocks {
        net.at(t)?;
        tokio::time::sleep(POLL + Duration::from_millis(2)).await;
    }
    let calls = market.counts().calls() - before;
    let by_method = market.counts().by_method();
    // The node's own polls (the clock and the events), whatever it holds; what is
    // left is what the held slots cost.
    let node: u64 = ["next_block", "block_number", "block_hash", "events"]
        .iter()
        .filter_map(|m| by_method.get(m))
        .sum::<u64>()
        - node_before;
    let per_slot_block = (calls - node) as f64 / (3 * blocks) as f64;
    eprintln!(
        "{calls} calls over {blocks} blocks: the node's polls {node} ({:.2} a block), the 3 slots {} ({per_slot_block:.2} a slot a block): {by_method:?}",
        node as f64 / blocks as f64,
        calls - node,
    );
    for id in &ids {
        let sale = proving(*id).ok_or_else(|| anyhow::anyhow!("a sale stopped"))?;
        for p in p0 + 1..p0 + 3 {
            assert!(
                sale.proof_periods.contains(&p),
                "{id}: no proof in period {p}: {:?}",
                sale.proof_periods
            );
        }
    }
    assert!(
        per_slot_block < 0.5,
        "held slots cost {per_slot_block:.2} calls a slot a block"
    );
    assert!(
        node <= 6 * blocks,
        "the node's polls cost {node} calls over {blocks} blocks"
    );
    stop.cancel();
    task.await?;
    net.shutdown().await?;
    Ok(())
}

/// A host down for three periods while a request is made sees it after its restart
/// (the book keeps its position in the events) and fills a slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_down_when_a_request_is_made_fills_it_after_a_restart() -> TestResult {
    let net = Net::new(slot_proofs, true)?;
    let period = net.config.proofs.period;
    let client = net.account(1);
    let host = net.account(2);
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("state.json");
    let data = Arc::new(TestHost::default());
    let sales = Arc::new(Sales::open(path.clone()));
    offer(&host, &sales).await?;
    let (stop, task) = sell(host.clone(), &sales, &data);
    let seen = wait_for("the seller's first poll", || sales.events_position()).await;
    // The position is written on the blocking pool after it is set: wait until it is on
    // disk (a busy machine can take longer than the seller needs to be stopped).
    wait_for("the first poll's position on disk", || {
        Sales::open(path.clone()).events_position()
    })
    .await;
    stop.cancel();
    task.await?;

    // While it is down: a request, and three periods.
    net.at(net.chain.now() + 5)?;
    let purchases = Arc::new(Purchases::default());
    let (pid, r, _) = buy(
        &client,
        &purchases,
        request(client.account(), 1, 0, 12 * period, 600),
    );
    wait_for("the request on chain", || {
        (purchase_state(&purchases, &pid) == Some(PurchaseState::Submitted)).then_some(())
    })
    .await;
    net.at(net.chain.now() + 3 * period)?;

    let sales = Arc::new(Sales::open(path));
    let position = sales.events_position().map(|e| e.next_block());
    // The first poll's position was saved; a later one not yet (no events, under 100
    // blocks): the restart reads from no later than what the seller had seen.
    assert!(
        position.is_some_and(|p| p <= seen.next_block()),
        "the position is kept: {position:?}, seen {}",
        seen.next_block()
    );
    let (stop, task) = sell(host.clone(), &sales, &data);
    let sale = wait_for("the restarted host fills the slot", || {
        sales
            .sales()
            .into_iter()
            .find(|s| s.request == r.id() && s.state == SaleState::Proving)
    })
    .await;
    assert_eq!(host.get_host(sale.slot).await?, Some(host.account()));
    stop.cancel();
    task.await?;
    net.shutdown().await?;
    Ok(())
}

/// A request whose dataset does not match it (the host's vetting finds out) is skipped:
/// never reserved, never filled, never attempted again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_does_not_match_its_dataset_is_never_filled() -> TestResult {
    let net = Net::new(slot_proofs, true)?;
    let period = net.config.proofs.period;
    let client = net.account(1);
    let host = net.account(2);
    let data = Arc::new(TestHost::default());
    let r = request(client.account(), 1, 0, 12 * period, 600);
    lock(&data.unfit).insert(Cid::from_bytes(&r.content.cid)?);
    let sales = Arc::new(Sales::in_memory());
    offer(&host, &sales).await?;
    let (stop, task) = sell(host.clone(), &sales, &data);
    wait_for("the seller's first poll", || sales.events_position()).await;
    let purchases = Arc::new(Purchases::default());
    let (_, r, _) = buy(&client, &purchases, r);
    let sale = wait_for("the attempt over", || {
        sales
            .sales()
            .into_iter()
            .find(|s| s.request == r.id() && s.state.is_over())
    })
    .await;
    assert_eq!(sale.state, SaleState::Ignored);
    assert!(
        sale.error
            .as_deref()
            .is_some_and(|e| e.contains("does not match")),
        "{:?}",
        sale.error
    );
    tokio::time::sleep(POLL * 20).await;
    assert_eq!(lock(&data.vetted).len(), 1, "not attempted again");
    assert!(lock(&data.fetched).is_empty(), "nothing downloaded");
    assert!(
        host.can_reserve_slot(r.id(), 0).await?,
        "the slot was never reserved"
    );
    assert_eq!(host.slot_state(r.slot_id(0)).await?, SlotState::Free);
    assert!(sales.queued().is_empty());
    stop.cancel();
    task.await?;
    net.shutdown().await?;
    Ok(())
}

#[test]
fn an_availability_takes_no_slot_that_ends_after_its_until() -> TestResult {
    let r = request(Address::ZERO, 3, 1, 3600, 600);
    let mut a = Availability::new("a1".into(), 10_000, 7200, u(1), u(1_000_000))?;
    assert!(a.matches(&r, 1_000), "no limit by default");
    a.until = 1_000 + 3600;
    assert!(a.matches(&r, 1_000), "ends exactly at until");
    assert!(!a.matches(&r, 1_001), "ends a second after until");
    a.apply(&AvailabilityUpdate {
        until: Some(0),
        ..AvailabilityUpdate::default()
    })?;
    assert!(a.matches(&r, 1_001), "0 lifts the limit");
    Ok(())
}
