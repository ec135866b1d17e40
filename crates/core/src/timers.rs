//! Time for the core: the [`Moment`] type, the timing constants, and the timer table.
//!
//! Owns: every timing constant (chosen by the simulator, scaled by `--time-scale`), the
//! table of pending timers with the reason each was armed, and jitter drawn from the
//! injected rng. Must never: read a clock. Every moment comes in from outside.

use std::collections::BTreeMap;
use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};

/// A reading of a monotonic clock that COUNTS sleep (`CLOCK_BOOTTIME` on Linux,
/// `mach_continuous_time` on macOS), in milliseconds since an arbitrary origin.
/// Leases are measured with it, so a closed lid does not freeze them.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
#[serde(transparent)]
pub struct Moment(pub u64);

impl Moment {
    pub fn from_millis(ms: u64) -> Self {
        Moment(ms)
    }
    pub fn as_millis(self) -> u64 {
        self.0
    }
    pub fn plus(self, duration: Duration) -> Moment {
        Moment(self.0.saturating_add(duration.as_millis() as u64))
    }
    pub fn minus(self, duration: Duration) -> Moment {
        Moment(self.0.saturating_sub(duration.as_millis() as u64))
    }
    /// Time from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: Moment) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

impl std::fmt::Display for Moment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{:03}s", self.0 / 1000, self.0 % 1000)
    }
}

/// A base duration plus a uniformly drawn jitter in `[0, jitter]`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Jittered {
    pub base: Duration,
    pub jitter: Duration,
}

impl Jittered {
    pub const fn new(base: Duration, jitter: Duration) -> Self {
        Jittered { base, jitter }
    }
    pub fn mean(self) -> Duration {
        self.base + self.jitter / 2
    }
    pub fn max(self) -> Duration {
        self.base + self.jitter
    }
    /// Draws one interval; the jitter part is returned too, so it can be reported.
    pub fn draw(self, rng: &mut impl Rng) -> (Duration, Duration) {
        let jitter_ms = self.jitter.as_millis() as u64;
        let drawn = if jitter_ms == 0 {
            0
        } else {
            rng.random_range(0..=jitter_ms)
        };
        let drawn = Duration::from_millis(drawn);
        (self.base + drawn, drawn)
    }
    fn scaled(self, factor: f64) -> Self {
        Jittered {
            base: scale(self.base, factor),
            jitter: scale(self.jitter, factor),
        }
    }
}

fn scale(duration: Duration, factor: f64) -> Duration {
    Duration::from_secs_f64(duration.as_secs_f64() * factor)
}

/// After a 409 from Telegram, polling pauses for a uniform draw from this: 3–6 s
/// (FACTS: Telegram needs a few seconds to forget a poller). One definition for the
/// core's [`Timing::conflict_backoff`], the poller's default back-off
/// (`adapters::telegram::poll_loop`, which draws from `[base, 2·base]`, so its jitter
/// equals its base) and the simulator's Telegram model.
pub const CONFLICT_BACKOFF: Jittered =
    Jittered::new(Duration::from_secs(3), Duration::from_secs(3));

/// Every timing constant of the protocol. [`Timing::default`] holds the values the
/// simulator chose (see README "Figures"); `scaled` multiplies all of them.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
pub struct Timing {
    /// How often the active device rewrites its record.
    pub heartbeat_active: Jittered,
    /// How often a standby rewrites its record.
    pub heartbeat_standby: Jittered,
    /// An active record whose seq has not changed for this long (local clock) is dead.
    pub liveness_active: Duration,
    /// A standby record whose seq has not changed for this long is stale.
    pub liveness_standby: Duration,
    /// Wait before contending after the leader is found dead (spreads contenders).
    pub failover_jitter: Jittered,
    /// Time a claim waits to reach every peer before it is acted on. Safety holds while
    /// one-way sync delay stays under half of it (the "settle bound").
    pub settle_window: Duration,
    /// A handoff not taken up within this long is taken back.
    pub handoff_timeout: Duration,
    /// A device that is stopping waits this long after publishing its handoff for the
    /// target's claim, then writes its stopped record and exits; a target that missed
    /// the handoff takes over from the resignation. Shorter than `handoff_timeout` so a
    /// clean stop fits the service manager's stop timeout (see `runtime::exit_budget`).
    pub resign_wait: Duration,
    /// An activation request not served within this long is withdrawn.
    pub request_timeout: Duration,
    /// Backstop rescan of the whole folder, for lost notifications.
    pub backstop_scan: Jittered,
    /// How far apart two clocks may plausibly be (written_at is only a start-up hint).
    pub skew_allowance: Duration,
    /// The active device removes records unchanged for this long.
    pub record_retention: Duration,
    /// After a 409 from Telegram: how long polling pauses.
    pub conflict_backoff: Jittered,
    /// How many 409s, within `conflict_window`, make an active device with a stale view
    /// step down.
    pub conflict_count_max: u32,
    pub conflict_window: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        let secs = Duration::from_secs;
        Timing {
            heartbeat_active: Jittered::new(secs(15), secs(5)),
            heartbeat_standby: Jittered::new(secs(390), secs(60)),
            liveness_active: secs(50),
            liveness_standby: secs(15 * 60),
            failover_jitter: Jittered::new(secs(0), secs(4)),
            settle_window: secs(16),
            handoff_timeout: secs(48),
            resign_wait: secs(12),
            request_timeout: secs(120),
            backstop_scan: Jittered::new(secs(120), secs(60)),
            skew_allowance: secs(2 * 3600),
            record_retention: secs(24 * 3600),
            conflict_backoff: CONFLICT_BACKOFF,
            conflict_count_max: 3,
            conflict_window: secs(120),
        }
    }
}

