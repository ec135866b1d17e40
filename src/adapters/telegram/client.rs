//! The bot client: the teloxide `Bot` and the few raw requests baton makes itself.
//!
//! Owns: the client timeout (above the long poll), a custom API URL (and the
//! `X-Baton-Device` header sent only there), `deleteWebhook`, the chat's command menu
//! ([`TelegramBot::assert_command_menu`]), the raw `getUpdates` (teloxide's typed update
//! loses unknown fields) with `allowed_updates` named on every call, and `sendMessage`.
//! Must never: log or return the token, or decide when to poll.

use std::time::Duration;

use serde_json::Value;
use teloxide::payloads::{
    DeleteWebhookSetters as _, GetMyCommandsSetters as _, SetMyCommandsSetters as _,
};
use teloxide::prelude::Requester as _;
use teloxide::types::{BotCommand, BotCommandScope, ChatId, Recipient};
use teloxide::{Bot, RequestError};

use super::answers::{api_base, method_url, parse_get_updates, parse_response};
use super::error::TelegramError;
use crate::adapters::telegram_commands::{COMMAND_MENU, merged_menu};
use crate::adapters::telegram_config::Secret;

/// Telegram clamps long polls to 50 s.
pub const POLL_TIMEOUT_MAX: Duration = Duration::from_secs(50);

/// The HTTP client's total timeout exceeds the long poll by this much (FACTS: teloxide's
/// default 17 s total timeout breaks longer polls).
const CLIENT_TIMEOUT_MARGIN: Duration = Duration::from_secs(10);

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

/// How Telegram's 409 to the older of two pollers begins (FACTS; teloxide matches the whole
/// text). Every other "Conflict: …" means a webhook is set.
/// The header that names the sending device, sent only to a custom API URL (a
/// self-hosted server, or the test kit's fake, which logs it per request).
pub const DEVICE_HEADER: &str = "x-baton-device";

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

    /// `getWebhookInfo`'s `pending_update_count`: updates waiting to be delivered. Any
    /// holder of the token may ask without disturbing a running getUpdates (FACTS.md):
    /// a standby asks it as the core's second witness (`core::witness`).
    /// `None` when a webhook is set: the count is then the webhook's, not the poller's.
    pub async fn pending_update_count(&self) -> Result<Option<u64>, TelegramError> {
        self.bot
            .get_webhook_info()
            .await
            .map(|info| {
                info.url
                    .is_none()
                    .then_some(u64::from(info.pending_update_count))
            })
            .map_err(|e| TelegramError::from_request("getWebhookInfo", &e, &self.token))
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
        let (status, text) = self.post_json(METHOD, url, &body).await?;
        parse_get_updates(status, &text, &self.token)
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
        let (status, text) = self.post_json(METHOD, url, &body).await?;
        parse_response(METHOD, status, &text, &self.token).map(|_| ())
    }

    /// POSTs `body` as JSON to `url` (a raw call, so a 5xx is seen as one) and returns
    /// the status and the body's text; network errors are stripped of their URL and
    /// scrubbed of the token.
    async fn post_json(
        &self,
        method: &'static str,
        url: reqwest::Url,
        body: &serde_json::Value,
    ) -> Result<(u16, String), TelegramError> {
        let network = |e: reqwest::Error| TelegramError::Network {
            method,
            detail: self.token.scrub(&e.without_url().to_string()),
        };
        let response = self
            .bot
            .client()
            .post(url)
            .json(body)
            .send()
            .await
            .map_err(network)?;
        let status = response.status().as_u16();
        let text = response.text().await.map_err(network)?;
        Ok((status, text))
    }
}
