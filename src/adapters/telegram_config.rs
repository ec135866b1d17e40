//! Telegram settings, loaded the way opencode-telegram-mirror loads them.
//!
//! Owns: the precedence of configuration sources (lowest first)
//! `~/.config/opencode/telegram.json`, `<project>/.opencode/telegram.json`, the environment
//! (`TELEGRAM_BOT_TOKEN`, `TELEGRAM_CHAT_ID`, `TELEGRAM_THREAD_ID`, `TELEGRAM_API_URL`), then
//! baton's own flags; their validation; and the [`Secret`] wrapper that keeps the bot token
//! out of every log, `Debug` output, error and panic.
//!
//! Must never: read the process environment or the real home directory by itself (the caller
//! passes them in, so tests are hermetic), or put a token value into an error message.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// Environment variable names, shared with the mirror.
pub const ENV_BOT_TOKEN: &str = "TELEGRAM_BOT_TOKEN";
pub const ENV_CHAT_ID: &str = "TELEGRAM_CHAT_ID";
pub const ENV_THREAD_ID: &str = "TELEGRAM_THREAD_ID";
pub const ENV_API_URL: &str = "TELEGRAM_API_URL";

/// A value that must never be printed: `Debug` and `Display` show `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The real value, for the one place that must send it (the HTTP client).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Replaces every occurrence of the secret in `text` with `***`.
    ///
    /// Use on any text that came from a library which may embed the token (teloxide and
    /// reqwest errors carry request URLs of the form `…/bot<token>/<method>`).
    pub fn scrub(&self, text: &str) -> String {
        if self.0.is_empty() {
            return text.to_owned();
        }
        text.replace(&self.0, "***")
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// What replaces a token-shaped value in text baton prints.
pub const REDACTED: &str = "<token redacted>";

/// Bot tokens have at least this many url-safe characters after the colon (Telegram's
/// are 35); shorter runs are not taken for a token.
const TOKEN_TAIL_MIN: usize = 30;

fn is_token_char(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-'
}

/// The byte ranges of every token-shaped value in `text`: a run of digits (the bot id),
/// a colon, then at least [`TOKEN_TAIL_MIN`] url-safe characters. The digits need no
/// boundary before them: Telegram's own URLs embed `…/bot<token>/…`.
fn token_spans(text: &str) -> Vec<std::ops::Range<usize>> {
    let bytes = text.as_bytes();
    let mut spans = Vec::new();
    let mut from = 0;
    while let Some(offset) = bytes[from..].iter().position(|b| *b == b':') {
        let colon = from + offset;
        let digits = bytes[..colon]
            .iter()
            .rev()
            .take_while(|b| b.is_ascii_digit())
            .count();
        let tail = bytes[colon + 1..]
            .iter()
            .take_while(|b| is_token_char(**b))
            .count();
        if digits >= 1 && tail >= TOKEN_TAIL_MIN {
            spans.push(colon - digits..colon + 1 + tail);
            from = colon + 1 + tail;
        } else {
            from = colon + 1;
        }
    }
    spans
}

/// True if `text` holds anything shaped like a Telegram bot token (`123456789:AA…`),
/// anywhere (e.g. in `--token=…`).
pub fn looks_like_bot_token(text: &str) -> bool {
    !token_spans(text).is_empty()
}

/// `text` with every token-shaped value replaced by [`REDACTED`]. Applied to everything
/// baton prints (its log lines, its error messages), so a token pasted where it does not
/// belong — a chat id, a flag, a child's argument — never reaches a terminal or a file.
pub fn redact_token_shapes(text: &str) -> std::borrow::Cow<'_, str> {
    let spans = token_spans(text);
    if spans.is_empty() {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut kept_from = 0;
    for span in spans {
        out.push_str(&text[kept_from..span.start]);
        out.push_str(REDACTED);
        kept_from = span.end;
    }
    out.push_str(&text[kept_from..]);
    std::borrow::Cow::Owned(out)
}

/// Values given on baton's command line; they win over every other source.
#[derive(Debug, Clone, Default)]
pub struct TelegramOverrides {
    pub bot_token: Option<Secret>,
    pub chat_id: Option<i64>,
    pub thread_id: Option<i64>,
    pub api_url: Option<String>,
}

/// Where to look. `home` is `None` when the user has no home directory.
#[derive(Debug, Clone)]
pub struct ConfigSources<'a> {
    pub home_dir: Option<&'a Path>,
    pub project_dir: &'a Path,
    pub env: &'a HashMap<String, String>,
    pub overrides: TelegramOverrides,
}

