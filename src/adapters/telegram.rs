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
//! token (every library error passes through [`Secret::scrub`]), panic or stall on a
//! malformed update, or confirm an update the child has not acknowledged.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use rand::{Rng as _, SeedableRng as _};
use rand_chacha::ChaCha8Rng;
use serde_json::Value;
use teloxide::payloads::{
    DeleteWebhookSetters as _, GetMyCommandsSetters as _, SetMyCommandsSetters as _,
};
use teloxide::prelude::Requester as _;
use teloxide::types::{BotCommand, BotCommandScope, ChatId, Recipient};
use teloxide::{ApiError, Bot, RequestError};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::gateway::Acknowledged;
use super::telegram_commands::{BatonCommand, COMMAND_MENU, merged_menu, parse_command};
use super::telegram_config::Secret;
use super::update_route::{UpdateRoute, message_text};

/// Telegram clamps long polls to 50 s.
pub const POLL_TIMEOUT_MAX: Duration = Duration::from_secs(50);
/// The HTTP client's total timeout exceeds the long poll by this much (FACTS: teloxide's
/// default 17 s total timeout breaks longer polls).
const CLIENT_TIMEOUT_MARGIN: Duration = Duration::from_secs(10);
/// Foreign chats reported per poller run at most.
const FOREIGN_CHATS_MAX: usize = 100;
const GET_UPDATES_LIMIT: u8 = 100;
/// The update kinds asked for on every `getUpdates`, by name. Telegram keeps the list the
/// previous call passed (by any program using the token) when a call omits it, so an
/// earlier program's narrow list could otherwise starve the bot. The mirror handles
/// messages and button presses; it and baton also see edits and reactions, which
/// Telegram sends only when asked.
pub const ALLOWED_UPDATES: &[&str] = &[
    "message",
    "edited_message",
    "callback_query",
    "message_reaction",
];
/// A long poll ends this long before the lease does, so its answer arrives inside it.
const LEASE_ANSWER_MARGIN: Duration = Duration::from_secs(1);
/// How Telegram's 409 to the older of two pollers begins (FACTS; teloxide matches the whole
/// text). Every other "Conflict: …" means a webhook is set.
/// The header that names the sending device, sent only to a custom API URL (a
/// self-hosted server, or the test kit's fake, which logs it per request).
pub const DEVICE_HEADER: &str = "x-baton-device";

const CONFLICT_OTHER_POLLER: &str = "Conflict: terminated by other getUpdates request";

#[derive(Debug, Clone, thiserror::Error)]
pub enum TelegramError {
    /// 401 Unauthorized or 404 Not Found: Telegram answers both to a wrong or revoked
    /// token (`description` is Telegram's, e.g. "Unauthorized").
    #[error("Telegram refused the bot token ({description})")]
    Unauthorized { description: String },
    /// 409 "Conflict: terminated by other getUpdates request…": another poller.
    #[error("{description}")]
    Conflict { description: String },
    /// Any other 409 "Conflict: …", e.g. "can't use getUpdates method while webhook is
    /// active": a webhook is set on the bot, so nobody can poll. Not another poller.
    #[error("{description}")]
    WebhookActive { description: String },
    #[error("flood control: retry after {0:?}")]
    RetryAfter(Duration),
    #[error("Telegram API error in {method}: {description}")]
    Api {
        method: &'static str,
        description: String,
    },
    #[error("network error in {method}: {detail}")]
    Network {
        method: &'static str,
        detail: String,
    },
    /// An HTTP 5xx: Telegram (or a proxy before it) failed; worth trying again.
    #[error("Telegram server error in {method}: HTTP {status} {description}")]
    Server {
        method: &'static str,
        status: u16,
        description: String,
    },
    #[error("unexpected response to {method}: {detail}")]
    BadResponse {
        method: &'static str,
        detail: String,
    },
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

impl TelegramError {
    /// Maps a teloxide error, scrubbing the token from any text it carries.
    fn from_request(method: &'static str, error: &RequestError, token: &Secret) -> Self {
        match error {
            RequestError::Api(api) => Self::from_api_text(method, &api_text(api), token),
            RequestError::RetryAfter(seconds) => Self::RetryAfter(seconds.duration()),
            RequestError::Network(source) => Self::Network {
                method,
                detail: token.scrub(&source.to_string()),
            },
            other => Self::BadResponse {
                method,
                detail: token.scrub(&other.to_string()),
            },
        }
    }

    fn from_api_text(method: &'static str, description: &str, token: &Secret) -> Self {
        if description.starts_with(CONFLICT_OTHER_POLLER) {
            Self::Conflict {
                description: token.scrub(description),
            }
        } else if description.starts_with("Conflict:") {
            Self::WebhookActive {
                description: token.scrub(description),
            }
        } else if description == "Unauthorized" || description == "Not Found" {
            // Telegram answers both to a wrong token.
            Self::Unauthorized {
                description: description.to_owned(),
            }
        } else {
            Self::Api {
                method,
                description: token.scrub(description),
            }
        }
    }
}

/// Telegram's own text for an API error (teloxide renders `Unknown` with a prefix; its
/// `TerminatedByOtherGetUpdates` renders as Telegram's exact text).
fn api_text(error: &ApiError) -> String {
    match error {
        ApiError::Unknown(text) => text.clone(),
        ApiError::InvalidToken => "Unauthorized".to_owned(),
        other => other.to_string(),
    }
}

/// What [`TelegramBot::assert_command_menu`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MenuOutcome {
    /// The chat's menu already held the mirror's commands and baton's.
    Unchanged,
    /// The chat's menu was written, with this many of the mirror's commands.
    Set { mirror_commands: usize },
}

