//! What the child's environment gets from baton: baton's effective configuration, in the
//! names opencode-telegram-mirror reads (FACTS: "The workload").
//!
//! Owns: the list of variables baton adds ([`child_env`]), and which of them the user's
//! own setting wins over. The mirror reads `~/.config/opencode/telegram.json`, then
//! `<project>/.opencode/telegram.json`, then its environment, the environment winning;
//! baton reads the same files and the same environment, and its flags win over both.
//! So:
//!
//! - `TELEGRAM_UPDATES_URL` (the gateway) and `BATON_DEVICE_ID` are always baton's.
//! - `TELEGRAM_CHAT_ID` and `TELEGRAM_THREAD_ID` are what baton serves, unless the user
//!   set the variable: a value in the files is what baton read too (or what a baton flag
//!   overrode, which the mirror must follow or be refused with 403). A user's variable
//!   that differs from what baton serves is kept, and reported ([`Note::Differs`]).
//! - `TELEGRAM_SEND_URL` is `<TELEGRAM_API_URL>/bot<token>` (the mirror's own base for
//!   every Bot API call; it knows no `TELEGRAM_API_URL`) when baton talks to a custom Bot
//!   API server, unless the user set `TELEGRAM_SEND_URL` or a `sendUrl` in either file:
//!   exporting it would override theirs.
//! - `USE_ICLOUD_COORDINATOR=false` (the utensil fork's own election would fight
//!   baton's), `TELEGRAM_DB_PATH` (one database per device, not the shared
//!   `/tmp/telegram-opencode.db`: its session id and `since`), and `STARTUP_TIMESTAMP`
//!   (pinned for the whole run, so a restarted mirror keeps the messages sent while it
//!   was down), each unless the user set it.
//!
//! An empty variable counts as unset, as it does for the mirror (an empty string is
//! false in JavaScript).
//!
//! Must never: log a value (the send URL holds the token, the updates URL the gateway's
//! credentials), or read the process environment itself (the caller passes it in).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::telegram_config::{Secret, TelegramConfig};

pub const ENV_UPDATES_URL: &str = "TELEGRAM_UPDATES_URL";
pub const ENV_SEND_URL: &str = "TELEGRAM_SEND_URL";
pub const ENV_CHAT_ID: &str = "TELEGRAM_CHAT_ID";
pub const ENV_THREAD_ID: &str = "TELEGRAM_THREAD_ID";
pub const ENV_ICLOUD_COORDINATOR: &str = "USE_ICLOUD_COORDINATOR";
pub const ENV_DB_PATH: &str = "TELEGRAM_DB_PATH";
pub const ENV_STARTUP_TIMESTAMP: &str = "STARTUP_TIMESTAMP";
pub const ENV_DEVICE_ID: &str = "BATON_DEVICE_ID";

/// What the child's environment is built from.
#[derive(Debug, Clone)]
pub struct MirrorContext {
    /// baton's own environment, which the child inherits.
    pub inherited: HashMap<String, String>,
    /// The mirror's configuration files, lowest precedence first.
    pub config_files: Vec<PathBuf>,
    /// This device's own database for the mirror (`TELEGRAM_DB_PATH`).
    pub db_path: PathBuf,
}

/// The Telegram side, when baton serves a bot.
#[derive(Debug, Clone, Copy)]
pub struct TelegramSide<'a> {
    pub config: &'a TelegramConfig,
    /// The gateway's URL, credentials included.
    pub updates_url: &'a Secret,
}

