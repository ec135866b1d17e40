//! Telegram as a second witness of the leader's liveness: the pure rules.
//!
//! Owns: the witness's constants ([`WitnessRules`]), what a standby remembers of
//! Telegram's answers during one episode of suspicion ([`WitnessMemory`]), and the
//! verdict drawn from them ([`Verdict`]). The folder is the only liveness signal of the
//! election, and its tail delays (tens of seconds to hours) make a late record ambiguous:
//! a dead leader, or a live one behind a slow sync. `getWebhookInfo`'s
//! `pending_update_count` tells them apart from outside the folder: a leader that polls
//! keeps it near zero, a dead one lets it grow as soon as someone writes.
//!
//! The rules, as used by a standby (`witnessing.rs` wires them into the machine):
//!
//! - **Suspicion.** A live leader whose record has not changed for
//!   [`WitnessRules::suspicion_after`] is suspected; while it is (and only then) the
//!   standby asks Telegram every [`WitnessRules::ask_interval`] (jittered; at most one
//!   question outstanding). Once a reading shows a backlog, one ask lands exactly a
//!   drain gap after it was first seen, the first reading that can judge it (the
//!   usual ticks in between stay: one that shows the count shrink restarts the
//!   judgement).
//! - **Backlog that does not drain → take over.** Two readings of one episode at least
//!   [`WitnessRules::drain_gap`] apart, the first above zero and the second not below
//!   it: the leader is not serving, whatever the folder says. The standby lets the
//!   leader's record lapse now (as for a vanished pid) and fails over as usual: jitter,
//!   claim, settle window. Safety does not rest on the witness: the claim still waits
//!   out the settle window and backs off from any live leader record it sees.
//! - **Nothing waits → defer.** A leader whose record lapsed while the latest reading
//!   (no older than [`WitnessRules::quiet_valid_for`]) said nothing waits is only late:
//!   the takeover waits, at most [`WitnessRules::defer_max`] past the lapse. The cap is
//!   there because a reading of zero also fits a dead leader that nobody has written to
//!   (nobody waits, so waiting costs little, but not forever: the active device also
//!   serves `/devices` and sweeps records, and the count could be kept at zero by
//!   someone else polling with the token). Past the cap, today's rules.
//! - **No token, or Telegram unreachable → today's rules.** An unreachable answer
//!   defers nothing and condemns nothing; a leader that is alive but cut off from
//!   Telegram lets the count grow, so the witness never shields it.
//!
//! - **A leader cut off from Telegram hands over.** The witness never shields a leader
//!   that cannot poll, but a cut-off leader keeps its record fresh, so nobody suspects
//!   it. The leader's own side: when its polls have failed for
//!   [`WitnessRules::cut_off_after`] (no success between; a refused token is the other
//!   rule, `PollingRefused`), it says so in its record (`telegram_unreachable`).
//!   Standbys that see it ask Telegram (as when suspicious) and publish whether it
//!   answered (`telegram_reached`: the leader's term and seq they watched). The leader
//!   hands over to the best live standby whose word dates from its cut-off record on
//!   ([`reached_since_cut_off`]). When Telegram is down for everyone no standby says it
//!   reached it, so nobody takes the role and nothing goes back and forth; the new leader
//!   hands over again only by the same rule. A standby never condemns a leader that says
//!   it is cut off: that leader hands over itself, through the handoff's settle rules.
//!
//! Every count comes from Telegram and is untrusted: it is only compared, never
//! computed with. Must never: read a clock, do IO, or decide a role (the machine does).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::record::ReachedWhile;
use super::timers::{Jittered, Moment};

/// The witness's constants (chosen with the simulator: see docs/SIMULATION.md).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
pub struct WitnessRules {
    /// A live leader unchanged for this long is suspected: asks begin. Above the
    /// active heartbeat's longest interval, so an on-time leader is never asked about.
    pub suspicion_after: Duration,
    /// The wait between two asks while suspicious.
    pub ask_interval: Jittered,
    /// Two readings must be at least this far apart to judge that a backlog does not
    /// drain: longer than a live leader takes to confirm what it was given (its next
    /// getUpdates comes after the child's acknowledgement, up to 13 s).
    pub drain_gap: Duration,
    /// A reading of zero defers a lapsed leader's takeover for this long after it was
    /// taken (a little over one ask interval, so the next reading renews it).
    pub quiet_valid_for: Duration,
    /// At most this long past the leader's lapse is a takeover deferred: 4 h, longer
    /// than the sync stalls and cut-offs the simulator draws (up to 2 h and 3 h; FACTS:
    /// uploads stuck "for many minutes or hours"), so a live leader behind one is left
    /// alone; bounded, so a count held at zero by something else (a stray program
    /// polling with the token) cannot leave the group without a leader for longer.
    /// The simulator chose it over 15 min and 1 h (docs/SIMULATION.md).
    pub defer_max: Duration,
    /// An ask not answered within this long counts as unreachable.
    pub answer_timeout: Duration,
    /// An active device whose polls have failed for this long, with no success between,
    /// is cut off from Telegram. Longer than one failed long poll and its back-off
    /// (25 s poll + 10 s client timeout + retry), so one slow request is not a cut-off.
    #[serde(default = "default_cut_off_after")]
    pub cut_off_after: Duration,
}

