//! The updates gateway: credentials required, `since` acknowledges, only the configured
//! chat/topic is served, and a full buffer drops the oldest with a counted warning.

mod common;

use common::{CHAT_ID, fetch};
use mirror_baton::adapters::gateway::{Acknowledged, Gateway, GatewayConfig, PushOutcome};
use serde_json::{Value, json};

fn message(chat_id: i64, thread_id: Option<i64>) -> Value {
    let mut message = json!({"chat": {"id": chat_id}, "text": "hi"});
    if let Some(thread_id) = thread_id {
        message["message_thread_id"] = json!(thread_id);
    }
    json!({ "message": message })
}

async fn gateway(thread_id: Option<i64>, capacity: usize) -> Gateway {
    Gateway::start(GatewayConfig {
        chat_id: CHAT_ID,
        thread_id,
        capacity,
    })
    .await
    .expect("gateway starts")
}

#[tokio::test]
async fn credentials_are_required() {
    let gateway = gateway(None, 10).await;
    let with_credentials = reqwest::Url::parse(gateway.updates_url().expose()).expect("URL");
    assert_eq!(with_credentials.host_str(), Some("127.0.0.1"));
    assert!(!with_credentials.password().unwrap_or("").is_empty());
    let mut without = with_credentials.clone();
    without.set_username("").expect("http URL");
    without.set_password(None).expect("http URL");
    let mut wrong = with_credentials.clone();
    wrong.set_password(Some("guess")).expect("http URL");
    let client = reqwest::Client::new();
    for url in [without, wrong] {
        let response = client.get(url).send().await.expect("answers");
        assert_eq!(response.status(), 401);
    }
    assert_eq!(gateway.stats().unauthorized_requests, 2);
    assert!(fetch(&client, &gateway, None, None).await.is_empty());
    assert!(!format!("{gateway:?}").contains(with_credentials.password().unwrap_or("x")));
}

#[tokio::test]
async fn since_acknowledges_and_publishes_the_watermark() {
    let gateway = gateway(None, 10).await;
    let mut acknowledged = gateway.acknowledged();
    for id in [10, 11, 12] {
        assert_eq!(
            gateway.push(id, message(CHAT_ID, None)),
            PushOutcome::Buffered
        );
    }
    assert_eq!(
        gateway.push(11, message(CHAT_ID, None)),
        PushOutcome::Duplicate
    );
    let client = reqwest::Client::new();
    let ids =
        |updates: Vec<(i64, Value)>| updates.into_iter().map(|(id, _)| id).collect::<Vec<_>>();
    assert_eq!(
        ids(fetch(&client, &gateway, None, None).await),
        vec![10, 11, 12]
    );
    assert_eq!(
        acknowledged.borrow_and_update().through,
        0,
        "serving is not acknowledging"
    );
    assert_eq!(acknowledged.borrow().outstanding, 3);
    assert_eq!(
        ids(fetch(&client, &gateway, Some(11), None).await),
        vec![12]
    );
    assert_eq!(acknowledged.borrow_and_update().through, 11);
    assert_eq!(gateway.stats().buffered, 1);
    assert_eq!(
        ids(fetch(&client, &gateway, Some(9999), None).await),
        vec![12],
        "a since above every id served acknowledges nothing: 12 is served again"
    );
    assert_eq!(acknowledged.borrow().through, 11);
    assert!(fetch(&client, &gateway, Some(12), None).await.is_empty());
    assert_eq!(
        *acknowledged.borrow(),
        Acknowledged {
            generation: 0,
            through: 12,
            outstanding: 0
        }
    );
}

