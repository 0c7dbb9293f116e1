//! Availabilities: what a host offers (space, duration, price, collateral), changed
//! with a typed [`AvailabilityUpdate`], and taken from by the slots it sells.

use codex_market::StorageRequest;
use codex_market::alloy::primitives::U256;

use crate::error::{Error, Result};

/// An offer of storage (Codex's `Availability`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Availability {
    /// Id (hex).
    pub id: String,
    /// Bytes offered.
    pub total_size: u64,
    /// Bytes not yet taken by slots.
    pub free_size: u64,
    /// Longest request accepted, in seconds.
    pub duration: u64,
    /// Lowest price accepted.
    pub min_price_per_byte_per_second: U256,
    /// Collateral the host is willing to post in total.
    pub total_collateral: U256,
    /// Collateral not yet posted.
    pub total_remaining_collateral: U256,
    /// Whether new slots may be taken.
    pub enabled: bool,
    /// The latest time (seconds since the Unix epoch) a slot taken may end at; 0 for
    /// no limit (Codex's `until`).
    pub until: u64,
}

/// A change of an availability (`PATCH /sales/availability/{id}`): each field that is
/// `Some` is set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AvailabilityUpdate {
    /// New `total_size`; the free size moves by as much. Not below what slots hold.
    pub total_size: Option<u64>,
    /// New longest duration.
    pub duration: Option<u64>,
    /// New lowest price.
    pub min_price_per_byte_per_second: Option<U256>,
    /// New total collateral; the remaining collateral moves by as much. Not below
    /// what slots hold.
    pub total_collateral: Option<U256>,
    /// Whether new slots may be taken.
    pub enabled: Option<bool>,
    /// New `until` (0: no limit).
    pub until: Option<u64>,
}

fn positive(name: &str, zero: bool) -> Result<()> {
    if zero {
        return Err(Error::InvalidRequest(format!(
            "{name} must be greater than zero"
        )));
    }
    Ok(())
}

impl Availability {
    /// A new, enabled availability with nothing taken yet.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] when a value is zero.
    pub fn new(
        id: String,
        total_size: u64,
        duration: u64,
        min_price_per_byte_per_second: U256,
        total_collateral: U256,
    ) -> Result<Self> {
        positive("totalSize", total_size == 0)?;
        positive("duration", duration == 0)?;
        positive(
            "minPricePerBytePerSecond",
            min_price_per_byte_per_second.is_zero(),
        )?;
        positive("totalCollateral", total_collateral.is_zero())?;
        Ok(Availability {
            id,
            total_size,
            free_size: total_size,
            duration,
            min_price_per_byte_per_second,
            total_collateral,
            total_remaining_collateral: total_collateral,
            enabled: true,
            until: 0,
        })
    }

    /// Bytes slots hold.
    pub fn used_size(&self) -> u64 {
        self.total_size.saturating_sub(self.free_size)
    }

    /// Collateral slots hold.
    pub fn used_collateral(&self) -> U256 {
        self.total_collateral
            .saturating_sub(self.total_remaining_collateral)
    }

    /// Applies `update`. Growing or shrinking the totals moves the free amounts by as
    /// much; neither may drop below what slots already hold. A refused update changes
    /// nothing.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] for a zero value or a total below what is in use.
    pub fn apply(&mut self, update: &AvailabilityUpdate) -> Result<()> {
        let mut next = self.clone();
        if let Some(size) = update.total_size {
            positive("totalSize", size == 0)?;
            let used = self.used_size();
            if size < used {
                return Err(Error::InvalidRequest(format!(
                    "totalSize ({size}) is below the {used} bytes slots already hold"
                )));
            }
            next.total_size = size;
            next.free_size = size - used;
        }
        if let Some(c) = update.total_collateral {
            positive("totalCollateral", c.is_zero())?;
            let used = self.used_collateral();
            if c < used {
                return Err(Error::InvalidRequest(format!(
                    "totalCollateral ({c}) is below the {used} slots already hold"
                )));
            }
            next.total_collateral = c;
            next.total_remaining_collateral = c - used;
        }
        if let Some(d) = update.duration {
            positive("duration", d == 0)?;
            next.duration = d;
        }
        if let Some(p) = update.min_price_per_byte_per_second {
            positive("minPricePerBytePerSecond", p.is_zero())?;
            next.min_price_per_byte_per_second = p;
        }
        if let Some(e) = update.enabled {
            next.enabled = e;
        }
        if let Some(u) = update.until {
            next.until = u;
        }
        *self = next;
        Ok(())
    }

    /// Whether a slot of `request`, taken at `now` (seconds since the Unix epoch),
    /// fits: enabled, enough free space and collateral, a duration and price it
    /// accepts, and an end no later than `until` (when set).
    pub fn matches(&self, request: &StorageRequest, now: u64) -> bool {
        let ask = &request.ask;
        self.enabled
            && (self.until == 0 || now.saturating_add(ask.duration) <= self.until)
            && self.free_size >= ask.slot_size
            && self.duration >= ask.duration
            && ask.price_per_byte_per_second >= self.min_price_per_byte_per_second
            && self.total_remaining_collateral >= ask.collateral_per_slot()
    }

    /// Takes a slot's size and collateral.
    pub(crate) fn take(&mut self, request: &StorageRequest) {
        self.free_size = self.free_size.saturating_sub(request.ask.slot_size);
        self.total_remaining_collateral = self
            .total_remaining_collateral
            .saturating_sub(request.ask.collateral_per_slot());
    }

    /// Gives a slot's size back, and its collateral unless it was lost.
    pub(crate) fn give_back(&mut self, request: &StorageRequest, collateral: bool) {
        self.free_size = (self.free_size + request.ask.slot_size).min(self.total_size);
        if collateral {
            self.total_remaining_collateral = (self.total_remaining_collateral
                + request.ask.collateral_per_slot())
            .min(self.total_collateral);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn availability() -> Result<Availability> {
        Availability::new("a1".into(), 1000, 3600, U256::from(1), U256::from(500))
    }

    #[test]
    fn updates_stay_within_what_slots_hold() -> Result<()> {
        let mut a = availability()?;
        a.free_size = 600; // 400 bytes held by slots
        a.total_remaining_collateral = U256::from(300u64);
        a.apply(&AvailabilityUpdate {
            total_size: Some(2000),
            enabled: Some(false),
            ..Default::default()
        })?;
        assert_eq!((a.total_size, a.free_size, a.enabled), (2000, 1600, false));
        let below = AvailabilityUpdate {
            total_size: Some(399),
            ..Default::default()
        };
        assert!(matches!(a.apply(&below), Err(Error::InvalidRequest(m)) if m.contains("400")));
        let zero = AvailabilityUpdate {
            duration: Some(0),
            ..Default::default()
        };
        assert!(a.apply(&zero).is_err());
        a.apply(&AvailabilityUpdate {
            total_collateral: Some(U256::from(250)),
            ..Default::default()
        })?;
        assert_eq!(a.total_remaining_collateral, U256::from(50u64));
        assert_eq!(a.total_size, 2000, "a refused update changes nothing");
        Ok(())
    }

    #[test]
    fn zero_values_are_refused() {
        assert!(Availability::new("a".into(), 0, 1, U256::from(1), U256::from(1)).is_err());
        assert!(Availability::new("a".into(), 1, 1, U256::ZERO, U256::from(1)).is_err());
    }
}
