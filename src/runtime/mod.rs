//! The tokio run loop: the only place that reads the protocol's clocks and carries out the
//! core's effects (adapters spawn their own tasks and keep their own IO timers).
//!
//! Owns: the order of things. Each turn: take one input (a due timer, a watcher signal, a
//! signal, a control request, a Telegram event, or an answer the runtime owes the core),
//! stamp it with the sleep-counting clock, hand it to the core, then carry out every
//! effect in order. Answers the core asks for (a rescan, a pid probe, "acting stopped")
//! are queued as the next inputs. Must never: decide a role (the core does), read a peer
//! file on the event loop (reads run on blocking threads with a timeout), or log a secret.
//!
//! Layout: this module holds the set-up ([`run`]: lock, folder, serving, watch, socket,
//! signals, core), the loop and the exit, and the budgets a stop must fit in
//! ([`resignation_deadline`], [`exit_budget`]). One `Runtime` value carries the state;
//! its methods are grouped by what they answer: `effects` (a turn: feed the core, carry
//! out its effects), `folder` (listings, the watch, a replaced folder) and `requests`
//! (control requests, Telegram commands, serving's events, signals).

mod effects;
mod folder;
mod mail;
mod mail_side;
mod power;
mod requests;
mod witness;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::{mpsc, watch};

