//! A stand-in for the opencode-telegram-mirror, for tests and the demo: it reads updates
//! from baton's gateway exactly as the mirror does (`GET $TELEGRAM_UPDATES_URL?since=…&
//! chat_id=…[&thread_id=…]`, Basic auth from the URL) and appends each update it gets to
//! a JSON Lines file (`update_id`, `text`, `received_at_ms`: its wall clock on receipt),
//! so a test can count what every device's child received, and when.
//!
//! Like the mirror, it ignores messages dated before its own start (the mirror takes its
//! start in whole Unix seconds and keeps `date >= start`): such an update is not written,
//! `since` still moves past it, and one line per skipped update goes to stderr.
//!
//! Like the mirror, it keeps `since` across restarts when `TELEGRAM_DB_PATH` is set
//! (the mirror keeps it in that SQLite database; here the file holds the decimal
//! `since`): read at start, and written — atomically — after each non-empty batch,
//! BEFORE the batch is processed, as the last `update_id` of the batch. As the mirror
//! does, it takes whatever the gateway serves (no filtering by `since` of its own), so a
//! `since` from Telegram's previous id sequence goes down with the first batch of the
//! new one.
//!
//! It exits by itself once orphaned (its parent baton is gone, e.g. SIGKILLed in the
//! demo's crash): an orphan has no gateway left to read, and must not outlive the demo.
//!
//! Owns: nothing baton itself uses. Must never: log the URL (it carries credentials).

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde_json::Value;

#[derive(Args, Debug, Clone)]
pub struct MirrorStubArgs {
    /// Where to append one JSON line per update received.
    #[arg(long)]
    pub out: PathBuf,
    /// Milliseconds between two fetches (the mirror uses about 1000).
    #[arg(long, default_value_t = 1000)]
    pub interval_ms: u64,
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

/// Polls until killed, or until orphaned (then exits 0).
pub async fn run(args: MirrorStubArgs) -> Result<i32, StubError> {
    let started_s = unix_now_s();
    let parent_pid = std::os::unix::process::parent_id();
    let raw = std::env::var("TELEGRAM_UPDATES_URL").map_err(|_| StubError::NoUrl)?;
    let mut url = reqwest::Url::parse(&raw).map_err(|e| StubError::BadUrl(e.to_string()))?;
    let user = url.username().to_string();
    let password = url.password().map(str::to_string);
    let _ = url.set_username("");
    let _ = url.set_password(None);
    let chat_id = std::env::var("TELEGRAM_CHAT_ID").unwrap_or_default();
    let thread_id = std::env::var("TELEGRAM_THREAD_ID").ok();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| StubError::Client(e.to_string()))?;
    let since_file = std::env::var_os("TELEGRAM_DB_PATH").map(PathBuf::from);
    let mut since: i64 = since_file.as_deref().map_or(0, read_since);
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.out)
        .map_err(|source| StubError::Write {
            path: args.out.clone(),
            source,
        })?;
    loop {
        if std::os::unix::process::parent_id() != parent_pid {
            return Ok(0);
        }
        let mut query = vec![("since", since.to_string()), ("chat_id", chat_id.clone())];
        if let Some(thread) = &thread_id {
            query.push(("thread_id", thread.clone()));
        }
        let response = client
            .get(url.clone())
            .basic_auth(&user, password.as_deref())
            .query(&query)
            .send()
            .await;
        if let Ok(response) = response
            && let Ok(body) = response.json::<Value>().await
        {
            let batch = body["updates"].as_array().cloned().unwrap_or_default();
            // The mirror sets `since` from the batch's last `payload.update_id`, before
            // processing the batch.
            if let Some(last) = batch.iter().rev().find_map(payload_update_id) {
                since = last;
                if let Some(path) = &since_file {
                    write_since(path, since)?;
                }
            }
            for entry in &batch {
                let Some(update_id) = entry["update_id"].as_i64() else {
                    continue;
                };
                if let Some(date) = message_date(&entry["payload"])
                    && date < started_s
                {
                    eprintln!(
                        "mirror-stub: skipping update {update_id}: dated {date}, before this stub started at {started_s}"
                    );
                    continue;
                }
                let text = entry["payload"]["message"]["text"].as_str().unwrap_or("");
                let received_at_ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |elapsed| elapsed.as_millis() as u64);
                let line = serde_json::json!({
                    "update_id": update_id,
                    "text": text,
                    "received_at_ms": received_at_ms,
                });
                writeln!(file, "{line}").map_err(|source| StubError::Write {
                    path: args.out.clone(),
                    source,
                })?;
            }
        }
        tokio::time::sleep(Duration::from_millis(args.interval_ms)).await;
    }
}

/// The update id the mirror reads from an entry: the payload's, else the entry's own.
fn payload_update_id(entry: &Value) -> Option<i64> {
    entry["payload"]["update_id"]
        .as_i64()
        .or_else(|| entry["update_id"].as_i64())
}

/// The persisted `since` (0 when the file is missing or holds no number).
fn read_since(path: &std::path::Path) -> i64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(0)
}

/// Writes `since` to a temporary file beside `path`, then renames it over `path`.
fn write_since(path: &std::path::Path, since: i64) -> Result<(), StubError> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    std::fs::write(&temporary, format!("{since}\n"))
        .and_then(|()| std::fs::rename(&temporary, path))
        .map_err(|source| StubError::Write {
            path: path.to_path_buf(),
            source,
        })
}

/// The current Unix time in whole seconds, as the mirror takes its start time.
fn unix_now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs() as i64)
}

/// The `date` (Unix seconds) of the message an update carries, of any message kind.
fn message_date(update: &Value) -> Option<i64> {
    [
        "message",
        "edited_message",
        "channel_post",
        "edited_channel_post",
    ]
    .iter()
    .find_map(|kind| update.get(kind)?.get("date")?.as_i64())
}
