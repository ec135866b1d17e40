//! What the demo prints besides the timeline: the device table at each step, the
//! delivery accounting (what was injected against what the mirror stubs wrote), and the
//! closing summary.
//!
//! Owns: counting — lost means injected and in no stub's output; duplicated counts every
//! copy beyond the first. Pure functions over plain data. Must never: count anything
//! the stubs did not actually write.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::core::Timing;
use crate::core::election::{self, Health};
use crate::core::record::DeviceRecord;

use super::fleet::ProcessState;

/// One device as the table needs it.
pub struct TableDevice<'a> {
    pub name: &'a str,
    /// The owner's latest record and the wall ms at which it was seen to change.
    pub record: Option<(&'a DeviceRecord, u64)>,
    pub process: ProcessState,
    pub delivered: usize,
}

/// The numbered table (numbered and ordered as `/devices` numbers them).
pub fn render_table(devices: &[TableDevice<'_>], now_ms: u64, timing: &Timing) -> String {
    let entries = devices
        .iter()
        .filter_map(|device| device.record)
        .map(|(record, seen_ms)| {
            let age = Duration::from_millis(now_ms.saturating_sub(seen_ms));
            (record.clone(), age, false)
        })
        .collect();
    let rows = election::device_table(entries, timing);
    let mut out = String::from(
        "     #  DEVICE    ROLE         TERM  RECORD CHANGED  PROCESS              DELIVERED\n",
    );
    for row in &rows {
        let Some(device) = devices
            .iter()
            .find(|d| d.record.is_some_and(|(r, _)| r.device_id == row.device_id))
        else {
            continue;
        };
        let seen_ms = device.record.map_or(0, |(_, ms)| ms);
        let age_s = now_ms.saturating_sub(seen_ms) as f64 / 1000.0;
        let role = match row.health {
            Health::Stale => format!("{} ⚠", row.role.as_str()),
            _ => row.role.as_str().to_string(),
        };
        out.push_str(&format!(
            "    {:>2}  {:<8}  {:<11}  {:>4}  {:>9.1} s ago  {:<19}  {:>9}\n",
            row.number,
            device.name,
            role,
            row.term,
            age_s,
            process_text(device.process),
            device.delivered
        ));
    }
    for device in devices.iter().filter(|d| d.record.is_none()) {
        out.push_str(&format!(
            "     -  {:<8}  {:<11}  {:>4}  {:>15}  {:<19}  {:>9}\n",
            device.name,
            "(no record)",
            "-",
            "-",
            process_text(device.process),
            device.delivered
        ));
    }
    out
}

pub fn process_text(state: ProcessState) -> String {
    match state {
        ProcessState::Running { pid } => format!("running (pid {pid})"),
        ProcessState::Exited { code } => format!("exited, code {code}"),
        ProcessState::Killed { signal: 9 } => "killed (SIGKILL)".into(),
        ProcessState::Killed { signal } => format!("killed (signal {signal})"),
        ProcessState::NotStarted => "not started".into(),
    }
}

/// Injected updates against deliveries.
#[derive(Debug, Default)]
pub struct Deliveries {
    /// update id → wall ms injected.
    pub injected: BTreeMap<i64, u64>,
    /// update id → (device index, wall ms seen in its stub's output) per copy.
    pub delivered: BTreeMap<i64, Vec<(usize, u64)>>,
}

/// The counts a user reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryCounts {
    pub sent: usize,
    pub delivered: usize,
    pub lost: Vec<i64>,
    pub duplicated: usize,
    /// Injection → first delivery, over delivered updates.
    pub latency_median: Duration,
    pub latency_max: Duration,
}

impl Deliveries {
    pub fn delivered_by(&self, device: usize) -> usize {
        self.delivered
            .iter()
            .filter(|(id, copies)| {
                self.injected.contains_key(id) && copies.iter().any(|(d, _)| *d == device)
            })
            .count()
    }

    pub fn counts(&self) -> DeliveryCounts {
        let mut latencies = Vec::new();
        let mut lost = Vec::new();
        let mut duplicated = 0;
        for (id, injected_ms) in &self.injected {
            match self.delivered.get(id) {
                Some(copies) if !copies.is_empty() => {
                    duplicated += copies.len() - 1;
                    let first = copies.iter().map(|(_, ms)| *ms).min().unwrap_or(0);
                    latencies.push(Duration::from_millis(first.saturating_sub(*injected_ms)));
                }
                _ => lost.push(*id),
            }
        }
        latencies.sort();
        DeliveryCounts {
            sent: self.injected.len(),
            delivered: self.injected.len() - lost.len(),
            lost,
            duplicated,
            latency_median: latencies
                .get(latencies.len() / 2)
                .copied()
                .unwrap_or_default(),
            latency_max: latencies.last().copied().unwrap_or_default(),
        }
    }
}

