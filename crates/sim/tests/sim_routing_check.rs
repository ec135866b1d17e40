//! The exhaustive check of the owner function (see `baton_sim::routing_check`): the
//! core's `routing::owner` routes every small group by the rules from every consistent
//! view, and the checker finds a counterexample for owner functions that break them.

use baton_core::routing::{Route, Server, owner};
use baton_sim::routing_check::{OwnerFn, OwnerModel, judge};
use stateright::Checker;

const PROPERTY: &str = "every view routes by the rules";

fn holds(model: OwnerModel, label: &str) {
    let checker = model.check();
    println!(
        "{label}: {} groups, every view by the rules",
        checker.unique_state_count()
    );
    checker.assert_properties();
    assert!(checker.is_done());
}

#[test]
fn the_core_owner_routes_every_small_group_by_the_rules() {
    holds(
        OwnerModel::wide(owner),
        "three devices, topics, liveness, priority",
    );
    holds(
        OwnerModel::ties(owner),
        "three devices, the last tie-breaks",
    );
    holds(
        OwnerModel::with_choices(owner),
        "three devices, two choices",
    );
}

/// The counterexample the checker finds for `broken`, and the rule it names.
fn counterexample(model: OwnerModel) -> String {
    let checker = model.clone().check();
    let path = checker
        .discovery(PROPERTY)
        .expect("the checker must catch a broken owner function");
    let group = path.last_state().clone();
    let why = judge(&model, &group).expect_err("BUG: a discovery the judge accepts");
    println!("counterexample: {:?}\n  {why}", path.into_actions());
    why
}

/// Broken: treats every device as live (an offline owner may win).
fn ignores_liveness(
    servers: &[Server<'_>],
    chat_id: i64,
    thread_id: Option<i64>,
    default_chat: i64,
    active: Option<&str>,
    me: &str,
) -> Route {
    let all_live: Vec<Server<'_>> = servers
        .iter()
        .map(|s| Server {
            live: true,
            ..s.clone()
        })
        .collect();
    owner(&all_live, chat_id, thread_id, default_chat, active, me)
}

/// Broken: the first record in the order it came that serves the topic exactly.
fn first_come(
    servers: &[Server<'_>],
    chat_id: i64,
    thread_id: Option<i64>,
    default_chat: i64,
    active: Option<&str>,
    me: &str,
) -> Route {
    match servers.iter().find(|s| s.record.thread_id == thread_id) {
        Some(s) if s.record.device_id == me => Route::Mine,
        Some(s) => Route::Other {
            device_id: s.record.device_id.clone(),
            live: s.live,
        },
        None => owner(servers, chat_id, thread_id, default_chat, active, me),
    }
}

/// Broken: ignores `/activate` choices (the active device, then priority, decide).
fn ignores_choices(
    servers: &[Server<'_>],
    chat_id: i64,
    thread_id: Option<i64>,
    default_chat: i64,
    active: Option<&str>,
    me: &str,
) -> Route {
    let records: Vec<_> = servers
        .iter()
        .map(|s| {
            let mut record = s.record.clone();
            record.topic_choices.clear();
            record
        })
        .collect();
    let cleared: Vec<Server<'_>> = servers
        .iter()
        .zip(&records)
        .map(|(s, record)| Server {
            record,
            ..s.clone()
        })
        .collect();
    owner(&cleared, chat_id, thread_id, default_chat, active, me)
}

#[test]
fn broken_owner_functions_are_caught() {
    type Bounds = fn(OwnerFn) -> OwnerModel;
    let broken: [(OwnerFn, &str, Bounds); 3] = [
        (ignores_liveness, "live beats offline", OwnerModel::wide),
        (first_come, "agreement", OwnerModel::wide),
        (
            ignores_choices,
            "latest /activate wins",
            OwnerModel::with_choices,
        ),
    ];
    for (owner_fn, rule, model) in broken {
        let why = counterexample(model(owner_fn));
        assert!(why.starts_with(rule), "expected {rule:?}, got {why}");
    }
}

/// Found by this check (issue 11): the last tie-break once ranked devices by when the
/// *viewer* last saw each record (its own always `now`), so two devices serving the same
/// topic at the same priority, neither chosen nor active, each found itself the owner —
/// unaddressed mail would have been served by both. The tie-break now reads only the
/// records (`routing::servers`); this test builds both devices' real route tables.
#[test]
fn two_devices_with_the_same_records_agree_on_the_owner_of_their_topic() {
    use baton_core::election::{PeerView, Peers};
    use baton_core::record::{DeviceRecord, Identity, Status};
    use baton_core::routing::RouteTable;
    use baton_core::{Moment, Timing};
    const CHAT: i64 = -100;
    let record = |id: &str, thread: Option<i64>, status: Status| {
        let mut record = DeviceRecord::new(&Identity {
            device_id: id.into(),
            hostname: "h".into(),
            project_dir: "/p".into(),
            pid: 1,
            instance: "i".into(),
            install_id: "x".into(),
            boot_id: String::new(),
            priority: 0,
            thread_id: thread,
            version: String::new(),
        });
        record.status = status;
        record.chat_id = Some(CHAT);
        record
    };
    let (a, b) = (
        record("a", Some(5), Status::Standby),
        record("b", Some(5), Status::Standby),
    );
    let active = record("c", Some(6), Status::Active);
    let now = Moment::from_millis(20_000);
    let peer = |record: &DeviceRecord| PeerView {
        stem: record.device_id.clone(),
        record: record.clone(),
        changed_at: Moment::from_millis(10_000),
        present: true,
    };
    let view = |own: &DeviceRecord, other: &DeviceRecord| {
        let peers: Peers = [peer(other), peer(&active)]
            .into_iter()
            .map(|p| (p.stem.clone(), p))
            .collect();
        let table = RouteTable::build(&peers, own, now, &Timing::default(), CHAT, Some("c".into()));
        match table.route(CHAT, Some(5)) {
            Route::Mine => own.device_id.clone(),
            Route::Other { device_id, .. } => device_id,
            Route::Unserved => "nobody".into(),
        }
    };
    assert_eq!(
        view(&a, &b),
        view(&b, &a),
        "a and b disagree on topic 5's owner"
    );
}
