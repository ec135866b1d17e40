//! macOS: IOKit's system power notifications (objc2-io-kit).
//!
//! Owns: a dedicated thread running a CFRunLoop with the root power domain's
//! notification port (`IORegisterForSystemPower`), and the answers macOS waits for:
//! `kIOMessageCanSystemSleep` (idle sleep pondered) is always allowed at once;
//! `kIOMessageSystemWillSleep` is allowed at once when baton holds nothing, and
//! otherwise when the runtime releases or allows the sleep, or by the run-loop thread
//! itself when the grace ([`MACOS_WILL_SLEEP_LIMIT`] less the margin, 29 s) is spent,
//! whichever comes first; `kIOMessageSystemHasPoweredOn` becomes [`PowerEvent::Woke`].
//! The deadline lives on the run-loop thread, not in tokio, so a wedged runtime cannot
//! hold the Mac awake past it (macOS itself would wait 30 s).
//!
//! Must never: block in the callback (it only records, answers and `try_send`s), answer
//! a notification twice (the pending one is taken under a lock), or answer
//! `kIOMessageSystemHasPoweredOn` (IOKit forbids it). The thread and the registration
//! live until the process ends.

use std::ffi::c_void;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use objc2_core_foundation::{CFRunLoop, kCFRunLoopDefaultMode};
use objc2_io_kit::{
    IOAllowPowerChange, IODeregisterForSystemPower, IONotificationPort, IONotificationPortRef,
    IORegisterForSystemPower, IOServiceClose, io_connect_t, io_object_t, io_service_t,
    kIOMessageCanSystemSleep, kIOMessageSystemHasPoweredOn, kIOMessageSystemWillSleep,
    kIOReturnSuccess,
};
use tokio::sync::{mpsc, oneshot};

use super::api::{
    EVENTS_MAX, MACOS_WILL_SLEEP_LIMIT, PowerEvent, PowerOptions, PowerSupport, Started,
    Unavailable, emit, grace_for,
};

/// How long the run loop waits when no answer is due (it wakes for every notification).
const IDLE_WAIT: Duration = Duration::from_secs(3_600);

/// A `kIOMessageSystemWillSleep` not answered yet.
struct Pending {
    notification_id: isize,
    answer_by: Instant,
}

/// What the callback, the run-loop thread and the handle share.
struct Shared {
    /// The runtime wants sleep delayed (it is active).
    wanted: AtomicBool,
    /// The root power domain connection (`io_connect_t`), set once registered.
    root_port: AtomicU32,
    pending: Mutex<Option<Pending>>,
    events: mpsc::Sender<PowerEvent>,
}

impl Shared {
    fn pending(&self) -> std::sync::MutexGuard<'_, Option<Pending>> {
        // The lock guards plain data: a panic elsewhere leaves it usable.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn allow(&self, notification_id: isize) {
        let root_port: io_connect_t = self.root_port.load(Ordering::Acquire);
        let result = IOAllowPowerChange(root_port, notification_id);
        if result != kIOReturnSuccess {
            tracing::warn!("IOAllowPowerChange failed ({result:#x}): macOS sleeps after 30 s");
        }
    }

    /// Answers the pending `WillSleep`, if any: the Mac may sleep now.
    fn let_go(&self, why: &str) {
        let pending = self.pending().take();
        if let Some(pending) = pending {
            self.allow(pending.notification_id);
            tracing::debug!("allowed the announced sleep: {why}");
        }
    }

    fn will_sleep(&self, notification_id: isize) {
        if !self.wanted.load(Ordering::Acquire) {
            self.allow(notification_id);
            emit(
                &self.events,
                PowerEvent::SleepImminent {
                    grace: Duration::ZERO,
                },
            );
            return;
        }
        let grace = grace_for(MACOS_WILL_SLEEP_LIMIT);
        let earlier = self.pending().replace(Pending {
            notification_id,
            answer_by: Instant::now() + grace,
        });
        if let Some(earlier) = earlier {
            self.allow(earlier.notification_id); // never leave one unanswered
        }
        if !emit(&self.events, PowerEvent::SleepImminent { grace }) {
            self.let_go("nobody listens for power events");
        }
    }

    fn powered_on(&self) {
        // Answered long ago (the Mac slept); drop it without answering twice.
        self.pending().take();
        emit(&self.events, PowerEvent::Woke);
    }

    /// How long the run loop may wait before an answer falls due.
    fn wait(&self) -> Duration {
        self.pending().as_ref().map_or(IDLE_WAIT, |pending| {
            pending.answer_by.saturating_duration_since(Instant::now())
        })
    }

    fn let_go_if_due(&self) {
        let due = self
            .pending()
            .as_ref()
            .is_some_and(|pending| pending.answer_by <= Instant::now());
        if due {
            tracing::warn!(
                "the grace before sleep is spent and the runtime has not let go: letting the \
                 Mac sleep"
            );
            self.let_go("the grace is spent");
        }
    }
}

/// IOKit calls this on the run-loop thread for every system power message.
///
/// # Safety
///
/// `refcon` is the `Arc<Shared>` leaked by [`run_loop`], alive for the whole process.
unsafe extern "C-unwind" fn on_power_message(
    refcon: *mut c_void,
    _service: io_service_t,
    message_type: u32,
    message_argument: *mut c_void,
) {
    // SAFETY: see the function's contract: the pointer came from `Arc::into_raw` and is
    // never released while the registration lives.
    let shared = unsafe { &*(refcon as *const Shared) };
    // For these messages the argument is the notification id, not a pointer.
    let notification_id = message_argument as isize;
    if message_type == kIOMessageCanSystemSleep {
        shared.allow(notification_id); // baton never vetoes an idle sleep
    } else if message_type == kIOMessageSystemWillSleep {
        shared.will_sleep(notification_id);
    } else if message_type == kIOMessageSystemHasPoweredOn {
        shared.powered_on();
    }
}

