//! `baton demo`: the whole system on one machine with no Telegram account and no iCloud.
//!
//! Three devices — real `baton run` subprocesses of this binary, each with its own
//! replica of the synced folder, its own state folder and a `baton mirror-stub` child —
//! coordinate through a simulated sync medium (`sync`: delayed, atomic, heavy-tailed
//! copies of record files only) and serve a fake Telegram Bot API running in this process
//! (`baton_testkit::fake_bot_api`). The demo then plays a story against them: election, a user
//! writing to the bot at a steady rate, a crash (SIGKILL), failover, a restart that must
//! not steal the role, `/activate` typed into the chat, and a clean resignation (SIGTERM).
//! `--story topics` (module `topics`) plays issue 11's story instead: one forum, a project
//! per topic on two Macs, messages typed in every topic reaching the mirror of
//! that topic whichever device polls — through the mailboxes in the synced folder — across
//! a crash, an `/activate` typed in a topic, an owner stopped and restarted, and a topic
//! nobody serves. Everything shown is observed, not scripted: role changes come from the devices' JSON
//! logs, polling and replies from the fake's request log, record copies from the syncer,
//! and deliveries from the stubs' output files, counted against what was injected.
//!
//! Time: the devices run with `--time-scale` 0.05 × `--speed` (the topics story: 0.1 ×
//! `--speed`, see [`TOPICS_TIME_SCALE`]), and every pause and
//! message interval of the story is given in protocol seconds and scaled the same way,
//! so `--speed 4` is the same story four times slower.
//!
//! Owns: the story, its temporary folder, and every process it starts. Must never: leave
//! a process running on any exit path (the `fleet::Fleet` stops them on drop, Ctrl-C
//! included), touch the user's real sync folder or Telegram configuration (devices get
//! their own HOME), or report a figure it did not measure.

mod fleet;
mod observe;
mod report;
mod story;
mod sync;
mod timeline;
mod topics;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::adapters::clock;
use crate::config::UsageError;
use crate::core::Timing;
use crate::core::record::{self, DeviceRecord, Status};
use crate::exit::ExitCode;
use baton_testkit::fake_bot_api::{self, FakeBotApi, FakeBotConfig};

use fleet::{DeviceSpec, Fleet, FleetEnv};
use report::{Deliveries, Summary, TopicRow, UnservedTopic};
use sync::{Replica, Syncer};
use timeline::{PollWatch, Tail, Timeline};

/// `baton demo` flags.
#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {
    /// Slow the story down F times (multiplies the devices' time scale and every pause).
    /// At 1 it takes well under a minute. The global --time-scale does not apply here.
    #[arg(long, default_value_t = 1.0, value_name = "F")]
    pub speed: f64,
    /// Run in DIR (new or empty) and keep it afterwards: the replicas, every device's JSON
    /// log and every mirror stub's output. Default: a temporary folder, removed at the end.
    #[arg(long, value_name = "DIR")]
    pub keep: Option<PathBuf>,
    /// Seed for the sync delays and the devices' jitter (default: random; printed). The
    /// processes still race, so a seed replays the delays, not every interleaving.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Which story to play: `failover` (three devices pass the bot around) or `topics`
    /// (one forum, one project per topic, every topic served at once).
    #[arg(long, value_enum, default_value_t = Story::Failover)]
    pub story: Story,
}

/// The stories `baton demo` can tell.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Story {
    /// Election, crash and failover, restart, `/activate`, resignation.
    Failover,
    /// Every project's topic served at once through the mailbox folder (issue 11).
    Topics,
}

