//! Routing in the poller (issue 11): an update of the configured chat that this device
//! does not own goes into its mailbox, addressed to the owner, before it is confirmed.
//!
//! Owns: the poller's routing handle ([`PollRouter`]: the route table the runtime
//! publishes and the [`Outbox`]), posting one update as mail, and what the chat must be
//! told about it ([`RoutingNotice`], once per episode: a topic nobody serves, an owner
//! offline, mail that could not be queued). The owner itself is the core's rule
//! (`routing::RouteTable::route`). Must never: confirm an update before its mail is on
//! disk, or lose one silently.

use std::collections::HashSet;

use serde_json::Value;
use tokio::sync::watch;

use crate::adapters::mailbox::Outbox;
use crate::core::mailbox::Mail;
use crate::core::routing::{Route, RouteTable};

/// What the poller needs to route: the table (from the runtime) and our mailbox.
#[derive(Debug, Clone)]
pub struct PollRouter {
    pub table: watch::Receiver<RouteTable>,
    pub outbox: Outbox,
}

/// Something the chat must hear about a routed update, in its topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoutingNotice {
    /// No device serves this topic (said once per episode); the message is kept a day.
    Unserved {
        chat_id: i64,
        thread_id: Option<i64>,
    },
    /// The owner is offline (said once per offline episode); its mail waits.
    OwnerOffline {
        chat_id: i64,
        thread_id: Option<i64>,
        device_id: String,
    },
    /// The mail could not be queued (mailbox full, folder unwritable): not delivered.
    NotQueued {
        chat_id: i64,
        thread_id: Option<i64>,
        device_id: Option<String>,
        reason: String,
    },
}

/// What was said already, per episode.
#[derive(Debug, Default)]
pub struct Told {
    unserved: HashSet<(i64, Option<i64>)>,
    offline: HashSet<String>,
}

/// Bound on each "told" set (topics and devices are few; a flood of topics is not).
const TOLD_MAX: usize = 1_000;

impl Told {
    /// Ends the episodes this route shows are over.
    pub fn observe(&mut self, chat_id: i64, thread_id: Option<i64>, route: &Route) {
        if *route != Route::Unserved {
            self.unserved.remove(&(chat_id, thread_id));
        }
        if let Route::Other {
            device_id,
            live: true,
        } = route
        {
            self.offline.remove(device_id);
        }
    }

    fn first_unserved(&mut self, chat_id: i64, thread_id: Option<i64>) -> bool {
        self.unserved.len() < TOLD_MAX && self.unserved.insert((chat_id, thread_id))
    }

    fn first_offline(&mut self, device_id: &str) -> bool {
        self.offline.len() < TOLD_MAX && self.offline.insert(device_id.to_owned())
    }
}

/// Posts one update as mail for `route` (`Other` or `Unserved`); returns what the chat
/// must be told, if anything. The update may be confirmed once this returns: it is in
/// the mailbox on disk, or the chat is told it could not be.
pub async fn post(
    router: &PollRouter,
    told: &mut Told,
    route: &Route,
    update_id: i64,
    chat_id: i64,
    thread_id: Option<i64>,
    payload: Value,
) -> Option<RoutingNotice> {
    let (to, live) = match route {
        Route::Other { device_id, live } => (Some(device_id.clone()), *live),
        _ => (None, false),
    };
    let mail = Mail {
        seq: 0,
        update_id,
        chat_id,
        thread_id,
        to: to.clone(),
        queued_at_ms: crate::adapters::clock::wall_ms(),
        payload,
    };
    match router.outbox.post(mail).await {
        Ok(seq) => {
            tracing::debug!(update_id, seq, to = ?to, "routed to the mailbox");
        }
        Err(error) => {
            tracing::warn!(update_id, to = ?to, %error, "could not queue an update for its device");
            return Some(RoutingNotice::NotQueued {
                chat_id,
                thread_id,
                device_id: to,
                reason: error.to_string(),
            });
        }
    }
    match to {
        None if told.first_unserved(chat_id, thread_id) => {
            Some(RoutingNotice::Unserved { chat_id, thread_id })
        }
        Some(device_id) if !live && told.first_offline(&device_id) => {
            Some(RoutingNotice::OwnerOffline {
                chat_id,
                thread_id,
                device_id,
            })
        }
        _ => None,
    }
}
