//! Active: serving the bot for a term. Owns: the tenure's own facts ([`Tenure`]: since
//! when, a re-validation after sleep, the 409s counted, a stop waiting for the last
//! progress), heartbeats, the retention sweep, handing over on request or on a refused
//! token, and stepping down (a higher claim, the lease, sleep, conflicts). Must never:
//! act past the lease, or hand over to a device that cannot take over.

use std::collections::VecDeque;
use std::time::Duration;

use statig::prelude::*;

use super::{State, Stimulus, failed};
use crate::context::Ctx;
use crate::election;
use crate::io::{ActivationOutcome, Effect, Level};
use crate::record::{ActivationRequest, REFUSAL_CHARS_MAX, Status};
use crate::sleep::{self, ActiveSleepPlan};
use crate::timers::{Moment, TimerId};

/// How often an active device looks for records past retention.
const RETENTION_SWEEP_INTERVAL: Duration = Duration::from_secs(3600);

/// What only an Active device knows, for as long as it is Active.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tenure {
    /// When this tenure began (a refused token after a good while starts a new count).
    pub since: Moment,
    /// Woke from a short sleep: not acting until a full rescan confirms the claim.
    pub revalidating: bool,
    /// 409s seen in this tenure, within the conflict window, for the step-down rule.
    pub conflicts: VecDeque<Moment>,
    /// Stopping with no standby: resign once the runtime says polling stopped.
    pub resign_when_stopped: bool,
}

impl Tenure {
    pub(super) fn starting(now: Moment) -> Self {
        Tenure {
            since: now,
            revalidating: false,
            conflicts: VecDeque::new(),
            resign_when_stopped: false,
        }
    }
}

pub(super) fn enter(term: u64, context: &mut Ctx) {
    context.own.status = Status::Active;
    context.own.term = term;
    context.own.handoff = None;
    context.own.activation_request = None;
    // Becoming active again is the probe after a refusal: peers see us as a target
    // again, and a new refusal sets it back within seconds.
    context.own.polling_refused = None;
    context.forget_cut_off();
    context.take_start_hints(term);
    if let Some(request) = context.pending_request.take() {
        let result = ActivationOutcome::Done {
            device: context.me().to_string(),
        };
        context.answer(request.ticket, result);
        context.cancel(TimerId::RequestTimeout);
    }
    context.write_record();
    context.start_acting(term);
    context.notify(
        Level::Info,
        format!("{} is now ACTIVE (term {term})", context.me()),
    );
    context.arm(TimerId::Heartbeat, context.timing.heartbeat_active);
    let sweep = context.now.plus(RETENTION_SWEEP_INTERVAL);
    context.arm_at(TimerId::RetentionSweep, sweep, 0);
}

pub(super) fn exit(context: &mut Ctx) {
    context.forget_cut_off();
    context.stop_acting("leaving Active");
    context.cancel(TimerId::RetentionSweep);
}

