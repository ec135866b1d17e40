//! A real sync medium no one here wrote: three Syncthing instances (the distribution's
//! package) keep three replicas in step over loopback, inside a private network
//! namespace when one can be made, and one real `baton run` per replica, each on a host
//! name of its own (so no same-host pid probe shortens anything), serves a fake Bot API
//! with a stand-in mirror. Through an election, a SIGKILL failover, a restart, `baton
//! activate`, a resignation and 50 messages, it checks: never two devices serving at
//! once, every message delivered (twice only in the crash window), and afterwards every
//! replica holds records and nothing else (no conflict copy, no stray temp file), each
//! written only by its owner. It prints its figures on stderr, for CI's log.
//!
//! Without `syncthing` on PATH the test says loudly that it did not run (and fails
//! when `CI=true`). `.ci/run` installs Syncthing.
//!
//! The time scale: Syncthing's own delays are not scaled. With `fsWatcherDelayS=1` a
//! record reaches the other replicas in 0.8–1.0 s here (the test measures and
//! prints it before the devices start); at `--time-scale 0.5` the protocol's settle
//! bound is 4 s, two to three times that, so the test runs inside the guarantee it
//! checks, and a failover costs 25 s of lease instead of 50.
//!
//! `cold_starts_under_default_batching` (ignored: minutes at full scale) measures
//! what README states for Syncthing's default `fsWatcherDelayS=10`.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use baton_testkit::fake_bot_api::FakeBotApi;
use common::process::{BATON, Device, Folder, processed, wait_until};
use common::syncthing::{self, Cluster};
use mirror_baton::core::Status;
use mirror_baton::core::record::{self, NameKind};

const SCALE: f64 = 0.5;
const CHAT: i64 = -1_001_234_567;
const MESSAGES: usize = 50;
const NAMES: [&str; 3] = ["alpha", "bravo", "charlie"];
/// Only a failing test waits this long for one step.
const PATIENCE: Duration = Duration::from_secs(120);

/// Straight to the process's stderr: libtest captures `println!`, not the file.
fn report(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// `Some(binary)`, or `None` after saying loudly why the test did not run (a panic
/// under `CI=true`, where Syncthing must be there).
fn syncthing_or_skip(test: &str) -> Option<PathBuf> {
    if let Some(binary) = syncthing::binary() {
        return Some(binary);
    }
    let message = format!(
        "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
         !! {test}: NOT RUN: `syncthing` is not on PATH.\n\
         !! Install it (Debian/Ubuntu: apt-get install syncthing; macOS: brew install\n\
         !! syncthing) to run baton on a real sync medium. CI installs it (.ci/run).\n\
         !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
    );
    report(&message);
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: syncthing is missing, and CI=true requires it");
    }
    None
}

/// Runs `body` inside a private network namespace (re-running this test there), or on
/// the host's loopback when none can be made, saying which.
fn isolated(test: &str, body: impl FnOnce(PathBuf)) {
    let Some(binary) = syncthing_or_skip(test) else {
        return;
    };
    if !syncthing::in_private_network() {
        let forward: Vec<(&str, String)> = [
            "BATON_SYNCTHING_WATCHER_DELAY_S",
            "BATON_SYNCTHING_COLD_STARTS",
        ]
        .into_iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (k, v)))
        .collect();
        match syncthing::rerun_in_private_network(test, &forward) {
            Some(passed) => {
                assert!(
                    passed,
                    "{test} failed inside its network namespace (output above)"
                );
                return;
            }
            None => report(&format!(
                "{test}: no private network namespace here (needs root and `unshare`/`ip`): \
                 running on the host's loopback, every Syncthing discovery, relay, NAT, \
                 upgrade and reporting feature off"
            )),
        }
    } else {
        report(&format!(
            "{test}: inside a private network namespace (loopback only)"
        ));
    }
    report(&format!("{test}: {}", syncthing::version(&binary)));
    body(binary);
}

/// One device: its replica, host name, project and running process.
struct Host {
    name: &'static str,
    replica: PathBuf,
    device_id: String,
    device: Option<Device>,
}

