//! The sales' state file: availabilities, which availability each held slot was taken
//! from, and the datasets sales fetched (deleted when their sale is over). Written
//! whole (a temporary file, fsynced, renamed over the old one) on the blocking pool,
//! saves landing in the order they were made; a file that cannot be read is set aside
//! as `.corrupt`, not trusted.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use codex_core::Cid;
use codex_market::SlotId;
use codex_market::alloy::primitives::U256;
use serde_json::{Value, json};

use super::availability::Availability;

/// What the file holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct SavedState {
    pub(crate) availabilities: Vec<Availability>,
    /// Held slots and the availability each was taken from.
    pub(crate) slots: BTreeMap<SlotId, String>,
    /// Datasets fetched by sales, by the slot whose sale fetched them.
    pub(crate) owned_data: BTreeMap<SlotId, Cid>,
    /// Where the seller is in the marketplace's events: a restarted node reads on
    /// from there, so requests made while it was down are seen.
    pub(crate) events: Option<codex_market::Events>,
}

fn availability_to_json(a: &Availability) -> Value {
    json!({
        "id": a.id,
        "totalSize": a.total_size.to_string(),
        "freeSize": a.free_size.to_string(),
        "duration": a.duration.to_string(),
        "minPricePerBytePerSecond": a.min_price_per_byte_per_second.to_string(),
        "totalCollateral": a.total_collateral.to_string(),
        "totalRemainingCollateral": a.total_remaining_collateral.to_string(),
        "enabled": a.enabled,
        "until": a.until,
    })
}

fn availability_from_json(v: &Value) -> Option<Availability> {
    let n = |k: &str| -> Option<U256> {
        match v.get(k)? {
            Value::String(s) => s.trim().parse().ok(),
            Value::Number(n) => n.as_u64().map(U256::from),
            _ => None,
        }
    };
    let small = |k: &str| n(k).and_then(|x| u64::try_from(x).ok());
    Some(Availability {
        id: v.get("id")?.as_str()?.to_string(),
        total_size: small("totalSize")?,
        free_size: small("freeSize")?,
        duration: small("duration")?,
        min_price_per_byte_per_second: n("minPricePerBytePerSecond")?,
        total_collateral: n("totalCollateral")?,
        total_remaining_collateral: n("totalRemainingCollateral")?,
        enabled: v.get("enabled")?.as_bool()?,
        // Files written before `until` existed: no limit.
        until: v.get("until").map_or(Some(0), Value::as_u64)?,
    })
}

impl SavedState {
    fn to_json(&self) -> Value {
        let slots: serde_json::Map<String, Value> = self
            .slots
            .iter()
            .map(|(s, a)| (s.to_string(), json!(a)))
            .collect();
        let owned: serde_json::Map<String, Value> = self
            .owned_data
            .iter()
            .map(|(s, c)| (s.to_string(), json!(c.to_string())))
            .collect();
        json!({
            "availabilities": self.availabilities.iter().map(availability_to_json).collect::<Vec<_>>(),
            "slots": slots,
            "ownedData": owned,
            "events": self.events.as_ref().and_then(|e| serde_json::to_value(e).ok()),
        })
    }

    /// Reads what [`SavedState::to_json`] wrote; entries that do not parse are skipped.
    fn from_json(v: &Value) -> Self {
        let mut state = SavedState {
            availabilities: v["availabilities"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(availability_from_json)
                .collect(),
            events: v
                .get("events")
                .and_then(|e| serde_json::from_value(e.clone()).ok()),
            ..SavedState::default()
        };
        for (slot, a) in v["slots"].as_object().into_iter().flatten() {
            if let (Ok(id), Some(a)) = (slot.parse(), a.as_str()) {
                state.slots.insert(SlotId(id), a.to_string());
            }
        }
        for (slot, cid) in v["ownedData"].as_object().into_iter().flatten() {
            if let (Ok(id), Some(Ok(cid))) = (slot.parse(), cid.as_str().map(Cid::from_str)) {
                state.owned_data.insert(SlotId(id), cid);
            }
        }
        state
    }
}

/// Reads the state at `path`: empty when there is none; a file that does not parse is
/// renamed to `.corrupt` and reported.
pub(crate) fn load(path: &Path) -> SavedState {
    match std::fs::read(path) {
        Ok(bytes) => match serde_json::from_slice::<Value>(&bytes) {
            Ok(v) => SavedState::from_json(&v),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "unreadable sales state set aside");
                let _ = std::fs::rename(path, path.with_extension("corrupt"));
                SavedState::default()
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => SavedState::default(),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read the sales state");
            SavedState::default()
        }
    }
}

/// Where the state is saved, and the order of saves.
#[derive(Debug)]
pub(crate) struct StateFile {
    path: PathBuf,
    /// Saves made.
    saves: AtomicU64,
    /// The last save on disk.
    written: Arc<Mutex<u64>>,
}

impl StateFile {
    pub(crate) fn new(path: PathBuf) -> Self {
        StateFile {
            path,
            saves: AtomicU64::new(0),
            written: Arc::new(Mutex::new(0)),
        }
    }

    /// Writes `state`. Within a runtime the file is written on the blocking pool
    /// (await the handle to know it is on disk); a later save is never overwritten by
    /// an earlier one. Without a runtime it is written before this returns.
    pub(crate) fn save(&self, state: &SavedState) -> Option<tokio::task::JoinHandle<()>> {
        let (path, value) = (self.path.clone(), state.to_json());
        let seq = self.saves.fetch_add(1, Ordering::SeqCst) + 1;
        let written = Arc::clone(&self.written);
        let write = move || {
            let mut last = written
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if *last >= seq {
                return; // a later state is already on disk
            }
            let result = (|| -> std::io::Result<()> {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                let tmp = path.with_extension("tmp");
                std::fs::write(&tmp, serde_json::to_vec_pretty(&value)?)?;
                std::fs::File::open(&tmp)?.sync_all()?;
                std::fs::rename(&tmp, &path)
            })();
            match result {
                Ok(()) => *last = seq,
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot save the sales state");
                }
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => Some(rt.spawn_blocking(write)),
            Err(_) => {
                write();
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_state_reads_back_and_a_corrupt_file_is_set_aside() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("sales").join("state.json");
        let mut state = SavedState::default();
        state.availabilities.push(Availability::new(
            "a1".into(),
            1000,
            3600,
            U256::from(1),
            U256::from(500),
        )?);
        let slot = SlotId([7u8; 32].into());
        state.slots.insert(slot, "a1".into());
        state.owned_data.insert(
            slot,
            "zDvZRwzkwbhyRWn7A5uoSvU4qe2ERHkv7pgtchsgqwm356Q6DAVe".parse()?,
        );
        state.events = Some(codex_market::Events::from_block(1234).with_confirmations(3));
        let file = StateFile::new(path.clone());
        if let Some(h) = file.save(&state) {
            h.await?;
        }
        assert_eq!(load(&path), state);
        std::fs::write(&path, b"{ not json")?;
        assert_eq!(load(&path), SavedState::default());
        assert!(path.with_extension("corrupt").exists());
        Ok(())
    }
}
