//! The owned long-poll loop of the active device.
//!
//! Owns: starting (webhook removed, menu set) and stopping at once on a
//! `CancellationToken`; driving the offset ledger, which confirms an update only once
//! baton handled it or the child acknowledged it through the gateway, and notices when
//! Telegram starts its ids over ([`PollerEvent::SequenceRestarted`]); the lease (no
//! `getUpdates` past it, the long poll clamped to it); routing each update (baton's
//! commands, the child's updates, foreign chats); back-off after errors and 409s.
//! Must never: poll outside Active, confirm an update the child has not acknowledged,
//! decide a role (it reports [`PollerEvent`]s), or stall on a malformed update.

use std::collections::HashSet;
use std::time::Duration;

use rand::{Rng as _, SeedableRng as _};
use rand_chacha::ChaCha8Rng;
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::adapters::gateway::Acknowledged;
use crate::adapters::telegram_commands::{BatonCommand, parse_command};
use crate::adapters::update_route::{UpdateRoute, message_text};
use crate::core::offsets::{Admission, OffsetLedger, PollProgress, StartPosition};

use super::client::TelegramBot;
use super::error::TelegramError;
use super::routing::{PollRouter, RoutingNotice, Told};
use crate::core::routing::Route;

// Foreign chats reported per poller run at most: as many as a record keeps.
use crate::core::record::FOREIGN_CHATS_MAX;

/// A long poll ends this long before the lease does, so its answer arrives inside it.
const LEASE_ANSWER_MARGIN: Duration = Duration::from_secs(1);

/// What the poller reports to the runtime. Order is Telegram's order.
#[derive(Debug)]
pub enum PollerEvent {
    /// Polling began (webhook removed, commands set).
    Started { bot_username: String },
    /// An update of the configured chat/topic for the child: push it to the gateway.
    Forward { update_id: i64, payload: Value },
    /// A baton command in the configured chat/topic; reply to `chat_id`/`thread_id`.
    Command {
        update_id: i64,
        chat_id: i64,
        thread_id: Option<i64>,
        command: BatonCommand,
    },
    /// Telegram answered 409 "terminated by other getUpdates request": another poller.
    /// Conflict evidence for the core. (A 409 because of a webhook is not: the poller
    /// removes the webhook itself.)
    Conflict { description: String },
    /// An update from a chat that is not the configured one (reported once per chat).
    ForeignChat { chat_id: i64 },
    /// The machine slept; polling has stopped until the runtime restarts it.
    Slept { slept: Duration },
    /// Telegram's update ids started over (after a week without updates it picks the
    /// next one at random, usually far below): `first_id` came back although the request
    /// asked for `offset_sent`. Sent before that update's own event. The gateway must
    /// start a new acknowledgement generation (`Gateway::restart_sequence`): the child's
    /// `since` from the old sequence acknowledges nothing of the new one.
    SequenceRestarted { first_id: i64, offset_sent: i64 },
    /// Telegram refused the bot token (401 Unauthorized or 404 Not Found): the poller has
    /// stopped, and the core must hand the role on (`Event::PollingRefused`).
    Refused { description: String },
    /// Routing (issue 11) has something to tell the chat, in the update's topic.
    Notice(RoutingNotice),
    /// A request to Telegram failed for another reason than a refused token, a 409 or
    /// flood control (network, timeout, 5xx): evidence for the core's cut-off rule
    /// (`Event::PollFailed`). `kind` names the failure, never the URL (it holds the token).
    Unreachable { kind: &'static str },
    /// A getUpdates succeeded after [`PollerEvent::Unreachable`]s (once per recovery).
    Reached,
}

/// Timing of the poll loop. Production values in [`PollerConfig::new`].
#[derive(Debug, Clone)]
pub struct PollerConfig {
    pub chat_id: i64,
    pub thread_id: Option<i64>,
    /// Least back-off after a 409; the wait is drawn from [min, 2·min). At least 3 s in
    /// production (FACTS); tests shorten it.
    pub conflict_backoff_min: Duration,
    /// Back-off after other errors doubles from 1 s up to this.
    pub error_backoff_max: Duration,
    /// When Telegram only re-sends updates awaiting the child's acknowledgement, wait this
    /// long (or until an acknowledgement) before asking again.
    pub resend_pause: Duration,
    /// Seeds the back-off jitter (derive it from the run's seed).
    pub jitter_seed: u64,
    /// When set, the loop checks before every getUpdates whether the machine slept; if
    /// it did, it stops polling and reports [`PollerEvent::Slept`], so a device that
    /// woke past its lease never polls before the core has re-validated its claim.
    pub sleep_guard: Option<crate::adapters::clock::SleepDetector>,
    /// Foreign chats already reported (by any device, from the records): not again.
    pub known_foreign_chats: Vec<i64>,
    /// The device's lease deadline on the sleep-counting clock (from the core, through
    /// the runtime): no getUpdates starts once it has passed, a long poll is clamped to
    /// what remains, and an answer that arrives after it is not delivered. `None`:
    /// no lease is enforced (tests of the poll loop alone).
    pub lease: Option<watch::Receiver<Option<crate::core::Moment>>>,
    /// Routing (issue 11): updates this device does not own go to their owner's mail.
    /// `None`: only the configured topic is forwarded, the rest confirmed and dropped.
    pub router: Option<PollRouter>,
}

impl PollerConfig {
    pub fn new(chat_id: i64, thread_id: Option<i64>, jitter_seed: u64) -> Self {
        PollerConfig {
            chat_id,
            thread_id,
            conflict_backoff_min: crate::core::timers::CONFLICT_BACKOFF.base,
            error_backoff_max: Duration::from_secs(30),
            resend_pause: Duration::from_secs(1),
            jitter_seed,
            sleep_guard: None,
            known_foreign_chats: Vec::new(),
            lease: None,
            router: None,
        }
    }
}

/// Why the poll loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollerExit {
    Cancelled,
    Fatal,
}

