//! `baton child-guard`: the workload's lifeline, so no child outlives its baton.
//!
//! The supervisor runs `baton child-guard --grace-ms G -- CMD ARGS…` instead of CMD. The
//! guard leads the child's process group and runs CMD inside it. Its stdin is the read
//! end of a pipe whose only write end baton holds. When baton dies, however it dies
//! (SIGKILL, a panic, a crash), the kernel closes that end. The guard reads EOF, sends
//! SIGTERM to the group, waits up to G, then sends SIGKILL. launchd restarting a crashed
//! baton therefore never finds the old mirror still serving next to the new one.
//!
//! This works the same on macOS and Linux: it needs only a pipe and process groups, so
//! the Linux test suite runs the path a Mac runs. Linux's `PR_SET_PDEATHSIG` is not used:
//! it fires when the spawning *thread* exits, and reaches one process, not the group.
//!
//! A stdin that is not such a pipe (a null device, a closed descriptor) reads as baton
//! being gone at once: the guard is only for the supervisor to start.
//!
//! Otherwise the guard stays out of the way:
//! - CMD inherits its environment, directory, stdout and stderr; its stdin is null.
//! - The guard ends as CMD ended: the same exit code, or the same signal re-raised.
//! - The first SIGTERM the guard gets is passed to its whole group, CMD and what CMD
//!   started; later ones (its own, coming back) are not. The supervisor sends SIGTERM
//!   to the guard alone, so CMD sees one SIGTERM, as it would unguarded. SIGINT and
//!   SIGHUP are passed to CMD.
//!
//! Owns: one child and the group it leads. Must never: exit while CMD runs (except by
//! SIGKILL), or log CMD's environment.

use std::ffi::OsString;
use std::process::ExitStatus;
use std::time::Duration;

use clap::Args;
use tokio::io::AsyncReadExt;
use tokio::process::Command;
use tokio::signal::unix::{SignalKind, signal};

/// Exit code when CMD cannot be started (as a shell says "command not found").
pub const EXIT_CANNOT_START: i32 = 127;

#[derive(Args, Debug, Clone)]
pub struct ChildGuardArgs {
    /// After baton is gone: milliseconds between SIGTERM and SIGKILL to the group.
    #[arg(long, default_value_t = 10_000)]
    pub grace_ms: u64,
    /// The program and its arguments.
    #[arg(last = true, required = true, num_args = 1..)]
    pub command: Vec<OsString>,
}

/// Runs CMD under guard; returns the exit code to end with (after re-raising a signal
/// that killed CMD, which normally does not return).
pub async fn run(args: ChildGuardArgs) -> i32 {
    let Some((program, rest)) = args.command.split_first() else {
        eprintln!("baton child-guard: no command given");
        return EXIT_CANNOT_START;
    };
    // Lead a group of our own (the supervisor already made us one), so the signals
    // below never reach whoever started us.
    // SAFETY: getpid, getpgrp and setpgid have no memory effects.
    unsafe {
        if libc::getpgrp() != libc::getpid() && libc::setpgid(0, 0) != 0 {
            eprintln!("baton child-guard: cannot lead a process group; refusing to guard");
            return EXIT_CANNOT_START;
        }
    }
    // Installed before CMD starts, so no early signal kills the guard alone. Handlers
    // (unlike ignored signals) are reset in CMD by exec.
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        eprintln!("baton child-guard: cannot install signal handlers");
        return EXIT_CANNOT_START;
    };
    let mut child = match Command::new(program)
        .args(rest)
        .stdin(std::process::Stdio::null())
        .spawn()
    {
        Ok(child) => child,
        Err(error) => {
            eprintln!(
                "baton child-guard: cannot start {}: {error}",
                program.to_string_lossy()
            );
            return EXIT_CANNOT_START;
        }
    };
    let pid = child.id().and_then(|id| libc::pid_t::try_from(id).ok());
    let mut terminating = false;
    let mut lifeline = tokio::io::stdin();
    let mut buffer = [0u8; 64];
    loop {
        tokio::select! {
            status = child.wait() => return end_as(status),
            read = lifeline.read(&mut buffer) => {
                if matches!(read, Ok(n) if n > 0) {
                    continue; // baton never writes; ignore anything that comes
                }
                eprintln!(
                    "baton child-guard: baton is gone; stopping {} (SIGTERM, SIGKILL after {} ms)",
                    program.to_string_lossy(),
                    args.grace_ms
                );
                signal_own_group(libc::SIGTERM);
                let grace = Duration::from_millis(args.grace_ms);
                let status = match tokio::time::timeout(grace, child.wait()).await {
                    Ok(status) => status,
                    Err(_) => {
                        eprintln!("baton child-guard: still running after the grace; SIGKILL");
                        kill_and_wait(&mut child, pid).await
                    }
                };
                // CMD is gone; what it left in the group goes now, the guard with it
                // (nobody is left to read its status).
                signal_own_group(libc::SIGKILL);
                return end_as(status);
            }
            _ = term.recv() => {
                if !std::mem::replace(&mut terminating, true) {
                    signal_own_group(libc::SIGTERM);
                }
            }
            _ = int.recv() => forward(pid, libc::SIGINT),
            _ = hup.recv() => forward(pid, libc::SIGHUP),
        }
    }
}

async fn kill_and_wait(
    child: &mut tokio::process::Child,
    pid: Option<libc::pid_t>,
) -> std::io::Result<ExitStatus> {
    forward(pid, libc::SIGKILL);
    child.wait().await
}

fn forward(pid: Option<libc::pid_t>, signal: libc::c_int) {
    if let Some(pid) = pid.filter(|pid| *pid > 0) {
        // SAFETY: kill(2) has no memory effects; ESRCH (already gone) is fine.
        unsafe {
            libc::kill(pid, signal);
        }
    }
}

/// Signals every process in the guard's own process group (the guard included; its
/// handlers make SIGTERM harmless to it).
fn signal_own_group(signal: libc::c_int) {
    // SAFETY: getpgrp and kill(2) have no memory effects.
    unsafe {
        let group = libc::getpgrp();
        if group > 1 {
            libc::kill(-group, signal);
        }
    }
}

/// Ends the guard the way CMD ended.
fn end_as(status: std::io::Result<ExitStatus>) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    let status = match status {
        Ok(status) => status,
        Err(error) => {
            eprintln!("baton child-guard: lost track of the child: {error}");
            return 1;
        }
    };
    if let Some(code) = status.code() {
        return code;
    }
    if let Some(signal) = status.signal() {
        if status.core_dumped()
            || matches!(
                signal,
                libc::SIGSEGV
                    | libc::SIGBUS
                    | libc::SIGILL
                    | libc::SIGFPE
                    | libc::SIGABRT
                    | libc::SIGQUIT
                    | libc::SIGTRAP
                    | libc::SIGSYS
            )
        {
            // Re-raised, it would dump the guard's core and a crash report would blame
            // baton; the shell's convention says the same without that.
            return 128 + signal;
        }
        // SAFETY: restoring the default action and raising a signal at ourselves; the
        // process ends here for every signal CMD could have died of.
        unsafe {
            libc::signal(signal, libc::SIG_DFL);
            libc::raise(signal);
        }
        return 128 + signal;
    }
    1
}
