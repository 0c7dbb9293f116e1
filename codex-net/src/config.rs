//! The network's settings: [`NetConfig`] and its parts, with their defaults and the
//! checks [`NetworkBuilder::start`](crate::NetworkBuilder::start) runs before anything
//! is bound.

use std::time::Duration;

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, StreamProtocol};

use crate::error::{Error, Result};
use crate::exchange::ExchangeConfig;
use crate::nat::NatConfig;

/// The Kademlia protocol name nim-codex 0.2 speaks, and our default.
pub const DEFAULT_KAD_PROTOCOL: &str = "/codex/kad/1.0.0";

/// Settings of the network layer. Every field has a default ([`NetConfig::default`]);
/// [`Network::builder`](crate::Network::builder) sets them one by one, or all at once
/// from a `NetConfig` ([`NetworkBuilder::config`](crate::NetworkBuilder::config)).
///
/// ```
/// use codex_net::{NetConfig, Transports};
///
/// let config = NetConfig {
///     listen_addrs: vec!["/ip4/127.0.0.1/tcp/0".parse().expect("a multiaddr")],
///     transports: Transports::TCP,
///     ..NetConfig::default()
/// };
/// # let _ = config;
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetConfig {
    /// Addresses to listen on (`--listen-addrs`). Default: TCP and QUIC on all
    /// interfaces, any port (`/ip4/0.0.0.0/tcp/0`, `/ip4/0.0.0.0/udp/0/quic-v1`); with
    /// [`NetworkBuilder::transports`](crate::NetworkBuilder::transports) and no listen
    /// addresses of its own, those of the enabled transports only. Empty: the node only
    /// dials out. Each address must be a TCP or QUIC address of an enabled transport.
    pub listen_addrs: Vec<Multiaddr>,
    /// Peers to bootstrap the DHT from (`--bootstrap-node`), each ending in
    /// `/p2p/<peer id>`; a signed peer record's are its
    /// [`dial_addresses`](crate::SignedPeerRecord::dial_addresses) (see
    /// [`BootstrapNode`](crate::BootstrapNode)). Default: none (a node others
    /// bootstrap from).
    pub bootstrap: Vec<Multiaddr>,
    /// The Kademlia protocol name, starting with `/`. Default `/codex/kad/1.0.0`
    /// ([`DEFAULT_KAD_PROTOCOL`]); Logos Storage and other libp2p networks use
    /// `/ipfs/kad/1.0.0`. Nodes with different names do not see each other's records.
    pub kad_protocol: String,
    /// Our provider records (announced at a bounded rate, again on a schedule) and
    /// other peers' (a bounded store, expiring). Default [`ProviderConfig::default`].
    pub providers: ProviderConfig,
    /// The transports that carry connections. Default both TCP and QUIC.
    pub transports: Transports,
    /// How many connections the node keeps. Default [`Limits::default`].
    pub limits: Limits,
    /// How long connections idle, dials and DHT queries may take. Default
    /// [`Timeouts::default`].
    pub timeouts: Timeouts,
    /// Limits of the block exchange: message size, want-list length, serving
    /// concurrency, wants and bytes queued per peer and in all, write and request
    /// timeouts, bans. Default [`ExchangeConfig::default`].
    pub exchange: ExchangeConfig,
    /// NAT traversal: `--nat`, announced addresses, relays to reserve on, serving as a
    /// relay, AutoNAT's probes. Default [`NatConfig::default`].
    pub nat: NatConfig,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            listen_addrs: default_listen_addrs(Transports::ALL),
            bootstrap: Vec::new(),
            kad_protocol: DEFAULT_KAD_PROTOCOL.into(),
            providers: ProviderConfig::default(),
            transports: Transports::ALL,
            limits: Limits::default(),
            timeouts: Timeouts::default(),
            exchange: ExchangeConfig::default(),
            nat: NatConfig::default(),
        }
    }
}

