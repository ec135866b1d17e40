//! The reading side of routing (issue 11): mail addressed to this device, served to its
//! child through the gateway, and the acknowledgements its record carries once the child
//! has fetched it.
//!
//! Owns: the [`MailReader`] (which mail was handed to the gateway under which tag, the
//! core's [`AckTracker`]), dating waiting mail up to the child's `STARTUP_TIMESTAMP` (the
//! mirror drops what is dated before its start), and the methods of [`Serving`] that
//! the runtime calls: [`Serving::bind_router`], [`Serving::deliver_mail`],
//! [`Serving::mail_acks`]. Must never: acknowledge mail the child has not fetched, serve
//! mail outside this device's chat/topic, or read a file (the runtime reads the folder).

use crate::adapters::gateway::PushOutcome;
use crate::adapters::mailbox::ReadMailbox;
use crate::adapters::telegram::PollRouter;
use crate::adapters::update_route::UpdateRoute;
use std::collections::BTreeSet;

use crate::core::mailbox::{AckTracker, Mail, Offer, Origin, date_at_least};
use crate::core::record::MailAck;
use crate::core::routing::{Route, RouteTable};

use super::Serving;
use super::mail_reader::IN_FLIGHT_MAX;

impl Serving {
    /// Hands the poller its routing (the route table and our mailbox), and starts the
    /// reader from the acknowledgements our record held at start (a restart delivers
    /// nothing twice that was acknowledged).
    pub fn bind_router(&mut self, router: PollRouter, recorded_acks: &[MailAck]) {
        if let Some(side) = self.telegram.as_mut() {
            side.poller_config.router = Some(router);
        }
        self.mail.tracker = AckTracker::from_acks(recorded_acks);
        self.mail.last_acks = recorded_acks.to_vec();
    }

    /// The configured chat, when Telegram is configured.
    pub fn chat_id(&self) -> Option<i64> {
        self.telegram.as_ref().map(|side| side.config.chat_id)
    }

    /// Serves the mail addressed to this device (or unaddressed, for a topic it owns)
    /// through the gateway, oldest first; returns how many were handed over.
    pub fn deliver_mail(&mut self, mailboxes: &[ReadMailbox], table: &RouteTable) -> usize {
        let Some(side) = self.telegram.as_ref() else {
            return 0;
        };
        let (chat, thread) = (side.config.chat_id, side.config.thread_id);
        let mut waiting: Vec<(i64, &str, &str, &Mail)> = Vec::new();
        // Mail another writer took over (its writer was gone): the adopted copy is the
        // one to serve, wherever it is addressed now.
        let adopted: BTreeSet<&Origin> = mailboxes
            .iter()
            .filter_map(|read| read.mailbox.as_ref().ok())
            .flat_map(|mailbox| mailbox.adopted.iter())
            .collect();
        for read in mailboxes {
            let Ok(mailbox) = &read.mailbox else {
                continue;
            };
            let mine = mailbox.deliverable(&table.me, &[], |chat_id, thread_id| {
                table.route(chat_id, thread_id) == Route::Mine
            });
            for mail in mine {
                if adopted.contains(&mailbox.origin_of(mail)) {
                    continue;
                }
                if !UpdateRoute::of(&mail.payload).is_in(chat, thread) {
                    // Addressed to this device when it served another topic: it waits.
                    continue;
                }
                let date = message_date(&mail.payload);
                waiting.push((date, &mailbox.writer, &mailbox.epoch, mail));
            }
        }
        // Oldest first; one writer's mail in its order.
        waiting.sort_by(|a, b| (a.0, a.1, a.3.seq).cmp(&(b.0, b.1, b.3.seq)));
        let mut handed = 0;
        for (_, writer, epoch, mail) in waiting {
            if self.mail.in_flight.len() >= IN_FLIGHT_MAX {
                break;
            }
            match self.mail.tracker.offer(writer, epoch, mail) {
                Offer::Known => continue,
                Offer::Duplicate => {
                    tracing::info!(
                        update_id = mail.update_id,
                        writer,
                        "mail of an update already delivered: skipped"
                    );
                    continue;
                }
                Offer::Deliver => {}
            }
            let tag = self.mail.next_tag;
            self.mail.next_tag += 1;
            let mut payload = mail.payload.clone();
            date_at_least(&mut payload, self.mail.startup_s);
            let Some(side) = self.telegram.as_ref() else {
                break;
            };
            match side.gateway.push_routed(tag, mail.update_id, payload) {
                PushOutcome::Buffered => {
                    self.mail
                        .in_flight
                        .insert(tag, (writer.to_owned(), epoch.to_owned(), mail.seq));
                    handed += 1;
                }
                outcome => {
                    tracing::warn!(
                        update_id = mail.update_id,
                        ?outcome,
                        "mail not served to the child; it waits for the next start"
                    );
                }
            }
        }
        if handed > 0 {
            tracing::info!(handed, "mail from the synced folder served to the child");
        }
        handed
    }

