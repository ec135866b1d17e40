//! Routing in the world (issue 11): every device serves its own forum topic, every
//! update is written in one of them, and the acting device routes each one as the
//! runtime does — its own topic to its own child, any other to the owner the REAL
//! `routing::RouteTable` names, as mail in its mailbox file (`mail/<stem>.json`, the
//! REAL `mailbox::Mailbox`) carried by the same lagging medium as the records (upload,
//! download, cut-offs, stalls, sleep, evictions, lost notifications). The owner, woken by
//! the watcher (or its next timer, the backstop), reads every mailbox on its host, hands
//! what is its own to its child in date order (the REAL `AckTracker` drops an update a
//! second router posted again), and once the child fetched it feeds the acknowledgement
//! to its core (`Event::Routing`), which carries it in its record; the writer prunes
//! what its owners acknowledged.
//!
//! Owns: the topics of a routing run, the mail side of each device (its outbox, its
//! reader, its child's fetches), every delivery, and the routing invariants and figures
//! ([`RoutingMetrics`]). Must never: decide an owner (the core's `routing` does), let a
//! device read another host's replica, or count an update as delivered before the
//! owner's child fetched it.
//!
//! Modelled simply, and why: the router's own-topic delivery is counted at the poll plus
//! its child's fetch delay (the world hands updates over at once, as for the election);
//! a child fetches at its next poll (the mirror polls again 1 s after an empty batch, at
//! a phase of its own), and a frozen or sleeping child fetches when it resumes. The seed
//! design does not route: its active device serves its own topic and drops the rest
//! (counted, as the seed's design loses them).

use std::collections::{BTreeMap, BTreeSet};

use baton_core::mailbox::{AckTracker, Mail, Mailbox, Offer, duplicate_key};
use baton_core::record::{self as core_record, MailAck};
use baton_core::routing::{Route, RoutingNote};
use serde_json::json;

use super::*;
use crate::metrics::RoutingMetrics;

/// The chat of every routing run.
pub(super) const CHAT: i64 = -100_1234;
/// A nudge over the owner's local control socket: a loopback round trip.
const NUDGE_MS: u64 = 2;
/// The mirror's idle wait: it polls again 1 s after an empty batch.
const CHILD_IDLE_MS: u64 = 1_000;
/// Updates sent this close to the end may still be on their way: not judged.
const UNJUDGED_TAIL_MS: u64 = 60 * SECOND_MS;
const MAIL_DIR: &str = "mail/";

/// The topic device `index` serves: one project per device, one topic per project.
pub(super) fn topic_of_device(index: usize) -> Option<i64> {
    Some(101 + index as i64)
}

pub(super) fn is_mail(name: &str) -> bool {
    name.starts_with(MAIL_DIR)
}

fn mail_file(device_id: &str) -> String {
    format!("{MAIL_DIR}{}", core_record::file_name(device_id))
}

/// Where an update was routed first, for its latency class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    Own,
    SameHost,
    OtherHost,
}

/// One delivery of an update to a device's child.
#[derive(Clone, Copy, Debug)]
struct Delivery {
    device: usize,
    at_ms: u64,
    /// The router whose hand-off it was (the writer of the mail, or the device itself).
    router: usize,
    /// Its rank among every delivery of the run.
    rank: u64,
    /// The reader's process: a restart between two deliveries of one update is the
    /// reader's crash window (fetched, not yet acknowledged in its record).
    incarnation: u32,
}

/// One device's mail side (rebuilt at every start, as the process's memory is).
#[derive(Clone, Debug, Default)]
struct MailSide {
    outbox: Option<Mailbox>,
    tracker: AckTracker,
    last_acks: Vec<MailAck>,
}

/// The routing state of a run.
#[derive(Clone, Debug, Default)]
pub(super) struct Routing {
    sides: Vec<MailSide>,
    /// Per update (index in the order sent): (device, true time, the router whose
    /// hand-off it was, the delivery's rank in the run) of each delivery.
    deliveries: Vec<Vec<Delivery>>,
    delivered_count: u64,
    first_class: Vec<Option<Class>>,
    dropped: Vec<bool>,
    not_queued: Vec<bool>,
    commands: Vec<bool>,
    epochs: u64,
}

/// A mail event for one device's process.
#[derive(Clone, Debug)]
pub(super) enum MailEv {
    /// Its child fetched a forwarded update of its own topic (the router's path).
    OwnFetched { device: usize, index: usize },
    /// Its child fetched a mail.
    Fetched {
        device: usize,
        incarnation: u32,
        writer: String,
        epoch: String,
        seq: u64,
        index: usize,
    },
}

