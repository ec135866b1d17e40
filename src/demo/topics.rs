//! The topics story (`baton demo --story topics`, issue 11): one forum, one project per
//! topic (api 10 and web 20 on `mac-one`, infra 30 on `mac-two`; each Mac has its replica
//! of the folder); the user types in every topic while one device polls for all and hands each
//! message to the device serving its topic — through its mailbox in the synced folder.
//! Acts: election, messages in every topic, a crash of the active device mid-stream and
//! its restart (its topic's mail waits, then arrives), `/activate` typed in a topic, an
//! owner stopped (the bot says it is offline) and restarted (its queued mail arrives),
//! and a topic nobody serves (one reply; its messages reach the `ops` device started for
//! it), then everyone stops.
//!
//! Owns: what each act of this story does and waits for. Must never: count a message
//! delivered that no stand-in mirror of its topic wrote down, or wait without a bound.

use std::time::Instant;

use crate::adapters::clock;

use super::*;

/// One user message per this many protocol seconds, in the next topic (400 ms at the
/// story's time scale: each topic hears from the user every 1.2 s).
const TOPIC_MESSAGE_INTERVAL_S: f64 = 4.0;
/// Messages typed at once in the topic nobody serves.
const UNSERVED_MESSAGES: usize = 2;
/// The bot's words in a topic no live device serves (`telegram_text`).
const UNSERVED_REPLY: &str = "no project serves this topic";
/// The bot's words in the topic of an owner that is offline.
const OFFLINE_REPLY: &str = "is offline";

impl Demo {
    pub(super) async fn story_topics(&mut self) -> Result<(), StoryError> {
        let projects: Vec<usize> = (0..TOPIC_DEVICES.len() - 1).collect();
        let late = TOPIC_DEVICES.len() - 1;
        let first = self
            .act_election(
                "1/8",
                "Three projects start, each serving its topic: api and web on mac-one, infra on mac-two",
                &projects,
            )
            .await?;
        self.step(
            "2/8",
            "The user writes in every project's topic, in turn, at a steady rate",
        );
        self.messages = Some(MessageFlow {
            interval: self.scaled(TOPIC_MESSAGE_INTERVAL_S),
            next_at: Instant::now(),
            sent: 0,
            topics: projects
                .iter()
                .map(|i| self.fleet.devices[*i].spec.thread_id)
                .collect(),
        });
        self.pause(self.scaled(FLOW_S)).await;
        self.wait_delivered_so_far("every topic's messages to reach its mirror")
            .await?;
        self.show_table().await;
        let survivors: Vec<usize> = projects.iter().copied().filter(|i| *i != first).collect();
        let crash_ms = clock::wall_ms();
        let successor = self.act_crash("3/8", first, &survivors).await?;
        let restart_ms = self.act_restart("4/8", first, successor).await?;
        self.wait_delivered_so_far("the restarted device's queued mail")
            .await?;
        self.show_queued(first, crash_ms, restart_ms);
        let target = survivors
            .iter()
            .copied()
            .find(|i| *i != successor)
            .ok_or_else(|| StoryError::Broken("BUG: no third device".into()))?;
        let topic = self.fleet.devices[target].spec.thread_id;
        self.act_activate("5/8", target, successor, topic).await?;
        let owner = projects
            .iter()
            .copied()
            .find(|i| *i != target)
            .ok_or_else(|| StoryError::Broken("BUG: no standby owner".into()))?;
        self.act_owner_stopped("6/8", owner).await?;
        self.act_unserved_topic("7/8", late).await?;
        self.act_finish("8/8").await?;
        self.unserved = Some(UnservedTopic {
            topic: TOPIC_DEVICES[late].1,
            replies: self.replies_in(TOPIC_DEVICES[late].1, UNSERVED_REPLY),
        });
        Ok(())
    }

