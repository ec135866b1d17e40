//! Routing runs of the main simulator (issue 11) and their section of `baton simulate`'s
//! report: the same seeds and faults as the main table, with every device serving its
//! own forum topic and updates written in all of them (`world/mail.rs`), baton routing
//! them and the seed's design dropping every other topic's update.
//!
//! Owns: running a routing batch and rendering its rows. Must never: hold routing logic
//! (the world and the core do), or change a run of the main table (routing runs are runs
//! of their own).

use std::fmt::Write as _;

use crate::metrics::{RunMetrics, quantile};
use crate::world::World;
use crate::{Batch, PolicyKind};

impl Batch {
    /// One seeded routing run of one policy.
    pub fn run_routed(&self, policy: PolicyKind, seed: u64) -> RunMetrics {
        let mut config = self.run_config(policy);
        config.routing = true;
        World::new(config, self.scenario(seed)).run()
    }
}

/// Routing runs of `runs` seeds from `first` for each policy; `jobs` threads.
pub fn run_routing_batch(
    batch: &Batch,
    policies: &[PolicyKind],
    first: u64,
    runs: u64,
    jobs: usize,
) -> Vec<RunMetrics> {
    crate::fan_out(policies, first, runs, jobs, |policy, seed| {
        batch.run_routed(policy, seed)
    })
}

fn p(samples: &[u64], q: f64) -> String {
    quantile(samples, q).map_or("-".into(), |ms| format!("{:.2}s", ms as f64 / 1000.0))
}

/// The routing section: per design, deliveries and latency by class, and the targets.
pub fn render_routing(rows: &[(String, RunMetrics)]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nrouting (each device serves its own topic; updates in every topic):"
    );
    let _ = writeln!(
        out,
        "{:<10} {:>7} {:>9} {:>5} {:>9} {:>10} {:>9} {:>8} {:>15} {:>15} {:>15}",
        "design",
        "sent",
        "delivered",
        "lost",
        "misrouted",
        "duplicated",
        "reordered",
        "dropped",
        "own p50/p95",
        "same-host",
        "other-host"
    );
    for (label, metrics) in rows {
        let r = &metrics.routing;
        let pair = |samples: &[u64]| format!("{}/{}", p(samples, 0.5), p(samples, 0.95));
        let _ = writeln!(
            out,
            "{:<10} {:>7} {:>9} {:>5} {:>9} {:>10} {:>9} {:>8} {:>15} {:>15} {:>15}",
            label,
            r.sent,
            r.delivered,
            r.lost,
            r.misrouted,
            r.duplicated,
            r.order_inversions,
            r.dropped_by_design,
            pair(&r.latency_own_ms),
            pair(&r.latency_same_host_ms),
            pair(&r.latency_other_host_ms),
        );
    }
    if let Some((_, baton)) = rows.first() {
        let r = &baton.routing;
        let sync_p50 = baton.delays.quantile_ms(0.5);
        let own = quantile(&r.latency_own_ms, 0.5).unwrap_or(0);
        let same = quantile(&r.latency_same_host_ms, 0.5).unwrap_or(0);
        let other = quantile(&r.latency_other_host_ms, 0.5).unwrap_or(0);
        let _ = writeln!(
            out,
            "targets: same-host p50 − own p50 = {} ms (≤ 50); other-host p50 = {:.2}s, {:.2} × the sync median {:.2}s (≤ 1.5); \
             lost {}, misrouted {} (0 each)",
            same as i64 - own as i64,
            other as f64 / 1000.0,
            other as f64 / sync_p50.max(1) as f64,
            sync_p50 as f64 / 1000.0,
            r.lost,
            r.misrouted,
        );
        let _ = writeln!(
            out,
            "polled twice (crash window) {}; duplicates: {} after the reader restarted (its crash window), {} outside both; \
             reordered: {} across two routers (a failover), {} by one; mailbox write refused (chat told) {}",
            r.polled_twice,
            r.duplicated_reader_restart,
            r.duplicated_outside_crash_window,
            r.order_inversions,
            r.order_inversions_one_router,
            r.not_queued_told,
        );
    }
    out
}
