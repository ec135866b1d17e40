//! A faithful fake of the Telegram Bot API on loopback, for the test suite and `baton demo`.
//!
//! Owns: an HTTP server answering `POST|GET {base}/bot{token}/{method}`, where `{base}` may
//! carry a path prefix like a self-hosted Bot API behind a proxy (method names
//! matched case-insensitively, parameters from the query string and a JSON or form body)
//! for `getMe`, `getUpdates`, `sendMessage`, `setMyCommands`, `getMyCommands`,
//! `deleteMyCommands`, `deleteWebhook` and `setWebhook`, with Telegram's semantics where baton depends on them:
//!
//! - `getUpdates` long-polls for `timeout` seconds (clamped to 0–50); `offset` N > 0
//!   confirms (forgets) every update with id < N — unless N is above every id given out
//!   so far, which the real server ignores (it confirms nothing then; see below); a
//!   negative offset -k keeps only the last k updates; `limit` is clamped to 1–100.
//! - ids grow by one, until [`FakeBotApi::quiet_week`]: a week without updates, after
//!   which the real server "chooses the identifier randomly instead of sequentially"
//!   (Bot API docs) — a lower one, as observed — and keeps returning the new update to a
//!   `getUpdates` with the old, higher offset until an offset above the new id is sent
//!   (go-telegram-bot-api#156; FACTS.md). Unconfirmed updates are forgotten then, as
//!   Telegram keeps them only 24 h. A NEWER `getUpdates` makes an OLDER one that is
//!   still waiting return HTTP 409 "Conflict: terminated by other getUpdates request; …".
//!   While a webhook is set, `getUpdates` returns 409 "Conflict: can't use getUpdates …".
//! - a wrong token gets HTTP 401 `Unauthorized`; an unknown method HTTP 404 `Not Found`.
//! - `sendMessage` checks `parse_mode=HTML` text like Telegram does (only Telegram's tags,
//!   balanced) and answers 400 "can't parse entities" otherwise; text over 4096 characters
//!   is refused.
//! - `setMyCommands` requires names of 1–32 characters `[a-z0-9_]` and descriptions of
//!   3–256 characters (400 otherwise). Menus are kept per `scope` and `language_code`
//!   (`setMyCommands`, `getMyCommands`, `deleteMyCommands`), and a user in a chat sees
//!   the first list set in Telegram's order (a chat's own list before the default): see
//!   [`menus`] and [`FakeBotApi::menu_seen_in`].
//! - `getUpdates` keeps the last `allowed_updates` it was given (by any caller), and an
//!   update of a kind not allowed is never created: see [`kinds`].
//!
//! Tests can script the next answer of a method ([`FakeBotApi::fail_next`]), make its
//! calls hang unanswered until released ([`FakeBotApi::hold`]), refuse the token as if
//! it were revoked ([`FakeBotApi::refuse_token`]), and queue a text whose JSON carries a
//! lone UTF-16 surrogate escape, which Telegram passes on from some clients and strict
//! JSON parsers reject ([`FakeBotApi::inject_text_with_lone_surrogate`]).
//!
//! Every request is logged as a [`RequestRecord`] WITHOUT the token. A request may name
//! its sender with the `X-Baton-Device` header (baton's Telegram adapter sends it only when
//! pointed at a non-default API URL); the TCP peer address is recorded as well.
//!
//! Tests drive it in-process through [`FakeBotApi`]; other processes (the demo) use the
//! control routes under `/_fake/`: `POST /_fake/inject` (a raw update, or
//! `{"chat_id":…, "thread_id":…, "text":…}`), `POST /_fake/quiet_week`,
//! `GET /_fake/requests`, `GET /_fake/sent`, `GET /_fake/pending`.
//!
//! Must never: listen on a non-loopback address by default, record the token, or panic on
//! any request.
//!
//! Layout: [`state`] (what it remembers), [`params`] and [`html`] (reading requests),
//! [`kinds`] and [`menus`] (Telegram's rules for update kinds and command menus),
//! [`methods`] (the API itself); this module starts the server and is the tests'
//! handle on it ([`FakeBotApi`]).

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use serde_json::Value;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub mod html;
pub mod methods;
pub mod params;
pub mod state;

pub use state::{
    CONFLICT_OTHER_GET_UPDATES, DEVICE_HEADER, FakeBotConfig, RequestRecord, SentMessage,
};