/// A measured duration; `None` when the step it measures did not happen.
pub type Figure = Option<Duration>;

/// Everything the summary shows.
pub struct Summary {
    pub election: Figure,
    pub failover: Figure,
    pub handoff: Figure,
    pub resignation: Figure,
    pub liveness_active: Duration,
    pub counts: DeliveryCounts,
    pub most_active_at_once: usize,
    pub conflicts_to_live_devices: usize,
    pub sync_copies: usize,
    pub sync_delay_median: Duration,
    pub sync_delay_max: Duration,
    pub settle_bound: Duration,
    pub seed: u64,
    pub time_scale: f64,
    pub total: Duration,
    /// Why the story stopped early, if it did.
    pub story_error: Option<String>,
}

fn figure(value: Figure) -> String {
    value.map_or_else(
        || "did not happen".into(),
        |d| format!("{:.2} s", d.as_secs_f64()),
    )
}

fn ms(duration: Duration) -> String {
    if duration >= Duration::from_secs(1) {
        format!("{:.2} s", duration.as_secs_f64())
    } else {
        format!("{} ms", duration.as_millis())
    }
}

impl Summary {
    /// Whether the demo passed: the whole story ran and nothing was lost.
    pub fn passed(&self) -> bool {
        self.story_error.is_none() && self.counts.lost.is_empty() && self.counts.sent > 0
    }

    pub fn render(&self) -> String {
        let c = &self.counts;
        let mut out = String::from("\n══ summary ══════════════════════════════════════════════\n");
        out.push_str(&format!(
            "  election (start → first active)           {}\n",
            figure(self.election)
        ));
        out.push_str(&format!(
            "  failover (SIGKILL → new active)           {}   (liveness timeout {})\n",
            figure(self.failover),
            ms(self.liveness_active)
        ));
        out.push_str(&format!(
            "  handoff (/activate → target active)       {}\n",
            figure(self.handoff)
        ));
        out.push_str(&format!(
            "  resignation (SIGTERM → takeover)          {}\n",
            figure(self.resignation)
        ));
        out.push_str(&format!(
            "  updates: sent {}, delivered {}, lost {}, duplicated {}\n",
            c.sent,
            c.delivered,
            c.lost.len(),
            c.duplicated
        ));
        out.push_str(&format!(
            "  delivery latency (injected → in a mirror): median {}, max {} (the max spans the crash)\n",
            ms(c.latency_median),
            ms(c.latency_max)
        ));
        out.push_str(&format!(
            "  most devices active at once: {}; Telegram 409s to running devices: {}\n",
            self.most_active_at_once, self.conflicts_to_live_devices
        ));
        out.push_str(&format!(
            "  sync: {} record copies, delay median {}, max {} (settle bound {})\n",
            self.sync_copies,
            ms(self.sync_delay_median),
            ms(self.sync_delay_max),
            ms(self.settle_bound)
        ));
        out.push_str(&format!(
            "  time scale {}, seed {} (same delays and jitter: baton demo --seed {}), took {:.1} s\n",
            self.time_scale,
            self.seed,
            self.seed,
            self.total.as_secs_f64()
        ));
        if let Some(error) = &self.story_error {
            out.push_str(&format!("\n❌ the story did not complete: {error}\n"));
        }
        if !c.lost.is_empty() {
            let shown: Vec<String> = c.lost.iter().take(20).map(i64::to_string).collect();
            out.push_str(&format!(
                "\n❌ {} update(s) LOST (never reached any mirror): {}{}\n",
                c.lost.len(),
                shown.join(", "),
                if c.lost.len() > 20 { ", …" } else { "" }
            ));
        }
        if self.passed() {
            out.push_str("\n✅ 0 updates lost\n");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_and_duplicated_are_counted_against_what_was_injected() {
        let mut deliveries = Deliveries::default();
        for id in 1..=4 {
            deliveries.injected.insert(id, 1000);
        }
        deliveries.delivered.insert(1, vec![(0, 1100)]);
        deliveries.delivered.insert(2, vec![(0, 1200), (1, 1300)]);
        deliveries.delivered.insert(3, vec![(1, 5000)]);
        // Not injected by the demo (a command): never counted.
        deliveries.delivered.insert(99, vec![(1, 5000), (0, 5000)]);
        let counts = deliveries.counts();
        assert_eq!(counts.sent, 4);
        assert_eq!(counts.delivered, 3);
        assert_eq!(counts.lost, vec![4]);
        assert_eq!(counts.duplicated, 1);
        assert_eq!(counts.latency_max, Duration::from_millis(4000));
        assert_eq!(deliveries.delivered_by(1), 2);
    }
}