/// The root power domain registration.
struct Registration {
    root_port: io_connect_t,
    port: NonNull<IONotificationPort>,
    notifier: io_object_t,
}

fn register(refcon: *mut c_void) -> Result<Registration, Unavailable> {
    let mut port: IONotificationPortRef = ptr::null_mut();
    let mut notifier: io_object_t = 0;
    // SAFETY: both out-pointers are valid locals; the callback matches IOKit's signature
    // and only dereferences `refcon`, which the caller keeps alive.
    let root_port = unsafe {
        IORegisterForSystemPower(refcon, &mut port, Some(on_power_message), &mut notifier)
    };
    match NonNull::new(port) {
        Some(port) if root_port != 0 => Ok(Registration {
            root_port,
            port,
            notifier,
        }),
        _ => Err(Unavailable::IoKit {
            reason: "IORegisterForSystemPower refused to register".to_string(),
        }),
    }
}

impl Registration {
    /// Undoes `register`, in the order IOKit asks for.
    fn close(mut self) {
        // SAFETY: the notifier and the port came from a successful registration and are
        // released exactly once, here.
        unsafe {
            IODeregisterForSystemPower(&mut self.notifier);
            IONotificationPort::destroy(self.port.as_ptr());
        }
        IOServiceClose(self.root_port);
    }
}

/// The run-loop thread: registers, reports, then serves notifications and deadlines.
fn run_loop(shared: Arc<Shared>, ready: oneshot::Sender<Result<(), Unavailable>>) {
    // Leaked on purpose: the callback may run for as long as the process lives.
    let refcon = Arc::into_raw(Arc::clone(&shared)) as *mut c_void;
    let registration = match register(refcon) {
        Ok(registration) => registration,
        Err(why) => {
            let _ = ready.send(Err(why));
            return;
        }
    };
    shared
        .root_port
        .store(registration.root_port, Ordering::Release);
    // SAFETY: the port is live (just registered) and never destroyed while this runs.
    let source = unsafe { IONotificationPort::run_loop_source(registration.port.as_ptr()) };
    let (Some(source), Some(run_loop)) = (source, CFRunLoop::current()) else {
        registration.close();
        let _ = ready.send(Err(Unavailable::IoKit {
            reason: "no run-loop source for the notification port".to_string(),
        }));
        return;
    };
    // SAFETY: reading an immutable CoreFoundation constant.
    let mode = unsafe { kCFRunLoopDefaultMode };
    run_loop.add_source(Some(&source), mode);
    let _ = ready.send(Ok(()));
    loop {
        let wait = shared.wait();
        CFRunLoop::run_in_mode(mode, wait.as_secs_f64(), true);
        shared.let_go_if_due();
    }
}

#[derive(Clone)]
pub(super) struct Handle {
    shared: Arc<Shared>,
}

impl Handle {
    pub(super) fn hold(&self) {
        self.shared.wanted.store(true, Ordering::Release);
    }

    pub(super) fn release(&self) {
        self.shared.wanted.store(false, Ordering::Release);
        self.shared.let_go("the runtime released it");
    }

    pub(super) fn allow_sleep(&self) {
        self.shared.let_go("the runtime allowed the sleep");
    }
}

fn detail() -> String {
    format!(
        "IOKit announces sleep; an active device may delay it by up to {:?} to hand over",
        grace_for(MACOS_WILL_SLEEP_LIMIT)
    )
}

pub(super) async fn start(_options: &PowerOptions) -> Result<Started<Handle>, Unavailable> {
    let (events, receiver) = mpsc::channel(EVENTS_MAX);
    let shared = Arc::new(Shared {
        wanted: AtomicBool::new(false),
        root_port: AtomicU32::new(0),
        pending: Mutex::new(None),
        events,
    });
    let (ready, registered) = oneshot::channel();
    let thread_shared = Arc::clone(&shared);
    std::thread::Builder::new()
        .name("baton-power".to_string())
        .spawn(move || run_loop(thread_shared, ready))
        .map_err(|error| Unavailable::IoKit {
            reason: format!("cannot start the run-loop thread: {error}"),
        })?;
    registered.await.map_err(|_| Unavailable::IoKit {
        reason: "the run-loop thread ended early".to_string(),
    })??;
    let detail = detail();
    tracing::info!("sleep announcements: {detail}");
    Ok(Started {
        receiver,
        handle: Handle { shared },
        support: PowerSupport {
            available: true,
            detail,
        },
    })
}

/// Registers and deregisters at once: proves the notifications can be had here.
pub(super) async fn probe(_options: &PowerOptions) -> Result<String, Unavailable> {
    let checked = tokio::task::spawn_blocking(|| {
        // Never called back: the registration is closed before any run loop serves it.
        let (events, _receiver) = mpsc::channel(1);
        let shared = Arc::new(Shared {
            wanted: AtomicBool::new(false),
            root_port: AtomicU32::new(0),
            pending: Mutex::new(None),
            events,
        });
        register(Arc::as_ptr(&shared) as *mut c_void).map(Registration::close)
    })
    .await
    .map_err(|error| Unavailable::IoKit {
        reason: format!("the registration check failed: {error}"),
    })?;
    checked.map(|()| detail())
}
