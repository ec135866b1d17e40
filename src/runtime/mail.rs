//! Routing as the run loop sees it (issue 11): the route table published to the poller
//! after every input, the mail folder watched and read, our mailbox pruned, and the
//! child's mail acknowledgements folded into our record.
//!
//! Owns: [`MailSide`] (the mail folder, our outbox, the table's sender, the last counts
//! of waiting mail for `/devices`) and the `Runtime` methods that drive it. Must never:
//! read the folder on the event loop (reads run on a blocking thread with a timeout),
//! write a mailbox but ours, or decide an owner (the core's `routing` does).

use std::collections::BTreeMap;
use std::path::Path;

use tokio::sync::{mpsc, watch};

use crate::adapters::clock;
use crate::adapters::mailbox::{MailFolder, Outbox};
use crate::adapters::telegram::PollRouter;
use crate::adapters::watcher::{self, FolderWatch, WatchMode, WatchSignal};
use crate::core::election;
use crate::core::record::{DeviceRecord, MailAck};
use crate::core::routing::{RouteTable, RoutingNote};
use crate::core::{Event, Role};
use crate::serving::Serving;

use super::{READ_TIMEOUT, Runtime};

pub(super) struct MailSide {
    folder: MailFolder,
    outbox: Outbox,
    table_tx: watch::Sender<RouteTable>,
    chat_id: i64,
    /// Kept alive: the watch on the mail folder.
    _watch: Option<FolderWatch>,
    /// Mail waiting per addressee, at the last look (all mailboxes).
    pub(super) queued: BTreeMap<String, usize>,
}

/// Sets routing up when Telegram is configured: the mail folder, our outbox (continuing
/// a previous run's), its watch, and the poller's router. `recorded` is our record as a
/// previous run left it (its mail acknowledgements carry over). Returns the notes the
/// core must hear first.
pub(super) fn set_up(
    serving: &mut Serving,
    sync_dir: &Path,
    group: &str,
    device_id: &str,
    recorded: Option<DeviceRecord>,
    mode: WatchMode,
) -> (Option<MailSide>, Option<mpsc::Receiver<WatchSignal>>, Vec<Event>) {
    let Some(chat_id) = serving.chat_id() else {
        return (None, None, Vec::new());
    };
    let folder = MailFolder::new(sync_dir, group, device_id);
    if let Err(error) = folder.ensure_dir() {
        tracing::warn!(%error, dir = %folder.dir().display(), "cannot make the mail folder; routing to other devices waits for it");
    }
    let outbox = Outbox::open(folder.clone(), device_id);
    let (mail_tx, mail_rx) = mpsc::channel(watcher::SIGNALS_MAX);
    let watch = match watcher::watch(folder.dir(), mode, mail_tx) {
        Ok(watch) => Some(watch),
        Err(error) => {
            tracing::warn!(%error, "cannot watch the mail folder; the backstop scan still reads it");
            None
        }
    };
    let (table_tx, table_rx) = watch::channel(RouteTable::default());
    let acks: Vec<MailAck> = recorded.map(|r| r.mail_acked).unwrap_or_default();
    serving.bind_router(
        PollRouter {
            table: table_rx,
            outbox: outbox.clone(),
        },
        &acks,
    );
    let mut notes = vec![Event::Routing {
        note: RoutingNote::Serves { chat_id },
    }];
    if !acks.is_empty() {
        notes.push(Event::Routing {
            note: RoutingNote::MailAcked { acks },
        });
    }
    let side = MailSide {
        folder,
        outbox,
        table_tx,
        chat_id,
        _watch: watch,
        queued: BTreeMap::new(),
    };
    (Some(side), Some(mail_rx), notes)
}

impl Runtime {
    /// Publishes the route table from the core's view (after every input).
    pub(super) fn publish_routes(&self) {
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
        mail.table_tx.send_replace(table);
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
            Ok(Ok(Ok(mailboxes))) => mailboxes,
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
        self.serving.deliver_mail(&mailboxes, &table);
        let mut queued = BTreeMap::new();
        for mailbox in mailboxes.iter().filter_map(|m| m.mailbox.as_ref().ok()) {
            for entry in &mailbox.entries {
                let to = entry.to.clone().unwrap_or_default();
                *queued.entry(to).or_insert(0) += 1;
            }
        }
        let records: Vec<DeviceRecord> = self.all_records().cloned().collect();
        let outbox = mail.outbox.clone();
        outbox.prune(records, clock::wall_ms()).await;
        if let Some(mail) = self.mail.as_mut() {
            mail.queued = queued;
        }
        self.collect_mail_acks().await;
    }

    /// Folds what the child fetched into our record's acknowledgements.
    pub(super) async fn collect_mail_acks(&mut self) {
        if let Some(acks) = self.serving.mail_acks() {
            self.feed(Event::Routing {
                note: RoutingNote::MailAcked { acks },
            })
            .await;
        }
    }

    /// `/activate N` typed in a topic: N owns the topic among those serving it.
    pub(super) async fn note_topic_choice(
        &mut self,
        chat_id: i64,
        thread_id: Option<i64>,
        typed: &str,
    ) {
        if self.mail.is_none() {
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
