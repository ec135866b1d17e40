//! The core's inputs and outputs: everything that crosses the sans-IO boundary.
//!
//! Owns: the [`Input`] envelope (every input carries the moment it happened and the
//! wall clock, for `written_at` only), the [`Event`] kinds, and the [`Effect`] kinds the
//! runtime must carry out. These types are also the fixture and transcript formats, so
//! they serialise as stable, readable JSON. Must never: hold a secret.

use serde::{Deserialize, Serialize};

use super::record::DeviceRecord;
use super::timers::{Moment, TimerId};

/// One input to the core.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Input {
    /// Sleep-counting monotonic clock reading.
    pub at: Moment,
    /// Wall clock, ms since the Unix epoch: written into records, never compared across
    /// machines except as a start-up hint.
    pub wall_ms: u64,
    pub event: Event,
}

/// What the adapter could see of one file in the devices folder.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum FileState {
    /// Read in full (bytes decoded as UTF-8, invalid sequences replaced).
    Contents { text: String },
    /// Not there (deleted, or renamed away).
    Gone,
    /// Larger than the record limit: not read.
    TooLarge { bytes: u64 },
    /// Evicted by iCloud in place (dataless): not read, download requested.
    Dataless,
    /// A symlink: never followed.
    Symlink,
    /// Could not be read (permission, timeout, IO error).
    Unreadable { reason: String },
}

/// One file name with what was seen at it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct FileObservation {
    /// The name inside the devices folder, as found on disk (lossy for non-UTF-8 names).
    pub name: String,
    #[serde(flatten)]
    pub state: FileState,
}

/// Everything that can happen to a device.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// The process started; the first input.
    Start,
    /// A complete listing of the devices folder; files not listed are gone.
    Scanned { files: Vec<FileObservation> },
    /// One file re-read after a change notification.
    FileChanged { file: FileObservation },
    /// The folder could not be listed at all (deleted, unmounted, permission).
    ScanFailed { reason: String },
    /// Timers due at `at` fire before any other input is handled; this input only
    /// advances time (the runtime's wake-up for a deadline).
    Tick,
    /// Someone asked that `target` (a number, a device id, or a unique part) become active.
    ActivateAsked { target: String, ticket: u64 },
    /// SIGINT/SIGTERM: resign cleanly.
    ShutdownAsked,
    /// The two clocks jumped apart by this much: the machine slept.
    Woke { slept_ms: u64 },
    /// The OS announced that the machine is about to sleep and waits at most `grace_ms`
    /// (counted from this input) for this device: an active device hands over (see
    /// `sleep.rs`). Answered with [`Effect::AllowSleep`] when the device is done.
    SleepAnnounced { grace_ms: u64 },
    /// Telegram said another poller is running (409).
    Conflict { description: String },
    /// Answer to [`Effect::ProbePid`].
    PidProbed { stem: String, pid: u32, alive: bool },
    /// The active device's progress: every update through this id is handled (or
    /// acknowledged by its child). Replaces the recorded id, which may go DOWN when
    /// Telegram starts its ids over; 0 means nothing of the current id sequence yet.
    UpdateHandled { update_id: i64 },
    /// Update ids above the last handled one that were handled too (replaces the list).
    HandledAbove { ids: Vec<i64> },
    /// Telegram refused the bot token (401 Unauthorized or 404 Not Found, with its
    /// description): this device cannot poll. Like a 409, evidence for the core.
    PollingRefused { description: String },
    /// A getUpdates (or the calls before it) failed for a reason other than a refused
    /// token or a 409: the network, Telegram down, a timeout. Evidence for the core's
    /// cut-off rule (`witness::CutOff`): the active device hands over when its polls
    /// keep failing while a standby reaches Telegram.
    PollFailed { reason: String },
    /// A getUpdates succeeded after [`Event::PollFailed`]s (sent once per recovery).
    PollSucceeded,
    /// Answer to [`Effect::StopActing`]: polling has stopped and what was handled is
    /// confirmed; the handoff may now be published.
    ActingStopped { last_update_id: Option<i64> },
    /// A chat other than the configured one sent the bot something.
    ForeignChat { chat_id: i64 },
    /// Answer to [`Effect::WriteRecord`]: the record with this `seq` is on disk. Our
    /// lease runs from the moment its write was asked for.
    RecordWritten { seq: u64 },
    /// Answer to [`Effect::WriteRecord`]: it could not be written; `reason` names the
    /// path and the OS error. A claim that never reached the disk is no claim.
    RecordWriteFailed { seq: u64, reason: String },
    /// What routing tells the core to carry in our record: the chat we serve, a topic
    /// choice (`/activate` typed in a topic), mail acknowledgements (`routing`).
    Routing { note: crate::routing::RoutingNote },
    /// Answer to [`Effect::AskWitness`]: Telegram's `pending_update_count`, or `None`
    /// when Telegram could not be asked (network, timeout, refused token).
    Witnessed { pending_update_count: Option<u64> },
}

