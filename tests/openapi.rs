//! `docs/openapi.json` against the code: the document's (path, method) pairs are exactly
//! the router's (read from `src/node/api.rs`), its `$ref`s and path parameters resolve,
//! a live node answers only documented status codes and content types with bodies of the
//! documented shapes, and the marketplace JSON (which a node without a chain cannot
//! show) has the documented shapes straight from its `to_json` functions.

#[path = "common/codex_openapi.rs"]
mod codex_openapi;
#[path = "common/loopback.rs"]
mod loopback;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use codex::market::alloy::primitives::{Address, U256};
use codex::market::{Ask, Content, RequestId, SlotId, StorageRequest};
use codex::node::purchasing::{self, Purchase, PurchaseState, RequestParams};
use codex::node::sales::{Availability, Sale, SaleState};
use codex::node::validator::Validation;
use codex::{Node, NodeConfig};
use serde_json::{Value, json};

const DOC: &str = include_str!("../docs/openapi.json");
const API_RS: &str = include_str!("../src/node/api.rs");
/// The route groups `fn router` merges in with their features.
const API_GROUPS: [&str; 2] = [
    include_str!("../src/node/api/net.rs"),
    include_str!("../src/node/api/market.rs"),
];
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

fn doc() -> Value {
    serde_json::from_str(DOC).expect("docs/openapi.json is JSON")
}

/// Follows a local `$ref` (`#/components/...`).
fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    let mut v = v;
    for _ in 0..16 {
        let Some(r) = v.get("$ref").and_then(Value::as_str) else {
            return v;
        };
        let pointer = r
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("non-local $ref {r}"));
        v = doc
            .pointer(pointer)
            .unwrap_or_else(|| panic!("unresolved $ref {r}"));
    }
    panic!("$ref chain too long")
}

/// The text of the body of `fn NAME(` in `source`.
fn fn_body<'a>(source: &'a str, name: &str) -> &'a str {
    let start = source
        .find(&format!("fn {name}("))
        .unwrap_or_else(|| panic!("fn {name} not found"));
    let body = &source[start..];
    let end = body.find("\n}\n").expect("end of the function");
    &body[..end]
}

/// The text of `fn router`'s body, followed by the bodies of the route groups it merges
/// (`net::routes()`, `market::routes()`); the other merges are the 503 stand-ins of a
/// crate built without a feature, not compiled in the default build this test runs.
fn router_source() -> String {
    let router = fn_body(API_RS, "router");
    for (at, _) in router.match_indices(".merge(") {
        let arg = &router[at + ".merge(".len()..];
        assert!(
            ["net::routes()", "market::routes()", "absent("]
                .iter()
                .any(|m| arg.starts_with(m)),
            "fn router merges something tests/openapi.rs does not read: {}",
            &arg[..arg.len().min(40)]
        );
    }
    let mut text = router.replace(".merge(", ".merged(");
    for group in API_GROUPS {
        text.push('\n');
        text.push_str(fn_body(group, "routes"));
    }
    text
}

/// From `start` (just after an opening parenthesis), the index of its closing one.
fn closing_paren(text: &str, start: usize) -> usize {
    let bytes = text.as_bytes();
    let (mut depth, mut i, mut in_str) = (1usize, start, false);
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if in_str => i += 1,
            b'"' => in_str = !in_str,
            b'(' if !in_str => depth += 1,
            b')' if !in_str => {
                depth -= 1;
                if depth == 0 {
                    return i;
                }
            }
            _ => {}
        }
        i += 1;
    }
    panic!("unbalanced parentheses in fn router")
}

/// How often `name(` occurs in `text` as a call (not as the tail of a longer name).
fn calls(text: &str, name: &str) -> usize {
    let b = text.as_bytes();
    text.match_indices(name)
        .filter(|(i, _)| {
            let before_ok = *i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_');
            before_ok && b.get(i + name.len()) == Some(&b'(')
        })
        .count()
}

/// Every `(path, method)` the router serves, from `.route("PATH", get(a).post(b))`,
/// `axum::routing::patch(c)` and the like.
fn router_routes() -> BTreeSet<(String, String)> {
    let src = router_source();
    let src = src.as_str();
    assert!(
        src.contains("Router::new().nest(BASE, api.with_state(state))"),
        "the router is no longer nested under BASE: update tests/openapi.rs"
    );
    for unsupported in ["route_service", "any", "on", "fallback", "nest_service"] {
        assert_eq!(
            calls(src, unsupported),
            0,
            "fn router calls `{unsupported}`, which tests/openapi.rs does not read"
        );
    }
    assert_eq!(calls(src, "nest"), 1, "fn router nests more than the API");
    let mut routes = BTreeSet::new();
    let mut rest = src;
    while let Some(at) = rest.find(".route(") {
        let open = at + ".route(".len();
        let close = closing_paren(rest, open);
        let args = rest[open..close].trim_start();
        let path = args
            .strip_prefix('"')
            .and_then(|a| a.split('"').next())
            .expect("a route's path is a string literal");
        let handlers = &args[path.len() + 2..];
        let mut found = 0;
        for m in METHODS {
            for _ in 0..calls(handlers, m) {
                found += 1;
                assert!(
                    routes.insert((path.to_string(), m.to_string())),
                    "{m} {path} routed twice"
                );
            }
        }
        assert!(found > 0, "no method found for route {path}");
        rest = &rest[close..];
    }
    assert!(!routes.is_empty(), "no .route( found in fn router");
    routes
}

