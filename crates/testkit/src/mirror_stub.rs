//! A stand-in for the opencode-telegram-mirror, for tests and the demo. It behaves like
//! the real mirror wherever baton depends on it (FACTS: "The workload"), so the project's
//! own tests meet what the real mirror would:
//!
//! - It reads its configuration from the environment only (`TELEGRAM_UPDATES_URL`,
//!   `TELEGRAM_CHAT_ID`, `TELEGRAM_THREAD_ID`, `TELEGRAM_SEND_URL`, `TELEGRAM_DB_PATH`,
//!   `STARTUP_TIMESTAMP`; the real mirror also reads its two `telegram.json` files).
//! - With a send URL (`TELEGRAM_SEND_URL`, the base it appends `/<method>` to) it calls
//!   `getMe` at start (exiting 1 when that fails, as the mirror does), then
//!   `setMyCommands`, which REPLACES the default command list (`--menu`), and answers
//!   each message it processes with a `sendMessage` to its chat, in its topic
//!   (`message_thread_id`) when it has one. Without a send URL the real mirror would call
//!   api.telegram.org: the stub never does, and says so once.
//! - `GET $TELEGRAM_UPDATES_URL?since=…&chat_id=…[&thread_id=…]` (Basic auth from the
//!   URL), reading `{"updates":[{"payload":…,"update_id":n}]}` and taking `payload ?? u`.
//! - `since` is read before every poll from the file `TELEGRAM_DB_PATH` names (decimal;
//!   missing or unreadable: 0; no variable: kept in memory), and written atomically
//!   after each non-empty batch BEFORE the batch is processed, to the last
//!   `payload.update_id`. So it survives a restart, and baton sees the acknowledgement
//!   only with the next poll, after processing.
//! - The date filter, exactly: an update's date is `message.date`, else
//!   `callback_query.message.date` (a button press is dated by the message carrying the
//!   button), else 0; it is kept when `date >= STARTUP_TIMESTAMP` (parsed like
//!   JavaScript's `parseInt`; unset: the start of this process in whole seconds; not a
//!   number: nothing passes, as in the mirror). Every other kind is dropped. One stderr
//!   line per update dropped.
//! - Then it skips messages without text, caption, photo, voice or video, its own
//!   messages (`from.id` = its bot id), and other topics (`message_thread_id`; a
//!   callback's `callback_query.message.message_thread_id`) when it has a topic.
//! - Rhythm: it polls again at once after a batch that kept something, sleeps
//!   `--interval-ms` (the mirror: 1 s) after one that kept nothing, and `--error-ms` (the
//!   mirror: 5 s) after an error — any non-2xx answer is one, retried silently.
//! - `--process-ms`: each processed update takes this long (a photo download, a voice
//!   transcription), between its `since` being stored and its next poll.
//!
//! With `--log-env` it prints, at start, what the real mirrors print: its whole
//! environment, token included (the utensil fork), and the updates URL with the gateway's
//! credentials (upstream) — baton must scrub both from its log.
//!
//! For the tests it appends each update it processes to a JSON Lines file (`--out`:
//! `update_id`, `text`, `received_at_ms`, its wall clock when it took the update), and
//! with `--env-out` one JSON line per start with the variables it was given (the token
//! replaced by `<token>`, the gateway URL by `<set>`).
//!
//! It exits by itself once orphaned (its parent is gone): an orphan has no gateway left
//! to read, and must not outlive the demo.
//!
//! Owns: nothing baton itself uses. Must never: print a secret unless `--log-env` asks
//! it to (the URLs carry credentials or the token), or call api.telegram.org.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use serde_json::{Value, json};

