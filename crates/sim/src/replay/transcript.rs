//! Transcripts: a replay rendered for people (text, one line per input, timer,
//! transition or effect) or for scripts (JSON Lines of effects).
//!
//! Owns: the text and JSON transcript formats (`fixtures/README.md` documents both).
//! Must never: print anything that depends on the wall clock of the machine running the
//! replay, hash-map order, or a secret — golden files compare byte for byte.

use std::fmt::Write as _;

use baton_core::record::{self, DeviceRecord, NameKind};
use baton_core::{ActivationOutcome, Effect, Event, FileObservation, FileState, Moment};

use super::engine::{Entry, Item, Replay};
use super::fixture::Header;

/// Width of the time column.
const TIME_WIDTH: usize = 10;

fn optional(value: Option<i64>) -> String {
    value.map_or_else(|| "-".to_string(), |id| id.to_string())
}

/// A record in one line: what a reader needs to follow the election.
fn record_summary(record: &DeviceRecord, with_identity: bool) -> String {
    let mut line = String::new();
    if with_identity {
        let _ = write!(line, "{} ", record.device_id);
    }
    let _ = write!(
        line,
        "seq={} status={} term={}",
        record.seq,
        record.status.as_str(),
        record.term
    );
    if let Some(handoff) = &record.handoff {
        let _ = write!(line, " handoff={}@{}", handoff.target, handoff.term);
    }
    if let Some(request) = &record.activation_request {
        let _ = write!(line, " request={}", request.target);
    }
    if let Some(update_id) = record.last_update_id {
        let _ = write!(line, " last_update={update_id}");
    }
    if with_identity {
        let _ = write!(
            line,
            " pid={} instance={} install={} written_at={}",
            record.pid, record.instance, record.install_id, record.written_at_ms
        );
    }
    line
}

/// What was seen at one file name, in one line. Only record names and conflict copies
/// are read as records: a stub or a stranger's file is described, not parsed.
pub fn file_summary(file: &FileObservation) -> String {
    let kind = match record::classify_name(&file.name) {
        NameKind::Record { .. } => "",
        NameKind::ConflictCopy { .. } => "conflict copy: ",
        NameKind::IcloudStub { .. } => "icloud stub",
        NameKind::Temp => "temp file (ignored)",
        NameKind::Foreign => "foreign file (ignored)",
    };
    let state = match &file.state {
        FileState::Contents { text } if kind.is_empty() || kind.ends_with(": ") => {
            match record::parse_record(text.as_bytes()) {
                Ok(parsed) => format!("{kind}{}", record_summary(&parsed, true)),
                Err(error) => format!("{kind}unusable: {error} ({} bytes)", text.len()),
            }
        }
        FileState::Contents { text } => format!("{kind}, {} bytes", text.len()),
        FileState::Gone => "gone".into(),
        FileState::TooLarge { bytes } => format!("too large ({bytes} bytes)"),
        FileState::Dataless => "dataless (evicted in place)".into(),
        FileState::Symlink => "symlink".into(),
        FileState::Unreadable { reason } => format!("unreadable ({reason})"),
    };
    format!("{}: {state}", file.name)
}

fn event_lines(event: &Event) -> Vec<String> {
    let line = match event {
        Event::Start => "start".into(),
        Event::Scanned { files } => {
            let mut lines = vec![format!("scanned {} files", files.len())];
            lines.extend(
                files
                    .iter()
                    .map(|file| format!("  | {}", file_summary(file))),
            );
            return lines;
        }
        Event::FileChanged { file } => format!("changed {}", file_summary(file)),
        Event::ScanFailed { reason } => format!("scan failed: {reason}"),
        Event::Tick => "tick".into(),
        Event::ActivateAsked { target, ticket } => format!("activate {target:?} (#{ticket})"),
        Event::ShutdownAsked => "shutdown asked".into(),
        Event::Woke { slept_ms } => format!("woke after sleeping {}", Moment(*slept_ms)),
        Event::SleepAnnounced { grace_ms } => {
            format!("sleep announced, {} of grace", Moment(*grace_ms))
        }
        Event::Conflict { description } => format!("telegram conflict: {description}"),
        Event::PidProbed { stem, pid, alive } => {
            let state = if *alive { "alive" } else { "gone" };
            format!("pid {pid} of {stem} is {state}")
        }
        Event::UpdateHandled { update_id } => format!("update {update_id} handled"),
        Event::HandledAbove { ids } => format!("also handled above the last: {ids:?}"),
        Event::ActingStopped { last_update_id } => {
            format!("acting stopped last_update={}", optional(*last_update_id))
        }
        Event::ForeignChat { chat_id } => format!("foreign chat {chat_id}"),
        Event::Routing { note } => format!("routing {note:?}"),
        Event::PollingRefused { description } => {
            format!("telegram refused the bot token: {description}")
        }
        Event::PollFailed { reason } => format!("getUpdates failed: {reason}"),
        Event::PollSucceeded => "getUpdates succeeded again".into(),
        Event::RecordWritten { seq } => format!("record seq={seq} written"),
        Event::Witnessed {
            pending_update_count: Some(count),
        } => format!("telegram: {count} update(s) pending"),
        Event::Witnessed {
            pending_update_count: None,
        } => "telegram could not be asked".into(),
        Event::RecordWriteFailed { seq, reason } => {
            format!("record seq={seq} not written: {reason}")
        }
    };
    vec![line]
}

