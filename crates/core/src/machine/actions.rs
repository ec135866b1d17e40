//! The actions several states share, on the context: resigning, refusing, answering an
//! activation, the device table and handoff targets, the same-boot test for pid probes.
//! Must never: decide a transition (the states do).

use std::time::Duration;

use crate::context::Ctx;
use crate::election::{self, DeviceRow, Health};
use crate::io::{ActivationOutcome, Effect, Level, exit_code};
use crate::record::{DeviceRecord, Status};

impl Ctx {
    pub(crate) fn exit(&mut self, code: i32, reason: &str) {
        self.emit(Effect::Exit {
            code,
            reason: reason.to_string(),
        });
    }

    /// Writes a final `stopped` record (dropping any claim) and asks to exit.
    pub(super) fn resign(&mut self, reason: &str) {
        self.own.status = Status::Stopped;
        self.own.handoff = None;
        self.write_record();
        self.exit(exit_code::OK, reason);
    }

    /// Stops taking part: no more writes; the exit is asked for on entering Registering,
    /// after any `StopActing` of the state being left.
    pub(super) fn refuse(&mut self, found: &DeviceRecord) {
        self.refused = true;
        if found.install_id == self.identity.install_id {
            let message = format!(
                "another baton process serves this directory: {} (pid {} on host {:?}) \
                 writes this device's record. Only one may run per directory; stop the \
                 other one. Not taking part.",
                found.device_id, found.pid, found.hostname
            );
            self.notify(Level::Error, message.clone());
            self.refusal = Some(message);
            return;
        }
        let message = format!(
            "another live process writes this device's record: {} (pid {} on host {:?}, \
             install {}). This Mac looks cloned or restored from a backup. Give one of them \
             its own name with --device-name or DEVICE_NAME. Not taking part.",
            found.device_id, found.pid, found.hostname, found.install_id
        );
        self.notify(Level::Error, message.clone());
        self.refusal = Some(message);
        // A restart (launchd's, every 10 s) would watch the twin's record again and, if
        // the twin is a quiet standby, take it over: two writers, and the twin refuses in
        // turn. Remembered, the next start refuses at once while that install holds it.
        self.emit(Effect::RememberRefusal {
            install_id: found.install_id.clone(),
        });
    }

    pub(crate) fn answer(&mut self, ticket: u64, result: ActivationOutcome) {
        self.emit(Effect::ActivationResult { ticket, result });
    }

    /// True when `record`'s pid can be probed from here: written on this very boot of
    /// this machine (a hostname alone is shared by clones and namesake Macs, whose pids
    /// mean nothing here).
    pub(super) fn same_boot(&self, record: &DeviceRecord) -> bool {
        !self.identity.boot_id.is_empty()
            && record.boot_id == self.identity.boot_id
            && record.hostname == self.identity.hostname
            && record.pid != 0
    }

    /// The device table as this device sees it (itself included).
    pub fn table(&self) -> Vec<DeviceRow> {
        let mut entries: Vec<(DeviceRecord, Duration, bool)> = self
            .peers
            .values()
            .map(|peer| (peer.record.clone(), self.now.since(peer.changed_at), false))
            .collect();
        if self.last_write.is_some() {
            let age = self.now.since(self.last_write.unwrap_or(self.now));
            entries.push((self.own.clone(), age, true));
        }
        election::device_table(entries, &self.timing)
    }

    pub(super) fn resolve(&self, typed: &str) -> Result<String, String> {
        let typed = typed.trim();
        if typed.is_empty() {
            return Ok(self.me().to_string());
        }
        election::resolve_target(&self.table(), typed).map_err(|error| error.to_string())
    }

    /// A handoff may go only to a live standby.
    pub(super) fn valid_handoff_target(&self, target: &str) -> Result<(), String> {
        let Some(peer) = election::find_by_id(&self.peers, target) else {
            return Err(format!("{target} is not a known device"));
        };
        let live = election::is_live(peer, self.now, &self.timing);
        let row_health = if live { Health::Ok } else { Health::Stale };
        match (peer.record.status, row_health) {
            (_, Health::Stale) | (Status::Stopped, _) => Err(format!(
                "{target} is stale (last seen {}s ago); it must be running to take over",
                self.now.since(peer.changed_at).as_secs()
            )),
            (Status::Standby, _) if peer.record.polling_refused.is_some() => Err(format!(
                "{target} cannot poll: Telegram refused its bot token ({}); fix its token \
                 and restart it first",
                peer.record.polling_refused.as_deref().unwrap_or_default()
            )),
            (Status::Standby, _) if !peer.record.is_newer_schema() => Ok(()),
            (status, _) => Err(format!(
                "{target} is {} and cannot take over now",
                status.as_str()
            )),
        }
    }
}
