//! The routing simulator (issue 11): several topics, owners on several hosts, the active
//! device routing every update through its mailbox in a lagging synced folder.
//!
//! Owns: a seeded discrete-event model of one forum — Telegram's queue of unconfirmed
//! updates (ids that start over now and then), the active device's poller, the mail
//! folder replicated per host (same host: a watcher's latency; other hosts: a
//! heavy-tailed sync delay per copy, a newer version of a file superseding an older one
//! still in flight), readers with their children, a crash of
//! the active device mid-batch, a reader asleep — driving the core's REAL routing and
//! mailbox rules (`routing::RouteTable`, `mailbox::Mailbox`, `mailbox::AckTracker`). The
//! election itself is abstracted here (the next active is the live device of highest
//! priority, after a failover delay); `world.rs` simulates it for real. Must never:
//! read a clock or OS randomness (one seed, one run).
//!
//! Measures per-topic delivery latency by class (the active's own topic, another device
//! on its host, another host) and what today's design (the active device serves only
//! its own topic) would lose. Checks: no update lost, none delivered to a device that
//! does not serve its topic, duplicates only for updates polled in a crash window;
//! per-topic order inversions are counted.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use baton_core::mailbox::{AckTracker, Mail, Mailbox, Offer};
use baton_core::record::{DeviceRecord, Identity, MailAck, Status};
use baton_core::routing::{Route, RouteTable};
use baton_core::timers::Moment;
use rand::{Rng as _, SeedableRng as _};
use rand_chacha::ChaCha8Rng;
use serde_json::json;

const CHAT: i64 = -100;
/// Same-host copy: the watcher's latency plus a read.
const LOCAL_MS: u64 = 20;
/// The active device's poll cycle (a long poll returns at once when updates wait).
const POLL_MS: u64 = 50;
/// The mirror's idle wait: it polls again 1 s after an empty batch.
const MIRROR_IDLE_MS: u64 = 1_000;
/// Failover after a crash: liveness (45 s) plus the settle window (8 s), at full scale.
const FAILOVER_MS: u64 = 53_000;

/// One device of the run: its host and topic (`None`: the whole chat), its priority.
#[derive(Debug, Clone)]
pub struct SimDevice {
    pub host: usize,
    pub thread: Option<i64>,
    pub priority: i32,
}

/// One run's shape.
#[derive(Debug, Clone)]
pub struct RoutingRun {
    pub seed: u64,
    pub devices: Vec<SimDevice>,
    /// Topics messages are written in (some may be served by nobody).
    pub topics: Vec<Option<i64>>,
    pub updates: usize,
    pub spacing_ms: u64,
    /// Median one-way delay between hosts (Pareto, shape 2).
    pub sync_median_ms: u64,
    pub crash_active_at_ms: Option<u64>,
    /// (device, from, to): asleep, reading nothing.
    pub asleep: Option<(usize, u64, u64)>,
    pub id_reset_at_ms: Option<u64>,
}

/// What one run measured.
#[derive(Debug, Default, Clone)]
pub struct RoutingOutcome {
    pub sent: usize,
    pub delivered: usize,
    pub lost: usize,
    pub misrouted: usize,
    pub duplicates: usize,
    pub duplicates_outside_crash_window: usize,
    pub order_inversions: usize,
    /// Messages in topics nobody serves (kept, not delivered).
    pub unserved: usize,
    /// Latencies (ms) by class: own, same host, other host.
    pub latency_own_ms: Vec<u64>,
    pub latency_same_host_ms: Vec<u64>,
    pub latency_other_host_ms: Vec<u64>,
    /// Updates today's design (the active serves only its own topic) would lose.
    pub lost_by_todays_design: usize,
}

#[derive(Debug, Clone)]
struct Update {
    id: i64,
    message_id: i64,
    thread: Option<i64>,
    sent_ms: u64,
}

#[derive(Debug)]
enum Ev {
    Send(usize),
    Poll,
    /// A copy of `writer`'s mailbox lands on `host`.
    Land {
        writer: usize,
        host: usize,
        version: u64,
        mailbox: Box<Mailbox>,
    },
    /// A child fetched the mail (device, writer, epoch, seq, update index).
    Fetched {
        device: usize,
        writer: usize,
        epoch: String,
        seq: u64,
        update: usize,
    },
    /// The active's own child fetched a forwarded update.
    OwnFetched {
        device: usize,
        update: usize,
    },
    /// `reader`'s acknowledgements reach `writer`'s host.
    AckLands {
        writer: usize,
        reader: usize,
        acks: Vec<MailAck>,
    },
    Crash,
    Failover,
    Restart(usize),
    Wake(usize),
}