/// The mirror keeps `since` in its database: after a restart (of baton, or of Telegram's
/// id sequence) it asks with an id this gateway never served. That must not drop the
/// updates buffered for it.
#[tokio::test]
async fn a_since_above_every_served_id_drops_nothing_unserved() {
    let gateway = gateway(None, 10).await;
    for id in [10, 11, 12] {
        gateway.push(id, message(CHAT_ID, None));
    }
    let client = reqwest::Client::new();
    let ids =
        |updates: Vec<(i64, Value)>| updates.into_iter().map(|(id, _)| id).collect::<Vec<_>>();
    assert_eq!(
        ids(fetch(&client, &gateway, Some(12), None).await),
        vec![10, 11, 12],
        "never served, so not acknowledged by a since that happens to be above them"
    );
    assert_eq!(gateway.acknowledged().borrow().through, 0);
    assert!(fetch(&client, &gateway, Some(12), None).await.is_empty());
    assert_eq!(gateway.acknowledged().borrow().through, 12);
}

/// Telegram started its ids over: the old high `since` of the child, and the old
/// sequence's acknowledgements, say nothing about the new, lower ids.
#[tokio::test]
async fn a_restarted_sequence_is_served_and_acknowledged_in_a_new_generation() {
    let gateway = gateway(None, 10).await;
    let client = reqwest::Client::new();
    let ids =
        |updates: Vec<(i64, Value)>| updates.into_iter().map(|(id, _)| id).collect::<Vec<_>>();
    gateway.push(727_334_707, message(CHAT_ID, None));
    assert_eq!(
        ids(fetch(&client, &gateway, None, None).await),
        vec![727_334_707]
    );
    gateway.restart_sequence();
    assert_eq!(
        gateway.push(117_314_199, message(CHAT_ID, None)),
        PushOutcome::Buffered,
        "a lower id is no duplicate in the new generation"
    );
    gateway.push(117_314_200, message(CHAT_ID, None));
    assert_eq!(
        ids(fetch(&client, &gateway, Some(727_334_707), None).await),
        vec![117_314_199, 117_314_200],
        "the old since acknowledges the old update only"
    );
    assert_eq!(
        *gateway.acknowledged().borrow(),
        Acknowledged {
            generation: 1,
            through: 0,
            outstanding: 2
        }
    );
    assert!(
        fetch(&client, &gateway, Some(117_314_200), None)
            .await
            .is_empty()
    );
    assert_eq!(
        *gateway.acknowledged().borrow(),
        Acknowledged {
            generation: 1,
            through: 117_314_200,
            outstanding: 0
        }
    );
}

#[tokio::test]
async fn only_the_configured_chat_and_topic_are_served() {
    let gateway = gateway(Some(5), 10).await;
    assert_eq!(
        gateway.push(1, message(CHAT_ID + 1, Some(5))),
        PushOutcome::Rejected
    );
    assert_eq!(
        gateway.push(2, message(CHAT_ID, Some(6))),
        PushOutcome::Rejected
    );
    assert_eq!(
        gateway.push(3, message(CHAT_ID, Some(5))),
        PushOutcome::Buffered
    );
    let client = reqwest::Client::new();
    assert_eq!(fetch(&client, &gateway, None, Some(5)).await.len(), 1);
    let mut url = reqwest::Url::parse(gateway.updates_url().expose()).expect("URL");
    url.set_query(Some("chat_id=42"));
    assert_eq!(
        client
            .get(url.clone())
            .send()
            .await
            .expect("answers")
            .status(),
        403
    );
    url.set_query(Some(&format!("chat_id={CHAT_ID}&thread_id=6")));
    assert_eq!(client.get(url).send().await.expect("answers").status(), 403);
}

#[tokio::test]
async fn overflow_drops_the_oldest_and_counts_one_episode() {
    let gateway = gateway(None, 3).await;
    for id in 1..=3 {
        assert_eq!(
            gateway.push(id, message(CHAT_ID, None)),
            PushOutcome::Buffered
        );
    }
    assert_eq!(
        gateway.push(4, message(CHAT_ID, None)),
        PushOutcome::BufferedDroppingOldest
    );
    assert_eq!(
        gateway.push(5, message(CHAT_ID, None)),
        PushOutcome::BufferedDroppingOldest
    );
    let stats = gateway.stats();
    assert_eq!(
        (stats.dropped_total, stats.overflow_episodes, stats.buffered),
        (2, 1, 3)
    );
    let client = reqwest::Client::new();
    let got: Vec<i64> = fetch(&client, &gateway, None, None)
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(got, vec![3, 4, 5]);
    assert_eq!(
        gateway.acknowledged().borrow().through,
        2,
        "a dropped update never holds confirmation up"
    );
    fetch(&client, &gateway, Some(5), None).await;
    assert_eq!(
        gateway.acknowledged().borrow().through,
        5,
        "the dropped ids count as acknowledged"
    );
    for id in 6..=9 {
        gateway.push(id, message(CHAT_ID, None));
    }
    assert_eq!(
        gateway.stats().overflow_episodes,
        2,
        "a new episode after the buffer drained"
    );
}