/// A running poller. Stop it when leaving Active.
pub struct PollerHandle {
    cancel: CancellationToken,
    progress: watch::Receiver<PollProgress>,
    task: JoinHandle<(PollerExit, OffsetLedger)>,
}

impl PollerHandle {
    /// The latest progress (for the device record while Active).
    pub fn progress(&self) -> PollProgress {
        self.progress.borrow().clone()
    }

    /// Cancels at once (an in-flight getUpdates is abandoned, confirming nothing) and
    /// returns the ledger, so the runtime can apply the child's last acknowledgements.
    pub async fn stop(self) -> (PollerExit, OffsetLedger) {
        self.cancel.cancel();
        match self.task.await {
            Ok(result) => result,
            Err(error) => panic!("BUG: the poll task panicked: {error}"),
        }
    }
}

/// Starts polling. Call on entering Active (not in `--child-when-active` mode).
///
/// `acknowledged` is [`Gateway::acknowledged`](crate::adapters::gateway::Gateway::acknowledged); `events` goes to the
/// runtime, which must push every `Forward` to the gateway in order.
pub fn spawn_poller(
    bot: TelegramBot,
    config: PollerConfig,
    start: StartPosition,
    acknowledged: watch::Receiver<Acknowledged>,
    events: mpsc::Sender<PollerEvent>,
) -> PollerHandle {
    let cancel = CancellationToken::new();
    let ledger = OffsetLedger::new(&start, acknowledged.borrow().generation);
    let foreign_reported = config.known_foreign_chats.iter().copied().collect();
    let (progress_tx, progress) = watch::channel(ledger.progress());
    let poll_loop = PollLoop {
        rng: ChaCha8Rng::seed_from_u64(config.jitter_seed),
        bot,
        config,
        events,
        acknowledged,
        cancel: cancel.clone(),
        progress_tx,
        ledger,
        foreign_reported,
        bot_username: String::new(),
        told: Told::default(),
        failing: false,
    };
    let task = tokio::spawn(tracing::Instrument::in_current_span(poll_loop.run()));
    PollerHandle {
        cancel,
        progress,
        task,
    }
}

struct PollLoop {
    bot: TelegramBot,
    config: PollerConfig,
    events: mpsc::Sender<PollerEvent>,
    acknowledged: watch::Receiver<Acknowledged>,
    cancel: CancellationToken,
    progress_tx: watch::Sender<PollProgress>,
    ledger: OffsetLedger,
    rng: ChaCha8Rng,
    foreign_reported: HashSet<i64>,
    bot_username: String,
    /// Routing notices said, per episode.
    told: Told,
    /// A request failed since the last getUpdates that succeeded (`Unreachable` sent).
    failing: bool,
}

/// `Err` ends the loop with that exit.
type Step = Result<(), PollerExit>;

