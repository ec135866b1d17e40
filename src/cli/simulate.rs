//! `baton simulate`: the simulator's flags and its entry point.
//!
//! Owns: the flags, drawing (and printing) a base seed when none is given, soak mode,
//! and printing the report. Must never: hold simulation logic (that is `baton_sim`,
//! which reads no clock and no OS randomness).

use std::io::Write;

use baton_core::Timing;
use baton_core::witness::WitnessRules;
use baton_sim::metrics::{RunMetrics, Summary};
use baton_sim::model::{DAY_MS, FaultRates};
use baton_sim::routing_report::{render_routing, run_routing_batch};
use baton_sim::{
    Batch, PolicyKind, convergence_table, render_convergence, render_table, run_batch,
};

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
    /// Run, on the same seeds, baton's core deaf to sleep announcements (the design
    /// before them), baton with Telegram as a second witness, and the seed's design, and
    /// print them side by side.
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
    /// Tuning the witness design (`--compare`): its deferral cap, in minutes.
    #[arg(long, hide = true)]
    pub witness_defer_max_min: Option<f64>,
    /// Tuning the witness design: its suspicion threshold, in seconds.
    #[arg(long, hide = true)]
    pub witness_suspicion_s: Option<f64>,
    /// Tuning the witness design: its active heartbeat's base interval in seconds (the
    /// jitter is a third of it, the active liveness 2.5 × its longest interval, as
    /// today's 15 s + 5 s and 50 s); the suspicion threshold follows unless given.
    #[arg(long, hide = true)]
    pub witness_heartbeat_s: Option<f64>,
    /// Tuning the witness design: its drain gap (two readings this far apart), seconds.
    #[arg(long, hide = true)]
    pub witness_drain_gap_s: Option<f64>,
    /// Tuning the witness design: its ask interval's base and jitter, seconds (`7,3`).
    #[arg(long, hide = true, value_delimiter = ',', num_args = 2)]
    pub witness_ask_s: Option<Vec<f64>>,
    /// Skip the routing runs (issue 11: every device serving its own topic, baton
    /// routing updates between them, the seed's design dropping other topics').
    #[arg(long)]
    pub no_routing: bool,
    /// Scale of every timing constant of the core: the global `--time-scale`.
    #[arg(skip = 1.0)]
    pub time_scale: f64,
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
        policies.push(PolicyKind::BatonWithoutSleepNotices(timing));
        let (witness_timing, rules) = witness_design(&args, timing);
        policies.push(PolicyKind::Witness(witness_timing, rules));
        policies.push(PolicyKind::Seed);
    }
    let results = run_batch(&batch, &policies, first, args.runs, args.jobs);
    let baton_violations = results[0].violations.clone();
    let convergence = if args.convergence {
        Some(convergence_table(&batch, &policies, first))
    } else {
        None
    };
    let routing = routing_rows(&args, &batch, first);
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
            "routing": routing.iter().map(|(l, m)| (l.clone(), &m.routing)).collect::<std::collections::BTreeMap<_, _>>(),
            "violations": baton_violations,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        write!(out, "{}", render_table(&summaries, timing))?;
        if let Some(rows) = &convergence {
            write!(out, "{}", render_convergence(rows))?;
        }
        if !routing.is_empty() {
            write!(out, "{}", render_routing(&routing))?;
        }
    }
    let routing_violations = routing.first().map_or(&[][..], |(_, m)| &m.violations[..]);
    for line in baton_violations.iter().chain(routing_violations).take(20) {
        eprintln!("VIOLATION {line}");
    }
    let clean = baton_violations.is_empty() && routing_violations.is_empty();
    Ok(if clean { 0 } else { 1 })
}

/// The routing runs (same seeds, same faults; baton routes, the seed's design drops
/// other topics' updates), unless `--no-routing`.
fn routing_rows(args: &SimulateArgs, batch: &Batch, first: u64) -> Vec<(String, RunMetrics)> {
    if args.no_routing {
        return Vec::new();
    }
    let policies = [PolicyKind::Baton(batch.timing), PolicyKind::Seed];
    let results = run_routing_batch(batch, &policies, first, args.runs, args.jobs);
    policies
        .iter()
        .map(|policy| policy.label().to_string())
        .zip(results)
        .collect()
}

/// The witness design's timing and rules: today's unless tuning flags say otherwise.
fn witness_design(args: &SimulateArgs, timing: Timing) -> (Timing, WitnessRules) {
    let secs = std::time::Duration::from_secs_f64;
    let mut rules = WitnessRules::default();
    let mut timing = timing;
    if let Some(base_s) = args.witness_heartbeat_s {
        let heartbeat = baton_core::timers::Jittered::new(secs(base_s), secs(base_s / 3.0));
        timing.heartbeat_active = heartbeat;
        timing.liveness_active = heartbeat.max().mul_f64(2.5);
        rules.suspicion_after = heartbeat.max() + secs(2.0);
    }
    if let Some(suspicion_s) = args.witness_suspicion_s {
        rules.suspicion_after = secs(suspicion_s);
    }
    if let Some(gap_s) = args.witness_drain_gap_s {
        rules.drain_gap = secs(gap_s);
    }
    if let Some(ask) = args.witness_ask_s.as_deref()
        && let [base_s, jitter_s] = ask
    {
        rules.ask_interval = baton_core::timers::Jittered::new(secs(*base_s), secs(*jitter_s));
        // A quiet reading lasts until the next one can arrive (as by default).
        rules.quiet_valid_for = rules.quiet_valid_for.max(secs(base_s + jitter_s + 2.0));
    }
    if let Some(minutes) = args.witness_defer_max_min {
        rules.defer_max = secs(minutes * 60.0);
    }
    (timing, rules.scaled(args.time_scale))
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
