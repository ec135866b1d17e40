//! One turn of the run loop: an input stamped with the sleep-counting clock and fed to
//! the core, then every effect carried out in order, the answers it owes queued.
//!
//! Owns: `feed` (sleep detection, then `Core::handle`), the effects (record writes,
//! deletes, serving's start/stop/pause, pid probes, timers, notices, activation answers,
//! exit), the poller's progress folded back into the core, the lease published to the
//! poller, and the silent-leader report. Must never: decide a role, or read a peer file
//! on the event loop.

use std::time::Duration;

use crate::adapters::clock;
use crate::adapters::local;
use crate::adapters::store::StoreError;
use crate::adapters::telegram::{PollProgress, StartPosition};
use crate::core::election;
use crate::core::{Effect, Event, Input, Level, Moment, Role};

use super::{Runtime, seconds};

impl Runtime {
    pub(super) fn until_next_timer(&self) -> Duration {
        let now = clock::now();
        let core_next = self.core.next_timeout().map(|timeout| timeout.at);
        let next = match (core_next, self.lease_check_at) {
            (Some(core), Some(lease)) => Some(core.min(lease)),
            (core, lease) => core.or(lease),
        };
        next.map_or(Duration::from_secs(3600), |at| at.since(now))
    }

    /// While Standby, says how long a silent leader has been quiet, once per quarter of
    /// the liveness timeout — but only past one heartbeat interval plus the settle bound
    /// (the sync delay the protocol tolerates), so a healthy leader, whose changes arrive
    /// that often even through a slow sync, never causes a log line or a wake-up.
    /// Returns when to look again (`None`: nothing to watch; the core's own deadline
    /// takes over once the lease lapses).
    pub(super) fn report_silent_leader(&mut self) -> Option<Moment> {
        if self.role != Role::Standby {
            return None;
        }
        let now = clock::now();
        let timing = *self.core.timing();
        let leader = election::leader(self.core.peers(), now, &timing)?;
        let liveness = timing.liveness_active;
        let quarter_ms = (liveness.as_millis() / 4).max(1) as u64;
        let quiet_normally = timing.heartbeat_active.max() + timing.settle_bound();
        let first_quarter = (quiet_normally.as_millis() as u64 / quarter_ms) + 1;
        let silent = now.since(leader.changed_at);
        let quarters = silent.as_millis() as u64 / quarter_ms;
        let report = (leader.stem.clone(), leader.changed_at, quarters as u32);
        if quarters >= first_quarter && self.lease_reported.as_ref() != Some(&report) {
            tracing::info!(
                parent: &self.span,
                leader = %leader.record.device_id,
                "leader {} silent for {} of {}",
                leader.record.device_id,
                seconds(silent),
                seconds(liveness)
            );
            self.lease_reported = Some(report);
        }
        let next = leader.changed_at.plus(Duration::from_millis(
            quarter_ms * quarters.max(first_quarter - 1).saturating_add(1),
        ));
        (next < election::lapses_at(leader, &timing)).then_some(next)
    }

    /// Hands one event to the core (after noting any sleep) and carries out the effects.
    pub(super) async fn feed(&mut self, event: Event) {
        if let Some(slept) = self.sleep.check() {
            tracing::warn!(parent: &self.span, slept_s = slept.as_secs(), "woke from sleep");
            // Watchers have gone silently dead across sleep (FACTS): a fresh one now, not
            // at the next 30-minute refresh, which counts awake time only.
            self.recreate_watcher("woke from sleep");
            // The core answers Woke with a Rescan in every state: one listing is enough.
            self.rescan_pending = false;
            self.handle(Event::Woke {
                slept_ms: slept.as_millis() as u64,
            });
            self.execute_effects().await;
        }
        self.handle(event);
        self.execute_effects().await;
        if let Some(progress) = self.serving.progress_changed() {
            self.record_progress(&progress);
            // A timer may have fallen due in between: nothing the core asked waits.
            self.execute_effects().await;
        }
        self.lease_check_at = self.report_silent_leader();
        // The poller starts no getUpdates past this (it reads the clock before each).
        let lease = self.core.lease_deadline();
        self.lease_tx.send_if_modified(|published| {
            let changed = *published != lease;
            *published = lease;
            changed
        });
        // Issue 11: the poller routes each update by the latest view.
        self.publish_routes();
    }

    /// Puts the poller's progress in the core's record (written with the next heartbeat).
    /// Sent even when it is 0: after Telegram started its ids over, nothing of the new
    /// sequence is handled yet, and the record must stop carrying the old high id.
    pub(super) fn record_progress(&mut self, progress: &PollProgress) {
        self.handle(Event::UpdateHandled {
            update_id: progress.handled_through,
        });
        self.handle(Event::HandledAbove {
            ids: progress.handled_above.clone(),
        });
    }