/// Provider records: the node's own, kept in a set the node owns (no limit but memory)
/// and announced again every [`reprovide_interval`](Self::reprovide_interval) at no
/// more than [`announce_rate`](Self::announce_rate) per second; and other peers', kept
/// in a bounded store until they expire.
///
/// An announcement is a Kademlia `start_providing`: a walk to the 20 peers closest to
/// the key, then the record sent to each. A new key (from
/// [`Network::provide`](crate::Network::provide)) is announced before keys due again;
/// one whose announcement reached no peer is tried again after
/// [`retry_after`](Self::retry_after). While the routing table is empty nothing is
/// announced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ProviderConfig {
    /// How long after its last announcement each of our keys is announced again.
    /// Default 12 h (libp2p Kademlia's), a quarter of [`record_ttl`](Self::record_ttl).
    pub reprovide_interval: Duration,
    /// How long a provider record lives: other peers' are dropped this long after they
    /// were last announced to us. Default 48 h (libp2p Kademlia's). Must be longer
    /// than the reprovide interval.
    pub record_ttl: Duration,
    /// Announcements started per second, at most (on average). Default 20: 100 000
    /// keys take about 85 minutes of every reprovide interval.
    pub announce_rate: u32,
    /// Announcements that may start at once after a quiet time (the rate limit's
    /// bucket). Default 20.
    pub announce_burst: u32,
    /// Announcements under way at once, at most: when peers answer slowly, the rate
    /// drops below `announce_rate`. Default 64.
    pub max_announcing: usize,
    /// An announcement that reached no peer (or timed out) is tried again after this
    /// long. Default 1 minute.
    pub retry_after: Duration,
    /// Provider records of other peers kept, at most; over it, records for new keys
    /// or providers are refused until some expire. Default 131 072: about 60 MiB when
    /// full (measured: about 450 bytes a record, plus its addresses; a record keeps at
    /// most 8 addresses of at most 256 bytes). In a network of 20 nodes or fewer every
    /// node holds every record.
    pub max_records: usize,
    /// Providers kept per key, at most; more are ignored (the first ones stay, as in
    /// libp2p's store, so that a flood of fake providers cannot push out real ones).
    /// Default 20 (Kademlia's replication factor).
    pub max_providers_per_key: usize,
}

impl Default for ProviderConfig {
    fn default() -> Self {
        ProviderConfig {
            reprovide_interval: Duration::from_secs(12 * 60 * 60),
            record_ttl: Duration::from_secs(48 * 60 * 60),
            announce_rate: 20,
            announce_burst: 20,
            max_announcing: 64,
            retry_after: Duration::from_secs(60),
            max_records: 1 << 17,
            max_providers_per_key: 20,
        }
    }
}

impl ProviderConfig {
    /// Checks that the settings can work: no zero, and records that outlive the
    /// reprovide interval.
    ///
    /// # Errors
    /// [`Error::InvalidOption`] naming the first field that is wrong
    /// (`"providers.announce_rate"`, ...).
    pub fn validate(&self) -> Result<()> {
        let zero = |option, what: &str| invalid(option, format!("{what} must be more than 0"));
        let counts = [
            (
                "providers.announce_rate",
                "the announce rate",
                self.announce_rate as usize,
            ),
            (
                "providers.announce_burst",
                "the announce burst",
                self.announce_burst as usize,
            ),
            (
                "providers.max_announcing",
                "the number of announcements at once",
                self.max_announcing,
            ),
            (
                "providers.max_records",
                "the provider record limit",
                self.max_records,
            ),
            (
                "providers.max_providers_per_key",
                "the providers per key limit",
                self.max_providers_per_key,
            ),
        ];
        for (option, what, count) in counts {
            if count == 0 {
                return Err(zero(option, what));
            }
        }
        let durations = [
            (
                "providers.reprovide_interval",
                "the reprovide interval",
                self.reprovide_interval,
            ),
            ("providers.record_ttl", "the record TTL", self.record_ttl),
            ("providers.retry_after", "the retry delay", self.retry_after),
        ];
        for (option, what, duration) in durations {
            if duration.is_zero() {
                return Err(zero(option, what));
            }
        }
        if self.record_ttl <= self.reprovide_interval {
            return Err(invalid(
                "providers.record_ttl",
                format!(
                    "{:?} does not outlive the reprovide interval ({:?}): records would \
                     expire before they are announced again",
                    self.record_ttl, self.reprovide_interval
                ),
            ));
        }
        Ok(())
    }
}

/// The default listen addresses of `transports`: all interfaces, any port.
pub(crate) fn default_listen_addrs(transports: Transports) -> Vec<Multiaddr> {
    let mut addrs = Vec::new();
    if transports.tcp {
        addrs.push(
            Multiaddr::empty()
                .with(Protocol::Ip4([0, 0, 0, 0].into()))
                .with(Protocol::Tcp(0)),
        );
    }
    if transports.quic {
        addrs.push(
            Multiaddr::empty()
                .with(Protocol::Ip4([0, 0, 0, 0].into()))
                .with(Protocol::Udp(0))
                .with(Protocol::QuicV1),
        );
    }
    addrs
}

