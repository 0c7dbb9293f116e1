//! Where the network meets the other layers: announcing stored datasets, downloading
//! datasets from peers, and rebuilding by erasure decoding what no peer serves.

use std::sync::Arc;

use bytes::Bytes;
use codex_core::prelude::*;
use codex_core::{Block, Cid, Manifest};
use codex_net::{Download, Network};
use futures::StreamExt;
use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::node::data::{self, Dataset};

/// Announces that we provide a dataset: its manifest CID and its tree CID.
pub async fn announce(net: &Network, manifest_cid: Cid, manifest: &Manifest) {
    for cid in [manifest_cid, manifest.tree_cid] {
        if let Err(e) = net.provide(cid).await {
            tracing::warn!(%cid, error = %e, "cannot announce a dataset");
        }
    }
}

/// Withdraws the announcement of a dataset.
pub async fn withdraw(net: &Network, manifest_cid: Cid, manifest: &Manifest) {
    for cid in [manifest_cid, manifest.tree_cid] {
        let _ = net.unprovide(cid).await;
    }
}

/// Announces every dataset in the store, reading every manifest: at start when the
/// node has no usable file of the keys it provided ([`crate::node::provided`]).
pub async fn announce_all(net: &Network, store: &dyn BlockStore) -> Result<usize> {
    let manifests = store.manifests().await?;
    for (cid, m) in &manifests {
        announce(net, *cid, m).await;
    }
    Ok(manifests.len())
}

/// Downloads a whole dataset into the store from whichever peers have it, resuming what
/// an earlier attempt fetched. Blocks of a protected dataset that no peer serves are
/// rebuilt by erasure decoding. The manifest is stored last, and the dataset announced.
pub async fn download(net: &Network, store: &Arc<dyn BlockStore>, cid: Cid) -> Result<Manifest> {
    let block = codex_net::fetch_manifest_block(net, store, cid).await?;
    let manifest = Manifest::decode(block.data())?;
    let report = Download::new(net, Arc::clone(store), &manifest)
        .cid(cid)
        .run()
        .await?;
    finish(net, store, cid, block, &manifest, &report.missing).await?;
    Ok(manifest)
}

async fn finish(
    net: &Network,
    store: &Arc<dyn BlockStore>,
    cid: Cid,
    block: Block,
    manifest: &Manifest,
    missing: &[u64],
) -> Result<()> {
    if !missing.is_empty() {
        if !manifest.is_protected() {
            return Err(Error::Net(codex_net::Error::Unavailable(format!(
                "{} blocks of {cid}, the first {}",
                missing.len(),
                missing[0]
            ))));
        }
        let rebuilt = codex_erasure::decode(&**store, manifest).await?;
        tracing::info!(%cid, missing = missing.len(), rebuilt, "rebuilt what no peer served");
    }
    store.put_block(block).await?;
    announce(net, cid, manifest).await;
    Ok(())
}

/// Streams a dataset from the network: a plain dataset streams in order while later
/// blocks still arrive; a protected one is fetched first (missing blocks rebuilt) and
/// then read. A dataset already stored is read locally.
pub async fn stream(net: &Network, store: Arc<dyn BlockStore>, cid: Cid) -> Result<Dataset> {
    if store.has_block(&cid).await? {
        return data::open(store, cid).await;
    }
    let block = codex_net::fetch_manifest_block(net, &store, cid).await?;
    let manifest = Manifest::decode(block.data())?;
    if manifest.is_protected() {
        download(net, &store, cid).await?;
        return data::open(store, cid).await;
    }
    let (tx, rx) = mpsc::channel::<codex_net::Result<Bytes>>(16);
    let (net, m) = (net.clone(), manifest.clone());
    tokio::spawn(async move {
        let mut bytes = Download::new(&net, Arc::clone(&store), &m)
            .cid(cid)
            .stream();
        while let Some(item) = bytes.next().await {
            let failed = item.is_err();
            if tx.send(item).await.is_err() {
                tracing::info!(%cid, "download stopped before the end (reader left)");
                return;
            }
            if failed {
                tracing::warn!(%cid, "download failed");
                return;
            }
        }
        match bytes.report() {
            Some(report)
                if report.missing.is_empty()
                    && report.present + report.fetched == m.blocks_count() =>
            {
                if let Err(e) = finish(&net, &store, cid, block, &m, &[]).await {
                    tracing::warn!(%cid, error = %e, "cannot finish a download");
                }
            }
            _ => tracing::warn!(%cid, "download ended incomplete"),
        }
    });
    let size = manifest.original_size();
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
    .map(|r| r.map_err(Error::Net))
    .boxed();
    Ok(Dataset {
        manifest: Some(manifest),
        size,
        stream,
        metadata: None,
    })
}
