//! The routing simulator's invariants over seeded runs (issue 11), and its figures side
//! by side with today's design: `cargo test -p baton-sim --test sim_routing -- --nocapture`.

use baton_sim::routing::{RoutingOutcome, median_ms, simulate, standard_run};

const SEEDS: u64 = 12;

fn check(seed: u64, outcome: &RoutingOutcome) {
    assert_eq!(outcome.lost, 0, "seed {seed}: lost {outcome:?}");
    assert_eq!(outcome.misrouted, 0, "seed {seed}: misrouted");
    assert_eq!(
        outcome.duplicates_outside_crash_window, 0,
        "seed {seed}: duplicates outside the crash window"
    );
}

#[test]
fn routing_loses_nothing_misroutes_nothing_and_duplicates_only_in_the_crash_window() {
    let (mut own, mut same, mut other) = (Vec::new(), Vec::new(), Vec::new());
    let (mut lost_today, mut sent, mut unserved) = (0, 0, 0);
    let (mut duplicates, mut inversions, mut inversions_calm) = (0, 0, 0);
    for seed in 0..SEEDS {
        let calm = simulate(&standard_run(seed, false));
        check(seed, &calm);
        own.extend(&calm.latency_own_ms);
        same.extend(&calm.latency_same_host_ms);
        other.extend(&calm.latency_other_host_ms);
        lost_today += calm.lost_by_todays_design;
        sent += calm.sent;
        unserved += calm.unserved;
        inversions_calm += calm.order_inversions;
        let faulty = simulate(&standard_run(seed, true));
        check(seed, &faulty);
        duplicates += faulty.duplicates;
        inversions += faulty.order_inversions;
    }
    assert_eq!(inversions_calm, 0, "per-topic order without faults");
    eprintln!(
        "routing, {SEEDS} seeds × 300 updates, 3 projects on 2 hosts + 1 unserved topic (sync median 2.8 s):\n\
         delivery p50: own topic {} ms, same host {} ms, other host {} ms\n\
         today's design loses {lost_today} of {sent} ({unserved} in the unserved topic); routing loses 0\n\
         with faults (crash of the active, a reader asleep 300 s, an id reset): 0 lost, 0 misrouted, \
         {duplicates} crash-window duplicates, {inversions} per-topic order inversions",
        median_ms(&own),
        median_ms(&same),
        median_ms(&other),
    );
}