/// The devices' time scale at `--speed 1`.
const BASE_TIME_SCALE: f64 = 0.05;
/// The topics story's time scale at `--speed 1`. Twice the failover story's: the poller
/// keeps a fixed 1 s of its lease as a margin for Telegram's answer and asks for whole
/// seconds of long poll, so at 0.05 (a 2.5 s lease) its polls are short ones and every
/// delivery waits for the next; at 0.1 they are long polls, as at full scale, and the
/// latencies compare the delivery paths rather than the polling rhythm.
const TOPICS_TIME_SCALE: f64 = 0.1;
const DEVICE_NAMES: [&str; 3] = ["alpha", "bravo", "charlie"];
/// The topics story's devices: (project and device name, forum topic it serves, the Mac
/// it lives on). Two Macs, so mail goes both to a project on the poller's own Mac (its
/// folder replica, no sync delay) and across to the other. The last one starts late: its
/// topic is served by nobody until then.
const TOPIC_DEVICES: [(&str, i64, &str); 4] = [
    ("api", 10, "one"),
    ("web", 20, "one"),
    ("infra", 30, "two"),
    ("ops", 40, "two"),
];
const GROUP: &str = "demo";
/// The fake accepts this token; it is not a secret of anyone's.
const DEMO_TOKEN: &str = "123456:DEMO-token-for-the-fake-bot-api";
const DEMO_CHAT_ID: i64 = -1_001_234_567_890;
/// One user message per this many protocol seconds (200 ms at the base scale).
const MESSAGE_INTERVAL_S: f64 = 4.0;
/// How long messages flow between two acts of the story, in protocol seconds.
const FLOW_S: f64 = 40.0;
/// The copies' delay cap, as a share of the settle bound (the protocol's assumption).
const DELAY_CAP_SHARE: f64 = 0.94;
/// How often the demo looks at its sources.
const PUMP_INTERVAL: Duration = Duration::from_millis(25);
/// Timeline events are held back this long so late sources still print in order.
const TIMELINE_LAG: Duration = Duration::from_millis(300);
/// Slack on top of protocol timings for process start-up on a slow, busy machine.
const SLACK: Duration = Duration::from_secs(10);
/// Unix socket paths must stay under 104 bytes on macOS.
const SOCKET_PATH_BYTES_MAX: usize = 100;

