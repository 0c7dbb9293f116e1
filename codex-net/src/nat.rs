//! NAT traversal: the settings ([`NatConfig`], [`Nat`] as Codex's `--nat`), and what
//! the node knows of its reachability and connections ([`Reachability`],
//! [`ConnectionInfo`], [`RelayReservation`], [`HolePunchStats`]).
//!
//! AutoNAT (v1) asks connected peers to dial the node back at its observed addresses
//! and so decides whether it is publicly reachable. A node that is not reserves a slot
//! on a relay ([`NatConfig::relays`], or relays found among its peers: those whose
//! identify lists the circuit relay v2 hop protocol), listens on its `/p2p-circuit`
//! address and announces it (identify, so Kademlia, and the signed peer record). A
//! peer that reaches it through the relay upgrades the connection with DCUtR (hole
//! punching); once a direct connection exists the relayed one is closed, so the block
//! exchange runs on the direct one.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};

use crate::error::{Error, Result};

/// How the node learns the address others reach it at, as Codex's
/// `--nat any|none|upnp|extip:<IP>` (parsed with [`str::parse`]; `pmp` is refused).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Nat {
    /// Whatever works: a UPnP port mapping on the gateway when there is one, and the
    /// addresses AutoNAT confirms. The default (Codex's too).
    #[default]
    Any,
    /// No port mapping: only addresses AutoNAT confirms and the announced ones.
    None,
    /// A UPnP port mapping on the gateway (libp2p's UPnP behaviour): each listen port is
    /// mapped and the gateway's external address announced.
    Upnp,
    /// The node is reached at this IP (a NAT that forwards the listen ports, a public
    /// IP): every listen address is announced with it, port kept.
    ExtIp(IpAddr),
}

impl Nat {
    /// Whether the UPnP behaviour runs.
    pub fn uses_upnp(&self) -> bool {
        matches!(self, Nat::Any | Nat::Upnp)
    }
}

impl fmt::Display for Nat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Nat::Any => f.write_str("any"),
            Nat::None => f.write_str("none"),
            Nat::Upnp => f.write_str("upnp"),
            Nat::ExtIp(ip) => write!(f, "extip:{ip}"),
        }
    }
}

impl FromStr for Nat {
    type Err = Error;

    /// `any`, `none`, `upnp` (any case) or `extip:<IPv4 or IPv6>`.
    ///
    /// # Errors
    /// [`Error::InvalidNat`] naming the text and why it is refused.
    fn from_str(s: &str) -> Result<Nat> {
        let bad = |reason: String| Error::InvalidNat {
            value: s.to_string(),
            reason,
        };
        let t = s.trim();
        let lower = t.to_ascii_lowercase();
        match lower.as_str() {
            "any" => return Ok(Nat::Any),
            "none" => return Ok(Nat::None),
            "upnp" => return Ok(Nat::Upnp),
            "pmp" => {
                return Err(bad(
                    "NAT-PMP is not supported: use upnp, extip:<IP>, any or none".into(),
                ));
            }
            _ => {}
        }
        let Some(ip) = lower.strip_prefix("extip:") else {
            return Err(bad("expected any, none, upnp or extip:<IP>".into()));
        };
        let ip: IpAddr = ip
            .parse()
            .map_err(|e| bad(format!("{ip:?} is not an IP address: {e}")))?;
        if ip.is_unspecified() {
            return Err(bad(format!("{ip} is no address others can reach")));
        }
        Ok(Nat::ExtIp(ip))
    }
}

/// When the node reserves a slot on a relay.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum RelayMode {
    /// When AutoNAT says the node is private; the reservations are dropped when it
    /// says public. The default.
    #[default]
    Auto,
    /// From the start, whatever AutoNAT says.
    Always,
    /// Never: the node can only be reached directly.
    Never,
}

/// Limits of the node as a relay server (circuit relay v2): how many peers may hold a
/// slot, for how long, and how much a relayed connection may carry. Every limit is
/// bounded; over one, reservations or circuits are refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RelayServerConfig {
    /// Reservations held at once. Default 128.
    pub max_reservations: usize,
    /// Reservations one peer may hold at once. Default 4.
    pub max_reservations_per_peer: usize,
    /// How long a reservation lasts (the client renews it). Default 1 hour.
    pub reservation_duration: Duration,
    /// Relayed connections at once. Default 16.
    pub max_circuits: usize,
    /// Relayed connections one peer may have at once. Default 4.
    pub max_circuits_per_peer: usize,
    /// How long a relayed connection may last. Default 10 minutes.
    pub max_circuit_duration: Duration,
    /// Bytes a relayed connection may carry each way. Default 64 MiB.
    pub max_circuit_bytes: u64,
}

impl Default for RelayServerConfig {
    fn default() -> Self {
        RelayServerConfig {
            max_reservations: 128,
            max_reservations_per_peer: 4,
            reservation_duration: Duration::from_secs(3600),
            max_circuits: 16,
            max_circuits_per_peer: 4,
            max_circuit_duration: Duration::from_secs(600),
            max_circuit_bytes: 64 << 20,
        }
    }
}

