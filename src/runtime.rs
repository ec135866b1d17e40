//! The tokio run loop: the only place that reads the protocol's clocks and carries out the
//! core's effects (adapters spawn their own tasks and keep their own IO timers).
//!
//! Owns: the order of things. Each turn: take one input (a due timer, a watcher signal, a
//! signal, a control request, a Telegram event, or an answer the runtime owes the core),
//! stamp it with the sleep-counting clock, hand it to the core, then carry out every
//! effect in order. Answers the core asks for (a rescan, a pid probe, "acting stopped")
//! are queued as the next inputs. Must never: decide a role (the core does), read a peer
//! file on the event loop (reads run on blocking threads with a timeout), or log a secret.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, watch};

use crate::adapters::clock::{self, SleepDetector};
use crate::adapters::control::{self, Command, Reply, Request};
use crate::adapters::local;
use crate::adapters::store::{FolderIdentity, Listing, Store, StoreError};
use crate::adapters::telegram::{PollProgress, StartPosition};
use crate::adapters::telegram_commands::BatonCommand;
use crate::adapters::watcher::{self, FolderWatch, WatchMode, WatchSignal};
use crate::core::election;
use crate::core::{
    ActivationOutcome, Core, CoreConfig, Effect, Event, Identity, Input, Level, Moment, Role,
    Timing,
};
use crate::serving::{
    ACK_WAIT_MAX, CHILD_GRACE, ChildPlan, REPLY_FLUSH_MAX, Serving, ServingEvent, TelegramPlan,
    target_text,
};
use crate::telegram_text;

/// Everything `baton run` needs, validated by the CLI.
pub struct RunConfig {
    pub identity: Identity,
    pub sync_dir: PathBuf,
    pub group: String,
    pub state_dir: PathBuf,
    pub timing: Timing,
    pub seed: u64,
    pub watch_mode: WatchMode,
    /// Telegram, when configured: the active device polls it.
    pub telegram: Option<TelegramPlan>,
    /// The child command (the mirror), when given.
    pub child: Option<ChildPlan>,
    /// Re-reads the configuration on SIGHUP; returns a fingerprint (never the token
    /// itself) to compare with the one in force, or why it could not be read.
    pub reload: Option<Reload>,
}

/// Re-reads the configuration and fingerprints it.
pub type Reload = Box<dyn Fn() -> Result<String, String> + Send>;

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

/// Exit code after a forced stop (second signal).
pub const EXIT_FORCED: i32 = 130;

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
}