/// How to reach Telegram.
#[derive(Debug, Clone)]
pub struct BotSettings {
    /// The long-poll timeout (at most [`POLL_TIMEOUT_MAX`]).
    pub poll_timeout: Duration,
    /// A self-hosted Bot API server or a fake; `None` is api.telegram.org.
    pub api_url: Option<reqwest::Url>,
    /// Sent as the `X-Baton-Device` header, and only when `api_url` is set, so tests can
    /// attribute requests to devices; never sent to api.telegram.org.
    pub device_tag: Option<String>,
}

/// A teloxide bot whose `Debug` hides the token (teloxide's own `Debug` prints it).
#[derive(Clone)]
pub struct TelegramBot {
    bot: Bot,
    token: Secret,
    poll_timeout: Duration,
}

impl std::fmt::Debug for TelegramBot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelegramBot")
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

impl TelegramBot {
    /// Builds the client: total timeout = poll timeout + 10 s, optional custom API URL.
    pub fn new(token: &Secret, settings: &BotSettings) -> Result<TelegramBot, TelegramError> {
        let poll_timeout = settings.poll_timeout.min(POLL_TIMEOUT_MAX);
        let mut builder =
            teloxide::net::default_reqwest_settings().timeout(poll_timeout + CLIENT_TIMEOUT_MARGIN);
        if let (Some(_), Some(tag)) = (&settings.api_url, &settings.device_tag) {
            let mut headers = reqwest::header::HeaderMap::new();
            let value = reqwest::header::HeaderValue::from_str(tag).map_err(|_| {
                TelegramError::Client("the device tag is not a valid header value".into())
            })?;
            headers.insert(DEVICE_HEADER, value);
            builder = builder.default_headers(headers);
        }
        let client = builder
            .build()
            .map_err(|e| TelegramError::Client(token.scrub(&e.to_string())))?;
        let mut bot = Bot::with_client(token.expose(), client);
        if let Some(url) = &settings.api_url {
            bot = bot.set_api_url(api_base(url)?);
        }
        Ok(TelegramBot {
            bot,
            token: token.clone(),
            poll_timeout,
        })
    }

    /// The bot's username (`getMe`), for the `@botname` command suffix.
    pub async fn username(&self) -> Result<String, TelegramError> {
        let me = self
            .bot
            .get_me()
            .await
            .map_err(|e| TelegramError::from_request("getMe", &e, &self.token))?;
        Ok(me.user.username.clone().unwrap_or_default())
    }

    /// `deleteWebhook` keeping pending updates, then the chat's command menu
    /// ([`TelegramBot::assert_command_menu`]).
    pub async fn prepare_polling(&self, chat_id: i64) -> Result<(), TelegramError> {
        // Polling cannot work with a webhook set; the menu is a convenience, and a menu
        // Telegram refuses (an odd command another program set) must not stop the bot.
        self.delete_webhook().await?;
        if let Err(error) = self.assert_command_menu(chat_id).await {
            tracing::warn!(%error, "cannot set the bot's command menu; polling anyway (the commands still work when typed)");
        }
        Ok(())
    }

    /// Makes the menu seen in `chat_id` hold the mirror's commands and baton's.
    ///
    /// The mirror replaces the DEFAULT scope's list at every start. baton writes the
    /// chat's own scope (`BotCommandScopeChat`), which Telegram shows in that chat instead
    /// of the default: the mirror's commands, as read from the default scope, then
    /// baton's ([`merged_menu`]). The mirror never touches the chat's list, so a mirror
    /// (re)start cannot wipe baton's commands; calling this again after one picks up the
    /// mirror's new list. Writes only when the chat's list differs.
    pub async fn assert_command_menu(&self, chat_id: i64) -> Result<MenuOutcome, TelegramError> {
        let scrub = |method, e: RequestError| TelegramError::from_request(method, &e, &self.token);
        let chat_scope = BotCommandScope::Chat {
            chat_id: Recipient::Id(ChatId(chat_id)),
        };
        let mirror: Vec<(String, String)> = self
            .bot
            .get_my_commands()
            .await
            .map_err(|e| scrub("getMyCommands", e))?
            .into_iter()
            .map(|c| (c.command, c.description))
            .collect();
        let wanted = merged_menu(&mirror);
        let current: Vec<(String, String)> = self
            .bot
            .get_my_commands()
            .scope(chat_scope.clone())
            .await
            .map_err(|e| scrub("getMyCommands", e))?
            .into_iter()
            .map(|c| (c.command, c.description))
            .collect();
        if current == wanted {
            return Ok(MenuOutcome::Unchanged);
        }
        let commands: Vec<BotCommand> = wanted
            .iter()
            .map(|(name, description)| BotCommand::new(name, description))
            .collect();
        self.bot
            .set_my_commands(commands)
            .scope(chat_scope)
            .await
            .map_err(|e| scrub("setMyCommands", e))?;
        Ok(MenuOutcome::Set {
            mirror_commands: wanted.len().saturating_sub(COMMAND_MENU.len()),
        })
    }

