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

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::metrics::{Incident, RunMetrics};
use super::model::{DelayModel, Fault, MINUTE_MS, SECOND_MS, Scenario, Target};
use super::policy::{Action, DevicePolicy, DeviceSpec};
use super::policy_kind::PolicyKind;
use baton_core::offsets::{Admission, OffsetLedger, StartPosition};
use baton_core::record::{self, NameKind};
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
}

const TELEGRAM_RTT_MS: u64 = 150;
/// How stale getWebhookInfo's `pending_update_count` may be (an assumption: the Bot API
/// documents no figure; drawn uniformly per answer).
const WITNESS_LAG_MAX_MS: u64 = 2_000;
const LONG_POLL_MS: u64 = 25_000;
const CONFLICT_BACKOFF_MS: (u64, u64) = (3_000, 6_000);
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
}

#[derive(Clone, Debug)]
struct Telegram {
    /// Unconfirmed updates by id: (index in the order sent, activation target).
    pending: BTreeMap<i64, (usize, Option<String>)>,
    /// The id the next update gets. Real ids are in the hundreds of millions, and a
    /// restart picks one at random among two billion; so do these.
    next_id: i64,
    /// By index in the order sent.
    sent_ms: Vec<u64>,
    handled: Vec<u32>,
    held: Option<(usize, u64)>,
    next_poll: u64,
    /// Ids start over at the next message sent while nothing is unconfirmed.
    restart_due: bool,
    /// Draws the ids, apart from the world's rng, so that runs without a restart are
    /// the runs they always were.
    ids_rng: ChaCha8Rng,
    /// Updates confirmed lately: (sent, confirmed), for `pending_update_count`'s lag.
    confirmed_recent: VecDeque<(u64, u64)>,
    /// Draws the witness's lag, apart from the world's rng (runs without a witness stay
    /// the runs they were).
    witness_rng: ChaCha8Rng,
}

/// Telegram's ids are positive 32-bit integers.
const UPDATE_ID_RANGE: std::ops::Range<i64> = 1..(1 << 31);