/// Runs until the core asks to exit; returns the process exit code.
pub async fn run(config: RunConfig) -> Result<i32, RunError> {
    let stem = crate::core::record::file_stem(&config.identity.device_id);
    let _lock = local::lock_device(&config.state_dir, &stem, &config.identity.device_id)?;
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
    let (watch_tx, mut watch_rx) = mpsc::channel(watcher::SIGNALS_MAX);
    let watch = watcher::watch(store.devices_dir(), config.watch_mode, watch_tx.clone()).map_err(
        |source| RunError::Watch {
            dir: store.devices_dir().to_path_buf(),
            source,
        },
    )?;
    let (command_tx, mut command_rx) = mpsc::channel::<Command>(16);
    let socket = local::control_socket(&config.state_dir, &config.group, &stem);
    let listener = control::listen(&socket, command_tx)?;
    let mut terminate = signal(SignalKind::terminate()).map_err(RunError::Signals)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(RunError::Signals)?;
    let mut hangup = signal(SignalKind::hangup()).map_err(RunError::Signals)?;
    let resignation_deadline =
        resignation_deadline(&config.timing, serving.child_stops_with_role());
    let reload = config.reload;
    let loaded = reload.as_ref().and_then(|read| read().ok());
    let refusal_file = local::refusal_file(&config.state_dir, &config.group, &stem);
    let mut core = Core::new(CoreConfig {
        identity: config.identity,
        timing: config.timing,
        seed: config.seed,
    });
    if let Some(install_id) = local::recalled_refusal(&refusal_file) {
        core.recall_refusal(&install_id);
    }
    let mut runtime = Runtime {
        core,
        store,
        refusal_file,
        config_dir_mode: config.watch_mode,
        watch: Some(watch),
        watch_tx,
        serving,
        sleep: SleepDetector::new(clock::SLEEP_THRESHOLD),
        pending: VecDeque::from([Event::Start]),
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
    };
    runtime.folder_identity = runtime.store.folder_identity().ok();
    tracing::info!(parent: &runtime.span, seed = config.seed, group = %config.group, "starting");
    let mut shutdown_deadline: Option<tokio::time::Instant> = None;
    let mut watcher_refresh = tokio::time::Instant::now() + WATCHER_REFRESH;
    let mut folder_check = tokio::time::interval(config.timing.settle_bound());
    folder_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while runtime.exit_code.is_none() {
        if let Some(event) = runtime.pending.pop_front() {
            runtime.feed(event).await;
            continue;
        }
        if std::mem::take(&mut runtime.rescan_pending) {
            runtime.rescan().await;
            continue;
        }
        let sleep_for = runtime.until_next_timer();
        tokio::select! {
            _ = tokio::time::sleep(sleep_for) => runtime.feed(Event::Tick).await,
            Some(signal) = watch_rx.recv() => runtime.on_watch(signal, &mut watch_rx).await,
            Some(command) = command_rx.recv() => runtime.on_command(command).await,
            Some(event) = runtime.serving.next_event() => runtime.on_serving(event).await,
            _ = terminate.recv() => runtime.on_stop_signal(&mut shutdown_deadline, resignation_deadline).await,
            _ = interrupt.recv() => runtime.on_stop_signal(&mut shutdown_deadline, resignation_deadline).await,
            _ = hangup.recv() => runtime.on_hangup(reload.as_ref(), loaded.as_deref()).await,
            _ = sleep_until_opt(shutdown_deadline) => {
                tracing::warn!(parent: &runtime.span, "resignation took too long; exiting");
                runtime.exit_code = Some(0);
            }
            _ = folder_check.tick() => {
                runtime.check_folder().await;
            }
            _ = tokio::time::sleep_until(watcher_refresh) => {
                watcher_refresh = tokio::time::Instant::now() + WATCHER_REFRESH;
                runtime.recreate_watcher("periodic refresh");
            }
        }
    }
    // A poller stopped just before the exit may have left commands it counted handled:
    // answer them (their replies go out within the shutdown's flush).
    runtime.serving.stop("shutting down").await;
    while let Some(event) = runtime.serving.take_leftover() {
        match event {
            // The core has resigned: it can no longer carry a handoff out.
            ServingEvent::Command {
                chat_id,
                thread_id,
                command: BatonCommand::Activate { .. },
            } => runtime.serving.say(
                Some(chat_id),
                thread_id,
                telegram_text::activate_while_stopping(),
            ),
            event => runtime.on_serving(event).await,
        }
    }
    runtime.serving.shutdown().await;
    listener.abort();
    let _ = std::fs::remove_file(&socket);
    let code = runtime.exit_code.unwrap_or(0);
    tracing::info!(parent: &runtime.span, code, "exiting");
    Ok(code)
}

/// `45 s`, or `1.5 s` below ten seconds (time-scaled runs).
fn seconds(duration: Duration) -> String {
    if duration >= Duration::from_secs(10) {
        format!("{} s", duration.as_secs())
    } else {
        format!("{:.1} s", duration.as_secs_f64())
    }
}

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

impl Runtime {
    fn until_next_timer(&self) -> Duration {
        let now = clock::now();
        let next = match (self.core.next_timeout(), self.lease_check_at) {
            (Some(core), Some(lease)) => Some(core.min(lease)),
            (core, lease) => core.or(lease),
        };
        next.map_or(Duration::from_secs(3600), |at| at.since(now))
    }

    /// While Standby, says how long a silent leader has been quiet, once per quarter of
    /// the liveness timeout — but only past one heartbeat interval plus the settle bound
    /// (the sync delay the protocol tolerates), so a healthy leader, whose changes arrive
    /// that often even through a slow sync, never causes a log line or a wake-up.
    /// Returns when to look again (`None`: nothing to watch; the core's own deadline
    /// takes over once the lease lapses).
    fn report_silent_leader(&mut self) -> Option<Moment> {
        if self.role != Role::Standby {
            return None;
        }
        let now = clock::now();
        let timing = *self.core.timing();
        let leader = election::leader(self.core.peers(), now, &timing)?;
        let liveness = timing.liveness_active;
        let quarter_ms = (liveness.as_millis() / 4).max(1) as u64;
        let quiet_normally = timing.heartbeat_active.max() + timing.settle_bound();
        let first_quarter = (quiet_normally.as_millis() as u64 / quarter_ms) + 1;
        let silent = now.since(leader.changed_at);
        let quarters = silent.as_millis() as u64 / quarter_ms;
        let report = (leader.stem.clone(), leader.changed_at, quarters as u32);
        if quarters >= first_quarter && self.lease_reported.as_ref() != Some(&report) {
            tracing::info!(
                parent: &self.span,
                leader = %leader.record.device_id,
                "leader {} silent for {} of {}",
                leader.record.device_id,
                seconds(silent),
                seconds(liveness)
            );
            self.lease_reported = Some(report);
        }
        let next = leader.changed_at.plus(Duration::from_millis(
            quarter_ms * quarters.max(first_quarter - 1).saturating_add(1),
        ));
        (next < election::lapses_at(leader, &timing)).then_some(next)
    }

