//! The shared context itself: the `Ctx` every state reads and changes, what the core
//! needs to start, and what registration learned of our own file. A leaf of `context`:
//! its siblings (`writes`, `ingest`) add methods to `Ctx` and name it here; it names
//! neither. Must never: decide a role change, read a clock or a file.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::election::{self, Peers};
use crate::io::{Effect, Level};
use crate::record::{self, DeviceRecord, Identity};
use crate::timers::{Jittered, Moment, TimerId, TimerTable, Timing};

/// What the core needs to start.
#[derive(Clone, Debug)]
pub struct CoreConfig {
    pub identity: Identity,
    pub timing: Timing,
    /// One seed gives one run: every jitter is drawn from an rng seeded with it.
    pub seed: u64,
}

/// Registration-time knowledge of a record already at our own file name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PriorOwnRecord {
    pub record: DeviceRecord,
    /// Whether it was written by this install (our own previous incarnation).
    pub ours: bool,
}

/// A handoff addressed to us, as first seen: whether it may be taken at once depends on
/// when (`Ctx::handoff_is_fresh`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HandoffSighting {
    pub term: u64,
    pub first_seen: Moment,
    /// Seen arrive while we were watching with a complete view (a settle bound after the
    /// first complete listing since start or waking): under the bound it was published
    /// at most a settle bound before `first_seen`. A handoff found already waiting (in
    /// the listing at start, or delivered while we slept) may be any age.
    pub dated: bool,
}

/// Re-assertions of our record in one episode: how many, and when the last was written.
/// The gap after the n-th is the active heartbeat's base interval doubled n − 1 times,
/// at most the standby heartbeat's base interval: a folder that keeps reverting our
/// record never makes a device write much more often than its own heartbeat does. An
/// episode ends once no re-assertion was needed for a standby heartbeat's longest
/// interval. The rules are in `writes.rs`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Reassertions {
    pub(super) count: u32,
    pub(super) last_at: Option<Moment>,
}

/// An activation request this device published and waits on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PendingRequest {
    pub target: String,
    pub ticket: u64,
}

pub struct Ctx {
    pub identity: Identity,
    pub own_stem: String,
    pub timing: Timing,
    pub now: Moment,
    pub wall_ms: u64,
    pub own: DeviceRecord,
    pub peers: Peers,
    pub timers: TimerTable,
    pub rng: ChaCha8Rng,
    pub effects: VecDeque<Effect>,
    /// Moment of our last record write, asked for (answered or not).
    pub last_write: Option<Moment>,
    /// Writes asked for and not answered yet: (seq, moment asked), oldest first.
    pub(super) writes_in_flight: VecDeque<(u64, Moment)>,
    /// When the last write known to be ON DISK was asked for: our lease runs from it
    /// (a claim that never reached the disk is no claim).
    pub lease_from: Option<Moment>,
    /// Record writes that failed in a row (0 once one succeeds).
    pub write_failures: u32,
    /// Re-assertions of our record over an older copy (or a missing file), rate-bounded
    /// so that no folder can make us write in a loop (`writes.rs`).
    pub(super) reassertions: Reassertions,
    pub(crate) prior_own: Option<PriorOwnRecord>,
    pub(crate) pending_request: Option<PendingRequest>,
    pub(super) request_counter: u64,
    /// Activation requests of peers already served (by id).
    pub(crate) served_requests: BTreeSet<String>,
    /// Problems already reported, by (file name, kind): each is said once.
    pub(super) reported: BTreeMap<String, &'static str>,
    /// Set once the first complete listing has been ingested.
    pub scanned_once: bool,
    /// When the first complete listing since start or since waking was ingested (None
    /// until then): changes seen a settle bound after it arrived while we watched.
    pub(crate) watching_since: Option<Moment>,
    /// The latest handoff addressed to us and when we first saw it.
    pub(crate) handoff_sighting: Option<HandoffSighting>,
    /// Do not contend before this moment (after stepping down on Telegram evidence).
    pub hold_off_until: Moment,
    /// Another live process writes our device id: never write or act again.
    pub refused: bool,
    /// Record files present but not readable yet (an `.icloud` stub, a dataless or corrupt
    /// file) of peers we have no record of, with the moment first seen: such a file may
    /// be a live leader we cannot see yet, so nobody is preempted because of it.
    pub unreadable_peers: BTreeMap<String, Moment>,
    /// Whether a `StartActing` is in force (no `StopActing` since).
    pub acting: bool,
    /// The last update id our last written record carried.
    pub(super) written_update_id: Option<i64>,
    /// Telegram refusals of our token in a row (each doubles the hold-off; a refusal after
    /// a good while as Active starts the count anew, see `Tenure::since`).
    pub(crate) polling_refusals: u32,
    /// Why we refused, until the exit is asked for.
    pub(crate) refusal: Option<String>,
    /// The install a previous run of this device refused for (see `Core::recall_refusal`).
    pub(crate) refused_by: Option<String>,
    /// The name of the stimulus being handled, for [`Effect::Transition`]'s `cause`.
    pub cause: String,
    /// An announced sleep not yet answered with `AllowSleep`: when its grace ends
    /// (`sleep.rs`).
    pub sleep_until: Option<Moment>,
    /// Telegram as a second witness (`witnessing.rs`): its rules, `None` without a token,
    /// and what this standby remembers of its answers.
    pub(crate) witness_rules: Option<crate::witness::WitnessRules>,
    pub(crate) witness: crate::witness::WitnessMemory,
    /// Active: since when our polls have failed without a success (`Event::PollFailed`).
    pub(crate) poll_failing_since: Option<Moment>,
    /// Active and cut off from Telegram: the seq of the record that first said so; a
    /// standby's `telegram_reached` counts from it on (`witnessing.rs`).
    pub(crate) cut_off_seq: Option<u64>,
}

