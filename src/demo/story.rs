//! The demo's story, act by act: election, a crash and failover, a restart that must
//! not steal the role, `/activate` typed into the chat, a clean resignation, and the
//! deliveries counted at the end.
//!
//! Owns: what each act does to the fleet and what it waits for. Must never: report a
//! figure it did not observe (every wait is on an observation, bounded).

use std::time::Instant;

use crate::adapters::clock;
use crate::core::record::Status;

use super::fleet::ProcessState;
use super::*;

impl Demo {
    pub(super) async fn story(&mut self) -> Result<(), StoryError> {
        let all: Vec<usize> = (0..self.fleet.devices.len()).collect();
        let first = self
            .act_election(
                "1/7",
                "Three devices start, each on its own replica of the folder",
                &all,
            )
            .await?;
        self.step("2/7", "A user writes to the bot at a steady rate");
        self.messages = Some(MessageFlow {
            interval: self.scaled(MESSAGE_INTERVAL_S),
            next_at: Instant::now(),
            sent: 0,
            topics: vec![None],
        });
        self.pause(self.scaled(FLOW_S)).await;
        self.show_table().await;
        let survivors: Vec<usize> = all.iter().copied().filter(|i| *i != first).collect();
        let successor = self.act_crash("3/7", first, &survivors).await?;
        self.act_restart("4/7", first, successor).await?;
        let target = survivors
            .iter()
            .copied()
            .find(|i| *i != successor)
            .ok_or_else(|| StoryError::Broken("BUG: no third device".into()))?;
        self.act_activate("5/7", target, successor, None).await?;
        self.act_resign(target).await?;
        self.act_finish("7/7").await
    }

    /// Act 1: start every device; exactly one becomes active.
    pub(super) async fn act_election(
        &mut self,
        number: &str,
        text: &str,
        all: &[usize],
    ) -> Result<usize, StoryError> {
        self.step(number, text);
        for index in all {
            let pid = self.fleet.start(*index)?;
            let text = format!("baton run started (pid {pid})");
            self.timeline
                .add(clock::wall_ms(), &self.name(*index), text);
        }
        let limit = self.timing.settle_window * 2 + self.timing.liveness_active + SLACK;
        let first = self
            .wait_for("an active device", limit, |d| d.sole_active(all))
            .await?;
        self.figures.election = Some(self.written_since(first, self.timeline.start_ms()));
        self.wait_for("every device to register", limit, |d| {
            all.iter()
                .all(|i| {
                    d.record(*i)
                        .is_some_and(|r| matches!(r.status, Status::Standby | Status::Active))
                })
                .then_some(())
        })
        .await?;
        self.show_table().await;
        Ok(first)
    }

    /// Act 3: SIGKILL the active device; one survivor takes over.
    pub(super) async fn act_crash(
        &mut self,
        number: &str,
        first: usize,
        survivors: &[usize],
    ) -> Result<usize, StoryError> {
        self.step(number, "Crash: SIGKILL the active device");
        let crash_ms = clock::wall_ms();
        self.fleet.signal(first, libc::SIGKILL);
        let name = self.name(first);
        self.timeline
            .add(crash_ms, "demo", format!("kill -KILL {name}"));
        let limit = self.timing.liveness_active * 2 + self.timing.settle_window * 2 + SLACK;
        let successor = self
            .wait_for("a survivor to take over", limit, |d| {
                d.sole_active(survivors)
            })
            .await?;
        self.figures.failover = Some(self.written_since(successor, crash_ms));
        self.show_table().await;
        Ok(successor)
    }

    /// Act 4: the crashed device comes back (as launchd's KeepAlive would do) and must
    /// rejoin as standby without taking the role back. Returns when it was restarted.
    pub(super) async fn act_restart(
        &mut self,
        number: &str,
        crashed: usize,
        successor: usize,
    ) -> Result<u64, StoryError> {
        self.step(
            number,
            "launchd restarts the crashed device: it rejoins as standby",
        );
        let pid = self.fleet.start(crashed)?;
        let name = self.name(crashed);
        let restart_ms = clock::wall_ms();
        self.timeline.add(
            restart_ms,
            &name,
            format!("baton run restarted (pid {pid})"),
        );
        let limit = self.timing.settle_window + SLACK;
        self.wait_for("the restarted device to rejoin as standby", limit, |d| {
            d.record(crashed)
                .is_some_and(|r| r.pid == pid && r.status == Status::Standby)
                .then_some(())
        })
        .await?;
        self.pause(self.scaled(FLOW_S / 2.0)).await;
        let all: Vec<usize> = self.fleet.running().collect();
        if self.sole_active(&all) != Some(successor) {
            return Err(StoryError::Broken(format!(
                "after {name} restarted, {} is no longer the only active device",
                self.name(successor)
            )));
        }
        self.show_table().await;
        Ok(restart_ms)
    }

