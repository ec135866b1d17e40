//! The command line: clap definitions, validation into configs, and the small commands
//! (`status`, `activate`) that need no run loop.
//!
//! Owns: every flag and its help text, defaults (sync folder, group, state folder), the
//! device identity, and the documented exit codes. Must never: print or log a token.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::adapters::control::{self, Reply, Request};
use crate::adapters::local;
use crate::adapters::store::Store;
use crate::adapters::watcher::WatchMode;
use crate::core::election::{self, DeviceRow, Health};
use crate::core::record::{self, Identity};
use crate::core::{ActivationOutcome, FileState, Status, Timing};

/// Documented exit codes (README "Exit codes").
pub mod exit {
    pub const OK: i32 = 0;
    /// Runtime failure (IO, a folder that cannot be created).
    pub const FAILURE: i32 = 1;
    /// Bad flags or configuration (clap also exits 2).
    pub const USAGE: i32 = 2;
    /// Another live process writes this device id (cloned or restored Mac).
    pub const DUPLICATE_DEVICE: i32 = crate::core::io::exit_code::DUPLICATE_DEVICE;
    /// A `baton run` for this device already runs on this machine.
    pub const ALREADY_RUNNING: i32 = 4;
    /// No running baton on this machine to ask (for `activate`).
    pub const NO_DAEMON: i32 = 5;
    /// The activation was refused or did not complete in time.
    pub const ACTIVATION_FAILED: i32 = 6;
    /// Forced exit on a second SIGINT/SIGTERM.
    pub const FORCED: i32 = crate::runtime::EXIT_FORCED;
}

#[derive(Parser, Debug)]
#[command(
    name = "baton",
    version,
    about = "Passes one Telegram bot between several devices over a synced folder, so exactly one serves it",
    long_about = None
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct GlobalArgs {
    /// The synced folder all devices share. Default: `~/Library/Mobile Documents/com~apple~CloudDocs/mirror-baton`
    /// when iCloud Drive exists, else `mirror-baton/sync` in the user's data folder (so several projects on one
    /// machine coordinate out of the box).
    #[arg(long, env = "BATON_SYNC_DIR", global = true, value_name = "DIR")]
    pub sync_dir: Option<PathBuf>,
    /// The group: devices of one group share one bot. Default: `bot<id>` from the bot token when one is
    /// configured, else `default`.
    #[arg(long, env = "BATON_GROUP", global = true, value_name = "NAME")]
    pub group: Option<String>,
    /// Local, never-synced state (install id, locks, control sockets). Default: the user's state folder.
    #[arg(long, env = "BATON_STATE_DIR", global = true, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Multiplies every protocol timing constant (tests and demos use 0.01–0.1).
    #[arg(
        long,
        env = "BATON_TIME_SCALE",
        global = true,
        default_value_t = 1.0,
        value_name = "F"
    )]
    pub time_scale: f64,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Coordinate for a project directory: take part in the election and serve the bot while active.
    Run(RunArgs),
    /// Print the numbered device table (what Telegram's /devices shows).
    Status(StatusArgs),
    /// Ask for a device (default: this directory's) to become active.
    Activate(ActivateArgs),
    /// Run the deterministic multi-device simulator (and the seed design side by side).
    Simulate(crate::sim::SimulateArgs),
    /// Replay a recorded fixture through the real core and print the transcript.
    Replay(crate::replay::ReplayArgs),
    /// Record a live folder's file events into a fixture (to contribute a real iCloud sequence).
    Record(crate::replay::RecordArgs),
    /// Check this machine's set-up (sync folder, file events, peers, clocks, agent, Telegram); safe to paste.
    Doctor(crate::doctor::DoctorArgs),
    /// Install, remove, list or print the background agent (launchd on macOS, systemd on Linux).
    #[command(subcommand)]
    Agent(crate::cli_ops::AgentCommand),
    /// Play the whole system on this machine: three devices, a simulated sync delay, a fake Telegram.
    Demo(crate::demo::DemoArgs),
    /// A stand-in for the mirror: reads updates from baton's gateway into a file (tests, demo).
    #[command(hide = true)]
    MirrorStub(crate::mirror_stub::MirrorStubArgs),
    /// Serve a fake Telegram Bot API on loopback (tests, demo).
    #[command(hide = true)]
    FakeTelegram(FakeTelegramArgs),
    /// Run a command and stop its process group when baton (holding our stdin) dies.
    #[command(hide = true)]
    ChildGuard(crate::child_guard::ChildGuardArgs),
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// The project directory this device serves.
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    #[command(flatten)]
    pub device: DeviceArgs,
    /// Rank among standbys when the active device hands over on stop (higher first).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub priority: i32,
    /// The active device removes records not seen for this many hours.
    #[arg(long, default_value_t = 24, value_parser = clap::value_parser!(u64).range(1..=8760), value_name = "HOURS")]
    pub retention_hours: u64,
    /// Seed for every random delay (default: from the OS); printed at start so a run can be replayed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Poll the folder every SECS seconds instead of waiting for file events (network/FUSE mounts).
    #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "2")]
    pub poll: Option<f64>,
    #[command(flatten)]
    pub telegram: TelegramArgs,
    /// Run CMD only while this device is active and stop it on leaving Active — for programs that poll
    /// Telegram themselves. baton then does not poll, and the role moves only by `baton activate`,
    /// resignation or failover.
    #[arg(long)]
    pub child_when_active: bool,
    /// The command to run in DIR (e.g. the opencode-telegram-mirror), after `--`. It gets
    /// TELEGRAM_UPDATES_URL (baton's loopback gateway) and BATON_DEVICE_ID.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// Telegram settings on top of the mirror's own sources, later winning:
/// ~/.config/opencode/telegram.json, DIR/.opencode/telegram.json, then the environment
/// (TELEGRAM_BOT_TOKEN, TELEGRAM_CHAT_ID, TELEGRAM_THREAD_ID, TELEGRAM_API_URL), then these flags.
#[derive(Args, Debug, Clone, Default)]
pub struct TelegramArgs {
    /// The chat served (overrides every other source).
    #[arg(long, allow_negative_numbers = true, value_name = "ID")]
    pub chat_id: Option<i64>,
    /// The forum topic served (overrides every other source).
    #[arg(long, value_name = "ID")]
    pub thread_id: Option<i64>,
    /// A self-hosted Bot API server (or a fake, for tests), instead of api.telegram.org.
    #[arg(long, env = "TELEGRAM_API_URL", value_name = "URL")]
    pub telegram_api_url: Option<String>,
    /// Long-poll timeout for getUpdates, in seconds (Telegram allows up to 50).
    #[arg(long, default_value_t = 25, value_parser = clap::value_parser!(u64).range(1..=50), value_name = "SECS")]
    pub poll_timeout: u64,
}

#[derive(Args, Debug, Clone, Default)]
pub struct DeviceArgs {
    /// A name for this device; the id becomes `name@hostname:directory`.
    #[arg(long, env = "DEVICE_NAME")]
    pub device_name: Option<String>,
}

#[derive(Args, Debug, Clone)]
pub struct FakeTelegramArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: std::net::SocketAddr,
    /// The bot token the fake accepts.
    #[arg(long, default_value = "123456:TEST-token")]
    pub token: String,
}

#[derive(Args, Debug, Clone)]
pub struct StatusArgs {
    /// Print JSON (stable shape, see README) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Refresh every 2 seconds until interrupted.
    #[arg(long)]
    pub watch: bool,
}

#[derive(Args, Debug, Clone)]
pub struct ActivateArgs {
    /// A number from `baton status`, a device id, or a unique part of one. Default: this directory's device.
    pub target: Option<String>,
    /// The project directory whose device is "this device".
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    #[command(flatten)]
    pub device: DeviceArgs,
}

/// What the small commands can fail with.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Usage(#[from] UsageError),
    #[error(transparent)]
    Local(#[from] local::LocalError),
    #[error("the running baton answered oddly: {0} (are two versions installed?)")]
    Daemon(String),
}

impl CliError {
    /// The documented exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Usage(_) => exit::USAGE,
            CliError::Local(local::LocalError::AlreadyRunning { .. }) => exit::ALREADY_RUNNING,
            CliError::Local(_) | CliError::Daemon(_) => exit::FAILURE,
        }
    }
}

/// A bad flag, folder or configuration: exit code 2 with this message.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// The resolved common settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub sync_dir: PathBuf,
    pub group: String,
    pub state_dir: PathBuf,
    pub timing: Timing,
}

