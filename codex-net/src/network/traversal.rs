//! The swarm task's NAT traversal: reachability from AutoNAT, reservations on relays
//! while the node is private, `--nat extip:` addresses, the connections' kinds, and the
//! switch from a relayed connection to a direct one once DCUtR (or a dial) made it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use libp2p::core::transport::ListenerId;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{ConnectionId, SwarmEvent};
use libp2p::{Multiaddr, PeerId, autonat, dcutr, relay};

use super::{BehaviourEvent, SwarmTask};
use crate::nat::{
    ConnectionInfo, HolePunchStats, Nat, NatConfig, Reachability, RelayMode, RelayReservation,
    RelayServerStats,
};

/// Relays found among peers, kept at most.
const MAX_DISCOVERED_RELAYS: usize = 16;
/// A relay whose reservation failed is not asked again for this long.
const RELAY_BACKOFF: Duration = Duration::from_secs(30);
/// Relayed addresses tried when a dial without addresses fails, at most.
const MAX_RELAYED_DIALS: usize = 4;

pub(super) struct NatState {
    config: NatConfig,
    reachability: Reachability,
    /// Every open connection, and when it opened.
    connections: HashMap<ConnectionId, (ConnectionInfo, Instant)>,
    /// Relays that peers' identify showed (hop protocol), at the address we reach them.
    discovered: VecDeque<(PeerId, Multiaddr)>,
    /// Our reservations, by the listener on their `/p2p-circuit` address.
    reservations: HashMap<ListenerId, (RelayReservation, Instant)>,
    /// Relays not to ask before the time given.
    backoff: HashMap<PeerId, Instant>,
    hole_punches: HolePunchStats,
    server: RelayServerStats,
    /// Relayed connections we are closing (a direct one replaced them).
    closing: HashSet<ConnectionId>,
}

/// What [`SwarmTask::info`](super::SwarmTask) reports of NAT traversal.
pub(super) struct NatSnapshot {
    pub reachability: Reachability,
    pub connections: Vec<ConnectionInfo>,
    pub reservations: Vec<RelayReservation>,
    pub hole_punches: HolePunchStats,
    pub relay_server: Option<RelayServerStats>,
}

/// The peer an address ends with (`/p2p/<peer>`).
fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    match addr.iter().last() {
        Some(Protocol::P2p(p)) => Some(p),
        _ => None,
    }
}

/// `addr` with its IP replaced by `ip` (same family only; not a relayed address), for
/// `--nat extip:`: the listen port at the external IP.
fn with_ip(addr: &Multiaddr, ip: IpAddr) -> Option<Multiaddr> {
    let mut out = Multiaddr::empty();
    let mut replaced = false;
    for p in addr.iter() {
        match (p, ip) {
            (Protocol::Ip4(_), IpAddr::V4(new)) if !replaced => {
                out.push(Protocol::Ip4(new));
                replaced = true;
            }
            (Protocol::Ip6(_), IpAddr::V6(new)) if !replaced => {
                out.push(Protocol::Ip6(new));
                replaced = true;
            }
            (Protocol::Ip4(_) | Protocol::Ip6(_), _) => return None,
            (Protocol::P2pCircuit, _) => return None,
            (p, _) => out.push(p),
        }
    }
    replaced.then_some(out)
}

impl NatState {
    pub(super) fn new(config: NatConfig) -> Self {
        NatState {
            config,
            reachability: Reachability::Unknown,
            connections: HashMap::new(),
            discovered: VecDeque::new(),
            reservations: HashMap::new(),
            backoff: HashMap::new(),
            hole_punches: HolePunchStats::default(),
            server: RelayServerStats::default(),
            closing: HashSet::new(),
        }
    }

    pub(super) fn snapshot(&self) -> NatSnapshot {
        NatSnapshot {
            reachability: self.reachability,
            connections: self.connections.values().map(|(c, _)| c.clone()).collect(),
            reservations: self.reservations.values().map(|(r, _)| r.clone()).collect(),
            hole_punches: self.hole_punches,
            relay_server: self.config.relay_server.map(|_| self.server),
        }
    }

    /// Whether the node should hold reservations now.
    fn wants_relay(&self) -> bool {
        match self.config.relay_mode {
            RelayMode::Always => true,
            RelayMode::Never => false,
            RelayMode::Auto => self.reachability == Reachability::Private,
        }
    }

