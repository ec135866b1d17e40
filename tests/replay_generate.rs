//! The generator of the hand-made fixtures in `fixtures/`: each scenario is written here
//! as a story of peer records, so the JSON stays consistent (seq numbers, file names,
//! written-at) and reviewable. Recorded fixtures (from `baton record`) are not made here.
//!
//! `cargo test --test replay_generate` checks that every generated fixture on disk is
//! what its scenario says; `BATON_REGEN_FIXTURES=1` rewrites them. After regenerating,
//! re-bless the transcripts (`BATON_BLESS=1 cargo test --test fixtures`) and read them.

use std::path::PathBuf;

use baton_sim::replay::{Auto, Fixture, Header, Step, TimingSpec};
use mirror_baton::core::record::{self, ActivationRequest, DeviceRecord, Handoff, Status};
use mirror_baton::core::{Event, FileObservation, FileState, Identity, Input, Moment};

const WALL_START_MS: u64 = 1_750_000_000_000;
const HOUR_MS: i64 = 3_600_000;
/// The boot id of the observer's Mac in the same-host scenarios.
const BOOT: &str = "6f1e2d3c-boot-of-mbp";

#[path = "common/identity.rs"]
mod identity_builder;

fn identity(id: &str, host: &str, install: &str) -> Identity {
    Identity {
        hostname: host.to_string(),
        project_dir: "/Users/ana/bot".into(),
        pid: 4000 + id.len() as u32,
        instance: format!("{host}-run1"),
        install_id: format!("{install}-install"),
        version: "0.1.0".into(),
        ..identity_builder::identity_of(id)
    }
}

/// The device being replayed: a MacBook Pro.
fn observer() -> Identity {
    identity("mbp:/Users/ana/bot", "mbp", "mbp")
}

/// A peer device whose record the scenario writes.
struct Peer {
    record: DeviceRecord,
    /// How far the peer's wall clock is ahead of the observer's.
    skew_ms: i64,
}

impl Peer {
    fn new(id: &str, host: &str) -> Peer {
        Peer {
            record: DeviceRecord::new(&identity(id, host, host)),
            skew_ms: 0,
        }
    }
    fn imac() -> Peer {
        Peer::new("imac:/Users/ana/bot", "imac")
    }
    fn mini() -> Peer {
        Peer::new("mini:/Users/ana/bot", "mini")
    }
    fn id(&self) -> String {
        self.record.device_id.clone()
    }
    fn name(&self) -> String {
        record::file_name(&self.record.device_id)
    }
    fn set(&mut self, status: Status, term: u64) -> &mut Peer {
        self.record.status = status;
        self.record.term = term;
        self
    }
    /// The next write of this record, as its owner would make it at observer time `at_ms`.
    fn write(&mut self, at_ms: u64) -> String {
        self.write_aged(at_ms, 0)
    }
    /// A write made `age_ms` before observer time `at_ms` (found on disk at start-up).
    fn write_aged(&mut self, at_ms: u64, age_ms: i64) -> String {
        self.record.seq += 1;
        let wall = (WALL_START_MS + at_ms) as i64 + self.skew_ms - age_ms;
        self.record.written_at_ms = wall as u64;
        self.record.to_json()
    }
}

struct Scenario {
    name: &'static str,
    header: Header,
    steps: Vec<Step>,
}

