//! Three real `baton run` processes on one local folder: SIGKILL the active one and see
//! exactly one other take over; SIGTERM that one and see the role handed over (not timed
//! out). Meanwhile every version of every record is checked to come from its owner.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::process::{Folder, wait_for};
use mirror_baton::core::Status;
use mirror_baton::core::record::{self, NameKind};
use notify::Watcher;

const SCALE: f64 = 0.05;

/// Watches the devices folder and checks that each record file only ever holds its
/// owner's record (the writer's pid and device id are inside every version).
struct WriteAudit {
    _watcher: notify::RecommendedWatcher,
    violations: Arc<Mutex<Vec<String>>>,
    versions_seen: Arc<Mutex<usize>>,
}

fn audit(folder: &Folder, owners: BTreeMap<String, (String, u32)>) -> WriteAudit {
    let violations = Arc::new(Mutex::new(Vec::new()));
    let versions_seen = Arc::new(Mutex::new(0));
    let (v, n) = (violations.clone(), versions_seen.clone());
    let dir = folder.devices_dir();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        for path in event
            .paths
            .into_iter()
            .filter(|p| p.parent() == Some(dir.as_path()))
        {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            match record::classify_name(&name) {
                NameKind::Record { .. } => {
                    let Ok(bytes) = std::fs::read(&path) else {
                        continue;
                    };
                    let Ok(found) = record::parse_record(&bytes) else {
                        v.lock()
                            .unwrap()
                            .push(format!("{name}: unparseable version (a torn write?)"));
                        continue;
                    };
                    *n.lock().unwrap() += 1;
                    match owners.get(&name) {
                        Some((device_id, pid))
                            if *device_id == found.device_id && *pid == found.pid => {}
                        Some((device_id, pid)) => v.lock().unwrap().push(format!(
                            "{name} held {} pid {} but belongs to {device_id} pid {pid}",
                            found.device_id, found.pid
                        )),
                        None => v
                            .lock()
                            .unwrap()
                            .push(format!("unexpected record file {name}")),
                    }
                }
                NameKind::Temp => {}
                _ => v.lock().unwrap().push(format!("unexpected file {name}")),
            }
        }
    })
    .expect("watcher");
    watcher
        .watch(&folder.devices_dir(), notify::RecursiveMode::NonRecursive)
        .expect("watch devices folder");
    WriteAudit {
        _watcher: watcher,
        violations,
        versions_seen,
    }
}

fn active_among(folder: &Folder, candidates: &[&str]) -> Vec<String> {
    folder
        .records()
        .into_iter()
        .filter(|r| r.status == Status::Active && candidates.contains(&r.device_id.as_str()))
        .map(|r| r.device_id)
        .collect()
}

#[test]
fn sigkill_fails_over_to_one_and_sigterm_hands_over() {
    let folder = Folder::new(SCALE);
    let mut devices = vec![folder.start("alpha", &[])];
    let first = devices[0].device_id.clone();
    wait_for(Duration::from_secs(20), || {
        (active_among(&folder, &[&first]).len() == 1).then_some(())
    })
    .expect("the first device becomes active on its own");
    devices.push(folder.start("bravo", &[]));
    devices.push(folder.start("charlie", &[]));
    let ids: Vec<String> = devices.iter().map(|d| d.device_id.clone()).collect();
    let owners = devices
        .iter()
        .map(|d| {
            (
                record::file_name(&d.device_id),
                (d.device_id.clone(), d.pid()),
            )
        })
        .collect();
    let audit = audit(&folder, owners);
    wait_for(Duration::from_secs(20), || {
        let records = folder.records();
        (records.len() == 3 && records.iter().all(|r| r.status != Status::Registering))
            .then_some(())
    })
    .expect("all three registered");
    assert_eq!(
        active_among(&folder, &[&ids[0], &ids[1], &ids[2]]),
        vec![first.clone()]
    );

    // Crash the active device.
    let killed_at = Instant::now();
    devices[0].signal(libc::SIGKILL);
    devices[0].wait_exit(Duration::from_secs(5));
    let survivors = [ids[1].as_str(), ids[2].as_str()];
    let successor = wait_for(Duration::from_secs(30), || {
        let active = active_among(&folder, &survivors);
        (active.len() == 1).then(|| active[0].clone())
    })
    .expect("one survivor takes over after the crash");
    println!(
        "crash failover took {:?} at time scale {SCALE}",
        killed_at.elapsed()
    );
    // Exactly one, and it stays that way for a while.
    for _ in 0..25 {
        assert_eq!(active_among(&folder, &survivors), vec![successor.clone()]);
        std::thread::sleep(Duration::from_millis(20));
    }

    // Stop the new active cleanly: it must hand over, not leave the others to time out.
    let index = ids.iter().position(|id| *id == successor).unwrap();
    let other = if index == 1 {
        ids[2].clone()
    } else {
        ids[1].clone()
    };
    let term_before = folder.record_of(&successor).unwrap().term;
    let stopped_at = Instant::now();
    devices[index].signal(libc::SIGTERM);
    let taken = wait_for(Duration::from_secs(30), || {
        folder
            .record_of(&other)
            .filter(|r| r.status == Status::Active)
            .map(|r| r.term)
    })
    .expect("the remaining device takes over");
    let takeover = stopped_at.elapsed();
    assert_eq!(
        taken,
        term_before + 1,
        "takeover by handoff claims exactly the next term"
    );
    assert_eq!(
        devices[index].wait_exit(Duration::from_secs(20)),
        Some(0),
        "clean stop exits 0"
    );
    let final_record = folder.record_of(&successor).unwrap();
    assert_eq!(final_record.status, Status::Stopped);
    let liveness = mirror_baton::core::Timing::default()
        .scaled(SCALE)
        .liveness_active;
    println!(
        "resignation takeover took {takeover:?} (liveness timeout at this scale: {liveness:?})"
    );
    let log = devices[index].log();
    assert!(
        log.contains(&format!("handing over to {other}")),
        "resignation went through a handoff:\n{log}"
    );

    std::thread::sleep(Duration::from_millis(300));
    let violations = audit.violations.lock().unwrap().clone();
    assert!(
        violations.is_empty(),
        "writes outside the owner's file: {violations:#?}"
    );
    assert!(
        *audit.versions_seen.lock().unwrap() > 3,
        "the audit saw the records change"
    );
    for device in &devices {
        for line in device
            .log()
            .lines()
            .filter(|l| l.contains("wrote own record"))
        {
            assert!(
                line.contains(&record::file_name(&device.device_id)),
                "{line}"
            );
        }
    }
}

