//! Serving: what "acting as the active device" means for this run.
//!
//! Owns: starting and stopping whatever serves the bot when the core says so — with no
//! Telegram configured, only a log line; with Telegram, the poller (only while Active and
//! not paused), the loopback gateway the child reads its updates from, the replier, and
//! the child (always running, or only while Active with `--child-when-active`), with the
//! environment baton gives it ([`crate::adapters::child_env`]). It hands the runtime the
//! poller's events and the offset progress for the device record.
//!
//! baton is the only poller in every mode: with `--child-when-active` it polls while
//! Active and serves the child through the gateway, exactly as in the default mode; the
//! child merely runs only then. (The mirror, given an updates URL, never polls Telegram
//! itself.)
//!
//! Leaving Active waits for the child's acknowledgement as long as the child is busy with
//! what it was served, within the stop budget ([`acknowledgement`]). After every start of
//! the child, the chat's command menu is re-asserted (`serving::menu`).
//!
//! Must never: poll Telegram outside Active, decide a role, or log the token.

pub mod acknowledgement;
mod menu;

pub use acknowledgement::{
    ACK_WAIT_BUSY_MAX, ACK_WAIT_MAX, AckWaitEnd, CHILD_GRACE, CHILD_GRACE_MIN, StopSignals,
    child_grace_after,
};
pub use menu::CHECKS_AFTER_START;

use std::collections::VecDeque;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::adapters::child::{ChildSpec, ChildState, ChildSupervisor};
use crate::adapters::child_env::{self, MirrorContext, Note};
use crate::adapters::clock::{SLEEP_THRESHOLD, SleepDetector};
use crate::adapters::gateway::{Acknowledged, Gateway, GatewayConfig, PushOutcome};
use crate::adapters::telegram::{
    BotSettings, OutgoingMessage, PollProgress, PollerConfig, PollerEvent, PollerHandle, Replier,
    ReplierSettings, StartPosition, TelegramBot, spawn_poller,
};
use crate::adapters::telegram_commands::{ActivateTarget, BatonCommand, escape_html};
use crate::adapters::telegram_config::TelegramConfig;
use crate::core::Event;

/// Updates buffered for the child at most (see `adapters::gateway` for the overflow policy).
pub const GATEWAY_CAPACITY: usize = 10_000;
/// On shutdown, how long queued replies (the last "handing over", a command's answer)
/// may take to go out. The replier sends about one message a second per chat.
pub const REPLY_FLUSH_MAX: Duration = Duration::from_secs(3);

/// What serving tells the runtime.
#[derive(Debug)]
pub enum ServingEvent {
    /// An input for the core (a 409, a foreign chat).
    Core(Event),
    /// A baton command from the configured chat; the runtime answers it.
    Command {
        chat_id: i64,
        thread_id: Option<i64>,
        command: BatonCommand,
    },
}

/// The child to run, and when.
#[derive(Debug, Clone)]
pub struct ChildPlan {
    pub spec: ChildSpec,
    /// Run only while Active (started on taking the role, stopped on leaving it); baton
    /// polls and serves it through the gateway as in the default mode.
    pub only_when_active: bool,
    /// What the child's environment is built from (see `adapters::child_env`).
    pub mirror: MirrorContext,
}

/// Telegram side of a run.
pub struct TelegramPlan {
    pub config: TelegramConfig,
    pub poll_timeout: Duration,
    pub poller: PollerConfig,
    /// Sent as `X-Baton-Device` to a custom API URL only (tests attribute requests).
    pub device_tag: Option<String>,
}

struct TelegramSide {
    bot: TelegramBot,
    replier: Replier,
    /// The replier's sending task: awaited (bounded) on shutdown so queued replies go out.
    replier_task: JoinHandle<()>,
    config: TelegramConfig,
    poller_config: PollerConfig,
    gateway: Gateway,
    acknowledged: watch::Receiver<Acknowledged>,
    poller: Option<PollerHandle>,
    poller_tx: mpsc::Sender<PollerEvent>,
    poller_rx: mpsc::Receiver<PollerEvent>,
    /// The start position of the current term, kept to restart after a pause.
    start: StartPosition,
    paused_until: Option<tokio::time::Instant>,
    reported_progress: PollProgress,
    /// Baton's own commands and foreign-chat reports that a stopped poller left in the
    /// channel. Its ledger counted them handled (they may already be confirmed to
    /// Telegram, so no other device will see them): they are answered even though this
    /// device no longer serves.
    leftover: VecDeque<PollerEvent>,
}

