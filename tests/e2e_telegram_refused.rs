//! Real `baton run` processes when Telegram refuses the bot token (401, as after a
//! revocation): the active device stops claiming the role instead of holding it in
//! silence; every device says why (log, `baton status`); the group settles instead of
//! passing the role around; and once the token works again a device takes the role and
//! delivers what waited, saying in the chat which device could not poll.

mod common;

use std::time::{Duration, Instant};

use baton_testkit::fake_bot_api::FakeBotApi;
use common::process::{Folder, wait_until};
use mirror_baton::core::Status;

const SCALE: f64 = 0.05;
const CHAT: i64 = -1_001_234_567;
const PATIENCE: Duration = Duration::from_secs(60);

fn received(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .map(|v| v["text"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_gives_up_the_role_settles_and_recovers() {
    let fake = FakeBotApi::start().await.expect("fake Bot API");
    let folder = Folder::new(SCALE);
    let alpha = folder.start_telegram("alpha", &fake.api_url(), fake.token(), CHAT);
    let ids = [alpha.device_id.clone(), String::new()];
    wait_until(PATIENCE, || {
        let active = folder.record_of(&ids[0])?.status == Status::Active;
        active.then_some(())
    })
    .await
    .expect("alpha active");
    let bravo = folder.start_telegram("bravo", &fake.api_url(), fake.token(), CHAT);
    let ids = [alpha.device_id.clone(), bravo.device_id.clone()];
    wait_until(PATIENCE, || {
        (folder.record_of(&ids[1])?.status == Status::Standby).then_some(())
    })
    .await
    .expect("bravo standby");

    // The token is revoked. The message that ends alpha's long poll is the last it gets.
    fake.refuse_token(true);
    fake.inject_text(CHAT, None, "first");
    let refused_everywhere = wait_until(PATIENCE, || {
        let records = folder.records();
        let marked = records
            .iter()
            .filter(|r| r.polling_refused.as_deref() == Some("Unauthorized"))
            .count();
        let active = records.iter().any(|r| r.status == Status::Active);
        (marked == 2 && !active).then_some(())
    })
    .await;
    assert!(
        refused_everywhere.is_some(),
        "both devices say Telegram refused their token, and neither claims the role: {:?}\n{}\n{}",
        folder.records(),
        alpha.log(),
        bravo.log()
    );
    assert!(
        alpha
            .log()
            .contains("Telegram refused this device's bot token (Unauthorized)")
            && alpha.log().contains("handing the role to"),
        "{}",
        alpha.log()
    );
    // A device probing right now shows no mark for a moment: look until both show it.
    let mut table = String::new();
    let marked_twice = wait_until(PATIENCE, || {
        let status = folder.baton().args(["status"]).output().ok()?;
        table = String::from_utf8_lossy(&status.stdout).into_owned();
        let marks = table
            .matches("Telegram refused its bot token (Unauthorized)")
            .count();
        (marks == 2).then_some(())
    })
    .await;
    assert!(marked_twice.is_some(), "baton status shows both: {table}");

    // The group settles: a few probes with growing waits, no passing around.
    let calls_before = fake.requests().len();
    let watched = Instant::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let calls = fake.requests().len() - calls_before;
    let handoffs = [&alpha, &bravo]
        .iter()
        .map(|d| d.log().matches("handing the role to").count())
        .sum::<usize>();
    println!(
        "{calls} Telegram calls in {:.0} s with the token refused; {handoffs} handoff(s)",
        watched.elapsed().as_secs_f64()
    );
    assert!(calls <= 30, "{calls} calls in 10 s: the devices cycle");
    assert_eq!(handoffs, 1, "alpha handed over once, and nobody since");

    // The token works again: at its next probe a device keeps the role and delivers.
    fake.refuse_token(false);
    fake.inject_text(CHAT, None, "second");
    let outputs = [
        folder.root.path().join("alpha.updates"),
        folder.root.path().join("bravo.updates"),
    ];
    wait_until(PATIENCE, || {
        let got: Vec<String> = outputs.iter().flat_map(|p| received(p)).collect();
        (got.contains(&"first".to_string()) && got.contains(&"second".to_string())).then_some(())
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "both messages delivered once the token works: {:?}\n{}\n{}",
            folder.records(),
            alpha.log(),
            bravo.log()
        )
    });
    let active: Vec<_> = folder
        .records()
        .into_iter()
        .filter(|r| r.status == Status::Active)
        .collect();
    assert_eq!(active.len(), 1, "{active:?}");
    assert_eq!(active[0].polling_refused, None);
    let told = fake
        .wait_for(Duration::from_secs(10), |f| {
            f.sent_messages()
                .into_iter()
                .find(|m| m.plain_text.contains("Telegram refused its bot token"))
        })
        .await;
    assert!(
        told.is_some(),
        "the chat hears which device could not poll: {:?}",
        fake.sent_messages()
    );
}
