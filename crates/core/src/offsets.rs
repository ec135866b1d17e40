//! Telegram update ids: which updates are done, which `offset` confirms them, where a new
//! active device starts, and what happens when Telegram starts its ids over.
//!
//! Owns: the bounds on update ids ([`UPDATE_ID_MAX`]), the start position a new active
//! device takes from the records ([`start_hints`]), and the [`OffsetLedger`], the pure
//! bookkeeping behind every `getUpdates` offset. The Telegram adapter and the simulator
//! both drive the same ledger.
//!
//! The rule (ARCHITECTURE.md, "Telegram flow", says it in prose): Telegram is the
//! authority on what is unconfirmed. An update it returns has not been confirmed. The ids
//! in the records are hints for the crash window only: they say which updates an earlier
//! device handled but may not have confirmed. A `getUpdates` with offset `o` confirms
//! every id below `o`, so an update Telegram returns with an id below the offset it was
//! sent is proof that its ids started over (after a week without updates, "the next
//! identifier is chosen randomly"; the real server then ignores the old, higher offset).
//! The ledger then drops every hint and its own watermark, and follows the new sequence
//! from that update on ([`Admission::Restarted`]).
//!
//! Must never: let an id wrap (every id it keeps lies in `1..=UPDATE_ID_MAX`, so `+ 1`
//! cannot overflow), confirm an id Telegram has not shown it, or trust a hint over an
//! update Telegram returns below the offset it was sent.

use std::collections::BTreeMap;

use super::record::DeviceRecord;
/// The bounds on update ids live with the record's other number bounds.
pub use super::record::{UPDATE_ID_MAX, is_sane_update_id};

/// Handled ids above the watermark kept in [`PollProgress`] at most.
use super::record::HANDLED_ABOVE_MAX;

/// Where a newly active device starts: every id ≤ `skip_through`, and the ids in
/// `also_handled`, were handled by an earlier active device (from the device records).
/// `skip_through` 0 means nothing is known: the first `getUpdates` sends no offset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StartPosition {
    pub skip_through: i64,
    pub also_handled: Vec<i64>,
}

/// What to write in the device record: all ids ≤ `handled_through` are done, plus the
/// ids in `handled_above` (commands handled while an earlier forward was unacknowledged).
/// `handled_through` 0: nothing handled in the current id sequence yet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PollProgress {
    pub handled_through: i64,
    pub handled_above: Vec<i64>,
    pub highest_seen: i64,
    /// How often Telegram's ids started over during this ledger's life.
    pub restarts: u32,
}

/// The hints a new active device starts from: the progress recorded in the most recent
/// term anyone was active in (`progress_term`), so that a peer's record from before
/// Telegram started its ids over, which may carry a much higher id, never hides the new
/// sequence. Records without `progress_term` (older batons) rank below every other and
/// among themselves give the highest id, as before. Feed only sanitised records
/// ([`super::record::sanitize`]). Returns `(skip_through, also_handled)`.
pub fn start_hints<'a>(
    records: impl IntoIterator<Item = &'a DeviceRecord>,
) -> (Option<i64>, Vec<i64>) {
    let with_progress: Vec<&DeviceRecord> = records
        .into_iter()
        .filter(|r| {
            r.progress_term.is_some() || r.last_update_id.is_some() || !r.handled_above.is_empty()
        })
        .collect();
    let rank = |record: &DeviceRecord| record.progress_term.map_or(0, |t| t.saturating_add(1));
    let Some(newest) = with_progress.iter().map(|r| rank(r)).max() else {
        return (None, Vec::new());
    };
    let group: Vec<&DeviceRecord> = with_progress
        .into_iter()
        .filter(|r| rank(r) == newest)
        .collect();
    let skip_through = group.iter().filter_map(|r| r.last_update_id).max();
    let floor = skip_through.unwrap_or(0);
    let mut also_handled: Vec<i64> = group
        .iter()
        .filter(|r| r.last_update_id.unwrap_or(0) <= floor)
        .flat_map(|r| r.handled_above.iter().copied())
        .filter(|id| *id > floor && is_sane_update_id(*id))
        .collect();
    also_handled.sort_unstable();
    also_handled.dedup();
    also_handled.truncate(HANDLED_ABOVE_MAX);
    (skip_through, also_handled)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Disposition {
    Handled,
    Forwarded,
}

/// What the ledger makes of one update Telegram returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Not reported yet: dispatch it.
    New,
    /// Reported already (forwarded and waiting for the child, or handled by an earlier
    /// device according to the records): do not dispatch it again.
    Known,
    /// New, and proof that Telegram started its ids over: it came back although the
    /// request's offset (`offset_sent`) was above it. The ledger now follows the new
    /// sequence; dispatch it.
    Restarted { offset_sent: i64 },
    /// Not a usable id (outside `1..=UPDATE_ID_MAX`): it cannot be confirmed on its own;
    /// the next confirmed id covers it.
    Unusable,
}

