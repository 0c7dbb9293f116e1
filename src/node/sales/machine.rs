//! The life of one sale as a pure state machine: it is told what happened (an
//! [`Event`]: what the chain said, how a step ended) and answers what to do next (an
//! [`Action`]). No I/O and no clock: the driver performs the actions and feeds their
//! outcomes back, so every transition is tested without a chain.
//!
//! ```text
//! Inspect ─▶ TakeSpace ─▶ Reserve ─▶ Download ─▶ Fill ─▶ Watch ⟲ (CheckProofDue ─▶ Prove)
//!                                                          └─▶ Payout ─▶ End
//! ```

use codex_market::{MarketplaceError, SlotState};

use super::SaleState;

/// What the driver does next for a sale.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Read the slot's state and whether this host may reserve it.
    Inspect,
    /// Take the slot's space and collateral from a matching availability.
    TakeSpace,
    /// Reserve the slot on chain.
    Reserve,
    /// Fetch the slot's blocks (rebuild them from the other slots when `repair`) and
    /// check the slot root.
    Download {
        /// The slot is in Repair.
        repair: bool,
    },
    /// Wait for a stable challenge, prove it and fill the slot.
    Fill,
    /// Wait a poll interval, then read the slot's state and the period.
    Watch,
    /// Ask whether a proof is due (required now, or once the pointer leaves the downtime).
    CheckProofDue {
        /// The period a proof sent now counts for.
        period: u64,
    },
    /// Prove the challenge and submit the proof.
    Prove {
        /// The period it counts for.
        period: u64,
    },
    /// Free the slot: collect the payout and the collateral.
    Payout,
    /// The sale is over.
    End(End),
}

/// How a sale ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum End {
    /// Nothing was taken (the slot is not free, no availability matches, the chain
    /// could not be read); `retry`: queue the slot again.
    Skipped {
        /// Queue the slot again.
        retry: bool,
    },
    /// The sale held space of an availability and is over.
    Over {
        /// Its last state.
        state: SaleState,
        /// Why, when it did not end well.
        error: Option<String>,
        /// Whether the collateral returns to the availability (not when it was lost).
        collateral_back: bool,
        /// Queue the slot again (an attempt that failed for a reason that may pass).
        retry: bool,
    },
}

/// Why a marketplace call failed, as far as the sale is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// The slot is gone for this host: filled by another, unknown, expired.
    SlotLost,
    /// The reservation is gone (the slot was filled and freed since).
    NotReserved,
    /// The request is not worth filling: its dataset is not what it says.
    Unfit,
    /// Anything else (a peer away, a challenge that moved, an unreachable chain).
    Other,
}

impl FailureKind {
    /// The kind of a failed marketplace call's custom error.
    pub fn of(error: Option<MarketplaceError>) -> Self {
        match error {
            Some(
                MarketplaceError::SlotNotFree
                | MarketplaceError::InvalidSlot
                | MarketplaceError::UnknownRequest
                | MarketplaceError::StartNotBeforeExpiry
                // Other hosts took every reservation between the inspection and
                // ours: they fill it, and the contract frees reservations only then.
                | MarketplaceError::ReservationNotAllowed,
            ) => FailureKind::SlotLost,
            Some(MarketplaceError::ReservationRequired) => FailureKind::NotReserved,
            _ => FailureKind::Other,
        }
    }
}

/// What happened, as the driver tells it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The slot's state, and whether this host may reserve it.
    Inspected {
        /// The slot's state.
        state: SlotState,
        /// `canReserveSlot` for this host.
        can_reserve: bool,
    },
    /// An availability matched (its id), or none did.
    SpaceTaken(Option<String>),
    /// The reservation is on chain.
    Reserved,
    /// The slot's data is stored and checked.
    Downloaded,
    /// The fill landed in `period`.
    Filled {
        /// The period of the fill's block.
        period: u64,
    },
    /// The slot's state and the period a proof sent now counts for.
    Watched {
        /// The slot's state.
        state: SlotState,
        /// The period.
        period: u64,
    },
    /// Whether a proof is due.
    ProofDue(bool),
    /// The proof was accepted; it counts for `period`.
    Proved {
        /// The period of the block it landed in.
        period: u64,
    },
    /// The block holding the proof accepted for `period` is no longer on the chain (a
    /// reorganisation replaced it): read instead of the slot's state, while in that
    /// period.
    ProofDropped {
        /// The period the proof counted for.
        period: u64,
    },
    /// The payout was collected.
    PaidOut,
    /// The step failed.
    Failed {
        /// Why, for the sale's record.
        message: String,
        /// What it means for the sale.
        kind: FailureKind,
        /// For a refused proof: one was already submitted this period.
        already_proved: bool,
    },
}