#[tokio::test]
async fn withdraw_keeps_served_updates_and_allows_redelivery_later() {
    let gateway = gateway(None, 10).await;
    let client = reqwest::Client::new();
    gateway.push(1, message(CHAT_ID, None));
    fetch(&client, &gateway, None, None).await;
    gateway.push(2, message(CHAT_ID, None));
    assert_eq!(gateway.withdraw_unserved(), 1);
    let got: Vec<i64> = fetch(&client, &gateway, None, None)
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(got, vec![1], "the unserved update went back to Telegram");
    assert_eq!(
        gateway.push(2, message(CHAT_ID, None)),
        PushOutcome::Buffered,
        "it may come back in a later term"
    );
}

fn unix_now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64
}

/// A Telegram update as the gateway passes it on: the payload carries its own
/// `update_id`, which is what the mirror stores as `since`.
fn dated(id: i64, kind: &str, date: i64, text: &str) -> Value {
    json!({ "update_id": id, kind: {"chat": {"id": CHAT_ID}, "date": date, "text": text} })
}

/// The stand-in mirror is faithful to the real one: it ignores messages dated before its
/// own start (not written, but `since` moves past them) and says so on stderr, once each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mirror_stub_skips_messages_dated_before_its_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("updates.jsonl");
    let stderr = dir.path().join("stderr");
    let gateway = gateway(None, 10).await;
    let an_hour_ago = unix_now_s() - 3600;
    gateway.push(1, dated(1, "message", an_hour_ago, "old"));
    gateway.push(2, dated(2, "edited_message", an_hour_ago, "old edit"));
    let mut stub = std::process::Command::new(common::process::BATON)
        .args(["mirror-stub", "--interval-ms", "20", "--out"])
        .arg(&out)
        .env("TELEGRAM_UPDATES_URL", gateway.updates_url().expose())
        .env("TELEGRAM_CHAT_ID", CHAT_ID.to_string())
        .env_remove("TELEGRAM_THREAD_ID")
        .stderr(std::fs::File::create(&stderr).expect("stderr file"))
        .spawn()
        .expect("the stub starts");
    let mut acknowledged = gateway.acknowledged();
    tokio::time::timeout(common::PATIENCE, acknowledged.wait_for(|a| a.through >= 2))
        .await
        .expect("the stub moves `since` past the old updates")
        .expect("gateway alive");
    // The stub has fetched, so it started before this moment: "now" is not before it.
    gateway.push(3, dated(3, "message", unix_now_s(), "new"));
    tokio::time::timeout(common::PATIENCE, acknowledged.wait_for(|a| a.through >= 3))
        .await
        .expect("the stub reads the new update")
        .expect("gateway alive");
    stub.kill().expect("kill the stub");
    stub.wait().expect("reap the stub");

    let written: Vec<(i64, String)> = std::fs::read_to_string(&out)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).expect("a JSON line"))
        .map(|v| (v["update_id"].as_i64().expect("id"), v["text"].to_string()))
        .collect();
    assert_eq!(written, vec![(3, "\"new\"".to_owned())]);
    let skipped: Vec<String> = std::fs::read_to_string(&stderr)
        .expect("stderr")
        .lines()
        .filter(|l| l.contains("skipping update"))
        .map(str::to_owned)
        .collect();
    assert_eq!(skipped.len(), 2, "{skipped:?}");
    assert!(skipped[0].contains("update 1:") && skipped[1].contains("update 2:"));
}
