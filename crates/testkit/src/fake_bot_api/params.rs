//! Request parameters as Telegram reads them: the query string, then a JSON or form body.
//!
//! Owns: merging those sources and reading typed values from them. Must never: panic on
//! a malformed body (it is the caller's 400).

use axum::body::Bytes;
use axum::http::{HeaderMap, header};
use serde_json::{Map, Value};

/// Merges query-string and body parameters (JSON object or form-encoded).
pub(crate) fn parse_params(
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
pub(crate) fn json_param(value: &Value) -> Value {
    match value {
        Value::String(text) => serde_json::from_str(text).unwrap_or_else(|_| value.clone()),
        other => other.clone(),
    }
}

pub(crate) fn param_i64(params: &Map<String, Value>, key: &str) -> Option<i64> {
    match params.get(key)? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

pub(crate) fn param_string(params: &Map<String, Value>, key: &str) -> Option<String> {
    match params.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

pub(crate) fn param_bool(params: &Map<String, Value>, key: &str) -> bool {
    match params.get(key) {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s == "true" || s == "1",
        _ => false,
    }
}