#[test]
fn the_same_directory_started_twice_is_refused_with_the_running_pid() {
    let folder = Folder::new(SCALE);
    let first = folder.start("same", &[]);
    wait_for(Duration::from_secs(20), || {
        folder.record_of(&first.device_id)
    })
    .expect("first instance registers");
    let project = folder.project("same");
    let output = folder
        .baton()
        .arg("run")
        .arg(&project)
        .output()
        .expect("second run");
    assert_eq!(
        output.status.code(),
        Some(4),
        "documented exit code for 'already running'"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&first.pid().to_string()),
        "names the running pid: {stderr}"
    );
}

#[test]
fn status_prints_the_table_and_activate_2_moves_the_role() {
    let folder = Folder::new(SCALE);
    let a = folder.start("one", &[]);
    wait_for(Duration::from_secs(20), || {
        folder
            .record_of(&a.device_id)
            .filter(|r| r.status == Status::Active)
    })
    .expect("first device active");
    let b = folder.start("two", &[]);
    wait_for(Duration::from_secs(20), || {
        folder
            .record_of(&b.device_id)
            .filter(|r| r.status == Status::Standby)
    })
    .expect("second device standby");

    let status = folder.baton().arg("status").output().expect("status");
    let table = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{table}");
    let first_row = table.lines().nth(1).unwrap_or_default();
    assert!(
        first_row.contains(&a.device_id) && first_row.contains("active"),
        "active first:\n{table}"
    );
    assert!(
        table
            .lines()
            .nth(2)
            .unwrap_or_default()
            .contains(&b.device_id),
        "{table}"
    );

    let json = folder
        .baton()
        .args(["status", "--json"])
        .output()
        .expect("status --json");
    let value: serde_json::Value =
        serde_json::from_slice(&json.stdout).expect("status --json is JSON");
    assert_eq!(value["devices"][0]["device_id"], a.device_id.as_str());
    assert_eq!(value["devices"][0]["role"], "active");
    assert_eq!(value["devices"][1]["number"], 2);

    let activate = folder
        .baton()
        .args(["activate", "2"])
        .output()
        .expect("activate");
    let said = String::from_utf8_lossy(&activate.stdout);
    assert_eq!(
        activate.status.code(),
        Some(0),
        "{said}\n{}",
        String::from_utf8_lossy(&activate.stderr)
    );
    assert!(
        said.contains(&format!("✅ {} is now ACTIVE", b.device_id)),
        "{said}"
    );
    let records = (
        folder.record_of(&a.device_id).unwrap(),
        folder.record_of(&b.device_id).unwrap(),
    );
    assert_eq!(records.1.status, Status::Active);
    wait_for(Duration::from_secs(10), || {
        folder
            .record_of(&a.device_id)
            .filter(|r| r.status == Status::Standby)
    })
    .expect("the old active steps back to standby");

    let unknown = folder
        .baton()
        .args(["activate", "nosuchdevice"])
        .output()
        .expect("activate unknown");
    assert_eq!(unknown.status.code(), Some(6));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no device matches"));
}
