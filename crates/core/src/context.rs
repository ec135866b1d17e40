//! The machine's context: everything the core knows, and the bookkeeping that turns
//! observations into peer views before the state machine decides anything.
//!
//! Owns: this device's own record (the only file it writes), the peer views, the timer
//! table, the seeded rng, the effect queue, and "report once" memory for bad files.
//! Must never: decide a role change (that is `machine.rs`), read a clock or a file.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::election::{self, PeerView, Peers};
use super::io::{Effect, FileObservation, FileState, Level};
use super::record::{self, DeviceRecord, Identity, NameKind, RecordError};
use super::timers::{Jittered, Moment, TimerId, TimerTable, Timing};

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
    writes_in_flight: VecDeque<(u64, Moment)>,
    /// When the last write known to be ON DISK was asked for: our lease runs from it
    /// (a claim that never reached the disk is no claim).
    pub lease_from: Option<Moment>,
    /// Record writes that failed in a row (0 once one succeeds).
    pub write_failures: u32,
    pub(crate) prior_own: Option<PriorOwnRecord>,
    pub(crate) pending_request: Option<PendingRequest>,
    request_counter: u64,
    /// Activation requests of peers already served (by id).
    pub(crate) served_requests: BTreeSet<String>,
    /// 409s seen while active, for the step-down rule.
    pub(crate) conflicts: VecDeque<Moment>,
    /// Active and woke from a short sleep: not acting until a full rescan confirms the claim.
    pub revalidating: bool,
    /// Yielding: waiting for the runtime to confirm polling has stopped.
    pub awaiting_stop: bool,
    /// Problems already reported, by (file name, kind): each is said once.
    reported: BTreeMap<String, &'static str>,
    /// Set once the first complete listing has been ingested.
    pub scanned_once: bool,
    /// When our current claim was written (Contending).
    pub contend_started: Moment,
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
    /// Active, stopping with no standby: resign once the runtime says polling stopped.
    pub(crate) resign_when_stopped: bool,
    /// The last update id our last written record carried.
    written_update_id: Option<i64>,
    /// Telegram refusals of our token in a row (each doubles the hold-off), and when we
    /// last became Active (a refusal after a good while as Active starts the count anew).
    pub(crate) polling_refusals: u32,
    pub(crate) active_since: Moment,
    /// Who asked for the handoff in progress, to be told how it ended.
    pub(crate) handoff_ticket: Option<u64>,
    /// Why we refused, until the exit is asked for.
    pub(crate) refusal: Option<String>,
    /// The install a previous run of this device refused for (see `Core::recall_refusal`).
    pub(crate) refused_by: Option<String>,
    /// The name of the stimulus being handled, for [`Effect::Transition`]'s `cause`.
    pub cause: String,
    /// Telegram as a second witness (`witnessing.rs`): its rules, `None` without a token,
    /// and what this standby remembers of its answers.
    pub(crate) witness_rules: Option<crate::witness::WitnessRules>,
    pub(crate) witness: crate::witness::WitnessMemory,
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
            prior_own: None,
            pending_request: None,
            request_counter: 0,
            served_requests: BTreeSet::new(),
            conflicts: VecDeque::new(),
            revalidating: false,
            awaiting_stop: false,
            reported: BTreeMap::new(),
            scanned_once: false,
            contend_started: Moment(0),
            hold_off_until: Moment(0),
            refused: false,
            refusal: None,
            refused_by: None,
            handoff_ticket: None,
            acting: false,
            resign_when_stopped: false,
            written_update_id: None,
            polling_refusals: 0,
            active_since: Moment(0),
            unreadable_peers: BTreeMap::new(),
            cause: String::new(),
            witness_rules: None,
            witness: crate::witness::WitnessMemory::default(),
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

    /// Writes our record: seq grows by exactly one on every write.
    pub fn write_record(&mut self) {
        if self.refused {
            return;
        }
        // Never adopted above record::SEQ_MAX: cannot wrap.
        self.own.seq = self.own.seq.saturating_add(1);
        self.own.written_at_ms = self.wall_ms;
        self.written_update_id = self.own.last_update_id;
        self.last_write = Some(self.now);
        if self.writes_in_flight.len() >= WRITES_IN_FLIGHT_MAX {
            self.writes_in_flight.pop_front();
        }
        self.writes_in_flight.push_back((self.own.seq, self.now));
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

    /// Whether our record on disk lags the update progress we know of (after a stop, the
    /// runtime's last acknowledgements arrive with `ActingStopped`).
    pub fn progress_unwritten(&self) -> bool {
        self.last_write.is_some() && self.written_update_id != self.own.last_update_id
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
        super::offsets::start_hints(records)
    }

    fn report_once(&mut self, name: &str, kind: &'static str, level: Level, message: String) {
        if self.reported.get(name) == Some(&kind) {
            return;
        }
        self.reported.insert(name.to_string(), kind);
        self.notify(level, message);
    }

    fn clear_report(&mut self, name: &str) {
        self.reported.remove(name);
    }

    /// Ingests a complete listing: files not in it are gone (peers are kept, marked absent).
    pub fn ingest_listing(&mut self, files: &[FileObservation]) -> OwnFileNews {
        let mut news = OwnFileNews::Nothing;
        let mut listed = BTreeSet::new();
        for file in files {
            if let NameKind::Record { stem } = record::classify_name(&file.name) {
                listed.insert(stem);
            }
            news = news.merge(self.ingest_file(file));
        }
        for (stem, peer) in self.peers.iter_mut() {
            if !listed.contains(stem) {
                peer.present = false;
            }
        }
        if !listed.contains(&self.own_stem) {
            self.own_record_missing();
        }
        self.clear_report("<folder>");
        self.scanned_once = true;
        news
    }

    /// Notes a folder that cannot be listed; forgets nobody.
    pub fn ingest_scan_failure(&mut self, reason: &str) {
        let message = format!(
            "cannot list the devices folder ({reason}); keeping the {} peers already known. \
             Check that the sync folder exists and is mounted.",
            self.peers.len()
        );
        self.report_once("<folder>", "scan_failed", Level::Warn, message);
    }

    /// Ingests one observed file. Returns what it says about our own record.
    pub fn ingest_file(&mut self, file: &FileObservation) -> OwnFileNews {
        match record::classify_name(&file.name) {
            NameKind::Record { stem } if stem == self.own_stem => self.ingest_own(file),
            NameKind::Record { stem } => {
                self.ingest_peer(&stem, file);
                OwnFileNews::Nothing
            }
            NameKind::ConflictCopy { stem } => {
                if stem == self.own_stem && file.state != FileState::Gone {
                    self.emit(Effect::DeleteFile {
                        name: file.name.clone(),
                        reason: "a sync tool's conflict copy of our own record".into(),
                    });
                }
                OwnFileNews::Nothing
            }
            NameKind::IcloudStub { stem } => {
                if file.state != FileState::Gone {
                    self.report_once(
                        &file.name,
                        "stub",
                        Level::Warn,
                        format!(
                            "record {stem}.json is evicted by iCloud (\"{}\"); asking for a \
                             download. Pin the folder with \"Keep Downloaded\" or turn off \
                             Optimise Mac Storage.",
                            file.name
                        ),
                    );
                    self.emit(Effect::RequestDownload {
                        name: file.name.clone(),
                    });
                    self.note_unreadable(&stem);
                }
                OwnFileNews::Nothing
            }
            NameKind::Temp | NameKind::Foreign => OwnFileNews::Nothing,
        }
    }

    /// Reads a file's state into a record, reporting each kind of trouble once.
    fn read_record(&mut self, file: &FileObservation) -> Option<DeviceRecord> {
        let problem: Result<(), RecordError> = match &file.state {
            FileState::Contents { text } => match record::parse_record(text.as_bytes()) {
                Ok(parsed) => {
                    if record::file_stem(&parsed.device_id) != stem_of(&file.name) {
                        Err(RecordError::WrongFile {
                            found: parsed.device_id,
                        })
                    } else {
                        let mut parsed = parsed;
                        self.report_absurdities(&file.name, &mut parsed);
                        if parsed.is_newer_schema() {
                            let message = format!(
                                "{} was written by a newer baton (schema {}); treating it as \
                                 a live peer of unknown intent. Upgrade this device.",
                                file.name, parsed.schema
                            );
                            self.report_once(&file.name, "newer_schema", Level::Warn, message);
                        } else {
                            self.clear_report(&file.name);
                        }
                        return Some(parsed);
                    }
                }
                Err(error) => Err(error),
            },
            FileState::Gone => return None,
            FileState::TooLarge { bytes } => Err(RecordError::TooLarge {
                bytes: *bytes as usize,
            }),
            FileState::Dataless => {
                let message = format!(
                    "{} is evicted (dataless); asking for a download. Pin the folder with \
                     \"Keep Downloaded\" or turn off Optimise Mac Storage.",
                    file.name
                );
                self.report_once(&file.name, "dataless", Level::Warn, message);
                self.emit(Effect::RequestDownload {
                    name: file.name.clone(),
                });
                return None;
            }
            FileState::Symlink => {
                let message = format!("{} is a symlink; never followed, ignored", file.name);
                self.report_once(&file.name, "symlink", Level::Warn, message);
                return None;
            }
            FileState::Unreadable { reason } => {
                let message = format!("cannot read {} ({reason}); will retry", file.name);
                self.report_once(&file.name, "unreadable", Level::Warn, message);
                return None;
            }
        };
        if let Err(error) = problem {
            let message = format!(
                "ignoring {} for now: {error}; the last good copy is kept and it is re-read \
                 on the next change",
                file.name
            );
            self.report_once(&file.name, error.kind(), Level::Warn, message);
        }
        None
    }

    /// Sanitises a record's numbers (`record::sanitize`) and reports each absurd field
    /// once per file, until the file holds a sane value again.
    fn report_absurdities(&mut self, name: &str, parsed: &mut DeviceRecord) {
        const FIELDS: [&str; 4] = ["last_update_id", "progress_term", "term", "seq"];
        let found = record::sanitize(parsed);
        for field in FIELDS {
            if !found.iter().any(|a| a.field == field) {
                self.reported.remove(&format!("{name}#{field}"));
            }
        }
        for absurdity in found {
            let message = format!(
                "{name} ({}) holds an absurd number: {absurdity}. A corrupted or hand-edited \
                 record? Stop the device that writes it, or delete the file.",
                parsed.device_id
            );
            let key = format!("{name}#{}", absurdity.field);
            self.report_once(&key, "absurd", Level::Warn, message);
        }
    }

    fn ingest_peer(&mut self, stem: &str, file: &FileObservation) {
        if file.state == FileState::Gone {
            if let Some(peer) = self.peers.get_mut(stem) {
                peer.present = false;
            }
            return;
        }
        let Some(parsed) = self.read_record(file) else {
            self.note_unreadable(stem);
            return;
        };
        self.unreadable_peers.remove(stem);
        let (now, wall_ms, timing) = (self.now, self.wall_ms, self.timing);
        match self.peers.get_mut(stem) {
            Some(peer) => {
                peer.present = true;
                let newer = parsed.instance != peer.record.instance || parsed.seq > peer.record.seq;
                if newer {
                    peer.changed_at = now;
                    peer.record = parsed;
                }
            }
            None => {
                let changed_at = election::presumed_change(&parsed, now, wall_ms, &timing);
                let peer = PeerView {
                    stem: stem.to_string(),
                    record: parsed,
                    changed_at,
                    present: true,
                };
                self.peers.insert(stem.to_string(), peer);
            }
        }
    }

    /// Notes a record file of an unknown peer that cannot be read yet.
    fn note_unreadable(&mut self, stem: &str) {
        if stem != self.own_stem && !self.peers.contains_key(stem) {
            let now = self.now;
            self.unreadable_peers.entry(stem.to_string()).or_insert(now);
        }
    }

    /// Until when an unreadable record file must be presumed to be a live leader.
    pub fn unreadable_until(&self) -> Option<Moment> {
        self.unreadable_peers
            .values()
            .map(|first_seen| first_seen.plus(self.timing.liveness_active))
            .filter(|until| *until > self.now)
            .max()
    }

    /// Our record is not in the folder although we wrote it: deleted, or the whole
    /// folder deleted and made again. Peers must see us: write it again (not while a
    /// Yielding device waits to publish its handoff: that write comes with the stop).
    fn own_record_missing(&mut self) {
        if self.last_write.is_none() || self.refused || self.awaiting_stop {
            return;
        }
        self.notify(
            Level::Warn,
            "this device's record is gone from the folder (deleted?): writing it again",
        );
        self.write_record();
    }

    fn ingest_own(&mut self, file: &FileObservation) -> OwnFileNews {
        if file.state == FileState::Gone {
            self.own_record_missing();
            return OwnFileNews::Nothing;
        }
        let Some(found) = self.read_record(file) else {
            return OwnFileNews::Nothing;
        };
        if found.instance == self.identity.instance {
            if found.seq < self.own.seq && self.last_write.is_some() {
                // The sync tool served an older copy of our own record: re-assert ours.
                self.write_record();
            }
            return OwnFileNews::Nothing;
        }
        let ours = found.install_id == self.identity.install_id;
        match &self.prior_own {
            None if self.last_write.is_none() => {
                self.prior_own = Some(PriorOwnRecord {
                    record: found,
                    ours,
                });
                OwnFileNews::Prior
            }
            Some(prior) if self.last_write.is_none() => {
                // Watched while registering (another install's record, or one of ours not
                // stopped cleanly): any change means another process is writing it.
                if found.seq != prior.record.seq || found.instance != prior.record.instance {
                    OwnFileNews::Duplicate(Box::new(found))
                } else {
                    OwnFileNews::Nothing
                }
            }
            Some(prior)
                if found.instance == prior.record.instance && found.seq <= prior.record.seq =>
            {
                // The record we found at start (a previous run's, or one we watched and
                // took over), seen again after our own write: an old copy (a late read,
                // or the sync tool serving a previous version), not a second writer.
                self.write_record();
                OwnFileNews::Nothing
            }
            _ if ours && found.seq <= self.own.seq => {
                // Our previous incarnation's copy resurfaced (we continued its seq, so it is
                // older): re-assert ours. A HIGHER seq from another instance of this install
                // means a second live process serves this directory: a duplicate.
                self.write_record();
                OwnFileNews::Nothing
            }
            _ => OwnFileNews::Duplicate(Box::new(found)),
        }
    }
}

/// Unanswered writes remembered at most (the runtime answers each at once).
const WRITES_IN_FLIGHT_MAX: usize = 64;

/// What the answer to a record write changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteNews {
    Nothing,
    /// The write failed.
    Failed,
    /// A write succeeded after failures: the episode is over.
    Recovered,
}

/// What an observation said about the record at our own file name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OwnFileNews {
    Nothing,
    /// A record from before this process started is there.
    Prior,
    /// Another live process writes our device id.
    Duplicate(Box<DeviceRecord>),
}

impl OwnFileNews {
    /// Keeps the most serious of two pieces of news.
    fn merge(self, other: OwnFileNews) -> OwnFileNews {
        match (&self, &other) {
            (OwnFileNews::Duplicate(_), _) => self,
            (_, OwnFileNews::Duplicate(_)) | (OwnFileNews::Nothing, _) => other,
            _ => self,
        }
    }
}

fn stem_of(name: &str) -> &str {
    name.strip_suffix(".json").unwrap_or(name)
}