pub fn settings(global: &GlobalArgs, bot_id: Option<u64>) -> Result<Settings, UsageError> {
    if !(global.time_scale.is_finite() && (0.001..=100.0).contains(&global.time_scale)) {
        return Err(UsageError(format!(
            "--time-scale {} is out of range: use a number from 0.001 to 100",
            global.time_scale
        )));
    }
    let group = match &global.group {
        Some(group) => validate_group(group)?,
        None => bot_id.map_or_else(|| "default".to_string(), |id| format!("bot{id}")),
    };
    Ok(Settings {
        sync_dir: global.sync_dir.clone().unwrap_or_else(default_sync_dir),
        group,
        state_dir: global
            .state_dir
            .clone()
            .unwrap_or_else(local::default_state_dir),
        timing: Timing::default().scaled(global.time_scale),
    })
}

fn validate_group(group: &str) -> Result<String, UsageError> {
    let ok = !group.is_empty()
        && group.len() <= 64
        && group
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && !group.starts_with('.');
    if ok {
        Ok(group.to_string())
    } else {
        Err(UsageError(format!(
            "--group {group:?} is not a usable folder name: use 1–64 letters, digits, '-', '_' or '.', not starting with '.'"
        )))
    }
}

/// iCloud Drive's folder when it exists, else a local folder.
pub fn default_sync_dir() -> PathBuf {
    let home = dirs::home_dir().unwrap_or_else(std::env::temp_dir);
    let icloud = home.join("Library/Mobile Documents/com~apple~CloudDocs");
    if icloud.is_dir() {
        return icloud.join("mirror-baton");
    }
    dirs::data_dir()
        .unwrap_or_else(|| home.join(".local/share"))
        .join("mirror-baton")
        .join("sync")
}

/// This machine's short host name (without `.local`). `BATON_HOSTNAME` overrides it: the
/// demo gives each of its devices a host of its own, so they behave as separate Macs.
pub fn hostname() -> String {
    if let Ok(name) = std::env::var("BATON_HOSTNAME")
        && !name.trim().is_empty()
    {
        return name.trim().to_string();
    }
    let mut buffer = [0u8; 256];
    // SAFETY: gethostname writes at most buffer.len() bytes into a valid buffer.
    let result = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) };
    let name = if result == 0 {
        let end = buffer.iter().position(|b| *b == 0).unwrap_or(buffer.len());
        String::from_utf8_lossy(&buffer[..end]).into_owned()
    } else {
        String::new()
    };
    let name = name.trim_end_matches(".local").to_string();
    if name.is_empty() {
        "localhost".into()
    } else {
        name
    }
}

/// The project directory, absolute and canonical.
pub fn project_dir(dir: &Path) -> Result<PathBuf, UsageError> {
    dir.canonicalize().map_err(|error| {
        UsageError(format!(
            "project directory {} is not usable ({error}); pass an existing directory",
            dir.display()
        ))
    })
}

/// The identity of the device for `dir` on this machine.
pub fn identity(
    dir: &Path,
    device: &DeviceArgs,
    state_dir: &Path,
    priority: i32,
    thread_id: Option<i64>,
) -> Result<Identity, CliError> {
    let project = project_dir(dir)?;
    let project = project.to_string_lossy().into_owned();
    let hostname = hostname();
    let name = device
        .device_name
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty());
    Ok(Identity {
        device_id: record::device_id(name, &hostname, &project),
        hostname,
        project_dir: project,
        pid: std::process::id(),
        instance: local::random_hex(8),
        install_id: local::install_id(state_dir)?,
        boot_id: local::boot_id(),
        priority,
        thread_id,
        version: env!("CARGO_PKG_VERSION").to_string(),
    })
}

/// Builds the run configuration for coordination (serving is added by the caller).
pub fn watch_mode(poll: Option<f64>) -> Result<WatchMode, UsageError> {
    match poll {
        None => Ok(WatchMode::Native),
        Some(secs) if secs.is_finite() && (0.05..=3600.0).contains(&secs) => {
            Ok(WatchMode::Poll(Duration::from_secs_f64(secs)))
        }
        Some(secs) => Err(UsageError(format!(
            "--poll {secs} is out of range: use 0.05 to 3600 seconds"
        ))),
    }
}

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

