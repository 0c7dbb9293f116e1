//! The marketplace's routes (feature `market`): storage requests and purchases, the
//! host's availabilities, reservations and slots, the validator's state.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::{Value, json};

use super::{ApiError, ApiState, parse_cid};
use crate::error::Error;
use crate::node::market::Market;
use crate::node::{purchasing, sales};

/// The routes of the marketplace.
pub(super) fn routes() -> Router<ApiState> {
    Router::new()
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
}

fn market(st: &ApiState) -> Result<&Arc<Market>, ApiError> {
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
    let params = purchasing::RequestParams::from_json(&json)?;
    let ctx = purchasing::Ctx {
        store: Arc::clone(&st.store),
        network: st.network.clone(),
        market: Arc::clone(market),
    };
    Ok(purchasing::request_storage(ctx, cid, params).await?)
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
        all.iter().map(sales::Availability::to_json).collect(),
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
    let a = sales::Availability::from_json(id, &json)?;
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
        all.iter().map(sales::Sale::to_json).collect(),
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
