//! Baton's own messages to the chat, rate-limited.
//!
//! Owns: a bounded queue of outgoing messages and the task that sends them, at most one
//! a second per chat, honouring `RetryAfter`, and trying again after a 5xx (1, 2, 4 s)
//! before giving up. Must never: block the run loop (a full queue drops the message and
//! says so), or log the token.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::client::TelegramBot;
use super::error::TelegramError;

/// One message for the replier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingMessage {
    pub chat_id: i64,
    pub thread_id: Option<i64>,
    /// Telegram HTML; escape every foreign value with `escape_html`.
    pub html: String,
}

#[derive(Debug, Clone)]
pub struct ReplierSettings {
    /// Least time between two messages to one chat (Telegram: about 1 per second).
    pub per_chat_interval: Duration,
    /// Sends of one message at most when Telegram answers `RetryAfter` or a 5xx.
    pub attempts_max: u32,
    /// The wait after a first 5xx; it doubles with each one after (1 s, 2 s, 4 s: a
    /// message gives up after 7 s of server errors with the defaults).
    pub server_error_backoff: Duration,
    /// Messages waiting at most; more are dropped with a warning.
    pub queue_capacity: usize,
}

impl Default for ReplierSettings {
    fn default() -> Self {
        ReplierSettings {
            per_chat_interval: Duration::from_secs(1),
            attempts_max: 4,
            server_error_backoff: Duration::from_secs(1),
            queue_capacity: 64,
        }
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("reply dropped: the replier queue is full or stopped")]
pub struct ReplyDropped;

/// Sends replies in order through a per-chat rate limiter. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Replier {
    queue: mpsc::Sender<OutgoingMessage>,
}

impl Replier {
    /// Starts the sending task; it ends when every `Replier` clone is dropped.
    pub fn spawn(bot: TelegramBot, settings: ReplierSettings) -> (Replier, JoinHandle<()>) {
        let (queue, receiver) = mpsc::channel(settings.queue_capacity.max(1));
        let task = tokio::spawn(tracing::Instrument::in_current_span(send_replies(
            bot, settings, receiver,
        )));
        (Replier { queue }, task)
    }

    /// Queues a message without waiting; never blocks the runtime's loop.
    pub fn send(&self, message: OutgoingMessage) -> Result<(), ReplyDropped> {
        self.queue.try_send(message).map_err(|_| {
            tracing::warn!("reply dropped: the Telegram reply queue is full");
            ReplyDropped
        })
    }
}

async fn send_replies(
    bot: TelegramBot,
    settings: ReplierSettings,
    mut receiver: mpsc::Receiver<OutgoingMessage>,
) {
    let mut next_allowed: HashMap<i64, tokio::time::Instant> = HashMap::new();
    while let Some(message) = receiver.recv().await {
        for attempt in 1..=settings.attempts_max.max(1) {
            if let Some(at) = next_allowed.get(&message.chat_id) {
                tokio::time::sleep_until(*at).await;
            }
            let result = bot
                .send_html(message.chat_id, message.thread_id, &message.html)
                .await;
            let now = tokio::time::Instant::now();
            next_allowed.insert(message.chat_id, now + settings.per_chat_interval);
            match result {
                Ok(()) => break,
                Err(TelegramError::RetryAfter(wait)) if attempt < settings.attempts_max => {
                    tracing::warn!(
                        ?wait,
                        attempt,
                        "Telegram flood control on sendMessage; waiting"
                    );
                    next_allowed.insert(message.chat_id, now + wait);
                }
                Err(error @ TelegramError::Server { .. }) if attempt < settings.attempts_max => {
                    let doublings = (attempt - 1).min(8);
                    let wait = settings.server_error_backoff.saturating_mul(1 << doublings);
                    tracing::warn!(%error, ?wait, attempt, "reply not sent yet; trying again");
                    next_allowed.insert(message.chat_id, now + wait);
                }
                Err(error) => {
                    tracing::warn!(%error, chat_id = message.chat_id, "reply not sent");
                    break;
                }
            }
        }
    }
}
