//! What a run measured, and how runs add up.
//!
//! Owns: the per-run [`RunMetrics`], their merge across runs, percentiles, and the
//! derived per-hour / per-device-week figures. Must never: influence a run.

use serde::Serialize;

use super::model::{DAY_MS, HOUR_MS};

/// One dual-active incident: two or more devices acting at once.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Incident {
    pub start_ms: u64,
    pub duration_ms: u64,
    /// No replication delay, lost notification or eviction beyond the settle bound
    /// touched the incident or the lookback before it.
    pub within_bound: bool,
}

/// One-way delays, in 100 ms buckets up to 3 h (anything above lands in the last one).
#[derive(Clone, Debug)]
pub struct DelayHistogram {
    buckets: Vec<u64>,
}

const BUCKET_MS: u64 = 100;
const BUCKETS: usize = (3 * HOUR_MS / BUCKET_MS) as usize;

impl Default for DelayHistogram {
    fn default() -> Self {
        DelayHistogram {
            buckets: vec![0; BUCKETS + 1],
        }
    }
}

impl DelayHistogram {
    pub fn add(&mut self, delay_ms: u64) {
        let index = ((delay_ms / BUCKET_MS) as usize).min(BUCKETS);
        self.buckets[index] += 1;
    }
    pub fn merge(&mut self, other: &DelayHistogram) {
        for (mine, theirs) in self.buckets.iter_mut().zip(&other.buckets) {
            *mine += theirs;
        }
    }
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }
    pub fn quantile_ms(&self, q: f64) -> u64 {
        let total = self.count();
        if total == 0 {
            return 0;
        }
        let wanted = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (index, count) in self.buckets.iter().enumerate() {
            seen += count;
            if seen >= wanted {
                return index as u64 * BUCKET_MS + BUCKET_MS / 2;
            }
        }
        BUCKETS as u64 * BUCKET_MS
    }
    pub fn share_at_most(&self, bound_ms: u64) -> f64 {
        let total = self.count().max(1);
        let limit = ((bound_ms / BUCKET_MS) as usize).min(BUCKETS);
        self.buckets[..limit].iter().sum::<u64>() as f64 / total as f64
    }
}

/// Everything one run (or a merge of runs) measured.
#[derive(Clone, Debug, Default)]
pub struct RunMetrics {
    pub runs: u64,
    /// Device-time simulated (sum over devices of the run length).
    pub device_ms: u64,
    pub crash_failover_ms: Vec<u64>,
    /// Crashes of an active device alone on its host (no pid probe can help).
    pub crash_failover_cross_host_ms: Vec<u64>,
    /// Crashes of the acting device with no device polling an hour later.
    pub crash_failover_unresolved: u64,
    /// Crash failovers at whose end an update was waiting on Telegram: from the moment
    /// the oldest such update was sent (or the crash, if later) to the takeover.
    pub crash_failover_waiting_ms: Vec<u64>,
    pub handoff_ms: Vec<u64>,
    pub handoff_failed: u64,
    pub resign_takeover_ms: Vec<u64>,
    pub resign_takeover_unresolved: u64,
    /// From the acting device stopping because its host announced a sleep (or slept
    /// unannounced) to some device polling again.
    pub sleep_takeover_announced_ms: Vec<u64>,
    pub sleep_takeover_unannounced_ms: Vec<u64>,
    /// Either, with no device polling an hour later.
    pub sleep_takeover_unresolved: u64,
    pub incidents: Vec<Incident>,
    pub conflicts_409: u64,
    pub false_takeovers: u64,
    pub updates_sent: u64,
    pub updates_lost: u64,
    pub updates_duplicated: u64,
    /// Times Telegram started its ids over, and times a device's ledger saw it.
    pub telegram_id_restarts: u64,
    pub telegram_id_restarts_followed: u64,
    pub writes_active: u64,
    pub writes_standby: u64,
    pub writes_shared_file: u64,
    pub active_ms: u64,
    pub standby_ms: u64,
    pub standby_timer_wakeups: u64,
    pub standby_file_events: u64,
    /// Telegram's answers to the witness's questions, delivered to a standby.
    pub standby_witness_wakeups: u64,
    pub witness_asks: u64,
    pub lost_notifications: u64,
    pub delays: DelayHistogram,
    /// Time from the end of faults to a stable single active device.
    pub recovery_ms: Vec<u64>,
    pub violations: Vec<String>,
    /// Routing runs only (`world/mail.rs`): deliveries, losses, latency by class.
    pub routing: RoutingMetrics,
}

pub fn quantile(samples: &[u64], q: f64) -> Option<u64> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let index = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    Some(sorted[index])
}

