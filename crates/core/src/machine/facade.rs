//! The [`Core`] facade: how an input becomes stimuli. Owns: the order within one input
//! (a wake-up, then the write's answer, then the lease, then due timers, then the
//! event), folding events into the context, the bound on re-evaluations, and the
//! read-only views the runtime and the simulator use. Must never: decide a role.

use std::time::Duration;

use statig::prelude::*;

use super::{Protocol, State, Stimulus};
use crate::context::{CoreConfig, Ctx, WriteNews};
use crate::election::{self, DeviceRow};
use crate::io::{Effect, Event, Input, Level, Role};
use crate::record::{DeviceRecord, FOREIGN_CHATS_MAX};
use crate::timers::{Moment, Timeout, TimerId};

/// The core as the runtime, the replayer and the simulator see it (str0m-style): feed
/// inputs with [`Core::handle`], drain [`Core::poll_effect`] until `None`, sleep until
/// [`Core::next_timeout`], then call [`Core::handle`] with [`Event::Tick`].
pub struct Core {
    machine: statig::blocking::StateMachine<Protocol>,
    ctx: Ctx,
    /// The timers that fired during the last [`Core::handle`], in order.
    fired: Vec<TimerId>,
}

/// A bound on the reevaluations after one input: a livelock is a bug, not a hang.
const REEVALUATIONS_MAX: usize = 8;

impl Core {
    /// A previous run of this device refused because install `install_id` writes its
    /// record (kept by the runtime from [`Effect::RememberRefusal`]). Call before
    /// [`Event::Start`]: while that install's record is not stopped, this run refuses
    /// at once instead of watching it again.
    pub fn recall_refusal(&mut self, install_id: &str) {
        self.ctx.refused_by = Some(install_id.to_string());
    }

    /// Turns on Telegram as a second witness (`crate::witness`), with these rules. Call
    /// it before the first input, and only when this device has a bot token: without
    /// it the rules are exactly those without a witness.
    pub fn enable_witness(&mut self, rules: crate::witness::WitnessRules) {
        self.ctx.witness_rules = Some(rules);
    }

    pub fn new(config: CoreConfig) -> Self {
        let mut ctx = Ctx::new(config);
        let machine = Protocol
            .uninitialized_state_machine()
            .init_with_context(&mut ctx);
        Core {
            machine: machine.into(),
            ctx,
            fired: Vec::new(),
        }
    }

    /// Handles one input. Timers due at or before `input.at` fire first (after a wake-up
    /// is noted, so that a sleeping active device never acts on stale timers).
    pub fn handle(&mut self, input: Input) {
        self.ctx.now = self.ctx.now.max(input.at);
        self.ctx.wall_ms = input.wall_ms;
        self.fired.clear();
        if let Event::Woke { slept_ms } = &input.event {
            let slept = Duration::from_millis(*slept_ms);
            self.ctx.presume_peers_alive_after_sleep(slept);
            // What reached the folder while we slept arrives now, undated.
            self.ctx.watching_since = None;
            self.dispatch(Stimulus::Woke { slept });
        }
        // A write's answer tells of the past (the lease runs from when it was asked for):
        // folded in before the lease is judged.
        let write_news = self.ingest_write_answer(&input.event);
        // An active device past its lease steps down before any timer fires or anything
        // else is handled: after a stall, the overdue heartbeat must not renew a lease
        // that peers may already have seen run out.
        if self.role() == Role::Active && self.ctx.lease_lapsed() {
            self.dispatch(Stimulus::LeaseLapsed);
        }
        while let Some(timer) = self.ctx.timers.pop_due(self.ctx.now) {
            self.fired.push(timer);
            self.dispatch(Stimulus::Timer(timer));
        }
        match write_news {
            WriteNews::Failed => self.dispatch(Stimulus::WriteFailed),
            WriteNews::Recovered => self.dispatch(Stimulus::WriteRecovered),
            WriteNews::Nothing => {}
        }
        if let Some(stimulus) = self.ingest(input.event) {
            self.dispatch(stimulus);
        }
    }

