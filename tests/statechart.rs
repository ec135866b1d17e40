//! Holds `statecharts/baton.mmd` and the machine together: every transition the machine
//! takes — in the golden fixtures and in seeded random runs of a small group with a
//! delayed "sync" — must be an edge of the chart, and every edge of the chart must be
//! taken. Edges are (from, to, cause); the cause is the input that started the reaction
//! (`Effect::Transition::cause`). A failing run prints its seed, and the missing edges
//! in Mermaid syntax. Half the random runs give every device a token, so Telegram is a
//! second witness (`witness.rs`): its answers are drawn at random (an adversary, as in
//! the model check), and the active device's polls fail now and then for longer than
//! the cut-off, so the `witnessed` and `cut_off` edges are taken, not just drawn.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

use baton_sim::replay::{Fixture, replay};
use mirror_baton::core::witness::WitnessRules;
use mirror_baton::core::{
    Core, CoreConfig, Effect, Event, FileObservation, FileState, Identity, Input, Moment, Role,
    Timing, record,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

type Edge = (String, String, String);

fn chart_edges() -> BTreeSet<Edge> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/statecharts/baton.mmd");
    let text = std::fs::read_to_string(path).expect("statecharts/baton.mmd exists");
    assert!(
        text.contains("stateDiagram-v2"),
        "the chart must be a Mermaid stateDiagram-v2"
    );
    let mut edges = BTreeSet::new();
    for line in text
        .lines()
        .map(str::trim)
        .filter(|line| !line.starts_with("%%"))
    {
        let Some((states, label)) = line.split_once(':') else {
            continue;
        };
        let Some((from, to)) = states.split_once("-->") else {
            continue;
        };
        let (from, to) = (from.trim(), to.trim());
        if from == "[*]" || to == "[*]" {
            continue;
        }
        edges.insert((from.to_string(), to.to_string(), label.trim().to_string()));
    }
    edges
}

const DEVICES: usize = 4;
const ACTIONS_PER_RUN: usize = 300;
const RUNS: u64 = 80;
/// Inputs handled in one run, at most: a livelock fails the test instead of hanging it.
const INPUTS_MAX: usize = 200_000;

/// (deliver at, order, to device, file name, contents): a write reaching a peer.
type Delivery = (u64, u64, usize, String, String);

struct Device {
    core: Option<Core>,
    generation: u64,
    /// Its disk refuses writes until then (a read-only folder, a full disk).
    refusing_until: u64,
    /// The process is stalled (SIGSTOP, a paused VM) until then: it handles nothing,
    /// its clock runs on, and what arrives meanwhile waits.
    frozen_until: u64,
}

/// A group on one host whose folder syncs with a random delay (sometimes longer than
/// the settle bound, so elections can collide).
struct Sim {
    rng: ChaCha8Rng,
    devices: Vec<Device>,
    files: BTreeMap<String, String>,
    deliveries: BinaryHeap<Reverse<Delivery>>,
    order: u64,
    now: u64,
    inputs: usize,
    seen: BTreeSet<Edge>,
    timing: Timing,
    /// Every device has a token: Telegram is a second witness, and can be cut off.
    witness: bool,
}

#[path = "common/identity.rs"]
mod identity_builder;

fn identity(index: usize, generation: u64) -> Identity {
    Identity {
        pid: 100 + index as u32,
        instance: format!("d{index}-gen{generation}"),
        install_id: "install".into(),
        ..identity_builder::identity(&format!("d{index}"))
    }
}

impl Sim {
    fn new(seed: u64, witness: bool) -> Sim {
        Sim {
            rng: ChaCha8Rng::seed_from_u64(seed),
            devices: (0..DEVICES)
                .map(|_| Device {
                    core: None,
                    generation: 0,
                    refusing_until: 0,
                    frozen_until: 0,
                })
                .collect(),
            files: BTreeMap::new(),
            deliveries: BinaryHeap::new(),
            order: 0,
            now: 0,
            inputs: 0,
            seen: BTreeSet::new(),
            timing: Timing::default(),
            witness,
        }
    }

    fn start(&mut self, index: usize) {
        let device = &mut self.devices[index];
        device.generation += 1;
        let seed = self.rng.random();
        let mut core = Core::new(CoreConfig {
            identity: identity(index, device.generation),
            timing: self.timing,
            seed,
        });
        if self.witness {
            core.enable_witness(WitnessRules::default());
        }
        device.core = Some(core);
        self.input(index, Event::Start);
    }

    fn scan(&self) -> Vec<FileObservation> {
        self.files
            .iter()
            .map(|(name, text)| FileObservation {
                name: name.clone(),
                state: FileState::Contents { text: text.clone() },
            })
            .collect()
    }

