//! Whether this machine announces sleep to baton: with announcements, an active device
//! whose lid closes hands the bot over in about one sync hop; without, a standby takes
//! over only when the sleeper's lease runs out.
//!
//! Owns: the `sleep_announcements` check, over the power adapter's own probe
//! (`adapters::power::probe`: logind on the system bus on Linux, IOKit on macOS), at
//! the place `Setup::power` names. Must never: take an inhibitor lock or hold anything
//! (the probe keeps nothing), or wait unbounded (the probe gives up after 10 s).

use super::check::{Check, Setup, Verdict};
use crate::adapters::power;

pub async fn check(setup: &Setup) -> Check {
    let support = power::probe(&setup.power).await;
    if support.available {
        return Check::new(
            "sleep_announcements",
            Verdict::Pass,
            format!(
                "sleep announcements: {}; an active device about to sleep hands the bot over first",
                support.detail
            ),
        );
    }
    Check::new(
        "sleep_announcements",
        Verdict::Warn,
        format!("sleep announcements: unavailable ({})", support.detail),
    )
    .fix(
        "without them, when this machine sleeps while active, another device takes over \
         only when its lease runs out (about 50 s). On Linux they come from \
         systemd-logind on the system bus; macOS always has them",
    )
}