/// One decision about one variable, for the start-up log (names and origins, never
/// values, except the ids of a [`Note::Differs`], which are not secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// baton set it.
    Set { name: &'static str },
    /// The user set it (in `origin`); theirs stays.
    Kept { name: &'static str, origin: String },
    /// The user's value differs from what baton serves: the mirror's requests will be
    /// refused until they agree.
    Differs {
        name: &'static str,
        theirs: String,
        served: String,
    },
    /// baton's value replaces the user's (`TELEGRAM_UPDATES_URL`).
    Replaced { name: &'static str },
}

/// The variables to add, and what to tell the user.
#[derive(Debug, Clone, Default)]
pub struct ChildEnv {
    pub vars: Vec<(String, String)>,
    pub notes: Vec<Note>,
}

/// Builds the child's extra environment (see the module doc for the rules).
///
/// `device_id` is baton's device id, `startup_timestamp_s` the Unix second to pin the
/// mirror's start to (taken once per `baton run`).
pub fn child_env(
    context: &MirrorContext,
    telegram: Option<TelegramSide<'_>>,
    device_id: &str,
    startup_timestamp_s: u64,
) -> ChildEnv {
    let mut env = ChildEnv::default();
    env.vars.push((ENV_DEVICE_ID.into(), device_id.into()));
    if let Some(side) = telegram {
        if user_set(context, ENV_UPDATES_URL).is_some() {
            env.notes.push(Note::Replaced {
                name: ENV_UPDATES_URL,
            });
        }
        let url = side.updates_url.expose().to_owned();
        env.vars.push((ENV_UPDATES_URL.into(), url));
        env.offer_id(context, ENV_CHAT_ID, Some(side.config.chat_id));
        env.offer_id(context, ENV_THREAD_ID, side.config.thread_id);
        if let Some(api_url) = &side.config.api_url {
            let send_url = send_url(api_url, &side.config.bot_token);
            match user_set(context, ENV_SEND_URL).or_else(|| send_url_in_files(context)) {
                Some(origin) => env.notes.push(Note::Kept {
                    name: ENV_SEND_URL,
                    origin,
                }),
                None => env.set(ENV_SEND_URL, send_url.expose().to_owned()),
            }
        }
    }
    env.offer(context, ENV_ICLOUD_COORDINATOR, "false".into());
    let db_path = context.db_path.display().to_string();
    env.offer(context, ENV_DB_PATH, db_path);
    env.offer(
        context,
        ENV_STARTUP_TIMESTAMP,
        startup_timestamp_s.to_string(),
    );
    env
}

impl ChildEnv {
    fn set(&mut self, name: &'static str, value: String) {
        self.vars.push((name.into(), value));
        self.notes.push(Note::Set { name });
    }

    /// Sets `name` unless the user did.
    fn offer(&mut self, context: &MirrorContext, name: &'static str, value: String) {
        match user_set(context, name) {
            Some(origin) => self.notes.push(Note::Kept { name, origin }),
            None => self.set(name, value),
        }
    }

    /// Sets an id baton serves unless the user set the variable, and reports a user's
    /// value that differs from it.
    fn offer_id(&mut self, context: &MirrorContext, name: &'static str, served: Option<i64>) {
        let Some(served) = served else {
            return;
        };
        let Some(theirs) = inherited(context, name) else {
            self.set(name, served.to_string());
            return;
        };
        if theirs.trim().parse::<i64>().ok() == Some(served) {
            self.notes.push(Note::Kept {
                name,
                origin: "the environment".into(),
            });
        } else {
            self.notes.push(Note::Differs {
                name,
                theirs: theirs.to_owned(),
                served: served.to_string(),
            });
        }
    }
}

/// `<api>/bot<token>`: the base the mirror appends `/<method>` to.
pub fn send_url(api_url: &reqwest::Url, token: &Secret) -> Secret {
    let base = api_url.as_str().trim_end_matches('/');
    Secret::new(format!("{base}/bot{}", token.expose()))
}

fn inherited<'a>(context: &'a MirrorContext, name: &str) -> Option<&'a str> {
    context
        .inherited
        .get(name)
        .map(String::as_str)
        .filter(|value| !value.is_empty())
}

/// Where the user set `name` for the child, if they did (the environment only: the
/// mirror reads no file key for the variables passed to [`ChildEnv::offer`]).
fn user_set(context: &MirrorContext, name: &str) -> Option<String> {
    inherited(context, name).map(|_| "the environment".to_owned())
}

/// The first of the mirror's files with a non-empty `sendUrl`, if any. A file that
/// cannot be read or parsed says nothing (baton's own configuration loading reports
/// such files).
fn send_url_in_files(context: &MirrorContext) -> Option<String> {
    context
        .config_files
        .iter()
        .rev()
        .find(|path| file_sets(path, "sendUrl"))
        .map(|path| path.display().to_string())
}

fn file_sets(path: &Path, key: &str) -> bool {
    let Ok(text) = std::fs::read_to_string(path) else {
        return false;
    };
    serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|value| value.get(key)?.as_str().map(|s| !s.is_empty()))
        .unwrap_or(false)
}