/// The transports that carry the node's connections. Both encrypt with Noise (TCP) or
/// TLS 1.3 (QUIC, built in); TCP connections are multiplexed with Yamux. A relay client
/// runs over whichever is enabled, so that peers behind NAT can be reached through
/// relays and, with DCUtR, directly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Transports {
    /// TCP with Noise and Yamux, `TCP_NODELAY` set. Default on.
    pub tcp: bool,
    /// QUIC v1 over UDP. Default on.
    pub quic: bool,
}

impl Transports {
    /// TCP and QUIC: the default.
    pub const ALL: Transports = Transports {
        tcp: true,
        quic: true,
    };
    /// TCP only.
    pub const TCP: Transports = Transports {
        tcp: true,
        quic: false,
    };
    /// QUIC only.
    pub const QUIC: Transports = Transports {
        tcp: false,
        quic: true,
    };
}

impl Default for Transports {
    fn default() -> Self {
        Transports::ALL
    }
}

/// How many connections the node keeps; a connection over a limit is refused (an
/// incoming one) or fails (a dial, with the limit in its error). `None` is unlimited.
/// Connections in both directions count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Limits {
    /// Established connections in all. Default 1024.
    pub max_connections: Option<u32>,
    /// Established connections to one peer. Default 8 (two nodes that dial each other
    /// at once, over TCP and QUIC, open up to four).
    pub max_connections_per_peer: Option<u32>,
    /// Incoming connections still being set up (handshakes). Default 128.
    pub max_pending_incoming: Option<u32>,
    /// Dials under way. Default 128.
    pub max_pending_outgoing: Option<u32>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: Some(1024),
            max_connections_per_peer: Some(8),
            max_pending_incoming: Some(128),
            max_pending_outgoing: Some(128),
        }
    }
}

impl Limits {
    /// No limits at all (a test or a node behind a firewall of its own).
    pub const UNLIMITED: Limits = Limits {
        max_connections: None,
        max_connections_per_peer: None,
        max_pending_incoming: None,
        max_pending_outgoing: None,
    };

    pub(crate) fn to_libp2p(self) -> libp2p::connection_limits::ConnectionLimits {
        libp2p::connection_limits::ConnectionLimits::default()
            .with_max_established(self.max_connections)
            .with_max_established_per_peer(self.max_connections_per_peer)
            .with_max_pending_incoming(self.max_pending_incoming)
            .with_max_pending_outgoing(self.max_pending_outgoing)
    }
}

/// How long things may take. The block exchange's request timeout is
/// [`ExchangeConfig::request_timeout`], a download's stall timeout
/// [`FetchOptions::stall_timeout`](crate::FetchOptions::stall_timeout).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Timeouts {
    /// A connection without open streams is closed after this long. Default 120 s.
    pub idle_connection: Duration,
    /// [`Network::dial`](crate::Network::dial) gives up after this long. Default 20 s.
    pub dial: Duration,
    /// A Kademlia query (finding providers, bootstrapping) ends after this long, with
    /// what it found. Default 30 s.
    pub kad_query: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            idle_connection: Duration::from_secs(120),
            dial: Duration::from_secs(20),
            kad_query: Duration::from_secs(30),
        }
    }
}

fn invalid(option: &'static str, reason: impl Into<String>) -> Error {
    Error::InvalidOption {
        option,
        reason: reason.into(),
    }
}

/// Which transport an address needs, if it is one we can listen on or dial.
#[derive(Debug, PartialEq, Eq)]
enum Needs {
    Tcp,
    Quic,
}

fn transport_of(addr: &Multiaddr) -> Option<Needs> {
    let mut it = addr.iter();
    match it.next()? {
        Protocol::Ip4(_) | Protocol::Ip6(_) => {}
        _ => return None,
    }
    match (it.next()?, it.next()) {
        (Protocol::Tcp(_), None | Some(Protocol::P2p(_))) => Some(Needs::Tcp),
        (Protocol::Udp(_), Some(Protocol::QuicV1)) => Some(Needs::Quic),
        _ => None,
    }
}

