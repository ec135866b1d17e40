//! The deterministic multi-device simulator behind `baton simulate`.
//!
//! Owns: running many seeded scenarios of N devices — each running the REAL
//! [`crate::core::Core`] (or, for comparison, the seed's design) — over a modelled
//! iCloud Drive, checking invariants on every run and collecting the figures that chose
//! [`crate::core::Timing::default`]. Must never: read a clock or OS randomness inside a
//! run (only the CLI draws a base seed when none is given, and prints it), or carry
//! protocol logic of its own: devices decide, the world only delivers.
//!
//! Layout: [`model`] (delay model, fault schedule), [`world`] (the event loop, medium,
//! Telegram, invariants), [`policy`] (the seam both designs implement), [`seed_policy`]
//! (the baseline), [`metrics`], [`check`] (the exhaustive model check).
//!
//! Replay: every run prints its seed; `baton simulate --seed S --runs 1` replays it.

pub mod check;
pub mod metrics;
pub mod model;
pub mod policy;
pub mod seed_policy;
pub mod world;

use std::io::Write;
use std::time::Duration;

use crate::core::Timing;
use metrics::{Quantiles, RunMetrics, Summary};
use model::{DAY_MS, DelayModel, FaultRates, MINUTE_MS, Scenario};
use policy::PolicyKind;
use world::{RunConfig, World};

/// `baton simulate`: seeded simulation runs, their invariants and figures.
#[derive(clap::Args, Debug, Clone)]
pub struct SimulateArgs {
    /// First seed (runs use SEED, SEED+1, …). Default: drawn at random and printed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Number of seeded runs.
    #[arg(long, default_value_t = 50)]
    pub runs: u64,
    /// Devices per group.
    #[arg(long, default_value_t = 3)]
    pub devices: usize,
    /// Simulated days of faults per run (a quiet tail follows to check convergence).
    #[arg(long, default_value_t = 7.0)]
    pub days: f64,
    /// Multiply every fault rate (and shorten long faults) by this factor.
    #[arg(long, default_value_t = 1.0)]
    pub intensity: f64,
    /// Run the seed's design on the same seeds and print both side by side.
    #[arg(long)]
    pub compare: bool,
    /// Also measure cold-start convergence for 2, 5, 20 and 50 devices.
    #[arg(long)]
    pub convergence: bool,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Run seeds until stopped (Ctrl-C), printing every failing seed.
    #[arg(long)]
    pub soak: bool,
    /// Worker threads.
    #[arg(long, default_value_t = 1)]
    pub jobs: usize,
    /// Print every device's transitions and messages (use with one seed).
    #[arg(long)]
    pub trace: bool,
    /// Scale of every timing constant of the core: the global `--time-scale`.
    #[arg(skip = 1.0)]
    pub time_scale: f64,
}

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
    let jobs = jobs.clamp(1, 16) as u64;
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
                                total.merge(&batch.run(*policy, seed));
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

/// The CLI entry point; returns the process exit code (1 when an invariant broke).
pub fn run_simulate(args: SimulateArgs) -> anyhow::Result<i32> {
    let first = args
        .seed
        .unwrap_or_else(|| u64::from(rand::random::<u32>()));
    anyhow::ensure!(
        args.devices >= 1 && args.devices <= 64,
        "--devices must be 1..=64"
    );
    anyhow::ensure!(args.days > 0.0, "--days must be positive");
    anyhow::ensure!(args.time_scale > 0.0, "--time-scale must be positive");
    let timing = Timing::default().scaled(args.time_scale);
    let rates = FaultRates::default().intensified(args.intensity);
    let mut batch = Batch::new(
        timing,
        args.devices,
        (args.days * DAY_MS as f64) as u64,
        rates,
    );
    batch.trace = args.trace;
    if args.soak {
        return soak(&batch, first, args.jobs);
    }
    eprintln!(
        "simulating {} run(s), seeds {first}..{} ({} devices, {} days each); replay one with --seed S --runs 1",
        args.runs,
        first + args.runs,
        args.devices,
        args.days
    );
    let mut policies = vec![PolicyKind::Baton(timing)];
    if args.compare {
        policies.push(PolicyKind::Seed);
    }
    let results = run_batch(&batch, &policies, first, args.runs, args.jobs);
    let baton_violations = results[0].violations.clone();
    let convergence = if args.convergence {
        Some(convergence_table(&batch, &policies, first))
    } else {
        None
    };
    let summaries: Vec<(String, Summary)> = policies
        .iter()
        .zip(&results)
        .map(|(policy, metrics)| (policy.label().to_string(), metrics.summary()))
        .collect();
    let mut out = std::io::stdout().lock();
    if args.json {
        let report = serde_json::json!({
            "first_seed": first,
            "runs": args.runs,
            "devices": args.devices,
            "days": args.days,
            "delay_model": batch.delay,
            "settle_bound_ms": timing.settle_bound().as_millis() as u64,
            "policies": summaries.iter().map(|(l, s)| (l.clone(), s)).collect::<std::collections::BTreeMap<_, _>>(),
            "convergence": convergence,
            "violations": baton_violations,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        write!(out, "{}", render_table(&summaries, timing))?;
        if let Some(rows) = &convergence {
            write!(out, "{}", render_convergence(rows))?;
        }
    }
    for line in baton_violations.iter().take(20) {
        eprintln!("VIOLATION {line}");
    }
    Ok(if baton_violations.is_empty() { 0 } else { 1 })
}

fn soak(batch: &Batch, first: u64, jobs: usize) -> anyhow::Result<i32> {
    let policy = PolicyKind::Baton(batch.timing);
    let mut failures = 0u64;
    let chunk = 16 * jobs.max(1) as u64;
    let mut seed = first;
    eprintln!("soaking from seed {first}; stop with Ctrl-C");
    loop {
        let per_seed: Vec<(u64, RunMetrics)> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..chunk)
                .map(|offset| {
                    let seed = seed + offset;
                    scope.spawn(move || (seed, batch.run(policy, seed)))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("BUG: a simulation thread panicked"))
                .collect()
        });
        for (run_seed, metrics) in per_seed {
            if !metrics.violations.is_empty() {
                failures += 1;
                println!("FAILING SEED {run_seed}: {}", metrics.violations[0]);
            }
        }
        seed += chunk;
        eprintln!("… seeds {first}..{seed}: {failures} failing");
    }
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

/// The side-by-side table (`--compare`), with the targets.
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

fn render_convergence(rows: &[(String, usize, Quantiles)]) -> String {
    let mut text = String::from("\ncold-start convergence (p50 / p95 / p99)\n");
    for (label, devices, q) in rows {
        text += &format!("{label:<6} N={devices:<3} {} (n={})\n", dist(q), q.count);
    }
    text
}
