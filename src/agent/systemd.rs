//! Linux: the systemd user unit, loading it with `systemctl --user`, and reading one back.
//!
//! Owns: quoting for `ExecStart=`/`Environment=` (specifiers and variables escaped), the
//! unit's restart and stop settings (`Restart=on-failure`, `RestartPreventExitStatus`,
//! `TimeoutStopSec`, `KillMode=mixed`). Must never: write a secret into the unit.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::error::AgentError;
use super::runner::{CommandRunner, run_checked, strings};
use super::spec::{AgentSpec, ParsedAgent, RESTART_THROTTLE, STOP_TIMEOUT};
use crate::exit::ExitCode;

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
        ExitCode::Usage.code(),
        ExitCode::DuplicateDevice.code()
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

pub(crate) fn systemd_load(label: &str, runner: &mut dyn CommandRunner) -> Result<(), AgentError> {
    let unit = format!("{label}.service");
    run_checked(runner, "systemctl", &strings(&["--user", "daemon-reload"]))?;
    run_checked(runner, "systemctl", &strings(&["--user", "enable", &unit]))?;
    run_checked(runner, "systemctl", &strings(&["--user", "restart", &unit]))
}

pub(crate) fn read_systemd_agent(path: &Path) -> Result<ParsedAgent, String> {
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