/// A step of the story that did not happen.
#[derive(Debug, thiserror::Error)]
enum StoryError {
    #[error("waited {waited:.1?} for {what}; it did not happen")]
    Timeout { what: String, waited: Duration },
    #[error("cannot start a device: {0}")]
    Spawn(#[from] std::io::Error),
    #[error("{0}")]
    Broken(String),
}

/// Runs the demo; returns the exit code (0 when the story completed with 0 updates lost).
pub async fn run_demo(args: DemoArgs) -> anyhow::Result<i32> {
    if !(args.speed.is_finite() && (0.5..=20.0).contains(&args.speed)) {
        return Err(UsageError(format!(
            "--speed {} is out of range: use 0.5 to 20 (1, the default, takes under a minute; higher is slower)",
            args.speed
        ))
        .into());
    }
    let workspace = Workspace::create(args.keep.as_deref())?;
    let seed = args.seed.unwrap_or_else(rand::random);
    let base_time_scale = match args.story {
        Story::Failover => BASE_TIME_SCALE,
        Story::Topics => TOPICS_TIME_SCALE,
    };
    let demo = Demo::set_up(&workspace, base_time_scale * args.speed, seed, args.story).await?;
    let code = tokio::select! {
        code = demo.play() => code,
        _ = tokio::signal::ctrl_c() => {
            println!("\ninterrupted: stopping every device …");
            ExitCode::Forced.code()
        }
    };
    // The demo (and its fleet) is dropped by now: every process has been stopped.
    if workspace.kept {
        println!(
            "kept {} (logs/, mirror/, replicas/)",
            workspace.root.display()
        );
    }
    Ok(code)
}

/// The demo's folder: removed on drop unless the user asked to keep it.
struct Workspace {
    root: PathBuf,
    kept: bool,
}

impl Workspace {
    fn create(keep: Option<&Path>) -> Result<Self, UsageError> {
        let (root, kept) = match keep {
            Some(dir) => {
                let empty = std::fs::read_dir(dir).map_or(true, |mut e| e.next().is_none());
                if !empty {
                    return Err(UsageError(format!(
                        "--keep {}: use a new or empty folder (an old run's records would join this one)",
                        dir.display()
                    )));
                }
                (dir.to_path_buf(), true)
            }
            None => {
                // /tmp rather than $TMPDIR: macOS's is long, and socket paths are short.
                let base = Path::new("/tmp");
                let base = if base.is_dir() {
                    base.to_path_buf()
                } else {
                    std::env::temp_dir()
                };
                let suffix: u32 = rand::random();
                let name = format!("baton-demo-{}-{suffix:08x}", std::process::id());
                (base.join(name), false)
            }
        };
        std::fs::create_dir_all(&root)
            .map_err(|error| UsageError(format!("cannot create {}: {error}", root.display())))?;
        let root = root
            .canonicalize()
            .map_err(|error| UsageError(format!("cannot resolve {}: {error}", root.display())))?;
        Ok(Workspace { root, kept })
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        if !self.kept {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

/// Measured moments of the story (wall ms).
#[derive(Default)]
struct Figures {
    election: Option<Duration>,
    failover: Option<Duration>,
    handoff: Option<Duration>,
    resignation: Option<Duration>,
    /// Topics story: a stopped owner's restart → the last message that waited for it in
    /// its mirror.
    queued: Option<Duration>,
}

/// The user typing into the chat at a steady rate, in each of `topics` in turn.
struct MessageFlow {
    interval: Duration,
    next_at: Instant,
    sent: u64,
    /// Where to type, round robin (`None`: the chat itself).
    topics: Vec<Option<i64>>,
}

struct Demo {
    // Field order is drop order: the fleet stops before the syncer and the fake.
    fleet: Fleet,
    syncer: Syncer,
    fake: FakeBotApi,
    timeline: Timeline,
    timing: Timing,
    time_scale: f64,
    seed: u64,
    delay_cap: Duration,
    log_tails: Vec<Tail>,
    mirror_tails: Vec<Tail>,
    polls: PollWatch,
    /// Each device's latest own record and the wall ms it was seen to change.
    records: Vec<Option<(DeviceRecord, u64)>>,
    /// The last (status, term) seen landing per (from, to), to show only role news.
    landed: Vec<Vec<Option<(Status, u64)>>>,
    /// Everything the bot said: (wall ms, plain text).
    bot_said: Vec<(u64, String)>,
    deliveries: Deliveries,
    messages: Option<MessageFlow>,
    figures: Figures,
    most_active_at_once: usize,
    conflicts_to_live_devices: usize,
    sync_delays: Vec<Duration>,
    /// Mailbox copies between replicas (the topics story's mail through the folder).
    mail_copies: usize,
    started: Instant,
    story: Story,
    /// The topics story: what the bot said in the topic nobody served.
    unserved: Option<UnservedTopic>,
}

impl Demo {
    async fn set_up(
        workspace: &Workspace,
        time_scale: f64,
        seed: u64,
        story: Story,
    ) -> anyhow::Result<Self> {
        let root = &workspace.root;
        let timing = Timing::default().scaled(time_scale);
        let fake = fake_bot_api::serve(
            ([127, 0, 0, 1], 0).into(),
            FakeBotConfig {
                token: DEMO_TOKEN.into(),
                ..Default::default()
            },
        )
        .await?;
        let specs = device_specs(root, seed, story)?;
        let replicas: Vec<Replica> = specs
            .iter()
            .map(|spec| Replica {
                devices_dir: crate::adapters::store::devices_dir(&spec.sync_dir, GROUP),
                mail_dir: crate::adapters::mailbox::mail_dir(&spec.sync_dir, GROUP),
                own_file: record::file_name(&spec.device_id),
            })
            .collect();
        for replica in &replicas {
            std::fs::create_dir_all(&replica.devices_dir)?;
            std::fs::create_dir_all(&replica.mail_dir)?;
        }
        let serves: Vec<Option<i64>> = specs.iter().map(|s| s.thread_id).collect();
        let hosts: Vec<String> = specs.iter().map(|s| s.hostname.clone()).collect();
        let delay_cap = timing.settle_bound().mul_f64(DELAY_CAP_SHARE);
        let names: Vec<(String, String)> = specs
            .iter()
            .map(|s| (s.device_id.clone(), s.name.clone()))
            .collect();
        let env = FleetEnv {
            baton: std::env::current_exe()?,
            group: GROUP.into(),
            time_scale,
            bot_token: DEMO_TOKEN.into(),
            chat_id: DEMO_CHAT_ID,
            api_url: fake.api_url(),
            stub_interval: Duration::from_secs_f64(time_scale).max(Duration::from_millis(50)),
        };
        let count = specs.len();
        let demo = Demo {
            log_tails: specs
                .iter()
                .map(|s| Tail::new(s.log_path.clone()))
                .collect(),
            mirror_tails: specs
                .iter()
                .map(|s| Tail::new(s.mirror_out.clone()))
                .collect(),
            fleet: Fleet::new(env, specs),
            syncer: Syncer::start(replicas, seed, time_scale, delay_cap),
            timeline: Timeline::new(clock::wall_ms(), names),
            fake,
            timing,
            time_scale,
            seed,
            delay_cap,
            polls: PollWatch::default(),
            records: vec![None; count],
            landed: vec![vec![None; count]; count],
            bot_said: Vec::new(),
            deliveries: Deliveries {
                serves,
                hosts,
                ..Default::default()
            },
            messages: None,
            figures: Figures::default(),
            most_active_at_once: 0,
            conflicts_to_live_devices: 0,
            sync_delays: Vec::new(),
            mail_copies: 0,
            started: Instant::now(),
            story,
            unserved: None,
        };
        demo.print_header(root);
        Ok(demo)
    }

    fn print_header(&self, root: &Path) {
        let t = &self.timing;
        match self.story {
            Story::Failover => println!(
                "baton demo — three devices pass one Telegram bot over a simulated iCloud folder"
            ),
            Story::Topics => println!(
                "baton demo --story topics — one bot, one forum, three projects in their topics on two Macs"
            ),
        }
        println!("  folder     {}", root.display());
        for device in &self.fleet.devices {
            let serves = device.spec.thread_id.map_or_else(String::new, |t| {
                format!("  (serves topic {t}, on {})", device.spec.hostname)
            });
            println!(
                "  {:<9}  {}{serves}",
                device.spec.name, device.spec.device_id
            );
        }
        println!(
            "  telegram   a fake Bot API in this process at {}, chat {DEMO_CHAT_ID}",
            self.fake.api_url()
        );
        println!(
            "  sync       one replica per Mac; each record or mailbox copy lands after Pareto({} s, shape {}) × {}, at most {} ms (settle bound {} ms)",
            sync::DELAY_MIN_S,
            sync::DELAY_SHAPE,
            self.time_scale,
            self.delay_cap.as_millis(),
            t.settle_bound().as_millis()
        );
        println!(
            "  timing     time scale {}: heartbeat {:.2}–{:.2} s, liveness {:.1} s, settle window {:.2} s",
            self.time_scale,
            t.heartbeat_active.base.as_secs_f64(),
            t.heartbeat_active.max().as_secs_f64(),
            t.liveness_active.as_secs_f64(),
            t.settle_window.as_secs_f64()
        );
        println!("  seed       {}\n", self.seed);
    }

    /// Protocol seconds at this demo's time scale.
    fn scaled(&self, protocol_s: f64) -> Duration {
        Duration::from_secs_f64(protocol_s * self.time_scale)
    }

    fn name(&self, index: usize) -> String {
        self.fleet.devices[index].spec.name.clone()
    }

    fn name_of_tag(&self, tag: &str) -> String {
        self.fleet
            .devices
            .iter()
            .find(|d| d.spec.device_id == tag)
            .map_or_else(|| tag.to_string(), |d| d.spec.name.clone())
    }

    /// Plays the story, prints the summary, returns the exit code.
    async fn play(mut self) -> i32 {
        let result = match self.story {
            Story::Failover => self.story().await,
            Story::Topics => self.story_topics().await,
        };
        self.pause(TIMELINE_LAG).await;
        self.timeline.flush_all();
        let summary = self.summary(result.err().map(|e| e.to_string()));
        println!("{}", summary.render());
        if self.story == Story::Failover {
            println!(
                "next: baton demo --story topics — one bot, one forum topic per project, every topic served at once"
            );
        }
        if summary.passed() {
            0
        } else {
            ExitCode::Failure.code()
        }
    }

    fn summary(&self, story_error: Option<String>) -> Summary {
        let mut delays = self.sync_delays.clone();
        delays.sort();
        Summary {
            election: self.figures.election,
            failover: self.figures.failover,
            handoff: self.figures.handoff,
            resignation: self.figures.resignation,
            queued: self.figures.queued,
            liveness_active: self.timing.liveness_active,
            counts: self.deliveries.counts(),
            most_active_at_once: self.most_active_at_once,
            conflicts_to_live_devices: self.conflicts_to_live_devices,
            sync_copies: delays.len(),
            mail_copies: self.mail_copies,
            sync_delay_median: delays.get(delays.len() / 2).copied().unwrap_or_default(),
            sync_delay_max: delays.last().copied().unwrap_or_default(),
            settle_bound: self.timing.settle_bound(),
            seed: self.seed,
            time_scale: self.time_scale,
            total: self.started.elapsed(),
            story_error,
            topics: self.topic_rows(),
            unserved: self.unserved.as_ref().map(|u| UnservedTopic {
                topic: u.topic,
                replies: u.replies,
            }),
        }
    }

    /// The topics story's per-topic rows (none for the failover story).
    fn topic_rows(&self) -> Vec<TopicRow> {
        if self.story != Story::Topics {
            return Vec::new();
        }
        self.deliveries
            .per_topic()
            .into_iter()
            .map(|row| {
                let project = self
                    .fleet
                    .devices
                    .iter()
                    .find(|d| d.spec.thread_id.is_some() && d.spec.thread_id == row.topic)
                    .map_or("", |d| d.spec.name.as_str());
                let topic = row.topic.map_or_else(|| "chat".into(), |t| t.to_string());
                TopicRow {
                    label: format!("{topic} {project}"),
                    counts: row.counts,
                }
            })
            .collect()
    }
}

/// Lays out each device's folders under `root` (project, replica, state, home) and
/// says how to start it. In the failover story each device plays a Mac of its own
/// (`mac-<name>`); in the topics story each serves its project's topic, two per Mac.
fn device_specs(root: &Path, seed: u64, story: Story) -> anyhow::Result<Vec<DeviceSpec>> {
    let devices: Vec<(&str, Option<i64>, &str)> = match story {
        Story::Failover => DEVICE_NAMES
            .iter()
            .map(|name| (*name, None, *name))
            .collect(),
        Story::Topics => TOPIC_DEVICES
            .iter()
            .map(|(name, topic, mac)| (*name, Some(*topic), *mac))
            .collect(),
    };
    let mut specs = Vec::new();
    for (index, (name, thread_id, mac)) in devices.into_iter().enumerate() {
        // The project is the device's own; the folder replica, state and home are its
        // Mac's, shared with the other projects on that Mac.
        let project_dir = root.join("projects").join(name);
        let dir = |kind: &str| root.join(kind).join(mac);
        std::fs::create_dir_all(&project_dir)?;
        for folder in ["replicas", "state", "home"] {
            std::fs::create_dir_all(dir(folder))?;
        }
        std::fs::create_dir_all(root.join("logs"))?;
        std::fs::create_dir_all(root.join("mirror"))?;
        let project = crate::config::project_dir(&project_dir)?;
        let hostname = format!("mac-{mac}");
        let device_id = record::device_id(Some(name), &hostname, &project.to_string_lossy());
        let state_dir = dir("state");
        let socket = crate::adapters::local::control_socket(
            &state_dir,
            GROUP,
            &record::file_stem(&device_id),
        );
        if socket.as_os_str().len() > SOCKET_PATH_BYTES_MAX {
            return Err(UsageError(format!(
                "the folder {} is too deep for a Unix socket path; pass a shorter --keep DIR",
                root.display()
            ))
            .into());
        }
        specs.push(DeviceSpec {
            name: name.to_string(),
            hostname,
            device_id,
            project,
            sync_dir: dir("replicas"),
            state_dir,
            home_dir: dir("home"),
            log_path: root.join("logs").join(format!("{name}.log")),
            mirror_out: root.join("mirror").join(format!("{name}.jsonl")),
            seed: crate::core::seed::derive(seed, &format!("device {index}")),
            thread_id,
        });
    }
    Ok(specs)
}

/// The number `/devices` gives `device_id` (its answer's lines read `2 ⚪ <id> — …`).
fn device_number(devices_answer: &str, device_id: &str) -> Option<usize> {
    devices_answer
        .lines()
        .find(|line| line.contains(device_id))
        .and_then(|line| line.split_whitespace().next())
        .and_then(|number| number.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_device_number_from_the_devices_answer() {
        let answer = "Devices\n1 🟢 alpha@h:/p/alpha — Active · term 2\n2 ⚪ bravo@h:/p/bravo — Standby · term 1\n\n/activate <n> makes a device active";
        assert_eq!(device_number(answer, "bravo@h:/p/bravo"), Some(2));
        assert_eq!(device_number(answer, "charlie@h:/p/charlie"), None);
    }
}
