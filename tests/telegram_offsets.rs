//! Offsets end to end: an update is confirmed to Telegram only after baton handled it or
//! the child acknowledged it; a handoff passes the rest on with no loss and no duplicate.

mod common;

use baton_testkit::fake_bot_api::FakeBotApi;
use common::{CHAT_ID, PATIENCE, fetch, start_device};
use mirror_baton::adapters::telegram::{PollerEvent, StartPosition};
use mirror_baton::adapters::telegram_commands::BatonCommand;

#[tokio::test]
async fn confirmed_only_after_handled_or_acknowledged() {
    let fake = FakeBotApi::start().await.expect("fake starts");
    let hello = fake.inject_text(CHAT_ID, None, "hello");
    let status = fake.inject_text(CHAT_ID, None, "/status");
    let world = fake.inject_text(CHAT_ID, None, "world");
    let mut device = start_device(&fake, "a", None, StartPosition::default()).await;

    assert!(
        matches!(device.next_non_start_event().await, PollerEvent::Forward { update_id, .. } if update_id == hello)
    );
    match device.next_event().await {
        PollerEvent::Command {
            update_id,
            chat_id,
            command,
            ..
        } => {
            assert_eq!(
                (update_id, chat_id, command),
                (status, CHAT_ID, BatonCommand::Status)
            );
        }
        other => panic!("expected the /status command, got {other:?}"),
    }
    assert!(
        matches!(device.next_event().await, PollerEvent::Forward { update_id, .. } if update_id == world)
    );

    // Telegram keeps re-sending while the child has not fetched: let it ask a few times.
    let polls_before = fake.get_updates_requests().len();
    fake.wait_for(PATIENCE, |f| {
        (f.get_updates_requests().len() >= polls_before + 3).then_some(())
    })
    .await
    .expect("the poller keeps polling");
    assert_eq!(
        fake.pending_update_ids(),
        vec![hello, status, world],
        "nothing confirmed before the child fetched"
    );
    let offsets: Vec<i64> = fake
        .get_updates_requests()
        .iter()
        .filter_map(|r| r.params["offset"].as_i64())
        .collect();
    assert!(
        offsets.iter().all(|o| *o <= hello),
        "no offset passed an unacknowledged update: {offsets:?}"
    );

    let client = reqwest::Client::new();
    let got: Vec<i64> = fetch(&client, &device.gateway, None, None)
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(
        got,
        vec![hello, world],
        "baton's own command is not forwarded"
    );
    assert!(
        fetch(&client, &device.gateway, Some(world), None)
            .await
            .is_empty()
    );
    fake.wait_for(PATIENCE, |f| {
        f.pending_update_ids().is_empty().then_some(())
    })
    .await
    .expect("all confirmed after the child's since");
    let poller = device.poller.take().expect("running");
    let (_, ledger) = poller.stop().await;
    assert_eq!(ledger.progress().handled_through, world);
}

#[tokio::test]
async fn handoff_delivers_the_unacknowledged_update_once_and_skips_handled_commands() {
    let fake = FakeBotApi::start().await.expect("fake starts");
    let client = reqwest::Client::new();
    let mut a = start_device(&fake, "a", None, StartPosition::default()).await;
    let first = fake.inject_text(CHAT_ID, None, "first");
    assert!(matches!(
        a.next_non_start_event().await,
        PollerEvent::Forward { .. }
    ));
    assert_eq!(fetch(&client, &a.gateway, None, None).await.len(), 1);
    assert!(
        fetch(&client, &a.gateway, Some(first), None)
            .await
            .is_empty()
    );
    fake.wait_for(PATIENCE, |f| {
        f.pending_update_ids().is_empty().then_some(())
    })
    .await
    .expect("first confirmed");

    // A forwards `second` (its child never fetches it) and handles `/devices` after it.
    let second = fake.inject_text(CHAT_ID, None, "second");
    let devices = fake.inject_text(CHAT_ID, None, "/devices");
    assert!(
        matches!(a.next_event().await, PollerEvent::Forward { update_id, .. } if update_id == second)
    );
    assert!(
        matches!(a.next_event().await, PollerEvent::Command { update_id, .. } if update_id == devices)
    );
    let (_, mut ledger) = a.poller.take().expect("running").stop().await;
    let served = a.gateway.withdraw_unserved();
    let acknowledged = *a.gateway.acknowledged().borrow();
    ledger.acknowledged(acknowledged.generation, acknowledged.through);
    let progress = ledger.progress();
    assert_eq!(
        (
            served,
            progress.handled_through,
            progress.handled_above.clone()
        ),
        (first, first, vec![devices])
    );
    assert!(
        fetch(&client, &a.gateway, Some(first), None)
            .await
            .is_empty(),
        "A's child no longer sees `second`"
    );

    let start = StartPosition {
        skip_through: progress.handled_through,
        also_handled: progress.handled_above,
    };
    let mut b = start_device(&fake, "b", None, start).await;
    assert!(
        matches!(b.next_non_start_event().await, PollerEvent::Forward { update_id, .. } if update_id == second)
    );
    let got: Vec<i64> = fetch(&client, &b.gateway, None, None)
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(got, vec![second]);
    fetch(&client, &b.gateway, Some(second), None).await;
    fake.wait_for(PATIENCE, |f| {
        f.pending_update_ids().is_empty().then_some(())
    })
    .await
    .expect("all confirmed by B");
    assert!(b.events.try_recv().is_err(), "B never re-ran A's /devices");
    b.poller.take().expect("running").stop().await;
}