/// The supervised child.
struct ChildSide {
    supervisor: ChildSupervisor,
    only_when_active: bool,
    state: watch::Receiver<ChildState>,
    /// Its grace for the next stop: [`CHILD_GRACE`], less what an acknowledgement wait
    /// took beyond [`ACK_WAIT_MAX`].
    grace: Duration,
}

pub struct Serving {
    telegram: Option<TelegramSide>,
    child: Option<ChildSide>,
    acting: bool,
    device_id: String,
    /// The stop signals ([`Serving::watch_stop_signals`]).
    signals: StopSignals,
    stop_signal_at: watch::Receiver<Option<tokio::time::Instant>>,
    stop_signal_at_tx: Option<watch::Sender<Option<tokio::time::Instant>>>,
    /// Ends the command-menu keeper.
    menu_keeper: CancellationToken,
}

#[derive(Debug, thiserror::Error)]
pub enum ServingError {
    #[error("cannot reach Telegram: {0}")]
    Telegram(#[from] crate::adapters::telegram::TelegramError),
    #[error(transparent)]
    Gateway(#[from] crate::adapters::gateway::GatewayError),
}

impl Serving {
    /// Sets up serving: the gateway and replier when Telegram is configured, and the child
    /// (started now unless it runs only while Active).
    pub async fn new(
        device_id: String,
        telegram: Option<TelegramPlan>,
        child: Option<ChildPlan>,
    ) -> Result<Self, ServingError> {
        let telegram = match telegram {
            Some(plan) => Some(TelegramSide::new(plan).await?),
            None => None,
        };
        let menu_keeper = CancellationToken::new();
        let child = child.map(|plan| {
            let only_when_active = plan.only_when_active;
            let supervisor = ChildSupervisor::spawn(child_spec(plan, &device_id, &telegram), None);
            let state = supervisor.state();
            if let Some(side) = &telegram {
                let keeper = menu::keep_menu(
                    side.bot.clone(),
                    side.config.chat_id,
                    state.clone(),
                    menu_keeper.clone(),
                );
                tokio::spawn(tracing::Instrument::in_current_span(keeper));
            }
            ChildSide {
                supervisor,
                only_when_active,
                state,
                grace: CHILD_GRACE,
            }
        });
        if let Some(child) = child.as_ref().filter(|c| !c.only_when_active) {
            child.supervisor.start().await;
        }
        if telegram.is_some() && child.is_none() {
            tracing::warn!(
                "Telegram is configured but no command was given after `--`: updates other than baton's commands wait, unconfirmed, for a consumer"
            );
        }
        Ok(Serving {
            telegram,
            child,
            acting: false,
            device_id,
            signals: StopSignals::default(),
            stop_signal_at: watch::channel(None).1,
            stop_signal_at_tx: None,
            menu_keeper,
        })
    }

    /// Watches for SIGTERM and SIGINT alongside the runtime (call once, from `baton run`):
    /// a stop signal ends a handoff's acknowledgement wait at once, makes the wait of
    /// the shutdown's own stop share the child's grace, and dates the stop budget from
    /// the signal's arrival ([`Serving::stop_signal_at`]) even while a stop is blocking
    /// the run loop.
    pub fn watch_stop_signals(&mut self) {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut terminate), Ok(mut interrupt)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::warn!("cannot watch stop signals for serving; waits keep their own bounds");
            return;
        };
        let signals = StopSignals::default();
        let (at_tx, at_rx) = watch::channel(None);
        let at_tx_runtime = at_tx.clone();
        let fire = signals.clone();
        tokio::spawn(async move {
            for seen in 1..=2 {
                tokio::select! {
                    _ = terminate.recv() => {}
                    _ = interrupt.recv() => {}
                }
                note(&fire, &at_tx, seen == 2);
            }
        });
        self.signals = signals;
        self.stop_signal_at = at_rx;
        self.stop_signal_at_tx = Some(at_tx_runtime);
    }

