//! `baton doctor`: checks a user's own set-up — the sync folder, file events, peers and
//! clocks, the background agent, the Telegram configuration — and says for each what
//! is right, what is wrong and what to do. Its report is safe to paste into an issue.
//!
//! Owns: the checks (`folder`, `peers`, `agent_check`, `telegram_check`), their verdicts
//! and wording, the report (text and `--json`), and when to point at `baton record`.
//! OS facts it cannot read from files come through [`os::OsProbes`], so tests present a
//! healthy and a broken machine with real folders and the real fake Bot API.
//!
//! Must never: print the bot token or any credential (every line goes through the
//! token redaction, and the configured token itself is scrubbed), change the user's
//! set-up (it writes one probe file, with a name no sync tool syncs, and removes it),
//! or wait unbounded (every probe has a timeout).

mod agent_check;
mod check;
mod folder;
pub mod os;
mod peers;
mod telegram_check;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

pub use check::{Check, Setup, Verdict};

use crate::adapters::telegram_config::redact_token_shapes;
use crate::cli::{DoctorArgs, GlobalArgs};
use crate::config::UsageError;

/// The whole report.
#[derive(Serialize, Debug, Clone)]
pub struct Report {
    pub group: String,
    pub sync_dir: PathBuf,
    pub device_id: String,
    pub checks: Vec<Check>,
    /// The exact `baton record` command to capture the folder, when something is odd.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record_command: Option<String>,
}

impl Report {
    pub fn check(&self, id: &str) -> Option<&Check> {
        self.checks.iter().find(|check| check.id == id)
    }
    pub fn failed(&self) -> bool {
        self.checks
            .iter()
            .any(|check| check.verdict == Verdict::Fail)
    }
}

/// Runs every check. Bounded: each probe has its own timeout.
pub async fn diagnose(setup: &Setup, os: &dyn os::OsProbes) -> Report {
    let mut checks = folder::checks(setup, os).await;
    checks.extend(peers::checks(setup, os));
    checks.extend(agent_check::checks(setup, os));
    checks.extend(telegram_check::checks(setup).await);
    checks.push(
        Check::new(
            "sleep_announcements",
            Verdict::Skip,
            "sleep announcements: not checked by this version",
        )
        .fix("a later version announces sleep to the group and checks it here"),
    );
    let record_command = checks
        .iter()
        .any(|check| check.odd)
        .then(|| record_command(&setup.sync_dir, &setup.group));
    Report {
        group: setup.group.clone(),
        sync_dir: setup.sync_dir.clone(),
        device_id: setup.device_id.clone(),
        checks,
        record_command,
    }
}

/// `baton record …` for this folder, quoted for a POSIX shell.
pub fn record_command(sync_dir: &Path, group: &str) -> String {
    format!(
        "baton record --sync-dir {} --group {} --out odd-sync.jsonl --duration 600",
        shell_quote(&sync_dir.to_string_lossy()),
        shell_quote(group)
    )
}

fn shell_quote(word: &str) -> String {
    let plain = word
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/._-+:@,".contains(&b));
    if plain && !word.is_empty() {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// The report for a terminal.
pub fn render_text(report: &Report) -> String {
    let mut out = format!(
        "baton doctor · group {} · sync folder {}\nthis device: {}\n\n",
        report.group,
        report.sync_dir.display(),
        report.device_id
    );
    for check in &report.checks {
        let mark = match check.verdict {
            Verdict::Pass => "  ok  ",
            Verdict::Warn => " WARN ",
            Verdict::Fail => " FAIL ",
            Verdict::Skip => " skip ",
        };
        out.push_str(&format!("[{mark}] {:<19} {}\n", check.id, check.summary));
        for detail in &check.details {
            out.push_str(&format!("{:28}· {detail}\n", ""));
        }
        if let Some(fix) = &check.fix {
            out.push_str(&format!("{:28}→ {fix}\n", ""));
        }
    }
    if let Some(command) = &report.record_command {
        out.push_str(&format!(
            "\nSomething above looks odd. To capture what this folder does (records hold no \
             secret), run for ten minutes and attach the file to an issue:\n    {command}\n"
        ));
    }
    let count = |verdict| {
        report
            .checks
            .iter()
            .filter(|c| c.verdict == verdict)
            .count()
    };
    out.push_str(&format!(
        "\nverdicts: {} ok, {} warnings, {} failures, {} skipped\n",
        count(Verdict::Pass),
        count(Verdict::Warn),
        count(Verdict::Fail),
        count(Verdict::Skip)
    ));
    out
}

/// What the doctor prints, whatever it is, passes through here: the configured token
/// is scrubbed, and anything token-shaped is redacted.
pub fn safe_to_paste(text: &str, setup: &Setup) -> String {
    let scrubbed = match &setup.telegram {
        Ok(Some(config)) => config.bot_token.scrub(text),
        _ => text.to_string(),
    };
    redact_token_shapes(&scrubbed).into_owned()
}

/// Resolves what `baton run DIR` would use.
pub fn setup(global: &GlobalArgs, args: &DoctorArgs) -> Result<Setup, UsageError> {
    let project_dir = args.dir.canonicalize().unwrap_or_else(|_| args.dir.clone());
    let telegram = crate::cli::telegram_config(&project_dir, &args.telegram)
        .map_err(|error| redact_token_shapes(&error.to_string()).into_owned());
    let bot_id = telegram
        .as_ref()
        .ok()
        .and_then(|config| config.as_ref())
        .and_then(crate::cli::bot_id);
    let settings = crate::cli::settings(global, bot_id)?;
    if !(args.events_timeout.is_finite() && (0.1..=600.0).contains(&args.events_timeout)) {
        return Err(UsageError(format!(
            "--events-timeout {} is out of range: use 0.1 to 600 seconds",
            args.events_timeout
        )));
    }
    let name = args
        .device
        .device_name
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty());
    Ok(Setup {
        device_id: crate::core::record::device_id(
            name,
            &crate::cli::hostname(),
            &project_dir.to_string_lossy(),
        ),
        sync_dir: settings.sync_dir,
        group: settings.group,
        project_dir,
        home: dirs::home_dir(),
        timing: settings.timing,
        telegram,
        events_timeout: Duration::from_secs_f64(args.events_timeout),
    })
}

/// `baton doctor`: prints the report; exit 1 when a check failed, else 0.
pub async fn run(global: &GlobalArgs, args: &DoctorArgs) -> Result<i32, UsageError> {
    let setup = setup(global, args)?;
    let report = diagnose(&setup, &os::RealOs).await;
    let text = if args.json {
        let json = serde_json::to_string_pretty(&report)
            .expect("BUG: the doctor's report failed to serialise");
        format!("{json}\n")
    } else {
        render_text(&report)
    };
    print!("{}", safe_to_paste(&text, &setup));
    Ok(if report.failed() {
        crate::exit::ExitCode::Failure.code()
    } else {
        crate::exit::ExitCode::Ok.code()
    })
}
