//! Leaving Active stops polling at once: the in-flight long poll is abandoned, the fake's
//! log shows no later getUpdates from the device, and unhandled updates stay unconfirmed.

mod common;

use std::time::Duration;

use baton_testkit::fake_bot_api::FakeBotApi;
use common::{PATIENCE, start_device};
use mirror_baton::adapters::telegram::{PollerEvent, PollerExit, StartPosition};

#[tokio::test]
async fn cancel_abandons_the_long_poll_and_confirms_nothing_more() {
    let fake = FakeBotApi::start().await.expect("fake starts");
    let mut device = start_device(&fake, "a", None, StartPosition::default()).await;
    assert!(matches!(
        device.next_event().await,
        PollerEvent::Started { .. }
    ));
    // Wait until a long poll (5 s timeout) is in flight.
    fake.wait_for(PATIENCE, |f| {
        f.get_updates_requests()
            .last()
            .filter(|r| r.status.is_none())
            .map(|_| ())
    })
    .await
    .expect("a long poll is waiting");
    let poller = device.poller.take().expect("running");
    let (exit, ledger) = tokio::time::timeout(Duration::from_secs(2), poller.stop())
        .await
        .expect("stop does not wait for the long poll to end");
    assert_eq!(exit, PollerExit::Cancelled);
    assert_eq!(ledger.offset(), None);
    let seen = fake.get_updates_requests().len();

    let id = fake.inject_text(common::CHAT_ID, None, "nobody is polling");
    // Give a wrongly running poller every chance to show up: a full poll cycle of another
    // device happens meanwhile.
    let mut other = start_device(&fake, "b", None, StartPosition::default()).await;
    assert!(
        matches!(other.next_non_start_event().await, PollerEvent::Forward { update_id, .. } if update_id == id)
    );
    let from_a = fake.get_updates_requests()[seen..]
        .iter()
        .filter(|r| r.device.as_deref() == Some("a"))
        .count();
    assert_eq!(from_a, 0, "no getUpdates from a stopped device");
    assert_eq!(
        fake.pending_update_ids(),
        vec![id],
        "the update stays unconfirmed for the next device"
    );
    other.poller.take().expect("running").stop().await;
}
