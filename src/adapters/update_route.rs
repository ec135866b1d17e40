//! Where a raw Telegram update belongs: its id, chat, topic and command text.
//!
//! Owns: reading those few fields from an update kept as raw JSON, for the poller's
//! authorization and the gateway's filter. Works on any update kind that follows Telegram's
//! conventions (`<kind>.chat.id`, `<kind>.message.chat.id`, `message_thread_id`), so new
//! kinds route without a code change.
//!
//! Must never: panic or fail on any JSON shape, or copy the (possibly 4 MB) payload.

use serde_json::Value;

/// What routing needs to know about one update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateRoute {
    /// `None` when the update has no integer `update_id`.
    pub update_id: Option<i64>,
    /// The first key other than `update_id`, e.g. `message`, `callback_query`.
    pub kind: Option<String>,
    pub chat_id: Option<i64>,
    pub thread_id: Option<i64>,
}

impl UpdateRoute {
    /// Reads the routing fields of `payload`; missing or odd fields become `None`.
    pub fn of(payload: &Value) -> UpdateRoute {
        let update_id = payload.get("update_id").and_then(Value::as_i64);
        let kind_entry = payload
            .as_object()
            .and_then(|object| object.iter().find(|(key, _)| key.as_str() != "update_id"));
        let body = kind_entry.map(|(_, value)| value);
        let nested_message = body.and_then(|b| b.get("message"));
        let chat_id = body
            .and_then(chat_id_of)
            .or_else(|| nested_message.and_then(chat_id_of));
        let thread_id = body
            .and_then(thread_id_of)
            .or_else(|| nested_message.and_then(thread_id_of));
        UpdateRoute {
            update_id,
            kind: kind_entry.map(|(key, _)| key.clone()),
            chat_id,
            thread_id,
        }
    }

    /// True when the update is in `chat_id` and, if `thread_id` is set, in that topic.
    pub fn is_in(&self, chat_id: i64, thread_id: Option<i64>) -> bool {
        self.chat_id == Some(chat_id) && thread_id.is_none_or(|t| self.thread_id == Some(t))
    }
}

fn chat_id_of(value: &Value) -> Option<i64> {
    value.get("chat")?.get("id")?.as_i64()
}

fn thread_id_of(value: &Value) -> Option<i64> {
    value.get("message_thread_id")?.as_i64()
}

/// The text of a new message (`message.text`), the only place baton looks for commands.
pub fn message_text(payload: &Value) -> Option<&str> {
    payload.get("message")?.get("text")?.as_str()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_message_and_callback_routes() {
        let message =
            json!({"update_id": 7, "message": {"chat": {"id": -5}, "message_thread_id": 3}});
        assert_eq!(
            UpdateRoute::of(&message),
            UpdateRoute {
                update_id: Some(7),
                kind: Some("message".into()),
                chat_id: Some(-5),
                thread_id: Some(3)
            }
        );
        let callback = json!({"update_id": 8, "callback_query": {"message": {"chat": {"id": 9}}}});
        assert_eq!(UpdateRoute::of(&callback).chat_id, Some(9));
    }

    #[test]
    fn odd_shapes_give_none() {
        for value in [
            json!(null),
            json!(3),
            json!({"update_id": "x"}),
            json!({"a": []}),
        ] {
            let route = UpdateRoute::of(&value);
            assert_eq!(route.chat_id, None);
            assert!(!route.is_in(1, None));
        }
    }
}
