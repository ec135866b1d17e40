//! Which design the simulated devices run, and building one device's process of it.
//!
//! Owns: [`PolicyKind`] (baton's core with its timing, the same core deaf to sleep
//! announcements, baton with Telegram as a second witness, or the seed's design) and the
//! factory over both. Must never: hold protocol logic (the policies do).

use baton_core::Timing;
use baton_core::witness::WitnessRules;

use crate::policy::{BatonPolicy, DevicePolicy, DeviceSpec};
use crate::seed_policy::SeedPolicy;

/// Which design the simulated devices run.
#[allow(clippy::large_enum_variant)] // Copy and short-lived: boxing the timing buys nothing
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PolicyKind {
    /// mirror-baton's core with these timing constants.
    Baton(Timing),
    /// The same core, never told of an announced sleep (as before issue 14): a sleeping
    /// leader is replaced when its lease runs out.
    BatonWithoutSleepNotices(Timing),
    /// mirror-baton's core with Telegram as a second witness (`baton_core::witness`).
    Witness(Timing, WitnessRules),
    /// The TypeScript design of `../shared/seed`.
    Seed,
}

impl PolicyKind {
    pub fn label(&self) -> &'static str {
        match self {
            PolicyKind::Baton(_) => "baton",
            PolicyKind::BatonWithoutSleepNotices(_) => "baton, no sleep notices",
            PolicyKind::Witness(..) => "witness",
            PolicyKind::Seed => "seed",
        }
    }

    /// Whether this design is mirror-baton's core (its invariants are checked).
    pub fn is_baton(&self) -> bool {
        matches!(
            self,
            PolicyKind::Baton(_)
                | PolicyKind::BatonWithoutSleepNotices(_)
                | PolicyKind::Witness(..)
        )
    }

    /// Whether the world tells its devices of an announced sleep.
    pub fn hears_sleep_notices(&self) -> bool {
        matches!(self, PolicyKind::Baton(_) | PolicyKind::Witness(..))
    }

    /// Builds the process for `spec`'s `incarnation`-th start (new instance and pid).
    pub fn spawn(&self, spec: &DeviceSpec, incarnation: u32, seed: u64) -> Box<dyn DevicePolicy> {
        match self {
            PolicyKind::Baton(timing) | PolicyKind::BatonWithoutSleepNotices(timing) => {
                Box::new(BatonPolicy::new(spec, incarnation, seed, *timing))
            }
            PolicyKind::Witness(timing, rules) => {
                let mut policy = BatonPolicy::new(spec, incarnation, seed, *timing);
                policy.enable_witness(*rules);
                Box::new(policy)
            }
            PolicyKind::Seed => Box::new(SeedPolicy::new(spec, seed)),
        }
    }

    /// The pid a device's incarnation runs as (the same rule for both policies).
    pub fn pid(spec: &DeviceSpec, incarnation: u32) -> u32 {
        spec.pid(incarnation)
    }
}
