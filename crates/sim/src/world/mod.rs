//! The discrete-event world: devices running a [`DevicePolicy`], a lagging sync medium,
//! Telegram, and the fault schedule — plus the invariant checks and metric probes.
//!
//! Owns: true time (ms since the run began) and each host's clocks derived from it
//! (a sleep-counting monotonic clock with drift, a skewed wall clock); the per-device
//! replicas of the folder and the server copy between them; the Telegram server and
//! each device's Telegram adapter; the event queue. Must never: read a real clock, use
//! OS randomness, or let a policy see anything but its own replica and its inputs.
//!
//! The medium: a write lands in the writer's replica at once, reaches the server after
//! an upload delay, and every other host's replica after a further download delay.
//! Per file and destination the LATEST version wins: a version that arrives after a
//! newer one of the same file is dropped (iCloud syncs the current file, not a log), so
//! an earlier write never lands over a later one. The server keeps the last version to
//! ARRIVE (iCloud's "last writer wins"; a loser is overwritten everywhere). A host that
//! sleeps, is cut off, or whose uploads stall holds its transfers until it is back.
//!
//! Split along its seams: this file keeps the world's types, the event queue and its
//! loop (`step`), clocks, and the devices' lifecycle and actions; `medium.rs` the sync
//! medium, `faults.rs` the fault schedule carried out, `telegram.rs` the Telegram model
//! and each device's adapter, `probes.rs` the invariant checks and metrics. Why this
//! file is still over 600 lines: the event enum, the world's types and the loop that
//! dispatches every event read each other; separating the device lifecycle
//! (`start_device` … `apply`) into its own file is the next cut.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};

use rand::Rng;
use rand_chacha::ChaCha8Rng;

mod faults;
mod mail;
mod medium;
mod probes;
mod sleep_notice;
mod telegram;

use telegram::Telegram;

use super::metrics::{Incident, RunMetrics};
use super::model::{DelayModel, Fault, MINUTE_MS, SECOND_MS, Scenario, Target};
use super::policy::{Action, DevicePolicy, DeviceSpec};
use super::policy_kind::PolicyKind;
use baton_core::offsets::{Admission, OffsetLedger, StartPosition};
use baton_core::record::{self, NameKind};
use baton_core::timers::CONFLICT_BACKOFF;
use baton_core::{Event, FileObservation, FileState, Input, Moment};

/// Everything one run needs besides the scenario.
#[derive(Clone, Debug)]
pub struct RunConfig {
    pub policy: PolicyKind,
    pub delay: DelayModel,
    /// One-way delay under which dual activity is a bug (the baton's settle bound; the
    /// same classification is applied to both policies).
    pub settle_bound_ms: u64,
    /// How far before an incident a breach still excuses it (longest decision chain).
    pub lookback_ms: u64,
    /// After faults end (and the last delayed transfer lands), exactly one device must
    /// be acting from this long on.
    pub convergence_bound_ms: u64,
    /// How long "exactly one acting" is watched after the convergence bound.
    pub check_window_ms: u64,
    /// Lost notifications: observation waits for the backstop, at most this long.
    pub backstop_max_ms: u64,
    /// The baton's liveness of an active record (the lease the wake rule is about).
    pub lease_ms: u64,
    /// Records past this may be deleted by the active device.
    pub retention_ms: u64,
    /// A run that takes more events than this is a livelock.
    pub steps_max: u64,
    /// Print every device's transitions, messages and acting changes to stderr.
    pub trace: bool,
    /// Each device serves its own forum topic and updates are routed (`mail.rs`).
    pub routing: bool,
}

const TELEGRAM_RTT_MS: u64 = 150;
/// How stale getWebhookInfo's `pending_update_count` may be (an assumption: the Bot API
/// documents no figure; drawn uniformly per answer).
const WITNESS_LAG_MAX_MS: u64 = 2_000;
const LONG_POLL_MS: u64 = 25_000;
const INBOX_MAX: usize = 256;
const EXPIRE_PENDING_MS: u64 = 60 * MINUTE_MS;
const HANDOFF_EXPIRE_MS: u64 = 10 * MINUTE_MS;
/// Dual-active stretches less than this apart (409 back-offs) are one incident.
const INCIDENT_MERGE_GAP_MS: u64 = 60 * SECOND_MS;
/// Writer index for versions the medium itself makes (iCloud duplicates).
const MEDIUM: usize = usize::MAX;