impl World {
    pub(super) fn routing_on(&self) -> bool {
        self.routing.is_some()
    }

    /// The topic update `index` is written in: the devices' topics in turn.
    fn topic_of_update(&self, index: usize) -> Option<i64> {
        topic_of_device(index % self.devices.len())
    }

    fn payload(&self, index: usize, update_id: i64) -> serde_json::Value {
        let sent_ms = self.telegram.sent_ms[index];
        json!({
            "update_id": update_id,
            "message": {
                "message_id": index as i64 + 1,
                "chat": {"id": CHAT},
                "date": (EPOCH_MS + sent_ms) / 1000,
                "text": format!("m{index}"),
                "message_thread_id": self.topic_of_update(index),
                "is_topic_message": true,
            }
        })
    }

    /// The acting device handles update `index`: routes it (before it is confirmed).
    pub(super) fn route_update(&mut self, device: usize, index: usize, update_id: i64) {
        let topic = self.topic_of_update(index);
        let host = self.devices[device].host;
        let table = self.devices[device]
            .policy
            .as_ref()
            .and_then(|policy| policy.route_table(self.local(host), CHAT));
        let Some(table) = table else {
            // The seed design: only the active device's own topic is served.
            if topic == self.devices[device].spec.thread_id {
                self.own_delivery(device, index, update_id);
            } else if let Some(routing) = self.routing.as_mut() {
                routing.dropped[index] = true;
            }
            return;
        };
        match table.route_polling(CHAT, topic) {
            Route::Mine => self.own_delivery(device, index, update_id),
            Route::Other { device_id, live } => {
                let owner_host = self
                    .devices
                    .iter()
                    .find(|d| d.spec.device_id == device_id)
                    .map(|d| d.host);
                let class = if owner_host == Some(host) {
                    Class::SameHost
                } else {
                    Class::OtherHost
                };
                let nudge = (matches!(class, Class::SameHost) && live).then(|| device_id.clone());
                if self.post_mail(device, index, update_id, Some(device_id), class)
                    && let Some(owner) = nudge
                {
                    self.nudge_same_host(device, &owner);
                }
            }
            Route::Unserved => {
                self.post_mail(device, index, update_id, None, Class::OtherHost);
            }
        }
    }

    fn own_delivery(&mut self, device: usize, index: usize, update_id: i64) {
        let Some(routing) = self.routing.as_mut() else {
            return;
        };
        routing.first_class[index].get_or_insert(Class::Own);
        let key = duplicate_key(&self.payload(index, update_id));
        if let Some(routing) = self.routing.as_mut() {
            routing.sides[device].tracker.remember(key);
        }
        let at = self.next_child_fetch(device);
        self.schedule(at, Ev::Mail(MailEv::OwnFetched { device, index }));
    }

    /// Writes one update into the router's mailbox; returns whether it was written.
    fn post_mail(
        &mut self,
        device: usize,
        index: usize,
        update_id: i64,
        to: Option<String>,
        class: Class,
    ) -> bool {
        self.ensure_outbox(device);
        let mail = Mail {
            seq: 0,
            update_id,
            chat_id: CHAT,
            thread_id: self.topic_of_update(index),
            to,
            queued_at_ms: self.wall(self.devices[device].host),
            payload: self.payload(index, update_id),
        };
        let refusing = self.refusing_writes(device);
        let Some(routing) = self.routing.as_mut() else {
            return false;
        };
        let Some(outbox) = routing.sides[device].outbox.as_mut() else {
            return false;
        };
        let mut next = outbox.clone();
        if refusing || next.post(mail).is_err() {
            // The runtime tells the chat it could not queue it, then confirms it.
            routing.not_queued[index] = true;
            return false;
        }
        *outbox = next;
        routing.first_class[index].get_or_insert(class);
        self.write_outbox(device);
        true
    }

    /// The same-host fast path (`SameHostNudge` in the runtime): a live owner on the
    /// router's host is told over its local control socket, a loopback round trip, that
    /// mail waits — it reads its host's folder then, not when the watcher coalesces the
    /// write. A frozen or sleeping owner reads it when it resumes, as for any notice.
    fn nudge_same_host(&mut self, router: usize, owner: &str) {
        let host = self.devices[router].host;
        let name = mail_file(&self.devices[router].spec.device_id);
        let owners: Vec<(usize, u32)> = self
            .devices
            .iter()
            .enumerate()
            .filter(|(_, d)| d.host == host && d.spec.device_id == owner)
            .map(|(index, d)| (index, d.incarnation))
            .collect();
        for (dest, incarnation) in owners {
            self.schedule(
                self.now_ms + NUDGE_MS,
                Ev::Notify {
                    dest,
                    incarnation,
                    name: name.clone(),
                },
            );
        }
    }