fn hostname_of(name: &str) -> String {
    format!("host-{name}")
}

/// A `baton` command for `name`'s host: its replica, state folder, home, host name.
fn baton_for(folder: &Folder, name: &str, replica: &Path) -> Command {
    let mut command = folder.baton();
    command
        .env("BATON_SYNC_DIR", replica)
        .env(
            "BATON_STATE_DIR",
            folder.root.path().join(format!("state-{name}")),
        )
        .env("BATON_HOSTNAME", hostname_of(name))
        .env("HOME", folder.root.path().join(format!("home-{name}")));
    command
}

fn start_device(folder: &Folder, host: &Host, fake: &FakeBotApi, scale: f64) -> Device {
    let out = folder
        .updates_path(host.name)
        .to_string_lossy()
        .into_owned();
    let mut command = baton_for(folder, host.name, &host.replica);
    command
        .env("BATON_TIME_SCALE", scale.to_string())
        .env("TELEGRAM_BOT_TOKEN", fake.token())
        .env("TELEGRAM_CHAT_ID", CHAT.to_string())
        .env("TELEGRAM_API_URL", fake.api_url())
        .args(["--log-format", "json"]);
    let stub = [
        "--",
        BATON,
        "mirror-stub",
        "--out",
        &out,
        "--interval-ms",
        "50",
    ];
    let mut device = folder.start_with(host.name, &stub, command);
    device.device_id = host.device_id.clone();
    device
}

/// The devices whose OWN record, on their OWN replica, says Active, among those running.
fn active(hosts: &[Host]) -> Vec<String> {
    hosts
        .iter()
        .filter(|h| h.device.as_ref().is_some_and(|d| d.child.is_some()))
        .filter(|h| {
            let path = h
                .replica
                .join("default/devices")
                .join(record::file_name(&h.device_id));
            std::fs::read(path)
                .ok()
                .and_then(|bytes| record::parse_record(&bytes).ok())
                .is_some_and(|r| r.status == Status::Active)
        })
        .map(|h| h.device_id.clone())
        .collect()
}