impl Event {
    /// A failed step.
    pub fn failed(message: impl Into<String>, kind: FailureKind) -> Self {
        Event::Failed {
            message: message.into(),
            kind,
            already_proved: false,
        }
    }

    /// A failed marketplace call.
    pub fn market_error(error: &codex_market::Error) -> Self {
        let custom = error.marketplace_error();
        Event::Failed {
            message: error.to_string(),
            kind: FailureKind::of(custom),
            already_proved: custom == Some(MarketplaceError::ProofAlreadySubmitted),
        }
    }
}

/// One sale's state machine.
#[derive(Clone, Debug)]
pub struct SaleMachine {
    state: SaleState,
    /// Whether this host holds a reservation of the slot.
    reserved: bool,
    /// Whether the slot was in Repair when it was taken.
    repair: bool,
    /// The last action, whose outcome the next event is.
    pending: Action,
    /// The period the last accepted proof (or the fill) counts for.
    proved_in: Option<u64>,
    /// The slot was Finished (not Cancelled) when its payout was asked for.
    finished: bool,
}

impl SaleMachine {
    /// An attempt at a queued slot; `reserved` when an earlier attempt reserved it.
    /// The first action is [`Action::Inspect`].
    pub fn new(reserved: bool) -> Self {
        SaleMachine {
            state: SaleState::Reserving,
            reserved,
            repair: false,
            pending: Action::Inspect,
            proved_in: None,
            finished: false,
        }
    }

    /// A slot this host held before a restart (Codex's `SaleUnknown`): it is watched,
    /// and proved in the current period if one is due. The first action is
    /// [`Action::Watch`].
    pub fn resume() -> Self {
        SaleMachine {
            state: SaleState::Proving,
            reserved: true,
            repair: false,
            pending: Action::Watch,
            proved_in: None,
            finished: false,
        }
    }

    /// The action to perform now (before any event: the first one).
    pub fn action(&self) -> &Action {
        &self.pending
    }

    /// Where the sale is.
    pub fn state(&self) -> SaleState {
        self.state
    }

    /// Whether this host holds a reservation of the slot.
    pub fn reserved(&self) -> bool {
        self.reserved
    }

    /// Whether the slot was in Repair when it was taken.
    pub fn repair(&self) -> bool {
        self.repair
    }

    /// Whether the attempt is still before the fill (a worker's turn).
    pub fn attempting(&self) -> bool {
        matches!(
            self.pending,
            Action::Inspect
                | Action::TakeSpace
                | Action::Reserve
                | Action::Download { .. }
                | Action::Fill
        )
    }

    /// Takes the outcome of the pending action; returns the next one.
    pub fn on(&mut self, event: Event) -> Action {
        let next = self.next(event);
        if let Action::End(End::Over { state, .. }) = &next {
            self.state = *state;
        }
        self.pending = next.clone();
        next
    }

    fn over(&self, state: SaleState, error: Option<String>, collateral_back: bool) -> Action {
        Action::End(End::Over {
            state,
            error,
            collateral_back,
            retry: false,
        })
    }

    /// A failed step before the fill: the slot is lost, or the attempt may be retried.
    fn attempt_failed(&mut self, message: String, kind: FailureKind) -> Action {
        if kind == FailureKind::NotReserved {
            self.reserved = false;
        }
        let lost = matches!(kind, FailureKind::SlotLost | FailureKind::Unfit);
        Action::End(End::Over {
            state: if lost {
                SaleState::Ignored
            } else {
                SaleState::Errored
            },
            error: Some(message),
            collateral_back: true,
            retry: !lost,
        })
    }

