//! Installs `baton run` as a per-user background service: a launchd LaunchAgent on
//! macOS, a systemd user unit on Linux.
//!
//! # What it owns
//!
//! - The service label (`dev.mirror-baton.<slug>-<hash>`) and where the service file lives:
//!   `~/Library/LaunchAgents/<label>.plist` or `~/.config/systemd/user/<label>.service`.
//! - Rendering those files ([`render`]), writing them atomically with mode 0644
//!   ([`install`]), removing them ([`uninstall`]) and finding them again ([`list`]).
//! - Asking the service manager to load or unload them, always through a
//!   [`CommandRunner`] so that tests and dry runs never touch `launchctl` or `systemctl`.
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

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::adapters::telegram_config::Secret;

/// Every label baton writes starts with this; [`list`] looks for it.
pub const LABEL_PREFIX: &str = "dev.mirror-baton.";
/// launchd labels and systemd unit names both stay well below this.
pub const LABEL_MAX_LEN: usize = 100;
/// The slug part of a derived label is cut to this many characters.
const SLUG_MAX_LEN: usize = 48;
/// How long the service manager waits after SIGTERM before SIGKILL. Must exceed
/// [`crate::runtime::exit_budget`] (35 s by default: resignation, the child's grace, the
/// last replies); `tests/agent.rs` holds the two together.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(40);
/// Minimum time between two restarts after a crash (launchd `ThrottleInterval`, systemd
/// `RestartSec`): a crash loop costs one start every 10 s, not a busy loop.
pub const RESTART_THROTTLE: Duration = Duration::from_secs(10);
/// See the module doc for why `Background`.
pub const LAUNCHD_PROCESS_TYPE: &str = "Background";
/// Used when the installing shell has no usable PATH: what launchd gives agents anyway.
const FALLBACK_PATH: &str = "/usr/bin:/bin:/usr/sbin:/sbin";
/// Name fragments that mark an environment variable as secret (compared upper-cased).
const SECRET_NAME_MARKERS: &[&str] = &[
    "TOKEN",
    "SECRET",
    "PASSWORD",
    "PASSWD",
    "CREDENTIAL",
    "API_KEY",
    "APIKEY",
    "PRIVATE_KEY",
];

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

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> AgentError {
    let path = path.to_path_buf();
    move |source| AgentError::Io {
        action,
        path,
        source,
    }
}

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

    fn launchd_domain(&self) -> String {
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

/// A fully resolved service definition: everything [`render`] needs, nothing it must look
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

/// Refuses control characters (they break both file formats), bot tokens, and any
/// value holding one of `secrets` (the configured token, whatever its shape).
fn check_value(what: &str, value: &str, secrets: &[Secret]) -> Result<(), AgentError> {
    if value.chars().any(char::is_control) {
        return Err(AgentError::ControlCharacter {
            what: what.to_owned(),
        });
    }
    let holds_secret = secrets
        .iter()
        .any(|secret| !secret.expose().is_empty() && value.contains(secret.expose()));
    if holds_secret || looks_like_bot_token(value) {
        return Err(AgentError::SecretInArguments {
            what: what.to_owned(),
        });
    }
    Ok(())
}

/// The bot-token shape test, shared with the log redaction (`telegram_config`).
pub use crate::adapters::telegram_config::looks_like_bot_token;

/// True if a variable with this name must never be written to a service file.
pub fn is_secret_env_name(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    SECRET_NAME_MARKERS
        .iter()
        .any(|marker| upper.contains(marker))
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

/// The label baton derives for a project directory: `dev.mirror-baton.<slug>-<hash>`.
///
/// The slug is the directory's file name, lower-cased, reduced to `[a-z0-9-]`; the hash is
/// 8 hex digits of a stable (FNV-1a) hash of the whole path, so two projects named `app`
/// in different places get different labels, and the same path gets the same label on
/// every run and every Rust version. Pass the canonical path for a stable result.
pub fn default_label(dir: &Path) -> String {
    let name = dir
        .file_name()
        .unwrap_or_else(|| OsStr::new("root"))
        .to_string_lossy();
    let mut slug = String::new();
    for c in name.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            slug.push(c);
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
        if slug.len() >= SLUG_MAX_LEN {
            break;
        }
    }
    let slug = slug.trim_end_matches('-');
    let slug = if slug.is_empty() { "project" } else { slug };
    let hash = fnv1a_64(dir.as_os_str().as_encoded_bytes());
    let short_hash = (hash >> 32) as u32 ^ hash as u32;
    format!("{LABEL_PREFIX}{slug}-{short_hash:08x}")
}

fn fnv1a_64(bytes: &[u8]) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0100_0000_01b3;
    bytes.iter().fold(OFFSET_BASIS, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(PRIME)
    })
}

