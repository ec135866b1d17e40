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
/// An upper bound for each wait: only a failing test ever waits this long.
const PATIENCE: Duration = Duration::from_secs(60);

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
    let deadline = Instant::now() + PATIENCE;
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
    let deadline = Instant::now() + PATIENCE;
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
    let deadline = Instant::now() + PATIENCE;
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
    // The 409s must stop (a ping-pong would keep producing them). Proven by heartbeats,
    // not by a wall-clock pause: first the winner writes through a grace of one
    // liveness period (the loser's last poll ends), then through one more liveness
    // period and a settle window, within which a loser that still believed itself active
    // would poll again, or a ping-pong flip the roles.
    let winner_folder = if winner == a.device_id { &left } else { &right };
    let timing = mirror_baton::core::Timing::default().scaled(SCALE);
    let grace_writes = common::process::active_heartbeats_spanning(&timing, timing.liveness_active);
    tokio::task::block_in_place(|| {
        common::process::wait_for_writes(winner_folder, &winner, grace_writes, PATIENCE)
    })
    .expect("the winner keeps writing its heartbeat");
    let requests_then = fake.requests().len();
    let conflicts_then = fake
        .requests()
        .iter()
        .filter(|r| r.status == Some(409))
        .count();
    let window_writes = common::process::active_heartbeats_spanning(
        &timing,
        timing.liveness_active + timing.settle_window,
    );
    tokio::task::block_in_place(|| {
        common::process::wait_for_writes(winner_folder, &winner, window_writes, PATIENCE)
    })
    .expect("the winner keeps writing its heartbeat");
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
    let late_polls: Vec<_> = fake
        .requests()
        .into_iter()
        .skip(requests_then)
        .filter(|r| r.is("getUpdates"))
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
