//! Serving across a start and a stop: starting never waits for Telegram's set-up calls
//! (the run loop would stall), what the poller counted as handled just before it was
//! stopped (a command, a foreign chat) is still answered, and replies queued at exit go out.
//!
//! The stop cases were found by CI: a foreign chat seen in the last batch before a handoff
//! was confirmed to Telegram but never reported, because the stopped poller's events were
//! dropped with it.

mod common;

use std::time::Duration;

use baton_testkit::fake_bot_api::FakeBotApi;
use common::{CHAT_ID, PATIENCE, fast_poller_config};
use mirror_baton::adapters::telegram::{PollerEvent, StartPosition};
use mirror_baton::adapters::telegram_commands::BatonCommand;
use mirror_baton::adapters::telegram_config::{Secret, TelegramConfig};
use mirror_baton::core::Event;
use mirror_baton::serving::{Serving, ServingEvent, TelegramPlan};
use serde_json::json;

const FOREIGN_CHAT: i64 = 777_000_111;

async fn serving_for(fake: &FakeBotApi) -> Serving {
    let plan = TelegramPlan {
        config: TelegramConfig {
            bot_token: Secret::new(fake.token()),
            chat_id: CHAT_ID,
            thread_id: None,
            api_url: Some(fake.api_url().parse().expect("fake URL")),
        },
        poll_timeout: Duration::from_secs(1),
        poller: fast_poller_config(None),
        device_tag: Some("device-a".into()),
    };
    Serving::new("device-a".into(), Some(plan), None)
        .await
        .expect("serving starts")
}

/// Serving started while Telegram holds `deleteWebhook` unanswered. PATIENCE only
/// bounds a failure: with the set-up awaited inline, start would never return.
async fn start_with_set_up_held(fake: &FakeBotApi) -> Serving {
    fake.hold("deleteWebhook");
    let mut serving = serving_for(fake).await;
    tokio::time::timeout(
        PATIENCE,
        serving.start(1, StartPosition::default(), Vec::new()),
    )
    .await
    .expect("start returns while Telegram does not answer the set-up");
    serving
}

