//! The real mirror's contract, end to end: real `baton run` processes, the fake Bot API,
//! and the stand-in mirror behaving like the real one (its date filter, its `since` in
//! its own database, its menu, its replies, its rhythm). One test per point of issue 9:
//! the environment the mirror receives, `--child-when-active` delivering, the chat's menu
//! after a mirror restart, a restart losing nothing, the 403 warning, the scrubbed log,
//! and a slow mirror across a handoff.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use baton_testkit::fake_bot_api::FakeBotApi;
use common::process::{Folder, MirrorSetup, processed, starts, wait_until};
use mirror_baton::core::Status;
use serde_json::json;

const SCALE: f64 = 0.05;
const CHAT: i64 = -1_001_234_567;
const OTHER_CHAT: i64 = -1_009_999_999;
const PATIENCE: Duration = Duration::from_secs(30);
/// baton's entries in the chat's menu, after the mirror's.
const BATON_MENU: [&str; 4] = ["devices", "activate", "status", "help"];

fn unix_now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64
}

fn active(folder: &Folder) -> Vec<String> {
    folder
        .records()
        .into_iter()
        .filter(|r| r.status == Status::Active)
        .map(|r| r.device_id)
        .collect()
}

async fn wait_active(folder: &Folder, device_id: &str) {
    wait_until(PATIENCE, || {
        (active(folder) == vec![device_id.to_owned()]).then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("{device_id} becomes the one active device"));
}

async fn wait_standby(folder: &Folder, device_id: &str) {
    wait_until(PATIENCE, || {
        folder
            .record_of(device_id)
            .is_some_and(|r| r.status == Status::Standby)
            .then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("{device_id} registers as a standby"));
}

/// The texts the stand-in at `path` processed, in order.
fn texts(path: &Path) -> Vec<String> {
    processed(path).into_iter().map(|(_, text)| text).collect()
}

async fn wait_processed(path: &Path, text: &str) {
    wait_until(PATIENCE, || {
        texts(path).iter().any(|t| t == text).then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("the mirror processes {text:?}: {:?}", texts(path)));
}

/// The first start of the stand-in that `path` records (its variables and pid).
async fn first_start(path: &Path) -> serde_json::Value {
    wait_until(PATIENCE, || starts(path).into_iter().next())
        .await
        .expect("the mirror starts")
}

fn kill(pid: i64) {
    // SAFETY: kill(2) on a stand-in mirror this test started (through baton).
    unsafe {
        libc::kill(pid as i32, libc::SIGKILL);
    }
}

/// A user's text message with the given date (Unix seconds), as Telegram sends it.
fn dated_message(fake: &FakeBotApi, text: &str, date: i64) -> i64 {
    fake.inject_raw(json!({"message": {
        "message_id": 900_000 + date % 1000,
        "from": {"id": 4242, "is_bot": false, "first_name": "Tester"},
        "chat": {"id": CHAT, "type": "supergroup", "title": "test"},
        "date": date,
        "text": text,
    }}))
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|a| a.to_string()).collect()
}

/// Point 1: the mirror gets what baton serves, in the names it reads — even when its own
/// file says otherwise and baton's flags decide — and so answers in the topic baton
/// serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mirror_gets_batons_configuration_and_answers_in_the_topic_baton_serves() {
    let fake = FakeBotApi::start().await.expect("fake Bot API");
    let folder = Folder::new(SCALE);
    let project = folder.project("alpha");
    std::fs::create_dir_all(project.join(".opencode")).expect("project config folder");
    let file = json!({"chatId": OTHER_CHAT, "threadId": 5}).to_string();
    std::fs::write(project.join(".opencode/telegram.json"), file).expect("the mirror's file");
    let before_s = unix_now_s();
    let setup = MirrorSetup {
        baton_args: args(&["--chat-id", &CHAT.to_string(), "--thread-id", "7"]),
        ..MirrorSetup::default()
    };
    let device = folder.start_mirror("alpha", &fake.api_url(), fake.token(), &setup);
    wait_active(&folder, &device.device_id).await;

    let env = first_start(&folder.env_path("alpha")).await;
    assert_eq!(env["TELEGRAM_CHAT_ID"], CHAT.to_string(), "{env}");
    assert_eq!(env["TELEGRAM_THREAD_ID"], "7");
    let send_url = format!("{}bot<token>", fake.api_url());
    assert_eq!(env["TELEGRAM_SEND_URL"], send_url.as_str());
    assert_eq!(env["USE_ICLOUD_COORDINATOR"], "false");
    assert_eq!(env["BATON_DEVICE_ID"], device.device_id.as_str());
    let db = env["TELEGRAM_DB_PATH"].as_str().expect("a database path");
    let state = folder.state_dir().to_string_lossy().into_owned();
    assert!(db.starts_with(&state) && db.ends_with(".db"), "{db}");
    let pinned: i64 = env["STARTUP_TIMESTAMP"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("a Unix second");
    assert!((before_s..=unix_now_s()).contains(&pinned), "{pinned}");

    fake.inject_text(CHAT, Some(5), "in the mirror's old topic");
    fake.inject_text(CHAT, Some(7), "in the topic");
    wait_processed(&folder.updates_path("alpha"), "in the topic").await;
    let reply = fake
        .wait_for(PATIENCE, |f| {
            f.sent_messages()
                .into_iter()
                .find(|m| m.plain_text == "mirror-stub processed a message")
        })
        .await
        .expect("the mirror answers");
    assert_eq!((reply.chat_id, reply.message_thread_id), (CHAT, Some(7)));
    assert_eq!(texts(&folder.updates_path("alpha")), ["in the topic"]);
}

/// Point 2: with `--child-when-active` baton polls and serves the mirror, which runs only
/// on the active device; across a handoff nothing is lost or delivered twice, including
/// messages sent while the role moved (dated before the new device's mirror started).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_child_when_active_the_active_devices_mirror_gets_every_message_once() {
    let fake = FakeBotApi::start().await.expect("fake Bot API");
    let folder = Folder::new(SCALE);
    let setup = MirrorSetup {
        chat_env: Some(CHAT),
        baton_args: args(&["--child-when-active"]),
        ..MirrorSetup::default()
    };
    let alpha = folder.start_mirror("alpha", &fake.api_url(), fake.token(), &setup);
    wait_active(&folder, &alpha.device_id).await;
    let bravo_started_s = unix_now_s();
    let bravo = folder.start_mirror("bravo", &fake.api_url(), fake.token(), &setup);
    wait_standby(&folder, &bravo.device_id).await;
    assert!(
        starts(&folder.env_path("bravo")).is_empty(),
        "no mirror on a standby"
    );
    // So that "a second ago" below is after bravo's baton started.
    wait_until(PATIENCE, || {
        (unix_now_s() >= bravo_started_s + 2).then_some(())
    })
    .await;

    for n in 1..=3 {
        fake.inject_text(CHAT, None, &format!("m{n}"));
    }
    wait_processed(&folder.updates_path("alpha"), "m3").await;
    fake.inject_text(CHAT, None, "/activate bravo");
    // Sent while the role moves: dated a second before the new mirror can start.
    let switch_date = unix_now_s() - 1;
    for n in 4..=6 {
        dated_message(&fake, &format!("m{n}"), switch_date);
    }
    wait_active(&folder, &bravo.device_id).await;
    for n in 7..=9 {
        fake.inject_text(CHAT, None, &format!("m{n}"));
    }
    wait_processed(&folder.updates_path("bravo"), "m9").await;

    let mut all = texts(&folder.updates_path("alpha"));
    all.extend(texts(&folder.updates_path("bravo")));
    all.sort_by_key(|t| t[1..].parse::<u32>().unwrap_or(0));
    let wanted: Vec<String> = (1..=9).map(|n| format!("m{n}")).collect();
    assert_eq!(all, wanted, "each message processed exactly once");
    let alpha_mirror = first_start(&folder.env_path("alpha")).await["pid"]
        .as_i64()
        .expect("pid");
    assert!(
        wait_until(PATIENCE, || (!alive(alpha_mirror)).then_some(()))
            .await
            .is_some(),
        "the old active device's mirror stopped"
    );
}

fn alive(pid: i64) -> bool {
    // SAFETY: signal 0 only checks for existence.
    let exists = unsafe { libc::kill(pid as i32, 0) } == 0;
    exists
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            stat.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
}

/// Point 3: the chat's menu shows the mirror's commands and baton's, and keeps doing so
/// after a mirror restarts with another menu on a standby device; `/help` reaches both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chats_menu_holds_batons_commands_and_the_mirrors_after_a_mirror_restart() {
    let fake = FakeBotApi::start().await.expect("fake Bot API");
    let folder = Folder::new(SCALE);
    let menu = |names: &[&str]| {
        let list: Vec<_> = names
            .iter()
            .map(|n| json!({"command": n, "description": format!("the mirror's {n}")}))
            .collect();
        serde_json::Value::Array(list).to_string()
    };
    let setup_for = |name: &str| {
        let path = folder.root.path().join(format!("{name}.menu"));
        std::fs::write(&path, menu(&["interrupt", "plan", "help"])).expect("menu file");
        MirrorSetup {
            chat_env: Some(CHAT),
            stub_args: args(&["--menu", &path.to_string_lossy()]),
            ..MirrorSetup::default()
        }
    };
    let alpha = folder.start_mirror("alpha", &fake.api_url(), fake.token(), &setup_for("alpha"));
    wait_active(&folder, &alpha.device_id).await;
    let bravo = folder.start_mirror("bravo", &fake.api_url(), fake.token(), &setup_for("bravo"));
    wait_standby(&folder, &bravo.device_id).await;
    let expect = |mirror: &[&str]| -> Vec<String> {
        mirror
            .iter()
            .filter(|n| !BATON_MENU.contains(n))
            .chain(BATON_MENU.iter())
            .map(|n| n.to_string())
            .collect()
    };
    let shown = fake
        .wait_for(PATIENCE, |f| {
            let names = f.menu_names_seen_in(CHAT);
            (names == expect(&["interrupt", "plan"])).then_some(names)
        })
        .await;
    assert!(shown.is_some(), "menu: {:?}", fake.menu_names_seen_in(CHAT));

    // The mirror on the standby is upgraded and restarts with another menu.
    let new_menu = ["interrupt", "plan", "review", "help"];
    std::fs::write(folder.root.path().join("bravo.menu"), menu(&new_menu)).expect("menu");
    let restarted = Instant::now();
    kill(
        first_start(&folder.env_path("bravo")).await["pid"]
            .as_i64()
            .expect("pid"),
    );
    let shown = fake
        .wait_for(PATIENCE, |f| {
            (f.menu_names_seen_in(CHAT) == expect(&new_menu)).then_some(())
        })
        .await;
    assert!(shown.is_some(), "menu: {:?}", fake.menu_names_seen_in(CHAT));
    println!(
        "menu after a mirror restart: whole again {:.1} s after the kill",
        restarted.elapsed().as_secs_f64()
    );
    let default = fake.commands().expect("the mirror's own list");
    assert_eq!(
        default.as_array().map(Vec::len),
        Some(4),
        "the mirror replaced the default"
    );

    fake.inject_text(CHAT, None, "/help");
    wait_processed(&folder.updates_path("alpha"), "/help").await;
    let answered = fake
        .wait_for(PATIENCE, |f| {
            f.sent_messages()
                .iter()
                .any(|m| m.plain_text.contains("passes this bot"))
                .then_some(())
        })
        .await;
    assert!(answered.is_some(), "baton answers /help too");
}

