//! The command line: clap definitions, parsing them into the configuration types, and
//! the small commands (`status`, `activate`, `simulate`) that need no run loop.
//!
//! Owns: every flag and its help text ([`args`]), the defaults and the device identity
//! ([`settings`](mod@settings)), what the small commands fail with ([`error`]) and the commands
//! themselves ([`status`], [`activate`](mod@activate), [`simulate`]). The verbs of `baton agent` live
//! with the agent (`crate::agent::verbs`), `baton replay`/`record` in `crate::replay`.
//! Must never: print or log a token, or hold configuration of its own: it parses into
//! `crate::config`'s types. This module only declares and re-exports.

pub mod activate;
pub mod args;
pub mod error;
pub mod settings;
pub mod status;

pub use activate::activate;
pub use args::{
    ActivateArgs, Cli, Command, DeviceArgs, DoctorArgs, FakeTelegramArgs, GlobalArgs, LogFormat,
    RunArgs, StatusArgs, TelegramArgs,
};
pub use error::CliError;
pub use settings::{
    bot_id, default_sync_dir, hostname, identity, settings, telegram_config, watch_mode,
};
pub use status::{
    TableSource, WATCH_INTERVAL, load_table, render_table, render_watch_frame, trust_highest_claim,
};

pub mod simulate;