fn default_cut_off_after() -> Duration {
    Duration::from_secs(60)
}

impl Default for WitnessRules {
    fn default() -> Self {
        let secs = Duration::from_secs;
        WitnessRules {
            suspicion_after: secs(22),
            ask_interval: Jittered::new(secs(7), secs(3)),
            drain_gap: secs(15),
            quiet_valid_for: secs(15),
            defer_max: secs(4 * 3600),
            answer_timeout: secs(8),
            cut_off_after: default_cut_off_after(),
        }
    }
}

impl WitnessRules {
    /// Every duration multiplied by `factor`, as `Timing::scaled` does.
    pub fn scaled(self, factor: f64) -> Self {
        let scale = |d: Duration| Duration::from_secs_f64(d.as_secs_f64() * factor);
        WitnessRules {
            suspicion_after: scale(self.suspicion_after),
            ask_interval: Jittered::new(
                scale(self.ask_interval.base),
                scale(self.ask_interval.jitter),
            ),
            drain_gap: scale(self.drain_gap),
            quiet_valid_for: scale(self.quiet_valid_for),
            defer_max: scale(self.defer_max),
            answer_timeout: scale(self.answer_timeout),
            cut_off_after: scale(self.cut_off_after),
        }
    }
}

/// One answer from Telegram.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reading {
    /// `pending_update_count`: updates waiting to be delivered.
    Pending(u64),
    /// No answer (network, timeout, refused token, a webhook in the way).
    Unreachable,
}

/// Which leader record an episode of suspicion is about: its file stem and `seq`. A new
/// `seq` is a sign of life and starts a new episode (old readings say nothing about it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Episode {
    pub stem: String,
    pub seq: u64,
}

/// What the witness said about the leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing to go on: today's rules.
    Unknown,
    /// Nothing waits, or what waits has not stayed for the drain gap (as of `at`): a
    /// takeover can wait.
    Quiet { at: Moment },
    /// Updates wait and did not drain across two readings: the leader is not serving.
    Backlog,
}

/// A standby's memory of one episode's readings. Bounded: two moments and a count.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WitnessMemory {
    pub episode: Option<Episode>,
    /// The oldest positive reading no later reading went below: (when, count).
    undrained: Option<(Moment, u64)>,
    /// The latest reading and when it was taken.
    latest: Option<(Moment, Reading)>,
    /// An ask is outstanding since this moment.
    pub asked_at: Option<Moment>,
    /// When the last ask went out (answered or not): the next waits an ask interval.
    pub last_asked: Option<Moment>,
    /// The record the witness condemned (or a vanished pid did): never deferred for.
    pub condemned: Option<Episode>,
    /// The deferral of this episode has been told (once per episode).
    pub told: bool,
}

impl WitnessMemory {
    /// Starts a new episode when `episode` differs from the current one; returns
    /// whether it did.
    pub fn focus(&mut self, episode: Episode) -> bool {
        if self.episode.as_ref() == Some(&episode) {
            return false;
        }
        self.episode = Some(episode);
        self.undrained = None;
        self.latest = None;
        self.told = false;
        true
    }

    /// Forgets the episode (no leader to suspect any more).
    pub fn clear(&mut self) {
        self.episode = None;
        self.undrained = None;
        self.latest = None;
        self.told = false;
    }

    /// Folds in one reading taken at `at`; returns the verdict that follows.
    pub fn record(&mut self, at: Moment, reading: Reading, rules: &WitnessRules) -> Verdict {
        self.asked_at = None;
        // An unanswered ask says nothing about what waits: the latest answer keeps its
        // own validity (`quiet_valid_for`), so one answer slowed by a busy machine does
        // not end a deferral, and without answers the verdict still goes stale into
        // today's rules.
        if self.latest.is_none() || reading != Reading::Unreachable {
            self.latest = Some((at, reading));
        }
        if let Reading::Pending(count) = reading {
            self.undrained = match self.undrained {
                _ if count == 0 => None,
                // Some of what waited was taken: the leader (or someone) is serving.
                Some((_, before)) if count < before => Some((at, count)),
                Some(kept) => Some(kept),
                None => Some((at, count)),
            };
        }
        self.verdict(at, rules)
    }

