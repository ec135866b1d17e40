//! Serving across a stop: what the poller counted as handled just before it was stopped
//! (a command, a foreign chat) is still answered, and replies queued at exit go out.
//!
//! Both were found by CI: a foreign chat seen in the last batch before a handoff was
//! confirmed to Telegram but never reported, because the stopped poller's events were
//! dropped with it.

mod common;

use std::time::Duration;

use common::{CHAT_ID, PATIENCE, fast_poller_config};
use mirror_baton::adapters::telegram::StartPosition;
use mirror_baton::adapters::telegram_commands::BatonCommand;
use mirror_baton::adapters::telegram_config::{Secret, TelegramConfig};
use mirror_baton::core::Event;
use mirror_baton::fake_bot_api::FakeBotApi;
use mirror_baton::serving::{Serving, ServingEvent, TelegramPlan};

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
