//! The Telegram model: the server's unconfirmed updates and ids, getUpdates with its
//! offsets and long polls, 409s between pollers, and each device's adapter over it.
//! Owns: what Telegram holds and answers. Must never: confirm an update the device did
//! not ask past, or let two long polls hold at once without a 409.

use super::*;

#[derive(Clone, Debug)]
pub(super) struct Telegram {
    /// Unconfirmed updates by id: (index in the order sent, activation target).
    pub(super) pending: BTreeMap<i64, (usize, Option<String>)>,
    /// The id the next update gets. Real ids are in the hundreds of millions, and a
    /// restart picks one at random among two billion; so do these.
    pub(super) next_id: i64,
    /// By index in the order sent.
    pub(super) sent_ms: Vec<u64>,
    pub(super) handled: Vec<u32>,
    pub(super) held: Option<(usize, u64)>,
    pub(super) next_poll: u64,
    /// Ids start over at the next message sent while nothing is unconfirmed.
    pub(super) restart_due: bool,
    /// Draws the ids, apart from the world's rng, so that runs without a restart are
    /// the runs they always were.
    pub(super) ids_rng: ChaCha8Rng,
    /// Updates confirmed lately: (sent, confirmed), for `pending_update_count`'s lag.
    pub(super) confirmed_recent: VecDeque<(u64, u64)>,
    /// Draws the witness's lag, apart from the world's rng (runs without a witness stay
    /// the runs they were).
    pub(super) witness_rng: ChaCha8Rng,
}

/// Telegram's ids are positive 32-bit integers.
const UPDATE_ID_RANGE: std::ops::Range<i64> = 1..(1 << 31);

impl Telegram {
    pub(super) fn new(seed: u64) -> Self {
        let mut ids_rng = baton_core::seed::rng(seed, "telegram");
        Telegram {
            pending: BTreeMap::new(),
            next_id: ids_rng.random_range(100_000_000..1_000_000_000),
            sent_ms: Vec::new(),
            handled: Vec::new(),
            held: None,
            next_poll: 0,
            restart_due: false,
            ids_rng,
            confirmed_recent: VecDeque::new(),
            witness_rng: baton_core::seed::rng(seed, "telegram witness"),
        }
    }
}

impl World {
    pub(super) fn send_update(&mut self, activate: Option<String>) {
        let telegram = &mut self.telegram;
        if telegram.restart_due && telegram.pending.is_empty() {
            // "The identifier of the next update will be chosen randomly."
            telegram.restart_due = false;
            telegram.next_id = telegram.ids_rng.random_range(UPDATE_ID_RANGE);
            self.metrics.telegram_id_restarts += 1;
            if self.config.trace {
                eprintln!(
                    "[{:>10.3}s] telegram ids start over at {}",
                    self.now_ms as f64 / 1000.0,
                    telegram.next_id
                );
            }
        }
        let id = telegram.next_id;
        telegram.next_id += 1;
        let index = telegram.sent_ms.len();
        telegram.sent_ms.push(self.now_ms);
        telegram.handled.push(0);
        telegram.pending.insert(id, (index, activate.clone()));
        self.metrics.updates_sent += 1;
        self.mail_on_send(activate.is_some());
        if let Some((device, poll)) = self.telegram.held.take() {
            self.respond(
                device,
                poll,
                PollResult::Updates(vec![(id, index, activate)]),
            );
        }
    }

    pub(super) fn ask_activation(&mut self, target: usize) {
        let active = (0..self.devices.len()).find(|d| self.acting(*d));
        let eligible = active.is_some_and(|a| a != target)
            && self.running(target)
            && !self.devices[target].adapter.acting
            && self
                .now_ms
                .saturating_sub(self.devices[target].alive_since_ms)
                > 2 * MINUTE_MS;
        if eligible {
            self.pending.push(PendingMeasure {
                kind: PendingKind::Handoff,
                since_ms: self.now_ms,
                device: target,
                same_host_witness: false,
            });
        }
        let id = self.devices[target].spec.device_id.clone();
        self.send_update(Some(id));
    }

    pub(super) fn respond(&mut self, device: usize, poll: u64, result: PollResult) {
        if matches!(result, PollResult::Conflict) {
            self.metrics.conflicts_409 += 1;
        }
        self.schedule(
            self.now_ms + TELEGRAM_RTT_MS / 2,
            Ev::PollResponse {
                device,
                poll,
                result,
            },
        );
    }

