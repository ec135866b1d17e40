//! A private system bus with python-dbusmock's systemd-logind on it, for the tests
//! that drive sleep announcements over a real D-Bus (`tests/power_logind.rs`,
//! `tests/e2e_sleep_handoff.rs`): a `dbus-daemon` on a socket in a temporary folder,
//! the mock (a real third-party mock: its `Inhibit` hands out the write end of a pipe
//! and drops the inhibitor from `ListInhibitors` when every copy is closed), and a
//! client to drive and inspect it.
//!
//! Needs: `dbus-daemon` and a Python that imports `dbusmock` (Debian: `apt-get install
//! dbus-daemon python3-dbusmock`; `.ci/run` installs them; `BATON_DBUSMOCK_PYTHON` names
//! another Python). Without them a test says loudly that it did not run ([`not_run`]);
//! with `CI=true` that is a failure. Linux only.
#![allow(dead_code)] // each test file uses a different subset

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use mirror_baton::adapters::power::{INHIBIT_WHY, PowerOptions};
use tempfile::TempDir;

/// Generous bound for anything that should happen within milliseconds.
pub const PATIENCE: Duration = Duration::from_secs(30);
pub const WHO: &str = "baton under test";
/// An `InhibitDelayMaxUSec` whose grace (49 s) outlasts [`PATIENCE`]: a lock seen
/// closed within the patience was closed by the runtime's call, not by the deadline.
pub const LONG_DELAY: Duration = Duration::from_secs(50);

pub type Inhibitor = (String, String, String, String, u32, u32);

#[zbus::proxy(
    interface = "org.freedesktop.DBus.Mock",
    default_service = "org.freedesktop.login1",
    default_path = "/org/freedesktop/login1"
)]
pub trait LogindMock {
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
pub trait LogindInhibitors {
    fn list_inhibitors(&self) -> zbus::Result<Vec<Inhibitor>>;
}

/// The Python that runs dbusmock, or why there is none.
pub fn mock_python() -> Result<String, String> {
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

pub fn have_dbus_daemon() -> Result<(), String> {
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
pub fn not_run(test: &str, why: &str) {
    let how = "install them with `apt-get install dbus-daemon python3-dbusmock` \
               (what .ci/run does)";
    if std::env::var("CI").is_ok_and(|value| value == "true") {
        panic!("{test} cannot run under CI: {why}; {how}");
    }
    // Straight to the process's stderr: the test harness hides `eprintln!` of a
    // passing test, and this must be seen.
    let _ = writeln!(
        std::io::stderr(),
        "\n*** {test}: NOT RUN: {why}; {how} ***\n"
    );
}

/// A private bus: a `dbus-daemon` on a socket in a temporary folder.
pub struct Bus {
    daemon: Child,
    pub address: String,
    pub dir: TempDir,
}

impl Bus {
    pub fn start() -> Bus {
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

    pub fn options(&self) -> PowerOptions {
        PowerOptions {
            system_bus_address: Some(self.address.clone()),
            who: WHO.to_string(),
        }
    }

    pub async fn client(&self) -> zbus::Connection {
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
pub struct Logind {
    mock: Child,
    client: zbus::Connection,
    /// Who the lock baton takes names ([`WHO`] for the adapter under test; `baton run`
    /// says `PowerOptions::default().who`).
    pub who: String,
}

impl Logind {
    pub async fn start(bus: &Bus, python: &str) -> Logind {
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
        Logind {
            mock,
            client,
            who: WHO.to_string(),
        }
    }

    pub async fn mock(&self) -> LogindMockProxy<'static> {
        LogindMockProxy::new(&self.client)
            .await
            .expect("mock proxy")
    }

    pub async fn set_inhibit_delay_max(&self, limit: Duration) {
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

    pub async fn prepare_for_sleep(&self, start: bool) {
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

    pub async fn inhibitors(&self) -> Vec<Inhibitor> {
        LogindInhibitorsProxy::new(&self.client)
            .await
            .expect("manager proxy")
            .list_inhibitors()
            .await
            .expect("ListInhibitors answered")
    }

    /// Waits until the mock lists exactly our delay lock (true) or nothing (false).
    pub async fn wait_for_lock(&self, held: bool) {
        let reached = wait_until(|| async { self.is_held(&self.inhibitors().await) == held }).await;
        let now = self.inhibitors().await;
        assert!(
            reached,
            "expected the lock held: {held}; the mock lists {now:?}"
        );
    }

    pub fn is_held(&self, inhibitors: &[Inhibitor]) -> bool {
        match inhibitors {
            [] => false,
            [(what, who, why, mode, _, _)] => {
                assert_eq!(
                    (what.as_str(), who.as_str(), why.as_str(), mode.as_str()),
                    ("sleep", self.who.as_str(), INHIBIT_WHY, "delay"),
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
pub async fn wait_until<F, Fut>(mut check: F) -> bool
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

/// A bus with the mocked logind, or None (and a loud note) when the tools are missing.
pub async fn logind(test: &str, inhibit_delay_max: Option<Duration>) -> Option<(Bus, Logind)> {
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
