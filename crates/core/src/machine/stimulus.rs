//! The stimuli the machine reacts to, once the facade has folded an input's observations
//! into the context. Owns: their names (for transcripts and the statechart's labels) and
//! which of them make a state look at the world. Must never: carry raw file contents.

use std::time::Duration;

use crate::context::OwnFileNews;
use crate::timers::TimerId;

/// What the machine reacts to, once observations have been folded into the context.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stimulus {
    Start,
    /// The context learnt something about the folder; `complete` for a full listing.
    Observed {
        complete: bool,
        own_news: OwnFileNews,
    },
    Timer(TimerId),
    Activate {
        target: String,
        ticket: u64,
    },
    Shutdown,
    Woke {
        slept: Duration,
    },
    /// The OS announced a sleep within `grace` (`sleep.rs`).
    SleepAnnounced {
        grace: Duration,
    },
    Conflict,
    /// Telegram refused the bot token: this device cannot poll.
    PollingRefused {
        description: String,
    },
    /// Our polls have failed for a while (the context decided: `Ctx::poll_failed`).
    CutOff,
    /// A same-host peer's process is gone; its record was made to lapse.
    PidGone,
    /// Telegram answered the witness's question (`witnessing.rs`): look again.
    Witnessed,
    ActingStopped,
    /// A record write failed (the context has reported it and armed a retry).
    WriteFailed,
    /// A record write succeeded after failures.
    WriteRecovered,
    /// Active, and our lease (from the last write known on disk) has run out: a process
    /// stalled past it (SIGSTOP, a paused VM, a blocked loop), or writes kept failing.
    LeaseLapsed,
    /// Sent after every transition, so the new state looks at the world at once.
    Reevaluate,
}

impl Stimulus {
    /// A stable name for transcripts and the statechart's labels.
    pub fn name(&self) -> String {
        match self {
            Stimulus::Start => "start".into(),
            Stimulus::Observed { complete: true, .. } => "scanned".into(),
            Stimulus::Observed {
                complete: false, ..
            } => "file_changed".into(),
            Stimulus::Timer(timer) => format!("{}_timer", timer.as_str()),
            Stimulus::Activate { .. } => "activate_asked".into(),
            Stimulus::Shutdown => "shutdown_asked".into(),
            Stimulus::Woke { .. } => "woke".into(),
            Stimulus::SleepAnnounced { .. } => "sleep_announced".into(),
            Stimulus::Conflict => "conflict".into(),
            Stimulus::PollingRefused { .. } => "polling_refused".into(),
            Stimulus::CutOff => "cut_off".into(),
            Stimulus::PidGone => "pid_gone".into(),
            Stimulus::Witnessed => "witnessed".into(),
            Stimulus::ActingStopped => "acting_stopped".into(),
            Stimulus::WriteFailed => "write_failed".into(),
            Stimulus::WriteRecovered => "write_recovered".into(),
            Stimulus::LeaseLapsed => "lease_lapsed".into(),
            Stimulus::Reevaluate => "reevaluate".into(),
        }
    }

    /// Whether another live process writes our record: handled by the `device`
    /// superstate alone (refuse), so every state's world-looking arm must let it pass.
    pub(super) fn is_duplicate(&self) -> bool {
        matches!(
            self,
            Stimulus::Observed {
                own_news: OwnFileNews::Duplicate(_),
                ..
            }
        )
    }

    pub(super) fn looks_at_world(&self) -> bool {
        !self.is_duplicate()
            && matches!(
                self,
                Stimulus::Observed { .. }
                    | Stimulus::Reevaluate
                    | Stimulus::PidGone
                    | Stimulus::Witnessed
            )
    }
}
