//! Sleep announcements in the run loop: the power adapter's events turned into core
//! inputs, and the core's word on sleep turned into the adapter's calls.
//!
//! Owns: taking up the adapter when it is ready (`mod.rs` starts it on its own task,
//! so that a silent bus never holds up the loop), the delay inhibitor held while this device
//! serves the bot (`StartActing` holds it; `StopActing` releases it, except while an
//! announced sleep's handoff is under way, when the release waits for `AllowSleep`), the
//! announcement fed as `Event::SleepAnnounced` with the child's acknowledgement wait
//! capped to a share of the grace, `Effect::AllowSleep` carried out (release, or let
//! this one sleep happen while keeping the role), and the wake taken as a hint to look
//! again.
//!
//! Must never: block the loop on the adapter, delay a sleep past its grace (the adapter
//! lets go by itself at the grace's end; nothing here waits for the OS), or decide a
//! role.

use std::time::Duration;

use tokio::time::Instant;

use crate::adapters::power::{self, Power, PowerEvent};
use crate::core::{Event, Role};

use super::Runtime;

/// The share of an announced sleep's grace that stopping may spend on the child's last
/// acknowledgements, in tenths: the rest is for publishing the handoff and seeing the
/// successor's claim (logind's default 5 s gives 4.5 s of grace, of which 1.35 s).
const ACK_WAIT_SHARE_TENTHS: u32 = 3;

/// The cap on the acknowledgement wait of a stop made for a sleep with `grace`.
pub(super) fn ack_wait_for_sleep(grace: Duration) -> Duration {
    grace * ACK_WAIT_SHARE_TENTHS / 10
}

impl Runtime {
    /// The adapter is ready: keep its handle, and hold the lock if already serving.
    pub(super) fn power_started(&mut self, power: Power) -> power::PowerEvents {
        tracing::debug!(parent: &self.span, available = power.support.available, detail = %power.support.detail, "sleep announcements");
        self.power = power.handle;
        if self.role == Role::Active {
            self.power.hold_inhibitor();
        }
        power.events
    }

    pub(super) async fn on_power(&mut self, event: PowerEvent) {
        match event {
            PowerEvent::SleepImminent { grace } => {
                tracing::info!(parent: &self.span, grace_ms = grace.as_millis() as u64, "the machine is about to sleep");
                let now = Instant::now();
                self.sleep_announced_until = Some(now + grace);
                self.serving
                    .note_sleep_announced(Some(now + ack_wait_for_sleep(grace)));
                self.feed(Event::SleepAnnounced {
                    grace_ms: grace.as_millis().min(u128::from(u64::MAX)) as u64,
                })
                .await;
            }
            PowerEvent::Woke => {
                tracing::info!(parent: &self.span, "the machine is awake again: re-reading the folder");
                self.sleep_announced_until = None;
                self.serving.note_sleep_announced(None);
                // A handoff whose grace ran out left the lock to be taken again after the
                // wake; a device that is not serving does not want it.
                if self.role != Role::Active {
                    self.power.release();
                }
                // The clocks still decide whether (and how long) it slept: the next
                // input checks them. The listing is the re-check.
                self.rescan_pending = true;
            }
        }
    }

    /// `StartActing`: delay sleep for us, so that we can hand over first.
    pub(super) fn hold_sleep_for_acting(&mut self) {
        self.power.hold_inhibitor();
    }

    /// `StopActing` (after serving stopped): no longer delay sleep for us, unless an
    /// announced sleep's handoff is under way: the sleep must wait for its publication
    /// (the core says `AllowSleep` when the claim is seen; the grace bounds the wait).
    pub(super) fn release_sleep_after_acting(&mut self) {
        let handing_over = self
            .sleep_announced_until
            .is_some_and(|until| Instant::now() < until);
        if !handing_over {
            self.power.release();
        }
    }

    /// `AllowSleep`: done with this sleep.
    pub(super) fn allow_sleep(&mut self, reason: &str) {
        self.serving.note_sleep_announced(None);
        if self.role == Role::Active {
            tracing::info!(parent: &self.span, %reason, "letting the machine sleep, keeping the role");
            self.power.allow_sleep();
        } else {
            tracing::info!(parent: &self.span, %reason, "letting the machine sleep");
            self.power.release();
        }
        self.sleep_announced_until = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_acknowledgement_wait_leaves_most_of_the_grace_for_the_handoff() {
        assert_eq!(
            ack_wait_for_sleep(Duration::from_millis(4_500)),
            Duration::from_millis(1_350)
        );
        assert_eq!(
            ack_wait_for_sleep(Duration::from_secs(29)),
            Duration::from_millis(8_700)
        );
        assert_eq!(ack_wait_for_sleep(Duration::ZERO), Duration::ZERO);
    }
}
