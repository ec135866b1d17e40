//! Standby: alive, not acting. Owns: watching the leader (its deadline, a pid probe
//! when it runs on this very boot), the failover wait, publishing and completing our
//! activation request, and when to contend. Must never: act, or contend while our
//! record cannot be written.

use statig::prelude::*;

use super::{State, Stimulus, failed};
use crate::context::{Ctx, PendingRequest};
use crate::election;
use crate::io::{ActivationOutcome, Effect, Level};
use crate::record::{ActivationRequest, Status};
use crate::timers::TimerId;

pub(super) fn enter(context: &mut Ctx) {
    if context.refused_by.take().is_some() {
        context.emit(Effect::ForgetRefusal);
    }
    context.adopt_prior_record();
    context.own.status = Status::Standby;
    context.own.handoff = None;
    context.write_record();
    context.arm(TimerId::Heartbeat, context.timing.heartbeat_standby);
}

/// Alive, not acting; watches the leader and contends when it is gone.
pub(super) fn handle(context: &mut Ctx, event: &Stimulus) -> Outcome<State> {
    match event {
        stimulus if stimulus.looks_at_world() => standby_evaluate(context, false),
        Stimulus::Timer(TimerId::LeaderDeadline) | Stimulus::WriteRecovered => {
            standby_evaluate(context, false)
        }
        Stimulus::Timer(TimerId::FailoverJitter) => standby_evaluate(context, true),
        Stimulus::Timer(TimerId::Heartbeat) => {
            context.write_record();
            context.arm(TimerId::Heartbeat, context.timing.heartbeat_standby);
            Handled
        }
        Stimulus::Timer(TimerId::PidProbe) => {
            context.probe_leader_pid();
            Handled
        }
        Stimulus::Timer(TimerId::WitnessAsk) => {
            context.witness_ask();
            Handled
        }
        Stimulus::Activate { target, ticket } => standby_activate(context, target, *ticket),
        Stimulus::Shutdown => {
            context.own.activation_request = None;
            context.resign("stopped cleanly");
            Handled
        }
        _ => Super,
    }
}

fn standby_evaluate(context: &mut Ctx, jitter_elapsed: bool) -> Outcome<State> {
    let (now, timing) = (context.now, context.timing);
    context.complete_request_if_served();
    if context.write_failing() {
        // A claim that cannot reach the disk is no claim: neither contend nor take a
        // handoff until a write succeeds (WriteRecovered looks again).
        context.cancel(TimerId::FailoverJitter);
        return Handled;
    }
    let me = context.me().to_string();
    if let Some(handoff) = election::handoff_for(&context.peers, &me, now, &timing) {
        let term = handoff.term;
        // An absurd handoff term (reported when read) is never taken: it would spread.
        if term > context.own.term && term <= crate::record::TERM_MAX {
            if context.handoff_is_fresh(term) {
                return Transition(State::taken_up(term, context));
            }
            // Found waiting (at start, on waking) or left untaken for long: the yielder
            // may take the role back before our claim reaches it. Claim its term through
            // the settle window instead: the yielder stands down on seeing the claim, or
            // we see it took the role back (term + 1) and back off.
            let message = format!(
                "a handoff to this device (term {term}) of unknown age: claiming its term \
                 through the settle window, as the device handing over may be about to take \
                 the role back"
            );
            context.notify(Level::Info, message);
            return Transition(State::claim(term, context));
        }
    }
    let watched = election::leader(&context.peers, now, &timing)
        .or_else(|| election::handoff_in_transit(&context.peers, now, &timing))
        .or_else(|| election::highest_claim(&context.peers, now, &timing))
        .map(|peer| (election::lapses_at(peer, &timing), peer.record.status));
    if let Some((lapses_at, status)) = watched {
        context.cancel(TimerId::FailoverJitter);
        context.arm_at(TimerId::LeaderDeadline, lapses_at, 0);
        if status == Status::Active {
            context.arm_pid_probe();
            context.witness_watch();
        }
        return Handled;
    }
    if now < context.hold_off_until {
        let at = context.hold_off_until;
        context.arm_at(TimerId::LeaderDeadline, at, 0);
        return Handled;
    }
    if let Some(until) = context.unreadable_until() {
        context.arm_at(TimerId::LeaderDeadline, until, 0);
        return Handled;
    }
    // Telegram as a second witness: a lapsed leader while nothing waits is only late.
    if let Some(until) = context.witness_deferral() {
        context.cancel(TimerId::FailoverJitter);
        context.arm_at(TimerId::LeaderDeadline, until, 0);
        return Handled;
    }
    context.cancel(TimerId::LeaderDeadline);
    context.cancel(TimerId::PidProbe);
    if jitter_elapsed || context.no_live_peer() || context.asked_to_lead() {
        let highest = context.highest_term();
        return match context.next_term(highest) {
            Some(term) => Transition(State::claim(term, context)),
            None => Handled,
        };
    }
    if !context.timers.is_armed(TimerId::FailoverJitter) {
        context.notify(
            Level::Info,
            "no live active device: contending after a random wait",
        );
        context.arm(TimerId::FailoverJitter, context.timing.failover_jitter);
    }
    Handled
}