    pub(super) fn ingest_write_answer(&mut self, event: &Event) -> WriteNews {
        match event {
            Event::RecordWritten { seq } => self.ctx.write_answered(*seq, Ok(())),
            Event::RecordWriteFailed { seq, reason } => self.ctx.write_answered(*seq, Err(reason)),
            _ => WriteNews::Nothing,
        }
    }

    /// Folds an event into the context; returns what the machine must react to.
    pub(super) fn ingest(&mut self, event: Event) -> Option<Stimulus> {
        // A Yielding device waiting for the stop holds its writes (even a lost record's).
        let held = self.machine.state().holds_own_writes();
        let ctx = &mut self.ctx;
        match event {
            Event::Start => Some(Stimulus::Start),
            Event::Tick
            | Event::Woke { .. }
            | Event::RecordWritten { .. }
            | Event::RecordWriteFailed { .. } => None,
            Event::Scanned { files } => {
                let own_news = ctx.ingest_listing(&files, held);
                Some(Stimulus::Observed {
                    complete: true,
                    own_news,
                })
            }
            Event::FileChanged { file } => {
                let own_news = ctx.ingest_file(&file, held);
                Some(Stimulus::Observed {
                    complete: false,
                    own_news,
                })
            }
            Event::ScanFailed { reason } => {
                ctx.ingest_scan_failure(&reason);
                None
            }
            Event::ActivateAsked { target, ticket } => Some(Stimulus::Activate { target, ticket }),
            Event::ShutdownAsked => Some(Stimulus::Shutdown),
            Event::SleepAnnounced { grace_ms } => Some(Stimulus::SleepAnnounced {
                grace: Duration::from_millis(grace_ms),
            }),
            Event::Conflict { .. } => Some(Stimulus::Conflict),
            Event::PidProbed { stem, pid, alive } => ctx.pid_probed(&stem, pid, alive),
            Event::UpdateHandled { update_id } => {
                // Replaces: the id goes down when Telegram starts its ids over, to 0 (none
                // yet) at the restart itself. Anything else is no update id: ignored.
                if update_id == 0 {
                    ctx.own.last_update_id = None;
                } else if crate::offsets::is_sane_update_id(update_id) {
                    ctx.own.last_update_id = Some(update_id);
                }
                None
            }
            Event::HandledAbove { mut ids } => {
                ids.truncate(crate::record::HANDLED_ABOVE_MAX);
                ctx.own.handled_above = ids;
                None
            }
            Event::ActingStopped { last_update_id } => {
                if let Some(id) = last_update_id.filter(|id| crate::offsets::is_sane_update_id(*id))
                {
                    ctx.own.last_update_id = Some(id);
                }
                Some(Stimulus::ActingStopped)
            }
            Event::PollingRefused { description } => Some(Stimulus::PollingRefused { description }),
            Event::PollFailed { .. } => ctx.poll_failed().then_some(Stimulus::CutOff),
            Event::PollSucceeded => {
                ctx.poll_succeeded();
                None
            }
            Event::ForeignChat { chat_id } => {
                ctx.note_foreign_chat(chat_id);
                None
            }
            Event::Routing { note } => {
                ctx.note_routing(note);
                None
            }
            Event::Witnessed {
                pending_update_count,
            } => ctx
                .witness_answered(pending_update_count)
                .then_some(Stimulus::Witnessed),
        }
    }

    pub(super) fn dispatch(&mut self, stimulus: Stimulus) {
        let mut stimulus = stimulus;
        for _ in 0..REEVALUATIONS_MAX {
            // Transitions name the stimulus the state handled (`reevaluate` after a
            // transition: the new state looked at the world on entry).
            self.ctx.cause = stimulus.name();
            let before = self.machine.state().clone();
            self.machine.handle_with_context(&stimulus, &mut self.ctx);
            if self.machine.state().situation() == before.situation() {
                return;
            }
            stimulus = Stimulus::Reevaluate;
        }
        self.ctx.notify(
            Level::Error,
            "BUG: the machine kept changing state after one input; stopped re-evaluating",
        );
    }

    pub fn poll_effect(&mut self) -> Option<Effect> {
        self.ctx.effects.pop_front()
    }

