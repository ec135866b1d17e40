//! The service definition: the installing environment ([`AgentEnv`]), what the user
//! asked for ([`InstallRequest`]) and the validated, fully resolved [`AgentSpec`].
//!
//! Owns: resolving the directory and label, filtering the environment (secret-looking
//! names dropped, PATH cleaned), the service's stop timeout and restart throttle. Must
//! never: read the process environment anywhere but [`AgentEnv::detect`], or let a
//! secret through into a spec.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::error::{AgentError, io_error};
use super::label::{LABEL_MAX_LEN, LABEL_PREFIX, default_label};
use super::secrets::{check_value, is_secret_env_name};
use crate::adapters::telegram_config::Secret;

/// How long the service manager waits after SIGTERM before SIGKILL. Must exceed
/// [`crate::runtime::exit_budget`] (35 s by default: resignation, the child's grace, the
/// last replies); `tests/agent.rs` holds the two together.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(40);

/// Minimum time between two restarts after a crash (launchd `ThrottleInterval`, systemd
/// `RestartSec`): a crash loop costs one start every 10 s, not a busy loop.
pub const RESTART_THROTTLE: Duration = Duration::from_secs(10);

/// Used when the installing shell has no usable PATH: what launchd gives agents anyway.
const FALLBACK_PATH: &str = "/usr/bin:/bin:/usr/sbin:/sbin";

/// Which service manager the files are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceManager {
    /// macOS LaunchAgent (`launchctl`).
    Launchd,
    /// systemd user unit (`systemctl --user`).
    Systemd,
}

impl ServiceManager {
    /// The one this OS uses: launchd on macOS, systemd elsewhere.
    pub fn native() -> Self {
        if cfg!(target_os = "macos") {
            Self::Launchd
        } else {
            Self::Systemd
        }
    }
}

/// The facts about the installing user and process that the service files depend on.
/// Built by [`AgentEnv::detect`] in the CLI, by hand in tests.
#[derive(Debug, Clone)]
pub struct AgentEnv {
    /// The user's home: service files and logs go under it.
    pub home: PathBuf,
    /// The user's uid: launchd's domain is `gui/<uid>`.
    pub uid: u32,
    pub manager: ServiceManager,
    /// Absolute, canonical path of the baton binary the service will run.
    pub program: PathBuf,
    /// PATH from the installing shell (agents otherwise get a bare system PATH).
    pub path_env: String,
    /// Resolves a relative or missing DIR.
    pub cwd: PathBuf,
}

impl AgentEnv {
    /// Reads HOME, uid, the current executable, PATH and the working directory of this
    /// process. Call once, in the CLI; the only place this module reads the environment.
    pub fn detect() -> Result<Self, AgentError> {
        let manager = ServiceManager::native();
        let home = dirs::home_dir().ok_or(AgentError::NoHome)?;
        // SAFETY: getuid has no preconditions and cannot fail.
        let uid = unsafe { libc::getuid() };
        if manager == ServiceManager::Launchd && uid == 0 {
            return Err(AgentError::RunningAsRoot);
        }
        let exe = std::env::current_exe().map_err(|source| AgentError::CurrentExe { source })?;
        let program = exe.canonicalize().map_err(io_error("resolve", &exe))?;
        if program.components().any(|c| c.as_os_str() == "target") {
            tracing::warn!(
                program = %program.display(),
                "the agent will run a binary from a cargo target dir; `cargo clean` will break \
                 it (install baton with `cargo install --path .` first)"
            );
        }
        let path_env = match std::env::var_os("PATH") {
            Some(path) => path.into_string().map_err(|path| AgentError::NonUtf8Path {
                what: "PATH",
                path: path.into(),
            })?,
            None => String::new(),
        };
        let cwd = std::env::current_dir().map_err(io_error("read", Path::new(".")))?;
        Ok(Self {
            home,
            uid,
            manager,
            program,
            path_env,
            cwd,
        })
    }

    /// Where service files live: `~/Library/LaunchAgents` or `~/.config/systemd/user`.
    pub fn unit_dir(&self) -> PathBuf {
        match self.manager {
            ServiceManager::Launchd => self.home.join("Library/LaunchAgents"),
            ServiceManager::Systemd => self.home.join(".config/systemd/user"),
        }
    }

