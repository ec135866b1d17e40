//! What the demo prints besides the timeline: the device table at each step, the
//! delivery accounting (what was injected against what the mirror stubs wrote), and the
//! closing summary.
//!
//! Owns: counting — lost means injected and in no stub's output; duplicated counts every
//! copy beyond the first. Pure functions over plain data. Must never: count anything
//! the stubs did not actually write.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::core::Timing;
use crate::core::election::{self, Health};
use crate::core::record::DeviceRecord;

use super::fleet::ProcessState;

/// One device as the table needs it.
pub struct TableDevice<'a> {
    pub name: &'a str,
    /// The owner's latest record and the wall ms at which it was seen to change.
    pub record: Option<(&'a DeviceRecord, u64)>,
    pub process: ProcessState,
    pub delivered: usize,
    /// The forum topic its mirror serves (`None`: the whole chat).
    pub topic: Option<i64>,
}

/// The numbered table (numbered and ordered as `/devices` numbers them).
pub fn render_table(devices: &[TableDevice<'_>], now_ms: u64, timing: &Timing) -> String {
    let entries = devices
        .iter()
        .filter_map(|device| device.record)
        .map(|(record, seen_ms)| {
            let age = Duration::from_millis(now_ms.saturating_sub(seen_ms));
            (record.clone(), age, false)
        })
        .collect();
    let rows = election::device_table(entries, timing);
    // The topic column only where some device serves a topic (the topics story).
    let topics = devices.iter().any(|d| d.topic.is_some());
    let topic_cell = |device: &TableDevice<'_>| match (topics, device.topic) {
        (false, _) => String::new(),
        (true, Some(topic)) => format!("  {topic:>5}"),
        (true, None) => format!("  {:>5}", "chat"),
    };
    let mut out = format!(
        "     #  DEVICE    ROLE         TERM  RECORD CHANGED  PROCESS              DELIVERED{}\n",
        if topics { "  TOPIC" } else { "" }
    );
    for row in &rows {
        let Some(device) = devices
            .iter()
            .find(|d| d.record.is_some_and(|(r, _)| r.device_id == row.device_id))
        else {
            continue;
        };
        let seen_ms = device.record.map_or(0, |(_, ms)| ms);
        let age_s = now_ms.saturating_sub(seen_ms) as f64 / 1000.0;
        let role = match row.health {
            Health::Stale => format!("{} ⚠", row.role.as_str()),
            _ => row.role.as_str().to_string(),
        };
        out.push_str(&format!(
            "    {:>2}  {:<8}  {:<11}  {:>4}  {:>9.1} s ago  {:<19}  {:>9}{}\n",
            row.number,
            device.name,
            role,
            row.term,
            age_s,
            process_text(device.process),
            device.delivered,
            topic_cell(device)
        ));
    }
    for device in devices.iter().filter(|d| d.record.is_none()) {
        out.push_str(&format!(
            "     -  {:<8}  {:<11}  {:>4}  {:>15}  {:<19}  {:>9}{}\n",
            device.name,
            "(no record)",
            "-",
            "-",
            process_text(device.process),
            device.delivered,
            topic_cell(device)
        ));
    }
    out
}

pub fn process_text(state: ProcessState) -> String {
    match state {
        ProcessState::Running { pid } => format!("running (pid {pid})"),
        ProcessState::Exited { code } => format!("exited, code {code}"),
        ProcessState::Killed { signal: 9 } => "killed (SIGKILL)".into(),
        ProcessState::Killed { signal } => format!("killed (signal {signal})"),
        ProcessState::NotStarted => "not started".into(),
    }
}

/// One update the demo injected, as the user typed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Injected {
    /// Wall ms when the fake Bot API queued it.
    pub at_ms: u64,
    /// The forum topic it was typed in; `None`: the chat itself.
    pub topic: Option<i64>,
    /// The device the demo saw active (by its own record) when it was typed.
    pub active: Option<usize>,
    /// Typed while no device was active (a failover under way) or no running device
    /// served its topic (its owner stopped or crashed, or nobody serves it yet): it had
    /// to wait, whatever the path.
    pub waited: bool,
}

