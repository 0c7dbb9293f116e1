//! The REST API's guards: an optional bearer token (`--api-token-file`) and limits on
//! what a request may make the node hold in memory.
//!
//! - With a token, every route answers **401** (`WWW-Authenticate: Bearer`) unless the
//!   request carries `Authorization: Bearer TOKEN`; the comparison takes the same time
//!   whatever the presented token is.
//! - Request headers: at most [`MAX_HEADERS`] fields and [`MAX_HEADER_BYTES`] in all,
//!   else **431**. hyper reads at most ~408 KiB of head and 100 fields per request
//!   before any of this runs (its own 431 beyond), so a head is bounded in memory
//!   either way.
//! - Bodies buffered by a handler (JSON and other small bodies): at most
//!   [`MAX_BODY_BYTES`], else **413**. The upload (`POST /data`) is streamed to the
//!   store without a limit: the quota bounds it.

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::{Error, Result};

/// Largest body a handler buffers (JSON bodies); the streamed upload is exempt.
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// Largest total size of a request's header fields (names, values, `": "` and CRLF).
pub const MAX_HEADER_BYTES: usize = 16 << 10;
/// Most header fields in a request.
pub const MAX_HEADERS: usize = 64;

/// What the guard checks. Its `Debug` never shows the token.
#[derive(Clone)]
struct Guard {
    token: Option<Arc<[u8]>>,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Checks that `token` can be sent in an `Authorization` header: not empty, visible
/// ASCII only (no spaces).
///
/// # Errors
/// [`Error::Io`] of kind `InvalidInput` naming the rule broken (never the token).
pub fn check_token(token: &str) -> Result<()> {
    let bad = |why: &str| {
        Error::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("unusable API token: {why}"),
        ))
    };
    if token.is_empty() {
        return Err(bad("it is empty"));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad("only visible ASCII characters (no spaces) are allowed"));
    }
    Ok(())
}

/// `router` behind the guards: the token check (when `token` is set), the header
/// limits, and [`MAX_BODY_BYTES`] for buffered bodies (a route's own
/// `DefaultBodyLimit`, as the upload's, wins).
///
/// # Errors
/// As [`check_token`].
pub(crate) fn protect(router: Router, token: Option<&str>) -> Result<Router> {
    if let Some(t) = token {
        check_token(t)?;
    }
    let guard = Guard {
        token: token.map(|t| Arc::from(t.as_bytes())),
    };
    Ok(router
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(guard, check)))
}

async fn check(State(guard): State<Guard>, req: Request, next: Next) -> Response {
    if let Some(refused) = header_limits(req.headers()) {
        return (StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, refused).into_response();
    }
    if let Some(token) = &guard.token
        && !authorized(req.headers(), token)
    {
        tracing::debug!(path = %req.uri().path(), "API request without a valid token");
        return unauthorized(req.headers().contains_key(header::AUTHORIZATION));
    }
    next.run(req).await
}

/// Why the header fields are refused, if they are.
fn header_limits(headers: &HeaderMap) -> Option<String> {
    if headers.len() > MAX_HEADERS {
        return Some(format!(
            "{} header fields; at most {MAX_HEADERS} are accepted",
            headers.len()
        ));
    }
    let bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    (bytes > MAX_HEADER_BYTES)
        .then(|| format!("{bytes} bytes of header fields; at most {MAX_HEADER_BYTES} are accepted"))
}

/// Whether the request's `Authorization` is `Bearer TOKEN` (the scheme in any case).
fn authorized(headers: &HeaderMap, token: &[u8]) -> bool {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return false;
    };
    let value = value.as_bytes();
    let Some((scheme, presented)) = value.split_at_checked(7) else {
        return false;
    };
    scheme.eq_ignore_ascii_case(b"bearer ") && constant_time_eq(presented, token)
}

/// Compares in a time that depends on the length of `expected` only: every byte of it
/// is looked at whatever `presented` holds.
fn constant_time_eq(presented: &[u8], expected: &[u8]) -> bool {
    let mut diff = presented.len() ^ expected.len();
    for (i, e) in expected.iter().enumerate() {
        let p = presented.get(i).copied().unwrap_or(!e);
        diff |= usize::from(p ^ e);
    }
    std::hint::black_box(diff) == 0
}

fn unauthorized(had_credentials: bool) -> Response {
    let challenge = if had_credentials {
        r#"Bearer realm="codex", error="invalid_token""#
    } else {
        r#"Bearer realm="codex""#
    };
    let mut res = (
        StatusCode::UNAUTHORIZED,
        "this node's API needs a token: send `Authorization: Bearer TOKEN` \
         (codex-node --api-token-file FILE, or CODEX_API_TOKEN)",
    )
        .into_response();
    res.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_exactly() {
        assert!(constant_time_eq(b"secret", b"secret"));
        for wrong in [&b""[..], b"secre", b"secreT", b"secrets", b"\0\0\0\0\0\0"] {
            assert!(!constant_time_eq(wrong, b"secret"), "{wrong:?}");
        }
    }

    #[test]
    fn the_bearer_scheme_is_needed() {
        let with = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, HeaderValue::from_static(v));
            h
        };
        assert!(authorized(&with("Bearer tok"), b"tok"));
        assert!(authorized(&with("bearer tok"), b"tok"));
        assert!(!authorized(&with("Basic tok"), b"tok"));
        assert!(!authorized(&with("Bearer tok2"), b"tok"));
        assert!(!authorized(&with("Bearer"), b"tok"));
        assert!(!authorized(&HeaderMap::new(), b"tok"));
    }

    #[test]
    fn unusable_tokens_are_refused_without_showing_them() {
        assert!(check_token("abc-DEF_123.~+/=").is_ok());
        for bad in ["", "has space", "tab\there", "naïve"] {
            let e = check_token(bad).err().map(|e| e.to_string());
            assert!(e.is_some(), "{bad:?} accepted");
            if !bad.is_empty() {
                assert!(!e.unwrap_or_default().contains(bad), "the token is shown");
            }
        }
        let g = Guard {
            token: Some(Arc::from(&b"hunter2"[..])),
        };
        assert!(!format!("{g:?}").contains("hunter2"));
    }
}
