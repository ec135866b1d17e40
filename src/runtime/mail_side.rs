//! What the run loop keeps for routing (issue 11) and how it is set up: the mail
//! folder, our outbox, the route table's sender, the mail folder's watch, the last
//! counts of waiting mail (for `/devices`). The behaviour is `runtime::mail`'s. Must
//! never: decide an owner, or write a mailbox but ours.

use std::collections::BTreeMap;
use std::path::Path;

use tokio::sync::{mpsc, watch};

use crate::adapters::mailbox::{MailFolder, Outbox};
use crate::adapters::telegram::{PollRouter, SameHostNudge};
use crate::adapters::watcher::{self, FolderWatch, WatchMode, WatchSignal};
use crate::core::Event;
use crate::core::record::{DeviceRecord, MailAck};
use crate::core::routing::{RouteTable, RoutingNote};
use crate::serving::Serving;

pub(super) struct MailSide {
    pub(super) folder: MailFolder,
    pub(super) outbox: Outbox,
    pub(super) table_tx: watch::Sender<RouteTable>,
    pub(super) chat_id: i64,
    /// Kept alive: the watch on the mail folder.
    _watch: Option<FolderWatch>,
    /// Mail waiting per addressee, at the last look (all mailboxes).
    pub(super) queued: BTreeMap<String, usize>,
    /// Each device's liveness (and the active one) in the last published table.
    pub(super) liveness: Vec<(String, bool)>,
    /// The mail must be looked at again: liveness changed (mail may have to move).
    pub(super) recheck: bool,
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
    nudge: SameHostNudge,
) -> (
    Option<MailSide>,
    Option<mpsc::Receiver<WatchSignal>>,
    Vec<Event>,
) {
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
            nudge: Some(nudge),
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
        liveness: Vec::new(),
        recheck: false,
    };
    (Some(side), Some(mail_rx), notes)
}