/// Points 1 and 5: a mirror killed and restarted by baton keeps the messages sent while
/// it was down (dated after its first start, before its restart), and reads its `since`
/// back, so nothing is delivered twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_restarted_by_baton_loses_nothing_sent_while_it_was_down() {
    let fake = FakeBotApi::start().await.expect("fake Bot API");
    let folder = Folder::new(SCALE);
    let started_s = unix_now_s();
    let setup = MirrorSetup {
        chat_env: Some(CHAT),
        ..MirrorSetup::default()
    };
    let device = folder.start_mirror("alpha", &fake.api_url(), fake.token(), &setup);
    wait_active(&folder, &device.device_id).await;
    fake.inject_text(CHAT, None, "before");
    let out = folder.updates_path("alpha");
    wait_processed(&out, "before").await;
    // Two whole seconds after the first start, so the messages below are dated after it.
    wait_until(PATIENCE, || (unix_now_s() >= started_s + 3).then_some(())).await;

    kill(
        first_start(&folder.env_path("alpha")).await["pid"]
            .as_i64()
            .expect("pid"),
    );
    let down_s = unix_now_s() - 1;
    let sent: Vec<String> = (1..=5).map(|n| format!("while down {n}")).collect();
    for text in &sent {
        dated_message(&fake, text, down_s);
    }
    wait_until(PATIENCE, || {
        (starts(&folder.env_path("alpha")).len() >= 2).then_some(())
    })
    .await
    .expect("baton restarts the mirror");
    wait_until(PATIENCE, || {
        let got = texts(&out);
        sent.iter().all(|s| got.contains(s)).then_some(())
    })
    .await;
    let got = texts(&out);
    let mut wanted = vec!["before".to_string()];
    wanted.extend(sent.iter().cloned());
    assert_eq!(got, wanted, "5 of 5 kept, none twice");
    let pins: Vec<_> = starts(&folder.env_path("alpha"))
        .iter()
        .map(|s| s["STARTUP_TIMESTAMP"].clone())
        .collect();
    assert_eq!(pins[0], pins[1], "pinned to the first start");
}

