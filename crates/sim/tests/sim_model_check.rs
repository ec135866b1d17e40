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