    pub fn drain_effects(&mut self) -> Vec<Effect> {
        self.ctx.effects.drain(..).collect()
    }

    /// The earliest pending timer and why it is armed: call [`Core::handle`] with
    /// [`Event::Tick`] at `at` (ties go to the timer first in [`TimerId`]'s order).
    pub fn next_timeout(&self) -> Option<Timeout> {
        self.ctx
            .timers
            .next()
            .map(|(at, reason)| Timeout { at, reason })
    }

    /// The timers that fired during the last [`Core::handle`], in the order they fired
    /// (a timer cancelled by an earlier reaction is not among them).
    pub fn fired_timers(&self) -> &[TimerId] {
        &self.fired
    }

    pub fn timers(&self) -> impl Iterator<Item = (TimerId, Moment)> + '_ {
        self.ctx.timers.iter()
    }

    pub fn role(&self) -> Role {
        self.machine.state().role()
    }

    /// The term this device claims or last held.
    pub fn term(&self) -> u64 {
        self.ctx.own.term
    }

    pub fn own_record(&self) -> &DeviceRecord {
        &self.ctx.own
    }

    pub fn peers(&self) -> &election::Peers {
        &self.ctx.peers
    }

    pub fn device_table(&self) -> Vec<DeviceRow> {
        self.ctx.table()
    }

    pub fn now(&self) -> Moment {
        self.ctx.now
    }

    pub fn timing(&self) -> &crate::timers::Timing {
        &self.ctx.timing
    }

    /// The moment this device's lease runs out: from the last record write known to be
    /// on disk, the liveness timeout minus the settle bound (`None`: none is known). The
    /// runtime hands it to the poller, which starts no getUpdates past it.
    pub fn lease_deadline(&self) -> Option<Moment> {
        self.ctx.lease_deadline()
    }

    /// Whether this device is serving the bot right now (Active and not re-validating).
    pub fn is_acting(&self) -> bool {
        matches!(
            self.machine.state(),
            State::Active { tenure, .. } if !tenure.revalidating
        )
    }
}

impl Ctx {
    /// After a sleep, peers' records look old only because we could not see them change:
    /// presume every peer that was live when we fell asleep changed at wake-up.
    pub(super) fn presume_peers_alive_after_sleep(&mut self, slept: Duration) {
        let (now, timing) = (self.now, self.timing);
        let fell_asleep = now.minus(slept);
        for peer in self.peers.values_mut() {
            if election::is_live(peer, fell_asleep, &timing) {
                peer.changed_at = peer.changed_at.max(now);
            }
        }
    }

    pub(super) fn pid_probed(&mut self, stem: &str, pid: u32, alive: bool) -> Option<Stimulus> {
        if stem == self.own_stem {
            self.prior_writer_probed(pid, alive);
            return None;
        }
        let (now, timing) = (self.now, self.timing);
        let peer = self.peers.get_mut(stem)?;
        if alive || peer.record.pid != pid {
            return None;
        }
        let timeout = election::liveness_timeout(peer.record.status, &timing);
        peer.changed_at = peer.changed_at.min(now.minus(timeout));
        // A vanished process is never waited for on the witness's word.
        self.witness.condemned = Some(crate::witness::Episode {
            stem: stem.to_string(),
            seq: peer.record.seq,
        });
        let message = format!(
            "{}'s process (pid {pid}) is gone; not waiting for its lease",
            peer.record.device_id
        );
        self.notify(Level::Info, message);
        Some(Stimulus::PidGone)
    }

    /// Issue 11's hook: a routing note goes into our record, written at once when peers
    /// should see it soon (a topic choice, mail acknowledgements) and we already write.
    pub(super) fn note_routing(&mut self, note: crate::routing::RoutingNote) {
        let term = self.own.term;
        if crate::routing::note(&mut self.own, note, term) && self.last_write.is_some() {
            self.write_record();
        }
    }

    pub(super) fn note_foreign_chat(&mut self, chat_id: i64) {
        if !self.own.foreign_chats.contains(&chat_id)
            && self.own.foreign_chats.len() < FOREIGN_CHATS_MAX
        {
            self.own.foreign_chats.push(chat_id);
        }
    }
}