impl Scenario {
    fn new(name: &'static str, description: &str, seed: u64, end_ms: u64) -> Scenario {
        Scenario {
            name,
            header: Header {
                description: description.to_string(),
                seed,
                identity: observer(),
                timing: TimingSpec::Default,
                auto: Auto::default(),
                end_ms: Some(end_ms),
            },
            steps: Vec::new(),
        }
    }
    fn event(&mut self, at_ms: u64, event: Event) -> &mut Scenario {
        self.steps.push(Step::Input(Input {
            at: Moment(at_ms),
            wall_ms: WALL_START_MS + at_ms,
            event,
        }));
        self
    }
    fn start(&mut self, at_ms: u64) -> &mut Scenario {
        self.event(at_ms, Event::Start)
    }
    fn changed(&mut self, at_ms: u64, name: &str, state: FileState) -> &mut Scenario {
        let file = FileObservation {
            name: name.to_string(),
            state,
        };
        self.event(at_ms, Event::FileChanged { file })
    }
    /// The peer writes its record and the notification arrives at `at_ms`.
    fn peer_writes(&mut self, at_ms: u64, peer: &mut Peer) -> &mut Scenario {
        let text = peer.write(at_ms);
        self.changed(at_ms, &peer.name(), FileState::Contents { text })
    }
    /// The peer writes its record but no notification arrives.
    fn peer_writes_unnoticed(&mut self, at_ms: u64, peer: &mut Peer) -> &mut Scenario {
        let text = peer.write(at_ms);
        self.folder(at_ms, &peer.name(), FileState::Contents { text })
    }
    fn folder(&mut self, at_ms: u64, name: &str, state: FileState) -> &mut Scenario {
        let file = FileObservation {
            name: name.to_string(),
            state,
        };
        self.steps.push(Step::Folder {
            at: Moment(at_ms),
            file,
        });
        self
    }
    /// The active peer heartbeats every `every_ms` from `from_ms` up to `until_ms`.
    fn heartbeats(&mut self, peer: &mut Peer, from_ms: u64, until_ms: u64, every_ms: u64) {
        let mut at = from_ms;
        while at <= until_ms {
            self.peer_writes(at, peer);
            at += every_ms;
        }
    }
    fn fixture(&self) -> Fixture {
        let mut steps = self.steps.clone();
        steps.sort_by_key(Step::at); // stable: same-moment steps keep their order
        Fixture {
            header: self.header.clone(),
            steps,
        }
    }
}

fn contents(text: &str) -> FileState {
    FileState::Contents { text: text.into() }
}

fn first_device_empty_group() -> Scenario {
    let mut s = Scenario::new(
        "first_device_empty_group",
        "The first device in an empty group: the folder is empty, so after its start-up \
         scan it claims term 1 and becomes active once the settle window (16 s) has passed.",
        1,
        90_000,
    );
    s.start(0);
    s
}

fn join_live_leader() -> Scenario {
    let mut s = Scenario::new(
        "join_live_leader",
        "Joining a group whose leader (imac, term 3) is alive: the newcomer never preempts \
         it, stays standby, and follows the leader's heartbeats.",
        2,
        150_000,
    );
    let mut imac = Peer::imac();
    imac.set(Status::Active, 3);
    let text = imac.write(0);
    s.folder(0, &imac.name(), contents(&text)).start(0);
    s.heartbeats(&mut imac, 21_000, 150_000, 22_000);
    s
}

/// A leader (imac) heartbeats until `crash_ms`, a standby (mini) is around; the observer
/// starts at 0. Peers' clocks are `skew_ms` ahead of the observer's.
fn crash_story(name: &'static str, description: &str, skew_ms: i64) -> Scenario {
    let mut s = Scenario::new(name, description, 3, 200_000);
    let (mut imac, mut mini) = (Peer::imac(), Peer::mini());
    imac.skew_ms = skew_ms;
    mini.skew_ms = skew_ms;
    let mut old = Peer::new("old-air:/Users/ana/bot", "old-air");
    old.skew_ms = skew_ms;
    old.set(Status::Standby, 1);
    // A laptop that left the group five hours ago: presumed dead at once.
    let old_text = old.write_aged(0, 5 * HOUR_MS);
    s.folder(0, &old.name(), contents(&old_text));
    imac.set(Status::Active, 3);
    let text = imac.write(0);
    s.folder(0, &imac.name(), contents(&text));
    mini.set(Status::Standby, 2);
    let text = mini.write(0);
    s.folder(0, &mini.name(), contents(&text)).start(0);
    s.heartbeats(&mut imac, 20_000, 42_000, 22_000);
    s
}

fn leader_crash_failover() -> Scenario {
    crash_story(
        "leader_crash_failover",
        "Leader crash -> failover: imac (active, term 3) heartbeats at 20 s and 42 s, then \
         crashes. Its lease lapses 60 s after the last change the observer saw (102 s); \
         with a live standby (mini) around, the observer waits a random failover jitter, \
         claims term 4, and is active after the settle window.",
        0,
    )
}

fn clock_skew(name: &'static str, sign: i64) -> Scenario {
    crash_story(
        name,
        &format!(
            "Clock skew {}1 h: the same story as leader_crash_failover, but every peer's \
             wall clock is an hour {} the observer's. written_at is only a start-up hint \
             with a 2 h allowance, so every decision is the same (tests/fixtures.rs checks \
             the transcripts are identical but for written_at).",
            if sign > 0 { "+" } else { "-" },
            if sign > 0 { "ahead of" } else { "behind" }
        ),
        sign * HOUR_MS,
    )
}