/// The offset bookkeeping, pure: which updates are done, and the next `offset`.
///
/// An update is done when baton handled it or the child acknowledged it (`since` ≥ its
/// id). The watermark only passes ids that Telegram has shown us, so a hole (an update
/// not yet seen) is never skipped.
///
/// Call [`OffsetLedger::begin_batch`] with the offset a request was sent with before
/// [`OffsetLedger::admit`]ting the updates it returned, in Telegram's order.
#[derive(Debug, Clone)]
pub struct OffsetLedger {
    handled_through: i64,
    highest_seen: i64,
    pending: BTreeMap<i64, Disposition>,
    /// The offset of the request whose answer is being admitted (after a restart within
    /// a batch: the first id of the new sequence).
    batch_offset: Option<i64>,
    /// Which generation of child acknowledgements applies to this ledger: it grows by one
    /// at every restart, as the gateway's does when told of the restart (see
    /// `adapters::gateway`), so an acknowledgement of the old sequence never confirms an
    /// id of the new one.
    ack_generation: u64,
    restarts: u32,
}

impl OffsetLedger {
    /// Starts from `start`; hints that are not update ids are dropped. Acknowledgements
    /// of generation `ack_generation` apply (the gateway's current one).
    pub fn new(start: &StartPosition, ack_generation: u64) -> Self {
        let skip_through = if is_sane_update_id(start.skip_through) {
            start.skip_through
        } else {
            0
        };
        let pending = start
            .also_handled
            .iter()
            .filter(|id| **id > skip_through && is_sane_update_id(**id))
            .map(|id| (*id, Disposition::Handled))
            .collect();
        OffsetLedger {
            handled_through: skip_through,
            highest_seen: skip_through,
            pending,
            batch_offset: None,
            ack_generation,
            restarts: 0,
        }
    }

    /// The `offset` for the next getUpdates: confirms every id ≤ the watermark.
    pub fn offset(&self) -> Option<i64> {
        // The watermark is 0 or a sane id, so `+ 1` cannot overflow.
        (self.handled_through > 0).then(|| self.handled_through.saturating_add(1))
    }

    /// The generation of acknowledgements this ledger takes (see [`Self::acknowledged`]).
    pub fn ack_generation(&self) -> u64 {
        self.ack_generation
    }

    /// Call before admitting the updates of one answer, with the offset it was asked with.
    pub fn begin_batch(&mut self, offset_sent: Option<i64>) {
        self.batch_offset = offset_sent;
    }

    /// Notes that Telegram returned `update_id` and says whether to dispatch it.
    pub fn admit(&mut self, update_id: i64) -> Admission {
        if !is_sane_update_id(update_id) {
            return Admission::Unusable;
        }
        if let Some(offset_sent) = self.batch_offset.filter(|offset| update_id < *offset) {
            self.restart_at(update_id);
            return Admission::Restarted { offset_sent };
        }
        self.highest_seen = self.highest_seen.max(update_id);
        if update_id > self.handled_through && !self.pending.contains_key(&update_id) {
            Admission::New
        } else {
            Admission::Known
        }
    }

    /// Telegram's ids started over at `first_id`: everything known so far belongs to the
    /// old sequence (hints, forwards waiting for the child: Telegram has dropped them,
    /// it keeps unconfirmed updates a day and starts over only after a quiet week).
    fn restart_at(&mut self, first_id: i64) {
        self.handled_through = first_id - 1; // first_id ≥ 1: no overflow
        self.highest_seen = first_id;
        self.pending.clear();
        self.batch_offset = Some(first_id);
        self.ack_generation = self.ack_generation.saturating_add(1);
        self.restarts = self.restarts.saturating_add(1);
    }

