//! Registering: watching the folder before taking part, writing nothing. Owns: the
//! judgement of a record already at our own file name (a previous run's, a clone's, a
//! second process's), how long to watch it, the pid probe of its writer, and taking it
//! over (continuing its seq and term). Must never: write our record (Standby's entry
//! does, once the watch is over).

use statig::prelude::*;

use super::{State, Stimulus, failed};
use crate::context::Ctx;
use crate::io::{Effect, Level, exit_code};
use crate::record::Status;
use crate::timers::TimerId;

pub(super) fn enter(context: &mut Ctx) {
    if let Some(message) = context.refusal.take() {
        context.exit(exit_code::DUPLICATE_DEVICE, &message);
    }
}

/// Watching the folder before taking part; writes nothing.
pub(super) fn handle(context: &mut Ctx, event: &Stimulus) -> Outcome<State> {
    match event {
        Stimulus::Start => {
            context.emit(Effect::Rescan);
            // Handled here, so the `device` superstate never sees Start: arm the
            // backstop here too (it was never armed at all before).
            context.arm(TimerId::Backstop, context.timing.backstop_scan);
            Handled
        }
        Stimulus::Observed { complete: true, .. }
            if !event.is_duplicate()
                && !context.timers.is_armed(TimerId::Registration)
                && !context.refused =>
        {
            watch_prior_record(context)
        }
        Stimulus::Timer(TimerId::Registration) if !context.refused => Transition(State::standby()),
        Stimulus::Shutdown => {
            context.exit(exit_code::OK, "stopped before registering");
            Handled
        }
        Stimulus::Activate { ticket, .. } => {
            context.answer(
                *ticket,
                failed("this device is still registering; try again in a moment"),
            );
            Handled
        }
        _ => Super,
    }
}

/// A first full listing: a record already at our own name is watched first (another
/// install's, or ours not stopped cleanly); otherwise take part at once.
fn watch_prior_record(context: &mut Ctx) -> Outcome<State> {
    match &context.prior_own {
        // Another install's record (a clone?), or ours not stopped cleanly (a
        // crash, or a second process for this directory): watch it first.
        Some(prior) if !prior.ours || prior.record.status != Status::Stopped => {
            // A previous run refused for this very install: a quiet standby
            // twin writes only every few minutes, so watch long enough to see
            // it write (any change refuses). A twin that is gone for good
            // stays silent, and its record is taken over in the end.
            let recalled = !prior.ours
                && prior.record.status != Status::Stopped
                && context.refused_by.as_deref() == Some(prior.record.install_id.as_str());
            let watch = if recalled {
                context.timing.liveness_standby
            } else {
                context.timing.settle_window
            };
            let whose = if prior.ours {
                "this install, not stopped cleanly"
            } else if recalled {
                "the install this device refused for last time"
            } else {
                "another install"
            };
            let message = format!(
                "a record for {} from {whose} exists (pid {} on {}); \
                 watching it for {:?} before taking it over",
                context.me(),
                prior.record.pid,
                prior.record.hostname,
                watch
            );
            context.notify(Level::Info, message);
            let at = context.now.plus(watch);
            context.arm_at(TimerId::Registration, at, 0);
            context.probe_prior_writer();
            Handled
        }
        _ => Transition(State::standby()),
    }
}

impl Ctx {
    /// Registering, with a record at our own name written on this very boot of this
    /// machine by another process: ask whether that process still runs.
    pub(super) fn probe_prior_writer(&mut self) {
        let Some(prior) = &self.prior_own else {
            return;
        };
        if self.same_boot(&prior.record) && prior.record.pid != self.identity.pid {
            let pid = prior.record.pid;
            let stem = self.own_stem.clone();
            self.emit(Effect::ProbePid { stem, pid });
        }
    }

    /// The process that wrote our record before we started runs on this host: a second
    /// `baton run` for this directory (a copied state folder has its own lock). The
    /// running, established writer must win: watch its record as long as a standby may
    /// stay silent, so its next write makes THIS process refuse, instead of taking the
    /// record over after the settle window and making the original refuse.
    pub(super) fn prior_writer_probed(&mut self, pid: u32, alive: bool) {
        let watching = self.last_write.is_none()
            && self.timers.is_armed(TimerId::Registration)
            && self
                .prior_own
                .as_ref()
                .is_some_and(|prior| prior.record.pid == pid);
        if !alive || !watching {
            return;
        }
        let at = self.now.plus(self.timing.liveness_standby);
        if self
            .timers
            .deadline(TimerId::Registration)
            .is_some_and(|armed| armed < at)
        {
            let message = format!(
                "the process that wrote this device's record (pid {pid}) still runs on this \
                 machine: another `baton run` for this directory (with a copy of the state \
                 folder?). Watching its record for {:?}; if it writes, this one refuses",
                self.timing.liveness_standby
            );
            self.notify(Level::Warn, message);
            self.arm_at(TimerId::Registration, at, 0);
        }
    }

    /// Takes over the record found at our file name when we started (same install, or
    /// nobody wrote it while we watched): our seq continues from it, and we know its term.
    /// The prior record is kept afterwards: a later copy of it is recognised as old
    /// (`ingest_own`), not as a second writer. Adopting again changes nothing.
    pub(super) fn adopt_prior_record(&mut self) {
        if let Some(prior) = &self.prior_own {
            let prior = &prior.record;
            // Its numbers were sanitised when read; absurd ones (reported then) are not
            // continued from, so our seq and term cannot wrap.
            if prior.seq <= crate::record::SEQ_MAX {
                self.own.seq = self.own.seq.max(prior.seq);
            }
            if prior.term <= crate::record::TERM_MAX {
                self.own.term = self.own.term.max(prior.term);
            }
            let own_progress = self.own.progress_term.unwrap_or(0);
            if self.own.last_update_id.is_none() && self.own.progress_term.is_none()
                || prior.progress_term.unwrap_or(0) > own_progress
            {
                self.own.last_update_id = prior.last_update_id;
                self.own.handled_above = prior.handled_above.clone();
                self.own.progress_term = prior.progress_term;
            }
        }
    }
}
