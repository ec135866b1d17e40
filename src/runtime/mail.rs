//! Routing as the run loop sees it (issue 11): the route table published to the poller
//! after every input, the mail folder watched and read, our mailbox pruned, and the
//! child's mail acknowledgements folded into our record.
//!
//! Owns: the `Runtime` methods that drive routing (its state is `mail_side`'s
//! `MailSide`). Must never:
//! read the folder on the event loop (reads run on a blocking thread with a timeout),
//! write a mailbox but ours, or decide an owner (the core's `routing` does).

use std::collections::{BTreeMap, BTreeSet};

use crate::adapters::clock;
use crate::adapters::mailbox::{Upkeep, UpkeepDone};
use crate::core::election;
use crate::core::mailbox::Mailbox;
use crate::core::record::DeviceRecord;
use crate::core::routing::{Route, RouteTable, RoutingNote};
use crate::core::{Event, Role};

use super::{READ_TIMEOUT, Runtime};

/// The longest a clean stop waits for the child to fetch mail it was handed.
const MAIL_ACK_SETTLE_MAX: std::time::Duration = std::time::Duration::from_secs(1);

/// Who owns a topic now, for moving mail: this device (`polling`: as the poller sees
/// it, active whatever the table says), a live device, or nobody. An offline owner
/// leaves mail where it is (`None`): moving it between offline devices helps nobody.
fn current_owner(
    table: &RouteTable,
    polling: bool,
    chat_id: i64,
    thread_id: Option<i64>,
) -> Option<Option<String>> {
    let route = if polling {
        table.route_polling(chat_id, thread_id)
    } else {
        table.route(chat_id, thread_id)
    };
    match route {
        Route::Mine => Some(Some(table.me.clone())),
        Route::Other {
            device_id,
            live: true,
        } => Some(Some(device_id)),
        Route::Other { live: false, .. } => None,
        Route::Unserved => Some(None),
    }
}

/// Writers whose mailboxes are orphaned: their device is not live (stale, stopped, or
/// its record gone).
fn orphaned_writers(others: &[Mailbox], table: &RouteTable) -> BTreeSet<String> {
    others
        .iter()
        .filter(|mailbox| {
            !table
                .devices
                .iter()
                .any(|(record, live, _)| *live && record.device_id == mailbox.writer)
        })
        .map(|mailbox| mailbox.writer.clone())
        .collect()
}

impl Runtime {
    /// Publishes the route table from the core's view (after every input).
    pub(super) fn publish_routes(&mut self) {
        let Some(mail) = &self.mail else {
            return;
        };
        let now = clock::now();
        let timing = *self.core.timing();
        let active = if self.role == Role::Active {
            Some(self.core.own_record().device_id.clone())
        } else {
            election::leader(self.core.peers(), now, &timing).map(|p| p.record.device_id.clone())
        };
        let table = RouteTable::build(
            self.core.peers(),
            self.core.own_record(),
            now,
            &timing,
            mail.chat_id,
            active,
        );
        // Who is live and who is active decide where waiting mail belongs: when that
        // changes, look at the mail now, not at the next backstop scan.
        let liveness: Vec<(String, bool)> = table
            .devices
            .iter()
            .map(|(record, live, _)| (record.device_id.clone(), *live))
            .chain(table.active.iter().map(|active| (active.clone(), true)))
            .collect();
        mail.table_tx.send_replace(table);
        if let Some(mail) = self.mail.as_mut()
            && mail.liveness != liveness
        {
            mail.liveness = liveness;
            mail.recheck = true;
        }
    }

    /// True once after the routes changed in a way that may move waiting mail.
    pub(super) fn mail_recheck_due(&mut self) -> bool {
        self.mail
            .as_mut()
            .is_some_and(|mail| std::mem::take(&mut mail.recheck))
    }

