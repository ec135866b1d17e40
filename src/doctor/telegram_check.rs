//! Telegram: the token and chat are configured, Telegram accepts the token (`getMe`),
//! the bot may post in the chat and topic (`sendChatAction`, which shows "typing…" for
//! a few seconds and sends nothing), and no webhook is set (`getWebhookInfo`, which
//! does not disturb a running `getUpdates`).

use std::time::Duration;

use serde_json::{Value, json};

use super::check::{Check, Setup, Verdict};
use crate::adapters::telegram_config::TelegramConfig;

const TIMEOUT: Duration = Duration::from_secs(10);
const IDS: [&str; 3] = ["telegram_token", "telegram_post", "telegram_webhook"];

fn skipped(why: &str) -> Vec<Check> {
    IDS.iter()
        .map(|id| Check::new(id, Verdict::Skip, why))
        .collect()
}

pub async fn checks(setup: &Setup) -> Vec<Check> {
    let config = match &setup.telegram {
        Err(reason) => {
            let mut checks = vec![
                Check::new("telegram_config", Verdict::Fail, reason.clone()).fix(
                    "baton run stops with exit 2 on this: fix the named file, variable or flag",
                ),
            ];
            checks.extend(skipped("needs a valid configuration"));
            return checks;
        }
        Ok(None) => {
            let mut checks = vec![Check::new("telegram_config", Verdict::Fail, "no bot token configured")
                .fix("set TELEGRAM_BOT_TOKEN, or botToken in ~/.config/opencode/telegram.json (the mirror's own file); without one baton only coordinates")];
            checks.extend(skipped("needs a bot token"));
            return checks;
        }
        Ok(Some(config)) => config,
    };
    let topic = config
        .thread_id
        .map_or(String::new(), |t| format!(", topic {t}"));
    let server = config
        .api_url
        .as_ref()
        .map_or("api.telegram.org".to_string(), |url| {
            format!("a custom Bot API at {}", url.host_str().unwrap_or("?"))
        });
    let mut checks = vec![Check::new(
        "telegram_config",
        Verdict::Pass,
        format!(
            "bot token and chat {}{topic} configured ({server})",
            config.chat_id
        ),
    )];
    let client = match reqwest::Client::builder().timeout(TIMEOUT).build() {
        Ok(client) => client,
        Err(error) => {
            checks.extend(skipped(&format!("no HTTP client: {}", error.without_url())));
            return checks;
        }
    };
    let api = Api { client, config };
    let token = api.token_check().await;
    let accepted = token.verdict == Verdict::Pass;
    checks.push(token);
    if accepted {
        checks.push(api.post_check().await);
        checks.push(api.webhook_check().await);
    } else {
        checks.extend(
            IDS[1..]
                .iter()
                .map(|id| Check::new(id, Verdict::Skip, "needs a token Telegram accepts")),
        );
    }
    checks
}

struct Api<'a> {
    client: reqwest::Client,
    config: &'a TelegramConfig,
}

/// What a Bot API call came back with: the result, or Telegram's (or the network's) word.
enum Answer {
    Ok(Value),
    Refused { status: u16, description: String },
    Unreachable(String),
}

impl Api<'_> {
    async fn call(&self, method: &str, params: Value) -> Answer {
        let base = self
            .config
            .api_url
            .as_ref()
            .map_or("https://api.telegram.org".to_string(), |u| {
                u.as_str().trim_end_matches('/').to_string()
            });
        let url = format!("{base}/bot{}/{method}", self.config.bot_token.expose());
        let response = match self.client.post(url).json(&params).send().await {
            Ok(response) => response,
            // Without the URL: it holds the token.
            Err(error) => {
                return Answer::Unreachable(
                    self.config
                        .bot_token
                        .scrub(&error_chain(error.without_url())),
                );
            }
        };
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if body["ok"] == Value::Bool(true) {
            return Answer::Ok(body["result"].clone());
        }
        let description = body["description"]
            .as_str()
            .unwrap_or("no description")
            .to_string();
        Answer::Refused {
            status,
            description: self.config.bot_token.scrub(&description),
        }
    }

    async fn token_check(&self) -> Check {
        match self.call("getMe", json!({})).await {
            Answer::Ok(me) => Check::new(
                "telegram_token",
                Verdict::Pass,
                format!("Telegram accepts the token: @{} (id {})", me["username"].as_str().unwrap_or("?"), me["id"]),
            ),
            Answer::Refused { status, description } if status == 401 || status == 404 => Check::new(
                "telegram_token",
                Verdict::Fail,
                format!("Telegram refused the bot token ({description})"),
            )
            .fix("the token was revoked or mistyped: BotFather's /token shows the current one; put it in TELEGRAM_BOT_TOKEN or botToken and restart baton"),
            Answer::Refused { status, description } => Check::new(
                "telegram_token",
                Verdict::Fail,
                format!("getMe answered {status}: {description}"),
            ),
            Answer::Unreachable(error) => Check::new(
                "telegram_token",
                Verdict::Fail,
                format!("cannot reach the Bot API: {error}"),
            )
            .fix("check the network (and TELEGRAM_API_URL, if you use one)"),
        }
    }

    async fn post_check(&self) -> Check {
        let mut params = json!({"chat_id": self.config.chat_id, "action": "typing"});
        // The General topic is thread 1, and naming it is refused: send without it.
        if let Some(thread) = self.config.thread_id.filter(|t| *t != 1) {
            params["message_thread_id"] = json!(thread);
        }
        let place = match self.config.thread_id {
            Some(thread) => format!("chat {} topic {thread}", self.config.chat_id),
            None => format!("chat {}", self.config.chat_id),
        };
        match self.call("sendChatAction", params).await {
            Answer::Ok(_) => Check::new("telegram_post", Verdict::Pass, format!("the bot may post in {place}")),
            Answer::Refused { description, .. } => Check::new(
                "telegram_post",
                Verdict::Fail,
                format!("the bot cannot post in {place}: {description}"),
            )
            .fix("add the bot to the chat and let it send messages (in a forum, in that topic); check chatId/threadId"),
            Answer::Unreachable(error) => Check::new("telegram_post", Verdict::Fail, format!("cannot reach the Bot API: {error}")),
        }
    }

    async fn webhook_check(&self) -> Check {
        match self.call("getWebhookInfo", json!({})).await {
            Answer::Ok(info) if info["url"].as_str().unwrap_or("").is_empty() => Check::new(
                "telegram_webhook",
                Verdict::Pass,
                format!(
                    "no webhook set; {} update(s) waiting",
                    info["pending_update_count"].as_i64().unwrap_or(0)
                ),
            ),
            Answer::Ok(info) => {
                // The URL may carry a secret path: only its host is shown.
                let host = info["url"]
                    .as_str()
                    .and_then(|u| reqwest::Url::parse(u).ok())
                    .and_then(|u| u.host_str().map(str::to_owned))
                    .unwrap_or_else(|| "?".into());
                Check::new("telegram_webhook", Verdict::Fail, format!("a webhook is set (to {host}): another program uses this bot"))
                    .fix("baton removes the webhook when it starts polling, and the other program sets it again: find that program and stop it")
            }
            Answer::Refused { description, .. } => Check::new(
                "telegram_webhook",
                Verdict::Warn,
                format!("getWebhookInfo refused: {description}"),
            ),
            Answer::Unreachable(error) => Check::new(
                "telegram_webhook",
                Verdict::Warn,
                format!("cannot reach the Bot API: {error}"),
            ),
        }
    }
}

/// An error and its causes, one after the other ("error sending request: … refused").
fn error_chain(error: reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}