/// Checks a user-given `--label` and puts [`LABEL_PREFIX`] in front if it lacks it, so
/// `--label work` becomes `dev.mirror-baton.work` and [`list`] still finds it.
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

/// The service file for `spec`, as text: an XML plist or a systemd unit.
pub fn render(spec: &AgentSpec, manager: ServiceManager) -> Result<String, AgentError> {
    match manager {
        ServiceManager::Launchd => render_launchd_plist(spec),
        ServiceManager::Systemd => Ok(render_systemd_unit(spec)),
    }
}

/// What `baton agent print` shows: the file `install` would write. Writes nothing.
pub fn print(env: &AgentEnv, request: &InstallRequest) -> Result<String, AgentError> {
    render(&AgentSpec::from_request(env, request)?, env.manager)
}

fn plist_string(text: impl Into<String>) -> plist::Value {
    plist::Value::String(text.into())
}

fn plist_path(path: &Path) -> plist::Value {
    // Every path in an AgentSpec was checked to be UTF-8 by from_request.
    plist_string(path.to_string_lossy())
}

/// The launchd plist (XML) for `spec`.
pub fn render_launchd_plist(spec: &AgentSpec) -> Result<String, AgentError> {
    let mut dict = plist::Dictionary::new();
    dict.insert("Label".into(), plist_string(&spec.label));
    let arguments = spec.command_line().into_iter().map(plist_string).collect();
    dict.insert("ProgramArguments".into(), plist::Value::Array(arguments));
    dict.insert("WorkingDirectory".into(), plist_path(&spec.working_dir));
    let mut environment = plist::Dictionary::new();
    for (name, value) in spec.environment() {
        environment.insert(name, plist_string(value));
    }
    dict.insert("EnvironmentVariables".into(), environment.into());
    dict.insert("RunAtLoad".into(), true.into());
    let mut keep_alive = plist::Dictionary::new();
    keep_alive.insert("SuccessfulExit".into(), false.into());
    dict.insert("KeepAlive".into(), keep_alive.into());
    dict.insert("ThrottleInterval".into(), RESTART_THROTTLE.as_secs().into());
    dict.insert("ProcessType".into(), plist_string(LAUNCHD_PROCESS_TYPE));
    dict.insert("ExitTimeOut".into(), STOP_TIMEOUT.as_secs().into());
    dict.insert("StandardOutPath".into(), plist_path(&spec.stdout_log()));
    dict.insert("StandardErrorPath".into(), plist_path(&spec.stderr_log()));
    let mut xml = Vec::new();
    plist::Value::Dictionary(dict)
        .to_writer_xml(&mut xml)
        .map_err(|source| AgentError::Plist { source })?;
    xml.push(b'\n');
    Ok(String::from_utf8(xml).expect("BUG: the plist crate wrote non-UTF-8 XML"))
}

/// Escapes `%` specifiers, which systemd expands in almost every setting.
fn systemd_escape_specifiers(text: &str) -> String {
    text.replace('%', "%%")
}

