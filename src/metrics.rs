//! Prometheus metrics of a node (`--metrics`, feature `metrics`): read from the node's
//! own counters at each scrape and written in the OpenMetrics text format
//! ([`encode`]), served at `GET /metrics` on their own address ([`serve`]).
//!
//! | metric | type | what |
//! |---|---|---|
//! | `codex_store_blocks` | gauge | blocks stored |
//! | `codex_store_quota_max_bytes`, `_used_bytes`, `_reserved_bytes` | gauge | the quota |
//! | `codex_downloads_total`, `codex_downloads_failed_total` | counter | network downloads |
//! | `codex_net_peers` | gauge | connected peers |
//! | `codex_net_routing_table_peers` | gauge | peers in the Kademlia table |
//! | `codex_blocks_served_total`, `codex_blocks_received_total`, `codex_blocks_rejected_total` | counter | block exchange |
//! | `codex_bytes_sent_total`, `codex_bytes_received_total` | counter | block data up and down |
//! | `codex_peers_dropped_total` | counter | peers dropped for misbehaving or stalling |
//! | `codex_exchange_queued_bytes` | gauge | answers queued for peers |
//! | `codex_sales{state}` | gauge | the host's sales by state |
//! | `codex_slots_held` | gauge | slots this host fills and proves |
//! | `codex_proofs_submitted_total` | counter | proofs accepted since the node started (fills included) |
//! | `codex_proofs_marked_missing_total` | counter | missed proofs this validator marked |
//! | `codex_purchases{state}` | gauge | purchases by state |
//! | `codex_chain_calls_total{method}`, `codex_chain_errors_total{method}` | counter | marketplace calls |
//! | `codex_chain_transactions_total{outcome}` | counter | the transaction manager: `sent`, `resent`, `succeeded`, `reverted`, `nonce_refused`, `stuck` |
//!
//! With a network, libp2p's own metrics follow (libp2p-metrics, prefix `libp2p_`):
//! connections established and closed, dial errors, listen addresses, Kademlia queries
//! and routing updates, identify, ping round trips, relay reservations and circuits,
//! hole punching (DCUtR).

use std::net::SocketAddr;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::node::Handle;

/// The content type of [`encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Labels = Vec<(&'static str, String)>;

/// One metric's values at a scrape.
#[derive(Debug)]
struct Family {
    name: &'static str,
    help: &'static str,
    counter: bool,
    values: Vec<(Labels, u64)>,
}

/// Every metric's values at a scrape.
#[derive(Debug, Default)]
struct Snapshot(Vec<Family>);

impl Snapshot {
    fn push(&mut self, name: &'static str, help: &'static str, counter: bool, v: u64) {
        self.0.push(Family {
            name,
            help,
            counter,
            values: vec![(Vec::new(), v)],
        });
    }
    fn counter(&mut self, name: &'static str, help: &'static str, v: u64) {
        self.push(name, help, true, v);
    }
    fn gauge(&mut self, name: &'static str, help: &'static str, v: u64) {
        self.push(name, help, false, v);
    }
    #[cfg(feature = "market")]
    fn labelled(
        &mut self,
        name: &'static str,
        help: &'static str,
        counter: bool,
        label: &'static str,
        values: impl IntoIterator<Item = (String, u64)>,
    ) {
        self.0.push(Family {
            name,
            help,
            counter,
            values: values
                .into_iter()
                .map(|(l, v)| (vec![(label, l)], v))
                .collect(),
        });
    }
}

impl Collector for Snapshot {
    fn encode(
        &self,
        mut encoder: DescriptorEncoder<'_>,
    ) -> std::result::Result<(), std::fmt::Error> {
        for f in &self.0 {
            let kind = if f.counter {
                MetricType::Counter
            } else {
                MetricType::Gauge
            };
            let mut metric = encoder.encode_descriptor(f.name, f.help, None, kind)?;
            match f.values.as_slice() {
                [(labels, v)] if labels.is_empty() => one(metric, f.counter, *v)?,
                values => {
                    for (labels, v) in values {
                        one(metric.encode_family(labels)?, f.counter, *v)?;
                    }
                }
            }
        }
        Ok(())
    }
}

fn one(e: MetricEncoder<'_>, counter: bool, v: u64) -> std::result::Result<(), std::fmt::Error> {
    if counter {
        ConstCounter::new(v).encode(e)
    } else {
        ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX)).encode(e)
    }
}

