//! The record's temp file is named so that no sync tool syncs it (iCloud Drive,
//! Syncthing, Dropbox), and writing leaves nothing but the record in the folder.
//!
//! The end-to-end proof on a real sync tool is `tests/e2e_syncthing.rs`, which lists
//! every replica after three devices wrote hundreds of records through Syncthing.

use mirror_baton::adapters::store::{self, Store};
use mirror_baton::core::record::{self, DeviceRecord, Identity, NameKind};

/// iCloud Drive does not sync names ending in `.tmp` or `.nosync` (FACTS.md).
fn icloud_skips(name: &str) -> bool {
    name.ends_with(".tmp") || name.ends_with(".nosync")
}

/// Syncthing's `fs.IsTemporary`: either of its two temp prefixes, on every platform
/// (lib/fs/tempname.go). Nothing else is skipped without a user's `.stignore`.
fn syncthing_skips(name: &str) -> bool {
    name.starts_with(".syncthing.") || name.starts_with("~syncthing~")
}

/// Dropbox's ignored temporary files: `~$…`, `.~…`, and `~….tmp`.
fn dropbox_skips(name: &str) -> bool {
    name.starts_with("~$")
        || name.starts_with(".~")
        || (name.starts_with('~') && name.ends_with(".tmp"))
}

#[path = "common/identity.rs"]
mod identity_builder;

fn identity(device_id: &str) -> Identity {
    Identity {
        device_id: device_id.to_string(),
        project_dir: "/p".into(),
        pid: std::process::id(),
        instance: "0123456789abcdef".into(),
        install_id: "install".into(),
        ..identity_builder::identity("p")
    }
}

#[test]
fn the_temp_name_is_one_icloud_syncthing_and_dropbox_all_skip() {
    let dir = tempfile::tempdir().unwrap();
    for device_id in [
        "mbp:/Users/ana/bot",
        "work@mini:/Users/ana/a very long project name/with/many/parts/to/reach/the/limit/of/a/slug",
    ] {
        let store = Store::new(dir.path(), "g", device_id);
        let temp = store.temp_name();
        assert!(icloud_skips(&temp), "iCloud would sync {temp}");
        assert!(syncthing_skips(&temp), "Syncthing would sync {temp}");
        assert!(dropbox_skips(&temp), "Dropbox would sync {temp}");
        assert_eq!(record::classify_name(&temp), NameKind::Temp, "{temp}");
        assert!(
            temp.len() <= 143,
            "{temp} is too long for encrypted file systems"
        );
        assert_eq!(temp, store::temp_name(store.own_name()));
    }
}

#[test]
fn writing_many_times_leaves_only_the_record_and_a_leftover_temp_is_no_junk() {
    let dir = tempfile::tempdir().unwrap();
    let device_id = "mbp:/Users/ana/bot";
    let store = Store::new(dir.path(), "g", device_id);
    store.ensure_dir().unwrap();
    let mut own = DeviceRecord::new(&identity(device_id));
    for seq in 1..=50 {
        own.seq = seq;
        store.write_record(&own).unwrap();
    }
    let names: Vec<String> = std::fs::read_dir(store.devices_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec![store.own_name().to_string()]);

    // A crash between the write and the rename leaves the temp file: it is neither a
    // record nor junk, and the next write replaces it.
    std::fs::write(store.devices_dir().join(store.temp_name()), b"{half").unwrap();
    let listing = store.list().unwrap();
    assert_eq!(listing.junk, 0);
    assert_eq!(listing.files.len(), 1);
    store.write_record(&own).unwrap();
    assert!(!store.devices_dir().join(store.temp_name()).exists());
}
