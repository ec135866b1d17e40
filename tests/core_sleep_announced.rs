//! The core hears "the machine is about to sleep, with this much grace"
//! (`Event::SleepAnnounced`): an active device hands over make-before-break like a
//! resignation but stays running as a standby; a standby only notes it; with no live
//! standby the active device keeps the role and says so; and the sleep is allowed
//! (`Effect::AllowSleep`) once the successor's claim is seen, never before the handoff
//! is published.

#[path = "common/core_group.rs"]
#[allow(dead_code)]
mod core_group;

use core_group::{Group, identity, peer_record};
use mirror_baton::core::record::Status;
use mirror_baton::core::{Effect, Event, Level, Role};

fn announced(grace_ms: u64) -> Event {
    Event::SleepAnnounced { grace_ms }
}

/// Positions in `member`'s effect log of the first effect matching each predicate.
fn position(group: &Group, member: usize, matches: impl Fn(&Effect) -> bool) -> Option<usize> {
    group
        .effects(member)
        .iter()
        .position(|(_, effect)| matches(effect))
}

fn sleep_allowed(group: &Group, member: usize) -> usize {
    group
        .effects(member)
        .iter()
        .filter(|(_, effect)| matches!(effect, Effect::AllowSleep { .. }))
        .count()
}

#[test]
fn an_active_device_hands_over_before_sleeping_and_stays_a_standby() {
    let mut group = Group::a_active_b_standby();
    let before = group.effects(0).len();
    group.input(0, announced(4_500));
    assert_eq!(group.active(), vec![1], "b took over by handoff, at once");
    assert_eq!(group.core(1).term(), 2);
    assert_eq!(
        group.role(0),
        Some(Role::Standby),
        "a stays running, as a standby"
    );
    assert_eq!(group.written(0).status, Status::Standby);
    // Make-before-break: stop polling, publish the handoff, see the claim, then sleep.
    let after = |matches: fn(&Effect) -> bool| {
        position(&group, 0, matches)
            .filter(|at| *at >= before)
            .unwrap_or_else(|| panic!("missing effect in {:?}", group.effects(0)))
    };
    let stopped = after(|e| matches!(e, Effect::StopActing { .. }));
    let published = after(|e| {
        matches!(e, Effect::WriteRecord { record } if record.status == Status::Yielding
            && record.handoff.as_ref().is_some_and(|h| h.target == "host:/b" && h.term == 2))
    });
    let allowed = after(|e| matches!(e, Effect::AllowSleep { .. }));
    assert!(
        stopped < published && published < allowed,
        "{stopped} {published} {allowed}"
    );
    assert_eq!(sleep_allowed(&group, 0), 1, "allowed once");
    assert_eq!(group.notices_with(0, "about to sleep"), 1);
    // Nothing is left armed that would take the role back while the machine sleeps.
    group.run_until(600_000);
    assert_eq!(group.active(), vec![1]);
    assert_eq!(group.role(0), Some(Role::Standby));
}

#[test]
fn after_the_wake_the_old_leader_re_reads_the_folder_and_stays_standby() {
    let mut group = Group::a_active_b_standby();
    group.input(0, announced(4_500));
    // Asleep for ten minutes: b heartbeats meanwhile, unseen by a.
    group.run_until(660_000);
    group.input(0, Event::Woke { slept_ms: 600_000 });
    let rescans = group
        .effects(0)
        .iter()
        .rev()
        .take_while(|(at, _)| *at == 660_000)
        .filter(|(_, e)| matches!(e, Effect::Rescan))
        .count();
    assert!(rescans >= 1, "the wake re-reads the folder");
    group.run_until(900_000);
    assert_eq!(group.active(), vec![1]);
    assert_eq!(group.role(0), Some(Role::Standby));
}

#[test]
fn with_no_live_standby_the_active_device_keeps_the_role_and_says_so() {
    let mut group = Group::new(&["a"]);
    group.start(0);
    group.run_until(60_000);
    assert_eq!(group.active(), vec![0]);
    let before = group.effects(0).len();
    group.input(0, announced(4_500));
    assert_eq!(group.active(), vec![0], "keeps the role");
    let effects = group.effects(0);
    let new: Vec<&Effect> = effects[before..].iter().map(|(_, e)| e).collect();
    assert!(
        !new.iter().any(|e| matches!(e, Effect::StopActing { .. })),
        "{new:?}"
    );
    assert!(
        new.iter().any(|e| matches!(e, Effect::AllowSleep { .. })),
        "the sleep is allowed at once: {new:?}"
    );
    assert!(
        group.members[0]
            .notices
            .iter()
            .any(|(level, message)| *level == Level::Warn
                && message.contains("no standby is live: keeping the role")),
        "{:?}",
        group.members[0].notices
    );
}

#[test]
fn a_standby_only_notes_the_sleep() {
    let mut group = Group::a_active_b_standby();
    let before = group.effects(1).len();
    group.input(1, announced(0));
    let effects = group.effects(1);
    let new: Vec<&Effect> = effects[before..].iter().map(|(_, e)| e).collect();
    assert!(
        new.iter().all(|e| matches!(
            e,
            Effect::AllowSleep { .. }
                | Effect::Notify {
                    level: Level::Info,
                    ..
                }
        )),
        "a standby neither writes nor changes role: {new:?}"
    );
    assert_eq!(sleep_allowed(&group, 1), 1);
    assert_eq!(group.active(), vec![0]);
    assert_eq!(group.role(1), Some(Role::Standby));
}