#[derive(Args, Debug, Clone)]
pub struct MirrorStubArgs {
    /// Where to append one JSON line per update processed.
    #[arg(long)]
    pub out: PathBuf,
    /// Milliseconds to sleep after a poll that kept nothing (the mirror: 1000).
    #[arg(long, default_value_t = 1000)]
    pub interval_ms: u64,
    /// Milliseconds to sleep after a failed poll (the mirror: 5000).
    #[arg(long, default_value_t = 5000)]
    pub error_ms: u64,
    /// Milliseconds each processed update takes.
    #[arg(long, default_value_t = 0)]
    pub process_ms: u64,
    /// A JSON list of `{"command","description"}` to set at start (default: a few of
    /// the utensil fork's commands).
    #[arg(long)]
    pub menu: Option<PathBuf>,
    /// Where to append, at each start, the variables the stub was given (and its pid).
    #[arg(long)]
    pub env_out: Option<PathBuf>,
    /// Print the whole environment and the updates URL at start, as the mirrors do.
    #[arg(long)]
    pub log_env: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum StubError {
    #[error("TELEGRAM_UPDATES_URL is not set (run me under `baton run -- …`)")]
    NoUrl,
    #[error("TELEGRAM_UPDATES_URL is not a URL: {0}")]
    BadUrl(String),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot build an HTTP client: {0}")]
    Client(String),
}

/// The commands the stub sets when no `--menu` is given.
const DEFAULT_MENU: &[(&str, &str)] = &[
    ("interrupt", "Stop operation or kill bash PID"),
    ("plan", "Switch to plan mode"),
    ("build", "Switch to build mode"),
    ("help", "The mirror's own help"),
];

/// Polls until killed, or until orphaned (then exits 0); 1 when `getMe` fails.
pub async fn run(args: MirrorStubArgs) -> Result<i32, StubError> {
    let parent_pid = std::os::unix::process::parent_id();
    let mut stub = Stub::from_env(&args)?;
    if let Some(path) = &args.env_out {
        write_env(path)?;
    }
    if args.log_env {
        log_env();
    }
    if !stub.start_telegram(&args).await {
        return Ok(1);
    }
    loop {
        if std::os::unix::process::parent_id() != parent_pid {
            return Ok(0);
        }
        let since = stub.since.read();
        let batch = match stub.fetch(since).await {
            Ok(batch) => batch,
            Err(()) => {
                tokio::time::sleep(Duration::from_millis(args.error_ms)).await;
                continue;
            }
        };
        if let Some(last) = batch.last() {
            stub.since.write(update_id_of(last).unwrap_or(since));
        }
        let kept: Vec<Value> = batch
            .into_iter()
            .filter(|update| stub.dated_after_start(update))
            .collect();
        if kept.is_empty() {
            tokio::time::sleep(Duration::from_millis(args.interval_ms)).await;
        }
        for update in kept {
            stub.process(&update, &args).await?;
        }
    }
}

/// The stub's configuration and state.
struct Stub {
    client: reqwest::Client,
    updates_url: reqwest::Url,
    user: String,
    password: Option<String>,
    chat_id: String,
    thread_id: Option<i64>,
    send_url: Option<String>,
    bot_id: Option<i64>,
    /// `None`: `STARTUP_TIMESTAMP` was not a number; nothing passes the date filter.
    started_s: Option<i64>,
    since: Since,
    out: std::fs::File,
    out_path: PathBuf,
}

impl Stub {
    fn from_env(args: &MirrorStubArgs) -> Result<Stub, StubError> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let raw = var("TELEGRAM_UPDATES_URL").ok_or(StubError::NoUrl)?;
        let mut updates_url =
            reqwest::Url::parse(&raw).map_err(|e| StubError::BadUrl(e.to_string()))?;
        let user = updates_url.username().to_string();
        let password = updates_url.password().map(str::to_string);
        let _ = updates_url.set_username("");
        let _ = updates_url.set_password(None);
        let started_s = match var("STARTUP_TIMESTAMP") {
            Some(text) => parse_int(&text),
            None => Some(unix_now_s()),
        };
        if started_s.is_none() {
            eprintln!(
                "mirror-stub: STARTUP_TIMESTAMP is not a number: every update will be dropped, as the mirror drops them"
            );
        }
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&args.out)
            .map_err(|source| StubError::Write {
                path: args.out.clone(),
                source,
            })?;
        Ok(Stub {
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .map_err(|e| StubError::Client(e.to_string()))?,
            updates_url,
            user,
            password,
            chat_id: var("TELEGRAM_CHAT_ID").unwrap_or_default(),
            // The mirror's `Number(…)`: a value that is not a number sets no topic.
            thread_id: var("TELEGRAM_THREAD_ID").and_then(|t| t.trim().parse().ok()),
            send_url: var("TELEGRAM_SEND_URL"),
            bot_id: None,
            started_s,
            since: Since::new(var("TELEGRAM_DB_PATH").map(PathBuf::from)),
            out,
            out_path: args.out.clone(),
        })
    }

    /// `getMe`, then `setMyCommands`; false when `getMe` fails (the mirror exits 1).
    async fn start_telegram(&mut self, args: &MirrorStubArgs) -> bool {
        if self.send_url.is_none() {
            eprintln!(
                "mirror-stub: no TELEGRAM_SEND_URL: the real mirror would call api.telegram.org; the stub makes no Telegram calls"
            );
            return true;
        }
        let me = self.call("getMe", json!({})).await;
        let Some(bot_id) = me.as_ref().and_then(|me| me["id"].as_i64()) else {
            eprintln!("mirror-stub: getMe failed: invalid bot token");
            return false;
        };
        self.bot_id = Some(bot_id);
        let menu = menu(args.menu.as_deref());
        if self
            .call("setMyCommands", json!({"commands": menu}))
            .await
            .is_none()
        {
            eprintln!("mirror-stub: failed to set bot commands");
        }
        true
    }

    /// One Bot API call through the send URL; the `result`, or `None` on any failure.
    async fn call(&self, method: &str, body: Value) -> Option<Value> {
        let base = self.send_url.as_ref()?;
        let response = self
            .client
            .post(format!("{base}/{method}"))
            .json(&body)
            .send()
            .await
            .ok()?;
        let body: Value = response.json().await.ok()?;
        (body["ok"] == true).then(|| body["result"].clone())
    }

    /// One poll of the gateway: the updates (`payload ?? u`), or `Err` for any failure.
    async fn fetch(&self, since: i64) -> Result<Vec<Value>, ()> {
        let mut query = vec![
            ("since", since.to_string()),
            ("chat_id", self.chat_id.clone()),
        ];
        if let Some(thread) = self.thread_id {
            query.push(("thread_id", thread.to_string()));
        }
        let response = self
            .client
            .get(self.updates_url.clone())
            .basic_auth(&self.user, self.password.as_deref())
            .query(&query)
            .send()
            .await
            .map_err(|error| {
                eprintln!("mirror-stub: poll error, retrying: {}", error.without_url());
            })?;
        if !response.status().is_success() {
            // As the mirror logs it ("DO poll failed"), then retries after its error pause.
            eprintln!("mirror-stub: poll failed: {}", response.status().as_u16());
            return Err(());
        }
        let body: Value = response.json().await.map_err(|_| ())?;
        let updates = body["updates"].as_array().cloned().unwrap_or_default();
        Ok(updates
            .into_iter()
            .map(|entry| match entry.get("payload") {
                Some(payload) if !payload.is_null() => payload.clone(),
                _ => entry,
            })
            .collect())
    }

    /// The mirror's date filter (see the module doc); says so for each update dropped.
    fn dated_after_start(&self, update: &Value) -> bool {
        let date = update_date(update);
        let kept = self.started_s.is_some_and(|started| date >= started);
        if !kept {
            let id = update_id_of(update).unwrap_or(0);
            let started = self
                .started_s
                .map_or_else(|| "NaN".into(), |s| s.to_string());
            eprintln!(
                "mirror-stub: skipping update {id}: dated {date}, before this stub started at {started}"
            );
        }
        kept
    }

    /// Handles one update as the mirror does: records it, takes `--process-ms`, replies.
    async fn process(&mut self, update: &Value, args: &MirrorStubArgs) -> Result<(), StubError> {
        let (text, topic) = if let Some(message) = update.get("message") {
            let text = message["text"].as_str().or(message["caption"].as_str());
            let media = ["photo", "voice", "video"]
                .iter()
                .any(|kind| message.get(*kind).is_some());
            if text.is_none() && !media {
                return Ok(());
            }
            if self.bot_id.is_some() && message["from"]["id"].as_i64() == self.bot_id {
                return Ok(());
            }
            (text.unwrap_or(""), message["message_thread_id"].as_i64())
        } else if let Some(callback) = update.get("callback_query") {
            let topic = callback["message"]["message_thread_id"].as_i64();
            (callback["data"].as_str().unwrap_or(""), topic)
        } else {
            return Ok(());
        };
        if self.thread_id.is_some() && topic != self.thread_id {
            return Ok(());
        }
        let line = json!({
            "update_id": update_id_of(update),
            "text": text,
            "received_at_ms": unix_now_ms(),
        });
        writeln!(self.out, "{line}").map_err(|source| StubError::Write {
            path: self.out_path.clone(),
            source,
        })?;
        tokio::time::sleep(Duration::from_millis(args.process_ms)).await;
        if update.get("message").is_some() {
            let mut reply =
                json!({"chat_id": self.chat_id, "text": "mirror-stub processed a message"});
            if let Some(thread) = self.thread_id {
                reply["message_thread_id"] = json!(thread);
            }
            let _ = self.call("sendMessage", reply).await;
        }
        Ok(())
    }
}

