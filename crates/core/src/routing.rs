//! Who serves what: the owner of every (chat, topic), decided from the records alone.
//!
//! Owns: what a record says its device serves (its chat, and its topic or the whole
//! chat), the precedence that picks one owner among the devices serving an update's topic
//! ([`owner`]), the latest `/activate` choice per topic ([`latest_choice`]), and folding
//! routing notes into our own record ([`note`]). Must never: read a clock or a file,
//! depend on the order records come in, or pick a device that does not serve the topic.
//!
//! The precedence (issue 11), applied by every device to the same records:
//! 1. a device serving exactly that topic beats one serving the whole chat — even when it
//!    is offline (its mail then waits for it, and the chat is told);
//! 2. among the set that serves, live devices beat offline ones;
//! 3. then the device named by the most recent `/activate` typed in that topic;
//! 4. then the active device, if it is one of them;
//! 5. then the highest `--priority`;
//! 6. then, among offline devices, the one whose record says it was written last
//!    (`written_at_ms`: stable, since an offline device no longer writes), and the
//!    device id, so the answer is total. Every key is read from the records, so every
//!    device with the same records computes the same owner. (An earlier version ranked
//!    by when *this* device last saw each record — its own always "now" — so two devices
//!    serving the same topic each named itself: found by the model check in
//!    crates/sim/src/routing_check.rs. Live devices are not ranked by their write time,
//!    which every heartbeat changes: the owner would flip between them.)

use std::cmp::Reverse;

use crate::election::{self, Peers};
use crate::record::{
    DeviceRecord, MAIL_ACKED_MAX, MailAck, Status, TOPIC_CHOICES_MAX, TopicChoice,
};
use crate::timers::{Moment, Timing};

/// One device as routing sees it: its record, whether it is live, and the time its
/// record states for the last tie-break (the same for every viewer).
#[derive(Debug, Clone)]
pub struct Server<'a> {
    pub record: &'a DeviceRecord,
    pub live: bool,
    /// For an offline device, when its record says it was written; for a live one,
    /// zero (see the module doc, rule 6).
    pub stated_at: Moment,
}

impl Server<'_> {
    /// The chat it serves: its record's, or `default_chat` for records that do not say.
    fn chat(&self, default_chat: i64) -> i64 {
        self.record.chat_id.unwrap_or(default_chat)
    }

    fn serves_topic(&self, chat_id: i64, thread_id: Option<i64>, default_chat: i64) -> bool {
        self.chat(default_chat) == chat_id && self.record.thread_id == thread_id
    }

    fn serves_whole_chat(&self, chat_id: i64, default_chat: i64) -> bool {
        self.chat(default_chat) == chat_id && self.record.thread_id.is_none()
    }
}

/// Where an update goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// This device serves it: its own gateway.
    Mine,
    /// Another device serves it: mail, and a notice when it is offline.
    Other { device_id: String, live: bool },
    /// No device serves its topic: a reply in the topic, and mail kept for whoever
    /// starts serving it.
    Unserved,
}

/// Every device this one knows (its peers and itself), as routing sees them. Records
/// written by a newer schema are left out: their intent cannot be read.
pub fn servers<'a>(
    peers: &'a Peers,
    own: &'a DeviceRecord,
    now: Moment,
    timing: &Timing,
) -> Vec<Server<'a>> {
    let mut found: Vec<Server<'a>> = peers
        .values()
        .filter(|peer| !peer.record.is_newer_schema())
        .map(|peer| Server {
            record: &peer.record,
            live: election::is_live(peer, now, timing),
            stated_at: Moment::default(),
        })
        .collect();
    found.push(Server {
        record: own,
        live: own.status != Status::Stopped,
        stated_at: Moment::default(),
    });
    for server in &mut found {
        if !server.live {
            server.stated_at = Moment::from_millis(server.record.written_at_ms);
        }
    }
    found
}

