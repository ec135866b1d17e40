//! Every number in a record is untrusted input: an absurd update id or term in a peer's
//! record (or in our own from a previous run) is reported once per file, never computed
//! with, and never spreads into our record. Terms never wrap.

#[path = "common/core_group.rs"]
#[allow(dead_code)]
mod core_group;

use core_group::{Group, peer_record};
use mirror_baton::core::record::{self, Status, TERM_MAX};
use mirror_baton::core::{Level, Role, Timing};

const WALL: u64 = 1_700_000_000_000;

fn settle_ms() -> u64 {
    Timing::default().settle_window.as_millis() as u64
}

/// A standby peer at term u64::MAX made our next claim `u64::MAX + 1`: a panic in debug
/// builds, term 0 in release, below every claim. Now its term is reported and left out.
#[test]
fn a_peer_at_term_u64_max_is_reported_once_and_our_claim_stays_sane() {
    let mut group = Group::new(&["a"]);
    group.start(0);
    let ghost = peer_record("ghost", Status::Standby, u64::MAX, WALL);
    group.put_record(&ghost);
    for _ in 0..5 {
        group.put_record(&ghost); // re-read on every change or rescan
    }
    group.run_until(5 * 60_000);
    assert_eq!(group.role(0), Some(Role::Active));
    assert_eq!(
        group.core(0).term(),
        1,
        "the absurd term is not taken into ours"
    );
    assert_eq!(group.written(0).term, 1);
    let reports = group.notices_with(0, "absurd number: term");
    assert_eq!(reports, 1, "{:?}", group.members[0].notices);
    assert!(
        group.members[0]
            .notices
            .iter()
            .any(|(level, m)| *level == Level::Warn && m.contains(&u64::MAX.to_string()))
    );
}

/// A live claim at an absurd term is still a live claim: never preempted (two devices
/// would act), never taken into our term; once it lapses we claim at a sane term.
#[test]
fn a_live_active_peer_at_an_absurd_term_is_followed_not_preempted_and_not_copied() {
    let mut group = Group::new(&["a"]);
    let mut ghost = peer_record("ghost", Status::Active, TERM_MAX + 1, WALL);
    group.put_record(&ghost);
    group.start(0);
    // It writes every 20 s for two minutes: alive.
    for step in 1..=6 {
        group.run_until(step * 20_000);
        ghost.seq += 1;
        ghost.written_at_ms = WALL + group.now;
        group.put_record(&ghost);
        assert_eq!(group.role(0), Some(Role::Standby), "at {} ms", group.now);
    }
    // Then it falls silent; after its lease and a settle window, we lead at term 1.
    let lease = Timing::default().liveness_active.as_millis() as u64;
    group.run_until(group.now + lease + settle_ms() + 10_000);
    assert_eq!(group.role(0), Some(Role::Active));
    assert_eq!(group.core(0).term(), 1);
    assert_eq!(group.notices_with(0, "absurd number: term"), 1);
}

/// A handoff addressed to us at an absurd term is not taken: our term would be absurd.
#[test]
fn a_handoff_at_an_absurd_term_is_not_taken() {
    let mut group = Group::new(&["a"]);
    let mut ghost = peer_record("ghost", Status::Yielding, 3, WALL);
    ghost.handoff = Some(record::Handoff {
        target: "host:/a".into(),
        term: u64::MAX,
    });
    group.put_record(&ghost);
    group.start(0);
    group.run_until(1_000);
    assert_eq!(
        group.role(0),
        Some(Role::Standby),
        "the handoff is not taken"
    );
    // Once the yielder's record lapses, we claim the term after its sane one.
    group.run_until(5 * 60_000);
    assert_eq!(group.role(0), Some(Role::Active));
    assert_eq!(group.core(0).term(), 4);
}

/// A peer whose record says it handled update i64::MAX made the next active device send
/// offset i64::MAX + 1 (a wrap), deliver nothing, and copy the id into its own record.
#[test]
fn an_absurd_update_id_is_no_hint_and_never_reaches_our_record() {
    let mut group = Group::new(&["a"]);
    group.start(0);
    let mut ghost = peer_record("ghost", Status::Standby, 4, WALL);
    ghost.last_update_id = Some(i64::MAX);
    ghost.handled_above = vec![i64::MAX - 1];
    ghost.progress_term = Some(4);
    group.put_record(&ghost);
    let mut sane = peer_record("sane", Status::Standby, 2, WALL);
    sane.last_update_id = Some(500);
    sane.progress_term = Some(2);
    group.put_record(&sane);
    for _ in 0..3 {
        group.put_record(&ghost);
    }
    group.run_until(5 * 60_000);
    assert_eq!(group.role(0), Some(Role::Active));
    let started = &group.members[0].started;
    assert_eq!(started.len(), 1, "{started:?}");
    assert_eq!(
        started[0].2,
        Some(500),
        "the start comes from the sane record"
    );
    let own = group.written(0);
    assert_eq!(own.last_update_id, Some(500));
    assert!(own.handled_above.is_empty());
    assert_eq!(group.notices_with(0, "absurd number: last_update_id"), 1);
    // Our progress then replaces it; the absurd id never gets in.
    group.input(
        0,
        mirror_baton::core::Event::UpdateHandled {
            update_id: i64::MAX,
        },
    );
    group.run_until(group.now + 60_000);
    assert_ne!(group.written(0).last_update_id, Some(i64::MAX));
}

/// Our own record from a previous run, corrupted: its term and seq are not continued
/// from (they would wrap), its absurd progress not adopted.
#[test]
fn our_own_corrupt_record_is_not_continued_from() {
    let mut group = Group::new(&["a"]);
    let mut prior = peer_record("a", Status::Stopped, u64::MAX, WALL);
    prior.instance = "previous-run".into();
    prior.install_id = "install-a".into();
    prior.seq = u64::MAX;
    prior.last_update_id = Some(-7);
    group.put_record(&prior);
    group.start(0);
    group.run_until(5 * 60_000);
    assert_eq!(group.role(0), Some(Role::Active));
    let own = group.written(0);
    assert!(own.seq < 100, "seq restarted low: {}", own.seq);
    assert_eq!(own.term, 1);
    assert_eq!(own.last_update_id, None);
}