fn two_contenders_one_term() -> Scenario {
    let mut s = crash_story(
        "two_contenders_one_term",
        "Two contenders on one term: after imac crashes, both the observer (mbp) and mini \
         claim term 4. Ties break on the device id, and \"mini:...\" > \"mbp:...\", so the \
         observer backs off to standby when mini's claim reaches it inside the settle window; \
         mini becomes active.",
        0,
    );
    let mut mini = Peer::mini();
    mini.record.seq = 1;
    mini.set(Status::Contending, 4);
    s.peer_writes(107_000, &mut mini);
    mini.set(Status::Active, 4);
    s.peer_writes(123_000, &mut mini);
    s.heartbeats(&mut mini, 145_000, 200_000, 22_000);
    s
}

/// The observer starts alone and becomes active at 16 s; mini joins as a standby at 30 s
/// and heartbeats as a standby every 5 min.
fn active_with_standby(
    name: &'static str,
    description: &str,
    seed: u64,
    end_ms: u64,
) -> (Scenario, Peer) {
    let mut s = Scenario::new(name, description, seed, end_ms);
    s.start(0);
    let mut mini = Peer::mini();
    mini.set(Status::Standby, 0);
    s.peer_writes(30_000, &mut mini);
    (s, mini)
}

fn higher_claim_while_active() -> Scenario {
    let mut s = Scenario::new(
        "higher_claim_while_active",
        "A higher claim seen while Active: the observer is active (term 1) when a record \
         from mini arrives claiming term 2 (mini had been cut off and did not see us). The \
         observer stops acting and steps down to standby at once; mini goes active.",
        4,
        120_000,
    );
    s.start(0);
    let mut mini = Peer::mini();
    mini.set(Status::Contending, 2);
    s.peer_writes(40_000, &mut mini);
    mini.set(Status::Active, 2);
    s.peer_writes(56_000, &mut mini);
    s.heartbeats(&mut mini, 78_000, 120_000, 22_000);
    s
}

fn handoff_accepted() -> Scenario {
    let (mut s, mut mini) = active_with_standby(
        "handoff_accepted",
        "Handoff accepted: the observer is active (term 1), mini is a standby. At 60 s the \
         user asks (`/activate mini`); the observer stops acting, then publishes a handoff \
         to mini for term 2 (Yielding). Mini claims term 2 at once; when its record arrives \
         the observer becomes a standby.",
        5,
        150_000,
    );
    let target = mini.id();
    s.event(
        60_000,
        Event::ActivateAsked {
            target: "mini".into(),
            ticket: 1,
        },
    );
    mini.set(Status::Active, 2);
    s.peer_writes(64_500, &mut mini);
    s.heartbeats(&mut mini, 86_500, 150_000, 22_000);
    assert!(target.starts_with("mini"));
    s
}

fn handoff_dead_target() -> Scenario {
    let (mut s, _mini) = active_with_standby(
        "handoff_dead_target",
        "Handoff to a dead target: mini looked like a live standby (standbys write only \
         every 5 min) but its Mac is off. The observer hands over at 60 s (term 2), nobody \
         claims, and after the 48 s handoff timeout it claims term 3 and is active again, \
         with a warning.",
        6,
        180_000,
    );
    s.event(
        60_000,
        Event::ActivateAsked {
            target: "2".into(),
            ticket: 7,
        },
    );
    s
}

fn resignation_fast_takeover() -> Scenario {
    let mut s = Scenario::new(
        "resignation_fast_takeover",
        "Clean resignation -> fast takeover: imac (active, term 5) is stopped with SIGTERM \
         at 50 s. It hands over to its best live standby, the observer, by writing a handoff \
         for term 6; the observer takes it at once — one sync delay, not a 60 s lease. imac \
         then writes a final `stopped` record.",
        7,
        120_000,
    );
    let mut imac = Peer::imac();
    imac.set(Status::Active, 5);
    let text = imac.write(0);
    s.folder(0, &imac.name(), contents(&text)).start(0);
    s.heartbeats(&mut imac, 22_000, 44_000, 22_000);
    imac.set(Status::Yielding, 5).record.handoff = Some(Handoff {
        target: observer().device_id,
        term: 6,
    });
    s.peer_writes(52_300, &mut imac);
    imac.set(Status::Stopped, 5).record.handoff = None;
    s.peer_writes(55_100, &mut imac);
    s
}

