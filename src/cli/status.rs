//! `baton status`: the numbered device table, from a local daemon or the folder.
//!
//! Owns: asking a running baton over its control socket, else reading the records
//! straight from the folder (ages by the writers' clocks, and said so), and rendering
//! the table (once, or redrawn with `--watch`). Must never: write into the folder.

use std::time::Duration;

use crate::adapters::control::{self, Reply, Request};
use crate::adapters::local;
use crate::adapters::store::Store;
use crate::config::{Settings, UsageError};
use crate::core::FileState;
use crate::core::election::{self, DeviceRow, Health};
use crate::core::record::Status;
use crate::core::record::{self};

use super::args::StatusArgs;
use super::error::CliError;
use crate::exit::ExitCode;

/// Where the table came from.
#[derive(serde::Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TableSource {
    /// A running baton on this machine, ages by its own observation.
    Daemon,
    /// Read from the folder, ages by the writers' wall clocks (± clock skew).
    Folder,
}

/// The device table: from a local daemon if one runs, else straight from the folder.
pub async fn load_table(settings: &Settings) -> Result<(Vec<DeviceRow>, TableSource), CliError> {
    for socket in local::group_sockets(&settings.state_dir, &settings.group) {
        if let Ok(Reply::Table { rows, .. }) =
            control::ask(&socket, &Request::Table, Duration::from_secs(2)).await
        {
            return Ok((rows, TableSource::Daemon));
        }
    }
    let store = Store::new(&settings.sync_dir, &settings.group, "");
    let timeout = Duration::from_secs(10);
    let listing = store.scan_bounded(timeout).await.map_err(|error| {
        UsageError(format!(
            "cannot read the devices folder {}: {error}",
            store.devices_dir().display()
        ))
    })?;
    if let Some(warning) = listing.junk_warning(store.devices_dir()) {
        eprintln!("warning: {warning}");
    }
    let files = listing.files;
    let now_wall = crate::adapters::clock::wall_ms();
    let entries = files
        .into_iter()
        .filter(|file| {
            matches!(
                record::classify_name(&file.name),
                record::NameKind::Record { .. }
            )
        })
        .filter_map(|file| match file.state {
            FileState::Contents { text } => record::parse_record(text.as_bytes()).ok(),
            _ => None,
        })
        .map(|record| {
            let age = Duration::from_millis(now_wall.saturating_sub(record.written_at_ms));
            (record, age, false)
        })
        .collect();
    Ok((
        trust_highest_claim(election::device_table(entries, &settings.timing)),
        TableSource::Folder,
    ))
}

impl TableSource {
    /// Which view the table trusts, in words (`baton status` says it, `--json` as
    /// `trusts`).
    pub fn trusts(self) -> &'static str {
        match self {
            TableSource::Daemon => {
                "the running baton's own view: ages by its clock since it saw each record change"
            }
            TableSource::Folder => {
                "the records on disk: ages by their writers' clocks (± skew); of several \
                 records claiming the role, only the highest claim (term, then device id) counts"
            }
        }
    }
}

/// Folder mode ages a record by its writer's wall clock, so a leader that just died
/// (or one that has not yet seen a newer claim on a slow medium) still looks healthy
/// next to the device that took over. Like every device, the table trusts the highest
/// live claim `(term, device id)`: any other record claiming Active is shown stale,
/// with the claim that supersedes it. Never two devices active and healthy at once.
pub fn trust_highest_claim(mut rows: Vec<DeviceRow>) -> Vec<DeviceRow> {
    let serving = |row: &DeviceRow| row.role == Status::Active && row.health == Health::Ok;
    let Some((term, leader)) = rows
        .iter()
        .filter(|row| serving(row))
        .map(|row| (row.term, row.device_id.clone()))
        .max()
    else {
        return rows;
    };
    for row in rows.iter_mut() {
        if serving(row) && row.device_id != leader {
            row.health = Health::Stale;
            let superseded = format!(
                "superseded by the higher claim of {leader} (term {term}); it steps down when \
                 it sees that claim"
            );
            row.problem = Some(match row.problem.take() {
                Some(problem) => format!("{problem}; {superseded}"),
                None => superseded,
            });
        }
    }
    // The table's order: the serving device first, then by device id; numbered anew.
    rows.sort_by(|a, b| (!serving(a), &a.device_id).cmp(&(!serving(b), &b.device_id)));
    for (index, row) in rows.iter_mut().enumerate() {
        row.number = index + 1;
    }
    rows
}

