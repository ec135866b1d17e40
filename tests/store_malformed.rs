//! Bad input in the devices folder, on a real disk: corrupt, truncated, empty, huge,
//! symlinked, non-UTF-8 names, conflict copies of every sync tool, `.icloud` stubs,
//! foreign and newer-schema records, and the folder vanishing. None crashes the store or
//! the core, none makes it forget a peer, and each problem is reported once, not once
//! per scan.

use std::fs;
use std::path::Path;

use mirror_baton::adapters::store::Store;
use mirror_baton::core::record::{self, DeviceRecord, Identity};
use mirror_baton::core::{
    Core, CoreConfig, Effect, Event, FileState, Input, Level, Moment, Status, Timing,
};

#[path = "common/identity.rs"]
mod identity_builder;

fn identity(name: &str) -> Identity {
    Identity {
        pid: 7,
        instance: format!("{name}-1"),
        install_id: format!("{name}-install"),
        ..identity_builder::identity(name)
    }
}

fn peer_record(seq: u64) -> DeviceRecord {
    let mut record = DeviceRecord::new(&identity("peer"));
    record.status = Status::Active;
    record.term = 3;
    record.seq = seq;
    record
}

struct Rig {
    dir: tempfile::TempDir,
    store: Store,
    core: Core,
    now: u64,
    effects: Vec<Effect>,
}

impl Rig {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let me = identity("me");
        let store = Store::new(dir.path(), "g", &me.device_id);
        store.ensure_dir().unwrap();
        let core = Core::new(CoreConfig {
            identity: me,
            timing: Timing::default(),
            seed: 1,
        });
        let mut rig = Rig {
            dir,
            store,
            core,
            now: 1_000_000,
            effects: Vec::new(),
        };
        rig.input(Event::Start);
        rig
    }
    fn devices(&self) -> &Path {
        self.store.devices_dir()
    }
    fn input(&mut self, event: Event) {
        self.now += 1000;
        self.core.handle(Input {
            at: Moment(self.now),
            wall_ms: 1_750_000_000_000 + self.now,
            event,
        });
        self.effects.extend(self.core.drain_effects());
    }
    fn scan(&mut self) {
        match self.store.scan() {
            Ok(files) => self.input(Event::Scanned { files }),
            Err(error) => self.input(Event::ScanFailed {
                reason: error.to_string(),
            }),
        }
    }
    fn warnings_about(&self, needle: &str) -> usize {
        self.effects
            .iter()
            .filter(|e| matches!(e, Effect::Notify { level: Level::Warn, message } if message.contains(needle)))
            .count()
    }
    fn peer_seq(&self) -> Option<u64> {
        self.core
            .peers()
            .values()
            .find(|p| p.record.device_id == "host:/peer")
            .map(|p| p.record.seq)
    }
    fn write_peer(&self, text: &[u8]) {
        fs::write(self.devices().join(record::file_name("host:/peer")), text).unwrap();
    }
}

/// Writes a good record, scans, then replaces it with `bad` and scans twice.
fn peer_survives(bad: &[u8], complaint: &str) {
    let mut rig = Rig::new();
    rig.write_peer(peer_record(5).to_json().as_bytes());
    rig.scan();
    assert_eq!(rig.peer_seq(), Some(5));
    rig.write_peer(bad);
    rig.scan();
    rig.scan();
    assert_eq!(rig.peer_seq(), Some(5), "the last good copy is kept");
    let name = record::file_name("host:/peer");
    assert_eq!(
        rig.warnings_about(&name),
        1,
        "reported once, not once per scan: {:#?}",
        rig.effects
    );
    assert_eq!(
        rig.warnings_about(complaint),
        1,
        "says what was wrong ({complaint}): {:#?}",
        rig.effects
    );
    // A good version again is read as usual.
    rig.write_peer(peer_record(6).to_json().as_bytes());
    rig.scan();
    assert_eq!(rig.peer_seq(), Some(6));
}

#[test]
fn truncated_record() {
    let good = peer_record(9).to_json();
    peer_survives(&good.as_bytes()[..good.len() / 2], "truncated");
}

#[test]
fn corrupt_record() {
    peer_survives(&[0xff, 0x00, 0x13, 0x37, b'{'], "not valid JSON");
}

#[test]
fn empty_record() {
    peer_survives(b"", "empty");
}

#[test]
fn record_of_the_wrong_device() {
    let mut foreign = peer_record(1);
    foreign.device_id = "host:/someone-else".into();
    peer_survives(foreign.to_json().as_bytes(), "belongs to another device");
}

#[test]
fn huge_record() {
    let mut huge = peer_record(9).to_json().into_bytes();
    huge.extend(std::iter::repeat_n(b' ', 70 * 1024));
    peer_survives(&huge, "over the 65536-byte limit");
}

#[test]
fn symlinked_record_is_never_followed() {
    let mut rig = Rig::new();
    let outside = rig.dir.path().join("outside.json");
    fs::write(&outside, peer_record(5).to_json()).unwrap();
    let name = record::file_name("host:/peer");
    std::os::unix::fs::symlink(&outside, rig.devices().join(&name)).unwrap();
    let observed = rig.store.observe(&name);
    assert_eq!(observed.state, FileState::Symlink);
    rig.scan();
    rig.scan();
    assert_eq!(rig.peer_seq(), None, "a symlink's target is never read");
    assert_eq!(rig.warnings_about("symlink"), 1);
}