    /// The runtime's word that it is handling a stop signal (`forced`: the second), so
    /// the stop it asks for next knows, whichever of the two listeners ran first.
    pub fn note_stop_signal(&self, forced: bool) {
        if let Some(at_tx) = &self.stop_signal_at_tx {
            note(&self.signals, at_tx, forced);
        }
    }

    /// When the first stop signal arrived, if one did (see [`Serving::watch_stop_signals`]).
    pub fn stop_signal_at(&self) -> Option<tokio::time::Instant> {
        *self.stop_signal_at.borrow()
    }

    /// Hands the poller the core's lease deadline: it starts no getUpdates past it.
    pub fn bind_lease(&mut self, lease: watch::Receiver<Option<crate::core::Moment>>) {
        if let Some(side) = self.telegram.as_mut() {
            side.poller_config.lease = Some(lease);
        }
    }

    /// Coordination only: acting is a log line.
    pub fn coordination_only() -> Self {
        Serving {
            telegram: None,
            child: None,
            acting: false,
            device_id: String::new(),
            signals: StopSignals::default(),
            stop_signal_at: watch::channel(None).1,
            stop_signal_at_tx: None,
            menu_keeper: CancellationToken::new(),
        }
    }

    pub fn has_telegram(&self) -> bool {
        self.telegram.is_some()
    }

    /// True when the child runs only while Active (`--child-when-active`): leaving the
    /// role then waits for the child's stop.
    pub fn child_stops_with_role(&self) -> bool {
        self.child.as_ref().is_some_and(|c| c.only_when_active)
    }

    /// The next event for the runtime. Forwards are pushed to the gateway here.
    pub async fn next_event(&mut self) -> Option<ServingEvent> {
        // Leftovers are only added by a stop, which cannot happen while this waits.
        if let Some(event) = self.take_leftover() {
            return Some(event);
        }
        let side = self.telegram.as_mut()?;
        loop {
            let resume = side.paused_until;
            let event = tokio::select! {
                event = side.poller_rx.recv() => event?,
                _ = sleep_until_opt(resume) => {
                    side.paused_until = None;
                    side.spawn_poller();
                    continue;
                }
            };
            if let Some(event) = side.on_poller_event(event) {
                return Some(event);
            }
        }
    }

    /// The offset progress to put in the record, when it changed.
    pub fn progress_changed(&mut self) -> Option<PollProgress> {
        let side = self.telegram.as_mut()?;
        let progress = side.poller.as_ref()?.progress();
        (progress != side.reported_progress).then(|| {
            side.reported_progress = progress.clone();
            progress
        })
    }

    /// Starts serving for `term` from `start`; `known_foreign_chats` were reported before.
    /// Never waits for Telegram: the poller does its set-up in its own task.
    pub async fn start(&mut self, term: u64, start: StartPosition, known_foreign_chats: Vec<i64>) {
        self.acting = true;
        tracing::info!(
            term,
            skip_through = start.skip_through,
            "ACTIVE: this device serves the bot"
        );
        if let Some(child) = self.child.as_ref().filter(|c| c.only_when_active) {
            child.supervisor.start().await;
        }
        if let Some(side) = self.telegram.as_mut() {
            side.start = start;
            side.paused_until = None;
            side.poller_config.known_foreign_chats = known_foreign_chats;
            // The poller removes the webhook and sets the command menu itself, before its
            // first getUpdates, cancellably: awaiting that here would stall the run loop
            // (heartbeats, signals, higher claims) for as long as Telegram does not answer.
            side.spawn_poller();
            let text = format!(
                "✅ <b>{}</b> is now ACTIVE (term {term})",
                escape_html(&self.device_id)
            );
            side.send(side.config.chat_id, side.config.thread_id, text);
        }
    }