impl Event {
    /// Whether this event tells the core something about the folder.
    pub fn is_observation(&self) -> bool {
        matches!(
            self,
            Event::Scanned { .. } | Event::FileChanged { .. } | Event::ScanFailed { .. }
        )
    }
}

/// The role, as shown to users and in transcripts (the machine's leaf states).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Registering,
    Standby,
    Contending,
    Active,
    Yielding,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Registering => "Registering",
            Role::Standby => "Standby",
            Role::Contending => "Contending",
            Role::Active => "Active",
            Role::Yielding => "Yielding",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Info,
    Warn,
    Error,
}

impl Level {
    /// The level's name as transcripts and logs print it (`info`, `warn`, `error`).
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

/// The result of an activation request, for whoever asked (`ticket`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ActivationOutcome {
    /// This (active) device stopped and handed over to `to`.
    HandingOver { to: String },
    /// The request was published for the active device `leader` to serve.
    Requested { to: String, leader: Option<String> },
    /// This device is contending for the role itself (there was no leader).
    Contending,
    /// `device` is now active.
    Done { device: String },
    /// Nothing to do: `device` is already active.
    AlreadyActive { device: String },
    /// Refused or failed, and why.
    Failed { reason: String },
}

/// What the runtime must do. Drained in order after each input.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "effect", rename_all = "snake_case")]
pub enum Effect {
    /// The machine moved between states. `cause` names the stimulus the old state
    /// handled (see [`crate::machine::Stimulus::name`]): `scanned`, `file_changed`,
    /// `settle_timer`, `shutdown_asked`, …, or `reevaluate` when the state had just been
    /// entered and looked at the world — the statechart's labels.
    Transition {
        from: Role,
        to: Role,
        #[serde(default)]
        cause: String,
    },
    /// Write this record to our own file (atomically); answer with
    /// [`Event::RecordWritten`] or [`Event::RecordWriteFailed`].
    WriteRecord { record: Box<DeviceRecord> },
    /// Delete a file in the devices folder (only our own conflict copies, and records
    /// past retention while active).
    DeleteFile { name: String, reason: String },
    /// Start serving the bot for `term`; skip Telegram updates at or below `skip_through`
    /// and those in `also_handled` (handled by an earlier device: see
    /// `offsets::start_hints`).
    StartActing {
        term: u64,
        skip_through: Option<i64>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        also_handled: Vec<i64>,
    },
    /// Stop serving the bot now, before anything else; answer with
    /// [`Event::ActingStopped`].
    StopActing { reason: String },
    /// Pause polling until `until` (after a 409), keeping the role.
    PauseActing { until: Moment },
    /// List and re-read the whole folder, then send [`Event::Scanned`].
    Rescan,
    /// Ask the sync tool to download an evicted file (`brctl download` on macOS).
    RequestDownload { name: String },
    /// Tell whether `pid` on this host is still running; answer with [`Event::PidProbed`].
    ProbePid { stem: String, pid: u32 },
    /// Standby: ask Telegram how many updates wait (`getWebhookInfo`) without disturbing
    /// the poller; answer with [`Event::Witnessed`] (see [`crate::witness`]).
    AskWitness,
    /// A timer was armed (informational: the runtime asks [`crate::Core::next_timeout`]).
    TimerArmed {
        timer: TimerId,
        at: Moment,
        jitter_ms: u64,
    },
    /// Something a user should read.
    Notify { level: Level, message: String },
    /// Answer to [`Event::ActivateAsked`].
    ActivationResult {
        ticket: u64,
        result: ActivationOutcome,
    },
    /// Keep, locally, that another install (a clone) writes this device's record, for
    /// [`crate::Core::recall_refusal`] on the next start. Emitted before the
    /// refusal's `Exit`.
    RememberRefusal { install_id: String },
    /// The refusal remembered earlier no longer holds (this run registered): forget it.
    ForgetRefusal,
    /// Done with the announced sleep ([`Event::SleepAnnounced`]): the runtime lets the
    /// machine sleep now (releases or lets go of its hold). A sleep whose grace runs out
    /// first happens anyway: the runtime never waits for this past the grace.
    AllowSleep { reason: String },
    /// The process must exit with this code after carrying out the effects before it.
    Exit { code: i32, reason: String },
}

/// Exit codes the core can ask for (documented in the README).
pub mod exit_code {
    /// Clean stop.
    pub const OK: i32 = 0;
    /// Another live process writes this device id's record (cloned or restored Mac).
    pub const DUPLICATE_DEVICE: i32 = 3;
}
