//! Junk never hides a record: tens of thousands of stray files in the devices folder (a
//! sync tool's debris, a script gone wrong) must not cut real records out of a listing.
//! A newcomer still sees the healthy leader and stays a standby; `baton status` still
//! lists every device, and says the folder holds junk and how much.

mod common;

use std::time::Duration;

use common::process::{Folder, wait_for};
use mirror_baton::core::Status;

const SCALE: f64 = 0.05;
const PATIENCE: Duration = Duration::from_secs(30);
/// Junk files: far past the old 10,000-entry listing cap, so that with the cap counting
/// every entry, a listing misses real records almost surely (read_dir order is the
/// file system's, not creation order).
const JUNK: usize = 50_000;

fn status_of(folder: &Folder, id: &str) -> Option<Status> {
    folder.record_of(id).map(|r| r.status)
}

#[test]
fn junk_in_the_folder_hides_no_record() {
    let folder = Folder::new(SCALE);
    // The junk is there first: made while devices run, its flood of change events
    // keeps their run loops busy for seconds of real time, longer than a lease at this
    // time scale (a second's stall is nothing against the real 42 s lease).
    let junk = folder.devices_dir();
    std::fs::create_dir_all(&junk).expect("devices folder");
    for index in 0..JUNK {
        std::fs::write(junk.join(format!("junk-{index:06}.txt")), b"x").expect("junk");
    }
    let a = folder.start("alpha", &[]);
    wait_for(PATIENCE, || {
        (status_of(&folder, &a.device_id) == Some(Status::Active)).then_some(())
    })
    .expect("alpha becomes active");
    let b = folder.start("beta", &[]);
    wait_for(PATIENCE, || {
        (status_of(&folder, &b.device_id) == Some(Status::Standby)).then_some(())
    })
    .expect("beta becomes a standby");

    let c = folder.start("gamma", &[]);
    wait_for(PATIENCE, || {
        (status_of(&folder, &c.device_id) == Some(Status::Standby)).then_some(())
    })
    .unwrap_or_else(|| panic!("gamma registers as a standby:\n{}", c.log()));
    // Long enough for a newcomer that saw an empty group to claim and settle (jitter
    // plus the settle window, several times over at this scale).
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        status_of(&folder, &a.device_id),
        Some(Status::Active),
        "the leader stays active:\n{}",
        a.log()
    );
    assert!(
        !c.log().contains("to=Contending") && !c.log().contains("to=Active"),
        "the newcomer contended against a healthy leader it could not see:\n{}",
        c.log()
    );

    // `baton status` without a local daemon (another state folder): read from the folder.
    let output = folder
        .baton()
        .env("BATON_STATE_DIR", folder.root.path().join("elsewhere"))
        .args(["status", "--json"])
        .output()
        .expect("baton status");
    let table: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let listed = table["devices"].as_array().map_or(0, Vec::len);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        listed, 3,
        "baton status lists every device: {table}\n{stderr}"
    );
    assert!(
        stderr.contains(&JUNK.to_string()) && stderr.contains("not records"),
        "status says how much junk the folder holds: {stderr}"
    );
    assert!(
        a.log().contains("not records") || b.log().contains("not records"),
        "a running device warns about the junk too"
    );
}
