//! Leaving Active waits for the child's acknowledgement as long as the child is busy with
//! what it was served, within the stop budget: 13 s while it processes, 5 s otherwise,
//! at once on a stop signal during a handoff, and on a second signal during the
//! shutdown's own wait; an announced sleep cuts it short. Time is tokio's paused clock: the bounds are checked exactly,
//! with no wall clock involved.

mod common;

use std::time::Duration;

use common::{CHAT_ID, fetch};
use mirror_baton::adapters::child::ChildState;
use mirror_baton::adapters::gateway::{Gateway, GatewayConfig};
use mirror_baton::serving::acknowledgement::{
    AckWaitContext, AckWaitEnd, StopSignals, wait_for_acknowledgement,
};
use mirror_baton::serving::{ACK_WAIT_BUSY_MAX, ACK_WAIT_MAX};
use serde_json::json;
use tokio::sync::watch;

/// A gateway that served update 1 to the child, which has not acknowledged it yet.
async fn served_one() -> (Gateway, reqwest::Client) {
    let gateway = Gateway::start(GatewayConfig {
        chat_id: CHAT_ID,
        thread_id: None,
        capacity: 10,
    })
    .await
    .expect("gateway starts");
    let update = json!({"update_id": 1, "message": {"chat": {"id": CHAT_ID}, "text": "voice"}});
    gateway.push(1, update);
    let client = reqwest::Client::new();
    assert_eq!(fetch(&client, &gateway, Some(0), None).await.len(), 1);
    assert_eq!(gateway.withdraw_unserved(), 1);
    (gateway, client)
}

fn child(running: bool) -> watch::Receiver<ChildState> {
    let (tx, rx) = watch::channel(ChildState { starts: 1, running });
    std::mem::forget(tx); // the child's state never changes in these tests
    rx
}

fn context<'a>(gateway: &'a Gateway, running: bool, signals: &StopSignals) -> AckWaitContext<'a> {
    AckWaitContext {
        gateway,
        acknowledged: gateway.acknowledged(),
        child: Some(child(running)),
        signals: signals.clone(),
    }
}

#[tokio::test(start_paused = true)]
async fn a_child_processing_what_it_was_served_gets_the_longer_wait() {
    let (gateway, _client) = served_one().await;
    assert!(gateway.child_is_processing());
    let signals = StopSignals::default();
    let (end, waited) = wait_for_acknowledgement(context(&gateway, true, &signals)).await;
    assert_eq!(end, AckWaitEnd::TimedOut { busy: true });
    assert_eq!(waited, ACK_WAIT_BUSY_MAX);
}

#[tokio::test(start_paused = true)]
async fn a_child_not_running_or_asking_again_without_acknowledging_gets_the_short_wait() {
    let (gateway, client) = served_one().await;
    let signals = StopSignals::default();
    let (end, waited) = wait_for_acknowledgement(context(&gateway, false, &signals)).await;
    assert_eq!(
        (end, waited),
        (AckWaitEnd::TimedOut { busy: false }, ACK_WAIT_MAX)
    );

    // It asks again with the old `since`: the same update again, nothing new to process.
    assert_eq!(fetch(&client, &gateway, Some(0), None).await.len(), 1);
    assert!(!gateway.child_is_processing());
    let (end, waited) = wait_for_acknowledgement(context(&gateway, true, &signals)).await;
    assert_eq!(
        (end, waited),
        (AckWaitEnd::TimedOut { busy: false }, ACK_WAIT_MAX)
    );
}

#[tokio::test(start_paused = true)]
async fn the_acknowledgement_ends_the_wait() {
    let (gateway, client) = served_one().await;
    let signals = StopSignals::default();
    let waiting = wait_for_acknowledgement(context(&gateway, true, &signals));
    let acknowledge = async {
        tokio::time::sleep(Duration::from_secs(8)).await; // a long transcription
        fetch(&client, &gateway, Some(1), None).await
    };
    let ((end, waited), _) = tokio::join!(waiting, acknowledge);
    assert_eq!(end, AckWaitEnd::Acknowledged);
    assert!(
        waited >= Duration::from_secs(8) && waited < ACK_WAIT_BUSY_MAX,
        "{waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_stop_signal_ends_a_handoffs_wait_at_once_but_not_the_shutdowns_own() {
    let (gateway, _client) = served_one().await;
    let signals = StopSignals::default();
    let waiting = wait_for_acknowledgement(context(&gateway, true, &signals));
    let signal = async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        signals.first.cancel();
    };
    let ((end, waited), ()) = tokio::join!(waiting, signal);
    assert_eq!(
        (end, waited),
        (AckWaitEnd::Interrupted, Duration::from_secs(2))
    );

    // The shutdown's own wait (the first signal came before it) goes on to its bound,
    // unless a second signal forces the exit.
    let (end, waited) = wait_for_acknowledgement(context(&gateway, true, &signals)).await;
    assert_eq!(
        (end, waited),
        (AckWaitEnd::TimedOut { busy: true }, ACK_WAIT_BUSY_MAX)
    );
    let waiting = wait_for_acknowledgement(context(&gateway, true, &signals));
    let forced = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        signals.second.cancel();
    };
    let ((end, waited), ()) = tokio::join!(waiting, forced);
    assert_eq!(
        (end, waited),
        (AckWaitEnd::Interrupted, Duration::from_secs(1))
    );
}

/// An announced sleep caps the wait (`runtime::power`: 3/10 of the grace), even while
/// the child processes: the handoff must be published within the sleep's grace.
#[tokio::test(start_paused = true)]
async fn an_announced_sleep_cuts_the_wait_short() {
    let (gateway, _client) = served_one().await;
    assert!(gateway.child_is_processing());
    let cap = Duration::from_millis(1_350);
    let signals = StopSignals {
        sleep_cap: Some(tokio::time::Instant::now() + cap),
        ..StopSignals::default()
    };
    let (end, waited) = wait_for_acknowledgement(context(&gateway, true, &signals)).await;
    assert_eq!(end, AckWaitEnd::SleepNear);
    assert_eq!(waited, cap);

    // A cap beyond the wait's own bound changes nothing.
    let signals = StopSignals {
        sleep_cap: Some(tokio::time::Instant::now() + Duration::from_secs(60)),
        ..StopSignals::default()
    };
    let (end, waited) = wait_for_acknowledgement(context(&gateway, false, &signals)).await;
    assert_eq!(end, AckWaitEnd::TimedOut { busy: false });
    assert_eq!(waited, ACK_WAIT_MAX);
}