impl PollLoop {
    async fn run(mut self) -> (PollerExit, OffsetLedger) {
        let exit = match self.poll_forever().await {
            Ok(()) => PollerExit::Cancelled,
            Err(exit) => exit,
        };
        (exit, self.ledger)
    }

    async fn poll_forever(&mut self) -> Step {
        self.prepare().await?;
        let mut failures = 0u32;
        loop {
            let acknowledged = *self.acknowledged.borrow_and_update();
            self.ledger
                .acknowledged(acknowledged.generation, acknowledged.through);
            self.progress_tx.send_replace(self.ledger.progress());
            if let Some(slept) = self.config.sleep_guard.as_mut().and_then(|g| g.check()) {
                self.emit(PollerEvent::Slept { slept }).await?;
                self.cancel.cancelled().await;
                return Err(PollerExit::Cancelled);
            }
            let offset = self.ledger.offset();
            // The answer must be back before the lease ends: a second's margin for it.
            let within = self
                .within_lease()
                .await?
                .saturating_sub(LEASE_ANSWER_MARGIN);
            let request = self.bot.get_updates_within(offset, within);
            let result = tokio::select! {
                biased;
                () = self.cancel.cancelled() => return Err(PollerExit::Cancelled),
                result = request => result,
            };
            match result {
                Ok(batch) if self.lease_remaining().is_none() => {
                    // Answered after the lease ran out (a stalled process resumed):
                    // unconfirmed, these go to whoever acts next, not to our child.
                    tracing::warn!(
                        updates = batch.len(),
                        "a getUpdates answer came after this device's lease ran out: not delivered here"
                    );
                }
                Ok(batch) => {
                    failures = 0;
                    if std::mem::take(&mut self.failing) {
                        self.emit(PollerEvent::Reached).await?;
                    }
                    if !self.absorb(batch, offset).await? {
                        self.wait_for_acknowledgement().await?;
                    }
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    self.on_error(error, failures).await?;
                }
            }
        }
    }

    /// What remains of the lease (`Some(MAX)` when none is enforced; `None` once over).
    fn lease_remaining(&self) -> Option<Duration> {
        let Some(lease) = &self.config.lease else {
            return Some(Duration::MAX);
        };
        let deadline = (*lease.borrow())?;
        let now = crate::adapters::clock::now();
        (now < deadline).then(|| deadline.since(now))
    }

    /// Waits, cancellably, until the lease allows a getUpdates; returns what remains of
    /// it (a long poll is clamped to it). Past the lease, the core steps down and
    /// re-reads the folder; a renewed lease comes only from a record write on disk.
    async fn within_lease(&mut self) -> Result<Duration, PollerExit> {
        let mut said = false;
        loop {
            if let Some(remaining) = self.lease_remaining() {
                return Ok(remaining);
            }
            if !std::mem::replace(&mut said, true) {
                tracing::info!(
                    "this device's lease has run out: no getUpdates until it is renewed"
                );
            }
            let Some(lease) = self.config.lease.as_mut() else {
                unreachable!("no lease is never over")
            };
            tokio::select! {
                biased;
                () = self.cancel.cancelled() => return Err(PollerExit::Cancelled),
                changed = lease.changed() => {
                    if changed.is_err() {
                        self.cancel.cancelled().await;
                        return Err(PollerExit::Cancelled);
                    }
                }
            }
        }
    }

    /// getMe, deleteWebhook and setMyCommands, retried with back-off until they succeed.
    /// Runs inside the poll task and ends at once when the poller is stopped; no getUpdates
    /// is sent before it succeeded.
    async fn prepare(&mut self) -> Step {
        let mut failures = 0u32;
        loop {
            let attempt = async {
                let username = self.bot.username().await?;
                self.bot.prepare_polling(self.config.chat_id).await?;
                Ok::<_, TelegramError>(username)
            };
            let result = tokio::select! {
                biased;
                () = self.cancel.cancelled() => return Err(PollerExit::Cancelled),
                result = attempt => result,
            };
            match result {
                Ok(username) => {
                    self.bot_username = username.clone();
                    return self
                        .emit(PollerEvent::Started {
                            bot_username: username,
                        })
                        .await;
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    self.on_error(error, failures).await?;
                }
            }
        }
    }

