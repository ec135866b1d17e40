//! Replies: HTML parse mode with escaped device ids, the topic kept, and flood control
//! (`RetryAfter`) honoured by waiting and sending again.

mod common;

use std::time::Duration;

use baton_testkit::fake_bot_api::FakeBotApi;
use common::{CHAT_ID, PATIENCE, bot_for};
use mirror_baton::adapters::telegram::{OutgoingMessage, Replier, ReplierSettings};
use mirror_baton::adapters::telegram_commands::escape_html;
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

/// A 5xx from Telegram (or a proxy before it) is tried again with a growing wait, not
/// dropped: `/status`, `/devices` and the announcements reach the chat.
#[tokio::test]
async fn a_reply_refused_with_a_5xx_is_sent_again() {
    let fake = FakeBotApi::start().await.expect("fake starts");
    for status in [502, 500] {
        fake.fail_next("sendMessage", status, json!({"description": "Bad Gateway"}));
    }
    let settings = ReplierSettings {
        server_error_backoff: Duration::from_millis(100),
        ..settings()
    };
    let (replier, _task) = Replier::spawn(bot_for(&fake, "a", Duration::from_secs(5)), settings);
    replier
        .send(OutgoingMessage {
            chat_id: CHAT_ID,
            thread_id: None,
            html: "status".to_owned(),
        })
        .expect("queued");
    let sent = fake
        .wait_for(PATIENCE, |f| f.sent_messages().into_iter().next())
        .await
        .expect("sent in the end");
    assert_eq!(sent.text, "status");
    let attempts: Vec<(Option<u16>, u64)> = fake
        .requests()
        .iter()
        .filter(|r| r.is("sendMessage"))
        .map(|r| (r.status, r.received_at_ms))
        .collect();
    let statuses: Vec<Option<u16>> = attempts.iter().map(|a| a.0).collect();
    assert_eq!(statuses, vec![Some(502), Some(500), Some(200)]);
    assert!(
        attempts[2].1 >= attempts[1].1 + 200 && attempts[1].1 >= attempts[0].1 + 100,
        "the waits grow (100 ms, then 200 ms): {attempts:?}"
    );
    assert_eq!(fake.sent_messages().len(), 1, "sent once");
}

/// Server errors do not go on for ever: after `attempts_max` sends the reply is given up.
#[tokio::test]
async fn a_reply_gives_up_after_its_attempts() {
    let fake = FakeBotApi::start().await.expect("fake starts");
    for _ in 0..4 {
        fake.fail_next("sendMessage", 503, json!({"description": "Unavailable"}));
    }
    let settings = ReplierSettings {
        server_error_backoff: Duration::from_millis(10),
        ..settings()
    };
    let (replier, _task) = Replier::spawn(bot_for(&fake, "a", Duration::from_secs(5)), settings);
    for html in ["lost", "next"] {
        replier
            .send(OutgoingMessage {
                chat_id: CHAT_ID,
                thread_id: None,
                html: html.to_owned(),
            })
            .expect("queued");
    }
    let sent = fake
        .wait_for(PATIENCE, |f| f.sent_messages().into_iter().next())
        .await
        .expect("the next one goes out");
    assert_eq!(sent.text, "next");
    let attempts = fake
        .requests()
        .iter()
        .filter(|r| r.is("sendMessage"))
        .count();
    assert_eq!(attempts, 5, "four tries of the first, one of the next");
}
