//! The network's routes (feature `net`): fetching datasets from peers, the peer id,
//! dialing a peer.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;

use serde_json::{Value, json};

use super::{
    ApiError, ApiState, DataQuery, dataset_response, decrypt_if_asked, manifest_json, parse_cid,
};
use crate::error::Error;
use crate::node::network;

/// The routes of the network.
pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/data/{cid}/network", axum::routing::post(network_download))
        .route("/data/{cid}/network/stream", get(network_stream))
        .route("/data/{cid}/network/manifest", get(network_manifest))
        .route("/peerid", get(peer_id))
        .route("/connect/{peer}", get(connect))
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
    st.background.spawn(async move {
        match network::download(&net, &store, cid).await {
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
    Query(query): Query<DataQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let cid = parse_cid(&cid)?;
    let dataset = st.fetch_stream(cid).await?;
    let dataset = decrypt_if_asked(&st, dataset, &headers, &query).await?;
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

/// `/debug/info`'s network part: peer id, dialable addresses, routing table and
/// connected peers.
pub(super) async fn debug_info(st: &ApiState) -> (String, Vec<String>, Vec<Value>, Vec<String>) {
    let info = match &st.network {
        Some(net) => net.info().await.unwrap_or_default(),
        None => codex_net::NetInfo::default(),
    };
    let addrs = info
        .listen_addrs
        .iter()
        .map(|a| format!("{a}/p2p/{}", info.peer_id))
        .collect();
    let nodes = info
        .routing_table
        .iter()
        .map(|p| json!({ "peerId": p.to_string() }))
        .collect();
    let connected = info.connected.iter().map(ToString::to_string).collect();
    (info.peer_id, addrs, nodes, connected)
}
