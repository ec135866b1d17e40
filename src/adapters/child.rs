//! The child-process supervisor for the workload (`baton run DIR -- CMD ARGS…`).
//!
//! Owns: running CMD in DIR in its own process group, with baton's environment plus extra
//! variables (`TELEGRAM_UPDATES_URL`, `BATON_DEVICE_ID`); restarting it with bounded
//! exponential back-off whenever it exits (the back-off resets after a stable run); logging
//! every exit; and stopping it gracefully — SIGTERM to the whole group, SIGKILL to the
//! group after the grace period. It is driven by [`ChildControl`] messages, so the runtime
//! can also start it only while Active (`--child-when-active`).
//!
//! With [`ChildSpec::guard`] set (always, under `baton run`), CMD runs under `baton
//! child-guard` (see [`crate::child_guard`]), which leads the group and stops it when this
//! process dies, by any means: a crashed baton leaves no child behind.
//!
//! The child's stdout and stderr are pipes that baton drains continuously into its own
//! log, line by line, scrubbed of every secret in [`ChildSpec::secrets`] (see
//! [`super::child_output`]); the child never inherits baton's log file.
//!
//! Events ([`ChildEvent`]) go to an optional bounded channel; when it is full, events are
//! dropped (they are also logged), so a slow reader never stalls supervision. The child's
//! state (how many times it started, whether it runs) is also published on a `watch`
//! channel, which loses nothing that matters: [`ChildSupervisor::state`].
//!
//! Must never: leave a process of the group running after [`ChildSupervisor::shutdown`]
//! returns, log the values of the extra variables (the updates URL holds credentials) or
//! any secret the child prints, or restart faster than the back-off allows.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::child_output::{Scrubber, pass_on};
use super::telegram_config::Secret;

/// What to run and how to restart it.
#[derive(Clone)]
pub struct ChildSpec {
    pub program: OsString,
    pub args: Vec<OsString>,
    pub dir: PathBuf,
    /// Added to the inherited environment. Values are never logged.
    pub extra_env: Vec<(String, String)>,
    /// Exact values removed from the child's output before it reaches baton's log.
    pub secrets: Vec<Secret>,
    /// First restart delay; doubles per quick failure up to `backoff_max`.
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// A run at least this long resets the back-off.
    pub stable_after: Duration,
    /// The `baton` binary to run CMD under (`baton child-guard`), so the group dies with
    /// baton however baton dies. `None` runs CMD directly (library tests).
    pub guard: Option<PathBuf>,
    /// The guard's grace between SIGTERM and SIGKILL once baton is gone.
    pub guard_grace: Duration,
}

impl ChildSpec {
    /// A spec with the default back-off (0.5 s doubling to 30 s, reset after 10 s of run).
    pub fn new(program: impl Into<OsString>, args: Vec<OsString>, dir: impl Into<PathBuf>) -> Self {
        ChildSpec {
            program: program.into(),
            args,
            dir: dir.into(),
            extra_env: Vec::new(),
            secrets: Vec::new(),
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            stable_after: Duration::from_secs(10),
            guard: None,
            guard_grace: Duration::from_secs(10),
        }
    }
}

impl std::fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let env_names: Vec<&str> = self.extra_env.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("ChildSpec")
            .field("program", &self.program)
            .field("args", &self.args)
            .field("dir", &self.dir)
            .field("extra_env", &env_names)
            .field("guard", &self.guard)
            .finish_non_exhaustive()
    }
}

/// Commands to the supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildControl {
    /// Run the child (and keep restarting it). No-op when already wanted.
    Start,
    /// Stop it: SIGTERM to the group, SIGKILL after `grace`. No restarts until `Start`.
    Stop { grace: Duration },
}

/// The child as others may watch it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChildState {
    /// Launches so far (restarts included).
    pub starts: u64,
    /// A launched child has not exited yet.
    pub running: bool,
}

/// What happened, for the runtime and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChildEvent {
    Started {
        pid: u32,
    },
    /// The child exited (by itself, or because it was stopped).
    Exited {
        pid: u32,
        status: String,
        ran_for: Duration,
    },
    SpawnFailed {
        error: String,
    },
    RestartScheduled {
        delay: Duration,
    },
    Stopped,
}

