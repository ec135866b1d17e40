//! Announced sleeps in the simulated world (issue 14): the notice the OS gives before
//! a sleep, told to the designs that listen, and "leader slept → new active" measured.
//!
//! Owns: scheduling each announced sleep's notice, delivering it as
//! `Event::SleepAnnounced`, and starting the measurement when the acting device stops
//! because its host announced a sleep or slept. Must never: move a sleep (every design
//! meets the same schedule) or decide anything for a device.

use baton_core::Event;

use super::{Ev, PendingKind, PendingMeasure, World};

impl World {
    /// Schedules the notice of each announced sleep of `host` that starts a sleep window
    /// (a sleep that begins while the host already sleeps has nobody to tell), never
    /// before the previous wake.
    pub(super) fn schedule_sleep_notices(&mut self, host: usize) {
        let mut previous_end = 0;
        for (start, end) in self.hosts[host].sleep_windows.clone() {
            let notice = self.hosts[host]
                .notices
                .iter()
                .find(|(at, _)| *at == start)
                .map(|(_, notice_ms)| *notice_ms);
            if let Some(notice_ms) = notice {
                let at = start.saturating_sub(notice_ms).max(previous_end);
                let sleep_at_ms = start;
                self.schedule(at, Ev::SleepNotice { host, sleep_at_ms });
            }
            previous_end = end;
        }
    }

    /// The lid closes: the sleep starts at `sleep_at_ms` whatever the devices do (a
    /// device that allows it earlier changes nothing here: by then the successor's claim
    /// was seen, so the handoff's upload had arrived). Designs that listen are told.
    pub(super) fn sleep_notice(&mut self, host: usize, sleep_at_ms: u64) {
        if self.faults_over || self.hosts[host].asleep_since_ms.is_some() {
            return;
        }
        self.hosts[host].notice_until_ms = Some(sleep_at_ms);
        if !self.config.policy.hears_sleep_notices() {
            return;
        }
        let grace_ms = sleep_at_ms.saturating_sub(self.now_ms);
        for device in 0..self.devices.len() {
            if self.devices[device].host == host && self.running(device) {
                self.trace(device, &format!("sleep announced, {grace_ms}ms of grace"));
                self.deliver(device, Event::SleepAnnounced { grace_ms });
            }
        }
    }

    /// `device` stopped acting: if its host sleeps or announced a sleep, measure how
    /// long until some device polls again ("leader left by sleep → new active").
    pub(super) fn note_left_by_sleep(&mut self, device: usize) {
        let host = &self.hosts[self.devices[device].host];
        let kind = if host.notice_until_ms.is_some() {
            PendingKind::SleepAnnounced
        } else if host.asleep_since_ms.is_some() {
            PendingKind::SleepUnannounced
        } else {
            return;
        };
        if self.faults_over {
            return;
        }
        self.pending.push(PendingMeasure {
            kind,
            since_ms: self.now_ms,
            device,
            same_host_witness: false,
        });
    }
}