    /// Stops serving at once; returns the progress to record (what was handled, including
    /// what the child acknowledged while we waited for it, see [`acknowledgement`]). With
    /// `--child-when-active`, the child is stopped after that wait.
    pub async fn stop(&mut self, reason: &str) -> Option<PollProgress> {
        if self.acting {
            tracing::info!(reason, "no longer serving the bot");
        }
        self.acting = false;
        let shutting_down = self.signals.first.is_cancelled();
        let progress = match self.telegram.as_mut() {
            Some(side) => {
                side.paused_until = None;
                let child = self.child.as_ref().map(|c| c.state.clone());
                let stopped = side.stop_poller(child, self.signals.clone()).await;
                stopped.map(|(progress, waited)| {
                    // The wait and the child's next stop share one budget when that stop
                    // comes now (--child-when-active) or at this shutdown's exit.
                    if let Some(child) = self.child.as_mut()
                        && (child.only_when_active || shutting_down)
                    {
                        child.grace = child.grace.min(child_grace_after(waited));
                    }
                    progress
                })
            }
            None => None,
        };
        if let Some(child) = self.child.as_mut().filter(|c| c.only_when_active) {
            child.supervisor.stop(child.grace).await;
            child.grace = CHILD_GRACE;
        }
        progress
    }

    /// Pauses polling (after a 409) and resumes by itself.
    pub async fn pause(&mut self, duration: Duration) {
        if let Some(side) = self.telegram.as_mut() {
            if let Some(poller) = side.poller.take() {
                let (_, mut ledger) = poller.stop().await;
                side.drain_stopped_poller();
                let acknowledged = *side.acknowledged.borrow();
                ledger.acknowledged(acknowledged.generation, acknowledged.through);
                side.start = ledger.resume_position();
            }
            side.paused_until = Some(tokio::time::Instant::now() + duration);
            tracing::info!(?duration, "polling paused after a conflict");
        }
    }

    /// Sends an HTML message to the configured chat (or the given one).
    pub fn say(&self, chat_id: Option<i64>, thread_id: Option<i64>, html: String) {
        if let Some(side) = &self.telegram {
            let chat = chat_id.unwrap_or(side.config.chat_id);
            let thread = if chat_id.is_some() {
                thread_id
            } else {
                side.config.thread_id
            };
            side.send(chat, thread, html);
        }
    }

    /// The next command or foreign-chat report a stopped poller left behind
    /// (`next_event` yields them first; the runtime drains them before it exits).
    pub fn take_leftover(&mut self) -> Option<ServingEvent> {
        let side = self.telegram.as_mut()?;
        while let Some(event) = side.leftover.pop_front() {
            if let Some(event) = side.on_poller_event(event) {
                return Some(event);
            }
        }
        None
    }

    /// Stops everything; queued replies get [`REPLY_FLUSH_MAX`] to go out.
    pub async fn shutdown(&mut self) {
        self.stop("shutting down").await;
        self.menu_keeper.cancel();
        if let Some(child) = self.child.take() {
            child.supervisor.shutdown(child.grace).await;
        }
        if let Some(side) = self.telegram.take() {
            side.gateway.shutdown();
            // Dropping the side drops the last `Replier`: the task sends what is queued,
            // then ends.
            let task = side.replier_task;
            let waiting = side.leftover.len();
            drop(side.replier);
            if waiting > 0 {
                tracing::warn!(waiting, "exiting with unanswered commands");
            }
            if tokio::time::timeout(REPLY_FLUSH_MAX, task).await.is_err() {
                tracing::warn!(
                    ?REPLY_FLUSH_MAX,
                    "replies still queued at exit were not sent"
                );
            }
        }
    }
}

/// Records a stop signal: the first one's arrival (the earliest seen) and token, or the
/// second's.
fn note(signals: &StopSignals, at: &watch::Sender<Option<tokio::time::Instant>>, forced: bool) {
    if forced {
        signals.second.cancel();
        return;
    }
    at.send_if_modified(|at| {
        let first = at.is_none();
        if first {
            *at = Some(tokio::time::Instant::now());
        }
        first
    });
    signals.first.cancel();
}

