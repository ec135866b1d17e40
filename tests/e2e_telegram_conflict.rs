//! Two devices that both believe they are active (their folders are not syncing) both
//! poll one bot: Telegram answers 409. When sync resumes they settle to one active device
//! and the 409s stop — no ping-pong.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use baton_testkit::fake_bot_api::FakeBotApi;
use common::process::Folder;
use mirror_baton::core::Status;
use mirror_baton::core::record::{self, NameKind};

const SCALE: f64 = 0.05;
const CHAT: i64 = -1_009;

/// A two-way "sync tool": copies each record file from the folder of its owner to the
/// other folder (temp file + rename, as sync tools do), while `running`.
fn sync_folders(a: std::path::PathBuf, b: std::path::PathBuf, running: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        while running.load(Ordering::Relaxed) {
            for (from, to) in [(&a, &b), (&b, &a)] {
                let Ok(entries) = std::fs::read_dir(from) else {
                    continue;
                };
                for entry in entries.flatten() {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if !matches!(record::classify_name(&name), NameKind::Record { .. }) {
                        continue;
                    }
                    let Ok(bytes) = std::fs::read(entry.path()) else {
                        continue;
                    };
                    let Ok(found) = record::parse_record(&bytes) else {
                        continue;
                    };
                    let target = to.join(&name);
                    let newer = std::fs::read(&target)
                        .ok()
                        .and_then(|old| record::parse_record(&old).ok())
                        .is_none_or(|old| old.seq < found.seq || old.instance != found.instance);
                    if newer {
                        let temp = to.join(format!(".{name}.tmp"));
                        if std::fs::write(&temp, &bytes).is_ok() {
                            let _ = std::fs::rename(&temp, &target);
                        }
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(30));
        }
    });
}

fn status_of(folder: &Folder, id: &str) -> Option<Status> {
    folder.record_of(id).map(|r| r.status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_forced_actives_settle_to_one_without_ping_pong() {
    let fake = FakeBotApi::start().await.expect("fake Bot API");
    let (left, right) = (Folder::new(SCALE), Folder::new(SCALE));
    let a = left.start_telegram("left", &fake.api_url(), fake.token(), CHAT);
    let b = right.start_telegram("right", &fake.api_url(), fake.token(), CHAT);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(status_of(&left, &a.device_id) == Some(Status::Active)
        && status_of(&right, &b.device_id) == Some(Status::Active))
    {
        assert!(
            Instant::now() < deadline,
            "both partitioned devices become active"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Both poll: Telegram reports conflicts.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !fake.requests().iter().any(|r| r.status == Some(409)) {
        assert!(
            Instant::now() < deadline,
            "the fake answers 409 to the older poller"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Sync resumes.
    let running = Arc::new(AtomicBool::new(true));
    sync_folders(left.devices_dir(), right.devices_dir(), running.clone());
    let deadline = Instant::now() + Duration::from_secs(20);
    let winner = loop {
        let statuses = (
            status_of(&left, &a.device_id),
            status_of(&left, &b.device_id),
        );
        match statuses {
            (Some(Status::Active), Some(Status::Standby)) => break a.device_id.clone(),
            (Some(Status::Standby), Some(Status::Active)) => break b.device_id.clone(),
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "settles to one active: {statuses:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Give it a while: the 409s must stop (a ping-pong would keep producing them).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let conflicts_then = fake
        .requests()
        .iter()
        .filter(|r| r.status == Some(409))
        .count();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let conflicts_now = fake
        .requests()
        .iter()
        .filter(|r| r.status == Some(409))
        .count();
    running.store(false, Ordering::Relaxed);
    println!("settled on {winner}; 409s: {conflicts_now}");
    assert_eq!(conflicts_now, conflicts_then, "no more 409s once settled");
    assert_eq!(
        status_of(&left, &winner),
        Some(Status::Active),
        "the winner stays active"
    );
    let loser = if winner == a.device_id { &b } else { &a };
    let settled_ms = mirror_baton::adapters::clock::wall_ms() - 4_000;
    let late_polls: Vec<_> = fake
        .get_updates_requests()
        .into_iter()
        .filter(|r| r.received_at_ms > settled_ms)
        .collect();
    let last_poll = fake
        .get_updates_requests()
        .into_iter()
        .last()
        .expect("polls");
    assert_eq!(
        last_poll.device.as_deref(),
        Some(winner.as_str()),
        "the newest poll is the winner's"
    );
    assert!(
        late_polls
            .iter()
            .all(|r| r.device.as_deref() == Some(winner.as_str())),
        "only the winner polls once settled, not {}: {late_polls:#?}",
        loser.device_id
    );
}
