//! The network's routes (feature `net`): fetching datasets from peers, the peer id and
//! signed peer record, dialing a peer.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
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
        .route("/spr", get(spr))
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

/// Whether the request's `Accept` prefers `application/json` to `text/plain`: a
/// media range's quality (`;q=`) counts, the most specific range naming a type wins,
/// and a tie (no `Accept`, `*/*`) goes to text, as Codex answers by default.
fn wants_json(headers: &HeaderMap) -> bool {
    // The quality each of the two types gets: (specificity of the range, q).
    let mut text: Option<(u8, f32)> = None;
    let mut json: Option<(u8, f32)> = None;
    for value in headers.get_all(header::ACCEPT) {
        let Ok(value) = value.to_str() else { continue };
        for range in value.split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            let matches = |ty: &str, sub: &str| -> Option<u8> {
                match media.split_once('/') {
                    Some(("*", "*")) => Some(0),
                    Some((t, "*")) if t == ty => Some(1),
                    Some((t, s)) if t == ty && s == sub => Some(2),
                    _ => None,
                }
            };
            let take = |slot: &mut Option<(u8, f32)>, found: Option<u8>| {
                if let Some(spec) = found
                    && slot.is_none_or(|(s, _)| spec > s)
                {
                    *slot = Some((spec, q));
                }
            };
            take(&mut text, matches("text", "plain"));
            take(&mut json, matches("application", "json"));
        }
    }
    let q = |slot: Option<(u8, f32)>| slot.map_or(0.0, |(_, q)| q);
    q(json) > q(text)
}

/// `text/plain` of `text`, or `{key: text}` as JSON when the request asks for JSON.
fn text_or_json(headers: &HeaderMap, key: &str, text: String) -> Response {
    if wants_json(headers) {
        axum::Json(json!({ key: text })).into_response()
    } else {
        ([(header::CONTENT_TYPE, "text/plain")], text).into_response()
    }
}

async fn peer_id(State(st): State<ApiState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let id = network(&st)?.peer_id().to_string();
    Ok(text_or_json(&headers, "id", id))
}

/// The node's signed peer record, `spr:...`: 503 while it has no address to give.
async fn spr(State(st): State<ApiState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let not_ready = || {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "Node SPR not ready, try again later".into(),
        )
    };
    let spr = network(&st)?.spr().await.map_err(|e| {
        tracing::debug!(error = %e, "no signed peer record");
        not_ready()
    })?;
    if spr.addresses().is_empty() {
        return Err(not_ready());
    }
    Ok(text_or_json(&headers, "spr", spr.to_string()))
}

/// `GET /connect/{peerId}?addrs=A&addrs=B`: dials the peer at the addresses given
/// (the parameter repeated, as Codex's file has it; a comma-separated list is read too),
/// or at those discovery finds.
async fn connect(
    State(st): State<ApiState>,
    Path(peer): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> Result<String, ApiError> {
    let peer: codex_net::PeerId = peer
        .parse()
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("Invalid peer id: {e}")))?;
    let mut addrs = Vec::new();
    for a in query
        .iter()
        .filter(|(k, _)| k == "addrs")
        .flat_map(|(_, v)| v.split(','))
        .map(str::trim)
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

/// `/debug/info`'s network part: peer id, dialable addresses, the routing table as
/// Codex's `PeersTable` (each node's `nodeId` is its Kademlia key, sha256 of the peer
/// id, in hex; `record` and `address` are empty for a peer whose record this node does
/// not hold; `seen` is whether it is connected now), connected peers and the signed
/// peer record (empty when there is none, as Codex gives it).
pub(super) async fn debug_info(st: &ApiState) -> super::DebugNet {
    let (info, spr) = match &st.network {
        Some(net) => {
            let spr = match net.spr().await {
                Ok(spr) if !spr.addresses().is_empty() => spr.to_string(),
                _ => String::new(),
            };
            (net.info().await.unwrap_or_default(), spr)
        }
        None => (codex_net::NetInfo::default(), String::new()),
    };
    let addrs: Vec<String> = info
        .listen_addrs
        .iter()
        .map(|a| format!("{a}/p2p/{}", info.peer_id))
        .collect();
    let node_id = |peer: &[u8]| hex::encode(codex_core::cid::sha256(peer));
    // A peer's address: that of a direct connection to it, else of any.
    let address_of = |p: &codex_net::PeerId| {
        let mut conns = info.connections.iter().filter(|c| c.peer == *p);
        conns
            .clone()
            .find(|c| !c.relayed)
            .or_else(|| conns.next())
            .map(|c| c.address.to_string())
            .unwrap_or_default()
    };
    let nodes: Vec<Value> = info
        .routing_table
        .iter()
        .map(|p| {
            json!({
                "nodeId": node_id(&p.to_bytes()),
                "peerId": p.to_string(),
                "record": "",
                "address": address_of(p),
                "seen": info.connected.contains(p),
            })
        })
        .collect();
    let local = json!({
        "nodeId": info.peer_id.parse::<codex_net::PeerId>().map(|p| node_id(&p.to_bytes())).unwrap_or_default(),
        "peerId": info.peer_id,
        "record": spr,
        "address": info.listen_addrs.first().map(ToString::to_string).unwrap_or_default(),
        "seen": true,
    });
    let table = json!({ "localNode": local, "nodes": nodes });
    let connected = info.connected.iter().map(ToString::to_string).collect();
    let hp = &info.hole_punches;
    let nat = json!({
        "reachability": info.reachability.to_string(),
        "externalAddrs": info.external_addrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "connections": info.connections.iter().map(|c| json!({
            "peerId": c.peer.to_string(),
            "address": c.address.to_string(),
            "relayed": c.relayed,
            "outbound": c.outbound,
        })).collect::<Vec<_>>(),
        "reservations": info.reservations.iter().map(|r| json!({
            "relay": r.relay.to_string(),
            "address": r.address.to_string(),
            "accepted": r.accepted,
        })).collect::<Vec<_>>(),
        "holePunches": {
            "succeeded": hp.succeeded,
            "failed": hp.failed,
            "lastUpgradeMs": hp.last_upgrade.map(|d| d.as_millis() as u64),
        },
        "relayServer": info.relay_server.map(|r| json!({
            "reservations": r.reservations,
            "circuits": r.circuits,
            "circuitsAccepted": r.circuits_accepted,
        })),
    });
    // Codex announces the addresses others should dial: the external ones when the
    // node knows any, else where it listens.
    let announce = if info.external_addrs.is_empty() {
        addrs.clone()
    } else {
        info.external_addrs
            .iter()
            .map(ToString::to_string)
            .collect()
    };
    super::DebugNet {
        peer_id: info.peer_id,
        addrs,
        announce,
        table,
        connected,
        spr,
        nat,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(v) = value {
            headers.insert(header::ACCEPT, v.parse().expect("a header value"));
        }
        headers
    }

    #[test]
    fn json_is_answered_when_asked_for() {
        for (value, json) in [
            (None, false),
            (Some("*/*"), false),
            (Some("text/plain"), false),
            (Some("application/json"), true),
            (Some("application/*"), true),
            (Some("application/json, text/plain"), false),
            (Some("text/plain;q=0.5, application/json"), true),
            (Some("application/json;q=0.2, */*;q=0.8"), false),
            (Some("application/json;q=0.9, text/*;q=0.1"), true),
            (Some("application/json;q=0"), false),
            (Some("text/html"), false),
        ] {
            assert_eq!(wants_json(&accept(value)), json, "{value:?}");
        }
    }
}
