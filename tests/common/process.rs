//! Real `baton` processes on real temporary folders, for end-to-end tests.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mirror_baton::core::record::{self, DeviceRecord, NameKind};

pub const BATON: &str = env!("CARGO_BIN_EXE_baton");

/// A group of devices on one temporary folder.
pub struct Folder {
    pub root: tempfile::TempDir,
    pub time_scale: f64,
}

impl Folder {
    pub fn new(time_scale: f64) -> Self {
        Folder {
            root: tempfile::tempdir().expect("temp dir"),
            time_scale,
        }
    }
    pub fn sync_dir(&self) -> PathBuf {
        self.root.path().join("sync")
    }
    pub fn state_dir(&self) -> PathBuf {
        self.root.path().join("state")
    }
    pub fn devices_dir(&self) -> PathBuf {
        self.sync_dir().join("default").join("devices")
    }
    pub fn project(&self, name: &str) -> PathBuf {
        let dir = self.root.path().join("projects").join(name);
        std::fs::create_dir_all(&dir).expect("project dir");
        dir.canonicalize().expect("canonical project dir")
    }
    /// A `baton` command with this folder's settings.
    pub fn baton(&self) -> Command {
        let mut command = Command::new(BATON);
        command
            .env("BATON_SYNC_DIR", self.sync_dir())
            .env("BATON_STATE_DIR", self.state_dir())
            .env("BATON_TIME_SCALE", self.time_scale.to_string())
            .env("BATON_GROUP", "default")
            .env("HOME", self.root.path().join("home"))
            .env_remove("TELEGRAM_CHAT_ID")
            .env_remove("TELEGRAM_THREAD_ID")
            .env_remove("TELEGRAM_API_URL")
            .env_remove("DEVICE_NAME")
            .env_remove("TELEGRAM_BOT_TOKEN")
            // What baton gives the mirror, so none of the machine's own leaks in.
            .env_remove("TELEGRAM_UPDATES_URL")
            .env_remove("TELEGRAM_SEND_URL")
            .env_remove("TELEGRAM_DB_PATH")
            .env_remove("STARTUP_TIMESTAMP")
            .env_remove("USE_ICLOUD_COORDINATOR")
            .env("RUST_LOG", "info,mirror_baton::runtime=debug")
            .stdin(Stdio::null());
        command
    }
    /// Starts `baton run` for project `name`, logging to `<root>/<name>.log`.
    pub fn start(&self, name: &str, extra: &[&str]) -> Device {
        self.start_with(name, extra, self.baton())
    }
    /// Starts `baton run` for project `name` from a prepared command (extra env).
    pub fn start_with(&self, name: &str, extra: &[&str], mut command: Command) -> Device {
        let project = self.project(name);
        let log_path = self.root.path().join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path).expect("log file");
        let child = command
            .arg("run")
            .arg(&project)
            .args(extra)
            .stdout(log.try_clone().expect("log clone"))
            .stderr(log)
            .spawn()
            .expect("spawn baton");
        let device_id = record::device_id(None, &hostname(), &project.to_string_lossy());
        Device {
            child: Some(child),
            device_id,
            log_path,
        }
    }
    /// Every parseable record in the folder.
    pub fn records(&self) -> Vec<DeviceRecord> {
        let Ok(entries) = std::fs::read_dir(self.devices_dir()) else {
            return Vec::new();
        };
        let mut records: Vec<DeviceRecord> = entries
            .flatten()
            .filter(|e| {
                matches!(
                    record::classify_name(&e.file_name().to_string_lossy()),
                    NameKind::Record { .. }
                )
            })
            .filter_map(|e| std::fs::read(e.path()).ok())
            .filter_map(|bytes| record::parse_record(&bytes).ok())
            .collect();
        records.sort_by(|a, b| a.device_id.cmp(&b.device_id));
        records
    }
    pub fn record_of(&self, device_id: &str) -> Option<DeviceRecord> {
        self.records()
            .into_iter()
            .find(|r| r.device_id == device_id)
    }
}

impl Folder {
    /// Starts `baton run` for `name` against a fake Bot API (chat `chat`), with a
    /// stand-in mirror recording what it gets to `<root>/<name>.updates`; JSON logs.
    pub fn start_telegram(&self, name: &str, api_url: &str, token: &str, chat: i64) -> Device {
        self.start_telegram_env(name, api_url, token, chat, &[])
    }

    /// [`Folder::start_telegram`] with extra environment for baton and its child (e.g.
    /// `TELEGRAM_DB_PATH`, where the stand-in mirror keeps its `since`).
    pub fn start_telegram_env(
        &self,
        name: &str,
        api_url: &str,
        token: &str,
        chat: i64,
        env: &[(&str, &str)],
    ) -> Device {
        let out = self.root.path().join(format!("{name}.updates"));
        let out = out.to_string_lossy().into_owned();
        let mut command = self.baton();
        command.envs(env.iter().copied());
        command
            .env("TELEGRAM_BOT_TOKEN", token)
            .env("TELEGRAM_CHAT_ID", chat.to_string())
            .env("TELEGRAM_API_URL", api_url)
            .args(["--log-format", "json"]);
        let stub = [
            "--",
            BATON,
            "mirror-stub",
            "--out",
            &out,
            "--interval-ms",
            "50",
        ];
        self.start_with(name, &stub, command)
    }
}