async fn snapshot(handle: &Handle) -> Result<Snapshot> {
    use std::sync::atomic::Ordering::Relaxed;
    let mut s = Snapshot::default();
    let space = handle.space().await?;
    s.gauge("store_blocks", "Blocks stored.", space.total_blocks);
    s.gauge(
        "store_quota_max_bytes",
        "The store's quota.",
        space.quota_max_bytes,
    );
    s.gauge(
        "store_quota_used_bytes",
        "Bytes of the quota in use.",
        space.quota_used_bytes,
    );
    s.gauge(
        "store_quota_reserved_bytes",
        "Bytes of the quota reserved (sales).",
        space.quota_reserved_bytes,
    );
    let c = handle.counters();
    s.counter(
        "downloads",
        "Network downloads started.",
        c.downloads.load(Relaxed),
    );
    s.counter(
        "downloads_failed",
        "Network downloads that failed.",
        c.downloads_failed.load(Relaxed),
    );
    #[cfg(feature = "net")]
    if let Some(net) = &handle.network {
        if let Ok(info) = net.info().await {
            s.gauge("net_peers", "Connected peers.", info.connected.len() as u64);
            s.gauge(
                "net_routing_table_peers",
                "Peers in the Kademlia routing table.",
                info.routing_table.len() as u64,
            );
        }
        let x = &net.exchange().stats;
        s.counter(
            "blocks_served",
            "Blocks sent to peers.",
            x.served.load(Relaxed),
        );
        s.counter(
            "blocks_received",
            "Blocks received from peers and accepted.",
            x.received.load(Relaxed),
        );
        s.counter(
            "blocks_rejected",
            "Blocks received from peers and rejected (bad data or proof).",
            x.rejected.load(Relaxed),
        );
        s.counter(
            "bytes_sent",
            "Bytes of block data sent to peers.",
            x.served_bytes.load(Relaxed),
        );
        s.counter(
            "bytes_received",
            "Bytes of block data received from peers and accepted.",
            x.received_bytes.load(Relaxed),
        );
        s.counter(
            "peers_dropped",
            "Peers dropped for misbehaving or for stalling a write.",
            x.dropped_peers.load(Relaxed) + x.write_timeouts.load(Relaxed),
        );
        s.gauge(
            "exchange_queued_bytes",
            "Bytes of answers queued for peers now.",
            x.queued_bytes.load(Relaxed),
        );
    }
    #[cfg(feature = "market")]
    if let Some(market) = handle.market() {
        let sales = market.sales().sales();
        let mut by_state: std::collections::BTreeMap<String, u64> = Default::default();
        for sale in &sales {
            *by_state.entry(sale.state.as_str().to_string()).or_default() += 1;
        }
        s.labelled(
            "sales",
            "The host's sales by state.",
            false,
            "state",
            by_state,
        );
        s.gauge(
            "slots_held",
            "Slots this host fills and proves.",
            sales
                .iter()
                .filter(|x| x.state == crate::node::sales::SaleState::Proving)
                .count() as u64,
        );
        s.counter(
            "proofs_submitted",
            "Proofs accepted since the node started, fills included.",
            market.sales().proofs_submitted(),
        );
        s.counter(
            "proofs_marked_missing",
            "Missed proofs this node's validator marked.",
            market.validation().marked_total(),
        );
        let purchases = market.purchases();
        let mut by_state: std::collections::BTreeMap<String, u64> = Default::default();
        for p in purchases.ids().iter().filter_map(|id| purchases.get(id)) {
            *by_state.entry(p.state.as_str().to_string()).or_default() += 1;
        }
        s.labelled("purchases", "Purchases by state.", false, "state", by_state);
        if let Some(calls) = market.calls() {
            let by = |m: std::collections::BTreeMap<&'static str, u64>| {
                m.into_iter().map(|(k, v)| (k.to_string(), v))
            };
            s.labelled(
                "chain_calls",
                "Marketplace calls, by method.",
                true,
                "method",
                by(calls.by_method()),
            );
            s.labelled(
                "chain_errors",
                "Marketplace calls that failed, by method.",
                true,
                "method",
                by(calls.errors_by_method()),
            );
        }
        use codex_market::Marketplace as _;
        if let Some(tx) = market.client().transaction_stats() {
            s.labelled(
                "chain_transactions",
                "Transactions of the node's account, by outcome.",
                true,
                "outcome",
                [
                    ("sent", tx.sent),
                    ("resent", tx.resent),
                    ("succeeded", tx.succeeded),
                    ("reverted", tx.reverted),
                    ("nonce_refused", tx.nonce_refused),
                    ("stuck", tx.stuck),
                ]
                .map(|(k, v)| (k.to_string(), v)),
            );
        }
    }
    Ok(s)
}

/// The node's metrics now, in the OpenMetrics text format ([`CONTENT_TYPE`]): ours
/// with the prefix `codex_` (see the module for the list), then libp2p's own
/// (`libp2p_`, from libp2p-metrics) when the node has a network.
///
/// # Errors
/// When the store cannot be read.
pub async fn encode(handle: &Handle) -> Result<String> {
    use prometheus_client::encoding::text::{encode_eof, encode_registry};
    let mut registry = Registry::with_prefix("codex");
    registry.register_collector(Box::new(snapshot(handle).await?));
    let mut out = String::new();
    let failed = |e: std::fmt::Error| Error::Task(format!("encoding the metrics: {e}"));
    encode_registry(&mut out, &registry).map_err(failed)?;
    #[cfg(feature = "net")]
    if let Some(net) = handle.network() {
        net.encode_metrics(&mut out).map_err(failed)?;
    }
    encode_eof(&mut out).map_err(failed)?;
    Ok(out)
}

/// Serves `GET /metrics` on `addr` until `cancel`: the bound address and the server.
///
/// # Errors
/// When `addr` cannot be bound.
pub(crate) async fn serve(
    addr: SocketAddr,
    handle: Handle,
    cancel: CancellationToken,
) -> Result<(SocketAddr, JoinHandle<std::io::Result<()>>)> {
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let router = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let handle = handle.clone();
            async move {
                match encode(&handle).await {
                    Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
                    Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
                }
            }
        }),
    );
    let server = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move { cancel.cancelled().await })
            .await
    });
    tracing::info!(metrics_addr = %bound, "metrics served at /metrics");
    Ok((bound, server))
}