    pub fn handled(&mut self, update_id: i64) {
        if is_sane_update_id(update_id) && update_id > self.handled_through {
            self.pending.insert(update_id, Disposition::Handled);
            self.advance();
        }
    }

    pub fn forwarded(&mut self, update_id: i64) {
        if is_sane_update_id(update_id) && update_id > self.handled_through {
            self.pending.insert(update_id, Disposition::Forwarded);
        }
    }

    /// The child acknowledged every forwarded id ≤ `through`, in acknowledgement
    /// `generation`. An acknowledgement of another generation (the old id sequence, or
    /// the new one before the gateway heard of it) is ignored.
    pub fn acknowledged(&mut self, generation: u64, through: i64) {
        if generation != self.ack_generation {
            return;
        }
        for (_, disposition) in self.pending.range_mut(..=through) {
            *disposition = Disposition::Handled;
        }
        self.advance();
    }

    fn advance(&mut self) {
        while let Some((&id, &disposition)) = self.pending.first_key_value() {
            if disposition != Disposition::Handled || id > self.highest_seen {
                break;
            }
            self.handled_through = id;
            self.pending.remove(&id);
        }
    }

    pub fn progress(&self) -> PollProgress {
        let handled_above = self
            .pending
            .iter()
            .filter(|(_, d)| **d == Disposition::Handled)
            .map(|(id, _)| *id)
            .take(HANDLED_ABOVE_MAX)
            .collect();
        PollProgress {
            handled_through: self.handled_through,
            handled_above,
            highest_seen: self.highest_seen,
            restarts: self.restarts,
        }
    }