    /// Hands one event to the core (after noting any sleep) and carries out the effects.
    async fn feed(&mut self, event: Event) {
        if let Some(slept) = self.sleep.check() {
            tracing::warn!(parent: &self.span, slept_s = slept.as_secs(), "woke from sleep");
            // Watchers have gone silently dead across sleep (FACTS): a fresh one now, not
            // at the next 30-minute refresh, which counts awake time only.
            self.recreate_watcher("woke from sleep");
            // The core answers Woke with a Rescan in every state: one listing is enough.
            self.rescan_pending = false;
            self.handle(Event::Woke {
                slept_ms: slept.as_millis() as u64,
            });
            self.execute_effects().await;
        }
        self.handle(event);
        self.execute_effects().await;
        if let Some(progress) = self.serving.progress_changed() {
            self.record_progress(&progress);
            // A timer may have fallen due in between: nothing the core asked waits.
            self.execute_effects().await;
        }
        self.lease_check_at = self.report_silent_leader();
        // The poller starts no getUpdates past this (it reads the clock before each).
        let lease = self.core.lease_deadline();
        self.lease_tx.send_if_modified(|published| {
            let changed = *published != lease;
            *published = lease;
            changed
        });
    }

    /// Puts the poller's progress in the core's record (written with the next heartbeat).
    /// Sent even when it is 0: after Telegram started its ids over, nothing of the new
    /// sequence is handled yet, and the record must stop carrying the old high id.
    fn record_progress(&mut self, progress: &PollProgress) {
        self.handle(Event::UpdateHandled {
            update_id: progress.handled_through,
        });
        self.handle(Event::HandledAbove {
            ids: progress.handled_above.clone(),
        });
    }

    /// Every record this device knows: its peers' and its own.
    fn all_records(&self) -> impl Iterator<Item = &crate::core::DeviceRecord> {
        self.core
            .peers()
            .values()
            .map(|peer| &peer.record)
            .chain(std::iter::once(self.core.own_record()))
    }

    /// On taking the role: tells the chat, once per peer and reason, which devices cannot
    /// poll because Telegram refused their token (they could not say so themselves).
    fn say_why_peers_cannot_poll(&mut self) {
        let refused: Vec<(String, String)> = self
            .core
            .peers()
            .values()
            .filter_map(|peer| {
                let reason = peer.record.polling_refused.clone()?;
                Some((peer.record.device_id.clone(), reason))
            })
            .collect();
        for (device, reason) in refused {
            if self.refusals_told.insert((device.clone(), reason.clone())) {
                self.serving.say(
                    None,
                    None,
                    telegram_text::peer_cannot_poll(&device, &reason),
                );
            }
        }
    }

    fn handle(&mut self, event: Event) {
        let input = Input {
            at: clock::now(),
            wall_ms: clock::wall_ms(),
            event,
        };
        self.core.handle(input);
    }

    async fn execute_effects(&mut self) {
        while let Some(effect) = self.core.poll_effect() {
            self.execute(effect).await;
        }
    }

