//! A leader alive but cut off from Telegram still hands over (issue 12, point 3): its
//! getUpdates keep failing while its record stays fresh, so no standby ever suspects
//! it. After `cut_off_after` of failed polls it says so in its record; standbys ask
//! Telegram and say whether it answered them; it hands the role to one that reached
//! it. When Telegram is down for everyone nobody says so, and the role stays put.

#[path = "common/core_group.rs"]
#[allow(dead_code)]
mod core_group;

use core_group::Group;
use mirror_baton::core::witness::WitnessRules;
use mirror_baton::core::{Core, CoreConfig, Effect, Event, Timing};

const SECOND: u64 = 1_000;

/// a leads and b stands by, both with a token (the witness on), 60 s in.
fn a_active_b_standby(witness: bool) -> Group {
    let mut group = Group::new(&["a", "b"]);
    for index in 0..2 {
        let name = group.members[index].name.clone();
        let mut core = Core::new(CoreConfig {
            identity: core_group::identity(&name),
            timing: Timing::default(),
            seed: index as u64 + 1,
        });
        if witness {
            core.enable_witness(WitnessRules::default());
        }
        group.members[index].core = Some(core);
        group.input(index, Event::Start);
        group.run_until(group.now + 30 * SECOND);
    }
    assert_eq!(group.active(), vec![0]);
    group
}

/// Runs to `until`, a failing a getUpdates every 5 s, and answering every standby
/// question: `Some(0)` for members in `reaching`, unreachable for the others.
fn a_cut_off_until(group: &mut Group, until: u64, reaching: &[usize]) {
    let mut answered = vec![0; group.members.len()];
    while group.now < until {
        let step = group.now + 5 * SECOND;
        group.run_until(step);
        group.input(
            0,
            Event::PollFailed {
                reason: "error sending request: connection refused".into(),
            },
        );
        for (index, done) in answered.iter_mut().enumerate() {
            let asks = group
                .effects(index)
                .iter()
                .filter(|(_, effect)| matches!(effect, Effect::AskWitness))
                .count();
            for _ in *done..asks {
                let pending_update_count = reaching.contains(&index).then_some(0);
                group.input(
                    index,
                    Event::Witnessed {
                        pending_update_count,
                    },
                );
            }
            *done = asks;
        }
    }
}

#[test]
fn a_leader_cut_off_from_telegram_hands_over_to_a_standby_that_reaches_it() {
    let mut group = a_active_b_standby(true);
    let failing_from = group.now;
    a_cut_off_until(&mut group, failing_from + 50 * SECOND, &[1]);
    assert_eq!(
        group.active(),
        vec![0],
        "a failing poll or two is no cut-off"
    );
    assert!(!group.written(0).telegram_unreachable);
    a_cut_off_until(&mut group, failing_from + 90 * SECOND, &[1]);
    assert_eq!(
        group.active(),
        vec![1],
        "b, which reaches Telegram, took over"
    );
    assert_eq!(group.core(1).term(), 2, "by handoff: one term up");
    let b = group.written(1);
    assert!(!b.telegram_unreachable);
    assert!(
        group.notices_with(0, "cannot reach Telegram") >= 1,
        "a says why it hands over"
    );
    // a, now standby, keeps failing nothing: b serves; nothing goes back.
    group.run_until(group.now + 10 * 60 * SECOND);
    assert_eq!(group.active(), vec![1]);
}

#[test]
fn when_telegram_is_down_for_everyone_the_role_stays_put() {
    let mut group = a_active_b_standby(true);
    let failing_from = group.now;
    a_cut_off_until(&mut group, failing_from + 10 * 60 * SECOND, &[]);
    assert_eq!(
        group.active(),
        vec![0],
        "nobody reaches Telegram: no handoff"
    );
    assert_eq!(
        group.core(0).term(),
        1,
        "no term was spent going back and forth"
    );
    assert!(
        group.written(0).telegram_unreachable,
        "a says it is cut off"
    );
    assert_eq!(group.written(1).telegram_reached, None);
    let asks = group
        .effects(1)
        .iter()
        .filter(|(_, effect)| matches!(effect, Effect::AskWitness))
        .count();
    // Rate-bounded: one question per 7–10 s at most while a says it is cut off.
    assert!((40..=90).contains(&asks), "{asks} questions in 9 minutes");
}

#[test]
fn a_poll_that_succeeds_again_takes_the_cut_off_back() {
    let mut group = a_active_b_standby(true);
    let failing_from = group.now;
    a_cut_off_until(&mut group, failing_from + 65 * SECOND, &[]);
    assert!(group.written(0).telegram_unreachable);
    group.input(0, Event::PollSucceeded);
    assert!(!group.written(0).telegram_unreachable, "said at once");
    // Failures start a new count: b reaching Telegram now is no reason to hand over.
    let until = group.now + 30 * SECOND;
    a_cut_off_until(&mut group, until, &[1]);
    assert_eq!(group.active(), vec![0]);
}

#[test]
fn without_a_token_for_the_witness_the_rules_are_todays() {
    let mut group = a_active_b_standby(false);
    let failing_from = group.now;
    a_cut_off_until(&mut group, failing_from + 5 * 60 * SECOND, &[1]);
    assert_eq!(group.active(), vec![0]);
    assert!(!group.written(0).telegram_unreachable);
}