/// Point 4: a mirror asking for another chat than baton serves is refused, and baton
/// says so once in its log: what the child asked, what baton serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_asking_for_another_chat_is_one_warning_in_batons_log() {
    let fake = FakeBotApi::start().await.expect("fake Bot API");
    let folder = Folder::new(SCALE);
    let setup = MirrorSetup {
        chat_env: Some(OTHER_CHAT),
        baton_args: args(&["--chat-id", &CHAT.to_string()]),
        stub_args: args(&["--error-ms", "100"]),
        ..MirrorSetup::default()
    };
    let device = folder.start_mirror("alpha", &fake.api_url(), fake.token(), &setup);
    wait_active(&folder, &device.device_id).await;
    // The mirror retries every 100 ms, silently but for its own stderr: let it fail a few
    // times.
    let failures = |log: &str| log.matches("poll failed: 403").count();
    wait_until(PATIENCE, || (failures(&device.log()) >= 5).then_some(()))
        .await
        .expect("the mirror keeps asking");
    let log = device.log();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("refused the child's request (403)"))
        .collect();
    assert_eq!(warnings.len(), 1, "one warning per episode:\n{log}");
    assert!(
        warnings[0].contains(&format!("asked for chat {OTHER_CHAT}"))
            && warnings[0].contains(&format!("serves chat {CHAT}")),
        "{}",
        warnings[0]
    );
    assert!(
        log.lines()
            .any(|l| l.contains("TELEGRAM_CHAT_ID") && l.contains("the gateway will refuse")),
        "the start-up warning about the user's TELEGRAM_CHAT_ID"
    );
}

