//! The Telegram side of serving: the poller, the gateway the child reads, the replier.
//!
//! Owns: starting the poller from the core's start position (only while Active and not
//! paused), routing its events (updates to the gateway, baton's commands and 409s to the
//! runtime), folding the child's acknowledgements into the offset progress, keeping
//! what a stopped poller left, and the "✅ … is now ACTIVE" announcement. Must never:
//! poll outside Active, or confirm what the child has not acknowledged.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::adapters::child::ChildState;
use crate::adapters::clock::{SLEEP_THRESHOLD, SleepDetector};
use crate::adapters::gateway::{Acknowledged, Gateway, GatewayConfig, PushOutcome};
use crate::adapters::telegram::{
    BotSettings, OutgoingMessage, PollProgress, PollerConfig, PollerEvent, PollerHandle, Replier,
    ReplierSettings, StartPosition, TelegramBot, spawn_poller,
};
use crate::adapters::telegram_commands::{ActivateTarget, escape_html};
use crate::adapters::telegram_config::TelegramConfig;
use crate::core::Event;

use super::acknowledgement::{self, AckWaitEnd, StopSignals};
use super::plan::{GATEWAY_CAPACITY, ServingError, ServingEvent, TelegramPlan};

pub(crate) struct TelegramSide {
    pub(super) bot: TelegramBot,
    pub(super) replier: Replier,
    /// The replier's sending task: awaited (bounded) on shutdown so queued replies go out.
    pub(super) replier_task: JoinHandle<()>,
    pub(super) config: TelegramConfig,
    pub(super) poller_config: PollerConfig,
    pub(super) gateway: Gateway,
    pub(super) acknowledged: watch::Receiver<Acknowledged>,
    pub(super) poller: Option<PollerHandle>,
    pub(super) poller_tx: mpsc::Sender<PollerEvent>,
    pub(super) poller_rx: mpsc::Receiver<PollerEvent>,
    /// The start position of the current term, kept to restart after a pause.
    pub(super) start: StartPosition,
    pub(super) paused_until: Option<tokio::time::Instant>,
    pub(super) reported_progress: PollProgress,
    /// Baton's own commands and foreign-chat reports that a stopped poller left in the
    /// channel. Its ledger counted them handled (they may already be confirmed to
    /// Telegram, so no other device will see them): they are answered even though this
    /// device no longer serves.
    pub(super) leftover: VecDeque<PollerEvent>,
}

impl TelegramSide {
    pub(super) async fn new(plan: TelegramPlan) -> Result<Self, ServingError> {
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

    pub(super) fn spawn_poller(&mut self) {
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
    pub(super) async fn stop_poller(
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
    pub(super) fn drain_stopped_poller(&mut self) {
        while let Ok(event) = self.poller_rx.try_recv() {
            match event {
                PollerEvent::Command { .. } | PollerEvent::ForeignChat { .. } => {
                    self.leftover.push_back(event);
                }
                PollerEvent::SequenceRestarted { .. } | PollerEvent::Notice(_) => {
                    self.on_poller_event(event);
                }
                _ => {}
            }
        }
    }

    pub(super) fn on_poller_event(&mut self, event: PollerEvent) -> Option<ServingEvent> {
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
            PollerEvent::Notice(notice) => {
                let (chat_id, thread_id, text) = crate::telegram_text::routing_notice(&notice);
                self.send(chat_id, thread_id, text);
                None
            }
            PollerEvent::Unreachable { kind } => Some(ServingEvent::Core(Event::PollFailed {
                reason: kind.to_string(),
            })),
            PollerEvent::Reached => Some(ServingEvent::Core(Event::PollSucceeded)),
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

    pub(super) fn send(&self, chat_id: i64, thread_id: Option<i64>, html: String) {
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