    /// Act 6: SIGTERM a device that serves its topic but does not poll; messages for it
    /// wait in the mailbox (the bot says so once in its topic); restarted, it gets them.
    async fn act_owner_stopped(&mut self, number: &str, owner: usize) -> Result<(), StoryError> {
        let name = self.name(owner);
        let topic = self.fleet.devices[owner].spec.thread_id.unwrap_or_default();
        self.step(
            number,
            &format!("{name} (topic {topic}) is stopped while the user writes; then restarted"),
        );
        let told_before = self.replies_in(topic, OFFLINE_REPLY);
        let stop_ms = clock::wall_ms();
        self.fleet.signal(owner, libc::SIGTERM);
        self.timeline
            .add(stop_ms, "demo", format!("kill -TERM {name}"));
        self.wait_for(&format!("{name} to exit"), SLACK, |d| {
            (!d.fleet.devices[owner].is_running()).then_some(())
        })
        .await?;
        let limit = self.timing.liveness_active * 2 + self.timing.settle_window * 2 + SLACK;
        let what = format!("the bot to say in topic {topic} that {name} is offline");
        self.wait_for(&what, limit, |d| {
            (d.replies_in(topic, OFFLINE_REPLY) > told_before).then_some(())
        })
        .await?;
        self.pause(self.scaled(FLOW_S / 4.0)).await;
        let pid = self.fleet.start(owner)?;
        let restart_ms = clock::wall_ms();
        self.timeline.add(
            restart_ms,
            &name,
            format!("baton run restarted (pid {pid})"),
        );
        self.wait_delivered_so_far(&format!("{name}'s queued mail"))
            .await?;
        self.figures.queued = self.show_queued(owner, stop_ms, restart_ms);
        self.show_table().await;
        Ok(())
    }

    /// Puts in the timeline when the messages typed in `device`'s topic while it was
    /// away (from `away_ms` to `back_ms`) reached its mirror; returns restart → the last
    /// of them in the mirror.
    fn show_queued(&mut self, device: usize, away_ms: u64, back_ms: u64) -> Option<Duration> {
        let topic = self.fleet.devices[device].spec.thread_id;
        let waited: Vec<u64> = self
            .deliveries
            .injected
            .iter()
            .filter(|(_, i)| i.topic == topic && (away_ms..back_ms).contains(&i.at_ms))
            .filter_map(|(id, _)| {
                let copies = self.deliveries.delivered.get(id)?;
                copies
                    .iter()
                    .filter(|(d, _)| *d == device)
                    .map(|(_, ms)| *ms)
                    .min()
            })
            .collect();
        let last_ms = *waited.iter().max()?;
        let name = self.name(device);
        let after = Duration::from_millis(last_ms.saturating_sub(back_ms));
        // Said now (the moment it is known), so the timeline stays in order.
        self.timeline.add(
            clock::wall_ms(),
            &name,
            format!(
                "its mirror has all {} messages that waited for it, the last in {:.2} s after the restart",
                waited.len(),
                after.as_secs_f64()
            ),
        );
        Some(after)
    }

    /// Act 7: the user writes in a topic nobody serves: one reply there; then the `ops`
    /// device starts for it and the messages kept for it arrive.
    async fn act_unserved_topic(&mut self, number: &str, late: usize) -> Result<(), StoryError> {
        let name = self.name(late);
        let topic = self.fleet.devices[late].spec.thread_id.unwrap_or_default();
        self.step(
            number,
            &format!("The user writes in topic {topic}, which no project serves yet"),
        );
        self.type_in_topic(topic, UNSERVED_MESSAGES);
        let limit = self.timing.request_timeout + SLACK;
        let what = format!("the bot's one reply in topic {topic}");
        self.wait_for(&what, limit, |d| {
            (d.replies_in(topic, UNSERVED_REPLY) > 0).then_some(())
        })
        .await?;
        self.pause(self.scaled(FLOW_S / 4.0)).await;
        let pid = self.fleet.start(late)?;
        self.timeline.add(
            clock::wall_ms(),
            &name,
            format!("baton run started for topic {topic} (pid {pid})"),
        );
        self.wait_delivered_so_far(&format!("topic {topic}'s kept messages to reach {name}"))
            .await?;
        self.show_table().await;
        Ok(())
    }

    /// Waits until every message typed so far reached a mirror serving its topic.
    async fn wait_delivered_so_far(&mut self, what: &str) -> Result<(), StoryError> {
        let cut_ms = clock::wall_ms();
        let limit = self.timing.liveness_active * 2 + self.timing.settle_window * 2 + SLACK;
        self.wait_for(what, limit, |d| {
            let lost = d.deliveries.counts().lost;
            lost.iter()
                .all(|id| {
                    d.deliveries
                        .injected
                        .get(id)
                        .is_some_and(|i| i.at_ms > cut_ms)
                })
                .then_some(())
        })
        .await
    }

    /// How many messages the bot sent in `topic` containing `words` (the stand-in
    /// mirrors' own replies never contain them).
    fn replies_in(&self, topic: i64, words: &str) -> usize {
        self.fake
            .sent_messages()
            .iter()
            .filter(|m| m.message_thread_id == Some(topic) && m.plain_text.contains(words))
            .count()
    }
}