impl Telegram {
    fn new(seed: u64) -> Self {
        let mut ids_rng = ChaCha8Rng::seed_from_u64(seed ^ 0x7465_6c65_6772_616d);
        Telegram {
            pending: BTreeMap::new(),
            next_id: ids_rng.random_range(100_000_000..1_000_000_000),
            sent_ms: Vec::new(),
            handled: Vec::new(),
            held: None,
            next_poll: 0,
            restart_due: false,
            ids_rng,
            confirmed_recent: VecDeque::new(),
            witness_rng: ChaCha8Rng::seed_from_u64(seed ^ 0x7769_746e_6573_7321),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PendingKind {
    Crash,
    Resign,
    Handoff,
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
    pub metrics: RunMetrics,
}

const EPOCH_MS: u64 = 1_750_000_000_000;

impl World {
    pub fn new(config: RunConfig, scenario: Scenario) -> Self {
        let rng = ChaCha8Rng::seed_from_u64(scenario.seed ^ 0x6d65_6469_756d);
        let mut hosts: Vec<Host> = vec![Host::default(); scenario.hosts.len()];
        collect_windows(&scenario, &mut hosts);
        let devices = (0..scenario.devices)
            .map(|index| {
                let host = scenario.host_of[index];
                let spec = DeviceSpec::new(index, host);
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
        matches!(
            self.config.policy,
            PolicyKind::Baton(_) | PolicyKind::Witness(..)
        )
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
            Ev::Observe | Ev::End => {}
        }
    }

    fn start_device(&mut self, device: usize) {
        let dev = &mut self.devices[device];
        dev.incarnation += 1;
        let core_seed = self
            .scenario
            .seed
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .wrapping_add((device as u64) << 20 | u64::from(dev.incarnation));
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
        if self.awake(device) {
            self.deliver(device, Event::Start);
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
            Action::Bug { message } => self.violation(format!("device {device}: {message}")),
            Action::Trace { line } => self.trace(device, &line),
        }
    }

    // ---- the medium ------------------------------------------------------------------

    fn replica(&self, device: usize) -> &BTreeMap<String, ReplicaFile> {
        &self.hosts[self.devices[device].host].replica
    }

    fn refusing_writes(&self, device: usize) -> bool {
        let host = &self.hosts[self.devices[device].host];
        host.refuse_windows
            .iter()
            .any(|(start, end)| *start <= self.now_ms && self.now_ms < *end)
    }

    /// A write the device asked for: it lands (and is answered `RecordWritten` when it
    /// carries a seq), or the host's disk refuses it (`RecordWriteFailed`).
    fn write(&mut self, device: usize, name: String, text: String, seq: Option<u64>) {
        if self.refusing_writes(device) {
            self.trace(device, &format!("write {name} refused by the disk"));
            if let Some(seq) = seq {
                let reason = format!("cannot write {name}: Read-only file system (os error 30)");
                self.devices[device]
                    .inbox
                    .push_back(Event::RecordWriteFailed { seq, reason });
            }
            return;
        }
        self.write_landed(device, name, Some(text));
        if let Some(seq) = seq {
            self.devices[device]
                .inbox
                .push_back(Event::RecordWritten { seq });
        }
    }

    fn write_landed(&mut self, device: usize, name: String, text: Option<String>) {
        if self.config.trace {
            let seq = text
                .as_deref()
                .and_then(|t| t.split("\"seq\": ").nth(1))
                .and_then(|t| t.split(',').next())
                .unwrap_or("-");
            self.trace(device, &format!("write {name} seq {seq}"));
        }
        let own = self.devices[device].own_file.clone();
        let shared = name == super::seed_policy::STATE_FILE && !self.is_baton();
        if name != own && !shared {
            self.violation(format!(
                "device {device} wrote {name}, not its own file {own}"
            ));
        }
        if shared {
            self.metrics.writes_shared_file += 1;
        }
        if self.devices[device].adapter.acting {
            self.metrics.writes_active += 1;
        } else {
            self.metrics.writes_standby += 1;
        }
        let host = self.devices[device].host;
        self.devices[device].last_write_local = Some(self.local(host));
        self.write_local(device, name, text);
    }

    fn delete(&mut self, device: usize, name: String) {
        let own_stem = record::file_stem(&self.devices[device].spec.device_id);
        let allowed = match record::classify_name(&name) {
            NameKind::ConflictCopy { stem } => stem == own_stem,
            NameKind::Record { .. } => {
                let last_write = self.last_server_write(&name);
                self.devices[device].adapter.acting
                    && self.now_ms.saturating_sub(last_write) > self.config.retention_ms
            }
            _ => false,
        };
        if !allowed {
            self.violation(format!(
                "device {device} deleted {name}, which is not its to delete"
            ));
        }
        if !self.refusing_writes(device) {
            self.write_local(device, name, None);
        }
    }

    /// The change lands in the host's folder at once (devices on the same host share
    /// it and hear of it through the watcher), then goes up to the server.
    fn write_local(&mut self, device: usize, name: String, text: Option<String>) {
        let host = self.devices[device].host;
        let now = self.now_ms;
        let entry = self.hosts[host].replica.entry(name.clone()).or_default();
        entry.text = text.clone();
        entry.local_version = self.versions + 1;
        entry.arrived_ms = now;
        entry.evicted = None;
        for neighbour in 0..self.devices.len() {
            if neighbour != device && self.devices[neighbour].host == host {
                self.notify_later(neighbour, &name);
            }
        }
        self.send_upload(host, name, text);
    }

    fn notify_later(&mut self, device: usize, name: &str) {
        let latency = self
            .rng
            .random_range(0..=self.config.delay.notification_latency_ms_max);
        let incarnation = self.devices[device].incarnation;
        self.schedule(
            self.now_ms + latency,
            Ev::Notify {
                dest: device,
                incarnation,
                name: name.to_string(),
            },
        );
    }

    fn last_server_write(&self, name: &str) -> u64 {
        self.server.get(name).map_or(0, |(_, at)| *at)
    }

    fn send_upload(&mut self, writer_host: usize, name: String, text: Option<String>) {
        let drawn = self.config.delay.upload_ms(&mut self.rng, self.faults_over);
        let windows = &self.hosts[writer_host];
        let nominal = postpone(
            &windows.cut_windows,
            postpone(&windows.stall_windows, self.now_ms + drawn),
        );
        let arrival = self.postpone_all(writer_host, nominal);
        self.note_arrival(arrival);
        if nominal - self.now_ms > self.config.settle_bound_ms {
            // Known in advance; a version later superseded counts too: its readers did
            // not see that state in time.
            self.breaches.push((self.now_ms, nominal));
        }
        self.versions += 1;
        let transfer = Transfer {
            version: self.versions,
            name,
            text,
            writer: writer_host,
            write_ms: self.now_ms,
            nominal_ms: nominal,
        };
        self.schedule(arrival, Ev::Upload(Box::new(transfer)));
    }

    fn note_arrival(&mut self, arrival: u64) {
        if !self.faults_over {
            self.latest_faulty_arrival_ms = self.latest_faulty_arrival_ms.max(arrival);
        }
    }

    fn postpone_all(&self, host: usize, at: u64) -> u64 {
        let mut at = at;
        let windows = &self.hosts[host];
        for _ in 0..8 {
            let next = postpone(
                &windows.stall_windows,
                postpone(&windows.cut_windows, postpone(&windows.sleep_windows, at)),
            );
            if next == at {
                break;
            }
            at = next;
        }
        at
    }

    fn upload_arrived(&mut self, transfer: Transfer) {
        let key = (transfer.name.clone(), transfer.writer);
        let latest = self.upload_latest.entry(key).or_insert(0);
        if *latest > transfer.version {
            return; // superseded by a newer version of the same file
        }
        *latest = transfer.version;
        self.server.insert(
            transfer.name.clone(),
            (transfer.text.clone(), transfer.write_ms),
        );
        for dest in 0..self.hosts.len() {
            if dest == transfer.writer {
                continue;
            }
            let drawn = self.config.delay.download_ms(&mut self.rng);
            let bound = self.config.settle_bound_ms;
            let nominal_raw = transfer.nominal_ms.max(self.now_ms) + drawn;
            let nominal = if transfer.write_ms >= self.scenario.fault_end_ms {
                // After faults: delays stay within the bound (the convergence check's premise).
                nominal_raw.min(transfer.write_ms + bound)
            } else {
                postpone(&self.hosts[dest].cut_windows, nominal_raw)
            };
            let arrival = self.postpone_all(dest, nominal.max(self.now_ms));
            self.note_arrival(arrival);
            let delay = nominal.saturating_sub(transfer.write_ms);
            self.metrics.delays.add(delay);
            if delay > bound {
                self.breaches.push((transfer.write_ms, nominal));
            }
            let transfer = Box::new(Transfer {
                nominal_ms: nominal,
                ..transfer.clone()
            });
            self.schedule(arrival, Ev::Download { dest, transfer });
        }
    }

    fn download_arrived(&mut self, host: usize, transfer: Transfer) {
        let now = self.now_ms;
        let latest = self
            .download_latest
            .entry((transfer.name.clone(), host))
            .or_insert(0);
        if *latest > transfer.version {
            return; // superseded: a newer version of the file is already here
        }
        *latest = transfer.version;
        if self.config.trace {
            eprintln!(
                "{:>10.3}s host{host}: {} written at {:.3}s arrives",
                now as f64 / 1000.0,
                transfer.name,
                transfer.write_ms as f64 / 1000.0
            );
        }
        let entry = self.hosts[host]
            .replica
            .entry(transfer.name.clone())
            .or_default();
        if entry.local_version > transfer.version {
            return; // our own later write is on its way and will win at the server
        }
        entry.text = transfer.text;
        entry.arrived_ms = now;
        if let Some((_, since)) = entry.evicted.take() {
            self.breaches.push((since, now));
        }
        for device in 0..self.devices.len() {
            if self.devices[device].host != host || !self.running(device) {
                continue;
            }
            let lose = !self.faults_over
                && self
                    .rng
                    .random_bool(self.config.delay.notification_loss_share);
            if lose {
                self.trace(device, "notification lost");
                self.metrics.lost_notifications += 1;
                self.breaches
                    .push((transfer.write_ms, now + self.config.backstop_max_ms));
                continue;
            }
            self.notify_later(device, &transfer.name);
        }
    }

    fn observation(&self, device: usize, name: &str) -> FileObservation {
        match self.replica(device).get(name) {
            Some(ReplicaFile {
                text: Some(_),
                evicted: Some((true, _)),
                ..
            }) => FileObservation {
                name: stub_name(name),
                state: FileState::Contents {
                    text: "bplist00 (stub)".into(),
                },
            },
            Some(ReplicaFile {
                text: Some(_),
                evicted: Some((false, _)),
                ..
            }) => FileObservation {
                name: name.to_string(),
                state: FileState::Dataless,
            },
            Some(ReplicaFile {
                text: Some(text), ..
            }) => FileObservation {
                name: name.to_string(),
                state: FileState::Contents { text: text.clone() },
            },
            _ => FileObservation {
                name: name.to_string(),
                state: FileState::Gone,
            },
        }
    }

    fn listing(&self, device: usize) -> Vec<FileObservation> {
        self.replica(device)
            .iter()
            .filter(|(_, file)| file.text.is_some())
            .map(|(name, _)| self.observation(device, name))
            .collect()
    }

    fn notify(&mut self, dest: usize, incarnation: u32, name: &str) {
        if self.devices[dest].incarnation != incarnation || !self.running(dest) {
            return;
        }
        if !self.devices[dest].adapter.acting {
            self.metrics.standby_file_events += 1;
        }
        let file = self.observation(dest, name);
        if self.config.trace {
            let line = format!(
                "notified of {name}: {}",
                serde_json::to_string(&file).unwrap_or_default()
            );
            self.trace(dest, &line[..line.len().min(300)]);
        }
        self.deliver(dest, Event::FileChanged { file });
    }

    fn restore(&mut self, host: usize, name: &str) {
        let now = self.now_ms;
        let Some(entry) = self.hosts[host].replica.get_mut(name) else {
            return;
        };
        let Some((_, since)) = entry.evicted.take() else {
            return;
        };
        self.breaches.push((since, now));
        for device in 0..self.devices.len() {
            if self.devices[device].host == host {
                self.notify_later(device, name);
            }
        }
    }

    // ---- faults ------------------------------------------------------------------------

    fn resolve(&self, target: Target) -> Option<usize> {
        match target {
            Target::Acting => (0..self.devices.len()).find(|d| self.acting(*d)),
            Target::Device(device) => Some(device),
        }
    }

    fn fault(&mut self, fault: Fault) {
        if self.faults_over && !matches!(fault, Fault::Message) {
            return;
        }
        match fault {
            Fault::Crash { target, down_ms } => {
                let Some(device) = self.resolve(target) else {
                    return;
                };
                if self.devices[device].policy.is_none() {
                    return;
                }
                if self.acting(device) {
                    let host = self.devices[device].host;
                    let same_host_witness = (0..self.devices.len())
                        .any(|other| other != device && self.devices[other].host == host);
                    self.pending.push(PendingMeasure {
                        kind: PendingKind::Crash,
                        since_ms: self.now_ms,
                        device,
                        same_host_witness,
                    });
                }
                self.kill(device);
                self.schedule(self.now_ms + down_ms, Ev::Restart { device });
            }
            Fault::Resign { down_ms } => {
                let Some(device) = self.resolve(Target::Acting) else {
                    return;
                };
                self.pending.push(PendingMeasure {
                    kind: PendingKind::Resign,
                    since_ms: self.now_ms,
                    device,
                    same_host_witness: false,
                });
                self.devices[device].restart_after_exit_ms = Some(down_ms);
                self.deliver(device, Event::ShutdownAsked);
            }
            Fault::Evict { device, stub } => self.evict(device, stub),
            Fault::Duplicate { device } => self.duplicate(device),
            Fault::Message => self.send_update(None),
            Fault::Activate { device } => self.ask_activation(device),
            Fault::IdReset => self.telegram.restart_due = true,
            Fault::Freeze {
                target,
                duration_ms,
            } => self.freeze(target, duration_ms),
            Fault::Sleep { .. }
            | Fault::CutOff { .. }
            | Fault::Stall { .. }
            | Fault::RefuseWrites { .. } => {}
        }
    }

    /// Freezes a running process (SIGSTOP): its connection to Telegram stays open, so a
    /// poll it sent may be answered meanwhile; the answer waits for it, as everything
    /// else does. Skipped when the host sleeps during it (a sleep is its own fault).
    fn freeze(&mut self, target: Target, duration_ms: u64) {
        let Some(device) = self.resolve(target) else {
            return;
        };
        let until = self.now_ms + duration_ms;
        let host = &self.hosts[self.devices[device].host];
        let sleeps = host
            .sleep_windows
            .iter()
            .any(|(start, end)| *start < until && self.now_ms < *end);
        if !self.running(device) || sleeps {
            return;
        }
        self.trace(device, &format!("frozen for {duration_ms}ms"));
        self.devices[device].frozen_until_ms = Some(until);
        let incarnation = self.devices[device].incarnation;
        self.schedule(
            until,
            Ev::Thaw {
                device,
                incarnation,
            },
        );
    }

    /// The process resumes. Its clocks ran on without drifting apart: no sleep is seen.
    /// What waited for it follows in order: a poll answer may come before the run
    /// loop's overdue timer (the poller is its own task), the worst case for the lease.
    fn thaw(&mut self, device: usize, incarnation: u32) {
        if self.devices[device].incarnation != incarnation
            || self.devices[device].frozen_until_ms.take().is_none()
        {
            return;
        }
        let local = self.local(self.devices[device].host);
        if self.is_baton() && local >= self.lease_deadline(device) {
            self.devices[device].must_revalidate = true;
        }
        self.trace(device, "thawed");
        self.schedule(
            self.now_ms,
            Ev::Answer {
                device,
                incarnation,
                event: Event::Tick,
            },
        );
    }

    fn kill(&mut self, device: usize) {
        self.cancel_poll(device);
        let dev = &mut self.devices[device];
        dev.policy = None;
        dev.adapter = Adapter::default();
        dev.inbox.clear();
        dev.tick_at_ms = None;
        dev.tick_generation += 1;
        dev.frozen_until_ms = None;
    }

    fn exit(&mut self, device: usize) {
        let down_ms = self.devices[device].restart_after_exit_ms.take();
        self.kill(device);
        let down_ms = down_ms.unwrap_or(10 * MINUTE_MS);
        self.schedule(self.now_ms + down_ms, Ev::Restart { device });
    }

    fn evict(&mut self, device: usize, stub: bool) {
        let own = self.devices[device].own_file.clone();
        let host = self.devices[device].host;
        let now = self.now_ms;
        let candidates: Vec<String> = self.hosts[host]
            .replica
            .iter()
            .filter(|(name, file)| {
                **name != own
                    && file.text.is_some()
                    && file.evicted.is_none()
                    && now.saturating_sub(file.arrived_ms) >= 60 * MINUTE_MS
            })
            .map(|(name, _)| name.clone())
            .collect();
        if candidates.is_empty() {
            return;
        }
        let name = candidates[self.rng.random_range(0..candidates.len())].clone();
        if let Some(file) = self.hosts[host].replica.get_mut(&name) {
            file.evicted = Some((stub, now));
        }
        for neighbour in 0..self.devices.len() {
            if self.devices[neighbour].host == host {
                self.notify_later(neighbour, &name);
            }
        }
    }

    fn duplicate(&mut self, device: usize) {
        let name = self.devices[device].own_file.clone();
        let Some((Some(text), _)) = self.server.get(&name).cloned() else {
            return;
        };
        let copy = match name.strip_suffix(".json") {
            Some(stem) => format!("{stem} 2.json"),
            None => format!("{name} 2"),
        };
        self.versions += 1;
        let transfer = Transfer {
            version: self.versions,
            name: copy,
            text: Some(text),
            writer: MEDIUM,
            write_ms: self.now_ms,
            nominal_ms: self.now_ms,
        };
        self.upload_arrived(transfer);
    }

    fn sleep(&mut self, host: usize) {
        if self.hosts[host].asleep_since_ms.is_some() {
            return;
        }
        self.hosts[host].asleep_since_ms = Some(self.now_ms);
        for device in 0..self.devices.len() {
            if self.devices[device].host == host {
                // The process freezes: its TCP connection to Telegram dies with the poll.
                self.cancel_poll(device);
            }
        }
    }

    fn wake(&mut self, host: usize) {
        let Some(since) = self.hosts[host].asleep_since_ms.take() else {
            return;
        };
        let slept_ms = self.now_ms - since;
        let local = self.local(host);
        for device in 0..self.devices.len() {
            if self.devices[device].host != host || self.devices[device].policy.is_none() {
                continue;
            }
            let lease_end = self.devices[device]
                .last_write_local
                .map(|at| at.0 + self.config.lease_ms);
            if lease_end.is_some_and(|end| local.0 >= end) {
                self.devices[device].must_revalidate = true;
            }
            self.trace(device, &format!("woke after {slept_ms}ms"));
            let queued: Vec<Event> = self.devices[device].inbox.drain(..).collect();
            let first = if queued.contains(&Event::Start) {
                Event::Start
            } else {
                Event::Woke { slept_ms }
            };
            self.deliver(device, first);
            self.maybe_poll(device);
        }
    }

    fn faults_end(&mut self) {
        self.faults_over = true;
        for device in 0..self.devices.len() {
            if self.devices[device].frozen_until_ms.is_some() {
                let incarnation = self.devices[device].incarnation;
                self.thaw(device, incarnation);
            }
        }
        for host in 0..self.hosts.len() {
            if self.hosts[host].asleep_since_ms.is_some() {
                self.wake(host);
            }
        }
        for device in 0..self.devices.len() {
            if self.devices[device].policy.is_none() {
                self.schedule(self.now_ms, Ev::Restart { device });
            }
        }
        let settled = self
            .latest_faulty_arrival_ms
            .max(self.now_ms)
            .saturating_add(self.config.settle_bound_ms);
        let check_from = settled + self.config.convergence_bound_ms;
        self.check_from_ms = Some(check_from);
        self.end_ms = check_from + self.config.check_window_ms;
        self.schedule(self.end_ms, Ev::End);
        self.schedule(check_from, Ev::Observe);
    }

    // ---- Telegram ------------------------------------------------------------------------

    fn send_update(&mut self, activate: Option<String>) {
        let telegram = &mut self.telegram;
        if telegram.restart_due && telegram.pending.is_empty() {
            // "The identifier of the next update will be chosen randomly."
            telegram.restart_due = false;
            telegram.next_id = telegram.ids_rng.random_range(UPDATE_ID_RANGE);
            self.metrics.telegram_id_restarts += 1;
            if self.config.trace {
                eprintln!(
                    "[{:>10.3}s] telegram ids start over at {}",
                    self.now_ms as f64 / 1000.0,
                    telegram.next_id
                );
            }
        }
        let id = telegram.next_id;
        telegram.next_id += 1;
        let index = telegram.sent_ms.len();
        telegram.sent_ms.push(self.now_ms);
        telegram.handled.push(0);
        telegram.pending.insert(id, (index, activate.clone()));
        self.metrics.updates_sent += 1;
        if let Some((device, poll)) = self.telegram.held.take() {
            self.respond(
                device,
                poll,
                PollResult::Updates(vec![(id, index, activate)]),
            );
        }
    }

    fn ask_activation(&mut self, target: usize) {
        let active = (0..self.devices.len()).find(|d| self.acting(*d));
        let eligible = active.is_some_and(|a| a != target)
            && self.running(target)
            && !self.devices[target].adapter.acting
            && self
                .now_ms
                .saturating_sub(self.devices[target].alive_since_ms)
                > 2 * MINUTE_MS;
        if eligible {
            self.pending.push(PendingMeasure {
                kind: PendingKind::Handoff,
                since_ms: self.now_ms,
                device: target,
                same_host_witness: false,
            });
        }
        let id = self.devices[target].spec.device_id.clone();
        self.send_update(Some(id));
    }

    fn respond(&mut self, device: usize, poll: u64, result: PollResult) {
        if matches!(result, PollResult::Conflict) {
            self.metrics.conflicts_409 += 1;
        }
        self.schedule(
            self.now_ms + TELEGRAM_RTT_MS / 2,
            Ev::PollResponse {
                device,
                poll,
                result,
            },
        );
    }

    /// getUpdates(offset) as the server sees it: confirm below the offset (an offset
    /// above every id given out confirms nothing, as on the real server after its ids
    /// started over), answer the older waiting poll with 409, then answer now or hold.
    fn get_updates(&mut self, device: usize, offset: Option<i64>, hold: bool) -> Option<u64> {
        if let Some(offset) = offset.filter(|offset| *offset <= self.telegram.next_id) {
            let confirmed: Vec<(i64, usize)> = self
                .telegram
                .pending
                .range(..offset)
                .map(|(id, (index, _))| (*id, *index))
                .collect();
            for (id, index) in confirmed {
                self.telegram.pending.remove(&id);
                let sent_ms = self.telegram.sent_ms[index];
                self.note_confirmed(sent_ms);
                if self.telegram.handled[index] == 0 {
                    self.metrics.updates_lost += 1;
                    self.violation_if_baton(format!("update {id} confirmed without being handled"));
                }
            }
        }
        if let Some((other, poll)) = self.telegram.held.take() {
            self.respond(other, poll, PollResult::Conflict);
        }
        if !hold {
            return None;
        }
        self.telegram.next_poll += 1;
        let poll = self.telegram.next_poll;
        let available: Vec<Delivered> = self
            .telegram
            .pending
            .iter()
            .take(100)
            .map(|(id, (index, activate))| (*id, *index, activate.clone()))
            .collect();
        if available.is_empty() {
            self.telegram.held = Some((device, poll));
            self.schedule(self.now_ms + LONG_POLL_MS, Ev::HeldTimeout { poll });
        } else {
            self.respond(device, poll, PollResult::Updates(available));
        }
        Some(poll)
    }

    fn note_confirmed(&mut self, sent_ms: u64) {
        let now = self.now_ms;
        let recent = &mut self.telegram.confirmed_recent;
        while recent
            .front()
            .is_some_and(|(_, at)| now.saturating_sub(*at) > WITNESS_LAG_MAX_MS)
        {
            recent.pop_front();
        }
        if recent.len() < 10_000 {
            recent.push_back((sent_ms, now));
        }
    }

    /// getWebhookInfo's `pending_update_count` as a standby sees it: what was unconfirmed
    /// `lag` ago (the count is not live on the server: up to [`WITNESS_LAG_MAX_MS`] old),
    /// answered a round trip later. Cut-offs and stalls are the sync's: Telegram answers.
    fn ask_witness(&mut self, device: usize) {
        self.metrics.witness_asks += 1;
        let lag = self
            .telegram
            .witness_rng
            .random_range(0..=WITNESS_LAG_MAX_MS);
        let as_of = self.now_ms.saturating_sub(lag);
        let sent = &self.telegram.sent_ms;
        let waiting = self
            .telegram
            .pending
            .values()
            .filter(|(index, _)| sent[*index] <= as_of)
            .count();
        let confirmed_since = self
            .telegram
            .confirmed_recent
            .iter()
            .filter(|(sent, confirmed)| *sent <= as_of && *confirmed > as_of)
            .count();
        let count = (waiting + confirmed_since) as u64;
        let incarnation = self.devices[device].incarnation;
        self.schedule(
            self.now_ms + TELEGRAM_RTT_MS,
            Ev::Answer {
                device,
                incarnation,
                event: Event::Witnessed {
                    pending_update_count: Some(count),
                },
            },
        );
    }

    fn violation_if_baton(&mut self, message: String) {
        if self.is_baton() {
            self.violation(message);
        }
    }

    fn maybe_poll(&mut self, device: usize) {
        if !self.running(device) {
            return;
        }
        let host = self.devices[device].host;
        let local = self.local(host);
        let adapter = &self.devices[device].adapter;
        if !adapter.acting || adapter.outstanding.is_some() {
            return;
        }
        if local < adapter.paused_until || self.now_ms < adapter.backoff_until_ms {
            return; // an AdapterWake is scheduled for the end of the pause or backoff
        }
        let lapsed = local >= self.lease_deadline(device);
        self.devices[device].adapter.lease_blocked = lapsed;
        if lapsed {
            return; // polls again when a delivered input renews the lease
        }
        if self.devices[device].must_revalidate {
            self.violation(format!(
                "device {device} polls after waking past its lease without re-validating"
            ));
            self.devices[device].must_revalidate = false;
        }
        let offset = self.devices[device].adapter.offset();
        let poll = self.get_updates(device, offset, true);
        self.devices[device].adapter.outstanding = poll;
        self.devices[device].adapter.poll_offset = offset;
        self.resolve_pending_on_poll(device);
    }

    fn resolve_pending_on_poll(&mut self, device: usize) {
        let now = self.now_ms;
        let mut kept = Vec::with_capacity(self.pending.len());
        for measure in std::mem::take(&mut self.pending) {
            let resolves = match measure.kind {
                PendingKind::Crash => true,
                PendingKind::Resign => device != measure.device,
                PendingKind::Handoff => device == measure.device,
            };
            if !resolves {
                kept.push(measure);
                continue;
            }
            let elapsed = now - measure.since_ms;
            // How long the oldest update still waiting (sent after the crash) waited:
            // what the user who wrote it saw.
            let sent = &self.telegram.sent_ms;
            let waiting_since = self
                .telegram
                .pending
                .values()
                .map(|(index, _)| sent[*index].max(measure.since_ms))
                .min();
            if measure.kind == PendingKind::Crash
                && let Some(since) = waiting_since
            {
                self.metrics.crash_failover_waiting_ms.push(now - since);
            }
            match measure.kind {
                PendingKind::Crash if measure.same_host_witness => {
                    self.metrics.crash_failover_ms.push(elapsed)
                }
                PendingKind::Crash => {
                    self.metrics.crash_failover_ms.push(elapsed);
                    self.metrics.crash_failover_cross_host_ms.push(elapsed);
                }
                PendingKind::Resign => self.metrics.resign_takeover_ms.push(elapsed),
                PendingKind::Handoff => self.metrics.handoff_ms.push(elapsed),
            }
        }
        self.pending = kept;
    }

    fn cancel_poll(&mut self, device: usize) {
        if self
            .telegram
            .held
            .is_some_and(|(holder, _)| holder == device)
        {
            self.telegram.held = None;
        }
        self.devices[device].adapter.outstanding = None;
    }

    fn poll_response(&mut self, device: usize, poll: u64, result: PollResult) {
        if self.devices[device].adapter.outstanding != Some(poll) || !self.running(device) {
            return; // cancelled: nothing it carried was confirmed, it will come again
        }
        self.devices[device].adapter.outstanding = None;
        let local = self.local(self.devices[device].host);
        if local >= self.lease_deadline(device) && matches!(result, PollResult::Updates(_)) {
            // Answered after the lease ran out (a frozen process resumed): not handled
            // here; unconfirmed, the updates go to whoever polls next.
            self.trace(device, "poll answered past the lease: not delivered");
            self.maybe_poll(device);
            return;
        }
        match result {
            PollResult::Updates(updates) => {
                let offset = self.devices[device].adapter.poll_offset;
                if let Some(ledger) = self.devices[device].adapter.ledger.as_mut() {
                    ledger.begin_batch(offset);
                }
                for update in updates {
                    self.handle_update(device, update);
                    if !self.devices[device].adapter.acting || !self.running(device) {
                        return;
                    }
                }
                self.maybe_poll(device);
            }
            PollResult::Empty => self.maybe_poll(device),
            PollResult::Conflict => {
                let backoff = self
                    .rng
                    .random_range(CONFLICT_BACKOFF_MS.0..=CONFLICT_BACKOFF_MS.1);
                self.devices[device].adapter.backoff_until_ms = self.now_ms + backoff;
                let incarnation = self.devices[device].incarnation;
                self.schedule(
                    self.now_ms + backoff,
                    Ev::AdapterWake {
                        device,
                        incarnation,
                    },
                );
                let description = "Conflict: terminated by other getUpdates request".into();
                self.deliver(device, Event::Conflict { description });
            }
        }
    }

    fn handle_update(&mut self, device: usize, (id, index, activate): Delivered) {
        let Some(ledger) = self.devices[device].adapter.ledger.as_mut() else {
            return;
        };
        let admission = ledger.admit(id);
        if matches!(admission, Admission::Known | Admission::Unusable) {
            return;
        }
        ledger.handled(id);
        let handled_through = ledger.progress().handled_through;
        if let Admission::Restarted { offset_sent } = admission {
            self.metrics.telegram_id_restarts_followed += 1;
            self.trace(
                device,
                &format!("ids started over: {id} below offset {offset_sent}"),
            );
        }
        let count = &mut self.telegram.handled[index];
        *count += 1;
        if *count > 1 {
            self.metrics.updates_duplicated += 1;
        }
        if let Some(target) = activate {
            self.deliver(
                device,
                Event::ActivateAsked {
                    target,
                    ticket: id as u64,
                },
            );
        }
        if self.running(device) {
            let event = Event::UpdateHandled {
                update_id: handled_through,
            };
            self.deliver(device, event);
        }
    }

    fn stop_acting(&mut self, device: usize) {
        let was_polling = self.devices[device].adapter.acting;
        self.cancel_poll(device);
        let adapter = &mut self.devices[device].adapter;
        adapter.acting = false;
        let offset = adapter.offset();
        let last = adapter
            .ledger
            .as_ref()
            .map(|ledger| ledger.progress().handled_through)
            .filter(|id| *id > 0);
        if was_polling && offset.is_some() {
            // Confirm what was handled: getUpdates(offset, timeout 0).
            self.get_updates(device, offset, false);
        }
        let incarnation = self.devices[device].incarnation;
        self.schedule(
            self.now_ms + TELEGRAM_RTT_MS,
            Ev::Answer {
                device,
                incarnation,
                event: Event::ActingStopped {
                    last_update_id: last,
                },
            },
        );
    }

    // ---- invariants and metrics over the acting set ------------------------------------

    fn observe_acting(&mut self) {
        let now = self.now_ms;
        let elapsed = now - self.last_account_ms;
        let mut count = 0;
        for device in 0..self.devices.len() {
            let was = self.devices[device].was_acting;
            if self.running(device) {
                if was {
                    self.metrics.active_ms += elapsed;
                } else {
                    self.metrics.standby_ms += elapsed;
                }
            }
            let acting = self.acting(device);
            if acting {
                count += 1;
            }
            if acting != was {
                self.trace(device, if acting { "ACTING" } else { "not acting" });
            }
            self.devices[device].was_acting = acting;
        }
        self.last_account_ms = now;
        self.on_count(count);
        self.expire_pending();
    }

    fn on_takeover(&mut self, device: usize) {
        let planned = self
            .pending
            .iter()
            .any(|m| m.kind == PendingKind::Handoff && m.device == device);
        let displaced = (0..self.devices.len()).any(|other| {
            other != device && self.running(other) && self.devices[other].adapter.acting
        });
        if displaced && !planned {
            self.metrics.false_takeovers += 1;
        }
    }

    fn on_count(&mut self, count: usize) {
        let now = self.now_ms;
        if count != self.acting_count {
            self.last_acting_change_ms = now;
        }
        if count >= 2 && self.incident_end_ms.is_some() {
            // Two acting again: the same incident unless it had been over for a while.
            match (self.incident_start_ms, self.incident_end_ms) {
                (Some(_), Some(end)) if now - end <= INCIDENT_MERGE_GAP_MS => {}
                (Some(start), Some(end)) => {
                    self.close_incident(start, end);
                    self.incident_start_ms = Some(now);
                }
                _ => self.incident_start_ms = Some(now),
            }
            self.incident_end_ms = None;
        }
        if count >= 2 && self.incident_start_ms.is_none() {
            self.incident_start_ms = Some(now);
            self.incident_end_ms = None;
        }
        if count < 2 && self.incident_start_ms.is_some() && self.incident_end_ms.is_none() {
            self.incident_end_ms = Some(now);
        }
        self.acting_count = count;
        if let Some(check_from) = self.check_from_ms
            && now >= check_from
            && count != 1
        {
            let message = format!(
                "{count} devices acting {:.0}s after faults ended and delays settled",
                (now - self.scenario.fault_end_ms) as f64 / 1000.0
            );
            self.violation_if_baton(message);
            self.check_from_ms = None;
        }
    }

    fn close_incident(&mut self, start: u64, end: u64) {
        let from = start.saturating_sub(self.config.lookback_ms);
        let within_bound = !self
            .breaches
            .iter()
            .any(|(breach_start, breach_end)| *breach_start <= end && *breach_end >= from);
        self.metrics.incidents.push(Incident {
            start_ms: start,
            duration_ms: end - start,
            within_bound,
        });
        if within_bound {
            let message = format!(
                "two devices acting for {:.1}s from t={:.1}s with every delay within the {}ms bound",
                (end - start) as f64 / 1000.0,
                start as f64 / 1000.0,
                self.config.settle_bound_ms
            );
            self.violation_if_baton(message);
        }
    }

    fn expire_pending(&mut self) {
        let now = self.now_ms;
        let before = self.pending.len();
        let mut expired = Vec::new();
        self.pending.retain(|m| {
            let limit = match m.kind {
                PendingKind::Handoff => HANDOFF_EXPIRE_MS,
                _ => EXPIRE_PENDING_MS,
            };
            let keep = now - m.since_ms < limit;
            if !keep {
                expired.push(m.kind);
            }
            keep
        });
        if before == self.pending.len() {
            return;
        }
        for kind in expired {
            match kind {
                PendingKind::Crash => self.metrics.crash_failover_unresolved += 1,
                PendingKind::Resign => self.metrics.resign_takeover_unresolved += 1,
                PendingKind::Handoff => self.metrics.handoff_failed += 1,
            }
        }
    }

    fn finish(&mut self) {
        self.now_ms = self.now_ms.min(self.end_ms);
        self.observe_acting();
        if let Some(start) = self.incident_start_ms.take() {
            let end = self.incident_end_ms.unwrap_or(self.now_ms);
            self.close_incident(start, end);
        }
        let quiet_from = self.scenario.fault_end_ms;
        self.metrics
            .recovery_ms
            .push(self.last_acting_change_ms.saturating_sub(quiet_from));
        let cutoff = self.now_ms.saturating_sub(30 * SECOND_MS);
        let unhandled = (0..self.telegram.sent_ms.len())
            .filter(|&i| self.telegram.sent_ms[i] < cutoff && self.telegram.handled[i] == 0)
            .count() as u64;
        if unhandled > 0 {
            self.metrics.updates_lost += unhandled;
            self.violation_if_baton(format!("{unhandled} updates never handled by the end"));
        }
        self.metrics.device_ms = self.now_ms * self.devices.len() as u64;
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
            Fault::Sleep { host, duration_ms } => {
                sleeps[*host].push((*at, (*at + duration_ms).min(end)))
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
