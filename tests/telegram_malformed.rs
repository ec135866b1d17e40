//! Malformed and unknown update kinds, missing fields and a 4 MB text neither crash nor
//! stall the poller; those in our chat reach the child unchanged.

mod common;

use baton_testkit::fake_bot_api::FakeBotApi;
use common::{CHAT_ID, fetch, start_device};
use mirror_baton::adapters::telegram::{PollerEvent, StartPosition};
use serde_json::json;

#[tokio::test]
async fn odd_updates_are_handled_and_the_loop_goes_on() {
    let fake = FakeBotApi::start().await.expect("fake starts");
    let mut device = start_device(&fake, "a", None, StartPosition::default()).await;
    let unknown_kind =
        fake.inject_raw(json!({"future_kind": {"chat": {"id": CHAT_ID}, "novel": [1, 2]}}));
    let no_fields = fake.inject_raw(json!({"message": {}}));
    let bad_types =
        fake.inject_raw(json!({"message": {"chat": {"id": "not a number"}, "text": 5}}));
    let not_an_object = fake.inject_raw(json!(["just", "a", "list"]));
    let huge_text = "x".repeat(4 * 1024 * 1024);
    let huge = fake.inject_text(CHAT_ID, None, &huge_text);
    let after = fake.inject_text(CHAT_ID, None, "/devices");

    let mut forwarded = Vec::new();
    loop {
        match device.next_non_start_event().await {
            PollerEvent::Forward { update_id, .. } => forwarded.push(update_id),
            PollerEvent::Command { update_id, .. } => {
                assert_eq!(update_id, after, "the loop got past every odd update");
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        forwarded,
        vec![unknown_kind, huge],
        "chat-less updates are dropped, ours forwarded"
    );
    let client = reqwest::Client::new();
    let got = fetch(&client, &device.gateway, None, None).await;
    assert_eq!(
        got[0].1["future_kind"]["novel"],
        json!([1, 2]),
        "unknown kinds arrive unchanged"
    );
    assert_eq!(
        got[1].1["message"]["text"].as_str().map(str::len),
        Some(huge_text.len())
    );
    fetch(&client, &device.gateway, Some(huge), None).await;
    fake.wait_for(common::PATIENCE, |f| {
        f.pending_update_ids().is_empty().then_some(())
    })
    .await
    .expect("everything confirmed");
    let _ = (no_fields, bad_types, not_an_object);
    device.poller.take().expect("running").stop().await;
}

/// A text Telegram passes on with a lone UTF-16 surrogate escape (`"\ud800"`) makes the
/// whole getUpdates answer invalid JSON for a strict parser. It is read with the lone
/// half replaced by U+FFFD, and the updates after it are not held up.
#[tokio::test]
async fn a_lone_surrogate_in_one_text_does_not_block_the_updates_after_it() {
    let fake = FakeBotApi::start().await.expect("fake starts");
    let before = fake.inject_text(CHAT_ID, None, "before");
    let odd = fake.inject_text_with_lone_surrogate(CHAT_ID, None, "half a ", " pair");
    let after = fake.inject_text(CHAT_ID, None, "after");
    let mut device = start_device(&fake, "a", None, StartPosition::default()).await;
    let mut forwarded = Vec::new();
    while forwarded.len() < 3 {
        match device.next_non_start_event().await {
            PollerEvent::Forward { update_id, .. } => forwarded.push(update_id),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(forwarded, vec![before, odd, after]);
    let client = reqwest::Client::new();
    let got = fetch(&client, &device.gateway, None, None).await;
    assert_eq!(
        got[1].1["message"]["text"].as_str(),
        Some("half a \u{fffd} pair")
    );
    fetch(&client, &device.gateway, Some(after), None).await;
    fake.wait_for(common::PATIENCE, |f| {
        f.pending_update_ids().is_empty().then_some(())
    })
    .await
    .expect("all three confirmed: nothing stalls");
    device.poller.take().expect("running").stop().await;
}