/// The validated Telegram settings.
#[derive(Debug, Clone, PartialEq)]
pub struct TelegramConfig {
    pub bot_token: Secret,
    pub chat_id: i64,
    /// The forum topic served, when one is set; `None` serves the whole chat.
    pub thread_id: Option<i64>,
    /// A self-hosted Bot API server or a fake; `None` means api.telegram.org.
    pub api_url: Option<reqwest::Url>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {reason}")]
    Unreadable { path: PathBuf, reason: String },
    #[error("{path} is not a JSON object: {reason}")]
    InvalidJson { path: PathBuf, reason: String },
    #[error("{origin}: key `{key}` is malformed: {reason}")]
    Malformed {
        origin: String,
        key: &'static str,
        reason: String,
    },
    #[error("no `{key}` configured; looked in {looked_in}")]
    Missing {
        key: &'static str,
        looked_in: String,
    },
}

/// One source's contribution, before validation of the merged result.
#[derive(Default)]
struct Layer {
    bot_token: Option<(Secret, String)>,
    chat_id: Option<(i64, String)>,
    thread_id: Option<(i64, String)>,
    api_url: Option<(String, String)>,
}

/// Loads and validates the Telegram settings from all sources, later sources winning.
///
/// Call once at start-up; an error names the file (or variable, or flag) and the key.
pub fn load_telegram_config(sources: &ConfigSources<'_>) -> Result<TelegramConfig, ConfigError> {
    let files = config_files(sources.home_dir, sources.project_dir);

    let mut merged = Layer::default();
    for path in &files {
        if let Some(layer) = read_file_layer(path)? {
            merged.merge(layer);
        }
    }
    merged.merge(env_layer(sources.env)?);
    merged.merge(override_layer(&sources.overrides));

    let looked_in = files
        .iter()
        .map(|p| p.display().to_string())
        .chain(["the environment".to_owned(), "flags".to_owned()])
        .collect::<Vec<_>>()
        .join(", ");
    let (bot_token, _) = merged.bot_token.ok_or_else(|| ConfigError::Missing {
        key: "botToken",
        looked_in: looked_in.clone(),
    })?;
    let (chat_id, _) = merged.chat_id.ok_or(ConfigError::Missing {
        key: "chatId",
        looked_in,
    })?;
    let api_url = match merged.api_url {
        None => None,
        Some((text, origin)) => Some(parse_api_url(&text, origin)?),
    };
    Ok(TelegramConfig {
        bot_token,
        chat_id,
        thread_id: merged.thread_id.map(|(id, _)| id),
        api_url,
    })
}

/// The mirror's configuration files, lowest precedence first (baton reads the same).
pub fn config_files(home_dir: Option<&Path>, project_dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    if let Some(home) = home_dir {
        files.push(home.join(".config/opencode/telegram.json"));
    }
    files.push(project_dir.join(".opencode/telegram.json"));
    files
}

impl Layer {
    fn merge(&mut self, later: Layer) {
        if later.bot_token.is_some() {
            self.bot_token = later.bot_token;
        }
        if later.chat_id.is_some() {
            self.chat_id = later.chat_id;
        }
        if later.thread_id.is_some() {
            self.thread_id = later.thread_id;
        }
        if later.api_url.is_some() {
            self.api_url = later.api_url;
        }
    }
}

/// A configuration file larger than this is not a configuration file (the mirror's
/// holds five short keys).
pub const CONFIG_BYTES_MAX: u64 = 64 * 1024;

