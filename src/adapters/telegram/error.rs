//! What talking to Telegram can fail with, told apart the way the poller must act on it.
//!
//! Owns: [`TelegramError`] and its classification of the Bot API's answers (a 409 from
//! another poller versus a webhook, a refused token, a retry-after, a server error).
//! Must never: hold the token (every library error is scrubbed on the way in).

use std::time::Duration;

use teloxide::{ApiError, RequestError};

use crate::adapters::telegram_config::Secret;

const CONFLICT_OTHER_POLLER: &str = "Conflict: terminated by other getUpdates request";

#[derive(Debug, Clone, thiserror::Error)]
pub enum TelegramError {
    /// 401 Unauthorized or 404 Not Found: Telegram answers both to a wrong or revoked
    /// token (`description` is Telegram's, e.g. "Unauthorized").
    #[error("Telegram refused the bot token ({description})")]
    Unauthorized { description: String },
    /// 409 "Conflict: terminated by other getUpdates request…": another poller.
    #[error("{description}")]
    Conflict { description: String },
    /// Any other 409 "Conflict: …", e.g. "can't use getUpdates method while webhook is
    /// active": a webhook is set on the bot, so nobody can poll. Not another poller.
    #[error("{description}")]
    WebhookActive { description: String },
    #[error("flood control: retry after {0:?}")]
    RetryAfter(Duration),
    #[error("Telegram API error in {method}: {description}")]
    Api {
        method: &'static str,
        description: String,
    },
    #[error("network error in {method}: {detail}")]
    Network {
        method: &'static str,
        detail: String,
    },
    /// An HTTP 5xx: Telegram (or a proxy before it) failed; worth trying again.
    #[error("Telegram server error in {method}: HTTP {status} {description}")]
    Server {
        method: &'static str,
        status: u16,
        description: String,
    },
    #[error("unexpected response to {method}: {detail}")]
    BadResponse {
        method: &'static str,
        detail: String,
    },
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

impl TelegramError {
    /// Maps a teloxide error, scrubbing the token from any text it carries.
    pub(crate) fn from_request(method: &'static str, error: &RequestError, token: &Secret) -> Self {
        match error {
            RequestError::Api(api) => Self::from_api_text(method, &api_text(api), token),
            RequestError::RetryAfter(seconds) => Self::RetryAfter(seconds.duration()),
            RequestError::Network(source) => Self::Network {
                method,
                detail: token.scrub(&source.to_string()),
            },
            other => Self::BadResponse {
                method,
                detail: token.scrub(&other.to_string()),
            },
        }
    }

    pub(crate) fn from_api_text(method: &'static str, description: &str, token: &Secret) -> Self {
        if description.starts_with(CONFLICT_OTHER_POLLER) {
            Self::Conflict {
                description: token.scrub(description),
            }
        } else if description.starts_with("Conflict:") {
            Self::WebhookActive {
                description: token.scrub(description),
            }
        } else if description == "Unauthorized" || description == "Not Found" {
            // Telegram answers both to a wrong token.
            Self::Unauthorized {
                description: description.to_owned(),
            }
        } else {
            Self::Api {
                method,
                description: token.scrub(description),
            }
        }
    }
}

/// Telegram's own text for an API error (teloxide renders `Unknown` with a prefix; its
/// `TerminatedByOtherGetUpdates` renders as Telegram's exact text).
fn api_text(error: &ApiError) -> String {
    match error {
        ApiError::Unknown(text) => text.clone(),
        ApiError::InvalidToken => "Unauthorized".to_owned(),
        other => other.to_string(),
    }
}
