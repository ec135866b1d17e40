//! Parsing the command line into the configuration types: the common settings, the
//! device identity, the watch mode and the Telegram configuration.
//!
//! Owns: defaults (sync folder, group `bot<id>` or `default`, state folder), checking
//! `--time-scale`, `--group` and `--poll`, this machine's host name, and the Telegram
//! configuration the mirror itself would use with baton's flags on top. Must never:
//! print or log a token (configuration errors are redacted).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::adapters::local;
use crate::adapters::watcher::WatchMode;
use crate::config::{Settings, UsageError, project_dir};
use crate::core::Timing;
use crate::core::record::{self, Identity};

use super::args::{DeviceArgs, GlobalArgs, TelegramArgs};
use super::error::CliError;

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
    if let Some(name) = name
        && name.len() > record::DEVICE_NAME_BYTES_MAX
    {
        let message = format!(
            "the device name is {} bytes long; give one of at most {} (--device-name or \
             DEVICE_NAME)",
            name.len(),
            record::DEVICE_NAME_BYTES_MAX
        );
        return Err(UsageError(message).into());
    }
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
