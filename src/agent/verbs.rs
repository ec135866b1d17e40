//! The `baton agent …` verbs: install, uninstall, list, print.
//!
//! Owns: the flags of these verbs, turning them into an [`InstallRequest`] (with the
//! configured token as a value no argument may hold), and what they print. Must never:
//! put the bot token into an agent's arguments or environment (the agent refuses
//! token-shaped values too).

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::agent::error::AgentError;
use crate::agent::install::{self, UninstallTarget};
use crate::agent::runner::SystemRunner;
use crate::agent::spec::{AgentEnv, AgentSpec, InstallRequest, ServiceManager};
use crate::exit::ExitCode;

#[derive(Subcommand, Debug)]
pub enum AgentCommand {
    /// Install a launchd agent (macOS) or systemd user unit (Linux) running `baton run DIR`, and load it.
    Install(AgentInstallArgs),
    /// Unload and remove the agent of DIR (or --label).
    Uninstall(AgentTargetArgs),
    /// List the installed baton agents.
    List,
    /// Print the service file `install` would write; writes nothing.
    Print(AgentInstallArgs),
}

#[derive(Args, Debug, Clone)]
pub struct AgentInstallArgs {
    /// The project directory (default: the current one).
    pub dir: Option<PathBuf>,
    /// The agent's label (default: `dev.mirror-baton.<slug>` derived from DIR).
    #[arg(long)]
    pub label: Option<String>,
    /// Write the file but do not ask launchd/systemd to load it.
    #[arg(long)]
    pub no_load: bool,
    /// Passed to `baton run`.
    #[arg(long)]
    pub device_name: Option<String>,
    /// Passed to `baton run`.
    #[arg(long, allow_negative_numbers = true)]
    pub priority: Option<i32>,
    /// Passed to `baton run`.
    #[arg(long)]
    pub child_when_active: bool,
    /// Which service manager to write for (default: this OS's — launchd on macOS,
    /// systemd elsewhere). `print --manager launchd` shows a Mac's plist from anywhere.
    #[arg(long, value_enum)]
    pub manager: Option<Manager>,
    /// The command `baton run` supervises (e.g. the mirror), after `--`.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Manager {
    Launchd,
    Systemd,
}

