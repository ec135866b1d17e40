//! Running `launchctl` and `systemctl`, or pretending to.
//!
//! Owns: the [`CommandRunner`] seam: [`SystemRunner`] runs for real, [`DryRunRunner`]
//! records; tests bring their own. Must never: be bypassed (no other module spawns the
//! service manager), or pass a secret on a command line.

use super::error::AgentError;

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

pub(crate) fn run_checked(
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

pub(crate) fn strings(words: &[&str]) -> Vec<String> {
    words.iter().map(|word| (*word).to_owned()).collect()
}