    /// `deleteWebhook`, keeping the pending updates (they are the user's messages).
    pub async fn delete_webhook(&self) -> Result<(), TelegramError> {
        self.bot
            .delete_webhook()
            .drop_pending_updates(false)
            .await
            .map(|_| ())
            .map_err(|e| TelegramError::from_request("deleteWebhook", &e, &self.token))
    }

    /// One raw `getUpdates` call: the updates as JSON, so unknown kinds, missing fields and
    /// huge texts survive untouched (teloxide's typed `Update` would re-shape them).
    pub async fn get_updates_raw(&self, offset: Option<i64>) -> Result<Vec<Value>, TelegramError> {
        self.get_updates_within(offset, self.poll_timeout).await
    }

    /// [`TelegramBot::get_updates_raw`] with the long poll clamped to `within` (whole
    /// seconds, rounded down): it must not outlast the device's lease.
    pub async fn get_updates_within(
        &self,
        offset: Option<i64>,
        within: Duration,
    ) -> Result<Vec<Value>, TelegramError> {
        const METHOD: &str = "getUpdates";
        let url = method_url(self.bot.api_url(), &self.token, METHOD);
        let mut body = serde_json::json!({
            "timeout": self.poll_timeout.min(within).as_secs(),
            "limit": GET_UPDATES_LIMIT,
            "allowed_updates": ALLOWED_UPDATES,
        });
        if let Some(offset) = offset {
            body["offset"] = offset.into();
        }
        let network = |e: reqwest::Error| TelegramError::Network {
            method: METHOD,
            detail: self.token.scrub(&e.without_url().to_string()),
        };
        let response = self
            .bot
            .client()
            .post(url)
            .json(&body)
            .send()
            .await
            .map_err(network)?;
        let status = response.status();
        let text = response.text().await.map_err(network)?;
        parse_get_updates(status.as_u16(), &text, &self.token)
    }

    /// Sends `html` (Telegram HTML parse mode) to a chat, in a topic when given.
    ///
    /// A raw request, like [`Self::get_updates_raw`], so that a 5xx is seen as one
    /// ([`TelegramError::Server`], which the replier retries) and not slept on: teloxide
    /// sleeps 10 s on any 5xx and then reports it as an ordinary API error.
    pub async fn send_html(
        &self,
        chat_id: i64,
        thread_id: Option<i64>,
        html: &str,
    ) -> Result<(), TelegramError> {
        const METHOD: &str = "sendMessage";
        let url = method_url(self.bot.api_url(), &self.token, METHOD);
        let mut body = serde_json::json!({
            "chat_id": chat_id,
            "text": html,
            "parse_mode": "HTML",
        });
        if let Some(thread) = thread_id.and_then(|t| i32::try_from(t).ok()) {
            body["message_thread_id"] = thread.into();
        }
        let network = |e: reqwest::Error| TelegramError::Network {
            method: METHOD,
            detail: self.token.scrub(&e.without_url().to_string()),
        };
        let response = self
            .bot
            .client()
            .post(url)
            .json(&body)
            .send()
            .await
            .map_err(network)?;
        let status = response.status().as_u16();
        let text = response.text().await.map_err(network)?;
        parse_response(METHOD, status, &text, &self.token).map(|_| ())
    }
}

/// The API base as teloxide should see it: without a trailing slash after a path prefix
/// (`https://host/tg/` → `https://host/tg`), because teloxide appends `/bot<token>/<method>`
/// to the path as it is and would ask for `/tg//bot…`.
fn api_base(url: &reqwest::Url) -> Result<reqwest::Url, TelegramError> {
    let mut base = url.clone();
    base.path_segments_mut()
        .map_err(|()| TelegramError::Client("the Telegram API URL cannot take a path".into()))?
        .pop_if_empty();
    Ok(base)
}

/// `{base}/bot{token}/{method}`, built as teloxide builds its own requests' URLs, so that
/// the raw getUpdates keeps a self-hosted server's path prefix and goes where every other
/// call goes. `base` comes from [`api_base`] (http or https, so it always takes a path).
fn method_url(mut base: reqwest::Url, token: &Secret, method: &str) -> reqwest::Url {
    if let Ok(mut segments) = base.path_segments_mut() {
        segments.push(&format!("bot{}", token.expose()));
        segments.push(method);
    }
    base
}

fn parse_get_updates(status: u16, text: &str, token: &Secret) -> Result<Vec<Value>, TelegramError> {
    const METHOD: &str = "getUpdates";
    match parse_response(METHOD, status, text, token)? {
        Value::Array(updates) => Ok(updates),
        _ => Err(TelegramError::BadResponse {
            method: METHOD,
            detail: format!("HTTP {status}, `result` is not a list"),
        }),
    }
}