/// Injected updates against deliveries.
#[derive(Debug, Default)]
pub struct Deliveries {
    /// Per device: the topic its mirror serves (`None`: the whole chat).
    pub serves: Vec<Option<i64>>,
    /// Per device: the Mac it lives on (devices on one Mac share a folder replica).
    pub hosts: Vec<String>,
    /// update id → how it was injected.
    pub injected: BTreeMap<i64, Injected>,
    /// update id → (device index, wall ms seen in its stub's output) per copy.
    pub delivered: BTreeMap<i64, Vec<(usize, u64)>>,
}

/// Delivery latencies of one kind: how many, median, max.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Latencies {
    pub count: usize,
    pub median: Duration,
    pub max: Duration,
}

impl Latencies {
    fn of(mut latencies: Vec<Duration>) -> Self {
        latencies.sort();
        Latencies {
            count: latencies.len(),
            median: latencies
                .get(latencies.len() / 2)
                .copied()
                .unwrap_or_default(),
            max: latencies.last().copied().unwrap_or_default(),
        }
    }
}

/// The counts a user reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryCounts {
    pub sent: usize,
    /// Updates that reached a mirror serving their topic (at least once).
    pub delivered: usize,
    /// Injected and in no output of a mirror serving their topic.
    pub lost: Vec<i64>,
    /// Copies at a right mirror beyond the first.
    pub duplicated: usize,
    /// Updates found in the output of a mirror serving ANOTHER topic.
    pub misrouted: Vec<i64>,
    /// Injection → first delivery at a right mirror, over delivered updates.
    pub latency_median: Duration,
    pub latency_max: Duration,
    /// Those delivered by the device that was active when they were typed (its own
    /// topic: straight from its poll to its gateway).
    pub own_topic: Latencies,
    /// Those delivered by another device on the active device's Mac (mail through the
    /// folder replica they share: no sync delay).
    pub same_mac: Latencies,
    /// Those delivered by a device on another Mac (mail through the folder, copied
    /// between replicas after the sync delay).
    pub other_mac: Latencies,
    /// Those that had to wait ([`Injected::waited`]), counted apart from the paths.
    pub waited: Latencies,
}

/// One topic's counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicCounts {
    pub topic: Option<i64>,
    pub counts: DeliveryCounts,
}

impl Deliveries {
    pub fn delivered_by(&self, device: usize) -> usize {
        self.delivered
            .iter()
            .filter(|(id, copies)| {
                self.injected.contains_key(id) && copies.iter().any(|(d, _)| *d == device)
            })
            .count()
    }

    /// Whether one of `running` serves `topic` (decides [`Injected::waited`]).
    pub fn served_by_one_of(&self, running: &[usize], topic: Option<i64>) -> bool {
        running.iter().any(|device| self.serves(*device, topic))
    }

    /// Whether `device`'s mirror is where an update typed in `topic` belongs.
    fn serves(&self, device: usize, topic: Option<i64>) -> bool {
        match self.serves.get(device) {
            Some(None) => true,
            Some(Some(served)) => Some(*served) == topic,
            None => false,
        }
    }

    /// Counts over every injected update.
    pub fn counts(&self) -> DeliveryCounts {
        self.tally(|_| true)
    }

    /// Counts per topic typed in, in topic order.
    pub fn per_topic(&self) -> Vec<TopicCounts> {
        let topics: std::collections::BTreeSet<Option<i64>> =
            self.injected.values().map(|i| i.topic).collect();
        topics
            .into_iter()
            .map(|topic| TopicCounts {
                topic,
                counts: self.tally(|injected| injected.topic == topic),
            })
            .collect()
    }

    fn tally(&self, include: impl Fn(&Injected) -> bool) -> DeliveryCounts {
        let mut counts = DeliveryCounts::default();
        let (mut all, mut own, mut same, mut other, mut waited) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (id, injected) in self.injected.iter().filter(|(_, i)| include(i)) {
            counts.sent += 1;
            let copies = self.delivered.get(id).map_or(&[][..], Vec::as_slice);
            let (right, wrong): (Vec<_>, Vec<_>) = copies
                .iter()
                .partition(|(device, _)| self.serves(*device, injected.topic));
            if !wrong.is_empty() {
                counts.misrouted.push(*id);
            }
            let Some((device, first_ms)) = right.iter().min_by_key(|(_, ms)| *ms) else {
                counts.lost.push(*id);
                continue;
            };
            counts.delivered += 1;
            counts.duplicated += right.len() - 1;
            let latency = Duration::from_millis(first_ms.saturating_sub(injected.at_ms));
            all.push(latency);
            let host = |index: usize| self.hosts.get(index);
            match injected.active {
                _ if injected.waited => waited.push(latency),
                Some(active) if active == *device => own.push(latency),
                Some(active) if host(active).is_some() && host(active) == host(*device) => {
                    same.push(latency);
                }
                _ => other.push(latency),
            }
        }
        let all = Latencies::of(all);
        counts.latency_median = all.median;
        counts.latency_max = all.max;
        counts.own_topic = Latencies::of(own);
        counts.same_mac = Latencies::of(same);
        counts.other_mac = Latencies::of(other);
        counts.waited = Latencies::of(waited);
        counts
    }
}