    /// Every record this device knows: its peers' and its own.
    pub(super) fn all_records(&self) -> impl Iterator<Item = &crate::core::DeviceRecord> {
        self.core
            .peers()
            .values()
            .map(|peer| &peer.record)
            .chain(std::iter::once(self.core.own_record()))
    }

    pub(super) fn handle(&mut self, event: Event) {
        let input = Input {
            at: clock::now(),
            wall_ms: clock::wall_ms(),
            event,
        };
        self.core.handle(input);
    }

    pub(super) async fn execute_effects(&mut self) {
        while let Some(effect) = self.core.poll_effect() {
            self.execute(effect).await;
        }
    }

    pub(super) async fn execute(&mut self, effect: Effect) {
        match effect {
            Effect::Transition { from, to, cause } => {
                self.role = to;
                // A fresh span per role: recording into the old one would append, not replace.
                self.span = tracing::info_span!("baton", role = to.as_str());
                tracing::info!(parent: &self.span, %from, %to, %cause, term = self.core.term(), "role changed");
            }
            Effect::WriteRecord { record } => self.write_record(*record).await,
            Effect::DeleteFile { name, reason } => match self.store.delete(&name) {
                Ok(()) => tracing::info!(parent: &self.span, file = %name, %reason, "deleted"),
                Err(error) => tracing::warn!(parent: &self.span, %error, "cannot delete"),
            },
            Effect::StartActing {
                term,
                skip_through,
                also_handled,
            } => {
                tracing::info!(parent: &self.span, term, ?skip_through, "serving the bot");
                let start = StartPosition {
                    skip_through: skip_through.unwrap_or(0),
                    also_handled,
                };
                self.say_why_peers_cannot_poll();
                let known_foreign: Vec<i64> = self
                    .all_records()
                    .flat_map(|record| record.foreign_chats.iter().copied())
                    .collect();
                self.serving.start(term, start, known_foreign).await;
                self.hold_sleep_for_acting();
            }
            Effect::StopActing { reason } => {
                let progress = self.serving.stop(&reason).await;
                self.release_sleep_after_acting();
                if let Some(progress) = &progress {
                    self.record_progress(progress);
                }
                let last_update_id = progress.map(|p| p.handled_through).filter(|id| *id > 0);
                self.pending
                    .push_back(Event::ActingStopped { last_update_id });
            }
            Effect::PauseActing { until } => {
                self.serving.pause(until.since(clock::now())).await;
            }
            Effect::Rescan => self.rescan().await,
            Effect::RememberRefusal { install_id } => {
                local::remember_refusal(&self.refusal_file, Some(&install_id));
            }
            Effect::ForgetRefusal => local::remember_refusal(&self.refusal_file, None),
            Effect::RequestDownload { name } => {
                self.store.request_download(&name);
            }
            Effect::AskWitness => self.ask_witness(),
            Effect::ProbePid { stem, pid } => {
                let alive = local::pid_alive(pid);
                self.pending
                    .push_back(Event::PidProbed { stem, pid, alive });
            }
            Effect::TimerArmed {
                timer,
                at,
                jitter_ms,
            } => {
                tracing::trace!(parent: &self.span, ?timer, %at, jitter_ms, "timer armed");
            }
            Effect::Notify { level, message } => match level {
                Level::Info => tracing::info!(parent: &self.span, "{message}"),
                Level::Warn => tracing::warn!(parent: &self.span, "{message}"),
                Level::Error => tracing::error!(parent: &self.span, "{message}"),
            },
            Effect::ActivationResult { ticket, result } => self.answer(ticket, result).await,
            Effect::AllowSleep { reason } => self.allow_sleep(&reason),
            Effect::Exit { code, reason } => {
                tracing::info!(parent: &self.span, code, %reason, "exit requested");
                self.exit_code = Some(code);
            }
        }
    }

    /// Writes our record and queues the outcome for the core: our lease runs from writes
    /// known to be on disk, and a device that cannot write neither contends nor acts.
    /// The core reports a failure once per episode (with this path and OS error).
    pub(super) async fn write_record(&mut self, record: crate::core::DeviceRecord) {
        let store = self.store.clone();
        let seq = record.seq;
        let written = tokio::task::spawn_blocking(move || store.write_record(&record)).await;
        let failure = match written {
            Ok(Ok(())) => {
                tracing::debug!(parent: &self.span, file = self.store.own_name(), seq, "wrote own record");
                None
            }
            Ok(Err(error)) => {
                if let StoreError::Write { source, .. } = &error
                    && source.kind() == std::io::ErrorKind::NotFound
                {
                    // The folder itself is gone: make it again and watch the new one;
                    // the core's retry then writes into it.
                    self.check_folder().await;
                }
                Some(error.to_string())
            }
            Err(error) => Some(format!("the writer task failed: {error}")),
        };
        let event = match failure {
            None => Event::RecordWritten { seq },
            Some(reason) => {
                tracing::debug!(parent: &self.span, seq, %reason, "own record not written");
                Event::RecordWriteFailed { seq, reason }
            }
        };
        self.pending.push_back(event);
    }
}
