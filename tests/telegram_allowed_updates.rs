//! `allowed_updates` is asked for by name on every getUpdates: Telegram keeps the list the
//! previous caller passed when a call omits it, so a program that used the token earlier
//! with a narrow list would otherwise starve baton and the mirror of messages.

mod common;

use baton_testkit::fake_bot_api::FakeBotApi;
use common::{CHAT_ID, PATIENCE, start_device};
use mirror_baton::adapters::telegram::{ALLOWED_UPDATES, PollerEvent, StartPosition};
use serde_json::json;

#[tokio::test]
async fn a_narrow_list_left_by_an_earlier_program_does_not_starve_the_bot() {
    let fake = FakeBotApi::start().await.expect("fake starts");
    // An earlier program polled with only button presses allowed, and left.
    let url = format!("{}bot{}/getUpdates", fake.api_url(), fake.token());
    let answer = reqwest::Client::new()
        .post(url)
        .json(&json!({"timeout": 0, "allowed_updates": ["callback_query"]}))
        .send()
        .await
        .expect("the fake answers");
    assert_eq!(answer.status(), 200);
    assert_eq!(fake.allowed_updates(), Some(vec!["callback_query".into()]));

    let mut device = start_device(&fake, "a", None, StartPosition::default()).await;
    fake.wait_for(PATIENCE, |f| {
        f.get_updates_requests()
            .iter()
            .any(|r| r.device.as_deref() == Some("a"))
            .then_some(())
    })
    .await
    .expect("baton polls");
    let message = fake.inject_text(CHAT_ID, None, "hello");
    let reaction = fake.inject_raw(json!({"message_reaction": {
        "chat": {"id": CHAT_ID, "type": "supergroup"},
        "message_id": 3,
        "date": 1,
        "old_reaction": [],
        "new_reaction": [{"type": "emoji", "emoji": "👍"}],
    }}));
    assert!(fake.filtered_update_ids().is_empty(), "nothing starved");
    for wanted in [message, reaction] {
        match device.next_non_start_event().await {
            PollerEvent::Forward { update_id, .. } => assert_eq!(update_id, wanted),
            other => panic!("expected update {wanted}, got {other:?}"),
        }
    }
    let wanted: Vec<String> = ALLOWED_UPDATES.iter().map(|k| k.to_string()).collect();
    assert_eq!(fake.allowed_updates(), Some(wanted), "asked for by name");
    device.poller.take().expect("running").stop().await;
}
