//! A leader acts only inside its own lease. The active `baton run` is frozen (SIGSTOP:
//! a stalled process, a paused VM — the clocks do not drift apart, so no sleep is seen)
//! past its lease while updates keep arriving; a standby takes over. When the frozen
//! process resumes (SIGCONT), it must not send a single getUpdates before it has
//! re-validated: it steps down, re-reads the folder, and leaves the bot to the new
//! leader. The fake Bot API's request log attributes every request to its device.

mod common;

use std::time::Duration;

use baton_testkit::fake_bot_api::FakeBotApi;
use common::process::{Folder, wait_for};
use mirror_baton::adapters::clock;
use mirror_baton::core::Status;

const SCALE: f64 = 0.1;
const CHAT: i64 = -1_023;
const PATIENCE: Duration = Duration::from_secs(60);
/// The active lease at this scale (liveness timeout 50 s × SCALE).
const LEASE: Duration = Duration::from_secs(5);

fn status_of(folder: &Folder, id: &str) -> Option<Status> {
    folder.record_of(id).map(|r| r.status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_frozen_past_its_lease_sends_no_get_updates_when_it_resumes() {
    let fake = FakeBotApi::start().await.expect("fake Bot API");
    let folder = Folder::new(SCALE);
    let a = folder.start_telegram("first", &fake.api_url(), fake.token(), CHAT);
    wait_for(PATIENCE, || {
        (status_of(&folder, &a.device_id) == Some(Status::Active)).then_some(())
    })
    .expect("the first device becomes active");
    let b = folder.start_telegram("second", &fake.api_url(), fake.token(), CHAT);
    wait_for(PATIENCE, || {
        (status_of(&folder, &b.device_id) == Some(Status::Standby)).then_some(())
    })
    .expect("the second device becomes a standby");
    // The leader's long poll is waiting at the fake when it freezes.
    let polls_of = |device: &str, from_ms: u64| {
        fake.get_updates_requests()
            .into_iter()
            .filter(|r| r.device.as_deref() == Some(device) && r.received_at_ms >= from_ms)
            .count()
    };
    wait_for(PATIENCE, || (polls_of(&a.device_id, 0) > 0).then_some(())).expect("the leader polls");

    a.signal(libc::SIGSTOP);
    // Updates in flight while it is frozen: the first one answers its waiting poll (the
    // answer sits unread in its socket), the rest wait for whoever polls next.
    for n in 0..5 {
        fake.inject_text(CHAT, None, &format!("while frozen {n}"));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_for(PATIENCE, || {
        (status_of(&folder, &b.device_id) == Some(Status::Active)).then_some(())
    })
    .expect("the standby takes over from the frozen leader");
    let taken_over_ms = clock::wall_ms();
    wait_for(PATIENCE, || {
        (polls_of(&b.device_id, taken_over_ms) > 0).then_some(())
    })
    .expect("the new leader polls");
    for n in 0..3 {
        fake.inject_text(CHAT, None, &format!("after the takeover {n}"));
    }

    let resumed_ms = clock::wall_ms();
    a.signal(libc::SIGCONT);
    // The resumed device steps down, re-reads the folder and stays a standby: the new
    // leader is alive. Watch it for a few leases.
    wait_for(PATIENCE, || {
        (status_of(&folder, &a.device_id) == Some(Status::Standby)).then_some(())
    })
    .unwrap_or_else(|| panic!("the resumed device steps down:\n{}", a.log()));
    tokio::time::sleep(LEASE * 2).await;
    let after_resume: Vec<_> = fake
        .get_updates_requests()
        .into_iter()
        .filter(|r| r.device.as_deref() == Some(a.device_id.as_str()))
        .filter(|r| r.received_at_ms >= resumed_ms)
        .map(|r| (r.received_at_ms, r.params))
        .collect();
    assert!(
        after_resume.is_empty(),
        "the resumed leader sent getUpdates past its lease: {after_resume:?}\n{}",
        a.log()
    );
    assert_eq!(status_of(&folder, &b.device_id), Some(Status::Active));
}