fn corrupt_then_truncated() -> Scenario {
    let mut s = Scenario::new(
        "corrupt_then_truncated",
        "A corrupt, then an empty, then a truncated leader record mid-sync: each is reported \
         once and ignored (the last good copy is kept); the full record arrives after and \
         the observer never doubts the leader.",
        8,
        120_000,
    );
    let mut imac = Peer::imac();
    imac.set(Status::Active, 2);
    let text = imac.write(0);
    s.folder(0, &imac.name(), contents(&text)).start(0);
    s.peer_writes(21_000, &mut imac);
    let next = imac.write(43_000);
    let name = imac.name();
    s.changed(
        43_000,
        &name,
        contents("{\"schema\":1,\"device_id\":\u{fffd}\u{fffd}garbage"),
    );
    s.changed(43_400, &name, contents(""));
    s.changed(43_700, &name, contents(&next[..next.len() / 2]));
    s.changed(44_200, &name, contents(&next));
    s.heartbeats(&mut imac, 66_000, 120_000, 22_000);
    s
}

fn icloud_duplicate() -> Scenario {
    let mut s = Scenario::new(
        "icloud_duplicate",
        "iCloud `name 2.json` duplicates: after a sync hiccup, iCloud leaves `<ours> 2.json` \
         next to our own record and `<imac's> 2.json` next to a peer's. Readers ignore both; \
         only the owner deletes its own copy, so the observer deletes ours and leaves imac's.",
        9,
        100_000,
    );
    s.start(0);
    let own_stem = record::file_stem(&observer().device_id);
    let mut ghost = Peer::new(&observer().device_id, "mbp");
    ghost.record.instance = "mbp-run1".into();
    ghost.set(Status::Contending, 1);
    let text = ghost.write(0);
    s.changed(30_000, &format!("{own_stem} 2.json"), contents(&text));
    let mut imac = Peer::imac();
    imac.set(Status::Standby, 0);
    s.peer_writes(35_000, &mut imac);
    imac.set(Status::Active, 9);
    let text = imac.write(36_000);
    s.changed(
        36_000,
        &format!("{} 2.json", record::file_stem(&imac.id())),
        contents(&text),
    );
    s
}

fn icloud_stub_then_real() -> Scenario {
    let mut s = Scenario::new(
        "icloud_stub_then_real",
        "An `.icloud` stub, then the real file: at start-up the leader's record is evicted \
         (`.<name>.json.icloud`, pre-Sonoma). The observer asks for a download and, since an \
         unreadable record may be a live leader it cannot see yet, does not claim; the real \
         file arrives 5 s later and the observer stays standby behind imac (term 4).",
        10,
        90_000,
    );
    let mut imac = Peer::imac();
    imac.set(Status::Active, 4);
    let stub = format!(".{}.json.icloud", record::file_stem(&imac.id()));
    s.folder(0, &stub, contents("bplist00\u{fffd}\u{fffd}"))
        .start(0);
    s.changed(5_000, &stub, FileState::Gone);
    s.peer_writes(5_000, &mut imac);
    s.heartbeats(&mut imac, 27_000, 90_000, 22_000);
    s
}

fn lost_notifications_backstop() -> Scenario {
    let (mut s, mut mini) = active_with_standby(
        "lost_notifications_backstop",
        "Lost notifications only the backstop catches: the observer is active; at 60 s mini \
         publishes an activation request for itself, but the change notification is lost. \
         Nothing else would make the observer look, until the jittered backstop rescan \
         (every 120-180 s) reads the folder, finds the request and hands over.",
        11,
        400_000,
    );
    mini.record.activation_request = Some(ActivationRequest {
        target: mini.id(),
        id: "mini-run1-1".into(),
    });
    s.peer_writes_unnoticed(60_000, &mut mini);
    // With seed 11 the backstop rescans at 141.4 s and the observer hands over then;
    // mini's takeover arrives 4 s later and is noticed (the watcher recovered).
    mini.record.activation_request = None;
    mini.set(Status::Active, 2);
    s.peer_writes(145_400, &mut mini);
    s.heartbeats(&mut mini, 167_400, 400_000, 22_000);
    s
}

