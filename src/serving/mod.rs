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
//!
//! Layout: [`plan`] (what serving is given and reports), `telegram_side` (poller,
//! gateway, replier), `child_side` (the child), [`acknowledgement`] (the wait on leaving
//! Active), `menu` (the chat's command menu after each start of the child); this module
//! is [`Serving`], which starts and stops them.

use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::adapters::child::ChildSupervisor;
use crate::adapters::telegram::{PollProgress, StartPosition};
use crate::adapters::telegram_commands::escape_html;

mod child_side;
mod mail_reader;
pub mod plan;
mod routing;
mod telegram_side;

pub use acknowledgement::{
    ACK_WAIT_BUSY_MAX, ACK_WAIT_MAX, AckWaitEnd, CHILD_GRACE, CHILD_GRACE_MIN, StopSignals,
    child_grace_after,
};
pub use menu::CHECKS_AFTER_START;
pub use plan::{
    ChildPlan, GATEWAY_CAPACITY, REPLY_FLUSH_MAX, ServingError, ServingEvent, TelegramPlan,
};
pub use telegram_side::target_text;

use child_side::{ChildSide, child_spec, note};
use telegram_side::TelegramSide;

pub mod acknowledgement;

mod menu;

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
    /// Mail from the synced folder for this device's child (issue 11, `routing`).
    mail: mail_reader::MailReader,
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
        // After the child's environment pinned its STARTUP_TIMESTAMP: never below it.
        let startup_s = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs() as i64);
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
            mail: mail_reader::MailReader::new(startup_s),
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

    /// The machine announced a sleep (`Some`: the next stop's acknowledgement wait ends
    /// by then) or woke (`None`). See `runtime::power`.
    pub fn note_sleep_announced(&mut self, ack_wait_until: Option<tokio::time::Instant>) {
        self.signals.sleep_cap = ack_wait_until;
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
            mail: mail_reader::MailReader::default(),
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
    /// The bot client, for a standby's questions to Telegram (`runtime/witness.rs`);
    /// `None` without Telegram (coordination only).
    pub fn witness_bot(&self) -> Option<crate::adapters::telegram::TelegramBot> {
        self.telegram.as_ref().map(|side| side.bot.clone())
    }

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
        // The role owns the child now (it may already run for mail: `routing`).
        self.mail.child_for_mail = false;
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

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