    /// The outbox of a process: its mailbox as found on its host (same epoch), or a new
    /// epoch when there is none it can read.
    fn ensure_outbox(&mut self, device: usize) {
        let Some(routing) = self.routing.as_ref() else {
            return;
        };
        if routing.sides[device].outbox.is_some() {
            return;
        }
        let id = self.devices[device].spec.device_id.clone();
        let name = mail_file(&id);
        let found = self.replica(device).get(&name).and_then(|file| {
            let text = file.text.as_ref().filter(|_| file.evicted.is_none())?;
            Mailbox::parse(text, &core_record::file_name(&id)).ok()
        });
        let Some(routing) = self.routing.as_mut() else {
            return;
        };
        routing.epochs += 1;
        let epoch = format!(
            "e{device}-{}-{}",
            self.devices[device].incarnation, routing.epochs
        );
        routing.sides[device].outbox = Some(found.unwrap_or_else(|| Mailbox::new(&id, &epoch)));
    }

    fn write_outbox(&mut self, device: usize) {
        let id = self.devices[device].spec.device_id.clone();
        let text = self
            .routing
            .as_ref()
            .and_then(|r| r.sides[device].outbox.as_ref())
            .map(Mailbox::to_json);
        if let Some(text) = text {
            self.write_local(device, mail_file(&id), Some(text));
        }
    }

    /// The child's next poll: every [`CHILD_IDLE_MS`] at a phase of its own; a frozen or
    /// sleeping child fetches when it resumes.
    fn next_child_fetch(&self, device: usize) -> u64 {
        let phase = (device as u64 * 337) % CHILD_IDLE_MS;
        let since = self.now_ms.saturating_sub(phase);
        let at = phase + (since / CHILD_IDLE_MS + 1) * CHILD_IDLE_MS;
        self.resume_time(device, at)
    }

    fn resume_time(&self, device: usize, at: u64) -> u64 {
        let host = &self.hosts[self.devices[device].host];
        let thawed = self.devices[device].frozen_until_ms.unwrap_or(at).max(at);
        postpone(&host.sleep_windows, thawed)
    }

    /// A mail file changed on the device's host, or its timer fired (the backstop scan),
    /// or it started: read every mailbox, serve what is ours, prune our own.
    pub(super) fn check_mail(&mut self, device: usize) {
        if !self.routing_on() || !self.running(device) {
            return;
        }
        let host = self.devices[device].host;
        let Some(table) = self.devices[device]
            .policy
            .as_ref()
            .and_then(|policy| policy.route_table(self.local(host), CHAT))
        else {
            return;
        };
        let me = self.devices[device].spec.device_id.clone();
        let mine = self.devices[device].spec.thread_id;
        let mut waiting: Vec<Mailbox> = Vec::new();
        let mut restore = Vec::new();
        for (name, file) in self.replica(device).range(MAIL_DIR.to_string()..) {
            if !is_mail(name) {
                break;
            }
            let Some(text) = &file.text else { continue };
            if file.evicted.is_some() {
                restore.push(name.clone());
                continue;
            }
            let base = &name[MAIL_DIR.len()..];
            if let Ok(mailbox) = Mailbox::parse(text, base) {
                waiting.push(mailbox);
            }
        }
        for name in restore {
            // The runtime asks for the download of a dataless file (`brctl download`).
            let delay = self.rng.random_range(SECOND_MS..=10 * SECOND_MS);
            self.schedule(self.now_ms + delay, Ev::Restore { host, name });
        }
        let mut offers: Vec<(i64, String, String, Mail)> = Vec::new();
        for mailbox in &waiting {
            let deliverable = mailbox.deliverable(&me, &[], |chat, thread| {
                table.route(chat, thread) == Route::Mine
            });
            for mail in deliverable {
                if mail.chat_id != CHAT || mail.thread_id != mine {
                    continue; // addressed to us when we served another topic: it waits
                }
                let date = mail.payload["message"]["date"].as_i64().unwrap_or(0);
                offers.push((
                    date,
                    mailbox.writer.clone(),
                    mailbox.epoch.clone(),
                    mail.clone(),
                ));
            }
        }
        offers.sort_by(|a, b| (a.0, &a.1, a.3.seq).cmp(&(b.0, &b.1, b.3.seq)));
        for (_, writer, epoch, mail) in offers {
            self.offer(device, writer, epoch, &mail);
        }
        self.prune_outbox(device, &table);
        self.record_acks(device);
    }

