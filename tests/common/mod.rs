//! Shared helpers for the Telegram tests: a fake server, a bot pointed at it, a poller
//! wired to a gateway, and a stand-in for the mirror that fetches from the gateway.
#![allow(dead_code)] // each test file uses a different subset

pub mod identity;
pub mod process;
pub mod syncthing;

use std::time::Duration;

use baton_testkit::fake_bot_api::FakeBotApi;
use mirror_baton::adapters::gateway::{Gateway, GatewayConfig};
use mirror_baton::adapters::telegram::{
    BotSettings, PollerConfig, PollerEvent, PollerHandle, StartPosition, TelegramBot, spawn_poller,
};
use mirror_baton::adapters::telegram_config::Secret;
use serde_json::Value;
use tokio::sync::mpsc;

/// The configured chat (a forum supergroup) in every test.
pub const CHAT_ID: i64 = -1001234567890;
/// An upper bound for waits: only a failing test ever waits this long.
pub const PATIENCE: Duration = Duration::from_secs(10);

pub fn bot_for(fake: &FakeBotApi, device: &str, poll_timeout: Duration) -> TelegramBot {
    let settings = BotSettings {
        poll_timeout,
        api_url: Some(reqwest::Url::parse(&fake.api_url()).expect("the fake's URL parses")),
        device_tag: Some(device.to_owned()),
    };
    TelegramBot::new(&Secret::new(fake.token()), &settings).expect("client builds")
}

pub fn fast_poller_config(thread_id: Option<i64>) -> PollerConfig {
    let mut config = PollerConfig::new(CHAT_ID, thread_id, 7);
    config.conflict_backoff_min = Duration::from_millis(200);
    config.resend_pause = Duration::from_millis(100);
    config.error_backoff_max = Duration::from_millis(500);
    config
}

/// One active device: a poller feeding a gateway, as the runtime wires them.
pub struct Device {
    pub gateway: Gateway,
    pub poller: Option<PollerHandle>,
    pub events: mpsc::Receiver<PollerEvent>,
}

pub async fn start_device(
    fake: &FakeBotApi,
    name: &str,
    thread_id: Option<i64>,
    start: StartPosition,
) -> Device {
    let gateway = Gateway::start(GatewayConfig {
        chat_id: CHAT_ID,
        thread_id,
        capacity: 1000,
    })
    .await
    .expect("gateway starts");
    let (events_tx, events) = mpsc::channel(256);
    let poller = spawn_poller(
        bot_for(fake, name, Duration::from_secs(5)),
        fast_poller_config(thread_id),
        start,
        gateway.acknowledged(),
        events_tx,
    );
    Device {
        gateway,
        poller: Some(poller),
        events,
    }
}

impl Device {
    /// Takes the next event; Forward events are pushed to the gateway, and a restart of
    /// Telegram's ids is applied to it, as serving does.
    pub async fn next_event(&mut self) -> PollerEvent {
        let event = tokio::time::timeout(PATIENCE, self.events.recv())
            .await
            .expect("an event within PATIENCE")
            .expect("the poller is running");
        match &event {
            PollerEvent::Forward { update_id, payload } => {
                self.gateway.push(*update_id, payload.clone());
            }
            PollerEvent::SequenceRestarted { .. } => self.gateway.restart_sequence(),
            _ => {}
        }
        event
    }

    /// Skips `Started` and returns the next event.
    pub async fn next_non_start_event(&mut self) -> PollerEvent {
        loop {
            match self.next_event().await {
                PollerEvent::Started { .. } => continue,
                other => return other,
            }
        }
    }
}

/// Fetches from the gateway like the mirror: `GET url?since=&chat_id=`.
pub async fn fetch(
    client: &reqwest::Client,
    gateway: &Gateway,
    since: Option<i64>,
    thread_id: Option<i64>,
) -> Vec<(i64, Value)> {
    let mut url = reqwest::Url::parse(gateway.updates_url().expose()).expect("gateway URL parses");
    {
        let mut query = url.query_pairs_mut();
        if let Some(since) = since {
            query.append_pair("since", &since.to_string());
        }
        query.append_pair("chat_id", &CHAT_ID.to_string());
        if let Some(thread_id) = thread_id {
            query.append_pair("thread_id", &thread_id.to_string());
        }
    }
    let response = client.get(url).send().await.expect("gateway answers");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("gateway answers JSON");
    body["updates"]
        .as_array()
        .expect("an updates list")
        .iter()
        .map(|u| {
            (
                u["update_id"].as_i64().expect("an id"),
                u["payload"].clone(),
            )
        })
        .collect()
}
