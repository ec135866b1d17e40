//! A device whose bot token Telegram refuses (401/404) cannot poll, so it must not hold
//! the role: it hands it to a standby whose token works, or steps down, and says why.
//! When every token is refused (the token was revoked), the group settles: each device
//! probes now and then with a doubling hold-off, nobody passes the role around in a
//! loop, and a device whose token works again keeps the role.

#[path = "common/core_group.rs"]
#[allow(dead_code)]
mod core_group;

use core_group::Group;
use mirror_baton::core::{Event, Level, Role, Timing};

fn refused() -> Event {
    Event::PollingRefused {
        description: "Unauthorized".into(),
    }
}

#[test]
fn a_refused_active_device_hands_the_role_to_a_standby_and_says_why() {
    let mut group = Group::a_active_b_standby();
    group.members[0].token_refused = true;
    group.input(0, refused());
    group.run_until(61_000);
    assert_eq!(group.active(), vec![1], "b took over at once, by handoff");
    assert_eq!(group.core(1).term(), 2);
    let a = group.written(0);
    assert_eq!(a.polling_refused.as_deref(), Some("Unauthorized"));
    assert!(
        group.members[0]
            .notices
            .iter()
            .any(|(level, m)| *level == Level::Error
                && m.contains("Telegram refused this device's bot token (Unauthorized)")
                && m.contains("handing the role to host:/b")),
        "{:?}",
        group.members[0].notices
    );
    let row = group
        .core(1)
        .device_table()
        .into_iter()
        .find(|row| row.device_id == "host:/a")
        .expect("a in the table");
    assert_eq!(
        row.problem.as_deref(),
        Some("Telegram refused its bot token (Unauthorized)"),
        "baton status and /devices say so"
    );
    // b serves happily; a never takes the role back meanwhile.
    group.run_until(2 * 60 * 60_000);
    assert_eq!(group.active(), vec![1]);
}

#[test]
fn a_refused_device_is_no_handoff_target() {
    let mut group = Group::a_active_b_standby();
    group.members[0].token_refused = true;
    group.input(0, refused());
    group.run_until(61_000);
    assert_eq!(group.active(), vec![1]);
    // b's token is refused too: a is refused, so b has nobody to hand over to.
    group.members[1].token_refused = true;
    group.input(1, refused());
    group.run_until(62_000);
    assert!(
        group.active().is_empty(),
        "nobody can serve: nobody holds the role"
    );
    assert_eq!(
        group.notices_with(1, "stepping down (no standby with a working token)"),
        1
    );
}

/// The whole group's token is revoked: the devices probe with doubling hold-offs
/// (50 s, 100 s, … up to 15 min each), never hand the role to each other in a loop, and
/// once the token works again the next probe keeps the role.
#[test]
fn a_revoked_token_settles_the_group_and_a_working_one_recovers() {
    let mut group = Group::a_active_b_standby();
    for member in &mut group.members {
        member.token_refused = true;
    }
    group.input(0, refused());
    let revoked_at = group.now;
    let hours = 3;
    group.run_until(revoked_at + hours * 60 * 60_000);
    let probes: usize = group.members.iter().map(|m| m.started.len()).sum();
    println!("{probes} activations in {hours} h with the token revoked");
    // Each device probes at most ~6 times in the first hour-and-a-half of doubling, then
    // once every 15 min (plus the election's own waits): about 4 an hour per device.
    let timing = Timing::default();
    let per_device_hour = 3_600_000 / timing.liveness_standby.as_millis() as usize;
    let bound = 2 * (8 + hours as usize * per_device_hour) + 2;
    assert!(
        probes <= bound,
        "{probes} activations in {hours} h (bound {bound}): the group cycles"
    );
    assert!(probes >= 4, "the devices keep probing: {probes}");
    let handoffs: usize = (0..2)
        .map(|i| group.notices_with(i, "handing the role to"))
        .sum();
    assert_eq!(handoffs, 1, "one handoff (a to b), then no passing around");
    // The token works again: the next probe keeps the role for good.
    for member in &mut group.members {
        member.token_refused = false;
    }
    let fixed_at = group.now;
    group.run_until(fixed_at + timing.liveness_standby.as_millis() as u64 + 120_000);
    assert_eq!(group.active().len(), 1, "a device recovered");
    let recovered = group.active()[0];
    let since = group.members[recovered].started.len();
    group.run_until(group.now + 60 * 60_000);
    assert_eq!(group.active(), vec![recovered]);
    assert_eq!(
        group.members[recovered].started.len(),
        since,
        "no more switching"
    );
    assert_eq!(group.written(recovered).polling_refused, None);
}

/// Handing over because the token was refused, to a target that never answers: the
/// device does not take the role back (it would poll into the same refusal).
#[test]
fn a_refused_device_does_not_take_the_role_back_when_the_target_is_silent() {
    let mut group = Group::a_active_b_standby();
    group.members[1].core = None; // b is frozen; its standby record still looks live
    group.members[0].token_refused = true;
    group.input(0, refused());
    assert_eq!(group.role(0), Some(Role::Yielding));
    let timeout = Timing::default().handoff_timeout.as_millis() as u64;
    group.run_until(group.now + timeout + 1_000);
    assert_eq!(group.role(0), Some(Role::Standby));
    assert_eq!(
        group.members[0].started.len(),
        1,
        "never active again so soon"
    );
}

/// Telegram's description is untrusted: however long, our record keeps a bounded copy,
/// so peers can still read it (a record over the size cap is unreadable to them) and
/// the core's check before every write (`record::assert_writable`) holds.
#[test]
fn a_huge_refusal_description_keeps_our_record_readable() {
    let mut group = Group::a_active_b_standby();
    group.members[0].token_refused = true;
    let description = "Unauthorized ".repeat(10_000);
    group.input(0, Event::PollingRefused { description });
    group.run_until(61_000);
    assert_eq!(group.active(), vec![1], "b took over at once, by handoff");
    let a = group.written(0);
    let text = a.to_json();
    let parsed = mirror_baton::core::record::parse_record(text.as_bytes())
        .expect("peers can read a's record");
    let kept = parsed.polling_refused.expect("the refusal is published");
    assert!(kept.starts_with("Unauthorized") && kept.chars().count() <= 200);
}