/// Reads one Bot API answer: its `result`, or the error it reports. JSON that only a
/// lone UTF-16 surrogate escape (`"\ud800"`, which Telegram passes on from a client)
/// makes invalid is read with that escape replaced by U+FFFD, so one odd text never
/// blocks the updates after it.
fn parse_response(
    method: &'static str,
    status: u16,
    text: &str,
    token: &Secret,
) -> Result<Value, TelegramError> {
    let bad = |detail: String| TelegramError::BadResponse {
        method,
        detail: token.scrub(&detail),
    };
    let parsed = serde_json::from_str::<Value>(text).or_else(|error| {
        let repaired = replace_lone_surrogates(text).ok_or(error)?;
        let value = serde_json::from_str::<Value>(&repaired)?;
        tracing::warn!(
            method,
            "Telegram sent text that is not valid Unicode (a lone UTF-16 surrogate); it was replaced with U+FFFD"
        );
        Ok::<Value, serde_json::Error>(value)
    });
    let value = match parsed {
        Ok(value) => value,
        Err(_) if status >= 500 => return Err(server_error(method, status, "", token)),
        Err(e) => return Err(bad(format!("HTTP {status}, not JSON: {e}"))),
    };
    if value.get("ok").and_then(Value::as_bool) == Some(true) {
        return value
            .get("result")
            .cloned()
            .ok_or_else(|| bad(format!("HTTP {status}, no `result`")));
    }
    if let Some(seconds) = value
        .pointer("/parameters/retry_after")
        .and_then(Value::as_u64)
    {
        return Err(TelegramError::RetryAfter(Duration::from_secs(seconds)));
    }
    let description = value
        .get("description")
        .and_then(Value::as_str)
        .unwrap_or("");
    if status >= 500 {
        return Err(server_error(method, status, description, token));
    }
    if description.is_empty() {
        return Err(bad(format!("HTTP {status} without a description")));
    }
    Err(TelegramError::from_api_text(method, description, token))
}

fn server_error(
    method: &'static str,
    status: u16,
    description: &str,
    token: &Secret,
) -> TelegramError {
    TelegramError::Server {
        method,
        status,
        description: token.scrub(description),
    }
}

/// Replaces every `\uXXXX` escape of a UTF-16 surrogate that has no partner (a high one
/// not followed by a low one, or a low one alone) inside a JSON string with `\ufffd`.
/// `None` when there is none. Works on the text as it came; never splits a character
/// (it cuts only at the ASCII bytes of an escape).
fn replace_lone_surrogates(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let unit_at = |at: usize| -> Option<u16> {
        let escape = bytes.get(at..at + 6)?;
        if escape[0] != b'\\' || escape[1] != b'u' {
            return None;
        }
        let hex = std::str::from_utf8(&escape[2..]).ok()?;
        u16::from_str_radix(hex, 16).ok()
    };
    let is_high = |unit: u16| (0xD800..0xDC00).contains(&unit);
    let is_low = |unit: u16| (0xDC00..0xE000).contains(&unit);
    let mut repaired = String::with_capacity(text.len());
    let (mut copied_to, mut at, mut in_string) = (0, 0, false);
    while at < bytes.len() {
        match bytes[at] {
            b'"' => {
                in_string = !in_string;
                at += 1;
            }
            b'\\' if in_string => match unit_at(at) {
                Some(unit) if is_high(unit) && unit_at(at + 6).is_some_and(is_low) => at += 12,
                Some(unit) if is_high(unit) || is_low(unit) => {
                    repaired.push_str(&text[copied_to..at]);
                    repaired.push_str("\\ufffd");
                    at += 6;
                    copied_to = at;
                }
                Some(_) => at += 6,
                // Any other escape: skip the escaped character (`\"` must not end the string).
                None => at += 2,
            },
            _ => at += 1,
        }
    }
    if copied_to == 0 {
        return None;
    }
    repaired.push_str(&text[copied_to..]);
    Some(repaired)
}

/// What the poller reports to the runtime. Order is Telegram's order.
#[derive(Debug)]
pub enum PollerEvent {
    /// Polling began (webhook removed, commands set).
    Started { bot_username: String },
    /// An update of the configured chat/topic for the child: push it to the gateway.
    Forward { update_id: i64, payload: Value },
    /// A baton command in the configured chat/topic; reply to `chat_id`/`thread_id`.
    Command {
        update_id: i64,
        chat_id: i64,
        thread_id: Option<i64>,
        command: BatonCommand,
    },
    /// Telegram answered 409 "terminated by other getUpdates request": another poller.
    /// Conflict evidence for the core. (A 409 because of a webhook is not: the poller
    /// removes the webhook itself.)
    Conflict { description: String },
    /// An update from a chat that is not the configured one (reported once per chat).
    ForeignChat { chat_id: i64 },
    /// The machine slept; polling has stopped until the runtime restarts it.
    Slept { slept: Duration },
    /// Telegram's update ids started over (after a week without updates it picks the
    /// next one at random, usually far below): `first_id` came back although the request
    /// asked for `offset_sent`. Sent before that update's own event. The gateway must
    /// start a new acknowledgement generation (`Gateway::restart_sequence`): the child's
    /// `since` from the old sequence acknowledges nothing of the new one.
    SequenceRestarted { first_id: i64, offset_sent: i64 },
    /// Telegram refused the bot token (401 Unauthorized or 404 Not Found): the poller has
    /// stopped, and the core must hand the role on (`Event::PollingRefused`).
    Refused { description: String },
}