#[test]
fn non_utf8_names_and_foreign_files_are_skipped() {
    use std::os::unix::ffi::OsStrExt;
    let mut rig = Rig::new();
    let odd = std::ffi::OsStr::from_bytes(b"caf\xe9-\xff.json");
    fs::write(rig.devices().join(odd), b"{}").unwrap();
    fs::write(rig.devices().join(".DS_Store"), b"\x00\x01").unwrap();
    fs::write(rig.devices().join("notes.txt"), b"hello").unwrap();
    rig.write_peer(peer_record(5).to_json().as_bytes());
    rig.scan();
    assert_eq!(rig.peer_seq(), Some(5));
    assert_eq!(rig.core.peers().len(), 1, "only real records become peers");
}

#[test]
fn conflict_copies_of_every_sync_tool() {
    let mut rig = Rig::new();
    rig.scan();
    let own_stem = record::file_stem("host:/me");
    let peer_stem = record::file_stem("host:/peer");
    let copies = [
        format!("{own_stem} 2.json"),
        format!("{own_stem}.sync-conflict-20260101-101010-ABCDEFG.json"),
        format!("{own_stem} (Ana's conflicted copy 2026-01-01).json"),
        format!("{peer_stem} 2.json"),
    ];
    for copy in &copies {
        fs::write(rig.devices().join(copy), peer_record(99).to_json()).unwrap();
    }
    rig.write_peer(peer_record(5).to_json().as_bytes());
    rig.scan();
    assert_eq!(
        rig.peer_seq(),
        Some(5),
        "a copy never overrides the real record"
    );
    let deletions: Vec<String> = rig
        .effects
        .iter()
        .filter_map(|e| match e {
            Effect::DeleteFile { name, .. } => Some(name.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        deletions.len(),
        3,
        "only our own copies are deleted: {deletions:?}"
    );
    for name in &deletions {
        rig.store.delete(name).unwrap();
    }
    assert!(
        rig.devices().join(&copies[3]).exists(),
        "a peer's copy is its owner's to delete"
    );
    assert!(
        rig.store.delete(&copies[3]).is_err(),
        "the store refuses to delete a peer's copy"
    );
}

#[test]
fn icloud_stub_asks_for_a_download_once_and_blocks_no_one() {
    let mut rig = Rig::new();
    let stub = format!(".{}.json.icloud", record::file_stem("host:/peer"));
    fs::write(rig.devices().join(&stub), b"bplist00").unwrap();
    rig.scan();
    rig.scan();
    let downloads = rig
        .effects
        .iter()
        .filter(|e| matches!(e, Effect::RequestDownload { .. }))
        .count();
    assert!(downloads >= 1);
    assert_eq!(rig.warnings_about("evicted"), 1, "said once");
    fs::remove_file(rig.devices().join(&stub)).unwrap();
    rig.write_peer(peer_record(5).to_json().as_bytes());
    rig.scan();
    assert_eq!(
        rig.peer_seq(),
        Some(5),
        "the real file is read once it arrives"
    );
}

#[test]
fn newer_schema_is_a_peer_never_deleted() {
    let mut rig = Rig::new();
    let text =
        r#"{"schema":9,"device_id":"host:/peer","seq":4,"status":"hovering","term":2,"x":{}}"#;
    rig.write_peer(text.as_bytes());
    rig.scan();
    rig.scan();
    assert_eq!(rig.peer_seq(), Some(4));
    assert_eq!(rig.warnings_about("newer baton"), 1);
    assert!(
        !rig.effects
            .iter()
            .any(|e| matches!(e, Effect::DeleteFile { .. }))
    );
}

#[test]
fn a_vanished_folder_forgets_no_peer() {
    let mut rig = Rig::new();
    rig.write_peer(peer_record(5).to_json().as_bytes());
    rig.scan();
    fs::remove_dir_all(rig.dir.path().join("g")).unwrap();
    rig.scan();
    rig.scan();
    assert_eq!(rig.peer_seq(), Some(5), "still known");
    assert_eq!(
        rig.warnings_about("cannot list the devices folder"),
        1,
        "said once"
    );
    rig.store.ensure_dir().unwrap();
    rig.write_peer(peer_record(6).to_json().as_bytes());
    rig.scan();
    assert_eq!(
        rig.peer_seq(),
        Some(6),
        "back to normal when the folder returns"
    );
}

#[test]
fn own_writes_are_atomic_private_and_only_ours() {
    let rig = Rig::new();
    let mine = DeviceRecord::new(&identity("me"));
    rig.store.write_record(&mine).unwrap();
    let path = rig.devices().join(record::file_name("host:/me"));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let leftovers: Vec<_> = fs::read_dir(rig.devices())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(
        leftovers.len(),
        1,
        "no temp file left behind: {leftovers:?}"
    );
    assert!(
        rig.store.write_record(&peer_record(1)).is_err(),
        "refuses to write another device's record"
    );
}
