//! Contending: our claim on a term is written; the settle window lets a higher claim or
//! a live leader reach us before we act. Owns: the claim (`started_at` lives in the
//! state, so it cannot be read once the claim is over), the blockers that make us back
//! off, and the settle timer. Must never: become Active on a claim not known on disk, or
//! after a stall past our lease.

use statig::prelude::*;

use super::{State, Stimulus, failed};
use crate::context::Ctx;
use crate::election;
use crate::io::{Effect, Level};
use crate::record::Status;
use crate::timers::{Moment, TimerId};

pub(super) fn enter(term: u64, context: &mut Ctx) {
    context.own.status = Status::Contending;
    context.own.term = term;
    context.write_record();
    context.cancel(TimerId::FailoverJitter);
    context.cancel(TimerId::LeaderDeadline);
    let at = context.now.plus(context.timing.settle_window);
    context.arm_at(TimerId::Settle, at, 0);
}

/// Has claimed `term` at `started_at`; waits out the settle window.
pub(super) fn handle(
    term: u64,
    started_at: Moment,
    context: &mut Ctx,
    event: &Stimulus,
) -> Outcome<State> {
    match event {
        stimulus if stimulus.looks_at_world() => {
            match contending_blocker(context, term, started_at) {
                Some(reason) => back_off(context, reason),
                None => Handled,
            }
        }
        Stimulus::Timer(TimerId::Settle) => {
            match settle_blocker(context, started_at)
                .or_else(|| contending_blocker(context, term, started_at))
            {
                Some(reason) => back_off(context, reason),
                None => Transition(State::taken_up(term, context)),
            }
        }
        Stimulus::WriteFailed => back_off(context, "our claim could not be written".to_string()),
        Stimulus::Activate { ticket, .. } => {
            context.answer(
                *ticket,
                failed("an election is in progress; try again in a few seconds"),
            );
            Handled
        }
        Stimulus::Woke { slept } => {
            // Claims that reached the folder while we slept are unread: the settle
            // window proved nothing, and its overdue timer must not make us Active.
            context.emit(Effect::Rescan);
            back_off(context, format!("slept {slept:?} while contending"))
        }
        Stimulus::Shutdown => {
            context.resign("stopped cleanly while contending");
            Handled
        }
        _ => Super,
    }
}

/// Why a contender must back off, if it must.
fn contending_blocker(context: &Ctx, term: u64, started_at: Moment) -> Option<String> {
    let (now, timing) = (context.now, &context.timing);
    if let Some(claim) = election::highest_claim(&context.peers, now, timing)
        && election::claim_key(&claim.record) > (term, context.me())
    {
        return Some(format!(
            "{} claims term {} (ours: {term})",
            claim.record.device_id, claim.record.term
        ));
    }
    if let Some(leader) = election::leader(&context.peers, now, timing) {
        return Some(format!("{} is alive and active", leader.record.device_id));
    }
    let me = context.me();
    if let Some(yielder) = election::handoff_in_transit(&context.peers, now, timing) {
        let to_me = yielder
            .record
            .handoff
            .as_ref()
            .is_some_and(|h| h.target == me);
        if !to_me && yielder.changed_at >= started_at {
            return Some(format!("{} is handing over", yielder.record.device_id));
        }
    }
    None
}

/// Why a claim whose settle window just ended must not become Active, besides the
/// world: its write never reached the disk, or this process stalled past its lease
/// (the settle window then proved nothing: claims that arrived meanwhile are unread).
fn settle_blocker(context: &mut Ctx, started_at: Moment) -> Option<String> {
    if context.lease_from < Some(started_at) {
        return Some("our claim is not known to be on disk".to_string());
    }
    if context.lease_lapsed() {
        context.emit(Effect::Rescan);
        return Some(format!(
            "our claim is {:?} old, past our lease: this process was stalled; re-reading \
             the folder",
            context.now.since(started_at)
        ));
    }
    None
}

fn back_off(context: &mut Ctx, reason: String) -> Outcome<State> {
    context.notify(Level::Info, format!("backing off: {reason}"));
    Transition(State::standby())
}