#[derive(Clone, Debug)]
enum Ev {
    Start {
        device: usize,
    },
    Tick {
        device: usize,
        generation: u64,
    },
    Upload(Box<Transfer>),
    /// `dest` is a host: devices on one host share its folder.
    Download {
        dest: usize,
        transfer: Box<Transfer>,
    },
    Notify {
        dest: usize,
        incarnation: u32,
        name: String,
    },
    Fault(Fault),
    Restart {
        device: usize,
    },
    SleepStart {
        host: usize,
    },
    /// The OS announces the sleep that starts at `sleep_at_ms` (the lid closes).
    SleepNotice {
        host: usize,
        sleep_at_ms: u64,
    },
    Wake {
        host: usize,
    },
    PollResponse {
        device: usize,
        poll: u64,
        result: PollResult,
    },
    HeldTimeout {
        poll: u64,
    },
    AdapterWake {
        device: usize,
        incarnation: u32,
    },
    Answer {
        device: usize,
        incarnation: u32,
        event: Event,
    },
    Restore {
        host: usize,
        name: String,
    },
    /// A frozen process resumes.
    Thaw {
        device: usize,
        incarnation: u32,
    },
    FaultsEnd,
    /// Routing: a child fetches what it was handed (`mail.rs`).
    Mail(mail::MailEv),
    /// Nothing happens; the acting set is looked at (the convergence check begins).
    Observe,
    End,
}

#[derive(Clone, Debug)]
struct Transfer {
    name: String,
    text: Option<String>,
    /// Host of the writer ([`MEDIUM`] for the medium's own copies).
    writer: usize,
    /// Grows with every write in the world: orders versions written in the same ms.
    version: u64,
    write_ms: u64,
    /// Arrival as drawn plus cut-off postponement, ignoring sleep (for the bound).
    nominal_ms: u64,
}

/// One update in an answer: its id, its index in the order sent, and the `/activate`
/// target it carries, if any.
type Delivered = (i64, usize, Option<String>);

#[derive(Clone, Debug)]
enum PollResult {
    Updates(Vec<Delivered>),
    Empty,
    Conflict,
}

#[derive(Clone, Debug, Default)]
struct ReplicaFile {
    text: Option<String>,
    /// Version of the last local write (a download of an older version must not undo it).
    local_version: u64,
    arrived_ms: u64,
    /// Evicted: `Some(true)` a pre-Sonoma stub, `Some(false)` dataless in place.
    evicted: Option<(bool, u64)>,
}

/// A device's Telegram adapter: the REAL offset ledger (`core::offsets`), driven as the
/// poller drives it, minus the child (every update is handled at once).
#[derive(Clone, Debug, Default)]
struct Adapter {
    acting: bool,
    paused_until: Moment,
    backoff_until_ms: u64,
    outstanding: Option<u64>,
    /// The offset the outstanding poll was sent with.
    poll_offset: Option<i64>,
    ledger: Option<OffsetLedger>,
    /// A poll was due but the lease had run out: poll again once it is renewed.
    lease_blocked: bool,
}

impl Adapter {
    fn offset(&self) -> Option<i64> {
        self.ledger.as_ref().and_then(OffsetLedger::offset)
    }
}

struct Device {
    spec: DeviceSpec,
    host: usize,
    own_file: String,
    policy: Option<Box<dyn DevicePolicy>>,
    incarnation: u32,
    alive_since_ms: u64,
    tick_generation: u64,
    tick_at_ms: Option<u64>,
    adapter: Adapter,
    /// Woke past its lease: must not poll before a complete listing is delivered.
    must_revalidate: bool,
    last_write_local: Option<Moment>,
    /// Set by a clean stop: restart this long after the process exits.
    restart_after_exit_ms: Option<u64>,
    inbox: VecDeque<Event>,
    was_acting: bool,
    /// The process is frozen until then: events for it wait (in order) until it thaws.
    frozen_until_ms: Option<u64>,
}

