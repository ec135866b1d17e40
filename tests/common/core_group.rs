//! A group of real cores over an instant "sync" (every write is seen by every device at
//! once), with a stand-in for the Telegram side: `StartActing` is answered with a
//! refusal while the group's token is refused, `StopActing` with `ActingStopped`, and
//! every write with `RecordWritten` (the disk never refuses one here).

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

pub fn identity(name: &str) -> Identity {
    Identity {
        device_id: format!("host:/{name}"),
        hostname: "host".into(),
        project_dir: format!("/{name}"),
        pid: 0,
        instance: format!("inst-{name}"),
        install_id: format!("install-{name}"),
        boot_id: String::new(),
        priority: 0,
        thread_id: None,
        version: "test".into(),
    }
}

pub struct Group {
    pub members: Vec<Member>,
    pub files: std::collections::BTreeMap<String, String>,
    pub now: u64,
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
        }
    }

    pub fn start(&mut self, index: usize) {
        let name = self.members[index].name.clone();
        self.members[index].core = Some(Core::new(CoreConfig {
            identity: identity(&name),
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
        for effect in effects {
            match effect {
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
                Effect::Exit { .. } => self.members[index].core = None,
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
