//! Routing in the poller (issue 11): an update of the configured chat that this device
//! does not own goes into its mailbox, addressed to the owner, before it is confirmed.
//!
//! Owns: the poller's routing handle ([`PollRouter`]: the route table the runtime
//! publishes and the [`Outbox`]), posting one update as mail, and what the chat must be
//! told about it ([`RoutingNotice`], once per episode: a topic nobody serves, an owner
//! offline, mail that could not be queued). The owner itself is the core's rule
//! (`routing::RouteTable::route`). Must never: confirm an update before its mail is on
//! disk, or lose one silently.

use std::collections::{HashMap, HashSet};

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
    /// How to reach owners on this host at once, if we can.
    pub nudge: Option<SameHostNudge>,
}

/// The same-host fast path: an owner on this machine (its record names our host name)
/// is told over its local control socket that mail waits, so it reads the folder at once
/// instead of when its watcher coalesces the write. The folder stays the durable path:
/// a nudge that finds no socket (another state folder, a stopped owner) changes nothing.
#[derive(Debug, Clone)]
pub struct SameHostNudge {
    pub state_dir: std::path::PathBuf,
    pub group: String,
    pub hostname: String,
}

/// How long a nudge may wait for the owner's answer (it is not waited for by the poller).
const NUDGE_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(500);

impl SameHostNudge {
    /// Tells `owner` that mail waits, if its record says it runs on this host. Spawned:
    /// the poller never waits for it.
    fn send(&self, owner: &crate::core::record::DeviceRecord) {
        if owner.hostname != self.hostname {
            return;
        }
        let socket = crate::adapters::local::control_socket(
            &self.state_dir,
            &self.group,
            &crate::core::record::file_stem(&owner.device_id),
        );
        let device_id = owner.device_id.clone();
        tokio::spawn(async move {
            let request = crate::adapters::control::Request::MailWaiting;
            match crate::adapters::control::ask(&socket, &request, NUDGE_TIMEOUT).await {
                Ok(_) => tracing::debug!(to = %device_id, "same-host owner nudged: mail waits"),
                Err(error) => {
                    tracing::debug!(to = %device_id, %error, "same-host nudge not delivered; the folder's watcher will tell it")
                }
            }
        });
    }
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
///
/// An offline episode is one topic's owner staying offline without writing its record:
/// keyed by the topic, the device and the seq of its record, so it ends when the device
/// writes again (it came back, even if no message came meanwhile) or when the topic's
/// owner changes, and a device serving several topics (the whole chat) is announced in
/// each of them.
#[derive(Debug, Default)]
pub struct Told {
    unserved: HashSet<(i64, Option<i64>)>,
    offline: HashMap<(i64, Option<i64>), (String, u64)>,
}

/// Bound on each "told" set (topics and devices are few; a flood of topics is not).
const TOLD_MAX: usize = 1_000;

impl Told {
    /// Ends the episodes this route shows are over.
    pub fn observe(&mut self, chat_id: i64, thread_id: Option<i64>, route: &Route) {
        if *route != Route::Unserved {
            self.unserved.remove(&(chat_id, thread_id));
        }
        let still_offline = matches!(
            (route, self.offline.get(&(chat_id, thread_id))),
            (Route::Other { device_id, live: false }, Some((told, _))) if told == device_id
        );
        if !still_offline {
            self.offline.remove(&(chat_id, thread_id));
        }
    }

    fn first_unserved(&mut self, chat_id: i64, thread_id: Option<i64>) -> bool {
        self.unserved.len() < TOLD_MAX && self.unserved.insert((chat_id, thread_id))
    }

    /// True when this topic has not been told yet that `device_id` (whose record is at
    /// `record_seq`) is offline.
    fn first_offline(
        &mut self,
        chat_id: i64,
        thread_id: Option<i64>,
        device_id: &str,
        record_seq: u64,
    ) -> bool {
        let episode = (device_id.to_owned(), record_seq);
        if self.offline.get(&(chat_id, thread_id)) == Some(&episode) {
            return false;
        }
        if self.offline.len() >= TOLD_MAX && !self.offline.contains_key(&(chat_id, thread_id)) {
            return false;
        }
        self.offline.insert((chat_id, thread_id), episode);
        true
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
    // Mail of this topic still addressed to an earlier owner follows this one's.
    let record_seq = to.as_deref().map_or(0, |id| {
        router
            .table
            .borrow()
            .devices
            .iter()
            .find(|(record, _, _)| record.device_id == id)
            .map_or(0, |(record, _, _)| record.seq)
    });
    let (records, live_devices): (Vec<_>, std::collections::BTreeSet<String>) = {
        let table = router.table.borrow();
        let records = table
            .devices
            .iter()
            .map(|(record, _, _)| record.clone())
            .collect();
        let live = table
            .devices
            .iter()
            .filter(|(_, live, _)| *live)
            .map(|(record, _, _)| record.device_id.clone())
            .collect();
        (records, live)
    };
    match router
        .outbox
        .post_for_topic(mail, &records, &live_devices)
        .await
    {
        Ok(seq) => {
            tracing::debug!(update_id, seq, to = ?to, "routed to the mailbox");
            if let (Some(nudge), Some(owner), true) = (&router.nudge, &to, live) {
                let table = router.table.borrow();
                if let Some((record, _, _)) =
                    table.devices.iter().find(|(r, _, _)| &r.device_id == owner)
                {
                    nudge.send(record);
                }
            }
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
        Some(device_id)
            if !live && told.first_offline(chat_id, thread_id, &device_id, record_seq) =>
        {
            Some(RoutingNotice::OwnerOffline {
                chat_id,
                thread_id,
                device_id,
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offline(id: &str) -> Route {
        Route::Other {
            device_id: id.into(),
            live: false,
        }
    }

    #[test]
    fn an_offline_episode_is_told_once_per_topic_and_ends_when_the_owner_writes_or_changes() {
        let mut told = Told::default();
        // Once per episode in a topic.
        told.observe(-1, Some(10), &offline("w"));
        assert!(told.first_offline(-1, Some(10), "w", 7));
        told.observe(-1, Some(10), &offline("w"));
        assert!(!told.first_offline(-1, Some(10), "w", 7));
        // A device serving the whole chat is announced in each topic it owns.
        told.observe(-1, Some(11), &offline("w"));
        assert!(told.first_offline(-1, Some(11), "w", 7));
        // It came back (wrote its record) and went offline again, no message between.
        told.observe(-1, Some(10), &offline("w"));
        assert!(told.first_offline(-1, Some(10), "w", 9));
        // The topic's owner changed: the episode of the old one is over.
        let live_b = Route::Other {
            device_id: "b".into(),
            live: true,
        };
        told.observe(-1, Some(10), &live_b);
        told.observe(-1, Some(10), &offline("w"));
        assert!(told.first_offline(-1, Some(10), "w", 9));
    }
}
