//! `baton demo`: the whole system on one machine with no Telegram account and no iCloud.
//!
//! Three devices — real `baton run` subprocesses of this binary, each with its own
//! replica of the synced folder, its own state folder and a `baton mirror-stub` child —
//! coordinate through a simulated sync medium ([`sync`]: delayed, atomic, heavy-tailed
//! copies of record files only) and serve a fake Telegram Bot API running in this process
//! ([`crate::fake_bot_api`]). The demo then plays a story against them: election, a user
//! writing to the bot at a steady rate, a crash (SIGKILL), failover, a restart that must
//! not steal the role, `/activate` typed into the chat, and a clean resignation (SIGTERM).
//! Everything shown is observed, not scripted: role changes come from the devices' JSON
//! logs, polling and replies from the fake's request log, record copies from the syncer,
//! and deliveries from the stubs' output files, counted against what was injected.
//!
//! Time: the devices run with `--time-scale` 0.05 × `--speed`, and every pause and
//! message interval of the story is given in protocol seconds and scaled the same way,
//! so `--speed 4` is the same story four times slower.
//!
//! Owns: the story, its temporary folder, and every process it starts. Must never: leave
//! a process running on any exit path (the [`fleet::Fleet`] stops them on drop, Ctrl-C
//! included), touch the user's real sync folder or Telegram configuration (devices get
//! their own HOME), or report a figure it did not measure.

mod fleet;
mod report;
mod sync;
mod timeline;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::adapters::clock;
use crate::config::UsageError;
use crate::core::Timing;
use crate::core::record::{self, DeviceRecord, Status};
use crate::exit::ExitCode;
use baton_testkit::fake_bot_api::{self, FakeBotApi, FakeBotConfig};

use fleet::{DeviceSpec, Fleet, FleetEnv, ProcessState};
use report::{Deliveries, Summary, TableDevice};
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
}

/// The devices' time scale at `--speed 1`.
const BASE_TIME_SCALE: f64 = 0.05;
const DEVICE_NAMES: [&str; 3] = ["alpha", "bravo", "charlie"];
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
    let demo = Demo::set_up(&workspace, BASE_TIME_SCALE * args.speed, seed).await?;
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
}

/// The user typing into the chat at a steady rate.
struct MessageFlow {
    interval: Duration,
    next_at: Instant,
    sent: u64,
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
    started: Instant,
}