/// The most recent `/activate` choice for this topic in any record (ordered by term,
/// then the recorder's seq, then device id so that the answer is total).
pub fn latest_choice<'a>(
    records: impl IntoIterator<Item = &'a DeviceRecord>,
    chat_id: i64,
    thread_id: Option<i64>,
) -> Option<&'a TopicChoice> {
    records
        .into_iter()
        .flat_map(|record| record.topic_choices.iter())
        .filter(|choice| choice.chat_id == chat_id && choice.thread_id == thread_id)
        .max_by(|a, b| (a.term, a.seq, &a.device_id).cmp(&(b.term, b.seq, &b.device_id)))
}

/// The owner of (`chat_id`, `thread_id`), from `servers` alone (see the module doc).
/// `default_chat` is the chat of records that do not name one; `active` the active
/// device's id, when known; `me` this device's id.
pub fn owner(
    servers: &[Server<'_>],
    chat_id: i64,
    thread_id: Option<i64>,
    default_chat: i64,
    active: Option<&str>,
    me: &str,
) -> Route {
    let exact: Vec<&Server<'_>> = servers
        .iter()
        .filter(|s| s.serves_topic(chat_id, thread_id, default_chat))
        .collect();
    let set = if exact.is_empty() {
        servers
            .iter()
            .filter(|s| s.serves_whole_chat(chat_id, default_chat))
            .collect()
    } else {
        exact
    };
    let live: Vec<&Server<'_>> = set.iter().copied().filter(|s| s.live).collect();
    let candidates = if live.is_empty() { set } else { live };
    let choice = latest_choice(servers.iter().map(|s| s.record), chat_id, thread_id)
        .map(|choice| choice.device_id.as_str());
    let best = candidates.into_iter().max_by_key(|s| {
        let id = s.record.device_id.as_str();
        (
            Some(id) == choice,
            Some(id) == active,
            s.record.priority,
            s.stated_at,
            Reverse(id),
        )
    });
    match best {
        None => Route::Unserved,
        Some(s) if s.record.device_id == me => Route::Mine,
        Some(s) => Route::Other {
            device_id: s.record.device_id.clone(),
            live: s.live,
        },
    }
}

/// An owned snapshot of everything [`owner`] needs, published by the runtime after
/// every input and read by the poller for each update.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    pub me: String,
    pub default_chat: i64,
    pub active: Option<String>,
    /// (record, live, last seen) per device, this one included.
    pub devices: Vec<(DeviceRecord, bool, Moment)>,
}

impl RouteTable {
    /// From the core's view: `peers`, our `own` record, the active device (if any).
    pub fn build(
        peers: &Peers,
        own: &DeviceRecord,
        now: Moment,
        timing: &Timing,
        default_chat: i64,
        active: Option<String>,
    ) -> RouteTable {
        RouteTable {
            me: own.device_id.clone(),
            default_chat,
            active,
            devices: servers(peers, own, now, timing)
                .into_iter()
                .map(|s| (s.record.clone(), s.live, s.stated_at))
                .collect(),
        }
    }

    /// Where an update of (`chat_id`, `thread_id`) goes.
    pub fn route(&self, chat_id: i64, thread_id: Option<i64>) -> Route {
        self.route_with_active(chat_id, thread_id, self.active.as_deref())
    }

    /// Where the poller sends an update: only the active device polls, so it counts
    /// itself active whatever the table says (published before the role changed).
    pub fn route_polling(&self, chat_id: i64, thread_id: Option<i64>) -> Route {
        self.route_with_active(chat_id, thread_id, Some(&self.me))
    }

    fn route_with_active(
        &self,
        chat_id: i64,
        thread_id: Option<i64>,
        active: Option<&str>,
    ) -> Route {
        let servers: Vec<Server<'_>> = self
            .devices
            .iter()
            .map(|(record, live, stated_at)| Server {
                record,
                live: *live,
                stated_at: *stated_at,
            })
            .collect();
        owner(
            &servers,
            chat_id,
            thread_id,
            self.default_chat,
            active,
            &self.me,
        )
    }
}