/// Reads every record in every replica every 50 ms, and notes any written by another
/// than its owner (host name and pid of a process started for that device).
struct Audit {
    stop: Arc<std::sync::atomic::AtomicBool>,
    pids: Arc<Mutex<HashMap<String, BTreeSet<u32>>>>,
    violations: Arc<Mutex<Vec<String>>>,
    versions: Arc<std::sync::atomic::AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Audit {
    fn start(replicas: Vec<PathBuf>, owners: HashMap<String, String>) -> Audit {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let pids: Arc<Mutex<HashMap<String, BTreeSet<u32>>>> = Arc::default();
        let violations: Arc<Mutex<Vec<String>>> = Arc::default();
        let versions = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let thread = {
            let (stop, pids, violations, versions) = (
                stop.clone(),
                pids.clone(),
                violations.clone(),
                versions.clone(),
            );
            std::thread::spawn(move || {
                let mut seen = BTreeSet::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    for replica in &replicas {
                        let dir = replica.join("default/devices");
                        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                            let name = entry.file_name().to_string_lossy().into_owned();
                            if !matches!(record::classify_name(&name), NameKind::Record { .. }) {
                                continue;
                            }
                            let Ok(bytes) = std::fs::read(entry.path()) else {
                                continue;
                            };
                            let Ok(rec) = record::parse_record(&bytes) else {
                                violations
                                    .lock()
                                    .unwrap()
                                    .push(format!("{name}: unparseable in {}", replica.display()));
                                continue;
                            };
                            if !seen.insert((rec.device_id.clone(), rec.instance.clone(), rec.seq))
                            {
                                continue;
                            }
                            versions.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let owner_host = owners.get(&rec.device_id);
                            let owner_pids = pids
                                .lock()
                                .unwrap()
                                .get(&rec.device_id)
                                .cloned()
                                .unwrap_or_default();
                            if owner_host != Some(&rec.hostname) || !owner_pids.contains(&rec.pid) {
                                violations.lock().unwrap().push(format!(
                                    "{name} seq {} written by host {} pid {} (owner {:?}, pids {owner_pids:?})",
                                    rec.seq, rec.hostname, rec.pid, owner_host
                                ));
                            }
                        }
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
        };
        Audit {
            stop,
            pids,
            violations,
            versions,
            thread: Some(thread),
        }
    }
    fn started(&self, device_id: &str, pid: u32) {
        self.pids
            .lock()
            .unwrap()
            .entry(device_id.to_string())
            .or_default()
            .insert(pid);
    }
    fn finish(mut self) -> (usize, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("audit thread");
        }
        let versions = self.versions.load(std::sync::atomic::Ordering::Relaxed);
        (versions, self.violations.lock().unwrap().clone())
    }
}

/// The device's Active intervals from its JSON log, in Unix ms: from "serving the bot"
/// to the transition out of Active; one still open ends at `end_ms`.
fn active_intervals(log: &str, end_ms: u64) -> Vec<(u64, u64)> {
    let mut intervals = Vec::new();
    let mut open = None;
    for line in log.lines() {
        let Ok(value) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let at = value["timestamp"]
            .as_str()
            .and_then(rfc3339_ms)
            .unwrap_or(0);
        let message = value["message"].as_str().unwrap_or_default();
        if message == "serving the bot" {
            open = Some(at);
        } else if message == "role changed" && value["from"] == "Active" {
            intervals.push((open.take().unwrap_or(at), at));
        }
    }
    if let Some(start) = open {
        intervals.push((start, end_ms.max(start)));
    }
    intervals
}

/// Milliseconds during which two or more devices were serving at once.
fn overlap_ms(all: &[Vec<(u64, u64)>]) -> u64 {
    let mut edges: Vec<(u64, i32)> = all
        .iter()
        .flatten()
        .flat_map(|(a, b)| [(*a, 1), (*b, -1)])
        .collect();
    edges.sort();
    let (mut serving, mut since, mut total) = (0, 0, 0);
    for (at, delta) in edges {
        if serving >= 2 {
            total += at - since;
        }
        serving += delta;
        since = at;
    }
    total
}

/// `2026-11-25T08:16:23.123456Z` → Unix ms.
fn rfc3339_ms(text: &str) -> Option<u64> {
    let (date, time) = text.trim_end_matches('Z').split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.split(':');
    let (h, min) = (
        t.next()?.parse::<i64>().ok()?,
        t.next()?.parse::<i64>().ok()?,
    );
    let secs: f64 = t.next()?.parse().ok()?;
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + h * 3600 + min * 60) as f64 * 1000.0 + secs * 1000.0) as u64)
}

fn wall_ms() -> u64 {
    mirror_baton::adapters::clock::wall_ms()
}

/// Syncthing's own one-way delay here: a file written into one replica, until it is in
/// each other one. Three probes, from each replica in turn.
async fn measure_sync_delay(cluster: &Cluster) -> Vec<Duration> {
    let mut delays = Vec::new();
    for (from, instance) in cluster.instances.iter().enumerate() {
        let name = format!("probe-{from}");
        let started = Instant::now();
        std::fs::write(instance.replica.join(&name), b"probe").expect("probe");
        for (to, other) in cluster
            .instances
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != from)
        {
            wait_until(PATIENCE, || {
                other.replica.join(&name).exists().then_some(())
            })
            .await
            .unwrap_or_else(|| panic!("the probe from {from} reached {to}"));
            delays.push(started.elapsed());
        }
    }
    for (from, instance) in cluster.instances.iter().enumerate() {
        std::fs::remove_file(instance.replica.join(format!("probe-{from}"))).expect("remove probe");
    }
    cluster
        .wait(PATIENCE, "the probes' removal synced", false)
        .await;
    delays
}

fn hosts_for(folder: &Folder, cluster: &Cluster) -> Vec<Host> {
    NAMES
        .iter()
        .zip(&cluster.instances)
        .map(|(name, instance)| {
            let project = folder.project(name);
            Host {
                name,
                replica: instance.replica.clone(),
                device_id: record::device_id(None, &hostname_of(name), &project.to_string_lossy()),
                device: None,
            }
        })
        .collect()
}

