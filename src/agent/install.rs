//! The agent operations: render, print, install, uninstall and list.
//!
//! Owns: writing service files atomically with mode 0644 (and the log folder), asking
//! the service manager to load or unload them through a [`CommandRunner`], and finding
//! them again. Must never: touch `launchctl`/`systemctl` but through the runner, or
//! leave half a service file behind.

use std::ffi::OsStr;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::error::{AgentError, io_error};
use super::label::{LABEL_PREFIX, default_label};
use super::launchd::{launchd_is_loaded, launchd_load, read_plist_agent, render_launchd_plist};
use super::runner::{CommandRunner, run_checked, strings};
use super::spec::{AgentEnv, AgentSpec, InstallRequest, ServiceManager, normalize_label};
use super::systemd::{read_systemd_agent, render_systemd_unit, systemd_load};

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