    fn offer(&mut self, device: usize, writer: String, epoch: String, mail: &Mail) {
        let Some(routing) = self.routing.as_mut() else {
            return;
        };
        match routing.sides[device].tracker.offer(&writer, &epoch, mail) {
            Offer::Deliver => {
                let index = (mail.payload["message"]["message_id"].as_i64().unwrap_or(1) - 1).max(0)
                    as usize;
                let at = self.next_child_fetch(device);
                let incarnation = self.devices[device].incarnation;
                self.schedule(
                    at,
                    Ev::Mail(MailEv::Fetched {
                        device,
                        incarnation,
                        writer,
                        epoch,
                        seq: mail.seq,
                        index,
                    }),
                );
            }
            Offer::Duplicate | Offer::Known => {}
        }
    }

    fn prune_outbox(&mut self, device: usize, table: &baton_core::routing::RouteTable) {
        let wall = self.wall(self.devices[device].host);
        let Some(routing) = self.routing.as_mut() else {
            return;
        };
        let Some(outbox) = routing.sides[device].outbox.as_mut() else {
            return;
        };
        let records = table.devices.iter().map(|(record, _, _)| record);
        if !outbox.prune(records, wall).is_empty() {
            self.write_outbox(device);
        }
    }

    /// Feeds new acknowledgements to the core, which carries them in its record.
    fn record_acks(&mut self, device: usize) {
        let Some(routing) = self.routing.as_mut() else {
            return;
        };
        let side = &mut routing.sides[device];
        let acks = side.tracker.acks();
        if acks == side.last_acks {
            return;
        }
        side.last_acks = acks.clone();
        let note = RoutingNote::MailAcked { acks };
        self.deliver(device, Event::Routing { note });
    }

    pub(super) fn mail_event(&mut self, event: MailEv) {
        match event {
            MailEv::OwnFetched { device, index } => self.delivered(device, index, device),
            MailEv::Fetched {
                device,
                incarnation,
                writer,
                epoch,
                seq,
                index,
            } => {
                if self.devices[device].incarnation != incarnation
                    || self.devices[device].policy.is_none()
                {
                    return; // the process died with its child: not fetched, served again
                }
                if !self.running(device) {
                    let at = self.resume_time(device, self.now_ms + 1);
                    let event = MailEv::Fetched {
                        device,
                        incarnation,
                        writer,
                        epoch,
                        seq,
                        index,
                    };
                    self.schedule(at.max(self.now_ms + 1), Ev::Mail(event));
                    return;
                }
                let router = self
                    .devices
                    .iter()
                    .position(|d| d.spec.device_id == writer)
                    .unwrap_or(device);
                self.delivered(device, index, router);
                if let Some(routing) = self.routing.as_mut() {
                    routing.sides[device].tracker.fetched(&writer, &epoch, seq);
                }
                self.record_acks(device);
            }
        }
    }

    fn delivered(&mut self, device: usize, index: usize, router: usize) {
        let now = self.now_ms;
        if let Some(routing) = self.routing.as_mut()
            && let Some(list) = routing.deliveries.get_mut(index)
        {
            routing.delivered_count += 1;
            list.push(Delivery {
                device,
                at_ms: now,
                router,
                rank: routing.delivered_count,
                incarnation: self.devices[device].incarnation,
            });
        }
    }

    /// A process (re)starts: its reader resumes from the acknowledgements its record
    /// holds on its host, its outbox from its mailbox file there.
    pub(super) fn mail_on_start(&mut self, device: usize) {
        let own = self.devices[device].own_file.clone();
        let acks = self
            .replica(device)
            .get(&own)
            .and_then(|file| file.text.as_ref())
            .and_then(|text| core_record::parse_record(text.as_bytes()).ok())
            .map(|record| record.mail_acked)
            .unwrap_or_default();
        if let Some(routing) = self.routing.as_mut() {
            // `last_acks` empty: the first check feeds them to the new core, as the
            // runtime's set-up does (the core does not carry them over by itself).
            routing.sides[device] = MailSide {
                outbox: None,
                tracker: AckTracker::from_acks(&acks),
                last_acks: Vec::new(),
            };
        }
    }