/// The secrets the child may print: the token (also with its colon URL-encoded, as in
/// a logged URL), the send URL, and the gateway's URL and credentials.
pub fn child_secrets(token: &Secret, send_url: Option<&Secret>, gateway: &[Secret]) -> Vec<Secret> {
    let mut secrets = vec![
        token.clone(),
        Secret::new(token.expose().replace(':', "%3A")),
    ];
    secrets.extend(send_url.cloned());
    secrets.extend(gateway.iter().cloned());
    secrets
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(thread_id: Option<i64>, api_url: Option<&str>) -> TelegramConfig {
        TelegramConfig {
            bot_token: Secret::new("123:secret"),
            chat_id: -100,
            thread_id,
            api_url: api_url.map(|u| u.parse().expect("URL")),
        }
    }

    fn context(env: &[(&str, &str)], files: Vec<PathBuf>) -> MirrorContext {
        MirrorContext {
            inherited: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            config_files: files,
            db_path: PathBuf::from("/state/mirror/default/dev.db"),
        }
    }

    fn var<'a>(env: &'a ChildEnv, name: &str) -> Option<&'a str> {
        env.vars
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn baton_exports_what_it_serves_when_the_user_set_nothing() {
        let config = config(Some(7), Some("http://127.0.0.1:9/tg/"));
        let url = Secret::new("http://baton:pw@127.0.0.1:1/updates");
        let side = TelegramSide {
            config: &config,
            updates_url: &url,
        };
        let env = child_env(&context(&[], vec![]), Some(side), "dev", 1_700_000_000);
        assert_eq!(var(&env, ENV_CHAT_ID), Some("-100"));
        assert_eq!(var(&env, ENV_THREAD_ID), Some("7"));
        assert_eq!(var(&env, ENV_UPDATES_URL), Some(url.expose()));
        assert_eq!(
            var(&env, ENV_SEND_URL),
            Some("http://127.0.0.1:9/tg/bot123:secret")
        );
        assert_eq!(var(&env, ENV_ICLOUD_COORDINATOR), Some("false"));
        assert_eq!(var(&env, ENV_DB_PATH), Some("/state/mirror/default/dev.db"));
        assert_eq!(var(&env, ENV_STARTUP_TIMESTAMP), Some("1700000000"));
        assert_eq!(var(&env, ENV_DEVICE_ID), Some("dev"));
    }

    #[test]
    fn the_users_own_settings_win_and_a_different_chat_is_reported() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("telegram.json");
        std::fs::write(&file, r#"{"sendUrl": "https://proxy/bot1"}"#).expect("write");
        let config = config(None, Some("http://127.0.0.1:9"));
        let url = Secret::new("http://baton:pw@127.0.0.1:1/updates");
        let side = TelegramSide {
            config: &config,
            updates_url: &url,
        };
        let env_vars = [
            (ENV_CHAT_ID, "-200"),
            (ENV_DB_PATH, "/mine.db"),
            (ENV_ICLOUD_COORDINATOR, ""),
            (ENV_UPDATES_URL, "http://elsewhere"),
        ];
        let env = child_env(&context(&env_vars, vec![file]), Some(side), "dev", 5);
        assert_eq!(var(&env, ENV_CHAT_ID), None, "the user's -200 is inherited");
        assert!(env.notes.contains(&Note::Differs {
            name: ENV_CHAT_ID,
            theirs: "-200".into(),
            served: "-100".into()
        }));
        assert_eq!(var(&env, ENV_SEND_URL), None, "the file's sendUrl stays");
        assert_eq!(var(&env, ENV_DB_PATH), None);
        assert_eq!(
            var(&env, ENV_ICLOUD_COORDINATOR),
            Some("false"),
            "empty is unset"
        );
        assert_eq!(var(&env, ENV_THREAD_ID), None, "no topic served");
        assert_eq!(
            var(&env, ENV_UPDATES_URL),
            Some(url.expose()),
            "always baton's"
        );
        assert!(env.notes.contains(&Note::Replaced {
            name: ENV_UPDATES_URL
        }));
    }

    #[test]
    fn without_telegram_only_the_device_and_mirror_state_variables_are_set() {
        let env = child_env(&context(&[], vec![]), None, "dev", 5);
        let names: Vec<&str> = env.vars.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            [
                ENV_DEVICE_ID,
                ENV_ICLOUD_COORDINATOR,
                ENV_DB_PATH,
                ENV_STARTUP_TIMESTAMP
            ]
        );
    }
}
