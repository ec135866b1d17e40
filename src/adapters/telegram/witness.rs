//! A standby's question to Telegram for the core's second witness: `getWebhookInfo`'s
//! `pending_update_count`, asked off the run loop.
//!
//! Owns: the asking task (spawned per question, bounded by [`ASK_TIMEOUT`], at most one
//! at a time) and the channel its answer comes back on. Must never: block the caller,
//! touch the poller (the question is a request of its own, not the getUpdates loop), or
//! log the token (errors come scrubbed from [`TelegramBot`]).

use std::time::Duration;

use tokio::sync::mpsc;

use super::client::TelegramBot;

/// A question to Telegram that takes longer than this counts as unreachable.
pub const ASK_TIMEOUT: Duration = Duration::from_secs(5);

/// Asks Telegram how many updates wait; `None` answers mean it could not be asked.
pub struct WitnessAsker {
    bot: Option<TelegramBot>,
    tx: mpsc::Sender<Option<u64>>,
    rx: mpsc::Receiver<Option<u64>>,
    asking: bool,
}

impl WitnessAsker {
    /// `bot` is `None` without Telegram (coordination only): nothing is ever asked.
    pub fn new(bot: Option<TelegramBot>) -> Self {
        // One question at a time: a capacity of 4 never fills.
        let (tx, rx) = mpsc::channel(4);
        WitnessAsker {
            bot,
            tx,
            rx,
            asking: false,
        }
    }

    /// Whether there is a bot to ask.
    pub fn enabled(&self) -> bool {
        self.bot.is_some()
    }

    /// Sends the question unless one is outstanding; the answer arrives through
    /// [`WitnessAsker::answer`]. Returns false when there is no bot to ask.
    pub fn ask(&mut self, span: &tracing::Span) -> bool {
        let Some(bot) = self.bot.clone() else {
            return false;
        };
        if self.asking {
            return true;
        }
        self.asking = true;
        let (tx, span) = (self.tx.clone(), span.clone());
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
        true
    }

    /// The next answer (cancel-safe: for `tokio::select!`).
    pub async fn answer(&mut self) -> Option<Option<u64>> {
        let answer = self.rx.recv().await;
        self.asking = false;
        answer
    }
}