/// The child's spec with the environment baton gives it and the secrets to scrub from
/// its output; logs which variables baton set and which the user's setting kept.
fn child_spec(plan: ChildPlan, device_id: &str, telegram: &Option<TelegramSide>) -> ChildSpec {
    let mut spec = plan.spec;
    let startup_timestamp_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    let side = telegram.as_ref().map(|side| child_env::TelegramSide {
        config: &side.config,
        updates_url: side.gateway.updates_url(),
    });
    let env = child_env::child_env(&plan.mirror, side, device_id, startup_timestamp_s);
    log_child_env(&env);
    let sets_db = env
        .vars
        .iter()
        .any(|(name, _)| name == child_env::ENV_DB_PATH);
    if let Some(folder) = plan.mirror.db_path.parent().filter(|_| sets_db)
        && let Err(error) = std::fs::create_dir_all(folder)
    {
        tracing::warn!(folder = %folder.display(), %error, "cannot create the folder for the mirror's database");
    }
    if let Some(side) = telegram {
        let send_url = side
            .config
            .api_url
            .as_ref()
            .map(|url| child_env::send_url(url, &side.config.bot_token));
        spec.secrets = child_env::child_secrets(
            &side.config.bot_token,
            send_url.as_ref(),
            &side.gateway.secrets(),
        );
    }
    spec.extra_env.extend(env.vars);
    spec
}

fn log_child_env(env: &child_env::ChildEnv) {
    let set: Vec<&str> = env.vars.iter().map(|(name, _)| name.as_str()).collect();
    tracing::info!(set = ?set, "the child's environment: baton sets these variables");
    for note in &env.notes {
        match note {
            Note::Set { .. } => {}
            Note::Kept { name, origin } => {
                tracing::info!(name, %origin, "the child's environment: the user's own setting is kept")
            }
            Note::Differs {
                name,
                theirs,
                served,
            } => tracing::warn!(
                name,
                %theirs,
                %served,
                "the child's environment sets {name}={theirs}, but baton serves {served}: the gateway will refuse the child (403) until they agree"
            ),
            Note::Replaced { name } => tracing::info!(
                name,
                "the child's environment: baton's gateway replaces the user's {name}"
            ),
        }
    }
}

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

impl TelegramSide {
    async fn new(plan: TelegramPlan) -> Result<Self, ServingError> {
        let settings = BotSettings {
            poll_timeout: plan.poll_timeout,
            api_url: plan.config.api_url.clone(),
            device_tag: plan.device_tag,
        };
        let bot = TelegramBot::new(&plan.config.bot_token, &settings)?;
        let (replier, replier_task) = Replier::spawn(bot.clone(), ReplierSettings::default());
        let gateway = Gateway::start(GatewayConfig {
            chat_id: plan.config.chat_id,
            thread_id: plan.config.thread_id,
            capacity: GATEWAY_CAPACITY,
        })
        .await?;
        let acknowledged = gateway.acknowledged();
        let (poller_tx, poller_rx) = mpsc::channel(256);
        Ok(TelegramSide {
            bot,
            replier,
            replier_task,
            config: plan.config,
            poller_config: plan.poller,
            gateway,
            acknowledged,
            poller: None,
            poller_tx,
            poller_rx,
            start: StartPosition::default(),
            paused_until: None,
            reported_progress: PollProgress::default(),
            leftover: VecDeque::new(),
        })
    }

    fn spawn_poller(&mut self) {
        if self.poller.is_some() {
            return;
        }
        let mut config = self.poller_config.clone();
        config.sleep_guard = Some(SleepDetector::new(SLEEP_THRESHOLD));
        self.poller = Some(spawn_poller(
            self.bot.clone(),
            config,
            self.start.clone(),
            self.acknowledged.clone(),
            self.poller_tx.clone(),
        ));
    }

    /// Stops the poller, withdraws what the child was not served, waits for its
    /// acknowledgement of the rest; returns the progress and how long the wait took.
    async fn stop_poller(
        &mut self,
        child: Option<watch::Receiver<ChildState>>,
        signals: StopSignals,
    ) -> Option<(PollProgress, Duration)> {
        let poller = self.poller.take()?;
        let (_, mut ledger) = poller.stop().await;
        self.drain_stopped_poller();
        let served = self.gateway.withdraw_unserved();
        let context = acknowledgement::AckWaitContext {
            gateway: &self.gateway,
            acknowledged: self.acknowledged.clone(),
            child,
            signals,
        };
        let (end, waited) = acknowledgement::wait_for_acknowledgement(context).await;
        let acknowledged = *self.acknowledged.borrow();
        match end {
            AckWaitEnd::Acknowledged => {}
            end => tracing::warn!(
                ?end,
                ?waited,
                served,
                outstanding = acknowledged.outstanding,
                "the child did not acknowledge everything it was served before this device stopped serving; the next active device delivers the rest again"
            ),
        }
        ledger.acknowledged(acknowledged.generation, acknowledged.through);
        let progress = ledger.progress();
        self.reported_progress = progress.clone();
        Some((progress, waited))
    }

