//! The marketplace's routes (feature `market`): storage requests and purchases, the
//! host's availabilities, reservations and slots, the validator's state.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use codex_market::alloy::primitives::U256;
use serde_json::{Value, json};

use super::{ApiError, ApiState, parse_cid};
use crate::error::{Error, Result};
use crate::node::market::Market;
use crate::node::sales::{Availability, AvailabilityUpdate};
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
/// dataset not stored here), starts the purchase, and answers its id once the request
/// is built (the dataset erasure coded and its slots' trees made, as Codex answers),
/// so that `GET /storage/purchases/{id}` has `requestId` and `request` from the first
/// call; sending it to the chain goes on in the background. A purchase that fails
/// while building answers 422 with the reason.
async fn request_storage(
    State(st): State<ApiState>,
    Path(cid): Path<String>,
    body: bytes::Bytes,
) -> Result<String, ApiError> {
    market(&st)?;
    let cid = parse_cid(&cid)?;
    let json: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("Invalid JSON body: {e}")))?;
    let params = purchasing::RequestParams::from_json(&json)?;
    let id = st.request_storage(cid, params).await?;
    let purchases = market(&st)?.purchases();
    match purchases.built(&id).await {
        Some(p) if p.request.is_none() && p.state == purchasing::PurchaseState::Errored => {
            Err(ApiError(
                StatusCode::UNPROCESSABLE_ENTITY,
                p.error.unwrap_or_else(|| "the purchase failed".into()),
            ))
        }
        _ => Ok(id),
    }
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
    let out = a.to_json();
    st.offer(a).await?;
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
    let update = sales::Availability::update_from_json(&json)?;
    match market.sales().update_availability(&id, &update).await? {
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
            .map(sales::Sale::reservation_json)
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

// ---------------------------------------------------------------- availability JSON

fn number(body: &Value, key: &str) -> Result<Option<U256>> {
    let v = match body.get(key) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n.as_u64().map(U256::from),
        Some(Value::String(s)) => s.trim().parse::<U256>().ok(),
        _ => None,
    };
    v.map(Some)
        .ok_or_else(|| Error::InvalidRequest(format!("{key}: not a non-negative integer")))
}

fn positive(body: &Value, key: &str) -> Result<Option<U256>> {
    match number(body, key)? {
        Some(v) if v.is_zero() => Err(Error::InvalidRequest(format!(
            "{key} must be greater than zero"
        ))),
        v => Ok(v),
    }
}

/// `until`: a timestamp, 0 for no limit; negative refused as Codex does.
fn until(body: &Value) -> Result<Option<u64>> {
    match body.get("until") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) if n.as_i64().is_some_and(|v| v < 0) => {
            Err(Error::InvalidRequest("until: cannot be negative".into()))
        }
        Some(_) => number(body, "until")?
            .map(|v| small("until", v))
            .transpose(),
    }
}

fn small(key: &str, v: U256) -> Result<u64> {
    u64::try_from(v).map_err(|_| Error::InvalidRequest(format!("{key}: too large")))
}

/// Codex's JSON of availabilities (`/sales/availability`), translated to and from
/// [`Availability`] and [`AvailabilityUpdate`].
impl Availability {
    /// Reads `POST /sales/availability`'s body: `totalSize, duration,
    /// minPricePerBytePerSecond, totalCollateral` (numbers or strings), `enabled?`.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] for a missing, malformed or zero field.
    pub fn from_json(id: String, body: &Value) -> Result<Self> {
        let need = |key: &str| -> Result<U256> {
            positive(body, key)?.ok_or_else(|| Error::InvalidRequest(format!("{key}: missing")))
        };
        let total_size = small("totalSize", need("totalSize")?)?;
        let duration = small("duration", need("duration")?)?;
        let mut a = Availability::new(
            id,
            total_size,
            duration,
            need("minPricePerBytePerSecond")?,
            need("totalCollateral")?,
        )?;
        a.enabled = body.get("enabled").and_then(Value::as_bool).unwrap_or(true);
        a.until = until(body)?.unwrap_or(0);
        Ok(a)
    }

    /// Reads `PATCH /sales/availability/{id}`'s body: any of the fields of
    /// [`Availability::from_json`].
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] for a body that is not an object, or a malformed or
    /// zero field.
    pub fn update_from_json(body: &Value) -> Result<AvailabilityUpdate> {
        if !body.is_object() {
            return Err(Error::InvalidRequest(
                "the body must be a JSON object".into(),
            ));
        }
        Ok(AvailabilityUpdate {
            total_size: positive(body, "totalSize")?
                .map(|v| small("totalSize", v))
                .transpose()?,
            duration: positive(body, "duration")?
                .map(|v| small("duration", v))
                .transpose()?,
            min_price_per_byte_per_second: positive(body, "minPricePerBytePerSecond")?,
            total_collateral: positive(body, "totalCollateral")?,
            enabled: match body.get("enabled") {
                None | Some(Value::Null) => None,
                Some(Value::Bool(b)) => Some(*b),
                Some(_) => return Err(Error::InvalidRequest("enabled: not a boolean".into())),
            },
            until: until(body)?,
        })
    }

    /// Applies `PATCH /sales/availability/{id}`'s body ([`Availability::update_from_json`]
    /// and [`Availability::apply`]).
    ///
    /// # Errors
    /// As those two; a refused change changes nothing.
    pub fn patch(&mut self, body: &Value) -> Result<()> {
        self.apply(&Availability::update_from_json(body)?)
    }

    /// Codex's JSON of an availability (`SalesAvailabilityREAD`): sizes, duration and
    /// `until` as integers, amounts of tokens as decimal strings.
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "totalSize": self.total_size,
            "freeSize": self.free_size,
            "duration": self.duration,
            "minPricePerBytePerSecond": self.min_price_per_byte_per_second.to_string(),
            "totalCollateral": self.total_collateral.to_string(),
            "totalRemainingCollateral": self.total_remaining_collateral.to_string(),
            "enabled": self.enabled,
            "until": self.until,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn availability_bodies_are_read_like_codex() -> Result<()> {
        let mut a = Availability::from_json(
            "a1".into(),
            &json!({"totalSize": 1000, "duration": "3600",
                    "minPricePerBytePerSecond": 1, "totalCollateral": "500"}),
        )?;
        assert!(a.enabled);
        a.free_size = 600; // 400 bytes held by slots
        a.total_remaining_collateral = U256::from(300u64);
        a.patch(&json!({"totalSize": "2000", "enabled": false}))?;
        assert_eq!((a.total_size, a.free_size, a.enabled), (2000, 1600, false));
        assert!(matches!(
            a.patch(&json!({"totalSize": 399})),
            Err(Error::InvalidRequest(m)) if m.contains("400")
        ));
        assert!(a.patch(&json!({"duration": 0})).is_err());
        assert!(a.patch(&json!({"enabled": "yes"})).is_err());
        assert!(a.patch(&json!([1])).is_err());
        a.patch(&json!({"totalCollateral": 250}))?;
        assert_eq!(a.total_remaining_collateral, U256::from(50u64));
        assert_eq!(a.total_size, 2000, "a refused patch changes nothing");
        assert!(Availability::from_json("x".into(), &json!({"totalSize": 1})).is_err());
        a.patch(&json!({"until": 1_700_000_000}))?;
        assert_eq!(a.until, 1_700_000_000);
        assert!(a.patch(&json!({"until": -1})).is_err(), "negative until");
        let json = a.to_json();
        assert_eq!(
            (json["totalSize"].as_u64(), json["until"].as_u64()),
            (Some(2000), Some(1_700_000_000))
        );
        Ok(())
    }
}