/// Point 4: the mirror prints its environment (token included) and the updates URL (with
/// the gateway's credentials), as the real ones do; baton's log has the lines, marked as
/// the child's, with every secret replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mirrors_output_reaches_batons_log_marked_and_scrubbed() {
    let fake = FakeBotApi::start().await.expect("fake Bot API");
    let folder = Folder::new(SCALE);
    let setup = MirrorSetup {
        chat_env: Some(CHAT),
        stub_args: args(&["--log-env"]),
        ..MirrorSetup::default()
    };
    let device = folder.start_mirror("alpha", &fake.api_url(), fake.token(), &setup);
    let child_line = |log: &str, needle: &str| {
        log.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| {
                v["target"] == "mirror_baton::child"
                    && v["message"].as_str().is_some_and(|m| m.contains(needle))
            })
    };
    let token_line = wait_until(PATIENCE, || {
        child_line(&device.log(), "TELEGRAM_BOT_TOKEN=")
    })
    .await
    .expect("the mirror's environment in baton's log");
    assert_eq!(token_line["message"], "  TELEGRAM_BOT_TOKEN=***");
    assert_eq!(token_line["stream"], "stdout");
    let url_line = wait_until(PATIENCE, || child_line(&device.log(), "Bot is running"))
        .await
        .expect("the updates URL line");
    let url_text = url_line["message"].as_str().unwrap_or_default().to_owned();
    assert!(url_text.contains("\"updatesUrl\":\"***\""), "{url_text}");
    let send = child_line(&device.log(), "TELEGRAM_SEND_URL=").expect("the send URL line");
    assert_eq!(send["message"], "  TELEGRAM_SEND_URL=***");
    let log = device.log();
    assert!(!log.contains(fake.token()), "the token reached baton's log");
    assert!(
        !log.contains("http://baton:"),
        "the gateway's credentials reached the log"
    );
}