#[derive(Clone, Debug, Default)]
struct Host {
    asleep_since_ms: Option<u64>,
    /// The host's copy of the folder, shared by every device on it.
    replica: BTreeMap<String, ReplicaFile>,
    /// Sync-unavailable windows (sleep, cut-off), merged and sorted; for postponement.
    sleep_windows: Vec<(u64, u64)>,
    cut_windows: Vec<(u64, u64)>,
    stall_windows: Vec<(u64, u64)>,
    /// The host's disk refuses writes.
    refuse_windows: Vec<(u64, u64)>,
    /// Announced sleeps: (start, notice before it).
    notices: Vec<(u64, u64)>,
    /// An announced sleep is coming (or under way): when it starts. Cleared at the wake.
    notice_until_ms: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PendingKind {
    Crash,
    Resign,
    Handoff,
    /// The acting device stopped because its host announced a sleep, or slept.
    SleepAnnounced,
    SleepUnannounced,
}

#[derive(Clone, Debug)]
struct PendingMeasure {
    kind: PendingKind,
    since_ms: u64,
    /// Crash/resign: the device that stopped; handoff: the target.
    device: usize,
    /// Crash: another process on the same host could see the pid vanish.
    same_host_witness: bool,
}

pub struct World {
    config: RunConfig,
    scenario: Scenario,
    now_ms: u64,
    sequence: u64,
    queue: BinaryHeap<Reverse<(u64, u64, usize)>>,
    slab: Vec<Option<Ev>>,
    free: Vec<usize>,
    hosts: Vec<Host>,
    devices: Vec<Device>,
    server: BTreeMap<String, (Option<String>, u64)>,
    /// Newest write time that has reached the server / each host, per file.
    upload_latest: BTreeMap<(String, usize), u64>,
    versions: u64,
    download_latest: BTreeMap<(String, usize), u64>,
    telegram: Telegram,
    rng: ChaCha8Rng,
    faults_over: bool,
    /// Latest arrival of a transfer drawn while faults were on.
    latest_faulty_arrival_ms: u64,
    check_from_ms: Option<u64>,
    end_ms: u64,
    breaches: Vec<(u64, u64)>,
    incident_start_ms: Option<u64>,
    /// End of the last dual-active stretch of the open incident (None while ongoing).
    incident_end_ms: Option<u64>,
    acting_count: usize,
    last_account_ms: u64,
    last_acting_change_ms: u64,
    pending: Vec<PendingMeasure>,
    /// Routing runs only.
    routing: Option<mail::Routing>,
    pub metrics: RunMetrics,
}

const EPOCH_MS: u64 = 1_750_000_000_000;

impl World {
    pub fn new(config: RunConfig, scenario: Scenario) -> Self {
        let rng = baton_core::seed::rng(scenario.seed, "medium");
        let routing = config.routing;
        let mut hosts: Vec<Host> = vec![Host::default(); scenario.hosts.len()];
        collect_windows(&scenario, &mut hosts);
        let devices = (0..scenario.devices)
            .map(|index| {
                let host = scenario.host_of[index];
                let mut spec = DeviceSpec::new(index, host);
                if config.routing {
                    spec.thread_id = mail::topic_of_device(index);
                }
                Device {
                    own_file: String::new(),
                    spec,
                    host,
                    policy: None,
                    incarnation: 0,
                    alive_since_ms: 0,
                    tick_generation: 0,
                    tick_at_ms: None,
                    adapter: Adapter::default(),
                    must_revalidate: false,
                    last_write_local: None,
                    restart_after_exit_ms: None,
                    inbox: VecDeque::new(),
                    was_acting: false,
                    frozen_until_ms: None,
                }
            })
            .collect();
        let mut world = World {
            config,
            now_ms: 0,
            sequence: 0,
            queue: BinaryHeap::new(),
            slab: Vec::new(),
            free: Vec::new(),
            hosts,
            devices,
            server: BTreeMap::new(),
            upload_latest: BTreeMap::new(),
            versions: 0,
            download_latest: BTreeMap::new(),
            telegram: Telegram::new(scenario.seed),
            rng,
            faults_over: false,
            latest_faulty_arrival_ms: 0,
            check_from_ms: None,
            end_ms: u64::MAX,
            breaches: Vec::new(),
            incident_start_ms: None,
            incident_end_ms: None,
            acting_count: 0,
            last_account_ms: 0,
            last_acting_change_ms: 0,
            pending: Vec::new(),
            routing: routing.then(|| World::routing_state(scenario.devices)),
            metrics: RunMetrics {
                runs: 1,
                ..RunMetrics::default()
            },
            scenario,
        };
        world.schedule_initial();
        world
    }

