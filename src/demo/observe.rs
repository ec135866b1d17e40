//! What the demo observes: the fake's request log, the devices' JSON logs, the syncer's
//! copies and the stand-in mirrors' outputs, gathered into the timeline.
//!
//! Owns: one look at every source ([`Demo::pump`]), bounded waits on what it sees, and
//! the questions the story asks of it (who is active, what was written when). Must
//! never: block for longer than one pump interval without looking again.

use std::time::{Duration, Instant};

use crate::adapters::clock;
use crate::core::record::{DeviceRecord, Status};

use super::fleet::ProcessState;
use super::report::TableDevice;
use super::*;

impl Demo {
    /// Looks at every source once: injects due messages, reaps processes, reads the
    /// syncer, the logs, the fake and the stubs' outputs, and prints what is settled.
    pub(super) async fn pump(&mut self) {
        self.inject_due();
        for (index, state) in self.fleet.reap() {
            let name = self.name(index);
            self.timeline.add(
                clock::wall_ms(),
                &name,
                format!("process {}", report::process_text(state)),
            );
        }
        self.read_syncer();
        self.read_logs();
        self.read_telegram();
        self.read_mirrors();
        let active_now = self.fleet.running().filter(|i| self.is_active(*i)).count();
        self.most_active_at_once = self.most_active_at_once.max(active_now);
        self.timeline.flush(TIMELINE_LAG);
    }

    pub(super) fn inject_due(&mut self) {
        if self.messages.is_none() {
            return;
        }
        let now = Instant::now();
        let running: Vec<usize> = self.fleet.running().collect();
        let active = self.sole_active(&running);
        let Some(flow) = self.messages.as_mut() else {
            return;
        };
        while flow.next_at <= now {
            let topic = flow.topics[flow.sent as usize % flow.topics.len().max(1)];
            flow.sent += 1;
            let text = match topic {
                Some(topic) => format!("user message {} in topic {topic}", flow.sent),
                None => format!("user message {}", flow.sent),
            };
            let id = self.fake.inject_text(DEMO_CHAT_ID, topic, &text);
            let injected = report::Injected {
                at_ms: clock::wall_ms(),
                topic,
                active,
                waited: active.is_none() || !self.deliveries.served_by_one_of(&running, topic),
            };
            self.deliveries.injected.insert(id, injected);
            flow.next_at += flow.interval;
        }
    }

    /// Types `count` messages in `topic` now, as the user would (counted like the flow's).
    pub(super) fn type_in_topic(&mut self, topic: i64, count: usize) {
        let running: Vec<usize> = self.fleet.running().collect();
        let active = self.sole_active(&running);
        for n in 1..=count {
            let text = format!("hello topic {topic}, message {n}");
            let at_ms = clock::wall_ms();
            let id = self.fake.inject_text(DEMO_CHAT_ID, Some(topic), &text);
            self.timeline.add(at_ms, &format!("user@{topic}"), text);
            let injected = report::Injected {
                at_ms,
                topic: Some(topic),
                active,
                waited: active.is_none()
                    || !self.deliveries.served_by_one_of(&running, Some(topic)),
            };
            self.deliveries.injected.insert(id, injected);
        }
    }

    pub(super) fn read_syncer(&mut self) {
        let news = self.syncer.drain();
        for seen in news.seen {
            self.records[seen.device] = Some((seen.record, seen.seen_ms));
        }
        for copy in news.landed {
            if copy.kind == sync::FileKind::Mailbox {
                self.mail_copies += 1;
                continue;
            }
            self.sync_delays.push(copy.delay);
            let Some(record) = copy.record else { continue };
            let version = Some((record.status, record.term));
            if self.landed[copy.from][copy.to] == version {
                continue;
            }
            self.landed[copy.from][copy.to] = version;
            let text = format!(
                "{}'s record ({}, term {}) reached {} after {} ms",
                self.name(copy.from),
                record.status.as_str(),
                record.term,
                self.replica_name(copy.to),
                copy.delay.as_millis()
            );
            self.timeline.add(copy.landed_ms, "sync", text);
        }
        for error in news.errors {
            self.timeline
                .add(clock::wall_ms(), "sync", format!("⚠ {error}"));
        }
    }

    pub(super) fn read_logs(&mut self) {
        for index in 0..self.log_tails.len() {
            let name = self.name(index);
            for line in self.log_tails[index].read_lines() {
                if let Some((at_ms, text)) = timeline::interpret_log_line(&line) {
                    let at_ms = at_ms.unwrap_or_else(clock::wall_ms);
                    self.timeline.add(at_ms, &name, text);
                }
            }
        }
    }

