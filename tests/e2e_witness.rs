//! Telegram as a second witness, with real `baton run` processes and the fake Bot API.
//!
//! - A leader whose record is stuck in the sync while it keeps polling is not deposed:
//!   the two devices have a folder each, and the test is their sync, copying every
//!   record across — until it stops copying the leader's. The standby sees the record
//!   lapse, asks Telegram, hears that nothing waits, and stays a standby for many
//!   leases while the leader keeps serving the messages sent meanwhile.
//! - A leader that stops serving (SIGSTOP) while a message waits is replaced on
//!   Telegram's word: the standby says so ("updates wait on Telegram and did not
//!   drain") before it takes over.
//!
//! Waits are for events, with generous bounds; the one fixed window (no takeover while
//! the record is stuck) is counted in leases and is a negative check: a slow machine
//! can only make it easier to pass for the right reason, never make it fail.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton_testkit::fake_bot_api::FakeBotApi;
use common::process::{Folder, processed, wait_for};
use mirror_baton::core::Status;
use mirror_baton::core::record::{self, NameKind};

const SCALE: f64 = 0.1;
const CHAT: i64 = -1_029;
const PATIENCE: Duration = Duration::from_secs(60);
/// The active liveness timeout at this scale (50 s × SCALE).
const LIVENESS: Duration = Duration::from_secs(5);

fn status_in(folder: &Folder, id: &str) -> Option<Status> {
    folder.record_of(id).map(|r| r.status)
}

