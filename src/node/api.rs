//! Codex's REST API (reference §7), under `/api/codex/v1`.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use codex_core::{BlockStore, Cid, Manifest, codec};
use futures::TryStreamExt;
use serde_json::{Value, json};

use crate::error::Error;
use crate::node::data::{self, UploadOptions};

/// The API's base path.
pub const BASE: &str = "/api/codex/v1";

/// Shared state of the handlers.
#[derive(Clone, Debug)]
pub(crate) struct ApiState {
    pub(crate) store: Arc<dyn BlockStore>,
    pub(crate) network: Option<codex_net::Network>,
    pub(crate) data_dir: String,
    pub(crate) market: Option<Arc<crate::node::market::Market>>,
}

/// The router of every endpoint the node serves.
pub(crate) fn router(state: ApiState) -> Router {
    let api = Router::new()
        .route(
            "/data",
            get(list).post(upload).layer(DefaultBodyLimit::disable()),
        )
        .route("/data/{cid}", get(download).delete(delete))
        .route("/data/{cid}/exists", get(exists))
        .route("/data/{cid}/erasure", axum::routing::post(erasure))
        .route("/data/{cid}/verifiable", axum::routing::post(verifiable))
        .route("/data/{cid}/network", axum::routing::post(network_download))
        .route("/data/{cid}/network/stream", get(network_stream))
        .route("/data/{cid}/network/manifest", get(network_manifest))
        .route("/space", get(space))
        .route("/peerid", get(peer_id))
        .route("/connect/{peer}", get(connect))
        .route("/debug/info", get(debug_info))
        .route(
            "/storage/request/{cid}",
            axum::routing::post(request_storage),
        )
        .route("/storage/purchases", get(purchases))
        .route(
            "/sales/availability",
            get(availabilities).post(add_availability),
        )
        .route(
            "/sales/availability/{id}",
            axum::routing::patch(patch_availability),
        )
        .route("/sales/availability/{id}/reservations", get(reservations))
        .route("/validation", get(validation))
        .route("/sales/slots", get(sales_slots))
        .route("/sales/slots/{id}", get(sales_slot))
        .route("/storage/purchases/{id}", get(purchase))
        .with_state(state);
    Router::new().nest(BASE, api)
}

/// An error answer: a status and a plain-text message, as Codex answers.
#[derive(Debug)]
pub(crate) struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, self.1).into_response()
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let status = match &e {
            Error::EmptyUpload => StatusCode::UNPROCESSABLE_ENTITY,
            Error::NotAManifest(_) => StatusCode::BAD_REQUEST,
            Error::Source(_) => StatusCode::BAD_REQUEST,
            Error::NoNetwork | Error::NoMarketplace => StatusCode::SERVICE_UNAVAILABLE,
            Error::InvalidRequest(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Error::InvalidKey(_) => StatusCode::BAD_REQUEST,
            Error::Net(codex_net::Error::Unavailable(_)) => StatusCode::NOT_FOUND,
            Error::Net(codex_net::Error::Core(c)) => core_status(c),
            Error::Erasure(codex_erasure::Error::Store(c)) => core_status(c),
            Error::Proofs(codex_proofs::Error::Store(c)) => core_status(c),
            Error::Proofs(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Error::Erasure(
                codex_erasure::Error::InvalidParams { .. }
                | codex_erasure::Error::TooFewBlocks { .. }
                | codex_erasure::Error::WrongManifest(_),
            ) => StatusCode::UNPROCESSABLE_ENTITY,
            Error::Core(c) => core_status(c),
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status.is_server_error() && status != StatusCode::INSUFFICIENT_STORAGE {
            tracing::error!(error = %e, "request failed");
        }
        ApiError(status, e.to_string())
    }
}

fn core_status(e: &codex_core::Error) -> StatusCode {
    use codex_core::Error as C;
    match e {
        C::InvalidCid(_) => StatusCode::BAD_REQUEST,
        C::NotFound(_) => StatusCode::NOT_FOUND,
        C::QuotaExceeded { .. } => StatusCode::INSUFFICIENT_STORAGE,
        C::Decode { .. } | C::InvalidManifest(_) => StatusCode::UNPROCESSABLE_ENTITY,
        C::Backend(_) | C::Io(_) if disk_full(e) => StatusCode::INSUFFICIENT_STORAGE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Whether an error comes from a full disk (or a file that may not grow further).
fn disk_full(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::FileTooLarge
            )
        {
            return true;
        }
        next = e.source();
    }
    false
}

impl From<codex_core::Error> for ApiError {
    fn from(e: codex_core::Error) -> Self {
        Error::Core(e).into()
    }
}

fn parse_cid(text: &str) -> Result<Cid, ApiError> {
    text.parse::<Cid>()
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("Incorrect Cid: {e}")))
}