    fn schedule_initial(&mut self) {
        for device in 0..self.devices.len() {
            let at = self.scenario.start_ms[device];
            self.schedule(at, Ev::Start { device });
        }
        for (at, fault) in self.scenario.faults.clone() {
            match fault {
                Fault::Sleep { .. }
                | Fault::CutOff { .. }
                | Fault::Stall { .. }
                | Fault::RefuseWrites { .. } => {}
                other => self.schedule(at, Ev::Fault(other)),
            }
        }
        for host in 0..self.hosts.len() {
            for (start, end) in self.hosts[host].sleep_windows.clone() {
                self.schedule(start, Ev::SleepStart { host });
                self.schedule(end, Ev::Wake { host });
            }
            self.schedule_sleep_notices(host);
        }
        self.schedule(self.scenario.fault_end_ms, Ev::FaultsEnd);
    }

    fn schedule(&mut self, at_ms: u64, event: Ev) {
        let at_ms = at_ms.max(self.now_ms);
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slab[slot] = Some(event);
                slot
            }
            None => {
                self.slab.push(Some(event));
                self.slab.len() - 1
            }
        };
        self.sequence += 1;
        self.queue.push(Reverse((at_ms, self.sequence, slot)));
    }

    /// Runs to the end; returns the metrics (violations included).
    pub fn run(mut self) -> RunMetrics {
        let mut steps: u64 = 0;
        while let Some(Reverse((at_ms, _, slot))) = self.queue.pop() {
            let Some(event) = self.slab[slot].take() else {
                continue;
            };
            self.free.push(slot);
            self.now_ms = at_ms;
            if at_ms >= self.end_ms || matches!(event, Ev::End) {
                break;
            }
            steps += 1;
            if steps > self.config.steps_max {
                self.violation(format!(
                    "livelock: more than {} events before the end",
                    self.config.steps_max
                ));
                break;
            }
            self.step(event);
            self.observe_acting();
        }
        self.finish();
        self.metrics
    }

    fn violation(&mut self, message: String) {
        if self.metrics.violations.len() < 20 {
            let line = format!(
                "[{} seed {} t={:.1}s] {message}",
                self.config.policy.label(),
                self.scenario.seed,
                self.now_ms as f64 / 1000.0
            );
            self.metrics.violations.push(line);
        }
    }

    fn trace(&self, device: usize, line: &str) {
        if self.config.trace {
            eprintln!("{:>10.3}s d{device}: {line}", self.now_ms as f64 / 1000.0);
        }
    }

    fn is_baton(&self) -> bool {
        self.config.policy.is_baton()
    }

    // ---- clocks ---------------------------------------------------------------------

    fn local(&self, host: usize) -> Moment {
        let spec = self.scenario.hosts[host];
        let drift = self.now_ms as i64 * spec.drift_ppm / 1_000_000;
        Moment((spec.monotonic_origin_ms as i64 + self.now_ms as i64 + drift) as u64)
    }

    fn wall(&self, host: usize) -> u64 {
        let spec = self.scenario.hosts[host];
        let drift = self.now_ms as i64 * spec.drift_ppm / 1_000_000;
        (EPOCH_MS as i64 + self.now_ms as i64 + spec.skew_ms + drift) as u64
    }

    /// The true time at which `host`'s monotonic clock reads `at` (never earlier).
    fn true_time_of(&self, host: usize, at: Moment) -> u64 {
        let spec = self.scenario.hosts[host];
        let local_offset = at.0 as f64 - spec.monotonic_origin_ms as f64;
        let estimate = (local_offset * 1e6 / (1e6 + spec.drift_ppm as f64)).ceil();
        let mut true_ms = estimate.max(0.0) as u64;
        for _ in 0..4 {
            let drift = true_ms as i64 * spec.drift_ppm / 1_000_000;
            let reading = spec.monotonic_origin_ms as i64 + true_ms as i64 + drift;
            if reading >= at.0 as i64 {
                break;
            }
            true_ms += 1;
        }
        true_ms
    }

    fn awake(&self, device: usize) -> bool {
        self.hosts[self.devices[device].host]
            .asleep_since_ms
            .is_none()
    }

    fn running(&self, device: usize) -> bool {
        let dev = &self.devices[device];
        dev.policy.is_some() && dev.frozen_until_ms.is_none() && self.awake(device)
    }

    /// Polling, or would be: its adapter acts, not paused, inside its lease (the poller
    /// starts no getUpdates past the lease, as the real one does).
    fn acting(&self, device: usize) -> bool {
        let dev = &self.devices[device];
        let local = self.local(dev.host);
        self.running(device)
            && dev.adapter.acting
            && local >= dev.adapter.paused_until
            && local < self.lease_deadline(device)
    }

    fn lease_deadline(&self, device: usize) -> Moment {
        self.devices[device]
            .policy
            .as_ref()
            .map_or(Moment(0), |policy| policy.lease_deadline())
    }

    /// The device an event is for, when it is one a frozen process must wait for.
    fn addressee(event: &Ev) -> Option<usize> {
        match event {
            Ev::Tick { device, .. }
            | Ev::PollResponse { device, .. }
            | Ev::AdapterWake { device, .. }
            | Ev::Answer { device, .. } => Some(*device),
            Ev::Notify { dest, .. } => Some(*dest),
            _ => None,
        }
    }

    // ---- the event dispatcher ----------------------------------------------------------

    fn step(&mut self, event: Ev) {
        if let Some(device) = Self::addressee(&event)
            && let Some(until) = self.devices[device].frozen_until_ms
        {
            // Waits for the thaw; rescheduled in arrival order, after the thaw itself.
            self.schedule(until, event);
            return;
        }
        match event {
            Ev::Start { device } => self.start_device(device),
            Ev::Restart { device } => {
                if self.devices[device].policy.is_none() {
                    self.start_device(device);
                }
            }
            Ev::Tick { device, generation } => self.tick(device, generation),
            Ev::Upload(transfer) => self.upload_arrived(*transfer),
            Ev::Download { dest, transfer } => self.download_arrived(dest, *transfer),
            Ev::Notify {
                dest,
                incarnation,
                name,
            } => self.notify(dest, incarnation, &name),
            Ev::Fault(fault) => self.fault(fault),
            Ev::SleepStart { host } => self.sleep(host),
            Ev::SleepNotice { host, sleep_at_ms } => self.sleep_notice(host, sleep_at_ms),
            Ev::Wake { host } => self.wake(host),
            Ev::PollResponse {
                device,
                poll,
                result,
            } => self.poll_response(device, poll, result),
            Ev::HeldTimeout { poll } => {
                if let Some((device, held)) = self.telegram.held
                    && held == poll
                {
                    self.telegram.held = None;
                    self.respond(device, poll, PollResult::Empty);
                }
            }
            Ev::AdapterWake {
                device,
                incarnation,
            } => {
                if self.devices[device].incarnation == incarnation {
                    self.maybe_poll(device);
                }
            }
            Ev::Answer {
                device,
                incarnation,
                event,
            } => {
                if self.devices[device].incarnation == incarnation && self.running(device) {
                    if matches!(event, Event::Witnessed { .. })
                        && !self.devices[device].adapter.acting
                    {
                        self.metrics.standby_witness_wakeups += 1;
                    }
                    self.deliver(device, event);
                }
            }
            Ev::Restore { host, name } => self.restore(host, &name),
            Ev::Thaw {
                device,
                incarnation,
            } => self.thaw(device, incarnation),
            Ev::FaultsEnd => self.faults_end(),
            Ev::Mail(event) => self.mail_event(event),
            Ev::Observe | Ev::End => {}
        }
    }

    fn start_device(&mut self, device: usize) {
        let dev = &mut self.devices[device];
        dev.incarnation += 1;
        let component = format!("device {device} incarnation {}", dev.incarnation);
        let core_seed = baton_core::seed::derive(self.scenario.seed, &component);
        let policy = self
            .config
            .policy
            .spawn(&dev.spec, dev.incarnation, core_seed);
        dev.own_file = policy.own_file();
        dev.policy = Some(policy);
        dev.alive_since_ms = self.now_ms;
        dev.adapter = Adapter::default();
        dev.must_revalidate = false;
        dev.last_write_local = None;
        dev.restart_after_exit_ms = None;
        dev.tick_at_ms = None;
        dev.inbox.clear();
        self.mail_on_start(device);
        if self.awake(device) {
            self.deliver(device, Event::Start);
            self.check_mail(device);
        } else {
            // Starts frozen; the wake delivers its first input.
            self.devices[device].inbox.push_back(Event::Start);
        }
    }

    fn tick(&mut self, device: usize, generation: u64) {
        if self.devices[device].tick_generation != generation {
            return;
        }
        if !self.running(device) {
            // Asleep: the deadline is re-armed by the input delivered at wake-up.
            self.devices[device].tick_at_ms = None;
            return;
        }
        self.devices[device].tick_at_ms = None;
        if !self.devices[device].adapter.acting {
            self.metrics.standby_timer_wakeups += 1;
        }
        self.deliver(device, Event::Tick);
        self.check_mail(device);
    }

    /// Delivers one input and everything it causes synchronously (answers to Rescan and
    /// ProbePid), bounded by [`INBOX_MAX`].
    fn deliver(&mut self, device: usize, event: Event) {
        self.devices[device].inbox.push_back(event);
        let mut handled = 0;
        while let Some(event) = self.devices[device].inbox.pop_front() {
            handled += 1;
            if handled > INBOX_MAX {
                self.violation(format!(
                    "device {device}: more than {INBOX_MAX} inputs caused by one"
                ));
                self.devices[device].inbox.clear();
                break;
            }
            if !self.running(device) {
                self.devices[device].inbox.clear();
                return;
            }
            if matches!(event, Event::Scanned { .. }) {
                self.devices[device].must_revalidate = false;
            }
            let host = self.devices[device].host;
            let input = Input {
                at: self.local(host),
                wall_ms: self.wall(host),
                event,
            };
            let mut actions = Vec::new();
            if let Some(policy) = self.devices[device].policy.as_mut() {
                policy.handle(input, &mut actions);
            }
            for action in actions {
                self.apply(device, action);
            }
        }
        self.reschedule_tick(device);
        if self.devices[device].adapter.lease_blocked {
            self.maybe_poll(device);
        }
    }

    fn reschedule_tick(&mut self, device: usize) {
        let dev = &self.devices[device];
        let Some(policy) = dev.policy.as_ref() else {
            return;
        };
        let next = policy
            .next_timeout()
            .map(|at| self.true_time_of(dev.host, at));
        if next == dev.tick_at_ms {
            return;
        }
        let dev = &mut self.devices[device];
        dev.tick_generation += 1;
        dev.tick_at_ms = next;
        let generation = dev.tick_generation;
        if let Some(at) = next {
            self.schedule(at, Ev::Tick { device, generation });
        }
    }

    fn apply(&mut self, device: usize, action: Action) {
        match action {
            Action::Write { name, text, seq } => self.write(device, name, text, seq),
            Action::Delete { name } => self.delete(device, name),
            Action::StartActing {
                skip_through,
                also_handled,
            } => {
                if !self.devices[device].adapter.acting {
                    self.on_takeover(device);
                }
                let adapter = &mut self.devices[device].adapter;
                adapter.acting = true;
                let start = StartPosition {
                    skip_through: skip_through.unwrap_or(0),
                    also_handled,
                };
                adapter.ledger = Some(OffsetLedger::new(&start, 0));
                self.maybe_poll(device);
            }
            Action::StopActing => self.stop_acting(device),
            Action::PauseActing { until } => {
                self.devices[device].adapter.paused_until = until;
                let host = self.devices[device].host;
                let at = self.true_time_of(host, until);
                let incarnation = self.devices[device].incarnation;
                self.cancel_poll(device);
                self.schedule(
                    at,
                    Ev::AdapterWake {
                        device,
                        incarnation,
                    },
                );
            }
            Action::Rescan => {
                let files = self.listing(device);
                self.devices[device]
                    .inbox
                    .push_back(Event::Scanned { files });
            }
            Action::RequestDownload { name } => {
                let real = real_name(&name);
                let delay = self.rng.random_range(SECOND_MS..=10 * SECOND_MS);
                let host = self.devices[device].host;
                self.schedule(self.now_ms + delay, Ev::Restore { host, name: real });
            }
            Action::ProbePid { stem, pid } => {
                let host = self.devices[device].host;
                let alive = self.devices.iter().any(|other| {
                    other.host == host
                        && other.policy.is_some()
                        && PolicyKind::pid(&other.spec, other.incarnation) == pid
                });
                self.devices[device]
                    .inbox
                    .push_back(Event::PidProbed { stem, pid, alive });
            }
            Action::AskWitness => self.ask_witness(device),
            Action::Exit => self.exit(device),
            Action::AllowSleep => {}
            Action::Bug { message } => self.violation(format!("device {device}: {message}")),
            Action::Trace { line } => self.trace(device, &line),
        }
    }
}