fn standby_activate(context: &mut Ctx, typed: &str, ticket: u64) -> Outcome<State> {
    if context.write_failing() {
        let reason = "this device cannot write its record right now (see its log); it can \
                      neither take the role nor publish a request";
        context.answer(ticket, failed(reason));
        return Handled;
    }
    let target = match context.resolve(typed) {
        Ok(target) => target,
        Err(reason) => {
            context.answer(ticket, failed(&reason));
            return Handled;
        }
    };
    let (now, timing) = (context.now, context.timing);
    let leader = election::leader(&context.peers, now, &timing).map(|p| p.record.device_id.clone());
    if leader.as_deref() == Some(target.as_str()) {
        context.answer(ticket, ActivationOutcome::AlreadyActive { device: target });
        return Handled;
    }
    if target == context.me()
        && leader.is_none()
        && election::handoff_in_transit(&context.peers, now, &timing).is_none()
    {
        let highest = context.highest_term();
        let Some(term) = context.next_term(highest) else {
            context.answer(ticket, failed("no term is left to claim (see the log)"));
            return Handled;
        };
        context.answer(ticket, ActivationOutcome::Contending);
        return Transition(State::claim(term, context));
    }
    let id = context.next_request_id();
    context.own.activation_request = Some(ActivationRequest {
        target: target.clone(),
        id,
    });
    context.pending_request = Some(PendingRequest {
        target: target.clone(),
        ticket,
    });
    context.write_record();
    let at = now.plus(timing.request_timeout);
    context.arm_at(TimerId::RequestTimeout, at, 0);
    context.answer(ticket, ActivationOutcome::Requested { to: target, leader });
    Handled
}

impl Ctx {
    /// Whether the handoff to us of `term` may be taken at once, with no settle window.
    /// Safe only while our claim still reaches the yielder before its handoff timeout:
    /// the handoff must have been seen arrive while we watched (so it was published at
    /// most a settle bound before we first saw it), and we must take it less than
    /// `handoff_timeout − settle_window` after that (our claim needs a settle bound to
    /// travel back).
    pub(super) fn handoff_is_fresh(&self, term: u64) -> bool {
        let window = self
            .timing
            .handoff_timeout
            .saturating_sub(self.timing.settle_window);
        self.handoff_sighting.is_some_and(|sighting| {
            sighting.term == term && sighting.dated && self.now.since(sighting.first_seen) < window
        })
    }

    pub(super) fn no_live_peer(&self) -> bool {
        !self
            .peers
            .values()
            .any(|peer| election::is_live(peer, self.now, &self.timing))
    }

    /// Whether someone asked for this device to become active.
    pub(super) fn asked_to_lead(&self) -> bool {
        let me = self.me();
        self.pending_request
            .as_ref()
            .is_some_and(|r| r.target == me)
            || election::activation_requests(&self.peers, self.now, &self.timing)
                .any(|(_, request)| request.target == me)
    }

    pub(super) fn complete_request_if_served(&mut self) {
        let Some(request) = &self.pending_request else {
            return;
        };
        let leader = election::leader(&self.peers, self.now, &self.timing);
        if leader.is_some_and(|peer| peer.record.device_id == request.target) {
            let ticket = request.ticket;
            let device = request.target.clone();
            self.pending_request = None;
            self.own.activation_request = None;
            self.cancel(TimerId::RequestTimeout);
            self.write_record();
            self.answer(ticket, ActivationOutcome::Done { device });
        }
    }

    pub(super) fn withdraw_request(&mut self, reason: &str) {
        if let Some(request) = self.pending_request.take() {
            self.own.activation_request = None;
            self.write_record();
            let reason = format!("asking for {} failed: {reason}", request.target);
            self.answer(request.ticket, failed(&reason));
        }
    }

    /// Watches a same-boot leader's process: probe its pid once it is overdue.
    pub(super) fn arm_pid_probe(&mut self) {
        let overdue = self.timing.heartbeat_active.max() + self.timing.heartbeat_active.jitter;
        let Some(leader) = election::leader(&self.peers, self.now, &self.timing) else {
            return;
        };
        if !self.same_boot(&leader.record) {
            return;
        }
        let at = leader.changed_at.plus(overdue).max(self.now);
        if self
            .timers
            .deadline(TimerId::PidProbe)
            .is_none_or(|armed| armed < at)
        {
            self.arm_at(TimerId::PidProbe, at, 0);
        }
    }

    pub(super) fn probe_leader_pid(&mut self) {
        let probe = election::leader(&self.peers, self.now, &self.timing)
            .filter(|leader| self.same_boot(&leader.record))
            .map(|leader| (leader.stem.clone(), leader.record.pid));
        if let Some((stem, pid)) = probe {
            self.emit(Effect::ProbePid { stem, pid });
            let again = self.now.plus(self.timing.heartbeat_active.base);
            self.arm_at(TimerId::PidProbe, again, 0);
        }
    }
}