impl Demo {
    async fn set_up(workspace: &Workspace, time_scale: f64, seed: u64) -> anyhow::Result<Self> {
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
        let specs = device_specs(root, seed)?;
        let replicas: Vec<Replica> = specs
            .iter()
            .map(|spec| Replica {
                devices_dir: crate::adapters::store::devices_dir(&spec.sync_dir, GROUP),
                own_file: record::file_name(&spec.device_id),
            })
            .collect();
        for replica in &replicas {
            std::fs::create_dir_all(&replica.devices_dir)?;
        }
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
            deliveries: Deliveries::default(),
            messages: None,
            figures: Figures::default(),
            most_active_at_once: 0,
            conflicts_to_live_devices: 0,
            sync_delays: Vec::new(),
            started: Instant::now(),
        };
        demo.print_header(root);
        Ok(demo)
    }

    fn print_header(&self, root: &Path) {
        let t = &self.timing;
        println!("baton demo — three devices pass one Telegram bot over a simulated iCloud folder");
        println!("  folder     {}", root.display());
        for device in &self.fleet.devices {
            println!("  {:<9}  {}", device.spec.name, device.spec.device_id);
        }
        println!(
            "  telegram   a fake Bot API in this process at {}, chat {DEMO_CHAT_ID}",
            self.fake.api_url()
        );
        println!(
            "  sync       one replica per device; each record copy lands after Pareto({} s, shape {}) × {}, at most {} ms (settle bound {} ms)",
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
        let result = self.story().await;
        self.pause(TIMELINE_LAG).await;
        self.timeline.flush_all();
        let summary = self.summary(result.err().map(|e| e.to_string()));
        println!("{}", summary.render());
        if summary.passed() {
            0
        } else {
            ExitCode::Failure.code()
        }
    }

    async fn story(&mut self) -> Result<(), StoryError> {
        let all: Vec<usize> = (0..self.fleet.devices.len()).collect();
        let first = self.act_election(&all).await?;
        self.step("2/7", "A user writes to the bot at a steady rate");
        self.messages = Some(MessageFlow {
            interval: self.scaled(MESSAGE_INTERVAL_S),
            next_at: Instant::now(),
            sent: 0,
        });
        self.pause(self.scaled(FLOW_S)).await;
        self.show_table().await;
        let survivors: Vec<usize> = all.iter().copied().filter(|i| *i != first).collect();
        let successor = self.act_crash(first, &survivors).await?;
        self.act_restart(first, successor).await?;
        let target = survivors
            .iter()
            .copied()
            .find(|i| *i != successor)
            .ok_or_else(|| StoryError::Broken("BUG: no third device".into()))?;
        self.act_activate(target, successor).await?;
        self.act_resign(target).await?;
        self.act_finish().await
    }

    /// Act 1: start every device; exactly one becomes active.
    async fn act_election(&mut self, all: &[usize]) -> Result<usize, StoryError> {
        self.step(
            "1/7",
            "Three devices start, each on its own replica of the folder",
        );
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
    async fn act_crash(&mut self, first: usize, survivors: &[usize]) -> Result<usize, StoryError> {
        self.step("3/7", "Crash: SIGKILL the active device");
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
    /// rejoin as standby without taking the role back.
    async fn act_restart(&mut self, crashed: usize, successor: usize) -> Result<(), StoryError> {
        self.step(
            "4/7",
            "launchd restarts the crashed device: it rejoins as standby",
        );
        let pid = self.fleet.start(crashed)?;
        let name = self.name(crashed);
        self.timeline.add(
            clock::wall_ms(),
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
        let all: Vec<usize> = (0..self.fleet.devices.len()).collect();
        if self.sole_active(&all) != Some(successor) {
            return Err(StoryError::Broken(format!(
                "after {name} restarted, {} is no longer the only active device",
                self.name(successor)
            )));
        }
        self.show_table().await;
        Ok(())
    }

    /// Act 5: the user types `/devices`, then `/activate <n>` for `target`, in the chat.
    async fn act_activate(&mut self, target: usize, active: usize) -> Result<(), StoryError> {
        let name = self.name(target);
        self.step(
            "5/7",
            &format!("The user moves the bot to {name} by typing /activate in the chat"),
        );
        let asked_ms = clock::wall_ms();
        self.fake.inject_text(DEMO_CHAT_ID, None, "/devices");
        self.timeline.add(asked_ms, "user", "/devices");
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
        self.fake.inject_text(DEMO_CHAT_ID, None, &command);
        self.timeline.add(asked_ms, "user", command);
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
    async fn act_resign(&mut self, active: usize) -> Result<(), StoryError> {
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
    async fn act_finish(&mut self) -> Result<(), StoryError> {
        self.step(
            "7/7",
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

    /// Looks at every source once: injects due messages, reaps processes, reads the
    /// syncer, the logs, the fake and the stubs' outputs, and prints what is settled.
    async fn pump(&mut self) {
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

    fn inject_due(&mut self) {
        let Some(flow) = self.messages.as_mut() else {
            return;
        };
        let now = Instant::now();
        while flow.next_at <= now {
            flow.sent += 1;
            let text = format!("user message {}", flow.sent);
            let id = self.fake.inject_text(DEMO_CHAT_ID, None, &text);
            self.deliveries.injected.insert(id, clock::wall_ms());
            flow.next_at += flow.interval;
        }
    }

    fn read_syncer(&mut self) {
        let news = self.syncer.drain();
        for seen in news.seen {
            self.records[seen.device] = Some((seen.record, seen.seen_ms));
        }
        for copy in news.landed {
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
                self.name(copy.to),
                copy.delay.as_millis()
            );
            self.timeline.add(copy.landed_ms, "sync", text);
        }
        for error in news.errors {
            self.timeline
                .add(clock::wall_ms(), "sync", format!("⚠ {error}"));
        }
    }

    fn read_logs(&mut self) {
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

    fn read_telegram(&mut self) {
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
        for (at_ms, tag, text) in news.said {
            let name = self.name_of_tag(&tag);
            self.timeline
                .add(at_ms, "telegram", format!("bot (via {name}): {text}"));
            self.bot_said.push((at_ms, text));
        }
    }

    fn read_mirrors(&mut self) {
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
    async fn wait_for<T>(
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

    async fn pause(&mut self, duration: Duration) {
        let _ = self.wait_for("nothing", duration, |_| None::<()>).await;
    }

    fn step(&mut self, number: &str, text: &str) {
        self.timeline
            .add(clock::wall_ms(), "demo", format!("━━ {number} {text} ━━"));
    }

    /// Lets late events in, prints them, then the device table.
    async fn show_table(&mut self) {
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
            })
            .collect();
        let table = report::render_table(&devices, now_ms, &self.timing);
        let counts = self.deliveries.counts();
        println!(
            "\n{table}    messages: {} sent, {} delivered, {} duplicated\n",
            counts.sent, counts.delivered, counts.duplicated
        );
    }

    fn record(&self, index: usize) -> Option<&DeviceRecord> {
        self.records[index].as_ref().map(|(record, _)| record)
    }

    /// The one running device among `candidates` whose own record says Active, when
    /// exactly one does.
    fn sole_active(&self, candidates: &[usize]) -> Option<usize> {
        let active: Vec<usize> = candidates
            .iter()
            .copied()
            .filter(|i| self.is_active(*i))
            .collect();
        (active.len() == 1).then(|| active[0])
    }

    /// Whether device `index` runs and its CURRENT process wrote an Active record (a
    /// restarted device's old record does not count).
    fn is_active(&self, index: usize) -> bool {
        let ProcessState::Running { pid } = self.fleet.devices[index].state() else {
            return false;
        };
        self.record(index)
            .is_some_and(|r| r.pid == pid && r.status == Status::Active)
    }

    /// From `since_ms` to the moment device `index` wrote its current record (the
    /// writer's own wall clock, on this same machine).
    fn written_since(&self, index: usize, since_ms: u64) -> Duration {
        let written = self.record(index).map_or(since_ms, |r| r.written_at_ms);
        Duration::from_millis(written.saturating_sub(since_ms))
    }

    fn summary(&self, story_error: Option<String>) -> Summary {
        let mut delays = self.sync_delays.clone();
        delays.sort();
        Summary {
            election: self.figures.election,
            failover: self.figures.failover,
            handoff: self.figures.handoff,
            resignation: self.figures.resignation,
            liveness_active: self.timing.liveness_active,
            counts: self.deliveries.counts(),
            most_active_at_once: self.most_active_at_once,
            conflicts_to_live_devices: self.conflicts_to_live_devices,
            sync_copies: delays.len(),
            sync_delay_median: delays.get(delays.len() / 2).copied().unwrap_or_default(),
            sync_delay_max: delays.last().copied().unwrap_or_default(),
            settle_bound: self.timing.settle_bound(),
            seed: self.seed,
            time_scale: self.time_scale,
            total: self.started.elapsed(),
            story_error,
        }
    }
}

/// Lays out each device's folders under `root` (project, replica, state, home) and
/// says how to start it. Each device plays a Mac of its own (`mac-<name>`).
fn device_specs(root: &Path, seed: u64) -> anyhow::Result<Vec<DeviceSpec>> {
    let mut specs = Vec::new();
    for (index, name) in DEVICE_NAMES.iter().enumerate() {
        let dir = |kind: &str| root.join(kind).join(name);
        for folder in ["projects", "replicas", "state", "home"] {
            std::fs::create_dir_all(dir(folder))?;
        }
        std::fs::create_dir_all(root.join("logs"))?;
        std::fs::create_dir_all(root.join("mirror"))?;
        let project = crate::config::project_dir(&dir("projects"))?;
        let hostname = format!("mac-{name}");
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
            seed: seed.wrapping_add(index as u64 + 1),
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
