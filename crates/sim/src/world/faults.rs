//! The fault schedule carried out: freezes, kills, exits, evictions, duplicates, sleep
//! and wake, and the end of faults. Owns: how each [`Fault`] changes the world. Must
//! never: draw randomness of its own (the schedule is drawn up front, `model.rs`).

use super::*;

impl World {
    pub(super) fn resolve(&self, target: Target) -> Option<usize> {
        match target {
            Target::Acting => (0..self.devices.len()).find(|d| self.acting(*d)),
            Target::Device(device) => Some(device),
        }
    }

    pub(super) fn fault(&mut self, fault: Fault) {
        if self.faults_over && !matches!(fault, Fault::Message) {
            return;
        }
        match fault {
            Fault::Crash { target, down_ms } => {
                let Some(device) = self.resolve(target) else {
                    return;
                };
                if self.devices[device].policy.is_none() {
                    return;
                }
                if self.acting(device) {
                    let host = self.devices[device].host;
                    let same_host_witness = (0..self.devices.len())
                        .any(|other| other != device && self.devices[other].host == host);
                    self.pending.push(PendingMeasure {
                        kind: PendingKind::Crash,
                        since_ms: self.now_ms,
                        device,
                        same_host_witness,
                    });
                }
                self.kill(device);
                self.schedule(self.now_ms + down_ms, Ev::Restart { device });
            }
            Fault::Resign { down_ms } => {
                let Some(device) = self.resolve(Target::Acting) else {
                    return;
                };
                self.pending.push(PendingMeasure {
                    kind: PendingKind::Resign,
                    since_ms: self.now_ms,
                    device,
                    same_host_witness: false,
                });
                self.devices[device].restart_after_exit_ms = Some(down_ms);
                self.deliver(device, Event::ShutdownAsked);
            }
            Fault::Evict { device, stub } => self.evict(device, stub),
            Fault::Duplicate { device } => self.duplicate(device),
            Fault::Message => self.send_update(None),
            Fault::Activate { device } => self.ask_activation(device),
            Fault::IdReset => self.telegram.restart_due = true,
            Fault::Freeze {
                target,
                duration_ms,
            } => self.freeze(target, duration_ms),
            Fault::Sleep { .. }
            | Fault::CutOff { .. }
            | Fault::Stall { .. }
            | Fault::RefuseWrites { .. } => {}
        }
    }

    /// Freezes a running process (SIGSTOP): its connection to Telegram stays open, so a
    /// poll it sent may be answered meanwhile; the answer waits for it, as everything
    /// else does. Skipped when the host sleeps during it (a sleep is its own fault).
    pub(super) fn freeze(&mut self, target: Target, duration_ms: u64) {
        let Some(device) = self.resolve(target) else {
            return;
        };
        let until = self.now_ms + duration_ms;
        let host = &self.hosts[self.devices[device].host];
        let sleeps = host
            .sleep_windows
            .iter()
            .any(|(start, end)| *start < until && self.now_ms < *end);
        if !self.running(device) || sleeps {
            return;
        }
        self.trace(device, &format!("frozen for {duration_ms}ms"));
        self.devices[device].frozen_until_ms = Some(until);
        let incarnation = self.devices[device].incarnation;
        self.schedule(
            until,
            Ev::Thaw {
                device,
                incarnation,
            },
        );
    }

    /// The process resumes. Its clocks ran on without drifting apart: no sleep is seen.
    /// What waited for it follows in order: a poll answer may come before the run
    /// loop's overdue timer (the poller is its own task), the worst case for the lease.
    pub(super) fn thaw(&mut self, device: usize, incarnation: u32) {
        if self.devices[device].incarnation != incarnation
            || self.devices[device].frozen_until_ms.take().is_none()
        {
            return;
        }
        let local = self.local(self.devices[device].host);
        if self.is_baton() && local >= self.lease_deadline(device) {
            self.devices[device].must_revalidate = true;
        }
        self.trace(device, "thawed");
        self.schedule(
            self.now_ms,
            Ev::Answer {
                device,
                incarnation,
                event: Event::Tick,
            },
        );
    }

    pub(super) fn kill(&mut self, device: usize) {
        self.cancel_poll(device);
        let dev = &mut self.devices[device];
        dev.policy = None;
        dev.adapter = Adapter::default();
        dev.inbox.clear();
        dev.tick_at_ms = None;
        dev.tick_generation += 1;
        dev.frozen_until_ms = None;
    }

