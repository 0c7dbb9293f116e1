//! Provider records at scale: our own keys kept in a set the node owns and announced
//! on a rate-limited schedule ([`schedule`]), other peers' records in a bounded,
//! expiring store ([`store`]).

pub(crate) mod schedule;
pub(crate) mod store;

/// What the node's provider records are doing, from
/// [`Network::provider_stats`](crate::Network::provider_stats).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProviderStats {
    /// Keys we provide (the set [`Network::provided`](crate::Network::provided)
    /// lists).
    pub provided: usize,
    /// Of those, keys not yet announced to any peer since they were added (or since
    /// the node started).
    pub never_announced: usize,
    /// Announcements under way.
    pub announcing: usize,
    /// Announcements that reached at least one peer, since the node started.
    pub announcements: u64,
    /// Announcements that reached no peer or timed out (each tried again), since the
    /// node started.
    pub failures: u64,
    /// Other peers' provider records held for the DHT.
    pub records: usize,
}