/// `since`, in the file `TELEGRAM_DB_PATH` names, or in memory without one.
struct Since {
    path: Option<PathBuf>,
    in_memory: i64,
}

impl Since {
    fn new(path: Option<PathBuf>) -> Since {
        Since { path, in_memory: 0 }
    }

    /// The stored `since`: 0 when missing or unreadable.
    fn read(&self) -> i64 {
        match &self.path {
            Some(path) => std::fs::read_to_string(path)
                .ok()
                .and_then(|text| text.trim().parse().ok())
                .unwrap_or(0),
            None => self.in_memory,
        }
    }

    /// Stores `since` atomically (a temporary file renamed over the old one).
    fn write(&mut self, since: i64) {
        self.in_memory = since;
        let Some(path) = &self.path else {
            return;
        };
        let temporary = path.with_extension("since.tmp");
        let written = std::fs::write(&temporary, format!("{since}\n"))
            .and_then(|()| std::fs::rename(&temporary, path));
        if let Err(error) = written {
            eprintln!(
                "mirror-stub: cannot store since in {}: {error}",
                path.display()
            );
        }
    }
}

/// The update's `update_id`, from the payload.
fn update_id_of(update: &Value) -> Option<i64> {
    update.get("update_id")?.as_i64()
}

/// The mirror's date: `message.date`, else the date of the message carrying a pressed
/// button, else 0.
fn update_date(update: &Value) -> i64 {
    update["message"]["date"]
        .as_i64()
        .or_else(|| update["callback_query"]["message"]["date"].as_i64())
        .unwrap_or(0)
}

