//! The replayer: feeds a fixture's inputs to a [`Core`], fires due timers between them,
//! answers the effects a runtime would answer (when the header says so), and records
//! everything that happened as a list of [`Entry`]s.
//!
//! Owns: the replayer's model of the folder (the last state seen per file name, our own
//! writes included) and the step bound. Must never: read a clock, a file or OS
//! randomness — a replay is a pure function of its fixture.

use std::collections::{BTreeMap, VecDeque};

use baton_core::{
    Core, CoreConfig, Effect, Event, FileObservation, FileState, Input, Moment, Role, TimerId,
    record,
};

use super::fixture::{Fixture, Step};

/// Inputs handled in one replay, at most (timer ticks and auto answers included): a
/// livelock in the core ends the replay with a note instead of hanging it.
pub const REPLAY_STEPS_MAX: usize = 1_000_000;

/// Auto answers chained from one input, at most.
const AUTO_ANSWERS_MAX: usize = 64;

/// What happened at one moment.
#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    /// An input from the fixture.
    Input(Event),
    /// An input the replayer made up, as a runtime would (`auto` in the header).
    Auto(Event),
    /// A timer fired.
    Fired(TimerId),
    /// The folder changed without a notification (a `folder` line).
    Unnoticed(FileObservation),
    /// An effect the core asked for.
    Effect(Effect),
    /// The replay stopped early, and why.
    Stopped(String),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub at: Moment,
    pub item: Item,
}

/// The result of a replay.
#[derive(Clone, Debug, PartialEq)]
pub struct Replay {
    pub entries: Vec<Entry>,
    /// Where the replay stopped (the fixture's end, or the moment of an `Exit`).
    pub end: Moment,
    pub final_role: Role,
    pub final_term: u64,
    /// The first `Exit` effect: the process would have stopped there.
    pub exit: Option<(i32, String)>,
}

impl Replay {
    pub fn effects(&self) -> impl Iterator<Item = (Moment, &Effect)> + '_ {
        self.entries.iter().filter_map(|entry| match &entry.item {
            Item::Effect(effect) => Some((entry.at, effect)),
            _ => None,
        })
    }

    /// Every transition: (moment, from, to, cause).
    pub fn transitions(&self) -> Vec<(Moment, Role, Role, String)> {
        self.effects()
            .filter_map(|(at, effect)| match effect {
                Effect::Transition { from, to, cause } => Some((at, *from, *to, cause.clone())),
                _ => None,
            })
            .collect()
    }

    /// The first moment the device entered `role`.
    pub fn first_entered(&self, role: Role) -> Option<Moment> {
        self.transitions()
            .into_iter()
            .find(|(_, _, to, _)| *to == role)
            .map(|(at, ..)| at)
    }

    /// The roles visited, in order, starting with Registering (repeats collapsed).
    pub fn path(&self) -> Vec<Role> {
        let mut path = vec![Role::Registering];
        for (_, _, to, _) in self.transitions() {
            if path.last() != Some(&to) {
                path.push(to);
            }
        }
        path
    }

    /// Every notification's text, prefixed with its level (`warn: …`).
    pub fn notifications(&self) -> Vec<String> {
        self.effects()
            .filter_map(|(_, effect)| match effect {
                Effect::Notify { level, message } => Some(format!("{}: {message}", level.as_str())),
                _ => None,
            })
            .collect()
    }

    /// The terms in which this device started acting, in order.
    pub fn acting_terms(&self) -> Vec<u64> {
        self.effects()
            .filter_map(|(_, effect)| match effect {
                Effect::StartActing { term, .. } => Some(*term),
                _ => None,
            })
            .collect()
    }
}

/// Replays a fixture. Pure: one fixture gives one replay.
pub fn replay(fixture: &Fixture) -> Replay {
    let mut engine = Engine::new(fixture);
    for step in &fixture.steps {
        if engine.finished() {
            break;
        }
        engine.fire_timers_until(awake_until(step));
        if engine.finished() {
            break;
        }
        match step {
            Step::Input(input) => engine.feed(input.clone(), false),
            Step::Folder { at, file } => engine.unnoticed(*at, file),
        }
    }
    if !engine.finished() {
        engine.fire_timers_until(fixture.end());
    }
    engine.finish(fixture.end())
}

/// Timers fire up to the next step, except across a sleep: a machine that wakes at `at`
/// after sleeping `slept_ms` ran no timers since `at - slept_ms` (its runtime's sleeps
/// stopped with it), so they fire after the wake-up is noted.
fn awake_until(step: &Step) -> Moment {
    match step {
        Step::Input(Input {
            at,
            event: Event::Woke { slept_ms },
            ..
        }) => Moment(at.0.saturating_sub(*slept_ms)),
        other => other.at(),
    }
}

struct Engine {
    core: Core,
    auto: super::fixture::Auto,
    own_name: String,
    /// The folder as the replayer believes it is: last state seen per name (never Gone).
    folder: BTreeMap<String, FileState>,
    entries: Vec<Entry>,
    /// wall_ms − at_ms of the last fixture input, to give ticks a wall clock.
    wall_offset_ms: i128,
    last_update_id: Option<i64>,
    exit: Option<(i32, String)>,
    steps: usize,
    stopped: bool,
}

impl Engine {
    fn new(fixture: &Fixture) -> Self {
        let header = &fixture.header;
        let core = Core::new(CoreConfig {
            identity: header.identity.clone(),
            timing: header.timing.resolve(),
            seed: header.seed,
        });
        let wall_offset_ms = fixture
            .steps
            .iter()
            .find_map(|step| match step {
                Step::Input(input) => Some(i128::from(input.wall_ms) - i128::from(input.at.0)),
                Step::Folder { .. } => None,
            })
            .unwrap_or(0);
        Engine {
            core,
            auto: header.auto,
            own_name: record::file_name(&header.identity.device_id),
            folder: BTreeMap::new(),
            entries: Vec::new(),
            wall_offset_ms,
            last_update_id: None,
            exit: None,
            steps: 0,
            stopped: false,
        }
    }

