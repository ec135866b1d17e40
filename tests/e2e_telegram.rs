//! Real `baton run` processes, real teloxide, a faithful fake Bot API on loopback, and a
//! stand-in mirror per device that records every update it reads from the gateway.
//! 200 updates flow across three `/activate` handoffs, one resignation and one crash.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use baton_testkit::fake_bot_api::FakeBotApi;
use common::process::{Folder, wait_until};
use mirror_baton::core::Status;

const SCALE: f64 = 0.05;
const CHAT: i64 = -1_001_234_567;
const MESSAGES: usize = 200;

fn active(folder: &Folder, live: &[&str]) -> Vec<String> {
    folder
        .records()
        .into_iter()
        .filter(|r| r.status == Status::Active && live.contains(&r.device_id.as_str()))
        .map(|r| r.device_id)
        .collect()
}

/// Texts each child received, in order.
fn received(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .map(|v| v["text"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// The device's Active intervals from its JSON log, as (start, end) in Unix ms:
/// from "serving the bot" (logged before the poller starts) to the transition out of
/// Active (logged after the poller stopped).
fn active_intervals(log: &str) -> Vec<(u64, u64)> {
    let mut intervals = Vec::new();
    let mut open = None;
    for line in log.lines() {
        let Ok(value) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let at = value["timestamp"]
            .as_str()
            .and_then(rfc3339_ms)
            .unwrap_or(0);
        let message = value["message"].as_str().unwrap_or_default();
        if message == "serving the bot" {
            open = Some(at);
        } else if message == "role changed" && value["from"] == "Active" {
            intervals.push((open.take().unwrap_or(0), at));
        }
    }
    if let Some(start) = open {
        intervals.push((start, u64::MAX));
    }
    intervals
}

/// `2026-11-25T08:16:23.123456Z` → Unix ms.
fn rfc3339_ms(text: &str) -> Option<u64> {
    let (date, time) = text.trim_end_matches('Z').split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.split(':');
    let (h, min) = (
        t.next()?.parse::<i64>().ok()?,
        t.next()?.parse::<i64>().ok()?,
    );
    let secs: f64 = t.next()?.parse().ok()?;
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + h * 3600 + min * 60) as f64 * 1000.0 + secs * 1000.0) as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_updates_survive_handoffs_a_resignation_and_a_crash() {
    let fake = std::sync::Arc::new(FakeBotApi::start().await.expect("fake Bot API"));
    let folder = Folder::new(SCALE);
    let mut devices = vec![folder.start_telegram("alpha", &fake.api_url(), fake.token(), CHAT)];
    let alpha = devices[0].device_id.clone();
    wait_until(Duration::from_secs(20), || {
        (active(&folder, &[&alpha]).len() == 1).then_some(())
    })
    .await
    .expect("alpha becomes active");
    devices.push(folder.start_telegram("bravo", &fake.api_url(), fake.token(), CHAT));
    devices.push(folder.start_telegram("charlie", &fake.api_url(), fake.token(), CHAT));
    let ids: Vec<String> = devices.iter().map(|d| d.device_id.clone()).collect();
    wait_until(Duration::from_secs(20), || {
        let standby = folder
            .records()
            .iter()
            .filter(|r| r.status == Status::Standby)
            .count();
        (standby == 2).then_some(())
    })
    .await
    .expect("bravo and charlie registered");

    // A steady stream of user messages, with odd updates mixed in.
    let injector = {
        let fake = fake.clone();
        tokio::spawn(async move {
            for n in 1..=MESSAGES {
                fake.inject_text(CHAT, None, &format!("m{n}"));
                if n == 50 {
                    fake.inject_raw(serde_json::json!({"edited_channel_post": {"weird": true}}));
                    fake.inject_raw(serde_json::json!({"message": {"chat": "not-an-object"}}));
                    fake.inject_raw(serde_json::json!({"future_kind": [1, 2, 3]}));
                    fake.inject_text(CHAT, None, &"x".repeat(4 * 1024 * 1024));
                    fake.inject_text(777, None, "from a foreign chat");
                }
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
        })
    };

    let live_all: Vec<&str> = ids.iter().map(String::as_str).collect();
    let mut handoffs = Vec::new();
    for (target, name) in [(1, "bravo"), (2, "charlie"), (0, "alpha")] {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let asked = Instant::now();
        fake.inject_text(CHAT, None, &format!("/activate {name}"));
        let id = ids[target].clone();
        wait_until(Duration::from_secs(20), || {
            (active(&folder, &live_all) == vec![id.clone()]).then_some(())
        })
        .await
        .unwrap_or_else(|| panic!("/activate {name} moves the role: {:?}", folder.records()));
        handoffs.push(asked.elapsed());
    }
    println!("handoffs (command → record active): {handoffs:?}");

    // Resignation of alpha: one of the others takes over.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    devices[0].signal(libc::SIGTERM);
    assert_eq!(devices[0].wait_exit(Duration::from_secs(20)), Some(0));
    let live: Vec<&str> = vec![&ids[1], &ids[2]];
    let successor = wait_until(Duration::from_secs(20), || {
        let a = active(&folder, &live);
        (a.len() == 1).then(|| a[0].clone())
    })
    .await
    .expect("a standby takes over after the resignation");

    // Crash of the successor: the last one takes over.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let crashed = ids.iter().position(|id| *id == successor).unwrap();
    devices[crashed].signal(libc::SIGKILL);
    devices[crashed].wait_exit(Duration::from_secs(5));
    let last = if crashed == 1 { 2 } else { 1 };
    let last_id = ids[last].clone();
    wait_until(Duration::from_secs(30), || {
        (active(&folder, &[&last_id]).len() == 1).then_some(())
    })
    .await
    .expect("the last device takes over after the crash");

    injector.await.expect("injector");
    let outputs: Vec<_> = ["alpha", "bravo", "charlie"]
        .iter()
        .map(|n| folder.root.path().join(format!("{n}.updates")))
        .collect();
    let wanted: Vec<String> = (1..=MESSAGES).map(|n| format!("m{n}")).collect();
    wait_until(Duration::from_secs(30), || {
        let got: std::collections::BTreeSet<String> =
            outputs.iter().flat_map(|p| received(p)).collect();
        wanted.iter().all(|w| got.contains(w)).then_some(())
    })
    .await;

    // Count.
    let mut deliveries: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (index, path) in outputs.iter().enumerate() {
        for text in received(path) {
            deliveries.entry(text).or_default().push(index);
        }
    }
    let lost: Vec<&String> = wanted
        .iter()
        .filter(|w| !deliveries.contains_key(*w))
        .collect();
    let duplicated: Vec<(&String, &Vec<usize>)> =
        deliveries.iter().filter(|(_, d)| d.len() > 1).collect();
    // Delivered to the crashed device (which never confirmed them) and again after it:
    // the batch in flight at the crash. Deliveries are listed by child, not by time.
    let in_crash_window = duplicated
        .iter()
        .filter(|(_, d)| d.contains(&crashed) && d.len() == 2)
        .count();
    println!(
        "sent {MESSAGES}, delivered {}, lost {}, duplicated {} (inside the crash window: {in_crash_window})",
        wanted
            .iter()
            .filter(|w| deliveries.contains_key(*w))
            .count(),
        lost.len(),
        duplicated.len()
    );
    assert!(lost.is_empty(), "lost updates: {lost:?}");
    let timeline: Vec<String> = devices
        .iter()
        .flat_map(|d| {
            d.log()
                .lines()
                .filter(|l| {
                    l.contains("role changed")
                        || l.contains("serving the bot")
                        || l.contains("handing over")
                })
                .map(|l| l.chars().take(300).collect::<String>())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(
        duplicated.len(),
        in_crash_window,
        "duplicates outside the crash window (crashed: {crashed}): {duplicated:?}\n{}",
        timeline.join("\n")
    );
    assert!(
        !deliveries.contains_key("from a foreign chat"),
        "a foreign chat is never forwarded"
    );
    assert!(
        deliveries.keys().any(|t| t.len() == 4 * 1024 * 1024),
        "the 4 MB text went through"
    );
    let foreign_reports = fake
        .sent_messages()
        .iter()
        .filter(|m| m.chat_id == CHAT && m.plain_text.contains("777"))
        .count();
    assert_eq!(
        foreign_reports, 1,
        "the foreign chat was reported once in the configured chat"
    );
    assert!(
        fake.sent_messages()
            .iter()
            .any(|m| m.plain_text.contains("handing over to")),
        "/activate answered in the chat"
    );

    // The fake's log: no getUpdates from a device outside its Active intervals.
    let intervals: BTreeMap<String, Vec<(u64, u64)>> = devices
        .iter()
        .map(|d| (d.device_id.clone(), active_intervals(&d.log())))
        .collect();
    let polls = fake.get_updates_requests();
    assert!(polls.len() > 10, "devices polled");
    for request in polls {
        let device = request.device.clone().unwrap_or_default();
        let inside = intervals.get(&device).is_some_and(|spans| {
            spans
                .iter()
                .any(|(a, b)| *a <= request.received_at_ms && request.received_at_ms <= *b)
        });
        assert!(
            inside,
            "getUpdates from {device} at {} outside Active: {:?}",
            request.received_at_ms,
            intervals.get(&device)
        );
    }
}