pub use crate::core::offsets::{Admission, OffsetLedger, PollProgress, StartPosition};

/// Timing of the poll loop. Production values in [`PollerConfig::new`].
#[derive(Debug, Clone)]
pub struct PollerConfig {
    pub chat_id: i64,
    pub thread_id: Option<i64>,
    /// Least back-off after a 409; the wait is drawn from [min, 2·min). At least 3 s in
    /// production (FACTS); tests shorten it.
    pub conflict_backoff_min: Duration,
    /// Back-off after other errors doubles from 1 s up to this.
    pub error_backoff_max: Duration,
    /// When Telegram only re-sends updates awaiting the child's acknowledgement, wait this
    /// long (or until an acknowledgement) before asking again.
    pub resend_pause: Duration,
    /// Seeds the back-off jitter (derive it from the run's seed).
    pub jitter_seed: u64,
    /// When set, the loop checks before every getUpdates whether the machine slept; if
    /// it did, it stops polling and reports [`PollerEvent::Slept`], so a device that
    /// woke past its lease never polls before the core has re-validated its claim.
    pub sleep_guard: Option<crate::adapters::clock::SleepDetector>,
    /// Foreign chats already reported (by any device, from the records): not again.
    pub known_foreign_chats: Vec<i64>,
    /// The device's lease deadline on the sleep-counting clock (from the core, through
    /// the runtime): no getUpdates starts once it has passed, a long poll is clamped to
    /// what remains, and an answer that arrives after it is not delivered. `None`:
    /// no lease is enforced (tests of the poll loop alone).
    pub lease: Option<watch::Receiver<Option<crate::core::Moment>>>,
}

impl PollerConfig {
    pub fn new(chat_id: i64, thread_id: Option<i64>, jitter_seed: u64) -> Self {
        PollerConfig {
            chat_id,
            thread_id,
            conflict_backoff_min: Duration::from_secs(3),
            error_backoff_max: Duration::from_secs(30),
            resend_pause: Duration::from_secs(1),
            jitter_seed,
            sleep_guard: None,
            known_foreign_chats: Vec::new(),
            lease: None,
        }
    }
}

/// Why the poll loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollerExit {
    Cancelled,
    Fatal,
}

/// A running poller. Stop it when leaving Active.
pub struct PollerHandle {
    cancel: CancellationToken,
    progress: watch::Receiver<PollProgress>,
    task: JoinHandle<(PollerExit, OffsetLedger)>,
}

impl PollerHandle {
    /// The latest progress (for the device record while Active).
    pub fn progress(&self) -> PollProgress {
        self.progress.borrow().clone()
    }

    /// Cancels at once (an in-flight getUpdates is abandoned, confirming nothing) and
    /// returns the ledger, so the runtime can apply the child's last acknowledgements.
    pub async fn stop(self) -> (PollerExit, OffsetLedger) {
        self.cancel.cancel();
        match self.task.await {
            Ok(result) => result,
            Err(error) => panic!("BUG: the poll task panicked: {error}"),
        }
    }
}

/// Starts polling. Call on entering Active (not in `--child-when-active` mode).
///
/// `acknowledged` is [`super::gateway::Gateway::acknowledged`]; `events` goes to the
/// runtime, which must push every `Forward` to the gateway in order.
pub fn spawn_poller(
    bot: TelegramBot,
    config: PollerConfig,
    start: StartPosition,
    acknowledged: watch::Receiver<Acknowledged>,
    events: mpsc::Sender<PollerEvent>,
) -> PollerHandle {
    let cancel = CancellationToken::new();
    let ledger = OffsetLedger::new(&start, acknowledged.borrow().generation);
    let foreign_reported = config.known_foreign_chats.iter().copied().collect();
    let (progress_tx, progress) = watch::channel(ledger.progress());
    let poll_loop = PollLoop {
        rng: ChaCha8Rng::seed_from_u64(config.jitter_seed),
        bot,
        config,
        events,
        acknowledged,
        cancel: cancel.clone(),
        progress_tx,
        ledger,
        foreign_reported,
        bot_username: String::new(),
    };
    let task = tokio::spawn(tracing::Instrument::in_current_span(poll_loop.run()));
    PollerHandle {
        cancel,
        progress,
        task,
    }
}

struct PollLoop {
    bot: TelegramBot,
    config: PollerConfig,
    events: mpsc::Sender<PollerEvent>,
    acknowledged: watch::Receiver<Acknowledged>,
    cancel: CancellationToken,
    progress_tx: watch::Sender<PollProgress>,
    ledger: OffsetLedger,
    rng: ChaCha8Rng,
    foreign_reported: HashSet<i64>,
    bot_username: String,
}