impl Timing {
    /// Every duration multiplied by `factor` (tests and demos use 0.01–0.1). The skew
    /// allowance and retention are not scaled: they describe clocks and days, not protocol.
    pub fn scaled(self, factor: f64) -> Self {
        Timing {
            heartbeat_active: self.heartbeat_active.scaled(factor),
            heartbeat_standby: self.heartbeat_standby.scaled(factor),
            liveness_active: scale(self.liveness_active, factor),
            liveness_standby: scale(self.liveness_standby, factor),
            failover_jitter: self.failover_jitter.scaled(factor),
            settle_window: scale(self.settle_window, factor),
            handoff_timeout: scale(self.handoff_timeout, factor),
            resign_wait: scale(self.resign_wait, factor),
            request_timeout: scale(self.request_timeout, factor),
            backstop_scan: self.backstop_scan.scaled(factor),
            conflict_backoff: self.conflict_backoff.scaled(factor),
            conflict_window: scale(self.conflict_window, factor),
            ..self
        }
    }

    /// One-way sync delay under which the protocol never has two active devices.
    pub fn settle_bound(&self) -> Duration {
        self.settle_window / 2
    }

    /// How long an active device may act after the write its lease runs from: the
    /// liveness timeout minus the settle bound. Peers count us alive for the liveness
    /// timeout from the moment they SEE the write (at most the settle bound later), so
    /// acting stops well before any of them may take us for dead.
    pub fn lease(&self) -> Duration {
        self.liveness_active.saturating_sub(self.settle_bound())
    }

    /// The wait before the `failures`-th attempt to write a record that could not be
    /// written: doubling from a sixteenth of the settle window (1 s) up to the active
    /// heartbeat's base interval (15 s).
    pub fn write_retry(&self, failures: u32) -> Duration {
        let first = self.settle_window / 16;
        let doublings = failures.saturating_sub(1).min(16);
        first
            .saturating_mul(1 << doublings)
            .min(self.heartbeat_active.base.max(first))
    }
}

/// Why a timer exists. One of each at most is pending.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "snake_case")]
pub enum TimerId {
    /// Registering: how long to watch an existing record of our id for another writer.
    Registration,
    /// Rewrite our record.
    Heartbeat,
    /// Re-read the whole folder (lost notifications).
    Backstop,
    /// The leader (or a claim, or a handoff) will be dead at this moment unless it changes.
    LeaderDeadline,
    /// End of the randomized wait before contending.
    FailoverJitter,
    /// End of the settle window of our claim.
    Settle,
    /// Our handoff was not taken up in time.
    HandoffTimeout,
    /// Our activation request was not served in time.
    RequestTimeout,
    /// The same-host leader is overdue: look whether its process is still there.
    PidProbe,
    /// Active: sweep records unchanged for the retention period.
    RetentionSweep,
    /// Our last record write failed: write it again (exponential back-off).
    WriteRetry,
    /// Active with record writes failing: our lease runs out at this moment.
    Lease,
    /// Standby with a suspected leader: ask Telegram (see [`crate::witness`]).
    WitnessAsk,
}

impl TimerId {
    /// The snake_case name used in JSON, transcripts and the statechart.
    pub fn as_str(self) -> &'static str {
        match self {
            TimerId::Registration => "registration",
            TimerId::Heartbeat => "heartbeat",
            TimerId::Backstop => "backstop",
            TimerId::LeaderDeadline => "leader_deadline",
            TimerId::FailoverJitter => "failover_jitter",
            TimerId::Settle => "settle",
            TimerId::HandoffTimeout => "handoff_timeout",
            TimerId::RequestTimeout => "request_timeout",
            TimerId::PidProbe => "pid_probe",
            TimerId::RetentionSweep => "retention_sweep",
            TimerId::WriteRetry => "write_retry",
            TimerId::Lease => "lease",
            TimerId::WitnessAsk => "witness_ask",
        }
    }
}