    /// getUpdates(offset) as the server sees it: confirm below the offset (an offset
    /// above every id given out confirms nothing, as on the real server after its ids
    /// started over), answer the older waiting poll with 409, then answer now or hold.
    pub(super) fn get_updates(
        &mut self,
        device: usize,
        offset: Option<i64>,
        hold: bool,
    ) -> Option<u64> {
        if let Some(offset) = offset.filter(|offset| *offset <= self.telegram.next_id) {
            let confirmed: Vec<(i64, usize)> = self
                .telegram
                .pending
                .range(..offset)
                .map(|(id, (index, _))| (*id, *index))
                .collect();
            for (id, index) in confirmed {
                self.telegram.pending.remove(&id);
                let sent_ms = self.telegram.sent_ms[index];
                self.note_confirmed(sent_ms);
                if self.telegram.handled[index] == 0 {
                    self.metrics.updates_lost += 1;
                    self.violation_if_baton(format!("update {id} confirmed without being handled"));
                }
            }
        }
        if let Some((other, poll)) = self.telegram.held.take() {
            self.respond(other, poll, PollResult::Conflict);
        }
        if !hold {
            return None;
        }
        self.telegram.next_poll += 1;
        let poll = self.telegram.next_poll;
        let available: Vec<Delivered> = self
            .telegram
            .pending
            .iter()
            .take(100)
            .map(|(id, (index, activate))| (*id, *index, activate.clone()))
            .collect();
        if available.is_empty() {
            self.telegram.held = Some((device, poll));
            self.schedule(self.now_ms + LONG_POLL_MS, Ev::HeldTimeout { poll });
        } else {
            self.respond(device, poll, PollResult::Updates(available));
        }
        Some(poll)
    }

    fn note_confirmed(&mut self, sent_ms: u64) {
        let now = self.now_ms;
        let recent = &mut self.telegram.confirmed_recent;
        while recent
            .front()
            .is_some_and(|(_, at)| now.saturating_sub(*at) > WITNESS_LAG_MAX_MS)
        {
            recent.pop_front();
        }
        if recent.len() < 10_000 {
            recent.push_back((sent_ms, now));
        }
    }

    /// getWebhookInfo's `pending_update_count` as a standby sees it: what was unconfirmed
    /// `lag` ago (the count is not live on the server: up to [`WITNESS_LAG_MAX_MS`] old),
    /// answered a round trip later. Cut-offs and stalls are the sync's: Telegram answers.
    pub(super) fn ask_witness(&mut self, device: usize) {
        self.metrics.witness_asks += 1;
        let lag = self
            .telegram
            .witness_rng
            .random_range(0..=WITNESS_LAG_MAX_MS);
        let as_of = self.now_ms.saturating_sub(lag);
        let sent = &self.telegram.sent_ms;
        let waiting = self
            .telegram
            .pending
            .values()
            .filter(|(index, _)| sent[*index] <= as_of)
            .count();
        let confirmed_since = self
            .telegram
            .confirmed_recent
            .iter()
            .filter(|(sent, confirmed)| *sent <= as_of && *confirmed > as_of)
            .count();
        let count = (waiting + confirmed_since) as u64;
        let incarnation = self.devices[device].incarnation;
        self.schedule(
            self.now_ms + TELEGRAM_RTT_MS,
            Ev::Answer {
                device,
                incarnation,
                event: Event::Witnessed {
                    pending_update_count: Some(count),
                },
            },
        );
    }

    pub(super) fn violation_if_baton(&mut self, message: String) {
        if self.is_baton() {
            self.violation(message);
        }
    }

    pub(super) fn maybe_poll(&mut self, device: usize) {
        if !self.running(device) {
            return;
        }
        let host = self.devices[device].host;
        let local = self.local(host);
        let adapter = &self.devices[device].adapter;
        if !adapter.acting || adapter.outstanding.is_some() {
            return;
        }
        if local < adapter.paused_until || self.now_ms < adapter.backoff_until_ms {
            return; // an AdapterWake is scheduled for the end of the pause or backoff
        }
        let lapsed = local >= self.lease_deadline(device);
        self.devices[device].adapter.lease_blocked = lapsed;
        if lapsed {
            return; // polls again when a delivered input renews the lease
        }
        if self.devices[device].must_revalidate {
            self.violation(format!(
                "device {device} polls after waking past its lease without re-validating"
            ));
            self.devices[device].must_revalidate = false;
        }
        let offset = self.devices[device].adapter.offset();
        let poll = self.get_updates(device, offset, true);
        self.devices[device].adapter.outstanding = poll;
        self.devices[device].adapter.poll_offset = offset;
        self.resolve_pending_on_poll(device);
    }

    pub(super) fn resolve_pending_on_poll(&mut self, device: usize) {
        let now = self.now_ms;
        let mut kept = Vec::with_capacity(self.pending.len());
        for measure in std::mem::take(&mut self.pending) {
            let resolves = match measure.kind {
                PendingKind::Crash
                | PendingKind::SleepAnnounced
                | PendingKind::SleepUnannounced => true,
                PendingKind::Resign => device != measure.device,
                PendingKind::Handoff => device == measure.device,
            };
            if !resolves {
                kept.push(measure);
                continue;
            }
            let elapsed = now - measure.since_ms;
            // How long the oldest update still waiting (sent after the crash) waited:
            // what the user who wrote it saw.
            let sent = &self.telegram.sent_ms;
            let waiting_since = self
                .telegram
                .pending
                .values()
                .map(|(index, _)| sent[*index].max(measure.since_ms))
                .min();
            if measure.kind == PendingKind::Crash
                && let Some(since) = waiting_since
            {
                self.metrics.crash_failover_waiting_ms.push(now - since);
            }
            match measure.kind {
                PendingKind::Crash if measure.same_host_witness => {
                    self.metrics.crash_failover_ms.push(elapsed)
                }
                PendingKind::Crash => {
                    self.metrics.crash_failover_ms.push(elapsed);
                    self.metrics.crash_failover_cross_host_ms.push(elapsed);
                }
                PendingKind::Resign => self.metrics.resign_takeover_ms.push(elapsed),
                PendingKind::Handoff => self.metrics.handoff_ms.push(elapsed),
                PendingKind::SleepAnnounced => {
                    self.metrics.sleep_takeover_announced_ms.push(elapsed)
                }
                PendingKind::SleepUnannounced => {
                    self.metrics.sleep_takeover_unannounced_ms.push(elapsed)
                }
            }
        }
        self.pending = kept;
    }