    async fn execute(&mut self, effect: Effect) {
        match effect {
            Effect::Transition { from, to, cause } => {
                self.role = to;
                // A fresh span per role: recording into the old one would append, not replace.
                self.span = tracing::info_span!("baton", role = to.as_str());
                tracing::info!(parent: &self.span, %from, %to, %cause, term = self.core.term(), "role changed");
            }
            Effect::WriteRecord { record } => self.write_record(*record).await,
            Effect::DeleteFile { name, reason } => match self.store.delete(&name) {
                Ok(()) => tracing::info!(parent: &self.span, file = %name, %reason, "deleted"),
                Err(error) => tracing::warn!(parent: &self.span, %error, "cannot delete"),
            },
            Effect::StartActing {
                term,
                skip_through,
                also_handled,
            } => {
                tracing::info!(parent: &self.span, term, ?skip_through, "serving the bot");
                let start = StartPosition {
                    skip_through: skip_through.unwrap_or(0),
                    also_handled,
                };
                self.say_why_peers_cannot_poll();
                let known_foreign: Vec<i64> = self
                    .all_records()
                    .flat_map(|record| record.foreign_chats.iter().copied())
                    .collect();
                self.serving.start(term, start, known_foreign).await;
            }
            Effect::StopActing { reason } => {
                let progress = self.serving.stop(&reason).await;
                if let Some(progress) = &progress {
                    self.record_progress(progress);
                }
                let last_update_id = progress.map(|p| p.handled_through).filter(|id| *id > 0);
                self.pending
                    .push_back(Event::ActingStopped { last_update_id });
            }
            Effect::PauseActing { until } => {
                self.serving.pause(until.since(clock::now())).await;
            }
            Effect::Rescan => self.rescan().await,
            Effect::RememberRefusal { install_id } => {
                local::remember_refusal(&self.refusal_file, Some(&install_id));
            }
            Effect::ForgetRefusal => local::remember_refusal(&self.refusal_file, None),
            Effect::RequestDownload { name } => {
                self.store.request_download(&name);
            }
            Effect::ProbePid { stem, pid } => {
                let alive = local::pid_alive(pid);
                self.pending
                    .push_back(Event::PidProbed { stem, pid, alive });
            }
            Effect::TimerArmed {
                timer,
                at,
                jitter_ms,
            } => {
                tracing::trace!(parent: &self.span, ?timer, %at, jitter_ms, "timer armed");
            }
            Effect::Notify { level, message } => match level {
                Level::Info => tracing::info!(parent: &self.span, "{message}"),
                Level::Warn => tracing::warn!(parent: &self.span, "{message}"),
                Level::Error => tracing::error!(parent: &self.span, "{message}"),
            },
            Effect::ActivationResult { ticket, result } => self.answer(ticket, result).await,
            Effect::Exit { code, reason } => {
                tracing::info!(parent: &self.span, code, %reason, "exit requested");
                self.exit_code = Some(code);
            }
        }
    }

    /// Writes our record and queues the outcome for the core: our lease runs from writes
    /// known to be on disk, and a device that cannot write neither contends nor acts.
    /// The core reports a failure once per episode (with this path and OS error).
    async fn write_record(&mut self, record: crate::core::DeviceRecord) {
        let store = self.store.clone();
        let seq = record.seq;
        let written = tokio::task::spawn_blocking(move || store.write_record(&record)).await;
        let failure = match written {
            Ok(Ok(())) => {
                tracing::debug!(parent: &self.span, file = self.store.own_name(), seq, "wrote own record");
                None
            }
            Ok(Err(error)) => {
                if let StoreError::Write { source, .. } = &error
                    && source.kind() == std::io::ErrorKind::NotFound
                {
                    // The folder itself is gone: make it again and watch the new one;
                    // the core's retry then writes into it.
                    self.check_folder().await;
                }
                Some(error.to_string())
            }
            Err(error) => Some(format!("the writer task failed: {error}")),
        };
        let event = match failure {
            None => Event::RecordWritten { seq },
            Some(reason) => {
                tracing::debug!(parent: &self.span, seq, %reason, "own record not written");
                Event::RecordWriteFailed { seq, reason }
            }
        };
        self.pending.push_back(event);
    }

    async fn rescan(&mut self) {
        match self.store.scan_bounded(READ_TIMEOUT).await {
            Ok(listing) => {
                self.warn_junk(&listing);
                self.pending.push_back(Event::Scanned {
                    files: listing.files,
                });
            }
            Err(reason) => {
                self.pending.push_back(Event::ScanFailed { reason });
                if !self.check_folder().await && self.store.ensure_dir().is_ok() {
                    self.recreate_watcher("the folder could not be listed");
                }
            }
        }
    }