/// Point 6: a mirror still processing (a voice transcription) when `/activate` moves the
/// role: the old device waits for its acknowledgement, so the next device does not
/// deliver the message again. At a time scale where the lease outlasts the wait, as it
/// does at full scale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_mirror_across_a_handoff_gets_its_message_once() {
    const PROCESSING: Duration = Duration::from_secs(7);
    let fake = FakeBotApi::start().await.expect("fake Bot API");
    let folder = Folder::new(0.5);
    let setup = MirrorSetup {
        chat_env: Some(CHAT),
        stub_args: args(&["--process-ms", &PROCESSING.as_millis().to_string()]),
        ..MirrorSetup::default()
    };
    let alpha = folder.start_mirror("alpha", &fake.api_url(), fake.token(), &setup);
    let bravo = folder.start_mirror("bravo", &fake.api_url(), fake.token(), &setup);
    wait_until(Duration::from_secs(60), || {
        let active = active(&folder);
        (active.len() == 1).then_some(())
    })
    .await
    .expect("one device becomes active");
    let (old, new, old_name, new_name) = if active(&folder)[0] == alpha.device_id {
        (&alpha, &bravo, "alpha", "bravo")
    } else {
        (&bravo, &alpha, "bravo", "alpha")
    };
    wait_standby(&folder, &new.device_id).await;

    fake.inject_text(CHAT, None, "a voice message");
    wait_processed(&folder.updates_path(old_name), "a voice message").await;
    let asked = Instant::now();
    fake.inject_text(CHAT, None, &format!("/activate {new_name}"));
    wait_until(Duration::from_secs(60), || {
        (active(&folder) == vec![new.device_id.clone()]).then_some(())
    })
    .await
    .expect("the role moves");
    let handoff = asked.elapsed();
    fake.inject_text(CHAT, None, "after the handoff");
    let new_out = folder.updates_path(new_name);
    let first = wait_until(PATIENCE, || texts(&new_out).into_iter().next())
        .await
        .expect("the new device's mirror gets a message");
    let deliveries = texts(&folder.updates_path(old_name))
        .iter()
        .chain(texts(&new_out).iter())
        .filter(|t| *t == "a voice message")
        .count();
    println!(
        "slow mirror: processing {:.1} s; /activate → new device active in {:.1} s; the message delivered {deliveries} time(s)",
        PROCESSING.as_secs_f64(),
        handoff.as_secs_f64()
    );
    assert_eq!(first, "after the handoff", "delivered again by {new_name}");
    assert_eq!(deliveries, 1);
    assert!(old.log().contains("serving the bot"));
}
