//! The coordination state machine (statig, sync, sans-IO) and the [`Core`] facade the
//! runtime, the replayer and the simulator drive.
//!
//! Owns: the five states — Registering, Standby, Contending, Active, Yielding — and every
//! role decision. Observations are folded into the context first (see `context.rs`); the
//! machine then reacts to a [`Stimulus`]. Must never: read a clock, a file or OS
//! randomness, or carry out an effect itself.
//!
//! The chart in `statecharts/baton.mmd` is held to this file by `tests/statechart.rs`.

use std::time::Duration;

use statig::prelude::*;

use super::context::{CoreConfig, Ctx, OwnFileNews, PendingRequest, WriteNews};
use super::election::{self, DeviceRow, Health};
use super::io::{ActivationOutcome, Effect, Event, Input, Level, Role, exit_code};
use super::record::{ActivationRequest, DeviceRecord, FOREIGN_CHATS_MAX, Handoff, Status};
use super::timers::{Jittered, Moment, TimerId};

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
    Conflict,
    /// Telegram refused the bot token: this device cannot poll.
    PollingRefused {
        description: String,
    },
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
            Stimulus::Conflict => "conflict".into(),
            Stimulus::PollingRefused { .. } => "polling_refused".into(),
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
    fn is_duplicate(&self) -> bool {
        matches!(
            self,
            Stimulus::Observed {
                own_news: OwnFileNews::Duplicate(_),
                ..
            }
        )
    }

    fn looks_at_world(&self) -> bool {
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

/// The statig machine. All data lives in the context ([`Ctx`]); states carry their term.
#[derive(Default)]
pub struct Protocol;

#[state_machine(
    initial = "State::registering()",
    state(derive(Debug, Clone, PartialEq, Eq)),
    superstate(derive(Debug)),
    after_transition = "Self::after_transition"
)]
impl Protocol {
    #[action]
    fn enter_registering(context: &mut Ctx) {
        if let Some(message) = context.refusal.take() {
            context.exit(exit_code::DUPLICATE_DEVICE, &message);
        }
    }