fn doc_routes(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for m in METHODS {
            if item.get(m).is_some() {
                out.insert((path.clone(), m.to_string()));
            }
        }
    }
    out
}

fn every_ref_resolves(doc: &Value, v: &Value) {
    match v {
        Value::Object(map) => {
            if map.contains_key("$ref") {
                resolve(doc, v);
            }
            map.values().for_each(|x| every_ref_resolves(doc, x));
        }
        Value::Array(a) => a.iter().for_each(|x| every_ref_resolves(doc, x)),
        _ => {}
    }
}

#[test]
fn document_is_openapi_3_1_with_the_base() {
    let doc = doc();
    let version = doc["openapi"].as_str().expect("openapi version");
    assert!(version.starts_with("3.1."), "OpenAPI {version}");
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
    let servers = doc["servers"].as_array().expect("servers");
    assert!(!servers.is_empty());
    for s in servers {
        let url = s["url"].as_str().expect("server url");
        assert!(
            url.ends_with(codex::node::api::BASE),
            "server {url} is not under {}",
            codex::node::api::BASE
        );
    }
    every_ref_resolves(&doc, &doc);

    let mut ids = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        assert!(path.starts_with('/'), "{path}");
        let templated: BTreeSet<&str> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
            .collect();
        for m in METHODS {
            let Some(op) = item.get(m) else { continue };
            let id = op["operationId"].as_str().expect("operationId");
            assert!(ids.insert(id.to_string()), "operationId {id} twice");
            let params: Vec<&Value> = item["parameters"]
                .as_array()
                .into_iter()
                .chain(op["parameters"].as_array())
                .flatten()
                .map(|p| resolve(&doc, p))
                .collect();
            let in_path: BTreeSet<&str> = params
                .iter()
                .filter(|p| p["in"] == "path")
                .map(|p| {
                    assert_eq!(
                        p["required"], true,
                        "{m} {path}: path parameters are required"
                    );
                    p["name"].as_str().expect("parameter name")
                })
                .collect();
            assert_eq!(in_path, templated, "{m} {path}: path parameters");
            let responses = op["responses"].as_object().expect("responses");
            assert!(!responses.is_empty(), "{m} {path}: no responses");
            for (code, r) in responses {
                assert!(
                    code.len() == 3 && code.parse::<u16>().is_ok(),
                    "{m} {path}: response code {code}"
                );
                assert!(
                    resolve(&doc, r)["description"].is_string(),
                    "{m} {path} {code}"
                );
            }
        }
    }
}

#[test]
fn the_checker_catches_wrong_shapes() {
    let doc = doc();
    let wrong = |name: &str, v: Value| {
        let mut errors = Vec::new();
        validate(&doc, schema_of(&doc, name), &v, "$", &mut errors);
        assert!(!errors.is_empty(), "{name} accepted {v}");
    };
    wrong(
        "Space",
        json!({"totalBlocks": 0, "quotaMaxBytes": 1, "quotaUsedBytes": 0}),
    );
    wrong(
        "Space",
        json!({"totalBlocks": "0", "quotaMaxBytes": 1, "quotaUsedBytes": 0, "quotaReservedBytes": 0}),
    );
    wrong(
        "Space",
        json!({"totalBlocks": 0, "quotaMaxBytes": 1, "quotaUsedBytes": 0, "quotaReservedBytes": 0, "extra": 1}),
    );
    wrong(
        "DataList",
        json!({"content": [{"cid": "z", "manifest": {"treeCid": "z"}}]}),
    );
    wrong("Purchase", json!({"id": "x"}));
    wrong("SaleState", json!("Proving"));
    wrong("UInt", json!(-1));
    wrong("Exists", json!({"a": true, "b": false}));
}

#[test]
fn document_covers_exactly_the_router() {
    let router = router_routes();
    let documented = doc_routes(&doc());
    let missing: Vec<_> = router.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&router).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "docs/openapi.json drifted from fn router:\n  routed, not documented: {missing:?}\n  documented, not routed: {extra:?}"
    );
}