impl RelayServerConfig {
    pub(crate) fn to_libp2p(self) -> libp2p::relay::Config {
        libp2p::relay::Config {
            max_reservations: self.max_reservations,
            max_reservations_per_peer: self.max_reservations_per_peer,
            reservation_duration: self.reservation_duration,
            max_circuits: self.max_circuits,
            max_circuits_per_peer: self.max_circuits_per_peer,
            max_circuit_duration: self.max_circuit_duration,
            max_circuit_bytes: self.max_circuit_bytes,
            ..libp2p::relay::Config::default()
        }
    }
}

/// AutoNAT's probes: when, how often, and which peers may answer them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AutonatConfig {
    /// The first probe after start. Default 15 s.
    pub boot_delay: Duration,
    /// The next probe while the status is unknown or not yet confirmed. Default 90 s.
    pub retry_interval: Duration,
    /// The next probe once the status is confirmed. Default 15 minutes.
    pub refresh_interval: Duration,
    /// Only peers at public IPs answer our probes, and we answer only peers at public
    /// IPs. Default true; false for private networks (and tests in them).
    pub only_global_ips: bool,
}

impl Default for AutonatConfig {
    fn default() -> Self {
        AutonatConfig {
            boot_delay: Duration::from_secs(15),
            retry_interval: Duration::from_secs(90),
            refresh_interval: Duration::from_secs(15 * 60),
            only_global_ips: true,
        }
    }
}

impl AutonatConfig {
    pub(crate) fn to_libp2p(self) -> libp2p::autonat::Config {
        libp2p::autonat::Config {
            boot_delay: self.boot_delay,
            retry_interval: self.retry_interval,
            refresh_interval: self.refresh_interval,
            only_global_ips: self.only_global_ips,
            // A peer answers one probe of ours in this long, at most.
            throttle_server_period: self.retry_interval.min(Duration::from_secs(90)),
            ..libp2p::autonat::Config::default()
        }
    }
}

/// NAT traversal settings ([`NetConfig::nat`](crate::NetConfig::nat)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatConfig {
    /// How the node learns its external address (`--nat`). Default [`Nat::Any`].
    pub nat: Nat,
    /// Addresses announced as the node's own, as given (a port forwarded by hand, a
    /// DNS name). Default none.
    pub announce_addrs: Vec<Multiaddr>,
    /// Relays to reserve a slot on, each ending in `/p2p/<peer id>`; they are tried
    /// before relays found among peers. Default none.
    pub relays: Vec<Multiaddr>,
    /// When to reserve. Default [`RelayMode::Auto`] (when AutoNAT says private).
    pub relay_mode: RelayMode,
    /// Relays reserved on at once, at most. Default 2.
    pub max_reservations: usize,
    /// Serve as a relay for others, with these limits. Default none.
    pub relay_server: Option<RelayServerConfig>,
    /// AutoNAT's probes. Default [`AutonatConfig::default`].
    pub autonat: AutonatConfig,
}

impl Default for NatConfig {
    fn default() -> Self {
        NatConfig {
            nat: Nat::Any,
            announce_addrs: Vec::new(),
            relays: Vec::new(),
            relay_mode: RelayMode::Auto,
            max_reservations: 2,
            relay_server: None,
            autonat: AutonatConfig::default(),
        }
    }
}

impl NatConfig {
    /// Checks the settings: relays end in `/p2p/<peer id>`, announced addresses hold
    /// something, no limit or interval of zero.
    ///
    /// # Errors
    /// [`Error::InvalidOption`] naming the first setting that is wrong.
    pub fn validate(&self) -> Result<()> {
        for addr in &self.relays {
            if !matches!(addr.iter().last(), Some(Protocol::P2p(_))) {
                return Err(invalid(
                    "nat.relays",
                    format!("{addr} does not end in /p2p/<relay peer id>"),
                ));
            }
            if addr.iter().any(|p| p == Protocol::P2pCircuit) {
                return Err(invalid(
                    "nat.relays",
                    format!("{addr} is itself a relayed address"),
                ));
            }
        }
        for addr in &self.announce_addrs {
            if addr.is_empty() {
                return Err(invalid("nat.announce_addrs", "an empty address"));
            }
        }
        if self.relay_mode != RelayMode::Never && self.max_reservations == 0 {
            return Err(invalid(
                "nat.max_reservations",
                "0 reservations: set relay_mode to Never instead",
            ));
        }
        if let Some(s) = &self.relay_server {
            let limits = [
                ("nat.relay_server.max_reservations", s.max_reservations),
                (
                    "nat.relay_server.max_reservations_per_peer",
                    s.max_reservations_per_peer,
                ),
                ("nat.relay_server.max_circuits", s.max_circuits),
                (
                    "nat.relay_server.max_circuits_per_peer",
                    s.max_circuits_per_peer,
                ),
            ];
            for (option, v) in limits {
                if v == 0 {
                    return Err(invalid(option, "a limit must be more than 0"));
                }
            }
            if s.max_circuit_bytes == 0 {
                return Err(invalid(
                    "nat.relay_server.max_circuit_bytes",
                    "a limit must be more than 0",
                ));
            }
            if s.reservation_duration.is_zero() {
                return Err(invalid(
                    "nat.relay_server.reservation_duration",
                    "a duration must be more than 0",
                ));
            }
            if s.max_circuit_duration.is_zero()
                || s.max_circuit_duration.as_secs() > u64::from(u32::MAX)
            {
                return Err(invalid(
                    "nat.relay_server.max_circuit_duration",
                    "must be more than 0 and at most u32::MAX seconds",
                ));
            }
        }
        let a = &self.autonat;
        for (option, d) in [
            ("nat.autonat.retry_interval", a.retry_interval),
            ("nat.autonat.refresh_interval", a.refresh_interval),
        ] {
            if d.is_zero() {
                return Err(invalid(option, "an interval must be more than 0"));
            }
        }
        Ok(())
    }
}

