//! Responses checked against Codex's own OpenAPI file
//! (`../shared/reference/codex-openapi.yaml`, nim-codex's `openapi.yaml`): for a path
//! the file has, the status must be one it lists, the content type one it lists for
//! that status, and a JSON body must validate (jsonschema, draft 2020-12) against the
//! status's schema, so a missing required field or a wrong type fails. What we add
//! (fields, paths such as `/validation`) passes: a strict client ignores it.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use anyhow::{Context, anyhow, bail};
use serde_json::{Map, Value};

/// Where the REST API lives under a node's address.
pub const BASE: &str = "/api/codex/v1";

/// Codex's OpenAPI document, as JSON.
pub fn document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/reference/codex-openapi.yaml"
        );
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("Codex's OpenAPI file {path}: {e}"));
        serde_norway::from_str(&text)
            .unwrap_or_else(|e| panic!("Codex's OpenAPI file {path} is not YAML: {e}"))
    })
}

/// An OpenAPI 3.0 schema as JSON Schema 2020-12: `nullable: true` admits `null`, and
/// `#/components/schemas/X` becomes `#/$defs/X`.
fn json_schema(v: &Value) -> Value {
    match v {
        Value::Object(o) => {
            let mut out = Map::new();
            for (k, v) in o {
                match k.as_str() {
                    "$ref" => {
                        let r = v.as_str().unwrap_or_default();
                        let name = r.strip_prefix("#/components/schemas/").unwrap_or(r);
                        out.insert(k.clone(), Value::String(format!("#/$defs/{name}")));
                    }
                    // Annotations only (OpenAPI's spellings); dropped.
                    "nullable" | "example" | "readonly" | "readOnly" => {}
                    _ => {
                        out.insert(k.clone(), json_schema(v));
                    }
                }
            }
            if o.get("nullable") == Some(&Value::Bool(true))
                && let Some(Value::String(t)) = o.get("type")
            {
                out.insert(
                    "type".into(),
                    Value::Array(vec![Value::String(t.clone()), "null".into()]),
                );
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(json_schema).collect()),
        other => other.clone(),
    }
}

/// `schema` (from the document) with every component schema as `$defs`.
fn root_schema(schema: &Value) -> Value {
    let defs = document()
        .pointer("/components/schemas")
        .and_then(Value::as_object)
        .map(|o| {
            o.iter()
                .map(|(k, v)| (k.clone(), json_schema(v)))
                .collect::<Map<_, _>>()
        })
        .unwrap_or_default();
    let mut root = match json_schema(schema) {
        Value::Object(o) => o,
        other => {
            let mut o = Map::new();
            o.insert("allOf".into(), Value::Array(vec![other]));
            o
        }
    };
    root.insert(
        "$schema".into(),
        "https://json-schema.org/draft/2020-12/schema".into(),
    );
    root.insert("$defs".into(), Value::Object(defs));
    Value::Object(root)
}

/// The document's path template that `path` (without the base, no query) matches.
pub fn template(path: &str) -> Option<&'static str> {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    document()["paths"].as_object()?.keys().find_map(|t| {
        let ts: Vec<&str> = t.split('/').collect();
        let fits = ts.len() == segments.len()
            && ts
                .iter()
                .zip(&segments)
                .all(|(t, s)| (t.starts_with('{') && !s.is_empty()) || t == s);
        fits.then_some(t.as_str())
    })
}

/// Checks one response to `method url` (a full URL or a path, with or without the
/// base). `Ok(false)` when the path is not Codex's (one of ours: nothing to check).
pub fn check(
    method: &str,
    url: &str,
    status: u16,
    content_type: Option<&str>,
    body: &[u8],
) -> anyhow::Result<bool> {
    let path = url
        .split_once(BASE)
        .map_or(url, |(_, p)| p)
        .split(['?', '#'])
        .next()
        .unwrap_or_default();
    let Some(t) = template(path) else {
        return Ok(false);
    };
    let what = format!("{} {t} ({path}) -> {status}", method.to_uppercase());
    let op = &document()["paths"][t][method.to_lowercase()];
    if op.is_null() {
        bail!("{what}: Codex's file has no such operation");
    }
    let response = &op["responses"][status.to_string()];
    if response.is_null() {
        let listed: Vec<&String> = op["responses"]
            .as_object()
            .map(|o| o.keys().collect())
            .unwrap_or_default();
        bail!("{what}: status not in Codex's file (it lists {listed:?})");
    }
    let Some(content) = response["content"].as_object() else {
        // No body described: any (an error message, say) is left alone.
        return Ok(true);
    };
    let essence = content_type
        .and_then(|c| c.split(';').next())
        .map(|c| c.trim().to_ascii_lowercase())
        .ok_or_else(|| {
            anyhow!(
                "{what}: no content type (Codex's file lists {:?})",
                content.keys().collect::<Vec<_>>()
            )
        })?;
    let media = content.get(&essence).ok_or_else(|| {
        anyhow!(
            "{what}: content type {essence} not in Codex's file ({:?})",
            content.keys().collect::<Vec<_>>()
        )
    })?;
    let Some(schema) = media.get("schema") else {
        return Ok(true);
    };
    let instance: Value = if essence == "application/json" {
        serde_json::from_slice(body).with_context(|| format!("{what}: body is not JSON"))?
    } else if essence.starts_with("text/") {
        Value::String(
            String::from_utf8(body.to_vec()).with_context(|| format!("{what}: not UTF-8"))?,
        )
    } else {
        // Binary content (`format: binary`): nothing to validate.
        return Ok(true);
    };
    validate(&what, schema, &instance)?;
    Ok(true)
}

/// Validates `instance` against `schema` (a schema of the document).
pub fn validate(what: &str, schema: &Value, instance: &Value) -> anyhow::Result<()> {
    static CACHE: OnceLock<Mutex<HashMap<String, std::sync::Arc<jsonschema::Validator>>>> =
        OnceLock::new();
    let key = schema.to_string();
    let validator = {
        let mut cache = CACHE
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match cache.get(&key) {
            Some(v) => v.clone(),
            None => {
                let v = std::sync::Arc::new(
                    jsonschema::options()
                        .with_draft(jsonschema::Draft::Draft202012)
                        .build(&root_schema(schema))
                        .map_err(|e| anyhow!("{what}: the schema does not compile: {e}"))?,
                );
                cache.insert(key, v.clone());
                v
            }
        }
    };
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    if !errors.is_empty() {
        bail!(
            "{what}: the body does not match Codex's schema:\n  {}\nbody: {instance}",
            errors.join("\n  ")
        );
    }
    Ok(())
}

/// The component schema `name` of the document.
pub fn schema(name: &str) -> Value {
    serde_json::json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// Sends `request`, checks the response against Codex's file, and gives back status,
/// headers and body.
pub async fn send(
    request: reqwest::RequestBuilder,
) -> anyhow::Result<(u16, reqwest::header::HeaderMap, Vec<u8>)> {
    let (client, request) = request.build_split();
    let request = request?;
    let (method, url) = (request.method().to_string(), request.url().to_string());
    let response = client.execute(request).await?;
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let headers = response.headers().clone();
    let body = response.bytes().await?.to_vec();
    check(&method, &url, status, content_type.as_deref(), &body)?;
    Ok((status, headers, body))
}
