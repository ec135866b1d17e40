//! `baton-sim`: the core driven deterministically, with no IO — the multi-device
//! simulator behind `baton simulate`, the model check, and fixture replay behind
//! `baton replay`.
//!
//! Owns: running many seeded scenarios of N devices — each running the REAL
//! [`baton_core::Core`] (or, for comparison, the seed's design) — over a modelled
//! iCloud Drive, checking invariants on every run and collecting the figures that chose
//! [`baton_core::Timing::default`]; and replaying one device's recorded inputs through
//! the core into a transcript ([`replay`]). Must never: read a clock or OS randomness
//! inside a run (the binary draws a base seed when none is given, and prints it), do IO
//! beyond reading a fixture file, or carry protocol logic of its own: devices decide,
//! the world only delivers. It depends on the core and on no other crate of ours.
//!
//! Layout: [`model`] (delay model, fault schedule), [`world`] (the event loop, medium,
//! Telegram, invariants), [`policy`] (the seam both designs implement, and baton's
//! core behind it), [`seed_policy`] (the baseline), [`policy_kind`] (which design a run
//! uses), [`metrics`], [`check`] (the exhaustive model check, with stateright),
//! [`routing_check`] (the exhaustive check of the owner function, with stateright),
//! [`routing_report`] (routing runs of the world — `world/mail.rs` — and their rows),
//! [`replay`] (fixtures, the replayer and transcripts).
//!
//! Replay: every run prints its seed; `baton simulate --seed S --runs 1` replays it.

pub mod check;
pub mod metrics;
pub mod model;
pub mod policy;
pub mod policy_kind;
pub mod replay;
pub mod routing_check;
pub mod routing_report;
pub mod seed_policy;
pub mod world;

use std::time::Duration;

use baton_core::Timing;
use metrics::{Quantiles, RunMetrics, Summary};
use model::{DelayModel, FaultRates, MINUTE_MS, Scenario};
pub use policy_kind::PolicyKind;
use world::{RunConfig, World};

/// What one batch of runs is: shared by the CLI, the test suite and tuning.
#[derive(Clone, Debug)]
pub struct Batch {
    pub timing: Timing,
    pub delay: DelayModel,
    pub rates: FaultRates,
    pub devices: usize,
    pub fault_ms: u64,
    pub trace: bool,
}

impl Batch {
    pub fn new(timing: Timing, devices: usize, fault_ms: u64, rates: FaultRates) -> Self {
        Batch {
            timing,
            delay: DelayModel::default(),
            rates,
            devices,
            fault_ms,
            trace: false,
        }
    }

    /// How the harness judges runs of this batch (bounds derived from the baton timing,
    /// applied to both policies alike).
    pub fn run_config(&self, policy: PolicyKind) -> RunConfig {
        let t = &self.timing;
        let ms = |d: Duration| d.as_millis() as u64;
        let lookback = t.liveness_active
            + t.failover_jitter.max()
            + t.settle_window
            + t.heartbeat_active.max();
        let convergence = t.liveness_standby
            + t.liveness_active
            + t.failover_jitter.max()
            + t.settle_window
            + t.backstop_scan.max();
        let hours = self.fault_ms / model::HOUR_MS + 3;
        RunConfig {
            policy,
            delay: self.delay,
            settle_bound_ms: ms(t.settle_bound()),
            lookback_ms: ms(lookback),
            convergence_bound_ms: ms(convergence),
            check_window_ms: 10 * MINUTE_MS,
            backstop_max_ms: ms(t.backstop_scan.max()),
            lease_ms: ms(t.liveness_active),
            retention_ms: ms(t.record_retention),
            steps_max: 100_000 + hours * self.devices as u64 * 50_000,
            trace: self.trace,
            routing: false,
        }
    }

    pub fn scenario(&self, seed: u64) -> Scenario {
        Scenario::generate(seed, self.devices, self.fault_ms, &self.rates)
    }

    /// One seeded run of one policy.
    pub fn run(&self, policy: PolicyKind, seed: u64) -> RunMetrics {
        World::new(self.run_config(policy), self.scenario(seed)).run()
    }

