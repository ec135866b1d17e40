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

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value, json};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub mod kinds;
pub mod menus;

use kinds::AllowedUpdates;
use menus::{Menus, Scope};

/// The header a caller may use to say which device it is.
pub const DEVICE_HEADER: &str = "x-baton-device";

/// The 409 text Telegram sends to the older of two pollers (teloxide matches it exactly).
pub const CONFLICT_OTHER_GET_UPDATES: &str = "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running";
const CONFLICT_WEBHOOK: &str = "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first";
const MESSAGE_TEXT_CHARS_MAX: usize = 4096;
/// Stands for a lone `\ud800` escape in a stored text; every response body has it
/// replaced by that escape (no Rust string can hold a lone surrogate).
const LONE_SURROGATE_MARKER: &str = "\u{10fffd}lone-surrogate\u{10fffd}";
const HTML_TAGS: &[&str] = &[
    "b",
    "strong",
    "i",
    "em",
    "u",
    "ins",
    "s",
    "strike",
    "del",
    "span",
    "tg-spoiler",
    "a",
    "code",
    "pre",
    "blockquote",
    "tg-emoji",
];

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

struct StoredUpdate {
    id: i64,
    body: Arc<Value>,
}

struct FakeState {
    next_update_id: i64,
    next_message_id: i64,
    pending: VecDeque<StoredUpdate>,
    poll_generation: u64,
    requests: Vec<RequestRecord>,
    sent: Vec<SentMessage>,
    menus: Menus,
    allowed_updates: AllowedUpdates,
    /// Ids of injected updates never created because their kind was not allowed.
    filtered: Vec<i64>,
    webhook_url: Option<String>,
    /// Scripted failures: (lower-case method, HTTP status, body), used first-come.
    failures: VecDeque<(String, u16, Value)>,
    /// Lower-case methods whose calls wait, unanswered, until released.
    held: HashSet<String>,
    /// Every call gets 401 Unauthorized, as after a token is revoked.
    token_refused: bool,
}

struct Shared {
    config: FakeBotConfig,
    state: Mutex<FakeState>,
    /// Bumped on every change, so waiters re-check.
    version: watch::Sender<u64>,
    shutdown: CancellationToken,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, FakeState> {
        // A poisoned lock only means a panic elsewhere mid-update; the state stays usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn changed(&self) {
        self.version.send_modify(|v| *v = v.wrapping_add(1));
    }
}

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

fn inject(shared: &Shared, mut update: Value) -> i64 {
    let mut state = shared.lock();
    let id = state.next_update_id;
    state.next_update_id += 1;
    if let Some(object) = update.as_object_mut() {
        object.insert("update_id".to_owned(), json!(id));
    }
    if state.allowed_updates.admits(&update) {
        state.pending.push_back(StoredUpdate {
            id,
            body: Arc::new(update),
        });
    } else {
        state.filtered.push(id);
    }
    drop(state);
    shared.changed();
    id
}

fn quiet_week(shared: &Shared) -> i64 {
    use rand::Rng as _;
    let mut state = shared.lock();
    let old = state.next_update_id;
    let next = rand::rng().random_range(1..=(old / 2).max(1));
    state.pending.clear();
    state.next_update_id = next;
    drop(state);
    shared.changed();
    next
}

fn unix_now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn chat_json(chat_id: i64, is_forum: bool) -> Value {
    if chat_id > 0 {
        json!({"id": chat_id, "type": "private", "first_name": "Tester", "username": "tester"})
    } else {
        json!({"id": chat_id, "type": "supergroup", "title": "Baton test group", "is_forum": is_forum})
    }
}

/// A realistic `message` update from a human user.
fn text_update(chat_id: i64, thread_id: Option<i64>, text: &str, message_id: i64) -> Value {
    let mut message = json!({
        "message_id": message_id,
        "from": {"id": 4242, "is_bot": false, "first_name": "Tester", "username": "tester"},
        "chat": chat_json(chat_id, thread_id.is_some()),
        "date": unix_now_s(),
        "text": text,
    });
    if let Some(thread_id) = thread_id {
        message["message_thread_id"] = json!(thread_id);
        message["is_topic_message"] = json!(true);
    }
    if text.starts_with('/') {
        let command = text.split_whitespace().next().unwrap_or(text);
        let length_utf16 = command.encode_utf16().count();
        message["entities"] = json!([{"type": "bot_command", "offset": 0, "length": length_utf16}]);
    }
    json!({ "message": message })
}

