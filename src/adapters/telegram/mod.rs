//! The Telegram side of the active device: the bot client, the owned long-poll loop and
//! the rate-limited replier.
//!
//! Owns: building the teloxide `Bot` (client timeout above the long poll, custom API URL);
//! the getUpdates loop, started only when the runtime enters Active and stopped at once by
//! a `CancellationToken` when it leaves; `deleteWebhook` + the chat's command menu on start
//! ([`TelegramBot::assert_command_menu`], also called after the child restarts), and
//! `deleteWebhook` again when another program sets a webhook (a 409 that, unlike the
//! "terminated by other getUpdates request" one, is no sign of another poller); driving
//! the offset ledger (`core::offsets::OffsetLedger`) that confirms an update to Telegram
//! only after baton handled it (its own command, a foreign chat, an update with no chat)
//! or the child acknowledged it through the gateway, and that notices when Telegram
//! starts its ids over ([`PollerEvent::SequenceRestarted`]); reading answers leniently (a
//! lone UTF-16 surrogate escape becomes U+FFFD instead of failing the whole batch);
//! authorization (only the configured chat/topic is forwarded or obeyed); and sending
//! replies through a per-chat rate limiter that honours `RetryAfter` and tries again
//! after a 5xx.
//!
//! The poller decides nothing about roles: it reports [`PollerEvent`]s to the runtime
//! (a refused token is [`PollerEvent::Refused`]: the core decides who serves).
//!
//! Must never: poll outside Active (the runtime owns when it runs), log or return the bot
//! token (every library error passes through [`Secret::scrub`](crate::adapters::telegram_config::Secret::scrub)), panic or stall on a
//! malformed update, or confirm an update the child has not acknowledged.
//!
//! Layout: [`error`] and [`answers`] (reading what Telegram says) are the leaves;
//! [`client`] (the bot), [`poll_loop`] (the active device's poller), [`replier`]
//! (baton's own messages) and [`witness`] (a standby's `getWebhookInfo`, the core's
//! second witness) build on them. This module only declares and re-exports.

pub mod answers;
pub mod client;
pub mod error;
pub mod poll_loop;
pub mod replier;
pub mod routing;
pub mod witness;

pub use crate::core::offsets::{Admission, OffsetLedger, PollProgress, StartPosition};
pub use client::{
    ALLOWED_UPDATES, BotSettings, DEVICE_HEADER, MenuOutcome, POLL_TIMEOUT_MAX, TelegramBot,
};
pub use error::TelegramError;
pub use poll_loop::{PollerConfig, PollerEvent, PollerExit, PollerHandle, spawn_poller};
pub use replier::{OutgoingMessage, Replier, ReplierSettings, ReplyDropped};
pub use routing::{PollRouter, RoutingNotice, SameHostNudge};
pub use witness::WitnessAsker;