    /// Reports the new updates of a batch asked with `offset`; true when there was at
    /// least one.
    async fn absorb(&mut self, batch: Vec<Value>, offset: Option<i64>) -> Result<bool, PollerExit> {
        let mut fresh = false;
        self.ledger.begin_batch(offset);
        for payload in batch {
            let route = UpdateRoute::of(&payload);
            let Some(update_id) = route.update_id else {
                // Without an id it cannot be confirmed alone; the next confirmed id covers it.
                tracing::warn!(kind = ?route.kind, "ignoring an update without an update_id");
                continue;
            };
            match self.ledger.admit(update_id) {
                Admission::Known => continue,
                Admission::Unusable => {
                    tracing::warn!(update_id, kind = ?route.kind, "ignoring an update whose id cannot be a Telegram update id");
                    continue;
                }
                Admission::Restarted { offset_sent } => {
                    tracing::warn!(
                        first_id = update_id,
                        offset_sent,
                        "Telegram started its update ids over (it does after a week without updates): following the new sequence"
                    );
                    let restarted = PollerEvent::SequenceRestarted {
                        first_id: update_id,
                        offset_sent,
                    };
                    self.emit(restarted).await?;
                }
                Admission::New => {}
            }
            fresh = true;
            self.dispatch(update_id, &route, payload).await?;
        }
        Ok(fresh)
    }

    /// Decides what one new update is, reports it and records how it will be confirmed.
    async fn dispatch(&mut self, update_id: i64, route: &UpdateRoute, payload: Value) -> Step {
        let Some(chat_id) = route.chat_id else {
            tracing::debug!(update_id, kind = ?route.kind, "update without a chat: not forwarded");
            self.ledger.handled(update_id);
            return Ok(());
        };
        if chat_id != self.config.chat_id {
            tracing::info!(
                update_id,
                chat_id,
                "update from a foreign chat: not forwarded"
            );
            let report = self.foreign_reported.len() < FOREIGN_CHATS_MAX
                && self.foreign_reported.insert(chat_id);
            if report {
                self.emit(PollerEvent::ForeignChat { chat_id }).await?;
            }
            self.ledger.handled(update_id);
            return Ok(());
        }
        let owner = self.owner(chat_id, route.thread_id);
        // With routing, baton's commands are answered in any topic; without, only in ours.
        let obeyed = self.config.router.is_some() || owner.is_some();
        let command = message_text(&payload)
            .filter(|_| obeyed)
            .and_then(|text| parse_command(text, &self.bot_username));
        if let Some(command) = command {
            let shared = command.also_for_mirror();
            let event = PollerEvent::Command {
                update_id,
                chat_id,
                thread_id: route.thread_id,
                command,
            };
            self.emit(event).await?;
            if !shared {
                self.ledger.handled(update_id);
                return Ok(());
            }
            // Answered by baton AND the mirror that owns the topic.
        }
        match owner {
            None => {
                tracing::debug!(update_id, thread_id = ?route.thread_id, "update in another topic: not forwarded");
                self.ledger.handled(update_id);
            }
            Some(Route::Mine) => {
                // Confirmed once the child has it.
                self.emit(PollerEvent::Forward { update_id, payload })
                    .await?;
                self.ledger.forwarded(update_id);
            }
            Some(route_to) => {
                self.route_to_mail(route_to, update_id, chat_id, route.thread_id, payload)
                    .await?;
            }
        }
        Ok(())
    }

    /// Where an update of the configured chat goes: `None` drops it (no router, and not
    /// the configured topic).
    fn owner(&mut self, chat_id: i64, thread_id: Option<i64>) -> Option<Route> {
        let Some(router) = &self.config.router else {
            let mine = self.config.thread_id.is_none_or(|t| thread_id == Some(t));
            return mine.then_some(Route::Mine);
        };
        let route = router.table.borrow().route_polling(chat_id, thread_id);
        self.told.observe(chat_id, thread_id, &route);
        Some(route)
    }

    /// Posts an update for another owner (or none) to our mailbox, then counts it handled:
    /// it is on disk, or the chat is told it could not be.
    async fn route_to_mail(
        &mut self,
        route: Route,
        update_id: i64,
        chat_id: i64,
        thread_id: Option<i64>,
        payload: Value,
    ) -> Step {
        let Some(router) = self.config.router.clone() else {
            unreachable!("only a router routes to mail")
        };
        let posting = super::routing::post(
            &router,
            &mut self.told,
            &route,
            update_id,
            chat_id,
            thread_id,
            payload,
        );
        let notice = tokio::select! {
            biased;
            () = self.cancel.cancelled() => return Err(PollerExit::Cancelled),
            notice = posting => notice,
        };
        if let Some(notice) = notice {
            self.emit(PollerEvent::Notice(notice)).await?;
        }
        self.ledger.handled(update_id);
        Ok(())
    }