use kinds::AllowedUpdates;
use menus::Menus;
use menus::Scope;
use methods::{dispatch, inject, quiet_week, text_update};
use state::{FakeState, LONE_SURROGATE_MARKER, Shared};

pub mod kinds;

pub mod menus;

/// A running fake server. Dropping it stops the server.
pub struct FakeBotApi {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
}

impl Drop for FakeBotApi {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
    }
}

/// Starts a fake on `addr` (use port 0 for any) and returns its handle.
///
/// For `baton fake-telegram`: bind, print [`FakeBotApi::api_url`], wait for a signal.
pub async fn serve(addr: SocketAddr, mut config: FakeBotConfig) -> std::io::Result<FakeBotApi> {
    let prefix = config.path_prefix.trim_matches('/');
    config.path_prefix = if prefix.is_empty() {
        String::new()
    } else {
        format!("/{prefix}")
    };
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local_addr = listener.local_addr()?;
    let (version, _) = watch::channel(0);
    let first_update_id = config.first_update_id;
    let shared = Arc::new(Shared {
        config,
        state: Mutex::new(FakeState {
            next_update_id: first_update_id,
            next_message_id: 1,
            pending: VecDeque::new(),
            poll_generation: 0,
            requests: Vec::new(),
            sent: Vec::new(),
            menus: Menus::default(),
            allowed_updates: AllowedUpdates::default(),
            filtered: Vec::new(),
            webhook_url: None,
            failures: VecDeque::new(),
            held: HashSet::new(),
            token_refused: false,
        }),
        version,
        shutdown: CancellationToken::new(),
    });
    let router = Router::new().fallback(dispatch).with_state(shared.clone());
    let stop = shared.shutdown.clone();
    tokio::spawn(async move {
        let service = router.into_make_service_with_connect_info::<SocketAddr>();
        let served = axum::serve(listener, service)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
        if let Err(error) = served {
            tracing::error!(%error, "fake Bot API server stopped");
        }
    });
    Ok(FakeBotApi { shared, local_addr })
}

impl FakeBotApi {
    /// Starts a fake with the default config on a free loopback port.
    pub async fn start() -> std::io::Result<FakeBotApi> {
        Self::start_with(FakeBotConfig::default()).await
    }

    pub async fn start_with(config: FakeBotConfig) -> std::io::Result<FakeBotApi> {
        serve(SocketAddr::from(([127, 0, 0, 1], 0)), config).await
    }

    /// The base URL for `Bot::set_api_url` / `--telegram-api-url`, path prefix included,
    /// with a trailing slash.
    pub fn api_url(&self) -> String {
        format!(
            "http://{}{}/",
            self.local_addr, self.shared.config.path_prefix
        )
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn token(&self) -> &str {
        &self.shared.config.token
    }

    pub fn config(&self) -> &FakeBotConfig {
        &self.shared.config
    }

    /// Queues a raw update; its `update_id` is assigned (overwritten) and returned.
    /// Any JSON is accepted — unknown kinds, missing fields, non-objects.
    pub fn inject_raw(&self, update: Value) -> i64 {
        inject(&self.shared, update)
    }

    /// Queues a user's text message in `chat_id` (and topic `thread_id`); a leading `/word`
    /// gets a `bot_command` entity as Telegram adds one. Returns the update id.
    pub fn inject_text(&self, chat_id: i64, thread_id: Option<i64>, text: &str) -> i64 {
        let message_id = {
            let mut state = self.shared.lock();
            state.next_message_id += 1;
            state.next_message_id
        };
        inject(
            &self.shared,
            text_update(chat_id, thread_id, text, message_id),
        )
    }

    /// Queues a user's text message whose JSON, as served, carries a lone UTF-16
    /// surrogate escape (`\ud800`) between `before` and `after`. Returns the update id.
    pub fn inject_text_with_lone_surrogate(
        &self,
        chat_id: i64,
        thread_id: Option<i64>,
        before: &str,
        after: &str,
    ) -> i64 {
        self.inject_text(
            chat_id,
            thread_id,
            &format!("{before}{LONE_SURROGATE_MARKER}{after}"),
        )
    }

    /// A week passes without updates: Telegram forgets the updates never confirmed (it
    /// keeps them 24 h) and picks the next update id at random, below the old one.
    /// Returns that id. A `getUpdates` with an offset above it confirms nothing until an
    /// offset within the new sequence is sent.
    pub fn quiet_week(&self) -> i64 {
        quiet_week(&self.shared)
    }

    /// While `refused`, every call answers 401 Unauthorized, as when the bot's token was
    /// revoked (BotFather /revoke); `false` accepts it again.
    pub fn refuse_token(&self, refused: bool) {
        self.shared.lock().token_refused = refused;
        self.shared.changed();
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.lock().requests.clone()
    }

    /// The `getUpdates` requests so far.
    pub fn get_updates_requests(&self) -> Vec<RequestRecord> {
        self.requests()
            .into_iter()
            .filter(|r| r.is("getUpdates"))
            .collect()
    }

    pub fn sent_messages(&self) -> Vec<SentMessage> {
        self.shared.lock().sent.clone()
    }

    /// Ids of updates not yet confirmed by an `offset`.
    pub fn pending_update_ids(&self) -> Vec<i64> {
        self.shared.lock().pending.iter().map(|u| u.id).collect()
    }

    /// The default scope's command list (what `setMyCommands` without a scope set).
    pub fn commands(&self) -> Option<Value> {
        self.commands_in(Scope::Default)
    }

    /// The list set for exactly `scope` (no language code), as `getMyCommands` answers it.
    pub fn commands_in(&self, scope: Scope) -> Option<Value> {
        self.shared.lock().menus.get(scope, "").cloned()
    }

    /// The menu a (non-admin) member of `chat_id` sees: Telegram's scope order.
    pub fn menu_seen_in(&self, chat_id: i64) -> Value {
        let user_id = 4242; // the tester of `inject_text`
        self.shared
            .lock()
            .menus
            .seen_in(chat_id, user_id, false, "")
    }

    /// The command names of [`FakeBotApi::menu_seen_in`].
    pub fn menu_names_seen_in(&self, chat_id: i64) -> Vec<String> {
        let menu = self.menu_seen_in(chat_id);
        menu.as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["command"].as_str().map(str::to_owned))
            .collect()
    }