type ApiResult = Result<Value, (u16, String, Option<Value>)>;

fn api_error(status: u16, description: &str) -> (u16, String, Option<Value>) {
    (status, description.to_owned(), None)
}

fn respond(status: u16, body: Value) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    // serde_json writes the marker's characters as they are: swap in the lone escape.
    let text = body.to_string().replace(LONE_SURROGATE_MARKER, "\\ud800");
    (status, [(header::CONTENT_TYPE, "application/json")], text).into_response()
}

fn respond_result(result: ApiResult) -> (u16, Response) {
    match result {
        Ok(value) => (200, respond(200, json!({"ok": true, "result": value}))),
        Err((status, description, parameters)) => {
            let mut body = json!({"ok": false, "error_code": status, "description": description});
            if let Some(parameters) = parameters {
                body["parameters"] = parameters;
            }
            (status, respond(status, body))
        }
    }
}

async fn dispatch(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path();
    if let Some(control) = path.strip_prefix("/_fake/") {
        return control_route(&shared, &method, control, &body);
    }
    let Some((token, api_method)) = path
        .strip_prefix(shared.config.path_prefix.as_str())
        .and_then(|rest| rest.strip_prefix("/bot"))
        .and_then(|rest| rest.rsplit_once('/'))
    else {
        return respond(
            404,
            json!({"ok": false, "error_code": 404, "description": "Not Found"}),
        );
    };
    let params = match parse_params(uri.query(), &headers, &body) {
        Ok(params) => params,
        Err(reason) => return respond_result(Err(api_error(400, &reason))).1,
    };
    let token_ok = token == shared.config.token && !shared.lock().token_refused;
    let device = headers
        .get(DEVICE_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let seq = {
        let mut state = shared.lock();
        let seq = state.requests.len() as u64;
        state.requests.push(RequestRecord {
            seq,
            method: api_method.to_owned(),
            params: Value::Object(params.clone()),
            received_at_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            device: device.clone(),
            peer: Some(peer),
            token_ok,
            status: None,
        });
        seq
    };
    shared.changed();
    let result = if token_ok {
        call(&shared, api_method, &params, device).await
    } else {
        Err(api_error(401, "Unauthorized"))
    };
    let (status, response) = respond_result(result);
    if let Some(record) = shared.lock().requests.get_mut(seq as usize) {
        record.status = Some(status);
    }
    shared.changed();
    response
}

async fn call(
    shared: &Shared,
    api_method: &str,
    params: &Map<String, Value>,
    device: Option<String>,
) -> ApiResult {
    let lower = api_method.to_ascii_lowercase();
    wait_while_held(shared, &lower).await?;
    if let Some(failure) = take_failure(shared, &lower) {
        return Err(failure);
    }
    match lower.as_str() {
        "getme" => Ok(get_me(&shared.config)),
        "getupdates" => get_updates(shared, params).await,
        "sendmessage" => send_message(shared, params, device),
        "setmycommands" => set_my_commands(shared, params),
        "getmycommands" => {
            let (scope, language) = menu_key(params)?;
            let state = shared.lock();
            Ok(state
                .menus
                .get(scope, &language)
                .cloned()
                .unwrap_or_else(|| json!([])))
        }
        "deletemycommands" => {
            let (scope, language) = menu_key(params)?;
            shared.lock().menus.delete(scope, &language);
            Ok(json!(true))
        }
        "deletewebhook" => {
            let mut state = shared.lock();
            state.webhook_url = None;
            if param_bool(params, "drop_pending_updates") {
                state.pending.clear();
            }
            Ok(json!(true))
        }
        "setwebhook" => {
            shared.lock().webhook_url = param_string(params, "url");
            Ok(json!(true))
        }
        "getwebhookinfo" => {
            let state = shared.lock();
            Ok(json!({
                "url": state.webhook_url.clone().unwrap_or_default(),
                "has_custom_certificate": false,
                "pending_update_count": state.pending.len(),
            }))
        }
        // Shows "typing…" in the chat; the fake checks only that a chat is named.
        "sendchataction" => match params.get("chat_id") {
            Some(_) => Ok(json!(true)),
            None => Err(api_error(400, "Bad Request: chat_id is empty")),
        },
        _ => Err(api_error(404, "Not Found")),
    }
}

/// Returns once `lower_method` is not held; a shutdown ends the wait as a 502.
async fn wait_while_held(
    shared: &Shared,
    lower_method: &str,
) -> Result<(), (u16, String, Option<Value>)> {
    let mut version = shared.version.subscribe();
    loop {
        version.borrow_and_update();
        if !shared.lock().held.contains(lower_method) {
            return Ok(());
        }
        tokio::select! {
            changed = version.changed() => if changed.is_err() {
                return Err(api_error(502, "Bad Gateway"));
            },
            () = shared.shutdown.cancelled() => return Err(api_error(502, "Bad Gateway")),
        }
    }
}

fn take_failure(shared: &Shared, lower_method: &str) -> Option<(u16, String, Option<Value>)> {
    let mut state = shared.lock();
    let index = state
        .failures
        .iter()
        .position(|(m, _, _)| m == lower_method)?;
    let (_, status, body) = state.failures.remove(index)?;
    let description = body
        .get("description")
        .and_then(Value::as_str)
        .unwrap_or("Scripted failure")
        .to_owned();
    Some((status, description, body.get("parameters").cloned()))
}

fn get_me(config: &FakeBotConfig) -> Value {
    json!({
        "id": config.bot_user_id,
        "is_bot": true,
        "first_name": "Baton Test Bot",
        "username": config.bot_username,
        "can_join_groups": true,
        "can_read_all_group_messages": false,
        "supports_inline_queries": false,
        "can_connect_to_business": false,
        "has_main_web_app": false,
    })
}

/// Long poll with Telegram's offset, limit, timeout and conflict rules.
async fn get_updates(shared: &Shared, params: &Map<String, Value>) -> ApiResult {
    let offset = param_i64(params, "offset").unwrap_or(0);
    let limit = param_i64(params, "limit").unwrap_or(100).clamp(1, 100) as usize;
    let timeout_s = param_i64(params, "timeout").unwrap_or(0).clamp(0, 50) as u64;
    let allowed = AllowedUpdates::from_param(params.get("allowed_updates").map(|v| v as &Value))
        .map_err(|reason| api_error(400, &reason))?;
    let my_generation = {
        let mut state = shared.lock();
        if state.webhook_url.is_some() {
            return Err(api_error(409, CONFLICT_WEBHOOK));
        }
        if let Some(allowed) = allowed {
            state.allowed_updates = allowed;
        }
        state.poll_generation += 1;
        if offset > 0 && offset <= state.next_update_id {
            state.pending.retain(|u| u.id >= offset);
        } else if offset < 0 {
            let keep = offset.unsigned_abs() as usize;
            let excess = state.pending.len().saturating_sub(keep);
            state.pending.drain(..excess);
        }
        state.poll_generation
    };
    shared.changed();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout_s);
    let mut version = shared.version.subscribe();
    loop {
        version.borrow_and_update();
        {
            let state = shared.lock();
            if state.poll_generation != my_generation {
                return Err(api_error(409, CONFLICT_OTHER_GET_UPDATES));
            }
            if !state.pending.is_empty() || tokio::time::Instant::now() >= deadline {
                let batch = state
                    .pending
                    .iter()
                    .take(limit)
                    .map(|u| u.body.as_ref().clone());
                return Ok(Value::Array(batch.collect()));
            }
        }
        tokio::select! {
            _ = version.changed() => {}
            () = tokio::time::sleep_until(deadline) => {}
            () = shared.shutdown.cancelled() => return Err(api_error(502, "Bad Gateway")),
        }
    }
}

