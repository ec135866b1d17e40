//! The power adapter over a real D-Bus, with a mocked systemd-logind: a private
//! `dbus-daemon` per test, python-dbusmock's `logind` template on it (a real third-party
//! mock: its `Inhibit` hands out the write end of a pipe and drops the inhibitor from
//! `ListInhibitors` when every copy is closed), and the adapter pointed at that bus.
//!
//! Shown: the delay lock is taken when the runtime holds, `PrepareForSleep(true)` becomes
//! `SleepImminent` with the grace logind's `InhibitDelayMaxUSec` allows (zero when
//! nothing is held), the lock is closed when the runtime allows the sleep, releases, or
//! when the grace is spent, it is taken again after `PrepareForSleep(false)` if still
//! wanted, and with no bus (or no logind on it) the adapter says so once and yields
//! nothing.
//!
//! Needs: `dbus-daemon` and a Python that imports `dbusmock` (Debian: `apt-get install
//! dbus-daemon python3-dbusmock`; `.ci/run` installs them; `BATON_DBUSMOCK_PYTHON` names
//! another Python). Without them the tests say loudly that they did not run; with
//! `CI=true` that is a failure.

#[cfg(not(target_os = "linux"))]
#[test]
fn logind_tests_need_linux() {
    use std::io::Write;
    // Straight to the process's stderr: the harness hides `eprintln!` of a passing test.
    let _ = writeln!(
        std::io::stderr(),
        "\n*** power_logind: NOT RUN: systemd-logind is Linux-only; on macOS the power \
         adapter is only type-checked (scripts/check-macos) ***\n"
    );
}

#[cfg(target_os = "linux")]
#[path = "common/logind.rs"]
mod logind_bus;

#[cfg(target_os = "linux")]
mod linux {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use mirror_baton::adapters::power::{self, Power, PowerEvent, PowerOptions, PowerSupport};

    use super::logind_bus::{Bus, LONG_DELAY, PATIENCE, WHO, have_dbus_daemon, logind, not_run};

    async fn next_event(power: &mut Power) -> PowerEvent {
        tokio::time::timeout(PATIENCE, power.events.next())
            .await
            .expect("a power event within the patience")
    }

    #[tokio::test]
    async fn holds_while_active_announces_the_grace_and_lets_go_when_allowed() {
        let test = "power_logind::holds_while_active_announces_the_grace_and_lets_go_when_allowed";
        let Some((bus, logind)) = logind(test, Some(LONG_DELAY)).await else {
            return;
        };
        let mut power = power::start(&bus.options()).await;
        assert!(power.support.available, "{:?}", power.support);
        assert!(
            logind.inhibitors().await.is_empty(),
            "nothing held before asked"
        );

        power.handle.hold_inhibitor();
        logind.wait_for_lock(true).await;

        logind.prepare_for_sleep(true).await;
        assert_eq!(
            next_event(&mut power).await,
            PowerEvent::SleepImminent {
                grace: Duration::from_secs(49) // 50 s less the 1 s margin
            }
        );
        assert!(
            logind.is_held(&logind.inhibitors().await),
            "the lock is kept until the runtime lets go"
        );
        power.handle.allow_sleep();
        logind.wait_for_lock(false).await;

        logind.prepare_for_sleep(false).await;
        assert_eq!(next_event(&mut power).await, PowerEvent::Woke);
        assert!(
            logind.is_held(&logind.inhibitors().await),
            "still active: the lock is taken again before Woke is told"
        );

        power.handle.release();
        logind.wait_for_lock(false).await;
        logind.prepare_for_sleep(true).await;
        assert_eq!(
            next_event(&mut power).await,
            PowerEvent::SleepImminent {
                grace: Duration::ZERO
            },
            "holding nothing, baton has no grace"
        );
        logind.prepare_for_sleep(false).await;
        assert_eq!(next_event(&mut power).await, PowerEvent::Woke);
        assert!(
            logind.inhibitors().await.is_empty(),
            "released: not taken again after the wake"
        );
    }

    #[tokio::test]
    async fn a_release_during_the_sleep_lets_it_go_and_holds_nothing_after_the_wake() {
        let test =
            "power_logind::a_release_during_the_sleep_lets_it_go_and_holds_nothing_after_the_wake";
        let Some((bus, logind)) = logind(test, Some(LONG_DELAY)).await else {
            return;
        };
        let mut power = power::start(&bus.options()).await;
        power.handle.hold_inhibitor();
        logind.wait_for_lock(true).await;
        logind.prepare_for_sleep(true).await;
        assert!(matches!(
            next_event(&mut power).await,
            PowerEvent::SleepImminent { .. }
        ));

        power.handle.release(); // handed over: no longer active
        logind.wait_for_lock(false).await;
        logind.prepare_for_sleep(false).await;
        assert_eq!(next_event(&mut power).await, PowerEvent::Woke);
        assert!(logind.inhibitors().await.is_empty());

        power.handle.hold_inhibitor(); // active again later
        logind.wait_for_lock(true).await;
    }