/// How to start a device with a stand-in mirror: see [`Folder::start_mirror`].
#[derive(Debug, Clone, Default)]
pub struct MirrorSetup {
    /// `TELEGRAM_CHAT_ID` in baton's environment (the user's own setting), if any.
    pub chat_env: Option<i64>,
    /// More `baton run` options (`--thread-id`, `--child-when-active`, …).
    pub baton_args: Vec<String>,
    /// More `mirror-stub` options (`--process-ms`, `--menu`, `--log-env`, …).
    pub stub_args: Vec<String>,
    /// More variables for baton (and so the child).
    pub env: Vec<(String, String)>,
}

impl Folder {
    /// Starts `baton run` for `name` against a fake Bot API (chat `chat`) with no child:
    /// the device polls while active (fewer processes than [`Folder::start_telegram`]).
    pub fn start_polling(&self, name: &str, api_url: &str, token: &str, chat: i64) -> Device {
        let mut command = self.baton();
        command
            .env("TELEGRAM_BOT_TOKEN", token)
            .env("TELEGRAM_CHAT_ID", chat.to_string())
            .env("TELEGRAM_API_URL", api_url)
            .args(["--log-format", "json"]);
        self.start_with(name, &[], command)
    }

    /// `<root>/<name>.updates`: what the device's stand-in mirror processed.
    pub fn updates_path(&self, name: &str) -> PathBuf {
        self.root.path().join(format!("{name}.updates"))
    }

    /// `<root>/<name>.env`: one line per start of the stand-in, with its variables.
    pub fn env_path(&self, name: &str) -> PathBuf {
        self.root.path().join(format!("{name}.env"))
    }

    /// Starts `baton run` for `name` against a fake Bot API, JSON logs, its stand-in
    /// mirror polling every 50 ms when idle and writing `updates_path`/`env_path`.
    pub fn start_mirror(
        &self,
        name: &str,
        api_url: &str,
        token: &str,
        setup: &MirrorSetup,
    ) -> Device {
        let mut command = self.baton();
        command
            .env("TELEGRAM_BOT_TOKEN", token)
            .env("TELEGRAM_API_URL", api_url)
            .args(["--log-format", "json"]);
        if let Some(chat) = setup.chat_env {
            command.env("TELEGRAM_CHAT_ID", chat.to_string());
        }
        command.envs(setup.env.iter().map(|(k, v)| (k, v)));
        let updates = self.updates_path(name).to_string_lossy().into_owned();
        let env = self.env_path(name).to_string_lossy().into_owned();
        let mut extra: Vec<&str> = setup.baton_args.iter().map(String::as_str).collect();
        extra.extend([
            "--",
            BATON,
            "mirror-stub",
            "--out",
            &updates,
            "--env-out",
            &env,
            "--interval-ms",
            "50",
        ]);
        extra.extend(setup.stub_args.iter().map(String::as_str));
        self.start_with(name, &extra, command)
    }
}

/// The stand-in's processed updates in `path`: (update id, text), in order.
pub fn processed(path: &Path) -> Vec<(i64, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .map(|v| {
            let id = v["update_id"].as_i64().unwrap_or(0);
            (id, v["text"].as_str().unwrap_or_default().to_string())
        })
        .collect()
}

/// The stand-in's starts in `path`: the variables each was given, and its pid.
pub fn starts(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

/// Polls `check` every 20 ms until it returns Some or `limit` passes, without blocking
/// an async runtime.
pub async fn wait_until<T>(limit: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let started = Instant::now();
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if started.elapsed() > limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub struct Device {
    pub child: Option<Child>,
    pub device_id: String,
    pub log_path: PathBuf,
}

impl Device {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }
    pub fn signal(&self, signal: i32) {
        // SAFETY: sending a signal to our own child process.
        unsafe {
            libc::kill(self.pid() as i32, signal);
        }
    }
    /// Waits (bounded) for the process to exit; returns its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let child = self.child.as_mut()?;
        let started = Instant::now();
        while started.elapsed() < limit {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Polls `check` every 20 ms until it returns Some or `limit` passes.
pub fn wait_for<T>(limit: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let started = Instant::now();
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if started.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits (bounded by `limit`) until `device_id`'s record in `folder` was written
/// `writes` more times than when called: a positive sign that that many of its
/// heartbeat periods passed, on the protocol's own (scaled) clock. Returns the seq
/// reached, or None if the writes did not come.
pub fn wait_for_writes(
    folder: &Folder,
    device_id: &str,
    writes: u64,
    limit: Duration,
) -> Option<u64> {
    let start = folder.record_of(device_id)?.seq;
    wait_for(limit, || {
        let seq = folder.record_of(device_id)?.seq;
        (seq >= start.saturating_add(writes)).then_some(seq)
    })
}

/// How many active heartbeats, at their shortest, span `window`, plus one: seeing that
/// many writes proves at least `window` of protocol time passed, however slow the
/// machine.
pub fn active_heartbeats_spanning(timing: &mirror_baton::core::Timing, window: Duration) -> u64 {
    let shortest = timing.heartbeat_active.base.max(Duration::from_millis(1));
    (window.as_nanos().div_ceil(shortest.as_nanos()) as u64).saturating_add(1)
}

pub fn hostname() -> String {
    mirror_baton::cli::hostname()
}

pub fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}
