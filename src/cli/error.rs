//! What the small commands can fail with, and the exit code each failure means.
//!
//! Owns: [`CliError`]. Must never: carry the token in a message.

use crate::adapters::local;
use crate::config::UsageError;
use crate::exit::ExitCode;

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
            CliError::Usage(_) => ExitCode::Usage.code(),
            CliError::Local(local::LocalError::AlreadyRunning { .. }) => {
                ExitCode::AlreadyRunning.code()
            }
            CliError::Local(_) | CliError::Daemon(_) => ExitCode::Failure.code(),
        }
    }
}
