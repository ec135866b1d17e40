//! Serving: what "acting as the active device" means for this run.
//!
//! Owns: starting and stopping whatever serves the bot when the core says so — with no
//! Telegram configured, only a log line; with Telegram, the poller (only while Active and
//! not paused), the loopback gateway the child reads its updates from, the replier, and
//! the child (always running, or only while Active with `--child-when-active`). It hands
//! the runtime the poller's events and the offset progress for the device record. Must
//! never: poll Telegram outside Active, decide a role, or log the token.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::adapters::child::{ChildSpec, ChildSupervisor};
use crate::adapters::clock::{SLEEP_THRESHOLD, SleepDetector};
use crate::adapters::gateway::{Gateway, GatewayConfig, PushOutcome};
use crate::adapters::telegram::{
    BotSettings, OutgoingMessage, PollProgress, PollerConfig, PollerEvent, PollerHandle, Replier,
    ReplierSettings, StartPosition, TelegramBot, spawn_poller,
};
use crate::adapters::telegram_commands::{ActivateTarget, BatonCommand, escape_html};
use crate::adapters::telegram_config::TelegramConfig;
use crate::core::Event;

/// Updates buffered for the child at most (see `adapters::gateway` for the overflow policy).
pub const GATEWAY_CAPACITY: usize = 10_000;
/// On leaving Active, how long to wait for the child to acknowledge what it was served
/// (the mirror fetches about once a second). Past it, the unacknowledged updates are
/// left for the next active device: delivered twice rather than lost.
pub const ACK_WAIT_MAX: Duration = Duration::from_secs(5);
/// The child's grace between SIGTERM and SIGKILL.
pub const CHILD_GRACE: Duration = Duration::from_secs(10);
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
    /// Run only while Active (for programs that poll Telegram themselves); baton then
    /// does not poll.
    pub only_when_active: bool,
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
    acknowledged: watch::Receiver<i64>,
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

pub struct Serving {
    telegram: Option<TelegramSide>,
    child: Option<(ChildSupervisor, bool)>,
    acting: bool,
    device_id: String,
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
        let child = child.map(|plan| {
            let mut spec = plan.spec;
            spec.extra_env
                .push(("BATON_DEVICE_ID".into(), device_id.clone()));
            if let Some(side) = &telegram {
                let url = side.gateway.updates_url().expose().to_string();
                spec.extra_env.push(("TELEGRAM_UPDATES_URL".into(), url));
            }
            (ChildSupervisor::spawn(spec, None), plan.only_when_active)
        });
        if let Some((supervisor, false)) = &child {
            supervisor.start().await;
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
        })
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
        }
    }

    pub fn has_telegram(&self) -> bool {
        self.telegram.is_some()
    }

    /// True when the child runs only while Active (`--child-when-active`): leaving the
    /// role then waits for the child's stop.
    pub fn child_stops_with_role(&self) -> bool {
        matches!(self.child, Some((_, true)))
    }

    fn polls(&self) -> bool {
        self.telegram.is_some() && !matches!(self.child, Some((_, true)))
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
        if let Some((supervisor, true)) = &self.child {
            supervisor.start().await;
        }
        let polls = self.polls();
        if let Some(side) = self.telegram.as_mut() {
            side.start = start;
            side.paused_until = None;
            side.poller_config.known_foreign_chats = known_foreign_chats;
            if polls {
                // The poller removes the webhook and sets the command menu itself, before its
                // first getUpdates, cancellably: awaiting that here would stall the run loop
                // (heartbeats, signals, higher claims) for as long as Telegram does not answer.
                side.spawn_poller();
            }
            let text = format!(
                "✅ <b>{}</b> is now ACTIVE (term {term})",
                escape_html(&self.device_id)
            );
            side.send(side.config.chat_id, side.config.thread_id, text);
        }
    }

    /// Stops serving at once; returns the progress to record (what was handled, including
    /// what the child acknowledged while we waited a moment for it).
    pub async fn stop(&mut self, reason: &str) -> Option<PollProgress> {
        if self.acting {
            tracing::info!(reason, "no longer serving the bot");
        }
        self.acting = false;
        if let Some((supervisor, true)) = &self.child {
            supervisor.stop(CHILD_GRACE).await;
        }
        let side = self.telegram.as_mut()?;
        side.paused_until = None;
        side.stop_poller().await
    }

    /// Pauses polling (after a 409) and resumes by itself.
    pub async fn pause(&mut self, duration: Duration) {
        if let Some(side) = self.telegram.as_mut() {
            if let Some(poller) = side.poller.take() {
                let (_, ledger) = poller.stop().await;
                side.start = StartPosition {
                    skip_through: ledger.progress().handled_through,
                    also_handled: ledger.progress().handled_above,
                };
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
        if let Some((supervisor, _)) = self.child.take() {
            supervisor.shutdown(CHILD_GRACE).await;
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

    async fn stop_poller(&mut self) -> Option<PollProgress> {
        let poller = self.poller.take()?;
        let (_, mut ledger) = poller.stop().await;
        let served = self.gateway.withdraw_unserved();
        let mut acknowledged = self.acknowledged.clone();
        let wait = acknowledged.wait_for(|ack| *ack >= served);
        let _ = tokio::time::timeout(ACK_WAIT_MAX, wait).await;
        ledger.acknowledged(*self.acknowledged.borrow());
        // Events the stopped poller left behind. Commands and foreign chats were counted
        // handled, so they are kept and answered. Forwards stay unconfirmed until the
        // child acknowledges them, which it now never will from here: the next active
        // device delivers them. The rest (a 409, a sleep) belong to the old term.
        while let Ok(event) = self.poller_rx.try_recv() {
            if matches!(
                event,
                PollerEvent::Command { .. } | PollerEvent::ForeignChat { .. }
            ) {
                self.leftover.push_back(event);
            }
        }
        let progress = ledger.progress();
        self.reported_progress = progress.clone();
        Some(progress)
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
            PollerEvent::Fatal { error } => {
                tracing::error!(%error, "polling stopped for good; check the bot token and chat");
                self.poller = None;
                None
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
