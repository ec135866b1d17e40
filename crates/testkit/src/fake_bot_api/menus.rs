//! The fake's command menus, kept the way Telegram keeps them: one list per scope and
//! language, and a resolution order that decides which list a user sees in a chat.
//!
//! Owns: parsing `scope` (`BotCommandScope`: `default`, `all_private_chats`,
//! `all_group_chats`, `all_chat_administrators`, `chat`, `chat_administrators`,
//! `chat_member`) and `language_code`; `setMyCommands` (an empty list removes the
//! scope's list, as `deleteMyCommands` does), `getMyCommands` (exactly the asked scope
//! and language, `[]` when unset: no fallback), and [`Menus::seen_in`], the Bot API's
//! "Determining list of commands" order: the first list that is set wins.
//!
//! Must never: fall back from one scope to another in `getMyCommands` (Telegram does
//! not), or panic on any parameter.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

/// A `BotCommandScope`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    Default,
    AllPrivateChats,
    AllGroupChats,
    AllChatAdministrators,
    Chat(i64),
    ChatAdministrators(i64),
    ChatMember { chat_id: i64, user_id: i64 },
}

impl Scope {
    /// Reads the `scope` parameter (a JSON object, or a JSON-encoded string in forms and
    /// query strings); absent means `default`. The error is Telegram's description.
    pub fn from_param(param: Option<&Value>) -> Result<Scope, String> {
        let Some(param) = param else {
            return Ok(Scope::Default);
        };
        let value = match param {
            Value::String(text) => serde_json::from_str(text).unwrap_or(Value::Null),
            other => other.clone(),
        };
        let Some(object) = value.as_object() else {
            return Err("Bad Request: can't parse BotCommandScope JSON object".into());
        };
        let chat = || id_field(object, "chat_id").ok_or("Bad Request: chat not found");
        let scope = match object.get("type").and_then(Value::as_str).unwrap_or("") {
            "default" => Scope::Default,
            "all_private_chats" => Scope::AllPrivateChats,
            "all_group_chats" => Scope::AllGroupChats,
            "all_chat_administrators" => Scope::AllChatAdministrators,
            "chat" => Scope::Chat(chat()?),
            "chat_administrators" => Scope::ChatAdministrators(chat()?),
            "chat_member" => Scope::ChatMember {
                chat_id: chat()?,
                user_id: id_field(object, "user_id").ok_or("Bad Request: user not found")?,
            },
            _ => return Err("Bad Request: unsupported bot command scope type".into()),
        };
        Ok(scope)
    }

    /// As Telegram writes it, for tests and logs.
    pub fn to_json(self) -> Value {
        match self {
            Scope::Default => json!({"type": "default"}),
            Scope::AllPrivateChats => json!({"type": "all_private_chats"}),
            Scope::AllGroupChats => json!({"type": "all_group_chats"}),
            Scope::AllChatAdministrators => json!({"type": "all_chat_administrators"}),
            Scope::Chat(chat_id) => json!({"type": "chat", "chat_id": chat_id}),
            Scope::ChatAdministrators(chat_id) => {
                json!({"type": "chat_administrators", "chat_id": chat_id})
            }
            Scope::ChatMember { chat_id, user_id } => {
                json!({"type": "chat_member", "chat_id": chat_id, "user_id": user_id})
            }
        }
    }
}

