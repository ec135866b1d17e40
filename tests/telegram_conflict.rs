//! Two pollers on one bot: the older waiting poll is answered 409 and the poller reports
//! conflict evidence, backs off, and keeps going until the runtime stops it. A 409 because
//! another program set a webhook is not a second poller: the poller removes the webhook.
//! A command menu Telegram refuses does not keep the bot from polling.

mod common;

use baton_testkit::fake_bot_api::{CONFLICT_OTHER_GET_UPDATES, FakeBotApi};
use common::{PATIENCE, start_device};
use mirror_baton::adapters::telegram::{PollerEvent, StartPosition};

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

/// Another program sets a webhook on the bot: getUpdates then answers 409 "Conflict: can't
/// use getUpdates method while webhook is active…". No second poller is involved, so it is
/// not conflict evidence: the poller removes the webhook, keeping the pending updates, and
/// goes on polling.
#[tokio::test]
async fn a_webhook_set_by_another_program_is_removed_and_is_not_conflict_evidence() {
    let fake = FakeBotApi::start().await.expect("fake starts");
    let mut a = start_device(&fake, "a", None, StartPosition::default()).await;
    assert!(matches!(a.next_event().await, PollerEvent::Started { .. }));
    assert_eq!(fake.webhook_url(), None, "deleteWebhook ran on start");
    let set_at = fake.requests().len();
    fake.set_webhook(Some("https://example.invalid/hook"));
    // Ends the poll in flight; every getUpdates after it meets the webhook until removed.
    fake.inject_text(common::CHAT_ID, None, "while the webhook was set");
    fake.wait_for(PATIENCE, |f| {
        f.requests()[set_at..]
            .iter()
            .any(|r| r.is("getUpdates") && r.status == Some(409))
            .then_some(())
    })
    .await
    .expect("getUpdates meets the webhook");
    let after = fake.inject_text(common::CHAT_ID, None, "after the webhook");
    loop {
        match a.next_event().await {
            PollerEvent::Forward { update_id, .. } if update_id == after => break,
            PollerEvent::Forward { .. } => {}
            other => panic!("a webhook is no conflict evidence, got {other:?}"),
        }
    }
    assert_eq!(fake.webhook_url(), None, "the poller removed the webhook");
    let since_set = &fake.requests()[set_at..];
    let refused = since_set
        .iter()
        .position(|r| r.is("getUpdates") && r.status == Some(409))
        .expect("a refused getUpdates");
    let removal = since_set[refused..]
        .iter()
        .find(|r| r.is("deleteWebhook") && r.device.as_deref() == Some("a"))
        .expect("deleteWebhook after the refusal");
    assert_ne!(
        removal.params["drop_pending_updates"],
        serde_json::json!(true),
        "pending updates are kept"
    );
    a.poller.take().expect("running").stop().await;
}

#[tokio::test]
async fn a_refused_command_menu_does_not_stop_polling() {
    let fake = FakeBotApi::start().await.expect("fake starts");
    // Telegram refuses the menu every time (say, an odd command another program set).
    for _ in 0..100 {
        fake.fail_next(
            "setMyCommands",
            400,
            serde_json::json!({
                "ok": false,
                "error_code": 400,
                "description": "Bad Request: BOT_COMMAND_INVALID"
            }),
        );
    }
    let mut device = start_device(&fake, "a", None, StartPosition::default()).await;
    let id = fake.inject_text(common::CHAT_ID, None, "hello");
    match tokio::time::timeout(PATIENCE, device.next_non_start_event()).await {
        Ok(PollerEvent::Forward { update_id, .. }) => assert_eq!(update_id, id),
        Ok(other) => panic!("expected the message, got {other:?}"),
        Err(_) => panic!("no update within {PATIENCE:?}: the refused menu blocked polling"),
    }
    device.poller.take().expect("running").stop().await;
}