    /// Act 5: the user types `/devices`, then `/activate <n>` for `target`, in the chat
    /// (or in `topic`).
    pub(super) async fn act_activate(
        &mut self,
        number: &str,
        target: usize,
        active: usize,
        topic: Option<i64>,
    ) -> Result<(), StoryError> {
        let name = self.name(target);
        let place = topic.map_or_else(|| "the chat".into(), |t| format!("topic {t}"));
        self.step(
            number,
            &format!("The user moves the bot to {name} by typing /activate in {place}"),
        );
        let user = topic.map_or_else(|| "user".into(), |t| format!("user@{t}"));
        let asked_ms = clock::wall_ms();
        self.fake.inject_text(DEMO_CHAT_ID, topic, "/devices");
        self.timeline.add(asked_ms, &user, "/devices");
        let limit = self.timing.request_timeout + SLACK;
        let reply = self
            .wait_for("the bot's answer to /devices", limit, |d| {
                d.bot_said
                    .iter()
                    .find(|(at, text)| *at >= asked_ms && text.starts_with("Devices"))
                    .map(|(_, text)| text.clone())
            })
            .await?;
        let target_id = self.fleet.devices[target].spec.device_id.clone();
        let number = device_number(&reply, &target_id).ok_or_else(|| {
            StoryError::Broken(format!("{name} is not listed in the bot's /devices answer"))
        })?;
        let command = format!("/activate {number}");
        let asked_ms = clock::wall_ms();
        self.fake.inject_text(DEMO_CHAT_ID, topic, &command);
        self.timeline.add(asked_ms, &user, command);
        let what = format!("{name} to become active");
        self.wait_for(&what, limit, |d| d.sole_active(&[target]))
            .await?;
        self.figures.handoff = Some(self.written_since(target, asked_ms));
        let previous = self.name(active);
        self.wait_for(&format!("{previous} to step back"), limit, |d| {
            d.record(active)
                .is_some_and(|r| r.status == Status::Standby)
                .then_some(())
        })
        .await?;
        self.pause(self.scaled(FLOW_S / 2.0)).await;
        self.show_table().await;
        Ok(())
    }

    /// Act 6: SIGTERM the active device: it hands over and exits 0.
    pub(super) async fn act_resign(&mut self, active: usize) -> Result<(), StoryError> {
        self.step("6/7", "Clean resignation: SIGTERM the active device");
        let stop_ms = clock::wall_ms();
        self.fleet.signal(active, libc::SIGTERM);
        let name = self.name(active);
        self.timeline
            .add(stop_ms, "demo", format!("kill -TERM {name}"));
        let others: Vec<usize> = (0..self.fleet.devices.len())
            .filter(|i| *i != active)
            .collect();
        let limit = self.timing.handoff_timeout + self.timing.liveness_active + SLACK;
        let next = self
            .wait_for("a standby to take over", limit, |d| d.sole_active(&others))
            .await?;
        self.figures.resignation = Some(self.written_since(next, stop_ms));
        let state = self
            .wait_for(&format!("{name} to exit"), SLACK, |d| {
                let state = d.fleet.devices[active].state();
                (!matches!(state, ProcessState::Running { .. })).then_some(state)
            })
            .await?;
        if state != (ProcessState::Exited { code: 0 }) {
            return Err(StoryError::Broken(format!(
                "{name} did not exit cleanly after SIGTERM: {}",
                report::process_text(state)
            )));
        }
        self.pause(self.scaled(FLOW_S / 2.0)).await;
        self.show_table().await;
        Ok(())
    }

    /// Act 7: stop writing, wait for every message to arrive, stop everyone cleanly.
    pub(super) async fn act_finish(&mut self, number: &str) -> Result<(), StoryError> {
        self.step(
            number,
            "The user stops writing; every message must reach a mirror; all stop cleanly",
        );
        self.messages = None;
        let limit = self.timing.liveness_active * 2 + SLACK;
        let arrived = self
            .wait_for("every message to reach a mirror", limit, |d| {
                d.deliveries.counts().lost.is_empty().then_some(())
            })
            .await;
        // Standbys first, so the active one has nobody to hand over to and simply stops.
        let mut order: Vec<usize> = self.fleet.running().collect();
        order.sort_by_key(|i| self.record(*i).is_some_and(|r| r.status == Status::Active));
        for index in order {
            self.fleet.signal(index, libc::SIGTERM);
            let name = self.name(index);
            self.timeline
                .add(clock::wall_ms(), "demo", format!("kill -TERM {name}"));
            self.wait_for(&format!("{name} to exit"), SLACK, |d| {
                (!d.fleet.devices[index].is_running()).then_some(())
            })
            .await?;
        }
        self.show_table().await;
        arrived
    }
}