use crate::adapters::clock::{self, SleepDetector};
use crate::adapters::control::{self, Command, Reply};
use crate::adapters::local;
use crate::adapters::power::{Power, PowerEvent, PowerEvents, PowerHandle, PowerOptions};
use crate::adapters::store::{FolderIdentity, Store};
use crate::adapters::telegram::{SameHostNudge, WitnessAsker};
use crate::adapters::telegram_commands::BatonCommand;
use crate::adapters::watcher::{self, FolderWatch, WatchMode, WatchSignal};
use crate::config::{Reload, RunConfig};
use crate::core::{Core, CoreConfig, Event, Moment, Role, Timing};
use crate::serving::{ACK_WAIT_MAX, CHILD_GRACE, REPLY_FLUSH_MAX, Serving, ServingEvent};
use crate::telegram_text;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Local(#[from] local::LocalError),
    #[error(transparent)]
    Store(#[from] crate::adapters::store::StoreError),
    #[error(transparent)]
    Control(#[from] control::ControlError),
    #[error("cannot watch {dir}: {source}")]
    Watch { dir: PathBuf, source: notify::Error },
    #[error(transparent)]
    Serving(#[from] crate::serving::ServingError),
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
}

/// How long a single file read or listing may take before it is given up on.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Watcher signals arriving within this window are handled as one batch.
const DEBOUNCE: Duration = Duration::from_millis(100);
/// The watcher is re-created this often (watchers have gone silently dead after days).
const WATCHER_REFRESH: Duration = Duration::from_secs(30 * 60);
/// Slack on top of the resignation's own waits before a stop signal's deadline.
const SHUTDOWN_GRACE_EXTRA: Duration = Duration::from_secs(5);

/// After a stop signal, the runtime stops waiting for its resignation this long after the
/// signal arrived: stopping (the child's last acknowledgements; and, when the child runs
/// only while active, the child's own stop, the two sharing their budget, see
/// `serving::child_grace_after`), then the wait for the handoff's target.
pub fn resignation_deadline(timing: &Timing, child_stops_with_role: bool) -> Duration {
    let stopping = if child_stops_with_role {
        ACK_WAIT_MAX + CHILD_GRACE
    } else {
        ACK_WAIT_MAX
    };
    stopping + timing.resign_wait + SHUTDOWN_GRACE_EXTRA
}

/// The longest a stop signal can take to become an exit: the resignation's deadline,
/// then the child's grace (if it still runs) and the last replies. The service
/// manager's stop timeout (`agent::STOP_TIMEOUT`) must exceed it, or it SIGKILLs baton
/// mid-resignation. The child is stopped once, in either order, so both modes fit; an
/// acknowledgement wait longer than `ACK_WAIT_MAX` (the child still processing) takes
/// the excess out of the child's grace (`serving::child_grace_after`), so the sum holds.
pub fn exit_budget(timing: &Timing) -> Duration {
    ACK_WAIT_MAX + CHILD_GRACE + timing.resign_wait + SHUTDOWN_GRACE_EXTRA + REPLY_FLUSH_MAX
}

/// Who asked for an activation, so the answer goes back to them.
enum Asker {
    Local(tokio::sync::oneshot::Sender<Reply>),
    Telegram {
        chat_id: i64,
        thread_id: Option<i64>,
    },
}

struct Runtime {
    core: Core,
    store: Store,
    /// Where a refusal (a clone writes our record) is remembered between runs.
    refusal_file: PathBuf,
    config_dir_mode: WatchMode,
    watch: Option<FolderWatch>,
    watch_tx: mpsc::Sender<WatchSignal>,
    serving: Serving,
    sleep: SleepDetector,
    pending: VecDeque<Event>,
    tickets: BTreeMap<u64, Asker>,
    started: tokio::time::Instant,
    next_ticket: u64,
    exit_code: Option<i32>,
    /// A full listing is owed (the watcher was re-created).
    rescan_pending: bool,
    role: Role,
    span: tracing::Span,
    /// Lease progress: when to look at a silent leader again, and the last report
    /// made (leader stem, its change moment, quarters of the liveness timeout).
    lease_check_at: Option<Moment>,
    lease_reported: Option<(String, Moment, u32)>,
    /// Peers whose refused token was told in the chat, with the reason.
    refusals_told: BTreeSet<(String, String)>,
    /// The folder's junk was warned about (once per episode).
    junk_warned: bool,
    /// The core's lease deadline, published to the poller.
    lease_tx: watch::Sender<Option<Moment>>,
    /// The devices folder the watch was made on: a folder deleted and made again (or
    /// swapped) is another one, and the old watch hears nothing of it.
    folder_identity: Option<FolderIdentity>,
    /// The folder was found gone and could not be made again (said once).
    folder_gone_said: bool,
    /// Routing through the mail folder (issue 11), when Telegram is configured.
    mail: Option<mail_side::MailSide>,
    /// The lever over sleep (inert until the power adapter has started).
    power: PowerHandle,
    /// An announced sleep not yet allowed: when its grace ends (`power.rs`).
    sleep_announced_until: Option<tokio::time::Instant>,
    /// Telegram as a second witness: asks `getWebhookInfo` (see `witness.rs`).
    witness: WitnessAsker,
}

/// What the run loop listens to besides the core, and what must outlive it.
struct Inputs {
    /// Held until the process exits: one `baton run` per device id per host.
    _lock: local::DeviceLock,
    watch_rx: mpsc::Receiver<WatchSignal>,
    command_rx: mpsc::Receiver<Command>,
    socket: PathBuf,
    listener: tokio::task::JoinHandle<()>,
    terminate: Signal,
    interrupt: Signal,
    hangup: Signal,
    /// How long after a stop signal the runtime stops waiting for the resignation.
    resignation_deadline: Duration,
    reload: Option<Reload>,
    /// The configuration's fingerprint at start, for SIGHUP to compare with.
    loaded: Option<String>,
    /// The mail folder's watch (issue 11).
    mail_rx: Option<mpsc::Receiver<WatchSignal>>,
    /// The power adapter while it starts on its own task, then its events.
    power_start: Option<tokio::task::JoinHandle<Power>>,
    power_events: Option<PowerEvents>,
}

/// Runs until the core asks to exit; returns the process exit code.
pub async fn run(config: RunConfig) -> Result<i32, RunError> {
    let seed = config.seed;
    let group = config.group.clone();
    let settle_bound = config.timing.settle_bound();
    let (mut runtime, mut inputs) = start(config).await?;
    // The poller may route before the first input is handled: a table from the start.
    runtime.publish_routes();
    tracing::info!(parent: &runtime.span, seed, group = %group, "starting");
    runtime.run_loop(&mut inputs, settle_bound).await;
    Ok(runtime.finish(inputs).await)
}

/// Set-up, in this order: the device lock, the devices folder, serving (the gateway and
/// the child, which may start only once the lock is ours), the watch, the control
/// socket and the signal handlers, then the core with `Event::Start` queued.
async fn start(config: RunConfig) -> Result<(Runtime, Inputs), RunError> {
    let stem = crate::core::record::file_stem(&config.identity.device_id);
    let lock = local::lock_device(&config.state_dir, &stem, &config.identity.device_id)?;
    let store = Store::new(&config.sync_dir, &config.group, &config.identity.device_id);
    store.ensure_dir()?;
    // Only now that the lock is ours may a child start.
    let mut serving = Serving::new(
        config.identity.device_id.clone(),
        config.telegram,
        config.child,
    )
    .await?;
    serving.watch_stop_signals();
    // Inside the caller's `device{id}` span (see main.rs): lines add the role.
    let span = tracing::info_span!("baton", role = "Registering");
    let (lease_tx, lease_rx) = watch::channel(None);
    serving.bind_lease(lease_rx);
    let (watch_tx, watch_rx) = mpsc::channel(watcher::SIGNALS_MAX);
    let watch = watcher::watch(store.devices_dir(), config.watch_mode, watch_tx.clone()).map_err(
        |source| RunError::Watch {
            dir: store.devices_dir().to_path_buf(),
            source,
        },
    )?;
    let recorded = previous_record(&store);
    let (mail_side, mail_rx, routing_notes) = mail_side::set_up(
        &mut serving,
        &config.sync_dir,
        &config.group,
        &config.identity.device_id,
        recorded,
        config.watch_mode,
        SameHostNudge {
            state_dir: config.state_dir.clone(),
            group: config.group.clone(),
            hostname: config.identity.hostname.clone(),
        },
    );
    let (command_tx, command_rx) = mpsc::channel::<Command>(16);
    let socket = local::control_socket(&config.state_dir, &config.group, &stem);
    let listener = control::listen(&socket, command_tx)?;
    let resignation_deadline =
        resignation_deadline(&config.timing, serving.child_stops_with_role());
    let inputs = Inputs {
        _lock: lock,
        watch_rx,
        command_rx,
        socket,
        listener,
        terminate: signal(SignalKind::terminate()).map_err(RunError::Signals)?,
        interrupt: signal(SignalKind::interrupt()).map_err(RunError::Signals)?,
        hangup: signal(SignalKind::hangup()).map_err(RunError::Signals)?,
        resignation_deadline,
        loaded: config.reload.as_ref().and_then(|read| read().ok()),
        reload: config.reload,
        mail_rx,
        // On its own task: `power::start` is bounded (10 s) but may wait on a silent
        // bus, and the loop must not.
        power_start: Some(tokio::spawn(async {
            crate::adapters::power::start(&PowerOptions::default()).await
        })),
        power_events: None,
    };
    let refusal_file = local::refusal_file(&config.state_dir, &config.group, &stem);
    let core_config = CoreConfig {
        identity: config.identity,
        timing: config.timing,
        seed: config.seed,
    };
    let witness = WitnessAsker::new(serving.witness_bot());
    let mut runtime = Runtime {
        core: core_recalling_refusal(core_config, &refusal_file),
        store,
        refusal_file,
        config_dir_mode: config.watch_mode,
        watch: Some(watch),
        watch_tx,
        serving,
        sleep: SleepDetector::new(clock::SLEEP_THRESHOLD),
        pending: std::iter::once(Event::Start).chain(routing_notes).collect(),
        tickets: BTreeMap::new(),
        started: tokio::time::Instant::now(),
        next_ticket: 1,
        exit_code: None,
        rescan_pending: false,
        role: Role::Registering,
        span,
        lease_check_at: None,
        lease_reported: None,
        refusals_told: BTreeSet::new(),
        junk_warned: false,
        lease_tx,
        folder_identity: None,
        folder_gone_said: false,
        mail: mail_side,
        power: PowerHandle::inert(),
        sleep_announced_until: None,
        witness,
    };
    runtime.enable_witness();
    runtime.folder_identity = runtime.store.folder_identity().ok();
    Ok((runtime, inputs))
}

/// Our record as a previous run left it, if it reads (its mail acknowledgements carry
/// over to this run).
fn previous_record(store: &Store) -> Option<crate::core::DeviceRecord> {
    let observation = store.observe(store.own_name());
    match observation.state {
        crate::core::FileState::Contents { text } => {
            crate::core::record::parse_record(text.as_bytes()).ok()
        }
        _ => None,
    }
}

/// The core, told of a refusal an earlier run remembered (a clone writes our record).
fn core_recalling_refusal(config: CoreConfig, refusal_file: &Path) -> Core {
    let mut core = Core::new(config);
    if let Some(install_id) = local::recalled_refusal(refusal_file) {
        core.recall_refusal(&install_id);
    }
    core
}

impl Runtime {
    /// Until the core emits `Effect::Exit`: feed owed answers first, then wait for the
    /// first of the inputs (see ARCHITECTURE.md, "The run loop").
    async fn run_loop(&mut self, inputs: &mut Inputs, settle_bound: Duration) {
        let mut shutdown_deadline: Option<tokio::time::Instant> = None;
        let mut watcher_refresh = tokio::time::Instant::now() + WATCHER_REFRESH;
        let mut folder_check = tokio::time::interval(settle_bound);
        folder_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut mail_acks = tokio::time::interval(MAIL_ACK_CHECK);
        mail_acks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let resignation_deadline = inputs.resignation_deadline;
        while self.exit_code.is_none() {
            if let Some(event) = self.pending.pop_front() {
                self.feed(event).await;
                continue;
            }
            if std::mem::take(&mut self.rescan_pending) {
                self.rescan().await;
                continue;
            }
            if self.mail_recheck_due() {
                self.check_mail().await;
                continue;
            }
            let sleep_for = self.until_next_timer();
            tokio::select! {
                _ = tokio::time::sleep(sleep_for) => self.feed(Event::Tick).await,
                Some(signal) = inputs.watch_rx.recv() => self.on_watch(signal, &mut inputs.watch_rx).await,
                Some(command) = inputs.command_rx.recv() => self.on_command(command).await,
                Some(event) = self.serving.next_event() => self.on_serving(event).await,
                Some(answer) = self.witness.answer() => self.on_witness_answer(answer).await,
                _ = inputs.terminate.recv() => self.on_stop_signal(&mut shutdown_deadline, resignation_deadline).await,
                _ = inputs.interrupt.recv() => self.on_stop_signal(&mut shutdown_deadline, resignation_deadline).await,
                _ = inputs.hangup.recv() => self.on_hangup(inputs.reload.as_ref(), inputs.loaded.as_deref()).await,
                _ = sleep_until_opt(shutdown_deadline) => {
                    tracing::warn!(parent: &self.span, "resignation took too long; exiting");
                    self.exit_code = Some(0);
                }
                _ = folder_check.tick() => {
                    self.check_folder().await;
                    self.check_mail().await;
                }
                Some(_) = recv_opt(&mut inputs.mail_rx) => {
                    drain_signals(&mut inputs.mail_rx);
                    self.check_mail().await;
                }
                _ = mail_acks.tick(), if self.mail.is_some() => self.collect_mail_acks().await,
                started = join_opt(&mut inputs.power_start) => {
                    inputs.power_start = None;
                    match started {
                        Ok(power) => inputs.power_events = Some(self.power_started(power)),
                        Err(error) => tracing::warn!(parent: &self.span, %error, "the power adapter failed to start; failing over by lease only"),
                    }
                }
                event = next_power_event(&mut inputs.power_events) => self.on_power(event).await,
                _ = tokio::time::sleep_until(watcher_refresh) => {
                    watcher_refresh = tokio::time::Instant::now() + WATCHER_REFRESH;
                    self.recreate_watcher("periodic refresh");
                }
            }
        }
    }

    /// After the core asked to exit: stop serving, answer what a stopped poller left,
    /// let the replies go out, close the control socket. Returns the exit code.
    async fn finish(mut self, inputs: Inputs) -> i32 {
        // A poller stopped just before the exit may have left commands it counted
        // handled: answer them (their replies go out within the shutdown's flush).
        self.serving.stop("shutting down").await;
        while let Some(event) = self.serving.take_leftover() {
            match event {
                // The core has resigned: it can no longer carry a handoff out.
                ServingEvent::Command {
                    chat_id,
                    thread_id,
                    command: BatonCommand::Activate { .. },
                } => self.serving.say(
                    Some(chat_id),
                    thread_id,
                    telegram_text::activate_while_stopping(),
                ),
                event => self.on_serving(event).await,
            }
        }
        self.serving.shutdown().await;
        inputs.listener.abort();
        let _ = std::fs::remove_file(&inputs.socket);
        let code = self.exit_code.unwrap_or(0);
        tracing::info!(parent: &self.span, code, "exiting");
        code
    }
}

/// `45 s`, or `1.5 s` below ten seconds (time-scaled runs).
fn seconds(duration: Duration) -> String {
    if duration >= Duration::from_secs(10) {
        format!("{} s", duration.as_secs())
    } else {
        format!("{:.1} s", duration.as_secs_f64())
    }
}

/// How often the child's fetches of mail are looked at (no IO: the gateway's memory).
const MAIL_ACK_CHECK: Duration = Duration::from_millis(250);

async fn recv_opt(rx: &mut Option<mpsc::Receiver<WatchSignal>>) -> Option<WatchSignal> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn join_opt<T>(
    task: &mut Option<tokio::task::JoinHandle<T>>,
) -> Result<T, tokio::task::JoinError> {
    match task {
        Some(task) => task.await,
        None => std::future::pending().await,
    }
}

/// Mail folder signals are hints: one look covers a burst of them.
fn drain_signals(rx: &mut Option<mpsc::Receiver<WatchSignal>>) {
    if let Some(rx) = rx {
        while rx.try_recv().is_ok() {}
    }
}

async fn next_power_event(events: &mut Option<PowerEvents>) -> PowerEvent {
    match events {
        Some(events) => events.next().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
