//! macOS: the LaunchAgent plist, loading it with `launchctl`, and reading one back.
//!
//! Owns: the plist's keys (`KeepAlive = {SuccessfulExit = false}`, `ExitTimeOut`,
//! `ThrottleInterval`, `ProcessType = Background`, logs) and the bootout/bootstrap
//! sequence. Must never: write a secret into the plist.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::error::AgentError;
use super::runner::{CommandRunner, run_checked, strings};
use super::spec::{AgentEnv, AgentSpec, ParsedAgent, RESTART_THROTTLE, STOP_TIMEOUT};

/// See the module doc for why `Background`.
pub const LAUNCHD_PROCESS_TYPE: &str = "Background";

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

pub(crate) fn launchd_is_loaded(
    env: &AgentEnv,
    label: &str,
    runner: &mut dyn CommandRunner,
) -> Result<bool, AgentError> {
    let target = format!("{}/{label}", env.launchd_domain());
    Ok(runner
        .run("launchctl", &strings(&["print", &target]))?
        .success)
}

pub(crate) fn launchd_load(
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

pub(crate) fn read_plist_agent(path: &Path) -> Result<ParsedAgent, String> {
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