/// JavaScript's `parseInt(text, 10)`: optional blanks and sign, then the leading digits;
/// `None` (NaN) without any.
fn parse_int(text: &str) -> Option<i64> {
    let text = text.trim_start();
    let (sign, rest) = match text.strip_prefix('-') {
        Some(rest) => (-1, rest),
        None => (1, text.strip_prefix('+').unwrap_or(text)),
    };
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse::<i64>().ok().map(|n| sign * n)
}

fn menu(path: Option<&Path>) -> Value {
    let from_file = path
        .and_then(|path| std::fs::read_to_string(path).ok())
        .and_then(|text| serde_json::from_str::<Value>(&text).ok());
    from_file.unwrap_or_else(|| {
        let commands: Vec<Value> = DEFAULT_MENU
            .iter()
            .map(|(command, description)| json!({"command": command, "description": description}))
            .collect();
        Value::Array(commands)
    })
}

/// What the mirrors print at start (see the module doc): secrets and all.
fn log_env() {
    let mut variables: Vec<(String, String)> = std::env::vars_os()
        .map(|(k, v)| {
            (
                k.to_string_lossy().into_owned(),
                v.to_string_lossy().into_owned(),
            )
        })
        .collect();
    variables.sort();
    println!("mirror-stub: environment:");
    for (name, value) in variables {
        println!("  {name}={value}");
    }
    let url = std::env::var("TELEGRAM_UPDATES_URL").unwrap_or_default();
    println!(
        "mirror-stub: Bot is running {{\"pollSource\":\"Cloudflare DO\",\"updatesUrl\":\"{url}\"}}"
    );
}