/// Renders the table for a terminal.
pub fn render_table(rows: &[DeviceRow], source: TableSource) -> String {
    if rows.is_empty() {
        return "no devices yet: start one with `baton run`\n".into();
    }
    let width = rows
        .iter()
        .map(|r| r.device_id.len())
        .max()
        .unwrap_or(6)
        .max(6);
    let mut out = format!(
        "{:>2}  {:<width$}  {:<11} {:>5}  {:>8}  HEALTH\n",
        "#", "DEVICE", "ROLE", "TERM", "SEEN"
    );
    for row in rows {
        let health = match row.health {
            Health::Ok => "ok",
            Health::Stale => "⚠ stale",
            Health::Stopped => "stopped",
            Health::Unknown => "newer baton",
        };
        let this = if row.this_device { " *" } else { "" };
        let problem = row
            .problem
            .as_deref()
            .map(|p| format!("  ⚠ {p}"))
            .unwrap_or_default();
        out.push_str(&format!(
            "{:>2}  {:<width$}  {:<11} {:>5}  {:>7}s  {health}{this}{problem}\n",
            row.number,
            row.device_id,
            row.role.as_str(),
            row.term,
            row.heartbeat_age_s,
        ));
    }
    if source == TableSource::Folder {
        out.push_str(
            "(read from the folder: ages use the writers' clocks; of two records claiming \
             the role, the higher claim is trusted; run `baton run` here for local ages)\n",
        );
    }
    out
}

/// How often `baton status --watch` redraws.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(2);

/// One `baton status --watch` frame: on a terminal, the screen is cleared and redrawn
/// in one write (no flicker) under a header saying when it was drawn; piped, frames
/// simply follow each other.
pub fn render_watch_frame(group: &str, rows: &[DeviceRow], source: TableSource) -> String {
    let clear = if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        "\x1b[H\x1b[2J"
    } else {
        "\n"
    };
    format!(
        "{clear}baton status · group {group} · {} · every {} s, Ctrl-C to stop\n\n{}",
        local_time_of_day(),
        WATCH_INTERVAL.as_secs(),
        render_table(rows, source)
    )
}

/// `HH:MM:SS` in local time (empty if the C library cannot tell).
fn local_time_of_day() -> String {
    let now = crate::adapters::clock::wall_ms() / 1000;
    let Ok(now) = libc::time_t::try_from(now) else {
        return String::new();
    };
    // SAFETY: an all-zero `tm` is a valid value for localtime_r to overwrite.
    let mut local: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the duration of the call; localtime_r is the
    // thread-safe variant and writes only into `local`.
    let converted = unsafe { libc::localtime_r(&now, &mut local) };
    if converted.is_null() {
        return String::new();
    }
    format!(
        "{:02}:{:02}:{:02}",
        local.tm_hour, local.tm_min, local.tm_sec
    )
}

/// `baton status [--json] [--watch]`: prints the table once, or redraws it every
/// [`WATCH_INTERVAL`] until Ctrl-C.
pub async fn run(settings: &Settings, args: &StatusArgs) -> Result<i32, CliError> {
    loop {
        let (rows, source) = load_table(settings).await?;
        if args.json {
            let value = serde_json::json!({
                "group": settings.group,
                "source": source,
                "trusts": source.trusts(),
                "devices": rows,
            });
            let text = serde_json::to_string_pretty(&value)
                .expect("BUG: the device table (strings and numbers) serialises");
            println!("{text}");
        } else if args.watch {
            print!("{}", render_watch_frame(&settings.group, &rows, source));
        } else {
            print!("{}", render_table(&rows, source));
        }
        if !args.watch {
            return Ok(ExitCode::Ok.code());
        }
        tokio::select! {
            _ = tokio::time::sleep(WATCH_INTERVAL) => {}
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::Ok.code()),
        }
    }
}