/// A measured duration; `None` when the step it measures did not happen.
pub type Figure = Option<Duration>;

/// Everything the summary shows.
pub struct Summary {
    pub election: Figure,
    pub failover: Figure,
    pub handoff: Figure,
    pub resignation: Figure,
    /// Topics story: restart of a stopped owner → its last waiting message delivered.
    pub queued: Figure,
    pub liveness_active: Duration,
    pub counts: DeliveryCounts,
    pub most_active_at_once: usize,
    pub conflicts_to_live_devices: usize,
    pub sync_copies: usize,
    /// Mailbox copies between replicas (mail through the folder).
    pub mail_copies: usize,
    pub sync_delay_median: Duration,
    pub sync_delay_max: Duration,
    pub settle_bound: Duration,
    pub seed: u64,
    pub time_scale: f64,
    pub total: Duration,
    /// Why the story stopped early, if it did.
    pub story_error: Option<String>,
    /// The topics story: one row per topic typed in (empty for the failover story).
    pub topics: Vec<TopicRow>,
    /// The topics story: what the bot said in the topic nobody served.
    pub unserved: Option<UnservedTopic>,
}

/// One topic's line in the summary.
pub struct TopicRow {
    /// e.g. `10 api`: the topic and the project serving it.
    pub label: String,
    pub counts: DeliveryCounts,
}

/// The topic nobody served while the user wrote in it.
pub struct UnservedTopic {
    pub topic: i64,
    /// The bot's "no project serves this topic" replies in it.
    pub replies: usize,
}

fn figure(value: Figure) -> String {
    value.map_or_else(
        || "did not happen".into(),
        |d| format!("{:.2} s", d.as_secs_f64()),
    )
}

fn ms(duration: Duration) -> String {
    if duration >= Duration::from_secs(1) {
        format!("{:.2} s", duration.as_secs_f64())
    } else {
        format!("{} ms", duration.as_millis())
    }
}

impl Summary {
    /// Whether the demo passed: the whole story ran, nothing was lost or reached the
    /// wrong topic's mirror, and an unserved topic got exactly one reply.
    pub fn passed(&self) -> bool {
        self.story_error.is_none()
            && self.counts.lost.is_empty()
            && self.counts.misrouted.is_empty()
            && self.counts.sent > 0
            && self.unserved.as_ref().is_none_or(|u| u.replies == 1)
    }

