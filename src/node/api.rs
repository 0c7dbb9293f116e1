//! Codex's REST API (reference §7), under `/api/codex/v1`.

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use codex_core::prelude::*;
use codex_core::{Cid, Manifest};
use futures::TryStreamExt;
use serde_json::{Value, json};

use crate::error::Error;
use crate::node::data::{self, UploadOptions};

#[cfg(feature = "market")]
mod market;
#[cfg(feature = "net")]
mod net;

/// The API's base path.
pub const BASE: &str = "/api/codex/v1";

/// Request header carrying a dataset's key, 64 hex digits (ours: encryption).
pub const KEY_HEADER: &str = "x-codex-key";
/// Request header carrying the passphrase a dataset is encrypted with (ours).
pub const PASSPHRASE_HEADER: &str = "x-codex-passphrase";
/// The header a download gives the type stored at upload in (its `Content-Type` is
/// `application/octet-stream`, as Codex's OpenAPI file has it).
pub const MIMETYPE_HEADER: header::HeaderName = header::HeaderName::from_static("x-codex-mimetype");

/// Shared state of the handlers: the node's typed API, which they translate to.
pub(crate) type ApiState = crate::node::Handle;

/// The router of every endpoint the node serves. The routes of a feature the crate is
/// built without answer 503, as Codex's do on a node without that part.
pub(crate) fn router(state: ApiState) -> Router {
    let api = Router::new()
        .route(
            "/data",
            get(list).post(upload).layer(DefaultBodyLimit::disable()),
        )
        .route("/data/{cid}", get(download).delete(delete))
        .route("/data/{cid}/exists", get(exists))
        .route("/data/{cid}/erasure", axum::routing::post(erasure))
        .route("/space", get(space))
        .route("/debug/info", get(debug_info))
        .route(
            "/debug/chronicles/loglevel",
            axum::routing::post(set_log_level),
        );
    #[cfg(feature = "proofs")]
    let api = api.route("/data/{cid}/verifiable", axum::routing::post(verifiable));
    #[cfg(not(feature = "proofs"))]
    let api = api.merge(absent(&["/data/{cid}/verifiable"], "proofs"));
    #[cfg(feature = "net")]
    let api = api.merge(net::routes());
    #[cfg(not(feature = "net"))]
    let api = api.merge(absent(
        &[
            "/data/{cid}/network",
            "/data/{cid}/network/{*rest}",
            "/spr",
            "/peerid",
            "/connect/{peer}",
        ],
        "net",
    ));
    #[cfg(feature = "market")]
    let api = api.merge(market::routes());
    #[cfg(not(feature = "market"))]
    let api = api.merge(absent(
        &["/storage/{*rest}", "/sales/{*rest}", "/validation"],
        "market",
    ));
    Router::new().nest(BASE, api.with_state(state))
}