    /// A new update was sent: room for its bookkeeping. A command (`/activate`) is
    /// answered by the active device, not routed.
    pub(super) fn mail_on_send(&mut self, command: bool) {
        if let Some(routing) = self.routing.as_mut() {
            routing.commands.push(command);
            routing.deliveries.push(Vec::new());
            routing.first_class.push(None);
            routing.dropped.push(false);
            routing.not_queued.push(false);
        }
    }

    /// The invariants and figures, at the end of the run.
    pub(super) fn finish_routing(&mut self) {
        let Some(routing) = self.routing.take() else {
            return;
        };
        let mut out = RoutingMetrics {
            runs: 1,
            ..RoutingMetrics::default()
        };
        let cutoff = self.now_ms.saturating_sub(UNJUDGED_TAIL_MS);
        let mut per_device: BTreeMap<usize, Vec<(u64, usize, usize)>> = BTreeMap::new();
        for (index, deliveries) in routing.deliveries.iter().enumerate() {
            let sent_ms = self.telegram.sent_ms[index];
            if sent_ms >= cutoff || routing.commands[index] {
                continue;
            }
            out.sent += 1;
            if self.telegram.handled[index] > 1 {
                out.polled_twice += 1;
            }
            let topic = self.topic_of_update(index);
            if routing.dropped[index] {
                out.dropped_by_design += 1;
                continue;
            }
            if routing.not_queued[index] && deliveries.is_empty() {
                out.not_queued_told += 1;
                continue;
            }
            let Some(first_ms) = deliveries.first().map(|d| d.at_ms) else {
                out.lost += 1;
                self.violation_if_baton(format!(
                    "routing: update #{index} in topic {topic:?} never delivered"
                ));
                continue;
            };
            out.delivered += 1;
            for &Delivery {
                device,
                router,
                rank,
                ..
            } in deliveries
            {
                if self.devices[device].spec.thread_id != topic {
                    out.misrouted += 1;
                    self.violation_if_baton(format!(
                        "routing: update #{index} of topic {topic:?} delivered to device {device}"
                    ));
                }
                per_device
                    .entry(device)
                    .or_default()
                    .push((rank, index, router));
            }
            self.judge_duplicates(index, deliveries, &mut out);
            let latency = first_ms.saturating_sub(sent_ms);
            match routing.first_class[index] {
                Some(Class::Own) => out.latency_own_ms.push(latency),
                Some(Class::SameHost) => out.latency_same_host_ms.push(latency),
                Some(Class::OtherHost) | None => out.latency_other_host_ms.push(latency),
            }
        }
        for (device, mut list) in per_device {
            list.sort_unstable();
            let mut seen = BTreeSet::new();
            let mut highest: Option<(usize, usize)> = None;
            for (_, index, router) in list {
                if !seen.insert(index) {
                    continue;
                }
                match highest {
                    Some((later, by)) if index < later => {
                        out.order_inversions += 1;
                        if by == router {
                            out.order_inversions_one_router += 1;
                            self.violation_if_baton(format!(
                                "routing: device {device} got update #{index} after #{later}, both routed by device {router}"
                            ));
                        }
                    }
                    _ => highest = Some((index, router)),
                }
            }
        }
        self.metrics.routing = out;
    }

    /// Deliveries beyond the first: from a re-poll (Telegram handed the update to two
    /// pollers), or from the reader's own crash window (it restarted between the two),
    /// or neither — a broken invariant.
    fn judge_duplicates(
        &mut self,
        index: usize,
        deliveries: &[Delivery],
        out: &mut RoutingMetrics,
    ) {
        let polled_twice = self.telegram.handled[index] > 1;
        for (n, later) in deliveries.iter().enumerate().skip(1) {
            out.duplicated += 1;
            let reader_restarted = deliveries[..n]
                .iter()
                .any(|d| d.device == later.device && d.incarnation != later.incarnation);
            if reader_restarted {
                out.duplicated_reader_restart += 1;
            } else if !polled_twice {
                out.duplicated_outside_crash_window += 1;
                self.violation_if_baton(format!(
                    "routing: update #{index} delivered again to device {} (from device {}), polled once, no restart: first {:?}, again {later:?}",
                    later.device, later.router, deliveries[0]
                ));
            }
        }
    }

    /// Routing runs: each device serves its topic; the state starts empty.
    pub(super) fn routing_state(devices: usize) -> Routing {
        Routing {
            sides: vec![MailSide::default(); devices],
            ..Routing::default()
        }
    }
}
