//! The doctor's vocabulary: a check's verdict, one line of the report, and the set-up
//! every check looks at.
//!
//! Owns: `Verdict`, `Check`, `Setup`. A leaf of the doctor: the checks and the report
//! name it, it names none of them. Must never: do IO.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::adapters::telegram_config::TelegramConfig;
use crate::core::Timing;

/// One check's verdict.
#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    /// Works, but not as well as it should, or cannot be told.
    Warn,
    Fail,
    /// Does not apply here, or needs something that failed first.
    Skip,
}

/// One line of the report.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// Stable, for scripts: `sync_folder`, `writable`, `folder_kind`, `records_local`,
    /// `file_events`, `peers`, `clocks`, `agent`, `mirror_command`, `telegram_config`,
    /// `telegram_token`, `telegram_post`, `telegram_webhook`, `sleep_announcements`.
    pub id: &'static str,
    pub verdict: Verdict,
    pub summary: String,
    /// What to do about it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
    /// More lines (one per peer, per odd file, …).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
    /// Odd enough that a recording of the folder would help (see `baton record`).
    #[serde(skip)]
    pub odd: bool,
}

impl Check {
    pub fn new(id: &'static str, verdict: Verdict, summary: impl Into<String>) -> Self {
        Check {
            id,
            verdict,
            summary: summary.into(),
            fix: None,
            details: Vec::new(),
            odd: false,
        }
    }
    pub fn fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }
    pub fn details(mut self, details: Vec<String>) -> Self {
        self.details = details;
        self
    }
    pub fn odd(mut self) -> Self {
        self.odd = true;
        self
    }
}

/// What the doctor looks at, resolved the way `baton run` resolves it.
#[derive(Debug, Clone)]
pub struct Setup {
    pub sync_dir: PathBuf,
    pub group: String,
    /// The project directory (canonical when it exists).
    pub project_dir: PathBuf,
    /// This directory's device id on this machine.
    pub device_id: String,
    pub home: Option<PathBuf>,
    pub timing: Timing,
    /// The Telegram configuration, `Ok(None)` when no token is configured, `Err` with
    /// the (redacted) reason when it is malformed.
    pub telegram: Result<Option<TelegramConfig>, String>,
    pub events_timeout: Duration,
}

impl Setup {
    pub fn devices_dir(&self) -> PathBuf {
        crate::adapters::store::devices_dir(&self.sync_dir, &self.group)
    }
}
