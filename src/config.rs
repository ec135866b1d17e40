//! The configuration types: what a command runs with once its flags, files and
//! environment are read and checked.
//!
//! Owns: [`RunConfig`] (everything `baton run` needs), [`Settings`] (the resolved common
//! settings), [`UsageError`] (bad input: exit code 2) and the checks every entry point
//! shares ([`project_dir`]). It sits below the runtime and beside the adapters: the
//! command line parses INTO these types, the runtime and the demo only read them. Must
//! never: read flags or files itself, or hold the bot token anywhere but in the
//! Telegram plan's `Secret`.

use std::path::{Path, PathBuf};

use crate::adapters::watcher::WatchMode;
use crate::core::{Identity, Timing};
use crate::serving::plan::{ChildPlan, TelegramPlan};

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

/// Everything `baton run` needs, validated by the CLI.
pub struct RunConfig {
    pub identity: Identity,
    pub sync_dir: PathBuf,
    pub group: String,
    pub state_dir: PathBuf,
    pub timing: Timing,
    pub seed: u64,
    pub watch_mode: WatchMode,
    /// Telegram, when configured: the active device polls it.
    pub telegram: Option<TelegramPlan>,
    /// The child command (the mirror), when given.
    pub child: Option<ChildPlan>,
    /// Re-reads the configuration on SIGHUP; returns a fingerprint (never the token
    /// itself) to compare with the one in force, or why it could not be read.
    pub reload: Option<Reload>,
}

/// Re-reads the configuration and fingerprints it.
pub type Reload = Box<dyn Fn() -> Result<String, String> + Send>;

/// The project directory, absolute and canonical.
pub fn project_dir(dir: &Path) -> Result<PathBuf, UsageError> {
    dir.canonicalize().map_err(|error| {
        UsageError(format!(
            "project directory {} is not usable ({error}); pass an existing directory",
            dir.display()
        ))
    })
}