    /// The verdict at `now` from what is remembered.
    pub fn verdict(&self, now: Moment, rules: &WitnessRules) -> Verdict {
        let Some((latest_at, latest)) = self.latest else {
            return Verdict::Unknown;
        };
        let Reading::Pending(count) = latest else {
            return Verdict::Unknown;
        };
        match self.undrained {
            Some((since, first)) if count >= first && latest_at.since(since) >= rules.drain_gap => {
                Verdict::Backlog
            }
            // Nothing waits, or what waits has not been seen to stay yet (a live
            // leader confirms within the drain gap).
            _ if now.since(latest_at) <= rules.quiet_valid_for => Verdict::Quiet { at: latest_at },
            _ => Verdict::Unknown,
        }
    }

    /// When the backlog being watched was first seen (the oldest positive reading no
    /// later one went below): the reading that can judge it is due a drain gap after.
    pub fn undrained_since(&self) -> Option<Moment> {
        self.undrained.map(|(since, _)| since)
    }

    /// Whether an ask is outstanding and not yet overdue at `now`.
    pub fn awaiting(&self, now: Moment, rules: &WitnessRules) -> bool {
        self.asked_at
            .is_some_and(|asked| now.since(asked) < rules.answer_timeout)
    }
}

/// Until when a lapsed leader's takeover is deferred, if it is: the latest quiet
/// reading's validity, capped at `lapsed_at + defer_max`. `None`: take over now.
pub fn deferred_until(
    verdict: Verdict,
    lapsed_at: Moment,
    now: Moment,
    rules: &WitnessRules,
) -> Option<Moment> {
    let Verdict::Quiet { at } = verdict else {
        return None;
    };
    let cap = lapsed_at.plus(rules.defer_max);
    let until = at.plus(rules.quiet_valid_for).min(cap);
    (now < until).then_some(until)
}

