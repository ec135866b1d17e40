//! The runtime's side of Telegram as a second witness: [`Effect::AskWitness`] carried
//! out as a `getWebhookInfo` call, its answer fed back as [`Event::Witnessed`].
//!
//! Owns: turning the witness on (only when Telegram is configured: without a token the
//! core's rules are exactly those without a witness), the call itself, off the run loop
//! (a spawned task, bounded by [`ASK_TIMEOUT`], at most one at a time), and the channel
//! its answer comes back on. Must never: block the run loop, touch the poller (the
//! question goes through the bot client's own request, not the getUpdates loop), or log
//! the token (errors come scrubbed from the Telegram adapter).
//!
//! [`Effect::AskWitness`]: crate::core::Effect::AskWitness

use std::time::Duration;

use tokio::sync::mpsc;

use crate::core::witness::WitnessRules;
use crate::core::{Core, Event, Timing};
use crate::serving::Serving;

use super::Runtime;

/// A question to Telegram that takes longer than this counts as unreachable.
pub(super) const ASK_TIMEOUT: Duration = Duration::from_secs(5);

/// Where answers come back: one at a time, so a capacity of 4 never fills.
pub(super) struct WitnessLine {
    pub(super) tx: mpsc::Sender<Option<u64>>,
    pub(super) rx: mpsc::Receiver<Option<u64>>,
    asking: bool,
}

impl WitnessLine {
    pub(super) fn new() -> Self {
        let (tx, rx) = mpsc::channel(4);
        WitnessLine {
            tx,
            rx,
            asking: false,
        }
    }
}

/// Turns the witness on when this device has Telegram, with the rules scaled as the
/// timing is (`--time-scale`).
pub(super) fn enable(core: &mut Core, serving: &Serving, timing: &Timing) {
    if serving.witness_bot().is_none() {
        return;
    }
    let factor =
        timing.liveness_active.as_secs_f64() / Timing::default().liveness_active.as_secs_f64();
    core.enable_witness(WitnessRules::default().scaled(factor));
}

impl Runtime {
    /// Asks Telegram how many updates wait, off the run loop; the answer (or `None`
    /// when Telegram could not be reached in time) comes back through
    /// [`Runtime::on_witness_answer`]. A question while one is outstanding is dropped:
    /// the core counts an unanswered one as unreachable.
    pub(super) fn ask_witness(&mut self) {
        let Some(bot) = self.serving.witness_bot() else {
            self.pending.push_back(Event::Witnessed {
                pending_update_count: None,
            });
            return;
        };
        if self.witness.asking {
            return;
        }
        self.witness.asking = true;
        let tx = self.witness.tx.clone();
        let span = self.span.clone();
        tokio::spawn(async move {
            let answer = match tokio::time::timeout(ASK_TIMEOUT, bot.pending_update_count()).await {
                Ok(Ok(Some(count))) => Some(count),
                Ok(Ok(None)) => {
                    tracing::debug!(parent: &span, "a webhook is set: Telegram's count says nothing of the poller");
                    None
                }
                Ok(Err(error)) => {
                    tracing::debug!(parent: &span, %error, "Telegram could not be asked how many updates wait");
                    None
                }
                Err(_) => {
                    tracing::debug!(parent: &span, "getWebhookInfo took longer than {ASK_TIMEOUT:?}");
                    None
                }
            };
            // The run loop may have ended meanwhile: nobody to tell.
            let _ = tx.send(answer).await;
        });
    }

    /// Telegram's answer: fed to the core.
    pub(super) async fn on_witness_answer(&mut self, answer: Option<u64>) {
        self.witness.asking = false;
        tracing::debug!(parent: &self.span, pending_update_count = ?answer, "Telegram witnessed");
        self.feed(Event::Witnessed {
            pending_update_count: answer,
        })
        .await;
    }
}