    /// The service file for `label`.
    pub fn unit_path(&self, label: &str) -> PathBuf {
        let extension = match self.manager {
            ServiceManager::Launchd => "plist",
            ServiceManager::Systemd => "service",
        };
        self.unit_dir().join(format!("{label}.{extension}"))
    }

    /// Where the agent's stdout/stderr go: `~/Library/Logs/mirror-baton` on macOS,
    /// `~/.local/state/mirror-baton/logs` (XDG state) on Linux.
    pub fn log_dir(&self) -> PathBuf {
        match self.manager {
            ServiceManager::Launchd => self.home.join("Library/Logs/mirror-baton"),
            ServiceManager::Systemd => self.home.join(".local/state/mirror-baton/logs"),
        }
    }

    pub(crate) fn launchd_domain(&self) -> String {
        format!("gui/{}", self.uid)
    }
}

/// What the user asked `baton agent install` / `print` for.
#[derive(Debug, Clone, Default)]
pub struct InstallRequest {
    /// The project directory; `None` means the current directory.
    pub dir: Option<PathBuf>,
    /// `--label`; `None` derives one from the directory ([`default_label`]).
    pub label: Option<String>,
    /// Options for `baton run` placed after DIR, e.g. `["--sync-dir", "/path"]`.
    pub run_options: Vec<String>,
    /// The child command after `--`; empty means baton's configured default.
    pub child_command: Vec<String>,
    /// Extra environment variables the user explicitly allowed (PATH is always set).
    /// Secret-looking names are dropped, see [`AgentSpec::dropped_env`].
    pub extra_env: Vec<(String, String)>,
    /// Values no argument or variable may hold (the configured bot token): refused even
    /// when they do not look like a token.
    pub secrets: Vec<Secret>,
}

/// A fully resolved service definition: everything [`render`](super::install::render) needs, nothing it must look
/// up. All paths are absolute and UTF-8.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentSpec {
    pub label: String,
    /// The baton binary (absolute, canonical).
    pub program: PathBuf,
    /// Arguments after the program: `["run", DIR, options…, "--", CMD…]`.
    pub run_args: Vec<String>,
    /// The canonical project directory.
    pub working_dir: PathBuf,
    /// PATH for the service, from the installing shell, relative entries removed.
    pub path_env: String,
    /// Explicitly allowed extra variables, secrets already removed.
    pub extra_env: BTreeMap<String, String>,
    /// Names (never values) of variables dropped because they looked secret.
    pub dropped_env: Vec<String>,
    pub log_dir: PathBuf,
}

impl AgentSpec {
    /// Validates a request against the environment: resolves and checks the directory,
    /// derives or checks the label, filters the environment, refuses token-like values.
    pub fn from_request(env: &AgentEnv, request: &InstallRequest) -> Result<Self, AgentError> {
        let working_dir = resolve_project_dir(env, request.dir.as_deref())?;
        let dir_text = utf8(&working_dir, "project directory")?.to_owned();
        utf8(&env.program, "baton executable")?;
        if !env.program.is_absolute() {
            return Err(AgentError::ProgramNotAbsolute {
                path: env.program.clone(),
            });
        }
        let label = match &request.label {
            Some(label) => normalize_label(label)?,
            None => default_label(&working_dir),
        };
        let mut run_args = vec!["run".to_owned(), dir_text];
        run_args.extend(request.run_options.iter().cloned());
        if !request.child_command.is_empty() {
            run_args.push("--".to_owned());
            run_args.extend(request.child_command.iter().cloned());
        }
        for (index, arg) in run_args.iter().enumerate() {
            let what = format!("argument {index} of the run command");
            check_value(&what, arg, &request.secrets)?;
        }
        let (extra_env, dropped_env) = filter_env(&request.extra_env, &request.secrets)?;
        Ok(Self {
            label,
            program: env.program.clone(),
            run_args,
            working_dir,
            path_env: clean_path_env(&env.path_env),
            extra_env,
            dropped_env,
            log_dir: env.log_dir(),
        })
    }

    /// The service's environment: PATH, then the allowed extras.
    pub fn environment(&self) -> BTreeMap<String, String> {
        let mut environment = BTreeMap::new();
        environment.insert("PATH".to_owned(), self.path_env.clone());
        for (name, value) in &self.extra_env {
            environment.insert(name.clone(), value.clone());
        }
        environment
    }

