//! Yielding: we stopped acting and offer the next term to a successor. Owns: the
//! handover's own facts (its target and term, whether we are stopping, who asked, and
//! whether it still waits for polling to stop before it is published), the handoff
//! timeout, and taking the role back when nobody took it. Must never: publish the
//! handoff (write our record) before the runtime says polling stopped.

use statig::prelude::*;

use super::{State, Stimulus, failed};
use crate::context::Ctx;
use crate::election;
use crate::io::{ActivationOutcome, Effect, Level};
use crate::record::{Handoff, Status};
use crate::timers::TimerId;

/// The Yielding state's fields, borrowed for one stimulus.
pub(super) struct Handover<'a> {
    pub to: &'a str,
    pub term: u64,
    /// Stopping: resign once the handoff is taken up or times out.
    pub shutting_down: &'a mut bool,
    /// Who asked for the handoff (an activation ticket), to be told how it ended.
    pub asker: &'a mut Option<u64>,
    /// Not published yet: the record is written once polling stopped.
    pub awaiting_stop: &'a mut bool,
}

pub(super) fn enter(to: &str, term: u64, shutting_down: bool, context: &mut Ctx) {
    context.own.status = Status::Yielding;
    context.own.handoff = Some(Handoff {
        target: to.to_string(),
        term,
    });
    // The record is written once the runtime says polling stopped (ActingStopped), so
    // the successor never polls while we still might (`awaiting_stop` starts true).
    let at = context.now.plus(context.handoff_wait(shutting_down));
    context.arm_at(TimerId::HandoffTimeout, at, 0);
    context.notify(Level::Info, format!("handing over to {to} (term {term})"));
}

pub(super) fn exit(context: &mut Ctx) {
    context.cancel(TimerId::HandoffTimeout);
    context.own.handoff = None;
}

/// Has stopped acting and offers the term; takes it back if not taken up.
pub(super) fn handle(
    handover: &mut Handover<'_>,
    context: &mut Ctx,
    event: &Stimulus,
) -> Outcome<State> {
    let shutting_down = *handover.shutting_down;
    match event {
        Stimulus::ActingStopped if *handover.awaiting_stop => {
            *handover.awaiting_stop = false;
            context.write_record();
            // The target's time to answer runs from the handoff's publication: stopping
            // may have taken a while (the child's last acknowledgements).
            let at = context.now.plus(context.handoff_wait(shutting_down));
            context.arm_at(TimerId::HandoffTimeout, at, 0);
            Handled
        }
        stimulus if stimulus.looks_at_world() => yielding_evaluate(context, handover),
        Stimulus::Timer(TimerId::Heartbeat) => {
            if !*handover.awaiting_stop {
                context.write_record();
            }
            context.arm(TimerId::Heartbeat, context.timing.heartbeat_active);
            Handled
        }
        // Not published yet: that write comes with ActingStopped, not before.
        Stimulus::Timer(TimerId::WriteRetry) if *handover.awaiting_stop => Handled,
        Stimulus::Timer(TimerId::HandoffTimeout) if *handover.awaiting_stop => {
            // Not published yet (stopping a child can take its grace): the target
            // has not even been asked. The wait runs from publication.
            let at = context.now.plus(context.handoff_wait(shutting_down));
            context.arm_at(TimerId::HandoffTimeout, at, 0);
            Handled
        }
        Stimulus::Timer(TimerId::HandoffTimeout) => handoff_timed_out(context, handover),
        Stimulus::Shutdown => {
            *handover.shutting_down = true;
            // A handoff already under way keeps its target, but the wait shrinks to
            // what a stopping device may spend.
            let at = context.now.plus(context.timing.resign_wait);
            if context
                .timers
                .deadline(TimerId::HandoffTimeout)
                .is_some_and(|armed| armed > at)
            {
                context.arm_at(TimerId::HandoffTimeout, at, 0);
            }
            Handled
        }
        Stimulus::Woke { .. } => {
            // An overdue handoff timeout must not take the role back before the
            // rescan shows whether the target took it meanwhile.
            context.emit(Effect::Rescan);
            let at = context.now.plus(context.timing.settle_window);
            if context
                .timers
                .deadline(TimerId::HandoffTimeout)
                .is_some_and(|armed| armed < at)
            {
                context.arm_at(TimerId::HandoffTimeout, at, 0);
            }
            Handled
        }
        Stimulus::Activate { ticket, .. } => {
            let reason = format!("a handoff to {} is in progress", handover.to);
            context.answer(*ticket, failed(&reason));
            Handled
        }
        _ => Super,
    }
}

/// The published handoff was not taken up in time: resign (stopping), stay standby (our
/// token is refused), or take the role back.
fn handoff_timed_out(context: &mut Ctx, handover: &mut Handover<'_>) -> Outcome<State> {
    let (to, term) = (handover.to, handover.term);
    if *handover.shutting_down {
        let reason = format!("stopped; {to} did not take over in time");
        context.resign(&reason);
        return Handled;
    }
    if context.own.polling_refused.is_some() {
        // Handing over because Telegram refused our token: taking the role
        // back would only poll into the same refusal.
        let message = format!(
            "{to} did not take over in time; not taking the role back, since \
             Telegram refuses this device's bot token"
        );
        context.notify(Level::Warn, message);
        return Transition(State::standby());
    }
    let message = format!(
        "handoff to {to} timed out after {:?}; taking the role back",
        context.timing.handoff_timeout
    );
    context.notify(Level::Warn, message.clone());
    if let Some(ticket) = handover.asker.take() {
        context.answer(ticket, failed(&message));
    }
    match context.next_term(term) {
        Some(next) => Transition(State::taken_up(next, context)),
        None => Transition(State::standby()),
    }
}

fn yielding_evaluate(context: &mut Ctx, handover: &mut Handover<'_>) -> Outcome<State> {
    let (to, term, shutting_down) = (handover.to, handover.term, *handover.shutting_down);
    let (now, timing) = (context.now, context.timing);
    let Some(claim) = election::highest_claim(&context.peers, now, &timing) else {
        return Handled;
    };
    if claim.record.term < term {
        return Handled;
    }
    let successor = claim.record.device_id.clone();
    if successor == to {
        context.notify(
            Level::Info,
            format!("{to} took over (term {})", claim.record.term),
        );
        if let Some(ticket) = handover.asker.take() {
            let result = ActivationOutcome::Done {
                device: successor.clone(),
            };
            context.answer(ticket, result);
        }
    } else {
        context.notify(
            Level::Warn,
            format!(
                "{successor} claimed term {} during our handoff to {to}",
                claim.record.term
            ),
        );
    }
    if shutting_down {
        context.resign("stopped cleanly after handing over");
        return Handled;
    }
    Transition(State::standby())
}

impl Ctx {
    /// How long a handoff published now waits for its target's claim.
    pub(super) fn handoff_wait(&self, shutting_down: bool) -> std::time::Duration {
        if shutting_down {
            self.timing.resign_wait.min(self.timing.handoff_timeout)
        } else {
            self.timing.handoff_timeout
        }
    }
}
