//! The doctor's seam to the operating system: the few facts it cannot read from plain
//! files — whether a file is dataless (evicted by iCloud), whether the sleep-counting
//! clock works, and whether the service manager has the agent loaded.
//!
//! Owns: [`OsProbes`] and [`RealOs`], the real probes (`stat` flags, `clock_gettime`,
//! `launchctl print`, `systemctl --user is-active`). Tests present a healthy or a broken
//! machine through their own `OsProbes`; everything else the doctor looks at (folders,
//! records, agent files, the Bot API) is real in tests too. Must never: change anything
//! (it only asks), or block for long (every command has a timeout).

use std::path::Path;
use std::time::Duration;

use crate::agent::ServiceManager;

/// Whether the service manager has a job loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Loaded {
    Yes,
    No {
        said: String,
    },
    /// The service manager could not be asked (not installed, no user session).
    Unknown {
        why: String,
    },
}

/// The sleep-counting clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SleepClock {
    /// Its name on this OS (`CLOCK_BOOTTIME`, `CLOCK_MONOTONIC_RAW`).
    pub name: &'static str,
    /// `Err` when it cannot be read or does not count at least as far as the awake-only
    /// clock (it must include every second the awake clock counts).
    pub works: Result<(), String>,
}

/// What the doctor asks the OS.
pub trait OsProbes: Send + Sync {
    /// The file at `path` has no local data (macOS: `SF_DATALESS`, or size > 0 with no
    /// blocks): reading it blocks while iCloud downloads it.
    fn is_dataless(&self, path: &Path) -> bool;
    /// The clock leases are measured with.
    fn sleep_clock(&self) -> SleepClock;
    /// The service manager this OS uses for agents.
    fn service_manager(&self) -> ServiceManager;
    /// Whether the agent `label` is loaded (launchd) or active (systemd).
    fn agent_loaded(&self, label: &str) -> Loaded;
}

/// The real machine.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealOs;

#[cfg(target_os = "macos")]
const SLEEP_COUNTING: (libc::clockid_t, &str) = (libc::CLOCK_MONOTONIC_RAW, "CLOCK_MONOTONIC_RAW");
#[cfg(target_os = "macos")]
const AWAKE_ONLY: libc::clockid_t = libc::CLOCK_UPTIME_RAW;
#[cfg(not(target_os = "macos"))]
const SLEEP_COUNTING: (libc::clockid_t, &str) = (libc::CLOCK_BOOTTIME, "CLOCK_BOOTTIME");
#[cfg(not(target_os = "macos"))]
const AWAKE_ONLY: libc::clockid_t = libc::CLOCK_MONOTONIC;

fn read_clock_ms(clock: libc::clockid_t) -> Result<i128, String> {
    let mut spec = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into a valid, owned timespec.
    let result = unsafe { libc::clock_gettime(clock, &mut spec) };
    if result != 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    Ok(i128::from(spec.tv_sec) * 1000 + i128::from(spec.tv_nsec) / 1_000_000)
}

impl OsProbes for RealOs {
    #[cfg(target_os = "macos")]
    fn is_dataless(&self, path: &Path) -> bool {
        use std::os::darwin::fs::MetadataExt;
        const SF_DATALESS: u32 = 0x4000_0000;
        std::fs::symlink_metadata(path).is_ok_and(|meta| {
            meta.st_flags() & SF_DATALESS != 0 || (meta.len() > 0 && meta.st_blocks() == 0)
        })
    }

    #[cfg(not(target_os = "macos"))]
    fn is_dataless(&self, _path: &Path) -> bool {
        false
    }

    fn sleep_clock(&self) -> SleepClock {
        let (clock, name) = SLEEP_COUNTING;
        let works = read_clock_ms(clock).and_then(|sleep_counting| {
            let awake = read_clock_ms(AWAKE_ONLY)?;
            // Both start at boot; the sleep-counting one includes every awake second.
            if sleep_counting + 1000 < awake {
                Err(format!(
                    "it reads {sleep_counting} ms, behind the awake-only clock's {awake} ms"
                ))
            } else {
                Ok(())
            }
        });
        SleepClock { name, works }
    }

    fn service_manager(&self) -> ServiceManager {
        ServiceManager::native()
    }

    fn agent_loaded(&self, label: &str) -> Loaded {
        let (program, args): (&str, Vec<String>) = match self.service_manager() {
            ServiceManager::Launchd => {
                // SAFETY: getuid has no preconditions.
                let uid = unsafe { libc::getuid() };
                (
                    "launchctl",
                    vec!["print".into(), format!("gui/{uid}/{label}")],
                )
            }
            ServiceManager::Systemd => (
                "systemctl",
                vec![
                    "--user".into(),
                    "is-active".into(),
                    format!("{label}.service"),
                ],
            ),
        };
        match run_bounded(program, &args, Duration::from_secs(5)) {
            Err(why) => Loaded::Unknown { why },
            Ok((true, _)) => Loaded::Yes,
            // `systemctl is-active` prints the unit's state; launchctl says it has no such
            // service. Anything else (no user session bus, say) tells nothing.
            Ok((false, said))
                if SYSTEMD_NOT_ACTIVE.contains(&said.as_str())
                    || said.contains("Could not find service") =>
            {
                Loaded::No { said }
            }
            Ok((false, said)) => Loaded::Unknown {
                why: format!("{program}: {said}"),
            },
        }
    }
}

/// The states `systemctl is-active` prints for a unit that is not running.
const SYSTEMD_NOT_ACTIVE: &[&str] = &[
    "inactive",
    "failed",
    "activating",
    "deactivating",
    "reloading",
    "unknown",
];

/// Runs a command with no input, killed after `timeout`: (success, first output line).
fn run_bounded(
    program: &str,
    args: &[String],
    timeout: Duration,
) -> Result<(bool, String), String> {
    let mut child = std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|error| format!("cannot run {program}: {error}"))?;
    let started = std::time::Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                let output = child
                    .wait_with_output()
                    .map_err(|error| format!("{program}: {error}"))?;
                let text = format!(
                    "{}{}",
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                );
                let first = text.lines().next().unwrap_or("").trim().to_string();
                return Ok((status.success(), first));
            }
            Ok(None) if started.elapsed() > timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{program} did not answer within {timeout:?}"));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(error) => return Err(format!("{program}: {error}")),
        }
    }
}