/// Checks `value` against a JSON Schema of the subset the document uses (`$ref`,
/// `type`, `required`, `properties`, `additionalProperties`, `items`, `enum`,
/// `oneOf`/`anyOf`/`allOf`, `minimum`, `minProperties`/`maxProperties`); pushes what
/// is wrong, with the JSON path, onto `errors`.
fn validate(doc: &Value, schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
    let schema = resolve(doc, schema);
    if let Some(types) = schema.get("type") {
        let types: Vec<&str> = match types {
            Value::String(t) => vec![t.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => panic!("bad type in schema at {at}"),
        };
        let ok = types.iter().any(|t| match *t {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "boolean" => value.is_boolean(),
            "null" => value.is_null(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            other => panic!("unknown type {other}"),
        });
        if !ok {
            errors.push(format!("{at}: {value} is not {types:?}"));
            return;
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        errors.push(format!("{at}: {value} not in {allowed:?}"));
    }
    if let (Some(min), Some(n)) = (
        schema.get("minimum").and_then(Value::as_f64),
        value.as_f64(),
    ) && n < min
    {
        errors.push(format!("{at}: {n} < {min}"));
    }
    for sub in schema["allOf"].as_array().into_iter().flatten() {
        validate(doc, sub, value, at, errors);
    }
    for (key, exactly_one) in [("oneOf", true), ("anyOf", false)] {
        if let Some(subs) = schema.get(key).and_then(Value::as_array) {
            let passing = subs
                .iter()
                .filter(|s| {
                    let mut e = Vec::new();
                    validate(doc, s, value, at, &mut e);
                    e.is_empty()
                })
                .count();
            if passing == 0 || (exactly_one && passing > 1) {
                errors.push(format!("{at}: {value} matches {passing} of {key}"));
            }
        }
    }
    if let Some(obj) = value.as_object() {
        for r in schema["required"].as_array().into_iter().flatten() {
            let r = r.as_str().expect("required names");
            if !obj.contains_key(r) {
                errors.push(format!("{at}: required property {r} missing"));
            }
        }
        if let Some(n) = schema.get("minProperties").and_then(Value::as_u64)
            && (obj.len() as u64) < n
        {
            errors.push(format!("{at}: fewer than {n} properties"));
        }
        if let Some(n) = schema.get("maxProperties").and_then(Value::as_u64)
            && (obj.len() as u64) > n
        {
            errors.push(format!("{at}: more than {n} properties"));
        }
        let props = schema.get("properties").and_then(Value::as_object);
        for (k, v) in obj {
            let here = format!("{at}.{k}");
            match props.and_then(|p| p.get(k)) {
                Some(s) => validate(doc, s, v, &here, errors),
                None => match schema.get("additionalProperties") {
                    Some(Value::Bool(false)) => errors.push(format!("{here}: not allowed")),
                    Some(s @ Value::Object(_)) => validate(doc, s, v, &here, errors),
                    // Undocumented properties of a documented object are drift too.
                    _ if props.is_some() => errors.push(format!("{here}: not documented")),
                    _ => {}
                },
            }
        }
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), value.as_array()) {
        for (i, v) in arr.iter().enumerate() {
            validate(doc, items, v, &format!("{at}[{i}]"), errors);
        }
    }
}

fn assert_valid(doc: &Value, schema: &Value, value: &Value, what: &str) {
    let mut errors = Vec::new();
    validate(doc, schema, value, "$", &mut errors);
    assert!(
        errors.is_empty(),
        "{what}: {value} does not match the document:\n  {}",
        errors.join("\n  ")
    );
}

fn schema_of<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["components"]["schemas"]
        .get(name)
        .unwrap_or_else(|| panic!("no schema {name}"))
}

/// Sends a request and checks the answer against the documented operation `method
/// template`: a documented status, a documented content type, and a JSON body of the
/// documented schema. Returns the status and the body.
async fn call(
    doc: &Value,
    client: &reqwest::Client,
    base: &str,
    method: &str,
    template: &str,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<(u16, String)> {
    let op = doc["paths"][template]
        .get(method)
        .unwrap_or_else(|| panic!("{method} {template} not documented"));
    let url = format!("{base}{path}");
    let mut req = client.request(method.to_uppercase().parse()?, &url);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await?;
    let status = res.status().as_u16();
    let ctype = res
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_string());
    let text = res.text().await?;
    let what = format!("{method} {path} -> {status}");
    let documented = op["responses"].get(status.to_string()).unwrap_or_else(|| {
        panic!(
            "{what} ({text:?}): status not documented for {method} {template} (documented: {:?})",
            op["responses"]
                .as_object()
                .map(|o| o.keys().collect::<Vec<_>>())
        )
    });
    let documented = resolve(doc, documented);
    match documented.get("content").and_then(Value::as_object) {
        None => assert!(text.is_empty(), "{what}: undocumented body {text:?}"),
        Some(content) => {
            let ctype = ctype.unwrap_or_else(|| panic!("{what}: no Content-Type"));
            let media = content
                .get(&ctype)
                .or_else(|| content.get("*/*"))
                .unwrap_or_else(|| {
                    panic!(
                        "{what}: content type {ctype} not documented ({:?})",
                        content.keys().collect::<Vec<_>>()
                    )
                });
            if ctype == "application/json" {
                let value: Value = serde_json::from_str(&text)?;
                assert_valid(doc, &media["schema"], &value, &what);
            }
        }
    }
    Ok((status, text))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_node_answers_as_documented() -> anyhow::Result<()> {
    let t = Instant::now();
    let doc = doc();
    let dir = tempfile::tempdir()?;
    let node = Node::start(NodeConfig {
        data_dir: dir.path().to_path_buf(),
        api_port: 0,
        network: None,
        ..NodeConfig::default()
    })
    .await?;
    let base = node.api_url();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let c = |method: &'static str, template: &'static str, path: String, body: Option<Value>| {
        let (doc, client, base) = (&doc, &client, base.clone());
        async move { call(doc, client, &base, method, template, &path, body).await }
    };
    let unknown = "zDvZRwzkwbhyRWn7A5uoSvU4qe2ERHkv7pgtchsgqwm356Q6DAVe";

    // The local store.
    let (s, hello) = {
        let res = client
            .post(format!("{base}/data"))
            .header("Content-Type", "text/plain")
            .header("Content-Disposition", "attachment; filename=\"a.txt\"")
            .body(vec![7u8; 200_000])
            .send()
            .await?;
        let status = res.status().as_u16();
        let ctype = res.headers()[reqwest::header::CONTENT_TYPE]
            .to_str()?
            .to_string();
        let ok = doc["paths"]["/data"]["post"]["responses"]["200"]["content"]
            .get(ctype.split(';').next().unwrap_or(""))
            .is_some();
        assert!(ok, "POST /data answers {ctype}");
        (status, res.text().await?)
    };
    assert_eq!(s, 200, "{hello}");
    let (s, _) = c("post", "/data", "/data".into(), None).await?;
    assert_eq!(s, 422, "empty upload");
    let res = client
        .post(format!("{base}/data"))
        .header("Content-Type", "not a mime type")
        .body("x")
        .send()
        .await?;
    assert!(
        doc["paths"]["/data"]["post"]["responses"]
            .get(res.status().as_str())
            .is_some()
    );
    assert_eq!(res.status().as_u16(), 422);

    assert_eq!(c("get", "/data", "/data".into(), None).await?.0, 200);
    assert_eq!(c("get", "/space", "/space".into(), None).await?.0, 200);
    assert_eq!(
        c("get", "/debug/info", "/debug/info".into(), None).await?.0,
        200
    );
    for (cid, status) in [(hello.as_str(), 200), (unknown, 404), ("notacid", 400)] {
        let (s, _) = c("get", "/data/{cid}", format!("/data/{cid}"), None).await?;
        assert_eq!(s, status, "GET /data/{cid}");
        let (s, _) = c(
            "get",
            "/data/{cid}/exists",
            format!("/data/{cid}/exists"),
            None,
        )
        .await?;
        assert_eq!(s, if status == 400 { 400 } else { 200 });
    }

    // Erasure coding and slots, ours.
    let erasure = |cid: &str, body: Value| {
        c(
            "post",
            "/data/{cid}/erasure",
            format!("/data/{cid}/erasure"),
            Some(body),
        )
    };
    let (s, protected) = erasure(&hello, json!({"k": 2, "m": 1})).await?;
    assert_eq!(s, 200, "{protected}");
    assert_eq!(erasure(&hello, json!({"k": 0, "m": 1})).await?.0, 422);
    assert_eq!(erasure(&hello, json!({"k": 2})).await?.0, 422);
    assert_eq!(erasure(unknown, json!({"k": 2, "m": 1})).await?.0, 404);
    assert_eq!(erasure("notacid", json!({"k": 2, "m": 1})).await?.0, 400);
    let res = client
        .post(format!("{base}/data/{hello}/erasure"))
        .body("{}")
        .send()
        .await?;
    assert_eq!(res.status().as_u16(), 415, "no JSON content type");
    assert!(doc["paths"]["/data/{cid}/erasure"]["post"]["responses"]["415"].is_object());
    let (s, body) = c(
        "post",
        "/data/{cid}/verifiable",
        format!("/data/{protected}/verifiable"),
        None,
    )
    .await?;
    assert_eq!(s, 200, "{body}");
    assert_eq!(
        c(
            "post",
            "/data/{cid}/verifiable",
            format!("/data/{unknown}/verifiable"),
            None
        )
        .await?
        .0,
        404
    );

    // The network routes on a node without one.
    for (method, template) in [
        ("post", "/data/{cid}/network"),
        ("get", "/data/{cid}/network/stream"),
        ("get", "/data/{cid}/network/manifest"),
    ] {
        let path = template.replace("{cid}", unknown);
        assert_eq!(c(method, template, path, None).await?.0, 503, "{template}");
        let path = template.replace("{cid}", "notacid");
        assert_eq!(c(method, template, path, None).await?.0, 400, "{template}");
    }
    assert_eq!(c("get", "/peerid", "/peerid".into(), None).await?.0, 503);
    assert_eq!(c("get", "/spr", "/spr".into(), None).await?.0, 503);
    let peer = "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN";
    for (path, status) in [
        (format!("/connect/{peer}"), 503),
        (format!("/connect/{peer}?addrs=/ip4/127.0.0.1/tcp/1"), 503),
        ("/connect/nonsense".to_string(), 400),
        (format!("/connect/{peer}?addrs=garbage"), 400),
    ] {
        assert_eq!(
            c("get", "/connect/{peer}", path.clone(), None).await?.0,
            status,
            "{path}"
        );
    }

    // The marketplace routes on a node without one.
    let id = format!("0x{}", "ab".repeat(32));
    let request = json!({"duration": "3600", "proofProbability": 2, "pricePerBytePerSecond": "1",
        "collateralPerByte": 1, "expiry": 300});
    let availability = json!({"totalSize": 1000, "duration": "3600",
        "minPricePerBytePerSecond": 1, "totalCollateral": "500"});
    for (method, template, path, body) in [
        (
            "post",
            "/storage/request/{cid}",
            format!("/storage/request/{hello}"),
            Some(request),
        ),
        (
            "get",
            "/storage/purchases",
            "/storage/purchases".to_string(),
            None,
        ),
        (
            "get",
            "/storage/purchases/{id}",
            format!("/storage/purchases/{}", "ab".repeat(32)),
            None,
        ),
        (
            "get",
            "/sales/availability",
            "/sales/availability".to_string(),
            None,
        ),
        (
            "post",
            "/sales/availability",
            "/sales/availability".to_string(),
            Some(availability),
        ),
        (
            "patch",
            "/sales/availability/{id}",
            format!("/sales/availability/{id}"),
            Some(json!({"enabled": false})),
        ),
        (
            "get",
            "/sales/availability/{id}/reservations",
            format!("/sales/availability/{id}/reservations"),
            None,
        ),
        ("get", "/sales/slots", "/sales/slots".to_string(), None),
        (
            "get",
            "/sales/slots/{id}",
            format!("/sales/slots/{id}"),
            None,
        ),
        ("get", "/validation", "/validation".to_string(), None),
    ] {
        let (s, text) = c(method, template, path, body).await?;
        assert_eq!(s, 503, "{method} {template}: {text}");
        assert!(text.contains("marketplace"), "{text}");
    }
    assert_eq!(
        c(
            "get",
            "/sales/slots/{id}",
            "/sales/slots/nonsense".into(),
            None
        )
        .await?
        .0,
        400
    );

    // Last, deleting.
    for cid in [hello.as_str(), unknown] {
        assert_eq!(
            c("delete", "/data/{cid}", format!("/data/{cid}"), None)
                .await?
                .0,
            204
        );
    }
    assert_eq!(
        c("delete", "/data/{cid}", "/data/notacid".into(), None)
            .await?
            .0,
        400
    );
    assert_eq!(
        c("get", "/data/{cid}", format!("/data/{hello}"), None)
            .await?
            .0,
        404
    );

    node.shutdown().await?;
    eprintln!("live checks took {:?}", t.elapsed());
    Ok(())
}

/// The marketplace's JSON, which a node without a chain cannot show, straight from the
/// functions the handlers call; and the document's request examples are accepted.
#[test]
fn marketplace_shapes_match_the_document() -> anyhow::Result<()> {
    let doc = doc();
    let paths = &doc["paths"];
    // As Codex's clients read them (its OpenAPI file's schemas).
    let codex = |name: &str, value: &Value| {
        codex_openapi::validate(name, &codex_openapi::schema(name), value)
    };

    let example = &paths["/sales/availability"]["post"]["requestBody"]["content"]["application/json"]
        ["example"];
    assert_valid(
        &doc,
        schema_of(&doc, "AvailabilityCreate"),
        example,
        "create example",
    );
    let mut a = Availability::from_json(format!("0x{}", "cd".repeat(32)), example)?;
    assert_valid(
        &doc,
        schema_of(&doc, "Availability"),
        &a.to_json(),
        "Availability",
    );
    // Numbers or strings, as documented.
    let numbers = json!({"totalSize": 1000, "duration": 3600,
        "minPricePerBytePerSecond": 1, "totalCollateral": 500});
    assert_valid(
        &doc,
        schema_of(&doc, "AvailabilityCreate"),
        &numbers,
        "numbers",
    );
    Availability::from_json("x".into(), &numbers)?;
    let patch = &paths["/sales/availability/{id}"]["patch"]["requestBody"]["content"]["application/json"]
        ["example"];
    assert_valid(
        &doc,
        schema_of(&doc, "AvailabilityPatch"),
        patch,
        "patch example",
    );
    a.patch(patch)?;
    assert_valid(
        &doc,
        schema_of(&doc, "Availability"),
        &a.to_json(),
        "patched",
    );
    codex("SalesAvailabilityREAD", &a.to_json())?;
    a.patch(&json!({"until": 1_700_000_000}))?;
    codex("SalesAvailabilityREAD", &a.to_json())?;
    let big = json!({"minPricePerBytePerSecond": "0x10000000000000000000000000000"});
    assert_valid(&doc, schema_of(&doc, "AvailabilityPatch"), &big, "hex");
    a.patch(&big)?;

    let example = &paths["/storage/request/{cid}"]["post"]["requestBody"]["content"]["application/json"]
        ["example"];
    assert_valid(
        &doc,
        schema_of(&doc, "StorageRequestParams"),
        example,
        "request example",
    );
    let params = RequestParams::from_json(example)?;
    let minimal = json!({"duration": 3600, "proofProbability": "2",
        "pricePerBytePerSecond": 1, "collateralPerByte": "1", "expiry": "300"});
    assert_valid(
        &doc,
        schema_of(&doc, "StorageRequestParams"),
        &minimal,
        "minimal",
    );
    let defaults = RequestParams::from_json(&minimal)?;
    let props = &schema_of(&doc, "StorageRequestParams")["properties"];
    assert_eq!(props["nodes"]["default"], defaults.nodes);
    assert_eq!(props["tolerance"]["default"], defaults.tolerance);

    let request = StorageRequest {
        client: Address::repeat_byte(1),
        ask: Ask {
            proof_probability: U256::from(2),
            price_per_byte_per_second: U256::MAX,
            collateral_per_byte: U256::from(1),
            slots: 3,
            slot_size: 1 << 20,
            duration: 3600,
            max_slot_loss: 1,
        },
        content: Content {
            cid: Vec::new(),
            merkle_root: [3; 32],
        },
        expiry: 300,
        nonce: [4; 32],
    };
    let cid: codex::core::Cid = "zDvZRwzkwbhyRWn7A5uoSvU4qe2ERHkv7pgtchsgqwm356Q6DAVe".parse()?;
    let mut purchase = Purchase {
        id: "ab".repeat(32),
        cid,
        params,
        state: PurchaseState::Pending,
        step: "erasure coding",
        request: None,
        verifiable: None,
        error: None,
        timings: Vec::new(),
    };
    assert_valid(
        &doc,
        schema_of(&doc, "Purchase"),
        &purchase.to_json(),
        "pending",
    );
    purchase.request = Some(request.clone());
    purchase.verifiable = Some(cid);
    purchase.state = PurchaseState::Errored;
    purchase.error = Some("boom".into());
    purchase.timings = vec![("erasure", Duration::from_millis(12))];
    assert_valid(
        &doc,
        schema_of(&doc, "Purchase"),
        &purchase.to_json(),
        "errored",
    );
    codex("Purchase", &purchase.to_json())?;
    let states = schema_of(&doc, "PurchaseState")["enum"].clone();
    for s in [
        PurchaseState::Pending,
        PurchaseState::Submitted,
        PurchaseState::Started,
        PurchaseState::Finished,
        PurchaseState::Cancelled,
        PurchaseState::Failed,
        PurchaseState::Errored,
    ] {
        assert!(
            states
                .as_array()
                .is_some_and(|a| a.contains(&json!(s.as_str()))),
            "{s:?}"
        );
    }

    let rid: RequestId = request.id();
    let mut sale = Sale {
        slot: SlotId::new(rid, 1),
        request: rid,
        storage_request: request.clone(),
        valid_until: 1_700_003_600,
        slot_index: 1,
        availability: a.id.clone(),
        state: SaleState::Proving,
        repair: true,
        reserved: true,
        attempts: 2,
        proofs: 3,
        proof_periods: vec![10, 12],
        error: None,
        timings: vec![("download", Duration::from_millis(5))],
        dataset: None,
        owns_data: false,
    };
    assert_valid(&doc, schema_of(&doc, "Sale"), &sale.to_json(), "Sale");
    assert_valid(
        &doc,
        schema_of(&doc, "Reservation"),
        &sale.reservation_json(),
        "Reservation",
    );
    codex("Slot", &sale.to_json())?;
    codex("SlotAgent", &sale.to_json())?;
    codex("Reservation", &sale.reservation_json())?;
    codex("StorageRequest", &purchasing::request_json(&request))?;
    sale.error = Some("slot taken".into());
    sale.state = SaleState::Errored;
    assert_valid(
        &doc,
        schema_of(&doc, "Sale"),
        &sale.to_json(),
        "errored Sale",
    );
    codex("SlotAgent", &sale.to_json())?;
    assert!(sale.to_json().get("reservation").is_none(), "no space held");

    let states = schema_of(&doc, "SaleState")["enum"].clone();
    let all_states = [
        SaleState::Reserving,
        SaleState::Downloading,
        SaleState::InitialProving,
        SaleState::Filling,
        SaleState::Proving,
        SaleState::Payout,
        SaleState::Finished,
        SaleState::Cancelled,
        SaleState::Failed,
        SaleState::Ignored,
        SaleState::Errored,
    ];
    for s in all_states {
        sale.state = s;
        codex("SlotAgent", &sale.to_json())?;
    }
    for s in all_states {
        assert!(
            states
                .as_array()
                .is_some_and(|a| a.contains(&json!(s.as_str()))),
            "{s:?}"
        );
    }

    assert_valid(
        &doc,
        schema_of(&doc, "Validation"),
        &Validation::default().to_json(),
        "Validation",
    );
    Ok(())
}

/// Two nodes on loopback, met as Codex's clients meet a node: every answer to every
/// path of Codex's OpenAPI file that needs no chain is checked against that file
/// (status, content type, schema; the marketplace's paths are checked on anvil in
/// `tests/marketplace.rs`), and the values are the right ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_clients_read_every_answer() -> anyhow::Result<()> {
    use codex_openapi::send;
    use rand::{RngCore, SeedableRng};
    let dir = tempfile::tempdir()?;
    let a = Node::start(loopback::loopback(&dir.path().join("a"), vec![])?).await?;
    let a_addrs = a.addresses().await?;
    let b = Node::start(loopback::loopback(&dir.path().join("b"), a_addrs.clone())?).await?;
    let (ua, ub) = (a.api_url(), b.api_url());
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let unknown = "zDvZRwzkwbhyRWn7A5uoSvU4qe2ERHkv7pgtchsgqwm356Q6DAVe";
    let text = |b: &[u8]| String::from_utf8_lossy(b).to_string();
    let json = |b: &[u8]| serde_json::from_slice::<Value>(b);

    // Uploads: one with a name and a type, one without.
    let mut data = vec![0u8; 300_000];
    rand::rngs::StdRng::seed_from_u64(19).fill_bytes(&mut data);
    let (s, _, body) = send(
        http.post(format!("{ua}/data"))
            .header("Content-Type", "text/plain")
            .header("Content-Disposition", "attachment; filename=\"a.txt\"")
            .body(data.clone()),
    )
    .await?;
    assert_eq!(s, 200, "{}", text(&body));
    let cid = text(&body);
    let (s, _, body) = send(http.post(format!("{ua}/data")).body(vec![9u8; 1000])).await?;
    assert_eq!(s, 200, "{}", text(&body));
    let plain = text(&body);

    let (s, _, body) = send(http.get(format!("{ua}/data"))).await?;
    assert_eq!(s, 200);
    let listed = json(&body)?;
    let item = listed["content"]
        .as_array()
        .and_then(|c| c.iter().find(|i| i["cid"] == cid.as_str()))
        .ok_or_else(|| anyhow::anyhow!("{cid} not listed: {listed}"))?;
    assert_eq!(item["manifest"]["mimetype"], "text/plain");

    // Downloads: always octet-stream and an attachment.
    let (s, headers, body) = send(http.get(format!("{ua}/data/{cid}"))).await?;
    assert_eq!(s, 200);
    assert!(body == data, "the bytes downloaded differ");
    assert_eq!(headers["content-type"], "application/octet-stream");
    assert_eq!(
        headers["content-disposition"],
        "attachment; filename=\"a.txt\""
    );
    assert_eq!(headers["x-codex-mimetype"], "text/plain");
    let (s, headers, _) = send(http.get(format!("{ua}/data/{plain}"))).await?;
    assert_eq!(s, 200);
    assert_eq!(headers["content-disposition"], "attachment");
    assert!(headers.get("x-codex-mimetype").is_none());
    assert_eq!(send(http.get(format!("{ua}/data/{unknown}"))).await?.0, 404);
    assert_eq!(send(http.get(format!("{ua}/data/notacid"))).await?.0, 400);
    for (c, has) in [(cid.as_str(), true), (unknown, false)] {
        let (s, _, body) = send(http.get(format!("{ua}/data/{c}/exists"))).await?;
        assert_eq!((s, json(&body)?), (200, json!({ "has": has })));
    }
    assert_eq!(
        send(http.get(format!("{ua}/data/notacid/exists"))).await?.0,
        400
    );
    let (s, _, body) = send(http.get(format!("{ua}/space"))).await?;
    assert_eq!(s, 200);
    assert!(
        json(&body)?["totalBlocks"].as_u64() >= Some(6),
        "{}",
        text(&body)
    );

    // Who the node is.
    let peer = a
        .network()
        .map(|n| n.peer_id().to_string())
        .unwrap_or_default();
    let (s, _, body) = send(http.get(format!("{ua}/peerid"))).await?;
    assert_eq!((s, text(&body)), (200, peer.clone()));
    let (s, _, body) = send(
        http.get(format!("{ua}/peerid"))
            .header("Accept", "application/json"),
    )
    .await?;
    assert_eq!((s, json(&body)?), (200, json!({ "id": peer })));
    let (s, _, spr) = send(http.get(format!("{ua}/spr"))).await?;
    assert_eq!(s, 200);
    assert!(text(&spr).starts_with("spr:"), "{}", text(&spr));
    let (s, _, body) = send(
        http.get(format!("{ua}/spr"))
            .header("Accept", "application/json"),
    )
    .await?;
    assert_eq!((s, json(&body)?), (200, json!({ "spr": text(&spr) })));

    // Connecting, the addresses given as Codex's clients give them (repeated).
    let first = a_addrs.first().map(ToString::to_string).unwrap_or_default();
    let (s, _, body) = send(http.get(format!(
        "{ub}/connect/{peer}?addrs=/ip4/127.0.0.1/tcp/1&addrs={first}"
    )))
    .await?;
    assert_eq!(s, 200, "{}", text(&body));
    assert_eq!(
        send(http.get(format!("{ub}/connect/nonsense"))).await?.0,
        400
    );
    let (s, _, _) =
        send(http.get(format!("{ub}/connect/{peer}?addrs={first}&addrs=garbage"))).await?;
    assert_eq!(s, 400, "a bad address among good ones");

    // A's table holds B once B bootstrapped from it.
    let b_peer = b
        .network()
        .map(|n| n.peer_id().to_string())
        .unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(20);
    let info = loop {
        let (s, _, body) = send(http.get(format!("{ua}/debug/info"))).await?;
        assert_eq!(s, 200);
        let info = json(&body)?;
        let listed = info["table"]["nodes"]
            .as_array()
            .is_some_and(|n| n.iter().any(|n| n["peerId"] == b_peer.as_str()));
        if listed {
            break info;
        }
        anyhow::ensure!(Instant::now() < deadline, "B not in A's table: {info}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let node = info["table"]["nodes"]
        .as_array()
        .and_then(|n| n.iter().find(|n| n["peerId"] == b_peer.as_str()))
        .cloned()
        .unwrap_or_default();
    assert_eq!(node["seen"], true, "{info}");
    assert_eq!(node["nodeId"].as_str().map(str::len), Some(64), "{info}");
    assert_eq!(info["table"]["localNode"]["record"], info["spr"], "{info}");
    assert_eq!(info["spr"], text(&spr));

    // B fetches A's dataset through the network routes.
    let (s, _, body) = send(http.get(format!("{ub}/data/{cid}/network/manifest"))).await?;
    assert_eq!(s, 200, "{}", text(&body));
    assert_eq!(json(&body)?["cid"], cid.as_str());
    let (s, headers, body) = send(http.get(format!("{ub}/data/{cid}/network/stream"))).await?;
    assert_eq!(s, 200);
    assert!(body == data, "the bytes streamed differ");
    assert_eq!(
        headers["content-disposition"],
        "attachment; filename=\"a.txt\""
    );
    let (s, _, body) = send(http.post(format!("{ub}/data/{plain}/network"))).await?;
    assert_eq!(s, 200, "{}", text(&body));
    assert_eq!(json(&body)?["cid"], plain.as_str());
    for (method, path) in [
        ("POST", "/data/notacid/network"),
        ("GET", "/data/notacid/network/stream"),
        ("GET", "/data/notacid/network/manifest"),
    ] {
        let req = http.request(method.parse()?, format!("{ub}{path}"));
        assert_eq!(send(req).await?.0, 400, "{method} {path}");
    }

    // The log level: these nodes run without a log control, which Codex's file calls
    // a 500; a missing level is a 400 before that.
    let (s, _, _) = send(http.post(format!("{ua}/debug/chronicles/loglevel?level=DEBUG"))).await?;
    assert_eq!(s, 500);
    let (s, _, _) = send(http.post(format!("{ua}/debug/chronicles/loglevel"))).await?;
    assert_eq!(s, 400);

    // Deleting.
    assert_eq!(send(http.delete(format!("{ua}/data/{cid}"))).await?.0, 204);
    assert_eq!(
        send(http.delete(format!("{ua}/data/notacid"))).await?.0,
        400
    );
    let (s, _, body) = send(http.get(format!("{ua}/data/{cid}/exists"))).await?;
    assert_eq!((s, json(&body)?), (200, json!({ "has": false })));

    b.shutdown().await?;
    a.shutdown().await?;
    Ok(())
}

/// The checker itself: a missing required field, a wrong type and an undocumented
/// status are each refused.
#[test]
fn the_codex_checker_refuses_wrong_answers() {
    let space = |v: Value| {
        codex_openapi::check(
            "get",
            "/api/codex/v1/space",
            200,
            Some("application/json"),
            v.to_string().as_bytes(),
        )
    };
    let ok =
        json!({"totalBlocks": 1, "quotaMaxBytes": 2, "quotaUsedBytes": 3, "quotaReservedBytes": 0});
    assert!(space(ok.clone()).is_ok());
    let mut missing = ok.clone();
    missing.as_object_mut().map(|o| o.remove("quotaUsedBytes"));
    assert!(space(missing).is_err(), "a missing required field");
    let mut wrong = ok.clone();
    wrong["totalBlocks"] = json!("1");
    assert!(space(wrong).is_err(), "a number as a string");
    let status = codex_openapi::check("get", "/space", 404, None, b"");
    assert!(status.is_err(), "404 is not in the file for /space");
    let ctype = codex_openapi::check("get", "/space", 200, Some("text/plain"), b"x");
    assert!(ctype.is_err(), "text for JSON");
    let ours = codex_openapi::check("get", "/validation", 200, Some("application/json"), b"{}");
    assert!(
        matches!(ours, Ok(false)),
        "a path of ours is not Codex's to judge"
    );
    let nullable = codex_openapi::validate(
        "ManifestItem",
        &codex_openapi::schema("ManifestItem"),
        &json!({"treeCid": "z", "datasetSize": 1, "blockSize": 65536, "protected": false, "filename": null}),
    );
    assert!(nullable.is_ok(), "nullable: {nullable:?}");
}