    /// Cold start of `devices` at once, no faults, delays within the bound: the time
    /// until exactly one device acts for good.
    pub fn convergence(&self, policy: PolicyKind, devices: usize, seed: u64) -> RunMetrics {
        let quiet = FaultRates {
            crash_per_day: 0.0,
            resign_per_day: 0.0,
            sleep_per_host_day: 0.0,
            cut_per_host_day: 0.0,
            stall_per_host_day: 0.0,
            evict_per_device_day: 0.0,
            duplicate_per_device_day: 0.0,
            messages_per_hour: 0.0,
            activate_per_day: 0.0,
            freeze_per_day: 0.0,
            refuse_writes_per_host_day: 0.0,
            ..self.rates
        };
        let mut scenario = Scenario::generate(seed, devices, 0, &quiet);
        scenario.start_ms = vec![0; devices];
        let mut config = self.run_config(policy);
        config.steps_max *= devices as u64;
        World::new(config, scenario).run()
    }
}

/// Runs `runs` seeds from `first` for each policy; `jobs` threads share the seeds.
pub fn run_batch(
    batch: &Batch,
    policies: &[PolicyKind],
    first: u64,
    runs: u64,
    jobs: usize,
) -> Vec<RunMetrics> {
    fan_out(policies, first, runs, jobs, |policy, seed| {
        batch.run(policy, seed)
    })
}

