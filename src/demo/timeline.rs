//! The demo's live timeline: events from the device logs (JSON lines), the fake
//! Telegram's request log, the syncer, and the story itself, printed in time order with
//! timestamps relative to the demo's start.
//!
//! Events from different sources arrive late by different amounts, so the timeline holds
//! each one back for a short lag and prints what is older than that, sorted. Owns: reading
//! log files incrementally and turning a log line into a readable event. Must never: print
//! a secret (the logs hold none, and the fake records no token) or panic on a bad line.

use std::collections::BTreeSet;
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::adapters::clock;

/// Who an event is about: a device name, or one of the fixed sources.
pub type Who = String;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineEvent {
    /// Wall clock, ms since the epoch (every source runs on this machine).
    pub at_ms: u64,
    pub who: Who,
    pub text: String,
}

/// Events waiting to be printed, and where printing stands.
pub struct Timeline {
    start_ms: u64,
    pending: Vec<TimelineEvent>,
    /// Full device ids → short names, for readable lines.
    names: Vec<(String, String)>,
}

impl Timeline {
    pub fn new(start_ms: u64, names: Vec<(String, String)>) -> Self {
        Timeline {
            start_ms,
            pending: Vec::new(),
            names,
        }
    }

    pub fn start_ms(&self) -> u64 {
        self.start_ms
    }

    /// Seconds since the demo started, for a wall-clock moment.
    pub fn relative_s(&self, at_ms: u64) -> f64 {
        at_ms.saturating_sub(self.start_ms) as f64 / 1000.0
    }

    pub fn add(&mut self, at_ms: u64, who: &str, text: impl Into<String>) {
        let mut text = text.into();
        for (id, name) in &self.names {
            if text.contains(id.as_str()) {
                text = text.replace(id.as_str(), name);
            }
        }
        self.pending.push(TimelineEvent {
            at_ms,
            who: who.to_string(),
            text,
        });
    }

    /// Prints the events older than `lag`, oldest first.
    pub fn flush(&mut self, lag: Duration) {
        let horizon = clock::wall_ms().saturating_sub(lag.as_millis() as u64);
        self.pending.sort_by_key(|event| event.at_ms);
        let split = self.pending.partition_point(|event| event.at_ms <= horizon);
        let ready: Vec<TimelineEvent> = self.pending.drain(..split).collect();
        let mut out = std::io::stdout().lock();
        for event in ready {
            let _ = writeln!(out, "{}", self.line(&event));
        }
        let _ = out.flush();
    }

    /// Prints everything still pending.
    pub fn flush_all(&mut self) {
        self.flush(Duration::ZERO);
        let rest = std::mem::take(&mut self.pending);
        let mut out = std::io::stdout().lock();
        for event in rest {
            let _ = writeln!(out, "{}", self.line(&event));
        }
    }

    /// `  12.34s  alpha     text`, continuation lines indented under the text.
    fn line(&self, event: &TimelineEvent) -> String {
        let indent = format!("\n{:20}", "");
        let text = event
            .text
            .lines()
            .filter(|line| !line.trim().is_empty())
            .collect::<Vec<_>>()
            .join(&indent);
        format!(
            "{:>7.2}s  {:<9} {text}",
            self.relative_s(event.at_ms),
            event.who,
        )
    }
}

/// Reads a growing file line by line, remembering where it stopped.
pub struct Tail {
    path: PathBuf,
    offset: u64,
    partial: String,
}

/// Lines read at most per call, so one busy file cannot stall the demo.
const TAIL_BYTES_MAX: u64 = 1 << 20;

impl Tail {
    pub fn new(path: PathBuf) -> Self {
        Tail {
            path,
            offset: 0,
            partial: String::new(),
        }
    }

    /// The complete lines added since the last call (a missing file has none).
    pub fn read_lines(&mut self) -> Vec<String> {
        let Ok(mut file) = std::fs::File::open(&self.path) else {
            return Vec::new();
        };
        if file.seek(SeekFrom::Start(self.offset)).is_err() {
            return Vec::new();
        }
        let mut bytes = Vec::new();
        let Ok(read) = file.take(TAIL_BYTES_MAX).read_to_end(&mut bytes) else {
            return Vec::new();
        };
        self.offset += read as u64;
        self.partial.push_str(&String::from_utf8_lossy(&bytes));
        let Some(end) = self.partial.rfind('\n') else {
            return Vec::new();
        };
        let complete: String = self.partial.drain(..=end).collect();
        complete
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(str::to_string)
            .collect()
    }
}

/// Log messages that say nothing the timeline does not show another way.
const QUIET_MESSAGES: &[&str] = &[
    "starting",
    "serving the bot",
    "exit requested",
    "wrote own record",
    "polling Telegram",
    "ACTIVE: this device serves the bot",
    "child started",
    "timer armed",
    // The demo reports the process's exit itself, from its real status.
    "exiting",
];

