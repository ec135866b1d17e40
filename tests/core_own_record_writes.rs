//! The core driven by hand: how often a device writes its own record when the folder
//! shows it something about that record. No folder — one that keeps serving an older
//! copy of our record, one that keeps losing it, a listing read before our write landed
//! — may make a device write in a loop, and a waking standby writes once per instant.

use mirror_baton::core::{Effect, Event, FileObservation, FileState, Role, Timing, record};

#[path = "common/core_group.rs"]
#[allow(dead_code)]
mod core_group;
use core_group::Group;

/// The record writes `name` asked for from `from_ms` on, with their moments.
fn writes_of(group: &Group, name: &str, from_ms: u64) -> Vec<(u64, u64)> {
    group
        .effects_of(name, from_ms)
        .into_iter()
        .filter_map(|(at, effect)| match effect {
            Effect::WriteRecord { record } => Some((at, record.seq)),
            _ => None,
        })
        .collect()
}

/// Shows b `state` at b's own file name every `every_ms` from `from_ms` to `until_ms`
/// (timers fire in between), as a sync tool echoing its own idea of the file would.
fn show_b_its_own_file(group: &mut Group, state: &FileState, from_ms: u64, until_ms: u64) {
    let name = record::file_name("host:/b");
    let mut at = from_ms;
    while at <= until_ms {
        group.run_until(at);
        let file = FileObservation {
            name: name.clone(),
            state: state.clone(),
        };
        group.input(1, Event::FileChanged { file });
        at += 100;
    }
}

/// At most this many writes in `span_ms` for a re-asserting device: the first at once,
/// then gaps from the active heartbeat's base interval doubling up to the standby
/// heartbeat's, plus the standby's own heartbeats.
fn writes_allowed(span_ms: u64) -> usize {
    let timing = Timing::default();
    let mut gap_ms = timing.heartbeat_active.base.as_millis() as u64;
    let cap_ms = timing.heartbeat_standby.base.as_millis() as u64;
    let (mut at, mut count) = (0, 1);
    while at + gap_ms <= span_ms {
        at += gap_ms;
        count += 1;
        gap_ms = (gap_ms * 2).min(cap_ms);
    }
    let heartbeats = span_ms / timing.heartbeat_standby.base.as_millis() as u64 + 1;
    count + heartbeats as usize
}

/// b answered the first sight at once with its record, then wrote no more than
/// [`writes_allowed`] until `until_ms`, and nothing else changed: a leads, b stands by.
fn assert_b_reasserted_at_once_then_bounded(group: &Group, from_ms: u64, until_ms: u64) {
    let writes = writes_of(group, "b", from_ms);
    assert!(
        writes.first().is_some_and(|(at, _)| *at == from_ms),
        "the first sight is answered at once with our record: {writes:?}"
    );
    assert!(
        writes.len() <= writes_allowed(until_ms - from_ms),
        "{} writes in {} s: {writes:?}",
        writes.len(),
        (until_ms - from_ms) / 1000
    );
    assert_eq!(group.role(1), Some(Role::Standby), "{:?}", group.roles());
    assert_eq!(group.active(), vec![0], "{:?}", group.roles());
}

#[test]
fn a_folder_that_keeps_serving_an_older_copy_of_our_record_cannot_make_us_write_in_a_loop() {
    let mut group = Group::a_active_b_standby();
    let mut older = group.written(1);
    older.seq -= 1;
    let older = FileState::Contents {
        text: older.to_json(),
    };
    // Ten minutes of a folder that answers every write with the copy before it, at the
    // pace of a watcher's echo.
    let (from, until) = (61_000, 661_000);
    show_b_its_own_file(&mut group, &older, from, until);
    assert_b_reasserted_at_once_then_bounded(&group, from, until);
    assert_eq!(
        group.notices_with(1, "keeps showing an older copy"),
        1,
        "said once"
    );
}

#[test]
fn a_folder_that_keeps_losing_our_record_cannot_make_us_write_in_a_loop() {
    let mut group = Group::a_active_b_standby();
    let (from, until) = (61_000, 661_000);
    show_b_its_own_file(&mut group, &FileState::Gone, from, until);
    assert_b_reasserted_at_once_then_bounded(&group, from, until);
}

#[test]
fn a_standby_that_wakes_writes_its_record_once() {
    let mut group = Group::a_active_b_standby();
    // b sleeps past its heartbeat (390-450 s) and past the backstop: it sees nothing.
    let asleep = group.members[1].core.take();
    let woke_at = 544_000;
    group.run_until(woke_at);
    group.members[1].core = asleep;
    // On waking its overdue timers fire with the rescan the wake asks for: the listings
    // are read before the heartbeat's write lands, so they show the record before it.
    group.input(
        1,
        Event::Woke {
            slept_ms: woke_at - 60_000,
        },
    );
    group.run_until(woke_at);
    let writes = writes_of(&group, "b", woke_at);
    assert_eq!(writes.len(), 1, "one write on waking: {writes:?}");
    assert_eq!(group.written(1).seq, writes[0].1);
    assert_eq!(group.core(1).role(), Role::Standby, "{:?}", group.roles());
}