/// `Err` ends the loop with that exit.
type Step = Result<(), PollerExit>;

impl PollLoop {
    async fn run(mut self) -> (PollerExit, OffsetLedger) {
        let exit = match self.poll_forever().await {
            Ok(()) => PollerExit::Cancelled,
            Err(exit) => exit,
        };
        (exit, self.ledger)
    }

    async fn poll_forever(&mut self) -> Step {
        self.prepare().await?;
        let mut failures = 0u32;
        loop {
            let acknowledged = *self.acknowledged.borrow_and_update();
            self.ledger
                .acknowledged(acknowledged.generation, acknowledged.through);
            self.progress_tx.send_replace(self.ledger.progress());
            if let Some(slept) = self.config.sleep_guard.as_mut().and_then(|g| g.check()) {
                self.emit(PollerEvent::Slept { slept }).await?;
                self.cancel.cancelled().await;
                return Err(PollerExit::Cancelled);
            }
            let offset = self.ledger.offset();
            // The answer must be back before the lease ends: a second's margin for it.
            let within = self
                .within_lease()
                .await?
                .saturating_sub(LEASE_ANSWER_MARGIN);
            let request = self.bot.get_updates_within(offset, within);
            let result = tokio::select! {
                biased;
                () = self.cancel.cancelled() => return Err(PollerExit::Cancelled),
                result = request => result,
            };
            match result {
                Ok(batch) if self.lease_remaining().is_none() => {
                    // Answered after the lease ran out (a stalled process resumed):
                    // unconfirmed, these go to whoever acts next, not to our child.
                    tracing::warn!(
                        updates = batch.len(),
                        "a getUpdates answer came after this device's lease ran out: not delivered here"
                    );
                }
                Ok(batch) => {
                    failures = 0;
                    if !self.absorb(batch, offset).await? {
                        self.wait_for_acknowledgement().await?;
                    }
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    self.on_error(error, failures).await?;
                }
            }
        }
    }

    /// What remains of the lease (`Some(MAX)` when none is enforced; `None` once over).
    fn lease_remaining(&self) -> Option<Duration> {
        let Some(lease) = &self.config.lease else {
            return Some(Duration::MAX);
        };
        let deadline = (*lease.borrow())?;
        let now = crate::adapters::clock::now();
        (now < deadline).then(|| deadline.since(now))
    }

    /// Waits, cancellably, until the lease allows a getUpdates; returns what remains of
    /// it (a long poll is clamped to it). Past the lease, the core steps down and
    /// re-reads the folder; a renewed lease comes only from a record write on disk.
    async fn within_lease(&mut self) -> Result<Duration, PollerExit> {
        let mut said = false;
        loop {
            if let Some(remaining) = self.lease_remaining() {
                return Ok(remaining);
            }
            if !std::mem::replace(&mut said, true) {
                tracing::info!(
                    "this device's lease has run out: no getUpdates until it is renewed"
                );
            }
            let Some(lease) = self.config.lease.as_mut() else {
                unreachable!("no lease is never over")
            };
            tokio::select! {
                biased;
                () = self.cancel.cancelled() => return Err(PollerExit::Cancelled),
                changed = lease.changed() => {
                    if changed.is_err() {
                        self.cancel.cancelled().await;
                        return Err(PollerExit::Cancelled);
                    }
                }
            }
        }
    }

    /// getMe, deleteWebhook and setMyCommands, retried with back-off until they succeed.
    /// Runs inside the poll task and ends at once when the poller is stopped; no getUpdates
    /// is sent before it succeeded.
    async fn prepare(&mut self) -> Step {
        let mut failures = 0u32;
        loop {
            let attempt = async {
                let username = self.bot.username().await?;
                self.bot.prepare_polling(self.config.chat_id).await?;
                Ok::<_, TelegramError>(username)
            };
            let result = tokio::select! {
                biased;
                () = self.cancel.cancelled() => return Err(PollerExit::Cancelled),
                result = attempt => result,
            };
            match result {
                Ok(username) => {
                    self.bot_username = username.clone();
                    return self
                        .emit(PollerEvent::Started {
                            bot_username: username,
                        })
                        .await;
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    self.on_error(error, failures).await?;
                }
            }
        }
    }

    /// Reports the new updates of a batch asked with `offset`; true when there was at
    /// least one.
    async fn absorb(&mut self, batch: Vec<Value>, offset: Option<i64>) -> Result<bool, PollerExit> {
        let mut fresh = false;
        self.ledger.begin_batch(offset);
        for payload in batch {
            let route = UpdateRoute::of(&payload);
            let Some(update_id) = route.update_id else {
                // Without an id it cannot be confirmed alone; the next confirmed id covers it.
                tracing::warn!(kind = ?route.kind, "ignoring an update without an update_id");
                continue;
            };
            match self.ledger.admit(update_id) {
                Admission::Known => continue,
                Admission::Unusable => {
                    tracing::warn!(update_id, kind = ?route.kind, "ignoring an update whose id cannot be a Telegram update id");
                    continue;
                }
                Admission::Restarted { offset_sent } => {
                    tracing::warn!(
                        first_id = update_id,
                        offset_sent,
                        "Telegram started its update ids over (it does after a week without updates): following the new sequence"
                    );
                    let restarted = PollerEvent::SequenceRestarted {
                        first_id: update_id,
                        offset_sent,
                    };
                    self.emit(restarted).await?;
                }
                Admission::New => {}
            }
            fresh = true;
            self.dispatch(update_id, &route, payload).await?;
        }
        Ok(fresh)
    }