    fn next(&mut self, event: Event) -> Action {
        match (&self.pending, event) {
            // ---- before anything is taken
            (Action::Inspect, Event::Inspected { state, can_reserve }) => {
                if !matches!(state, SlotState::Free | SlotState::Repair) {
                    return Action::End(End::Skipped { retry: false });
                }
                self.repair = state == SlotState::Repair;
                // A reservation of an earlier attempt stands unless the slot was
                // filled and freed since (the contract then forgets reservations):
                // reserve again when allowed.
                if can_reserve {
                    self.reserved = false;
                } else if !self.reserved {
                    return Action::End(End::Skipped { retry: true });
                }
                Action::TakeSpace
            }
            (Action::Inspect, _) => Action::End(End::Skipped { retry: true }),
            (Action::TakeSpace, Event::SpaceTaken(Some(_))) => {
                self.state = SaleState::Reserving;
                if self.reserved {
                    self.state = SaleState::Downloading;
                    Action::Download {
                        repair: self.repair,
                    }
                } else {
                    Action::Reserve
                }
            }
            (Action::TakeSpace, _) => Action::End(End::Skipped { retry: true }),

            // ---- the attempt: reserve, download, fill
            (Action::Reserve, Event::Reserved) => {
                self.reserved = true;
                self.state = SaleState::Downloading;
                Action::Download {
                    repair: self.repair,
                }
            }
            (Action::Download { .. }, Event::Downloaded) => {
                self.state = SaleState::InitialProving;
                Action::Fill
            }
            (Action::Fill, Event::Filled { period }) => {
                self.state = SaleState::Proving;
                self.proved_in = Some(period);
                Action::Watch
            }
            (
                Action::Reserve | Action::Download { .. } | Action::Fill,
                Event::Failed { message, kind, .. },
            ) => self.attempt_failed(message, kind),

            // ---- filled: prove when asked, until the request is over
            (Action::Watch, Event::Watched { state, period }) => match state {
                SlotState::Filled if self.proved_in != Some(period) => {
                    Action::CheckProofDue { period }
                }
                SlotState::Filled => Action::Watch,
                SlotState::Finished | SlotState::Cancelled => {
                    self.state = SaleState::Payout;
                    self.finished = state == SlotState::Finished;
                    Action::Payout
                }
                SlotState::Paid => self.over(SaleState::Finished, None, true),
                SlotState::Failed => {
                    self.over(SaleState::Failed, Some("the request failed".into()), false)
                }
                // A slot freed for missed proofs goes to Repair. Free again means the
                // fill is no longer on chain (a reorganisation dropped it): the host
                // still holds the data, so it proves and fills again.
                SlotState::Free => {
                    self.state = SaleState::InitialProving;
                    Action::Fill
                }
                SlotState::Repair => self.over(
                    SaleState::Errored,
                    Some("the slot was freed: proofs were missed".into()),
                    false,
                ),
            },
            // The chain no longer holds the proof: prove again if it is still due.
            (Action::Watch, Event::ProofDropped { period }) => {
                if self.proved_in == Some(period) {
                    self.proved_in = None;
                }
                Action::CheckProofDue { period }
            }
            (Action::CheckProofDue { period }, Event::ProofDue(true)) => {
                Action::Prove { period: *period }
            }
            (Action::Prove { period }, Event::Proved { period: landed }) => {
                self.proved_in = Some(landed.max(*period));
                Action::Watch
            }
            (
                Action::Prove { period },
                Event::Failed {
                    already_proved: true,
                    ..
                },
            ) => {
                self.proved_in = Some(*period);
                Action::Watch
            }
            // Not due, not read, not accepted: look again at the next poll.
            (Action::Watch | Action::CheckProofDue { .. } | Action::Prove { .. }, _) => {
                Action::Watch
            }

            // ---- paid
            (Action::Payout, Event::PaidOut) => {
                let state = if self.finished {
                    SaleState::Finished
                } else {
                    SaleState::Cancelled
                };
                self.over(state, None, true)
            }
            (Action::Payout, Event::Failed { message, .. }) => {
                self.over(SaleState::Errored, Some(message), true)
            }

            // An event that does not answer the pending action changes nothing.
            (pending, _) => pending.clone(),
        }
    }
}

