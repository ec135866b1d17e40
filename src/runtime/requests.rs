//! What others ask of the run loop: local control requests, Telegram commands and
//! serving's events, SIGHUP and stop signals.
//!
//! Owns: turning each into core inputs, routing activation answers back to whoever asked
//! (by ticket), telling the chat which peers cannot poll, re-reading the configuration
//! on SIGHUP, and the stop signal's deadline (a second signal forces the exit). Must
//! never: decide a role, or log the token.

use std::time::Duration;

use crate::adapters::control::{Command, Reply, Request};
use crate::adapters::telegram_commands::BatonCommand;
use crate::config::Reload;
use crate::core::{ActivationOutcome, Event};
use crate::exit::ExitCode;
use crate::serving::{ServingEvent, target_text};
use crate::telegram_text;

use super::{Asker, Runtime};

impl Runtime {
    /// On taking the role: tells the chat, once per peer and reason, which devices cannot
    /// poll because Telegram refused their token (they could not say so themselves).
    pub(super) fn say_why_peers_cannot_poll(&mut self) {
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

    pub(super) async fn on_command(&mut self, command: Command) {
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
            Request::MailWaiting => {
                tracing::debug!(parent: &self.span, "a router on this host says mail waits: reading the mail folder now");
                if let Some(mail) = self.mail.as_mut() {
                    mail.recheck = true;
                }
                let _ = command.reply.send(Reply::Noted);
            }
        }
    }

    pub(super) async fn answer(&mut self, ticket: u64, result: ActivationOutcome) {
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

    pub(super) async fn on_serving(&mut self, event: ServingEvent) {
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

    pub(super) async fn on_telegram_command(
        &mut self,
        chat_id: i64,
        thread_id: Option<i64>,
        command: BatonCommand,
    ) {
        let text = match command {
            BatonCommand::Devices => match &self.mail {
                Some(mail) => {
                    telegram_text::devices_routed(&self.core.device_table(), &mail.queued)
                }
                None => telegram_text::devices(&self.core.device_table()),
            },
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
                // Typed in a topic: the target also owns that topic (issue 11).
                self.note_topic_choice(chat_id, thread_id, &target).await;
                self.feed(Event::ActivateAsked { target, ticket }).await;
                return;
            }
        };
        self.serving.say(Some(chat_id), thread_id, text);
    }

    /// SIGHUP: re-read the configuration (say whether a restart is needed) and the folder.
    pub(super) async fn on_hangup(&mut self, reload: Option<&Reload>, loaded: Option<&str>) {
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

    pub(super) async fn on_stop_signal(
        &mut self,
        deadline: &mut Option<tokio::time::Instant>,
        resignation_deadline: Duration,
    ) {
        if deadline.is_some() {
            tracing::warn!(parent: &self.span, "second stop signal: exiting now");
            self.serving.note_stop_signal(true);
            self.serving.stop("forced exit").await;
            self.exit_code = Some(ExitCode::Forced.code());
            return;
        }
        tracing::info!(parent: &self.span, "stop signal: resigning");
        self.serving.note_stop_signal(false);
        // Dated from the signal's arrival: a stop that was blocking the loop when it came
        // (a handoff's wait for the child) is inside the budget, not added to it.
        let arrived = self.serving.stop_signal_at();
        *deadline = Some(arrived.unwrap_or_else(tokio::time::Instant::now) + resignation_deadline);
        // Issue 11: the last record must carry what the child fetched of its mail.
        self.settle_mail_acks().await;
        self.feed(Event::ShutdownAsked).await;
    }
}