/// `filename` from `Content-Disposition: attachment; filename="x"` (or `filename=x`).
fn disposition_filename(value: &str) -> Option<String> {
    value.split(';').map(str::trim).find_map(|part| {
        let (key, val) = part.split_once('=')?;
        if !key.trim().eq_ignore_ascii_case("filename") {
            return None;
        }
        let name = val.trim().trim_matches('"');
        (!name.is_empty()).then(|| name.to_string())
    })
}

/// A MIME type is `type/subtype` with token characters, optionally with parameters.
fn valid_mime(value: &str) -> bool {
    let essence = value.split(';').next().unwrap_or("").trim();
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    matches!(essence.split_once('/'), Some((t, s)) if token(t) && token(s))
}

fn market(st: &ApiState) -> Result<&Arc<crate::node::market::Market>, ApiError> {
    st.market
        .as_ref()
        .ok_or_else(|| Error::NoMarketplace.into())
}

/// `POST /storage/request/{cid}`: checks the body (422 with the rule broken, 404 for a
/// dataset not stored here) and starts the purchase in the background; answers the
/// purchase id.
async fn request_storage(
    State(st): State<ApiState>,
    Path(cid): Path<String>,
    body: bytes::Bytes,
) -> Result<String, ApiError> {
    let market = market(&st)?;
    let cid = parse_cid(&cid)?;
    let json: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("Invalid JSON body: {e}")))?;
    let params = crate::node::purchasing::RequestParams::from_json(&json)?;
    let ctx = crate::node::purchasing::Ctx {
        store: Arc::clone(&st.store),
        network: st.network.clone(),
        market: Arc::clone(market),
    };
    Ok(crate::node::purchasing::request_storage(ctx, cid, params).await?)
}

async fn purchases(State(st): State<ApiState>) -> Result<axum::Json<Value>, ApiError> {
    Ok(axum::Json(json!(market(&st)?.purchases().ids())))
}

async fn purchase(
    State(st): State<ApiState>,
    Path(id): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    let p = market(&st)?
        .purchases()
        .get(&id)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, "Purchase not found".into()))?;
    Ok(axum::Json(p.to_json()))
}

async fn availabilities(State(st): State<ApiState>) -> Result<axum::Json<Value>, ApiError> {
    let all = market(&st)?.sales().availabilities();
    Ok(axum::Json(Value::Array(
        all.iter()
            .map(crate::node::sales::Availability::to_json)
            .collect(),
    )))
}

/// `POST /sales/availability`: 422 when a field is zero or the quota is short; 201 with
/// the availability.
async fn add_availability(
    State(st): State<ApiState>,
    body: bytes::Bytes,
) -> Result<(StatusCode, axum::Json<Value>), ApiError> {
    let market = market(&st)?;
    let json: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("Invalid JSON body: {e}")))?;
    let n = market.sales().availabilities().len() as u64;
    let id = format!(
        "{}",
        codex_market::alloy::primitives::keccak256(
            [
                market.client().account().as_slice(),
                &n.to_le_bytes(),
                &body
            ]
            .concat()
        )
    );
    let a = crate::node::sales::Availability::from_json(id, &json)?;
    let space = st.store.space().await?;
    let free = space
        .quota_max_bytes
        .saturating_sub(space.quota_used_bytes + space.quota_reserved_bytes);
    if a.total_size > free {
        return Err(ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "Not enough storage quota: totalSize {} > {free} bytes free",
                a.total_size
            ),
        ));
    }
    let out = a.to_json();
    market.sales().add_availability(a).await;
    Ok((StatusCode::CREATED, axum::Json(out)))
}

