//! The core driven by hand, with an instant "sync": the basic life of a group.

use mirror_baton::core::{
    Core, CoreConfig, Effect, Event, FileObservation, FileState, Input, Moment, Role, Timing,
    record,
};

#[path = "common/core_group.rs"]
#[allow(dead_code)]
mod core_group;
use core_group::{Group, identity};

#[test]
fn first_device_becomes_active_within_the_settle_window() {
    let mut group = Group::new(&["a"]);
    group.start(0);
    let settle = Timing::default().settle_window.as_millis() as u64;
    group.run_until(settle);
    assert_eq!(group.core(0).role(), Role::Active, "{:?}", group.roles());
}

#[test]
fn three_devices_elect_one_and_fail_over_when_it_dies() {
    let mut group = Group::new(&["a", "b", "c"]);
    group.start(0);
    group.run_until(30_000);
    group.start(1);
    group.start(2);
    group.run_until(200_000);
    assert_eq!(group.active().len(), 1, "{:?}", group.roles());
    assert_eq!(group.core(0).role(), Role::Active);
    // "Crash" a: it stops handling anything.
    group.members[0].core = None;
    group.run_until(400_000);
    assert_eq!(group.active().len(), 1, "{:?}", group.roles());
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
            ("a".to_string(), Some(Role::Standby)),
            ("b".to_string(), Some(Role::Active))
        ]
    );
    group.input(1, Event::ShutdownAsked);
    group.run_until(62_000);
    assert_eq!(group.core(0).role(), Role::Active, "{:?}", group.roles());
}

#[test]
fn a_stopping_device_waits_only_the_resign_wait_for_a_silent_target() {
    let mut group = Group::a_active_b_standby();
    assert_eq!(group.core(0).role(), Role::Active);
    // b freezes (cut off from sync, say): its standby record stays live for a while, so
    // a hands over to it, and b never answers.
    group.members[1].core = None;
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
    group.members[1].core = None;
    group.input(
        0,
        Event::ActivateAsked {
            target: "host:/b".into(),
            ticket: 1,
        },
    );
    let stop_at = 70_000;
    group.run_until(stop_at);
    assert_eq!(group.core(0).role(), Role::Yielding);
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
    // Our write landed (the runtime answers every write) ...
    for effect in &effects {
        if let Effect::WriteRecord { record } = effect {
            core.handle(input_at(16_000, Event::RecordWritten { seq: record.seq }));
        }
    }
    // ... and the sync tool shows the old record again.
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
    assert_eq!(group.core(0).role(), Role::Active);
    // Stopping takes longer than the resign wait (a child's 10 s grace, say): drive a
    // by hand so StopActing is answered late.
    let a = group.core_mut(0);
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
    assert_eq!(group.active().len(), 0, "{:?}", group.roles());
    // Writable again: one device takes the role.
    group.refusing.clear();
    group.run_until(500_000);
    assert_eq!(group.active().len(), 1, "{:?}", group.roles());
}

#[test]
fn a_leader_stalled_past_its_lease_steps_down_before_its_overdue_heartbeat() {
    let mut group = Group::a_active_b_standby();
    // a stalls (SIGSTOP, a paused VM): it handles nothing while b takes over.
    let stalled_at = 61_000;
    group.run_until(stalled_at);
    let a = group.members[0].core.take();
    group.run_until(stalled_at + 120_000);
    assert_eq!(group.role(1), Some(Role::Active), "b took over");
    group.members[0].core = a;
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
    assert_ne!(group.core(0).role(), Role::Active);
    assert_eq!(group.active().len(), 1, "{:?}", group.roles());
}

#[test]
fn a_claim_that_could_not_be_written_never_becomes_active() {
    let mut group = Group::new(&["a"]);
    group.refusing.insert("a".to_string());
    group.start(0);
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
    assert_eq!(group.core(0).role(), Role::Active);
}

/// Peer b's record: `status` at `term`, its `seq`-th write, handing over to a when
/// `handoff` names a term.
fn b_record(seq: u64, status: record::Status, term: u64, handoff: Option<u64>) -> FileObservation {
    let mut b = record::DeviceRecord::new(&identity("b"));
    b.seq = seq;
    b.status = status;
    b.term = term;
    b.handoff = handoff.map(|term| record::Handoff {
        target: identity("a").device_id,
        term,
    });
    FileObservation {
        name: record::file_name(&b.device_id),
        state: FileState::Contents { text: b.to_json() },
    }
}

/// Device a, a standby behind b (Active at term 12), as in simulator seed 11844; every
/// write of a reaches the disk.
fn a_standby_behind_b() -> Core {
    let mut a = lone_core();
    a.handle(input_at(0, Event::Start));
    let files = vec![b_record(10, record::Status::Active, 12, None)];
    a.handle(input_at(0, Event::Scanned { files }));
    a.handle(input_at(0, Event::RecordWritten { seq: 1 }));
    a.drain_effects();
    assert_eq!(a.role(), Role::Standby);
    a
}