/// Serves the bot for `term`; heartbeats; hands over on request.
pub(super) fn handle(
    term: u64,
    tenure: &mut Tenure,
    context: &mut Ctx,
    event: &Stimulus,
) -> Outcome<State> {
    match event {
        Stimulus::Observed { complete, .. } if !event.is_duplicate() => {
            active_evaluate(context, term, tenure, *complete)
        }
        Stimulus::Reevaluate | Stimulus::PidGone => active_evaluate(context, term, tenure, false),
        Stimulus::Timer(TimerId::Heartbeat) => {
            context.write_record();
            context.arm(TimerId::Heartbeat, context.timing.heartbeat_active);
            Handled
        }
        Stimulus::Timer(TimerId::RetentionSweep) => {
            context.sweep_old_records();
            let sweep = context.now.plus(RETENTION_SWEEP_INTERVAL);
            context.arm_at(TimerId::RetentionSweep, sweep, 0);
            Handled
        }
        Stimulus::Activate { target, ticket } => active_activate(context, term, target, *ticket),
        Stimulus::Shutdown => {
            let best = election::best_standby(&context.peers, context.now, &context.timing)
                .map(|peer| peer.record.device_id.clone());
            match best.zip(context.next_term(term)) {
                Some((to, next)) => Transition(State::offer(to, next, true, None)),
                None => {
                    // The final record waits for the runtime's last progress.
                    context.stop_acting("stopping; no standby to hand over to");
                    tenure.resign_when_stopped = true;
                    Handled
                }
            }
        }
        Stimulus::ActingStopped if tenure.resign_when_stopped => {
            context.resign("stopped cleanly with no standby to hand over to");
            Handled
        }
        Stimulus::Woke { slept } => active_woke(context, tenure, *slept),
        Stimulus::SleepAnnounced { grace } => match sleep::plan_for_active(context, term, *grace) {
            ActiveSleepPlan::HandOver { to, term } => {
                Transition(State::offer(to, term, false, None))
            }
            ActiveSleepPlan::KeepRole => Handled,
        },
        Stimulus::Conflict => active_conflict(context, term, tenure),
        Stimulus::PollingRefused { description } => {
            active_polling_refused(context, term, tenure.since, description)
        }
        Stimulus::CutOff => hand_over_if_cut_off(context, term),
        // `Core::handle` judges the lease before any timer fires: the Lease timer
        // only wakes the runtime up at the deadline.
        Stimulus::LeaseLapsed => active_lease_lapsed(context),
        Stimulus::WriteFailed => {
            // Acting goes on while the lease lasts; wake up when it runs out.
            if let Some(deadline) = context.lease_deadline() {
                context.arm_at(TimerId::Lease, deadline, 0);
            }
            Handled
        }
        _ => Super,
    }
}

/// Active past the lease: step down before anything else, re-read every peer.
fn active_lease_lapsed(context: &mut Ctx) -> Outcome<State> {
    let since = context.lease_from.map_or_else(
        || "ever".to_string(),
        |from| format!("{:?}", context.now.since(from)),
    );
    let message = format!(
        "our lease ran out (no record of ours known on disk for {since}): stepping down \
         before anything else, and re-reading the folder"
    );
    context.notify(Level::Warn, message);
    context.stop_acting("the lease ran out");
    context.emit(Effect::Rescan);
    Transition(State::standby())
}

fn active_evaluate(
    context: &mut Ctx,
    term: u64,
    tenure: &mut Tenure,
    complete: bool,
) -> Outcome<State> {
    let (now, timing) = (context.now, context.timing);
    if let Some(claim) = election::highest_claim(&context.peers, now, &timing)
        && election::claim_key(&claim.record) > (term, context.me())
    {
        let message = format!(
            "stepping down: {} claims term {} (ours: {term})",
            claim.record.device_id, claim.record.term
        );
        context.notify(Level::Warn, message);
        return Transition(State::standby());
    }
    if tenure.revalidating && complete {
        tenure.revalidating = false;
        context.notify(Level::Info, "claim re-validated after sleep; acting again");
        context.take_start_hints(term);
        context.write_record();
        context.start_acting(term);
    }
    let requests: Vec<(String, ActivationRequest)> =
        election::activation_requests(&context.peers, now, &timing)
            .map(|(peer, request)| (peer.record.device_id.clone(), request.clone()))
            .collect();
    for (requester, request) in requests {
        if !context.served_requests.insert(request.id.clone()) || request.target == context.me() {
            continue;
        }
        match context.valid_handoff_target(&request.target) {
            Ok(()) => {
                let Some(next) = context.next_term(term) else {
                    continue;
                };
                let message = format!("{requester} asked for {}", request.target);
                context.notify(Level::Info, message);
                return Transition(State::offer(request.target, next, false, None));
            }
            Err(reason) => {
                let message = format!("ignoring {requester}'s request: {reason}");
                context.notify(Level::Warn, message);
            }
        }
    }
    hand_over_if_cut_off(context, term)
}