enum Phase {
    Idle,
    Running {
        child: Box<Child>,
        pid: u32,
        started: Instant,
        /// The guard's lifeline, held apart from `child`: `Child::wait` closes the
        /// child's stdin before waiting. Dropped when this phase ends, which makes the
        /// guard stop the group. `None` when CMD runs unguarded.
        lifeline: Option<tokio::process::ChildStdin>,
        /// The tasks passing its output on (see [`Supervision::pass_on_output`]).
        output: Vec<JoinHandle<()>>,
    },
    BackingOff {
        until: Instant,
    },
}

/// A handle to the supervisor task.
pub struct ChildSupervisor {
    control: mpsc::Sender<(ChildControl, oneshot::Sender<()>)>,
    task: JoinHandle<()>,
    state: watch::Receiver<ChildState>,
}

impl ChildSupervisor {
    /// Starts the supervisor (the child itself starts on [`ChildSupervisor::start`]).
    pub fn spawn(spec: ChildSpec, events: Option<mpsc::Sender<ChildEvent>>) -> ChildSupervisor {
        let (control, receiver) = mpsc::channel(8);
        let (state_tx, state) = watch::channel(ChildState::default());
        let supervisor = Supervision {
            scrubber: Arc::new(Scrubber::new(&spec.secrets)),
            spec,
            events,
            quick_failures: 0,
            state: state_tx,
        };
        let task = tokio::spawn(tracing::Instrument::in_current_span(
            supervisor.run(receiver),
        ));
        ChildSupervisor {
            control,
            task,
            state,
        }
    }

    /// The child's state: a new value at every start and exit.
    pub fn state(&self) -> watch::Receiver<ChildState> {
        self.state.clone()
    }

    /// Asks for the child to run; returns once the request was taken.
    pub async fn start(&self) {
        self.command(ChildControl::Start).await;
    }

    /// Stops the child; returns once it (and its group) is gone.
    pub async fn stop(&self, grace: Duration) {
        self.command(ChildControl::Stop { grace }).await;
    }

    /// Stops the child and ends the supervisor.
    pub async fn shutdown(self, grace: Duration) {
        self.stop(grace).await;
        drop(self.control);
        if let Err(error) = self.task.await {
            tracing::error!(%error, "the child supervisor task failed");
        }
    }

    async fn command(&self, command: ChildControl) {
        let (done_tx, done_rx) = oneshot::channel();
        if self.control.send((command, done_tx)).await.is_ok() {
            // An error only means the supervisor ended, which is what a stop wants anyway.
            let _ = done_rx.await;
        }
    }
}

struct Supervision {
    spec: ChildSpec,
    scrubber: Arc<Scrubber>,
    events: Option<mpsc::Sender<ChildEvent>>,
    quick_failures: u32,
    state: watch::Sender<ChildState>,
}

/// When `control` closes without a stop, the child still gets this much grace.
const DEFAULT_GRACE: Duration = Duration::from_secs(5);
/// After a stop, how long the child's last output may take to reach the log at most.
const OUTPUT_DRAIN_MAX: Duration = Duration::from_millis(500);

/// Waits for every task.
async fn join_all_tasks(tasks: Vec<JoinHandle<()>>) {
    for task in tasks {
        let _ = task.await;
    }
}

impl Supervision {
    async fn run(mut self, mut control: mpsc::Receiver<(ChildControl, oneshot::Sender<()>)>) {
        let mut phase = Phase::Idle;
        loop {
            let received = match &mut phase {
                Phase::Idle => control.recv().await,
                Phase::Running {
                    child,
                    pid,
                    started,
                    ..
                } => tokio::select! {
                    status = child.wait() => {
                        let (pid, started) = (*pid, *started);
                        phase = self.after_exit(pid, started, status);
                        continue;
                    }
                    received = control.recv() => received,
                },
                Phase::BackingOff { until } => tokio::select! {
                    () = tokio::time::sleep_until(*until) => {
                        phase = self.launch();
                        continue;
                    }
                    received = control.recv() => received,
                },
            };
            let Some((command, done)) = received else {
                self.stop(phase, DEFAULT_GRACE).await;
                return;
            };
            phase = match command {
                ChildControl::Start => match phase {
                    Phase::Idle => {
                        self.quick_failures = 0;
                        self.launch()
                    }
                    wanted => wanted,
                },
                ChildControl::Stop { grace } => self.stop(phase, grace).await,
            };
            // The requester may have given up waiting; nothing to do then.
            let _ = done.send(());
        }
    }