fn invalid(option: &'static str, reason: impl Into<String>) -> Error {
    Error::InvalidOption {
        option,
        reason: reason.into(),
    }
}

/// Whether others can dial the node, as AutoNAT decided.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Reachability {
    /// Not known yet (no probe answered, or no peer to ask).
    #[default]
    Unknown,
    /// A peer dialed us back at a public address.
    Public,
    /// Peers could not dial us back: behind a NAT or a firewall.
    Private,
}

impl fmt::Display for Reachability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reachability::Unknown => "unknown",
            Reachability::Public => "public",
            Reachability::Private => "private",
        })
    }
}

/// One open connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// The peer.
    pub peer: PeerId,
    /// Its address: the one dialed, or the one it came from.
    pub address: Multiaddr,
    /// Through a relay (`/p2p-circuit`), else direct.
    pub relayed: bool,
    /// We dialed it (else the peer did).
    pub outbound: bool,
}

/// A slot we hold, or asked for, on a relay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayReservation {
    /// The relay.
    pub relay: PeerId,
    /// Our address through it: `<relay address>/p2p/<relay>/p2p-circuit`.
    pub address: Multiaddr,
    /// The relay accepted it (else it is under way).
    pub accepted: bool,
}

/// Hole punching so far (DCUtR).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HolePunchStats {
    /// Relayed connections upgraded to a direct one.
    pub succeeded: u64,
    /// Upgrades that failed (every attempt).
    pub failed: u64,
    /// From the last upgraded relayed connection's opening to its direct connection.
    pub last_upgrade: Option<Duration>,
}

/// What the node serves as a relay.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RelayServerStats {
    /// Reservations held by peers now.
    pub reservations: usize,
    /// Relayed connections open now.
    pub circuits: usize,
    /// Relayed connections accepted so far.
    pub circuits_accepted: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nat_parses_as_codex_writes_it() {
        assert_eq!("any".parse::<Nat>().ok(), Some(Nat::Any));
        assert_eq!("NONE".parse::<Nat>().ok(), Some(Nat::None));
        assert_eq!("upnp".parse::<Nat>().ok(), Some(Nat::Upnp));
        assert_eq!(
            "extip:1.2.3.4".parse::<Nat>().ok(),
            Some(Nat::ExtIp([1, 2, 3, 4].into()))
        );
        let v6: Nat = "extip:2001:db8::1".parse().expect("an IPv6 extip");
        assert_eq!(v6.to_string(), "extip:2001:db8::1");
        for (text, nat) in [
            ("any", Nat::Any),
            ("none", Nat::None),
            ("upnp", Nat::Upnp),
            ("extip:10.0.0.1", Nat::ExtIp([10, 0, 0, 1].into())),
        ] {
            assert_eq!(nat.to_string(), text);
            assert_eq!(text.parse::<Nat>().ok(), Some(nat));
        }
        for bad in ["", "pmp", "extip:", "extip:1.2.3", "extip:0.0.0.0", "upnpx"] {
            match bad.parse::<Nat>() {
                Err(Error::InvalidNat { value, .. }) => assert_eq!(value, bad),
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
        assert_eq!(Nat::default(), Nat::Any);
    }

    #[test]
    fn bad_nat_settings_are_named() {
        let option = |c: &NatConfig| match c.validate() {
            Ok(()) => None,
            Err(Error::InvalidOption { option, .. }) => Some(option),
            Err(e) => panic!("{e}"),
        };
        assert_eq!(option(&NatConfig::default()), None);
        let c = NatConfig {
            relays: vec!["/ip4/1.2.3.4/tcp/1".parse().expect("addr")],
            ..NatConfig::default()
        };
        assert_eq!(option(&c), Some("nat.relays"));
        let mut c = NatConfig {
            max_reservations: 0,
            ..NatConfig::default()
        };
        assert_eq!(option(&c), Some("nat.max_reservations"));
        c.relay_mode = RelayMode::Never;
        assert_eq!(option(&c), None);
        let c = NatConfig {
            relay_server: Some(RelayServerConfig {
                max_circuit_bytes: 0,
                ..RelayServerConfig::default()
            }),
            ..NatConfig::default()
        };
        assert_eq!(option(&c), Some("nat.relay_server.max_circuit_bytes"));
    }
}
