//! Authorization: only the configured chat (and topic) is forwarded or obeyed; a foreign
//! chat is reported once and its updates are confirmed without being forwarded.

mod common;

use baton_testkit::fake_bot_api::FakeBotApi;
use common::{CHAT_ID, fetch, start_device};
use mirror_baton::adapters::telegram::{PollerEvent, StartPosition};

#[tokio::test]
async fn foreign_chats_and_other_topics_are_not_served() {
    let fake = FakeBotApi::start().await.expect("fake starts");
    let topic = Some(77);
    let mut device = start_device(&fake, "a", topic, StartPosition::default()).await;
    let stranger = 555_000_111;
    fake.inject_text(stranger, None, "/activate 2");
    fake.inject_text(stranger, None, "hello again");
    fake.inject_text(CHAT_ID, Some(78), "/devices");
    fake.inject_text(CHAT_ID, None, "general topic chatter");
    let ours = fake.inject_text(CHAT_ID, topic, "in our topic");

    assert!(
        matches!(device.next_non_start_event().await, PollerEvent::ForeignChat { chat_id } if chat_id == stranger)
    );
    match device.next_event().await {
        PollerEvent::Forward { update_id, .. } => assert_eq!(update_id, ours),
        other => panic!("only the update of our topic is forwarded, got {other:?}"),
    }
    let client = reqwest::Client::new();
    let got: Vec<i64> = fetch(&client, &device.gateway, None, topic)
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(got, vec![ours]);
    fetch(&client, &device.gateway, Some(ours), topic).await;
    fake.wait_for(common::PATIENCE, |f| {
        f.pending_update_ids().is_empty().then_some(())
    })
    .await
    .expect("foreign and other-topic updates are confirmed, never forwarded");
    device.poller.take().expect("running").stop().await;
}