    /// Watching the folder before taking part; writes nothing.
    #[state(superstate = "device", entry_action = "enter_registering")]
    fn registering(context: &mut Ctx, event: &Stimulus) -> Outcome<State> {
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
                            && context.refused_by.as_deref()
                                == Some(prior.record.install_id.as_str());
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
            Stimulus::Timer(TimerId::Registration) if !context.refused => {
                Transition(State::standby())
            }
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

    #[action]
    fn enter_standby(context: &mut Ctx) {
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
    #[state(superstate = "device", entry_action = "enter_standby")]
    fn standby(context: &mut Ctx, event: &Stimulus) -> Outcome<State> {
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

    #[action]
    fn enter_contending(term: &mut u64, context: &mut Ctx) {
        context.own.status = Status::Contending;
        context.own.term = *term;
        context.write_record();
        context.contend_started = context.now;
        context.cancel(TimerId::FailoverJitter);
        context.cancel(TimerId::LeaderDeadline);
        let at = context.now.plus(context.timing.settle_window);
        context.arm_at(TimerId::Settle, at, 0);
    }

    #[action]
    fn exit_contending(context: &mut Ctx) {
        context.cancel(TimerId::Settle);
    }

    /// Has claimed `term`; waits out the settle window for a higher claim or a live leader.
    #[state(
        superstate = "device",
        entry_action = "enter_contending",
        exit_action = "exit_contending"
    )]
    fn contending(term: &mut u64, context: &mut Ctx, event: &Stimulus) -> Outcome<State> {
        match event {
            stimulus if stimulus.looks_at_world() => match contending_blocker(context, *term) {
                Some(reason) => back_off(context, reason),
                None => Handled,
            },
            Stimulus::Timer(TimerId::Settle) => {
                match settle_blocker(context).or_else(|| contending_blocker(context, *term)) {
                    Some(reason) => back_off(context, reason),
                    None => Transition(State::active(*term)),
                }
            }
            Stimulus::WriteFailed => {
                back_off(context, "our claim could not be written".to_string())
            }
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

    #[action]
    fn enter_active(term: &mut u64, context: &mut Ctx) {
        context.own.status = Status::Active;
        context.own.term = *term;
        context.own.handoff = None;
        context.own.activation_request = None;
        context.revalidating = false;
        context.conflicts.clear();
        // Becoming active again is the probe after a refusal: peers see us as a target
        // again, and a new refusal sets it back within seconds.
        context.own.polling_refused = None;
        context.active_since = context.now;
        context.take_start_hints(*term);
        if let Some(request) = context.pending_request.take() {
            let result = ActivationOutcome::Done {
                device: context.me().to_string(),
            };
            context.answer(request.ticket, result);
            context.cancel(TimerId::RequestTimeout);
        }
        context.write_record();
        context.start_acting(*term);
        context.notify(
            Level::Info,
            format!("{} is now ACTIVE (term {term})", context.me()),
        );
        context.arm(TimerId::Heartbeat, context.timing.heartbeat_active);
        let sweep = context.now.plus(RETENTION_SWEEP_INTERVAL);
        context.arm_at(TimerId::RetentionSweep, sweep, 0);
    }

    #[action]
    fn exit_active(context: &mut Ctx) {
        context.stop_acting("leaving Active");
        context.cancel(TimerId::RetentionSweep);
        context.revalidating = false;
    }

    /// Serves the bot for `term`; heartbeats; hands over on request.
    #[state(
        superstate = "device",
        entry_action = "enter_active",
        exit_action = "exit_active"
    )]
    fn active(term: &mut u64, context: &mut Ctx, event: &Stimulus) -> Outcome<State> {
        match event {
            Stimulus::Observed { complete, .. } if !event.is_duplicate() => {
                active_evaluate(context, *term, *complete)
            }
            Stimulus::Reevaluate | Stimulus::PidGone => active_evaluate(context, *term, false),
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
            Stimulus::Activate { target, ticket } => {
                active_activate(context, *term, target, *ticket)
            }
            Stimulus::Shutdown => {
                let best = election::best_standby(&context.peers, context.now, &context.timing)
                    .map(|peer| peer.record.device_id.clone());
                match best.zip(context.next_term(*term)) {
                    Some((to, next)) => Transition(State::yielding(to, next, true)),
                    None => {
                        // The final record waits for the runtime's last progress.
                        context.stop_acting("stopping; no standby to hand over to");
                        context.resign_when_stopped = true;
                        Handled
                    }
                }
            }
            Stimulus::ActingStopped if context.resign_when_stopped => {
                context.resign("stopped cleanly with no standby to hand over to");
                Handled
            }
            Stimulus::Woke { slept } => active_woke(context, *slept),
            Stimulus::Conflict => active_conflict(context, *term),
            Stimulus::PollingRefused { description } => {
                active_polling_refused(context, *term, description)
            }
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

    #[action]
    fn enter_yielding(
        to: &mut String,
        term: &mut u64,
        shutting_down: &mut bool,
        context: &mut Ctx,
    ) {
        context.own.status = Status::Yielding;
        context.own.handoff = Some(Handoff {
            target: to.clone(),
            term: *term,
        });
        // The record is written once the runtime says polling stopped (ActingStopped), so
        // the successor never polls while we still might.
        context.awaiting_stop = true;
        let at = context.now.plus(context.handoff_wait(*shutting_down));
        context.arm_at(TimerId::HandoffTimeout, at, 0);
        context.notify(Level::Info, format!("handing over to {to} (term {term})"));
    }

    #[action]
    fn exit_yielding(context: &mut Ctx) {
        context.handoff_ticket = None;
        context.cancel(TimerId::HandoffTimeout);
        context.own.handoff = None;
        context.awaiting_stop = false;
    }

    /// Has stopped acting and offers `term` to `to`; takes it back if not taken up.
    #[state(
        superstate = "device",
        entry_action = "enter_yielding",
        exit_action = "exit_yielding"
    )]
    fn yielding(
        to: &mut String,
        term: &mut u64,
        shutting_down: &mut bool,
        context: &mut Ctx,
        event: &Stimulus,
    ) -> Outcome<State> {
        match event {
            Stimulus::ActingStopped if context.awaiting_stop => {
                context.awaiting_stop = false;
                context.write_record();
                // The target's time to answer runs from the handoff's publication: stopping
                // may have taken a while (the child's last acknowledgements).
                let at = context.now.plus(context.handoff_wait(*shutting_down));
                context.arm_at(TimerId::HandoffTimeout, at, 0);
                Handled
            }
            stimulus if stimulus.looks_at_world() => {
                yielding_evaluate(context, to, *term, *shutting_down)
            }
            Stimulus::Timer(TimerId::Heartbeat) => {
                if !context.awaiting_stop {
                    context.write_record();
                }
                context.arm(TimerId::Heartbeat, context.timing.heartbeat_active);
                Handled
            }
            Stimulus::Timer(TimerId::HandoffTimeout) if context.awaiting_stop => {
                // Not published yet (stopping a child can take its grace): the target
                // has not even been asked. The wait runs from publication.
                let at = context.now.plus(context.handoff_wait(*shutting_down));
                context.arm_at(TimerId::HandoffTimeout, at, 0);
                Handled
            }
            Stimulus::Timer(TimerId::HandoffTimeout) => {
                if *shutting_down {
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
                if let Some(ticket) = context.handoff_ticket.take() {
                    context.answer(ticket, failed(&message));
                }
                match context.next_term(*term) {
                    Some(next) => Transition(State::active(next)),
                    None => Transition(State::standby()),
                }
            }
            Stimulus::Shutdown => {
                *shutting_down = true;
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
                context.answer(
                    *ticket,
                    failed(&format!("a handoff to {to} is in progress")),
                );
                Handled
            }
            _ => Super,
        }
    }

    /// Common to every state: backstop rescans, duplicate device ids, bookkeeping.
    #[superstate]
    fn device(context: &mut Ctx, event: &Stimulus) -> Outcome<State> {
        match event {
            Stimulus::Timer(TimerId::Backstop) => {
                context.emit(Effect::Rescan);
                context.arm(TimerId::Backstop, context.timing.backstop_scan);
                Handled
            }
            Stimulus::Observed {
                own_news: OwnFileNews::Duplicate(found),
                ..
            } => {
                context.refuse(found);
                Transition(State::registering())
            }
            Stimulus::Timer(TimerId::RequestTimeout) => {
                context.withdraw_request("the active device did not serve it in time");
                Handled
            }
            Stimulus::Woke { .. } => {
                context.emit(Effect::Rescan);
                Handled
            }
            Stimulus::Timer(TimerId::WriteRetry) => {
                // A Yielding device publishes only once polling stopped: that write
                // comes with ActingStopped, not before.
                if !context.awaiting_stop {
                    context.write_record();
                }
                Handled
            }
            Stimulus::ActingStopped if context.progress_unwritten() => {
                // Stepped down: the next active device must see what we handled.
                context.write_record();
                Handled
            }
            Stimulus::Activate { ticket, .. } => {
                context.answer(
                    *ticket,
                    failed("this device cannot take requests right now"),
                );
                Handled
            }
            _ => Handled,
        }
    }
}

/// How often an active device looks for records past retention.
const RETENTION_SWEEP_INTERVAL: Duration = Duration::from_secs(3600);

fn failed(reason: &str) -> ActivationOutcome {
    ActivationOutcome::Failed {
        reason: reason.to_string(),
    }
}

impl Protocol {
    fn after_transition(&mut self, source: &State, target: &State, context: &mut Ctx) {
        context.emit(Effect::Transition {
            from: source.role(),
            to: target.role(),
            cause: context.cause.clone(),
        });
    }
}

impl State {
    pub fn role(&self) -> Role {
        match self {
            State::Registering {} => Role::Registering,
            State::Standby {} => Role::Standby,
            State::Contending { .. } => Role::Contending,
            State::Active { .. } => Role::Active,
            State::Yielding { .. } => Role::Yielding,
        }
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
            return Transition(State::active(term));
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
            Some(term) => Transition(State::contending(term)),
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
        return Transition(State::contending(term));
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

/// Why a contender must back off, if it must.
fn contending_blocker(context: &Ctx, term: u64) -> Option<String> {
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
        if !to_me && yielder.changed_at >= context.contend_started {
            return Some(format!("{} is handing over", yielder.record.device_id));
        }
    }
    None
}

/// Why a claim whose settle window just ended must not become Active, besides the
/// world: its write never reached the disk, or this process stalled past its lease
/// (the settle window then proved nothing: claims that arrived meanwhile are unread).
fn settle_blocker(context: &mut Ctx) -> Option<String> {
    if context.lease_from < Some(context.contend_started) {
        return Some("our claim is not known to be on disk".to_string());
    }
    if context.lease_lapsed() {
        context.emit(Effect::Rescan);
        return Some(format!(
            "our claim is {:?} old, past our lease: this process was stalled; re-reading \
             the folder",
            context.now.since(context.contend_started)
        ));
    }
    None
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

fn back_off(context: &mut Ctx, reason: String) -> Outcome<State> {
    context.notify(Level::Info, format!("backing off: {reason}"));
    Transition(State::standby())
}

fn active_evaluate(context: &mut Ctx, term: u64, complete: bool) -> Outcome<State> {
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
    if context.revalidating && complete {
        context.revalidating = false;
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
                return Transition(State::yielding(request.target, next, false));
            }
            Err(reason) => {
                let message = format!("ignoring {requester}'s request: {reason}");
                context.notify(Level::Warn, message);
            }
        }
    }
    Handled
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
    context.handoff_ticket = Some(ticket);
    Transition(State::yielding(target, next, false))
}

fn active_woke(context: &mut Ctx, slept: Duration) -> Outcome<State> {
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
    context.revalidating = true;
    context.stop_acting(&format!("slept {slept:?}: re-validating the claim"));
    context.emit(Effect::Rescan);
    Handled
}

fn active_conflict(context: &mut Ctx, term: u64) -> Outcome<State> {
    let (now, timing) = (context.now, context.timing);
    context.conflicts.push_back(now);
    while context
        .conflicts
        .front()
        .is_some_and(|at| now.since(*at) > timing.conflict_window)
    {
        context.conflicts.pop_front();
    }
    if election::outranked(&context.peers, (term, context.me()), now, &timing) {
        return Transition(State::standby());
    }
    let quiet = context
        .peers
        .values()
        .all(|peer| now.since(peer.changed_at) > timing.liveness_active * 2);
    if context.conflicts.len() as u32 >= timing.conflict_count_max
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
fn active_polling_refused(context: &mut Ctx, term: u64, description: &str) -> Outcome<State> {
    let (now, timing) = (context.now, context.timing);
    if now.since(context.active_since) > timing.liveness_active {
        context.polling_refusals = 0; // it had worked a good while: a new episode
    }
    context.polling_refusals = context.polling_refusals.saturating_add(1);
    let doublings = context.polling_refusals.saturating_sub(1).min(16);
    let hold_off = timing
        .liveness_active
        .saturating_mul(1 << doublings)
        .min(timing.liveness_standby.max(timing.liveness_active));
    context.hold_off_until = context.hold_off_until.max(now.plus(hold_off));
    context.own.polling_refused = Some(description.to_string());
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
        Some((to, next)) => Transition(State::yielding(to, next, false)),
        None => Transition(State::standby()),
    }
}

fn yielding_evaluate(
    context: &mut Ctx,
    to: &str,
    term: u64,
    shutting_down: bool,
) -> Outcome<State> {
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
        if let Some(ticket) = context.handoff_ticket.take() {
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
    /// Takes over the record found at our file name when we started (same install, or
    /// nobody wrote it while we watched): our seq continues from it, and we know its term.
    /// The prior record is kept afterwards: a later copy of it is recognised as old
    /// (`ingest_own`), not as a second writer. Adopting again changes nothing.
    fn adopt_prior_record(&mut self) {
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

    /// Makes the start hints (`Ctx::start_hints`) our own progress for `term`, before the
    /// record that announces it is written: the active device's record always carries the
    /// most recent progress, so the next one starts from it.
    fn take_start_hints(&mut self, term: u64) {
        let (skip_through, also_handled) = self.start_hints();
        self.own.last_update_id = skip_through;
        self.own.handled_above = also_handled;
        self.own.progress_term = Some(term);
    }

    /// Starts serving for `term`, from our own progress (see `take_start_hints`).
    fn start_acting(&mut self, term: u64) {
        self.acting = true;
        self.emit(Effect::StartActing {
            term,
            skip_through: self.own.last_update_id,
            also_handled: self.own.handled_above.clone(),
        });
    }

    /// Stops serving, once: the runtime answers each `StopActing` with `ActingStopped`.
    fn stop_acting(&mut self, reason: &str) {
        if std::mem::take(&mut self.acting) {
            self.emit(Effect::StopActing {
                reason: reason.to_string(),
            });
        }
    }

    pub(crate) fn exit(&mut self, code: i32, reason: &str) {
        self.emit(Effect::Exit {
            code,
            reason: reason.to_string(),
        });
    }

    /// How long a handoff published now waits for its target's claim.
    fn handoff_wait(&self, shutting_down: bool) -> std::time::Duration {
        if shutting_down {
            self.timing.resign_wait.min(self.timing.handoff_timeout)
        } else {
            self.timing.handoff_timeout
        }
    }

    /// Writes a final `stopped` record (dropping any claim) and asks to exit.
    fn resign(&mut self, reason: &str) {
        self.own.status = Status::Stopped;
        self.own.handoff = None;
        self.write_record();
        self.exit(exit_code::OK, reason);
    }

    /// Stops taking part: no more writes; the exit is asked for on entering Registering,
    /// after any `StopActing` of the state being left.
    fn refuse(&mut self, found: &DeviceRecord) {
        self.refused = true;
        if found.install_id == self.identity.install_id {
            let message = format!(
                "another baton process serves this directory: {} (pid {} on host {:?}) \
                 writes this device's record. Only one may run per directory; stop the \
                 other one. Not taking part.",
                found.device_id, found.pid, found.hostname
            );
            self.notify(Level::Error, message.clone());
            self.refusal = Some(message);
            return;
        }
        let message = format!(
            "another live process writes this device's record: {} (pid {} on host {:?}, \
             install {}). This Mac looks cloned or restored from a backup. Give one of them \
             its own name with --device-name or DEVICE_NAME. Not taking part.",
            found.device_id, found.pid, found.hostname, found.install_id
        );
        self.notify(Level::Error, message.clone());
        self.refusal = Some(message);
        // A restart (launchd's, every 10 s) would watch the twin's record again and, if
        // the twin is a quiet standby, take it over: two writers, and the twin refuses in
        // turn. Remembered, the next start refuses at once while that install holds it.
        self.emit(Effect::RememberRefusal {
            install_id: found.install_id.clone(),
        });
    }

    pub(crate) fn answer(&mut self, ticket: u64, result: ActivationOutcome) {
        self.emit(Effect::ActivationResult { ticket, result });
    }

    fn no_live_peer(&self) -> bool {
        !self
            .peers
            .values()
            .any(|peer| election::is_live(peer, self.now, &self.timing))
    }

    /// Whether someone asked for this device to become active.
    fn asked_to_lead(&self) -> bool {
        let me = self.me();
        self.pending_request
            .as_ref()
            .is_some_and(|r| r.target == me)
            || election::activation_requests(&self.peers, self.now, &self.timing)
                .any(|(_, request)| request.target == me)
    }

    fn complete_request_if_served(&mut self) {
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

    fn withdraw_request(&mut self, reason: &str) {
        if let Some(request) = self.pending_request.take() {
            self.own.activation_request = None;
            self.write_record();
            let reason = format!("asking for {} failed: {reason}", request.target);
            self.answer(request.ticket, failed(&reason));
        }
    }

    /// True when `record`'s pid can be probed from here: written on this very boot of
    /// this machine (a hostname alone is shared by clones and namesake Macs, whose pids
    /// mean nothing here).
    fn same_boot(&self, record: &DeviceRecord) -> bool {
        !self.identity.boot_id.is_empty()
            && record.boot_id == self.identity.boot_id
            && record.hostname == self.identity.hostname
            && record.pid != 0
    }

    fn arm_pid_probe(&mut self) {
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

    fn probe_leader_pid(&mut self) {
        let probe = election::leader(&self.peers, self.now, &self.timing)
            .filter(|leader| self.same_boot(&leader.record))
            .map(|leader| (leader.stem.clone(), leader.record.pid));
        if let Some((stem, pid)) = probe {
            self.emit(Effect::ProbePid { stem, pid });
            let again = self.now.plus(self.timing.heartbeat_active.base);
            self.arm_at(TimerId::PidProbe, again, 0);
        }
    }

    /// Removes records unchanged past retention (active device only).
    fn sweep_old_records(&mut self) {
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

    /// The device table as this device sees it (itself included).
    pub fn table(&self) -> Vec<DeviceRow> {
        let mut entries: Vec<(DeviceRecord, Duration, bool)> = self
            .peers
            .values()
            .map(|peer| (peer.record.clone(), self.now.since(peer.changed_at), false))
            .collect();
        if self.last_write.is_some() {
            let age = self.now.since(self.last_write.unwrap_or(self.now));
            entries.push((self.own.clone(), age, true));
        }
        election::device_table(entries, &self.timing)
    }

    fn resolve(&self, typed: &str) -> Result<String, String> {
        let typed = typed.trim();
        if typed.is_empty() {
            return Ok(self.me().to_string());
        }
        election::resolve_target(&self.table(), typed).map_err(|error| error.to_string())
    }

    /// A handoff may go only to a live standby.
    fn valid_handoff_target(&self, target: &str) -> Result<(), String> {
        let Some(peer) = election::find_by_id(&self.peers, target) else {
            return Err(format!("{target} is not a known device"));
        };
        let live = election::is_live(peer, self.now, &self.timing);
        let row_health = if live { Health::Ok } else { Health::Stale };
        match (peer.record.status, row_health) {
            (_, Health::Stale) | (Status::Stopped, _) => Err(format!(
                "{target} is stale (last seen {}s ago); it must be running to take over",
                self.now.since(peer.changed_at).as_secs()
            )),
            (Status::Standby, _) if peer.record.polling_refused.is_some() => Err(format!(
                "{target} cannot poll: Telegram refused its bot token ({}); fix its token \
                 and restart it first",
                peer.record.polling_refused.as_deref().unwrap_or_default()
            )),
            (Status::Standby, _) if !peer.record.is_newer_schema() => Ok(()),
            (status, _) => Err(format!(
                "{target} is {} and cannot take over now",
                status.as_str()
            )),
        }
    }
}

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

    fn ingest_write_answer(&mut self, event: &Event) -> WriteNews {
        match event {
            Event::RecordWritten { seq } => self.ctx.write_answered(*seq, Ok(())),
            Event::RecordWriteFailed { seq, reason } => self.ctx.write_answered(*seq, Err(reason)),
            _ => WriteNews::Nothing,
        }
    }

    /// Folds an event into the context; returns what the machine must react to.
    fn ingest(&mut self, event: Event) -> Option<Stimulus> {
        let ctx = &mut self.ctx;
        match event {
            Event::Start => Some(Stimulus::Start),
            Event::Tick
            | Event::Woke { .. }
            | Event::RecordWritten { .. }
            | Event::RecordWriteFailed { .. } => None,
            Event::Scanned { files } => {
                let own_news = ctx.ingest_listing(&files);
                Some(Stimulus::Observed {
                    complete: true,
                    own_news,
                })
            }
            Event::FileChanged { file } => {
                let own_news = ctx.ingest_file(&file);
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
            Event::ForeignChat { chat_id } => {
                ctx.note_foreign_chat(chat_id);
                None
            }
            Event::Witnessed {
                pending_update_count,
            } => ctx
                .witness_answered(pending_update_count)
                .then_some(Stimulus::Witnessed),
        }
    }

    fn dispatch(&mut self, stimulus: Stimulus) {
        let mut stimulus = stimulus;
        for _ in 0..REEVALUATIONS_MAX {
            // Transitions name the stimulus the state handled (`reevaluate` after a
            // transition: the new state looked at the world on entry).
            self.ctx.cause = stimulus.name();
            let before = self.machine.state().clone();
            self.machine.handle_with_context(&stimulus, &mut self.ctx);
            if *self.machine.state() == before {
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

    /// The earliest pending timer: call [`Core::handle`] with [`Event::Tick`] then.
    pub fn next_timeout(&self) -> Option<Moment> {
        self.ctx.timers.next().map(|(at, _)| at)
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

    pub fn timing(&self) -> &super::timers::Timing {
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
        self.role() == Role::Active && !self.ctx.revalidating
    }
}

impl Ctx {
    /// After a sleep, peers' records look old only because we could not see them change:
    /// presume every peer that was live when we fell asleep changed at wake-up.
    fn presume_peers_alive_after_sleep(&mut self, slept: Duration) {
        let (now, timing) = (self.now, self.timing);
        let fell_asleep = now.minus(slept);
        for peer in self.peers.values_mut() {
            if election::is_live(peer, fell_asleep, &timing) {
                peer.changed_at = peer.changed_at.max(now);
            }
        }
    }

    /// Registering, with a record at our own name written on this very boot of this
    /// machine by another process: ask whether that process still runs.
    fn probe_prior_writer(&mut self) {
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
    fn prior_writer_probed(&mut self, pid: u32, alive: bool) {
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

    fn pid_probed(&mut self, stem: &str, pid: u32, alive: bool) -> Option<Stimulus> {
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

    fn note_foreign_chat(&mut self, chat_id: i64) {
        if !self.own.foreign_chats.contains(&chat_id)
            && self.own.foreign_chats.len() < FOREIGN_CHATS_MAX
        {
            self.own.foreign_chats.push(chat_id);
        }
    }
}

/// Exposed for the simulator and tests: a jittered interval's mean.
pub fn mean(interval: Jittered) -> Duration {
    interval.mean()
}
