//! The fake's `allowed_updates`, kept the way Telegram keeps it: a list per bot, set by
//! whichever `getUpdates` call last passed one, and applied when an update is CREATED
//! ("doesn't affect updates created before the call"): an update of a kind that is not
//! allowed is never queued, so no later `getUpdates` can get it.
//!
//! Owns: the update kinds the Bot API knows, the default list (every kind except
//! `chat_member`, `message_reaction` and `message_reaction_count`), parsing the parameter
//! (a JSON list, or a JSON-encoded string in forms and query strings; an empty list
//! means the default), and classifying an update by its kind.
//!
//! A kind the fake does not know (a future kind, a malformed update) is always admitted:
//! it stands in for whatever a newer server might send, which tests of baton's tolerance
//! need to reach it. Must never: panic on any update or parameter.

use serde_json::Value;

/// Every update kind of the Bot API (the fields of `Update` besides `update_id`).
pub const KNOWN_KINDS: &[&str] = &[
    "message",
    "edited_message",
    "channel_post",
    "edited_channel_post",
    "business_connection",
    "business_message",
    "edited_business_message",
    "deleted_business_messages",
    "message_reaction",
    "message_reaction_count",
    "inline_query",
    "chosen_inline_result",
    "callback_query",
    "shipping_query",
    "pre_checkout_query",
    "purchased_paid_media",
    "poll",
    "poll_answer",
    "my_chat_member",
    "chat_member",
    "chat_join_request",
    "chat_boost",
    "removed_chat_boost",
];

/// Kinds a bot gets only when it asks for them by name.
const ONLY_WHEN_ASKED: &[&str] = &["chat_member", "message_reaction", "message_reaction_count"];

/// The bot's current `allowed_updates`; `None` is Telegram's default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedUpdates(Option<Vec<String>>);

impl AllowedUpdates {
    /// Reads a `getUpdates` `allowed_updates` parameter; `Ok(None)` when it was not
    /// passed (the previous list stays). The error is Telegram's description.
    pub fn from_param(param: Option<&Value>) -> Result<Option<AllowedUpdates>, String> {
        let Some(param) = param else {
            return Ok(None);
        };
        let value = match param {
            Value::String(text) => serde_json::from_str(text).unwrap_or(Value::Null),
            other => other.clone(),
        };
        let Some(list) = value.as_array() else {
            return Err("Bad Request: can't parse allowed updates list".into());
        };
        let kinds: Option<Vec<String>> = list
            .iter()
            .map(|kind| kind.as_str().map(str::to_owned))
            .collect();
        let kinds = kinds.ok_or("Bad Request: can't parse allowed updates list")?;
        Ok(Some(AllowedUpdates((!kinds.is_empty()).then_some(kinds))))
    }

    /// The list in force, as `getWebhookInfo` reports it (`None`: the default).
    pub fn kinds(&self) -> Option<&[String]> {
        self.0.as_deref()
    }

    /// True when an update like this one would be created for the bot.
    pub fn admits(&self, update: &Value) -> bool {
        let Some(kind) = kind_of(update) else {
            return true;
        };
        match &self.0 {
            Some(kinds) => kinds.iter().any(|allowed| allowed == kind),
            None => !ONLY_WHEN_ASKED.contains(&kind),
        }
    }
}

/// The known kind an update carries, if any.
pub fn kind_of(update: &Value) -> Option<&'static str> {
    let object = update.as_object()?;
    KNOWN_KINDS
        .iter()
        .copied()
        .find(|kind| object.contains_key(*kind))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_default_leaves_out_reactions_and_member_changes() {
        let default = AllowedUpdates::default();
        assert!(default.admits(&json!({"message": {}})));
        assert!(!default.admits(&json!({"message_reaction": {}})));
        assert!(
            default.admits(&json!({"future_kind": {}})),
            "unknown kinds pass"
        );
        assert!(default.admits(&json!(["not", "an", "object"])));
    }

    #[test]
    fn an_explicit_list_admits_only_its_kinds_and_an_empty_one_is_the_default() {
        let only = AllowedUpdates::from_param(Some(&json!(["callback_query"])))
            .expect("parses")
            .expect("given");
        assert!(!only.admits(&json!({"message": {}})));
        assert!(only.admits(&json!({"callback_query": {}})));
        let text = json!("[\"message_reaction\"]");
        let reactions = AllowedUpdates::from_param(Some(&text)).unwrap().unwrap();
        assert!(reactions.admits(&json!({"message_reaction": {}})));
        let empty = AllowedUpdates::from_param(Some(&json!([])))
            .unwrap()
            .unwrap();
        assert_eq!(empty, AllowedUpdates::default());
        assert_eq!(AllowedUpdates::from_param(None), Ok(None));
        assert!(AllowedUpdates::from_param(Some(&json!([1]))).is_err());
    }
}