    #[tokio::test]
    async fn lets_the_machine_sleep_by_itself_when_the_grace_is_spent() {
        let test = "power_logind::lets_the_machine_sleep_by_itself_when_the_grace_is_spent";
        let Some((bus, logind)) = logind(test, Some(Duration::from_secs(1))).await else {
            return;
        };
        let mut power = power::start(&bus.options()).await;
        power.handle.hold_inhibitor();
        logind.wait_for_lock(true).await;
        logind.prepare_for_sleep(true).await;
        assert_eq!(
            next_event(&mut power).await,
            PowerEvent::SleepImminent {
                grace: Duration::from_millis(900)
            }
        );
        // The runtime says nothing: the adapter lets go by itself.
        logind.wait_for_lock(false).await;
        logind.prepare_for_sleep(false).await;
        assert_eq!(next_event(&mut power).await, PowerEvent::Woke);
        assert!(
            logind.is_held(&logind.inhibitors().await),
            "still wanted: taken again after the wake"
        );
    }

    #[tokio::test]
    async fn assumes_logind_default_delay_when_it_does_not_say() {
        let test = "power_logind::assumes_logind_default_delay_when_it_does_not_say";
        let Some((bus, logind)) = logind(test, None).await else {
            return;
        };
        let support = power::probe(&bus.options()).await;
        assert!(support.available, "{support:?}");
        assert!(support.detail.contains("systemd-logind"), "{support:?}");
        let mut power = power::start(&bus.options()).await;
        power.handle.hold_inhibitor();
        logind.wait_for_lock(true).await;
        logind.prepare_for_sleep(true).await;
        assert_eq!(
            next_event(&mut power).await,
            PowerEvent::SleepImminent {
                grace: Duration::from_millis(4_500) // logind's default 5 s, less the margin
            }
        );
    }

    /// Captures this thread's log lines.
    fn capture_logs() -> (Arc<Mutex<Vec<u8>>>, tracing::subscriber::DefaultGuard) {
        #[derive(Clone)]
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Sink {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().expect("log sink").extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Sink(Arc::clone(&lines));
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(move || sink.clone())
            .finish();
        (lines, tracing::subscriber::set_default(subscriber))
    }

    /// Unavailable: said once at info level, no events, and the handle does nothing.
    async fn assert_unavailable(options: &PowerOptions, expected_detail: &str) {
        let (logs, _guard) = capture_logs();
        let PowerSupport { available, detail } = power::probe(options).await;
        assert!(!available && detail.contains(expected_detail), "{detail}");

        let mut power = power::start(options).await;
        assert!(!power.support.available, "{:?}", power.support);
        assert!(
            power.support.detail.contains(expected_detail),
            "{:?}",
            power.support
        );
        power.handle.hold_inhibitor();
        power.handle.allow_sleep();
        power.handle.release();
        let heard = tokio::time::timeout(Duration::from_millis(300), power.events.next()).await;
        assert!(heard.is_err(), "an unavailable adapter yielded {heard:?}");

        let logs = String::from_utf8(logs.lock().expect("log sink").clone()).expect("utf-8 logs");
        let said: Vec<&str> = logs
            .lines()
            .filter(|line| line.contains("sleep announcements unavailable"))
            .collect();
        assert_eq!(said.len(), 1, "said once: {logs}");
        assert!(said[0].contains("INFO"), "at info level: {logs}");
    }

    #[tokio::test]
    async fn without_a_bus_there_are_no_announcements() {
        let nowhere = tempfile::tempdir().expect("temporary folder");
        let options = PowerOptions {
            system_bus_address: Some(format!(
                "unix:path={}",
                nowhere.path().join("no-bus").display()
            )),
            who: WHO.to_string(),
        };
        assert_unavailable(&options, "no connection to").await;
    }

    /// A bus that takes the connection and never answers must not hang `baton run`:
    /// the adapter gives up after its bound (on tokio's paused clock: no real wait).
    #[tokio::test(start_paused = true)]
    async fn a_bus_that_never_answers_is_given_up_on() {
        let dir = tempfile::tempdir().expect("temporary folder");
        let socket = dir.path().join("mute-bus");
        let _mute = std::os::unix::net::UnixListener::bind(&socket).expect("socket bound");
        let options = PowerOptions {
            system_bus_address: Some(format!("unix:path={}", socket.display())),
            who: WHO.to_string(),
        };
        let power = tokio::time::timeout(Duration::from_secs(60), power::start(&options))
            .await
            .expect("power::start gave up on the mute bus by itself");
        assert!(!power.support.available, "{:?}", power.support);
        assert!(
            power.support.detail.contains("did not answer within 10s"),
            "{:?}",
            power.support
        );
    }

    #[tokio::test]
    async fn a_bus_without_logind_has_no_announcements() {
        if let Err(why) = have_dbus_daemon() {
            not_run(
                "power_logind::a_bus_without_logind_has_no_announcements",
                &why,
            );
            return;
        }
        let bus = Bus::start();
        assert_unavailable(&bus.options(), "systemd-logind is not on").await;
    }
}