/// Reads a configuration file, refusing anything but a regular file of a sane size.
///
/// A FIFO opened for reading in blocking mode waits for a writer forever, so the file is
/// opened non-blocking and judged by `fstat` on the open descriptor (a symlink to a
/// regular file is fine: dotfile managers link these). `Ok(None)` when it does not exist.
fn read_config_text(path: &Path) -> Result<Option<String>, ConfigError> {
    use std::io::Read as _;
    let unreadable = |reason: String| ConfigError::Unreadable {
        path: path.to_owned(),
        reason,
    };
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = match options.open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(unreadable(error.to_string())),
    };
    let meta = file.metadata().map_err(|e| unreadable(e.to_string()))?;
    if !meta.is_file() {
        return Err(unreadable(format!(
            "it is not a regular file ({}); put the JSON settings in a plain file",
            file_kind(&meta.file_type())
        )));
    }
    if meta.len() > CONFIG_BYTES_MAX {
        return Err(unreadable(format!(
            "it is {} bytes, more than the {CONFIG_BYTES_MAX} a configuration file may hold",
            meta.len()
        )));
    }
    let mut bytes = Vec::new();
    file.take(CONFIG_BYTES_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| unreadable(e.to_string()))?;
    if bytes.len() as u64 > CONFIG_BYTES_MAX {
        return Err(unreadable(format!(
            "it grew past the {CONFIG_BYTES_MAX} bytes a configuration file may hold"
        )));
    }
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| unreadable("it is not UTF-8 text".to_owned()))
}

fn file_kind(kind: &std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt as _;
        if kind.is_fifo() {
            return "a FIFO";
        }
        if kind.is_socket() {
            return "a socket";
        }
        if kind.is_block_device() || kind.is_char_device() {
            return "a device";
        }
    }
    if kind.is_dir() {
        "a directory"
    } else {
        "not a file"
    }
}

fn read_file_layer(path: &Path) -> Result<Option<Layer>, ConfigError> {
    let Some(text) = read_config_text(path)? else {
        return Ok(None);
    };
    let invalid = |reason: String| ConfigError::InvalidJson {
        path: path.to_owned(),
        reason,
    };
    // serde_json's messages quote no input, only positions, so the token cannot leak here.
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?;
    let object = value
        .as_object()
        .ok_or_else(|| invalid("the top level is not an object".to_owned()))?;
    let origin = path.display().to_string();
    let mut layer = Layer::default();
    if let Some(raw) = object.get("botToken") {
        let text = raw
            .as_str()
            .ok_or_else(|| malformed(&origin, "botToken", "not a string"))?;
        layer.bot_token = Some((parse_token(text, &origin, "botToken")?, origin.clone()));
    }
    if let Some(raw) = object.get("chatId") {
        layer.chat_id = Some((json_id(raw, &origin, "chatId")?, origin.clone()));
    }
    if let Some(raw) = object.get("threadId").filter(|v| !v.is_null()) {
        let id = json_id(raw, &origin, "threadId")?;
        layer.thread_id = Some((check_thread(id, &origin, "threadId")?, origin.clone()));
    }
    Ok(Some(layer))
}

fn env_layer(env: &HashMap<String, String>) -> Result<Layer, ConfigError> {
    // An empty variable counts as unset, as shells often export `X=` to clear a value.
    let get = |name: &str| env.get(name).map(|v| v.trim()).filter(|v| !v.is_empty());
    let origin = |name: &str| format!("environment variable {name}");
    let mut layer = Layer::default();
    if let Some(text) = get(ENV_BOT_TOKEN) {
        let token = parse_token(text, &origin(ENV_BOT_TOKEN), "botToken")?;
        layer.bot_token = Some((token, origin(ENV_BOT_TOKEN)));
    }
    if let Some(text) = get(ENV_CHAT_ID) {
        let id = text_id(text, &origin(ENV_CHAT_ID), "chatId")?;
        layer.chat_id = Some((id, origin(ENV_CHAT_ID)));
    }
    if let Some(text) = get(ENV_THREAD_ID) {
        let id = text_id(text, &origin(ENV_THREAD_ID), "threadId")?;
        let id = check_thread(id, &origin(ENV_THREAD_ID), "threadId")?;
        layer.thread_id = Some((id, origin(ENV_THREAD_ID)));
    }
    if let Some(text) = get(ENV_API_URL) {
        layer.api_url = Some((text.to_owned(), origin(ENV_API_URL)));
    }
    Ok(layer)
}

