//! The life of a `baton run` with a child, as launchd would see it: SIGTERM stops the
//! child, hands the role over and exits 0; a second signal forces exit; a device
//! restarted after a crash rejoins as a standby and does not take the role back.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::process::{Device, Folder, wait_for};
use mirror_baton::core::Status;

const SCALE: f64 = 0.05;

/// A child that writes its pid, notes SIGTERM in a file, and exits on it.
fn child_args(dir: &Path, name: &str) -> Vec<String> {
    let pid_file = dir.join(format!("{name}.child-pid"));
    let term_file = dir.join(format!("{name}.child-term"));
    let script = format!(
        "echo $$ > '{}'; trap 'echo term > \"{}\"; exit 0' TERM; while true; do sleep 0.05; done",
        pid_file.display(),
        term_file.display()
    );
    vec!["--".into(), "sh".into(), "-c".into(), script]
}

fn start(folder: &Folder, name: &str) -> Device {
    let args = child_args(folder.root.path(), name);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    folder.start(name, &args)
}

fn pid_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    unsafe { libc::kill(pid, 0) == 0 }
}

fn status(folder: &Folder, id: &str) -> Option<Status> {
    folder.record_of(id).map(|r| r.status)
}

#[test]
fn sigterm_stops_the_child_hands_over_and_exits_zero() {
    let folder = Folder::new(SCALE);
    let mut active = start(&folder, "one");
    wait_for(Duration::from_secs(20), || {
        (status(&folder, &active.device_id) == Some(Status::Active)).then_some(())
    })
    .expect("first device active");
    let standby = start(&folder, "two");
    wait_for(Duration::from_secs(20), || {
        (status(&folder, &standby.device_id) == Some(Status::Standby)).then_some(())
    })
    .expect("second device standby");
    let child_pid: i32 = wait_for(Duration::from_secs(10), || {
        std::fs::read_to_string(folder.root.path().join("one.child-pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    })
    .expect("the child runs");
    assert!(pid_alive(child_pid));

    let stopped_at = Instant::now();
    active.signal(libc::SIGTERM);
    assert_eq!(
        active.wait_exit(Duration::from_secs(30)),
        Some(0),
        "exits 0:\n{}",
        active.log()
    );
    let exited_after = stopped_at.elapsed();
    assert!(
        folder.root.path().join("one.child-term").exists(),
        "the child got SIGTERM"
    );
    assert!(!pid_alive(child_pid), "the child is gone");
    wait_for(Duration::from_secs(10), || {
        (status(&folder, &standby.device_id) == Some(Status::Active)).then_some(())
    })
    .expect("the standby took over");
    println!(
        "SIGTERM → exit 0 in {exited_after:?} (ExitTimeOut is {:?})",
        mirror_baton::agent::STOP_TIMEOUT
    );
    assert_eq!(status(&folder, &active.device_id), Some(Status::Stopped));
}

#[test]
fn a_second_signal_forces_exit() {
    // Slow enough that the handoff timeout (24 s) cannot be what ends the process.
    let folder = Folder::new(0.5);
    let mut lone = start(&folder, "lone");
    wait_for(Duration::from_secs(20), || {
        (status(&folder, &lone.device_id) == Some(Status::Active)).then_some(())
    })
    .expect("active");
    // A standby that never answers a handoff: a record with a live-looking standby that
    // no process backs, so the resignation waits for the handoff timeout.
    let ghost = folder.start("ghost", &[]);
    wait_for(Duration::from_secs(20), || {
        (status(&folder, &ghost.device_id) == Some(Status::Standby)).then_some(())
    })
    .expect("ghost standby");
    ghost.signal(libc::SIGSTOP);
    lone.signal(libc::SIGTERM);
    // Signals sent while the first is still pending coalesce into one (as the OS and
    // tokio deliver them): send the second once the first was seen, as a person would.
    wait_for(Duration::from_secs(10), || {
        lone.log().contains("stop signal: resigning").then_some(())
    })
    .expect("the first signal starts the resignation");
    lone.signal(libc::SIGTERM);
    let code = lone.wait_exit(Duration::from_secs(10));
    ghost.signal(libc::SIGCONT);
    assert_eq!(
        code,
        Some(130),
        "the second signal forces exit (130):\n{}",
        lone.log()
    );
}

#[test]
fn a_device_restarted_after_a_crash_rejoins_as_standby() {
    let folder = Folder::new(SCALE);
    let mut first = folder.start("first", &[]);
    wait_for(Duration::from_secs(20), || {
        (status(&folder, &first.device_id) == Some(Status::Active)).then_some(())
    })
    .expect("first active");
    let second = folder.start("second", &[]);
    wait_for(Duration::from_secs(20), || {
        (status(&folder, &second.device_id) == Some(Status::Standby)).then_some(())
    })
    .expect("second standby");
    first.signal(libc::SIGKILL);
    first.wait_exit(Duration::from_secs(5));
    wait_for(Duration::from_secs(30), || {
        (status(&folder, &second.device_id) == Some(Status::Active)).then_some(())
    })
    .expect("second takes over");
    let term = folder.record_of(&second.device_id).unwrap().term;
    // launchd restarts the crashed one.
    let restarted = folder.start("first", &[]);
    wait_for(Duration::from_secs(20), || {
        (status(&folder, &restarted.device_id) == Some(Status::Standby)).then_some(())
    })
    .expect("the restarted device registers as standby");
    // Long enough for a restarted device that ignored the live active to take the role
    // back (liveness, failover jitter, settle), proven by the active's heartbeats.
    let timing = mirror_baton::core::Timing::default().scaled(SCALE);
    let takeover = timing.liveness_active + timing.failover_jitter.max() + timing.settle_window;
    let writes = common::process::active_heartbeats_spanning(&timing, takeover);
    common::process::wait_for_writes(&folder, &second.device_id, writes, Duration::from_secs(60))
        .expect("the active keeps writing its heartbeat");
    assert_eq!(
        status(&folder, &restarted.device_id),
        Some(Status::Standby),
        "does not take the role back"
    );
    let still = folder.record_of(&second.device_id).unwrap();
    assert_eq!(
        (still.status, still.term),
        (Status::Active, term),
        "the role stayed put"
    );
}

#[test]
fn sighup_rereads_the_configuration_and_says_when_a_restart_is_needed() {
    let folder = Folder::new(SCALE);
    let device = folder.start("hup", &[]);
    wait_for(Duration::from_secs(20), || {
        (status(&folder, &device.device_id) == Some(Status::Active)).then_some(())
    })
    .expect("active");
    device.signal(libc::SIGHUP);
    wait_for(Duration::from_secs(10), || {
        device
            .log()
            .contains("configuration unchanged")
            .then_some(())
    })
    .expect("an unchanged configuration is said to be unchanged");
    let config_dir = folder.project("hup").join(".opencode");
    std::fs::create_dir_all(&config_dir).unwrap();
    std::fs::write(
        config_dir.join("telegram.json"),
        r#"{"botToken": "123456:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "chatId": -100}"#,
    )
    .unwrap();
    device.signal(libc::SIGHUP);
    wait_for(Duration::from_secs(10), || {
        device.log().contains("configuration changed").then_some(())
    })
    .expect("a changed configuration is noticed");
    assert!(
        !device.log().contains("AAAAAAAAAAAAAAAA"),
        "the token is never logged"
    );
    assert_eq!(
        status(&folder, &device.device_id),
        Some(Status::Active),
        "and nothing else changes"
    );
}

/// A SIGKILLed baton leaves nothing behind: its child-guard sees the lifeline close and
/// stops the whole group, the child and what the child started in the background. (The
/// same code path runs on macOS, which has no parent-death signal.)
#[test]
fn a_crashed_batons_child_and_grandchild_do_not_outlive_it() {
    let folder = Folder::new(SCALE);
    let dir = folder.root.path();
    let child_file = dir.join("orphan.child-pid");
    let grandchild_file = dir.join("orphan.grandchild-pid");
    let script = format!(
        "sleep 1000 & echo $! > '{}'; echo $$ > '{}'; wait",
        grandchild_file.display(),
        child_file.display()
    );
    let mut device = folder.start("orphan", &["--", "sh", "-c", &script]);
    let read_pid = |path: &Path| -> Option<i32> {
        let text = std::fs::read_to_string(path).ok()?;
        text.ends_with('\n').then(|| text.trim().parse().ok())?
    };
    let (child, grandchild) = wait_for(Duration::from_secs(10), || {
        Some((read_pid(&child_file)?, read_pid(&grandchild_file)?))
    })
    .expect("the child and its grandchild run");
    device.signal(libc::SIGKILL);
    device.wait_exit(Duration::from_secs(5));
    let gone = wait_for(Duration::from_secs(10), || {
        [child, grandchild]
            .iter()
            .all(|pid| !pid_alive(*pid) || zombie(*pid))
            .then_some(())
    });
    assert!(
        gone.is_some(),
        "outlived their crashed baton: child {child} alive {}, grandchild {grandchild} alive {}",
        pid_alive(child) && !zombie(child),
        pid_alive(grandchild) && !zombie(grandchild)
    );
}

fn zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

/// A clone refused once is not restarted into a fight: launchd restarts a refused
/// baton every 10 s, and the restart must not take over a quiet twin's record after
/// one settle window. It watches for a standby's heartbeat period, refuses when the
/// twin writes (writing nothing), and takes part again once the twin stopped.
#[test]
fn a_remembered_refusal_survives_a_restart_until_the_twin_stops() {
    use mirror_baton::core::record::{self, DeviceRecord, Identity};
    let folder = Folder::new(SCALE);
    let project = folder.project("twin");
    let device_id = record::device_id(
        None,
        &common::process::hostname(),
        &project.to_string_lossy(),
    );
    let mut twin = DeviceRecord::new(&Identity {
        project_dir: project.to_string_lossy().into_owned(),
        pid: 999_999,
        instance: "twin-run".into(),
        install_id: "0123456789abcdef0123456789abcdef".into(),
        version: "0.1.0".into(),
        ..common::identity::identity_of(&device_id)
    });
    twin.seq = 7;
    twin.status = Status::Standby;
    std::fs::create_dir_all(folder.devices_dir()).unwrap();
    let own_file = folder.devices_dir().join(record::file_name(&device_id));
    std::fs::write(&own_file, twin.to_json()).unwrap();
    let marker = mirror_baton::adapters::local::refusal_file(
        &folder.state_dir(),
        "default",
        &record::file_stem(&device_id),
    );
    mirror_baton::adapters::local::remember_refusal(&marker, Some(&twin.install_id));

    // A witness in a folder of its own: its heartbeats measure the protocol's (scaled)
    // time, however slow the machine, without touching the twin's folder.
    let witness_folder = Folder::new(SCALE);
    let witness = witness_folder.start("witness", &[]);
    wait_for(Duration::from_secs(20), || {
        (status(&witness_folder, &witness.device_id) == Some(Status::Active)).then_some(())
    })
    .expect("the witness is active");

    let mut refused = folder.start("twin", &[]);
    wait_for(Duration::from_secs(20), || {
        refused
            .log()
            .contains("the install this device refused for last time")
            .then_some(())
    })
    .expect("it recalls the refusal and watches the twin's record");
    // It watches far longer than one settle window (0.8 s here) for the quiet twin to
    // write: the twin writes only after two settle windows have passed.
    let timing = mirror_baton::core::Timing::default().scaled(SCALE);
    let writes = common::process::active_heartbeats_spanning(&timing, timing.settle_window * 2);
    common::process::wait_for_writes(
        &witness_folder,
        &witness.device_id,
        writes,
        Duration::from_secs(60),
    )
    .expect("the witness keeps writing its heartbeat");
    assert_eq!(
        refused.wait_exit(Duration::from_millis(100)),
        None,
        "still watching: {}",
        refused.log()
    );
    twin.seq += 1;
    std::fs::write(&own_file, twin.to_json()).unwrap();
    assert_eq!(
        refused.wait_exit(Duration::from_secs(20)),
        Some(3),
        "{}",
        refused.log()
    );
    assert_eq!(
        std::fs::read_to_string(&own_file).unwrap(),
        twin.to_json(),
        "nothing written into the twin's record"
    );

    // The twin stops cleanly: the next start takes part and forgets the refusal.
    twin.seq += 1;
    twin.status = Status::Stopped;
    std::fs::write(&own_file, twin.to_json()).unwrap();
    let mut back = folder.start("twin", &[]);
    wait_for(Duration::from_secs(20), || {
        folder
            .record_of(&device_id)
            .filter(|r| r.instance != "twin-run")
            .map(|_| ())
    })
    .expect("takes part again");
    assert!(!marker.exists(), "the refusal is forgotten: {}", back.log());
    back.signal(libc::SIGTERM);
    assert_eq!(back.wait_exit(Duration::from_secs(20)), Some(0));
}