    pub fn render(&self) -> String {
        let c = &self.counts;
        let mut out = String::from("\n══ summary ══════════════════════════════════════════════\n");
        out.push_str(&format!(
            "  election (start → first active)           {}\n",
            figure(self.election)
        ));
        out.push_str(&format!(
            "  failover (SIGKILL → new active)           {}   (liveness timeout {})\n",
            figure(self.failover),
            ms(self.liveness_active)
        ));
        out.push_str(&format!(
            "  handoff (/activate → target active)       {}\n",
            figure(self.handoff)
        ));
        if self.topics.is_empty() {
            out.push_str(&format!(
                "  resignation (SIGTERM → takeover)          {}\n",
                figure(self.resignation)
            ));
        } else {
            out.push_str(&format!(
                "  queued mail (owner restarted → all in)    {}\n",
                figure(self.queued)
            ));
        }
        out.push_str(&format!(
            "  updates: sent {}, delivered {}, lost {}, duplicated {}\n",
            c.sent,
            c.delivered,
            c.lost.len(),
            c.duplicated
        ));
        out.push_str(&format!(
            "  delivery latency (injected → in a mirror): median {}, max {} (the max spans the crash)\n",
            ms(c.latency_median),
            ms(c.latency_max)
        ));
        self.render_topics(&mut out);
        out.push_str(&format!(
            "  most devices active at once: {}; Telegram 409s to running devices: {}\n",
            self.most_active_at_once, self.conflicts_to_live_devices
        ));
        out.push_str(&format!(
            "  sync: {} record copies, delay median {}, max {} (settle bound {}); {} mailbox copies\n",
            self.sync_copies,
            ms(self.sync_delay_median),
            ms(self.sync_delay_max),
            ms(self.settle_bound),
            self.mail_copies
        ));
        out.push_str(&format!(
            "  time scale {}, seed {} (same delays and jitter: baton demo --seed {}), took {:.1} s\n",
            self.time_scale,
            self.seed,
            self.seed,
            self.total.as_secs_f64()
        ));
        if let Some(error) = &self.story_error {
            out.push_str(&format!("\n❌ the story did not complete: {error}\n"));
        }
        if !c.lost.is_empty() {
            out.push_str(&format!(
                "\n❌ {} update(s) LOST (never reached a mirror serving their topic): {}\n",
                c.lost.len(),
                id_list(&c.lost)
            ));
        }
        if !c.misrouted.is_empty() {
            out.push_str(&format!(
                "\n❌ {} update(s) MISROUTED (reached the mirror of another topic): {}\n",
                c.misrouted.len(),
                id_list(&c.misrouted)
            ));
        }
        if let Some(unserved) = self.unserved.as_ref().filter(|u| u.replies != 1) {
            out.push_str(&format!(
                "\n❌ the unserved topic {} got {} \"no project serves this topic\" replies, not 1\n",
                unserved.topic, unserved.replies
            ));
        }
        if self.passed() {
            if self.topics.is_empty() {
                out.push_str("\n✅ 0 updates lost\n");
            } else {
                out.push_str("\n✅ 0 updates lost, 0 misrouted, every topic served\n");
            }
        }
        out
    }

    /// The per-topic table (topics story only).
    fn render_topics(&self, out: &mut String) {
        if self.topics.is_empty() {
            return;
        }
        let c = &self.counts;
        out.push_str(&format!(
            "  latency p50: own topic of the active device {} ({} msgs); mail via the folder to its own Mac {} ({} msgs), to the other Mac {} ({} msgs); waited for a device {} ({} msgs)\n",
            ms(c.own_topic.median),
            c.own_topic.count,
            ms(c.same_mac.median),
            c.same_mac.count,
            ms(c.other_mac.median),
            c.other_mac.count,
            ms(c.waited.median),
            c.waited.count
        ));
        out.push_str(
            "  per topic, counted from what each stand-in mirror wrote (latency p50 (n) by path):\n    TOPIC       SENT  DELIVERED  LOST  DUPLICATED  MISROUTED   OWN TOPIC    SAME MAC   OTHER MAC      WAITED\n",
        );
        for row in &self.topics {
            let t = &row.counts;
            let latency = |l: &Latencies| match l.count {
                0 => "-".to_string(),
                n => format!("{} ({n})", ms(l.median)),
            };
            out.push_str(&format!(
                "    {:<10}  {:>4}  {:>9}  {:>4}  {:>10}  {:>9}  {:>10}  {:>10}  {:>10}  {:>10}\n",
                row.label,
                t.sent,
                t.delivered,
                t.lost.len(),
                t.duplicated,
                t.misrouted.len(),
                latency(&t.own_topic),
                latency(&t.same_mac),
                latency(&t.other_mac),
                latency(&t.waited)
            ));
        }
        if let Some(unserved) = &self.unserved {
            out.push_str(&format!(
                "  topic {} (served by nobody when the user wrote there): {} reply from the bot\n",
                unserved.topic, unserved.replies
            ));
        }
    }
}