    pub(super) fn read_telegram(&mut self) {
        let news = self.polls.look(&self.fake.requests());
        for (at_ms, tag) in news.new_poller {
            let text = format!("{} polls getUpdates", self.name_of_tag(&tag));
            self.timeline.add(at_ms, "telegram", text);
        }
        for (at_ms, tag) in news.conflicts {
            let name = self.name_of_tag(&tag);
            let running = self
                .fleet
                .devices
                .iter()
                .any(|d| d.spec.device_id == tag && d.is_running());
            let text = if running {
                self.conflicts_to_live_devices += 1;
                format!("409 Conflict answered to {name}")
            } else {
                format!("409 ends {name}'s dangling poll (its process is gone)")
            };
            self.timeline.add(at_ms, "telegram", text);
        }
        for (at_ms, tag, topic, text) in news.said {
            let name = self.name_of_tag(&tag);
            let place = topic.map_or_else(String::new, |t| format!(" in topic {t}"));
            self.timeline.add(
                at_ms,
                "telegram",
                format!("bot{place} (via {name}): {text}"),
            );
            self.bot_said.push((at_ms, text));
        }
    }

    pub(super) fn read_mirrors(&mut self) {
        for index in 0..self.mirror_tails.len() {
            for line in self.mirror_tails[index].read_lines() {
                let Ok(value) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                if let Some(id) = value["update_id"].as_i64() {
                    let received_ms = value["received_at_ms"]
                        .as_u64()
                        .unwrap_or_else(clock::wall_ms);
                    let copies = self.deliveries.delivered.entry(id).or_default();
                    copies.push((index, received_ms));
                }
            }
        }
    }

    /// Pumps until `check` says yes, or fails after `limit`.
    pub(super) async fn wait_for<T>(
        &mut self,
        what: &str,
        limit: Duration,
        mut check: impl FnMut(&Self) -> Option<T>,
    ) -> Result<T, StoryError> {
        let started = Instant::now();
        loop {
            self.pump().await;
            if let Some(value) = check(self) {
                return Ok(value);
            }
            if started.elapsed() >= limit {
                return Err(StoryError::Timeout {
                    what: what.to_string(),
                    waited: started.elapsed(),
                });
            }
            tokio::time::sleep(PUMP_INTERVAL).await;
        }
    }

    pub(super) async fn pause(&mut self, duration: Duration) {
        let _ = self.wait_for("nothing", duration, |_| None::<()>).await;
    }

    pub(super) fn step(&mut self, number: &str, text: &str) {
        self.timeline
            .add(clock::wall_ms(), "demo", format!("━━ {number} {text} ━━"));
    }

    /// Lets late events in, prints them, then the device table.
    pub(super) async fn show_table(&mut self) {
        self.pause(TIMELINE_LAG).await;
        self.timeline.flush_all();
        let now_ms = clock::wall_ms();
        let devices: Vec<TableDevice<'_>> = self
            .fleet
            .devices
            .iter()
            .enumerate()
            .map(|(index, device)| TableDevice {
                name: &device.spec.name,
                record: self.records[index].as_ref().map(|(r, ms)| (r, *ms)),
                process: device.state(),
                delivered: self.deliveries.delivered_by(index),
                topic: device.spec.thread_id,
            })
            .collect();
        let table = report::render_table(&devices, now_ms, &self.timing);
        let counts = self.deliveries.counts();
        println!(
            "\n{table}    messages: {} sent, {} delivered, {} duplicated\n",
            counts.sent, counts.delivered, counts.duplicated
        );
    }

    /// How the timeline names the replica of device `index`: the device, or its Mac
    /// when other devices share it.
    fn replica_name(&self, index: usize) -> String {
        let spec = &self.fleet.devices[index].spec;
        let sharing = self
            .fleet
            .devices
            .iter()
            .filter(|d| d.spec.sync_dir == spec.sync_dir)
            .count();
        if sharing > 1 {
            spec.hostname.clone()
        } else {
            spec.name.clone()
        }
    }

    pub(super) fn record(&self, index: usize) -> Option<&DeviceRecord> {
        self.records[index].as_ref().map(|(record, _)| record)
    }

    /// The one running device among `candidates` whose own record says Active, when
    /// exactly one does.
    pub(super) fn sole_active(&self, candidates: &[usize]) -> Option<usize> {
        let active: Vec<usize> = candidates
            .iter()
            .copied()
            .filter(|i| self.is_active(*i))
            .collect();
        (active.len() == 1).then(|| active[0])
    }

    /// Whether device `index` runs and its CURRENT process wrote an Active record (a
    /// restarted device's old record does not count).
    pub(super) fn is_active(&self, index: usize) -> bool {
        let ProcessState::Running { pid } = self.fleet.devices[index].state() else {
            return false;
        };
        self.record(index)
            .is_some_and(|r| r.pid == pid && r.status == Status::Active)
    }

    /// From `since_ms` to the moment device `index` wrote its current record (the
    /// writer's own wall clock, on this same machine).
    pub(super) fn written_since(&self, index: usize, since_ms: u64) -> Duration {
        let written = self.record(index).map_or(since_ms, |r| r.written_at_ms);
        Duration::from_millis(written.saturating_sub(since_ms))
    }
}
