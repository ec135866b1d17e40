//! Announced sleeps in the simulator: on the same seeds and fault schedules, baton's core
//! told of each announced sleep (the lid closes 29 s before the sleep starts) hands the
//! bot over in about one sync hop, where the same core deaf to the notices waits for
//! the lease; every invariant holds for both. A failure prints the seeds; replay one
//! with `baton simulate --seed S --runs 1 --days 2 --compare --trace`.

use baton_core::Timing;
use baton_sim::metrics::{RunMetrics, quantile};
use baton_sim::model::{DAY_MS, FaultRates};
use baton_sim::{Batch, PolicyKind, run_batch};

const FIRST_SEED: u64 = 40_000;
const RUNS: u64 = 10;
/// Days of faults per run, at the default rates (the target is about them).
const DAYS: u64 = 2;

#[test]
fn an_announced_sleep_costs_about_one_sync_hop_and_an_unannounced_one_a_lease() {
    let batch = Batch::new(Timing::default(), 3, DAYS * DAY_MS, FaultRates::default());
    let timing = Timing::default();
    let policies = [
        PolicyKind::Baton(timing),
        PolicyKind::BatonWithoutSleepNotices(timing),
    ];
    let results: Vec<RunMetrics> = run_batch(&batch, &policies, FIRST_SEED, RUNS, 2);
    for (policy, metrics) in policies.iter().zip(&results) {
        assert!(
            metrics.violations.is_empty(),
            "{} (seeds {FIRST_SEED}..{}): {:?}",
            policy.label(),
            FIRST_SEED + RUNS,
            metrics.violations
        );
    }
    let (heard, deaf) = (&results[0], &results[1]);
    let p50 = |samples: &[u64]| quantile(samples, 0.5).expect("announced sleeps of a leader");
    let one_way_p50_ms = heard.delays.quantile_ms(0.5);
    let heard_p50 = p50(&heard.sleep_takeover_announced_ms);
    let deaf_p50 = p50(&deaf.sleep_takeover_announced_ms);
    println!(
        "announced sleeps of the leader: heard p50 {heard_p50} ms (n={}), deaf p50 \
         {deaf_p50} ms (n={}); median one-way sync delay {one_way_p50_ms} ms",
        heard.sleep_takeover_announced_ms.len(),
        deaf.sleep_takeover_announced_ms.len()
    );
    assert!(
        heard.sleep_takeover_announced_ms.len() >= 20,
        "too few samples: {}",
        heard.sleep_takeover_announced_ms.len()
    );
    // The target: p50 ≤ 1.5 × the median one-way sync delay.
    assert!(
        heard_p50 * 2 <= one_way_p50_ms * 3,
        "announced: {heard_p50} ms vs a median sync delay of {one_way_p50_ms} ms"
    );
    let lease_ms = timing.lease().as_millis() as u64;
    assert!(
        deaf_p50 >= lease_ms,
        "deaf to notices, a sleeping leader waits for its lease: {deaf_p50} ms"
    );
}
