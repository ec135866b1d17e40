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
mod linux {
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Child, Command, Stdio};
    use std::sync::{Arc, Mutex, OnceLock};
    use std::time::Duration;

    use mirror_baton::adapters::power::{
        self, INHIBIT_WHY, Power, PowerEvent, PowerOptions, PowerSupport,
    };
    use tempfile::TempDir;

    /// Generous bound for anything that should happen within milliseconds.
    const PATIENCE: Duration = Duration::from_secs(30);
    const WHO: &str = "baton under test";
    /// An `InhibitDelayMaxUSec` whose grace (49 s) outlasts [`PATIENCE`]: a lock seen
    /// closed within the patience was closed by the runtime's call, not by the deadline.
    const LONG_DELAY: Duration = Duration::from_secs(50);

    type Inhibitor = (String, String, String, String, u32, u32);

    #[zbus::proxy(
        interface = "org.freedesktop.DBus.Mock",
        default_service = "org.freedesktop.login1",
        default_path = "/org/freedesktop/login1"
    )]
    trait LogindMock {
        fn add_property(
            &self,
            interface: &str,
            name: &str,
            value: &zbus::Variant<'_>,
        ) -> zbus::Result<()>;
        fn emit_signal(
            &self,
            interface: &str,
            name: &str,
            signature: &str,
            args: &[zbus::Variant<'_>],
        ) -> zbus::Result<()>;
    }

    #[zbus::proxy(
        interface = "org.freedesktop.login1.Manager",
        default_service = "org.freedesktop.login1",
        default_path = "/org/freedesktop/login1"
    )]
    trait LogindInhibitors {
        fn list_inhibitors(&self) -> zbus::Result<Vec<Inhibitor>>;
    }

    /// The Python that runs dbusmock, or why there is none.
    fn mock_python() -> Result<String, String> {
        static FOUND: OnceLock<Result<String, String>> = OnceLock::new();
        FOUND
            .get_or_init(|| {
                let imports = |python: &str| {
                    Command::new(python)
                        .args(["-c", "import dbusmock.templates.logind"])
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status()
                        .is_ok_and(|status| status.success())
                };
                let candidates = std::env::var("BATON_DBUSMOCK_PYTHON")
                    .into_iter()
                    .chain(["python3".to_string(), "/usr/bin/python3".to_string()]);
                candidates
                    .into_iter()
                    .find(|python| imports(python))
                    .ok_or_else(|| {
                        "no Python here imports dbusmock (python-dbusmock with dbus-python and \
                     PyGObject)"
                            .to_string()
                    })
            })
            .clone()
    }

    fn have_dbus_daemon() -> Result<(), String> {
        Command::new("dbus-daemon")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .ok()
            .filter(|status| status.success())
            .map(|_| ())
            .ok_or_else(|| "dbus-daemon is not installed".to_string())
    }

    /// Says loudly that a test did not run, or fails it under CI.
    fn not_run(test: &str, why: &str) {
        let how = "install them with `apt-get install dbus-daemon python3-dbusmock` \
                   (what .ci/run does)";
        if std::env::var("CI").is_ok_and(|value| value == "true") {
            panic!("power_logind::{test} cannot run under CI: {why}; {how}");
        }
        // Straight to the process's stderr: the test harness hides `eprintln!` of a
        // passing test, and this must be seen.
        let _ = writeln!(
            std::io::stderr(),
            "\n*** power_logind::{test}: NOT RUN: {why}; {how} ***\n"
        );
    }

    /// A private bus: a `dbus-daemon` on a socket in a temporary folder.
    struct Bus {
        daemon: Child,
        address: String,
        dir: TempDir,
    }

    impl Bus {
        fn start() -> Bus {
            let dir = tempfile::tempdir().expect("temporary folder");
            let config = dir.path().join("bus.conf");
            let socket = dir.path().join("bus");
            std::fs::write(
                &config,
                format!(
                    r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#,
                    socket.display()
                ),
            )
            .expect("bus config written");
            let mut daemon = Command::new("dbus-daemon")
                .arg(format!("--config-file={}", config.display()))
                .args(["--nofork", "--print-address=1"])
                .stdout(Stdio::piped())
                .stderr(Stdio::null()) // it complains that it may not raise its fd limit
                .spawn()
                .expect("dbus-daemon starts");
            let stdout = daemon.stdout.take().expect("piped stdout");
            let (sender, receiver) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let mut line = String::new();
                let _ = BufReader::new(stdout).read_line(&mut line);
                let _ = sender.send(line);
            });
            let address = receiver
                .recv_timeout(PATIENCE)
                .expect("dbus-daemon prints its address")
                .trim()
                .to_string();
            assert!(!address.is_empty(), "dbus-daemon printed no address");
            Bus {
                daemon,
                address,
                dir,
            }
        }

        fn options(&self) -> PowerOptions {
            PowerOptions {
                system_bus_address: Some(self.address.clone()),
                who: WHO.to_string(),
            }
        }

        async fn client(&self) -> zbus::Connection {
            zbus::connection::Builder::address(self.address.as_str())
                .build()
                .await
                .expect("test client connects to the private bus")
        }
    }

    impl Drop for Bus {
        fn drop(&mut self) {
            let _ = self.daemon.kill();
            let _ = self.daemon.wait();
        }
    }

    /// python-dbusmock's logind on a bus, and a client to drive and inspect it.
    struct Logind {
        mock: Child,
        client: zbus::Connection,
    }

    impl Logind {
        async fn start(bus: &Bus, python: &str) -> Logind {
            let log_path = bus.dir.path().join("dbusmock.log");
            let log = std::fs::File::create(&log_path).expect("mock log created");
            let mut mock = Command::new(python)
                .args(["-m", "dbusmock", "--template", "logind"])
                .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("python-dbusmock starts");
            let client = bus.client().await;
            let dbus = zbus::fdo::DBusProxy::new(&client).await.expect("bus proxy");
            let appeared = wait_until(|| async {
                dbus.name_has_owner("org.freedesktop.login1".try_into().expect("a bus name"))
                    .await
                    .unwrap_or(false)
            })
            .await;
            if !appeared {
                let exited = mock.try_wait().ok().flatten();
                let _ = mock.kill();
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                panic!("the mocked logind never appeared on the bus (exit: {exited:?}):\n{log}");
            }
            Logind { mock, client }
        }

        async fn mock(&self) -> LogindMockProxy<'static> {
            LogindMockProxy::new(&self.client)
                .await
                .expect("mock proxy")
        }

        async fn set_inhibit_delay_max(&self, limit: Duration) {
            let usec = u64::try_from(limit.as_micros()).expect("a small limit");
            self.mock()
                .await
                .add_property(
                    "org.freedesktop.login1.Manager",
                    "InhibitDelayMaxUSec",
                    &zbus::Variant::U64(usec),
                )
                .await
                .expect("InhibitDelayMaxUSec set on the mock");
        }

        async fn prepare_for_sleep(&self, start: bool) {
            self.mock()
                .await
                .emit_signal(
                    "org.freedesktop.login1.Manager",
                    "PrepareForSleep",
                    "b",
                    &[zbus::Variant::Bool(start)],
                )
                .await
                .expect("PrepareForSleep emitted by the mock");
        }

        async fn inhibitors(&self) -> Vec<Inhibitor> {
            LogindInhibitorsProxy::new(&self.client)
                .await
                .expect("manager proxy")
                .list_inhibitors()
                .await
                .expect("ListInhibitors answered")
        }

        /// Waits until the mock lists exactly our delay lock (true) or nothing (false).
        async fn wait_for_lock(&self, held: bool) {
            let reached =
                wait_until(|| async { self.is_held(&self.inhibitors().await) == held }).await;
            let now = self.inhibitors().await;
            assert!(
                reached,
                "expected the lock held: {held}; the mock lists {now:?}"
            );
        }

        fn is_held(&self, inhibitors: &[Inhibitor]) -> bool {
            match inhibitors {
                [] => false,
                [(what, who, why, mode, _, _)] => {
                    assert_eq!(
                        (what.as_str(), who.as_str(), why.as_str(), mode.as_str()),
                        ("sleep", WHO, INHIBIT_WHY, "delay"),
                        "not the lock baton should take"
                    );
                    true
                }
                more => panic!("more than one lock taken: {more:?}"),
            }
        }
    }

    impl Drop for Logind {
        fn drop(&mut self) {
            let _ = self.mock.kill();
            let _ = self.mock.wait();
        }
    }

    /// Polls `check` every 20 ms until it holds, for at most [`PATIENCE`].
    async fn wait_until<F, Fut>(mut check: F) -> bool
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let started = tokio::time::Instant::now();
        while started.elapsed() < PATIENCE {
            if check().await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    async fn next_event(power: &mut Power) -> PowerEvent {
        tokio::time::timeout(PATIENCE, power.events.next())
            .await
            .expect("a power event within the patience")
    }

    /// A bus with the mocked logind, or None (and a loud note) when the tools are missing.
    async fn logind(test: &str, inhibit_delay_max: Option<Duration>) -> Option<(Bus, Logind)> {
        let python = match have_dbus_daemon().and_then(|()| mock_python()) {
            Ok(python) => python,
            Err(why) => {
                not_run(test, &why);
                return None;
            }
        };
        let bus = Bus::start();
        let logind = Logind::start(&bus, &python).await;
        if let Some(limit) = inhibit_delay_max {
            logind.set_inhibit_delay_max(limit).await;
        }
        Some((bus, logind))
    }

    #[tokio::test]
    async fn holds_while_active_announces_the_grace_and_lets_go_when_allowed() {
        let test = "holds_while_active_announces_the_grace_and_lets_go_when_allowed";
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
        let test = "a_release_during_the_sleep_lets_it_go_and_holds_nothing_after_the_wake";
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
        let test = "lets_the_machine_sleep_by_itself_when_the_grace_is_spent";
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
        let test = "assumes_logind_default_delay_when_it_does_not_say";
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
            not_run("a_bus_without_logind_has_no_announcements", &why);
            return;
        }
        let bus = Bus::start();
        assert_unavailable(&bus.options(), "systemd-logind is not on").await;
    }
}