/// Every record file in a replica's devices folder, by name, with its bytes.
fn replica_records(replica: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(replica.join("default/devices"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            matches!(
                record::classify_name(&e.file_name().to_string_lossy()),
                NameKind::Record { .. }
            )
        })
        .map(|e| {
            let bytes = std::fs::read(e.path()).unwrap_or_default();
            (e.file_name().to_string_lossy().into_owned(), bytes)
        })
        .collect()
}

fn kill(host: &mut Host, signal: i32) -> Option<i32> {
    let device = host.device.as_mut()?;
    device.signal(signal);
    let code = device.wait_exit(Duration::from_secs(60));
    device.child = None;
    code
}

#[test]
fn three_devices_on_three_syncthing_replicas() {
    isolated("three_devices_on_three_syncthing_replicas", |binary| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(scenario(binary));
    });
}

async fn scenario(binary: PathBuf) {
    let begun = Instant::now();
    let folder = Folder::new(SCALE);
    let mut cluster = Cluster::generate(&binary, folder.root.path(), &NAMES, 1);
    cluster.start(&binary);
    cluster
        .wait(PATIENCE, "three instances connected and in sync", false)
        .await;
    let delays = measure_sync_delay(&cluster).await;
    let max_delay = delays.iter().max().copied().unwrap_or_default();
    report(&format!(
        "syncthing (fsWatcherDelayS=1): one-way delay {:?} (max {max_delay:?}); the settle bound at --time-scale {SCALE} is {:?}",
        delays
            .iter()
            .map(|d| format!("{:.1}s", d.as_secs_f64()))
            .collect::<Vec<_>>(),
        Duration::from_secs(8).mul_f64(SCALE)
    ));

    let fake = Arc::new(FakeBotApi::start().await.expect("fake Bot API"));
    let mut hosts = hosts_for(&folder, &cluster);
    let owners: HashMap<String, String> = hosts
        .iter()
        .map(|h| (h.device_id.clone(), hostname_of(h.name)))
        .collect();
    let audit = Audit::start(hosts.iter().map(|h| h.replica.clone()).collect(), owners);

    // Election: three cold starts at once.
    let started = Instant::now();
    for host in hosts.iter_mut() {
        let device = start_device(&folder, host, &fake, SCALE);
        audit.started(&host.device_id, device.pid());
        host.device = Some(device);
    }
    let leader = wait_until(PATIENCE, || {
        let a = active(&hosts);
        (a.len() == 1).then(|| a[0].clone())
    })
    .await
    .expect("one device becomes active");
    let election = started.elapsed();

    // Messages flow from now on, through everything that follows.
    let injector = {
        let fake = fake.clone();
        tokio::spawn(async move {
            for n in 1..=MESSAGES {
                fake.inject_text(CHAT, None, &format!("m{n}"));
                tokio::time::sleep(Duration::from_millis(800)).await;
            }
        })
    };
    let all_registered = |hosts: &[Host]| {
        hosts.iter().all(|h| {
            let path = h.replica.join("default/devices");
            hosts
                .iter()
                .all(|peer| path.join(record::file_name(&peer.device_id)).exists())
        })
    };
    wait_until(PATIENCE, || all_registered(&hosts).then_some(()))
        .await
        .expect("every record on every replica");

    // SIGKILL the leader: another host takes over after the lease and a settle window.
    let crashed = hosts.iter().position(|h| h.device_id == leader).unwrap();
    let killed_at_ms = wall_ms();
    let killed = Instant::now();
    kill(&mut hosts[crashed], libc::SIGKILL);
    let successor = wait_until(PATIENCE, || {
        let a = active(&hosts);
        (a.len() == 1 && a[0] != leader).then(|| a[0].clone())
    })
    .await
    .expect("a standby takes over after the SIGKILL");
    let failover = killed.elapsed();
    let crashed_log = hosts[crashed]
        .device
        .take()
        .map(|d| d.log())
        .unwrap_or_default();

    // The crashed host comes back, then `baton activate` moves the role to it.
    let device = start_device(&folder, &hosts[crashed], &fake, SCALE);
    audit.started(&hosts[crashed].device_id, device.pid());
    hosts[crashed].device = Some(device);
    let back = hosts[crashed].device_id.clone();
    wait_until(PATIENCE, || {
        let own = hosts[crashed]
            .replica
            .join("default/devices")
            .join(record::file_name(&back));
        std::fs::read(own)
            .ok()
            .and_then(|b| record::parse_record(&b).ok())
            .is_some_and(|r| {
                r.status == Status::Standby
                    && r.pid == hosts[crashed].device.as_ref().unwrap().pid()
            })
            .then_some(())
    })
    .await
    .expect("the restarted host is a standby again");
    let asked = Instant::now();
    let activate = baton_for(&folder, hosts[crashed].name, &hosts[crashed].replica)
        .env("BATON_TIME_SCALE", SCALE.to_string())
        .args(["activate", &back])
        .output()
        .expect("baton activate runs");
    let activated = asked.elapsed();
    assert!(
        activate.status.success(),
        "baton activate {back}: {}{}",
        String::from_utf8_lossy(&activate.stdout),
        String::from_utf8_lossy(&activate.stderr)
    );
    wait_until(PATIENCE, || {
        (active(&hosts) == vec![back.clone()]).then_some(())
    })
    .await
    .expect("the activated host's own record says active");

    // Resignation: SIGTERM the active host; the best standby takes over.
    let resigned = Instant::now();
    let resigned_code = kill(&mut hosts[crashed], libc::SIGTERM);
    assert_eq!(resigned_code, Some(0), "a resigning baton exits 0");
    let taker = wait_until(PATIENCE, || {
        let a = active(&hosts);
        (a.len() == 1).then(|| a[0].clone())
    })
    .await
    .expect("a standby takes over after the resignation");
    let resignation = resigned.elapsed();
    let resigned_log = hosts[crashed]
        .device
        .take()
        .map(|d| d.log())
        .unwrap_or_default();

    // Every message, counted.
    injector.await.expect("injector");
    let wanted: Vec<String> = (1..=MESSAGES).map(|n| format!("m{n}")).collect();
    let outputs: Vec<PathBuf> = NAMES.iter().map(|n| folder.updates_path(n)).collect();
    let received = |outputs: &[PathBuf]| -> BTreeMap<String, Vec<usize>> {
        let mut deliveries: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (index, path) in outputs.iter().enumerate() {
            for (_, text) in processed(path) {
                deliveries.entry(text).or_default().push(index);
            }
        }
        deliveries
    };
    wait_until(PATIENCE, || {
        let got = received(&outputs);
        wanted.iter().all(|w| got.contains_key(w)).then_some(())
    })
    .await;
    let deliveries = received(&outputs);
    let lost: Vec<&String> = wanted
        .iter()
        .filter(|w| !deliveries.contains_key(*w))
        .collect();
    let duplicated: Vec<(&String, &Vec<usize>)> =
        deliveries.iter().filter(|(_, d)| d.len() > 1).collect();
    let in_crash_window = duplicated
        .iter()
        .filter(|(_, d)| d.contains(&crashed) && d.len() == 2)
        .count();

    // Stop the rest cleanly, let Syncthing settle, and look at what is left.
    let end_ms = wall_ms();
    // (log, when an interval still open in it ended): a SIGKILLed process logs no end.
    let mut logs: Vec<(String, u64)> = vec![(crashed_log, killed_at_ms), (resigned_log, end_ms)];
    for host in hosts.iter_mut() {
        if host.device.is_some() {
            assert_eq!(
                kill(host, libc::SIGTERM),
                Some(0),
                "{} stops cleanly",
                host.name
            );
            logs.push((
                host.device.take().map(|d| d.log()).unwrap_or_default(),
                end_ms,
            ));
        }
    }
    // Syncthing reports "in sync" before its watcher (1 s) has even seen the last
    // writes: wait for the three replicas to hold the same records, then for it.
    let agreed = wait_until(PATIENCE, || {
        let records: Vec<BTreeMap<String, Vec<u8>>> =
            hosts.iter().map(|h| replica_records(&h.replica)).collect();
        (records.windows(2).all(|w| w[0] == w[1]) && records[0].len() == NAMES.len()).then_some(())
    })
    .await;
    cluster
        .wait(PATIENCE, "the replicas in sync after the stops", false)
        .await;
    let (versions, foreign_writes) = audit.finish();
    cluster.stop();

    let mut strays = Vec::new();
    let mut conflicts = Vec::new();
    let mut contents: Vec<BTreeMap<String, Vec<u8>>> = Vec::new();
    for host in &hosts {
        let mut here = BTreeMap::new();
        for path in syncthing::list_tree(&host.replica) {
            let file = path.rsplit('/').next().unwrap_or_default();
            let kind = record::classify_name(file);
            match path.as_str() {
                // The mail folder (issue 11) and any mailbox in it are baton's too.
                ".stfolder/" | "default/" | "default/devices/" | "default/mail/" => {}
                p if p.starts_with("default/mail/") && matches!(kind, NameKind::Record { .. }) => {}
                p if p.starts_with("default/devices/")
                    && matches!(kind, NameKind::Record { .. }) =>
                {
                    here.insert(
                        path.clone(),
                        std::fs::read(host.replica.join(&path)).unwrap_or_default(),
                    );
                }
                _ if matches!(kind, NameKind::ConflictCopy { .. })
                    || path.contains(".sync-conflict-") =>
                {
                    conflicts.push(format!("{}: {path}", host.name));
                }
                _ => strays.push(format!("{}: {path}", host.name)),
            }
        }
        contents.push(here);
    }

    // Never two serving at once: the Active intervals from every log (one clock here).
    let intervals: Vec<Vec<(u64, u64)>> = logs
        .iter()
        .map(|(log, end)| active_intervals(log, *end))
        .collect();
    let dual_ms = overlap_ms(&intervals);
    let conflicts_409 = fake
        .requests()
        .iter()
        .filter(|r| r.is("getUpdates") && r.status == Some(409))
        .count();

    report(&format!(
        "syncthing e2e (3 replicas, --time-scale {SCALE}, settle bound {:.1}s, lease {:.1}s): \
         election {:.1}s, SIGKILL failover {:.1}s ({successor}), baton activate {:.1}s, \
         resignation {:.1}s ({taker}); messages sent {MESSAGES}, delivered {}, lost {}, \
         duplicated {} (in the crash window: {in_crash_window}); two serving at once {dual_ms} ms; \
         409s {conflicts_409}; {versions} record versions audited, {} written by another; \
         conflict copies {}, stray files {}; whole test {:.0}s",
        8.0 * SCALE,
        42.0 * SCALE,
        election.as_secs_f64(),
        failover.as_secs_f64(),
        activated.as_secs_f64(),
        resignation.as_secs_f64(),
        wanted
            .iter()
            .filter(|w| deliveries.contains_key(*w))
            .count(),
        lost.len(),
        duplicated.len(),
        foreign_writes.len(),
        conflicts.len(),
        strays.len(),
        begun.elapsed().as_secs_f64(),
    ));
    assert!(lost.is_empty(), "lost: {lost:?}");
    assert_eq!(
        duplicated.len(),
        in_crash_window,
        "duplicates outside the crash window: {duplicated:?}"
    );
    assert_eq!(dual_ms, 0, "two devices served at once: {intervals:?}");
    assert!(
        foreign_writes.is_empty(),
        "records written by another than their owner: {foreign_writes:?}"
    );
    assert!(conflicts.is_empty(), "conflict copies: {conflicts:?}");
    assert!(strays.is_empty(), "stray files in the replicas: {strays:?}");
    assert!(
        versions >= 3 * NAMES.len(),
        "the audit saw the records change ({versions} versions)"
    );
    assert!(
        agreed.is_some() && contents.windows(2).all(|w| w[0] == w[1]) && contents[0].len() == 3,
        "the replicas hold the same three records: {:?}",
        contents
            .iter()
            .map(|c| c.keys().cloned().collect::<Vec<_>>())
            .collect::<Vec<_>>()
    );
}

