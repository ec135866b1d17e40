//! Serving: what "acting as the active device" means for this run.
//!
//! Owns: starting and stopping whatever serves the bot when the core says so — with no
//! Telegram configured, only a log line; with Telegram, the poller, the gateway and the
//! child (see `adapters::telegram`, `adapters::gateway`, `adapters::child`). Must never:
//! poll Telegram unless started and not paused, or decide a role.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::core::election::DeviceRow;
use crate::core::{ActivationOutcome, Event};

/// What serving tells the runtime.
pub enum ServingEvent {
    /// An input for the core (a handled update, a 409, a foreign chat).
    Core(Event),
    /// `/activate` from Telegram; the answer comes back through `activation_result`.
    Activate { target: String, ticket: u64 },
    /// `/devices` wants the current table.
    TableAsked {
        reply: oneshot::Sender<Vec<DeviceRow>>,
    },
}

pub struct Serving {
    events_rx: mpsc::Receiver<ServingEvent>,
    _events_tx: mpsc::Sender<ServingEvent>,
    acting: bool,
}

impl Serving {
    /// Coordination only: acting is a log line.
    pub fn coordination_only() -> Self {
        let (tx, rx) = mpsc::channel(64);
        Serving {
            events_rx: rx,
            _events_tx: tx,
            acting: false,
        }
    }

    pub async fn next_event(&mut self) -> Option<ServingEvent> {
        self.events_rx.recv().await
    }

    pub async fn start(&mut self, term: u64, _skip_through: Option<i64>, _table: Vec<DeviceRow>) {
        self.acting = true;
        tracing::info!(term, "ACTIVE: this device serves the bot");
    }

    /// Stops serving; returns the last update id handled (and confirmed).
    pub async fn stop(&mut self, reason: &str) -> Option<i64> {
        if self.acting {
            tracing::info!(reason, "no longer serving the bot");
        }
        self.acting = false;
        None
    }

    pub fn pause(&mut self, duration: Duration) {
        tracing::debug!(?duration, "pausing");
    }

    pub async fn activation_result(&mut self, ticket: u64, result: &ActivationOutcome) {
        tracing::info!(ticket, ?result, "activation result");
    }

    pub async fn shutdown(&mut self) {
        self.stop("shutting down").await;
    }
}
