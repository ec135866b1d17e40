//! Every flag of `baton` and its help text: the clap definitions, nothing else.
//!
//! Owns: the commands and their arguments as the user types them. Must never: validate
//! or act (the other `cli` modules parse these into the configuration types).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use super::simulate;

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
    Simulate(simulate::SimulateArgs),
    /// Replay a recorded fixture through the real core and print the transcript.
    Replay(crate::replay::ReplayArgs),
    /// Record a live folder's file events into a fixture (to contribute a real iCloud sequence).
    Record(crate::replay::RecordArgs),
    /// Check this machine's set-up (sync folder, file events, peers, clocks, agent, Telegram); safe to paste.
    Doctor(DoctorArgs),
    /// Install, remove, list or print the background agent (launchd on macOS, systemd on Linux).
    #[command(subcommand)]
    Agent(crate::agent::verbs::AgentCommand),
    /// Play the whole system on this machine: three devices, a simulated sync delay, a fake Telegram.
    #[cfg(feature = "demo")]
    Demo(crate::demo::DemoArgs),
    /// A stand-in for the mirror: reads updates from baton's gateway into a file (tests, demo).
    #[cfg(feature = "demo")]
    #[command(hide = true)]
    MirrorStub(baton_testkit::mirror_stub::MirrorStubArgs),
    /// Serve a fake Telegram Bot API on loopback (tests, demo).
    #[cfg(feature = "demo")]
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

/// `baton doctor` options.
#[derive(Args, Debug, Clone)]
pub struct DoctorArgs {
    /// The project directory whose device, agent and configuration to check.
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Print JSON (for scripts) instead of lines.
    #[arg(long)]
    pub json: bool,
    /// How long to wait for the probe file's event, in seconds.
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    pub events_timeout: f64,
    #[command(flatten)]
    pub device: DeviceArgs,
    #[command(flatten)]
    pub telegram: TelegramArgs,
}