struct Device {
    spec: SimDevice,
    id: String,
    up: bool,
    asleep: bool,
    outbox: Mailbox,
    tracker: AckTracker,
    /// Acknowledgements as its record carries them.
    acks: Vec<MailAck>,
    /// What each writer's record says to it: reader → acks (as landed at the writer).
    seen_acks: BTreeMap<usize, Vec<MailAck>>,
}

struct Sim {
    run: RoutingRun,
    rng: ChaCha8Rng,
    now: u64,
    queue: BinaryHeap<Reverse<(u64, u64, usize)>>,
    events: Vec<Option<Ev>>,
    devices: Vec<Device>,
    updates: Vec<Update>,
    /// Telegram: unconfirmed update indexes; those the current poller posted as mail
    /// (confirmed at its next poll); all it dispatched this term (its ledger).
    pending: Vec<usize>,
    taken: Vec<usize>,
    dispatched: Vec<bool>,
    active: Option<usize>,
    /// host → writer → the newest version of its mailbox landed there.
    replicas: Vec<BTreeMap<usize, (u64, Mailbox)>>,
    /// Versions written per writer.
    versions: Vec<u64>,
    deliveries: Vec<Vec<(usize, u64)>>,
    crash_window: Vec<bool>,
    next_id: i64,
    outcome: RoutingOutcome,
}

/// Runs one seeded routing simulation.
pub fn simulate(run: &RoutingRun) -> RoutingOutcome {
    let mut sim = Sim::new(run.clone());
    sim.go();
    sim.finish()
}

impl Sim {
    fn new(run: RoutingRun) -> Sim {
        let devices = run
            .devices
            .iter()
            .enumerate()
            .map(|(i, spec)| Device {
                spec: spec.clone(),
                id: format!("d{i}@host{}", spec.host),
                up: true,
                asleep: false,
                outbox: Mailbox::new(&format!("d{i}@host{}", spec.host), &format!("e{i}")),
                tracker: AckTracker::default(),
                acks: Vec::new(),
                seen_acks: BTreeMap::new(),
            })
            .collect();
        let hosts = run
            .devices
            .iter()
            .map(|d| d.host)
            .max()
            .map_or(1, |h| h + 1);
        let mut sim = Sim {
            rng: ChaCha8Rng::seed_from_u64(run.seed),
            now: 0,
            queue: BinaryHeap::new(),
            events: Vec::new(),
            devices,
            updates: Vec::new(),
            pending: Vec::new(),
            taken: Vec::new(),
            dispatched: vec![false; run.updates],
            active: None,
            replicas: vec![BTreeMap::new(); hosts],
            versions: vec![0; run.devices.len()],
            deliveries: vec![Vec::new(); run.updates],
            crash_window: vec![false; run.updates],
            next_id: 1_000,
            outcome: RoutingOutcome::default(),
            run,
        };
        sim.active = sim.best_live();
        sim
    }

    fn at(&mut self, when: u64, event: Ev) {
        self.events.push(Some(event));
        let seq = self.events.len() as u64;
        self.queue.push(Reverse((when, seq, self.events.len() - 1)));
    }

    fn go(&mut self) {
        for n in 0..self.run.updates {
            self.at(n as u64 * self.run.spacing_ms, Ev::Send(n));
        }
        self.at(0, Ev::Poll);
        if let Some(at) = self.run.crash_active_at_ms {
            self.at(at, Ev::Crash);
        }
        if let Some((device, from, to)) = self.run.asleep {
            self.devices[device].asleep = true;
            let _ = from;
            self.at(to, Ev::Wake(device));
        }
        let end = self.run.updates as u64 * self.run.spacing_ms + 600_000;
        for _ in 0..2_000_000 {
            let Some(Reverse((when, _, index))) = self.queue.pop() else {
                break;
            };
            if when > end {
                break;
            }
            self.now = when;
            if let Some(event) = self.events[index].take() {
                self.handle(event);
            }
        }
    }