    fn input(&mut self, index: usize, event: Event) {
        let mut queue = vec![event];
        while let Some(event) = queue.pop() {
            self.inputs += 1;
            assert!(self.inputs < INPUTS_MAX, "too many inputs: livelock?");
            let Some(core) = self.devices[index].core.as_mut() else {
                return;
            };
            core.handle(Input {
                at: Moment(self.now),
                wall_ms: 1_700_000_000_000 + self.now,
                event,
            });
            for effect in core.drain_effects() {
                if let Some(answer) = self.carry_out(index, effect) {
                    queue.insert(0, answer);
                }
            }
        }
    }

    fn carry_out(&mut self, index: usize, effect: Effect) -> Option<Event> {
        match effect {
            Effect::Transition { from, to, cause } => {
                self.seen.insert((from.to_string(), to.to_string(), cause));
                None
            }
            Effect::WriteRecord { record: written }
                if self.now < self.devices[index].refusing_until =>
            {
                Some(Event::RecordWriteFailed {
                    seq: written.seq,
                    reason: "cannot write: Read-only file system (os error 30)".into(),
                })
            }
            Effect::WriteRecord { record: written } => {
                let name = record::file_name(&written.device_id);
                let text = written.to_json();
                self.files.insert(name.clone(), text.clone());
                let settle_ms = self.timing.settle_window.as_millis() as u64;
                for other in (0..DEVICES).filter(|other| *other != index) {
                    // Mostly within the settle bound; one write in ten is slow.
                    let delay = if self.rng.random_ratio(1, 10) {
                        self.rng.random_range(0..settle_ms * 3)
                    } else {
                        self.rng.random_range(0..settle_ms / 2)
                    };
                    self.order += 1;
                    let at = self.now + delay;
                    self.deliveries.push(Reverse((
                        at,
                        self.order,
                        other,
                        name.clone(),
                        text.clone(),
                    )));
                }
                Some(Event::RecordWritten { seq: written.seq })
            }
            Effect::Rescan => Some(Event::Scanned { files: self.scan() }),
            Effect::StopActing { .. } => Some(Event::ActingStopped {
                last_update_id: None,
            }),
            Effect::ProbePid { stem, pid } => {
                let alive = self
                    .devices
                    .iter()
                    .enumerate()
                    .any(|(i, device)| device.core.is_some() && 100 + i as u32 == pid);
                Some(Event::PidProbed { stem, pid, alive })
            }
            Effect::AskWitness => {
                // Any answer, right or wrong: the witness is an adversary here.
                let pending_update_count = match self.rng.random_range(0..4) {
                    0 => None,
                    1 => Some(0),
                    _ => Some(self.rng.random_range(1..4)),
                };
                Some(Event::Witnessed {
                    pending_update_count,
                })
            }
            Effect::Exit { .. } => {
                self.devices[index].core = None;
                None
            }
            _ => None,
        }
    }

    /// Advances to `until`, delivering files and firing timers in time order.
    fn run_until(&mut self, until: u64) {
        loop {
            // A stalled device's timers wait for it to resume; resuming is its next input.
            let timer = (0..DEVICES)
                .filter_map(|i| {
                    let device = &self.devices[i];
                    let core = device.core.as_ref()?;
                    if self.now < device.frozen_until {
                        return Some((device.frozen_until, i));
                    }
                    core.next_timeout().map(|timeout| (timeout.at.0, i))
                })
                .min();
            let delivery = self.deliveries.peek().map(|Reverse((at, ..))| *at);
            match (timer, delivery) {
                (Some((at, i)), delivery) if at <= until && delivery.is_none_or(|d| at <= d) => {
                    self.now = self.now.max(at);
                    self.input(i, Event::Tick);
                }
                (_, Some(at)) if at <= until => {
                    let Some(Reverse((at, order, to, name, text))) = self.deliveries.pop() else {
                        unreachable!("peeked above");
                    };
                    self.now = self.now.max(at);
                    let frozen_until = self.devices[to].frozen_until;
                    if self.now < frozen_until {
                        // Queued for the stalled process, in order.
                        self.deliveries
                            .push(Reverse((frozen_until, order, to, name, text)));
                        continue;
                    }
                    let file = FileObservation {
                        name,
                        state: FileState::Contents { text },
                    };
                    self.input(to, Event::FileChanged { file });
                }
                _ => break,
            }
        }
        self.now = self.now.max(until);
    }