    /// Notices the devices folder being removed or replaced (deleted and made again, a
    /// sync tool swapping it): says so, makes it again if it is gone, and watches the
    /// folder now at the path; the rescan that follows shows the core whether its own
    /// record is there (it writes it again if not). Returns whether anything was done.
    async fn check_folder(&mut self) -> bool {
        let path = self.store.devices_dir().display().to_string();
        match self.store.folder_identity() {
            Ok(identity) if Some(identity) == self.folder_identity => false,
            Ok(_) => {
                tracing::warn!(
                    parent: &self.span,
                    folder = %path,
                    "the devices folder was replaced (deleted and made again?): watching the new one and re-reading it"
                );
                self.recreate_watcher("the devices folder was replaced");
                true
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                match self.store.ensure_dir() {
                    Ok(()) => {
                        tracing::warn!(
                            parent: &self.span,
                            folder = %path,
                            "the devices folder is gone (deleted?): made it again; watching and re-reading it"
                        );
                        self.folder_gone_said = false;
                        self.recreate_watcher("the devices folder was gone");
                    }
                    Err(error) if !std::mem::replace(&mut self.folder_gone_said, true) => {
                        tracing::warn!(parent: &self.span, %error, "the devices folder is gone and cannot be made again; retrying");
                    }
                    Err(_) => {}
                }
                true
            }
            Err(error) => {
                tracing::debug!(parent: &self.span, %error, "cannot look at the devices folder");
                false
            }
        }
    }

    /// Warns once when the folder holds a lot of junk, again only after it was cleaned
    /// up and filled anew.
    fn warn_junk(&mut self, listing: &Listing) {
        let warning = listing.junk_warning(self.store.devices_dir());
        if let Some(warning) = &warning
            && !self.junk_warned
        {
            tracing::warn!(parent: &self.span, junk = listing.junk, "{warning}");
        }
        self.junk_warned = warning.is_some();
    }

    fn recreate_watcher(&mut self, why: &str) {
        self.watch = None;
        match watcher::watch(
            self.store.devices_dir(),
            self.config_dir_mode,
            self.watch_tx.clone(),
        ) {
            Ok(watch) => {
                tracing::debug!(parent: &self.span, why, "watcher re-created");
                self.watch = Some(watch);
                self.folder_identity = self.store.folder_identity().ok();
                // Changes made while no watch was registered are only seen by a scan.
                self.rescan_pending = true;
            }
            Err(error) => {
                tracing::warn!(parent: &self.span, %error, why, "cannot re-create the watcher; the backstop rescan still runs")
            }
        }
    }

    /// Collects a short burst of signals, then re-reads what they name.
    async fn on_watch(&mut self, first: WatchSignal, rx: &mut mpsc::Receiver<WatchSignal>) {
        let mut names = BTreeSet::new();
        let mut rescan = false;
        let mut failed = None;
        let mut absorb = |signal: WatchSignal, names: &mut BTreeSet<String>| match signal {
            WatchSignal::Changed(changed) => names.extend(changed),
            WatchSignal::Rescan { .. } => rescan = true,
            WatchSignal::Failed { reason } => failed = Some(reason),
        };
        absorb(first, &mut names);
        let window = tokio::time::sleep(DEBOUNCE);
        tokio::pin!(window);
        loop {
            tokio::select! {
                _ = &mut window => break,
                Some(signal) = rx.recv() => absorb(signal, &mut names),
            }
        }
        names.remove(&self.store.temp_name());
        if let Some(reason) = failed {
            // A watch that failed (its folder removed, say) hears nothing more: look at
            // what is at the path now and watch that, even when it looks the same (a
            // folder made again may reuse the old one's inode and creation second).
            if !self.check_folder().await {
                tracing::warn!(parent: &self.span, %reason, "the folder watch failed: watching anew and re-reading the folder");
                self.recreate_watcher("the watch failed");
            }
            return;
        }
        if rescan {
            self.rescan().await;
            return;
        }
        for name in names {
            if matches!(
                crate::core::record::classify_name(&name),
                crate::core::record::NameKind::Temp | crate::core::record::NameKind::Foreign
            ) {
                continue;
            }
            let file = self.store.observe_bounded(name, READ_TIMEOUT).await;
            self.pending.push_back(Event::FileChanged { file });
        }
    }

    async fn on_command(&mut self, command: Command) {
        match command.request {
            Request::Activate { target } => {
                let ticket = self.next_ticket;
                self.next_ticket += 1;
                self.tickets.insert(ticket, Asker::Local(command.reply));
                self.feed(Event::ActivateAsked { target, ticket }).await;
            }
            Request::Table => {
                let reply = Reply::Table {
                    device_id: self.core.own_record().device_id.clone(),
                    role: self.role.to_string(),
                    rows: self.core.device_table(),
                };
                let _ = command.reply.send(reply);
            }
        }
    }