    /// Relays to reserve on, in order: configured, then discovered.
    fn candidates(&self) -> impl Iterator<Item = (PeerId, Multiaddr)> + '_ {
        let configured = self
            .config
            .relays
            .iter()
            .filter_map(|a| peer_of(a).map(|p| (p, a.clone())));
        configured.chain(self.discovered.iter().cloned())
    }

    /// Circuit addresses of `peer` through the relays we know, to dial a peer whose
    /// own addresses failed.
    pub(super) fn relayed_addresses(&self, peer: PeerId) -> Vec<Multiaddr> {
        let mut out: Vec<Multiaddr> = Vec::new();
        let reserved = self.reservations.values().map(|(r, _)| {
            let mut a = r.address.clone();
            // `<relay>/p2p/<relay id>/p2p-circuit`: the relay's part.
            let _ = a.pop();
            (r.relay, a)
        });
        for (relay, addr) in reserved.chain(self.candidates()) {
            if relay == peer || out.len() >= MAX_RELAYED_DIALS {
                continue;
            }
            let mut a = addr;
            if peer_of(&a).is_none() {
                a.push(Protocol::P2p(relay));
            }
            let a = a.with(Protocol::P2pCircuit).with(Protocol::P2p(peer));
            if !out.contains(&a) {
                out.push(a);
            }
        }
        out
    }
}

impl SwarmTask {
    /// `--nat extip:` and the announced addresses, once the swarm is built.
    pub(super) fn nat_start(&mut self) {
        for addr in self.nat.config.announce_addrs.clone() {
            self.swarm.add_external_address(addr);
        }
        if let Some(server) = self.swarm.behaviour_mut().relay_server.as_mut() {
            // Serve whether or not an external address is confirmed yet: the node was
            // told to be a relay.
            server.set_status(Some(relay::Status::Enable));
        }
        self.maintain_reservations();
    }

    /// Reserves on relays while the node wants them and has fewer than allowed; drops
    /// them when it no longer wants them (AutoNAT says public).
    pub(super) fn maintain_reservations(&mut self) {
        let now = Instant::now();
        self.nat.backoff.retain(|_, until| *until > now);
        if !self.nat.wants_relay() {
            let drop_them = match self.nat.config.relay_mode {
                RelayMode::Never => true,
                RelayMode::Always => false,
                RelayMode::Auto => self.nat.reachability == Reachability::Public,
            };
            if drop_them && !self.nat.reservations.is_empty() {
                let ids: Vec<ListenerId> = self.nat.reservations.keys().copied().collect();
                for id in ids {
                    tracing::info!("publicly reachable: dropping the relay reservation");
                    self.swarm.remove_listener(id);
                    self.nat.reservations.remove(&id);
                }
            }
            return;
        }
        while self.nat.reservations.len() < self.nat.config.max_reservations {
            let used: Vec<PeerId> = self
                .nat
                .reservations
                .values()
                .map(|(r, _)| r.relay)
                .collect();
            let local = *self.swarm.local_peer_id();
            let next = self.nat.candidates().find(|(p, _)| {
                *p != local && !used.contains(p) && !self.nat.backoff.contains_key(p)
            });
            let Some((relay, addr)) = next else { break };
            let mut circuit = addr;
            if peer_of(&circuit).is_none() {
                circuit.push(Protocol::P2p(relay));
            }
            let circuit = circuit.with(Protocol::P2pCircuit);
            match self.swarm.listen_on(circuit.clone()) {
                Ok(id) => {
                    tracing::info!(%relay, address = %circuit, "reserving a slot on a relay");
                    let r = RelayReservation {
                        relay,
                        address: circuit,
                        accepted: false,
                    };
                    self.nat.reservations.insert(id, (r, now));
                }
                Err(e) => {
                    tracing::warn!(%relay, error = %e, "cannot listen through a relay");
                    self.nat.backoff.insert(relay, now + RELAY_BACKOFF);
                }
            }
        }
    }

