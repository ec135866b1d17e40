//! A copied state folder refuses the copy, not the original. Copying a running standby's
//! state folder (install id, lock file and all) and starting a second `baton run` for
//! the same directory with it must leave the running, established writer in place: the
//! copy exits 3 (a duplicate device), the original keeps running and keeps its record.

mod common;

use std::path::Path;
use std::time::Duration;

use common::process::{Device, Folder, wait_for};
use mirror_baton::core::Status;

/// Small enough that a standby's heartbeat (390–450 s) comes within ~15 s.
const SCALE: f64 = 0.03;
const PATIENCE: Duration = Duration::from_secs(60);

/// `cp -R` of the regular files and folders (a socket cannot be copied).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir").flatten() {
        let kind = entry.file_type().expect("file type");
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            copy_tree(&entry.path(), &target);
        } else if kind.is_file() {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

#[test]
fn a_clone_of_a_running_standbys_state_folder_is_refused_and_the_original_lives() {
    let folder = Folder::new(SCALE);
    let leader = folder.start("leader", &[]);
    wait_for(PATIENCE, || {
        folder
            .record_of(&leader.device_id)
            .filter(|r| r.status == Status::Active)
    })
    .expect("the leader becomes active");
    let mut original = folder.start("shared", &[]);
    wait_for(PATIENCE, || {
        folder
            .record_of(&original.device_id)
            .filter(|r| r.status == Status::Standby)
    })
    .expect("the original becomes a standby");

    let copied_state = folder.root.path().join("state-copy");
    copy_tree(&folder.state_dir(), &copied_state);
    let project = folder.project("shared");
    let log_path = folder.root.path().join("shared-clone.log");
    let log = std::fs::File::create(&log_path).expect("log");
    let child = folder
        .baton()
        .env("BATON_STATE_DIR", &copied_state)
        .arg("run")
        .arg(&project)
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("the clone starts");
    let mut clone = Device {
        child: Some(child),
        device_id: original.device_id.clone(),
        log_path,
    };

    let code = clone.wait_exit(PATIENCE);
    assert_eq!(
        code,
        Some(3),
        "the copy is refused as a duplicate device:\n{}",
        clone.log()
    );
    assert_eq!(
        original.wait_exit(Duration::from_millis(500)),
        None,
        "the original keeps running:\n{}",
        original.log()
    );
    let record = folder
        .record_of(&original.device_id)
        .expect("the original's record");
    assert_eq!(
        record.pid,
        original.pid(),
        "the record is the original's, not the clone's"
    );
    // The original goes on writing its record (its next heartbeat).
    let seq = record.seq;
    wait_for(PATIENCE, || {
        folder
            .record_of(&original.device_id)
            .filter(|r| r.seq > seq && r.pid == original.pid())
    })
    .unwrap_or_else(|| panic!("the original writes on:\n{}", original.log()));
    assert_eq!(original.wait_exit(Duration::from_millis(100)), None);
}
