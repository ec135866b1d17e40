//! The demo's devices: real `baton run` subprocesses, each on its own replica folder and
//! state folder, each with a `baton mirror-stub` child, all pointed at the fake Telegram.
//!
//! Every device runs in its own process group, so a Ctrl-C in the terminal reaches the
//! demo alone and the demo decides how its devices stop. Owns: spawning, signalling and
//! reaping those processes. Must never: leave one running — dropping the [`Fleet`] sends
//! SIGTERM to every device still running, waits a moment, then SIGKILLs the rest (their
//! stubs exit on their own once orphaned).

use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a dropped fleet waits for SIGTERM before SIGKILL.
const DROP_GRACE: Duration = Duration::from_secs(3);

/// Everything needed to start one device.
#[derive(Debug, Clone)]
pub struct DeviceSpec {
    /// Short name: `--device-name`, and the name in the timeline.
    pub name: String,
    /// `BATON_HOSTNAME`: the Mac this device plays on (devices on one Mac share its
    /// replica, state and home folders).
    pub hostname: String,
    pub device_id: String,
    pub project: PathBuf,
    pub sync_dir: PathBuf,
    pub state_dir: PathBuf,
    pub home_dir: PathBuf,
    pub log_path: PathBuf,
    pub mirror_out: PathBuf,
    pub seed: u64,
    /// The forum topic this device serves (`--thread-id`); `None`: the whole chat.
    pub thread_id: Option<i64>,
}

/// Settings every device shares.
#[derive(Debug, Clone)]
pub struct FleetEnv {
    pub baton: PathBuf,
    pub group: String,
    pub time_scale: f64,
    pub bot_token: String,
    pub chat_id: i64,
    pub api_url: String,
    pub stub_interval: Duration,
}

/// What became of a device's latest process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessState {
    Running { pid: u32 },
    Exited { code: i32 },
    Killed { signal: i32 },
    NotStarted,
}

pub struct Device {
    pub spec: DeviceSpec,
    child: Option<Child>,
    state: ProcessState,
}

impl Device {
    pub fn state(&self) -> ProcessState {
        self.state
    }
    pub fn is_running(&self) -> bool {
        matches!(self.state, ProcessState::Running { .. })
    }
}

/// The demo's devices.
pub struct Fleet {
    env: FleetEnv,
    pub devices: Vec<Device>,
}

impl Fleet {
    pub fn new(env: FleetEnv, specs: Vec<DeviceSpec>) -> Self {
        let devices = specs
            .into_iter()
            .map(|spec| Device {
                spec,
                child: None,
                state: ProcessState::NotStarted,
            })
            .collect();
        Fleet { env, devices }
    }

    /// Starts (or restarts) device `index`.
    pub fn start(&mut self, index: usize) -> std::io::Result<u32> {
        let env = self.env.clone();
        let device = &mut self.devices[index];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&device.spec.log_path)?;
        let spec = &device.spec;
        let stub_interval_ms = env.stub_interval.as_millis().to_string();
        let mut command = Command::new(&env.baton);
        command
            .args(["--log-format", "json", "run"])
            .arg(&spec.project)
            .args(["--device-name", &spec.name])
            .args(["--seed", &spec.seed.to_string()]);
        if let Some(thread_id) = spec.thread_id {
            command.args(["--thread-id", &thread_id.to_string()]);
        }
        let child = command
            .arg("--")
            .arg(&env.baton)
            .arg("mirror-stub")
            .arg("--out")
            .arg(&spec.mirror_out)
            .args(["--interval-ms", &stub_interval_ms])
            .env("BATON_SYNC_DIR", &spec.sync_dir)
            .env("BATON_STATE_DIR", &spec.state_dir)
            .env("BATON_GROUP", &env.group)
            .env("BATON_HOSTNAME", &spec.hostname)
            .env("BATON_TIME_SCALE", env.time_scale.to_string())
            .env("TELEGRAM_BOT_TOKEN", &env.bot_token)
            .env("TELEGRAM_CHAT_ID", env.chat_id.to_string())
            .env("TELEGRAM_API_URL", &env.api_url)
            // A fresh machine: no ~/.config/opencode/telegram.json of the user's leaks in.
            .env("HOME", &spec.home_dir)
            .env("RUST_LOG", "info")
            .env_remove("TELEGRAM_THREAD_ID")
            .env_remove("TELEGRAM_UPDATES_URL")
            .env_remove("TELEGRAM_SEND_URL")
            .env_remove("DEVICE_NAME")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()?;
        let pid = child.id();
        device.child = Some(child);
        device.state = ProcessState::Running { pid };
        Ok(pid)
    }

    /// Sends `signal` to device `index`'s baton (not its child: a crash is baton's own).
    pub fn signal(&self, index: usize, signal: i32) {
        if let ProcessState::Running { pid } = self.devices[index].state {
            // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
            unsafe {
                libc::kill(pid as libc::pid_t, signal);
            }
        }
    }

    /// Reaps devices that exited; returns (index, new state) for each.
    pub fn reap(&mut self) -> Vec<(usize, ProcessState)> {
        let mut changed = Vec::new();
        for (index, device) in self.devices.iter_mut().enumerate() {
            let Some(child) = device.child.as_mut() else {
                continue;
            };
            if let Ok(Some(status)) = child.try_wait() {
                device.state = match (status.code(), status.signal()) {
                    (Some(code), _) => ProcessState::Exited { code },
                    (None, Some(signal)) => ProcessState::Killed { signal },
                    (None, None) => ProcessState::Exited { code: -1 },
                };
                device.child = None;
                changed.push((index, device.state));
            }
        }
        changed
    }

    pub fn running(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.devices.len()).filter(|i| self.devices[*i].is_running())
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let running: Vec<usize> = self.running().collect();
        if running.is_empty() {
            return;
        }
        for index in &running {
            self.signal(*index, libc::SIGTERM);
        }
        let started = Instant::now();
        while self.running().next().is_some() && started.elapsed() < DROP_GRACE {
            self.reap();
            std::thread::sleep(Duration::from_millis(20));
        }
        for device in &mut self.devices {
            if let Some(child) = device.child.as_mut() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
