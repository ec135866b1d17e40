//! The poller starts no getUpdates past the device's lease (the deadline the runtime
//! publishes from the core, on the sleep-counting clock), and clamps a long poll to what
//! remains of it: the answer comes back while the device may still act.

mod common;

use std::time::Duration;

use baton_testkit::fake_bot_api::FakeBotApi;
use common::{PATIENCE, bot_for, fast_poller_config};
use mirror_baton::adapters::clock;
use mirror_baton::adapters::gateway::{Gateway, GatewayConfig};
use mirror_baton::adapters::telegram::{PollerEvent, StartPosition, spawn_poller};
use mirror_baton::core::Moment;
use tokio::sync::{mpsc, watch};

#[tokio::test]
async fn no_get_updates_past_the_lease_and_long_polls_end_inside_it() {
    let fake = FakeBotApi::start().await.expect("fake starts");
    let gateway = Gateway::start(GatewayConfig {
        chat_id: common::CHAT_ID,
        thread_id: None,
        capacity: 100,
    })
    .await
    .expect("gateway");
    // The lease ran out already: a device that stalled, or cannot write its record.
    let (lease_tx, lease) = watch::channel(Some(clock::now()));
    let mut config = fast_poller_config(None);
    config.lease = Some(lease);
    let (events_tx, mut events) = mpsc::channel(16);
    let poller = spawn_poller(
        // A 30 s long poll, were it not for the lease.
        bot_for(&fake, "leased", Duration::from_secs(30)),
        config,
        StartPosition::default(),
        gateway.acknowledged(),
        events_tx,
    );
    let started = tokio::time::timeout(PATIENCE, events.recv()).await;
    assert!(matches!(started, Ok(Some(PollerEvent::Started { .. }))));
    // The set-up calls went out; a getUpdates would follow at once if allowed.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        fake.get_updates_requests().is_empty(),
        "getUpdates past the lease: {:?}",
        fake.get_updates_requests()
    );

    // The lease is renewed for 3 s: the long poll asks for at most what remains, less a
    // second for the answer to come back.
    lease_tx.send_replace(Some(clock::now().plus(Duration::from_secs(3))));
    let first = fake
        .wait_for(PATIENCE, |f| f.get_updates_requests().first().cloned())
        .await
        .expect("polls once the lease is renewed");
    let timeout = first.params["timeout"].as_u64().expect("a timeout");
    assert!(
        timeout <= 2,
        "the long poll outlasts the lease: {timeout} s"
    );

    // The lease runs out again: nothing more once the current poll has ended.
    lease_tx.send_replace(Some(Moment(0)));
    tokio::time::sleep(Duration::from_secs(timeout + 1)).await;
    let polls = fake.get_updates_requests().len();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        fake.get_updates_requests().len(),
        polls,
        "no poll past the lease"
    );
    poller.stop().await;
}
