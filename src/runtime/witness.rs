//! The runtime's side of Telegram as a second witness: [`Effect::AskWitness`] carried
//! out through the Telegram adapter's [`WitnessAsker`], its answer fed back as
//! [`Event::Witnessed`].
//!
//! Owns: turning the witness on (only when Telegram is configured: without a token the
//! core's rules are exactly those without a witness) with its rules scaled as the
//! timing is. Must never: block the run loop, or decide anything from the answer (the
//! core does).
//!
//! [`Effect::AskWitness`]: crate::core::Effect::AskWitness
//! [`WitnessAsker`]: crate::adapters::telegram::WitnessAsker

use crate::core::witness::WitnessRules;
use crate::core::{Event, Timing};

use super::Runtime;

impl Runtime {
    /// Turns the witness on when this device has Telegram (call before the first input).
    pub(super) fn enable_witness(&mut self) {
        if !self.witness.enabled() {
            return;
        }
        let timing = *self.core.timing();
        let factor =
            timing.liveness_active.as_secs_f64() / Timing::default().liveness_active.as_secs_f64();
        self.core
            .enable_witness(WitnessRules::default().scaled(factor));
    }

    /// Asks Telegram how many updates wait, off the run loop. Without a bot to ask the
    /// answer is "unreachable" at once (the core never asks then: belt and braces).
    pub(super) fn ask_witness(&mut self) {
        if !self.witness.ask(&self.span) {
            self.pending.push_back(Event::Witnessed {
                pending_update_count: None,
            });
        }
    }

    /// Telegram's answer (`None`: it could not be asked): fed to the core.
    pub(super) async fn on_witness_answer(&mut self, answer: Option<u64>) {
        tracing::debug!(parent: &self.span, pending_update_count = ?answer, "Telegram witnessed");
        self.feed(Event::Witnessed {
            pending_update_count: answer,
        })
        .await;
    }
}
