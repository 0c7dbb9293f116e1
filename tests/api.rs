//! The REST API of a real node (sled store, HTTP on loopback).

use std::time::Duration;

use codex::{Node, NodeConfig};
use rand::{RngCore, SeedableRng, rngs::StdRng};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn start(dir: &std::path::Path, quota: u64) -> anyhow::Result<Node> {
    Ok(Node::start(NodeConfig {
        data_dir: dir.to_path_buf(),
        api_port: 0,
        storage_quota: quota,
        network: None,
        ..NodeConfig::default()
    })
    .await?)
}

fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

async fn upload(
    client: &reqwest::Client,
    node: &Node,
    data: Vec<u8>,
) -> anyhow::Result<reqwest::Response> {
    Ok(client
        .post(format!("{}/data", node.api_url()))
        .body(data)
        .send()
        .await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trips_are_byte_identical() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let node = start(dir.path(), 1 << 30).await?;
    let client = reqwest::Client::new();
    for (i, len) in [1usize, 65_535, 65_536, 65_537, 100 << 20]
        .into_iter()
        .enumerate()
    {
        let data = random(len, i as u64);
        let res = client
            .post(format!("{}/data", node.api_url()))
            .header("Content-Type", "application/x-test")
            .header(
                "Content-Disposition",
                format!("attachment; filename=\"file-{len}.bin\""),
            )
            .body(data.clone())
            .send()
            .await?;
        assert_eq!(res.status(), StatusCode::OK, "upload of {len} bytes");
        let cid = res.text().await?;
        assert!(cid.starts_with("zDvZRwz"), "manifest CID {cid}");

        let res = client
            .get(format!("{}/data/{cid}", node.api_url()))
            .send()
            .await?;
        assert_eq!(res.status(), StatusCode::OK);
        let headers = res.headers().clone();
        assert_eq!(headers["content-length"].to_str()?, len.to_string());
        assert_eq!(
            headers["content-type"].to_str()?,
            "application/octet-stream"
        );
        assert_eq!(headers["x-codex-mimetype"].to_str()?, "application/x-test");
        assert_eq!(
            headers["content-disposition"].to_str()?,
            format!("attachment; filename=\"file-{len}.bin\"")
        );
        let body = res.bytes().await?;
        assert!(body[..] == data[..], "download of {len} bytes differs");
    }
    node.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_gets_codex_manifest_cid() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let node = start(dir.path(), 1 << 30).await?;
    let client = reqwest::Client::new();
    let res = upload(&client, &node, b"hello".to_vec()).await?;
    assert_eq!(res.status(), StatusCode::OK);
    // reference §2.2: no filename, no mimetype.
    assert_eq!(
        res.text().await?,
        "zDvZRwzkwbhyRWn7A5uoSvU4qe2ERHkv7pgtchsgqwm356Q6DAVe"
    );
    let list: Value = client
        .get(format!("{}/data", node.api_url()))
        .send()
        .await?
        .json()
        .await?;
    let entry = &list["content"][0];
    assert_eq!(
        entry["cid"],
        "zDvZRwzkwbhyRWn7A5uoSvU4qe2ERHkv7pgtchsgqwm356Q6DAVe"
    );
    assert_eq!(
        entry["manifest"]["treeCid"],
        "zDzSvJTfBe4Dz6htuLuji1Ts5sCKE8PyEHDrB61e6N1W4kcCi5zN"
    );
    assert_eq!(entry["manifest"]["datasetSize"], 5);
    assert_eq!(entry["manifest"]["blockSize"], 65536);
    assert_eq!(entry["manifest"]["protected"], false);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_errors() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let node = start(dir.path(), 1 << 30).await?;
    let client = reqwest::Client::new();
    let url = node.api_url();

    let res = upload(&client, &node, Vec::new()).await?;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(res.text().await?.contains("empty"));

    let res = client
        .post(format!("{url}/data"))
        .header("Content-Type", "not a mime type")
        .body("x")
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);

    for bad in ["notacid", "zzz", "z111"] {
        let res = client.get(format!("{url}/data/{bad}")).send().await?;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{bad}");
        assert!(res.text().await?.contains("Incorrect Cid"));
    }
    let unknown = "zDvZRwzkwbhyRWn7A5uoSvU4qe2ERHkv7pgtchsgqwm356Q6DAVe";
    assert_eq!(
        client
            .get(format!("{url}/data/{unknown}"))
            .send()
            .await?
            .status(),
        StatusCode::NOT_FOUND
    );
    let exists: Value = client
        .get(format!("{url}/data/{unknown}/exists"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(exists, json!({"has": false}));

    let space: Value = client
        .get(format!("{url}/space"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(space["totalBlocks"], 0);
    assert_eq!(space["quotaUsedBytes"], 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_quota_is_refused_and_leaves_nothing() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let node = start(dir.path(), 1 << 20).await?;
    let client = reqwest::Client::new();
    let url = node.api_url();
    let small = upload(&client, &node, random(1000, 1)).await?;
    assert_eq!(small.status(), StatusCode::OK);
    let small_cid = small.text().await?;
    let before: Value = client
        .get(format!("{url}/space"))
        .send()
        .await?
        .json()
        .await?;

    let res = upload(&client, &node, random(3 << 20, 2)).await?;
    assert_eq!(res.status(), StatusCode::INSUFFICIENT_STORAGE);
    assert!(res.text().await?.contains("quota"));
    // Let an abandoned session's background abort run, if any.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after: Value = client
        .get(format!("{url}/space"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(before, after, "a refused upload changed the counters");
    let list: Value = client
        .get(format!("{url}/data"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(list["content"].as_array().map(Vec::len), Some(1));
    let res = client.get(format!("{url}/data/{small_cid}")).send().await?;
    assert_eq!(res.bytes().await?.to_vec(), random(1000, 1));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_exists_delete_and_space() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let node = start(dir.path(), 1 << 30).await?;
    let client = reqwest::Client::new();
    let url = node.api_url();
    let a = upload(&client, &node, random(200_000, 3))
        .await?
        .text()
        .await?;
    let b = upload(&client, &node, random(10, 4)).await?.text().await?;
    let list: Value = client
        .get(format!("{url}/data"))
        .send()
        .await?
        .json()
        .await?;
    let mut cids: Vec<&str> = list["content"]
        .as_array()
        .map(|v| v.iter().filter_map(|e| e["cid"].as_str()).collect())
        .unwrap_or_default();
    cids.sort();
    let mut expected = vec![a.as_str(), b.as_str()];
    expected.sort();
    assert_eq!(cids, expected);

    let space: Value = client
        .get(format!("{url}/space"))
        .send()
        .await?
        .json()
        .await?;
    // 4 + 1 data blocks of 64 KiB, and two manifests.
    assert_eq!(space["totalBlocks"], 7);

    let exists: Value = client
        .get(format!("{url}/data/{a}/exists"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(exists, json!({"has": true}));
    let res = client.delete(format!("{url}/data/{a}")).send().await?;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let exists: Value = client
        .get(format!("{url}/data/{a}/exists"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(exists, json!({"has": false}));
    assert_eq!(
        client.get(format!("{url}/data/{a}")).send().await?.status(),
        StatusCode::NOT_FOUND
    );
    let space: Value = client
        .get(format!("{url}/space"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(space["totalBlocks"], 2);
    let res = client.get(format!("{url}/data/{b}")).send().await?;
    assert_eq!(res.bytes().await?.to_vec(), random(10, 4));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_survives_a_restart() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = random(300_000, 5);
    let cid = {
        let node = start(dir.path(), 1 << 30).await?;
        let cid = upload(&reqwest::Client::new(), &node, data.clone())
            .await?
            .text()
            .await?;
        node.shutdown().await?;
        cid
    };
    let node = start(dir.path(), 1 << 30).await?;
    let res = reqwest::get(format!("{}/data/{cid}", node.api_url())).await?;
    assert_eq!(res.bytes().await?.to_vec(), data);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_coding_through_the_api() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let node = start(dir.path(), 1 << 30).await?;
    let client = reqwest::Client::new();
    let url = node.api_url();
    let data = random(1_000_017, 9);
    let cid = upload(&client, &node, data.clone()).await?.text().await?;

    let res = client
        .post(format!("{url}/data/{cid}/erasure"))
        .json(&serde_json::json!({ "k": 3, "m": 2 }))
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::OK);
    let protected = res.text().await?;
    assert!(protected.starts_with("zDvZRwz") && protected != cid);

    let res = client.get(format!("{url}/data/{protected}")).send().await?;
    assert_eq!(
        res.headers()["content-length"].to_str()?,
        data.len().to_string()
    );
    assert!(
        res.bytes().await?[..] == data[..],
        "protected dataset reads back the original file"
    );

    let list: Value = client
        .get(format!("{url}/data"))
        .send()
        .await?
        .json()
        .await?;
    let entry = list["content"]
        .as_array()
        .and_then(|v| v.iter().find(|e| e["cid"] == protected.as_str()))
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("protected manifest not listed"))?;
    assert_eq!(entry["manifest"]["protected"], true);
    // 16 blocks, K=3: 6 columns, 30 blocks of 64 KiB.
    assert_eq!(entry["manifest"]["datasetSize"], 30 * 65536);

    for (body, status) in [
        (
            serde_json::json!({ "k": 0, "m": 2 }),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            serde_json::json!({ "k": 17, "m": 2 }),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ] {
        let res = client
            .post(format!("{url}/data/{cid}/erasure"))
            .json(&body)
            .send()
            .await?;
        assert_eq!(res.status(), status, "{body}");
    }
    let res = client
        .post(format!("{url}/data/{protected}/erasure"))
        .json(&serde_json::json!({ "k": 2, "m": 1 }))
        .send()
        .await?;
    assert_eq!(
        res.status(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "protected twice"
    );
    let unknown = "zDvZRwzkwbhyRWn7A5uoSvU4qe2ERHkv7pgtchsgqwm356Q6DAVe";
    let res = client
        .post(format!("{url}/data/{unknown}/erasure"))
        .json(&serde_json::json!({ "k": 2, "m": 1 }))
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    Ok(())
}