    fn random_action(&mut self) {
        let index = self.rng.random_range(0..DEVICES);
        let running = self.devices[index].core.is_some();
        if self.now < self.devices[index].frozen_until {
            return; // a stalled process takes no input
        }
        match self.rng.random_range(0..100) {
            _ if !running => self.start(index),
            0..8 => self.devices[index].core = None, // crash
            8..20 => {
                let target = self.rng.random_range(0..=DEVICES + 1).to_string();
                let ticket = self.rng.random();
                self.input(index, Event::ActivateAsked { target, ticket });
            }
            20..26 => self.input(index, Event::ShutdownAsked),
            26..32 => {
                let slept_ms = self.rng.random_range(1_000..200_000);
                self.now += slept_ms / DEVICES as u64; // others keep running meanwhile
                self.input(index, Event::Woke { slept_ms });
            }
            32..36 => {
                let description = "Conflict: terminated by other getUpdates request".into();
                for _ in 0..self.rng.random_range(1..=4) {
                    self.input(
                        index,
                        Event::Conflict {
                            description: String::clone(&description),
                        },
                    );
                }
            }
            36..39 => self.twin_appears(index),
            39..41 => {
                let description = "Unauthorized".into();
                self.input(index, Event::PollingRefused { description });
            }
            41..45 => {
                let refusing_ms = self.rng.random_range(1_000..180_000);
                self.devices[index].refusing_until = self.now + refusing_ms;
            }
            45..48 => {
                let stalled_ms = self.rng.random_range(5_000..150_000);
                self.devices[index].frozen_until = self.now + stalled_ms;
            }
            52..56 if self.witness => self.cut_off(index),
            56..58 if self.witness => self.input(index, Event::PollSucceeded),
            48..52 => {
                // The OS announces a sleep (the lid closes); often it then sleeps.
                let grace_ms = self.rng.random_range(0..30_000);
                self.input(index, Event::SleepAnnounced { grace_ms });
                if self.rng.random_bool(0.5) {
                    let slept_ms = self.rng.random_range(grace_ms..grace_ms + 200_000);
                    self.now += slept_ms / DEVICES as u64;
                    self.input(index, Event::Woke { slept_ms });
                }
            }
            _ => {}
        }
    }

    /// Device `index`'s polls fail for longer than the cut-off (`witness_cut_off.rs`),
    /// and go on failing while standbys answer.
    fn cut_off(&mut self, index: usize) {
        let failed = || Event::PollFailed {
            reason: "network error".into(),
        };
        self.input(index, failed());
        let cut_off_ms = WitnessRules::default().cut_off_after.as_millis() as u64;
        for _ in 0..3 {
            let until = self.now + cut_off_ms / 2 + 1_000;
            self.run_until(until);
            self.input(index, failed());
        }
    }

    /// A restored copy of device `index` (another install, same id) writes its file.
    fn twin_appears(&mut self, index: usize) {
        let mut twin_identity = identity(index, 0);
        twin_identity.install_id = "restored-from-backup".into();
        twin_identity.instance = format!("twin-{}", self.order);
        let mut twin = record::DeviceRecord::new(&twin_identity);
        twin.seq = 1_000_000 + self.order;
        twin.written_at_ms = 1_700_000_000_000 + self.now;
        let name = record::file_name(&twin.device_id);
        let file = FileObservation {
            name,
            state: FileState::Contents {
                text: twin.to_json(),
            },
        };
        self.order += 1;
        self.input(index, Event::FileChanged { file });
    }
}

fn random_runs() -> BTreeSet<Edge> {
    let mut seen = BTreeSet::new();
    for seed in 0..RUNS {
        let mut sim = Sim::new(seed, seed % 2 == 1);
        for _ in 0..ACTIONS_PER_RUN {
            let step = sim.rng.random_range(1_000..90_000);
            let until = sim.now + step;
            sim.run_until(until);
            sim.random_action();
        }
        seen.extend(sim.seen);
    }
    seen
}

fn fixture_edges() -> BTreeSet<Edge> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures");
    let mut seen = BTreeSet::new();
    for entry in std::fs::read_dir(dir).expect("fixtures/") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|ext| ext == "jsonl") {
            let fixture = Fixture::load(&path).expect("fixture loads");
            for (_, from, to, cause) in replay(&fixture).transitions() {
                seen.insert((from.to_string(), to.to_string(), cause));
            }
        }
    }
    seen
}

fn mermaid(edges: &BTreeSet<Edge>) -> String {
    edges
        .iter()
        .map(|(from, to, cause)| format!("    {from} --> {to}: {cause}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn chart_and_machine_agree() {
    let chart = chart_edges();
    let mut taken = fixture_edges();
    taken.extend(random_runs());
    let states: BTreeSet<&str> = taken
        .iter()
        .flat_map(|(f, t, _)| [f.as_str(), t.as_str()])
        .collect();
    for role in [
        Role::Registering,
        Role::Standby,
        Role::Contending,
        Role::Active,
        Role::Yielding,
    ] {
        assert!(states.contains(role.as_str()), "no run ever reached {role}");
    }
    let missing_from_chart: BTreeSet<Edge> = taken.difference(&chart).cloned().collect();
    let never_taken: BTreeSet<Edge> = chart.difference(&taken).cloned().collect();
    assert!(
        missing_from_chart.is_empty() && never_taken.is_empty(),
        "statecharts/baton.mmd and the machine disagree (random runs: seeds 0..{RUNS}).\n\
         The machine takes these, the chart lacks them:\n{}\n\
         The chart has these, the machine never took them:\n{}",
        mermaid(&missing_from_chart),
        mermaid(&never_taken)
    );
}
