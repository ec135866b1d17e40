//! The exhaustive check of the election rules (see `baton_sim::check`): safe for
//! every interleaving while the delay stays under the settle window, and a counterexample
//! as soon as it does not.

use baton_sim::check::ElectionModel;
use stateright::Checker;

const PROPERTY: &str = "at most one device active";

#[test]
fn three_devices_never_both_active_within_the_settle_bound() {
    for (delay_max, settle, crashes_max) in [(1, 2, 1), (2, 3, 0)] {
        let model = ElectionModel {
            delay_max,
            settle,
            crashes_max,
            contentions_max: 1,
            horizon: 3,
            witness: false,
        };
        let checker = model.check();
        println!(
            "delay ≤ {delay_max}, settle {settle}: {} states, all safe",
            checker.unique_state_count()
        );
        checker.assert_properties();
        assert!(checker.is_done());
    }
}

#[test]
fn a_delay_as_long_as_the_settle_window_breaks_it() {
    let model = ElectionModel {
        delay_max: 2,
        settle: 2,
        crashes_max: 0,
        contentions_max: 1,
        horizon: 2,
        witness: false,
    };
    let checker = model.check();
    let path = checker
        .discovery(PROPERTY)
        .expect("with delay = settle two contenders can both miss the other's claim");
    println!("counterexample (delay ≤ 2, settle 2):");
    for action in path.into_actions() {
        println!("  {action:?}");
    }
}

#[test]
fn a_witness_that_condemns_any_leader_at_any_moment_keeps_one_active_within_the_bound() {
    // One device wins; another condemns it on the witness's word and claims; a crash
    // anywhere. (Two contentions each is out of reach in the suite's time.)
    let model = ElectionModel {
        delay_max: 1,
        settle: 2,
        crashes_max: 1,
        contentions_max: 1,
        horizon: 3,
        witness: true,
    };
    let checker = model.check();
    println!(
        "witness on, delay ≤ 1, settle 2: {} states, all safe",
        checker.unique_state_count()
    );
    checker.assert_properties();
    assert!(checker.is_done());
}

#[test]
fn with_the_witness_a_delay_as_long_as_the_settle_window_still_breaks_it() {
    let model = ElectionModel {
        delay_max: 2,
        settle: 2,
        crashes_max: 0,
        contentions_max: 1,
        horizon: 2,
        witness: true,
    };
    let checker = model.check();
    let path = checker
        .discovery(PROPERTY)
        .expect("the witness does not make a too-long delay safe");
    let actions = path.into_actions();
    println!("counterexample with the witness (delay ≤ 2, settle 2): {actions:?}");
}