/// After a quiet week Telegram's ids start over, lower, and the old offset confirms
/// nothing (FACTS.md). The poller follows the new sequence: every new update reaches the
/// child (whose `since` is still the old high id), and the offsets it sends then confirm
/// them — no update is dropped as "already handled", none is fetched for ever.
#[tokio::test]
async fn the_poller_follows_telegram_when_its_ids_start_over() {
    let fake = FakeBotApi::start().await.expect("fake starts");
    let client = reqwest::Client::new();
    let old = fake.inject_text(CHAT_ID, None, "before the holiday");
    // The records say `old` was handled (and, from a command, one above it).
    let start = StartPosition {
        skip_through: old,
        also_handled: vec![old + 2],
    };
    let mut device = start_device(&fake, "a", None, start).await;
    fake.wait_for(PATIENCE, |f| {
        f.pending_update_ids().is_empty().then_some(())
    })
    .await
    .expect("the old update is confirmed by the first offset");
    let next = fake.quiet_week();
    let first = fake.inject_text(CHAT_ID, None, "after the holiday");
    let status = fake.inject_text(CHAT_ID, None, "/status");
    let second = fake.inject_text(CHAT_ID, None, "and more");
    assert_eq!((first, second), (next, next + 2));

    match device.next_non_start_event().await {
        PollerEvent::SequenceRestarted {
            first_id,
            offset_sent,
        } => assert_eq!((first_id, offset_sent), (first, old + 1)),
        other => panic!("expected the restart first, got {other:?}"),
    }
    assert!(
        matches!(device.next_event().await, PollerEvent::Forward { update_id, .. } if update_id == first)
    );
    assert!(
        matches!(device.next_event().await, PollerEvent::Command { update_id, .. } if update_id == status)
    );
    assert!(
        matches!(device.next_event().await, PollerEvent::Forward { update_id, .. } if update_id == second)
    );
    // The child asks with its old since (the mirror keeps it in its database).
    let got: Vec<i64> = fetch(&client, &device.gateway, Some(old), None)
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(got, vec![first, second], "the old since hides nothing");
    fetch(&client, &device.gateway, Some(second), None).await;
    fake.wait_for(PATIENCE, |f| {
        f.pending_update_ids().is_empty().then_some(())
    })
    .await
    .expect("the new updates are confirmed by offsets of the new sequence");
    let offsets: Vec<i64> = fake
        .get_updates_requests()
        .iter()
        .filter_map(|r| r.params["offset"].as_i64())
        .collect();
    assert_eq!(offsets.last(), Some(&(second + 1)), "{offsets:?}");
    let poller = device.poller.take().expect("running");
    let (_, ledger) = poller.stop().await;
    let progress = ledger.progress();
    assert_eq!(
        (progress.handled_through, progress.handled_above.clone()),
        (second, vec![]),
        "the progress to record is the new sequence's, not the old high id"
    );
    assert!(device.events.try_recv().is_err(), "nothing delivered twice");
}
