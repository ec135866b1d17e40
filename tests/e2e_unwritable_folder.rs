//! A claim that never reached the disk is no claim. With the sync folder read-only, or
//! its disk full, no device may act on a record it failed to write: the active device
//! stops polling once its lease (from its last successful write) runs out, the standbys
//! do not contend, and each says once which path it cannot write and why. When the
//! folder is writable again they settle to one active device. Never two pollers: the
//! fake Bot API answers no 409 at any point.
//!
//! Needs: root and the right to mount (a tmpfs over the test's sync folder, remounted
//! read-only, or filled up). CI runs as root on Debian, as does the dev container; where
//! mounting is not allowed the tests say so on stderr and skip. Linux only (tmpfs and
//! `mount(2)`): on macOS the file compiles to nothing, so `scripts/check-macos` can
//! type-check every test target.
#![cfg(target_os = "linux")]

mod common;

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use baton_testkit::fake_bot_api::FakeBotApi;
use common::process::{Device, Folder, wait_for};
use mirror_baton::adapters::clock;
use mirror_baton::core::Status;

const SCALE: f64 = 0.1;
const CHAT: i64 = -1_017;
const PATIENCE: Duration = Duration::from_secs(60);
/// The active lease at this scale (liveness timeout 50 s × SCALE).
const LEASE_MS: u64 = 5_000;

/// A tmpfs mounted over a folder for the life of the guard.
struct Tmpfs {
    target: PathBuf,
}