/// README's figure for Syncthing's default batching: cold starts of three devices at
/// full scale with `fsWatcherDelayS=10` (env `BATON_SYNCTHING_WATCHER_DELAY_S`), each
/// watched for 100 s; prints how long two or more devices served at once, and when the
/// last such moment ended. `BATON_SYNCTHING_COLD_STARTS` runs (default 5). Ignored:
/// it takes about two minutes a run.
///
/// `cargo test --release --test e2e_syncthing -- --ignored --nocapture cold_starts`
#[test]
#[ignore]
fn cold_starts_under_default_batching() {
    isolated("cold_starts_under_default_batching", |binary| {
        let env_number = |key: &str, default: u32| {
            std::env::var(key)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        let delay_s = env_number("BATON_SYNCTHING_WATCHER_DELAY_S", 10);
        let runs = env_number("BATON_SYNCTHING_COLD_STARTS", 5);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let mut overlaps = Vec::new();
        for run in 1..=runs {
            let (overlap, last_end, conflicts) = runtime.block_on(cold_start(&binary, delay_s));
            report(&format!(
                "cold start {run}/{runs} (fsWatcherDelayS={delay_s}, --time-scale 1): two or more \
                 serving for {:.1}s in all, the last overlap ending {:.1}s after the start; 409s {conflicts}",
                overlap.as_secs_f64(),
                last_end.as_secs_f64()
            ));
            overlaps.push(overlap);
        }
        overlaps.sort();
        report(&format!(
            "cold starts with fsWatcherDelayS={delay_s}: overlaps {:?}",
            overlaps
                .iter()
                .map(|d| format!("{:.1}s", d.as_secs_f64()))
                .collect::<Vec<_>>()
        ));
    });
}

/// One cold start of three devices at full scale; (overlap, end of the last overlap
/// after the start, 409s).
async fn cold_start(binary: &Path, watcher_delay_s: u32) -> (Duration, Duration, usize) {
    let folder = Folder::new(1.0);
    let mut cluster = Cluster::generate(binary, folder.root.path(), &NAMES, watcher_delay_s);
    cluster.start(binary);
    cluster
        .wait(PATIENCE, "three instances connected and in sync", false)
        .await;
    let fake = FakeBotApi::start().await.expect("fake Bot API");
    let mut hosts = hosts_for(&folder, &cluster);
    let start_ms = wall_ms();
    for host in hosts.iter_mut() {
        host.device = Some(start_device(&folder, host, &fake, 1.0));
    }
    tokio::time::sleep(Duration::from_secs(100)).await;
    let end_ms = wall_ms();
    let mut intervals = Vec::new();
    for host in &mut hosts {
        kill(host, libc::SIGKILL);
        let log = host.device.take().map(|d| d.log()).unwrap_or_default();
        intervals.push(active_intervals(&log, end_ms));
    }
    cluster.stop();
    let overlap = Duration::from_millis(overlap_ms(&intervals));
    let last_end = last_overlap_end_ms(&intervals).map_or(0, |at| at.saturating_sub(start_ms));
    let conflicts = fake
        .requests()
        .iter()
        .filter(|r| r.is("getUpdates") && r.status == Some(409))
        .count();
    (overlap, Duration::from_millis(last_end), conflicts)
}

/// The moment the last stretch with two or more serving ended.
fn last_overlap_end_ms(all: &[Vec<(u64, u64)>]) -> Option<u64> {
    let mut edges: Vec<(u64, i32)> = all
        .iter()
        .flatten()
        .flat_map(|(a, b)| [(*a, 1), (*b, -1)])
        .collect();
    edges.sort();
    let (mut serving, mut last) = (0, None);
    for (at, delta) in edges {
        if serving >= 2 && serving + delta < 2 {
            last = Some(at);
        }
        serving += delta;
    }
    last
}