/// One word of a systemd command line or `Environment=`: always double-quoted, with `\`
/// and `"` backslash-escaped, `%` doubled (specifiers) and, for ExecStart, `$` doubled
/// (variable expansion). Control characters were refused earlier.
pub fn systemd_quote(word: &str, escape_dollar: bool) -> String {
    let mut quoted = String::with_capacity(word.len() + 2);
    quoted.push('"');
    for c in word.chars() {
        match c {
            '\\' => quoted.push_str("\\\\"),
            '"' => quoted.push_str("\\\""),
            '%' => quoted.push_str("%%"),
            '$' if escape_dollar => quoted.push_str("$$"),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

/// The systemd user unit for `spec`.
pub fn render_systemd_unit(spec: &AgentSpec) -> String {
    let working_dir = systemd_escape_specifiers(&spec.working_dir.to_string_lossy());
    // systemd expands `$VAR` in the arguments but never in the executable path, so the
    // program word keeps its `$` as is; `%` specifiers are expanded everywhere.
    let exec_start: Vec<String> = spec
        .command_line()
        .iter()
        .enumerate()
        .map(|(index, word)| systemd_quote(word, index > 0))
        .collect();
    let mut unit = String::new();
    // writeln! into a String cannot fail; the results are ignored for that reason.
    let _ = writeln!(
        unit,
        "# Written by `baton agent install`; remove with `baton agent uninstall --label {}`.",
        spec.label
    );
    let _ = writeln!(unit, "[Unit]");
    let _ = writeln!(unit, "Description=mirror-baton for {working_dir}");
    let _ = writeln!(unit);
    let _ = writeln!(unit, "[Service]");
    let _ = writeln!(unit, "Type=simple");
    let _ = writeln!(unit, "WorkingDirectory={working_dir}");
    for (name, value) in spec.environment() {
        let assignment = systemd_quote(&format!("{name}={value}"), false);
        let _ = writeln!(unit, "Environment={assignment}");
    }
    let _ = writeln!(unit, "ExecStart={}", exec_start.join(" "));
    let _ = writeln!(unit, "Restart=on-failure");
    // A configuration error (2) or a duplicate device (3) stays wrong on every restart;
    // restarting a refused duplicate only starts it fighting its twin again. Exit 4 (a
    // manual run holds the lock) restarts, so the service resumes once that run ends.
    let _ = writeln!(
        unit,
        "RestartPreventExitStatus={} {}",
        crate::cli::exit::USAGE,
        crate::cli::exit::DUPLICATE_DEVICE
    );
    let _ = writeln!(unit, "RestartSec={}", RESTART_THROTTLE.as_secs());
    let _ = writeln!(unit, "TimeoutStopSec={}", STOP_TIMEOUT.as_secs());
    let _ = writeln!(unit, "KillMode=mixed");
    let _ = writeln!(unit, "KillSignal=SIGTERM");
    for (setting, path) in [
        ("StandardOutput", spec.stdout_log()),
        ("StandardError", spec.stderr_log()),
    ] {
        let path = systemd_escape_specifiers(&path.to_string_lossy());
        let _ = writeln!(unit, "{setting}=append:{path}");
    }
    let _ = writeln!(unit);
    let _ = writeln!(unit, "[Install]");
    let _ = writeln!(unit, "WantedBy=default.target");
    unit
}

/// What a service-manager command returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutput {
    pub success: bool,
    /// Exit code, `None` if killed by a signal.
    pub code: Option<i32>,
    pub stderr: String,
}

impl CommandOutput {
    /// A successful run with no output; what [`DryRunRunner`] returns.
    pub fn ok() -> Self {
        Self {
            success: true,
            code: Some(0),
            stderr: String::new(),
        }
    }
}

/// Runs `launchctl`/`systemctl`. Tests and dry runs substitute their own.
pub trait CommandRunner {
    /// Runs `program args…` to completion. `Err` only if it could not be started; a
    /// non-zero exit is `Ok` with `success == false`.
    fn run(&mut self, program: &str, args: &[String]) -> Result<CommandOutput, AgentError>;
}

/// Runs commands for real, with inherited environment, capturing stderr.
#[derive(Debug, Default)]
pub struct SystemRunner;

impl CommandRunner for SystemRunner {
    fn run(&mut self, program: &str, args: &[String]) -> Result<CommandOutput, AgentError> {
        let output = std::process::Command::new(program)
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|source| AgentError::CommandSpawn {
                program: program.to_owned(),
                source,
            })?;
        Ok(CommandOutput {
            success: output.status.success(),
            code: output.status.code(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

/// Records every command instead of running it, and reports success. Use for a
/// `--dry-run` that shows what would be run.
#[derive(Debug, Default)]
pub struct DryRunRunner {
    /// Each call as `[program, args…]`, in order.
    pub calls: Vec<Vec<String>>,
}

impl CommandRunner for DryRunRunner {
    fn run(&mut self, program: &str, args: &[String]) -> Result<CommandOutput, AgentError> {
        let mut call = vec![program.to_owned()];
        call.extend(args.iter().cloned());
        self.calls.push(call);
        Ok(CommandOutput::ok())
    }
}

fn run_checked(
    runner: &mut dyn CommandRunner,
    program: &str,
    args: &[String],
) -> Result<(), AgentError> {
    let output = runner.run(program, args)?;
    if output.success {
        return Ok(());
    }
    Err(AgentError::CommandFailed {
        command: format!("{program} {}", args.join(" ")),
        status: match output.code {
            Some(code) => format!("exit {code}"),
            None => "killed by a signal".to_owned(),
        },
        stderr: output.stderr,
    })
}

fn strings(words: &[&str]) -> Vec<String> {
    words.iter().map(|word| (*word).to_owned()).collect()
}

/// What [`install`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallReport {
    pub label: String,
    pub unit_path: PathBuf,
    /// Whether the service manager was asked to load it (false with `no_load`).
    pub loaded: bool,
    /// Names of environment variables dropped as secret-looking.
    pub dropped_env: Vec<String>,
}

/// Writes the service file for `spec` (mode 0644, atomically, creating directories and
/// the log directory), then loads it unless `no_load`: launchd `bootout` (if already
/// loaded) + `bootstrap`; systemd `daemon-reload` + `enable` + `restart` (restart, not
/// `start`, so a reinstall picks up the new file).
pub fn install(
    env: &AgentEnv,
    spec: &AgentSpec,
    no_load: bool,
    runner: &mut dyn CommandRunner,
) -> Result<InstallReport, AgentError> {
    let contents = render(spec, env.manager)?;
    let unit_path = env.unit_path(&spec.label);
    std::fs::create_dir_all(&spec.log_dir).map_err(io_error("create", &spec.log_dir))?;
    write_atomically(&unit_path, contents.as_bytes())?;
    if !no_load {
        match env.manager {
            ServiceManager::Launchd => launchd_load(env, &spec.label, &unit_path, runner)?,
            ServiceManager::Systemd => systemd_load(&spec.label, runner)?,
        }
    }
    Ok(InstallReport {
        label: spec.label.clone(),
        unit_path,
        loaded: !no_load,
        dropped_env: spec.dropped_env.clone(),
    })
}

fn launchd_is_loaded(
    env: &AgentEnv,
    label: &str,
    runner: &mut dyn CommandRunner,
) -> Result<bool, AgentError> {
    let target = format!("{}/{label}", env.launchd_domain());
    Ok(runner
        .run("launchctl", &strings(&["print", &target]))?
        .success)
}

fn launchd_load(
    env: &AgentEnv,
    label: &str,
    unit_path: &Path,
    runner: &mut dyn CommandRunner,
) -> Result<(), AgentError> {
    let target = format!("{}/{label}", env.launchd_domain());
    let was_loaded = launchd_is_loaded(env, label, runner)?;
    if was_loaded {
        run_checked(runner, "launchctl", &strings(&["bootout", &target]))?;
    }
    let bootstrap = strings(&[
        "bootstrap",
        &env.launchd_domain(),
        &unit_path.to_string_lossy(),
    ]);
    // launchd finishes a bootout asynchronously; a bootstrap right after it can fail
    // with "Input/output error" until the old job is gone. Bounded retry.
    let attempts_max = if was_loaded { 5 } else { 1 };
    let mut attempt = 1;
    loop {
        match run_checked(runner, "launchctl", &bootstrap) {
            Ok(()) => return Ok(()),
            Err(error) if attempt >= attempts_max => return Err(error),
            Err(_) => {
                attempt += 1;
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }
}

fn systemd_load(label: &str, runner: &mut dyn CommandRunner) -> Result<(), AgentError> {
    let unit = format!("{label}.service");
    run_checked(runner, "systemctl", &strings(&["--user", "daemon-reload"]))?;
    run_checked(runner, "systemctl", &strings(&["--user", "enable", &unit]))?;
    run_checked(runner, "systemctl", &strings(&["--user", "restart", &unit]))
}

/// Writes `contents` to `path` via a temporary file in the same directory and a rename,
/// so a reader (launchd, systemd) never sees half a file. Mode 0644: launchd ignores
/// plists writable by group or others.
fn write_atomically(path: &Path, contents: &[u8]) -> Result<(), AgentError> {
    let dir = path
        .parent()
        .expect("BUG: unit paths always have a parent directory");
    std::fs::create_dir_all(dir).map_err(io_error("create", dir))?;
    let file_name = path.file_name().unwrap_or_default().to_string_lossy();
    let temp_path = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
    let result = write_temp(&temp_path, contents).and_then(|()| {
        std::fs::rename(&temp_path, path).map_err(io_error("rename into place", path))
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&temp_path);
    }
    result
}

fn write_temp(temp_path: &Path, contents: &[u8]) -> Result<(), AgentError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o644);
    let mut file = options
        .open(temp_path)
        .map_err(io_error("create", temp_path))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(io_error("write", temp_path))?;
    // The umask may have narrowed the mode; set it exactly.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let permissions = std::fs::Permissions::from_mode(0o644);
        std::fs::set_permissions(temp_path, permissions).map_err(io_error("chmod", temp_path))?;
    }
    Ok(())
}

/// Which agent `baton agent uninstall` means.
#[derive(Debug, Clone)]
pub enum UninstallTarget {
    /// `--label L` (normalized like install's).
    Label(String),
    /// `[DIR]`; `None` is the current directory. Matches the derived label, or failing
    /// that an installed agent whose working directory is DIR (it may no longer exist).
    Dir(Option<PathBuf>),
}

/// What [`uninstall`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UninstallReport {
    pub label: String,
    pub unit_path: PathBuf,
    /// Whether the service manager was asked to unload it (it was loaded).
    pub unloaded: bool,
}

/// Unloads the agent (if loaded) and removes its file. Log files are kept.
pub fn uninstall(
    env: &AgentEnv,
    target: &UninstallTarget,
    runner: &mut dyn CommandRunner,
) -> Result<UninstallReport, AgentError> {
    let label = resolve_uninstall_label(env, target)?;
    let unit_path = env.unit_path(&label);
    let file_exists = unit_path.exists();
    let unloaded = match env.manager {
        ServiceManager::Launchd => {
            let loaded = launchd_is_loaded(env, &label, runner)?;
            if loaded {
                let target = format!("{}/{label}", env.launchd_domain());
                run_checked(runner, "launchctl", &strings(&["bootout", &target]))?;
            }
            loaded
        }
        ServiceManager::Systemd if file_exists => {
            let unit = format!("{label}.service");
            run_checked(
                runner,
                "systemctl",
                &strings(&["--user", "disable", "--now", &unit]),
            )?;
            true
        }
        ServiceManager::Systemd => false,
    };
    if !file_exists && !unloaded {
        return Err(AgentError::NotInstalled {
            label,
            path: unit_path,
        });
    }
    if file_exists {
        std::fs::remove_file(&unit_path).map_err(io_error("remove", &unit_path))?;
    }
    if env.manager == ServiceManager::Systemd && unloaded {
        run_checked(runner, "systemctl", &strings(&["--user", "daemon-reload"]))?;
    }
    Ok(UninstallReport {
        label,
        unit_path,
        unloaded,
    })
}

fn resolve_uninstall_label(env: &AgentEnv, target: &UninstallTarget) -> Result<String, AgentError> {
    let dir = match target {
        UninstallTarget::Label(label) => return normalize_label(label),
        UninstallTarget::Dir(dir) => match dir {
            Some(dir) => env.cwd.join(dir),
            None => env.cwd.clone(),
        },
    };
    let canonical = dir.canonicalize().unwrap_or_else(|_| dir.clone());
    let derived = default_label(&canonical);
    if env.unit_path(&derived).exists() {
        return Ok(derived);
    }
    let installed = list(env)?;
    let by_dir = installed.iter().find(|agent| {
        agent
            .working_dir
            .as_deref()
            .is_some_and(|wd| wd == canonical || wd == dir)
    });
    Ok(by_dir.map_or(derived, |agent| agent.label.clone()))
}

/// One agent found by [`list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledAgent {
    pub label: String,
    pub unit_path: PathBuf,
    /// From the file, if it parsed and had one.
    pub working_dir: Option<PathBuf>,
    /// `None` if the file parsed; otherwise why not.
    pub parse_error: Option<String>,
}

/// The baton agents installed for this user: service files named `dev.mirror-baton.*`,
/// sorted by label. A file that does not parse is listed with its error, not skipped.
pub fn list(env: &AgentEnv) -> Result<Vec<InstalledAgent>, AgentError> {
    let dir = env.unit_dir();
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(io_error("read", &dir)(error)),
    };
    let extension = match env.manager {
        ServiceManager::Launchd => ".plist",
        ServiceManager::Systemd => ".service",
    };
    let mut agents = Vec::new();
    for entry in entries {
        let path = entry.map_err(io_error("read", &dir))?.path();
        let Some(name) = path.file_name().and_then(OsStr::to_str) else {
            continue;
        };
        let Some(stem) = name.strip_suffix(extension) else {
            continue;
        };
        if !stem.starts_with(LABEL_PREFIX) {
            continue;
        }
        let parsed = match env.manager {
            ServiceManager::Launchd => read_plist_agent(&path),
            ServiceManager::Systemd => read_systemd_agent(&path),
        };
        agents.push(match parsed {
            Ok((label, working_dir)) => InstalledAgent {
                label: label.unwrap_or_else(|| stem.to_owned()),
                unit_path: path,
                working_dir,
                parse_error: None,
            },
            Err(parse_error) => InstalledAgent {
                label: stem.to_owned(),
                unit_path: path,
                working_dir: None,
                parse_error: Some(parse_error),
            },
        });
    }
    agents.sort_by(|a, b| a.label.cmp(&b.label));
    Ok(agents)
}

type ParsedAgent = (Option<String>, Option<PathBuf>);

fn read_plist_agent(path: &Path) -> Result<ParsedAgent, String> {
    let value = plist::Value::from_file(path).map_err(|error| error.to_string())?;
    let dict = value
        .as_dictionary()
        .ok_or_else(|| "the top level is not a dictionary".to_owned())?;
    let label = dict
        .get("Label")
        .and_then(plist::Value::as_string)
        .ok_or_else(|| "no Label string".to_owned())?;
    let working_dir = dict
        .get("WorkingDirectory")
        .and_then(plist::Value::as_string)
        .map(PathBuf::from);
    Ok((Some(label.to_owned()), working_dir))
}

fn read_systemd_agent(path: &Path) -> Result<ParsedAgent, String> {
    let text = std::fs::read_to_string(path).map_err(|error| error.to_string())?;
    let mut section = "";
    let mut working_dir = None;
    let mut has_exec_start = false;
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name;
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!(
                "line {}: neither a [section] nor key=value",
                index + 1
            ));
        };
        match (section, key.trim()) {
            ("Service", "WorkingDirectory") => {
                working_dir = Some(PathBuf::from(value.trim().replace("%%", "%")));
            }
            ("Service", "ExecStart") => has_exec_start = true,
            _ => {}
        }
    }
    if !has_exec_start {
        return Err("no ExecStart= in [Service]".to_owned());
    }
    Ok((None, working_dir))
}
