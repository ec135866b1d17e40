//! Real `baton run` processes against the fake Bot API when Telegram starts its update ids
//! over after a quiet week (FACTS.md): the new, lower ids are delivered exactly once —
//! while baton runs, across restarts of baton and of its child, whose `since` (kept in
//! its database, as the mirror keeps it) is from the old sequence — and the records stop
//! carrying the old high id. Also: a peer record holding absurd numbers is reported once
//! and poisons nothing.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use baton_testkit::fake_bot_api::FakeBotApi;
use common::process::{Device, Folder, wait_until};
use mirror_baton::core::{Status, record};

const SCALE: f64 = 0.05;
const CHAT: i64 = -1_001_234_567;
const PATIENCE: Duration = Duration::from_secs(30);

/// Texts the stand-in mirror wrote, in order, across all its runs.
fn received(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .map(|v| v["text"].as_str().unwrap_or_default().to_string())
        .collect()
}

async fn wait_active(folder: &Folder, device: &Device) {
    let id = device.device_id.clone();
    wait_until(PATIENCE, || {
        folder
            .record_of(&id)
            .filter(|r| r.status == Status::Active)
            .map(|_| ())
    })
    .await
    .unwrap_or_else(|| panic!("{id} becomes active:\n{}", device.log()));
}

/// Sends `texts`, then waits until the mirror wrote them and Telegram has nothing
/// unconfirmed. Returns their update ids.
async fn send_and_deliver(
    fake: &FakeBotApi,
    updates: &Path,
    device: &Device,
    texts: &[String],
) -> Vec<i64> {
    let mut ids = Vec::new();
    for text in texts {
        ids.push(fake.inject_text(CHAT, None, text));
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    wait_until(PATIENCE, || {
        let got = received(updates);
        texts.iter().all(|t| got.contains(t)).then_some(())
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "{texts:?} delivered; got {:?}\n{}",
            received(updates),
            device.log()
        )
    });
    fake.wait_for(PATIENCE, |f| {
        f.pending_update_ids().is_empty().then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("all confirmed: {:?}", fake.pending_update_ids()));
    ids
}

fn texts(prefix: &str) -> Vec<String> {
    (1..=5).map(|n| format!("{prefix}{n}")).collect()
}

fn stop(device: &mut Device) {
    device.signal(libc::SIGTERM);
    assert_eq!(device.wait_exit(PATIENCE), Some(0), "{}", device.log());
}

fn persisted_since(path: &Path) -> i64 {
    std::fs::read_to_string(path)
        .expect("the mirror's since file")
        .trim()
        .parse()
        .expect("a number")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_lower_ids_after_a_quiet_week_are_delivered_once_across_restarts() {
    let fake = FakeBotApi::start().await.expect("fake Bot API");
    let folder = Folder::new(SCALE);
    let db = folder.root.path().join("mirror-since");
    let db_text = db.to_string_lossy().into_owned();
    let updates = folder.root.path().join("alpha.updates");
    let start = || {
        let env = [("TELEGRAM_DB_PATH", db_text.as_str())];
        folder.start_telegram_env("alpha", &fake.api_url(), fake.token(), CHAT, &env)
    };
    let mut alpha = start();
    wait_active(&folder, &alpha).await;

    // Before the holiday: the old sequence.
    let old = send_and_deliver(&fake, &updates, &alpha, &texts("old")).await;
    let old_high = *old.last().expect("ids");
    wait_until(PATIENCE, || {
        folder
            .record_of(&alpha.device_id)
            .filter(|r| r.last_update_id == Some(old_high))
    })
    .await
    .expect("the record carries the old sequence's progress");

    // A quiet week while baton runs: ids start over, far below.
    let base = fake.quiet_week();
    assert!(base < old_high);
    let during = send_and_deliver(&fake, &updates, &alpha, &texts("during")).await;
    assert!(during.iter().all(|id| *id < old_high));
    let record = wait_until(PATIENCE, || {
        folder
            .record_of(&alpha.device_id)
            .filter(|r| r.last_update_id == during.last().copied())
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "the record follows the new sequence, down from {old_high}: {:?}",
            folder.record_of(&alpha.device_id)
        )
    });
    assert_eq!(record.progress_term, Some(record.term));

    // Another quiet week while baton (and so its child) is stopped: the child's
    // persisted since, and the record, are from the previous sequence.
    stop(&mut alpha);
    assert_eq!(persisted_since(&db), *during.last().expect("ids"));
    let base = fake.quiet_week();
    assert!(base < during[0]);
    let mut alpha = start();
    wait_active(&folder, &alpha).await;
    let after = send_and_deliver(&fake, &updates, &alpha, &texts("after")).await;
    assert_eq!(
        persisted_since(&db),
        *after.last().expect("ids"),
        "the mirror's since went down with the new sequence"
    );

    // A plain restart does not bring the old sequence back.
    stop(&mut alpha);
    let mut alpha = start();
    wait_active(&folder, &alpha).await;
    send_and_deliver(&fake, &updates, &alpha, &texts("later")).await;
    stop(&mut alpha);

    let mut deliveries: BTreeMap<String, usize> = BTreeMap::new();
    for text in received(&updates) {
        *deliveries.entry(text).or_default() += 1;
    }
    let wanted: Vec<String> = ["old", "during", "after", "later"]
        .iter()
        .flat_map(|prefix| texts(prefix))
        .collect();
    let lost: Vec<&String> = wanted
        .iter()
        .filter(|t| !deliveries.contains_key(*t))
        .collect();
    let doubled: Vec<(&String, &usize)> = deliveries.iter().filter(|(_, n)| **n > 1).collect();
    println!(
        "{} messages over two id restarts and two restarts of baton: {} lost, {} delivered twice",
        wanted.len(),
        lost.len(),
        doubled.len()
    );
    assert!(lost.is_empty(), "lost: {lost:?}");
    assert!(doubled.is_empty(), "delivered twice: {doubled:?}");
    let record = folder.record_of(&alpha.device_id).expect("record");
    assert!(
        record.last_update_id < Some(during[0]),
        "the record carries the latest sequence, not an old high id: {record:?}"
    );
}

/// A peer's record says it handled update i64::MAX (and another's claims term
/// u64::MAX): the new active device computed offset i64::MAX + 1, delivered nothing and
/// copied the id into its own record. Now both values are reported once and ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poisoned_peer_record_is_reported_once_and_poisons_nothing() {
    let fake = FakeBotApi::start().await.expect("fake Bot API");
    let folder = Folder::new(SCALE);
    std::fs::create_dir_all(folder.devices_dir()).expect("devices dir");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64;
    let write_ghost = |name: &str, term: u64, last_update_id: Option<i64>| {
        let device_id = format!("{name}@elsewhere:/p");
        let ghost = serde_json::json!({
            "schema": 1, "device_id": device_id, "hostname": "elsewhere", "seq": 1,
            "status": "standby", "instance": name, "term": term,
            "written_at_ms": now_ms, "last_update_id": last_update_id,
        });
        let path = folder.devices_dir().join(record::file_name(&device_id));
        std::fs::write(path, ghost.to_string()).expect("ghost written");
    };
    write_ghost("poisoned-id", 3, Some(i64::MAX));
    write_ghost("poisoned-term", u64::MAX, None);
    let alpha = folder.start_telegram("alpha", &fake.api_url(), fake.token(), CHAT);
    wait_active(&folder, &alpha).await;
    // The ghosts' files change (re-read) a few times: still one report each.
    for _ in 0..3 {
        write_ghost("poisoned-id", 3, Some(i64::MAX));
        write_ghost("poisoned-term", u64::MAX, None);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let updates = folder.root.path().join("alpha.updates");
    let sent = send_and_deliver(&fake, &updates, &alpha, &texts("m")).await;
    let own = wait_until(PATIENCE, || {
        folder
            .record_of(&alpha.device_id)
            .filter(|r| r.last_update_id == sent.last().copied())
    })
    .await
    .unwrap_or_else(|| panic!("{:?}", folder.record_of(&alpha.device_id)));
    assert_eq!(
        own.term, 4,
        "the sane highest term plus one, not a wrapped 0"
    );
    let log = alpha.log();
    for field in ["last_update_id", "term"] {
        let needle = format!("absurd number: {field} ");
        let reports = log.lines().filter(|l| l.contains(&needle)).count();
        assert_eq!(reports, 1, "{field} reported once:\n{log}");
    }
    let offsets: Vec<i64> = fake
        .get_updates_requests()
        .iter()
        .filter_map(|r| r.params["offset"].as_i64())
        .collect();
    assert!(
        offsets.iter().all(|o| *o > 0 && *o <= sent[4] + 1),
        "every offset is sane: {offsets:?}"
    );
}
