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
//! CMD's stdout and stderr are pipes the guard drains and passes on to its own (baton's
//! pipes). When baton dies, its end of those pipes closes with it: a CMD writing into
//! them directly would meet SIGPIPE or EPIPE and could die before its clean stop. The
//! guard outlives baton for as long as CMD runs, keeps draining CMD's output (dropping
//! what can no longer be passed on), and never fails on a write itself: its own words
//! are best effort.
//!
//! Otherwise the guard stays out of the way:
//! - CMD inherits its environment and directory; its stdin is null.
//! - The guard ends as CMD ended: the same exit code, or the same signal re-raised.
//! - The first SIGTERM the guard gets is passed to its whole group, CMD and what CMD
//!   started; later ones (its own, coming back) are not. The supervisor sends SIGTERM
//!   to the guard alone, so CMD sees one SIGTERM, as it would unguarded. SIGINT and
//!   SIGHUP are passed to CMD.
//!
//! Owns: one child and the group it leads. Must never: exit while CMD runs (except by
//! SIGKILL), or log CMD's environment.

use std::ffi::OsString;
use std::io::Write as _;
use std::process::ExitStatus;
use std::time::Duration;

use clap::Args;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::process::Command;
use tokio::signal::unix::{SignalKind, signal};
use tokio::task::JoinHandle;

use crate::exit::ExitCode;

/// After CMD ended, how long what it printed last may take to be passed on. Bounded: a
/// process CMD left behind may hold its pipes open.
const OUTPUT_DRAIN_MAX: Duration = Duration::from_secs(1);

/// Writes one line of the guard's own to stderr, ignoring failure: once baton is gone
/// nobody reads it, and the guard's duty (stopping the group) must go on. (`eprintln!`
/// panics when stderr is a closed pipe.)
macro_rules! say {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

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
        say!("baton child-guard: no command given");
        return ExitCode::CannotStart.code();
    };
    // Lead a group of our own (the supervisor already made us one), so the signals
    // below never reach whoever started us.
    // SAFETY: getpid, getpgrp and setpgid have no memory effects.
    unsafe {
        if libc::getpgrp() != libc::getpid() && libc::setpgid(0, 0) != 0 {
            say!("baton child-guard: cannot lead a process group; refusing to guard");
            return ExitCode::CannotStart.code();
        }
    }
    // Installed before CMD starts, so no early signal kills the guard alone. Handlers
    // (unlike ignored signals) are reset in CMD by exec.
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        say!("baton child-guard: cannot install signal handlers");
        return ExitCode::CannotStart.code();
    };
    let mut child = match Command::new(program)
        .args(rest)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(error) => {
            say!(
                "baton child-guard: cannot start {}: {error}",
                program.to_string_lossy()
            );
            return ExitCode::CannotStart.code();
        }
    };
    let pid = child.id().and_then(|id| libc::pid_t::try_from(id).ok());
    let relays = [
        child
            .stdout
            .take()
            .map(|out| tokio::spawn(relay(out, tokio::io::stdout()))),
        child
            .stderr
            .take()
            .map(|err| tokio::spawn(relay(err, tokio::io::stderr()))),
    ];
    let status = guard(
        &mut child,
        pid,
        &args,
        program,
        (&mut term, &mut int, &mut hup),
    )
    .await;
    drain(relays).await;
    end_as(status)
}

/// Waits for CMD while watching the lifeline and passing signals on; returns how CMD
/// ended.
async fn guard(
    child: &mut tokio::process::Child,
    pid: Option<libc::pid_t>,
    args: &ChildGuardArgs,
    program: &OsString,
    signals: (
        &mut tokio::signal::unix::Signal,
        &mut tokio::signal::unix::Signal,
        &mut tokio::signal::unix::Signal,
    ),
) -> std::io::Result<ExitStatus> {
    let (term, int, hup) = signals;
    let mut terminating = false;
    let mut lifeline = tokio::io::stdin();
    let mut buffer = [0u8; 64];
    loop {
        tokio::select! {
            status = child.wait() => return status,
            read = lifeline.read(&mut buffer) => {
                if matches!(read, Ok(n) if n > 0) {
                    continue; // baton never writes; ignore anything that comes
                }
                say!(
                    "baton child-guard: baton is gone; stopping {} (SIGTERM, SIGKILL after {} ms)",
                    program.to_string_lossy(),
                    args.grace_ms
                );
                signal_own_group(libc::SIGTERM);
                let grace = Duration::from_millis(args.grace_ms);
                let status = match tokio::time::timeout(grace, child.wait()).await {
                    Ok(status) => status,
                    Err(_) => {
                        say!("baton child-guard: still running after the grace; SIGKILL");
                        kill_and_wait(child, pid).await
                    }
                };
                // CMD is gone; what it left in the group goes now, the guard with it
                // (nobody is left to read its status).
                signal_own_group(libc::SIGKILL);
                return status;
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

/// Copies CMD's output to the guard's own, until CMD's side closes. A failed write
/// (baton gone) stops the passing on, never the draining: CMD must not block on a full
/// pipe, nor meet a closed one.
async fn relay(mut from: impl AsyncRead + Unpin, mut to: impl AsyncWrite + Unpin) {
    let mut chunk = vec![0u8; 4096];
    let mut passing_on = true;
    loop {
        let read = match from.read(&mut chunk).await {
            Ok(0) => return,
            Ok(read) => read,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        if passing_on {
            passing_on = to.write_all(&chunk[..read]).await.is_ok() && to.flush().await.is_ok();
        }
    }
}

/// Lets the relays pass on what CMD printed last, for at most [`OUTPUT_DRAIN_MAX`].
async fn drain(relays: [Option<JoinHandle<()>>; 2]) {
    let all = async {
        for relay in relays.into_iter().flatten() {
            let _ = relay.await;
        }
    };
    let _ = tokio::time::timeout(OUTPUT_DRAIN_MAX, all).await;
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
            say!("baton child-guard: lost track of the child: {error}");
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