    fn handle(&mut self, event: Ev) {
        match event {
            Ev::Send(n) => self.send(n),
            Ev::Poll => self.poll(),
            Ev::Land {
                writer,
                host,
                version,
                mailbox,
            } => {
                // A file's newer version supersedes an older one still in flight.
                if self.replicas[host]
                    .get(&writer)
                    .is_some_and(|(v, _)| *v > version)
                {
                    return;
                }
                self.replicas[host].insert(writer, (version, *mailbox));
                for device in 0..self.devices.len() {
                    if self.devices[device].spec.host == host {
                        self.read_mail(device);
                    }
                }
            }
            Ev::Fetched {
                device,
                writer,
                epoch,
                seq,
                update,
            } => {
                if !self.devices[device].up {
                    return;
                }
                self.deliver(device, update);
                let writer_id = self.devices[writer].id.clone();
                let reader = &mut self.devices[device];
                reader.tracker.fetched(&writer_id, &epoch, seq);
                reader.acks = reader.tracker.acks();
                let acks = reader.acks.clone();
                for w in 0..self.devices.len() {
                    let delay =
                        self.delay(self.devices[device].spec.host, self.devices[w].spec.host);
                    self.at(
                        self.now + delay,
                        Ev::AckLands {
                            writer: w,
                            reader: device,
                            acks: acks.clone(),
                        },
                    );
                }
            }
            Ev::OwnFetched { device, update } => {
                if self.devices[device].up && self.active == Some(device) {
                    self.deliver(device, update);
                    self.pending.retain(|u| *u != update);
                }
            }
            Ev::AckLands {
                writer,
                reader,
                acks,
            } => {
                self.devices[writer].seen_acks.insert(reader, acks);
                self.prune(writer);
            }
            Ev::Crash => self.crash(),
            Ev::Failover => {
                // A new poller: its ledger starts empty; Telegram re-sends the unconfirmed.
                self.dispatched.iter_mut().for_each(|d| *d = false);
                self.active = self.best_live();
            }
            Ev::Restart(device) => {
                let d = &mut self.devices[device];
                d.up = true;
                d.tracker = AckTracker::from_acks(&d.acks);
                self.read_mail(device);
            }
            Ev::Wake(device) => {
                self.devices[device].asleep = false;
                self.read_mail(device);
            }
        }
    }

    fn send(&mut self, n: usize) {
        if self.run.id_reset_at_ms.is_some_and(|at| self.now >= at) && self.next_id > 500 {
            // Telegram starts its ids over, far below.
            self.next_id = self.rng.random_range(1..100);
        }
        let thread = self.run.topics[n % self.run.topics.len()];
        self.updates.push(Update {
            id: self.next_id,
            message_id: n as i64 + 1,
            thread,
            sent_ms: self.now,
        });
        self.next_id += 1;
        self.pending.push(n);
        if !self
            .run
            .devices
            .iter()
            .any(|d| d.thread == thread || d.thread.is_none())
        {
            self.outcome.unserved += 1;
        }
    }

    fn payload(&self, n: usize) -> serde_json::Value {
        let u = &self.updates[n];
        let mut message = json!({"message_id": u.message_id, "chat": {"id": CHAT}, "date": 0, "text": format!("m{n}")});
        if let Some(t) = u.thread {
            message["message_thread_id"] = json!(t);
            message["is_topic_message"] = json!(true);
        }
        json!({"update_id": u.id, "message": message})
    }

    fn table(&self, viewer: usize) -> RouteTable {
        let liveness_known = |d: &Device| d.up;
        RouteTable {
            me: self.devices[viewer].id.clone(),
            default_chat: CHAT,
            active: self.active.map(|a| self.devices[a].id.clone()),
            devices: self
                .devices
                .iter()
                .map(|d| (self.record(d), liveness_known(d), Moment::from_millis(0)))
                .collect(),
        }
    }

    fn record(&self, d: &Device) -> DeviceRecord {
        let mut record = DeviceRecord::new(&Identity {
            device_id: d.id.clone(),
            hostname: format!("host{}", d.spec.host),
            project_dir: String::new(),
            pid: 0,
            instance: String::new(),
            install_id: String::new(),
            boot_id: String::new(),
            priority: d.spec.priority,
            thread_id: d.spec.thread,
            version: String::new(),
        });
        record.status = if d.up {
            Status::Standby
        } else {
            Status::Stopped
        };
        record.chat_id = Some(CHAT);
        record.mail_acked = d.acks.clone();
        record
    }