fn outcome_text(outcome: &ActivationOutcome) -> String {
    match outcome {
        ActivationOutcome::HandingOver { to } => format!("handing over to {to}"),
        ActivationOutcome::Requested { to, leader } => format!(
            "requested {to} (leader {})",
            leader.as_deref().unwrap_or("-")
        ),
        ActivationOutcome::Contending => "contending".into(),
        ActivationOutcome::Done { device } => format!("done: {device} is active"),
        ActivationOutcome::AlreadyActive { device } => format!("already active: {device}"),
        ActivationOutcome::Failed { reason } => format!("failed: {reason}"),
    }
}

/// One effect in one line.
pub fn effect_line(effect: &Effect) -> String {
    match effect {
        Effect::Transition { from, to, cause } => format!("{from} -> {to} ({cause})"),
        Effect::WriteRecord { record } => format!("write {}", record_summary(record, false)),
        Effect::DeleteFile { name, reason } => format!("delete {name} ({reason})"),
        Effect::StartActing {
            term,
            skip_through,
            also_handled,
        } => {
            let mut line = format!(
                "start acting term={term} skip_through={}",
                optional(*skip_through)
            );
            if !also_handled.is_empty() {
                line.push_str(&format!(" also_handled={also_handled:?}"));
            }
            line
        }
        Effect::StopActing { reason } => format!("stop acting ({reason})"),
        Effect::PauseActing { until } => format!("pause acting until {until}"),
        Effect::Rescan => "rescan".into(),
        Effect::RequestDownload { name } => format!("request download of {name}"),
        Effect::RememberRefusal { install_id } => {
            format!("remember refusal (install {install_id})")
        }
        Effect::ForgetRefusal => "forget refusal".to_string(),
        Effect::ProbePid { stem, pid } => format!("probe pid {pid} of {stem}"),
        Effect::AskWitness => "ask telegram how many updates wait".into(),
        Effect::TimerArmed {
            timer,
            at,
            jitter_ms,
        } => format!("arm {} at {at} (jitter {jitter_ms}ms)", timer.as_str()),
        Effect::Notify { level, message } => format!("notify {}: {message}", level.as_str()),
        Effect::ActivationResult { ticket, result } => {
            format!("answer #{ticket}: {}", outcome_text(result))
        }
        Effect::Exit { code, reason } => format!("exit {code} ({reason})"),
        Effect::AllowSleep { reason } => format!("allow sleep ({reason})"),
    }
}

fn entry_lines(entry: &Entry) -> Vec<String> {
    match &entry.item {
        Item::Input(event) => prefixed("> ", event_lines(event)),
        Item::Auto(event) => {
            let mut lines = prefixed("> ", event_lines(event));
            if let Some(first) = lines.first_mut() {
                first.push_str(" [auto]");
            }
            lines
        }
        Item::Fired(timer) => vec![format!("~ {} timer fired", timer.as_str())],
        Item::Unnoticed(file) => vec![format!("# unnoticed {}", file_summary(file))],
        Item::Effect(effect) => vec![effect_line(effect)],
        Item::Stopped(reason) => vec![format!("! replay stopped: {reason}")],
    }
}

fn prefixed(prefix: &str, lines: Vec<String>) -> Vec<String> {
    lines
        .into_iter()
        .map(|line| format!("{prefix}{line}"))
        .collect()
}

/// The text transcript: a heading, one line per entry with its time, and a summary.
pub fn render_text(header: &Header, replay: &Replay) -> String {
    let mut text = String::new();
    for line in header.description.lines() {
        let _ = writeln!(text, "# {line}");
    }
    let _ = writeln!(
        text,
        "# device {} seed {} timing {}",
        header.identity.device_id,
        header.seed,
        header.timing.to_json()
    );
    for entry in &replay.entries {
        let time = entry.at.to_string();
        for line in entry_lines(entry) {
            let _ = writeln!(text, "{time:>TIME_WIDTH$}  {line}");
        }
    }
    let exit = replay
        .exit
        .as_ref()
        .map_or_else(|| "-".to_string(), |(code, _)| code.to_string());
    let _ = writeln!(
        text,
        "{:>TIME_WIDTH$}  = end: {} term={} exit={exit}",
        replay.end.to_string(),
        replay.final_role,
        replay.final_term
    );
    text
}

/// The JSON transcript: one `{"at_ms", "effect"}` object per effect, then one summary
/// line `{"at_ms", "end": {"role", "term", "exit_code"}}`.
pub fn render_json(replay: &Replay) -> String {
    let mut text = String::new();
    for (at, effect) in replay.effects() {
        let line = serde_json::json!({ "at_ms": at.as_millis(), "effect": effect });
        let _ = writeln!(text, "{line}");
    }
    let end = serde_json::json!({
        "at_ms": replay.end.as_millis(),
        "end": {
            "role": replay.final_role,
            "term": replay.final_term,
            "exit_code": replay.exit.as_ref().map(|(code, _)| *code),
        }
    });
    let _ = writeln!(text, "{end}");
    text
}