fn send_message(shared: &Shared, params: &Map<String, Value>, device: Option<String>) -> ApiResult {
    let chat_id = param_i64(params, "chat_id")
        .ok_or_else(|| api_error(400, "Bad Request: chat not found"))?;
    let text = param_string(params, "text").unwrap_or_default();
    if text.trim().is_empty() {
        return Err(api_error(400, "Bad Request: message text is empty"));
    }
    let parse_mode = param_string(params, "parse_mode");
    let plain_text = match parse_mode.as_deref() {
        Some(mode) if mode.eq_ignore_ascii_case("html") => {
            parse_telegram_html(&text).map_err(|reason| {
                api_error(400, &format!("Bad Request: can't parse entities: {reason}"))
            })?
        }
        _ => text.clone(),
    };
    if plain_text.encode_utf16().count() > MESSAGE_TEXT_CHARS_MAX {
        return Err(api_error(400, "Bad Request: message is too long"));
    }
    let thread_id = param_i64(params, "message_thread_id");
    let mut state = shared.lock();
    state.next_message_id += 1;
    let message_id = state.next_message_id;
    state.sent.push(SentMessage {
        message_id,
        chat_id,
        message_thread_id: thread_id,
        parse_mode,
        text,
        plain_text: plain_text.clone(),
        device,
    });
    let config = &shared.config;
    let mut message = json!({
        "message_id": message_id,
        "from": {"id": config.bot_user_id, "is_bot": true, "first_name": "Baton Test Bot", "username": config.bot_username},
        "chat": chat_json(chat_id, thread_id.is_some()),
        "date": unix_now_s(),
        "text": plain_text,
    });
    if let Some(thread_id) = thread_id {
        message["message_thread_id"] = json!(thread_id);
        message["is_topic_message"] = json!(true);
    }
    Ok(message)
}

