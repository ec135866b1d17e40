//! Reading the Bot API's answers, and building its URLs, by hand where teloxide cannot.
//!
//! Owns: the raw `getUpdates` answer (lenient: a lone UTF-16 surrogate escape, which
//! strict JSON refuses, becomes U+FFFD so one odd text never blocks the updates after
//! it), telling a 5xx apart, and method URLs under a base that may carry a path prefix.
//! Must never: put the token anywhere but the request URL, or panic on an answer.

use std::time::Duration;

use serde_json::Value;

use super::error::TelegramError;
use crate::adapters::telegram_config::Secret;

/// The API base as teloxide should see it: without a trailing slash after a path prefix
/// (`https://host/tg/` → `https://host/tg`), because teloxide appends `/bot<token>/<method>`
/// to the path as it is and would ask for `/tg//bot…`.
pub(crate) fn api_base(url: &reqwest::Url) -> Result<reqwest::Url, TelegramError> {
    let mut base = url.clone();
    base.path_segments_mut()
        .map_err(|()| TelegramError::Client("the Telegram API URL cannot take a path".into()))?
        .pop_if_empty();
    Ok(base)
}

/// `{base}/bot{token}/{method}`, built as teloxide builds its own requests' URLs, so that
/// the raw getUpdates keeps a self-hosted server's path prefix and goes where every other
/// call goes. `base` comes from [`api_base`] (http or https, so it always takes a path).
pub(crate) fn method_url(mut base: reqwest::Url, token: &Secret, method: &str) -> reqwest::Url {
    if let Ok(mut segments) = base.path_segments_mut() {
        segments.push(&format!("bot{}", token.expose()));
        segments.push(method);
    }
    base
}

pub(crate) fn parse_get_updates(
    status: u16,
    text: &str,
    token: &Secret,
) -> Result<Vec<Value>, TelegramError> {
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
pub(crate) fn parse_response(
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
