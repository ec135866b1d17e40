//! Linux: systemd-logind on the system bus.
//!
//! Owns: the D-Bus connection (zbus on our tokio), the subscription to logind's
//! `PrepareForSleep(bool)` signal, and the *delay* inhibitor lock
//! (`Manager.Inhibit("sleep", who, why, "delay")`): a file descriptor that delays sleep
//! while it is open, for at most logind's `InhibitDelayMaxUSec` (default 5 s). One task
//! owns the lock and reconciles it with what the runtime wants (a `watch` of [`Wish`]):
//! taken while wanted and no sleep is under way, closed when no longer wanted, when the
//! runtime allows the sleep, or when the grace is spent; taken again after the wake.
//! Must never: take a lock while a sleep is under way (it would not delay this sleep and
//! would only confuse the next), keep one past the grace, or block (every call is bounded
//! by [`CALL_TIMEOUT`]).

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use zbus::export::futures_core::Stream;
use zbus::proxy::CacheProperties;

use super::api::{
    EVENTS_MAX, INHIBIT_WHY, LOGIND_DEFAULT_LIMIT, PowerEvent, PowerOptions, PowerSupport, Started,
    Unavailable, emit, grace_for,
};

/// Bound on every D-Bus call.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Bound on connecting, finding logind and subscribing, all together.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How soon a lock that logind refused is asked for again.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(30);

const LOGIND_SERVICE: &str = "org.freedesktop.login1";
const LOGIND_PATH: &str = "/org/freedesktop/login1";

#[zbus::proxy(
    interface = "org.freedesktop.login1.Manager",
    default_service = "org.freedesktop.login1",
    default_path = "/org/freedesktop/login1"
)]
trait Manager {
    /// An inhibitor lock: held while the returned descriptor is open.
    fn inhibit(&self, what: &str, who: &str, why: &str, mode: &str) -> zbus::Result<zbus::OwnedFd>;

    /// `true` just before a sleep (delay locks are then waited for), `false` after it.
    #[zbus(signal)]
    fn prepare_for_sleep(&self, start: bool) -> zbus::Result<()>;

    /// How long logind waits for delay locks, in µs.
    #[zbus(property(emits_changed_signal = "const"), name = "InhibitDelayMaxUSec")]
    fn inhibit_delay_max_usec(&self) -> zbus::Result<u64>;
}

/// What the runtime wants, as the handle publishes it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Wish {
    /// Delay sleep for us (we are active).
    hold: bool,
    /// Bumped by every `allow_sleep`; a change during an announced sleep lets it go on.
    allowed: u64,
}

#[derive(Clone)]
pub(super) struct Handle {
    wish: Arc<watch::Sender<Wish>>,
}

impl Handle {
    pub(super) fn hold(&self) {
        self.wish
            .send_if_modified(|wish| !std::mem::replace(&mut wish.hold, true));
    }

    pub(super) fn release(&self) {
        self.wish
            .send_if_modified(|wish| std::mem::replace(&mut wish.hold, false));
    }

    pub(super) fn allow_sleep(&self) {
        // Only compared for equality: wrapping after 2^64 calls changes nothing.
        self.wish
            .send_modify(|wish| wish.allowed = wish.allowed.wrapping_add(1));
    }
}

/// A live subscription to logind.
struct Link {
    manager: ManagerProxy<'static>,
    signals: PrepareForSleepStream,
    os_limit: Duration,
    bus: String,
}

impl Link {
    fn detail(&self) -> String {
        format!(
            "systemd-logind on {} announces sleep; an active device may delay it by up to \
             {:?} to hand over",
            self.bus,
            grace_for(self.os_limit)
        )
    }
}