    /// `<log_dir>/<label>.out.log`.
    pub fn stdout_log(&self) -> PathBuf {
        self.log_dir.join(format!("{}.out.log", self.label))
    }

    /// `<log_dir>/<label>.err.log`.
    pub fn stderr_log(&self) -> PathBuf {
        self.log_dir.join(format!("{}.err.log", self.label))
    }

    /// The full command line: program then run arguments.
    pub fn command_line(&self) -> Vec<String> {
        // The program was checked to be UTF-8 in from_request.
        let mut line = vec![self.program.to_string_lossy().into_owned()];
        line.extend(self.run_args.iter().cloned());
        line
    }
}

fn resolve_project_dir(env: &AgentEnv, dir: Option<&Path>) -> Result<PathBuf, AgentError> {
    let given = match dir {
        Some(dir) => env.cwd.join(dir),
        None => env.cwd.clone(),
    };
    let canonical = match given.canonicalize() {
        Ok(path) => path,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Err(AgentError::DirNotFound { path: given });
        }
        Err(error) => return Err(io_error("resolve", &given)(error)),
    };
    if !canonical.is_dir() {
        return Err(AgentError::NotADirectory { path: canonical });
    }
    Ok(canonical)
}

fn utf8<'a>(path: &'a Path, what: &'static str) -> Result<&'a str, AgentError> {
    let text = path.to_str().ok_or_else(|| AgentError::NonUtf8Path {
        what,
        path: path.to_path_buf(),
    })?;
    check_value(what, text, &[])?;
    Ok(text)
}

type FilteredEnv = (BTreeMap<String, String>, Vec<String>);

fn filter_env(
    extra_env: &[(String, String)],
    secrets: &[Secret],
) -> Result<FilteredEnv, AgentError> {
    let mut kept = BTreeMap::new();
    let mut dropped = Vec::new();
    for (name, value) in extra_env {
        let valid_name = !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_name {
            return Err(AgentError::InvalidEnvName { name: name.clone() });
        }
        if is_secret_env_name(name) {
            tracing::warn!(variable = %name, "not writing a secret-looking variable to the agent");
            dropped.push(name.clone());
            continue;
        }
        check_value(&format!("environment variable {name}"), value, secrets)?;
        kept.insert(name.clone(), value.clone());
    }
    Ok((kept, dropped))
}

/// Drops empty and relative PATH entries (a service's working directory must not decide
/// which binaries run) and duplicates; falls back to the system PATH if nothing is left.
fn clean_path_env(path_env: &str) -> String {
    let mut entries: Vec<&str> = Vec::new();
    for entry in path_env.split(':') {
        let usable = entry.starts_with('/') && !entry.chars().any(char::is_control);
        if usable && !entries.contains(&entry) {
            entries.push(entry);
        }
    }
    if entries.is_empty() {
        FALLBACK_PATH.to_owned()
    } else {
        entries.join(":")
    }
}

/// Checks a user-given `--label` and puts [`LABEL_PREFIX`] in front if it lacks it, so
/// `--label work` becomes `dev.mirror-baton.work` and [`list`](super::install::list) still finds it.
pub fn normalize_label(label: &str) -> Result<String, AgentError> {
    let invalid = |reason| AgentError::InvalidLabel {
        label: label.to_owned(),
        reason,
    };
    if label.is_empty() {
        return Err(invalid("it is empty"));
    }
    if !label
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    {
        return Err(invalid(
            "it contains a character other than letters, digits, '.', '-', '_'",
        ));
    }
    let full = if label.starts_with(LABEL_PREFIX) {
        label.to_owned()
    } else {
        format!("{LABEL_PREFIX}{label}")
    };
    if full.len() == LABEL_PREFIX.len() {
        return Err(invalid("it has nothing after the prefix"));
    }
    if full.starts_with('.') || full.ends_with('.') || full.contains("..") {
        return Err(invalid("it starts or ends with '.' or has '..'"));
    }
    if full.len() > LABEL_MAX_LEN {
        return Err(invalid("it is too long with the prefix"));
    }
    Ok(full)
}

/// What reading an installed service file back yields: its label (plists name it) and
/// its working directory.
pub(crate) type ParsedAgent = (Option<String>, Option<PathBuf>);
