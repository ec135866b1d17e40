//! Telegram as a second witness, at the core's boundary: one standby core, a leader
//! record fed by hand (its `seq` frozen: a record stuck in a slow sync, or a dead
//! leader), and Telegram's answers to its questions scripted per test.
//!
//! - nothing waits → the takeover of a late leader is deferred, up to the cap;
//! - updates wait and do not drain → takeover well before the leader's lease runs out;
//! - Telegram unreachable, or no witness at all → exactly today's timing;
//! - the questions are rate-bounded and asked only while the leader is suspect.

use mirror_baton::core::witness::WitnessRules;
use mirror_baton::core::{
    Core, CoreConfig, DeviceRecord, Effect, Event, FileObservation, FileState, Identity, Input,
    Moment, Role, Status, Timing, record,
};

#[path = "common/identity.rs"]
mod common_identity;

/// Device `name` on a host of its own (no same-host pid probe between the two).
fn identity(name: &str) -> Identity {
    common_identity::identity_of(&format!("host-{name}:/{name}"))
}

fn leader_record(seq: u64) -> DeviceRecord {
    let mut record = DeviceRecord::new(&identity("leader"));
    record.status = Status::Active;
    record.term = 1;
    record.seq = seq;
    record.written_at_ms = 1_000;
    record
}

fn observation(record: &DeviceRecord) -> FileObservation {
    FileObservation {
        name: record::file_name(&record.device_id),
        state: FileState::Contents {
            text: record.to_json(),
        },
    }
}

/// How Telegram answers the standby's questions.
#[derive(Clone, Copy)]
enum Telegram {
    /// `pending_update_count` is this, always.
    Pending(u64),
    /// Zero until this moment (ms), then one update waits and nobody takes it.
    BacklogFrom(u64),
    /// Cannot be reached.
    Unreachable,
}

struct Standby {
    core: Core,
    now_ms: u64,
    telegram: Telegram,
    asks: Vec<u64>,
    /// When the standby first left Standby for Contending.
    contended_at: Option<u64>,
}

impl Standby {
    fn new(witness: bool, telegram: Telegram) -> Self {
        let mut core = Core::new(CoreConfig {
            identity: identity("standby"),
            timing: Timing::default(),
            seed: 7,
        });
        if witness {
            core.enable_witness(WitnessRules::default());
        }
        let mut standby = Standby {
            core,
            now_ms: 0,
            telegram,
            asks: Vec::new(),
            contended_at: None,
        };
        standby.input(Event::Start);
        standby.input(Event::Scanned {
            files: vec![observation(&leader_record(1))],
        });
        standby
    }

    fn answer(&self) -> Option<u64> {
        match self.telegram {
            Telegram::Pending(count) => Some(count),
            Telegram::BacklogFrom(from_ms) => Some(u64::from(self.now_ms >= from_ms)),
            Telegram::Unreachable => None,
        }
    }

    fn input(&mut self, event: Event) {
        let mut queue = std::collections::VecDeque::from([event]);
        while let Some(event) = queue.pop_front() {
            self.core.handle(Input {
                at: Moment::from_millis(CLOCK_START_MS + self.now_ms),
                wall_ms: 1_000 + self.now_ms,
                event,
            });
            while let Some(effect) = self.core.poll_effect() {
                match effect {
                    Effect::WriteRecord { record } => {
                        queue.push_back(Event::RecordWritten { seq: record.seq })
                    }
                    Effect::Rescan => queue.push_back(Event::Scanned {
                        files: vec![observation(&leader_record(1))],
                    }),
                    Effect::AskWitness => {
                        self.asks.push(self.now_ms);
                        queue.push_back(Event::Witnessed {
                            pending_update_count: self.answer(),
                        });
                    }
                    Effect::Transition {
                        to: Role::Contending,
                        ..
                    } if self.contended_at.is_none() => self.contended_at = Some(self.now_ms),
                    _ => {}
                }
            }
        }
    }

    /// Runs the core's timers up to `until_ms` (the leader's record never changes).
    fn run_until(&mut self, until_ms: u64) {
        for _ in 0..100_000 {
            let next = self
                .core
                .next_timeout()
                .map(|timeout| timeout.at.as_millis().saturating_sub(CLOCK_START_MS));
            match next {
                Some(at) if at <= until_ms => {
                    self.now_ms = self.now_ms.max(at);
                    self.input(Event::Tick);
                }
                _ => break,
            }
        }
        self.now_ms = until_ms;
        self.input(Event::Tick);
    }
}

const SECOND: u64 = 1_000;
/// The sleep-counting clock reads this at the test's start (a real one has been running
/// since boot: a record made to lapse is dated before it).
const CLOCK_START_MS: u64 = 24 * 3_600 * SECOND;
/// Today's takeover from a silent leader: its liveness (50 s) plus the failover jitter
/// (at most 4 s).
const TODAY_MS: u64 = 54 * SECOND;

