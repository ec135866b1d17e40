//! Writing our record and folding in the answers: seq, the writes in flight, the lease
//! that runs from the last write known on disk, write failures with their retry, and
//! re-asserting our record over an older copy (or a missing file), bounded.
//! Must never: write while refused, let a failed write count for the lease, or write in
//! reaction to what a folder shows faster than the bound below (no folder, however it
//! misbehaves, may make a device write in a loop).

use super::ctx::{Ctx, Reassertions};
use crate::io::{Effect, Level};
use crate::record;
use std::time::Duration;

use crate::timers::{Moment, TimerId, Timing};

impl Ctx {
    /// Writes our record: seq grows by exactly one on every write, and the record is
    /// checked before it leaves (`record::assert_writable`).
    pub fn write_record(&mut self) {
        if self.refused {
            return;
        }
        let previous = self.own.seq;
        self.own.seq = previous
            .checked_add(1)
            .expect("BUG: our seq is never adopted above record::SEQ_MAX, so it cannot wrap");
        // Never a seq peers have already seen from us (they would take it for old news).
        let last_asked = self.writes_in_flight.back().map(|(seq, _)| *seq);
        assert!(
            last_asked.is_none_or(|last| self.own.seq > last),
            "BUG: record seq {} written after seq {last_asked:?}",
            self.own.seq
        );
        self.own.written_at_ms = self.wall_ms;
        self.written_update_id = self.own.last_update_id;
        self.last_write = Some(self.now);
        if self.writes_in_flight.len() >= WRITES_IN_FLIGHT_MAX {
            self.writes_in_flight.pop_front();
        }
        self.writes_in_flight.push_back((self.own.seq, self.now));
        record::assert_writable(&self.own);
        self.emit(Effect::WriteRecord {
            record: Box::new(self.own.clone()),
        });
    }

    /// Folds in the answer to the write of `seq`: `Err(reason)` when it failed. A success
    /// moves the lease to the moment that write was asked for; the first failure of an
    /// episode is reported (the reason names the path and the OS error), and every
    /// failure arms a retry with back-off.
    pub fn write_answered(&mut self, seq: u64, outcome: Result<(), &str>) -> WriteNews {
        let asked = self
            .writes_in_flight
            .iter()
            .find(|(in_flight, _)| *in_flight == seq)
            .map(|(_, asked)| *asked);
        let Some(asked) = asked else {
            return WriteNews::Nothing; // not ours to judge: answered already, or dropped
        };
        self.writes_in_flight
            .retain(|(in_flight, _)| *in_flight > seq);
        match outcome {
            Ok(()) => {
                self.lease_from = self.lease_from.max(Some(asked));
                if std::mem::take(&mut self.write_failures) == 0 {
                    return WriteNews::Nothing;
                }
                self.cancel(TimerId::WriteRetry);
                self.cancel(TimerId::Lease);
                self.notify(Level::Info, "this device's record can be written again");
                WriteNews::Recovered
            }
            Err(reason) => {
                self.write_failures = self.write_failures.saturating_add(1);
                if self.write_failures == 1 {
                    let message = format!(
                        "cannot write this device's record: {reason}. Until it can, this \
                         device neither contends nor acts (an active device steps down when \
                         its lease runs out); retrying with back-off"
                    );
                    self.notify(Level::Warn, message);
                }
                let wait = self.timing.write_retry(self.write_failures);
                let at = self.now.plus(wait);
                self.arm_at(TimerId::WriteRetry, at, 0);
                WriteNews::Failed
            }
        }
    }

    /// Whether record writes are failing (an episode is under way).
    pub fn write_failing(&self) -> bool {
        self.write_failures > 0
    }

    /// The moment our lease runs out: from the last write known to be on disk, the
    /// liveness timeout minus the settle bound. `None`: no write is known on disk.
    pub fn lease_deadline(&self) -> Option<Moment> {
        self.lease_from.map(|from| from.plus(self.timing.lease()))
    }

    /// Whether our lease has run out. Not while a write is still unanswered: its answer
    /// (the runtime's next input) decides, and nothing acts on the unconfirmed write in
    /// between (the poller sees only confirmed leases).
    pub fn lease_lapsed(&self) -> bool {
        self.writes_in_flight.is_empty()
            && self
                .lease_deadline()
                .is_none_or(|deadline| self.now >= deadline)
    }

    /// Our record must be written again: the folder showed an older copy of it, or lost
    /// it. Returns whether it was written. Not while a write of ours is unanswered: what
    /// was read may predate it, and that write lands over it (a folder that serves the
    /// old copy again is seen to after the answer). And not more often than
    /// [`Reassertions::gap`]: a sync tool that keeps reverting our file (or deleting it)
    /// would otherwise have us write at the pace of its echo. Our own heartbeat and state
    /// changes write as usual meanwhile; the backstop rescan looks again.
    pub(super) fn reassert_own_record(&mut self) -> bool {
        if self.refused || !self.writes_in_flight.is_empty() {
            return false;
        }
        let (now, timing) = (self.now, self.timing);
        if let Some(gap) = self.reassertions.wait(now, &timing) {
            let message = format!(
                "the folder keeps showing an older copy of this device's record (or losing \
                 it) right after it is written again: re-asserting it at most every \
                 {gap:?} until it stops. Is another sync tool or a restore from backup \
                 reverting the devices folder?"
            );
            self.report_once("<own record>", "reverted", Level::Warn, message);
            return false;
        }
        self.reassertions.note(now);
        if self.reassertions.count == 1 {
            self.clear_report("<own record>");
        }
        self.write_record();
        true
    }

    /// Whether our record on disk lags the update progress we know of (after a stop, the
    /// runtime's last acknowledgements arrive with `ActingStopped`).
    pub fn progress_unwritten(&self) -> bool {
        self.last_write.is_some() && self.written_update_id != self.own.last_update_id
    }
}

/// Unanswered writes remembered at most (the runtime answers each at once).
const WRITES_IN_FLIGHT_MAX: usize = 64;

impl Reassertions {
    /// The gap after `count` re-assertions in one episode.
    fn gap(count: u32, timing: &Timing) -> Duration {
        let doublings = count.saturating_sub(1).min(16);
        timing
            .heartbeat_active
            .base
            .saturating_mul(1 << doublings)
            .min(
                timing
                    .heartbeat_standby
                    .base
                    .max(timing.heartbeat_active.base),
            )
    }

    /// `Some(gap)` while a re-assertion must wait (the gap now in force).
    fn wait(&mut self, now: Moment, timing: &Timing) -> Option<Duration> {
        let last_at = self.last_at?;
        if now.since(last_at) >= timing.heartbeat_standby.max() {
            *self = Reassertions::default(); // a new episode
            return None;
        }
        let gap = Self::gap(self.count, timing);
        (now < last_at.plus(gap)).then_some(gap)
    }

    fn note(&mut self, now: Moment) {
        self.count = self.count.saturating_add(1);
        self.last_at = Some(now);
    }
}

/// What the answer to a record write changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteNews {
    Nothing,
    /// The write failed.
    Failed,
    /// A write succeeded after failures: the episode is over.
    Recovered,
}
