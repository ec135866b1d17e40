//! Keeping secrets out of service files, which are world-readable.
//!
//! Owns: which variable names count as secret, and the refusal of any argument or value
//! that holds the configured token or looks like a bot token. Must never: put a
//! secret's value into an error or a log line.

use super::error::AgentError;
use crate::adapters::telegram_config::Secret;

/// The bot-token shape test, shared with the log redaction (`telegram_config`).
pub use crate::adapters::telegram_config::looks_like_bot_token;

/// Name fragments that mark an environment variable as secret (compared upper-cased).
const SECRET_NAME_MARKERS: &[&str] = &[
    "TOKEN",
    "SECRET",
    "PASSWORD",
    "PASSWD",
    "CREDENTIAL",
    "API_KEY",
    "APIKEY",
    "PRIVATE_KEY",
];

/// Refuses control characters (they break both file formats), bot tokens, and any
/// value holding one of `secrets` (the configured token, whatever its shape).
pub(crate) fn check_value(what: &str, value: &str, secrets: &[Secret]) -> Result<(), AgentError> {
    if value.chars().any(char::is_control) {
        return Err(AgentError::ControlCharacter {
            what: what.to_owned(),
        });
    }
    let holds_secret = secrets
        .iter()
        .any(|secret| !secret.expose().is_empty() && value.contains(secret.expose()));
    if holds_secret || looks_like_bot_token(value) {
        return Err(AgentError::SecretInArguments {
            what: what.to_owned(),
        });
    }
    Ok(())
}

/// True if a variable with this name must never be written to a service file.
pub fn is_secret_env_name(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    SECRET_NAME_MARKERS
        .iter()
        .any(|marker| upper.contains(marker))
}