/// Turns one JSON log line of `baton --log-format json` into (wall ms, text), or `None`
/// for lines the timeline leaves out. Lines that are not JSON (a panic message, a
/// library writing to stderr) are shown as they are.
pub fn interpret_log_line(line: &str) -> Option<(Option<u64>, String)> {
    let Ok(value) = serde_json::from_str::<Value>(line) else {
        return Some((None, format!("stderr: {}", line.trim())));
    };
    let at_ms = value["timestamp"].as_str().and_then(rfc3339_utc_ms);
    let message = value["message"].as_str().unwrap_or_default();
    let level = value["level"].as_str().unwrap_or("INFO");
    let field = |name: &str| match &value[name] {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    let text = match message {
        "role changed" => format!(
            "role {} → {} (term {})",
            field("from"),
            field("to"),
            field("term")
        ),
        "stop signal: resigning" => "SIGTERM received: resigning".into(),
        "no longer serving the bot" => format!("stops serving the bot: {}", field("reason")),
        "child stopped" => format!("mirror child stopped ({})", field("status")),
        _ if message.contains("is now ACTIVE") => return None,
        _ if QUIET_MESSAGES.contains(&message) => return None,
        _ if level == "WARN" || level == "ERROR" => {
            let error = field("error");
            let error = if error.is_empty() {
                String::new()
            } else {
                format!(": {error}")
            };
            format!("⚠ {message}{error}")
        }
        _ if field("target") == "mirror_baton::runtime" => message.to_string(),
        _ => return None,
    };
    Some((at_ms, text))
}

/// Parses `2026-11-25T08:19:08.537307Z` (UTC, as tracing-subscriber writes it) to ms
/// since the epoch. Anything else is `None`.
pub fn rfc3339_utc_ms(text: &str) -> Option<u64> {
    let text = text.strip_suffix('Z')?;
    let (date, time) = text.split_once('T')?;
    let mut date_parts = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (year, month, day) = (
        date_parts.next()??,
        date_parts.next()??,
        date_parts.next()??,
    );
    let (hms, fraction) = time.split_once('.').unwrap_or((time, "0"));
    let mut time_parts = hms.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (hour, minute, second) = (
        time_parts.next()??,
        time_parts.next()??,
        time_parts.next()??,
    );
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    let millis: i64 = format!("{fraction:0<3}").get(..3)?.parse().ok()?;
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second;
    u64::try_from(seconds * 1000 + millis).ok()
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Telegram HTML as a user reads it: tags dropped, the entities baton uses decoded.
pub fn plain_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut in_tag = false;
    for character in html.chars() {
        match character {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            _ if !in_tag => out.push(character),
            _ => {}
        }
    }
    out.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&amp;", "&")
}

/// Tells who is polling Telegram from the fake's request log, in arrival order.
#[derive(Default)]
pub struct PollWatch {
    /// Requests handled so far, by seq.
    answered: BTreeSet<u64>,
    arrived_through: Option<u64>,
    last_poller: Option<String>,
}

/// What the fake's log said since the last look.
#[derive(Debug, Default)]
pub struct TelegramNews {
    /// (ms, device tag) of a device that started polling.
    pub new_poller: Vec<(u64, String)>,
    /// (ms, device tag) of a getUpdates answered 409.
    pub conflicts: Vec<(u64, String)>,
    /// (ms, device tag, topic, plain text) of a message the bot sent.
    pub said: Vec<(u64, String, Option<i64>, String)>,
}

impl PollWatch {
    pub fn look(
        &mut self,
        requests: &[baton_testkit::fake_bot_api::RequestRecord],
    ) -> TelegramNews {
        let mut news = TelegramNews::default();
        for request in requests {
            let device = request.device.clone().unwrap_or_else(|| "?".into());
            let arrived_before = self.arrived_through.is_some_and(|seq| request.seq <= seq);
            if !arrived_before {
                self.arrived_through = Some(request.seq);
                if request.is("getUpdates") && self.last_poller.as_ref() != Some(&device) {
                    self.last_poller = Some(device.clone());
                    news.new_poller
                        .push((request.received_at_ms, device.clone()));
                }
            }
            let Some(status) = request.status else {
                continue;
            };
            if !self.answered.insert(request.seq) {
                continue;
            }
            if status == 409 {
                news.conflicts
                    .push((request.received_at_ms, device.clone()));
            }
            // Messages from baton only (it names its device); the stand-in mirrors'
            // replies to every user message would drown the story.
            if request.is("sendMessage") && status == 200 && request.device.is_some() {
                let html = request.params["text"].as_str().unwrap_or_default();
                let topic = request.params["message_thread_id"]
                    .as_i64()
                    .or_else(|| request.params["message_thread_id"].as_str()?.parse().ok());
                news.said
                    .push((request.received_at_ms, device, topic, plain_text(html)));
            }
        }
        news
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tracing_timestamps() {
        assert_eq!(rfc3339_utc_ms("1970-01-01T00:00:01.5Z"), Some(1500));
        assert_eq!(
            rfc3339_utc_ms("2026-11-25T08:19:08.537307Z"),
            Some(1_795_594_748_537)
        );
        assert_eq!(rfc3339_utc_ms("2026-11-25T08:19:08+01:00"), None);
        assert_eq!(rfc3339_utc_ms("garbage"), None);
        assert_eq!(rfc3339_utc_ms("2026-13-25T08:19:08Z"), None);
    }

    #[test]
    fn role_changes_are_shown_and_record_writes_are_not() {
        let line = r#"{"timestamp":"1970-01-01T00:00:02Z","level":"INFO","message":"role changed","from":"Standby","to":"Active","term":2,"target":"mirror_baton::runtime"}"#;
        assert_eq!(
            interpret_log_line(line),
            Some((Some(2000), "role Standby → Active (term 2)".into()))
        );
        let quiet = r#"{"timestamp":"1970-01-01T00:00:02Z","level":"DEBUG","message":"wrote own record","target":"mirror_baton::runtime"}"#;
        assert_eq!(interpret_log_line(quiet), None);
        let odd = interpret_log_line("thread 'main' panicked").unwrap();
        assert_eq!(odd.0, None);
    }

    #[test]
    fn html_becomes_what_a_user_reads() {
        assert_eq!(
            plain_text("✅ <b>a&lt;b</b> is now ACTIVE &amp; fine"),
            "✅ a<b is now ACTIVE & fine"
        );
    }
}