/// Whether a proof started now lands under the challenge it is made for (Codex's
/// "stable challenge"): the challenge changes with the period and when the slot's
/// pointer wraps past 255 (one step a block), so neither may come within `need`
/// seconds. Nor does a proof start in a period's first block time (at most a quarter
/// period): the latest block is then still in the period before, and a node
/// estimating the transaction on it finds that period's proof already submitted.
/// `now` is the next block's time, `block_secs` the chain's block time.
pub fn challenge_is_stable(now: u64, period: u64, pointer: u8, need: u64, block_secs: u64) -> bool {
    let period = period.max(1);
    let block_secs = block_secs.max(1);
    let (into, left) = (now % period, period - now % period);
    let blocks_to_wrap = 256 - u64::from(pointer);
    into >= block_secs.min(period / 4) && left > need && blocks_to_wrap * block_secs > need
}

/// The seconds a proof needs, with a margin: the last proof's time (10 s before the
/// first) and two blocks (the block it lands in, and one more for a replacement with
/// a higher fee), at most two thirds of a period (a slower proof starts at the
/// period's start).
pub fn proof_margin(last_prove_ms: Option<u64>, period: u64, block_secs: u64) -> u64 {
    let prove = match last_prove_ms {
        None => 10,
        Some(ms) => ms.div_ceil(1000) * 6 / 5 + 1,
    };
    (prove + 2 * block_secs).min(period * 2 / 3)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lost() -> Event {
        Event::failed("SlotNotFree", FailureKind::SlotLost)
    }

    fn run(m: &mut SaleMachine, events: Vec<Event>) -> Vec<Action> {
        events.into_iter().map(|e| m.on(e)).collect()
    }

    #[test]
    fn a_free_slot_is_reserved_downloaded_filled_proved_and_paid() {
        let mut m = SaleMachine::new(false);
        assert_eq!(m.action(), &Action::Inspect);
        let actions = run(
            &mut m,
            vec![
                Event::Inspected {
                    state: SlotState::Free,
                    can_reserve: true,
                },
                Event::SpaceTaken(Some("a".into())),
                Event::Reserved,
                Event::Downloaded,
                Event::Filled { period: 10 },
                // the fill's period needs no other proof
                Event::Watched {
                    state: SlotState::Filled,
                    period: 10,
                },
                Event::Watched {
                    state: SlotState::Filled,
                    period: 11,
                },
                Event::ProofDue(false),
                Event::Watched {
                    state: SlotState::Filled,
                    period: 11,
                },
                Event::ProofDue(true),
                Event::Proved { period: 11 },
                Event::Watched {
                    state: SlotState::Filled,
                    period: 11,
                },
                Event::Watched {
                    state: SlotState::Finished,
                    period: 40,
                },
                Event::PaidOut,
            ],
        );
        assert_eq!(
            actions,
            vec![
                Action::TakeSpace,
                Action::Reserve,
                Action::Download { repair: false },
                Action::Fill,
                Action::Watch,
                Action::Watch,
                Action::CheckProofDue { period: 11 },
                Action::Watch,
                Action::CheckProofDue { period: 11 },
                Action::Prove { period: 11 },
                Action::Watch,
                Action::Watch,
                Action::Payout,
                Action::End(End::Over {
                    state: SaleState::Finished,
                    error: None,
                    collateral_back: true,
                    retry: false
                }),
            ]
        );
        assert_eq!(m.state(), SaleState::Finished);
    }

    #[test]
    fn a_repair_slot_is_rebuilt_and_a_kept_reservation_is_not_sent_again() {
        let mut m = SaleMachine::new(true);
        let actions = run(
            &mut m,
            vec![
                Event::Inspected {
                    state: SlotState::Repair,
                    can_reserve: false,
                },
                Event::SpaceTaken(Some("a".into())),
            ],
        );
        assert_eq!(
            actions,
            vec![Action::TakeSpace, Action::Download { repair: true }]
        );
        assert!(m.repair() && m.attempting());
    }

    #[test]
    fn slots_not_to_take() {
        let mut taken = SaleMachine::new(false);
        let filled = Event::Inspected {
            state: SlotState::Filled,
            can_reserve: false,
        };
        assert_eq!(taken.on(filled), Action::End(End::Skipped { retry: false }));
        // reservations full: try again later
        let mut full = SaleMachine::new(false);
        let no = Event::Inspected {
            state: SlotState::Free,
            can_reserve: false,
        };
        assert_eq!(full.on(no), Action::End(End::Skipped { retry: true }));
        // no availability matches
        let mut poor = SaleMachine::new(false);
        poor.on(Event::Inspected {
            state: SlotState::Free,
            can_reserve: true,
        });
        assert_eq!(
            poor.on(Event::SpaceTaken(None)),
            Action::End(End::Skipped { retry: true })
        );
    }

    #[test]
    fn failed_attempts_are_lost_or_retried() {
        let start = |m: &mut SaleMachine| {
            run(
                m,
                vec![
                    Event::Inspected {
                        state: SlotState::Free,
                        can_reserve: true,
                    },
                    Event::SpaceTaken(Some("a".into())),
                ],
            )
        };
        let mut m = SaleMachine::new(false);
        start(&mut m);
        m.on(Event::Reserved);
        m.on(Event::Downloaded);
        assert_eq!(
            m.on(lost()),
            Action::End(End::Over {
                state: SaleState::Ignored,
                error: Some("SlotNotFree".into()),
                collateral_back: true,
                retry: false
            })
        );
        let mut m = SaleMachine::new(false);
        start(&mut m);
        m.on(Event::Reserved);
        let e = m.on(Event::failed(
            "ReservationRequired",
            FailureKind::NotReserved,
        ));
        assert!(matches!(
            e,
            Action::End(End::Over {
                state: SaleState::Errored,
                retry: true,
                ..
            })
        ));
        assert!(!m.reserved(), "the next attempt reserves again");
    }

    #[test]
    fn a_fill_a_reorganisation_dropped_is_sent_again() {
        let mut m = SaleMachine::resume();
        let a = m.on(Event::Watched {
            state: SlotState::Free,
            period: 3,
        });
        assert_eq!(a, Action::Fill);
        assert_eq!(m.state(), SaleState::InitialProving);
        assert_eq!(m.on(Event::Filled { period: 3 }), Action::Watch);
        assert_eq!(m.state(), SaleState::Proving);
    }

    #[test]
    fn a_reservation_refused_because_others_took_the_room_ignores_the_slot() {
        let mut m = SaleMachine::new(false);
        m.on(Event::Inspected {
            state: SlotState::Free,
            can_reserve: true,
        });
        assert_eq!(m.on(Event::SpaceTaken(Some("a".into()))), Action::Reserve);
        let refused = Event::Failed {
            message: "reserveSlot reverted with SlotReservations_ReservationNotAllowed".into(),
            kind: FailureKind::of(Some(MarketplaceError::ReservationNotAllowed)),
            already_proved: false,
        };
        assert!(matches!(
            m.on(refused),
            Action::End(End::Over {
                state: SaleState::Ignored,
                collateral_back: true,
                retry: false,
                ..
            })
        ));
    }

    #[test]
    fn a_proof_a_reorganisation_dropped_is_sent_again_while_due() {
        let mut m = SaleMachine::resume();
        let watched = |period| Event::Watched {
            state: SlotState::Filled,
            period,
        };
        assert_eq!(m.on(watched(5)), Action::CheckProofDue { period: 5 });
        assert_eq!(m.on(Event::ProofDue(true)), Action::Prove { period: 5 });
        assert_eq!(m.on(Event::Proved { period: 5 }), Action::Watch);
        assert_eq!(m.on(watched(5)), Action::Watch, "proved: nothing due");
        // The proof's block is replaced: the period is not proved any more.
        assert_eq!(
            m.on(Event::ProofDropped { period: 5 }),
            Action::CheckProofDue { period: 5 }
        );
        assert_eq!(m.on(Event::ProofDue(true)), Action::Prove { period: 5 });
        assert_eq!(m.on(Event::Proved { period: 5 }), Action::Watch);
        assert_eq!(m.on(watched(5)), Action::Watch);
        // Dropped when no longer due (the period is over): the next period's proof as
        // usual.
        assert_eq!(
            m.on(Event::ProofDropped { period: 5 }),
            Action::CheckProofDue { period: 5 }
        );
        assert_eq!(m.on(Event::ProofDue(false)), Action::Watch);
        assert_eq!(m.on(watched(6)), Action::CheckProofDue { period: 6 });
        assert_eq!(m.state(), SaleState::Proving);
    }

    #[test]
    fn a_filled_slot_ends_with_its_request() {
        for (slot, state, back) in [
            (SlotState::Failed, SaleState::Failed, false),
            (SlotState::Repair, SaleState::Errored, false),
            (SlotState::Paid, SaleState::Finished, true),
        ] {
            let mut m = SaleMachine::resume();
            let a = m.on(Event::Watched {
                state: slot,
                period: 3,
            });
            assert!(
                matches!(&a, Action::End(End::Over { state: s, collateral_back, .. }) if *s == state && *collateral_back == back),
                "{slot:?}: {a:?}"
            );
            assert_eq!(m.state(), state);
        }
        let mut m = SaleMachine::resume();
        m.on(Event::Watched {
            state: SlotState::Cancelled,
            period: 3,
        });
        assert_eq!(m.state(), SaleState::Payout);
        assert!(matches!(
            m.on(Event::PaidOut),
            Action::End(End::Over {
                state: SaleState::Cancelled,
                ..
            })
        ));
    }

    #[test]
    fn a_resumed_sale_proves_the_current_period_and_a_refused_proof_is_tried_again() {
        let mut m = SaleMachine::resume();
        let filled = |period| Event::Watched {
            state: SlotState::Filled,
            period,
        };
        assert_eq!(m.on(filled(7)), Action::CheckProofDue { period: 7 });
        assert_eq!(m.on(Event::ProofDue(true)), Action::Prove { period: 7 });
        assert_eq!(
            m.on(Event::failed("InvalidProof", FailureKind::Other)),
            Action::Watch
        );
        assert_eq!(m.on(filled(7)), Action::CheckProofDue { period: 7 });
        m.on(Event::ProofDue(true));
        let already = Event::Failed {
            message: "ProofAlreadySubmitted".into(),
            kind: FailureKind::Other,
            already_proved: true,
        };
        assert_eq!(m.on(already), Action::Watch);
        assert_eq!(m.on(filled(7)), Action::Watch, "counted as proved");
        // an unreadable chain is watched again
        assert_eq!(
            m.on(Event::failed("rpc", FailureKind::Other)),
            Action::Watch
        );
    }

    #[test]
    fn stable_challenges() {
        assert!(challenge_is_stable(1000 * 120 + 10, 120, 100, 10, 1));
        assert!(
            !challenge_is_stable(1000 * 120 + 115, 120, 100, 10, 1),
            "period ends"
        );
        assert!(
            !challenge_is_stable(1000 * 120 + 10, 120, 250, 10, 1),
            "pointer wraps"
        );
        // On 12-second blocks six pointer steps are 72 s: no wrap within 10 s.
        assert!(challenge_is_stable(1000 * 120 + 12, 120, 250, 10, 12));
        assert!(
            !challenge_is_stable(1000 * 120 + 12, 120, 255, 13, 12),
            "one block to the wrap"
        );
        // Not in the period's first block: the latest block is still in the last one.
        assert!(!challenge_is_stable(1000 * 120 + 1, 120, 100, 10, 2));
        assert!(challenge_is_stable(1000 * 120 + 2, 120, 100, 10, 2));
        assert!(
            challenge_is_stable(1000 * 120 + 30, 120, 100, 10, 300),
            "at most a quarter period"
        );
        // The margin: the proof's time plus two blocks.
        assert_eq!(proof_margin(None, 120, 1), 12);
        assert_eq!(proof_margin(Some(2500), 120, 1), 6);
        assert_eq!(proof_margin(Some(2500), 120, 12), 28);
        assert_eq!(proof_margin(Some(200_000), 120, 2), 80);
    }
}
