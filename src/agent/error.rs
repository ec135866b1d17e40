//! What installing, removing or listing an agent can fail with.
//!
//! Owns: [`AgentError`], each variant with the context to act on. Must never: hold a
//! secret's value (errors name the variable or the argument's position).

use std::path::{Path, PathBuf};

use super::label::LABEL_MAX_LEN;

/// Everything that went wrong, each with enough context to act on. No variant ever holds
/// a secret's value.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("project directory {path:?} does not exist; create it or pass an existing DIR")]
    DirNotFound { path: PathBuf },
    #[error("{path:?} is not a directory; pass the project directory")]
    NotADirectory { path: PathBuf },
    #[error(
        "{what} {path:?} is not valid UTF-8, which launchd and systemd files cannot hold; \
         rename or move it"
    )]
    NonUtf8Path { what: &'static str, path: PathBuf },
    #[error("the baton executable path {path:?} is not absolute; launchd and systemd need one")]
    ProgramNotAbsolute { path: PathBuf },
    #[error("{what} contains a newline, NUL or other control character; remove it")]
    ControlCharacter { what: String },
    #[error(
        "invalid label {label:?}: {reason}; use letters, digits, '.', '-' and '_' \
         (at most {LABEL_MAX_LEN} characters)"
    )]
    InvalidLabel { label: String, reason: &'static str },
    #[error("invalid environment variable name {name:?}: use letters, digits and '_'")]
    InvalidEnvName { name: String },
    #[error(
        "{what} holds the Telegram bot token (or a value shaped like one); service files are \
         world-readable, so baton reads the token from its configuration at start: remove it \
         (nothing was written)"
    )]
    SecretInArguments { what: String },
    #[error("cannot find the home directory; set HOME")]
    NoHome,
    #[error("refusing to install a LaunchAgent as root: run `baton agent` as the user who owns it")]
    RunningAsRoot,
    #[error("cannot locate the baton executable ({source}); run baton from an installed path")]
    CurrentExe { source: std::io::Error },
    #[error("cannot {action} {path:?}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot render the plist: {source}")]
    Plist { source: plist::Error },
    #[error("cannot run `{program}` ({source}); is it installed and on PATH?")]
    CommandSpawn {
        program: String,
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}): {stderr}")]
    CommandFailed {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("no agent {label:?} is installed (looked for {path:?}); `baton agent list` shows them")]
    NotInstalled { label: String, path: PathBuf },
}

pub(crate) fn io_error(
    action: &'static str,
    path: &Path,
) -> impl FnOnce(std::io::Error) -> AgentError {
    let path = path.to_path_buf();
    move |source| AgentError::Io {
        action,
        path,
        source,
    }
}