impl From<Manager> for ServiceManager {
    fn from(manager: Manager) -> Self {
        match manager {
            Manager::Launchd => ServiceManager::Launchd,
            Manager::Systemd => ServiceManager::Systemd,
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct AgentTargetArgs {
    /// The project directory (default: the current one).
    pub dir: Option<PathBuf>,
    /// The agent's label instead of a directory.
    #[arg(long)]
    pub label: Option<String>,
}

fn install_request(global: &RunOptions, args: &AgentInstallArgs) -> InstallRequest {
    let mut run_options = Vec::new();
    if let Some(dir) = &global.sync_dir {
        run_options.extend(["--sync-dir".to_string(), dir.to_string_lossy().into_owned()]);
    }
    if let Some(group) = &global.group {
        run_options.extend(["--group".to_string(), group.clone()]);
    }
    if let Some(name) = &args.device_name {
        run_options.extend(["--device-name".to_string(), name.clone()]);
    }
    if let Some(priority) = args.priority {
        run_options.extend(["--priority".to_string(), priority.to_string()]);
    }
    if args.child_when_active {
        run_options.push("--child-when-active".into());
    }
    InstallRequest {
        dir: args.dir.clone(),
        label: args.label.clone(),
        run_options,
        child_command: args.command.clone(),
        secrets: configured_token(args.dir.as_deref()).into_iter().collect(),
        ..Default::default()
    }
}

/// The bot token `baton run` in DIR would use (files, then this shell), if any: no
/// argument of the agent may hold it, whatever its shape.
fn configured_token(
    dir: Option<&std::path::Path>,
) -> Option<crate::adapters::telegram_config::Secret> {
    use crate::adapters::telegram_config::{ConfigSources, load_telegram_config};
    let shell: std::collections::HashMap<String, String> = std::env::vars().collect();
    let cwd = std::env::current_dir().ok()?;
    let project = dir.map_or_else(|| cwd.clone(), |dir| cwd.join(dir));
    let home = dirs::home_dir();
    let sources = ConfigSources {
        home_dir: home.as_deref(),
        project_dir: &project,
        env: &shell,
        overrides: Default::default(),
    };
    // A configuration that does not load whole still has a token worth guarding.
    let token = match load_telegram_config(&sources) {
        Ok(config) => Some(config.bot_token),
        Err(_) => shell
            .get(crate::adapters::telegram_config::ENV_BOT_TOKEN)
            .map(|token| crate::adapters::telegram_config::Secret::new(token.trim())),
    };
    token.filter(|token| !token.expose().is_empty())
}

/// A warning when this shell's environment completes the Telegram configuration but the
/// service's will not: agents get PATH (and the variables listed for them), never the
/// token, so a token exported only in the shell leaves the service coordinating without
/// Telegram, in another group.
fn telegram_only_in_this_shell(env: &AgentEnv, spec: &AgentSpec) -> Option<String> {
    use crate::adapters::telegram_config::{ConfigSources, load_telegram_config};
    let shell: std::collections::HashMap<String, String> = std::env::vars().collect();
    let service: std::collections::HashMap<String, String> =
        spec.environment().into_iter().collect();
    let complete = |vars: &std::collections::HashMap<String, String>| {
        load_telegram_config(&ConfigSources {
            home_dir: Some(&env.home),
            project_dir: &spec.working_dir,
            env: vars,
            overrides: Default::default(),
        })
        .is_ok()
    };
    if !complete(&shell) || complete(&service) {
        return None;
    }
    let missing: Vec<&str> = shell
        .keys()
        .filter(|name| name.starts_with("TELEGRAM_") && !service.contains_key(*name))
        .map(String::as_str)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    Some(format!(
        "warning: the Telegram configuration here comes from this shell ({}), which the service \
         will not have (the token is never written into its file). Put botToken and chatId in \
         ~/.config/opencode/telegram.json or {}/.opencode/telegram.json, or the service \
         coordinates without Telegram.",
        missing.join(", "),
        spec.working_dir.display()
    ))
}

/// The global options an agent's `baton run` is given as they were given here.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// `--sync-dir`, when given.
    pub sync_dir: Option<PathBuf>,
    /// `--group`, when given.
    pub group: Option<String>,
}

/// Runs an `agent` verb.
pub fn run(global: &RunOptions, command: &AgentCommand) -> Result<i32, AgentError> {
    let mut env = AgentEnv::detect()?;
    if let AgentCommand::Install(args) | AgentCommand::Print(args) = command
        && let Some(manager) = args.manager
    {
        env.manager = manager.into();
    }
    match command {
        AgentCommand::Install(args) => {
            let spec = AgentSpec::from_request(&env, &install_request(global, args))?;
            let report = install::install(&env, &spec, args.no_load, &mut SystemRunner)?;
            println!("wrote {}", report.unit_path.display());
            if !report.dropped_env.is_empty() {
                println!(
                    "left out secret-looking variables: {}",
                    report.dropped_env.join(", ")
                );
            }
            if let Some(warning) = telegram_only_in_this_shell(&env, &spec) {
                println!("{warning}");
            }
            if report.loaded {
                println!(
                    "loaded {}; logs in {}",
                    report.label,
                    spec.log_dir.display()
                );
            } else {
                println!("not loaded (--no-load)");
            }
        }
        AgentCommand::Print(args) => {
            print!("{}", install::print(&env, &install_request(global, args))?);
        }
        AgentCommand::Uninstall(args) => {
            let target = match &args.label {
                Some(label) => UninstallTarget::Label(label.clone()),
                None => UninstallTarget::Dir(args.dir.clone()),
            };
            let report = install::uninstall(&env, &target, &mut SystemRunner)?;
            println!("removed {} ({})", report.label, report.unit_path.display());
        }
        AgentCommand::List => {
            let agents = install::list(&env)?;
            if agents.is_empty() {
                println!("no baton agents installed");
            }
            for found in agents {
                let dir = found
                    .working_dir
                    .map(|d| d.display().to_string())
                    .unwrap_or_else(|| "?".into());
                match found.parse_error {
                    None => println!("{}  {dir}", found.label),
                    Some(error) => println!("{}  (unreadable: {error})", found.label),
                }
            }
        }
    }
    Ok(ExitCode::Ok.code())
}