impl ExchangeConfig {
    /// Checks that every limit can be met: none is zero, and the node's want limit
    /// holds at least one message's wants.
    ///
    /// # Errors
    /// [`Error::InvalidOption`] naming the first field that is wrong.
    pub fn validate(&self) -> Result<()> {
        let zero = |option, what: &str| invalid(option, format!("{what} must be more than 0"));
        let limits = [
            (
                "exchange.max_message_bytes",
                "the message size limit",
                self.max_message_bytes,
            ),
            (
                "exchange.max_entries_per_message",
                "the want-list length limit",
                self.max_entries_per_message,
            ),
            (
                "exchange.serve_concurrency_per_peer",
                "the serving concurrency",
                self.serve_concurrency_per_peer,
            ),
            (
                "exchange.max_queued_wants_per_peer",
                "the want queue length",
                self.max_queued_wants_per_peer,
            ),
            (
                "exchange.max_queued_wants_total",
                "the node's want queue length",
                self.max_queued_wants_total,
            ),
            (
                "exchange.max_queued_bytes_per_peer",
                "the queued bytes limit",
                self.max_queued_bytes_per_peer,
            ),
            (
                "exchange.max_queued_bytes_total",
                "the node's queued bytes limit",
                self.max_queued_bytes_total,
            ),
            (
                "exchange.max_banned_peers",
                "the ban list's size",
                self.max_banned_peers,
            ),
        ];
        for (option, what, limit) in limits {
            if limit == 0 {
                return Err(zero(option, what));
            }
        }
        if self.max_queued_wants_total < self.max_entries_per_message {
            return Err(invalid(
                "exchange.max_queued_wants_total",
                format!(
                    "{} is less than one message's wants (max_entries_per_message {})",
                    self.max_queued_wants_total, self.max_entries_per_message
                ),
            ));
        }
        let durations = [
            (
                "exchange.request_timeout",
                "the request timeout",
                self.request_timeout,
            ),
            (
                "exchange.write_timeout",
                "the write timeout",
                self.write_timeout,
            ),
            (
                "exchange.ban_duration",
                "the ban duration",
                self.ban_duration,
            ),
        ];
        for (option, what, duration) in durations {
            if duration.is_zero() {
                return Err(zero(option, what));
            }
        }
        Ok(())
    }
}

impl NetConfig {
    /// Checks the settings without binding or dialing anything: at least one transport;
    /// every listen address a TCP or QUIC address of an enabled transport; every
    /// bootstrap address ending in `/p2p/<peer id>`; a Kademlia protocol name starting
    /// with `/`; no limit, interval or timeout of zero; provider records that outlive
    /// the reprovide interval.
    ///
    /// # Errors
    /// [`Error::InvalidOption`] naming the first setting that is wrong, and why.
    pub fn validate(&self) -> Result<()> {
        self.kad_stream_protocol()?;
        let Transports { tcp, quic } = self.transports;
        if !tcp && !quic {
            return Err(invalid(
                "transports",
                "no transport enabled: enable TCP, QUIC or both",
            ));
        }
        for addr in &self.listen_addrs {
            match transport_of(addr) {
                Some(Needs::Tcp) if !tcp => {
                    return Err(invalid(
                        "listen_addrs",
                        format!("{addr} is a TCP address and TCP is disabled"),
                    ));
                }
                Some(Needs::Quic) if !quic => {
                    return Err(invalid(
                        "listen_addrs",
                        format!("{addr} is a QUIC address and QUIC is disabled"),
                    ));
                }
                Some(_) => {}
                None => {
                    return Err(invalid(
                        "listen_addrs",
                        format!(
                            "{addr} is neither /ip4|ip6/<ip>/tcp/<port> nor /ip4|ip6/<ip>/udp/<port>/quic-v1"
                        ),
                    ));
                }
            }
        }
        for addr in &self.bootstrap {
            if !matches!(addr.iter().last(), Some(Protocol::P2p(_))) {
                return Err(invalid(
                    "bootstrap",
                    format!("{addr} does not end in /p2p/<peer id>"),
                ));
            }
        }
        self.providers.validate()?;
        let limits = [
            ("limits.max_connections", self.limits.max_connections),
            (
                "limits.max_connections_per_peer",
                self.limits.max_connections_per_peer,
            ),
            (
                "limits.max_pending_incoming",
                self.limits.max_pending_incoming,
            ),
            (
                "limits.max_pending_outgoing",
                self.limits.max_pending_outgoing,
            ),
        ];
        for (option, limit) in limits {
            if limit == Some(0) {
                return Err(invalid(
                    option,
                    "a limit of 0 allows no connection at all (None is unlimited)",
                ));
            }
        }
        let timeouts = [
            ("timeouts.idle_connection", self.timeouts.idle_connection),
            ("timeouts.dial", self.timeouts.dial),
            ("timeouts.kad_query", self.timeouts.kad_query),
        ];
        for (option, timeout) in timeouts {
            if timeout.is_zero() {
                return Err(invalid(option, "a timeout must be more than 0"));
            }
        }
        self.exchange.validate()?;
        self.nat.validate()
    }