    /// Where a poller restarted in the same term (after a pause) begins: this ledger's
    /// progress. Forwards still waiting for the child are not in it: Telegram sends them
    /// again, and the gateway knows them already.
    pub fn resume_position(&self) -> StartPosition {
        let progress = self.progress();
        StartPosition {
            skip_through: progress.handled_through,
            also_handled: progress.handled_above,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{DeviceRecord, Identity};

    fn admitted(ledger: &mut OffsetLedger, offset: Option<i64>, ids: &[i64]) -> Vec<Admission> {
        ledger.begin_batch(offset);
        ids.iter().map(|id| ledger.admit(*id)).collect()
    }

    #[test]
    fn ledger_waits_for_holes_and_acknowledgements() {
        let start = StartPosition {
            skip_through: 6,
            also_handled: vec![8],
        };
        let mut ledger = OffsetLedger::new(&start, 0);
        assert_eq!(ledger.offset(), Some(7));
        ledger.handled(9); // seen out of order before 7 arrived: must not pass the hole
        assert_eq!(ledger.offset(), Some(7));
        assert_eq!(
            admitted(&mut ledger, Some(7), &[7, 8, 9]),
            vec![Admission::New, Admission::Known, Admission::Known]
        );
        ledger.forwarded(7);
        ledger.acknowledged(0, 6);
        assert_eq!(ledger.offset(), Some(7));
        assert_eq!(ledger.progress().handled_above, vec![8, 9]);
        ledger.acknowledged(0, 7);
        assert_eq!(ledger.offset(), Some(10));
        assert!(ledger.progress().handled_above.is_empty());
    }

    #[test]
    fn an_update_below_the_offset_sent_starts_a_new_sequence() {
        // Handled through 727_334_707 in the old sequence; a quiet week later Telegram's
        // next id is 117_314_199 and the old offset does not confirm it.
        let start = StartPosition {
            skip_through: 727_334_707,
            also_handled: vec![727_334_709],
        };
        let mut ledger = OffsetLedger::new(&start, 3);
        let offset = ledger.offset();
        assert_eq!(offset, Some(727_334_708));
        assert_eq!(
            admitted(&mut ledger, offset, &[117_314_199, 117_314_200]),
            vec![
                Admission::Restarted {
                    offset_sent: 727_334_708
                },
                Admission::New
            ]
        );
        assert_eq!(
            ledger.ack_generation(),
            4,
            "old acknowledgements no longer apply"
        );
        ledger.forwarded(117_314_199);
        ledger.handled(117_314_200);
        assert_eq!(
            ledger.offset(),
            Some(117_314_199),
            "the offset follows the new sequence, never the old high id"
        );
        ledger.acknowledged(3, 727_334_800);
        assert_eq!(
            ledger.offset(),
            Some(117_314_199),
            "an old-sequence ack confirms nothing"
        );
        ledger.acknowledged(4, 117_314_199);
        assert_eq!(ledger.offset(), Some(117_314_201));
        let progress = ledger.progress();
        assert_eq!(
            (progress.handled_through, progress.restarts),
            (117_314_200, 1)
        );
        assert!(progress.handled_above.is_empty(), "old hints are gone");
        // Telegram re-sends what is unconfirmed: in order, above the new offset.
        assert_eq!(
            admitted(&mut ledger, Some(117_314_201), &[117_314_201]),
            vec![Admission::New]
        );
    }

    #[test]
    fn the_first_update_of_a_new_sequence_may_be_id_1_and_ids_never_wrap() {
        let mut ledger = OffsetLedger::new(
            &StartPosition {
                skip_through: UPDATE_ID_MAX,
                also_handled: vec![],
            },
            0,
        );
        let offset = ledger.offset();
        assert_eq!(offset, Some(UPDATE_ID_MAX + 1));
        assert_eq!(
            admitted(&mut ledger, offset, &[1]),
            vec![Admission::Restarted {
                offset_sent: UPDATE_ID_MAX + 1
            }]
        );
        assert_eq!(
            ledger.offset(),
            None,
            "nothing of the new sequence handled yet"
        );
        ledger.forwarded(1);
        assert_eq!(ledger.progress().handled_through, 0);
        for absurd in [0, -5, i64::MAX, i64::MIN, UPDATE_ID_MAX + 1] {
            assert_eq!(ledger.admit(absurd), Admission::Unusable, "{absurd}");
            ledger.handled(absurd);
        }
        let poisoned = OffsetLedger::new(
            &StartPosition {
                skip_through: i64::MAX,
                also_handled: vec![i64::MAX, -1],
            },
            0,
        );
        assert_eq!(poisoned.offset(), None, "an absurd hint is no hint");
        assert!(poisoned.progress().handled_above.is_empty());
    }

    fn record(
        name: &str,
        progress_term: Option<u64>,
        last: Option<i64>,
        above: &[i64],
    ) -> DeviceRecord {
        let identity = Identity {
            device_id: format!("{name}:/p"),
            hostname: name.into(),
            project_dir: "/p".into(),
            pid: 1,
            instance: "i".into(),
            install_id: "x".into(),
            boot_id: String::new(),
            priority: 0,
            thread_id: None,
            version: String::new(),
        };
        let mut record = DeviceRecord::new(&identity);
        record.progress_term = progress_term;
        record.last_update_id = last;
        record.handled_above = above.to_vec();
        record
    }

    #[test]
    fn hints_come_from_the_most_recent_active_term_only() {
        // `old` last served long ago, before Telegram started its ids over; `recent`
        // served since, in the new (lower) sequence.
        let old = record("old", Some(3), Some(727_334_707), &[]);
        let recent = record("recent", Some(9), Some(117_314_210), &[117_314_212]);
        let never = record("never", None, None, &[]);
        assert_eq!(
            start_hints([&old, &recent, &never]),
            (Some(117_314_210), vec![117_314_212])
        );
        // A device that saw the restart but handled nothing of the new sequence yet
        // says so: no hint at all, not the old one.
        let restarted = record("restarted", Some(11), None, &[]);
        assert_eq!(start_hints([&old, &recent, &restarted]), (None, vec![]));
        // Records of older batons (no progress_term): the highest id, as before.
        let a = record("a", None, Some(50), &[52]);
        let b = record("b", None, Some(40), &[60]);
        assert_eq!(start_hints([&a, &b]), (Some(50), vec![52, 60]));
        assert_eq!(start_hints([&never]), (None, vec![]));
    }
}
