//! The policy seam: what a simulated device runs. Both mirror-baton's real [`Core`] and
//! the seed's design implement [`DevicePolicy`], so one harness drives both over the same
//! faults.
//!
//! Owns: the [`Action`] vocabulary (the harness's view of effects), [`BatonPolicy`] (the
//! REAL core behind a thin effect translation — no protocol logic here), and the device
//! description both policies are built from. Must never: decide a role itself, or know
//! the other designs (choosing one is [`crate::policy_kind`]'s job).

use baton_core::election;
use baton_core::routing::RouteTable;
use baton_core::{Core, CoreConfig, Effect, Event, Identity, Input, Level, Moment, Role, Timing};

/// What a device asks the world to do. Inputs are the core's own [`Event`]s.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Write `text` to `name` in the device's local replica (the medium replicates it).
    /// With a `seq`, the harness answers `RecordWritten` or `RecordWriteFailed`.
    Write {
        name: String,
        text: String,
        seq: Option<u64>,
    },
    /// Delete `name` in the local replica.
    Delete {
        name: String,
    },
    /// Start polling Telegram, skipping update ids at or below `skip_through` and those
    /// in `also_handled`.
    StartActing {
        skip_through: Option<i64>,
        also_handled: Vec<i64>,
    },
    /// Stop polling; the harness answers with `Event::ActingStopped`.
    StopActing,
    /// Do not poll before this local moment.
    PauseActing {
        until: Moment,
    },
    /// Read the whole folder now; the harness answers with `Event::Scanned`.
    Rescan,
    RequestDownload {
        name: String,
    },
    ProbePid {
        stem: String,
        pid: u32,
    },
    /// Ask Telegram's `pending_update_count`; the harness answers `Event::Witnessed`.
    AskWitness,
    /// The process exits.
    Exit,
    /// Done with the announced sleep: the host may go to sleep now.
    AllowSleep,
    /// The core reported a broken invariant of its own.
    Bug {
        message: String,
    },
    /// A transition or a message, for `--trace`.
    Trace {
        line: String,
    },
}

/// Who a simulated device is: the same for every incarnation of it.
#[derive(Clone, Debug)]
pub struct DeviceSpec {
    pub index: usize,
    pub device_id: String,
    pub hostname: String,
    pub install_id: String,
    /// The forum topic its project serves (`None`: the whole chat); set by the world
    /// for routing runs.
    pub thread_id: Option<i64>,
}

impl DeviceSpec {
    pub fn new(index: usize, host: usize) -> Self {
        DeviceSpec {
            index,
            device_id: format!("mac{host}:/Users/u/project{index}"),
            hostname: format!("mac{host}"),
            install_id: format!("install-{host}"),
            thread_id: None,
        }
    }

    /// The pid this device's `incarnation` runs as (the same rule for both policies).
    pub fn pid(&self, incarnation: u32) -> u32 {
        1_000 + self.index as u32 * 1_000 + incarnation
    }
}

/// One process of one device.
pub trait DevicePolicy {
    /// Handles one input at the device's local moment; pushes what to do to `out`.
    fn handle(&mut self, input: Input, out: &mut Vec<Action>);
    /// The earliest local moment at which [`Event::Tick`] must be delivered.
    fn next_timeout(&self) -> Option<Moment>;
    /// The file names this device may write (its own record, and for the seed its
    /// shared state file): writes elsewhere break an invariant.
    fn own_file(&self) -> String;
    /// The local moment past which this device's poller starts no getUpdates (the
    /// baton's lease; the seed's design has none).
    fn lease_deadline(&self) -> Moment {
        Moment(u64::MAX)
    }
    /// Who serves what, as this device sees it at local moment `now` (the table the
    /// runtime publishes after every input); `None` for a design that does not route.
    fn route_table(&self, _now: Moment, _default_chat: i64) -> Option<RouteTable> {
        None
    }
}

/// mirror-baton: the real [`Core`], its effects translated one to one.
pub struct BatonPolicy {
    core: Core,
    own_file: String,
}

