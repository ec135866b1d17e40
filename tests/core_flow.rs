//! The core driven by hand, with an instant "sync": the basic life of a group.

use mirror_baton::core::{
    Core, CoreConfig, Effect, Event, FileObservation, FileState, Identity, Input, Moment, Role,
    Timing, record,
};

struct Device {
    core: Core,
    name: String,
}

fn identity(name: &str) -> Identity {
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

/// A folder with instant sync: every write is seen by every device at once.
struct Group {
    devices: Vec<Device>,
    files: std::collections::BTreeMap<String, String>,
    now: u64,
    /// (device name, moment, exit code, reason) of every exit asked for.
    exits: Vec<(String, u64, i32, String)>,
    /// Devices whose disk refuses writes (a read-only folder, a full disk).
    refusing: std::collections::BTreeSet<String>,
    /// (device name, moment, effect) of every effect, in order.
    log: Vec<(String, u64, Effect)>,
}

impl Group {
    fn new(names: &[&str]) -> Self {
        let devices = names
            .iter()
            .enumerate()
            .map(|(index, name)| Device {
                core: Core::new(CoreConfig {
                    identity: identity(name),
                    timing: Timing::default(),
                    seed: index as u64 + 1,
                }),
                name: name.to_string(),
            })
            .collect();
        Group {
            devices,
            files: Default::default(),
            now: 0,
            exits: Vec::new(),
            refusing: Default::default(),
            log: Vec::new(),
        }
    }

    fn input(&mut self, index: usize, event: Event) {
        let at = Moment(self.now);
        self.devices[index].core.handle(Input {
            at,
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
        let effects = self.devices[index].core.drain_effects();
        let mut writes = Vec::new();
        let device = self.devices[index].name.clone();
        for effect in effects {
            self.log.push((device.clone(), self.now, effect.clone()));
            match effect {
                Effect::WriteRecord { record: r } if self.refusing.contains(&device) => {
                    let reason = format!(
                        "cannot write /sync/devices/{}: Read-only file system (os error 30)",
                        record::file_name(&r.device_id)
                    );
                    self.input(index, Event::RecordWriteFailed { seq: r.seq, reason });
                }
                Effect::WriteRecord { record: r } => {
                    let name = record::file_name(&r.device_id);
                    self.files.insert(name.clone(), r.to_json());
                    writes.push(name);
                    self.input(index, Event::RecordWritten { seq: r.seq });
                }
                Effect::Rescan => {
                    let files = self.scan();
                    self.input(index, Event::Scanned { files });
                }
                Effect::Exit { code, reason } => {
                    let name = self.devices[index].name.clone();
                    self.exits.push((name, self.now, code, reason));
                }
                Effect::StopActing { .. } => self.input(
                    index,
                    Event::ActingStopped {
                        last_update_id: None,
                    },
                ),
                _ => {}
            }
        }
        for name in writes {
            let text = self.files[&name].clone();
            for other in 0..self.devices.len() {
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
    fn run_until(&mut self, until: u64) {
        loop {
            let next = self
                .devices
                .iter()
                .enumerate()
                .filter_map(|(i, d)| d.core.next_timeout().map(|t| (t.at.0, i)))
                .min();
            match next {
                Some((at, index)) if at <= until => {
                    self.now = self.now.max(at);
                    self.input(index, Event::Tick);
                }
                _ => break,
            }
        }
        self.now = until;
    }

    /// a starts alone and leads; b joins as standby; 60 s in.
    fn a_active_b_standby() -> Self {
        let mut group = Group::new(&["a", "b"]);
        group.input(0, Event::Start);
        group.run_until(30_000);
        group.input(1, Event::Start);
        group.run_until(60_000);
        group
    }

    fn roles(&self) -> Vec<(String, Role)> {
        self.devices
            .iter()
            .map(|d| (d.name.clone(), d.core.role()))
            .collect()
    }

    fn active_count(&self) -> usize {
        self.devices
            .iter()
            .filter(|d| d.core.role() == Role::Active)
            .count()
    }
}

#[test]
fn first_device_becomes_active_within_the_settle_window() {
    let mut group = Group::new(&["a"]);
    group.input(0, Event::Start);
    let settle = Timing::default().settle_window.as_millis() as u64;
    group.run_until(settle);
    assert_eq!(
        group.devices[0].core.role(),
        Role::Active,
        "{:?}",
        group.roles()
    );
}

#[test]
fn three_devices_elect_one_and_fail_over_when_it_dies() {
    let mut group = Group::new(&["a", "b", "c"]);
    group.input(0, Event::Start);
    group.run_until(30_000);
    group.input(1, Event::Start);
    group.input(2, Event::Start);
    group.run_until(200_000);
    assert_eq!(group.active_count(), 1, "{:?}", group.roles());
    assert_eq!(group.devices[0].core.role(), Role::Active);
    // "Crash" a: it stops handling anything.
    let crashed = group.devices.remove(0);
    drop(crashed);
    group.run_until(400_000);
    assert_eq!(group.active_count(), 1, "{:?}", group.roles());
}

#[test]
fn activation_moves_the_role_and_shutdown_hands_it_over() {
    let mut group = Group::a_active_b_standby();
    group.input(
        0,
        Event::ActivateAsked {
            target: "host:/b".into(),
            ticket: 1,
        },
    );
    group.run_until(61_000);
    assert_eq!(
        group.roles(),
        [
            ("a".to_string(), Role::Standby),
            ("b".to_string(), Role::Active)
        ]
    );
    group.input(1, Event::ShutdownAsked);
    group.run_until(62_000);
    assert_eq!(
        group.devices[0].core.role(),
        Role::Active,
        "{:?}",
        group.roles()
    );
}

#[test]
fn a_stopping_device_waits_only_the_resign_wait_for_a_silent_target() {
    let mut group = Group::a_active_b_standby();
    assert_eq!(group.devices[0].core.role(), Role::Active);
    // b freezes (cut off from sync, say): its standby record stays live for a while, so
    // a hands over to it, and b never answers.
    group.devices.truncate(1);
    let asked = 61_000;
    group.run_until(asked);
    group.input(0, Event::ShutdownAsked);
    let timing = Timing::default();
    group.run_until(asked + timing.handoff_timeout.as_millis() as u64 * 2);
    let wait = timing.resign_wait.as_millis() as u64;
    assert!(wait < timing.handoff_timeout.as_millis() as u64);
    match group.exits.as_slice() {
        [(name, at, 0, reason)] => {
            assert_eq!(name, "a");
            assert_eq!(
                *at,
                asked + wait,
                "exits when the resign wait ends: {reason}"
            );
            assert!(reason.contains("did not take over"), "{reason}");
        }
        other => panic!("one clean exit of a, got {other:?}"),
    }
    let own = group.files[&record::file_name("host:/a")].clone();
    assert!(
        own.contains("\"stopped\""),
        "the final record says stopped: {own}"
    );
}

#[test]
fn a_stop_during_a_slow_handoff_shortens_the_wait() {
    let mut group = Group::a_active_b_standby();
    group.devices.truncate(1);
    group.input(
        0,
        Event::ActivateAsked {
            target: "host:/b".into(),
            ticket: 1,
        },
    );
    let stop_at = 70_000;
    group.run_until(stop_at);
    assert_eq!(group.devices[0].core.role(), Role::Yielding);
    group.input(0, Event::ShutdownAsked);
    group.run_until(200_000);
    let wait = Timing::default().resign_wait.as_millis() as u64;
    match group.exits.as_slice() {
        [(_, at, 0, _)] => assert_eq!(*at, stop_at + wait),
        other => panic!("one clean exit, got {other:?}"),
    }
}

/// Device a's core on its own, driven by hand.
fn lone_core() -> Core {
    Core::new(CoreConfig {
        identity: identity("a"),
        timing: Timing::default(),
        seed: 1,
    })
}

/// `event` at `ms` on the core's clock (the wall clock reads the same, plus an epoch).
fn input_at(ms: u64, event: Event) -> Input {
    Input {
        at: Moment(ms),
        wall_ms: 1_700_000_000_000 + ms,
        event,
    }
}

/// One core driven by hand: Start, then a complete scan holding `own_file`, the record
/// at this device's own file name.
fn start_with_own_record(core: &mut Core, own_file: &record::DeviceRecord) -> Vec<Effect> {
    core.handle(input_at(0, Event::Start));
    let mut effects = core.drain_effects();
    let files = vec![FileObservation {
        name: record::file_name(&own_file.device_id),
        state: FileState::Contents {
            text: own_file.to_json(),
        },
    }];
    core.handle(input_at(0, Event::Scanned { files }));
    effects.extend(core.drain_effects());
    effects
}

fn twin_record(status: record::Status) -> record::DeviceRecord {
    let mut twin = identity("a");
    twin.install_id = "install-of-the-twin".into();
    twin.instance = "twin-run".into();
    let mut found = record::DeviceRecord::new(&twin);
    found.seq = 40;
    found.status = status;
    found
}

#[test]
fn a_remembered_refusal_watches_long_enough_to_see_a_quiet_twin_write() {
    let mut core = lone_core();
    core.recall_refusal("install-of-the-twin");
    let mut twin = twin_record(record::Status::Standby);
    let mut effects = start_with_own_record(&mut core, &twin);
    // Past the usual watch (one settle window), still watching: a standby twin writes
    // only every 390-450 s.
    core.handle(input_at(60_000, Event::Tick));
    assert_eq!(core.role(), Role::Registering);
    twin.seq += 1;
    core.handle(input_at(
        420_000,
        Event::FileChanged {
            file: FileObservation {
                name: record::file_name(&twin.device_id),
                state: FileState::Contents {
                    text: twin.to_json(),
                },
            },
        },
    ));
    effects.extend(core.drain_effects());
    assert!(
        !effects
            .iter()
            .any(|e| matches!(e, Effect::WriteRecord { .. })),
        "writes nothing into the twin's record: {effects:?}"
    );
    assert!(
        effects
            .iter()
            .any(|e| matches!(e, Effect::Exit { code: 3, .. })),
        "refuses once the twin writes: {effects:?}"
    );
}

#[test]
fn a_remembered_refusal_expires_when_the_twin_stays_silent() {
    let mut core = lone_core();
    core.recall_refusal("install-of-the-twin");
    let mut effects = start_with_own_record(&mut core, &twin_record(record::Status::Active));
    let silent = Timing::default().liveness_standby.as_millis() as u64;
    core.handle(input_at(silent, Event::Tick));
    effects.extend(core.drain_effects());
    assert_ne!(
        core.role(),
        Role::Registering,
        "took the record over: {effects:?}"
    );
    assert!(effects.iter().any(|e| matches!(e, Effect::ForgetRefusal)));
    assert!(!effects.iter().any(|e| matches!(e, Effect::Exit { .. })));
}

#[test]
fn a_remembered_refusal_is_forgotten_once_the_twin_has_stopped() {
    let mut core = lone_core();
    core.recall_refusal("install-of-the-twin");
    let mut effects = start_with_own_record(&mut core, &twin_record(record::Status::Stopped));
    // Another install's stopped record is still watched for one settle window first.
    core.handle(input_at(
        Timing::default().settle_window.as_millis() as u64,
        Event::Tick,
    ));
    effects.extend(core.drain_effects());
    assert_ne!(core.role(), Role::Registering, "took part: {effects:?}");
    assert!(effects.iter().any(|e| matches!(e, Effect::ForgetRefusal)));
    assert!(!effects.iter().any(|e| matches!(e, Effect::Exit { .. })));
}

#[test]
fn a_clone_seen_writing_our_record_is_remembered_before_the_exit() {
    let mut core = lone_core();
    let mut found = twin_record(record::Status::Standby);
    let mut effects = start_with_own_record(&mut core, &found);
    // The twin writes again while we watch: a second live writer.
    found.seq += 1;
    core.handle(input_at(
        2_000,
        Event::FileChanged {
            file: FileObservation {
                name: record::file_name(&found.device_id),
                state: FileState::Contents {
                    text: found.to_json(),
                },
            },
        },
    ));
    effects.extend(core.drain_effects());
    let remember = effects.iter().position(|e| {
        matches!(e, Effect::RememberRefusal { install_id } if install_id == "install-of-the-twin")
    });
    let exit = effects
        .iter()
        .position(|e| matches!(e, Effect::Exit { code: 3, .. }));
    assert!(
        matches!((remember, exit), (Some(r), Some(x)) if r < x),
        "{effects:?}"
    );
}

#[test]
fn an_old_copy_of_the_record_we_took_over_is_not_a_second_writer() {
    let mut core = lone_core();
    let prior = twin_record(record::Status::Stopped);
    let mut effects = start_with_own_record(&mut core, &prior);
    core.handle(input_at(
        Timing::default().settle_window.as_millis() as u64,
        Event::Tick,
    ));
    effects.extend(core.drain_effects());
    assert_ne!(core.role(), Role::Registering, "took part: {effects:?}");
    // The sync tool (or a read queued before our write) shows the old record again.
    core.handle(input_at(
        17_000,
        Event::FileChanged {
            file: FileObservation {
                name: record::file_name(&prior.device_id),
                state: FileState::Contents {
                    text: prior.to_json(),
                },
            },
        },
    ));
    let effects = core.drain_effects();
    assert!(
        !effects.iter().any(|e| matches!(e, Effect::Exit { .. })),
        "not refused: {effects:?}"
    );
    assert!(
        effects
            .iter()
            .any(|e| matches!(e, Effect::WriteRecord { record } if record.instance == "inst-a")),
        "ours is written again over the old copy: {effects:?}"
    );
}

#[test]
fn the_handoff_wait_starts_when_the_handoff_is_published_not_before() {
    let mut group = Group::a_active_b_standby();
    assert_eq!(group.devices[0].core.role(), Role::Active);
    // Stopping takes longer than the resign wait (a child's 10 s grace, say): drive a
    // by hand so StopActing is answered late.
    let a = &mut group.devices[0].core;
    a.handle(input_at(61_000, Event::ShutdownAsked));
    let mut effects = a.drain_effects();
    assert!(
        effects
            .iter()
            .any(|e| matches!(e, Effect::StopActing { .. }))
    );
    let wait = Timing::default().resign_wait.as_millis() as u64;
    a.handle(input_at(61_000 + wait + 1_000, Event::Tick));
    effects.extend(a.drain_effects());
    assert!(
        !effects.iter().any(|e| matches!(e, Effect::Exit { .. })),
        "gave up before the handoff was even published: {effects:?}"
    );
    a.handle(input_at(
        61_000 + wait + 2_000,
        Event::ActingStopped {
            last_update_id: None,
        },
    ));
    let published = a.drain_effects();
    assert!(
        published
            .iter()
            .any(|e| matches!(e, Effect::WriteRecord { record } if record.handoff.is_some())),
        "the handoff is published: {published:?}"
    );
    assert_eq!(a.role(), Role::Yielding);
}

impl Group {
    /// Every effect `name` had carried out from `from_ms` on.
    fn effects_of(&self, name: &str, from_ms: u64) -> Vec<(u64, Effect)> {
        self.log
            .iter()
            .filter(|(device, at, _)| device == name && *at >= from_ms)
            .map(|(_, at, effect)| (*at, effect.clone()))
            .collect()
    }

    /// The moment `name` last asked for a write that reached the disk, before `before_ms`.
    fn last_good_write(&self, name: &str, before_ms: u64) -> u64 {
        self.log
            .iter()
            .filter(|(device, at, effect)| {
                device == name && *at < before_ms && matches!(effect, Effect::WriteRecord { .. })
            })
            .map(|(_, at, _)| *at)
            .max()
            .expect("a write before the fault")
    }
}

fn is_active_write(effect: &Effect) -> bool {
    matches!(effect, Effect::WriteRecord { record } if record.status == record::Status::Active)
}

#[test]
fn a_device_that_cannot_write_its_record_neither_contends_nor_acts() {
    let mut group = Group::a_active_b_standby();
    let fault = 61_000;
    group.run_until(fault);
    let last_good = group.last_good_write("a", fault);
    group.refusing.extend(["a".to_string(), "b".to_string()]);
    group.run_until(400_000);
    let lease = Timing::default().lease().as_millis() as u64;
    let stopped: Vec<u64> = group
        .effects_of("a", fault)
        .into_iter()
        .filter(|(_, e)| matches!(e, Effect::StopActing { .. }))
        .map(|(at, _)| at)
        .collect();
    assert_eq!(
        stopped,
        [last_good + lease],
        "the active device stops exactly when its lease runs out"
    );
    for name in ["a", "b"] {
        let effects = group.effects_of(name, fault);
        assert!(
            !effects
                .iter()
                .any(|(_, e)| matches!(e, Effect::StartActing { .. })),
            "{name} acted on a record it could not write: {effects:?}"
        );
        let warnings = effects
            .iter()
            .filter(|(_, e)| matches!(e, Effect::Notify { message, .. } if message.starts_with("cannot write this device's record")))
            .count();
        assert_eq!(warnings, 1, "{name} reports the failure once per episode");
        let retries = effects
            .iter()
            .filter(|(_, e)| matches!(e, Effect::WriteRecord { .. }))
            .count();
        assert!(retries > 3, "{name} keeps retrying ({retries} writes)");
    }
    assert_eq!(group.active_count(), 0, "{:?}", group.roles());
    // Writable again: one device takes the role.
    group.refusing.clear();
    group.run_until(500_000);
    assert_eq!(group.active_count(), 1, "{:?}", group.roles());
}

#[test]
fn a_leader_stalled_past_its_lease_steps_down_before_its_overdue_heartbeat() {
    let mut group = Group::a_active_b_standby();
    // a stalls (SIGSTOP, a paused VM): it handles nothing while b takes over.
    let stalled_at = 61_000;
    group.run_until(stalled_at);
    let a = group.devices.remove(0);
    group.run_until(stalled_at + 120_000);
    assert_eq!(group.devices[0].core.role(), Role::Active, "b took over");
    group.devices.insert(0, a);
    let resumed = group.now;
    // The runtime's overdue timer fires: the first input after the stall.
    group.input(0, Event::Tick);
    let effects = group.effects_of("a", resumed);
    let stop = effects
        .iter()
        .position(|(_, e)| matches!(e, Effect::StopActing { .. }));
    let rescan = effects
        .iter()
        .position(|(_, e)| matches!(e, Effect::Rescan));
    let active_write = effects.iter().position(|(_, e)| is_active_write(e));
    assert!(
        matches!((stop, rescan), (Some(s), Some(r)) if s < r),
        "stops, then re-reads the folder: {effects:?}"
    );
    assert!(
        active_write.is_none_or(|w| w > stop.unwrap_or(0)),
        "no heartbeat renews the lapsed lease first: {effects:?}"
    );
    assert_ne!(group.devices[0].core.role(), Role::Active);
    assert_eq!(group.active_count(), 1, "{:?}", group.roles());
}

#[test]
fn a_claim_that_could_not_be_written_never_becomes_active() {
    let mut group = Group::new(&["a"]);
    group.refusing.insert("a".to_string());
    group.input(0, Event::Start);
    group.run_until(120_000);
    assert!(
        !group
            .effects_of("a", 0)
            .iter()
            .any(|(_, e)| matches!(e, Effect::StartActing { .. })),
        "{:?}",
        group.effects_of("a", 0)
    );
    group.refusing.clear();
    group.run_until(200_000);
    assert_eq!(group.devices[0].core.role(), Role::Active);
}
