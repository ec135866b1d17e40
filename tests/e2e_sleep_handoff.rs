//! The lid closes on the active device: real `baton run` processes, each on its own
//! "machine" (its own private system bus with python-dbusmock's systemd-logind, named
//! by `DBUS_SYSTEM_BUS_ADDRESS`), sharing one local folder. The mock emits
//! `PrepareForSleep(true)` on the active device's bus: it hands over make-before-break,
//! the standby becomes active by the handoff (no election: it never contends), the
//! sleeper releases its delay inhibitor lock long before its grace, and after
//! `PrepareForSleep(false)` it is a standby holding nothing. And a device that hears no
//! announcement (no bus) still fails over by lease, as before.
//!
//! Needs `dbus-daemon` and python-dbusmock (see `tests/common/logind.rs`); says loudly
//! when they are missing, and fails under `CI=true`.

#[cfg(not(target_os = "linux"))]
#[test]
fn sleep_handoff_tests_need_linux() {
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "\n*** e2e_sleep_handoff: NOT RUN: systemd-logind is Linux-only ***\n"
    );
}

#[cfg(target_os = "linux")]
mod common;

#[cfg(target_os = "linux")]
#[path = "common/logind.rs"]
mod logind_bus;

#[cfg(target_os = "linux")]
mod linux {
    use std::time::Duration;

    use mirror_baton::adapters::power::PowerOptions;
    use mirror_baton::core::Status;

    use super::common::process::{Device, Folder, active_heartbeats_spanning, wait_until};
    use super::logind_bus::{LONG_DELAY, PATIENCE, logind};

    const SCALE: f64 = 0.1;

    fn status_of(folder: &Folder, device: &Device) -> Option<(Status, u64)> {
        folder
            .record_of(&device.device_id)
            .map(|record| (record.status, record.term))
    }

    /// Starts `name` on the machine whose system bus is `bus_address`.
    fn start_on(folder: &Folder, name: &str, bus_address: &str) -> Device {
        let mut command = folder.baton();
        command
            .env("DBUS_SYSTEM_BUS_ADDRESS", bus_address)
            .args(["--log-format", "json"]);
        folder.start_with(name, &[], command)
    }

