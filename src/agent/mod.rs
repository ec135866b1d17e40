//! Installs `baton run` as a per-user background service: a launchd LaunchAgent on
//! macOS, a systemd user unit on Linux.
//!
//! # What it owns
//!
//! - The service label (`dev.mirror-baton.<slug>-<hash>`) and where the service file lives:
//!   `~/Library/LaunchAgents/<label>.plist` or `~/.config/systemd/user/<label>.service`.
//! - Rendering those files ([`render`]), writing them atomically with mode 0644
//!   ([`install()`](install::install)), removing them ([`uninstall`]) and finding them
//!   again ([`list`]).
//! - Asking the service manager to load or unload them, always through a
//!   [`CommandRunner`] so that tests and dry runs never touch `launchctl` or `systemctl`.
//! - The `baton agent …` verbs themselves ([`verbs`]): their flags and output.
//!
//! # Layout
//!
//! [`label`] (labels) and [`error`] are the leaves; [`secrets`] (what may never be
//! written), [`spec`] (the environment, the request, the resolved spec), [`runner`]
//! (the service-manager commands), [`launchd`] and [`systemd`] (one file format and
//! loader each), [`install`](mod@install) (the operations) and [`verbs`] (the command line) build on
//! them in that order. This module only declares and re-exports them.
//!
//! # What it must never do
//!
//! - Put a secret in a service file. The bot token stays in baton's own configuration,
//!   read at start. Environment variables whose NAME looks secret (TOKEN, SECRET,
//!   PASSWORD, ...) are dropped even when explicitly passed, and any argument or value
//!   that looks like a Telegram bot token is refused: service files are world-readable.
//! - Read a secret's value into an error or a log line: errors name the variable or the
//!   argument's position, never its value.
//! - Panic on bad input (missing directory, non-UTF-8 path, odd label): every such case is
//!   an [`AgentError`] that says what to do.
//! - Read the process environment anywhere but [`AgentEnv::detect`]: everything else takes
//!   an [`AgentEnv`], so a test can point HOME at a temporary folder and render both the
//!   launchd and the systemd file on any OS.
//!
//! # Why these service settings
//!
//! - Restart only after a failure (`KeepAlive = {SuccessfulExit = false}`,
//!   `Restart=on-failure`): a clean exit 0 follows a resignation the user asked for.
//! - The stop timeout ([`STOP_TIMEOUT`], launchd `ExitTimeOut`, systemd `TimeoutStopSec`)
//!   must exceed baton's resignation plus its child's grace period, or the manager
//!   SIGKILLs baton mid-handoff. The runtime's budgets must stay below it.
//! - systemd `KillMode=mixed`: SIGTERM goes to baton alone, which resigns first and then
//!   stops its child with grace (ordering matters: the child must not vanish while baton
//!   still holds the role); only if baton overruns the timeout does SIGKILL hit the whole
//!   control group, so no orphaned child survives. `control-group` would SIGTERM the child
//!   at the same moment as baton; `process` could leave the child running forever.
//! - launchd `ProcessType = Background`: baton mostly sleeps on long polls and multi-second
//!   leases, so launchd's CPU/IO throttling and timer coalescing cost nothing noticeable
//!   while keeping it out of the user's way. `Adaptive` only differs for XPC services,
//!   which baton is not.

pub mod error;
pub mod install;
pub mod label;
pub mod launchd;
pub mod runner;
pub mod secrets;
pub mod spec;
pub mod systemd;
pub mod verbs;

pub use error::AgentError;
pub use install::{
    InstallReport, InstalledAgent, UninstallReport, UninstallTarget, install, list, print, render,
    uninstall,
};
pub use label::{LABEL_MAX_LEN, LABEL_PREFIX, default_label};
pub use launchd::{LAUNCHD_PROCESS_TYPE, render_launchd_plist};
pub use runner::{CommandOutput, CommandRunner, DryRunRunner, SystemRunner};
pub use secrets::{is_secret_env_name, looks_like_bot_token};
pub use spec::{
    AgentEnv, AgentSpec, InstallRequest, RESTART_THROTTLE, STOP_TIMEOUT, ServiceManager,
    normalize_label,
};
pub use systemd::{render_systemd_unit, systemd_quote};