fn sent_containing(fake: &FakeBotApi, needle: &str) -> usize {
    fake.sent_messages()
        .iter()
        .filter(|m| m.chat_id == CHAT_ID && m.plain_text.contains(needle))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_and_foreign_chats_caught_just_before_a_stop_are_still_answered() {
    let fake = FakeBotApi::start().await.expect("fake starts");
    let mut serving = serving_for(&fake).await;
    serving.start(1, StartPosition::default(), Vec::new()).await;
    fake.inject_text(FOREIGN_CHAT, None, "hello from elsewhere");
    let command = fake.inject_text(CHAT_ID, None, "/devices");

    // The poller confirms both to Telegram (baton handles them itself) while nobody reads
    // its events: the moment a handoff stops it.
    fake.wait_for(PATIENCE, |f| {
        f.pending_update_ids().is_empty().then_some(())
    })
    .await
    .expect("the poller confirms the foreign chat and the command");
    let progress = serving.stop("handing over").await.expect("progress");
    assert!(
        progress.handled_through >= command,
        "both counted handled: {progress:?}"
    );

    match serving.take_leftover() {
        Some(ServingEvent::Core(Event::ForeignChat { chat_id })) => {
            assert_eq!(chat_id, FOREIGN_CHAT)
        }
        other => panic!("the foreign chat comes first, got {other:?}"),
    }
    match serving.take_leftover() {
        Some(ServingEvent::Command { command, .. }) => assert_eq!(command, BatonCommand::Devices),
        other => panic!("then the command, got {other:?}"),
    }
    assert!(serving.take_leftover().is_none(), "nothing else is left");

    fake.wait_for(PATIENCE, |f| {
        (sent_containing(f, &FOREIGN_CHAT.to_string()) == 1).then_some(())
    })
    .await
    .expect("the foreign chat is reported in the configured chat");
    serving.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_queued_at_shutdown_are_sent_before_it_returns() {
    let fake = FakeBotApi::start().await.expect("fake starts");
    let mut serving = serving_for(&fake).await;
    serving.say(None, None, "last words before exit".into());
    serving.shutdown().await;
    assert_eq!(
        sent_containing(&fake, "last words before exit"),
        1,
        "the queued reply went out before shutdown returned"
    );
}

fn answered(fake: &FakeBotApi, method: &str) -> Vec<u64> {
    fake.requests()
        .iter()
        .filter(|r| r.is(method) && r.status == Some(200))
        .map(|r| r.seq)
        .collect()
}

/// Waits until a call of `method` has arrived and is being held unanswered.
async fn held_call(fake: &FakeBotApi, method: &str) {
    fake.wait_for(PATIENCE, |f| {
        f.requests()
            .iter()
            .any(|r| r.is(method) && r.status.is_none())
            .then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("a {method} call arrives"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_returns_while_telegram_set_up_hangs_and_polling_begins_after_it() {
    let fake = FakeBotApi::start().await.expect("fake starts");
    fake.set_webhook(Some("https://example.invalid/hook"));
    let mut serving = start_with_set_up_held(&fake).await;
    assert!(
        answered(&fake, "deleteWebhook").is_empty() && fake.menu_seen_in(CHAT_ID) == json!([]),
        "start returned before the set-up completed"
    );
    held_call(&fake, "deleteWebhook").await;
    assert!(
        fake.get_updates_requests().is_empty(),
        "no getUpdates while the webhook removal is pending"
    );

    fake.release("deleteWebhook");
    fake.inject_text(CHAT_ID, None, "/devices");
    let event = tokio::time::timeout(PATIENCE, serving.next_event())
        .await
        .expect("polling begins after the set-up");
    assert!(
        matches!(
            event,
            Some(ServingEvent::Command {
                command: BatonCommand::Devices,
                ..
            })
        ),
        "{event:?}"
    );
    assert_eq!(fake.webhook_url(), None, "the webhook was removed");
    let menu = fake.menu_seen_in(CHAT_ID);
    assert!(menu.to_string().contains("\"devices\""), "{menu}");
    let first_poll = fake.get_updates_requests()[0].seq;
    let set_up_done = answered(&fake, "setMyCommands")[0];
    assert!(
        answered(&fake, "deleteWebhook")[0] < set_up_done && set_up_done < first_poll,
        "deleteWebhook, then setMyCommands, then the first getUpdates"
    );
    serving.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_during_a_hanging_set_up_abandons_it_and_never_polls() {
    let fake = FakeBotApi::start().await.expect("fake starts");
    let mut serving = start_with_set_up_held(&fake).await;
    held_call(&fake, "deleteWebhook").await;
    tokio::time::timeout(PATIENCE, serving.stop("handing over"))
        .await
        .expect("stop abandons the set-up instead of waiting for it");
    let stopped_at = fake.requests().len();

    // Another device polls a full cycle after the held call is answered: a set-up that
    // survived the stop would go on to setMyCommands and getUpdates meanwhile. (The
    // "now ACTIVE" announcement may still be on its way: replies are not polling.)
    fake.release("deleteWebhook");
    let id = fake.inject_text(CHAT_ID, None, "for the next device");
    let mut other = common::start_device(&fake, "device-b", None, StartPosition::default()).await;
    match other.next_non_start_event().await {
        PollerEvent::Forward { update_id, .. } if update_id == id => {}
        event => panic!("the next device gets the update, got {event:?}"),
    }
    let late: Vec<String> = fake.requests()[stopped_at..]
        .iter()
        .filter(|r| r.device.as_deref() == Some("device-a") && !r.is("sendMessage"))
        .map(|r| r.method.clone())
        .collect();
    assert!(late.is_empty(), "device-a called {late:?} after it stopped");
    other.poller.take().expect("running").stop().await;
    serving.shutdown().await;
}