    fn finished(&self) -> bool {
        self.exit.is_some() || self.stopped
    }

    fn note(&mut self, at: Moment, item: Item) {
        self.entries.push(Entry { at, item });
    }

    fn wall_at(&self, at: Moment) -> u64 {
        let wall = i128::from(at.0) + self.wall_offset_ms;
        u64::try_from(wall.max(0)).unwrap_or(u64::MAX)
    }

    /// Fires every timer due at or before `until`, each at its own moment.
    fn fire_timers_until(&mut self, until: Moment) {
        while let Some(due) = self.core.next_timeout().map(|timeout| timeout.at) {
            if due > until || self.finished() {
                return;
            }
            let at = due.max(self.core.now());
            let input = Input {
                at,
                wall_ms: self.wall_at(at),
                event: Event::Tick,
            };
            self.feed(input, true);
        }
    }

    fn unnoticed(&mut self, at: Moment, file: &FileObservation) {
        self.model(file);
        self.note(at, Item::Unnoticed(file.clone()));
    }

    /// Updates the model of the folder with one observation.
    fn model(&mut self, file: &FileObservation) {
        match &file.state {
            FileState::Gone => {
                self.folder.remove(&file.name);
            }
            state => {
                self.folder.insert(file.name.clone(), state.clone());
            }
        }
    }

    /// Hands one input to the core, then carries out (and notes) what it asked for.
    fn feed(&mut self, input: Input, is_tick: bool) {
        let mut queue = VecDeque::from([(input, is_tick, false)]);
        let mut answers = 0;
        while let Some((input, is_tick, is_auto)) = queue.pop_front() {
            if self.finished() {
                return;
            }
            self.steps += 1;
            if self.steps > REPLAY_STEPS_MAX {
                let why = format!("more than {REPLAY_STEPS_MAX} inputs: the core may livelock");
                self.note(input.at, Item::Stopped(why));
                self.stopped = true;
                return;
            }
            if !is_tick {
                self.wall_offset_ms = i128::from(input.wall_ms) - i128::from(input.at.0);
            }
            let at = input.at.max(self.core.now());
            self.observe_input(at, &input.event, is_tick, is_auto);
            self.core.handle(input);
            // Timers fire inside `handle` (after a wake-up, before other inputs); their
            // effects are drained below, so they are noted first.
            let fired: Vec<TimerId> = self.core.fired_timers().to_vec();
            for timer in fired {
                self.note(at, Item::Fired(timer));
            }
            for answer in self.carry_out(at) {
                answers += 1;
                if answers > AUTO_ANSWERS_MAX {
                    self.note(at, Item::Stopped("auto answers do not settle".into()));
                    self.stopped = true;
                    return;
                }
                queue.push_back((answer, false, true));
            }
        }
    }

    /// Notes an input before the core handles it, and updates the folder model.
    fn observe_input(&mut self, at: Moment, event: &Event, is_tick: bool, is_auto: bool) {
        if !is_tick {
            let item = if is_auto {
                Item::Auto(event.clone())
            } else {
                Item::Input(event.clone())
            };
            self.note(at, item);
        }
        match event {
            Event::Scanned { files } => {
                self.folder.clear();
                for file in files {
                    self.model(file);
                }
            }
            Event::FileChanged { file } => self.model(file),
            Event::UpdateHandled { update_id } => {
                // As the core: the progress replaces (it goes down when Telegram's ids
                // start over; 0 is none yet).
                self.last_update_id = (*update_id > 0).then_some(*update_id);
            }
            _ => {}
        }
    }

    /// Notes the effects of the last input; returns the answers a runtime would give.
    fn carry_out(&mut self, at: Moment) -> Vec<Input> {
        let mut answers = Vec::new();
        // Every effect of the batch is noted, even after an `Exit` (e.g. the StopActing
        // of a refused active device); nothing is fed after it.
        for effect in self.core.drain_effects() {
            match &effect {
                Effect::WriteRecord { record } => {
                    let text = record.to_json();
                    self.folder
                        .insert(self.own_name.clone(), FileState::Contents { text });
                    if self.auto.record_written {
                        answers.push(Event::RecordWritten { seq: record.seq });
                    }
                }
                Effect::DeleteFile { name, .. } => {
                    self.folder.remove(name);
                }
                Effect::StopActing { .. } if self.auto.acting_stopped => {
                    answers.push(Event::ActingStopped {
                        last_update_id: self.last_update_id,
                    });
                }
                Effect::Rescan if self.auto.rescan => {
                    let files = self
                        .folder
                        .iter()
                        .map(|(name, state)| FileObservation {
                            name: name.clone(),
                            state: state.clone(),
                        })
                        .collect();
                    answers.push(Event::Scanned { files });
                }
                Effect::Exit { code, reason } if self.exit.is_none() => {
                    self.exit = Some((*code, reason.clone()));
                }
                _ => {}
            }
            self.note(at, Item::Effect(effect));
        }
        if self.exit.is_some() {
            return Vec::new();
        }
        let wall_ms = self.wall_at(at);
        answers
            .into_iter()
            .map(|event| Input { at, wall_ms, event })
            .collect()
    }

    fn finish(self, fixture_end: Moment) -> Replay {
        let end = if self.finished() {
            self.core.now()
        } else {
            fixture_end.max(self.core.now())
        };
        Replay {
            entries: self.entries,
            end,
            final_role: self.core.role(),
            final_term: self.core.term(),
            exit: self.exit,
        }
    }
}
