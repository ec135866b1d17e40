//! How long leaving Active waits for the child to acknowledge what it was served.
//!
//! The mirror stores `since` before it processes a batch and acknowledges it with its
//! next request, which it sends only once the batch is processed: a photo download or a
//! voice transcription can take many seconds. Updates served but not acknowledged when
//! the wait ends are delivered again by the next active device, so the wait follows the
//! child ([`wait_for_acknowledgement`]):
//!
//! - acknowledged: done at once;
//! - the child is processing a batch (it runs, it was served updates new to it and has
//!   not asked again since, [`Gateway::child_is_processing`]): up to
//!   [`ACK_WAIT_BUSY_MAX`];
//! - otherwise (it asked again without acknowledging, or it is not running): up to
//!   [`ACK_WAIT_MAX`], as before;
//! - a stop signal that arrives during the wait of a handoff ends it at once (the stop
//!   budget is the shutdown's, see below), and so does a second stop signal (a forced
//!   exit) at any time.
//!
//! The stop budget (`runtime::exit_budget`, below the agent's 40 s `ExitTimeOut`) gives
//! the child's last acknowledgement [`ACK_WAIT_MAX`] and its stop [`CHILD_GRACE`]. The
//! wait may use more only while the child is processing, and what it uses beyond
//! [`ACK_WAIT_MAX`] comes out of the child's grace when the child is stopped next (at
//! exit, or at once with `--child-when-active`; never less than [`CHILD_GRACE_MIN`]):
//! the wait and the child's stop together never exceed their 15 s
//! ([`child_grace_after`]). The wait blocks the run loop; 15 s at most also keeps the
//! last heartbeat fresh for the standbys (50 s lease, 20 s heartbeat, 8 s sync bound).
//!
//! Must never: wait without a bound, or outlast the stop budget.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::adapters::child::ChildState;
use crate::adapters::gateway::{Acknowledged, Gateway};

/// Leaving Active waits this long for the child's acknowledgement when it is not busy.
pub const ACK_WAIT_MAX: Duration = Duration::from_secs(5);
/// The child's grace between SIGTERM and SIGKILL.
pub const CHILD_GRACE: Duration = Duration::from_secs(10);
/// The least grace the child keeps when the wait took some of it.
pub const CHILD_GRACE_MIN: Duration = Duration::from_secs(2);
/// The longest wait, while the child is processing what it was served: the wait and the
/// child's grace share `ACK_WAIT_MAX + CHILD_GRACE`, the child keeping its minimum.
pub const ACK_WAIT_BUSY_MAX: Duration = ACK_WAIT_MAX
    .saturating_add(CHILD_GRACE)
    .saturating_sub(CHILD_GRACE_MIN);
/// While the child is busy, how often its state is looked at again.
const RECHECK: Duration = Duration::from_millis(100);

/// How the wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckWaitEnd {
    Acknowledged,
    /// Not acknowledged within the bound (`busy`: the child was still processing).
    TimedOut {
        busy: bool,
    },
    /// A stop signal arrived during a handoff's wait, or a second one (forced exit).
    Interrupted,
    /// Cut short for an announced sleep ([`StopSignals::sleep_cap`]).
    SleepNear,
}

/// The stop signals as serving sees them. Tokens that never fire by default.
#[derive(Debug, Clone, Default)]
pub struct StopSignals {
    /// Fires at the first SIGTERM/SIGINT: the shutdown.
    pub first: CancellationToken,
    /// Fires at the second: a forced exit.
    pub second: CancellationToken,
    /// The machine announced a sleep: the wait ends by then, whatever the child does, so
    /// that the handoff is published within the sleep's grace (`runtime::power`).
    pub sleep_cap: Option<Instant>,
}

/// What the wait knows about the child and the stop.
pub struct AckWaitContext<'a> {
    pub gateway: &'a Gateway,
    pub acknowledged: watch::Receiver<Acknowledged>,
    /// `None` when baton runs no child.
    pub child: Option<watch::Receiver<ChildState>>,
    /// The first has already fired when this stop is the shutdown's.
    pub signals: StopSignals,
}

/// Waits until the child acknowledged everything it was served (see the module doc for
/// the bounds); returns how it ended and how long it took.
pub async fn wait_for_acknowledgement(context: AckWaitContext<'_>) -> (AckWaitEnd, Duration) {
    let AckWaitContext {
        gateway,
        mut acknowledged,
        child,
        signals,
    } = context;
    let started = Instant::now();
    // A handoff's wait ends at the first stop signal; the shutdown's own wait, at the
    // second.
    let interrupt = if signals.first.is_cancelled() {
        signals.second.clone()
    } else {
        signals.first.clone()
    };
    let end = loop {
        if acknowledged.borrow_and_update().outstanding == 0 {
            break AckWaitEnd::Acknowledged;
        }
        if interrupt.is_cancelled() {
            break AckWaitEnd::Interrupted;
        }
        let running = child.as_ref().is_some_and(|state| state.borrow().running);
        let busy = running && gateway.child_is_processing();
        let bound = if busy {
            ACK_WAIT_BUSY_MAX
        } else {
            ACK_WAIT_MAX
        };
        let deadline = started + bound;
        let now = Instant::now();
        if signals
            .sleep_cap
            .is_some_and(|cap| now >= cap && cap < deadline)
        {
            break AckWaitEnd::SleepNear;
        }
        if now >= deadline {
            break AckWaitEnd::TimedOut { busy };
        }
        let deadline = signals.sleep_cap.map_or(deadline, |cap| cap.min(deadline));
        let look_again = deadline.min(now + RECHECK);
        tokio::select! {
            changed = acknowledged.changed() => if changed.is_err() {
                // The gateway is gone: no acknowledgement will come.
                break AckWaitEnd::TimedOut { busy };
            },
            () = tokio::time::sleep_until(look_again) => {}
            () = interrupt.cancelled() => break AckWaitEnd::Interrupted,
        }
    };
    (end, started.elapsed())
}

/// The child's grace after a wait of `waited`: what the wait used beyond
/// [`ACK_WAIT_MAX`] comes out of [`CHILD_GRACE`], down to [`CHILD_GRACE_MIN`].
pub fn child_grace_after(waited: Duration) -> Duration {
    let borrowed = waited.saturating_sub(ACK_WAIT_MAX);
    CHILD_GRACE.saturating_sub(borrowed).max(CHILD_GRACE_MIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_and_the_childs_grace_share_the_stop_budget() {
        assert_eq!(ACK_WAIT_BUSY_MAX, Duration::from_secs(13));
        for waited_ms in [0, 3_000, 5_000, 9_000, 13_000, 20_000] {
            let waited = Duration::from_millis(waited_ms);
            let grace = child_grace_after(waited);
            assert!(grace >= CHILD_GRACE_MIN && grace <= CHILD_GRACE);
            if waited <= ACK_WAIT_BUSY_MAX {
                assert!(waited.max(ACK_WAIT_MAX) + grace <= ACK_WAIT_MAX + CHILD_GRACE);
            }
        }
        assert_eq!(child_grace_after(Duration::from_secs(1)), CHILD_GRACE);
    }
}