    /// The active device takes what Telegram has unconfirmed and routes it; what it took
    /// at the previous poll is confirmed now (the offset of this call).
    fn poll(&mut self) {
        self.at(self.now + POLL_MS, Ev::Poll);
        let Some(active) = self.active.filter(|a| self.devices[*a].up) else {
            return;
        };
        // The offset of this call confirms the mail posted since the last one.
        for n in std::mem::take(&mut self.taken) {
            self.pending.retain(|u| *u != n);
        }
        let table = self.table(active);
        let batch: Vec<usize> = self.pending.clone();
        for n in batch {
            if std::mem::replace(&mut self.dispatched[n], true) {
                continue;
            }
            let thread = self.updates[n].thread;
            match table.route_polling(CHAT, thread) {
                Route::Mine => {
                    let when = self.next_fetch(active);
                    self.at(
                        when,
                        Ev::OwnFetched {
                            device: active,
                            update: n,
                        },
                    );
                }
                Route::Other { device_id, .. } => {
                    self.post(active, n, Some(device_id));
                    self.taken.push(n);
                }
                Route::Unserved => {
                    self.post(active, n, None);
                    self.taken.push(n);
                }
            }
        }
    }

    fn post(&mut self, writer: usize, n: usize, to: Option<String>) {
        let mail = Mail {
            seq: 0,
            update_id: self.updates[n].id,
            chat_id: CHAT,
            thread_id: self.updates[n].thread,
            to,
            queued_at_ms: self.now,
            payload: self.payload(n),
        };
        if self.devices[writer].outbox.post(mail).is_ok() {
            self.replicate(writer);
        }
    }

    fn replicate(&mut self, writer: usize) {
        let hosts = self.replicas.len();
        let from = self.devices[writer].spec.host;
        self.versions[writer] += 1;
        let version = self.versions[writer];
        for host in 0..hosts {
            let delay = self.delay(from, host);
            let mailbox = Box::new(self.devices[writer].outbox.clone());
            self.at(
                self.now + delay,
                Ev::Land {
                    writer,
                    host,
                    version,
                    mailbox,
                },
            );
        }
    }

    fn delay(&mut self, from: usize, to: usize) -> u64 {
        if from == to {
            return LOCAL_MS;
        }
        // Pareto with shape 2: median = scale·√2.
        let scale = self.run.sync_median_ms as f64 / std::f64::consts::SQRT_2;
        let uniform: f64 = self.rng.random_range(f64::EPSILON..1.0);
        (scale / uniform.sqrt()).min(600_000.0) as u64
    }

    fn read_mail(&mut self, device: usize) {
        let d = &self.devices[device];
        if !d.up || d.asleep {
            return;
        }
        let host = d.spec.host;
        let table = self.table(device);
        let me = d.id.clone();
        let mut offers = Vec::new();
        for (writer, (_, mailbox)) in &self.replicas[host] {
            for mail in mailbox.deliverable(&me, &[], |c, t| table.route(c, t) == Route::Mine) {
                offers.push((
                    *writer,
                    mailbox.writer.clone(),
                    mailbox.epoch.clone(),
                    mail.clone(),
                ));
            }
        }
        for (writer, writer_id, epoch, mail) in offers {
            let n = (mail.payload["message"]["message_id"].as_i64().unwrap_or(1) - 1) as usize;
            match self.devices[device]
                .tracker
                .offer(&writer_id, &epoch, &mail)
            {
                Offer::Deliver => {
                    let when = self.next_fetch(device);
                    self.at(
                        when,
                        Ev::Fetched {
                            device,
                            writer,
                            epoch,
                            seq: mail.seq,
                            update: n,
                        },
                    );
                }
                Offer::Duplicate => {
                    self.devices[device]
                        .tracker
                        .fetched(&writer_id, &epoch, mail.seq);
                }
                Offer::Known => {}
            }
        }
    }

    fn prune(&mut self, writer: usize) {
        let records: Vec<DeviceRecord> = self.devices[writer]
            .seen_acks
            .iter()
            .map(|(reader, acks)| {
                let mut record = self.record(&self.devices[*reader]);
                record.mail_acked = acks.clone();
                record
            })
            .collect();
        let now = self.now;
        if !self.devices[writer].outbox.prune(&records, now).is_empty() {
            self.replicate(writer);
        }
    }

    /// The active device dies mid-batch: what it took but had not confirmed goes back to
    /// Telegram; its child dies with it.
    fn crash(&mut self) {
        let Some(active) = self.active else { return };
        self.devices[active].up = false;
        for n in std::mem::take(&mut self.taken) {
            self.crash_window[n] = true;
        }
        for n in &self.pending {
            self.crash_window[*n] = true;
        }
        self.active = None;
        self.at(self.now + FAILOVER_MS, Ev::Failover);
        self.at(self.now + 2 * FAILOVER_MS, Ev::Restart(active));
    }