fn set_my_commands(shared: &Shared, params: &Map<String, Value>) -> ApiResult {
    let commands = params
        .get("commands")
        .map(json_param)
        .ok_or_else(|| api_error(400, "Bad Request: parameter \"commands\" is required"))?;
    let list = commands
        .as_array()
        .ok_or_else(|| api_error(400, "Bad Request: can't parse commands JSON object"))?;
    for entry in list {
        let name = entry.get("command").and_then(Value::as_str).unwrap_or("");
        let name_ok = (1..=32).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !name_ok {
            return Err(api_error(400, "Bad Request: BOT_COMMAND_INVALID"));
        }
        let description = entry
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or("");
        if !(3..=256).contains(&description.chars().count()) {
            return Err(api_error(
                400,
                "Bad Request: BOT_COMMAND_DESCRIPTION_INVALID",
            ));
        }
    }
    let (scope, language) = menu_key(params)?;
    shared.lock().menus.set(scope, &language, commands);
    Ok(json!(true))
}

/// The `scope` and `language_code` of a command-menu call.
fn menu_key(params: &Map<String, Value>) -> Result<(Scope, String), (u16, String, Option<Value>)> {
    let scope = Scope::from_param(params.get("scope")).map_err(|reason| api_error(400, &reason))?;
    let language = menus::language_from_param(params.get("language_code"))
        .map_err(|reason| api_error(400, &reason))?;
    Ok((scope, language))
}

/// The control routes for other processes (see the module doc).
fn control_route(shared: &Shared, method: &Method, route: &str, body: &Bytes) -> Response {
    match (method.as_str(), route) {
        ("POST", "inject") => {
            let Ok(request) = serde_json::from_slice::<Value>(body) else {
                return respond(400, json!({"error": "the body must be JSON"}));
            };
            let id = match (
                request.get("chat_id").and_then(Value::as_i64),
                request.get("text").and_then(Value::as_str),
            ) {
                (Some(chat_id), Some(text)) => {
                    let thread_id = request.get("thread_id").and_then(Value::as_i64);
                    let message_id = {
                        let mut state = shared.lock();
                        state.next_message_id += 1;
                        state.next_message_id
                    };
                    inject(shared, text_update(chat_id, thread_id, text, message_id))
                }
                _ => inject(shared, request),
            };
            respond(200, json!({"update_id": id}))
        }
        ("POST", "quiet_week") => respond(200, json!({"next_update_id": quiet_week(shared)})),
        ("GET", "requests") => respond(200, json!(shared.lock().requests)),
        ("GET", "sent") => respond(200, json!(shared.lock().sent)),
        ("GET", "pending") => {
            let ids: Vec<i64> = shared.lock().pending.iter().map(|u| u.id).collect();
            respond(200, json!(ids))
        }
        _ => respond(404, json!({"error": "unknown control route"})),
    }
}

