//! Two pollers on one bot: the older waiting poll is answered 409 and the poller reports
//! conflict evidence, backs off, and keeps going until the runtime stops it.

mod common;

use common::{PATIENCE, start_device};
use mirror_baton::adapters::telegram::{PollerEvent, StartPosition};
use mirror_baton::fake_bot_api::{CONFLICT_OTHER_GET_UPDATES, FakeBotApi};

#[tokio::test]
async fn older_poller_reports_conflict_and_stopping_one_settles_it() {
    let fake = FakeBotApi::start().await.expect("fake starts");
    let mut a = start_device(&fake, "a", None, StartPosition::default()).await;
    assert!(matches!(a.next_event().await, PollerEvent::Started { .. }));
    fake.wait_for(PATIENCE, |f| {
        f.get_updates_requests()
            .iter()
            .any(|r| r.device.as_deref() == Some("a"))
            .then_some(())
    })
    .await
    .expect("A polls");
    let mut b = start_device(&fake, "b", None, StartPosition::default()).await;
    match a.next_event().await {
        PollerEvent::Conflict { description } => {
            assert_eq!(description, CONFLICT_OTHER_GET_UPDATES)
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    // The runtime yields A: after that only B polls and B sees no more conflicts.
    a.poller.take().expect("running").stop().await;
    let stopped_at = fake.requests().len();
    let id = fake.inject_text(common::CHAT_ID, None, "after the settle");
    loop {
        match b.next_event().await {
            PollerEvent::Forward { update_id, .. } if update_id == id => break,
            PollerEvent::Forward { .. }
            | PollerEvent::Started { .. }
            | PollerEvent::Conflict { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    let late_a = fake.requests()[stopped_at..]
        .iter()
        .filter(|r| r.is("getUpdates") && r.device.as_deref() == Some("a"))
        .count();
    assert_eq!(late_a, 0, "A never polls after it was stopped");
    b.poller.take().expect("running").stop().await;
}

#[tokio::test]
async fn a_webhook_conflict_is_conflict_evidence_too() {
    let fake = FakeBotApi::start().await.expect("fake starts");
    let mut a = start_device(&fake, "a", None, StartPosition::default()).await;
    assert!(matches!(a.next_event().await, PollerEvent::Started { .. }));
    assert_eq!(fake.webhook_url(), None, "deleteWebhook ran on start");
    fake.set_webhook(Some("https://example.invalid/hook"));
    fake.inject_text(common::CHAT_ID, None, "wake the poll");
    loop {
        match a.next_event().await {
            PollerEvent::Conflict { description } => {
                assert!(
                    description.starts_with("Conflict: can't use getUpdates"),
                    "{description}"
                );
                break;
            }
            PollerEvent::Forward { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    a.poller.take().expect("running").stop().await;
}
