//! The node's security settings on real nodes over loopback: the API's bearer token,
//! the limits on headers and buffered bodies, the loopback default and the key files.

use std::path::Path;

use codex::node::security::{MAX_BODY_BYTES, MAX_HEADER_BYTES, MAX_HEADERS};
use codex::{Node, NodeConfig};
use reqwest::StatusCode;
use serde_json::Value;

const TOKEN: &str = "s3cret-T0ken_for.tests";

async fn start(dir: &Path, token: Option<&str>) -> anyhow::Result<Node> {
    Ok(Node::start(NodeConfig {
        data_dir: dir.to_path_buf(),
        api_port: 0,
        api_token: token.map(str::to_string),
        storage_quota: 256 << 20,
        network: None,
        ..NodeConfig::default()
    })
    .await?)
}

/// A request with `auth` as its `Authorization` header (none for `None`).
fn request(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    auth: Option<&str>,
) -> reqwest::RequestBuilder {
    let req = client.request(method, url);
    match auth {
        Some(a) => req.header("Authorization", a),
        None => req,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_guards_every_route() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let node = start(dir.path(), Some(TOKEN)).await?;
    let api = node.api_url();
    let client = reqwest::Client::new();
    let right = format!("Bearer {TOKEN}");
    let wrong_tokens = [
        None,
        Some("Bearer wrong".to_string()),
        Some(format!("Bearer {TOKEN}x")),
        Some(format!("Bearer {}", &TOKEN[..TOKEN.len() - 1])),
        Some(format!("Basic {TOKEN}")),
        Some(TOKEN.to_string()),
    ];

    // The upload: refused without the token, and nothing stored.
    for auth in &wrong_tokens {
        let res = request(
            &client,
            reqwest::Method::POST,
            &format!("{api}/data"),
            auth.as_deref(),
        )
        .body("hello")
        .send()
        .await?;
        assert_eq!(
            res.status(),
            StatusCode::UNAUTHORIZED,
            "upload with {auth:?}"
        );
        let challenge = res
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().map(str::to_string))
            .transpose()?
            .unwrap_or_default();
        assert!(
            challenge.starts_with("Bearer"),
            "WWW-Authenticate: {challenge:?}"
        );
        let text = res.text().await?;
        assert!(text.contains("Authorization: Bearer"), "{text:?}");
        assert!(!text.contains(TOKEN), "the answer shows the token");
    }
    let res = request(
        &client,
        reqwest::Method::GET,
        &format!("{api}/space"),
        Some(&right),
    )
    .send()
    .await?;
    assert_eq!(res.status(), StatusCode::OK);
    let space: Value = res.json().await?;
    assert_eq!(space["totalBlocks"], 0, "a refused upload stored blocks");

    let res = request(
        &client,
        reqwest::Method::POST,
        &format!("{api}/data"),
        Some(&right),
    )
    .body("hello")
    .send()
    .await?;
    assert_eq!(res.status(), StatusCode::OK);
    let cid = res.text().await?;
    assert_eq!(cid, "zDvZRwzkwbhyRWn7A5uoSvU4qe2ERHkv7pgtchsgqwm356Q6DAVe");

    // Reads, the debug info, a delete and an unknown path: 401 without, 2xx/404 with.
    let cases = [
        (reqwest::Method::GET, format!("{api}/data"), StatusCode::OK),
        (
            reqwest::Method::GET,
            format!("{api}/data/{cid}"),
            StatusCode::OK,
        ),
        (
            reqwest::Method::GET,
            format!("{api}/data/{cid}/exists"),
            StatusCode::OK,
        ),
        (reqwest::Method::GET, format!("{api}/space"), StatusCode::OK),
        (
            reqwest::Method::GET,
            format!("{api}/debug/info"),
            StatusCode::OK,
        ),
        (
            reqwest::Method::GET,
            format!("{api}/no-such-route"),
            StatusCode::NOT_FOUND,
        ),
        (
            reqwest::Method::DELETE,
            format!("{api}/data/{cid}"),
            StatusCode::NO_CONTENT,
        ),
    ];
    for (method, url, ok) in cases {
        for auth in &wrong_tokens {
            let res = request(&client, method.clone(), &url, auth.as_deref())
                .send()
                .await?;
            assert_eq!(
                res.status(),
                StatusCode::UNAUTHORIZED,
                "{method} {url} with {auth:?}"
            );
            assert!(res.headers().contains_key("www-authenticate"));
        }
        let res = request(&client, method.clone(), &url, Some(&right))
            .send()
            .await?;
        assert_eq!(res.status(), ok, "{method} {url} with the token");
        if url.ends_with(&cid) && method == reqwest::Method::GET {
            assert_eq!(&res.bytes().await?[..], b"hello");
        }
    }
    // The scheme is case-insensitive (RFC 7235).
    let res = request(
        &client,
        reqwest::Method::GET,
        &format!("{api}/space"),
        Some(&format!("bearer {TOKEN}")),
    )
    .send()
    .await?;
    assert_eq!(res.status(), StatusCode::OK);
    node.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_tokens_are_refused_and_never_shown() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    for bad in ["", "two words", "tab\there"] {
        let e = start(dir.path(), Some(bad)).await.err();
        let e = e.map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("API token"), "{bad:?} accepted: {e:?}");
    }
    let config = NodeConfig {
        api_token: Some(TOKEN.into()),
        ..NodeConfig::default()
    };
    let shown = format!("{config:?} {config:#?}");
    assert!(!shown.contains(TOKEN), "Debug shows the token: {shown}");
    assert!(shown.contains("api_token"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffered_bodies_are_limited_the_upload_is_not() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let node = start(dir.path(), None).await?;
    let api = node.api_url();
    let client = reqwest::Client::new();
    let cid = client
        .post(format!("{api}/data"))
        .body("hello")
        .send()
        .await?
        .text()
        .await?;
    let json_of = |len: usize| {
        let mut body = br#"{"k": 2, "m": 1, "pad": ""#.to_vec();
        body.resize(len - 2, b'x');
        body.extend_from_slice(br#""}"#);
        body
    };

    // One byte over the limit: 413 with a message, on each route that reads a body.
    for path in [
        format!("/data/{cid}/erasure"),
        format!("/data/{cid}/verifiable"),
        format!("/storage/request/{cid}"),
        "/sales/availability".to_string(),
    ] {
        let res = client
            .post(format!("{api}{path}"))
            .header("Content-Type", "application/json")
            .body(json_of(MAX_BODY_BYTES + 1))
            .send()
            .await?;
        assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE, "POST {path}");
        let text = res.text().await?;
        assert!(text.contains("length limit"), "POST {path}: {text:?}");
    }
    // At the limit the body is read (and the dataset found too small to code).
    let res = client
        .post(format!("{api}/data/{cid}/erasure"))
        .header("Content-Type", "application/json")
        .body(json_of(MAX_BODY_BYTES))
        .send()
        .await?;
    assert_ne!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);

    // The streamed upload takes more than any buffered limit (axum's 2 MiB included).
    let big = vec![7u8; 3 << 20];
    let res = client
        .post(format!("{api}/data"))
        .body(big.clone())
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::OK);
    let big_cid = res.text().await?;
    let got = client
        .get(format!("{api}/data/{big_cid}"))
        .send()
        .await?
        .bytes()
        .await?;
    assert!(got[..] == big[..]);
    node.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_or_too_many_headers_get_431() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let node = start(dir.path(), Some(TOKEN)).await?;
    let url = format!("{}/space", node.api_url());
    let client = reqwest::Client::new();
    let auth = format!("Bearer {TOKEN}");

    let res = client
        .get(&url)
        .header("Authorization", &auth)
        .header("X-Padding", "x".repeat(MAX_HEADER_BYTES / 2))
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::OK, "half the limit passes");

    // Checked before the token: no work for an unauthenticated giant head either.
    for with_token in [false, true] {
        let mut req = client
            .get(&url)
            .header("X-Padding", "x".repeat(MAX_HEADER_BYTES + 1));
        if with_token {
            req = req.header("Authorization", &auth);
        }
        let res = req.send().await?;
        assert_eq!(res.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        let text = res.text().await?;
        assert!(text.contains("bytes of header fields"), "{text:?}");
    }

    let mut req = client.get(&url).header("Authorization", &auth);
    for i in 0..MAX_HEADERS + 1 {
        req = req.header(format!("X-Field-{i}"), "1");
    }
    let res = req.send().await?;
    assert_eq!(res.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert!(res.text().await?.contains("header fields"));

    // Far beyond: hyper refuses the head itself (431) before reading it all.
    let res = client
        .get(&url)
        .header("X-Padding", "x".repeat(1 << 20))
        .send()
        .await;
    if let Ok(res) = res {
        assert_eq!(res.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    }
    // The node still answers.
    let res = client
        .get(&url)
        .header("Authorization", &auth)
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::OK);
    node.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_binds_loopback_by_default() -> anyhow::Result<()> {
    assert!(NodeConfig::default().api_bindaddr.is_loopback());
    assert_eq!(NodeConfig::default().api_token, None);
    let dir = tempfile::tempdir()?;
    let node = Node::start(NodeConfig {
        data_dir: dir.path().to_path_buf(),
        api_port: 0,
        network: None,
        ..NodeConfig::default()
    })
    .await?;
    assert!(node.api_addr().ip().is_loopback(), "{}", node.api_addr());
    assert!(node.api_url().starts_with("http://127.0.0.1:"));
    node.shutdown().await?;
    Ok(())
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_files_are_private() -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| -> anyhow::Result<u32> {
        Ok(std::fs::metadata(p)?.permissions().mode() & 0o777)
    };

    // The libp2p key the node creates: 0600, and the same key after a restart.
    let dir = tempfile::tempdir()?;
    let config = || NodeConfig {
        data_dir: dir.path().to_path_buf(),
        api_port: 0,
        network: Some(codex::net::NetConfig {
            listen_addrs: vec!["/ip4/127.0.0.1/tcp/0".parse().expect("multiaddr")],
            ..codex::net::NetConfig::default()
        }),
        ..NodeConfig::default()
    };
    let node = Node::start(config()).await?;
    let peer = node.network().map(|n| n.peer_id());
    node.shutdown().await?;
    let key = dir.path().join("key");
    assert_eq!(mode(&key)?, 0o600, "the node key's mode");
    let node = Node::start(config()).await?;
    assert_eq!(node.network().map(|n| n.peer_id()), peer);
    node.shutdown().await?;
    assert_eq!(mode(&key)?, 0o600);

    // The marketplace key is only read, from a file only its owner may read.
    use codex::node::market::EthKey;
    const ETH: &str = "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
    let eth = dir.path().join("eth.key");
    std::fs::write(&eth, ETH)?;
    let eth_path = eth.to_str().unwrap_or_default();
    for loose in [0o644, 0o640, 0o604] {
        std::fs::set_permissions(&eth, std::fs::Permissions::from_mode(loose))?;
        let e = EthKey::parse(eth_path).err().map(|e| e.to_string());
        let e = e.unwrap_or_default();
        assert!(e.contains("chmod 600"), "mode {loose:o} accepted: {e:?}");
        assert!(!e.contains(ETH));
    }
    std::fs::set_permissions(&eth, std::fs::Permissions::from_mode(0o600))?;
    let k = EthKey::parse(eth_path)?;
    assert!(!format!("{k:?}").contains(ETH), "Debug shows the key");
    Ok(())
}

/// `--api-cors-origin`: a browser's preflight from the allowed origin is answered
/// (before the token is asked for: a preflight carries none) with the methods and
/// headers the API takes; responses carry `Access-Control-Allow-Origin` for it and
/// expose `Content-Disposition`; another origin gets no grant; without the setting no
/// CORS header is sent at all; an origin that is no header value stops the start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_grants_only_the_configured_origin() -> anyhow::Result<()> {
    const ORIGIN: &str = "https://app.example";
    let dir = tempfile::tempdir()?;
    let node = Node::start(NodeConfig {
        data_dir: dir.path().join("cors"),
        api_port: 0,
        api_token: Some(TOKEN.into()),
        api_cors_origin: Some(ORIGIN.into()),
        network: None,
        ..NodeConfig::default()
    })
    .await?;
    let api = node.api_url();
    let client = reqwest::Client::new();
    let header = |res: &reqwest::Response, name: &str| {
        res.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_ascii_lowercase)
    };

    let preflight = client
        .request(reqwest::Method::OPTIONS, format!("{api}/data"))
        .header("Origin", ORIGIN)
        .header("Access-Control-Request-Method", "POST")
        .header(
            "Access-Control-Request-Headers",
            "authorization,content-type",
        )
        .send()
        .await?;
    assert!(preflight.status().is_success(), "{}", preflight.status());
    assert_eq!(
        header(&preflight, "access-control-allow-origin").as_deref(),
        Some(ORIGIN)
    );
    let methods = header(&preflight, "access-control-allow-methods").unwrap_or_default();
    for m in ["get", "post", "patch", "delete"] {
        assert!(methods.contains(m), "allowed methods {methods:?}");
    }
    let headers = header(&preflight, "access-control-allow-headers").unwrap_or_default();
    assert!(
        headers.contains("authorization") && headers.contains("content-type"),
        "allowed headers {headers:?}"
    );

    let upload = client
        .post(format!("{api}/data"))
        .header("Origin", ORIGIN)
        .header("Authorization", format!("Bearer {TOKEN}"))
        .body("cross-origin bytes")
        .send()
        .await?;
    assert_eq!(upload.status(), StatusCode::OK);
    assert_eq!(
        header(&upload, "access-control-allow-origin").as_deref(),
        Some(ORIGIN)
    );
    let cid = upload.text().await?;
    let download = client
        .get(format!("{api}/data/{cid}"))
        .header("Origin", ORIGIN)
        .header("Authorization", format!("Bearer {TOKEN}"))
        .send()
        .await?;
    assert_eq!(download.status(), StatusCode::OK);
    assert!(
        header(&download, "access-control-expose-headers")
            .unwrap_or_default()
            .contains("content-disposition")
    );
    assert_eq!(download.text().await?, "cross-origin bytes");

    // Another origin: no grant, and the token is still required.
    let other = client
        .get(format!("{api}/space"))
        .header("Origin", "https://evil.example")
        .send()
        .await?;
    assert_eq!(other.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(header(&other, "access-control-allow-origin"), None);
    node.shutdown().await?;

    // No setting: no CORS header at all.
    let plain = start(&dir.path().join("plain"), None).await?;
    let res = client
        .get(format!("{}/space", plain.api_url()))
        .header("Origin", ORIGIN)
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(&res, "access-control-allow-origin"), None);
    plain.shutdown().await?;

    let bad = Node::start(NodeConfig {
        data_dir: dir.path().join("bad"),
        api_port: 0,
        api_cors_origin: Some("https://a.example\nx".into()),
        network: None,
        ..NodeConfig::default()
    })
    .await;
    let e = bad.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("--api-cors-origin"), "{e}");
    Ok(())
}