/// Moves `at` past the end of any window containing it.
fn postpone(windows: &[(u64, u64)], at: u64) -> u64 {
    let mut at = at;
    for (start, end) in windows {
        if *start <= at && at < *end {
            at = *end;
        }
    }
    at
}

fn merge_windows(mut windows: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    windows.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(windows.len());
    for (start, end) in windows {
        match merged.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    merged
}

fn collect_windows(scenario: &Scenario, hosts: &mut [Host]) {
    let end = scenario.fault_end_ms;
    let mut sleeps = vec![Vec::new(); hosts.len()];
    let mut cuts = vec![Vec::new(); hosts.len()];
    let mut stalls = vec![Vec::new(); hosts.len()];
    let mut refusals = vec![Vec::new(); hosts.len()];
    for (at, fault) in &scenario.faults {
        match fault {
            Fault::Sleep {
                host,
                duration_ms,
                notice_ms,
            } => {
                sleeps[*host].push((*at, (*at + duration_ms).min(end)));
                if let Some(notice_ms) = notice_ms {
                    hosts[*host].notices.push((*at, *notice_ms));
                }
            }
            Fault::CutOff { host, duration_ms } => {
                cuts[*host].push((*at, (*at + duration_ms).min(end)))
            }
            Fault::Stall { host, duration_ms } => {
                stalls[*host].push((*at, (*at + duration_ms).min(end)))
            }
            Fault::RefuseWrites { host, duration_ms } => {
                refusals[*host].push((*at, (*at + duration_ms).min(end)))
            }
            _ => {}
        }
    }
    for (host, state) in hosts.iter_mut().enumerate() {
        state.sleep_windows = merge_windows(std::mem::take(&mut sleeps[host]));
        state.cut_windows = merge_windows(std::mem::take(&mut cuts[host]));
        state.stall_windows = merge_windows(std::mem::take(&mut stalls[host]));
        state.refuse_windows = merge_windows(std::mem::take(&mut refusals[host]));
    }
}

fn stub_name(name: &str) -> String {
    format!(".{name}.icloud")
}

fn real_name(name: &str) -> String {
    name.strip_prefix('.')
        .and_then(|rest| rest.strip_suffix(".icloud"))
        .unwrap_or(name)
        .to_string()
}