    /// The Kademlia protocol name as libp2p takes it.
    pub(crate) fn kad_stream_protocol(&self) -> Result<StreamProtocol> {
        StreamProtocol::try_from_owned(self.kad_protocol.clone()).map_err(|e| {
            invalid(
                "kad_protocol",
                format!("{:?} is not a protocol name: {e}", self.kad_protocol),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn option_of(config: &NetConfig) -> Option<&'static str> {
        match config.validate() {
            Ok(()) => None,
            Err(Error::InvalidOption { option, .. }) => Some(option),
            Err(e) => panic!("not an invalid option: {e}"),
        }
    }

    #[test]
    fn the_default_is_valid_and_listens_on_both_transports() {
        let config = NetConfig::default();
        assert_eq!(option_of(&config), None);
        assert_eq!(config.listen_addrs.len(), 2);
        assert_eq!(config.kad_protocol, "/codex/kad/1.0.0");
        assert_eq!(config.transports, Transports::ALL);
        assert_eq!(default_listen_addrs(Transports::TCP).len(), 1);
        assert_eq!(
            transport_of(&default_listen_addrs(Transports::QUIC)[0]),
            Some(Needs::Quic)
        );
    }

    #[test]
    fn each_bad_setting_is_named() {
        let ok = NetConfig::default();
        let check = |change: &dyn Fn(&mut NetConfig), option: &str| {
            let mut c = ok.clone();
            change(&mut c);
            assert_eq!(option_of(&c), Some(option), "{c:?}");
        };
        check(&|c| c.kad_protocol = "codex/kad".into(), "kad_protocol");
        check(&|c| c.kad_protocol = String::new(), "kad_protocol");
        check(
            &|c| {
                c.transports = Transports {
                    tcp: false,
                    quic: false,
                }
            },
            "transports",
        );
        // The default listen addresses include QUIC's.
        check(&|c| c.transports = Transports::TCP, "listen_addrs");
        check(&|c| c.transports = Transports::QUIC, "listen_addrs");
        check(
            &|c| c.listen_addrs = vec!["/ip4/127.0.0.1/udp/0".parse().expect("addr")],
            "listen_addrs",
        );
        check(
            &|c| c.listen_addrs = vec!["/dns4/example.org/tcp/1".parse().expect("addr")],
            "listen_addrs",
        );
        check(
            &|c| c.bootstrap = vec!["/ip4/127.0.0.1/tcp/4001".parse().expect("addr")],
            "bootstrap",
        );
        check(
            &|c| c.providers.reprovide_interval = Duration::ZERO,
            "providers.reprovide_interval",
        );
        check(
            &|c| c.providers.record_ttl = c.providers.reprovide_interval,
            "providers.record_ttl",
        );
        check(
            &|c| c.providers.announce_rate = 0,
            "providers.announce_rate",
        );
        check(
            &|c| c.providers.max_announcing = 0,
            "providers.max_announcing",
        );
        check(&|c| c.providers.max_records = 0, "providers.max_records");
        check(
            &|c| c.limits.max_connections_per_peer = Some(0),
            "limits.max_connections_per_peer",
        );
        check(&|c| c.timeouts.dial = Duration::ZERO, "timeouts.dial");
        check(
            &|c| c.exchange.serve_concurrency_per_peer = 0,
            "exchange.serve_concurrency_per_peer",
        );
        check(
            &|c| c.exchange.request_timeout = Duration::ZERO,
            "exchange.request_timeout",
        );
        check(
            &|c| c.exchange.write_timeout = Duration::ZERO,
            "exchange.write_timeout",
        );
        check(
            &|c| c.exchange.ban_duration = Duration::ZERO,
            "exchange.ban_duration",
        );
        check(
            &|c| c.exchange.max_queued_bytes_per_peer = 0,
            "exchange.max_queued_bytes_per_peer",
        );
        check(
            &|c| c.exchange.max_banned_peers = 0,
            "exchange.max_banned_peers",
        );
        check(
            &|c| c.exchange.max_queued_wants_total = 1023,
            "exchange.max_queued_wants_total",
        );
    }

    #[test]
    fn addresses_that_fit_the_transports_pass() {
        let mut c = NetConfig {
            listen_addrs: vec![
                "/ip4/127.0.0.1/tcp/0".parse().expect("addr"),
                "/ip6/::1/udp/0/quic-v1".parse().expect("addr"),
            ],
            bootstrap: vec![
                "/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"
                    .parse()
                    .expect("addr"),
            ],
            limits: Limits::UNLIMITED,
            ..NetConfig::default()
        };
        assert_eq!(option_of(&c), None);
        c.listen_addrs.clear();
        c.transports = Transports::QUIC;
        assert_eq!(option_of(&c), None, "a node that only dials out");
    }
}
