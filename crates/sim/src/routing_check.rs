//! The exhaustive check of the owner function (issue 11): a stateright model whose
//! states are every small group of device records, each routed by the REAL
//! [`baton_core::routing::owner`] from every consistent view of it.
//!
//! Owns: the abstraction — a group is built one step at a time (a device serving topic
//! 5, topic 6 or the whole chat, live or offline, at a priority, last seen at some
//! moment; then `/activate` choices recorded in some device's record; then which device
//! is active), so the checker reaches every group within the bounds; in each group,
//! every subset of the records that a device may have seen (its own record always in
//! it, and with the same records every viewer judges liveness and seen times the
//! same: *consistently*), in every order, asked by every device of the subset, in
//! every topic. Must never: re-implement the precedence it checks (the properties say
//! what the owner must be like, not how to find it), or read a clock.
//!
//! Why stateright for a pure function: its breadth-first search with deduplication is
//! the enumeration of groups, and a failing property comes back as the shortest path
//! of steps that builds the offending group — a readable counterexample. There are no
//! concurrent transitions to explore here: the orders and subsets are enumerated inside
//! each property, which is cheaper than making them states.
//!
//! "Consistently" is a premise: the runtime's tables ([`baton_core::routing::servers`])
//! take every key from the records (an offline device's stated write time, never the
//! viewer's clock), so two devices holding the same records hold the same inputs. That
//! was not so at first: the seen time was the viewer's, and `sim_routing_check.rs` keeps
//! the reproducer of the disagreement it caused.

use stateright::{Checker, Model, Property};

use baton_core::record::{DeviceRecord, Identity, Status, TopicChoice};
use baton_core::routing::{Route, Server, latest_choice};
use baton_core::timers::Moment;

const CHAT: i64 = -100;
/// The topics updates are routed in: 7 is served by nobody exactly.
const ASKED: [Option<i64>; 4] = [None, Some(5), Some(6), Some(7)];