    pub(super) fn exit(&mut self, device: usize) {
        let down_ms = self.devices[device].restart_after_exit_ms.take();
        self.kill(device);
        let down_ms = down_ms.unwrap_or(10 * MINUTE_MS);
        self.schedule(self.now_ms + down_ms, Ev::Restart { device });
    }

    pub(super) fn evict(&mut self, device: usize, stub: bool) {
        let own = self.devices[device].own_file.clone();
        let host = self.devices[device].host;
        let now = self.now_ms;
        let candidates: Vec<String> = self.hosts[host]
            .replica
            .iter()
            .filter(|(name, file)| {
                **name != own
                    && file.text.is_some()
                    && file.evicted.is_none()
                    && now.saturating_sub(file.arrived_ms) >= 60 * MINUTE_MS
            })
            .map(|(name, _)| name.clone())
            .collect();
        if candidates.is_empty() {
            return;
        }
        let name = candidates[self.rng.random_range(0..candidates.len())].clone();
        if let Some(file) = self.hosts[host].replica.get_mut(&name) {
            file.evicted = Some((stub, now));
        }
        for neighbour in 0..self.devices.len() {
            if self.devices[neighbour].host == host {
                self.notify_later(neighbour, &name);
            }
        }
    }

    pub(super) fn duplicate(&mut self, device: usize) {
        let name = self.devices[device].own_file.clone();
        let Some((Some(text), _)) = self.server.get(&name).cloned() else {
            return;
        };
        let copy = match name.strip_suffix(".json") {
            Some(stem) => format!("{stem} 2.json"),
            None => format!("{name} 2"),
        };
        self.versions += 1;
        let transfer = Transfer {
            version: self.versions,
            name: copy,
            text: Some(text),
            writer: MEDIUM,
            write_ms: self.now_ms,
            nominal_ms: self.now_ms,
        };
        self.upload_arrived(transfer);
    }

    pub(super) fn sleep(&mut self, host: usize) {
        if self.hosts[host].asleep_since_ms.is_some() {
            return;
        }
        self.hosts[host].asleep_since_ms = Some(self.now_ms);
        for device in 0..self.devices.len() {
            if self.devices[device].host == host {
                // The process freezes: its TCP connection to Telegram dies with the poll.
                self.cancel_poll(device);
            }
        }
    }

    pub(super) fn wake(&mut self, host: usize) {
        let Some(since) = self.hosts[host].asleep_since_ms.take() else {
            return;
        };
        self.hosts[host].notice_until_ms = None;
        let slept_ms = self.now_ms - since;
        let local = self.local(host);
        for device in 0..self.devices.len() {
            if self.devices[device].host != host || self.devices[device].policy.is_none() {
                continue;
            }
            let lease_end = self.devices[device]
                .last_write_local
                .map(|at| at.0 + self.config.lease_ms);
            if lease_end.is_some_and(|end| local.0 >= end) {
                self.devices[device].must_revalidate = true;
            }
            self.trace(device, &format!("woke after {slept_ms}ms"));
            let queued: Vec<Event> = self.devices[device].inbox.drain(..).collect();
            let first = if queued.contains(&Event::Start) {
                Event::Start
            } else {
                Event::Woke { slept_ms }
            };
            self.deliver(device, first);
            self.maybe_poll(device);
            self.check_mail(device);
        }
    }

    pub(super) fn faults_end(&mut self) {
        self.faults_over = true;
        for device in 0..self.devices.len() {
            if self.devices[device].frozen_until_ms.is_some() {
                let incarnation = self.devices[device].incarnation;
                self.thaw(device, incarnation);
            }
        }
        for host in 0..self.hosts.len() {
            if self.hosts[host].asleep_since_ms.is_some() {
                self.wake(host);
            }
        }
        for device in 0..self.devices.len() {
            if self.devices[device].policy.is_none() {
                self.schedule(self.now_ms, Ev::Restart { device });
            }
        }
        let settled = self
            .latest_faulty_arrival_ms
            .max(self.now_ms)
            .saturating_add(self.config.settle_bound_ms);
        let check_from = settled + self.config.convergence_bound_ms;
        self.check_from_ms = Some(check_from);
        self.end_ms = check_from + self.config.check_window_ms;
        self.schedule(self.end_ms, Ev::End);
        self.schedule(check_from, Ev::Observe);
    }
}
