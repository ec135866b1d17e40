//! The one in-memory folder for tests: a group of real cores over an instant "sync"
//! (every write is seen by every device at once), with a stand-in for the Telegram side
//! and the disk: `StartActing` is answered with a refusal while the member's token is
//! refused, `StopActing` with `ActingStopped`, every write with `RecordWritten` (or
//! `RecordWriteFailed` while the member's disk refuses writes). Every effect is logged.
//! An `Exit` ends the member (its core is dropped), as it ends the process. Never
//! touches a real file or clock.

use mirror_baton::core::{
    Core, CoreConfig, DeviceRecord, Effect, Event, FileObservation, FileState, Identity, Input,
    Level, Moment, Role, Timing, record,
};

pub struct Member {
    pub core: Option<Core>,
    pub name: String,
    /// Every `StartActing` this member emitted: (moment, term, skip_through).
    pub started: Vec<(u64, u64, Option<i64>)>,
    /// Every notice, with its level.
    pub notices: Vec<(Level, String)>,
    /// Whether Telegram refuses this member's token.
    pub token_refused: bool,
}

#[path = "identity.rs"]
mod identity_builder;
pub use identity_builder::identity;

pub struct Group {
    pub members: Vec<Member>,
    pub files: std::collections::BTreeMap<String, String>,
    pub now: u64,
    /// (member name, moment, exit code, reason) of every exit asked for.
    pub exits: Vec<(String, u64, i32, String)>,
    /// Members whose disk refuses writes (a read-only folder, a full disk).
    pub refusing: std::collections::BTreeSet<String>,
    /// (member name, moment, effect) of every effect, in order: the one effect log
    /// (`effects`, `effects_of` and `last_good_write` read it per member).
    pub log: Vec<(String, u64, Effect)>,
}

impl Group {
    /// Members that have not started yet; start each with [`Group::start`].
    pub fn new(names: &[&str]) -> Self {
        let members = names
            .iter()
            .map(|name| Member {
                core: None,
                name: name.to_string(),
                started: Vec::new(),
                notices: Vec::new(),
                token_refused: false,
            })
            .collect();
        Group {
            members,
            files: Default::default(),
            now: 0,
            exits: Vec::new(),
            refusing: Default::default(),
            log: Vec::new(),
        }
    }

    /// The usual start: a starts alone and leads, b joins as standby; 60 s in.
    pub fn a_active_b_standby() -> Self {
        let mut group = Group::new(&["a", "b"]);
        group.start(0);
        group.run_until(30_000);
        group.start(1);
        group.run_until(60_000);
        assert_eq!(group.active(), vec![0], "{:?}", group.roles());
        assert_eq!(group.role(1), Some(Role::Standby), "{:?}", group.roles());
        group
    }

    pub fn start(&mut self, index: usize) {
        let name = self.members[index].name.clone();
        self.start_as(index, identity(&name));
    }

    /// Starts member `index` with its own identity (its name's device id kept).
    pub fn start_as(&mut self, index: usize, identity: Identity) {
        self.members[index].core = Some(Core::new(CoreConfig {
            identity,
            timing: Timing::default(),
            seed: index as u64 + 1,
        }));
        self.input(index, Event::Start);
    }

    /// Puts a file in the folder (seen by every running member at once).
    pub fn put_file(&mut self, name: &str, text: &str) {
        self.files.insert(name.to_string(), text.to_string());
        for index in 0..self.members.len() {
            let file = FileObservation {
                name: name.to_string(),
                state: FileState::Contents {
                    text: text.to_string(),
                },
            };
            self.input(index, Event::FileChanged { file });
        }
    }

    pub fn put_record(&mut self, record: &DeviceRecord) {
        self.put_file(&record::file_name(&record.device_id), &record.to_json());
    }

