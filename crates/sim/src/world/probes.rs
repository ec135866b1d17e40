//! Invariant checks and metric probes over the acting set: overlapping acting devices,
//! takeover delays, incidents, updates expired or never handled. Owns: the run's
//! metrics and violations. Must never: change what any device sees.

use super::*;

impl World {
    pub(super) fn observe_acting(&mut self) {
        let now = self.now_ms;
        let elapsed = now - self.last_account_ms;
        let mut count = 0;
        for device in 0..self.devices.len() {
            let was = self.devices[device].was_acting;
            if self.running(device) {
                if was {
                    self.metrics.active_ms += elapsed;
                } else {
                    self.metrics.standby_ms += elapsed;
                }
            }
            let acting = self.acting(device);
            if acting {
                count += 1;
            }
            if acting != was {
                self.trace(device, if acting { "ACTING" } else { "not acting" });
            }
            if was && !acting {
                self.note_left_by_sleep(device);
            }
            self.devices[device].was_acting = acting;
        }
        self.last_account_ms = now;
        self.on_count(count);
        self.expire_pending();
    }

    pub(super) fn on_takeover(&mut self, device: usize) {
        let planned = self
            .pending
            .iter()
            .any(|m| m.kind == PendingKind::Handoff && m.device == device);
        let displaced = (0..self.devices.len()).any(|other| {
            other != device && self.running(other) && self.devices[other].adapter.acting
        });
        if displaced && !planned {
            self.metrics.false_takeovers += 1;
        }
    }

    pub(super) fn on_count(&mut self, count: usize) {
        let now = self.now_ms;
        if count != self.acting_count {
            self.last_acting_change_ms = now;
        }
        if count >= 2 && self.incident_end_ms.is_some() {
            // Two acting again: the same incident unless it had been over for a while.
            match (self.incident_start_ms, self.incident_end_ms) {
                (Some(_), Some(end)) if now - end <= INCIDENT_MERGE_GAP_MS => {}
                (Some(start), Some(end)) => {
                    self.close_incident(start, end);
                    self.incident_start_ms = Some(now);
                }
                _ => self.incident_start_ms = Some(now),
            }
            self.incident_end_ms = None;
        }
        if count >= 2 && self.incident_start_ms.is_none() {
            self.incident_start_ms = Some(now);
            self.incident_end_ms = None;
        }
        if count < 2 && self.incident_start_ms.is_some() && self.incident_end_ms.is_none() {
            self.incident_end_ms = Some(now);
        }
        self.acting_count = count;
        if let Some(check_from) = self.check_from_ms
            && now >= check_from
            && count != 1
        {
            let message = format!(
                "{count} devices acting {:.0}s after faults ended and delays settled",
                (now - self.scenario.fault_end_ms) as f64 / 1000.0
            );
            self.violation_if_baton(message);
            self.check_from_ms = None;
        }
    }

    pub(super) fn close_incident(&mut self, start: u64, end: u64) {
        let from = start.saturating_sub(self.config.lookback_ms);
        let within_bound = !self
            .breaches
            .iter()
            .any(|(breach_start, breach_end)| *breach_start <= end && *breach_end >= from);
        self.metrics.incidents.push(Incident {
            start_ms: start,
            duration_ms: end - start,
            within_bound,
        });
        if within_bound {
            let message = format!(
                "two devices acting for {:.1}s from t={:.1}s with every delay within the {}ms bound",
                (end - start) as f64 / 1000.0,
                start as f64 / 1000.0,
                self.config.settle_bound_ms
            );
            self.violation_if_baton(message);
        }
    }

    pub(super) fn expire_pending(&mut self) {
        let now = self.now_ms;
        let before = self.pending.len();
        let mut expired = Vec::new();
        self.pending.retain(|m| {
            let limit = match m.kind {
                PendingKind::Handoff => HANDOFF_EXPIRE_MS,
                _ => EXPIRE_PENDING_MS,
            };
            let keep = now - m.since_ms < limit;
            if !keep {
                expired.push(m.kind);
            }
            keep
        });
        if before == self.pending.len() {
            return;
        }
        for kind in expired {
            match kind {
                PendingKind::Crash => self.metrics.crash_failover_unresolved += 1,
                PendingKind::Resign => self.metrics.resign_takeover_unresolved += 1,
                PendingKind::Handoff => self.metrics.handoff_failed += 1,
                PendingKind::SleepAnnounced | PendingKind::SleepUnannounced => {
                    self.metrics.sleep_takeover_unresolved += 1
                }
            }
        }
    }

    pub(super) fn finish(&mut self) {
        self.now_ms = self.now_ms.min(self.end_ms);
        self.observe_acting();
        if let Some(start) = self.incident_start_ms.take() {
            let end = self.incident_end_ms.unwrap_or(self.now_ms);
            self.close_incident(start, end);
        }
        let quiet_from = self.scenario.fault_end_ms;
        self.metrics
            .recovery_ms
            .push(self.last_acting_change_ms.saturating_sub(quiet_from));
        let cutoff = self.now_ms.saturating_sub(30 * SECOND_MS);
        let unhandled = (0..self.telegram.sent_ms.len())
            .filter(|&i| self.telegram.sent_ms[i] < cutoff && self.telegram.handled[i] == 0)
            .count() as u64;
        if unhandled > 0 {
            self.metrics.updates_lost += unhandled;
            self.violation_if_baton(format!("{unhandled} updates never handled by the end"));
        }
        self.metrics.device_ms = self.now_ms * self.devices.len() as u64;
        self.finish_routing();
    }
}