/// `PATCH /sales/availability/{id}`: 204; 404 for an unknown id, 422 for a refused
/// change (nothing changes then).
async fn patch_availability(
    State(st): State<ApiState>,
    Path(id): Path<String>,
    body: bytes::Bytes,
) -> Result<StatusCode, ApiError> {
    let market = market(&st)?;
    let json: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("Invalid JSON body: {e}")))?;
    match market.sales().patch_availability(&id, &json).await? {
        Some(_) => Ok(StatusCode::NO_CONTENT),
        None => Err(ApiError(
            StatusCode::NOT_FOUND,
            "Availability not found".into(),
        )),
    }
}

/// `GET /sales/availability/{id}/reservations`: the slots holding its space.
async fn reservations(
    State(st): State<ApiState>,
    Path(id): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    let sales = market(&st)?.sales();
    if !sales.availabilities().iter().any(|a| a.id == id) {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            "Availability not found".into(),
        ));
    }
    Ok(axum::Json(Value::Array(
        sales
            .reservations(&id)
            .iter()
            .map(|s| {
                serde_json::json!({
                    "id": s.slot.to_string(),
                    "availabilityId": s.availability,
                    "requestId": s.request.to_string(),
                    "slotIndex": s.slot_index,
                    "state": s.state.as_str(),
                })
            })
            .collect(),
    )))
}

/// `GET /validation` (ours): the slots the validator watches and the proofs it marked
/// missing.
async fn validation(State(st): State<ApiState>) -> Result<axum::Json<Value>, ApiError> {
    Ok(axum::Json(market(&st)?.validation().to_json()))
}

async fn sales_slots(State(st): State<ApiState>) -> Result<axum::Json<Value>, ApiError> {
    let all = market(&st)?.sales().sales();
    Ok(axum::Json(Value::Array(
        all.iter().map(crate::node::sales::Sale::to_json).collect(),
    )))
}

async fn sales_slot(
    State(st): State<ApiState>,
    Path(id): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    let slot = id
        .parse::<codex_market::alloy::primitives::B256>()
        .map_err(|_| ApiError(StatusCode::BAD_REQUEST, "Invalid slot id".into()))?;
    let sale = market(&st)?
        .sales()
        .sale(codex_market::SlotId(slot))
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, "Slot not found".into()))?;
    Ok(axum::Json(sale.to_json()))
}

async fn upload(
    State(st): State<ApiState>,
    headers: HeaderMap,
    body: Body,
) -> Result<String, ApiError> {
    let mimetype = match headers.get(header::CONTENT_TYPE) {
        None => None,
        Some(v) => {
            let text = v.to_str().unwrap_or("");
            if !valid_mime(text) {
                return Err(ApiError(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!("The MIME type '{text}' is not valid."),
                ));
            }
            Some(text.to_string())
        }
    };
    let filename = headers
        .get(header::CONTENT_DISPOSITION)
        .and_then(|v| v.to_str().ok())
        .and_then(disposition_filename);
    let options = UploadOptions {
        filename,
        mimetype,
        block_size: None,
    };
    let cid = data::store_stream(Arc::clone(&st.store), body.into_data_stream(), options).await?;
    tracing::info!(%cid, "stored an upload");
    announce(&st, cid);
    Ok(cid.to_string())
}

fn manifest_json(m: &Manifest) -> Value {
    json!({
        "treeCid": m.tree_cid.to_string(),
        "datasetSize": m.dataset_size,
        "blockSize": m.block_size,
        "protected": m.is_protected(),
        "filename": m.filename,
        "mimetype": m.mimetype,
    })
}

/// Body of `POST /data/{cid}/erasure` (ours; Codex only erasure-codes inside storage requests).
#[derive(Debug, serde::Deserialize)]
struct ErasureParams {
    /// Data rows.
    k: usize,
    /// Parity rows.
    m: usize,
}

async fn erasure(
    State(st): State<ApiState>,
    Path(cid): Path<String>,
    axum::Json(p): axum::Json<ErasureParams>,
) -> Result<String, ApiError> {
    let cid = parse_cid(&cid)?;
    let (protected, _) = data::erasure_encode(&*st.store, cid, p.k, p.m).await?;
    announce(&st, protected);
    tracing::info!(%cid, %protected, k = p.k, m = p.m, "erasure-coded a dataset");
    Ok(protected.to_string())
}