    /// With `--child-when-active`, a standby that has mail for its topic runs its child
    /// all the same: the messages of a project whose device is not the poller must not
    /// wait for an `/activate` (issue 11: three projects on two Macs, all served). Call
    /// after [`Serving::deliver_mail`]; starts the child when mail is waiting for it.
    pub async fn run_child_for_mail(&mut self, handed: usize) {
        if self.acting || (handed == 0 && self.mail.in_flight.is_empty()) {
            return;
        }
        let Some(child) = self.child.as_ref().filter(|c| c.only_when_active) else {
            return;
        };
        self.mail.last_mail_at = Some(tokio::time::Instant::now());
        if !self.mail.child_for_mail {
            tracing::info!(
                "mail for this topic: the child starts to serve it (it stops again when no mail came for a while)"
            );
            child.supervisor.start().await;
            self.mail.child_for_mail = true;
        }
    }

    /// Stops a child started for mail ([`Serving::run_child_for_mail`]) once all of it
    /// was fetched and no mail came for `linger` (long enough for the mirror to relay
    /// the answers to what it fetched). Nothing while active: the role owns the child.
    pub async fn stop_idle_mail_child(&mut self, linger: std::time::Duration) {
        if !self.mail.child_for_mail || self.acting || !self.mail.in_flight.is_empty() {
            return;
        }
        if self
            .mail
            .last_mail_at
            .is_some_and(|at| at.elapsed() < linger)
        {
            return;
        }
        if let Some(child) = self.child.as_ref().filter(|c| c.only_when_active) {
            tracing::info!("no mail for a while: the child started for mail stops");
            child.supervisor.stop(child.grace).await;
        }
        self.mail.child_for_mail = false;
    }

    /// Mail handed to the gateway and not fetched yet.
    pub fn mail_in_flight(&self) -> usize {
        self.mail.in_flight.len()
    }

    /// The acknowledgements to record, when the child fetched more mail since the last
    /// call.
    pub fn mail_acks(&mut self) -> Option<Vec<MailAck>> {
        let side = self.telegram.as_ref()?;
        for tag in side.gateway.take_routed_fetched() {
            if let Some((writer, epoch, seq)) = self.mail.in_flight.remove(&tag) {
                self.mail.tracker.fetched(&writer, &epoch, seq);
            }
        }
        let acks = self.mail.tracker.acks();
        (acks != self.mail.last_acks).then(|| {
            self.mail.last_acks = acks.clone();
            acks
        })
    }
}

/// A message's date (a callback's: its message's), 0 when it has none.
fn message_date(payload: &serde_json::Value) -> i64 {
    [
        "/message/date",
        "/edited_message/date",
        "/callback_query/message/date",
    ]
    .iter()
    .find_map(|pointer| payload.pointer(pointer).and_then(serde_json::Value::as_i64))
    .unwrap_or(0)
}