/// Appends the variables the stub was given, secrets masked, and its pid, as one JSON
/// line.
fn write_env(path: &Path) -> Result<(), StubError> {
    let token = std::env::var("TELEGRAM_BOT_TOKEN").unwrap_or_default();
    let mut seen = serde_json::Map::new();
    seen.insert("pid".to_owned(), json!(std::process::id()));
    for name in [
        "TELEGRAM_CHAT_ID",
        "TELEGRAM_THREAD_ID",
        "TELEGRAM_SEND_URL",
        "TELEGRAM_DB_PATH",
        "STARTUP_TIMESTAMP",
        "USE_ICLOUD_COORDINATOR",
        "BATON_DEVICE_ID",
        "TELEGRAM_UPDATES_URL",
        "TELEGRAM_BOT_TOKEN",
    ] {
        let Ok(value) = std::env::var(name) else {
            continue;
        };
        let shown = match name {
            "TELEGRAM_UPDATES_URL" | "TELEGRAM_BOT_TOKEN" => "<set>".to_owned(),
            _ if !token.is_empty() => value.replace(&token, "<token>"),
            _ => value,
        };
        seen.insert(name.to_owned(), Value::String(shown));
    }
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        writeln!(file, "{}", Value::Object(seen.clone()))
    };
    write().map_err(|source| StubError::Write {
        path: path.to_owned(),
        source,
    })
}

/// The current Unix time in whole seconds, as the mirror takes its start time.
fn unix_now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs() as i64)
}

fn unix_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_start_times_as_the_mirror_reads_them() {
        assert_eq!(update_date(&json!({"message": {"date": 5}})), 5);
        let press = json!({"callback_query": {"message": {"date": 7}, "data": "yes"}});
        assert_eq!(
            update_date(&press),
            7,
            "dated by the message with the button"
        );
        assert_eq!(update_date(&json!({"edited_message": {"date": 9}})), 0);
        assert_eq!(update_date(&json!({"message_reaction": {"date": 9}})), 0);
        assert_eq!(parse_int(" 1700000000"), Some(1_700_000_000));
        assert_eq!(parse_int("17abc"), Some(17));
        assert_eq!(parse_int("-3"), Some(-3));
        assert_eq!(parse_int("abc"), None);
    }

    #[test]
    fn since_survives_in_its_file_and_a_bad_file_reads_zero() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("mirror.db");
        let mut since = Since::new(Some(path.clone()));
        assert_eq!(since.read(), 0);
        since.write(42);
        assert_eq!(Since::new(Some(path.clone())).read(), 42);
        std::fs::write(&path, "garbage").expect("write");
        assert_eq!(since.read(), 0);
        let mut memory = Since::new(None);
        memory.write(7);
        assert_eq!(memory.read(), 7);
    }
}
