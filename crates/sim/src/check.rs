//! The exhaustive check: a stateright model of three devices electing a leader over a
//! medium with bounded delay and crashes, whose decisions are made by the REAL election
//! rules (`baton_core::election`: `leader`, `highest_claim`, `handoff_in_transit`,
//! `outranked`, `highest_term`, `claim_key`, `is_live`) on the real record type.
//!
//! Owns: the abstraction — integer time units; every record write reaches each peer at
//! a moment chosen by the checker within `delay_max` units (any interleaving, any
//! order across files, latest version wins per file); a claim settles `settle` units
//! after it is written; a standby may contend at ANY moment its view shows no live
//! leader, claim or handoff (failover jitter is every possible value); up to
//! `crashes_max` devices stop at any moment (their writes in flight still land);
//! liveness never lapses within the horizon (leases are the simulator's business, the
//! race between claims is this model's). Must never: re-implement a rule the core has.
//!
//! Telegram as a second witness (`baton_core::witness`) is in the model as what it
//! does to the election, with the witness as an adversary: with `witness` on, a
//! standby may at ANY moment condemn the leader its view shows (any reading, right or
//! wrong), and that record then counts as lapsed in its view until a newer `seq` of it
//! arrives — exactly what the core does (`witnessing.rs`, `Ctx::condemn`). The
//! witness's other power, deferring a takeover, only removes moments at which a
//! standby contends; the model already explores every moment, never included.
//!
//! The property: never two devices Active (and not crashed) at once. It holds for every
//! interleaving when `delay_max < settle`, and the checker finds a counterexample as soon
//! as `delay_max ≥ settle`. That is twice as loose as `Timing::settle_bound()` (half the
//! window): a contender that activates before a higher claim reaches it is Active only
//! until that claim arrives (`active_evaluate` steps down), which is before the higher
//! claimant's own window ends. The core keeps the conservative half-window figure as
//! its advertised bound; the simulator classifies incidents by it too.

use std::collections::BTreeMap;
use std::time::Duration;

use stateright::{Checker, Model, Property};

use baton_core::election::{self, PeerView, Peers};
use baton_core::record::{DeviceRecord, Identity, Status};
use baton_core::{Moment, Timing};

pub const DEVICES: usize = 3;

/// The model's knobs (time in abstract units; one unit is one second to the rules).
#[derive(Clone, Debug)]
pub struct ElectionModel {
    pub delay_max: u8,
    pub settle: u8,
    pub crashes_max: u8,
    /// Each device contends at most this often (keeps the state space finite).
    pub contentions_max: u8,
    pub horizon: u8,
    /// Telegram as a second witness: a standby may condemn the leader it sees (once).
    pub witness: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    Standby,
    Contending { term: u8, since: u8 },
    Active { term: u8 },
    Crashed,
}