/// `run` for every policy and every seed of `first..first + runs`, the seeds shared by
/// `jobs` threads (1–16); one merged total per policy.
pub(crate) fn fan_out(
    policies: &[PolicyKind],
    first: u64,
    runs: u64,
    jobs: usize,
    run: impl Fn(PolicyKind, u64) -> RunMetrics + Sync,
) -> Vec<RunMetrics> {
    let jobs = jobs.clamp(1, 16) as u64;
    let run = &run;
    policies
        .iter()
        .map(|policy| {
            let partials: Vec<RunMetrics> = std::thread::scope(|scope| {
                let handles: Vec<_> = (0..jobs)
                    .map(|job| {
                        scope.spawn(move || {
                            let mut total = RunMetrics::default();
                            let mut seed = first + job;
                            while seed < first + runs {
                                total.merge(&run(*policy, seed));
                                seed += jobs;
                            }
                            total
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    // A panicking run is a bug in the core or the harness: surface it.
                    .map(|handle| handle.join().expect("BUG: a simulation thread panicked"))
                    .collect()
            });
            let mut total = RunMetrics::default();
            for partial in &partials {
                total.merge(partial);
            }
            total
        })
        .collect()
}

/// Cold-start convergence p50/p95/p99 for each group size.
pub fn convergence_table(
    batch: &Batch,
    policies: &[PolicyKind],
    first: u64,
) -> Vec<(String, usize, Quantiles)> {
    let mut rows = Vec::new();
    for policy in policies {
        for (devices, runs) in [(2, 40), (5, 30), (20, 12), (50, 6)] {
            let mut samples = Vec::new();
            for seed in first..first + runs {
                let metrics = batch.convergence(*policy, devices, seed);
                samples.extend(metrics.recovery_ms);
            }
            rows.push((policy.label().to_string(), devices, Quantiles::of(&samples)));
        }
    }
    rows
}

fn secs(ms: Option<u64>) -> String {
    ms.map_or("-".into(), |ms| format!("{:.1}s", ms as f64 / 1000.0))
}

fn dist(q: &Quantiles) -> String {
    format!(
        "{} / {} / {}",
        secs(q.p50_ms),
        secs(q.p95_ms),
        secs(q.p99_ms)
    )
}

/// The side-by-side table (`--compare`), with the targets. Long because it is a
/// table: one row per metric, each with how to print its cell.
pub fn render_table(summaries: &[(String, Summary)], timing: Timing) -> String {
    type Cell = Box<dyn Fn(&Summary) -> String>;
    let rows: Vec<(&str, Cell)> = vec![
        (
            "runs / device-weeks",
            Box::new(|s| format!("{} / {:.1}", s.runs, s.device_weeks)),
        ),
        (
            "one-way sync delay p50/p95/p99",
            Box::new(|s| {
                format!(
                    "{} / {} / {}",
                    secs(Some(s.one_way_delay_p50_ms)),
                    secs(Some(s.one_way_delay_p95_ms)),
                    secs(Some(s.one_way_delay_p99_ms))
                )
            }),
        ),
        (
            "crash failover p50/p95/p99",
            Box::new(|s| {
                format!(
                    "{} (n={}, >1h: {})",
                    dist(&s.crash_failover),
                    s.crash_failover.count,
                    s.crash_failover_unresolved
                )
            }),
        ),
        (
            "  an update waiting: its wait p50/95/99",
            Box::new(|s| {
                format!(
                    "{} (n={})",
                    dist(&s.crash_failover_waiting),
                    s.crash_failover_waiting.count
                )
            }),
        ),
        (
            "  of which: active alone on its host",
            Box::new(|s| {
                format!(
                    "{} (n={})",
                    dist(&s.crash_failover_cross_host),
                    s.crash_failover_cross_host.count
                )
            }),
        ),
        (
            "planned handoff p50/p95/p99",
            Box::new(|s| {
                format!(
                    "{} (n={}, failed: {})",
                    dist(&s.handoff),
                    s.handoff.count,
                    s.handoff_failed
                )
            }),
        ),
        (
            "resignation takeover p50/p95/p99",
            Box::new(|s| {
                format!(
                    "{} (n={}, >1h: {})",
                    dist(&s.resign_takeover),
                    s.resign_takeover.count,
                    s.resign_takeover_unresolved
                )
            }),
        ),
        (
            "leader slept, announced → new active",
            Box::new(|s| {
                format!(
                    "{} (n={})",
                    dist(&s.sleep_takeover_announced),
                    s.sleep_takeover_announced.count
                )
            }),
        ),
        (
            "leader slept, unannounced → new active",
            Box::new(|s| {
                format!(
                    "{} (n={}, >1h: {})",
                    dist(&s.sleep_takeover_unannounced),
                    s.sleep_takeover_unannounced.count,
                    s.sleep_takeover_unresolved
                )
            }),
        ),
        (
            "dual-active incidents (within bound)",
            Box::new(|s| {
                format!(
                    "{} ({})",
                    s.dual_active_incidents, s.dual_active_within_bound_incidents
                )
            }),
        ),
        (
            "dual-active within bound, total",
            Box::new(|s| format!("{:.1}s", s.dual_active_within_bound_s)),
        ),
        (
            "dual-active per incident p50/p95/p99",
            Box::new(|s| dist(&s.dual_active_incident)),
        ),
        (
            "dual-active s per device-week",
            Box::new(|s| format!("{:.1}", s.dual_active_s_per_device_week)),
        ),
        (
            "409s per device-week",
            Box::new(|s| format!("{:.1}", s.conflicts_409_per_device_week)),
        ),
        (
            "false takeovers per device-month",
            Box::new(|s| format!("{:.2}", s.false_takeovers_per_device_month)),
        ),
        (
            "updates sent / lost / duplicated",
            Box::new(|s| {
                format!(
                    "{} / {} / {}",
                    s.updates_sent, s.updates_lost, s.updates_duplicated
                )
            }),
        ),
        (
            "record writes/h active",
            Box::new(|s| format!("{:.1}", s.writes_per_hour_active)),
        ),
        (
            "record writes/h standby",
            Box::new(|s| format!("{:.1}", s.writes_per_hour_standby)),
        ),
        (
            "standby wake-ups/h: timers",
            Box::new(|s| format!("{:.1}", s.standby_timer_wakeups_per_hour)),
        ),
        (
            "standby wake-ups/h: file events",
            Box::new(|s| format!("{:.1}", s.standby_file_events_per_hour)),
        ),
        (
            "standby wake-ups/h: witness answers",
            Box::new(|s| format!("{:.1}", s.standby_witness_wakeups_per_hour)),
        ),
        (
            "standby wake-ups/h: total",
            Box::new(|s| {
                format!(
                    "{:.1}",
                    s.standby_timer_wakeups_per_hour
                        + s.standby_file_events_per_hour
                        + s.standby_witness_wakeups_per_hour
                )
            }),
        ),
        (
            "recovery after faults p50/p95/p99",
            Box::new(|s| dist(&s.recovery_after_faults)),
        ),
        (
            "invariant violations",
            Box::new(|s| s.violations.to_string()),
        ),
    ];
    let mut text = format!(
        "settle bound (one-way delay for the safety claim): {:.1}s\n",
        timing.settle_bound().as_secs_f64()
    );
    text += &format!("{:<38}", "metric");
    for (label, _) in summaries {
        text += &format!(" | {label:<40}");
    }
    text += "\n";
    text += &"-".repeat(38 + summaries.len() * 43);
    text += "\n";
    for (name, cell) in rows {
        text += &format!("{name:<38}");
        for (_, summary) in summaries {
            text += &format!(" | {:<40}", cell(summary));
        }
        text += "\n";
    }
    text
}

pub fn render_convergence(rows: &[(String, usize, Quantiles)]) -> String {
    let mut text = String::from("\ncold-start convergence (p50 / p95 / p99)\n");
    for (label, devices, q) in rows {
        text += &format!("{label:<6} N={devices:<3} {} (n={})\n", dist(q), q.count);
    }
    text
}