    async fn answer(&mut self, ticket: u64, result: ActivationOutcome) {
        let device_id = self.core.own_record().device_id.clone();
        let in_progress = matches!(
            result,
            ActivationOutcome::HandingOver { .. }
                | ActivationOutcome::Requested { .. }
                | ActivationOutcome::Contending
        );
        match self.tickets.remove(&ticket) {
            Some(Asker::Local(reply)) => {
                let _ = reply.send(Reply::Activation { device_id, result });
            }
            Some(Asker::Telegram { chat_id, thread_id }) => {
                // The new device announces itself; "done" needs no second message.
                if !matches!(result, ActivationOutcome::Done { .. }) {
                    let text = crate::telegram_text::activation(&result);
                    self.serving.say(Some(chat_id), thread_id, text);
                }
                if in_progress {
                    self.tickets
                        .insert(ticket, Asker::Telegram { chat_id, thread_id });
                }
            }
            None => {
                tracing::debug!(parent: &self.span, ticket, ?result, "an activation answer nobody waits for")
            }
        }
    }

    async fn on_serving(&mut self, event: ServingEvent) {
        match event {
            ServingEvent::Core(event) => {
                if matches!(event, Event::PollingRefused { .. }) {
                    // Our own messages did not go out either: tell again next time.
                    self.refusals_told.clear();
                }
                self.feed(event).await
            }
            ServingEvent::Command {
                chat_id,
                thread_id,
                command,
            } => {
                self.on_telegram_command(chat_id, thread_id, command).await;
            }
        }
    }

    async fn on_telegram_command(
        &mut self,
        chat_id: i64,
        thread_id: Option<i64>,
        command: BatonCommand,
    ) {
        let text = match command {
            BatonCommand::Devices => telegram_text::devices(&self.core.device_table()),
            BatonCommand::Help => telegram_text::help(),
            BatonCommand::Status => telegram_text::status(&telegram_text::StatusInfo {
                device_id: &self.core.own_record().device_id,
                role: self.role,
                term: self.core.term(),
                uptime: self.started.elapsed(),
                folder: &self.store.devices_dir().display().to_string(),
                peers: self.core.peers().len(),
            }),
            BatonCommand::Activate { target: None } => telegram_text::activate_usage(),
            BatonCommand::Activate { target } => {
                let ticket = self.next_ticket;
                self.next_ticket += 1;
                self.tickets
                    .insert(ticket, Asker::Telegram { chat_id, thread_id });
                let target = target_text(&target);
                self.feed(Event::ActivateAsked { target, ticket }).await;
                return;
            }
        };
        self.serving.say(Some(chat_id), thread_id, text);
    }

    /// SIGHUP: re-read the configuration (say whether a restart is needed) and the folder.
    async fn on_hangup(&mut self, reload: Option<&Reload>, loaded: Option<&str>) {
        tracing::info!(parent: &self.span, "SIGHUP: re-reading the configuration and the folder");
        match reload.map(|read| read()) {
            Some(Ok(now)) if Some(now.as_str()) == loaded => {
                tracing::info!(parent: &self.span, "configuration unchanged");
            }
            Some(Ok(_)) => tracing::warn!(
                parent: &self.span,
                "the Telegram configuration changed; it takes effect when baton restarts \
                 (launchctl kickstart -k gui/$UID/<label>, or systemctl --user restart <label>)"
            ),
            Some(Err(error)) => tracing::warn!(
                parent: &self.span,
                %error,
                "the configuration no longer reads; keeping the one in force"
            ),
            None => {}
        }
        self.rescan().await;
    }

    async fn on_stop_signal(
        &mut self,
        deadline: &mut Option<tokio::time::Instant>,
        resignation_deadline: Duration,
    ) {
        if deadline.is_some() {
            tracing::warn!(parent: &self.span, "second stop signal: exiting now");
            self.serving.note_stop_signal(true);
            self.serving.stop("forced exit").await;
            self.exit_code = Some(EXIT_FORCED);
            return;
        }
        tracing::info!(parent: &self.span, "stop signal: resigning");
        self.serving.note_stop_signal(false);
        // Dated from the signal's arrival: a stop that was blocking the loop when it came
        // (a handoff's wait for the child) is inside the budget, not added to it.
        let arrived = self.serving.stop_signal_at();
        *deadline = Some(arrived.unwrap_or_else(tokio::time::Instant::now) + resignation_deadline);
        self.feed(Event::ShutdownAsked).await;
    }
}