impl BatonPolicy {
    pub fn new(spec: &DeviceSpec, incarnation: u32, seed: u64, timing: Timing) -> Self {
        let identity = Identity {
            device_id: spec.device_id.clone(),
            hostname: spec.hostname.clone(),
            project_dir: format!("/Users/u/project{}", spec.index),
            pid: spec.pid(incarnation),
            instance: format!("i{}-{incarnation}", spec.index),
            install_id: spec.install_id.clone(),
            // Hosts do not reboot in the simulation; processes restart.
            boot_id: format!("boot-{}", spec.hostname),
            priority: 0,
            thread_id: spec.thread_id,
            version: "sim".into(),
        };
        BatonPolicy {
            own_file: baton_core::record::file_name(&spec.device_id),
            core: Core::new(CoreConfig {
                identity,
                timing,
                seed,
            }),
        }
    }

    pub fn core(&self) -> &Core {
        &self.core
    }

    /// Telegram as a second witness, with these rules (before the first input).
    pub fn enable_witness(&mut self, rules: baton_core::witness::WitnessRules) {
        self.core.enable_witness(rules);
    }
}

impl DevicePolicy for BatonPolicy {
    fn handle(&mut self, input: Input, out: &mut Vec<Action>) {
        self.core.handle(input);
        while let Some(effect) = self.core.poll_effect() {
            if let Some(action) = translate(effect) {
                out.push(action);
            }
        }
    }

    fn next_timeout(&self) -> Option<Moment> {
        self.core.next_timeout().map(|timeout| timeout.at)
    }

    fn own_file(&self) -> String {
        self.own_file.clone()
    }

    fn lease_deadline(&self) -> Moment {
        self.core.lease_deadline().unwrap_or_default()
    }

    /// As the runtime's `publish_routes` builds it.
    fn route_table(&self, now: Moment, default_chat: i64) -> Option<RouteTable> {
        let timing = self.core.timing();
        let peers = self.core.peers();
        let own = self.core.own_record();
        let active = if self.core.role() == Role::Active {
            Some(own.device_id.clone())
        } else {
            election::leader(peers, now, timing).map(|peer| peer.record.device_id.clone())
        };
        Some(RouteTable::build(
            peers,
            own,
            now,
            timing,
            default_chat,
            active,
        ))
    }
}

fn translate(effect: Effect) -> Option<Action> {
    Some(match effect {
        Effect::WriteRecord { record } => Action::Write {
            name: baton_core::record::file_name(&record.device_id),
            text: record.to_json(),
            seq: Some(record.seq),
        },
        Effect::DeleteFile { name, .. } => Action::Delete { name },
        Effect::StartActing {
            skip_through,
            also_handled,
            ..
        } => Action::StartActing {
            skip_through,
            also_handled,
        },
        Effect::StopActing { .. } => Action::StopActing,
        Effect::PauseActing { until } => Action::PauseActing { until },
        Effect::Rescan => Action::Rescan,
        Effect::RequestDownload { name } => Action::RequestDownload { name },
        Effect::ProbePid { stem, pid } => Action::ProbePid { stem, pid },
        Effect::AskWitness => Action::AskWitness,
        Effect::Exit { .. } => Action::Exit,
        Effect::AllowSleep { .. } => Action::AllowSleep,
        Effect::Notify {
            level: Level::Error,
            message,
        } if message.starts_with("BUG") => Action::Bug { message },
        Effect::Transition { from, to, .. } => Action::Trace {
            line: format!("{from} -> {to}"),
        },
        Effect::Notify { message, .. } => Action::Trace { line: message },
        Effect::TimerArmed { .. }
        | Effect::ActivationResult { .. }
        | Effect::RememberRefusal { .. }
        | Effect::ForgetRefusal => return None,
    })
}

/// Convenience for events the harness builds.
pub fn input(at: Moment, wall_ms: u64, event: Event) -> Input {
    Input { at, wall_ms, event }
}