/// Whether a standby's `telegram_reached` counts for an active device of `term` that
/// said it was cut off in its record `cut_off_seq` and has written up to `own_seq`: the
/// standby reached Telegram while it watched this very tenure, at or after the cut-off.
/// A seq above ours is absurd (we never wrote it) and counts for nothing.
pub fn reached_since_cut_off(
    reached: Option<ReachedWhile>,
    term: u64,
    cut_off_seq: u64,
    own_seq: u64,
) -> bool {
    reached.is_some_and(|word| word.term == term && word.seq >= cut_off_seq && word.seq <= own_seq)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> WitnessRules {
        WitnessRules::default()
    }

    fn at(secs: u64) -> Moment {
        Moment::from_millis(secs * 1000)
    }

    fn episode(seq: u64) -> Episode {
        Episode {
            stem: "leader".into(),
            seq,
        }
    }

    #[test]
    fn a_backlog_that_does_not_drain_across_two_readings_condemns() {
        let mut memory = WitnessMemory::default();
        memory.focus(episode(1));
        let quiet = |secs| Verdict::Quiet { at: at(secs) };
        assert_eq!(
            memory.record(at(0), Reading::Pending(1), &rules()),
            quiet(0)
        );
        // Too soon after the first: a live leader may not have confirmed yet.
        assert_eq!(
            memory.record(at(10), Reading::Pending(1), &rules()),
            quiet(10)
        );
        assert_eq!(
            memory.record(at(15), Reading::Pending(2), &rules()),
            Verdict::Backlog
        );
    }

    #[test]
    fn a_backlog_that_drains_does_not_condemn() {
        let mut memory = WitnessMemory::default();
        memory.focus(episode(1));
        let quiet = |secs| Verdict::Quiet { at: at(secs) };
        memory.record(at(0), Reading::Pending(3), &rules());
        // Fewer wait: something was taken. The count restarts from here.
        assert_eq!(
            memory.record(at(20), Reading::Pending(2), &rules()),
            quiet(20)
        );
        assert_eq!(
            memory.record(at(30), Reading::Pending(2), &rules()),
            quiet(30)
        );
        assert_eq!(
            memory.record(at(35), Reading::Pending(2), &rules()),
            Verdict::Backlog
        );
        let mut drained = WitnessMemory::default();
        drained.focus(episode(1));
        drained.record(at(0), Reading::Pending(3), &rules());
        assert_eq!(
            drained.record(at(25), Reading::Pending(0), &rules()),
            Verdict::Quiet { at: at(25) }
        );
        assert_eq!(
            drained.record(at(50), Reading::Pending(1), &rules()),
            quiet(50)
        );
        assert_eq!(drained.verdict(at(66), &rules()), Verdict::Unknown, "stale");
    }

    #[test]
    fn unreachable_says_nothing_and_a_new_seq_forgets() {
        let mut memory = WitnessMemory::default();
        memory.focus(episode(1));
        memory.record(at(0), Reading::Pending(0), &rules());
        assert_eq!(
            memory.record(at(5), Reading::Unreachable, &rules()),
            Verdict::Quiet { at: at(0) },
            "the earlier answer still holds for its own time"
        );
        assert_eq!(memory.verdict(at(16), &rules()), Verdict::Unknown, "stale");
        let mut never = WitnessMemory::default();
        never.focus(episode(1));
        assert_eq!(
            never.record(at(0), Reading::Unreachable, &rules()),
            Verdict::Unknown
        );
        memory.record(at(10), Reading::Pending(4), &rules());
        memory.focus(episode(2));
        assert_eq!(memory.verdict(at(40), &rules()), Verdict::Unknown);
        let fresh = memory.record(at(40), Reading::Pending(4), &rules());
        assert_eq!(fresh, Verdict::Quiet { at: at(40) }, "not yet seen to stay");
        assert_eq!(
            memory.record(at(55), Reading::Pending(4), &rules()),
            Verdict::Backlog
        );
    }

    #[test]
    fn a_quiet_reading_goes_stale() {
        let mut memory = WitnessMemory::default();
        memory.focus(episode(1));
        memory.record(at(0), Reading::Pending(0), &rules());
        assert_eq!(
            memory.verdict(at(15), &rules()),
            Verdict::Quiet { at: at(0) }
        );
        assert_eq!(memory.verdict(at(16), &rules()), Verdict::Unknown);
    }

    #[test]
    fn deferral_is_capped_past_the_lapse() {
        let rules = rules();
        let quiet = Verdict::Quiet { at: at(1000) };
        assert_eq!(
            deferred_until(quiet, at(990), at(1001), &rules),
            Some(at(1015))
        );
        // Near the cap, only up to the cap; at the cap, nothing.
        let lapsed = at(4 * 3600 + 1005).minus(rules.defer_max);
        let (at_1001, at_1005) = (at(4 * 3600 + 1001), at(4 * 3600 + 1005));
        let quiet = Verdict::Quiet {
            at: at(4 * 3600 + 1000),
        };
        assert_eq!(
            deferred_until(quiet, lapsed, at_1001, &rules),
            Some(at_1005)
        );
        assert_eq!(deferred_until(quiet, lapsed, at_1005, &rules), None);
        assert_eq!(
            deferred_until(Verdict::Backlog, at(990), at(1001), &rules),
            None
        );
        assert_eq!(
            deferred_until(Verdict::Unknown, at(990), at(1001), &rules),
            None
        );
    }

    #[test]
    fn a_standby_word_counts_only_for_this_cut_off() {
        let word = |term, seq| Some(ReachedWhile { term, seq });
        assert!(reached_since_cut_off(word(4, 10), 4, 10, 12));
        assert!(reached_since_cut_off(word(4, 12), 4, 10, 12));
        assert!(
            !reached_since_cut_off(word(4, 9), 4, 10, 12),
            "before the cut-off"
        );
        assert!(
            !reached_since_cut_off(word(3, 11), 4, 10, 12),
            "another tenure"
        );
        assert!(
            !reached_since_cut_off(word(4, u64::MAX), 4, 10, 12),
            "absurd"
        );
        assert!(!reached_since_cut_off(None, 4, 10, 12));
    }

    #[test]
    fn absurd_counts_are_only_compared() {
        let mut memory = WitnessMemory::default();
        memory.focus(episode(1));
        memory.record(at(0), Reading::Pending(u64::MAX), &rules());
        assert_eq!(
            memory.record(at(30), Reading::Pending(u64::MAX), &rules()),
            Verdict::Backlog
        );
    }

    #[test]
    fn the_suspicion_threshold_is_above_the_heartbeat() {
        let timing = crate::timers::Timing::default();
        let rules = rules();
        assert!(rules.suspicion_after > timing.heartbeat_active.max());
        assert!(rules.suspicion_after < timing.liveness_active);
        // A live leader's confirmation lags at most the acknowledgement wait (13 s).
        assert!(rules.drain_gap > Duration::from_secs(13));
        // A quiet reading lasts until the next one can arrive.
        assert!(rules.quiet_valid_for > rules.ask_interval.max());
    }
}