/// Connects, finds logind, subscribes to `PrepareForSleep` (before anything else, so no
/// announcement is missed) and reads the delay limit, within [`CONNECT_TIMEOUT`].
async fn connect(options: &PowerOptions) -> Result<Link, Unavailable> {
    let (builder, bus) = match &options.system_bus_address {
        Some(address) => (
            zbus::connection::Builder::address(address.as_str()),
            format!("the D-Bus at {address}"),
        ),
        None => (
            zbus::connection::Builder::system(),
            "the system bus".to_string(),
        ),
    };
    let silent = Unavailable::BusSilent {
        bus: bus.clone(),
        timeout: CONNECT_TIMEOUT,
    };
    tokio::time::timeout(CONNECT_TIMEOUT, subscribe(builder, bus))
        .await
        .map_err(|_| silent)?
}

async fn subscribe(
    builder: zbus::connection::Builder<'_>,
    bus: String,
) -> Result<Link, Unavailable> {
    let connection = builder
        .method_timeout(CALL_TIMEOUT)
        .build()
        .await
        .map_err(|error| Unavailable::NoBus {
            bus: bus.clone(),
            reason: error.to_string(),
        })?;
    let not_found = |error: zbus::Error| Unavailable::NoLogind {
        bus: bus.clone(),
        reason: error.to_string(),
    };
    zbus::fdo::PeerProxy::builder(&connection)
        .destination(LOGIND_SERVICE)
        .path(LOGIND_PATH)
        .build()
        .await
        .map_err(not_found)?
        .ping()
        .await
        .map_err(not_found)?;
    let manager = ManagerProxy::builder(&connection)
        .cache_properties(CacheProperties::No)
        .build()
        .await
        .map_err(not_found)?;
    let signals =
        manager
            .receive_prepare_for_sleep()
            .await
            .map_err(|error| Unavailable::NoSubscription {
                bus: bus.clone(),
                reason: error.to_string(),
            })?;
    let os_limit = match manager.inhibit_delay_max_usec().await {
        Ok(usec) => Duration::from_micros(usec),
        Err(error) => {
            tracing::debug!(
                "logind's InhibitDelayMaxUSec unreadable ({error}): assuming {LOGIND_DEFAULT_LIMIT:?}"
            );
            LOGIND_DEFAULT_LIMIT
        }
    };
    Ok(Link {
        manager,
        signals,
        os_limit,
        bus,
    })
}

pub(super) async fn probe(options: &PowerOptions) -> Result<String, Unavailable> {
    connect(options).await.map(|link| link.detail())
}

pub(super) async fn start(options: &PowerOptions) -> Result<Started<Handle>, Unavailable> {
    let link = connect(options).await?;
    let detail = link.detail();
    tracing::info!("sleep announcements: {detail}");
    let (events, receiver) = mpsc::channel(EVENTS_MAX);
    let (wish, wishes) = watch::channel(Wish::default());
    let actor = Actor {
        manager: link.manager,
        who: options.who.clone(),
        os_limit: link.os_limit,
        lock: None,
        sleep: None,
        retry_at: None,
        events,
    };
    tokio::spawn(actor.run(link.signals, wishes));
    Ok(Started {
        receiver,
        handle: Handle {
            wish: Arc::new(wish),
        },
        support: PowerSupport {
            available: true,
            detail,
        },
    })
}

/// An announced sleep that has not ended yet.
struct Announced {
    /// `Wish::allowed` when it was announced: a later change allows this sleep.
    allowed_at_announce: u64,
    /// When the lock is closed by itself; `None` once let go (or never held).
    let_go_at: Option<Instant>,
}

/// The task that owns the lock.
struct Actor {
    manager: ManagerProxy<'static>,
    who: String,
    os_limit: Duration,
    lock: Option<zbus::OwnedFd>,
    sleep: Option<Announced>,
    retry_at: Option<Instant>,
    events: mpsc::Sender<PowerEvent>,
}

