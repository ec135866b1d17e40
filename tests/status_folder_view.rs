//! `baton status` read from the folder (no baton running on this machine) never shows
//! two devices active and healthy at once: it trusts the highest claim, as every device
//! does, and says so. Before, it aged each record by its writer's wall clock alone, so
//! after a failover the dead leader's fresh-looking record showed as a second active.

mod common;

use common::process::Folder;
use mirror_baton::adapters::store::Store;
use mirror_baton::core::Status;
use mirror_baton::core::record::{DeviceRecord, Identity};

fn write(folder: &Folder, device_id: &str, status: Status, term: u64) {
    let identity = Identity {
        project_dir: "/p".into(),
        pid: 4242,
        instance: "0123456789abcdef".into(),
        install_id: "install".into(),
        ..common::identity::identity_of(device_id)
    };
    let mut record = DeviceRecord::new(&identity);
    record.status = status;
    record.term = term;
    record.seq = 7;
    record.written_at_ms = mirror_baton::adapters::clock::wall_ms();
    let store = Store::new(&folder.sync_dir(), "default", device_id);
    store.ensure_dir().unwrap();
    store.write_record(&record).unwrap();
}

#[test]
fn two_fresh_active_records_show_one_active_and_healthy_and_say_which_is_trusted() {
    let folder = Folder::new(1.0);
    // The old leader, SIGKILLed a moment ago, and the device that took over at term 4.
    write(&folder, "mac-a:/p", Status::Active, 3);
    write(&folder, "mac-b:/p", Status::Active, 4);
    write(&folder, "mac-c:/p", Status::Standby, 3);

    let output = folder.baton().args(["status", "--json"]).output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let table: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(table["source"], "folder");
    assert!(
        table["trusts"].as_str().unwrap().contains("highest claim"),
        "{table}"
    );
    let devices = table["devices"].as_array().unwrap();
    let serving: Vec<&str> = devices
        .iter()
        .filter(|d| d["role"] == "active" && d["health"] == "ok")
        .map(|d| d["device_id"].as_str().unwrap())
        .collect();
    assert_eq!(serving, vec!["mac-b:/p"], "{table:#}");
    let old = devices
        .iter()
        .find(|d| d["device_id"] == "mac-a:/p")
        .unwrap();
    assert_eq!(old["health"], "stale", "{old}");
    assert!(
        old["problem"]
            .as_str()
            .unwrap()
            .contains("superseded by the higher claim of mac-b:/p (term 4)"),
        "{old}"
    );
    assert_eq!(
        devices[0]["device_id"], "mac-b:/p",
        "the trusted leader is row 1"
    );
    assert_eq!(devices[0]["number"], 1);

    let text = folder.baton().arg("status").output().unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    let healthy_active = text
        .lines()
        .filter(|l| l.contains(" active ") && l.contains("  ok"))
        .count();
    assert_eq!(healthy_active, 1, "{text}");
    assert!(text.contains("the higher claim is trusted"), "{text}");
}
