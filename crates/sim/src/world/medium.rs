//! The lagging sync medium: replicas, uploads to the server copy, downloads to every
//! other host (latest version wins per file and destination), notifications, listings
//! and evictions seen as observations. Owns: what a device can see of the folder. Must
//! never: deliver a version out of order for one file and destination, or let a device
//! see another's replica.

use super::*;

impl World {
    pub(super) fn replica(&self, device: usize) -> &BTreeMap<String, ReplicaFile> {
        &self.hosts[self.devices[device].host].replica
    }

    pub(super) fn refusing_writes(&self, device: usize) -> bool {
        let host = &self.hosts[self.devices[device].host];
        host.refuse_windows
            .iter()
            .any(|(start, end)| *start <= self.now_ms && self.now_ms < *end)
    }

    /// A write the device asked for: it lands (and is answered `RecordWritten` when it
    /// carries a seq), or the host's disk refuses it (`RecordWriteFailed`).
    pub(super) fn write(&mut self, device: usize, name: String, text: String, seq: Option<u64>) {
        if self.refusing_writes(device) {
            self.trace(device, &format!("write {name} refused by the disk"));
            if let Some(seq) = seq {
                let reason = format!("cannot write {name}: Read-only file system (os error 30)");
                self.devices[device]
                    .inbox
                    .push_back(Event::RecordWriteFailed { seq, reason });
            }
            return;
        }
        self.write_landed(device, name, Some(text));
        if let Some(seq) = seq {
            self.devices[device]
                .inbox
                .push_back(Event::RecordWritten { seq });
        }
    }

    pub(super) fn write_landed(&mut self, device: usize, name: String, text: Option<String>) {
        if self.config.trace {
            let seq = text
                .as_deref()
                .and_then(|t| t.split("\"seq\": ").nth(1))
                .and_then(|t| t.split(',').next())
                .unwrap_or("-");
            self.trace(device, &format!("write {name} seq {seq}"));
        }
        let own = self.devices[device].own_file.clone();
        let shared = name == crate::seed_policy::STATE_FILE && !self.is_baton();
        if name != own && !shared {
            self.violation(format!(
                "device {device} wrote {name}, not its own file {own}"
            ));
        }
        if shared {
            self.metrics.writes_shared_file += 1;
        }
        if self.devices[device].adapter.acting {
            self.metrics.writes_active += 1;
        } else {
            self.metrics.writes_standby += 1;
        }
        let host = self.devices[device].host;
        self.devices[device].last_write_local = Some(self.local(host));
        self.write_local(device, name, text);
    }

    pub(super) fn delete(&mut self, device: usize, name: String) {
        let own_stem = record::file_stem(&self.devices[device].spec.device_id);
        let allowed = match record::classify_name(&name) {
            NameKind::ConflictCopy { stem } => stem == own_stem,
            NameKind::Record { .. } => {
                let last_write = self.last_server_write(&name);
                self.devices[device].adapter.acting
                    && self.now_ms.saturating_sub(last_write) > self.config.retention_ms
            }
            _ => false,
        };
        if !allowed {
            self.violation(format!(
                "device {device} deleted {name}, which is not its to delete"
            ));
        }
        if !self.refusing_writes(device) {
            self.write_local(device, name, None);
        }
    }

    /// The change lands in the host's folder at once (devices on the same host share
    /// it and hear of it through the watcher), then goes up to the server.
    pub(super) fn write_local(&mut self, device: usize, name: String, text: Option<String>) {
        let host = self.devices[device].host;
        let now = self.now_ms;
        let entry = self.hosts[host].replica.entry(name.clone()).or_default();
        entry.text = text.clone();
        entry.local_version = self.versions + 1;
        entry.arrived_ms = now;
        entry.evicted = None;
        for neighbour in 0..self.devices.len() {
            if neighbour != device && self.devices[neighbour].host == host {
                self.notify_later(neighbour, &name);
            }
        }
        self.send_upload(host, name, text);
    }

    pub(super) fn notify_later(&mut self, device: usize, name: &str) {
        let latency = self
            .rng
            .random_range(0..=self.config.delay.notification_latency_ms_max);
        let incarnation = self.devices[device].incarnation;
        self.schedule(
            self.now_ms + latency,
            Ev::Notify {
                dest: device,
                incarnation,
                name: name.to_string(),
            },
        );
    }

    pub(super) fn last_server_write(&self, name: &str) -> u64 {
        self.server.get(name).map_or(0, |(_, at)| *at)
    }

    pub(super) fn send_upload(&mut self, writer_host: usize, name: String, text: Option<String>) {
        let drawn = self.config.delay.upload_ms(&mut self.rng, self.faults_over);
        let windows = &self.hosts[writer_host];
        let nominal = postpone(
            &windows.cut_windows,
            postpone(&windows.stall_windows, self.now_ms + drawn),
        );
        let arrival = self.postpone_all(writer_host, nominal);
        self.note_arrival(arrival);
        if nominal - self.now_ms > self.config.settle_bound_ms && !mail::is_mail(&name) {
            // Known in advance; a version later superseded counts too: its readers did
            // not see that state in time.
            self.breaches.push((self.now_ms, nominal));
        }
        self.versions += 1;
        let transfer = Transfer {
            version: self.versions,
            name,
            text,
            writer: writer_host,
            write_ms: self.now_ms,
            nominal_ms: nominal,
        };
        self.schedule(arrival, Ev::Upload(Box::new(transfer)));
    }

    pub(super) fn note_arrival(&mut self, arrival: u64) {
        if !self.faults_over {
            self.latest_faulty_arrival_ms = self.latest_faulty_arrival_ms.max(arrival);
        }
    }

