//! The REST API's parameters: CID path parameters (`/data/{cid}`, ...), the JSON bodies
//! of `POST /storage/request/{cid}` and `POST /sales/availability`, the slot id of
//! `/sales/slots/{id}`, and the peer id and `addrs` of `/connect/{peerId}`; each parsed
//! with the node's own code (the handlers call these same functions).
#![no_main]

use codex::node::purchasing::RequestParams;
use codex::node::sales::Availability;
use codex_core::Cid;
use codex_market::MarketplaceConfig;
use codex_market::alloy::primitives::B256;
use codex_net::{Multiaddr, PeerId};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(json) = serde_json::from_slice::<serde_json::Value>(data) {
        if let Ok(p) = RequestParams::from_json(&json) {
            let _ = p.validate(&MarketplaceConfig::default());
        }
        if let Ok(a) = Availability::from_json("id".into(), &json) {
            let _ = a.to_json();
        }
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(cid) = text.parse::<Cid>() {
        assert_eq!(cid.to_string().parse::<Cid>().ok(), Some(cid));
    }
    let _ = text.parse::<B256>();
    let _ = text.parse::<PeerId>();
    for a in text.split(',').filter(|s| !s.is_empty()) {
        if let Ok(addr) = a.parse::<Multiaddr>() {
            let _ = addr.to_string();
        }
    }
});
