//! The background agent: installed for this project, loaded by launchd or systemd, and
//! the mirror command it runs found on the PATH the agent gets (launchd gives agents a
//! bare `/usr/bin:/bin:/usr/sbin:/sbin` unless the file sets PATH).

use std::path::{Path, PathBuf};

use super::check::{Check, Setup, Verdict};
use super::os::{Loaded, OsProbes};
use crate::agent::{self, AgentEnv, InstalledAgent, ServiceManager};

/// launchd's PATH for an agent whose file sets none.
const LAUNCHD_DEFAULT_PATH: &str = "/usr/bin:/bin:/usr/sbin:/sbin";

pub fn checks(setup: &Setup, os: &dyn OsProbes) -> Vec<Check> {
    let manager = os.service_manager();
    let Some(home) = setup.home.clone() else {
        return vec![
            Check::new(
                "agent",
                Verdict::Skip,
                "no home folder: cannot look for agents",
            ),
            Check::new("mirror_command", Verdict::Skip, "needs an agent"),
        ];
    };
    let env = AgentEnv {
        home,
        // SAFETY: getuid has no preconditions.
        uid: unsafe { libc::getuid() },
        manager,
        program: PathBuf::from("baton"),
        path_env: String::new(),
        cwd: setup.project_dir.clone(),
    };
    let install = format!(
        "baton agent install {} -- <your mirror command, e.g. bunx opencode-telegram-mirror>",
        setup.project_dir.display()
    );
    let found = match agent::list(&env) {
        Ok(agents) => agents
            .into_iter()
            .find(|a| a.working_dir.as_deref() == Some(setup.project_dir.as_path())),
        Err(error) => {
            return vec![
                Check::new(
                    "agent",
                    Verdict::Fail,
                    format!("cannot list agents: {error}"),
                ),
                Check::new("mirror_command", Verdict::Skip, "needs an agent"),
            ];
        }
    };
    let Some(found) = found else {
        return vec![
            Check::new(
                "agent",
                Verdict::Warn,
                format!(
                    "no agent runs baton for {} at login",
                    setup.project_dir.display()
                ),
            )
            .fix(install),
            Check::new("mirror_command", Verdict::Skip, "needs an agent"),
        ];
    };
    vec![
        loaded_check(&found, manager, os),
        mirror_command(&found, manager),
    ]
}

fn loaded_check(found: &InstalledAgent, manager: ServiceManager, os: &dyn OsProbes) -> Check {
    let file = found.unit_path.display();
    if let Some(error) = &found.parse_error {
        return Check::new(
            "agent",
            Verdict::Fail,
            format!("{file} does not parse: {error}"),
        )
        .fix("reinstall it: `baton agent uninstall --label <label>`, then `baton agent install`");
    }
    let load = match manager {
        ServiceManager::Launchd => format!("launchctl bootstrap gui/$(id -u) {file}"),
        ServiceManager::Systemd => format!("systemctl --user enable --now {}.service", found.label),
    };
    match os.agent_loaded(&found.label) {
        Loaded::Yes => Check::new(
            "agent",
            Verdict::Pass,
            format!("{} installed ({file}) and loaded", found.label),
        ),
        Loaded::No { said } => Check::new(
            "agent",
            Verdict::Fail,
            format!(
                "{} is installed ({file}) but not loaded: {said}",
                found.label
            ),
        )
        .fix(load),
        Loaded::Unknown { why } => Check::new(
            "agent",
            Verdict::Warn,
            format!(
                "{} is installed ({file}); whether it is loaded cannot be told: {why}",
                found.label
            ),
        )
        .fix(format!("if it is not running: {load}")),
    }
}