/// The function under check: [`baton_core::routing::owner`]'s signature.
pub type OwnerFn = fn(&[Server<'_>], i64, Option<i64>, i64, Option<&str>, &str) -> Route;

/// The bounds, and the owner function.
#[derive(Clone)]
pub struct OwnerModel {
    pub devices_max: usize,
    /// The topics a device may serve (`None`: the whole chat).
    pub served: Vec<Option<i64>>,
    pub choices_max: usize,
    /// Priorities 0..priorities, seen moments 0..seen_moments.
    pub priorities: u8,
    pub seen_moments: u8,
    /// Topics of `/activate` choices (kept small: each one multiplies the groups).
    pub choice_topics: Vec<Option<i64>>,
    pub owner: OwnerFn,
}

/// One device of a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Spec {
    pub serves: Option<i64>,
    pub live: bool,
    pub priority: u8,
    pub seen: u8,
}

/// `/activate chosen` typed in `topic`, recorded in `recorder`'s record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Choice {
    pub recorder: u8,
    pub chosen: u8,
    pub topic: Option<i64>,
    pub term: u8,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct Group {
    pub devices: Vec<Spec>,
    pub choices: Vec<Choice>,
    pub active: Option<u8>,
    /// Set once the active device is decided: the group is complete.
    pub sealed: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Step {
    AddDevice(Spec),
    Choose(Choice),
    /// The active device (or none), which completes the group.
    Seal(Option<u8>),
}

fn device_id(index: usize) -> String {
    format!("d{index}")
}

impl Group {
    fn records(&self) -> Vec<DeviceRecord> {
        self.devices
            .iter()
            .enumerate()
            .map(|(index, spec)| {
                let mut record = DeviceRecord::new(&Identity {
                    device_id: device_id(index),
                    hostname: "h".into(),
                    project_dir: "/p".into(),
                    pid: 1,
                    instance: "i".into(),
                    install_id: "x".into(),
                    boot_id: String::new(),
                    priority: i32::from(spec.priority),
                    thread_id: spec.serves,
                    version: String::new(),
                });
                record.status = if spec.live {
                    Status::Standby
                } else {
                    Status::Stopped
                };
                record.chat_id = Some(CHAT);
                record.topic_choices = self
                    .choices
                    .iter()
                    .filter(|choice| usize::from(choice.recorder) == index)
                    .map(|choice| TopicChoice {
                        chat_id: CHAT,
                        thread_id: choice.topic,
                        device_id: device_id(usize::from(choice.chosen)),
                        term: u64::from(choice.term),
                        seq: 1,
                    })
                    .collect();
                record
            })
            .collect()
    }
}

/// Every permutation of `items` (Heap's algorithm; `items` is at most a handful).
fn permutations(items: &[usize]) -> Vec<Vec<usize>> {
    fn heap(k: usize, items: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
        if k <= 1 {
            out.push(items.clone());
            return;
        }
        for i in 0..k {
            heap(k - 1, items, out);
            let swap = if k.is_multiple_of(2) { i } else { 0 };
            items.swap(swap, k - 1);
        }
    }
    let mut out = Vec::new();
    heap(items.len(), &mut items.to_vec(), &mut out);
    out
}

/// What one view decided, named (None: unserved).
fn named(route: Route, me: &str) -> Option<String> {
    match route {
        Route::Mine => Some(me.to_string()),
        Route::Other { device_id, .. } => Some(device_id),
        Route::Unserved => None,
    }
}

/// Why a view's answer breaks the rule, if it does.
pub fn judge(model: &OwnerModel, group: &Group) -> Result<(), String> {
    let records = group.records();
    let count = records.len();
    for mask in 1u32..(1 << count) {
        let seen: Vec<usize> = (0..count).filter(|i| mask & (1 << i) != 0).collect();
        // The active device is known to a view only when its record is in it.
        let active = group
            .active
            .map(usize::from)
            .filter(|a| seen.contains(a))
            .map(device_id);
        let orders = permutations(&seen);
        for topic in ASKED {
            let mut answer: Option<Option<String>> = None;
            for order in &orders {
                // The viewer: the first of the order, so every device of the view asks.
                let me = device_id(order[0]);
                let servers: Vec<Server<'_>> = order
                    .iter()
                    .map(|&i| Server {
                        record: &records[i],
                        live: group.devices[i].live,
                        stated_at: Moment::from_millis(u64::from(group.devices[i].seen)),
                    })
                    .collect();
                let owner = named(
                    (model.owner)(&servers, CHAT, topic, CHAT, active.as_deref(), &me),
                    &me,
                );
                match &answer {
                    Some(first) if *first != owner => {
                        return Err(format!(
                            "agreement: view {seen:?} topic {topic:?}: {first:?} and, as seen by {me} in order {order:?}, {owner:?}"
                        ));
                    }
                    Some(_) => {}
                    None => {
                        judge_answer(group, &records, &seen, topic, active.as_deref(), &owner)?;
                        answer = Some(owner);
                    }
                }
            }
        }
    }
    Ok(())
}

/// The rules an owner obeys, stated from the outside.
fn judge_answer(
    group: &Group,
    records: &[DeviceRecord],
    seen: &[usize],
    topic: Option<i64>,
    active: Option<&str>,
    owner: &Option<String>,
) -> Result<(), String> {
    let serves = |i: &usize| group.devices[*i].serves == topic;
    let exact: Vec<usize> = seen.iter().copied().filter(serves).collect();
    let whole: Vec<usize> = seen
        .iter()
        .copied()
        .filter(|i| group.devices[*i].serves.is_none())
        .collect();
    let set = if exact.is_empty() { whole } else { exact };
    let context = format!("view {seen:?} topic {topic:?} active {active:?}: owner {owner:?}");
    let Some(owner) = owner else {
        return if set.is_empty() {
            Ok(())
        } else {
            Err(format!("served: {context}, but {set:?} serve it"))
        };
    };
    let index = seen
        .iter()
        .copied()
        .find(|i| device_id(*i) == *owner)
        .ok_or_else(|| format!("served: {context} is not in the view"))?;
    if !set.contains(&index) {
        return Err(format!(
            "served (exact beats whole chat): {context}, not one of {set:?}"
        ));
    }
    let live: Vec<usize> = set
        .iter()
        .copied()
        .filter(|i| group.devices[*i].live)
        .collect();
    if !live.is_empty() && !group.devices[index].live {
        return Err(format!(
            "live beats offline: {context}, offline; {live:?} live"
        ));
    }
    let candidates = if live.is_empty() { set } else { live };
    let choice = latest_choice(seen.iter().map(|i| &records[*i]), CHAT, topic);
    if let Some(choice) = choice
        && candidates.iter().any(|i| device_id(*i) == choice.device_id)
    {
        if choice.device_id != *owner {
            return Err(format!(
                "latest /activate wins: {context}, but {} was chosen",
                choice.device_id
            ));
        }
        return Ok(());
    }
    if let Some(active) = active
        && candidates.iter().any(|i| device_id(*i) == active)
        && active != owner
    {
        return Err(format!("the active device serving it wins: {context}"));
    }
    Ok(())
}

impl Model for OwnerModel {
    type State = Group;
    type Action = Step;

    fn init_states(&self) -> Vec<Group> {
        vec![Group::default()]
    }

    fn actions(&self, group: &Group, actions: &mut Vec<Step>) {
        if group.sealed {
            return;
        }
        let count = group.devices.len();
        if group.choices.is_empty() && count < self.devices_max {
            for &serves in &self.served {
                for live in [true, false] {
                    for priority in 0..self.priorities {
                        for seen in 0..self.seen_moments {
                            actions.push(Step::AddDevice(Spec {
                                serves,
                                live,
                                priority,
                                seen,
                            }));
                        }
                    }
                }
            }
        }
        if count == 0 {
            return;
        }
        if group.choices.len() < self.choices_max {
            for recorder in 0..count as u8 {
                for chosen in 0..count as u8 {
                    for &topic in &self.choice_topics {
                        for term in 1..=2 {
                            let choice = Choice {
                                recorder,
                                chosen,
                                topic,
                                term,
                            };
                            // In sorted order only: the same set of choices once.
                            if group.choices.last().is_none_or(|last| *last <= choice) {
                                actions.push(Step::Choose(choice));
                            }
                        }
                    }
                }
            }
        }
        actions.push(Step::Seal(None));
        for active in 0..count as u8 {
            actions.push(Step::Seal(Some(active)));
        }
    }

    fn next_state(&self, group: &Group, step: Step) -> Option<Group> {
        let mut next = group.clone();
        match step {
            Step::AddDevice(spec) => next.devices.push(spec),
            Step::Choose(choice) => next.choices.push(choice),
            Step::Seal(active) => {
                next.active = active;
                next.sealed = true;
            }
        }
        Some(next)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![Property::always(
            "every view routes by the rules",
            |model: &OwnerModel, group: &Group| !group.sealed || judge(model, group).is_ok(),
        )]
    }
}

impl OwnerModel {
    /// Up to three devices serving topic 5, topic 6 or the whole chat, live or not, at
    /// two priorities; no `/activate` choice.
    pub fn wide(owner: OwnerFn) -> OwnerModel {
        OwnerModel {
            devices_max: 3,
            served: vec![None, Some(5), Some(6)],
            choices_max: 0,
            priorities: 2,
            seen_moments: 1,
            choice_topics: Vec::new(),
            owner,
        }
    }

    /// The last tie-breaks: up to three devices serving topic 5, live or not, at two
    /// priorities and two seen moments.
    pub fn ties(owner: OwnerFn) -> OwnerModel {
        OwnerModel {
            devices_max: 3,
            served: vec![Some(5)],
            choices_max: 0,
            priorities: 2,
            seen_moments: 2,
            choice_topics: Vec::new(),
            owner,
        }
    }

    /// Up to three devices serving topic 5 or the whole chat, live or not, with up to
    /// two `/activate` choices in topic 5 (any recorder, any chosen, two terms).
    pub fn with_choices(owner: OwnerFn) -> OwnerModel {
        OwnerModel {
            devices_max: 3,
            served: vec![None, Some(5)],
            choices_max: 2,
            priorities: 1,
            seen_moments: 1,
            choice_topics: vec![Some(5)],
            owner,
        }
    }

    pub fn check(self) -> impl Checker<Self> {
        self.checker().spawn_bfs().join()
    }
}