    /// Sets a scope's command list directly, as another program using the bot might.
    pub fn set_commands_in(&self, scope: Scope, commands: Value) {
        self.shared.lock().menus.set(scope, "", commands);
        self.shared.changed();
    }

    /// The `allowed_updates` in force (`None`: Telegram's default).
    pub fn allowed_updates(&self) -> Option<Vec<String>> {
        self.shared
            .lock()
            .allowed_updates
            .kinds()
            .map(<[String]>::to_vec)
    }

    /// Ids of injected updates that were never created: their kind was not allowed.
    pub fn filtered_update_ids(&self) -> Vec<i64> {
        self.shared.lock().filtered.clone()
    }

    pub fn webhook_url(&self) -> Option<String> {
        self.shared.lock().webhook_url.clone()
    }

    /// Sets or clears a webhook, as another program using the same bot might.
    pub fn set_webhook(&self, url: Option<&str>) {
        self.shared.lock().webhook_url = url.map(str::to_owned);
        self.shared.changed();
    }

    /// Makes the next call of `method` answer `status` with `body` (e.g. a 429 with
    /// `parameters.retry_after`).
    pub fn fail_next(&self, method: &str, status: u16, body: Value) {
        let method = method.to_ascii_lowercase();
        self.shared
            .lock()
            .failures
            .push_back((method, status, body));
    }

    /// Makes every call of `method` (new ones and those already waiting) hang unanswered
    /// until [`FakeBotApi::release`]: what a caller sees of a black-holed network or a
    /// stalled server. The call is logged on arrival with `status: None`.
    pub fn hold(&self, method: &str) {
        self.shared.lock().held.insert(method.to_ascii_lowercase());
        self.shared.changed();
    }

    /// Lets held calls of `method` proceed (see [`FakeBotApi::hold`]).
    pub fn release(&self, method: &str) {
        self.shared.lock().held.remove(&method.to_ascii_lowercase());
        self.shared.changed();
    }

    /// Waits until `check` returns `Some`, re-checking on every change; `None` on timeout.
    pub async fn wait_for<T>(
        &self,
        timeout: Duration,
        mut check: impl FnMut(&FakeBotApi) -> Option<T>,
    ) -> Option<T> {
        let mut version = self.shared.version.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            version.borrow_and_update();
            if let Some(found) = check(self) {
                return Some(found);
            }
            tokio::select! {
                changed = version.changed() => if changed.is_err() { return None },
                () = tokio::time::sleep_until(deadline) => return check(self),
            }
        }
    }

    /// Stops serving; waiting long polls end at once.
    pub fn shutdown(&self) {
        self.shared.shutdown.cancel();
    }
}