/// (command line, PATH) from an agent file baton wrote.
fn command_and_path(
    found: &InstalledAgent,
    manager: ServiceManager,
) -> Result<(Vec<String>, String), String> {
    match manager {
        ServiceManager::Launchd => {
            let value = plist::Value::from_file(&found.unit_path).map_err(|e| e.to_string())?;
            let dict = value
                .as_dictionary()
                .ok_or("the top level is not a dictionary")?;
            let words = dict
                .get("ProgramArguments")
                .and_then(plist::Value::as_array)
                .ok_or("no ProgramArguments")?
                .iter()
                .filter_map(|w| w.as_string().map(str::to_owned))
                .collect();
            let path = dict
                .get("EnvironmentVariables")
                .and_then(plist::Value::as_dictionary)
                .and_then(|env| env.get("PATH"))
                .and_then(plist::Value::as_string)
                .unwrap_or(LAUNCHD_DEFAULT_PATH)
                .to_owned();
            Ok((words, path))
        }
        ServiceManager::Systemd => {
            let text = std::fs::read_to_string(&found.unit_path).map_err(|e| e.to_string())?;
            let mut words = Vec::new();
            let mut path = String::new();
            for line in text.lines().map(str::trim) {
                if let Some(rest) = line.strip_prefix("ExecStart=") {
                    words = systemd_words(rest);
                } else if let Some(rest) = line.strip_prefix("Environment=") {
                    for assignment in systemd_words(rest) {
                        if let Some(value) = assignment.strip_prefix("PATH=") {
                            path = value.to_owned();
                        }
                    }
                }
            }
            Ok((words, path))
        }
    }
}

/// The words of a systemd command line as `agent::systemd_quote` writes them.
fn systemd_words(line: &str) -> Vec<String> {
    let (mut words, mut word, mut quoted, mut chars) =
        (Vec::new(), String::new(), false, line.chars().peekable());
    while let Some(c) = chars.next() {
        match c {
            '"' => quoted = !quoted,
            '\\' if quoted => word.extend(chars.next()),
            '%' | '$' if chars.peek() == Some(&c) => {
                chars.next();
                word.push(c);
            }
            c if c.is_whitespace() && !quoted => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

fn mirror_command(found: &InstalledAgent, manager: ServiceManager) -> Check {
    let (words, path) = match command_and_path(found, manager) {
        Ok(parsed) => parsed,
        Err(error) => {
            return Check::new(
                "mirror_command",
                Verdict::Fail,
                format!("cannot read {}: {error}", found.unit_path.display()),
            );
        }
    };
    let command: Vec<&String> = words
        .iter()
        .skip_while(|w| w.as_str() != "--")
        .skip(1)
        .collect();
    let Some(program) = command.first() else {
        return Check::new("mirror_command", Verdict::Warn, "the agent runs baton without a mirror command")
            .fix("reinstall it with the mirror: `baton agent install DIR -- bunx opencode-telegram-mirror`");
    };
    match resolve(program, &path) {
        Some(found_at) => Check::new(
            "mirror_command",
            Verdict::Pass,
            format!(
                "`{program}` resolves to {} on the agent's PATH",
                found_at.display()
            ),
        ),
        None => Check::new(
            "mirror_command",
            Verdict::Fail,
            format!("`{program}` is not found on the agent's PATH ({path})"),
        )
        .fix(format!(
            "reinstall the agent from a shell where `command -v {program}` works (its PATH is \
             copied into the agent), or give the command's absolute path"
        )),
    }
}

/// Where `program` would be found on `path` (as an exec would: a word with a `/` as is).
fn resolve(program: &str, path: &str) -> Option<PathBuf> {
    let executable = |candidate: &Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(candidate)
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let candidate = PathBuf::from(program);
        return executable(&candidate).then_some(candidate);
    }
    path.split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| Path::new(dir).join(program))
        .find(|candidate| executable(candidate))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systemd_words_undo_the_agents_quoting() {
        let words = [
            "/usr/bin/baton",
            "run",
            "/home/a b/p%q",
            "--",
            "say \"hi\" $HOME \\x",
        ];
        let line: Vec<String> = words
            .iter()
            .enumerate()
            .map(|(i, w)| agent::systemd_quote(w, i > 0))
            .collect();
        assert_eq!(systemd_words(&line.join(" ")), words);
    }
}
