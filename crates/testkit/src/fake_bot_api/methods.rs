//! The Bot API methods the fake answers, with Telegram's semantics where baton depends
//! on them, and the `/_fake/` control routes.
//!
//! Owns: routing a request to its method (names matched case-insensitively), scripted
//! failures and held calls, `getMe`, `getUpdates` (long poll, offsets, 409s, the quiet
//! week's id restart), `sendMessage`, the command menus, and injecting updates. Must
//! never: panic on any request, or record the token.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::html::parse_telegram_html;
use super::kinds::AllowedUpdates;
use super::menus::{self, Scope};
use super::params::{json_param, param_bool, param_i64, param_string, parse_params};
use super::state::*;

pub(crate) fn inject(shared: &Shared, mut update: Value) -> i64 {
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

pub(crate) fn quiet_week(shared: &Shared) -> i64 {
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

pub(crate) fn unix_now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

pub(crate) fn chat_json(chat_id: i64, is_forum: bool) -> Value {
    if chat_id > 0 {
        json!({"id": chat_id, "type": "private", "first_name": "Tester", "username": "tester"})
    } else {
        json!({"id": chat_id, "type": "supergroup", "title": "Baton test group", "is_forum": is_forum})
    }
}

/// A realistic `message` update from a human user.
pub(crate) fn text_update(
    chat_id: i64,
    thread_id: Option<i64>,
    text: &str,
    message_id: i64,
) -> Value {
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

pub(crate) type ApiResult = Result<Value, (u16, String, Option<Value>)>;

pub(crate) fn api_error(status: u16, description: &str) -> (u16, String, Option<Value>) {
    (status, description.to_owned(), None)
}

pub(crate) fn respond(status: u16, body: Value) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    // serde_json writes the marker's characters as they are: swap in the lone escape.
    let text = body.to_string().replace(LONE_SURROGATE_MARKER, "\\ud800");
    (status, [(header::CONTENT_TYPE, "application/json")], text).into_response()
}

pub(crate) fn respond_result(result: ApiResult) -> (u16, Response) {
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

pub(crate) async fn dispatch(
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

pub(crate) async fn call(
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
pub(crate) async fn wait_while_held(
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

pub(crate) fn take_failure(
    shared: &Shared,
    lower_method: &str,
) -> Option<(u16, String, Option<Value>)> {
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

pub(crate) fn get_me(config: &FakeBotConfig) -> Value {
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
pub(crate) async fn get_updates(shared: &Shared, params: &Map<String, Value>) -> ApiResult {
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

pub(crate) fn send_message(
    shared: &Shared,
    params: &Map<String, Value>,
    device: Option<String>,
) -> ApiResult {
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

pub(crate) fn set_my_commands(shared: &Shared, params: &Map<String, Value>) -> ApiResult {
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
pub(crate) fn menu_key(
    params: &Map<String, Value>,
) -> Result<(Scope, String), (u16, String, Option<Value>)> {
    let scope = Scope::from_param(params.get("scope")).map_err(|reason| api_error(400, &reason))?;
    let language = menus::language_from_param(params.get("language_code"))
        .map_err(|reason| api_error(400, &reason))?;
    Ok((scope, language))
}

/// The control routes for other processes (see the module doc).
pub(crate) fn control_route(
    shared: &Shared,
    method: &Method,
    route: &str,
    body: &Bytes,
) -> Response {
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