fn sleep_past_lease() -> Scenario {
    let (mut s, mut mini) = active_with_standby(
        "sleep_past_lease",
        "A laptop that sleeps past its lease while Active: the observer is active (term 1) \
         and its lid closes at 40 s. While it sleeps, mini takes over (term 2). It wakes an \
         hour later: it stops acting before anything else, steps down to standby, and \
         follows mini once the sync catches up.",
        12,
        3_720_000,
    );
    s.event(
        3_640_000,
        Event::Woke {
            slept_ms: 3_600_000,
        },
    );
    mini.set(Status::Active, 2);
    s.peer_writes(3_642_500, &mut mini);
    s.heartbeats(&mut mini, 3_664_500, 3_720_000, 22_000);
    s
}

fn cloned_device_id() -> Scenario {
    let mut s = Scenario::new(
        "cloned_device_id",
        "A cloned device id: this Mac was restored from a backup of another that is still \
         running. A live record with our device id, written by ANOTHER install, is at our \
         file name. The observer watches it while registering, sees it change, refuses to \
         take part, writes nothing, and exits with code 3.",
        13,
        60_000,
    );
    let mut twin = Peer::new(&observer().device_id, "mbp");
    twin.record.install_id = "twin-install".into();
    twin.record.instance = "twin-run7".into();
    twin.set(Status::Standby, 2);
    twin.record.seq = 40;
    let text = twin.write(0);
    s.folder(0, &twin.name(), contents(&text)).start(0);
    s.peer_writes(9_000, &mut twin);
    s
}

fn clone_appears_while_active() -> Scenario {
    let mut s = Scenario::new(
        "clone_appears_while_active",
        "A clone appears later: the observer is active (term 1) when a restored copy of \
         this Mac (another install, same device id) starts and writes our file. The observer \
         refuses to share its identity: it stops acting and exits with code 3.",
        18,
        60_000,
    );
    s.start(0);
    let mut twin = Peer::new(&observer().device_id, "mbp");
    twin.record.install_id = "twin-install".into();
    twin.record.instance = "twin-run1".into();
    twin.set(Status::Standby, 0);
    twin.record.seq = 3;
    s.peer_writes(40_000, &mut twin);
    s
}

fn same_directory_twice() -> Scenario {
    let mut s = Scenario::new(
        "same_directory_twice",
        "The same directory started twice on one host. The process-level refusal is the \
         local lock (the store adapter: a second `baton run` exits naming the running pid); \
         this is the core's backstop for when the lock is bypassed (e.g. two HOMEs): a record \
         at our own file name from OUR install but another instance, not `stopped`. The \
         newcomer watches it while registering; the other process heartbeats, so the \
         newcomer refuses (exit 3) without ever writing over it.",
        14,
        60_000,
    );
    let mut first = Peer::new(&observer().device_id, "mbp");
    first.record.install_id = observer().install_id;
    first.record.instance = "mbp-run0".into();
    first.record.pid = 3999;
    first.set(Status::Active, 2);
    first.record.seq = 77;
    let text = first.write(0);
    s.folder(0, &first.name(), contents(&text)).start(0);
    s.peer_writes(11_000, &mut first);
    s
}

fn restart_after_crash() -> Scenario {
    let mut s = Scenario::new(
        "restart_after_crash",
        "Restart after a crash (the contrast to same_directory_twice): our own install's \
         record from the crashed run says active, term 2, and does not change while the \
         restarted process watches it. After the registration watch it adopts the record \
         (seq and term continue) and, alone in the group, claims term 3.",
        15,
        90_000,
    );
    let mut previous = Peer::new(&observer().device_id, "mbp");
    previous.record.install_id = observer().install_id;
    previous.record.instance = "mbp-run0".into();
    previous.set(Status::Active, 2);
    previous.record.seq = 77;
    let text = previous.write(0);
    s.folder(0, &previous.name(), contents(&text)).start(500);
    s
}