fn id_field(object: &Map<String, Value>, key: &str) -> Option<i64> {
    match object.get(key)? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Reads `language_code`: empty (every language) or a two-letter ISO 639-1 code.
pub fn language_from_param(param: Option<&Value>) -> Result<String, String> {
    let code = match param {
        None | Some(Value::Null) => return Ok(String::new()),
        Some(Value::String(code)) => code.clone(),
        Some(_) => return Err("Bad Request: language code is invalid".into()),
    };
    if code.is_empty() || (code.len() == 2 && code.bytes().all(|b| b.is_ascii_lowercase())) {
        Ok(code)
    } else {
        Err("Bad Request: language code is invalid".into())
    }
}

/// Every list set, by (scope, language).
#[derive(Debug, Default)]
pub struct Menus {
    lists: BTreeMap<(Scope, String), Value>,
}

impl Menus {
    /// `setMyCommands`: replaces the scope's list; an empty list removes it.
    pub fn set(&mut self, scope: Scope, language: &str, commands: Value) {
        let empty = commands.as_array().is_none_or(Vec::is_empty);
        if empty {
            self.delete(scope, language);
        } else {
            self.lists.insert((scope, language.to_owned()), commands);
        }
    }

    /// `deleteMyCommands`.
    pub fn delete(&mut self, scope: Scope, language: &str) {
        self.lists.remove(&(scope, language.to_owned()));
    }

    /// `getMyCommands`: exactly this scope and language, or `None` when unset.
    pub fn get(&self, scope: Scope, language: &str) -> Option<&Value> {
        self.lists.get(&(scope, language.to_owned()))
    }

    /// The list a user sees in `chat_id` (positive: a private chat; negative: a group),
    /// in the Bot API's order; `[]` when no list applies.
    pub fn seen_in(&self, chat_id: i64, user_id: i64, is_admin: bool, language: &str) -> Value {
        let mut order = Vec::new();
        if chat_id > 0 {
            order.extend([Scope::Chat(chat_id), Scope::AllPrivateChats]);
        } else {
            order.push(Scope::ChatMember { chat_id, user_id });
            if is_admin {
                order.push(Scope::ChatAdministrators(chat_id));
            }
            order.push(Scope::Chat(chat_id));
            if is_admin {
                order.push(Scope::AllChatAdministrators);
            }
            order.push(Scope::AllGroupChats);
        }
        order.push(Scope::Default);
        order
            .into_iter()
            .find_map(|scope| {
                let localised = (!language.is_empty())
                    .then(|| self.get(scope, language))
                    .flatten();
                localised.or_else(|| self.get(scope, ""))
            })
            .cloned()
            .unwrap_or_else(|| json!([]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(name: &str) -> Value {
        json!([{"command": name, "description": "a command"}])
    }

    #[test]
    fn a_chat_list_wins_over_the_default_in_that_chat_only() {
        let mut menus = Menus::default();
        menus.set(Scope::Default, "", list("mirror"));
        menus.set(Scope::Chat(-5), "", list("both"));
        assert_eq!(menus.seen_in(-5, 1, false, ""), list("both"));
        assert_eq!(menus.seen_in(-6, 1, false, ""), list("mirror"));
        assert_eq!(menus.get(Scope::Default, "").cloned(), Some(list("mirror")));
        menus.set(Scope::Chat(-5), "", json!([]));
        assert_eq!(menus.seen_in(-5, 1, false, ""), list("mirror"));
    }

    #[test]
    fn members_admins_groups_private_chats_and_languages_resolve_in_order() {
        let mut menus = Menus::default();
        menus.set(Scope::AllGroupChats, "", list("groups"));
        menus.set(Scope::AllPrivateChats, "", list("private"));
        menus.set(Scope::AllChatAdministrators, "", list("admins"));
        menus.set(Scope::Default, "de", list("deutsch"));
        assert_eq!(menus.seen_in(-5, 1, false, ""), list("groups"));
        assert_eq!(menus.seen_in(-5, 1, true, ""), list("admins"));
        assert_eq!(menus.seen_in(7, 7, false, ""), list("private"));
        menus.set(
            Scope::ChatMember {
                chat_id: -5,
                user_id: 1,
            },
            "",
            list("one"),
        );
        assert_eq!(menus.seen_in(-5, 1, true, ""), list("one"));
        assert_eq!(menus.seen_in(-5, 2, false, "de"), list("groups"));
        menus.delete(Scope::AllGroupChats, "");
        assert_eq!(menus.seen_in(-5, 2, false, "de"), list("deutsch"));
        assert_eq!(menus.seen_in(-5, 2, false, ""), json!([]));
    }

    #[test]
    fn scopes_parse_from_objects_and_strings() {
        assert_eq!(Scope::from_param(None), Ok(Scope::Default));
        let chat = json!({"type": "chat", "chat_id": -100});
        assert_eq!(Scope::from_param(Some(&chat)), Ok(Scope::Chat(-100)));
        let text = Value::String(chat.to_string());
        assert_eq!(Scope::from_param(Some(&text)), Ok(Scope::Chat(-100)));
        assert_eq!(
            Scope::from_param(Some(&Scope::Chat(-100).to_json())),
            Ok(Scope::Chat(-100))
        );
        assert!(Scope::from_param(Some(&json!({"type": "chat"}))).is_err());
        assert!(Scope::from_param(Some(&json!({"type": "galaxy"}))).is_err());
        assert!(language_from_param(Some(&json!("DE"))).is_err());
        assert_eq!(language_from_param(Some(&json!("de"))), Ok("de".into()));
    }
}