/// What a record says, as far as these rules care.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Written {
    pub status: Status,
    pub term: u8,
    pub seq: u8,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Device {
    pub role: Role,
    pub seq: u8,
    pub contentions: u8,
    /// Latest record seen from each peer. (When it was seen does not matter: nothing
    /// lapses within the horizon, so it is left out of the state.)
    pub view: BTreeMap<usize, Written>,
    /// The leader record (peer, seq) this device condemned on the witness's word: it
    /// counts as lapsed until a newer seq of that peer is seen.
    pub condemned: Option<(usize, u8)>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InFlight {
    pub from: usize,
    pub to: usize,
    pub written: Written,
    pub deadline: u8,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct State {
    pub now: u8,
    pub crashes: u8,
    pub devices: Vec<Device>,
    pub in_flight: Vec<InFlight>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    Tick,
    Deliver(usize),
    Contend(usize),
    Settle(usize),
    Crash(usize),
    /// The witness says the leader this standby sees is not serving.
    Condemn(usize),
}

fn device_id(index: usize) -> String {
    format!("mac:/project{index}")
}

/// The timing the rules see: liveness beyond the horizon, so nothing lapses.
fn timing() -> Timing {
    Timing {
        liveness_active: Duration::from_secs(3_600),
        liveness_standby: Duration::from_secs(3_600),
        ..Timing::default()
    }
}

/// Time as the rules see it: an hour in, so a condemned record can be dated a liveness
/// timeout back (`Ctx::condemn` backdates the same way).
fn moment(units: u8) -> Moment {
    Moment((3_600 + u64::from(units)) * 1_000)
}

/// The view as the real election functions take it.
fn peers_of(device: &Device) -> Peers {
    device
        .view
        .iter()
        .map(|(peer, written)| {
            let identity = Identity {
                device_id: device_id(*peer),
                hostname: "mac".into(),
                project_dir: format!("/project{peer}"),
                pid: 0,
                instance: format!("i{peer}"),
                install_id: "x".into(),
                boot_id: String::new(),
                priority: 0,
                thread_id: None,
                version: String::new(),
            };
            let mut record = DeviceRecord::new(&identity);
            record.status = written.status;
            record.term = u64::from(written.term);
            record.seq = u64::from(written.seq);
            let stem = format!("d{peer}");
            let condemned = device.condemned == Some((*peer, written.seq));
            let view = PeerView {
                stem: stem.clone(),
                record,
                // Seen at the start (nothing lapses within the horizon), or a liveness
                // timeout before it when condemned.
                changed_at: if condemned { Moment(0) } else { moment(0) },
                present: true,
            };
            (stem, view)
        })
        .collect()
}

impl State {
    pub fn active_count(&self) -> usize {
        self.devices
            .iter()
            .filter(|d| matches!(d.role, Role::Active { .. }))
            .count()
    }

    fn write(&mut self, from: usize, status: Status, term: u8, delay_max: u8) {
        let device = &mut self.devices[from];
        device.seq += 1;
        let written = Written {
            status,
            term,
            seq: device.seq,
        };
        for to in 0..DEVICES {
            if to != from {
                self.in_flight.push(InFlight {
                    from,
                    to,
                    written,
                    deadline: self.now + delay_max,
                });
            }
        }
    }
}

impl ElectionModel {
    /// The standby rule: contend only when no live leader, handoff or claim is seen.
    fn may_contend(&self, state: &State, index: usize) -> bool {
        let device = &state.devices[index];
        let peers = peers_of(device);
        let (now, t) = (moment(state.now), timing());
        device.role == Role::Standby
            && device.contentions < self.contentions_max
            && state.now < self.horizon
            && election::leader(&peers, now, &t).is_none()
            && election::handoff_in_transit(&peers, now, &t).is_none()
            && election::highest_claim(&peers, now, &t).is_none()
    }

    /// The witness's condemnation: a standby that sees a leader may make it lapse.
    fn may_condemn(&self, state: &State, index: usize) -> Option<(usize, u8)> {
        let device = &state.devices[index];
        if !self.witness || device.role != Role::Standby || device.condemned.is_some() {
            return None;
        }
        let peers = peers_of(device);
        let leader = election::leader(&peers, moment(state.now), &timing())?;
        let peer = (0..DEVICES).find(|p| leader.stem == format!("d{p}"))?;
        Some((peer, device.view[&peer].seq))
    }

    /// The contender's rule at the end of its settle window (machine.rs
    /// `contending_blocker`): a higher live claim or a live leader sends it back.
    fn blocked(state: &State, index: usize, term: u8) -> bool {
        let peers = peers_of(&state.devices[index]);
        let (now, t) = (moment(state.now), timing());
        let me = device_id(index);
        election::outranked(&peers, (u64::from(term), me.as_str()), now, &t)
            || election::leader(&peers, now, &t).is_some()
    }
}

impl Model for ElectionModel {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        let device = Device {
            role: Role::Standby,
            seq: 0,
            contentions: 0,
            view: BTreeMap::new(),
            condemned: None,
        };
        vec![State {
            now: 0,
            crashes: 0,
            devices: vec![device; DEVICES],
            in_flight: Vec::new(),
        }]
    }

    fn actions(&self, state: &State, actions: &mut Vec<Action>) {
        let due_delivery = state.in_flight.iter().any(|m| m.deadline <= state.now);
        let due_settle = state.devices.iter().any(|d| {
            matches!(d.role, Role::Contending { since, .. } if since + self.settle <= state.now)
        });
        let busy = !state.in_flight.is_empty()
            || state
                .devices
                .iter()
                .any(|d| matches!(d.role, Role::Contending { .. }));
        if !due_delivery && !due_settle && (state.now < self.horizon || busy) {
            actions.push(Action::Tick);
        }
        for index in 0..state.in_flight.len() {
            actions.push(Action::Deliver(index));
        }
        for index in 0..DEVICES {
            if self.may_contend(state, index) {
                actions.push(Action::Contend(index));
            }
            let role = state.devices[index].role;
            if matches!(role, Role::Contending { since, .. } if since + self.settle <= state.now) {
                actions.push(Action::Settle(index));
            }
            if role != Role::Crashed && state.crashes < self.crashes_max {
                actions.push(Action::Crash(index));
            }
            if state.now < self.horizon && self.may_condemn(state, index).is_some() {
                actions.push(Action::Condemn(index));
            }
        }
    }

    fn next_state(&self, last: &State, action: Action) -> Option<State> {
        let mut state = last.clone();
        match action {
            Action::Tick => state.now += 1,
            Action::Deliver(index) => {
                let message = state.in_flight.remove(index);
                let device = &mut state.devices[message.to];
                let newer = device
                    .view
                    .get(&message.from)
                    .is_none_or(|seen| message.written.seq > seen.seq);
                if newer {
                    device.view.insert(message.from, message.written);
                }
                self.react(&mut state, message.to);
            }
            Action::Contend(index) => {
                let peers = peers_of(&state.devices[index]);
                let term = election::highest_term(&peers) as u8 + 1;
                let device = &mut state.devices[index];
                device.contentions += 1;
                device.role = Role::Contending {
                    term,
                    since: state.now,
                };
                state.write(index, Status::Contending, term, self.delay_max);
            }
            Action::Settle(index) => {
                let Role::Contending { term, .. } = state.devices[index].role else {
                    return None;
                };
                if Self::blocked(&state, index, term) {
                    state.devices[index].role = Role::Standby;
                    state.write(index, Status::Standby, term, self.delay_max);
                } else {
                    state.devices[index].role = Role::Active { term };
                    state.write(index, Status::Active, term, self.delay_max);
                }
            }
            Action::Crash(index) => {
                state.devices[index].role = Role::Crashed;
                state.crashes += 1;
            }
            Action::Condemn(index) => {
                state.devices[index].condemned = Some(self.may_condemn(&state, index)?);
            }
        }
        // Messages in flight are a set: one canonical order keeps the state space small.
        state.in_flight.sort();
        Some(state)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![Property::always(
            "at most one device active",
            |_, state: &State| state.active_count() <= 1,
        )]
    }
}

impl ElectionModel {
    /// What a device does on seeing a record: an Active steps down for a higher claim
    /// (machine.rs `active_evaluate`); a contender backs off at once when blocked.
    fn react(&self, state: &mut State, index: usize) {
        match state.devices[index].role {
            Role::Active { term } => {
                let peers = peers_of(&state.devices[index]);
                let me = device_id(index);
                let (now, t) = (moment(state.now), timing());
                if election::outranked(&peers, (u64::from(term), me.as_str()), now, &t) {
                    state.devices[index].role = Role::Standby;
                    state.write(index, Status::Standby, term, self.delay_max);
                }
            }
            Role::Contending { term, .. } if Self::blocked(state, index, term) => {
                state.devices[index].role = Role::Standby;
                state.write(index, Status::Standby, term, self.delay_max);
            }
            _ => {}
        }
    }

    /// Runs the checker to completion (breadth first, so a counterexample is shortest).
    pub fn check(self) -> impl Checker<Self> {
        self.checker().spawn_bfs().join()
    }
}
