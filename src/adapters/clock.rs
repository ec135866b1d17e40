//! Clocks: the only place that reads them (the runtime asks here).
//!
//! Owns: the sleep-counting clock that leases are measured with (`CLOCK_BOOTTIME` on
//! Linux; on macOS `CLOCK_MONOTONIC_RAW`, which is `mach_continuous_time` and keeps
//! counting while the lid is closed), the awake-only clock (`CLOCK_MONOTONIC` on Linux,
//! `CLOCK_UPTIME_RAW` on macOS; Rust's `Instant` and tokio's timers use it on Apple
//! platforms), the wall clock (for `written_at` only), and the detector that turns a
//! jump between the first two into "I was asleep". Must never: be read by the core.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::core::Moment;

#[cfg(target_os = "macos")]
const SLEEP_COUNTING: libc::clockid_t = libc::CLOCK_MONOTONIC_RAW;
#[cfg(target_os = "macos")]
const AWAKE_ONLY: libc::clockid_t = libc::CLOCK_UPTIME_RAW;
#[cfg(not(target_os = "macos"))]
const SLEEP_COUNTING: libc::clockid_t = libc::CLOCK_BOOTTIME;
#[cfg(not(target_os = "macos"))]
const AWAKE_ONLY: libc::clockid_t = libc::CLOCK_MONOTONIC;

fn read_ms(clock: libc::clockid_t) -> u64 {
    let mut spec = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into a valid, owned timespec; these clock ids exist on
    // the platforms they are compiled for.
    let result = unsafe { libc::clock_gettime(clock, &mut spec) };
    assert!(result == 0, "BUG: clock_gettime({clock}) failed");
    spec.tv_sec as u64 * 1000 + spec.tv_nsec as u64 / 1_000_000
}

/// Added to every [`Moment`] (about 11.6 days): the core marks a peer dead by moving its
/// change moment back by a timeout, which saturates at zero; right after boot the raw
/// clock is too small for that, so the origin is moved back instead.
const ORIGIN_OFFSET_MS: u64 = 1_000_000_000;

/// The sleep-counting clock, as the core's [`Moment`].
pub fn now() -> Moment {
    Moment(read_ms(SLEEP_COUNTING) + ORIGIN_OFFSET_MS)
}

/// Wall clock, ms since the Unix epoch (0 if the clock is before 1970).
pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

/// A jump this large between the two clocks counts as a sleep.
pub const SLEEP_THRESHOLD: Duration = Duration::from_secs(2);

/// Notices sleeps: the sleep-counting clock ran ahead of the awake-only one. Each clone
/// keeps its own baseline, so the poller and the run loop can each watch for sleeps.
#[derive(Debug, Clone)]
pub struct SleepDetector {
    last_gap_ms: i64,
    threshold: Duration,
}

impl SleepDetector {
    pub fn new(threshold: Duration) -> Self {
        SleepDetector {
            last_gap_ms: Self::gap_ms(),
            threshold,
        }
    }

    fn gap_ms() -> i64 {
        read_ms(SLEEP_COUNTING) as i64 - read_ms(AWAKE_ONLY) as i64
    }

    /// How long the machine slept since the last call, if longer than the threshold.
    pub fn check(&mut self) -> Option<Duration> {
        let gap = Self::gap_ms();
        let slept_ms = gap - self.last_gap_ms;
        self.last_gap_ms = gap;
        let slept = Duration::from_millis(slept_ms.max(0) as u64);
        (slept > self.threshold).then_some(slept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clocks_advance_and_no_sleep_is_seen_while_awake() {
        let mut detector = SleepDetector::new(Duration::from_secs(1));
        let before = now();
        std::thread::sleep(Duration::from_millis(20));
        assert!(now() > before);
        assert_eq!(detector.check(), None);
        assert!(wall_ms() > 1_600_000_000_000);
    }
}