/// `POST /data/{cid}/verifiable` (ours): makes a dataset verifiable; a plain one is
/// erasure-coded first with the body's `{"k", "m"}` (default 2, 1).
async fn verifiable(
    State(st): State<ApiState>,
    Path(cid): Path<String>,
    body: Option<axum::Json<ErasureParams>>,
) -> Result<axum::Json<Value>, ApiError> {
    let cid = parse_cid(&cid)?;
    let ec = body.map(|axum::Json(p)| (p.k, p.m));
    let (verifiable, _, verify_root) = data::make_verifiable(&*st.store, cid, ec).await?;
    announce(&st, verifiable);
    Ok(axum::Json(
        json!({ "cid": verifiable.to_string(), "verifyRoot": verify_root.to_string() }),
    ))
}

async fn list(State(st): State<ApiState>) -> Result<axum::Json<Value>, ApiError> {
    let content: Vec<Value> = st
        .store
        .manifests()
        .await?
        .iter()
        .map(|(cid, m)| json!({ "cid": cid.to_string(), "manifest": manifest_json(m) }))
        .collect();
    Ok(axum::Json(json!({ "content": content })))
}

/// Announces a stored dataset in the background.
fn announce(st: &ApiState, cid: Cid) {
    if let Some(net) = st.network.clone() {
        let store = Arc::clone(&st.store);
        tokio::spawn(async move {
            if let Ok(block) = store.get_block(&cid).await
                && let Ok(m) = Manifest::decode(block.data())
            {
                crate::node::network::announce(&net, cid, &m).await;
            }
        });
    }
}

fn network(st: &ApiState) -> Result<&codex_net::Network, ApiError> {
    st.network.as_ref().ok_or_else(|| Error::NoNetwork.into())
}

async fn network_download(
    State(st): State<ApiState>,
    Path(cid): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    let cid = parse_cid(&cid)?;
    let net = network(&st)?.clone();
    let manifest = codex_net::fetch_manifest(&net, &st.store, cid)
        .await
        .map_err(Error::Net)?;
    let store = Arc::clone(&st.store);
    tokio::spawn(async move {
        match crate::node::network::download(&net, &store, cid).await {
            Ok(_) => tracing::info!(%cid, "download complete"),
            Err(e) => tracing::warn!(%cid, error = %e, "download failed"),
        }
    });
    Ok(axum::Json(
        json!({ "cid": cid.to_string(), "manifest": manifest_json(&manifest) }),
    ))
}

async fn network_manifest(
    State(st): State<ApiState>,
    Path(cid): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    let cid = parse_cid(&cid)?;
    let manifest = codex_net::fetch_manifest(network(&st)?, &st.store, cid)
        .await
        .map_err(Error::Net)?;
    Ok(axum::Json(
        json!({ "cid": cid.to_string(), "manifest": manifest_json(&manifest) }),
    ))
}

async fn network_stream(
    State(st): State<ApiState>,
    Path(cid): Path<String>,
) -> Result<Response, ApiError> {
    let cid = parse_cid(&cid)?;
    let dataset = crate::node::network::stream(network(&st)?, Arc::clone(&st.store), cid).await?;
    Ok(dataset_response(dataset))
}

async fn peer_id(State(st): State<ApiState>) -> Result<String, ApiError> {
    Ok(network(&st)?.peer_id().to_string())
}

#[derive(Debug, serde::Deserialize)]
struct ConnectQuery {
    addrs: Option<String>,
}

async fn connect(
    State(st): State<ApiState>,
    Path(peer): Path<String>,
    axum::extract::Query(q): axum::extract::Query<ConnectQuery>,
) -> Result<String, ApiError> {
    let peer: codex_net::PeerId = peer
        .parse()
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("Invalid peer id: {e}")))?;
    let mut addrs = Vec::new();
    for a in q
        .addrs
        .iter()
        .flat_map(|s| s.split(','))
        .filter(|s| !s.is_empty())
    {
        addrs.push(
            a.parse().map_err(|e| {
                ApiError(StatusCode::BAD_REQUEST, format!("Invalid address {a}: {e}"))
            })?,
        );
    }
    network(&st)?
        .dial(peer, addrs)
        .await
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.to_string()))?;
    Ok("Successfully connected to peer".into())
}

