//! What the fake Bot API remembers: its configuration, its updates, its request log and
//! what tests scripted.
//!
//! Owns: [`FakeBotConfig`], the request log ([`RequestRecord`], never the token), sent
//! messages, stored updates, and the shared, locked state every route reads. Must
//! never: record the token.

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;
use serde_json::Value;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::kinds::AllowedUpdates;
use super::menus::Menus;

/// The header a caller may use to say which device it is.
pub const DEVICE_HEADER: &str = "x-baton-device";

/// The 409 text Telegram sends to the older of two pollers (teloxide matches it exactly).
pub const CONFLICT_OTHER_GET_UPDATES: &str = "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running";

pub(crate) const CONFLICT_WEBHOOK: &str = "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first";

pub(crate) const MESSAGE_TEXT_CHARS_MAX: usize = 4096;

/// Stands for a lone `\ud800` escape in a stored text; every response body has it
/// replaced by that escape (no Rust string can hold a lone surrogate).
pub(crate) const LONE_SURROGATE_MARKER: &str = "\u{10fffd}lone-surrogate\u{10fffd}";

/// How the fake presents itself.
#[derive(Debug, Clone)]
pub struct FakeBotConfig {
    /// The only token accepted; others get 401.
    pub token: String,
    pub bot_user_id: i64,
    pub bot_username: String,
    /// The id of the first injected update.
    pub first_update_id: i64,
    /// Serves the Bot API under this path (e.g. `/tg`), as a self-hosted server behind a
    /// reverse proxy does; empty for the root. Requests outside it get 404 `Not Found`.
    /// The `/_fake/` control routes stay at the root.
    pub path_prefix: String,
}

impl Default for FakeBotConfig {
    fn default() -> Self {
        FakeBotConfig {
            token: "123456:TEST-fake-token_0123456789abcdef".to_owned(),
            bot_user_id: 123456,
            bot_username: "baton_test_bot".to_owned(),
            first_update_id: 500_000,
            path_prefix: String::new(),
        }
    }
}

/// One logged request (the token is never stored).
#[derive(Debug, Clone, Serialize)]
pub struct RequestRecord {
    /// Arrival order, from 0.
    pub seq: u64,
    /// As sent, e.g. `GetUpdates`; compare with [`RequestRecord::is`].
    pub method: String,
    pub params: Value,
    pub received_at_ms: u64,
    /// The `X-Baton-Device` header, when sent.
    pub device: Option<String>,
    pub peer: Option<SocketAddr>,
    pub token_ok: bool,
    /// The HTTP status answered; `None` while a long poll is still waiting.
    pub status: Option<u16>,
}

impl RequestRecord {
    /// True when this is a call of `method` (case-insensitive).
    pub fn is(&self, method: &str) -> bool {
        self.method.eq_ignore_ascii_case(method)
    }
}

/// One message sent by the bot through `sendMessage`.
#[derive(Debug, Clone, Serialize)]
pub struct SentMessage {
    pub message_id: i64,
    pub chat_id: i64,
    pub message_thread_id: Option<i64>,
    pub parse_mode: Option<String>,
    /// As sent (HTML markup included).
    pub text: String,
    /// As a user would read it: tags removed, entities decoded.
    pub plain_text: String,
    pub device: Option<String>,
}

pub(crate) struct StoredUpdate {
    pub(crate) id: i64,
    pub(crate) body: Arc<Value>,
}

pub(crate) struct FakeState {
    pub(crate) next_update_id: i64,
    pub(crate) next_message_id: i64,
    pub(crate) pending: VecDeque<StoredUpdate>,
    pub(crate) poll_generation: u64,
    pub(crate) requests: Vec<RequestRecord>,
    pub(crate) sent: Vec<SentMessage>,
    pub(crate) menus: Menus,
    pub(crate) allowed_updates: AllowedUpdates,
    /// Ids of injected updates never created because their kind was not allowed.
    pub(crate) filtered: Vec<i64>,
    pub(crate) webhook_url: Option<String>,
    /// Scripted failures: (lower-case method, HTTP status, body), used first-come.
    pub(crate) failures: VecDeque<(String, u16, Value)>,
    /// Lower-case methods whose calls wait, unanswered, until released.
    pub(crate) held: HashSet<String>,
    /// Every call gets 401 Unauthorized, as after a token is revoked.
    pub(crate) token_refused: bool,
}

pub(crate) struct Shared {
    pub(crate) config: FakeBotConfig,
    pub(crate) state: Mutex<FakeState>,
    /// Bumped on every change, so waiters re-check.
    pub(crate) version: watch::Sender<u64>,
    pub(crate) shutdown: CancellationToken,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, FakeState> {
        // A poisoned lock only means a panic elsewhere mid-update; the state stays usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn changed(&self) {
        self.version.send_modify(|v| *v = v.wrapping_add(1));
    }
}
