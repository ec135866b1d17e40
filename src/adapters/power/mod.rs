//! Power: the operating system's sleep announcements, turned into the program's own
//! [`PowerEvent`]s, and the one lever baton has over sleep, a [`PowerHandle`].
//!
//! Owns: listening for "the machine is about to sleep" and "the machine is awake again"
//! (systemd-logind's `PrepareForSleep` signal on the system bus on Linux, IOKit's system
//! power notifications on macOS), delaying sleep while the runtime wants it (a logind
//! *delay* inhibitor lock; an unanswered `kIOMessageSystemWillSleep`), letting the
//! machine sleep when the runtime says so or when the grace is nearly spent, and saying
//! whether any of this works on this machine ([`probe`], [`Power::support`]).
//!
//! Must never: delay a sleep past the grace it announced (a stuck runtime must not hold
//! a laptop awake in a bag: the adapter lets go by itself at the deadline, on macOS from
//! its own run-loop thread, independent of tokio); block IOKit's run loop or the tokio
//! run loop; veto a sleep (`kIOMessageCanSystemSleep` is always allowed); decide
//! anything about the election (the runtime and the core do); fail `baton run` when
//! sleep announcements are unavailable (no system bus, no logind, another OS): it then
//! says so once, at info level, and yields no events, and baton fails over by lease as
//! before.
//!
//! # How the runtime uses it
//!
//! 1. [`start`] once; keep the [`Power`]. Poll [`PowerEvents::next`] in the run loop's
//!    `select!` (it never resolves when nothing can be heard).
//! 2. On entering Active: [`PowerHandle::hold_inhibitor`]. On leaving it:
//!    [`PowerHandle::release`]. Holding is what buys the grace: while nothing is held,
//!    a sleep is announced with a grace of zero and the machine does not wait.
//! 3. On [`PowerEvent::SleepImminent`] `{ grace }`: hand over (or decide to keep the
//!    role), then either [`PowerHandle::release`] (no longer active) or
//!    [`PowerHandle::allow_sleep`] (still active: let this sleep happen, hold again after
//!    the wake). Whatever is not done within `grace` is cut short: the adapter lets the
//!    machine sleep by itself then.
//! 4. On [`PowerEvent::Woke`]: the hold is taken again by itself if still wanted. The
//!    runtime's own sleep detection (the two clocks) still applies: a machine may sleep
//!    without announcing it.
//!
//! Drop policy: events wait in a bounded channel of [`EVENTS_MAX`]; when it is full an
//! event is dropped with a warning. Nothing is lost that matters for safety: a dropped
//! announcement still ends at the deadline, and a dropped wake is still noticed by the
//! clocks.

use tokio::sync::mpsc;

mod api;
#[cfg(target_os = "macos")]
mod iokit;
#[cfg(target_os = "linux")]
mod logind;

pub use api::{
    EVENTS_MAX, INHIBIT_WHY, LOGIND_DEFAULT_LIMIT, MACOS_WILL_SLEEP_LIMIT, OS_LIMIT_MAX,
    PowerEvent, PowerOptions, PowerSupport, Unavailable, grace_for,
};

/// The adapter, started: its events, the handle, and what was found.
pub struct Power {
    pub events: PowerEvents,
    pub handle: PowerHandle,
    pub support: PowerSupport,
}

/// Starts listening. Never fails: when sleep announcements cannot be heard it logs so
/// once, at info level, and returns events that never come and a handle whose calls do
/// nothing. Bounded: it gives up on a bus that does not answer within 10 s. Call it
/// once per process.
pub async fn start(options: &PowerOptions) -> Power {
    #[cfg(target_os = "linux")]
    let started = logind::start(options).await.map(|started| Power {
        events: PowerEvents::new(started.receiver),
        handle: PowerHandle {
            inner: HandleInner::Logind(started.handle),
        },
        support: started.support,
    });
    #[cfg(target_os = "macos")]
    let started = iokit::start(options).await.map(|started| Power {
        events: PowerEvents::new(started.receiver),
        handle: PowerHandle {
            inner: HandleInner::IoKit(started.handle),
        },
        support: started.support,
    });
    #[cfg(not(any(target_os = "linux", target_os = "macos")))]
    let started: Result<Power, Unavailable> = {
        let _ = options;
        Err(Unavailable::UnsupportedOs)
    };
    started.unwrap_or_else(|unavailable| {
        let detail = unavailable.to_string();
        tracing::info!(
            "sleep announcements unavailable ({detail}): if this machine sleeps while \
             active, another device takes over when its lease runs out"
        );
        Power {
            events: PowerEvents::silent(),
            handle: PowerHandle::inert(),
            support: PowerSupport {
                available: false,
                detail,
            },
        }
    })
}