#[test]
fn a_contender_withdraws_its_claim_before_sleeping() {
    let mut group = Group::new(&["a"]);
    group.start(0);
    group.run_until(1_000);
    assert_eq!(group.role(0), Some(Role::Contending));
    group.input(0, announced(4_500));
    assert_eq!(group.role(0), Some(Role::Standby));
    assert_eq!(
        group.written(0).status,
        Status::Standby,
        "the claim is withdrawn"
    );
    assert_eq!(sleep_allowed(&group, 0), 1);
}

#[test]
fn when_the_grace_runs_out_first_the_machine_sleeps_with_the_handoff_published() {
    // b is a standby whose process does not run here: it never answers the handoff.
    let mut group = Group::new(&["a"]);
    group.start(0);
    group.run_until(60_000);
    assert_eq!(group.active(), vec![0]);
    let b = peer_record("b", Status::Standby, 0, 1_700_000_000_000 + 60_000);
    group.put_record(&b);
    group.input(0, announced(4_500));
    assert_eq!(group.role(0), Some(Role::Yielding));
    let handoff = group.written(0).handoff.expect("the handoff is published");
    assert_eq!((handoff.target.as_str(), handoff.term), ("host:/b", 2));
    group.run_until(70_000);
    assert_eq!(
        sleep_allowed(&group, 0),
        0,
        "no claim seen: nothing to allow"
    );
    // b takes it up while a sleeps; a sees it after the wake.
    let mut claim = peer_record("b", Status::Active, 2, 1_700_000_000_000 + 70_000);
    claim.seq = 2;
    group.put_record(&claim);
    assert_eq!(group.role(0), Some(Role::Standby));
    assert_eq!(
        sleep_allowed(&group, 0),
        0,
        "past the grace: said, not asked for"
    );
    assert_eq!(group.notices_with(0, "after the sleep's grace ran out"), 1);
}

#[test]
fn a_sleep_announced_during_a_handoff_is_allowed_once_the_target_claims() {
    let mut group = Group::new(&["a"]);
    group.start(0);
    group.run_until(60_000);
    let b = peer_record("b", Status::Standby, 0, 1_700_000_000_000 + 60_000);
    group.put_record(&b);
    group.input(
        0,
        Event::ActivateAsked {
            target: "host:/b".into(),
            ticket: 7,
        },
    );
    assert_eq!(group.role(0), Some(Role::Yielding));
    group.input(0, announced(29_000));
    assert_eq!(sleep_allowed(&group, 0), 0);
    group.now = 62_000;
    let mut claim = peer_record("b", Status::Active, 2, 1_700_000_000_000 + 62_000);
    claim.seq = 2;
    group.put_record(&claim);
    assert_eq!(group.role(0), Some(Role::Standby));
    assert_eq!(sleep_allowed(&group, 0), 1);
}

#[test]
fn a_standby_on_another_machine_is_preferred_to_one_that_sleeps_with_us() {
    // a and b share a machine (same host name and boot); c is elsewhere.
    let on = |name: &str, host: &str| {
        let mut id = identity(name);
        id.hostname = host.into();
        id.boot_id = format!("boot-{host}");
        id
    };
    let mut group = Group::new(&["a", "b", "c"]);
    group.start_as(0, on("a", "mac1"));
    group.run_until(30_000);
    group.start_as(2, on("c", "mac2"));
    group.run_until(40_000);
    // b's record changed last: the plain best standby would be b.
    group.start_as(1, on("b", "mac1"));
    group.run_until(60_000);
    assert_eq!(group.active(), vec![0]);
    group.input(0, announced(29_000));
    assert_eq!(group.active(), vec![2], "c, on another machine, took over");

    // With only a standby on the same machine, it is still handed the role.
    let mut group = Group::new(&["a", "b"]);
    group.start_as(0, on("a", "mac1"));
    group.run_until(30_000);
    group.start_as(1, on("b", "mac1"));
    group.run_until(60_000);
    group.input(0, announced(29_000));
    assert_eq!(group.active(), vec![1]);
}

#[test]
fn waking_before_the_claim_is_seen_makes_a_standby_never_a_take_back() {
    // b's process does not run here: a sleeps with its handoff unanswered.
    let mut group = Group::new(&["a"]);
    group.start(0);
    group.run_until(60_000);
    let b = peer_record("b", Status::Standby, 0, 1_700_000_000_000 + 60_000);
    group.put_record(&b);
    group.input(0, announced(4_500));
    assert_eq!(group.role(0), Some(Role::Yielding));
    // Asleep half an hour; the overdue handoff timeout must not take the role back.
    group.now = 1_860_000;
    group.input(
        0,
        Event::Woke {
            slept_ms: 1_800_000,
        },
    );
    assert_eq!(group.role(0), Some(Role::Standby));
    assert_ne!(group.written(0).status, Status::Active);
    assert!(
        group.written(0).handoff.is_none(),
        "the handoff is withdrawn"
    );
    assert!(
        !group.members[0]
            .notices
            .iter()
            .any(|(_, message)| message.contains("taking the role back")),
        "{:?}",
        group.members[0].notices
    );
    assert_eq!(group.notices_with(0, "woke while handing over"), 1);
}
