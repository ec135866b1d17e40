//! `baton doctor` against a healthy set-up and broken ones: real folders, real records,
//! a real agent file written by `baton agent install`'s code, the real fake Bot API.
//! Only what the OS alone can say (a dataless file, the service manager's view, the
//! sleep-counting clock) comes through the doctor's seam, `OsProbes`.

mod common;
#[cfg(target_os = "linux")]
#[path = "common/logind.rs"]
mod logind_bus;

use std::path::{Path, PathBuf};
use std::time::Duration;

use baton_testkit::fake_bot_api::FakeBotApi;
use common::process::BATON;
use mirror_baton::adapters::power::PowerOptions;
use mirror_baton::adapters::store::Store;
use mirror_baton::adapters::telegram_config::{Secret, TelegramConfig};
use mirror_baton::agent::{
    self, AgentEnv, AgentSpec, DryRunRunner, InstallRequest, ServiceManager,
};
use mirror_baton::core::Timing;
use mirror_baton::core::record::{self, DeviceRecord, Identity, Status};
use mirror_baton::doctor::os::{Loaded, OsProbes, SleepClock};
use mirror_baton::doctor::{self, Report, Setup, Verdict};

const CHAT: i64 = -1_001_234_567;

/// A machine as the test presents it.
struct TestOs {
    loaded: Loaded,
    clock_works: bool,
    dataless: Vec<PathBuf>,
}

impl Default for TestOs {
    fn default() -> Self {
        TestOs {
            loaded: Loaded::Yes,
            clock_works: true,
            dataless: Vec::new(),
        }
    }
}

impl OsProbes for TestOs {
    fn is_dataless(&self, path: &Path) -> bool {
        self.dataless.iter().any(|p| p == path)
    }
    fn sleep_clock(&self) -> SleepClock {
        SleepClock {
            name: "CLOCK_BOOTTIME",
            works: if self.clock_works {
                Ok(())
            } else {
                Err("EINVAL".into())
            },
        }
    }
    fn service_manager(&self) -> ServiceManager {
        ServiceManager::Systemd
    }
    fn agent_loaded(&self, _label: &str) -> Loaded {
        self.loaded.clone()
    }
}

/// A user's machine: home, a Syncthing folder (watcher delay 1 s), a project, a mirror
/// command on the agent's PATH, an installed agent, and a peer's fresh record.
struct Machine {
    root: tempfile::TempDir,
}