impl RunMetrics {
    pub fn merge(&mut self, other: &RunMetrics) {
        self.runs += other.runs;
        self.device_ms += other.device_ms;
        self.crash_failover_ms
            .extend_from_slice(&other.crash_failover_ms);
        self.crash_failover_cross_host_ms
            .extend_from_slice(&other.crash_failover_cross_host_ms);
        self.crash_failover_unresolved += other.crash_failover_unresolved;
        self.crash_failover_waiting_ms
            .extend_from_slice(&other.crash_failover_waiting_ms);
        self.standby_witness_wakeups += other.standby_witness_wakeups;
        self.witness_asks += other.witness_asks;
        self.handoff_ms.extend_from_slice(&other.handoff_ms);
        self.handoff_failed += other.handoff_failed;
        self.resign_takeover_ms
            .extend_from_slice(&other.resign_takeover_ms);
        self.resign_takeover_unresolved += other.resign_takeover_unresolved;
        self.sleep_takeover_announced_ms
            .extend_from_slice(&other.sleep_takeover_announced_ms);
        self.sleep_takeover_unannounced_ms
            .extend_from_slice(&other.sleep_takeover_unannounced_ms);
        self.sleep_takeover_unresolved += other.sleep_takeover_unresolved;
        self.incidents.extend_from_slice(&other.incidents);
        self.conflicts_409 += other.conflicts_409;
        self.false_takeovers += other.false_takeovers;
        self.updates_sent += other.updates_sent;
        self.updates_lost += other.updates_lost;
        self.updates_duplicated += other.updates_duplicated;
        self.telegram_id_restarts += other.telegram_id_restarts;
        self.telegram_id_restarts_followed += other.telegram_id_restarts_followed;
        self.writes_active += other.writes_active;
        self.writes_standby += other.writes_standby;
        self.writes_shared_file += other.writes_shared_file;
        self.active_ms += other.active_ms;
        self.standby_ms += other.standby_ms;
        self.standby_timer_wakeups += other.standby_timer_wakeups;
        self.standby_file_events += other.standby_file_events;
        self.lost_notifications += other.lost_notifications;
        self.delays.merge(&other.delays);
        self.recovery_ms.extend_from_slice(&other.recovery_ms);
        self.violations.extend(other.violations.iter().cloned());
        self.routing.merge(&other.routing);
    }

    pub fn device_weeks(&self) -> f64 {
        self.device_ms as f64 / (7 * DAY_MS) as f64
    }

    pub fn summary(&self) -> Summary {
        let per_hour = |count: u64, ms: u64| count as f64 / (ms.max(1) as f64 / HOUR_MS as f64);
        let weeks = self.device_weeks().max(1e-9);
        let within: Vec<u64> = self
            .incidents
            .iter()
            .filter(|i| i.within_bound)
            .map(|i| i.duration_ms)
            .collect();
        let all: Vec<u64> = self.incidents.iter().map(|i| i.duration_ms).collect();
        Summary {
            runs: self.runs,
            device_weeks: self.device_weeks(),
            crash_failover: Quantiles::of(&self.crash_failover_ms),
            crash_failover_unresolved: self.crash_failover_unresolved,
            crash_failover_waiting: Quantiles::of(&self.crash_failover_waiting_ms),
            crash_failover_cross_host: Quantiles::of(&self.crash_failover_cross_host_ms),
            handoff: Quantiles::of(&self.handoff_ms),
            handoff_failed: self.handoff_failed,
            resign_takeover: Quantiles::of(&self.resign_takeover_ms),
            resign_takeover_unresolved: self.resign_takeover_unresolved,
            sleep_takeover_announced: Quantiles::of(&self.sleep_takeover_announced_ms),
            sleep_takeover_unannounced: Quantiles::of(&self.sleep_takeover_unannounced_ms),
            sleep_takeover_unresolved: self.sleep_takeover_unresolved,
            dual_active_incidents: all.len() as u64,
            dual_active_incident: Quantiles::of(&all),
            dual_active_s_per_device_week: all.iter().sum::<u64>() as f64 / 1000.0 / weeks,
            dual_active_within_bound_incidents: within.len() as u64,
            dual_active_within_bound_s: within.iter().sum::<u64>() as f64 / 1000.0,
            conflicts_409_per_device_week: self.conflicts_409 as f64 / weeks,
            false_takeovers_per_device_month: self.false_takeovers as f64 / weeks * 30.0 / 7.0,
            updates_sent: self.updates_sent,
            updates_lost: self.updates_lost,
            updates_duplicated: self.updates_duplicated,
            writes_per_hour_active: per_hour(self.writes_active, self.active_ms),
            writes_per_hour_standby: per_hour(self.writes_standby, self.standby_ms),
            standby_timer_wakeups_per_hour: per_hour(self.standby_timer_wakeups, self.standby_ms),
            standby_file_events_per_hour: per_hour(self.standby_file_events, self.standby_ms),
            standby_witness_wakeups_per_hour: per_hour(
                self.standby_witness_wakeups,
                self.standby_ms,
            ),
            one_way_delay_p50_ms: self.delays.quantile_ms(0.5),
            one_way_delay_p95_ms: self.delays.quantile_ms(0.95),
            one_way_delay_p99_ms: self.delays.quantile_ms(0.99),
            recovery_after_faults: Quantiles::of(&self.recovery_ms),
            violations: self.violations.len() as u64,
        }
    }
}