fn id_list(ids: &[i64]) -> String {
    let shown: Vec<String> = ids.iter().take(20).map(i64::to_string).collect();
    format!(
        "{}{}",
        shown.join(", "),
        if ids.len() > 20 { ", …" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_and_duplicated_are_counted_against_what_was_injected() {
        let mut deliveries = Deliveries {
            serves: vec![None, None],
            hosts: vec!["mac-a".into(), "mac-b".into()],
            ..Default::default()
        };
        for id in 1..=4 {
            deliveries.injected.insert(
                id,
                Injected {
                    at_ms: 1000,
                    topic: None,
                    active: Some(0),
                    waited: false,
                },
            );
        }
        deliveries.delivered.insert(1, vec![(0, 1100)]);
        deliveries.delivered.insert(2, vec![(0, 1200), (1, 1300)]);
        deliveries.delivered.insert(3, vec![(1, 5000)]);
        // Not injected by the demo (a command): never counted.
        deliveries.delivered.insert(99, vec![(1, 5000), (0, 5000)]);
        let counts = deliveries.counts();
        assert_eq!(counts.sent, 4);
        assert_eq!(counts.delivered, 3);
        assert_eq!(counts.lost, vec![4]);
        assert_eq!(counts.duplicated, 1);
        assert_eq!(counts.latency_max, Duration::from_millis(4000));
        assert_eq!(deliveries.delivered_by(1), 2);
        assert_eq!(counts.own_topic.count, 2);
        assert_eq!(counts.other_mac.count, 1);
        assert_eq!(counts.same_mac.count, 0);
        assert!(counts.misrouted.is_empty());
    }

    #[test]
    fn a_topic_counts_only_its_own_mirror_and_names_another_topics_copy_misrouted() {
        let mut deliveries = Deliveries {
            // Device 0 serves topic 10, device 1 topic 20, both on one Mac.
            serves: vec![Some(10), Some(20)],
            hosts: vec!["mac-one".into(), "mac-one".into()],
            ..Default::default()
        };
        let typed = |topic, active| Injected {
            at_ms: 1000,
            topic: Some(topic),
            active: Some(active),
            waited: false,
        };
        deliveries.injected.insert(1, typed(10, 0));
        deliveries.injected.insert(2, typed(20, 0));
        deliveries.injected.insert(3, typed(20, 0));
        // Typed while topic 10's owner was away: counted apart from the paths.
        let waited = Injected {
            waited: true,
            ..typed(10, 1)
        };
        deliveries.injected.insert(4, waited);
        deliveries.delivered.insert(4, vec![(0, 9000)]);
        deliveries.delivered.insert(1, vec![(0, 1100)]);
        deliveries.delivered.insert(2, vec![(1, 1500)]);
        // Topic 20's update in topic 10's mirror: misrouted, and lost for topic 20.
        deliveries.delivered.insert(3, vec![(0, 1200)]);
        let per_topic = deliveries.per_topic();
        assert_eq!(per_topic.len(), 2);
        let (ten, twenty) = (&per_topic[0].counts, &per_topic[1].counts);
        assert_eq!((ten.sent, ten.delivered, ten.lost.len()), (2, 2, 0));
        assert_eq!(ten.own_topic.median, Duration::from_millis(100));
        assert_eq!((ten.own_topic.count, ten.same_mac.count), (1, 0));
        assert_eq!(ten.waited.max, Duration::from_millis(8000));
        assert_eq!((twenty.sent, twenty.delivered), (2, 1));
        assert_eq!(twenty.lost, vec![3]);
        assert_eq!(twenty.misrouted, vec![3]);
        assert_eq!(twenty.same_mac.median, Duration::from_millis(500));
        assert_eq!(deliveries.counts().misrouted, vec![3]);
    }

    fn summary_with(counts: DeliveryCounts, unserved_replies: usize) -> Summary {
        Summary {
            election: None,
            failover: None,
            handoff: None,
            resignation: None,
            queued: None,
            liveness_active: Duration::ZERO,
            counts,
            most_active_at_once: 1,
            conflicts_to_live_devices: 0,
            sync_copies: 0,
            mail_copies: 0,
            sync_delay_median: Duration::ZERO,
            sync_delay_max: Duration::ZERO,
            settle_bound: Duration::ZERO,
            seed: 1,
            time_scale: 0.05,
            total: Duration::ZERO,
            story_error: None,
            topics: Vec::new(),
            unserved: Some(UnservedTopic {
                topic: 40,
                replies: unserved_replies,
            }),
        }
    }

    #[test]
    fn the_verdict_fails_on_a_misrouted_update_or_a_wrong_number_of_unserved_replies() {
        let clean = DeliveryCounts {
            sent: 3,
            delivered: 3,
            ..Default::default()
        };
        assert!(summary_with(clean.clone(), 1).passed());
        assert!(!summary_with(clean.clone(), 0).passed(), "no reply");
        assert!(!summary_with(clean.clone(), 2).passed(), "told twice");
        let misrouted = DeliveryCounts {
            misrouted: vec![7],
            ..clean
        };
        let summary = summary_with(misrouted, 1);
        assert!(!summary.passed());
        assert!(
            summary.render().contains("MISROUTED"),
            "{}",
            summary.render()
        );
    }
}