impl Ctx {
    pub fn new(config: CoreConfig) -> Self {
        let own_stem = record::file_stem(&config.identity.device_id);
        Ctx {
            own: DeviceRecord::new(&config.identity),
            identity: config.identity,
            own_stem,
            timing: config.timing,
            now: Moment(0),
            wall_ms: 0,
            peers: Peers::new(),
            timers: TimerTable::default(),
            rng: ChaCha8Rng::seed_from_u64(config.seed),
            effects: VecDeque::new(),
            last_write: None,
            writes_in_flight: VecDeque::new(),
            lease_from: None,
            write_failures: 0,
            reassertions: Default::default(),
            prior_own: None,
            pending_request: None,
            request_counter: 0,
            served_requests: BTreeSet::new(),
            reported: BTreeMap::new(),
            scanned_once: false,
            watching_since: None,
            handoff_sighting: None,
            hold_off_until: Moment(0),
            refused: false,
            refusal: None,
            refused_by: None,
            acting: false,
            written_update_id: None,
            polling_refusals: 0,
            unreadable_peers: BTreeMap::new(),
            cause: String::new(),
            sleep_until: None,
            witness_rules: None,
            witness: crate::witness::WitnessMemory::default(),
            poll_failing_since: None,
            cut_off_seq: None,
        }
    }

    pub fn me(&self) -> &str {
        &self.identity.device_id
    }

    pub fn emit(&mut self, effect: Effect) {
        self.effects.push_back(effect);
    }

    pub fn notify(&mut self, level: Level, message: impl Into<String>) {
        self.emit(Effect::Notify {
            level,
            message: message.into(),
        });
    }

    /// Arms `timer` at `now + interval` (jitter drawn from the seeded rng).
    pub fn arm(&mut self, timer: TimerId, interval: Jittered) {
        let (delay, jitter) = interval.draw(&mut self.rng);
        self.arm_at(timer, self.now.plus(delay), jitter.as_millis() as u64);
    }

    pub fn arm_at(&mut self, timer: TimerId, at: Moment, jitter_ms: u64) {
        if self.timers.deadline(timer) == Some(at) {
            return;
        }
        self.timers.arm(timer, at);
        self.emit(Effect::TimerArmed {
            timer,
            at,
            jitter_ms,
        });
    }

    pub fn cancel(&mut self, timer: TimerId) {
        self.timers.cancel(timer);
    }

    pub fn next_request_id(&mut self) -> String {
        self.request_counter += 1;
        format!("{}-{}", self.identity.instance, self.request_counter)
    }

    /// The highest sane term known anywhere, including our own (terms above
    /// `record::TERM_MAX` are never taken into ours).
    pub fn highest_term(&self) -> u64 {
        let own = self.own.handoff.as_ref().map_or(0, |h| h.term);
        election::highest_term(&self.peers)
            .max(self.own.term)
            .max(own)
            .min(record::TERM_MAX)
    }

    /// The term after `term`, or `None` when that would pass `record::TERM_MAX` (said
    /// once, as an error: no claim or handoff is possible then, and nothing wraps).
    pub fn next_term(&mut self, term: u64) -> Option<u64> {
        let next = term.checked_add(1).filter(|next| *next <= record::TERM_MAX);
        if next.is_none() {
            let message = format!(
                "cannot claim or hand over: term {term} is the last one baton takes \
                 seriously ({}). A record holds an absurd term; delete it and restart.",
                record::TERM_MAX
            );
            self.report_once("<terms>", "exhausted", Level::Error, message);
        }
        next
    }

    /// Where a new active device starts reading Telegram: the progress of the record,
    /// ours included, from the most recent term anyone served in (`offsets::start_hints`).
    pub fn start_hints(&self) -> (Option<i64>, Vec<i64>) {
        let records = self
            .peers
            .values()
            .map(|peer| &peer.record)
            .chain(std::iter::once(&self.own));
        crate::offsets::start_hints(records)
    }

    pub(super) fn report_once(
        &mut self,
        name: &str,
        kind: &'static str,
        level: Level,
        message: String,
    ) {
        if self.reported.get(name) == Some(&kind) {
            return;
        }
        self.reported.insert(name.to_string(), kind);
        self.notify(level, message);
    }

    pub(super) fn clear_report(&mut self, name: &str) {
        self.reported.remove(name);
    }
}
