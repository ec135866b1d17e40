//! One seed, many streams: every component's rng is derived from the run's one seed by
//! its name (quinn-proto's habit), so no two components share a stream by accident and a
//! printed seed replays the whole run.
//!
//! Owns: [`derive`] and [`rng`]. The core itself is the root: its rng is seeded with the
//! seed as given (`Ctx::new`), so transcripts recorded with a seed replay unchanged.
//! Must never: read OS randomness.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// The seed of `component`'s own stream under `seed`: the component's name hashed in,
/// then mixed (SplitMix64's finaliser), so nearby seeds and similar names give unrelated
/// streams.
pub fn derive(seed: u64, component: &str) -> u64 {
    let mut mixed = seed ^ crate::record::stable_hash(component.as_bytes());
    mixed = mixed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    mixed ^ (mixed >> 31)
}

/// `component`'s rng under `seed` (see [`derive`]).
pub fn rng(seed: u64, component: &str) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(derive(seed, component))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_differ_by_component_and_by_seed_and_repeat() {
        assert_eq!(derive(7, "poller"), derive(7, "poller"));
        assert_ne!(derive(7, "poller"), derive(7, "medium"));
        assert_ne!(derive(7, "poller"), derive(8, "poller"));
        assert_ne!(derive(7, "poller"), 7);
    }
}
