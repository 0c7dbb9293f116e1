//! A JSON-RPC proxy in front of anvil that behaves like a hosted endpoint: it refuses
//! `eth_getLogs` over more than a set number of blocks (JSON-RPC -32005, "block range
//! too large") and answers every Nth request with HTTP 429; it can also fail every Nth
//! `eth_getTransactionReceipt` with HTTP 502, as a gateway whose node went away does.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Result;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

#[derive(Default)]
pub struct Counts {
    pub calls: AtomicU64,
    pub refused: AtomicU64,
    pub limited: AtomicU64,
    pub failed_receipts: AtomicU64,
}

struct Shared {
    upstream: String,
    http: reqwest::Client,
    max_range: u64,
    limit_every: u64,
    fail_receipts_every: u64,
    receipts: AtomicU64,
    counts: Arc<Counts>,
}

pub struct Proxy {
    pub url: String,
    pub counts: Arc<Counts>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    /// A proxy to `upstream` on 127.0.0.1 and a free port. `limit_every` 0: no 429s.
    #[allow(dead_code)] // the root crate's tests use `start_with`
    pub async fn start(upstream: &str, max_range: u64, limit_every: u64) -> Result<Proxy> {
        Self::start_with(upstream, max_range, limit_every, 0).await
    }

    /// As [`Proxy::start`], and every `fail_receipts_every`th receipt read (0: none)
    /// answered with HTTP 502.
    pub async fn start_with(
        upstream: &str,
        max_range: u64,
        limit_every: u64,
        fail_receipts_every: u64,
    ) -> Result<Proxy> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let counts = Arc::new(Counts::default());
        let shared = Arc::new(Shared {
            upstream: upstream.to_string(),
            http: reqwest::Client::new(),
            max_range,
            limit_every,
            fail_receipts_every,
            receipts: AtomicU64::new(0),
            counts: Arc::clone(&counts),
        });
        let app = axum::Router::new()
            .route("/", axum::routing::post(handle))
            .with_state(shared);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Proxy { url, counts, task })
    }
}

fn block(v: &serde_json::Value) -> Option<u64> {
    u64::from_str_radix(v.as_str()?.trim_start_matches("0x"), 16).ok()
}

async fn handle(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    let n = s.counts.calls.fetch_add(1, Ordering::Relaxed) + 1;
    if s.limit_every > 0 && n % s.limit_every == 0 {
        s.counts.limited.fetch_add(1, Ordering::Relaxed);
        return (StatusCode::TOO_MANY_REQUESTS, "Too Many Requests").into_response();
    }
    let req = serde_json::from_slice::<serde_json::Value>(&body).unwrap_or_default();
    if s.fail_receipts_every > 0
        && req["method"] == "eth_getTransactionReceipt"
        && (s.receipts.fetch_add(1, Ordering::Relaxed) + 1) % s.fail_receipts_every == 0
    {
        s.counts.failed_receipts.fetch_add(1, Ordering::Relaxed);
        return (StatusCode::BAD_GATEWAY, "Bad Gateway").into_response();
    }
    if req["method"] == "eth_getLogs" {
        let filter = &req["params"][0];
        let wide = match (block(&filter["fromBlock"]), block(&filter["toBlock"])) {
            (Some(from), Some(to)) => to.saturating_sub(from) + 1 > s.max_range,
            _ => true,
        };
        if wide {
            s.counts.refused.fetch_add(1, Ordering::Relaxed);
            let answer = serde_json::json!({
                "jsonrpc": "2.0",
                "id": req["id"],
                "error": {"code": -32005, "message": format!("block range too large (max {})", s.max_range)},
            });
            return axum::Json(answer).into_response();
        }
    }
    match s
        .http
        .post(&s.upstream)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
    {
        Ok(r) => {
            let status =
                StatusCode::from_u16(r.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            let bytes = r.bytes().await.unwrap_or_default();
            (status, [("content-type", "application/json")], bytes).into_response()
        }
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}