    /// Events a stopped poller left behind. Commands and foreign chats were counted
    /// handled, so they are kept and answered. A restart of Telegram's ids is applied to
    /// the gateway (the ledger already counted it). Forwards stay unconfirmed until the
    /// child acknowledges them, which it now never will from here: the next poller, or
    /// the next active device, delivers them. The rest (a 409, a sleep, a refusal
    /// already handed to the core) belong to the old poller.
    fn drain_stopped_poller(&mut self) {
        while let Ok(event) = self.poller_rx.try_recv() {
            match event {
                PollerEvent::Command { .. } | PollerEvent::ForeignChat { .. } => {
                    self.leftover.push_back(event);
                }
                PollerEvent::SequenceRestarted { .. } => {
                    self.on_poller_event(event);
                }
                _ => {}
            }
        }
    }

    fn on_poller_event(&mut self, event: PollerEvent) -> Option<ServingEvent> {
        match event {
            PollerEvent::Started { bot_username } => {
                tracing::info!(bot = %bot_username, "polling Telegram");
                None
            }
            PollerEvent::Forward { update_id, payload } => {
                match self.gateway.push(update_id, payload) {
                    PushOutcome::Buffered | PushOutcome::Duplicate => {}
                    PushOutcome::BufferedDroppingOldest => {
                        tracing::debug!(update_id, "gateway full: dropped its oldest update")
                    }
                    PushOutcome::Rejected => {
                        tracing::debug!(update_id, "not for the configured chat")
                    }
                }
                None
            }
            PollerEvent::Command {
                chat_id,
                thread_id,
                command,
                ..
            } => Some(ServingEvent::Command {
                chat_id,
                thread_id,
                command,
            }),
            PollerEvent::Conflict { description } => {
                Some(ServingEvent::Core(Event::Conflict { description }))
            }
            PollerEvent::ForeignChat { chat_id } => {
                let text = format!(
                    "⚠ the bot got a message from chat <code>{chat_id}</code>, which is not this chat; it was not forwarded"
                );
                self.send(self.config.chat_id, self.config.thread_id, text);
                Some(ServingEvent::Core(Event::ForeignChat { chat_id }))
            }
            PollerEvent::Slept { slept } => {
                tracing::warn!(
                    ?slept,
                    "the poller noticed a sleep and stopped; re-validating"
                );
                // The run loop's own detector turns this wake-up into the core's Woke.
                Some(ServingEvent::Core(Event::Tick))
            }
            PollerEvent::SequenceRestarted {
                first_id,
                offset_sent,
            } => {
                tracing::warn!(
                    first_id,
                    offset_sent,
                    "Telegram started its update ids over; the gateway follows the new sequence"
                );
                self.gateway.restart_sequence();
                None
            }
            PollerEvent::Refused { description } => {
                // The poll task has ended; its handle stays, so that stopping it (the core
                // asks) still returns the ledger's progress.
                let text = format!(
                    "⚠ Telegram refused this device's bot token ({}): it cannot read the \
                     chat, so it hands the bot to another device. Check its token.",
                    escape_html(&description)
                );
                self.send(self.config.chat_id, self.config.thread_id, text);
                Some(ServingEvent::Core(Event::PollingRefused { description }))
            }
        }
    }

    fn send(&self, chat_id: i64, thread_id: Option<i64>, html: String) {
        let _ = self.replier.send(OutgoingMessage {
            chat_id,
            thread_id,
            html,
        });
    }
}

/// `/activate`'s argument as the core's target text.
pub fn target_text(target: &Option<ActivateTarget>) -> String {
    match target {
        Some(ActivateTarget::Number(number)) => number.to_string(),
        Some(ActivateTarget::Device(name)) => name.clone(),
        None => String::new(),
    }
}