    pub(super) fn cancel_poll(&mut self, device: usize) {
        if self
            .telegram
            .held
            .is_some_and(|(holder, _)| holder == device)
        {
            self.telegram.held = None;
        }
        self.devices[device].adapter.outstanding = None;
    }

    pub(super) fn poll_response(&mut self, device: usize, poll: u64, result: PollResult) {
        if self.devices[device].adapter.outstanding != Some(poll) || !self.running(device) {
            return; // cancelled: nothing it carried was confirmed, it will come again
        }
        self.devices[device].adapter.outstanding = None;
        let local = self.local(self.devices[device].host);
        if local >= self.lease_deadline(device) && matches!(result, PollResult::Updates(_)) {
            // Answered after the lease ran out (a frozen process resumed): not handled
            // here; unconfirmed, the updates go to whoever polls next.
            self.trace(device, "poll answered past the lease: not delivered");
            self.maybe_poll(device);
            return;
        }
        match result {
            PollResult::Updates(updates) => {
                let offset = self.devices[device].adapter.poll_offset;
                if let Some(ledger) = self.devices[device].adapter.ledger.as_mut() {
                    ledger.begin_batch(offset);
                }
                for update in updates {
                    self.handle_update(device, update);
                    if !self.devices[device].adapter.acting || !self.running(device) {
                        return;
                    }
                }
                self.maybe_poll(device);
            }
            PollResult::Empty => self.maybe_poll(device),
            PollResult::Conflict => {
                // The poller's own back-off (one constant for core, poller and model).
                let (least, most) = (CONFLICT_BACKOFF.base, CONFLICT_BACKOFF.max());
                let backoff = self
                    .rng
                    .random_range(least.as_millis() as u64..=most.as_millis() as u64);
                self.devices[device].adapter.backoff_until_ms = self.now_ms + backoff;
                let incarnation = self.devices[device].incarnation;
                self.schedule(
                    self.now_ms + backoff,
                    Ev::AdapterWake {
                        device,
                        incarnation,
                    },
                );
                let description = "Conflict: terminated by other getUpdates request".into();
                self.deliver(device, Event::Conflict { description });
            }
        }
    }

    pub(super) fn handle_update(&mut self, device: usize, (id, index, activate): Delivered) {
        let Some(ledger) = self.devices[device].adapter.ledger.as_mut() else {
            return;
        };
        let admission = ledger.admit(id);
        if matches!(admission, Admission::Known | Admission::Unusable) {
            return;
        }
        ledger.handled(id);
        let handled_through = ledger.progress().handled_through;
        if let Admission::Restarted { offset_sent } = admission {
            self.metrics.telegram_id_restarts_followed += 1;
            self.trace(
                device,
                &format!("ids started over: {id} below offset {offset_sent}"),
            );
        }
        let count = &mut self.telegram.handled[index];
        *count += 1;
        if *count > 1 {
            self.metrics.updates_duplicated += 1;
        }
        if self.routing_on() && activate.is_none() {
            // Routed (mail posted) before it is confirmed: the poller's order.
            self.route_update(device, index, id);
        }
        if let Some(target) = activate {
            self.deliver(
                device,
                Event::ActivateAsked {
                    target,
                    ticket: id as u64,
                },
            );
        }
        if self.running(device) {
            let event = Event::UpdateHandled {
                update_id: handled_through,
            };
            self.deliver(device, event);
        }
    }

    pub(super) fn stop_acting(&mut self, device: usize) {
        let was_polling = self.devices[device].adapter.acting;
        self.cancel_poll(device);
        let adapter = &mut self.devices[device].adapter;
        adapter.acting = false;
        let offset = adapter.offset();
        let last = adapter
            .ledger
            .as_ref()
            .map(|ledger| ledger.progress().handled_through)
            .filter(|id| *id > 0);
        if was_polling && offset.is_some() {
            // Confirm what was handled: getUpdates(offset, timeout 0).
            self.get_updates(device, offset, false);
        }
        let incarnation = self.devices[device].incarnation;
        self.schedule(
            self.now_ms + TELEGRAM_RTT_MS,
            Ev::Answer {
                device,
                incarnation,
                event: Event::ActingStopped {
                    last_update_id: last,
                },
            },
        );
    }
}