impl Actor {
    async fn run(mut self, mut signals: PrepareForSleepStream, mut wishes: watch::Receiver<Wish>) {
        loop {
            let let_go_at = self.sleep.as_ref().and_then(|sleep| sleep.let_go_at);
            tokio::select! {
                signal = next_signal(&mut signals) => {
                    let Some(signal) = signal else {
                        tracing::warn!(
                            "logind's PrepareForSleep signals stopped (the bus went away): \
                             sleep is no longer announced to baton"
                        );
                        break;
                    };
                    let wish = *wishes.borrow();
                    match signal.args() {
                        Ok(args) if args.start => self.sleep_announced(wish),
                        Ok(_) => self.woke(wish).await,
                        Err(error) => tracing::warn!("unreadable PrepareForSleep signal: {error}"),
                    }
                }
                changed = wishes.changed() => {
                    if changed.is_err() {
                        break; // every handle is gone: nobody can ask for anything any more
                    }
                    let wish = *wishes.borrow_and_update();
                    self.reconcile(wish).await;
                }
                () = sleep_until(let_go_at) => self.grace_spent(),
                () = sleep_until(self.retry_at) => {
                    self.retry_at = None;
                    let wish = *wishes.borrow();
                    self.reconcile(wish).await;
                }
            }
        }
        self.let_go("the power adapter stopped");
    }

    fn sleep_announced(&mut self, wish: Wish) {
        let held = self.lock.is_some();
        let grace = if held {
            grace_for(self.os_limit)
        } else {
            Duration::ZERO
        };
        if held {
            tracing::info!("sleep announced: {grace:?} to hand over before it");
        } else {
            tracing::info!("sleep announced; baton holds nothing, so it does not wait");
        }
        self.sleep = Some(Announced {
            allowed_at_announce: wish.allowed,
            let_go_at: held.then(|| Instant::now() + grace),
        });
        if !emit(&self.events, PowerEvent::SleepImminent { grace }) {
            self.let_go("nobody listens for power events");
        }
    }

    async fn woke(&mut self, wish: Wish) {
        self.sleep = None;
        tracing::info!("awake after an announced sleep");
        // Take the lock again before saying so: whoever hears `Woke` sees it held.
        self.reconcile(wish).await;
        emit(&self.events, PowerEvent::Woke);
    }

    /// Brings the lock in line with the wish.
    async fn reconcile(&mut self, wish: Wish) {
        match &self.sleep {
            Some(announced) => {
                if !wish.hold {
                    self.let_go("the runtime released it");
                } else if wish.allowed != announced.allowed_at_announce {
                    self.let_go("the runtime allowed the sleep");
                }
            }
            None if wish.hold && self.lock.is_none() => self.take().await,
            None if !wish.hold => self.let_go("the runtime released it"),
            None => {}
        }
    }

    async fn take(&mut self) {
        match self
            .manager
            .inhibit("sleep", &self.who, INHIBIT_WHY, "delay")
            .await
        {
            Ok(lock) => {
                tracing::debug!("holding a logind delay lock on sleep");
                self.lock = Some(lock);
                self.retry_at = None;
            }
            Err(error) => {
                tracing::warn!(
                    "logind refused a delay lock ({error}): a sleep will not wait for a \
                     handoff; asking again in {RETRY_INTERVAL:?}"
                );
                self.retry_at = Some(Instant::now() + RETRY_INTERVAL);
            }
        }
    }

    fn grace_spent(&mut self) {
        tracing::warn!(
            "the grace before sleep is spent and the runtime has not let go: letting the \
             machine sleep"
        );
        self.let_go("the grace is spent");
    }

    /// Closes the lock (if held): logind then goes on with a sleep under way.
    fn let_go(&mut self, why: &str) {
        if let Some(announced) = self.sleep.as_mut() {
            announced.let_go_at = None;
        }
        if self.lock.take().is_some() {
            tracing::debug!("closed the logind delay lock: {why}");
        }
    }
}

async fn next_signal<S: Stream + Unpin>(stream: &mut S) -> Option<S::Item> {
    poll_fn(|context| Pin::new(&mut *stream).poll_next(context)).await
}

/// Sleeps until `at`, or forever when there is nothing to wait for.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