impl Machine {
    fn new() -> Machine {
        let machine = Machine {
            root: tempfile::tempdir().unwrap(),
        };
        std::fs::create_dir_all(machine.sync_dir().join(".stfolder")).unwrap();
        std::fs::create_dir_all(machine.project()).unwrap();
        let config = machine.home().join(".local/state/syncthing");
        std::fs::create_dir_all(&config).unwrap();
        std::fs::write(
            config.join("config.xml"),
            format!(
                "<configuration version=\"36\">\n    <folder id=\"b\" label=\"b\" path=\"{}\" type=\"sendreceive\" fsWatcherEnabled=\"true\" fsWatcherDelayS=\"1\">\n    </folder>\n</configuration>\n",
                machine.sync_dir().display()
            ),
        )
        .unwrap();
        let bin = machine.root.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let mirror = bin.join("my-mirror");
        std::fs::write(&mirror, "#!/bin/sh\nexit 0\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&mirror, std::fs::Permissions::from_mode(0o755)).unwrap();
        machine
    }
    fn home(&self) -> PathBuf {
        self.root.path().join("home")
    }
    fn sync_dir(&self) -> PathBuf {
        self.root.path().join("Sync/baton")
    }
    fn project(&self) -> PathBuf {
        self.root.path().join("project")
    }
    fn install_agent(&self, command: &[&str]) {
        let env = AgentEnv {
            home: self.home(),
            uid: 501,
            manager: ServiceManager::Systemd,
            program: PathBuf::from(BATON),
            path_env: format!("{}:/usr/bin:/bin", self.root.path().join("bin").display()),
            cwd: self.project(),
        };
        let request = InstallRequest {
            dir: Some(self.project()),
            child_command: command.iter().map(|w| w.to_string()).collect(),
            ..InstallRequest::default()
        };
        let spec = AgentSpec::from_request(&env, &request).unwrap();
        agent::install(&env, &spec, false, &mut DryRunRunner::default()).unwrap();
    }
    fn write_peer(&self, group: &str, device_id: &str, status: Status, written_ago: Duration) {
        let identity = Identity {
            hostname: "other-mac".into(),
            project_dir: "/p".into(),
            pid: 77,
            instance: "0123456789abcdef".into(),
            install_id: "i".into(),
            ..common::identity::identity_of(device_id)
        };
        let mut record = DeviceRecord::new(&identity);
        record.status = status;
        record.term = 2;
        record.seq = 3;
        record.written_at_ms =
            mirror_baton::adapters::clock::wall_ms() - written_ago.as_millis() as u64;
        let store = Store::new(&self.sync_dir(), group, device_id);
        store.ensure_dir().unwrap();
        store.write_record(&record).unwrap();
    }
    fn setup(&self, fake: &FakeBotApi) -> Setup {
        let project = self.project().canonicalize().unwrap();
        Setup {
            sync_dir: self.sync_dir(),
            group: "bot123456".into(),
            device_id: record::device_id(None, "this-mac", &project.to_string_lossy()),
            project_dir: project,
            home: Some(self.home()),
            timing: Timing::default(),
            telegram: Ok(Some(TelegramConfig {
                bot_token: Secret::new(fake.token()),
                chat_id: CHAT,
                thread_id: Some(7),
                api_url: Some(reqwest::Url::parse(&fake.api_url()).unwrap()),
            })),
            events_timeout: Duration::from_secs(10),
            // A bus that is not there: no announcements (the tests below give one).
            power: PowerOptions {
                system_bus_address: Some(format!(
                    "unix:path={}",
                    self.root.path().join("no-system-bus").display()
                )),
                ..PowerOptions::default()
            },
        }
    }
}

fn verdict(report: &Report, id: &str) -> Verdict {
    report
        .check(id)
        .unwrap_or_else(|| panic!("no check {id}"))
        .verdict
}

fn summary(report: &Report, id: &str) -> String {
    report.check(id).unwrap().summary.clone()
}

fn healthy() -> Machine {
    let machine = Machine::new();
    machine.install_agent(&["my-mirror", "--flag"]);
    machine.write_peer(
        "bot123456",
        "other-mac:/p",
        Status::Active,
        Duration::from_secs(3),
    );
    machine
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_set_up_passes_every_check() {
    let fake = FakeBotApi::start().await.unwrap();
    let machine = healthy();
    let report = doctor::diagnose(&machine.setup(&fake), &TestOs::default()).await;
    let text = doctor::render_text(&report);
    for check in &report.checks {
        let expected = if check.id == "sleep_announcements" && cfg!(target_os = "linux") {
            Verdict::Warn // no system bus here; see the logind test below
        } else {
            Verdict::Pass
        };
        assert_eq!(check.verdict, expected, "{}\n{text}", check.id);
    }
    assert!(report.record_command.is_none(), "{text}");
    assert!(
        summary(&report, "folder_kind").contains("Syncthing")
            && summary(&report, "folder_kind").contains("watcher delay 1 s"),
        "{text}"
    );
    assert!(
        summary(&report, "mirror_command").contains("my-mirror"),
        "{text}"
    );
    assert!(
        summary(&report, "telegram_token").contains("@baton_test_bot"),
        "{text}"
    );
    assert!(
        !text.contains(fake.token()),
        "the token never appears:\n{text}"
    );
    assert!(
        fake.requests()
            .iter()
            .any(|r| r.is("sendChatAction") && r.params["message_thread_id"] == 7)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_folder_fails_and_skips_what_needs_it() {
    let fake = FakeBotApi::start().await.unwrap();
    let machine = healthy();
    let mut setup = machine.setup(&fake);
    setup.sync_dir = machine.root.path().join("no such folder");
    let report = doctor::diagnose(&setup, &TestOs::default()).await;
    assert_eq!(verdict(&report, "sync_folder"), Verdict::Fail);
    assert!(
        report
            .check("sync_folder")
            .unwrap()
            .fix
            .as_ref()
            .unwrap()
            .contains("mkdir -p")
    );
    for id in ["writable", "folder_kind", "records_local", "file_events"] {
        assert_eq!(verdict(&report, id), Verdict::Skip, "{id}");
    }
    assert!(report.failed());
}

/// A read-only folder: a read-only tmpfs as root (root ignores permissions), else mode 0555.
struct ReadOnly(PathBuf, bool);

impl ReadOnly {
    fn make(dir: &Path) -> Option<ReadOnly> {
        std::fs::create_dir_all(dir).unwrap();
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o555)).unwrap();
            return Some(ReadOnly(dir.to_path_buf(), false));
        }
        mount_read_only(dir).then(|| ReadOnly(dir.to_path_buf(), true))
    }
}

#[cfg(target_os = "linux")]
fn mount_read_only(dir: &Path) -> bool {
    let target = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: valid NUL-terminated strings that outlive the call.
    let result = unsafe {
        libc::mount(
            c"tmpfs".as_ptr(),
            target.as_ptr(),
            c"tmpfs".as_ptr(),
            libc::MS_RDONLY,
            std::ptr::null(),
        )
    };
    result == 0
}

#[cfg(not(target_os = "linux"))]
fn mount_read_only(_dir: &Path) -> bool {
    false
}

#[cfg(target_os = "linux")]
fn unmount(dir: &Path) {
    let target = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: detaching our own mount.
    unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
}

#[cfg(not(target_os = "linux"))]
fn unmount(_dir: &Path) {}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        if self.1 {
            unmount(&self.0);
        } else {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&self.0, std::fs::Permissions::from_mode(0o755));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_folder_fails_with_the_systems_reason() {
    let fake = FakeBotApi::start().await.unwrap();
    let machine = healthy();
    let mut setup = machine.setup(&fake);
    setup.sync_dir = machine.root.path().join("read-only");
    let Some(_read_only) = ReadOnly::make(&setup.sync_dir) else {
        eprintln!("SKIPPED: root without the right to mount a read-only tmpfs");
        return;
    };
    let report = doctor::diagnose(&setup, &TestOs::default()).await;
    assert_eq!(verdict(&report, "sync_folder"), Verdict::Pass);
    assert_eq!(verdict(&report, "writable"), Verdict::Fail);
    let text = summary(&report, "writable");
    assert!(
        text.contains("Read-only file system") || text.contains("Permission denied"),
        "{text}"
    );
    assert_eq!(verdict(&report, "file_events"), Verdict::Skip);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_fails_the_telegram_checks() {
    let fake = FakeBotApi::start().await.unwrap();
    let machine = healthy();
    let mut setup = machine.setup(&fake);
    setup.telegram = Ok(None);
    let report = doctor::diagnose(&setup, &TestOs::default()).await;
    assert_eq!(verdict(&report, "telegram_config"), Verdict::Fail);
    assert!(
        report
            .check("telegram_config")
            .unwrap()
            .fix
            .as_ref()
            .unwrap()
            .contains("TELEGRAM_BOT_TOKEN")
    );
    for id in ["telegram_token", "telegram_post", "telegram_webhook"] {
        assert_eq!(verdict(&report, id), Verdict::Skip, "{id}");
    }
    assert!(fake.requests().is_empty(), "nothing was asked of Telegram");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_fails_and_is_never_shown() {
    let fake = FakeBotApi::start().await.unwrap();
    fake.refuse_token(true);
    let machine = healthy();
    let setup = machine.setup(&fake);
    let report = doctor::diagnose(&setup, &TestOs::default()).await;
    assert_eq!(verdict(&report, "telegram_token"), Verdict::Fail);
    assert!(summary(&report, "telegram_token").contains("refused the bot token (Unauthorized)"));
    assert_eq!(verdict(&report, "telegram_post"), Verdict::Skip);
    let text = doctor::safe_to_paste(&doctor::render_text(&report), &setup);
    assert!(
        !text.contains(fake.token()) && !text.contains("TEST-fake-token"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_peers_warn_and_point_at_baton_record() {
    let fake = FakeBotApi::start().await.unwrap();
    let machine = healthy();
    machine.write_peer(
        "bot123456",
        "old-mac:/p",
        Status::Standby,
        Duration::from_secs(3 * 3600),
    );
    let report = doctor::diagnose(&machine.setup(&fake), &TestOs::default()).await;
    assert_eq!(verdict(&report, "peers"), Verdict::Warn);
    assert!(
        summary(&report, "peers").contains("old-mac:/p"),
        "{}",
        summary(&report, "peers")
    );
    let command = report
        .record_command
        .clone()
        .expect("baton record is suggested");
    assert_eq!(
        command,
        format!(
            "baton record --sync-dir {} --group bot123456 --out odd-sync.jsonl --duration 600",
            machine.sync_dir().display()
        )
    );
    assert!(doctor::render_text(&report).contains(&command));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evicted_records_and_a_stopped_agent_and_a_lost_mirror_fail() {
    let fake = FakeBotApi::start().await.unwrap();
    let machine = Machine::new();
    machine.install_agent(&["not-installed-anywhere"]);
    machine.write_peer(
        "bot123456",
        "other-mac:/p",
        Status::Standby,
        Duration::from_secs(3),
    );
    let devices = machine.sync_dir().join("bot123456/devices");
    std::fs::write(
        devices.join(format!(".{}.icloud", record::file_name("third-mac:/p"))),
        b"stub",
    )
    .unwrap();
    let os = TestOs {
        loaded: Loaded::No {
            said: "inactive".into(),
        },
        dataless: vec![devices.join(record::file_name("other-mac:/p"))],
        ..TestOs::default()
    };
    let report = doctor::diagnose(&machine.setup(&fake), &os).await;
    let text = doctor::render_text(&report);
    assert_eq!(verdict(&report, "records_local"), Verdict::Fail, "{text}");
    assert!(
        summary(&report, "records_local").starts_with("2 record(s) evicted"),
        "{text}"
    );
    assert!(
        report
            .check("records_local")
            .unwrap()
            .fix
            .as_ref()
            .unwrap()
            .contains("Keep Downloaded")
    );
    assert_eq!(verdict(&report, "agent"), Verdict::Fail, "{text}");
    assert!(
        report
            .check("agent")
            .unwrap()
            .fix
            .as_ref()
            .unwrap()
            .starts_with("systemctl --user enable --now dev.mirror-baton.")
    );
    assert_eq!(verdict(&report, "mirror_command"), Verdict::Fail, "{text}");
    assert!(summary(&report, "mirror_command").contains("not-installed-anywhere"));
    assert!(report.record_command.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_a_broken_clock_and_default_syncthing_batching_are_reported() {
    let fake = FakeBotApi::start().await.unwrap();
    fake.set_webhook(Some("https://hooks.example.org/secret-path-123"));
    let machine = healthy();
    let config = machine.home().join(".local/state/syncthing/config.xml");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("fsWatcherDelayS=\"1\"", "fsWatcherDelayS=\"10\"");
    std::fs::write(&config, text).unwrap();
    let os = TestOs {
        clock_works: false,
        ..TestOs::default()
    };
    let report = doctor::diagnose(&machine.setup(&fake), &os).await;
    let text = doctor::render_text(&report);
    assert_eq!(
        verdict(&report, "telegram_webhook"),
        Verdict::Fail,
        "{text}"
    );
    assert!(summary(&report, "telegram_webhook").contains("hooks.example.org"));
    assert!(
        !text.contains("secret-path-123"),
        "only the webhook's host is shown:\n{text}"
    );
    assert_eq!(verdict(&report, "clocks"), Verdict::Fail, "{text}");
    assert_eq!(verdict(&report, "folder_kind"), Verdict::Warn, "{text}");
    assert!(
        summary(&report, "folder_kind").contains("watcher delay 10 s"),
        "{text}"
    );
}

/// The binary, on this machine's real OS probes: JSON for scripts, exit 1 on a failure,
/// no token in what it prints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baton_doctor_json_runs_on_linux_and_prints_no_token() {
    let fake = FakeBotApi::start().await.unwrap();
    let machine = healthy();
    let run = |fake: &FakeBotApi| {
        std::process::Command::new(BATON)
            .args(["doctor", "--json", "--events-timeout", "5"])
            .arg(machine.project())
            .env("HOME", machine.home())
            .env("BATON_SYNC_DIR", machine.sync_dir())
            .env("BATON_STATE_DIR", machine.root.path().join("state"))
            .env_remove("BATON_GROUP")
            .env("TELEGRAM_BOT_TOKEN", fake.token())
            .env("TELEGRAM_CHAT_ID", CHAT.to_string())
            .env("TELEGRAM_API_URL", fake.api_url())
            .env_remove("TELEGRAM_THREAD_ID")
            .output()
            .unwrap()
    };
    let output = tokio::task::block_in_place(|| run(&fake));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(!stdout.contains(fake.token()), "{stdout}");
    let report: serde_json::Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(report["group"], "bot123456");
    let verdict_of = |id: &str| {
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == id)
            .map(|c| c["verdict"].clone())
            .unwrap()
    };
    for id in [
        "sync_folder",
        "writable",
        "file_events",
        "peers",
        "clocks",
        "telegram_config",
        "telegram_token",
        "telegram_post",
        "telegram_webhook",
    ] {
        assert_eq!(verdict_of(id), "pass", "{id}: {stdout}");
    }
    assert_eq!(
        output.status.code(),
        Some(0),
        "no failure, exit 0: {stdout}"
    );

    fake.refuse_token(true);
    let output = tokio::task::block_in_place(|| run(&fake));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(output.status.code(), Some(1), "a failure, exit 1: {stdout}");
    assert!(stdout.contains("refused the bot token"), "{stdout}");
    assert!(!stdout.contains(fake.token()), "{stdout}");
}

/// Sleep announcements: a pass with a logind on the (private) system bus, a warning
/// that says what is lost without one.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sleep_announcements_pass_with_logind_and_warn_without() {
    let fake = FakeBotApi::start().await.unwrap();
    let machine = healthy();
    let mut setup = machine.setup(&fake);
    let without = doctor::diagnose(&setup, &TestOs::default()).await;
    assert_eq!(verdict(&without, "sleep_announcements"), Verdict::Warn);
    let check = without.check("sleep_announcements").unwrap();
    assert!(
        check.summary.contains("unavailable (no connection to"),
        "{check:?}"
    );
    assert!(
        check
            .fix
            .as_deref()
            .unwrap_or_default()
            .contains("lease runs out"),
        "{check:?}"
    );

    let test = "doctor::sleep_announcements_pass_with_logind_and_warn_without";
    let Some((bus, _logind)) = logind_bus::logind(test, None).await else {
        return;
    };
    setup.power = bus.options();
    let with = doctor::diagnose(&setup, &TestOs::default()).await;
    assert_eq!(
        verdict(&with, "sleep_announcements"),
        Verdict::Pass,
        "{}",
        doctor::render_text(&with)
    );
    assert!(summary(&with, "sleep_announcements").contains("systemd-logind"));
}
