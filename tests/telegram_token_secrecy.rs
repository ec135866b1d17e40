//! The bot token never reaches a log line, an event, an error or a `Debug` output — even
//! with every crate logging at TRACE and requests failing in every way we can provoke.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton_testkit::fake_bot_api::{FakeBotApi, FakeBotConfig};
use common::{CHAT_ID, PATIENCE, bot_for, fast_poller_config, start_device};
use mirror_baton::adapters::gateway::Acknowledged;
use mirror_baton::adapters::telegram::{
    BotSettings, OutgoingMessage, PollerEvent, Replier, ReplierSettings, StartPosition,
    TelegramBot, spawn_poller,
};
use mirror_baton::adapters::telegram_config::Secret;
use tokio::sync::{mpsc, watch};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Capture {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }
}

async fn wait_for_log(capture: &Capture, needle: &str) {
    for _ in 0..1000 {
        if capture.text().contains(needle) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no log line with {needle:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_never_appears_anywhere() {
    let capture = Capture::default();
    let writer = capture.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();
    let fake = FakeBotApi::start_with(FakeBotConfig {
        token: "987654:SECRET-token-never-print-me".to_owned(),
        ..FakeBotConfig::default()
    })
    .await
    .expect("fake starts");
    let token = fake.token().to_owned();
    let mut seen = Vec::new();

    // Normal polling, a command, a conflict between two pollers.
    let mut a = start_device(&fake, "a", None, StartPosition::default()).await;
    fake.inject_text(CHAT_ID, None, "/status");
    seen.push(format!("{:?}", a.next_non_start_event().await));
    let mut b = start_device(&fake, "b", None, StartPosition::default()).await;
    loop {
        let event = a.next_event().await;
        seen.push(format!("{event:?}"));
        if let PollerEvent::Conflict { .. } = event {
            break;
        }
    }
    a.poller.take().expect("running").stop().await;
    b.poller.take().expect("running").stop().await;
    let _ = b.events.try_recv();

    // A refused send (bad HTML) and a network failure (nothing listens on port 1).
    let (replier, _task) = Replier::spawn(
        bot_for(&fake, "a", Duration::from_secs(5)),
        ReplierSettings::default(),
    );
    replier
        .send(OutgoingMessage {
            chat_id: CHAT_ID,
            thread_id: None,
            html: "<nope>".into(),
        })
        .expect("queued");
    wait_for_log(&capture, "reply not sent").await;
    let unreachable = BotSettings {
        poll_timeout: Duration::from_secs(1),
        api_url: Some(reqwest::Url::parse("http://127.0.0.1:1/").expect("url")),
        device_tag: None,
    };
    let bot = TelegramBot::new(&Secret::new(&token), &unreachable).expect("builds");
    seen.push(format!("{bot:?}"));
    let (events_tx, _events) = mpsc::channel(8);
    let (_ack_tx, ack_rx) = watch::channel(Acknowledged::default());
    let poller = spawn_poller(
        bot.clone(),
        fast_poller_config(None),
        StartPosition::default(),
        ack_rx,
        events_tx,
    );
    wait_for_log(&capture, "Telegram request failed").await;
    poller.stop().await;
    if let Err(error) = bot.send_html(CHAT_ID, None, "x").await {
        seen.push(error.to_string());
        seen.push(format!("{error:?}"));
    }

    // A wrong token: Unauthorized is fatal and says so without the token.
    let wrong = Secret::new("987654:SECRET-wrong-token-also-hidden");
    let settings = BotSettings {
        poll_timeout: Duration::from_secs(1),
        api_url: Some(reqwest::Url::parse(&fake.api_url()).expect("url")),
        device_tag: None,
    };
    let (events_tx, mut events) = mpsc::channel(8);
    let (_ack_tx, ack_rx) = watch::channel(Acknowledged::default());
    let bot = TelegramBot::new(&wrong, &settings).expect("builds");
    let poller = spawn_poller(
        bot,
        fast_poller_config(None),
        StartPosition::default(),
        ack_rx,
        events_tx,
    );
    let fatal = tokio::time::timeout(PATIENCE, events.recv())
        .await
        .expect("in time")
        .expect("an event");
    assert!(matches!(fatal, PollerEvent::Refused { .. }), "{fatal:?}");
    seen.push(format!("{fatal:?}"));
    poller.stop().await;

    let logs = capture.text();
    assert!(logs.len() > 1000, "logging was captured");
    for secret in [token.as_str(), wrong.expose(), "SECRET"] {
        assert!(
            !logs.contains(secret),
            "a log line holds the token:\n{}",
            logs.lines().find(|l| l.contains(secret)).unwrap_or("")
        );
        for text in &seen {
            assert!(!text.contains(secret), "{text}");
        }
    }
}