fn override_layer(overrides: &TelegramOverrides) -> Layer {
    let flag = |name: &str| format!("flag --{name}");
    Layer {
        bot_token: overrides
            .bot_token
            .clone()
            .map(|t| (t, flag("telegram-bot-token"))),
        chat_id: overrides.chat_id.map(|id| (id, flag("telegram-chat-id"))),
        thread_id: overrides
            .thread_id
            .map(|id| (id, flag("telegram-thread-id"))),
        api_url: overrides
            .api_url
            .clone()
            .map(|u| (u, flag("telegram-api-url"))),
    }
}

fn malformed(origin: &str, key: &'static str, reason: &str) -> ConfigError {
    ConfigError::Malformed {
        origin: origin.to_owned(),
        key,
        reason: reason.to_owned(),
    }
}

/// A bot token looks like `123456789:AAE…`: digits, a colon, then URL-safe characters.
/// The error never repeats the value.
fn parse_token(text: &str, origin: &str, key: &'static str) -> Result<Secret, ConfigError> {
    let text = text.trim();
    let valid = match text.split_once(':') {
        Some((bot_id, secret_part)) => {
            !bot_id.is_empty()
                && bot_id.bytes().all(|b| b.is_ascii_digit())
                && !secret_part.is_empty()
                && secret_part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        }
        None => false,
    };
    if valid {
        Ok(Secret::new(text))
    } else {
        Err(malformed(
            origin,
            key,
            "expected `<digits>:<letters, digits, _ or ->` (value not shown)",
        ))
    }
}

fn json_id(raw: &serde_json::Value, origin: &str, key: &'static str) -> Result<i64, ConfigError> {
    match raw {
        serde_json::Value::Number(n) => n
            .as_i64()
            .ok_or_else(|| malformed(origin, key, "not an integer")),
        serde_json::Value::String(s) => text_id(s, origin, key),
        _ => Err(malformed(
            origin,
            key,
            "expected an integer or a string of digits",
        )),
    }
}

fn text_id(text: &str, origin: &str, key: &'static str) -> Result<i64, ConfigError> {
    text.trim().parse::<i64>().map_err(|_| {
        // A token pasted into the wrong key must not be quoted back.
        let reason = if looks_like_bot_token(text) {
            "this looks like the bot token, not an id (value not shown)".to_owned()
        } else {
            format!("`{text}` is not an integer")
        };
        malformed(origin, key, &reason)
    })
}

fn check_thread(id: i64, origin: &str, key: &'static str) -> Result<i64, ConfigError> {
    if id > 0 {
        Ok(id)
    } else {
        Err(malformed(origin, key, "a topic id must be positive"))
    }
}

fn parse_api_url(text: &str, origin: String) -> Result<reqwest::Url, ConfigError> {
    let url = reqwest::Url::parse(text).map_err(|e| ConfigError::Malformed {
        origin: origin.clone(),
        key: "apiUrl",
        reason: e.to_string(),
    })?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(malformed(
            &origin,
            "apiUrl",
            "the scheme must be http or https",
        ));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_shapes_are_redacted_wherever_they_appear() {
        let token = "4321:AAE_abcdefghijklmnopqrstuvwxyz-0123";
        for text in [
            token.to_owned(),
            format!("--token={token}"),
            format!("POST https://api.telegram.org/bot{token}/GetMe failed"),
            format!("`{token}` is not an integer; and again: {token}."),
        ] {
            let redacted = redact_token_shapes(&text);
            assert!(!redacted.contains("abcdefghijklmnop"), "{redacted}");
            assert!(redacted.contains(REDACTED), "{redacted}");
            assert!(looks_like_bot_token(&text));
        }
        for innocent in [
            "host:/Users/ana/bot",
            "http://127.0.0.1:12345/updates",
            "at 12:30:00",
            "ana@mbp:/Users/ana/project-with-a-rather-long-name-indeed",
            "abc:0123456789012345678901234567890123456789",
        ] {
            assert_eq!(redact_token_shapes(innocent), innocent);
            assert!(!looks_like_bot_token(innocent), "{innocent}");
        }
    }
}