    /// The device's role changes from its JSON log: (from, to, cause).
    fn transitions(device: &Device) -> Vec<(String, String, String)> {
        device
            .log()
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|value| value["message"] == "role changed")
            .map(|value| {
                let field = |name: &str| value[name].as_str().unwrap_or_default().to_string();
                (field("from"), field("to"), field("cause"))
            })
            .collect()
    }

    async fn wait_for_status(folder: &Folder, device: &Device, status: Status) -> u64 {
        let found = wait_until(PATIENCE, || {
            status_of(folder, device).and_then(|(now, term)| (now == status).then_some(term))
        })
        .await;
        found.unwrap_or_else(|| {
            panic!(
                "{} never reached {status:?}; its log:\n{}",
                device.device_id,
                device.log()
            )
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_lid_closes_on_the_active_device_and_the_standby_takes_over_by_handoff() {
        let test = "e2e_sleep_handoff::the_lid_closes_on_the_active_device_and_the_standby_takes_over_by_handoff";
        // A grace (49 s) longer than the patience: a lock seen released was released by
        // baton, not by the adapter's deadline.
        let Some((bus_a, mut logind_a)) = logind(test, Some(LONG_DELAY)).await else {
            return;
        };
        let Some((bus_b, mut logind_b)) = logind(test, Some(LONG_DELAY)).await else {
            return;
        };
        logind_a.who = PowerOptions::default().who;
        logind_b.who = PowerOptions::default().who;
        let folder = Folder::new(SCALE);
        let mut alpha = start_on(&folder, "alpha", &bus_a.address);
        let term = wait_for_status(&folder, &alpha, Status::Active).await;
        logind_a.wait_for_lock(true).await;
        let mut bravo = start_on(&folder, "bravo", &bus_b.address);
        wait_for_status(&folder, &bravo, Status::Standby).await;
        assert!(
            logind_b.inhibitors().await.is_empty(),
            "a standby delays no sleep"
        );
        // A handoff is taken at once only by a target that can date it: one that had
        // watched the folder for a settle bound before it arrived (docs/PROTOCOL.md,
        // "Handoff"). Let bravo watch that long first: alpha's heartbeats spanning it.
        let timing = mirror_baton::core::Timing::default().scaled(SCALE);
        let writes = active_heartbeats_spanning(&timing, timing.settle_bound());
        let start_seq = folder.record_of(&alpha.device_id).map_or(0, |r| r.seq);
        let watched = wait_until(PATIENCE, || {
            let seq = folder.record_of(&alpha.device_id)?.seq;
            (seq >= start_seq.saturating_add(writes)).then_some(())
        })
        .await;
        assert!(watched.is_some(), "alpha kept writing its heartbeats");
        let bravo_before = transitions(&bravo).len();

        logind_a.prepare_for_sleep(true).await;

        let taken = wait_for_status(&folder, &bravo, Status::Active).await;
        assert_eq!(taken, term + 1, "the handoff's term");
        let since_sleep = &transitions(&bravo)[bravo_before..];
        assert!(
            since_sleep
                .iter()
                .all(|(_, to, _)| to != "Contending" && to != "Standby"),
            "bravo took the role by the handoff, with no election: {since_sleep:?}"
        );
        logind_a.wait_for_lock(false).await;
        logind_b.wait_for_lock(true).await;
        wait_for_status(&folder, &alpha, Status::Standby).await;
        let alpha_log = alpha.log();
        for said in [
            "about to sleep",
            "handing over to",
            "took over",
            "letting the machine sleep",
        ] {
            assert!(
                alpha_log.contains(said),
                "alpha never said {said:?}:\n{alpha_log}"
            );
        }
        let alpha_roles = transitions(&alpha);
        assert!(
            alpha_roles.iter().any(|(from, to, cause)| from == "Active"
                && to == "Yielding"
                && cause == "sleep_announced"),
            "{alpha_roles:?}"
        );

        logind_a.prepare_for_sleep(false).await;
        wait_until(PATIENCE, || {
            alpha.log().contains("awake again").then_some(())
        })
        .await
        .expect("alpha hears the wake");
        assert!(
            logind_a.inhibitors().await.is_empty(),
            "a standby after the wake: no lock taken again"
        );
        // Looking again after the wake changes nothing: bravo keeps the role.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            status_of(&folder, &alpha).map(|s| s.0),
            Some(Status::Standby)
        );
        assert_eq!(
            status_of(&folder, &bravo).map(|s| s.0),
            Some(Status::Active)
        );

        for device in [&mut alpha, &mut bravo] {
            device.signal(libc::SIGTERM);
            assert_eq!(device.wait_exit(PATIENCE), Some(0), "{}", device.log());
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_device_that_hears_no_announcement_still_fails_over_by_lease() {
        let folder = Folder::new(0.05);
        let nowhere = folder.root.path().join("no-system-bus");
        let address = format!("unix:path={}", nowhere.display());
        let mut alpha = start_on(&folder, "alpha", &address);
        let term = wait_for_status(&folder, &alpha, Status::Active).await;
        let bravo = start_on(&folder, "bravo", &address);
        wait_for_status(&folder, &bravo, Status::Standby).await;
        assert!(
            alpha.log().contains("sleep announcements unavailable"),
            "{}",
            alpha.log()
        );
        // The machine sleeps unannounced: the process is frozen.
        alpha.signal(libc::SIGSTOP);
        let taken = wait_for_status(&folder, &bravo, Status::Active).await;
        assert!(taken > term);
        let roles = transitions(&bravo);
        assert!(
            roles.iter().any(|(_, to, _)| to == "Contending"),
            "by lease and election, not by handoff: {roles:?}"
        );
        alpha.signal(libc::SIGCONT);
        wait_for_status(&folder, &alpha, Status::Standby).await;
        alpha.signal(libc::SIGTERM);
        assert_eq!(alpha.wait_exit(PATIENCE), Some(0), "{}", alpha.log());
    }
}