/// Cut off from Telegram (`witness_cut_off.rs`): hand the role to the best standby that
/// said, since our cut-off, that Telegram answered it; otherwise keep it.
fn hand_over_if_cut_off(context: &mut Ctx, term: u64) -> Outcome<State> {
    let Some(to) = context.cut_off_successor() else {
        return Handled;
    };
    let Some(next) = context.next_term(term) else {
        return Handled;
    };
    let message = format!("this device cannot reach Telegram; {to} can: handing the bot to it");
    context.notify(Level::Warn, message);
    Transition(State::offer(to, next, false, None))
}

fn active_activate(context: &mut Ctx, term: u64, typed: &str, ticket: u64) -> Outcome<State> {
    let target = match context.resolve(typed) {
        Ok(target) => target,
        Err(reason) => {
            context.answer(ticket, failed(&reason));
            return Handled;
        }
    };
    if target == context.me() {
        context.answer(ticket, ActivationOutcome::AlreadyActive { device: target });
        return Handled;
    }
    if let Err(reason) = context.valid_handoff_target(&target) {
        context.answer(ticket, failed(&reason));
        return Handled;
    }
    let Some(next) = context.next_term(term) else {
        context.answer(ticket, failed("no term is left to hand over (see the log)"));
        return Handled;
    };
    context.answer(
        ticket,
        ActivationOutcome::HandingOver { to: target.clone() },
    );
    Transition(State::offer(target, next, false, Some(ticket)))
}

fn active_woke(context: &mut Ctx, tenure: &mut Tenure, slept: Duration) -> Outcome<State> {
    let lease_end = context.lease_deadline().unwrap_or(context.now);
    if context.now >= lease_end {
        let message =
            format!("slept {slept:?}, past the lease: stepping down before anything else");
        context.notify(Level::Warn, message);
        context.stop_acting("slept past the lease");
        // Re-read every peer: the watcher may have missed (or died during) the sleep.
        context.emit(Effect::Rescan);
        return Transition(State::standby());
    }
    tenure.revalidating = true;
    context.stop_acting(&format!("slept {slept:?}: re-validating the claim"));
    context.emit(Effect::Rescan);
    Handled
}

fn active_conflict(context: &mut Ctx, term: u64, tenure: &mut Tenure) -> Outcome<State> {
    let (now, timing) = (context.now, context.timing);
    tenure.conflicts.push_back(now);
    while tenure
        .conflicts
        .front()
        .is_some_and(|at| now.since(*at) > timing.conflict_window)
    {
        tenure.conflicts.pop_front();
    }
    if election::outranked(&context.peers, (term, context.me()), now, &timing) {
        return Transition(State::standby());
    }
    let quiet = context
        .peers
        .values()
        .all(|peer| now.since(peer.changed_at) > timing.liveness_active * 2);
    if tenure.conflicts.len() as u32 >= timing.conflict_count_max
        && quiet
        && !context.peers.is_empty()
    {
        let message = "Telegram keeps reporting another poller and no peer record has changed \
                       lately: this device may be cut off from the sync folder; stepping down";
        context.notify(Level::Warn, message);
        context.hold_off_until = now.plus(timing.liveness_standby);
        return Transition(State::standby());
    }
    let (pause, _) = timing.conflict_backoff.draw(&mut context.rng);
    context.emit(Effect::PauseActing {
        until: now.plus(pause),
    });
    context.emit(Effect::Rescan);
    Handled
}