    fn emit(&self, event: ChildEvent) {
        if let Some(events) = &self.events {
            // Bounded channel, drop when full (module doc): supervision must not stall.
            let _ = events.try_send(event);
        }
    }

    fn launch(&mut self) -> Phase {
        let guard = self.spec.guard.as_ref().filter(|baton| {
            let there = baton.is_file();
            if !there {
                tracing::warn!(
                    baton = %baton.display(),
                    "this baton binary is gone (upgraded or removed?): running the child unguarded; restart baton to guard it again"
                );
            }
            there
        });
        let mut command = match guard {
            Some(baton) => {
                // The guard's stdin is the lifeline: a pipe whose write end only this
                // process holds (std opens it close-on-exec), kept apart from `Child`
                // for as long as the child runs.
                let mut command = Command::new(baton);
                command
                    .arg("child-guard")
                    .arg("--grace-ms")
                    .arg(self.spec.guard_grace.as_millis().to_string())
                    .arg("--")
                    .arg(&self.spec.program)
                    .args(&self.spec.args)
                    .stdin(Stdio::piped());
                command
            }
            None => {
                let mut command = Command::new(&self.spec.program);
                command.args(&self.spec.args).stdin(Stdio::null());
                command
            }
        };
        // Unguarded, a dropped `Child` must take CMD with it. Guarded, SIGKILL would hit
        // the guard alone and orphan CMD; dropping the lifeline stops the whole group.
        command
            .current_dir(&self.spec.dir)
            .envs(self.spec.extra_env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(guard.is_none());
        match command.spawn() {
            Ok(mut child) => {
                let pid = child.id().unwrap_or(0);
                tracing::info!(pid, program = ?self.spec.program, "child started");
                let output = self.pass_on_output(&mut child);
                self.state.send_modify(|state| {
                    state.starts = state.starts.saturating_add(1);
                    state.running = true;
                });
                self.emit(ChildEvent::Started { pid });
                Phase::Running {
                    lifeline: child.stdin.take(),
                    output,
                    child: Box::new(child),
                    pid,
                    started: Instant::now(),
                }
            }
            Err(error) => {
                tracing::error!(%error, program = ?self.spec.program, "cannot start the child");
                self.emit(ChildEvent::SpawnFailed {
                    error: error.to_string(),
                });
                self.quick_failures = self.quick_failures.saturating_add(1);
                self.schedule_restart()
            }
        }
    }

    /// Drains the child's stdout and stderr into the log, each in its own task: the
    /// child never waits on a full pipe, whatever the supervisor is doing. A task ends
    /// when the last writer of its pipe is gone.
    fn pass_on_output(&self, child: &mut Child) -> Vec<JoinHandle<()>> {
        let mut tasks = Vec::new();
        if let Some(stdout) = child.stdout.take() {
            let scrubber = self.scrubber.clone();
            tasks.push(tokio::spawn(tracing::Instrument::in_current_span(pass_on(
                stdout, "stdout", scrubber,
            ))));
        }
        if let Some(stderr) = child.stderr.take() {
            let scrubber = self.scrubber.clone();
            tasks.push(tokio::spawn(tracing::Instrument::in_current_span(pass_on(
                stderr, "stderr", scrubber,
            ))));
        }
        tasks
    }

    fn after_exit(
        &mut self,
        pid: u32,
        started: Instant,
        status: std::io::Result<ExitStatus>,
    ) -> Phase {
        self.state.send_modify(|state| state.running = false);
        let ran_for = started.elapsed();
        let status = describe(status);
        tracing::warn!(pid, %status, ?ran_for, "child exited; restarting after back-off");
        self.emit(ChildEvent::Exited {
            pid,
            status,
            ran_for,
        });
        // Members of its group may outlive the leader; they would hold the port or files.
        signal_group(pid, libc::SIGKILL);
        if ran_for >= self.spec.stable_after {
            self.quick_failures = 0;
        }
        self.quick_failures = self.quick_failures.saturating_add(1);
        self.schedule_restart()
    }

    fn schedule_restart(&mut self) -> Phase {
        let exponent = self.quick_failures.saturating_sub(1).min(20);
        let delay = self
            .spec
            .backoff_initial
            .saturating_mul(1 << exponent)
            .min(self.spec.backoff_max);
        self.emit(ChildEvent::RestartScheduled { delay });
        Phase::BackingOff {
            until: Instant::now() + delay,
        }
    }

    async fn stop(&mut self, phase: Phase, grace: Duration) -> Phase {
        if let Phase::Running {
            mut child,
            pid,
            started,
            lifeline,
            output,
        } = phase
        {
            let stopping = Instant::now();
            let status = terminate(&mut child, pid, lifeline.is_some(), grace).await;
            drop(lifeline);
            self.state.send_modify(|state| state.running = false);
            // The child's last words reach the log, within its grace (and briefly: a
            // process it left behind may hold the pipe open).
            let drain_until = (Instant::now() + OUTPUT_DRAIN_MAX).min(stopping + grace);
            let drained = join_all_tasks(output);
            let _ = tokio::time::timeout_at(drain_until, drained).await;
            let status = describe(status);
            let ran_for = started.elapsed();
            tracing::info!(pid, %status, "child stopped");
            self.emit(ChildEvent::Exited {
                pid,
                status,
                ran_for,
            });
        }
        self.emit(ChildEvent::Stopped);
        Phase::Idle
    }
}

fn describe(status: std::io::Result<ExitStatus>) -> String {
    match status {
        Ok(status) => status.to_string(),
        Err(error) => format!("unknown ({error})"),
    }
}

/// SIGTERM to the group; SIGKILL to the group once `grace` has passed or the leader left
/// and the rest of the group did not follow within `grace`. A guard gets the SIGTERM
/// alone and passes it to its group itself: a group-wide SIGTERM would reach CMD twice
/// (once directly, once from the guard), and many programs take a second SIGTERM as
/// "quit now, skip the clean-up".
async fn terminate(
    child: &mut Child,
    pid: u32,
    guarded: bool,
    grace: Duration,
) -> std::io::Result<ExitStatus> {
    let deadline = Instant::now() + grace;
    if guarded {
        signal_process(pid, libc::SIGTERM);
    } else {
        signal_group(pid, libc::SIGTERM);
    }
    let status = match tokio::time::timeout_at(deadline, child.wait()).await {
        Ok(status) => status,
        Err(_) => {
            tracing::warn!(pid, ?grace, "child ignored SIGTERM; sending SIGKILL");
            signal_group(pid, libc::SIGKILL);
            child.wait().await
        }
    };
    // Bounded: one check per 20 ms until the deadline, then SIGKILL.
    while group_alive(pid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    signal_group(pid, libc::SIGKILL);
    status
}

fn signal_process(pid: u32, signal: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid)
        && pid > 0
    {
        // SAFETY: kill(2) has no memory effects; ESRCH (already gone) is fine.
        unsafe {
            libc::kill(pid, signal);
        }
    }
}

fn signal_group(pid: u32, signal: libc::c_int) {
    let Ok(group) = libc::pid_t::try_from(pid) else {
        return;
    };
    if group <= 0 {
        return;
    }
    // SAFETY: kill(2) has no memory effects; a negative pid addresses the process group
    // the child leads (spawned with process_group(0)). ESRCH (already gone) is fine.
    unsafe {
        libc::kill(-group, signal);
    }
}

fn group_alive(pid: u32) -> bool {
    let Ok(group) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks existence; no memory effects.
    group > 0 && unsafe { libc::kill(-group, 0) } == 0
}
