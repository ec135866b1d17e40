//! What serving is asked to run and what it reports: the plans the CLI builds, the
//! events the runtime hears, and serving's errors.
//!
//! Owns: [`TelegramPlan`], [`ChildPlan`], [`ServingEvent`], [`ServingError`] and the
//! gateway's and the replies' bounds. Must never: hold the token outside the
//! configuration's `Secret`.

use std::time::Duration;

use crate::adapters::child::ChildSpec;
use crate::adapters::child_env::MirrorContext;
use crate::adapters::telegram::PollerConfig;
use crate::adapters::telegram_commands::BatonCommand;
use crate::adapters::telegram_config::TelegramConfig;
use crate::core::Event;

/// Updates buffered for the child at most (see `adapters::gateway` for the overflow policy).
pub const GATEWAY_CAPACITY: usize = 10_000;

/// On shutdown, how long queued replies (the last "handing over", a command's answer)
/// may take to go out. The replier sends about one message a second per chat.
pub const REPLY_FLUSH_MAX: Duration = Duration::from_secs(3);

/// What serving tells the runtime.
#[derive(Debug)]
pub enum ServingEvent {
    /// An input for the core (a 409, a foreign chat).
    Core(Event),
    /// A baton command from the configured chat; the runtime answers it.
    Command {
        chat_id: i64,
        thread_id: Option<i64>,
        command: BatonCommand,
    },
}

/// The child to run, and when.
#[derive(Debug, Clone)]
pub struct ChildPlan {
    pub spec: ChildSpec,
    /// Run only while Active (started on taking the role, stopped on leaving it); baton
    /// polls and serves it through the gateway as in the default mode.
    pub only_when_active: bool,
    /// What the child's environment is built from (see `adapters::child_env`).
    pub mirror: MirrorContext,
}

/// Telegram side of a run.
pub struct TelegramPlan {
    pub config: TelegramConfig,
    pub poll_timeout: Duration,
    pub poller: PollerConfig,
    /// Sent as `X-Baton-Device` to a custom API URL only (tests attribute requests).
    pub device_tag: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServingError {
    #[error("cannot reach Telegram: {0}")]
    Telegram(#[from] crate::adapters::telegram::TelegramError),
    #[error(transparent)]
    Gateway(#[from] crate::adapters::gateway::GatewayError),
}
