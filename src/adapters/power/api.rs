//! The power adapter's vocabulary, shared by the OS back ends (`logind`, `iokit`) and
//! the adapter's face (`power`): events, options, what was found, the limits, and what
//! a back end hands over when it started.
//!
//! Owns: the types and constants every part of the adapter names. A leaf: it names
//! neither the back ends nor the adapter's face, so the module graph stays acyclic.
//! Must never: do IO.

use std::time::Duration;

use tokio::sync::mpsc;

/// What the adapter tells the runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerEvent {
    /// The machine is about to sleep. `grace` is how long the runtime has, counted from
    /// when this event was raised, before the adapter lets the machine sleep by itself:
    /// the OS's own limit less a safety margin ([`grace_for`]). It is zero when baton
    /// held nothing (not active), because then the machine does not wait for baton.
    SleepImminent { grace: Duration },
    /// The machine is awake again (or the announced sleep did not happen).
    Woke,
}

/// Whether sleep announcements can be heard on this machine, and why (for `baton
/// doctor` and the log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PowerSupport {
    pub available: bool,
    /// One sentence for a person: what was found, or what is missing.
    pub detail: String,
}

/// Where to listen. The default is this machine's own: the system bus named by
/// `DBUS_SYSTEM_BUS_ADDRESS`, else `/var/run/dbus/system_bus_socket` (Linux); IOKit's
/// root power domain (macOS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PowerOptions {
    /// A D-Bus address to use instead of the system bus (tests point it at a private
    /// bus). Linux only; ignored elsewhere.
    pub system_bus_address: Option<String>,
    /// Who holds the lock, as `systemd-inhibit --list` shows it.
    pub who: String,
}

impl Default for PowerOptions {
    fn default() -> Self {
        PowerOptions {
            system_bus_address: None,
            who: "baton (mirror-baton)".to_string(),
        }
    }
}

/// Why the lock is held, as `systemd-inhibit --list` shows it.
pub const INHIBIT_WHY: &str = "hands the Telegram bot to another device before sleeping";

/// Bound on events waiting for the runtime.
pub const EVENTS_MAX: usize = 16;

/// The largest OS limit believed. logind's `InhibitDelayMaxUSec` is configuration, so
/// untrusted input: an absurd value must not let baton hold a machine awake for hours.
pub const OS_LIMIT_MAX: Duration = Duration::from_secs(60);

/// logind's documented default for `InhibitDelayMaxUSec` (logind.conf(5)), used when
/// the property cannot be read.
pub const LOGIND_DEFAULT_LIMIT: Duration = Duration::from_secs(5);

/// macOS waits this long for an answer to `kIOMessageSystemWillSleep`, then sleeps
/// anyway (IOKit's `IORegisterForSystemPower` documentation: "the sleep will continue
/// anyway after a 30 second timeout").
pub const MACOS_WILL_SLEEP_LIMIT: Duration = Duration::from_secs(30);

/// The grace the runtime gets when the OS waits at most `os_limit`: the limit (capped at
/// [`OS_LIMIT_MAX`]) less a margin of a tenth of it, at most 1 s, so that the adapter
/// always lets go before the OS gives up on it (5 s → 4.5 s; 30 s → 29 s).
pub fn grace_for(os_limit: Duration) -> Duration {
    let limit = os_limit.min(OS_LIMIT_MAX);
    let margin = (limit / 10).min(Duration::from_secs(1));
    limit.saturating_sub(margin)
}

/// Why sleep announcements cannot be heard here. Each says what is missing; none is an
/// error for `baton run`, which goes on without announcements.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unavailable {
    #[error("{bus} did not answer within {timeout:?}")]
    BusSilent { bus: String, timeout: Duration },
    #[error("no connection to {bus}: {reason}")]
    NoBus { bus: String, reason: String },
    #[error("systemd-logind is not on {bus}: {reason}")]
    NoLogind { bus: String, reason: String },
    #[error("cannot subscribe to logind's PrepareForSleep on {bus}: {reason}")]
    NoSubscription { bus: String, reason: String },
    #[error("IOKit gives no sleep notices: {reason}")]
    IoKit { reason: String },
    #[error("sleep announcements are not implemented on this operating system")]
    UnsupportedOs,
}

/// What a back end hands the adapter's face when it started: the receiving end of its
/// events, its own handle, and what it found.
pub struct Started<H> {
    pub receiver: mpsc::Receiver<PowerEvent>,
    pub handle: H,
    pub support: PowerSupport,
}

/// Sends an event without waiting; a full channel drops it (see the drop policy above).
/// False when nobody listens any more.
pub fn emit(events: &mpsc::Sender<PowerEvent>, event: PowerEvent) -> bool {
    match events.try_send(event) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Full(event)) => {
            tracing::warn!("power event dropped, {EVENTS_MAX} already waiting: {event:?}");
            true
        }
        Err(mpsc::error::TrySendError::Closed(_)) => false,
    }
}
