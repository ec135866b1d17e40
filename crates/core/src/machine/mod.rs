//! The coordination state machine (statig, sync, sans-IO) and the [`Core`] facade the
//! runtime, the replayer and the simulator drive.
//!
//! Owns: the five states — Registering, Standby, Contending, Active, Yielding — each
//! with the facts that only it has (`Contending { term, started_at }`,
//! `Active { term, tenure }`, `Yielding { to, term, shutting_down, asker, awaiting_stop }`),
//! and every role decision. This file holds the statig table: each state's handler here
//! only routes to its module (`registering.rs`, `standby.rs`, `contending.rs`,
//! `active.rs`, `yielding.rs`); the `device` superstate, common to all, stays here. The
//! actions every state shares are in `actions.rs`; the facade in `facade.rs`.
//! Observations are folded into the context first (see `context/`); the machine then
//! reacts to a [`Stimulus`]. Must never: read a clock, a file or OS randomness, or carry
//! out an effect itself.
//!
//! The chart in `statecharts/baton.mmd` is held to this machine by `tests/statechart.rs`.

use std::time::Duration;

use statig::prelude::*;

use super::context::{Ctx, OwnFileNews};
use super::io::{ActivationOutcome, Effect, Role};
use super::timers::{Jittered, Moment, TimerId};

mod actions;
mod active;
mod contending;
mod facade;
mod registering;
mod standby;
mod stimulus;
mod yielding;

pub use active::Tenure;
pub use facade::Core;
pub use stimulus::Stimulus;

/// The statig machine. What every state shares lives in the context ([`Ctx`]); what
/// only one state knows lives in that state, so it cannot outlive it.
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
        registering::enter(context);
    }

    /// Watching the folder before taking part; writes nothing.
    #[state(superstate = "device", entry_action = "enter_registering")]
    fn registering(context: &mut Ctx, event: &Stimulus) -> Outcome<State> {
        registering::handle(context, event)
    }

    #[action]
    fn enter_standby(context: &mut Ctx) {
        standby::enter(context);
    }

    /// Alive, not acting; watches the leader and contends when it is gone.
    #[state(superstate = "device", entry_action = "enter_standby")]
    fn standby(context: &mut Ctx, event: &Stimulus) -> Outcome<State> {
        standby::handle(context, event)
    }

    #[action]
    fn enter_contending(term: &mut u64, context: &mut Ctx) {
        contending::enter(*term, context);
    }

    #[action]
    fn exit_contending(context: &mut Ctx) {
        context.cancel(TimerId::Settle);
    }

    /// Has claimed `term` (written at `started_at`); waits out the settle window for a
    /// higher claim or a live leader.
    #[state(
        superstate = "device",
        entry_action = "enter_contending",
        exit_action = "exit_contending"
    )]
    fn contending(
        term: &mut u64,
        started_at: &mut Moment,
        context: &mut Ctx,
        event: &Stimulus,
    ) -> Outcome<State> {
        contending::handle(*term, *started_at, context, event)
    }

    #[action]
    fn enter_active(term: &mut u64, context: &mut Ctx) {
        active::enter(*term, context);
    }

    #[action]
    fn exit_active(context: &mut Ctx) {
        active::exit(context);
    }

    /// Serves the bot for `term`; heartbeats; hands over on request.
    #[state(
        superstate = "device",
        entry_action = "enter_active",
        exit_action = "exit_active"
    )]
    fn active(
        term: &mut u64,
        tenure: &mut Tenure,
        context: &mut Ctx,
        event: &Stimulus,
    ) -> Outcome<State> {
        active::handle(*term, tenure, context, event)
    }

    // statig hands a state's fields over as `&mut` of their own type.
    #[allow(clippy::ptr_arg)]
    #[action]
    fn enter_yielding(
        to: &mut String,
        term: &mut u64,
        shutting_down: &mut bool,
        context: &mut Ctx,
    ) {
        yielding::enter(to, *term, *shutting_down, context);
    }

    #[action]
    fn exit_yielding(context: &mut Ctx) {
        yielding::exit(context);
    }

    /// Has stopped acting and offers `term` to `to`; takes it back if not taken up.
    /// `asker`: who asked for this handoff, to be told how it ended. `awaiting_stop`:
    /// the handoff is published only once the runtime says polling stopped.
    #[allow(clippy::ptr_arg)]
    #[state(
        superstate = "device",
        entry_action = "enter_yielding",
        exit_action = "exit_yielding"
    )]
    fn yielding(
        to: &mut String,
        term: &mut u64,
        shutting_down: &mut bool,
        asker: &mut Option<u64>,
        awaiting_stop: &mut bool,
        context: &mut Ctx,
        event: &Stimulus,
    ) -> Outcome<State> {
        let mut handover = yielding::Handover {
            to: to.as_str(),
            term: *term,
            shutting_down,
            asker,
            awaiting_stop,
        };
        yielding::handle(&mut handover, context, event)
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
                // (A Yielding device that has not published yet handles this itself.)
                context.write_record();
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
    /// The state of a term taken up now (a settled claim, a handoff to us, a role taken back).
    fn taken_up(term: u64, context: &Ctx) -> State {
        State::active(term, Tenure::starting(context.now))
    }

    /// The state of a handoff of `term` to `to`, offered now; it waits for polling to stop.
    fn offer(to: String, term: u64, shutting_down: bool, asker: Option<u64>) -> State {
        State::yielding(to, term, shutting_down, asker, true)
    }

    /// The state of a claim on `term`, written now (by the entry action).
    fn claim(term: u64, context: &Ctx) -> State {
        State::contending(term, context.now)
    }

    pub fn role(&self) -> Role {
        match self {
            State::Registering {} => Role::Registering,
            State::Standby {} => Role::Standby,
            State::Contending { .. } => Role::Contending,
            State::Active { .. } => Role::Active,
            State::Yielding { .. } => Role::Yielding,
        }
    }

    /// The situation the world is judged by: the role, the term, and for a handoff its
    /// target and whether we are stopping. When one of these changes (a transition, or
    /// a handoff turned into a stop), the machine looks at the world again; a state's
    /// own bookkeeping (a re-validation under way, conflicts counted, a handoff waiting
    /// for the stop) is no new situation.
    pub(crate) fn situation(&self) -> (Role, u64, Option<&str>, bool) {
        match self {
            State::Registering {} | State::Standby {} => (self.role(), 0, None, false),
            State::Contending { term, .. } | State::Active { term, .. } => {
                (self.role(), *term, None, false)
            }
            State::Yielding {
                to,
                term,
                shutting_down,
                ..
            } => (self.role(), *term, Some(to.as_str()), *shutting_down),
        }
    }

    /// Whether this is a Yielding device whose handoff waits for polling to stop: its
    /// record is not written before (the successor must never poll while we might).
    pub(crate) fn holds_own_writes(&self) -> bool {
        matches!(
            self,
            State::Yielding {
                awaiting_stop: true,
                ..
            }
        )
    }
}

/// Exposed for the simulator and tests: a jittered interval's mean.
pub fn mean(interval: Jittered) -> Duration {
    interval.mean()
}