    /// Keeps track of connections, listeners and external addresses. Called with every
    /// swarm event before it is handled otherwise.
    pub(super) fn nat_on_swarm_event(&mut self, event: &SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                let info = ConnectionInfo {
                    peer: *peer_id,
                    address: endpoint.get_remote_address().clone(),
                    relayed: endpoint.is_relayed(),
                    outbound: endpoint.is_dialer(),
                };
                let relayed = info.relayed;
                // Bounded: the connection limits bound the connections.
                self.nat
                    .connections
                    .insert(*connection_id, (info, Instant::now()));
                if relayed {
                    tracing::debug!(peer = %peer_id, "relayed connection");
                } else {
                    self.close_relayed(*peer_id);
                }
            }
            SwarmEvent::ConnectionClosed { connection_id, .. } => {
                self.nat.connections.remove(connection_id);
                self.nat.closing.remove(connection_id);
            }
            SwarmEvent::NewListenAddr {
                listener_id,
                address,
            } => {
                if let Some((r, since)) = self.nat.reservations.get_mut(listener_id) {
                    if !r.accepted {
                        tracing::info!(
                            relay = %r.relay,
                            address = %address,
                            took = ?since.elapsed(),
                            "listening through a relay"
                        );
                    }
                    r.accepted = true;
                } else if let Nat::ExtIp(ip) = self.nat.config.nat
                    && let Some(ext) = with_ip(address, ip)
                {
                    tracing::info!(address = %ext, "announcing the external address (extip)");
                    self.swarm.add_external_address(ext);
                }
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            } => {
                if let Some((r, _)) = self.nat.reservations.remove(listener_id) {
                    tracing::info!(relay = %r.relay, ?reason, "relay reservation ended");
                    self.nat
                        .backoff
                        .insert(r.relay, Instant::now() + RELAY_BACKOFF);
                    self.maintain_reservations();
                }
            }
            SwarmEvent::ExternalAddrConfirmed { address } => {
                tracing::debug!(%address, "external address confirmed");
            }
            _ => {}
        }
    }

    /// Closes the relayed connections to `peer` once a direct one is open, and has the
    /// block exchange open its stream again (on the direct connection).
    fn close_relayed(&mut self, peer: PeerId) {
        let relayed: Vec<ConnectionId> = self
            .nat
            .connections
            .iter()
            .filter(|(id, (c, _))| c.peer == peer && c.relayed && !self.nat.closing.contains(id))
            .map(|(id, _)| *id)
            .collect();
        if relayed.is_empty() {
            return;
        }
        tracing::info!(%peer, "direct connection: closing the relayed one");
        for id in relayed {
            self.swarm.close_connection(id);
            self.nat.closing.insert(id);
        }
        self.exchange.connection_replaced(peer);
    }

    pub(super) fn on_autonat(&mut self, event: autonat::Event) {
        if let autonat::Event::StatusChanged { old, new } = event {
            let reachability = match &new {
                autonat::NatStatus::Public(_) => Reachability::Public,
                autonat::NatStatus::Private => Reachability::Private,
                autonat::NatStatus::Unknown => Reachability::Unknown,
            };
            tracing::info!(?old, ?new, %reachability, "reachability (AutoNAT)");
            self.nat.reachability = reachability;
            self.maintain_reservations();
        }
    }

    pub(super) fn on_relay_client(&mut self, event: relay::client::Event) {
        match event {
            relay::client::Event::ReservationReqAccepted {
                relay_peer_id,
                renewal,
                ..
            } => {
                for (r, since) in self.nat.reservations.values_mut() {
                    if r.relay == relay_peer_id && !r.accepted {
                        tracing::info!(relay = %relay_peer_id, took = ?since.elapsed(), renewal, "relay reservation accepted");
                        r.accepted = true;
                    }
                }
            }
            relay::client::Event::OutboundCircuitEstablished { relay_peer_id, .. } => {
                tracing::debug!(relay = %relay_peer_id, "relayed connection out");
            }
            relay::client::Event::InboundCircuitEstablished { src_peer_id, .. } => {
                tracing::debug!(peer = %src_peer_id, "relayed connection in");
            }
        }
    }

    pub(super) fn on_relay_server(&mut self, event: relay::Event) {
        let s = &mut self.nat.server;
        match event {
            relay::Event::ReservationReqAccepted {
                src_peer_id,
                renewed,
            } => {
                if !renewed {
                    s.reservations += 1;
                }
                tracing::debug!(peer = %src_peer_id, renewed, "reservation accepted");
            }
            relay::Event::ReservationClosed { .. } | relay::Event::ReservationTimedOut { .. } => {
                s.reservations = s.reservations.saturating_sub(1);
            }
            relay::Event::CircuitReqAccepted {
                src_peer_id,
                dst_peer_id,
            } => {
                s.circuits += 1;
                s.circuits_accepted += 1;
                tracing::debug!(src = %src_peer_id, dst = %dst_peer_id, "relaying a connection");
            }
            relay::Event::CircuitClosed { .. } => {
                s.circuits = s.circuits.saturating_sub(1);
            }
            other => tracing::debug!(event = ?other, "relay server"),
        }
    }

    pub(super) fn on_dcutr(&mut self, event: dcutr::Event) {
        let peer = event.remote_peer_id;
        match event.result {
            Ok(_) => {
                let opened = self
                    .nat
                    .connections
                    .values()
                    .filter(|(c, _)| c.peer == peer && c.relayed)
                    .map(|(_, at)| *at)
                    .min();
                let took = opened.map(|at| at.elapsed());
                self.nat.hole_punches.succeeded += 1;
                if took.is_some() {
                    self.nat.hole_punches.last_upgrade = took;
                }
                tracing::info!(%peer, ?took, "hole punched: direct connection");
                self.close_relayed(peer);
            }
            Err(e) => {
                self.nat.hole_punches.failed += 1;
                tracing::info!(%peer, error = %e, "hole punching failed: staying relayed");
            }
        }
    }

    pub(super) fn on_upnp(&mut self, event: libp2p::upnp::Event) {
        match event {
            libp2p::upnp::Event::NewExternalAddr {
                local_addr,
                external_addr,
            } => tracing::info!(%local_addr, %external_addr, "UPnP port mapping"),
            libp2p::upnp::Event::ExpiredExternalAddr { external_addr, .. } => {
                tracing::info!(%external_addr, "UPnP port mapping expired")
            }
            libp2p::upnp::Event::GatewayNotFound => tracing::debug!("no UPnP gateway"),
            libp2p::upnp::Event::NonRoutableGateway => {
                tracing::info!("the UPnP gateway is itself behind a NAT")
            }
        }
    }

    /// A peer whose identify lists the relay hop protocol is a relay we may reserve on,
    /// at the address of our direct connection to it.
    pub(super) fn relay_discovered(&mut self, peer: PeerId) {
        if self.nat.discovered.iter().any(|(p, _)| *p == peer)
            || self
                .nat
                .config
                .relays
                .iter()
                .any(|a| peer_of(a) == Some(peer))
        {
            return;
        }
        let addr = self
            .nat
            .connections
            .values()
            .find(|(c, _)| c.peer == peer && !c.relayed && c.outbound)
            .map(|(c, _)| c.address.clone());
        let Some(addr) = addr else { return };
        tracing::debug!(%peer, %addr, "a relay among our peers");
        if self.nat.discovered.len() >= MAX_DISCOVERED_RELAYS {
            self.nat.discovered.pop_front();
        }
        self.nat.discovered.push_back((peer, addr));
        self.maintain_reservations();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extip_replaces_the_ip_and_keeps_the_port() {
        let a: Multiaddr = "/ip4/192.168.1.2/tcp/4001".parse().expect("addr");
        let ip: IpAddr = "1.2.3.4".parse().expect("ip");
        assert_eq!(
            with_ip(&a, ip),
            Some("/ip4/1.2.3.4/tcp/4001".parse().expect("addr"))
        );
        let q: Multiaddr = "/ip4/10.0.0.2/udp/9/quic-v1".parse().expect("addr");
        assert_eq!(
            with_ip(&q, ip),
            Some("/ip4/1.2.3.4/udp/9/quic-v1".parse().expect("addr"))
        );
        // Every interface of a node listening on all gives the same address.
        let lo: Multiaddr = "/ip4/127.0.0.1/tcp/4001".parse().expect("addr");
        assert_eq!(with_ip(&lo, ip), with_ip(&a, ip));
        let circuit: Multiaddr = "/ip4/10.0.0.1/tcp/1/p2p-circuit".parse().expect("addr");
        assert_eq!(with_ip(&circuit, ip), None);
        let v6: Multiaddr = "/ip6/fe80::1/tcp/1".parse().expect("addr");
        assert_eq!(with_ip(&v6, ip), None);
    }
}