#[test]
fn without_a_witness_a_late_leader_is_replaced_when_its_liveness_lapses() {
    let mut standby = Standby::new(false, Telegram::Pending(0));
    standby.run_until(5 * 60 * SECOND);
    let contended = standby.contended_at.expect("took over");
    assert!((50 * SECOND..=TODAY_MS).contains(&contended), "{contended}");
    assert!(standby.asks.is_empty(), "no witness, no questions");
}

#[test]
fn a_late_leader_with_nothing_waiting_is_left_alone_up_to_the_cap() {
    let mut standby = Standby::new(true, Telegram::Pending(0));
    standby.run_until(10 * 60 * SECOND);
    assert_eq!(standby.contended_at, None, "deferred while nothing waits");
    assert_eq!(standby.core.role(), Role::Standby);
    // The cap: 4 h past the lapse (50 s), then today's rules.
    standby.run_until(4 * 3600 * SECOND + 5 * 60 * SECOND);
    let contended = standby.contended_at.expect("the deferral is capped");
    let cap = 50 * SECOND + 4 * 3600 * SECOND;
    assert!((cap..=cap + 5 * SECOND).contains(&contended), "{contended}");
}

#[test]
fn updates_that_do_not_drain_bring_the_takeover_before_the_lease_runs_out() {
    let mut standby = Standby::new(true, Telegram::Pending(1));
    standby.run_until(5 * 60 * SECOND);
    let contended = standby.contended_at.expect("took over");
    // Suspicion (22 s), two readings 15 s apart (asks every 7–10 s), jitter ≤ 4 s:
    // while the leader's record is still live by the folder's measure (50 s).
    assert!(contended < 50 * SECOND, "{contended}");
    assert!(contended >= 22 * SECOND + 15 * SECOND, "{contended}");
}

#[test]
fn a_backlog_that_appears_while_deferring_ends_the_deferral() {
    let mut standby = Standby::new(true, Telegram::BacklogFrom(5 * 60 * SECOND));
    standby.run_until(12 * 60 * SECOND);
    let contended = standby.contended_at.expect("took over once updates waited");
    let from = 5 * 60 * SECOND;
    // Two readings 15 s apart after the first message waits, at most one ask interval
    // (10 s) late, plus the jitter (4 s).
    assert!(
        (from + 15 * SECOND..=from + 30 * SECOND).contains(&contended),
        "{contended}"
    );
}

#[test]
fn an_unreachable_telegram_changes_nothing() {
    let mut standby = Standby::new(true, Telegram::Unreachable);
    standby.run_until(5 * 60 * SECOND);
    let contended = standby.contended_at.expect("took over");
    assert!((50 * SECOND..=TODAY_MS).contains(&contended), "{contended}");
}

#[test]
fn questions_are_rate_bounded_and_only_while_suspect() {
    let mut standby = Standby::new(true, Telegram::Pending(0));
    standby.run_until(21 * SECOND);
    assert!(
        standby.asks.is_empty(),
        "an on-time leader is never asked about"
    );
    standby.run_until(10 * 60 * SECOND);
    let first = standby.asks[0];
    assert!((22 * SECOND..23 * SECOND).contains(&first), "{first}");
    for pair in standby.asks.windows(2) {
        assert!(pair[1] - pair[0] >= 7 * SECOND, "{pair:?}");
    }
    // At most one question per 7 s while suspect.
    assert!(standby.asks.len() as u64 <= (10 * 60 - 22) / 7 + 1);
}

#[test]
fn a_fresh_leader_record_ends_the_suspicion() {
    let mut standby = Standby::new(true, Telegram::Pending(1));
    standby.run_until(30 * SECOND);
    assert!(!standby.asks.is_empty());
    // The leader's record changes: a sign of life; the old reading is forgotten.
    standby.input(Event::FileChanged {
        file: observation(&leader_record(2)),
    });
    let asked = standby.asks.len();
    standby.run_until(51 * SECOND);
    assert_eq!(
        standby.asks.len(),
        asked,
        "not suspect before 22 s after the change"
    );
    standby.run_until(56 * SECOND);
    assert_eq!(standby.contended_at, None, "one more reading is not two");
    assert!(
        standby.asks.len() > asked,
        "suspect again 22 s after the change"
    );
}

#[test]
fn a_backlog_is_judged_by_the_ask_a_drain_gap_after_it_was_seen() {
    let mut standby = Standby::new(true, Telegram::Pending(1));
    standby.run_until(5 * 60 * SECOND);
    // The first ask (22 s) sees the backlog; the one that can judge it comes a drain
    // gap (15 s) later or as soon after as the rate bound (7 s) allows, not at the
    // next 7–10 s tick (the tick in between stays: a shrinking count would restart the
    // judgement).
    let first = standby.asks[0];
    let between = standby.asks[1];
    assert!((first + 7 * SECOND..=first + 10 * SECOND).contains(&between));
    let judging = (first + 15 * SECOND).max(between + 7 * SECOND);
    assert_eq!(standby.asks.get(2), Some(&judging), "{:?}", standby.asks);
    let contended = standby.contended_at.expect("took over");
    // Condemned at that reading, then a jitter of at most 4 s.
    assert!(contended <= judging + 4 * SECOND, "{contended}");
}