/// Says whether sleep announcements can be heard here, without keeping anything: for
/// `baton doctor`. Bounded like [`start`].
pub async fn probe(options: &PowerOptions) -> PowerSupport {
    #[cfg(target_os = "linux")]
    let found = logind::probe(options).await;
    #[cfg(target_os = "macos")]
    let found = iokit::probe(options).await;
    #[cfg(not(any(target_os = "linux", target_os = "macos")))]
    let found: Result<String, Unavailable> = {
        let _ = options;
        Err(Unavailable::UnsupportedOs)
    };
    match found {
        Ok(detail) => PowerSupport {
            available: true,
            detail,
        },
        Err(unavailable) => PowerSupport {
            available: false,
            detail: unavailable.to_string(),
        },
    }
}

/// The stream of [`PowerEvent`]s.
pub struct PowerEvents {
    receiver: Option<mpsc::Receiver<PowerEvent>>,
}

impl PowerEvents {
    fn silent() -> Self {
        PowerEvents { receiver: None }
    }

    fn new(receiver: mpsc::Receiver<PowerEvent>) -> Self {
        PowerEvents {
            receiver: Some(receiver),
        }
    }

    /// The next event. Never resolves when nothing can be heard (no announcements here,
    /// or the OS side went away), so it can sit in a `select!` without spinning.
    pub async fn next(&mut self) -> PowerEvent {
        if let Some(receiver) = self.receiver.as_mut() {
            if let Some(event) = receiver.recv().await {
                return event;
            }
            self.receiver = None;
        }
        std::future::pending().await
    }
}

/// The runtime's lever over sleep. Cheap to clone; every call returns at once (the work
/// happens on the adapter's own task or thread). On a machine without announcements
/// every call does nothing.
#[derive(Clone)]
pub struct PowerHandle {
    inner: HandleInner,
}

#[derive(Clone)]
enum HandleInner {
    Inert,
    #[cfg(target_os = "linux")]
    Logind(logind::Handle),
    #[cfg(target_os = "macos")]
    IoKit(iokit::Handle),
}

impl PowerHandle {
    fn inert() -> Self {
        PowerHandle {
            inner: HandleInner::Inert,
        }
    }

    /// "I am active: delay sleep for me, so that I can hand over." Call on entering
    /// Active. Takes the logind delay lock now (or, during an announced sleep, after the
    /// wake); on macOS, the next `kIOMessageSystemWillSleep` is held for the grace.
    pub fn hold_inhibitor(&self) {
        match &self.inner {
            HandleInner::Inert => {}
            #[cfg(target_os = "linux")]
            HandleInner::Logind(handle) => handle.hold(),
            #[cfg(target_os = "macos")]
            HandleInner::IoKit(handle) => handle.hold(),
        }
    }

    /// "I am not active: do not delay sleep for me." Call on leaving Active, including
    /// after a handoff made because of a [`PowerEvent::SleepImminent`]: it also lets an
    /// announced sleep go on at once. Not taken again after the wake.
    pub fn release(&self) {
        match &self.inner {
            HandleInner::Inert => {}
            #[cfg(target_os = "linux")]
            HandleInner::Logind(handle) => handle.release(),
            #[cfg(target_os = "macos")]
            HandleInner::IoKit(handle) => handle.release(),
        }
    }

    /// "I am done with this sleep: let the machine sleep now." For an active device that
    /// stays active (no live standby to hand to). Does nothing outside an announced
    /// sleep; the hold is taken again after the wake.
    pub fn allow_sleep(&self) {
        match &self.inner {
            HandleInner::Inert => {}
            #[cfg(target_os = "linux")]
            HandleInner::Logind(handle) => handle.allow_sleep(),
            #[cfg(target_os = "macos")]
            HandleInner::IoKit(handle) => handle.allow_sleep(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::api::emit;
    use super::*;

    #[test]
    fn grace_leaves_a_margin_below_the_os_limit() {
        assert_eq!(
            grace_for(Duration::from_secs(5)),
            Duration::from_millis(4_500)
        );
        assert_eq!(grace_for(Duration::from_secs(30)), Duration::from_secs(29));
        assert_eq!(
            grace_for(Duration::from_millis(300)),
            Duration::from_millis(270)
        );
        assert_eq!(grace_for(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn an_absurd_os_limit_is_capped() {
        assert_eq!(grace_for(Duration::MAX), Duration::from_secs(59));
        assert_eq!(
            grace_for(Duration::from_secs(3_600)),
            Duration::from_secs(59)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn silent_events_never_resolve() {
        let mut events = PowerEvents::silent();
        let waited = tokio::time::timeout(Duration::from_secs(3_600), events.next()).await;
        assert!(waited.is_err(), "a silent stream yielded {waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_closed_stream_goes_silent_instead_of_spinning() {
        let (sender, receiver) = mpsc::channel(EVENTS_MAX);
        let mut events = PowerEvents::new(receiver);
        assert!(emit(&sender, PowerEvent::Woke));
        drop(sender);
        assert_eq!(events.next().await, PowerEvent::Woke);
        let waited = tokio::time::timeout(Duration::from_secs(3_600), events.next()).await;
        assert!(waited.is_err(), "a closed stream yielded {waited:?}");
    }
}