    /// Decides what one new update is, reports it and records how it will be confirmed.
    async fn dispatch(&mut self, update_id: i64, route: &UpdateRoute, payload: Value) -> Step {
        let Some(chat_id) = route.chat_id else {
            tracing::debug!(update_id, kind = ?route.kind, "update without a chat: not forwarded");
            self.ledger.handled(update_id);
            return Ok(());
        };
        if chat_id != self.config.chat_id {
            tracing::info!(
                update_id,
                chat_id,
                "update from a foreign chat: not forwarded"
            );
            let report = self.foreign_reported.len() < FOREIGN_CHATS_MAX
                && self.foreign_reported.insert(chat_id);
            if report {
                self.emit(PollerEvent::ForeignChat { chat_id }).await?;
            }
            self.ledger.handled(update_id);
            return Ok(());
        }
        if !route.is_in(self.config.chat_id, self.config.thread_id) {
            tracing::debug!(update_id, thread_id = ?route.thread_id, "update in another topic: not forwarded");
            self.ledger.handled(update_id);
            return Ok(());
        }
        let command =
            message_text(&payload).and_then(|text| parse_command(text, &self.bot_username));
        match command {
            Some(command) => {
                let shared = command.also_for_mirror();
                let event = PollerEvent::Command {
                    update_id,
                    chat_id,
                    thread_id: route.thread_id,
                    command,
                };
                self.emit(event).await?;
                if shared {
                    // Answered by baton AND the mirror's: confirmed once the child has it.
                    self.emit(PollerEvent::Forward { update_id, payload })
                        .await?;
                    self.ledger.forwarded(update_id);
                } else {
                    self.ledger.handled(update_id);
                }
            }
            None => {
                self.emit(PollerEvent::Forward { update_id, payload })
                    .await?;
                self.ledger.forwarded(update_id);
            }
        }
        Ok(())
    }

    /// Nothing new came back: Telegram is re-sending updates the child has not fetched yet.
    async fn wait_for_acknowledgement(&mut self) -> Step {
        let pause = tokio::time::sleep(self.config.resend_pause);
        let seen = *self.acknowledged.borrow_and_update();
        // Serving alone changes `outstanding`: only a new acknowledgement is news here.
        let news =
            |now: &Acknowledged| (now.generation, now.through) != (seen.generation, seen.through);
        let gateway_gone = tokio::select! {
            biased;
            () = self.cancel.cancelled() => return Err(PollerExit::Cancelled),
            changed = self.acknowledged.wait_for(news) => changed.is_err(),
            () = pause => false,
        };
        if gateway_gone {
            // No acknowledgement will come; do not spin.
            self.sleep(self.config.resend_pause).await?;
        }
        Ok(())
    }

    async fn on_error(&mut self, error: TelegramError, failures: u32) -> Step {
        match error {
            TelegramError::Conflict { description } => {
                tracing::warn!(%description, "getUpdates conflict: another poller");
                self.emit(PollerEvent::Conflict { description }).await?;
                let min = self.config.conflict_backoff_min;
                let wait = min + min.mul_f64(self.rng.random::<f64>());
                self.sleep(wait).await
            }
            TelegramError::WebhookActive { description } => {
                // No second poller is involved: this is no evidence for the core.
                let wait = self.error_backoff(failures);
                tracing::warn!(
                    %description,
                    ?wait,
                    "another program set a webhook on this bot; removing it (pending updates kept) and polling again"
                );
                let deleted = tokio::select! {
                    biased;
                    () = self.cancel.cancelled() => return Err(PollerExit::Cancelled),
                    deleted = self.bot.delete_webhook() => deleted,
                };
                if let Err(error) = deleted {
                    tracing::warn!(%error, "cannot remove the webhook; trying again");
                }
                self.sleep(wait).await
            }
            TelegramError::RetryAfter(wait) => {
                tracing::warn!(?wait, "Telegram flood control on getUpdates");
                self.sleep(wait).await
            }
            TelegramError::Unauthorized { description } => {
                tracing::error!(%description, "Telegram refused the bot token; polling stops");
                let _ = self.emit(PollerEvent::Refused { description }).await;
                Err(PollerExit::Fatal)
            }
            other => {
                let wait = self.error_backoff(failures);
                tracing::warn!(error = %other, ?wait, "Telegram request failed; retrying");
                self.sleep(wait).await
            }
        }
    }

    /// Doubles from 1 s per consecutive failure up to `error_backoff_max`, with jitter.
    fn error_backoff(&mut self, failures: u32) -> Duration {
        let exponent = failures.saturating_sub(1).min(16);
        let base = Duration::from_secs(1).saturating_mul(1 << exponent);
        let base = base.min(self.config.error_backoff_max);
        base.mul_f64(0.5 + self.rng.random::<f64>() / 2.0)
    }