fn starts_acting(effects: &[Effect]) -> bool {
    effects
        .iter()
        .any(|e| matches!(e, Effect::StartActing { .. }))
}

/// Simulator seed 11844 (derived streams, shard 7): b handed over to a while a slept;
/// a woke 44 s after the handoff was published and found it waiting. Taking it at once
/// let b's handoff timeout (48 s) take the role back before a's claim reached b: both
/// acted, every delay within the bound. A handoff found waiting has no known age: a
/// claims its term through the settle window, and backs off when b takes the role back.
#[test]
fn a_handoff_found_on_waking_is_claimed_through_the_settle_window() {
    let mut a = a_standby_behind_b();
    let heartbeat = b_record(11, record::Status::Active, 12, None);
    a.handle(input_at(40_000, Event::FileChanged { file: heartbeat }));
    // Asleep from 60 s to 544 s; b published its handoff meanwhile, and its yielding
    // heartbeats arrived while a slept.
    let woke_at = 544_000;
    a.handle(input_at(woke_at, Event::Woke { slept_ms: 484_000 }));
    let mut effects = a.drain_effects();
    assert!(effects.contains(&Effect::Rescan), "{effects:?}");
    let files = vec![b_record(14, record::Status::Yielding, 12, Some(13))];
    a.handle(input_at(woke_at, Event::Scanned { files }));
    effects.extend(a.drain_effects());
    assert!(
        !starts_acting(&effects),
        "a handoff of unknown age is not taken at once: {effects:?}"
    );
    assert_eq!(a.role(), Role::Contending);
    let claim = effects.iter().rev().find_map(|e| match e {
        Effect::WriteRecord { record } => Some(record.clone()),
        _ => None,
    });
    let claim = claim.expect("a claim is written");
    assert_eq!((claim.status, claim.term), (record::Status::Contending, 13));
    a.handle(input_at(woke_at, Event::RecordWritten { seq: claim.seq }));
    // b's handoff timed out 4 s after a woke: b took the role back at term 14.
    let taken_back = b_record(15, record::Status::Active, 14, None);
    a.handle(input_at(
        woke_at + 8_000,
        Event::FileChanged { file: taken_back },
    ));
    a.handle(input_at(woke_at + 30_000, Event::Tick));
    let after = a.drain_effects();
    assert!(!starts_acting(&after), "a never acts: {after:?}");
    assert_eq!(a.role(), Role::Standby);
}

/// The usual handoff keeps its speed: seen arrive while a watched, it is taken at once.
#[test]
fn a_handoff_seen_arriving_is_taken_at_once() {
    let mut a = a_standby_behind_b();
    let yielding = b_record(11, record::Status::Yielding, 12, Some(13));
    a.handle(input_at(30_000, Event::FileChanged { file: yielding }));
    let effects = a.drain_effects();
    assert!(starts_acting(&effects), "{effects:?}");
    assert_eq!(a.role(), Role::Active);
}

/// A handoff seen arrive but left untaken while a's disk refused writes: taken at once
/// when the disk recovers soon enough for a's claim to reach b before b's handoff
/// timeout, claimed through the settle window when it recovers later.
#[test]
fn a_handoff_left_untaken_too_long_is_claimed_through_the_settle_window() {
    let window_ms = {
        let timing = Timing::default();
        (timing.handoff_timeout - timing.settle_window).as_millis() as u64
    };
    for (recovers_after_ms, taken_at_once) in
        [(window_ms - 1_000, true), (window_ms + 1_000, false)]
    {
        let mut a = lone_core();
        a.handle(input_at(0, Event::Start));
        let files = vec![b_record(10, record::Status::Active, 12, None)];
        a.handle(input_at(0, Event::Scanned { files }));
        let reason = "Read-only file system (os error 30)".to_string();
        a.handle(input_at(0, Event::RecordWriteFailed { seq: 1, reason }));
        a.drain_effects();
        let yielding = b_record(11, record::Status::Yielding, 12, Some(13));
        a.handle(input_at(30_000, Event::FileChanged { file: yielding }));
        let effects = a.drain_effects();
        assert!(
            !starts_acting(&effects),
            "not while writes fail: {effects:?}"
        );
        let recovered_at = 30_000 + recovers_after_ms;
        a.handle(input_at(recovered_at, Event::Tick));
        a.drain_effects();
        let seq = a.own_record().seq;
        a.handle(input_at(recovered_at, Event::RecordWritten { seq }));
        let effects = a.drain_effects();
        assert_eq!(starts_acting(&effects), taken_at_once, "{effects:?}");
        let role = if taken_at_once {
            Role::Active
        } else {
            Role::Contending
        };
        assert_eq!(
            a.role(),
            role,
            "recovered {recovers_after_ms} ms after: {effects:?}"
        );
    }
}