#[derive(Clone, Copy, Debug, Serialize, Default)]
pub struct Quantiles {
    pub count: usize,
    pub p50_ms: Option<u64>,
    pub p95_ms: Option<u64>,
    pub p99_ms: Option<u64>,
}

impl Quantiles {
    pub fn of(samples: &[u64]) -> Self {
        Quantiles {
            count: samples.len(),
            p50_ms: quantile(samples, 0.5),
            p95_ms: quantile(samples, 0.95),
            p99_ms: quantile(samples, 0.99),
        }
    }
}

/// The figures a report shows (serialised for `--json`).
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub runs: u64,
    pub device_weeks: f64,
    pub crash_failover: Quantiles,
    pub crash_failover_unresolved: u64,
    pub crash_failover_waiting: Quantiles,
    pub crash_failover_cross_host: Quantiles,
    pub handoff: Quantiles,
    pub handoff_failed: u64,
    pub resign_takeover: Quantiles,
    pub resign_takeover_unresolved: u64,
    pub sleep_takeover_announced: Quantiles,
    pub sleep_takeover_unannounced: Quantiles,
    pub sleep_takeover_unresolved: u64,
    pub dual_active_incidents: u64,
    pub dual_active_incident: Quantiles,
    pub dual_active_s_per_device_week: f64,
    pub dual_active_within_bound_incidents: u64,
    pub dual_active_within_bound_s: f64,
    pub conflicts_409_per_device_week: f64,
    pub false_takeovers_per_device_month: f64,
    pub updates_sent: u64,
    pub updates_lost: u64,
    pub updates_duplicated: u64,
    pub writes_per_hour_active: f64,
    pub writes_per_hour_standby: f64,
    pub standby_timer_wakeups_per_hour: f64,
    pub standby_file_events_per_hour: f64,
    pub standby_witness_wakeups_per_hour: f64,
    pub one_way_delay_p50_ms: u64,
    pub one_way_delay_p95_ms: u64,
    pub one_way_delay_p99_ms: u64,
    pub recovery_after_faults: Quantiles,
    pub violations: u64,
}

/// Routing runs (issue 11, `world/mail.rs`): what one run measured, merged over runs.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RoutingMetrics {
    pub runs: u64,
    /// Updates judged (sent before the last minute of the run).
    pub sent: u64,
    pub delivered: u64,
    pub lost: u64,
    pub misrouted: u64,
    /// Deliveries beyond the first; and those of updates polled only once (a duplicate
    /// no crash window explains).
    pub duplicated: u64,
    pub duplicated_outside_crash_window: u64,
    /// Delivered again by a reader that restarted between (its child had fetched it,
    /// its record did not say so yet): the reader's crash window.
    pub duplicated_reader_restart: u64,
    /// Updates Telegram handed to two pollers (the election's crash window): where a
    /// duplicate may come from.
    pub polled_twice: u64,
    /// Per topic, an update delivered after a later one of the same topic: routed by
    /// two different routers (across a failover: mailboxes of two writers travel
    /// independently, so the design keeps no order between them), and by one router
    /// (a broken invariant).
    pub order_inversions: u64,
    pub order_inversions_one_router: u64,
    /// A mailbox write refused (disk, bound): confirmed, and the chat told.
    pub not_queued_told: u64,
    /// The seed design: updates of another topic than the active device's, dropped.
    pub dropped_by_design: u64,
    pub latency_own_ms: Vec<u64>,
    pub latency_same_host_ms: Vec<u64>,
    pub latency_other_host_ms: Vec<u64>,
}

impl RoutingMetrics {
    pub fn merge(&mut self, other: &RoutingMetrics) {
        self.runs += other.runs;
        self.sent += other.sent;
        self.delivered += other.delivered;
        self.lost += other.lost;
        self.misrouted += other.misrouted;
        self.duplicated += other.duplicated;
        self.duplicated_outside_crash_window += other.duplicated_outside_crash_window;
        self.polled_twice += other.polled_twice;
        self.duplicated_reader_restart += other.duplicated_reader_restart;
        self.order_inversions += other.order_inversions;
        self.order_inversions_one_router += other.order_inversions_one_router;
        self.not_queued_told += other.not_queued_told;
        self.dropped_by_design += other.dropped_by_design;
        self.latency_own_ms.extend(&other.latency_own_ms);
        self.latency_same_host_ms
            .extend(&other.latency_same_host_ms);
        self.latency_other_host_ms
            .extend(&other.latency_other_host_ms);
    }
}
