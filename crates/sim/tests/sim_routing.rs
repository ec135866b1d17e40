//! Routing in the main simulator (issue 11): the real cores under every fault the
//! simulator injects, three projects on two Macs, each in its own topic, every update
//! routed to its topic's owner through the lagging folder. Invariants on every run: no
//! update lost, none delivered to a device that does not serve its topic, duplicates only
//! for updates polled twice (the election's crash window). Figures:
//! `cargo test -p baton-sim --test sim_routing -- --nocapture`.

use baton_core::Timing;
use baton_sim::model::{FaultRates, HOUR_MS};
use baton_sim::routing_report::{render_routing, run_routing_batch};
use baton_sim::{Batch, PolicyKind};

fn batch(hours: u64, intensity: f64) -> Batch {
    let mut rates = FaultRates::default().intensified(intensity);
    rates.messages_per_hour *= intensity.max(1.0);
    Batch::new(Timing::default(), 3, hours * HOUR_MS, rates)
}

fn judged(batch: &Batch, first: u64, runs: u64) {
    let policies = [PolicyKind::Baton(batch.timing), PolicyKind::Seed];
    let results = run_routing_batch(batch, &policies, first, runs, 2);
    let rows: Vec<(String, _)> = policies
        .iter()
        .map(|p| p.label().to_string())
        .zip(results.iter().cloned())
        .collect();
    eprint!("{}", render_routing(&rows));
    let (baton, seed) = (&results[0], &results[1]);
    assert!(
        baton.violations.is_empty(),
        "seeds {first}..{}: {:#?}",
        first + runs,
        &baton.violations[..baton.violations.len().min(10)]
    );
    let r = &baton.routing;
    assert!(
        r.sent > 0 && r.delivered + r.not_queued_told == r.sent,
        "{r:?}"
    );
    assert_eq!(
        (r.lost, r.misrouted, r.duplicated_outside_crash_window),
        (0, 0, 0)
    );
    // The seed's design serves one topic of three: it drops most of the others.
    assert!(
        seed.routing.dropped_by_design > seed.routing.sent / 3,
        "{:?}",
        seed.routing
    );
}

#[test]
fn routing_under_default_faults_loses_nothing_and_misroutes_nothing() {
    judged(&batch(24, 1.0), 0, 6);
}

#[test]
fn routing_under_packed_faults_loses_nothing_and_misroutes_nothing() {
    // Messages come 08:00–23:00: eleven hours of faults see three hours of them.
    judged(&batch(11, 6.0), 10_000, 8);
}