/// Telegram refused our bot token: a device that cannot poll must not hold the role. Hand
/// it to the best live standby whose token was not refused (a device with a rotated
/// token takes over), or step down; either way hold off contending, doubling from
/// `liveness_active` to `liveness_standby` with each refusal in a row, so that a group
/// whose every token is revoked settles (each device probes rarely) instead of passing
/// the role around, and a device whose token works again takes the role at its next
/// probe.
fn active_polling_refused(
    context: &mut Ctx,
    term: u64,
    since: Moment,
    description: &str,
) -> Outcome<State> {
    let (now, timing) = (context.now, context.timing);
    if now.since(since) > timing.liveness_active {
        context.polling_refusals = 0; // it had worked a good while: a new episode
    }
    context.polling_refusals = context.polling_refusals.saturating_add(1);
    let doublings = context.polling_refusals.saturating_sub(1).min(16);
    let hold_off = timing
        .liveness_active
        .saturating_mul(1 << doublings)
        .min(timing.liveness_standby.max(timing.liveness_active));
    context.hold_off_until = context.hold_off_until.max(now.plus(hold_off));
    // Telegram's words, bounded like a peer's (`record::sanitize`): our record must stay
    // one that peers accept (`record::assert_writable`).
    let kept: String = description.chars().take(REFUSAL_CHARS_MAX).collect();
    context.own.polling_refused = Some(kept);
    context.stop_acting("Telegram refused the bot token");
    let target = election::best_standby(&context.peers, now, &timing)
        .map(|peer| peer.record.device_id.clone());
    let handoff = target.zip(context.next_term(term));
    let whereto = match &handoff {
        Some((to, _)) => format!("handing the role to {to}"),
        None => "stepping down (no standby with a working token)".to_string(),
    };
    let message = format!(
        "Telegram refused this device's bot token ({description}): it cannot poll, so \
         {whereto}; trying again in {}s. Check TELEGRAM_BOT_TOKEN or botToken (BotFather \
         /token shows the current one) and restart baton.",
        hold_off.as_secs()
    );
    context.notify(Level::Error, message);
    match handoff {
        Some((to, next)) => Transition(State::offer(to, next, false, None)),
        None => Transition(State::standby()),
    }
}

impl Ctx {
    /// Makes the start hints (`Ctx::start_hints`) our own progress for `term`, before the
    /// record that announces it is written: the active device's record always carries the
    /// most recent progress, so the next one starts from it.
    pub(super) fn take_start_hints(&mut self, term: u64) {
        let (skip_through, also_handled) = self.start_hints();
        self.own.last_update_id = skip_through;
        self.own.handled_above = also_handled;
        self.own.progress_term = Some(term);
    }

    /// Starts serving for `term`, from our own progress (see `take_start_hints`).
    pub(super) fn start_acting(&mut self, term: u64) {
        self.acting = true;
        self.emit(Effect::StartActing {
            term,
            skip_through: self.own.last_update_id,
            also_handled: self.own.handled_above.clone(),
        });
    }

    /// Stops serving, once: the runtime answers each `StopActing` with `ActingStopped`.
    pub(super) fn stop_acting(&mut self, reason: &str) {
        if std::mem::take(&mut self.acting) {
            self.emit(Effect::StopActing {
                reason: reason.to_string(),
            });
        }
    }

    /// Removes records unchanged past retention (active device only).
    pub(super) fn sweep_old_records(&mut self) {
        let (now, wall_ms, timing) = (self.now, self.wall_ms, self.timing);
        let limit_ms = (timing.record_retention + timing.skew_allowance).as_millis() as u64;
        let old: Vec<String> = self
            .peers
            .values()
            .filter(|peer| !election::is_live(peer, now, &timing) && peer.present)
            .filter(|peer| {
                now.since(peer.changed_at) > timing.record_retention
                    || wall_ms.saturating_sub(peer.record.written_at_ms) > limit_ms
            })
            .map(|peer| peer.stem.clone())
            .collect();
        for stem in old {
            if let Some(peer) = self.peers.remove(&stem) {
                self.emit(Effect::DeleteFile {
                    name: format!("{stem}.json"),
                    reason: format!(
                        "{} not seen for over {:?}",
                        peer.record.device_id, timing.record_retention
                    ),
                });
            }
        }
    }
}