fn c_path(path: &Path) -> CString {
    CString::new(path.as_os_str().as_encoded_bytes()).expect("no NUL in the path")
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` over `target`, or says why it cannot.
    fn mount(target: &Path, size: &str) -> Result<Tmpfs, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not running as root".into());
        }
        std::fs::create_dir_all(target).map_err(|e| e.to_string())?;
        let options = CString::new(format!("size={size},mode=0755")).expect("no NUL");
        // SAFETY: valid NUL-terminated strings that outlive the call.
        let result = unsafe {
            libc::mount(
                c"tmpfs".as_ptr(),
                c_path(target).as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                options.as_ptr().cast(),
            )
        };
        if result != 0 {
            return Err(format!("mount tmpfs: {}", std::io::Error::last_os_error()));
        }
        Ok(Tmpfs {
            target: target.to_path_buf(),
        })
    }

    fn remount(&self, read_only: bool) {
        let mut flags = libc::MS_REMOUNT;
        if read_only {
            flags |= libc::MS_RDONLY;
        }
        // SAFETY: as in `mount`; remounting changes only this mount's flags.
        let result = unsafe {
            libc::mount(
                c"tmpfs".as_ptr(),
                c_path(&self.target).as_ptr(),
                c"tmpfs".as_ptr(),
                flags,
                std::ptr::null(),
            )
        };
        assert_eq!(result, 0, "remount: {}", std::io::Error::last_os_error());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // SAFETY: detaching our own mount; lazy, so open files do not keep it busy.
        unsafe {
            libc::umount2(c_path(&self.target).as_ptr(), libc::MNT_DETACH);
        }
    }
}

fn skip(why: &str) {
    eprintln!("SKIPPED: this test mounts a tmpfs and needs root with mount rights: {why}");
}

/// Three polling devices on a tmpfs sync folder, settled with one active. Dropped in
/// field order: the processes, then the mount, then the temporary folder.
struct Group {
    devices: Vec<Device>,
    tmpfs: Tmpfs,
    folder: Folder,
    fake: FakeBotApi,
}

async fn settled_group(size: &str) -> Option<Group> {
    let folder = Folder::new(SCALE);
    let tmpfs = match Tmpfs::mount(&folder.sync_dir(), size) {
        Ok(tmpfs) => tmpfs,
        Err(why) => {
            skip(&why);
            return None;
        }
    };
    let fake = FakeBotApi::start().await.expect("fake Bot API");
    let devices: Vec<Device> = ["one", "two", "three"]
        .iter()
        .map(|name| folder.start_polling(name, &fake.api_url(), fake.token(), CHAT))
        .collect();
    let group = Group {
        devices,
        tmpfs,
        folder,
        fake,
    };
    wait_for(PATIENCE, || group.one_active_polling()).expect("the group settles");
    Some(group)
}

impl Group {
    /// The active device, once exactly one is active, the others are standbys and the
    /// active one has polled.
    fn one_active_polling(&self) -> Option<String> {
        let records = self.folder.records();
        let active: Vec<_> = records
            .iter()
            .filter(|r| r.status == Status::Active)
            .collect();
        let standbys = records
            .iter()
            .filter(|r| r.status == Status::Standby)
            .count();
        if active.len() != 1 || standbys != 2 {
            return None;
        }
        let id = active[0].device_id.clone();
        self.fake
            .get_updates_requests()
            .iter()
            .any(|r| r.device.as_deref() == Some(id.as_str()))
            .then_some(id)
    }

    fn polls_between(&self, from_ms: u64, to_ms: u64) -> Vec<String> {
        self.fake
            .get_updates_requests()
            .into_iter()
            .filter(|r| r.received_at_ms >= from_ms && r.received_at_ms < to_ms)
            .map(|r| format!("{:?} at {}", r.device, r.received_at_ms))
            .collect()
    }

    fn assert_no_conflict(&self) {
        let conflicts: Vec<_> = self
            .fake
            .requests()
            .into_iter()
            .filter(|r| r.status == Some(409))
            .collect();
        assert!(
            conflicts.is_empty(),
            "two devices polled at once (409): {conflicts:#?}"
        );
    }

    /// Runs the fault from now until `restore`, then checks the whole story.
    async fn check_fault(&self, os_error: &str, restore: impl FnOnce()) {
        let fault_ms = clock::wall_ms();
        // Someone writes meanwhile: with nothing waiting, Telegram as a second witness
        // would (rightly) keep the standbys from claiming the lapsed leader's role, and
        // they would never try, and fail, to write a claim.
        self.fake
            .inject_text(CHAT, None, "while nothing can be written");
        // Two leases: a standby that took a lapsed leader for dead would have claimed,
        // settled and polled by then (jitter + settle window ≈ 2 s at this scale).
        tokio::time::sleep(Duration::from_millis(2 * LEASE_MS + 1_000)).await;
        let quiet_from = fault_ms + LEASE_MS;
        let polls = self.polls_between(quiet_from, clock::wall_ms());
        assert!(
            polls.is_empty(),
            "getUpdates after every lease ran out with no record written: {polls:?}"
        );
        self.assert_no_conflict();
        for device in &self.devices {
            let log = device.log();
            let said = log.matches(os_error).count();
            assert!(
                said >= 1 && log.contains(&self.folder.devices_dir().display().to_string()),
                "{} says which path it cannot write and why:\n{log}",
                device.device_id
            );
            let episodes = log.matches("cannot write this device's record").count();
            assert_eq!(episodes, 1, "said once per episode:\n{log}");
        }
        restore();
        let restored_ms = clock::wall_ms();
        let active = wait_for(PATIENCE, || {
            self.one_active_polling().filter(|id| {
                self.fake.get_updates_requests().iter().any(|r| {
                    r.received_at_ms >= restored_ms && r.device.as_deref() == Some(id.as_str())
                })
            })
        });
        assert!(
            active.is_some(),
            "one active device again once the folder is writable: {:#?}",
            self.folder.records()
        );
        self.assert_no_conflict();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_folder_never_makes_two_pollers() {
    let Some(group) = settled_group("4m").await else {
        return;
    };
    group.tmpfs.remount(true);
    group
        .check_fault("Read-only file system", || group.tmpfs.remount(false))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_never_makes_two_pollers() {
    let Some(group) = settled_group("1m").await else {
        return;
    };
    let filler = group.folder.sync_dir().join("filler");
    {
        use std::io::Write as _;
        let mut file = std::fs::File::create(&filler).expect("filler");
        let block = vec![0u8; 64 * 1024];
        while file.write_all(&block).is_ok() {}
        // Byte by byte, to the last free byte.
        while file.write_all(&[0]).is_ok() {}
    }
    group
        .check_fault("No space left on device", || {
            std::fs::remove_file(&filler).expect("free the disk")
        })
        .await;
}