async fn download(
    State(st): State<ApiState>,
    Path(cid): Path<String>,
) -> Result<Response, ApiError> {
    let cid = parse_cid(&cid)?;
    let dataset = data::open(st.store, cid).await?;
    Ok(dataset_response(dataset))
}

fn dataset_response(dataset: data::Dataset) -> Response {
    let mut headers = HeaderMap::new();
    let mime = dataset
        .manifest
        .as_ref()
        .and_then(|m| m.mimetype.clone())
        .unwrap_or_else(|| "application/octet-stream".into());
    if let Ok(v) = HeaderValue::from_str(&mime) {
        headers.insert(header::CONTENT_TYPE, v);
    }
    if let Some(name) = dataset.manifest.as_ref().and_then(|m| m.filename.as_ref()) {
        let escaped = name.replace('\\', "\\\\").replace('"', "\\\"");
        if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{escaped}\"")) {
            headers.insert(header::CONTENT_DISPOSITION, v);
        }
    }
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(dataset.size));
    let body = Body::from_stream(dataset.stream.inspect_err(|e| {
        tracing::error!(error = %e, "dataset stream failed mid-download");
    }));
    (headers, body).into_response()
}

async fn delete(
    State(st): State<ApiState>,
    Path(cid): Path<String>,
) -> Result<StatusCode, ApiError> {
    let cid = parse_cid(&cid)?;
    if cid.codec() == codec::MANIFEST && st.store.has_block(&cid).await? {
        if let Some(net) = &st.network
            && let Ok(m) = Manifest::decode(st.store.get_block(&cid).await?.data())
        {
            crate::node::network::withdraw(net, cid, &m).await;
        }
        st.store.delete_dataset(&cid).await?;
    } else {
        st.store.delete_block(&cid).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn exists(
    State(st): State<ApiState>,
    Path(cid): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    let cid = parse_cid(&cid)?;
    let has = st.store.has_block(&cid).await?;
    Ok(axum::Json(json!({ cid.to_string(): has })))
}

async fn space(State(st): State<ApiState>) -> Result<axum::Json<Value>, ApiError> {
    let s = st.store.space().await?;
    Ok(axum::Json(json!({
        "totalBlocks": s.total_blocks,
        "quotaMaxBytes": s.quota_max_bytes,
        "quotaUsedBytes": s.quota_used_bytes,
        "quotaReservedBytes": s.quota_reserved_bytes,
    })))
}

async fn debug_info(State(st): State<ApiState>) -> axum::Json<Value> {
    let info = match &st.network {
        Some(net) => net.info().await.unwrap_or_default(),
        None => codex_net::NetInfo::default(),
    };
    let addrs: Vec<String> = info
        .listen_addrs
        .iter()
        .map(|a| format!("{a}/p2p/{}", info.peer_id))
        .collect();
    axum::Json(json!({
        "id": info.peer_id,
        "addrs": addrs,
        "repo": st.data_dir,
        "announceAddresses": addrs,
        "table": {
            "localNode": { "peerId": info.peer_id },
            "nodes": info.routing_table.iter().map(|p| json!({ "peerId": p.to_string() })).collect::<Vec<_>>(),
        },
        "connectedPeers": info.connected.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "codex": { "version": env!("CARGO_PKG_VERSION"), "revision": "", "contracts": {} },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filenames_and_mime_types() {
        assert_eq!(
            disposition_filename("attachment; filename=\"a b.txt\""),
            Some("a b.txt".into())
        );
        assert_eq!(disposition_filename("filename=x.bin"), Some("x.bin".into()));
        assert_eq!(disposition_filename("attachment"), None);
        assert!(valid_mime("text/plain"));
        assert!(valid_mime("application/octet-stream; charset=utf-8"));
        assert!(!valid_mime("nonsense"));
        assert!(!valid_mime("a/"));
        assert!(!valid_mime("te xt/plain"));
    }
}