    /// Nothing new came back: Telegram is re-sending updates the child has not fetched yet.
    async fn wait_for_acknowledgement(&mut self) -> Step {
        let pause = tokio::time::sleep(self.config.resend_pause);
        let seen = *self.acknowledged.borrow_and_update();
        // Serving alone changes `outstanding`: only a new acknowledgement is news here.
        let news =
            |now: &Acknowledged| (now.generation, now.through) != (seen.generation, seen.through);
        let gateway_gone = tokio::select! {
            biased;
            () = self.cancel.cancelled() => return Err(PollerExit::Cancelled),
            changed = self.acknowledged.wait_for(news) => changed.is_err(),
            () = pause => false,
        };
        if gateway_gone {
            // No acknowledgement will come; do not spin.
            self.sleep(self.config.resend_pause).await?;
        }
        Ok(())
    }

    async fn on_error(&mut self, error: TelegramError, failures: u32) -> Step {
        match error {
            TelegramError::Conflict { description } => {
                tracing::warn!(%description, "getUpdates conflict: another poller");
                self.emit(PollerEvent::Conflict { description }).await?;
                let min = self.config.conflict_backoff_min;
                let wait = min + min.mul_f64(self.rng.random::<f64>());
                self.sleep(wait).await
            }
            TelegramError::WebhookActive { description } => {
                // No second poller is involved: this is no evidence for the core.
                let wait = self.error_backoff(failures);
                tracing::warn!(
                    %description,
                    ?wait,
                    "another program set a webhook on this bot; removing it (pending updates kept) and polling again"
                );
                let deleted = tokio::select! {
                    biased;
                    () = self.cancel.cancelled() => return Err(PollerExit::Cancelled),
                    deleted = self.bot.delete_webhook() => deleted,
                };
                if let Err(error) = deleted {
                    tracing::warn!(%error, "cannot remove the webhook; trying again");
                }
                self.sleep(wait).await
            }
            TelegramError::RetryAfter(wait) => {
                tracing::warn!(?wait, "Telegram flood control on getUpdates");
                self.sleep(wait).await
            }
            TelegramError::Unauthorized { description } => {
                tracing::error!(%description, "Telegram refused the bot token; polling stops");
                let _ = self.emit(PollerEvent::Refused { description }).await;
                Err(PollerExit::Fatal)
            }
            other => {
                let wait = self.error_backoff(failures);
                tracing::warn!(error = %other, ?wait, "Telegram request failed; retrying");
                self.failing = true;
                let kind = failure_kind(&other);
                self.emit(PollerEvent::Unreachable { kind }).await?;
                self.sleep(wait).await
            }
        }
    }

    /// Doubles from 1 s per consecutive failure up to `error_backoff_max`, with jitter.
    fn error_backoff(&mut self, failures: u32) -> Duration {
        let exponent = failures.saturating_sub(1).min(16);
        let base = Duration::from_secs(1).saturating_mul(1 << exponent);
        let base = base.min(self.config.error_backoff_max);
        base.mul_f64(0.5 + self.rng.random::<f64>() / 2.0)
    }

    async fn sleep(&self, wait: Duration) -> Step {
        tokio::select! {
            biased;
            () = self.cancel.cancelled() => Err(PollerExit::Cancelled),
            () = tokio::time::sleep(wait) => Ok(()),
        }
    }

    async fn emit(&self, event: PollerEvent) -> Step {
        tokio::select! {
            biased;
            () = self.cancel.cancelled() => Err(PollerExit::Cancelled),
            sent = self.events.send(event) => sent.map_err(|_| PollerExit::Cancelled),
        }
    }
}

/// What kind of failure `error` is, in words that carry nothing from the request (the
/// URL holds the token).
fn failure_kind(error: &TelegramError) -> &'static str {
    match error {
        TelegramError::Network { .. } => "network error",
        TelegramError::Server { .. } => "Telegram server error",
        TelegramError::Api { .. } => "Telegram API error",
        TelegramError::BadResponse { .. } => "unexpected response",
        TelegramError::Client(_) => "HTTP client error",
        TelegramError::Unauthorized { .. }
        | TelegramError::Conflict { .. }
        | TelegramError::WebhookActive { .. }
        | TelegramError::RetryAfter(_) => "other",
    }
}