/// The next wake-up the core asks for, and why: the timer that falls due then.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timeout {
    pub at: Moment,
    pub reason: TimerId,
}

/// The pending timers: at most one per [`TimerId`]. The next wake-up is the earliest.
#[derive(Clone, Debug, Default)]
pub struct TimerTable {
    pending: BTreeMap<TimerId, Moment>,
}

impl TimerTable {
    pub fn arm(&mut self, id: TimerId, at: Moment) {
        self.pending.insert(id, at);
    }
    pub fn cancel(&mut self, id: TimerId) {
        self.pending.remove(&id);
    }
    pub fn is_armed(&self, id: TimerId) -> bool {
        self.pending.contains_key(&id)
    }
    pub fn deadline(&self, id: TimerId) -> Option<Moment> {
        self.pending.get(&id).copied()
    }
    /// The earliest pending timer.
    pub fn next(&self) -> Option<(Moment, TimerId)> {
        self.pending.iter().map(|(id, at)| (*at, *id)).min()
    }
    /// Removes and returns the earliest timer due at `now`, if any.
    pub fn pop_due(&mut self, now: Moment) -> Option<TimerId> {
        let (at, id) = self.next()?;
        if at <= now {
            self.pending.remove(&id);
            Some(id)
        } else {
            None
        }
    }
    pub fn iter(&self) -> impl Iterator<Item = (TimerId, Moment)> + '_ {
        self.pending.iter().map(|(id, at)| (*id, *at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn jitter_stays_in_range_and_is_seeded() {
        let interval = Jittered::new(Duration::from_secs(5), Duration::from_secs(3));
        let mut a = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let mut b = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        for _ in 0..1000 {
            let (total, jitter) = interval.draw(&mut a);
            assert!(total >= interval.base && total <= interval.max());
            assert_eq!(total - jitter, interval.base);
            assert_eq!(interval.draw(&mut b).0, total);
        }
    }

    #[test]
    fn table_yields_the_earliest_due_timer() {
        let mut table = TimerTable::default();
        table.arm(TimerId::Heartbeat, Moment(50));
        table.arm(TimerId::Backstop, Moment(10));
        assert_eq!(table.next(), Some((Moment(10), TimerId::Backstop)));
        assert_eq!(table.pop_due(Moment(9)), None);
        assert_eq!(table.pop_due(Moment(60)), Some(TimerId::Backstop));
        assert_eq!(table.pop_due(Moment(60)), Some(TimerId::Heartbeat));
        assert_eq!(table.pop_due(Moment(60)), None);
    }

    #[test]
    fn timer_names_match_their_json() {
        for timer in [
            TimerId::Registration,
            TimerId::Heartbeat,
            TimerId::Backstop,
            TimerId::LeaderDeadline,
            TimerId::FailoverJitter,
            TimerId::Settle,
            TimerId::HandoffTimeout,
            TimerId::RequestTimeout,
            TimerId::PidProbe,
            TimerId::RetentionSweep,
            TimerId::WriteRetry,
            TimerId::Lease,
            TimerId::WitnessAsk,
        ] {
            let json = serde_json::to_string(&timer).unwrap();
            assert_eq!(json, format!("\"{}\"", timer.as_str()));
        }
    }

    #[test]
    fn the_pollers_conflict_backoff_spans_base_to_twice_base() {
        assert_eq!(CONFLICT_BACKOFF.jitter, CONFLICT_BACKOFF.base);
    }

    #[test]
    fn settle_bound_is_half_the_window() {
        let timing = Timing::default();
        assert_eq!(timing.settle_bound() * 2, timing.settle_window);
        assert!(timing.handoff_timeout >= timing.settle_window * 2);
        assert!(timing.liveness_active > timing.heartbeat_active.max() * 2);
        // A healthy active device renews its lease (every heartbeat) long before it ends.
        assert!(timing.lease() > timing.heartbeat_active.max() * 2);
    }

    #[test]
    fn write_retries_back_off_to_the_heartbeat() {
        let timing = Timing::default();
        let secs = Duration::from_secs;
        let waits: Vec<Duration> = (1..=6).map(|n| timing.write_retry(n)).collect();
        assert_eq!(
            waits,
            [secs(1), secs(2), secs(4), secs(8), secs(15), secs(15)]
        );
        assert_eq!(timing.write_retry(u32::MAX), secs(15));
    }
}