    async fn sleep(&self, wait: Duration) -> Step {
        tokio::select! {
            biased;
            () = self.cancel.cancelled() => Err(PollerExit::Cancelled),
            () = tokio::time::sleep(wait) => Ok(()),
        }
    }

    async fn emit(&self, event: PollerEvent) -> Step {
        tokio::select! {
            biased;
            () = self.cancel.cancelled() => Err(PollerExit::Cancelled),
            sent = self.events.send(event) => sent.map_err(|_| PollerExit::Cancelled),
        }
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lone_surrogate_escape_is_replaced_and_the_batch_still_reads() {
        let token = Secret::new("1:secret");
        let body = r#"{"ok":true,"result":[{"update_id":1,"message":{"text":"a\ud800b"}},{"update_id":2,"message":{"text":"\udc00 \ud83d\ude00 \\ud800 \"\ud800"}}]}"#;
        assert!(
            serde_json::from_str::<Value>(body).is_err(),
            "serde_json refuses it"
        );
        let updates = parse_get_updates(200, body, &token).expect("read leniently");
        let texts: Vec<&str> = updates
            .iter()
            .map(|u| u["message"]["text"].as_str().expect("text"))
            .collect();
        assert_eq!(
            texts,
            vec!["a\u{fffd}b", "\u{fffd} \u{1f600} \\ud800 \"\u{fffd}"],
            "only the lone halves are replaced; a pair and an escaped backslash stay"
        );
        assert_eq!(
            replace_lone_surrogates(r#"{"a":"\ud83d\ude00 \\ud800"}"#),
            None
        );
        let garbage = parse_get_updates(200, r#"{"ok":true,"result":[{"update_id":1,"#, &token);
        assert!(matches!(garbage, Err(TelegramError::BadResponse { .. })));
    }

    #[test]
    fn server_errors_are_told_apart() {
        let token = Secret::new("1:secret");
        let json = parse_response(
            "sendMessage",
            502,
            r#"{"ok":false,"error_code":502,"description":"Bad Gateway"}"#,
            &token,
        );
        assert!(
            matches!(json, Err(TelegramError::Server { status: 502, .. })),
            "{json:?}"
        );
        let html = parse_response("sendMessage", 503, "<html>1:secret</html>", &token);
        assert!(
            matches!(html, Err(TelegramError::Server { status: 503, .. })),
            "{html:?}"
        );
        let bad_request = parse_response(
            "sendMessage",
            400,
            r#"{"ok":false,"description":"Bad Request: can't parse entities"}"#,
            &token,
        );
        assert!(matches!(bad_request, Err(TelegramError::Api { .. })));
    }

    #[test]
    fn method_urls_keep_the_base_path_with_or_without_a_trailing_slash() {
        let token = Secret::new("1:secret");
        let url = |base: &str| {
            let base = api_base(&reqwest::Url::parse(base).expect("URL")).expect("a base");
            method_url(base, &token, "getUpdates").to_string()
        };
        for (base, wanted) in [
            (
                "https://api.telegram.org",
                "https://api.telegram.org/bot1:secret/getUpdates",
            ),
            (
                "https://api.telegram.org/",
                "https://api.telegram.org/bot1:secret/getUpdates",
            ),
            ("https://host/tg", "https://host/tg/bot1:secret/getUpdates"),
            ("https://host/tg/", "https://host/tg/bot1:secret/getUpdates"),
            ("http://h:81/a/b/", "http://h:81/a/b/bot1:secret/getUpdates"),
        ] {
            assert_eq!(url(base), wanted, "{base}");
        }
    }

    #[test]
    fn get_updates_errors_are_classified_and_scrubbed() {
        let token = Secret::new("1:secret");
        let conflict = parse_get_updates(
            409,
            r#"{"ok":false,"error_code":409,"description":"Conflict: terminated by other getUpdates request; make sure that only one bot instance is running"}"#,
            &token,
        );
        assert!(matches!(conflict, Err(TelegramError::Conflict { .. })));
        let webhook = parse_get_updates(
            409,
            r#"{"ok":false,"error_code":409,"description":"Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first"}"#,
            &token,
        );
        assert!(matches!(webhook, Err(TelegramError::WebhookActive { .. })));
        let unauthorized =
            parse_get_updates(401, r#"{"ok":false,"description":"Unauthorized"}"#, &token);
        assert!(matches!(
            unauthorized,
            Err(TelegramError::Unauthorized { .. })
        ));
        let retry = parse_get_updates(
            429,
            r#"{"ok":false,"description":"x","parameters":{"retry_after":2}}"#,
            &token,
        );
        assert!(matches!(retry, Err(TelegramError::RetryAfter(d)) if d == Duration::from_secs(2)));
        let garbage = parse_get_updates(502, "<html>1:secret</html>", &token);
        let text = garbage.unwrap_err().to_string();
        assert!(!text.contains("1:secret"), "{text}");
    }
}