/// `baton activate`: ask a local daemon, then watch the folder until the target is active.
pub async fn activate(settings: &Settings, args: &ActivateArgs) -> Result<i32, CliError> {
    let own_id = {
        let project = project_dir(&args.dir)?;
        let name = args
            .device
            .device_name
            .as_deref()
            .filter(|n| !n.trim().is_empty());
        record::device_id(name, &hostname(), &project.to_string_lossy())
    };
    let target = args.target.clone().unwrap_or_else(|| own_id.clone());
    let own_socket = local::control_socket(
        &settings.state_dir,
        &settings.group,
        &record::file_stem(&own_id),
    );
    let mut sockets = vec![own_socket];
    sockets.extend(local::group_sockets(&settings.state_dir, &settings.group));
    let request = Request::Activate {
        target: target.clone(),
    };
    let mut reply = None;
    for socket in sockets {
        if let Ok(answer) = control::ask(&socket, &request, Duration::from_secs(5)).await {
            reply = Some(answer);
            break;
        }
    }
    let Some(reply) = reply else {
        eprintln!(
            "no baton is running on this machine for group {:?}; start one with `baton run` (the request travels through it)",
            settings.group
        );
        return Ok(exit::NO_DAEMON);
    };
    let (asked_via, result) = match reply {
        Reply::Activation { device_id, result } => (device_id, result),
        Reply::Error { message } => {
            eprintln!("baton refused: {message}");
            return Ok(exit::ACTIVATION_FAILED);
        }
        Reply::Table { .. } => {
            return Err(CliError::Daemon(
                "a table came back for an activation request".into(),
            ));
        }
    };
    let wanted = match result {
        ActivationOutcome::AlreadyActive { device } => {
            println!("{device} is already active");
            return Ok(exit::OK);
        }
        ActivationOutcome::Done { device } => {
            println!("✅ {device} is now ACTIVE");
            return Ok(exit::OK);
        }
        ActivationOutcome::Failed { reason } => {
            eprintln!("cannot activate: {reason}");
            return Ok(exit::ACTIVATION_FAILED);
        }
        ActivationOutcome::HandingOver { to } => {
            println!("{asked_via} is handing over to {to} …");
            to
        }
        ActivationOutcome::Requested { to, leader } => {
            let leader = leader.unwrap_or_else(|| "(no active device yet)".into());
            println!("asked {leader} to hand over to {to} …");
            to
        }
        ActivationOutcome::Contending => {
            println!("no device is active; {asked_via} is claiming the role …");
            asked_via
        }
    };
    wait_until_active(settings, &wanted).await
}

async fn wait_until_active(settings: &Settings, wanted: &str) -> Result<i32, CliError> {
    let limit = settings.timing.request_timeout + settings.timing.handoff_timeout;
    let started = tokio::time::Instant::now();
    while started.elapsed() < limit {
        let (rows, _) = load_table(settings).await?;
        if rows.iter().any(|row| {
            row.device_id == wanted && row.role == Status::Active && row.health == Health::Ok
        }) {
            println!("✅ {wanted} is now ACTIVE");
            return Ok(exit::OK);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("{wanted} did not become active within {limit:?}; see `baton status`");
    Ok(exit::ACTIVATION_FAILED)
}

/// Loads the Telegram configuration the mirror itself would use, with baton's flags on
/// top. `Ok(None)` when no bot token is configured anywhere (coordination only).
pub fn telegram_config(
    project: &Path,
    args: &TelegramArgs,
) -> Result<Option<crate::adapters::telegram_config::TelegramConfig>, UsageError> {
    use crate::adapters::telegram_config::{
        ConfigError, ConfigSources, TelegramOverrides, load_telegram_config,
    };
    let env: std::collections::HashMap<String, String> = std::env::vars().collect();
    let home = dirs::home_dir();
    let sources = ConfigSources {
        home_dir: home.as_deref(),
        project_dir: project,
        env: &env,
        overrides: TelegramOverrides {
            bot_token: None,
            chat_id: args.chat_id,
            thread_id: args.thread_id,
            api_url: args.telegram_api_url.clone(),
        },
    };
    match load_telegram_config(&sources) {
        Ok(config) => Ok(Some(config)),
        Err(ConfigError::Missing {
            key: "botToken", ..
        }) => Ok(None),
        Err(error) => Err(UsageError(format!(
            "Telegram configuration: {}",
            crate::adapters::telegram_config::redact_token_shapes(&error.to_string())
        ))),
    }
}

/// The bot's numeric id: the part of the token before `:`.
pub fn bot_id(config: &crate::adapters::telegram_config::TelegramConfig) -> Option<u64> {
    config.bot_token.expose().split(':').next()?.parse().ok()
}