    /// Reads every mailbox (woken by the mail folder's watch, or the backstop), serves
    /// what is ours, prunes our own mailbox, and records acknowledgements.
    pub(super) async fn check_mail(&mut self) {
        let Some(mail) = &self.mail else {
            return;
        };
        let folder = mail.folder.clone();
        let read = tokio::time::timeout(
            READ_TIMEOUT,
            tokio::task::spawn_blocking(move || folder.read_all()),
        )
        .await;
        let mailboxes = match read {
            Ok(Ok(Ok(listing))) => {
                for name in &listing.evicted {
                    if mail.folder.request_download(name) {
                        tracing::info!(parent: &self.span, mailbox = %name, "a mailbox was evicted by iCloud: asked for its download (mail in it may be ours)");
                    }
                }
                listing.mailboxes
            }
            Ok(Ok(Err(error))) => {
                tracing::debug!(parent: &self.span, %error, "cannot read the mail folder");
                return;
            }
            Ok(Err(error)) => {
                tracing::warn!(parent: &self.span, %error, "the mail reader task failed");
                return;
            }
            Err(_) => {
                tracing::debug!(parent: &self.span, "reading the mail folder timed out");
                return;
            }
        };
        let table = mail.table_tx.borrow().clone();
        let handed = self.serving.deliver_mail(&mailboxes, &table);
        self.serving.run_child_for_mail(handed).await;
        let mut queued = BTreeMap::new();
        for mailbox in mailboxes.iter().filter_map(|m| m.mailbox.as_ref().ok()) {
            for entry in &mailbox.entries {
                let to = entry.to.clone().unwrap_or_default();
                *queued.entry(to).or_insert(0) += 1;
            }
        }
        let records: Vec<DeviceRecord> = self.all_records().cloned().collect();
        let outbox = mail.outbox.clone();
        let own_name = mail.folder.own_name().to_owned();
        let others: Vec<Mailbox> = mailboxes
            .iter()
            .filter(|read| read.name != own_name)
            .filter_map(|read| read.mailbox.as_ref().ok().cloned())
            .collect();
        let orphaned = orphaned_writers(&others, &table);
        let live: BTreeSet<String> = table
            .devices
            .iter()
            .filter(|(_, live, _)| *live)
            .map(|(record, _, _)| record.device_id.clone())
            .collect();
        let polling = self.role == Role::Active;
        let owner = |chat_id: i64, thread_id: Option<i64>| {
            current_owner(&table, polling, chat_id, thread_id)
        };
        let done = outbox
            .maintain(Upkeep {
                records: &records,
                now_wall_ms: clock::wall_ms(),
                owner: &owner,
                live: &live,
                others: &others,
                orphaned: &orphaned,
                adopt: polling,
            })
            .await;
        if done != UpkeepDone::default() {
            tracing::debug!(parent: &self.span, ?done, "mailbox upkeep");
        }
        if let Some(mail) = self.mail.as_mut() {
            mail.queued = queued;
        }
        self.collect_mail_acks().await;
    }

    /// Folds what the child fetched into our record's acknowledgements (and stops a
    /// child that ran for mail once it has been idle long enough).
    pub(super) async fn collect_mail_acks(&mut self) {
        // One standby lease length (15 min at full scale, scaled like every other time):
        // long enough for the mirror to relay the answers to what it fetched.
        let linger = self.core.timing().liveness_standby;
        self.serving.stop_idle_mail_child(linger).await;
        if let Some(acks) = self.serving.mail_acks() {
            self.feed(Event::Routing {
                note: RoutingNote::MailAcked { acks },
            })
            .await;
        }
    }

    /// Before the last record write of a clean stop: gives the child a moment (at most
    /// [`MAIL_ACK_SETTLE_MAX`]) to fetch the mail it was handed, and records what it
    /// fetched, so a restart serves none of it again.
    pub(super) async fn settle_mail_acks(&mut self) {
        if self.mail.is_none() {
            return;
        }
        let until = tokio::time::Instant::now() + MAIL_ACK_SETTLE_MAX;
        loop {
            self.collect_mail_acks().await;
            if self.serving.mail_in_flight() == 0 || tokio::time::Instant::now() >= until {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// `/activate N` typed in a topic: N owns the topic among those serving it.
    pub(super) async fn note_topic_choice(
        &mut self,
        chat_id: i64,
        thread_id: Option<i64>,
        typed: &str,
    ) {
        // Outside a topic (General, a plain group) the active device owns what the
        // whole-chat devices serve: `/activate` there moves the poller only.
        if self.mail.is_none() || thread_id.is_none() {
            return;
        }
        let rows = self.core.device_table();
        if let Ok(device_id) = election::resolve_target(&rows, typed) {
            self.feed(Event::Routing {
                note: RoutingNote::TopicChosen {
                    chat_id,
                    thread_id,
                    device_id,
                },
            })
            .await;
        }
    }
}
