//! Announced sleep: what a device does when the OS says "about to sleep, you have this
//! much grace" ([`crate::io::Event::SleepAnnounced`]).
//!
//! Owns: the plan of an active device (hand over to the best live standby exactly like a
//! resignation, or keep the role when there is none, and say so), the announced sleep's
//! deadline (`Ctx::sleep_until`), and the one word the runtime needs back,
//! [`crate::io::Effect::AllowSleep`]: "done with this sleep, let the machine sleep".
//! The machine (`machine.rs`) maps the plan to its states; this module names none of
//! them.
//!
//! The handoff is the resignation's, make-before-break: the device stops acting, the
//! handoff is published only once polling stopped (Yielding), and the target's claim is
//! waited for. Unlike a resignation the device stays running and, once the claim is
//! seen, is a Standby (so after the wake it re-validates like any standby). The sleep is
//! allowed as soon as the claim is seen; when the grace runs out first, the OS (and the
//! power adapter) lets the machine sleep anyway with the handoff published, and the
//! target takes it up while we sleep. The wake itself is still the clocks' business
//! (`Event::Woke`): a machine may sleep unannounced, or the announcement may come late.
//!
//! Must never: delay anything (the core keeps no timer for the grace: the adapter owns
//! the deadline), or read a clock.

use std::time::Duration;

use crate::context::Ctx;
use crate::election;
use crate::io::{ActivationOutcome, Effect, Level};

/// What an active device does with an announced sleep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ActiveSleepPlan {
    /// Hand the role to `to` at `term`, as a resignation does, and stay a standby.
    HandOver { to: String, term: u64 },
    /// No live standby (or no term left): keep the role; the sleep is allowed at once.
    KeepRole,
}

impl Ctx {
    /// Notes an announced sleep with `grace` to spend from now. No claim is made before
    /// the grace ends: a claim that sleeps blocks every peer until it lapses.
    pub(crate) fn note_sleep_announced(&mut self, grace: Duration) {
        let until = self.now.plus(grace);
        self.sleep_until = Some(until);
        self.hold_off_until = self.hold_off_until.max(until);
    }

    /// Done with the announced sleep: tells the runtime it may let the machine sleep
    /// (once per announcement; nothing when none is pending). Past the grace the machine
    /// has slept already: that is only said.
    pub(crate) fn allow_sleep(&mut self, reason: &str) {
        let Some(until) = self.sleep_until.take() else {
            return;
        };
        if self.now <= until {
            self.emit(Effect::AllowSleep {
                reason: reason.to_string(),
            });
        } else {
            let message = format!(
                "{reason}, after the sleep's grace ran out: the machine slept with the \
                 handoff published"
            );
            self.notify(Level::Info, message);
        }
    }
}

/// An active device at `term` heard that the machine sleeps within `grace`: hand over
/// to the best live standby, or keep the role and say why.
pub(crate) fn plan_for_active(context: &mut Ctx, term: u64, grace: Duration) -> ActiveSleepPlan {
    context.note_sleep_announced(grace);
    let best = best_standby_elsewhere(context);
    match best.zip(context.next_term(term)) {
        Some((to, next)) => {
            let message = format!(
                "this machine is about to sleep ({grace:?} of grace): handing over to {to}"
            );
            context.notify(Level::Info, message);
            ActiveSleepPlan::HandOver { to, term: next }
        }
        None => {
            let message = "this machine is about to sleep and no standby is live: keeping \
                           the role (after the wake this device re-validates its claim; if \
                           it sleeps long, another device takes over when the lease runs out)";
            context.notify(Level::Warn, message);
            context.allow_sleep("no standby to hand over to");
            ActiveSleepPlan::KeepRole
        }
    }
}

/// The best live standby, preferring one on another machine: a standby on this very
/// machine (same host name and boot) sleeps with us, so it is taken only when it is the
/// only one (it then fails over by lease after the wake, as keeping the role would).
fn best_standby_elsewhere(context: &Ctx) -> Option<String> {
    let (now, timing) = (context.now, &context.timing);
    let identity = &context.identity;
    let elsewhere: election::Peers = context
        .peers
        .iter()
        .filter(|(_, peer)| {
            identity.boot_id.is_empty()
                || peer.record.boot_id != identity.boot_id
                || peer.record.hostname != identity.hostname
        })
        .map(|(stem, peer)| (stem.clone(), peer.clone()))
        .collect();
    election::best_standby(&elsewhere, now, timing)
        .or_else(|| election::best_standby(&context.peers, now, timing))
        .map(|peer| peer.record.device_id.clone())
}

/// Woke while still Yielding for a sleep (the grace ran out before the target's claim
/// was seen): said, the folder re-read, any asker told; the machine then makes it a
/// standby. The role is never taken back after a sleep. The target may have taken it
/// meanwhile, or may be taking it right now (it slept too, or restarted): a take-back
/// racing its claim would make two devices act. As a standby, this device follows
/// whoever leads, or joins an ordinary election. `asker`: who asked for the handoff.
pub(crate) fn woke_while_handing_over(context: &mut Ctx, to: &str, asker: Option<u64>) {
    context.emit(Effect::Rescan);
    if let Some(ticket) = asker {
        let reason = format!("this device slept while handing over to {to}; see /devices");
        context.answer(ticket, ActivationOutcome::Failed { reason });
    }
    let message = format!(
        "woke while handing over to {to}: a standby now, re-reading the folder (the role \
         is not taken back after a sleep)"
    );
    context.notify(Level::Info, message);
}

/// A device with no role to hand over (Registering, Standby) heard of a sleep: noted,
/// and the sleep allowed at once.
pub(crate) fn note_without_role(context: &mut Ctx, grace: Duration) {
    context.note_sleep_announced(grace);
    context.notify(
        Level::Info,
        format!(
            "this machine is about to sleep ({grace:?} of grace); not active: nothing to hand over"
        ),
    );
    context.allow_sleep("not active");
}