/// Merges query-string and body parameters (JSON object or form-encoded).
fn parse_params(
    query: Option<&str>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Map<String, Value>, String> {
    let mut params = Map::new();
    for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        params.insert(key.into_owned(), Value::String(value.into_owned()));
    }
    if body.is_empty() {
        return Ok(params);
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if content_type.contains("x-www-form-urlencoded") {
        for (key, value) in form_urlencoded::parse(body) {
            params.insert(key.into_owned(), Value::String(value.into_owned()));
        }
        return Ok(params);
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(object)) => {
            params.extend(object);
            Ok(params)
        }
        _ => Err("Bad Request: the request body must be a JSON object or form data".to_owned()),
    }
}

/// A parameter that may arrive as JSON or as a JSON-encoded string (form bodies).
fn json_param(value: &Value) -> Value {
    match value {
        Value::String(text) => serde_json::from_str(text).unwrap_or_else(|_| value.clone()),
        other => other.clone(),
    }
}

fn param_i64(params: &Map<String, Value>, key: &str) -> Option<i64> {
    match params.get(key)? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn param_string(params: &Map<String, Value>, key: &str) -> Option<String> {
    match params.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

fn param_bool(params: &Map<String, Value>, key: &str) -> bool {
    match params.get(key) {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s == "true" || s == "1",
        _ => false,
    }
}

/// Checks `text` as Telegram's HTML parse mode does and returns the text a user reads.
///
/// Only Telegram's tags are allowed and they must nest properly; `&lt; &gt; &amp; &quot;`
/// and numeric entities are decoded; any other `&` is kept literally.
pub fn parse_telegram_html(text: &str) -> Result<String, String> {
    let mut plain = String::with_capacity(text.len());
    let mut open_tags: Vec<String> = Vec::new();
    let mut rest = text;
    while let Some(position) = rest.find(['<', '&']) {
        plain.push_str(&rest[..position]);
        let offset = text.len() - rest.len() + position;
        rest = &rest[position..];
        if rest.starts_with('&') {
            let (decoded, used) = decode_entity(rest);
            plain.push_str(&decoded);
            rest = &rest[used..];
            continue;
        }
        let end = rest
            .find('>')
            .ok_or_else(|| format!("Unclosed start tag at byte offset {offset}"))?;
        let inner = &rest[1..end];
        rest = &rest[end + 1..];
        if let Some(name) = inner.strip_prefix('/') {
            let name = name.trim().to_ascii_lowercase();
            match open_tags.pop() {
                Some(open) if open == name => {}
                _ => return Err(format!("Unexpected end tag at byte offset {offset}")),
            }
            continue;
        }
        let name = inner
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        if !HTML_TAGS.contains(&name.as_str()) {
            return Err(format!(
                "Unsupported start tag \"{name}\" at byte offset {offset}"
            ));
        }
        open_tags.push(name);
    }
    plain.push_str(rest);
    match open_tags.last() {
        Some(open) => Err(format!(
            "Can't find end tag corresponding to start tag \"{open}\""
        )),
        None => Ok(plain),
    }
}

/// Decodes the entity at the start of `text` (which starts with `&`): (text, bytes used).
fn decode_entity(text: &str) -> (String, usize) {
    // Byte search: a `;` byte is always a char boundary, so the slices below are safe.
    let Some(semicolon) = text.bytes().take(12).position(|b| b == b';') else {
        return ("&".to_owned(), 1);
    };
    let name = &text[1..semicolon];
    let decoded = match name {
        "lt" => Some('<'),
        "gt" => Some('>'),
        "amp" => Some('&'),
        "quot" => Some('"'),
        _ => name.strip_prefix('#').and_then(|number| {
            let code = match number.strip_prefix(['x', 'X']) {
                Some(hex) => u32::from_str_radix(hex, 16).ok(),
                None => number.parse().ok(),
            };
            code.and_then(char::from_u32)
        }),
    };
    match decoded {
        Some(c) => (c.to_string(), semicolon + 1),
        None => ("&".to_owned(), 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_accepts_telegram_tags_and_entities() {
        assert_eq!(
            parse_telegram_html("<b>a&lt;b</b> &amp; c &x").unwrap(),
            "a<b & c &x"
        );
        assert!(
            parse_telegram_html("<dev>")
                .unwrap_err()
                .contains("Unsupported start tag")
        );
        assert!(parse_telegram_html("<b>x").is_err());
        assert!(parse_telegram_html("<b>x</i>").is_err());
    }
}