fn same_host_pid_probe() -> Scenario {
    let mut s = Scenario::new(
        "same_host_pid_probe",
        "Same-host leader gone: another project directory on this Mac is active. When its \
         heartbeat is overdue the observer asks whether its pid still runs; it does not, so \
         the observer skips the rest of the 60 s lease and fails over at once.",
        16,
        120_000,
    );
    s.header.identity.boot_id = BOOT.into();
    let mut neighbour = Peer::new("mbp:/Users/ana/other", "mbp");
    neighbour.record.install_id = observer().install_id;
    neighbour.record.boot_id = BOOT.into();
    neighbour.record.pid = 5123;
    neighbour.set(Status::Active, 1);
    let text = neighbour.write(0);
    s.folder(0, &neighbour.name(), contents(&text)).start(0);
    s.peer_writes(20_000, &mut neighbour);
    // The probe fires 20 + 25 + 5 = 50 s in; the runtime answers a few ms later.
    s.event(
        50_010,
        Event::PidProbed {
            stem: record::file_stem(&neighbour.id()),
            pid: 5123,
            alive: false,
        },
    );
    s
}

fn namesake_mac_no_pid_probe() -> Scenario {
    let mut s = Scenario::new(
        "namesake_mac_no_pid_probe",
        "A leader on another Mac with the same hostname (a clone, or two Macs both named \
         mbp): its record carries another boot id, so its pid means nothing here. The \
         observer never probes it and waits for the full lease before failing over.",
        18,
        120_000,
    );
    s.header.identity.boot_id = BOOT.into();
    let mut namesake = Peer::new("mbp:/Users/ana/other", "mbp");
    namesake.record.boot_id = "another-boot-of-another-mac".into();
    namesake.record.pid = 5123;
    namesake.set(Status::Active, 1);
    let text = namesake.write(0);
    s.folder(0, &namesake.name(), contents(&text)).start(0);
    s.peer_writes(20_000, &mut namesake);
    s
}

fn telegram_conflict() -> Scenario {
    let mut s = Scenario::new(
        "telegram_conflict",
        "Outside evidence of a second poller: the observer is active and Telegram answers \
         409 (another getUpdates). With peers fresh, it pauses polling with jitter and \
         rescans instead of stepping down.",
        17,
        60_000,
    );
    s.start(0);
    s.event(
        30_000,
        Event::Conflict {
            description: "Conflict: terminated by other getUpdates request".into(),
        },
    );
    s
}

fn scenarios() -> Vec<Scenario> {
    vec![
        first_device_empty_group(),
        join_live_leader(),
        leader_crash_failover(),
        two_contenders_one_term(),
        higher_claim_while_active(),
        handoff_accepted(),
        handoff_dead_target(),
        resignation_fast_takeover(),
        corrupt_then_truncated(),
        icloud_duplicate(),
        icloud_stub_then_real(),
        lost_notifications_backstop(),
        sleep_past_lease(),
        clock_skew("clock_skew_plus_1h", 1),
        clock_skew("clock_skew_minus_1h", -1),
        cloned_device_id(),
        clone_appears_while_active(),
        same_directory_twice(),
        restart_after_crash(),
        same_host_pid_probe(),
        namesake_mac_no_pid_probe(),
        telegram_conflict(),
    ]
}

fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

#[test]
fn generated_fixtures_are_current() {
    let regenerate = std::env::var("BATON_REGEN_FIXTURES").is_ok_and(|value| value == "1");
    let mut stale = Vec::new();
    for scenario in scenarios() {
        let text = scenario.fixture().to_text();
        // Every generated fixture must parse back to itself.
        assert_eq!(
            Fixture::parse(&text).expect("generated fixture parses"),
            scenario.fixture(),
            "{}",
            scenario.name
        );
        let path = fixtures_dir().join(format!("{}.jsonl", scenario.name));
        if regenerate {
            std::fs::write(&path, &text).expect("write fixture");
            eprintln!("regenerated {}", path.display());
        } else if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            stale.push(scenario.name);
        }
    }
    assert!(
        stale.is_empty(),
        "fixtures differ from their scenarios in tests/replay_generate.rs: {stale:?}. \
         Regenerate with BATON_REGEN_FIXTURES=1 cargo test --test replay_generate, then \
         re-bless with BATON_BLESS=1 cargo test --test fixtures and read the transcripts."
    );
}

#[test]
fn identities_stay_distinct() {
    let ids = [observer().device_id, Peer::imac().id(), Peer::mini().id()];
    assert!(ids[2] > ids[0], "the tie-break story needs mini > mbp");
}