/// What the runtime tells the core about routing, to be carried in our own record.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum RoutingNote {
    /// The chat this device serves (its topic is in the identity).
    Serves { chat_id: i64 },
    /// `/activate device_id` was typed in this topic and answered by this device.
    TopicChosen {
        chat_id: i64,
        thread_id: Option<i64>,
        device_id: String,
    },
    /// The child has fetched mail through these acknowledgements (replaces them).
    MailAcked { acks: Vec<MailAck> },
}

/// Folds a note into our own record; true when the record changed in a way peers should
/// see soon (a topic choice, new acknowledgements). `term` is our current term.
pub fn note(own: &mut DeviceRecord, note: RoutingNote, term: u64) -> bool {
    match note {
        RoutingNote::Serves { chat_id } => {
            let changed = own.chat_id != Some(chat_id);
            own.chat_id = Some(chat_id);
            changed
        }
        RoutingNote::TopicChosen {
            chat_id,
            thread_id,
            device_id,
        } => {
            own.topic_choices
                .retain(|c| !(c.chat_id == chat_id && c.thread_id == thread_id));
            if own.topic_choices.len() >= TOPIC_CHOICES_MAX {
                own.topic_choices.remove(0);
            }
            own.topic_choices.push(TopicChoice {
                chat_id,
                thread_id,
                device_id,
                term,
                // The write this choice rides on: strictly above every earlier one of ours.
                seq: own.seq.saturating_add(1),
            });
            true
        }
        RoutingNote::MailAcked { mut acks } => {
            acks.sort_by(|a, b| (&a.writer, &a.epoch).cmp(&(&b.writer, &b.epoch)));
            acks.dedup_by(|a, b| a.writer == b.writer && a.epoch == b.epoch);
            acks.truncate(MAIL_ACKED_MAX);
            let changed = own.mail_acked != acks;
            own.mail_acked = acks;
            changed
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Identity;

    const CHAT: i64 = -100;

    fn record(id: &str, thread: Option<i64>, priority: i32) -> DeviceRecord {
        let mut record = DeviceRecord::new(&Identity {
            device_id: id.into(),
            hostname: "h".into(),
            project_dir: "/p".into(),
            pid: 1,
            instance: "i".into(),
            install_id: "x".into(),
            boot_id: String::new(),
            priority,
            thread_id: thread,
            version: String::new(),
        });
        record.status = Status::Standby;
        record.chat_id = Some(CHAT);
        record
    }

    fn at(ms: u64) -> Moment {
        Moment::from_millis(ms)
    }

    fn server(record: &DeviceRecord, live: bool, seen_ms: u64) -> Server<'_> {
        Server {
            record,
            live,
            stated_at: at(seen_ms),
        }
    }

    fn route(servers: &[Server<'_>], thread: Option<i64>, active: Option<&str>) -> Route {
        owner(servers, CHAT, thread, CHAT, active, "nobody")
    }

    fn other(id: &str, live: bool) -> Route {
        Route::Other {
            device_id: id.into(),
            live,
        }
    }

    #[test]
    fn an_exact_topic_beats_the_whole_chat_even_offline() {
        let (whole, api) = (record("whole", None, 9), record("api", Some(5), 0));
        let servers = [server(&whole, true, 10), server(&api, true, 1)];
        assert_eq!(route(&servers, Some(5), Some("whole")), other("api", true));
        assert_eq!(route(&servers, Some(6), None), other("whole", true));
        assert_eq!(route(&servers, None, None), other("whole", true));
        let servers = [server(&whole, true, 10), server(&api, false, 1)];
        assert_eq!(route(&servers, Some(5), Some("whole")), other("api", false));
    }

    #[test]
    fn a_topic_nobody_serves_is_unserved() {
        let api = record("api", Some(5), 0);
        let servers = [server(&api, true, 1)];
        assert_eq!(route(&servers, Some(7), None), Route::Unserved);
        assert_eq!(route(&servers, None, None), Route::Unserved);
        let mut elsewhere = record("far", None, 0);
        elsewhere.chat_id = Some(-200);
        let servers = [server(&elsewhere, true, 1)];
        assert_eq!(route(&servers, Some(7), None), Route::Unserved);
    }

    #[test]
    fn precedence_choice_then_active_then_priority_then_seen() {
        let (a, b) = (record("a", Some(5), 0), record("b", Some(5), 3));
        let mut chooser = record("c", Some(9), 0);
        let servers = [server(&a, true, 50), server(&b, true, 10)];
        // Highest priority first, when nothing else says.
        assert_eq!(route(&servers, Some(5), None), other("b", true));
        // The active device beats priority.
        assert_eq!(route(&servers, Some(5), Some("a")), other("a", true));
        // A choice beats the active device; the most recent choice wins.
        chooser.topic_choices = vec![
            choice("a", 3, 1),
            choice("b", 4, 1),
            TopicChoice {
                thread_id: Some(6),
                ..choice("a", 9, 9)
            },
        ];
        let servers = [
            server(&a, true, 50),
            server(&b, true, 10),
            server(&chooser, true, 1),
        ];
        assert_eq!(route(&servers, Some(5), Some("a")), other("b", true));
        // Same priority: the stated time (offline devices only carry one), then the id.
        let (x, y) = (record("x", Some(5), 0), record("y", Some(5), 0));
        let servers = [server(&x, true, 10), server(&y, true, 20)];
        assert_eq!(route(&servers, Some(5), None), other("y", true));
    }

    #[test]
    fn live_devices_beat_offline_ones_of_the_same_set() {
        let (a, b) = (record("a", Some(5), 9), record("b", Some(5), 0));
        let servers = [server(&a, false, 50), server(&b, true, 10)];
        assert_eq!(route(&servers, Some(5), Some("a")), other("b", true));
    }

    fn choice(device: &str, term: u64, seq: u64) -> TopicChoice {
        TopicChoice {
            chat_id: CHAT,
            thread_id: Some(5),
            device_id: device.into(),
            term,
            seq,
        }
    }

    #[test]
    fn the_answer_does_not_depend_on_the_order_of_the_records() {
        let mut records: Vec<DeviceRecord> = (0..6)
            .map(|i| {
                record(
                    &format!("d{i}"),
                    [None, Some(5), Some(6)][i % 3],
                    (i % 2) as i32,
                )
            })
            .collect();
        records[3].topic_choices = vec![choice("d4", 2, 7)];
        let make = |order: &[usize]| -> Vec<Route> {
            let servers: Vec<Server<'_>> = order
                .iter()
                .map(|&i| server(&records[i], i != 1, 10))
                .collect();
            [None, Some(5), Some(6), Some(7)]
                .into_iter()
                .flat_map(|t| [None, Some("d0"), Some("d2")].map(|a| route(&servers, t, a)))
                .collect()
        };
        let first = make(&[0, 1, 2, 3, 4, 5]);
        // Every rotation and the reverse: the same owners.
        for shift in 0..6 {
            let mut order: Vec<usize> = (0..6).collect();
            order.rotate_left(shift);
            assert_eq!(make(&order), first, "rotation {shift}");
            order.reverse();
            assert_eq!(make(&order), first, "reversed rotation {shift}");
        }
        // And every device computes the same owner: `me` only says "mine".
        let servers: Vec<Server<'_>> = records.iter().map(|r| server(r, true, 10)).collect();
        for me in ["d0", "d1", "d4"] {
            let seen = owner(&servers, CHAT, Some(5), CHAT, None, me);
            let named = match seen {
                Route::Mine => me.to_string(),
                Route::Other { device_id, .. } => device_id,
                Route::Unserved => "none".into(),
            };
            assert_eq!(named, "d4", "as seen by {me}");
        }
    }

    /// 2,000 seeded random groups (devices serving random topics or the whole chat, at
    /// random priorities, live or not, with random choices in random records), each
    /// routed in every topic from shuffled record orders by every device: the same
    /// owner every time, and the owner always serves the topic (exactly, or the whole
    /// chat when nobody serves it exactly).
    #[test]
    fn random_groups_route_the_same_from_every_order_and_every_device() {
        use rand::{Rng as _, SeedableRng as _, seq::SliceRandom as _};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        for _ in 0..2_000 {
            let count = rng.random_range(1..6);
            let mut records: Vec<DeviceRecord> = (0..count)
                .map(|i| {
                    let thread = [None, Some(5), Some(6)][rng.random_range(0..3)];
                    record(&format!("d{i}"), thread, rng.random_range(0..3))
                })
                .collect();
            for _ in 0..rng.random_range(0..3) {
                let at = rng.random_range(0..count);
                let chosen = format!("d{}", rng.random_range(0..count));
                let thread = [None, Some(5), Some(6)][rng.random_range(0..3)];
                records[at].topic_choices.push(TopicChoice {
                    thread_id: thread,
                    ..choice(&chosen, rng.random_range(1..4), rng.random_range(1..4))
                });
            }
            let live: Vec<bool> = (0..count).map(|_| rng.random_bool(0.7)).collect();
            let seen: Vec<u64> = (0..count).map(|_| rng.random_range(0..3)).collect();
            let active = Some(format!("d{}", rng.random_range(0..count)));
            for thread in [None, Some(5), Some(6), Some(7)] {
                let mut answers = Vec::new();
                for me in 0..count {
                    let mut order: Vec<usize> = (0..count).collect();
                    order.shuffle(&mut rng);
                    let servers: Vec<Server<'_>> = order
                        .iter()
                        .map(|&i| server(&records[i], live[i], seen[i]))
                        .collect();
                    let me = format!("d{me}");
                    let named = match owner(&servers, CHAT, thread, CHAT, active.as_deref(), &me) {
                        Route::Mine => Some(me),
                        Route::Other { device_id, .. } => Some(device_id),
                        Route::Unserved => None,
                    };
                    answers.push(named);
                }
                assert!(answers.windows(2).all(|w| w[0] == w[1]), "{answers:?}");
                let exact = records.iter().any(|r| r.thread_id == thread);
                match &answers[0] {
                    Some(id) => {
                        let served = &records.iter().find(|r| &r.device_id == id).unwrap();
                        assert!(
                            served.thread_id == thread || (!exact && served.thread_id.is_none()),
                            "{id} does not serve {thread:?}"
                        );
                    }
                    None => assert!(!exact && records.iter().all(|r| r.thread_id.is_some())),
                }
            }
        }
    }

    #[test]
    fn notes_fold_into_the_record_bounded() {
        let mut own = record("me", Some(5), 0);
        assert!(!note(&mut own, RoutingNote::Serves { chat_id: CHAT }, 1));
        for i in 0..(TOPIC_CHOICES_MAX as i64 + 5) {
            let chosen = RoutingNote::TopicChosen {
                chat_id: CHAT,
                thread_id: Some(i),
                device_id: "x".into(),
            };
            assert!(note(&mut own, chosen, 1));
        }
        assert_eq!(own.topic_choices.len(), TOPIC_CHOICES_MAX);
        let ack = |writer: &str, through| MailAck {
            writer: writer.into(),
            epoch: "e".into(),
            through,
        };
        let acks = vec![ack("b", 2), ack("a", 1), ack("a", 1)];
        assert!(note(
            &mut own,
            RoutingNote::MailAcked { acks: acks.clone() },
            1
        ));
        assert_eq!(own.mail_acked, vec![ack("a", 1), ack("b", 2)]);
        assert!(!note(&mut own, RoutingNote::MailAcked { acks }, 1));
    }
}