    pub fn input(&mut self, index: usize, event: Event) {
        let Some(core) = self.members[index].core.as_mut() else {
            return;
        };
        core.handle(Input {
            at: Moment(self.now),
            wall_ms: 1_700_000_000_000 + self.now,
            event,
        });
        self.pump(index);
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

    fn pump(&mut self, index: usize) {
        let Some(core) = self.members[index].core.as_mut() else {
            return;
        };
        let effects = core.drain_effects();
        let mut writes = Vec::new();
        let mut answers = Vec::new();
        let name = self.members[index].name.clone();
        for effect in effects {
            self.log.push((name.clone(), self.now, effect.clone()));
            match effect {
                Effect::WriteRecord { record: r } if self.refusing.contains(&name) => {
                    let reason = format!(
                        "cannot write /sync/devices/{}: Read-only file system (os error 30)",
                        record::file_name(&r.device_id)
                    );
                    answers.push(Event::RecordWriteFailed { seq: r.seq, reason });
                }
                Effect::WriteRecord { record: r } => {
                    let name = record::file_name(&r.device_id);
                    self.files.insert(name.clone(), r.to_json());
                    writes.push(name);
                    answers.push(Event::RecordWritten { seq: r.seq });
                }
                Effect::Rescan => answers.push(Event::Scanned { files: self.scan() }),
                Effect::StartActing {
                    term, skip_through, ..
                } => {
                    let member = &mut self.members[index];
                    member.started.push((self.now, term, skip_through));
                    if member.token_refused {
                        answers.push(Event::PollingRefused {
                            description: "Unauthorized".into(),
                        });
                    }
                }
                Effect::StopActing { .. } => answers.push(Event::ActingStopped {
                    last_update_id: None,
                }),
                Effect::Notify { level, message } => {
                    self.members[index].notices.push((level, message));
                }
                Effect::Exit { code, reason } => {
                    self.exits.push((name.clone(), self.now, code, reason));
                    self.members[index].core = None;
                }
                _ => {}
            }
        }
        for event in answers {
            self.input(index, event);
        }
        for name in writes {
            let Some(text) = self.files.get(&name).cloned() else {
                continue;
            };
            for other in 0..self.members.len() {
                if other != index {
                    let file = FileObservation {
                        name: name.clone(),
                        state: FileState::Contents { text: text.clone() },
                    };
                    self.input(other, Event::FileChanged { file });
                }
            }
        }
    }

    /// Advances time to `until`, firing every timer on the way.
    pub fn run_until(&mut self, until: u64) {
        loop {
            let next = self
                .members
                .iter()
                .enumerate()
                .filter_map(|(i, m)| m.core.as_ref()?.next_timeout().map(|t| (t.at.0, i)))
                .min();
            match next {
                Some((at, index)) if at <= until => {
                    self.now = self.now.max(at);
                    self.input(index, Event::Tick);
                }
                _ => break,
            }
        }
        self.now = self.now.max(until);
    }

    /// Every member's name and role (None once it exited or was taken away).
    pub fn roles(&self) -> Vec<(String, Option<Role>)> {
        (0..self.members.len())
            .map(|i| (self.members[i].name.clone(), self.role(i)))
            .collect()
    }

    /// The running core of member `index`, to drive by hand.
    pub fn core_mut(&mut self, index: usize) -> &mut Core {
        self.members[index].core.as_mut().expect("running")
    }

    /// Every effect member `index` emitted, with the moment, in order.
    pub fn effects(&self, index: usize) -> Vec<(u64, Effect)> {
        self.effects_of(&self.members[index].name, 0)
    }

    /// Every effect `name` had carried out from `from_ms` on.
    pub fn effects_of(&self, name: &str, from_ms: u64) -> Vec<(u64, Effect)> {
        self.log
            .iter()
            .filter(|(member, at, _)| member == name && *at >= from_ms)
            .map(|(_, at, effect)| (*at, effect.clone()))
            .collect()
    }

    /// The moment `name` last asked for a write, before `before_ms`.
    pub fn last_good_write(&self, name: &str, before_ms: u64) -> u64 {
        self.log
            .iter()
            .filter(|(member, at, effect)| {
                member == name && *at < before_ms && matches!(effect, Effect::WriteRecord { .. })
            })
            .map(|(_, at, _)| *at)
            .max()
            .expect("a write before the fault")
    }

    pub fn role(&self, index: usize) -> Option<Role> {
        self.members[index].core.as_ref().map(Core::role)
    }

    pub fn core(&self, index: usize) -> &Core {
        self.members[index].core.as_ref().expect("running")
    }

    pub fn active(&self) -> Vec<usize> {
        (0..self.members.len())
            .filter(|i| self.role(*i) == Some(Role::Active))
            .collect()
    }

    /// The member's own record as last written.
    pub fn written(&self, index: usize) -> DeviceRecord {
        let name = record::file_name(&format!("host:/{}", self.members[index].name));
        record::parse_record(self.files[&name].as_bytes()).expect("a record")
    }

    /// Notices of the member containing `text`.
    pub fn notices_with(&self, index: usize, text: &str) -> usize {
        self.members[index]
            .notices
            .iter()
            .filter(|(_, message)| message.contains(text))
            .count()
    }
}

/// A peer record of a device that does not run here, written "now" at `wall_ms`.
pub fn peer_record(name: &str, status: record::Status, term: u64, wall_ms: u64) -> DeviceRecord {
    let mut peer = DeviceRecord::new(&identity(name));
    peer.status = status;
    peer.term = term;
    peer.seq = 1;
    peer.written_at_ms = wall_ms;
    peer
}
