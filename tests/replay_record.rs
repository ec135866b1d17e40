//! `baton record` on a real folder: files written into a watched devices folder come
//! out as a fixture that parses and replays, contents included, symlinks not followed.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use mirror_baton::core::record::{self, DeviceRecord, Identity, Status};
use mirror_baton::core::{Event, FileState, Role};
use mirror_baton::replay::{Fixture, RecordArgs, Step, render_text, replay};

#[path = "common/identity.rs"]
mod identity_builder;

fn peer_record(seq: u64) -> DeviceRecord {
    let identity = Identity {
        pid: 7,
        instance: "imac-run1".into(),
        install_id: "imac-install".into(),
        version: "0.1.0".into(),
        ..identity_builder::identity_of("imac:/Users/ana/bot")
    };
    let mut record = DeviceRecord::new(&identity);
    record.status = Status::Active;
    record.term = 2;
    record.seq = seq;
    record
}

/// Waits (bounded) until this process watches `dir`: an inotify watch on its inode
/// shows in `/proc/self/fdinfo` once the recorder's watcher is in place.
#[cfg(target_os = "linux")]
fn wait_until_watched(dir: &Path) {
    use std::os::unix::fs::MetadataExt;
    let inode = format!("ino:{:x} ", std::fs::metadata(dir).unwrap().ino());
    let watched = || {
        std::fs::read_dir("/proc/self/fdinfo")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| std::fs::read_to_string(entry.path()).ok())
            .any(|info| {
                info.lines()
                    .any(|l| l.starts_with("inotify") && l.contains(&inode))
            })
    };
    use std::time::Instant;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !watched() {
        assert!(
            Instant::now() < deadline,
            "the recorder never watched {dir:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Elsewhere the watch cannot be seen from outside: a pause it is, then.
#[cfg(not(target_os = "linux"))]
fn wait_until_watched(_dir: &Path) {
    std::thread::sleep(Duration::from_millis(400));
}

#[test]
fn records_a_live_folder_and_replays_it() {
    let sync_dir = tempfile::tempdir().unwrap();
    let devices = sync_dir.path().join("team").join("devices");
    std::fs::create_dir_all(&devices).unwrap();
    let name = record::file_name("imac:/Users/ana/bot");
    // Present before the recording starts: becomes a `folder` line.
    std::fs::write(devices.join(&name), peer_record(1).to_json()).unwrap();
    let out = sync_dir.path().join("recorded.jsonl");
    let args = RecordArgs {
        out: out.clone(),
        duration: Some(2.0),
        observer: "newcomer".into(),
        seed: 5,
    };
    let plan = args.plan(sync_dir.path(), "team").unwrap();
    let writer_dir = devices.clone();
    let writer_name = name.clone();
    let writer = std::thread::spawn(move || {
        // Written once the recorder watches the folder, well inside its 2 s.
        wait_until_watched(&writer_dir);
        std::fs::write(writer_dir.join(&writer_name), peer_record(2).to_json()).unwrap();
        std::fs::write(writer_dir.join("notes.json"), "{\"schema\":1,\"dev").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", writer_dir.join("link.json")).unwrap();
    });
    let stop = AtomicBool::new(false);
    let summary = mirror_baton::replay::record(&plan, &stop).unwrap();
    writer.join().unwrap();
    assert!(summary.duration_ms >= 2000);

    let fixture = Fixture::load(&out).unwrap();
    assert_eq!(
        fixture.header.identity.device_id,
        "newcomer@recorder:/replay"
    );
    assert!(matches!(&fixture.steps[0], Step::Folder { file, .. } if file.name == name));
    let changed_contents: Vec<&str> = fixture
        .steps
        .iter()
        .filter_map(|step| match step {
            Step::Input(input) => match &input.event {
                Event::FileChanged { file } if file.name == name => match &file.state {
                    FileState::Contents { text } => Some(text.as_str()),
                    _ => None,
                },
                _ => None,
            },
            _ => None,
        })
        .collect();
    assert!(
        changed_contents
            .iter()
            .any(|text| text.contains("\"seq\": 2")),
        "the rewrite was captured with its contents: {changed_contents:?}"
    );
    let symlink_seen = fixture.steps.iter().any(|step| {
        matches!(step, Step::Input(input) if matches!(&input.event,
            Event::FileChanged { file } if file.name == "link.json" && file.state == FileState::Symlink))
    });
    assert!(
        symlink_seen,
        "the symlink is recorded as a symlink, never followed"
    );
    let mut last = 0;
    for step in &fixture.steps {
        assert!(step.at().0 >= last, "time never runs backwards");
        last = step.at().0;
    }

    let result = replay(&fixture);
    let transcript = render_text(&fixture.header, &result);
    assert!(
        transcript.contains("imac:/Users/ana/bot seq=2 status=active term=2"),
        "{transcript}"
    );
    assert_eq!(
        result.final_role,
        Role::Standby,
        "a newcomer follows the live leader"
    );
}

#[test]
fn a_missing_folder_is_a_clear_error() {
    let sync_dir = tempfile::tempdir().unwrap();
    let args = RecordArgs {
        out: sync_dir.path().join("x.jsonl"),
        duration: Some(0.1),
        observer: "o".into(),
        seed: 1,
    };
    let error = mirror_baton::replay::record(
        &args.plan(sync_dir.path(), "nope").unwrap(),
        &AtomicBool::new(false),
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("nope/devices") && error.contains("not a folder"),
        "{error}"
    );
    let bad = RecordArgs {
        duration: Some(-1.0),
        ..args
    };
    let error = bad.plan(sync_dir.path(), "nope").unwrap_err().to_string();
    assert!(error.contains("positive"));
}

#[test]
fn replay_cli_entry_prints_text_and_json() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/first_device_empty_group.jsonl"
    );
    let mut text = Vec::new();
    let args = mirror_baton::replay::ReplayArgs {
        fixture: path.into(),
        json: false,
    };
    assert_eq!(
        mirror_baton::replay::run_replay(&args, &mut text).unwrap(),
        0
    );
    assert!(
        String::from_utf8(text)
            .unwrap()
            .contains("Contending -> Active (settle_timer)")
    );
    let mut json = Vec::new();
    let args = mirror_baton::replay::ReplayArgs {
        fixture: path.into(),
        json: true,
    };
    mirror_baton::replay::run_replay(&args, &mut json).unwrap();
    let json = String::from_utf8(json).unwrap();
    assert!(
        json.lines()
            .all(|line| serde_json::from_str::<serde_json::Value>(line).is_ok())
    );
    let missing = mirror_baton::replay::ReplayArgs {
        fixture: "/nonexistent.jsonl".into(),
        json: false,
    };
    let error = mirror_baton::replay::run_replay(&missing, &mut Vec::new()).unwrap_err();
    assert!(error.to_string().contains("/nonexistent.jsonl"));
}