/// Routes that answer 503 for every method: the crate was built without `feature`.
#[cfg(not(all(feature = "net", feature = "market", feature = "proofs")))]
fn absent(paths: &[&str], feature: &'static str) -> Router<ApiState> {
    paths.iter().fold(Router::new(), |router, path| {
        router.route(
            path,
            axum::routing::any(move || async move {
                ApiError(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("this node is built without the `{feature}` feature"),
                )
            }),
        )
    })
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
            Error::NoKeptKey => StatusCode::BAD_REQUEST,
            Error::Crypto(c) => crypto_status(c),
            #[cfg(feature = "net")]
            Error::Net(codex_net::Error::Unavailable(_)) => StatusCode::NOT_FOUND,
            #[cfg(feature = "net")]
            Error::Net(codex_net::Error::Core(c)) => core_status(c),
            Error::Erasure(codex_erasure::Error::Store(c)) => core_status(c),
            #[cfg(feature = "proofs")]
            Error::Proofs(codex_proofs::Error::Store(c)) => core_status(c),
            #[cfg(feature = "proofs")]
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

fn crypto_status(e: &codex_crypto::Error) -> StatusCode {
    use codex_crypto::Error as C;
    match e {
        C::WrongKey => StatusCode::FORBIDDEN,
        C::NotEncrypted | C::InvalidKey(_) | C::NeedsKey => StatusCode::BAD_REQUEST,
        C::Kdf(_) | C::BlockSize(_) | C::NameTooLong(_) => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
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

/// Query of `POST /data` and of the downloads (ours: encryption).
#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct DataQuery {
    /// Upload: encrypt the body; the answer is JSON with the CID and the key.
    #[serde(default)]
    encrypt: bool,
    /// Download: decrypt with the key the node kept (`--keep-keys`).
    #[serde(default)]
    decrypt: bool,
}

/// The key or passphrase a request carries, if any.
fn secret(headers: &HeaderMap) -> Result<Option<codex_crypto::Secret>, ApiError> {
    if let Some(v) = headers.get(KEY_HEADER) {
        let key = codex_crypto::Key::from_hex(v.to_str().unwrap_or(""))
            .map_err(|e| ApiError::from(Error::from(e)))?;
        return Ok(Some(codex_crypto::Secret::Key(key)));
    }
    if let Some(v) = headers.get(PASSPHRASE_HEADER) {
        let text = String::from_utf8(v.as_bytes().to_vec()).map_err(|_| {
            ApiError(
                StatusCode::BAD_REQUEST,
                format!("the {PASSPHRASE_HEADER} header is not UTF-8"),
            )
        })?;
        return Ok(Some(codex_crypto::Secret::Passphrase(text)));
    }
    Ok(None)
}

/// The dataset decrypted when the request asks for it (a key or passphrase header, or
/// `?decrypt=true` with a kept key), else as it is.
pub(crate) async fn decrypt_if_asked(
    st: &ApiState,
    dataset: data::Dataset,
    headers: &HeaderMap,
    query: &DataQuery,
) -> Result<data::Dataset, ApiError> {
    let secret = match secret(headers)? {
        Some(s) => s,
        None if query.decrypt => {
            let manifest = dataset
                .manifest
                .as_ref()
                .ok_or(Error::Crypto(codex_crypto::Error::NotEncrypted))?;
            if manifest.encryption.is_none() {
                return Err(Error::Crypto(codex_crypto::Error::NotEncrypted).into());
            }
            let key = st.kept_key(manifest).await?.ok_or(Error::NoKeptKey)?;
            codex_crypto::Secret::Key(key)
        }
        None => return Ok(dataset),
    };
    Ok(st.decrypt(dataset, secret).await?)
}

async fn upload(
    State(st): State<ApiState>,
    Query(query): Query<DataQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
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
        ..UploadOptions::default()
    };
    if !query.encrypt {
        let cid = st.add(body.into_data_stream(), options).await?.cid;
        tracing::info!(%cid, "stored an upload");
        return Ok(cid.to_string().into_response());
    }
    let new_key = match secret(&headers)? {
        None => codex_crypto::NewKey::Random,
        Some(codex_crypto::Secret::Key(k)) => codex_crypto::NewKey::Given(k),
        Some(codex_crypto::Secret::Passphrase(passphrase)) => codex_crypto::NewKey::Passphrase {
            passphrase,
            params: codex_crypto::KdfParams::default(),
        },
    };
    let (added, key) = st
        .add_encrypted(body.into_data_stream(), options, new_key)
        .await?;
    tracing::info!(cid = %added.cid, "stored an encrypted upload");
    Ok(axum::Json(json!({ "cid": added.cid.to_string(), "key": key.to_hex() })).into_response())
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
    let (protected, _) = st.erasure_encode(cid, p.k, p.m).await?;
    tracing::info!(%cid, %protected, k = p.k, m = p.m, "erasure-coded a dataset");
    Ok(protected.to_string())
}

/// `POST /data/{cid}/verifiable` (ours): makes a dataset verifiable; a plain one is
/// erasure-coded first with the body's `{"k", "m"}` (default 2, 1).
#[cfg(feature = "proofs")]
async fn verifiable(
    State(st): State<ApiState>,
    Path(cid): Path<String>,
    body: Option<axum::Json<ErasureParams>>,
) -> Result<axum::Json<Value>, ApiError> {
    let cid = parse_cid(&cid)?;
    let ec = body.map(|axum::Json(p)| (p.k, p.m));
    let (verifiable, _, verify_root) = st.make_verifiable(cid, ec).await?;
    Ok(axum::Json(
        json!({ "cid": verifiable.to_string(), "verifyRoot": verify_root.to_string() }),
    ))
}

async fn list(State(st): State<ApiState>) -> Result<axum::Json<Value>, ApiError> {
    let content: Vec<Value> = st
        .list()
        .await?
        .iter()
        .map(|(cid, m)| json!({ "cid": cid.to_string(), "manifest": manifest_json(m) }))
        .collect();
    Ok(axum::Json(json!({ "content": content })))
}

async fn download(
    State(st): State<ApiState>,
    Path(cid): Path<String>,
    Query(query): Query<DataQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let cid = parse_cid(&cid)?;
    let dataset = st.read(cid).await?;
    let dataset = decrypt_if_asked(&st, dataset, &headers, &query).await?;
    Ok(dataset_response(dataset))
}

fn dataset_response(dataset: data::Dataset) -> Response {
    let mut headers = HeaderMap::new();
    // A decrypted stream's name and type are in its encrypted metadata.
    let (filename, mimetype) = match (&dataset.metadata, &dataset.manifest) {
        (Some(meta), _) => (meta.filename.as_ref(), meta.mimetype.as_ref()),
        (None, Some(m)) => (m.filename.as_ref(), m.mimetype.as_ref()),
        (None, None) => (None, None),
    };
    // Codex's OpenAPI file: always `application/octet-stream` and an attachment; the
    // type stored at upload goes in a header of ours.
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Some(v) = mimetype.and_then(|m| HeaderValue::from_str(m).ok()) {
        headers.insert(MIMETYPE_HEADER, v);
    }
    let disposition = filename
        .map(|name| {
            let escaped = name.replace('\\', "\\\\").replace('"', "\\\"");
            format!("attachment; filename=\"{escaped}\"")
        })
        .and_then(|d| HeaderValue::from_str(&d).ok())
        .unwrap_or(HeaderValue::from_static("attachment"));
    headers.insert(header::CONTENT_DISPOSITION, disposition);
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
    st.delete(cid).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /data/{cid}/exists`: `{"has": bool}`, as Codex's OpenAPI file has it.
async fn exists(
    State(st): State<ApiState>,
    Path(cid): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    let cid = parse_cid(&cid)?;
    let has = st.store.has_block(&cid).await?;
    Ok(axum::Json(json!({ "has": has })))
}

async fn space(State(st): State<ApiState>) -> Result<axum::Json<Value>, ApiError> {
    let s = st.space().await?;
    Ok(axum::Json(json!({
        "totalBlocks": s.total_blocks,
        "quotaMaxBytes": s.quota_max_bytes,
        "quotaUsedBytes": s.quota_used_bytes,
        "quotaReservedBytes": s.quota_reserved_bytes,
    })))
}

/// `POST /debug/chronicles/loglevel?level=…` (Codex's): 200 once the level is in
/// force (the filter applied as text), 400 for a missing or unreadable level, 500
/// when the node has no [`crate::logging::LogControl`].
async fn set_log_level(
    State(st): State<ApiState>,
    Query(query): Query<std::collections::HashMap<String, String>>,
) -> Result<String, ApiError> {
    let Some(level) = query.get("level") else {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "the query parameter `level` is missing".into(),
        ));
    };
    let Some(control) = &st.log_control else {
        return Err(ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            "this node's log level cannot change at run time (it runs without a LogControl)".into(),
        ));
    };
    // Answers the directives applied, as read from `level`.
    control
        .set_level(level)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.to_string()))
}

/// The CORS layer for `--api-cors-origin`: `*` lets any origin call, an origin lets
/// that one; `None` or empty adds none.
///
/// # Errors
/// [`Error::InvalidRequest`] for an origin that is no header value.
pub(crate) fn cors(origin: Option<&str>) -> crate::Result<Option<tower_http::cors::CorsLayer>> {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let origin = match origin.map(str::trim) {
        None | Some("") => return Ok(None),
        Some("*") => AllowOrigin::any(),
        Some(o) => {
            // Granted to that origin only: others get no CORS header at all.
            let allowed = HeaderValue::from_str(o).map_err(|_| {
                Error::InvalidRequest(format!("--api-cors-origin {o:?} is no origin"))
            })?;
            AllowOrigin::predicate(move |origin, _| *origin == allowed)
        }
    };
    let methods = [
        axum::http::Method::GET,
        axum::http::Method::POST,
        axum::http::Method::PATCH,
        axum::http::Method::DELETE,
        axum::http::Method::OPTIONS,
    ];
    let allowed = [
        header::CONTENT_TYPE,
        header::CONTENT_DISPOSITION,
        header::AUTHORIZATION,
        header::ACCEPT,
        header::HeaderName::from_static(KEY_HEADER),
        header::HeaderName::from_static(PASSPHRASE_HEADER),
    ];
    let exposed = [
        header::CONTENT_DISPOSITION,
        header::CONTENT_LENGTH,
        header::CONTENT_TYPE,
        MIMETYPE_HEADER,
    ];
    Ok(Some(
        CorsLayer::new()
            .allow_origin(origin)
            .allow_methods(methods)
            .allow_headers(allowed)
            .expose_headers(exposed)
            .max_age(std::time::Duration::from_secs(86_400)),
    ))
}

/// `/debug/info`'s network part (what a node built without a network gives: no peer
/// id, an empty table).
pub(super) struct DebugNet {
    pub peer_id: String,
    pub addrs: Vec<String>,
    pub announce: Vec<String>,
    pub table: Value,
    pub connected: Vec<String>,
    pub spr: String,
    pub nat: Value,
}

impl Default for DebugNet {
    fn default() -> Self {
        DebugNet {
            peer_id: String::new(),
            addrs: Vec::new(),
            announce: Vec::new(),
            table: json!({
                "localNode": {"nodeId": "", "peerId": "", "record": "", "address": "", "seen": true},
                "nodes": [],
            }),
            connected: Vec::new(),
            spr: String::new(),
            nat: Value::Null,
        }
    }
}

async fn debug_info(State(st): State<ApiState>) -> axum::Json<Value> {
    #[cfg(feature = "net")]
    let n = net::debug_info(&st).await;
    #[cfg(not(feature = "net"))]
    let n = DebugNet::default();
    // Codex gives its contracts' revision; ours are compiled from this crate's
    // sources, so its version says which.
    let contracts = env!("CARGO_PKG_VERSION");
    axum::Json(json!({
        "id": n.peer_id,
        "addrs": n.addrs,
        "repo": st.data_dir,
        "spr": n.spr,
        "announceAddresses": n.announce,
        "table": n.table,
        "connectedPeers": n.connected,
        "nat": n.nat,
        "codex": { "version": env!("CARGO_PKG_VERSION"), "revision": "", "contracts": contracts },
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