    pub(super) fn postpone_all(&self, host: usize, at: u64) -> u64 {
        let mut at = at;
        let windows = &self.hosts[host];
        for _ in 0..8 {
            let next = postpone(
                &windows.stall_windows,
                postpone(&windows.cut_windows, postpone(&windows.sleep_windows, at)),
            );
            if next == at {
                break;
            }
            at = next;
        }
        at
    }

    pub(super) fn upload_arrived(&mut self, transfer: Transfer) {
        let key = (transfer.name.clone(), transfer.writer);
        let latest = self.upload_latest.entry(key).or_insert(0);
        if *latest > transfer.version {
            return; // superseded by a newer version of the same file
        }
        *latest = transfer.version;
        self.server.insert(
            transfer.name.clone(),
            (transfer.text.clone(), transfer.write_ms),
        );
        for dest in 0..self.hosts.len() {
            if dest == transfer.writer {
                continue;
            }
            let drawn = self.config.delay.download_ms(&mut self.rng);
            let bound = self.config.settle_bound_ms;
            let nominal_raw = transfer.nominal_ms.max(self.now_ms) + drawn;
            let nominal = if transfer.write_ms >= self.scenario.fault_end_ms {
                // After faults: delays stay within the bound (the convergence check's premise).
                nominal_raw.min(transfer.write_ms + bound)
            } else {
                postpone(&self.hosts[dest].cut_windows, nominal_raw)
            };
            let arrival = self.postpone_all(dest, nominal.max(self.now_ms));
            self.note_arrival(arrival);
            let delay = nominal.saturating_sub(transfer.write_ms);
            self.metrics.delays.add(delay);
            if delay > bound && !mail::is_mail(&transfer.name) {
                self.breaches.push((transfer.write_ms, nominal));
            }
            let transfer = Box::new(Transfer {
                nominal_ms: nominal,
                ..transfer.clone()
            });
            self.schedule(arrival, Ev::Download { dest, transfer });
        }
    }

    pub(super) fn download_arrived(&mut self, host: usize, transfer: Transfer) {
        let now = self.now_ms;
        let latest = self
            .download_latest
            .entry((transfer.name.clone(), host))
            .or_insert(0);
        if *latest > transfer.version {
            return; // superseded: a newer version of the file is already here
        }
        *latest = transfer.version;
        if self.config.trace {
            eprintln!(
                "{:>10.3}s host{host}: {} written at {:.3}s arrives",
                now as f64 / 1000.0,
                transfer.name,
                transfer.write_ms as f64 / 1000.0
            );
        }
        let entry = self.hosts[host]
            .replica
            .entry(transfer.name.clone())
            .or_default();
        if entry.local_version > transfer.version {
            return; // our own later write is on its way and will win at the server
        }
        entry.text = transfer.text;
        entry.arrived_ms = now;
        if let Some((_, since)) = entry.evicted.take() {
            self.breaches.push((since, now));
        }
        for device in 0..self.devices.len() {
            if self.devices[device].host != host || !self.running(device) {
                continue;
            }
            let lose = !self.faults_over
                && self
                    .rng
                    .random_bool(self.config.delay.notification_loss_share);
            if lose {
                self.trace(device, "notification lost");
                self.metrics.lost_notifications += 1;
                self.breaches
                    .push((transfer.write_ms, now + self.config.backstop_max_ms));
                continue;
            }
            self.notify_later(device, &transfer.name);
        }
    }

    pub(super) fn observation(&self, device: usize, name: &str) -> FileObservation {
        match self.replica(device).get(name) {
            Some(ReplicaFile {
                text: Some(_),
                evicted: Some((true, _)),
                ..
            }) => FileObservation {
                name: stub_name(name),
                state: FileState::Contents {
                    text: "bplist00 (stub)".into(),
                },
            },
            Some(ReplicaFile {
                text: Some(_),
                evicted: Some((false, _)),
                ..
            }) => FileObservation {
                name: name.to_string(),
                state: FileState::Dataless,
            },
            Some(ReplicaFile {
                text: Some(text), ..
            }) => FileObservation {
                name: name.to_string(),
                state: FileState::Contents { text: text.clone() },
            },
            _ => FileObservation {
                name: name.to_string(),
                state: FileState::Gone,
            },
        }
    }

    pub(super) fn listing(&self, device: usize) -> Vec<FileObservation> {
        self.replica(device)
            .iter()
            .filter(|(name, file)| file.text.is_some() && !mail::is_mail(name))
            .map(|(name, _)| self.observation(device, name))
            .collect()
    }

    pub(super) fn notify(&mut self, dest: usize, incarnation: u32, name: &str) {
        if self.devices[dest].incarnation != incarnation || !self.running(dest) {
            return;
        }
        if mail::is_mail(name) {
            // The mail folder's own watch (the core never sees mail).
            self.check_mail(dest);
            return;
        }
        if !self.devices[dest].adapter.acting {
            self.metrics.standby_file_events += 1;
        }
        let file = self.observation(dest, name);
        if self.config.trace {
            let line = format!(
                "notified of {name}: {}",
                serde_json::to_string(&file).unwrap_or_default()
            );
            self.trace(dest, &line[..line.len().min(300)]);
        }
        self.deliver(dest, Event::FileChanged { file });
    }

    pub(super) fn restore(&mut self, host: usize, name: &str) {
        let now = self.now_ms;
        let Some(entry) = self.hosts[host].replica.get_mut(name) else {
            return;
        };
        let Some((_, since)) = entry.evicted.take() else {
            return;
        };
        self.breaches.push((since, now));
        for device in 0..self.devices.len() {
            if self.devices[device].host == host {
                self.notify_later(device, name);
            }
        }
    }
}
