//! Replies: HTML parse mode with escaped device ids, the topic kept, and flood control
//! (`RetryAfter`) honoured by waiting and sending again.

mod common;

use std::time::Duration;

use common::{CHAT_ID, PATIENCE, bot_for};
use mirror_baton::adapters::telegram::{OutgoingMessage, Replier, ReplierSettings};
use mirror_baton::adapters::telegram_commands::escape_html;
use mirror_baton::fake_bot_api::FakeBotApi;
use serde_json::json;

fn settings() -> ReplierSettings {
    ReplierSettings {
        per_chat_interval: Duration::from_millis(20),
        ..ReplierSettings::default()
    }
}

#[tokio::test]
async fn escaped_device_ids_pass_telegram_html_and_keep_the_topic() {
    let fake = FakeBotApi::start().await.expect("fake starts");
    let (replier, _task) = Replier::spawn(bot_for(&fake, "a", Duration::from_secs(5)), settings());
    let device_id = "mac_<mini>*&\"1\"";
    let unescaped = format!("<b>{device_id}</b> is now ACTIVE");
    replier
        .send(OutgoingMessage {
            chat_id: CHAT_ID,
            thread_id: Some(9),
            html: unescaped,
        })
        .expect("queued");
    let escaped = format!("✅ <b>{}</b> is now ACTIVE", escape_html(device_id));
    replier
        .send(OutgoingMessage {
            chat_id: CHAT_ID,
            thread_id: Some(9),
            html: escaped,
        })
        .expect("queued");
    let sent = fake
        .wait_for(PATIENCE, |f| f.sent_messages().into_iter().next())
        .await
        .expect("the escaped reply is sent");
    assert_eq!(sent.plain_text, format!("✅ {device_id} is now ACTIVE"));
    assert_eq!(sent.message_thread_id, Some(9));
    assert_eq!(sent.parse_mode.as_deref(), Some("HTML"));
    let refused = fake
        .requests()
        .iter()
        .filter(|r| r.is("sendMessage") && r.status == Some(400))
        .count();
    assert_eq!(
        refused, 1,
        "the unescaped id is refused by Telegram's HTML parser"
    );
}

#[tokio::test]
async fn retry_after_is_waited_out_and_the_message_sent_once() {
    let fake = FakeBotApi::start().await.expect("fake starts");
    fake.fail_next(
        "sendMessage",
        429,
        json!({"description": "Too Many Requests: retry after 1", "parameters": {"retry_after": 1}}),
    );
    let (replier, _task) = Replier::spawn(bot_for(&fake, "a", Duration::from_secs(5)), settings());
    for text in ["first", "second"] {
        replier
            .send(OutgoingMessage {
                chat_id: CHAT_ID,
                thread_id: None,
                html: text.to_owned(),
            })
            .expect("queued");
    }
    let sent = fake
        .wait_for(PATIENCE, |f| {
            let sent = f.sent_messages();
            (sent.len() == 2).then_some(sent)
        })
        .await
        .expect("both sent");
    let texts: Vec<&str> = sent.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(
        texts,
        vec!["first", "second"],
        "order kept, nothing doubled"
    );
    let attempts: Vec<Option<u16>> = fake
        .requests()
        .iter()
        .filter(|r| r.is("sendMessage"))
        .map(|r| r.status)
        .collect();
    assert_eq!(attempts, vec![Some(429), Some(200), Some(200)]);
    let times: Vec<u64> = fake
        .requests()
        .iter()
        .filter(|r| r.is("sendMessage"))
        .map(|r| r.received_at_ms)
        .collect();
    assert!(
        times[1] >= times[0] + 1000,
        "the retry waited retry_after: {times:?}"
    );
}
