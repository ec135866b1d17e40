//! The baseline: the seed's TypeScript design (`../shared/seed/FINAL_SUMMARY.md` and
//! issue 3 point 4), re-told as a sans-IO policy so the same harness can drive it.
//!
//! Owns: a faithful model of the seed's rules — a shared `state.json` naming the active
//! device with its writer's wall-clock heartbeat and the Telegram offset, written by
//! activation, failover and offset updates (last writer wins, as on iCloud); 5–7 s
//! checks that READ the folder; 30–40 s active heartbeats (state file and device file);
//! 5–6 min standby heartbeats; a 120 s staleness timeout judged by comparing the
//! writer's wall clock with the reader's; 0–10 s failover jitter; a claim "verified" by
//! reading back after 500 ms. No sleep handling, no 409 handling, no resignation.
//! Must never: borrow an idea from mirror-baton's core — it is the yardstick.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::policy::{Action, DevicePolicy, DeviceSpec};
use baton_core::{Event, FileState, Input, Moment};

pub const STATE_FILE: &str = "state.json";
const CHECK_MS: (u64, u64) = (5_000, 7_000);
const HEARTBEAT_ACTIVE_MS: (u64, u64) = (30_000, 40_000);
const HEARTBEAT_STANDBY_MS: (u64, u64) = (300_000, 360_000);
const STALE_MS: u64 = 120_000;
const FAILOVER_JITTER_MS: (u64, u64) = (0, 10_000);
const READ_BACK_MS: u64 = 500;

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct SharedState {
    active: String,
    /// The writer's wall clock.
    heartbeat_ms: u64,
    last_update_id: Option<i64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Read {
    Check,
    FailoverRecheck,
    Verify,
}

pub struct SeedPolicy {
    me: String,
    own_file: String,
    rng: ChaCha8Rng,
    now: Moment,
    wall_ms: u64,
    active: bool,
    last_update_id: Option<i64>,
    /// The `active` field as this device last wrote or read it: offset updates rewrite
    /// the file read-modify-write, keeping it (so they do not undo an activation).
    state_active: String,
    check_at: Option<Moment>,
    heartbeat_at: Option<Moment>,
    failover_at: Option<Moment>,
    read_back_at: Option<Moment>,
    pending_read: Option<Read>,
}

impl SeedPolicy {
    pub fn new(spec: &DeviceSpec, seed: u64) -> Self {
        SeedPolicy {
            me: spec.device_id.clone(),
            own_file: format!("seed-device-{}.json", spec.index),
            rng: ChaCha8Rng::seed_from_u64(seed),
            now: Moment(0),
            wall_ms: 0,
            active: false,
            last_update_id: None,
            state_active: String::new(),
            check_at: None,
            heartbeat_at: None,
            failover_at: None,
            read_back_at: None,
            pending_read: None,
        }
    }

    fn after(&mut self, range: (u64, u64)) -> Option<Moment> {
        Some(Moment(
            self.now.0 + self.rng.random_range(range.0..=range.1),
        ))
    }

    fn write_device(&self, out: &mut Vec<Action>) {
        let text = format!(
            "{{\"device\":{:?},\"last_seen_ms\":{}}}\n",
            self.me, self.wall_ms
        );
        out.push(Action::Write {
            name: self.own_file.clone(),
            text,
            seq: None,
        });
    }

    fn write_state(&mut self, active: &str, out: &mut Vec<Action>) {
        self.state_active = active.to_string();
        let state = SharedState {
            active: active.to_string(),
            heartbeat_ms: self.wall_ms,
            last_update_id: self.last_update_id,
        };
        out.push(Action::Write {
            name: STATE_FILE.into(),
            // A struct of strings and numbers always serialises.
            text: serde_json::to_string(&state).expect("BUG: state serialises"),
            seq: None,
        });
    }

    fn heartbeat(&mut self, out: &mut Vec<Action>) {
        self.write_device(out);
        if self.active {
            let me = self.me.clone();
            self.write_state(&me, out);
            self.heartbeat_at = self.after(HEARTBEAT_ACTIVE_MS);
        } else {
            self.heartbeat_at = self.after(HEARTBEAT_STANDBY_MS);
        }
    }

    fn become_active(&mut self, state: Option<&SharedState>, out: &mut Vec<Action>) {
        self.active = true;
        self.last_update_id = self
            .last_update_id
            .max(state.and_then(|s| s.last_update_id));
        out.push(Action::StartActing {
            skip_through: self.last_update_id,
            also_handled: Vec::new(),
        });
        self.heartbeat(out);
    }

    fn is_stale(&self, state: Option<&SharedState>) -> bool {
        state.is_none_or(|s| self.wall_ms.saturating_sub(s.heartbeat_ms) > STALE_MS)
    }

    fn on_read(&mut self, read: Read, state: Option<SharedState>, out: &mut Vec<Action>) {
        if let Some(state) = &state {
            self.state_active = state.active.clone();
        }
        let state = state.as_ref();
        let mine = state.is_some_and(|s| s.active == self.me);
        match read {
            Read::Check if self.active => {
                if state.is_some() && !mine {
                    self.active = false;
                    out.push(Action::StopActing);
                    self.heartbeat_at = self.after(HEARTBEAT_STANDBY_MS);
                }
            }
            Read::Check => {
                if mine {
                    self.become_active(state, out);
                } else if self.is_stale(state) && self.failover_at.is_none() {
                    self.failover_at = self.after(FAILOVER_JITTER_MS);
                }
            }
            Read::FailoverRecheck => {
                if !self.active && (mine || self.is_stale(state)) {
                    self.last_update_id = self
                        .last_update_id
                        .max(state.and_then(|s| s.last_update_id));
                    let me = self.me.clone();
                    self.write_state(&me, out);
                    self.read_back_at = Some(Moment(self.now.0 + READ_BACK_MS));
                }
            }
            Read::Verify => {
                if mine && !self.active {
                    self.become_active(state, out);
                }
            }
        }
    }

    fn fire_timers(&mut self, out: &mut Vec<Action>) {
        let now = self.now;
        let due = |slot: &mut Option<Moment>| slot.take_if(|at| *at <= now).is_some();
        if due(&mut self.heartbeat_at) {
            self.heartbeat(out);
        }
        let mut read = None;
        if due(&mut self.check_at) {
            self.check_at = self.after(CHECK_MS);
            read = Some(Read::Check);
        }
        if due(&mut self.failover_at) {
            read = Some(Read::FailoverRecheck);
        }
        if due(&mut self.read_back_at) {
            read = Some(Read::Verify);
        }
        if let Some(read) = read {
            self.pending_read = Some(read);
            out.push(Action::Rescan);
        }
    }
}

fn shared_state(files: &[baton_core::FileObservation]) -> Option<SharedState> {
    let file = files.iter().find(|f| f.name == STATE_FILE)?;
    match &file.state {
        FileState::Contents { text } => serde_json::from_str(text).ok(),
        _ => None,
    }
}

impl DevicePolicy for SeedPolicy {
    fn handle(&mut self, input: Input, out: &mut Vec<Action>) {
        self.now = self.now.max(input.at);
        self.wall_ms = input.wall_ms;
        self.fire_timers(out);
        match input.event {
            Event::Start => {
                self.write_device(out);
                self.check_at = Some(self.now);
                self.heartbeat_at = self.after(HEARTBEAT_STANDBY_MS);
                self.fire_timers(out);
            }
            Event::Scanned { files } => {
                if let Some(read) = self.pending_read.take() {
                    self.on_read(read, shared_state(&files), out);
                }
            }
            Event::UpdateHandled { update_id } => {
                self.last_update_id = self.last_update_id.max(Some(update_id));
                if self.active {
                    let active = self.state_active.clone();
                    self.write_state(&active, out);
                }
            }
            Event::ActivateAsked { target, .. } if self.active && target != self.me => {
                self.write_state(&target, out);
            }
            Event::ShutdownAsked => out.push(Action::Exit),
            _ => {}
        }
    }

    fn next_timeout(&self) -> Option<Moment> {
        [
            self.check_at,
            self.heartbeat_at,
            self.failover_at,
            self.read_back_at,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn own_file(&self) -> String {
        self.own_file.clone()
    }
}