    /// The child's next poll: it polls every [`MIRROR_IDLE_MS`] when idle, at a phase of
    /// its own, so it takes what it is handed in order.
    fn next_fetch(&self, device: usize) -> u64 {
        let phase = (device as u64 * 337) % MIRROR_IDLE_MS;
        let since = self.now.saturating_sub(phase);
        phase + (since / MIRROR_IDLE_MS + 1) * MIRROR_IDLE_MS
    }

    fn best_live(&self) -> Option<usize> {
        (0..self.devices.len())
            .filter(|d| self.devices[*d].up)
            .max_by_key(|d| (self.devices[*d].spec.priority, Reverse(*d)))
    }

    fn deliver(&mut self, device: usize, n: usize) {
        self.deliveries[n].push((device, self.now));
    }

    fn finish(mut self) -> RoutingOutcome {
        let mut out = std::mem::take(&mut self.outcome);
        out.sent = self.updates.len();
        let mut last_per: BTreeMap<(usize, Option<i64>), i64> = BTreeMap::new();
        let mut firsts: Vec<(u64, usize, usize)> = Vec::new();
        for (n, deliveries) in self.deliveries.iter().enumerate() {
            let update = &self.updates[n];
            let served = self
                .run
                .devices
                .iter()
                .any(|d| d.thread == update.thread || d.thread.is_none());
            if deliveries.is_empty() {
                if served {
                    out.lost += 1;
                }
                continue;
            }
            out.delivered += 1;
            if deliveries.len() > 1 {
                out.duplicates += deliveries.len() - 1;
                if !self.crash_window[n] {
                    out.duplicates_outside_crash_window += deliveries.len() - 1;
                }
            }
            for (device, _) in deliveries {
                let spec = &self.run.devices[*device];
                let exact = self.run.devices.iter().any(|d| d.thread == update.thread);
                if !(spec.thread == update.thread || (!exact && spec.thread.is_none())) {
                    out.misrouted += 1;
                }
            }
            let (device, at) = deliveries[0];
            firsts.push((at, device, n));
        }
        firsts.sort();
        for (_, device, n) in firsts {
            let key = (device, self.updates[n].thread);
            let message = self.updates[n].message_id;
            if last_per.get(&key).is_some_and(|last| *last > message) {
                out.order_inversions += 1;
            }
            last_per.insert(key, message.max(last_per.get(&key).copied().unwrap_or(0)));
        }
        self.classify_latency(&mut out);
        out
    }

    /// Latency by class, against the first active device (runs without faults measure
    /// cleanly); today's design loses every update outside the active's own topic.
    fn classify_latency(&self, out: &mut RoutingOutcome) {
        let Some(first_active) = self.best_live_at_start() else {
            return;
        };
        let active_spec = &self.run.devices[first_active];
        for (n, deliveries) in self.deliveries.iter().enumerate() {
            let update = &self.updates[n];
            if update.thread != active_spec.thread && active_spec.thread.is_some() {
                out.lost_by_todays_design += 1;
            }
            let Some((device, at)) = deliveries.first() else {
                continue;
            };
            let latency = at.saturating_sub(update.sent_ms);
            let spec = &self.run.devices[*device];
            if *device == first_active {
                out.latency_own_ms.push(latency);
            } else if spec.host == active_spec.host {
                out.latency_same_host_ms.push(latency);
            } else {
                out.latency_other_host_ms.push(latency);
            }
        }
    }

    fn best_live_at_start(&self) -> Option<usize> {
        (0..self.run.devices.len()).max_by_key(|d| (self.run.devices[*d].priority, Reverse(*d)))
    }
}

/// The median of `values` (0 when empty).
pub fn median_ms(values: &[u64]) -> u64 {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    sorted.get(sorted.len() / 2).copied().unwrap_or(0)
}

/// Three projects on two hosts (issue 11's "three projects on two Macs"), plus a topic
/// nobody serves; `faults` adds a crash of the active device, a reader asleep and an id
/// reset.
pub fn standard_run(seed: u64, faults: bool) -> RoutingRun {
    RoutingRun {
        seed,
        devices: vec![
            SimDevice {
                host: 0,
                thread: Some(10),
                priority: 1,
            },
            SimDevice {
                host: 0,
                thread: Some(20),
                priority: 0,
            },
            SimDevice {
                host: 1,
                thread: Some(30),
                priority: 0,
            },
        ],
        topics: vec![Some(10), Some(20), Some(30), Some(40)],
        updates: 300,
        spacing_ms: 1_500,
        sync_median_ms: 2_800,
        crash_active_at_ms: faults.then_some(200_000),
        asleep: faults.then_some((2, 100_000, 400_000)),
        id_reset_at_ms: faults.then_some(300_000),
    }
}