/// The test's own sync between two devices folders: copies every record whose bytes
/// differ, atomically (temp name, then rename), every 20 ms — except a frozen name.
struct Sync {
    stop: Arc<AtomicBool>,
    frozen: Arc<Mutex<Option<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sync {
    fn start(a: PathBuf, b: PathBuf) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let frozen = Arc::new(Mutex::new(None::<String>));
        let (stop_flag, frozen_name) = (stop.clone(), frozen.clone());
        let thread = std::thread::spawn(move || {
            while !stop_flag.load(Ordering::Relaxed) {
                let frozen = frozen_name.lock().expect("frozen name").clone();
                copy_records(&a, &b, frozen.as_deref());
                copy_records(&b, &a, frozen.as_deref());
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Sync {
            stop,
            frozen,
            thread: Some(thread),
        }
    }

    fn freeze(&self, name: &str) {
        *self.frozen.lock().expect("frozen name") = Some(name.to_string());
    }
}

impl Drop for Sync {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn copy_records(from: &Path, to: &Path, frozen: Option<&str>) {
    let Ok(entries) = std::fs::read_dir(from) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !matches!(record::classify_name(&name), NameKind::Record { .. })
            || Some(name.as_str()) == frozen
        {
            continue;
        }
        let Ok(bytes) = std::fs::read(entry.path()) else {
            continue;
        };
        if std::fs::read(to.join(&name)).ok().as_deref() == Some(bytes.as_slice()) {
            continue;
        }
        if std::fs::create_dir_all(to).is_err() {
            continue;
        }
        let temp = to.join(format!(".{name}.tmp"));
        if std::fs::write(&temp, &bytes).is_ok() {
            let _ = std::fs::rename(&temp, to.join(&name));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_record_is_stuck_but_serves_is_not_deposed() {
    let fake = FakeBotApi::start().await.expect("fake Bot API");
    let (here, there) = (Folder::new(SCALE), Folder::new(SCALE));
    std::fs::create_dir_all(here.devices_dir()).expect("folder");
    std::fs::create_dir_all(there.devices_dir()).expect("folder");
    let sync = Sync::start(here.devices_dir(), there.devices_dir());
    let leader = here.start_telegram("leader", &fake.api_url(), fake.token(), CHAT);
    wait_for(PATIENCE, || {
        (status_in(&here, &leader.device_id) == Some(Status::Active)).then_some(())
    })
    .unwrap_or_else(|| panic!("the first device becomes active:\n{}", leader.log()));
    let standby = there.start_telegram("standby", &fake.api_url(), fake.token(), CHAT);
    wait_for(PATIENCE, || {
        (status_in(&there, &standby.device_id) == Some(Status::Standby)).then_some(())
    })
    .unwrap_or_else(|| panic!("the second device becomes a standby:\n{}", standby.log()));

    // The sync stops carrying the leader's record; the leader goes on serving.
    sync.freeze(&record::file_name(&leader.device_id));
    let stuck_seq = there.record_of(&leader.device_id).expect("copied").seq;
    wait_for(PATIENCE, || {
        standby
            .log()
            .contains("Telegram shows no update waiting")
            .then_some(())
    })
    .unwrap_or_else(|| panic!("the standby defers on Telegram's word:\n{}", standby.log()));
    for n in 0..3 {
        fake.inject_text(CHAT, None, &format!("while the record is stuck {n}"));
        tokio::time::sleep(LIVENESS / 2).await;
    }
    // Many leases past the lapse (far inside the 4 h × SCALE cap).
    tokio::time::sleep(LIVENESS * 6).await;

    assert_eq!(
        there.record_of(&leader.device_id).map(|r| r.seq),
        Some(stuck_seq),
        "the leader's record stayed stuck in the standby's folder"
    );
    assert_eq!(
        status_in(&there, &standby.device_id),
        Some(Status::Standby),
        "no takeover from a leader that serves:\n{}",
        standby.log()
    );
    assert!(
        !standby.log().contains("is now ACTIVE"),
        "the standby never acted:\n{}",
        standby.log()
    );
    let served = wait_for(PATIENCE, || {
        let texts = processed(&here.updates_path("leader"));
        (texts.len() >= 3).then_some(texts)
    })
    .unwrap_or_else(|| panic!("the leader served what was sent:\n{}", leader.log()));
    assert!(
        served
            .iter()
            .all(|(_, text)| text.starts_with("while the record is stuck"))
    );
    assert_eq!(status_in(&here, &leader.device_id), Some(Status::Active));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_stops_serving_while_a_message_waits_is_replaced_on_telegrams_word() {
    let fake = FakeBotApi::start().await.expect("fake Bot API");
    let folder = Folder::new(SCALE);
    let leader = folder.start_telegram("leader", &fake.api_url(), fake.token(), CHAT);
    wait_for(PATIENCE, || {
        (status_in(&folder, &leader.device_id) == Some(Status::Active)).then_some(())
    })
    .unwrap_or_else(|| panic!("the first device becomes active:\n{}", leader.log()));
    let standby = folder.start_telegram("standby", &fake.api_url(), fake.token(), CHAT);
    wait_for(PATIENCE, || {
        (status_in(&folder, &standby.device_id) == Some(Status::Standby)).then_some(())
    })
    .unwrap_or_else(|| panic!("the second device becomes a standby:\n{}", standby.log()));

    leader.signal(libc::SIGSTOP);
    // The first answers the frozen leader's waiting poll (unread, unconfirmed), the
    // second waits on the server: both count as pending.
    fake.inject_text(CHAT, None, "while the leader is stopped 0");
    fake.inject_text(CHAT, None, "while the leader is stopped 1");
    wait_for(PATIENCE, || {
        (status_in(&folder, &standby.device_id) == Some(Status::Active)).then_some(())
    })
    .unwrap_or_else(|| panic!("the standby takes over:\n{}", standby.log()));
    let log = standby.log();
    let said = log
        .find("updates wait on Telegram and did not drain")
        .unwrap_or_else(|| panic!("the takeover came on Telegram's word:\n{log}"));
    let active = log
        .find("is now ACTIVE")
        .expect("said when it became active");
    assert!(
        said < active,
        "the witness spoke before the takeover:\n{log}"
    );
    wait_for(PATIENCE, || {
        (processed(&folder.updates_path("standby")).len() >= 2).then_some(())
    })
    .unwrap_or_else(|| panic!("the new leader serves what waited:\n{}", standby.log()));
    leader.signal(libc::SIGCONT);
}

/// A leader alive but cut off from Telegram hands over (issue 12, point 3): the leader
/// talks to one fake Bot API and the standby to another (the same Telegram seen from
/// two networks); the leader's stops answering. Its polls fail, it says it is cut off,
/// the standby asks its own Telegram, is answered, says so, and is handed the role.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_telegram_hands_over_to_a_standby_that_reaches_it() {
    let leaders_telegram = FakeBotApi::start().await.expect("fake Bot API");
    let standbys_telegram = FakeBotApi::start().await.expect("fake Bot API");
    let folder = Folder::new(SCALE);
    let leader = folder.start_telegram(
        "leader",
        &leaders_telegram.api_url(),
        leaders_telegram.token(),
        CHAT,
    );
    wait_for(PATIENCE, || {
        (status_in(&folder, &leader.device_id) == Some(Status::Active)).then_some(())
    })
    .unwrap_or_else(|| panic!("the first device becomes active:\n{}", leader.log()));
    let standby = folder.start_telegram(
        "standby",
        &standbys_telegram.api_url(),
        standbys_telegram.token(),
        CHAT,
    );
    wait_for(PATIENCE, || {
        (status_in(&folder, &standby.device_id) == Some(Status::Standby)).then_some(())
    })
    .unwrap_or_else(|| panic!("the second device becomes a standby:\n{}", standby.log()));

    leaders_telegram.shutdown();
    wait_for(PATIENCE, || {
        (status_in(&folder, &standby.device_id) == Some(Status::Active)).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "the standby that reaches Telegram is handed the role:\nleader:\n{}\nstandby:\n{}",
            leader.log(),
            standby.log()
        )
    });
    let log = leader.log();
    assert!(
        log.contains("cannot reach Telegram") && log.contains("handing the bot to it"),
        "the leader said why it handed over:\n{log}"
    );
    wait_for(PATIENCE, || {
        (status_in(&folder, &leader.device_id) == Some(Status::Standby)).then_some(())
    })
    .unwrap_or_else(|| panic!("the cut-off leader stands by:\n{}", leader.log()));
    standbys_telegram.inject_text(CHAT, None, "after the handover");
    wait_for(PATIENCE, || {
        (!processed(&folder.updates_path("standby")).is_empty()).then_some(())
    })
    .unwrap_or_else(|| panic!("the new leader serves:\n{}", standby.log()));
}
